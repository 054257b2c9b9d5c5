-- Events a projection could not apply, set aside with the reason so that the projection goes on
-- (infrastructure/projections.py). `held` marks an event that did not fail itself but follows a
-- failed one of the same aggregate: it waits behind it, so that each aggregate's events are
-- still applied in order once the failure is fixed and the dead letters are retried. Only the
-- reference to the stored event is kept, never its content.
CREATE TABLE drx_projection_dead_letters (
    projection TEXT NOT NULL,
    position INTEGER NOT NULL,
    originator_id TEXT NOT NULL,
    originator_version INTEGER NOT NULL,
    topic TEXT NOT NULL,
    reason TEXT NOT NULL,
    held INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 1,
    failed_at TEXT NOT NULL,
    PRIMARY KEY (projection, position)
);
CREATE INDEX drx_projection_dead_letters_aggregate_idx
    ON drx_projection_dead_letters (projection, originator_id);
