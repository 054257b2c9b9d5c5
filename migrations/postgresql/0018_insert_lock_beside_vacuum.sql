-- A save keeps the store's notification ids in commit order (a follower reading them never
-- passes over one that commits later) by serialising every transaction that inserts events.
-- Migration 0003 did that as the library does, with LOCK TABLE drx_events IN EXCLUSIVE MODE.
-- That mode also conflicts with the SHARE UPDATE EXCLUSIVE lock that VACUUM and ANALYZE hold on
-- the table, autovacuum's included: a save waited for an autovacuum of drx_events until the
-- deadlock check cancelled it (deadlock_timeout, 1 s by default: measured, a 749 ms commit
-- and 224 answers over 25 ms at 300 deliveries/s, bench/RESULTS.md), and an autovacuum that
-- is never cancelled (one against transaction-id wraparound, or a manual VACUUM) would have
-- held every save off for as long as it ran (each failing after DRX_POSTGRES_LOCK_TIMEOUT: a
-- 503 for the whole vacuum of a large store).
--
-- The saves now serialise on a transaction advisory lock of their own (per schema), which
-- VACUUM does not take. The function lives in the database, so once this commits every process
-- runs its new body; a save of the earlier body still in flight at that moment holds the
-- EXCLUSIVE lock, which the new INSERT's own ROW EXCLUSIVE lock waits for: they serialise too.
CREATE OR REPLACE FUNCTION drx_insert_events(
    ids uuid[], versions bigint[], topics text[], states bytea[], lock_wait text
) RETURNS SETOF bigint
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    PERFORM set_config('lock_timeout', lock_wait, true);
    -- (two int4 keys: a key space apart from the bigint keys of the leadership, the seals
    -- and the migrations' locks)
    PERFORM pg_advisory_xact_lock(1146247236, hashtext(current_schema()));
    NOTIFY drx_events;
    RETURN QUERY
        INSERT INTO drx_events (originator_id, originator_version, topic, state)
        SELECT * FROM unnest(ids, versions, topics, states)
        RETURNING notification_id;
END
$$;
