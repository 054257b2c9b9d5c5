-- One call saves a batch of events the way the library's own statements do (the table lock that
-- keeps notification ids in commit order, the NOTIFY for followers, the INSERT), with the rows
-- passed as bind parameters: the events' contents (patient data, DRx's signatures) then never
-- appear in a statement's text, which PostgreSQL writes to its log with any error (a lost race
-- on a prescription's version, say); it does not log bind parameters on error by default
-- (log_parameter_max_length_on_error = 0). Called by infrastructure/pg_recorder.py.
CREATE FUNCTION drx_insert_events(
    ids uuid[], versions bigint[], topics text[], states bytea[], lock_wait text
) RETURNS SETOF bigint
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    PERFORM set_config('lock_timeout', lock_wait, true);
    LOCK TABLE drx_events IN EXCLUSIVE MODE;
    NOTIFY drx_events;
    RETURN QUERY
        INSERT INTO drx_events (originator_id, originator_version, topic, state)
        SELECT * FROM unnest(ids, versions, topics, states)
        RETURNING notification_id;
END
$$;
