-- The change feed (GET /changes, /changes/stream, subscriptions): one row per change, at the
-- position its stored event gives it (domain/changes.py), with the change's JSON as served and
-- the columns the feed filters on; and per prescription, where the feed's fold stands and which
-- open requests are due for an overdue signal. A store migrated from before has its whole
-- history projected into the feed once (the projection starts at position 0).
CREATE TABLE rx_changes (
    position INTEGER PRIMARY KEY,
    type TEXT NOT NULL,
    aggregate_id TEXT NOT NULL,
    prescription_id TEXT NOT NULL,
    patient_id TEXT,
    status TEXT,
    recorded_at TEXT NOT NULL,
    document TEXT NOT NULL
);
CREATE INDEX rx_changes_prescription_idx ON rx_changes (prescription_id, position);
CREATE INDEX rx_changes_patient_idx ON rx_changes (patient_id, position);
CREATE INDEX rx_changes_type_idx ON rx_changes (type, position);

CREATE TABLE rx_change_heads (
    aggregate_id TEXT PRIMARY KEY,
    prescription_id TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL,
    fold TEXT NOT NULL,
    signalled TEXT NOT NULL,
    due_from TEXT
);
CREATE INDEX rx_change_heads_due_idx ON rx_change_heads (due_from) WHERE due_from IS NOT NULL;
