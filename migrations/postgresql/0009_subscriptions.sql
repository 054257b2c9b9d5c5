-- Subscriptions: internal apps' endpoints that the dispatcher POSTs matching changes to, in
-- position order, each with its own secret (stored encrypted when DRX_ENCRYPTION_KEY is set),
-- where it stands in the feed and how its last attempts went; and the log of its attempts.
CREATE TABLE drx_subscriptions (
    id text PRIMARY KEY,
    url text NOT NULL,
    description text,
    types text NOT NULL,
    statuses text NOT NULL,
    secret text NOT NULL,
    state text NOT NULL,
    position bigint NOT NULL,
    generation integer NOT NULL DEFAULT 0,
    failures integer NOT NULL DEFAULT 0,
    failing_since text,
    retry_at text,
    disabled_reason text,
    created_at text NOT NULL
);

CREATE TABLE drx_subscription_attempts (
    id bigserial PRIMARY KEY,
    subscription_id text NOT NULL,
    position bigint NOT NULL,
    webhook_id text NOT NULL,
    at text NOT NULL,
    status integer,
    error text,
    duration_ms integer NOT NULL
);
CREATE INDEX drx_subscription_attempts_idx ON drx_subscription_attempts (subscription_id, id);
