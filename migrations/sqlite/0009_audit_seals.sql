-- The audit seals (domain/seals.py, infrastructure/seals.py). One row per sealed item of each
-- sequence: 'events' (stored_events, by rowid: its notification id) and 'access'
-- (drx_access_log, by id), with what the item was (an event's originator id as stored and its
-- version, so that a removed one can be named), the digest of its position and content, the
-- chain: SHA-256 of the chain before it and that digest, and its ordinal (how many items of the
-- sequence are sealed up to it, so that a checkpoint reads its count from its last seal). Rows
-- are only ever inserted, in position order, each batch in one BEGIN IMMEDIATE transaction.
CREATE TABLE drx_audit_seals (
    sequence TEXT NOT NULL,
    position INTEGER NOT NULL,
    originator_id TEXT,
    originator_version INTEGER,
    digest BLOB NOT NULL,
    chain BLOB NOT NULL,
    ordinal INTEGER NOT NULL,
    PRIMARY KEY (sequence, position)
) WITHOUT ROWID;

-- The checkpoints: each sequence's head (position, count, chain) at a moment, signed with
-- Ed25519 when DRX_AUDIT_SIGNING_KEY is set; `document` is the JSON `drx audit checkpoint` prints.
CREATE TABLE drx_audit_checkpoints (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    document TEXT NOT NULL
);
