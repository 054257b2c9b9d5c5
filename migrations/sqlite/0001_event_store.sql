-- The eventsourcing library's application recorder table for SQLite (eventsourcing 9.5).
-- Its notification id is the rowid, which the library reads as the notification log's order.
CREATE TABLE stored_events (
    originator_id TEXT,
    originator_version INTEGER,
    topic TEXT,
    state BLOB,
    PRIMARY KEY (originator_id, originator_version)
);
