-- A prescription's snapshots are read only as its last one (see migration 0011 and
-- infrastructure/recorders.py): each save that writes a snapshot now deletes the older ones of
-- its prescription in the same transaction. This deletes what the store held before: every
-- snapshot but each prescription's last.
DELETE FROM stored_snapshots
WHERE EXISTS (
    SELECT 1 FROM stored_snapshots t
    WHERE t.originator_id = stored_snapshots.originator_id
      AND t.originator_version > stored_snapshots.originator_version
);
