-- Console sessions ended by signing out (infrastructure/console_sign_outs.py): the SHA-256 of
-- each session's CSRF token, kept until the session would have expired (Unix seconds), so that
-- a copy of a signed-out cookie is refused by every web worker.
CREATE TABLE drx_console_sign_outs (
    session_id text PRIMARY KEY,
    expires_at bigint NOT NULL
);
