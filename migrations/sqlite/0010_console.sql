-- The operator console (interfaces/console). `drx_console_secret`: the one secret its sessions
-- are signed with (HMAC), made by the first process that needs it and shared by every web
-- worker and host on the database, so that each accepts the sessions of the others.
-- `drx_intake_minutes`: the webhook's outcomes and answer times by minute, for the console's
-- chart: each web worker adds what it counted every few seconds; rows older than two hours are
-- pruned. `series` is `outcome:<accepted|duplicate|parked|refused>` or `le:<bucket bound>`.
CREATE TABLE drx_console_secret (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    secret TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE drx_intake_minutes (
    minute TEXT NOT NULL,
    series TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (minute, series)
) WITHOUT ROWID;
