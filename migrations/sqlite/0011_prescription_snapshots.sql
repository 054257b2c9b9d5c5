-- Snapshots of prescriptions (domain/prescription.py): the eventsourcing library's snapshot
-- table for SQLite (its aggregate recorder's table), which the library's repository reads;
-- written in the same transaction as the events they fold (infrastructure/recorders.py). A
-- cache: derived from the events, not sealed, and safe to delete.
CREATE TABLE stored_snapshots (
    originator_id TEXT,
    originator_version INTEGER,
    topic TEXT,
    state BLOB,
    PRIMARY KEY (originator_id, originator_version)
) WITHOUT ROWID;
