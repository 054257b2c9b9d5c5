-- The operator console (interfaces/console). `drx_console_secret`: the one secret its sessions
-- are signed with (HMAC), made by the first process that needs it and shared by every web
-- worker and host on the database, so that each accepts the sessions of the others.
-- `drx_intake_minutes`: the webhook's outcomes and answer times by minute, for the console's
-- chart: each web worker adds what it counted every few seconds; rows older than two hours are
-- pruned. `series` is `outcome:<accepted|duplicate|parked|refused>` or `le:<bucket bound>`.
CREATE TABLE drx_console_secret (
    id integer PRIMARY KEY CHECK (id = 1),
    secret text NOT NULL,
    created_at text NOT NULL
);

CREATE TABLE drx_intake_minutes (
    minute text NOT NULL,
    series text NOT NULL,
    count bigint NOT NULL,
    PRIMARY KEY (minute, series)
);
