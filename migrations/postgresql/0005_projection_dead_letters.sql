-- Events a projection could not apply, set aside with the reason so that the projection goes on
-- (infrastructure/projections.py). `held` marks an event that did not fail itself but follows a
-- failed one of the same aggregate: it waits behind it, so that each aggregate's events are
-- still applied in order once the failure is fixed and the dead letters are retried. Only the
-- reference to the stored event is kept, never its content.
CREATE TABLE drx_projection_dead_letters (
    projection text NOT NULL,
    position bigint NOT NULL,
    originator_id uuid NOT NULL,
    originator_version bigint NOT NULL,
    topic text NOT NULL,
    reason text NOT NULL,
    held boolean NOT NULL,
    attempts integer NOT NULL DEFAULT 1,
    failed_at text NOT NULL,
    PRIMARY KEY (projection, position)
);
CREATE INDEX drx_projection_dead_letters_aggregate_idx
    ON drx_projection_dead_letters (projection, originator_id);
