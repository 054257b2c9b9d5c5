-- A prescription's snapshots (migration 0013) are read only as its last one: a load takes the
-- last snapshot and the events after it, and a late fact that orders before what that snapshot
-- folded reads every event. So each save that writes a snapshot deletes the older ones of its
-- prescription in the same statement, and the store keeps one snapshot a prescription instead of
-- one for every 8 of its facts. The deletes leave dead rows: the table is vacuumed as any
-- updated table is (it was set up as insert-only).
CREATE OR REPLACE FUNCTION drx_save(
    ids uuid[], versions bigint[], topics text[], states bytea[], lock_wait text,
    snapshot_ids uuid[], snapshot_versions bigint[], snapshot_topics text[],
    snapshot_states bytea[]
) RETURNS SETOF bigint
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    RETURN QUERY SELECT * FROM drx_insert_events(ids, versions, topics, states, lock_wait);
    INSERT INTO drx_snapshots (originator_id, originator_version, topic, state)
    SELECT * FROM unnest(snapshot_ids, snapshot_versions, snapshot_topics, snapshot_states)
    ON CONFLICT DO NOTHING;
    DELETE FROM drx_snapshots s
    USING unnest(snapshot_ids, snapshot_versions) AS n(id, version)
    WHERE s.originator_id = n.id AND s.originator_version < n.version;
END
$$;

ALTER TABLE drx_snapshots RESET (autovacuum_vacuum_threshold, autovacuum_vacuum_scale_factor);

-- What the store held before: every snapshot but each prescription's last.
DELETE FROM drx_snapshots s
WHERE EXISTS (
    SELECT 1 FROM drx_snapshots t
    WHERE t.originator_id = s.originator_id AND t.originator_version > s.originator_version
);
