-- No parallel workers for the events table, read by key: a process started per query. Without
-- fresh statistics (autovacuum off, or behind after a bulk load) the planner takes a lookup by
-- `originator_id` for half a percent of the table per id and, once the table passes a few
-- megabytes, plans it in parallel: measured at 300 deliveries/s, two seconds of answers at
-- 10-35 ms instead of 2 ms, p99 17-20 ms instead of 5. This covers the library's own queries
-- on the table (a prescription's events for the read API, say).
ALTER TABLE drx_events SET (parallel_workers = 0);

-- A webhook batch's lookups in one call (infrastructure/pg_recorder.py, select_batch): every
-- event of the prescriptions it touches, and which of its deliveries are already stored (one row
-- per stored delivery, with no version), planned without parallel workers: the table's setting
-- above does not stop the planner from running the two branches of the UNION in parallel
-- workers (a parallel append). In plpgsql, whose plan is cached (a SQL function is planned at
-- every call: 0.1 ms more of PostgreSQL's CPU per batch).
CREATE FUNCTION drx_select_batch(load_ids uuid[], check_ids uuid[])
RETURNS TABLE (originator_id uuid, originator_version bigint, topic text, state bytea)
LANGUAGE plpgsql
STABLE
SET search_path FROM CURRENT
SET max_parallel_workers_per_gather = 0
AS $$
BEGIN
    RETURN QUERY
        SELECT e.originator_id, e.originator_version, e.topic, e.state
        FROM drx_events e WHERE e.originator_id = ANY(load_ids)
        UNION ALL
        SELECT DISTINCT e.originator_id, NULL::bigint, NULL::text, NULL::bytea
        FROM drx_events e WHERE e.originator_id = ANY(check_ids)
        ORDER BY 1, 2;
END
$$;
