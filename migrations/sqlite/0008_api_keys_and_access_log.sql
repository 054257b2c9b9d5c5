-- API keys made with `drx keys create` (only a SHA-256 of each key is kept; a revoked key's row
-- stays, so that the access log's names keep their meaning), and the PHI access log: one row per
-- answer that carried patient or prescription data. The access log is append-only: the service
-- only ever inserts into it, and the audit seals (migration 0009) chain every row. Its id lists
-- are JSON arrays; AUTOINCREMENT keeps an id from ever being given twice.
CREATE TABLE drx_api_keys (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    scopes TEXT NOT NULL,
    created_at TEXT NOT NULL,
    last_used_at TEXT,
    revoked_at TEXT
);

CREATE UNIQUE INDEX drx_api_keys_active_name ON drx_api_keys (name) WHERE revoked_at IS NULL;

CREATE TABLE drx_access_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    key_name TEXT NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    status INTEGER NOT NULL,
    prescription_ids TEXT NOT NULL,
    patient_ids TEXT NOT NULL
);

CREATE INDEX drx_access_log_key ON drx_access_log (key_name, id);
