-- Subscriptions: internal apps' endpoints that the dispatcher POSTs matching changes to, in
-- position order, each with its own secret (stored encrypted when DRX_ENCRYPTION_KEY is set),
-- where it stands in the feed and how its last attempts went; and the log of its attempts.
CREATE TABLE drx_subscriptions (
    id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    description TEXT,
    types TEXT NOT NULL,
    statuses TEXT NOT NULL,
    secret TEXT NOT NULL,
    state TEXT NOT NULL,
    position INTEGER NOT NULL,
    generation INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0,
    failing_since TEXT,
    retry_at TEXT,
    disabled_reason TEXT,
    created_at TEXT NOT NULL
);

CREATE TABLE drx_subscription_attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    subscription_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    webhook_id TEXT NOT NULL,
    at TEXT NOT NULL,
    status INTEGER,
    error TEXT,
    duration_ms INTEGER NOT NULL
);
CREATE INDEX drx_subscription_attempts_idx ON drx_subscription_attempts (subscription_id, id);
