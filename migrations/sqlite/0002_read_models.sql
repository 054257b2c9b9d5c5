-- Read models projected from the event store, and each projection's tracking position.
-- Timestamps are UTC text in one fixed-width form (2025-03-04T15:22:10.000000Z) so that they
-- compare and sort as text.
CREATE TABLE drx_projection_tracking (
    name TEXT PRIMARY KEY,
    position INTEGER NOT NULL
);

CREATE TABLE rx_prescriptions (
    aggregate_id TEXT PRIMARY KEY,
    prescription_id TEXT NOT NULL UNIQUE,
    status TEXT,
    patient_id TEXT,
    pharmacy_ncpdp_id TEXT,
    needs_review INTEGER NOT NULL DEFAULT 0,
    updated_at TEXT NOT NULL,
    state TEXT NOT NULL,
    facts TEXT NOT NULL
);
CREATE INDEX rx_prescriptions_status_idx ON rx_prescriptions (status, prescription_id);
CREATE INDEX rx_prescriptions_patient_idx ON rx_prescriptions (patient_id, prescription_id);
CREATE INDEX rx_prescriptions_pharmacy_idx ON rx_prescriptions (pharmacy_ncpdp_id, prescription_id);
CREATE INDEX rx_prescriptions_review_idx ON rx_prescriptions (needs_review, prescription_id);
CREATE INDEX rx_prescriptions_updated_idx ON rx_prescriptions (updated_at);

CREATE TABLE rx_deliveries (
    aggregate_id TEXT PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    seq INTEGER NOT NULL UNIQUE,
    type TEXT NOT NULL,
    subject TEXT NOT NULL,
    received_at TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT
);
CREATE INDEX rx_deliveries_status_idx ON rx_deliveries (status, seq);
