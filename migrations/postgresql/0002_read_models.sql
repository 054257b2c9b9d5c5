-- Read models projected from the event store, and each projection's tracking position.
-- Timestamps are UTC text in one fixed-width form (2025-03-04T15:22:10.000000Z), as on SQLite,
-- so that both stores compare, sort and page them the same way.
CREATE TABLE drx_projection_tracking (
    name text PRIMARY KEY,
    position bigint NOT NULL
);

CREATE TABLE rx_prescriptions (
    aggregate_id uuid PRIMARY KEY,
    prescription_id text NOT NULL UNIQUE,
    status text,
    patient_id text,
    pharmacy_ncpdp_id text,
    needs_review boolean NOT NULL DEFAULT false,
    updated_at text NOT NULL,
    state text NOT NULL,
    facts text NOT NULL
);
CREATE INDEX rx_prescriptions_status_idx ON rx_prescriptions (status, prescription_id);
CREATE INDEX rx_prescriptions_patient_idx ON rx_prescriptions (patient_id, prescription_id);
CREATE INDEX rx_prescriptions_pharmacy_idx ON rx_prescriptions (pharmacy_ncpdp_id, prescription_id);
CREATE INDEX rx_prescriptions_review_idx ON rx_prescriptions (needs_review, prescription_id);
CREATE INDEX rx_prescriptions_updated_idx ON rx_prescriptions (updated_at);

CREATE TABLE rx_deliveries (
    aggregate_id uuid PRIMARY KEY,
    event_id text NOT NULL UNIQUE,
    seq bigint NOT NULL UNIQUE,
    type text NOT NULL,
    subject text NOT NULL,
    received_at text NOT NULL,
    status text NOT NULL,
    reason text
);
CREATE INDEX rx_deliveries_status_idx ON rx_deliveries (status, seq);
