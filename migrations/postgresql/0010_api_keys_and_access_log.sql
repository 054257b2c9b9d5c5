-- API keys made with `drx keys create` (only a SHA-256 of each key is kept; a revoked key's row
-- stays, so that the access log's names keep their meaning), and the PHI access log: one row per
-- answer that carried patient or prescription data. The access log is append-only: the service
-- only ever inserts into it, and the audit seals (migration 0011) chain every row.
CREATE TABLE drx_api_keys (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    key_hash text NOT NULL UNIQUE,
    scopes text NOT NULL,
    created_at text NOT NULL,
    last_used_at text,
    revoked_at text
);

CREATE UNIQUE INDEX drx_api_keys_active_name ON drx_api_keys (name) WHERE revoked_at IS NULL;

CREATE TABLE drx_access_log (
    id bigserial PRIMARY KEY,
    at text NOT NULL,
    key_name text NOT NULL,
    method text NOT NULL,
    path text NOT NULL,
    status integer NOT NULL,
    prescription_ids jsonb NOT NULL,
    patient_ids jsonb NOT NULL
);

CREATE INDEX drx_access_log_prescriptions ON drx_access_log USING gin (prescription_ids);
CREATE INDEX drx_access_log_patients ON drx_access_log USING gin (patient_ids);
CREATE INDEX drx_access_log_key ON drx_access_log (key_name, id);
