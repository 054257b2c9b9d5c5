-- Snapshots of prescriptions (domain/prescription.py): a new fact's cost must not grow with the
-- prescription's history. The eventsourcing library's snapshot table for the application "drx"
-- (its aggregate recorder's table), which the library's repository reads; the service writes
-- each snapshot in the same statement as the events it folds (drx_save) and reads a batch's
-- prescriptions as their last snapshot and the events after it (drx_select_heads). A cache:
-- derived from the events, not sealed, and safe to delete (loads then read every event).
CREATE TABLE drx_snapshots (
    originator_id uuid NOT NULL,
    originator_version bigint NOT NULL,
    topic text,
    state bytea,
    PRIMARY KEY (originator_id, originator_version)
) WITH (
    autovacuum_enabled = true,
    autovacuum_vacuum_threshold = 100000000,
    autovacuum_vacuum_scale_factor = 0.5,
    autovacuum_analyze_threshold = 1000,
    autovacuum_analyze_scale_factor = 0.01,
    parallel_workers = 0
);

-- drx_insert_events (migration 0003) and the snapshots, in one statement: one transaction, one
-- round trip. A snapshot already there (only possible after its events were removed by hand)
-- is left as it is.
CREATE FUNCTION drx_save(
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
END
$$;

-- A webhook batch's aggregates: each one's last snapshot, if it has one, and its events after
-- that snapshot (all of them when it has none), by aggregate and version; without parallel
-- workers (see migration 0004). Both lookups are LATERAL, so that each is an index range scan
-- per aggregate (OFFSET 0 keeps the planner from turning the second into a join): it cannot
-- know that a snapshot is near its aggregate's last version, and a join on `version >
-- snapshot's` was planned as a hash join over a scan of every event (500 ms a batch at a
-- million events, against 2 ms). No JIT: on a store never analyzed the
-- estimates pass its threshold, and compiling took 100-300 ms of a 2 ms lookup.
CREATE FUNCTION drx_select_heads(load_ids uuid[])
RETURNS TABLE (originator_id uuid, originator_version bigint, topic text, state bytea)
LANGUAGE plpgsql
STABLE
SET search_path FROM CURRENT
SET max_parallel_workers_per_gather = 0
SET jit = off
AS $$
BEGIN
    RETURN QUERY
        WITH heads AS (
            SELECT i.id, s.v, s.t, s.st
            FROM unnest(load_ids) AS i(id)
            LEFT JOIN LATERAL (
                SELECT x.originator_version AS v, x.topic AS t, x.state AS st
                FROM drx_snapshots x
                WHERE x.originator_id = i.id
                ORDER BY x.originator_version DESC
                LIMIT 1
            ) s ON true
        )
        SELECT h.id, h.v, h.t, h.st FROM heads h WHERE h.v IS NOT NULL
        UNION ALL
        SELECT h.id, e.originator_version, e.topic, e.state
        FROM heads h
        CROSS JOIN LATERAL (
            SELECT y.originator_version, y.topic, y.state
            FROM drx_events y
            WHERE y.originator_id = h.id AND y.originator_version > COALESCE(h.v, 0)
            OFFSET 0  -- not pulled up into a join: one index range scan per aggregate
        ) e
        ORDER BY 1, 2;
END
$$;
