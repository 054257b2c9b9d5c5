-- The change feed (GET /changes, /changes/stream, subscriptions): one row per change, at the
-- position its stored event gives it (domain/changes.py), with the change's JSON as served and
-- the columns the feed filters on; and per prescription, where the feed's fold stands and which
-- open requests are due for an overdue signal. A store migrated from before has its whole
-- history projected into the feed once (the projection starts at position 0).
CREATE TABLE rx_changes (
    position bigint PRIMARY KEY,
    type text NOT NULL,
    aggregate_id uuid NOT NULL,
    prescription_id text NOT NULL,
    patient_id text,
    status text,
    recorded_at text NOT NULL,
    document text NOT NULL
);
CREATE INDEX rx_changes_prescription_idx ON rx_changes (prescription_id, position);
CREATE INDEX rx_changes_patient_idx ON rx_changes (patient_id, position);
CREATE INDEX rx_changes_type_idx ON rx_changes (type, position);
ALTER TABLE rx_changes SET (parallel_workers = 0);

CREATE TABLE rx_change_heads (
    aggregate_id uuid PRIMARY KEY,
    prescription_id text NOT NULL UNIQUE,
    state text NOT NULL,
    fold text NOT NULL,
    signalled text NOT NULL,
    due_from text
);
CREATE INDEX rx_change_heads_due_idx ON rx_change_heads (due_from) WHERE due_from IS NOT NULL;
