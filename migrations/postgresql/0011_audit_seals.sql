-- The audit seals (domain/seals.py, infrastructure/seals.py). One row per sealed item of each
-- sequence: 'events' (drx_events, by notification id) and 'access' (drx_access_log, by id), with
-- what the item was (an event's originator id and version, so that a removed one can be named),
-- the digest of its position and content, and the chain: SHA-256 of the chain before it and that
-- digest, and its ordinal (how many items of the sequence are sealed up to it, so that a
-- checkpoint reads its count from its last seal). Rows are only ever inserted, in position order, under an advisory lock.
CREATE TABLE drx_audit_seals (
    sequence text NOT NULL,
    position bigint NOT NULL,
    originator_id uuid,
    originator_version bigint,
    digest bytea NOT NULL,
    chain bytea NOT NULL,
    ordinal bigint NOT NULL,
    PRIMARY KEY (sequence, position)
);

-- The checkpoints: each sequence's head (position, count, chain) at a moment, signed with
-- Ed25519 when DRX_AUDIT_SIGNING_KEY is set; `document` is the JSON `drx audit checkpoint` prints.
CREATE TABLE drx_audit_checkpoints (
    id bigserial PRIMARY KEY,
    document text NOT NULL
);
