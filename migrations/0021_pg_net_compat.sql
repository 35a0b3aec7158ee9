-- pg_net's SQL interface (docs/CRON.md, "pg_net compatibility"): Supabase's
-- HTTP cron jobs call net.http_post & co. from SQL; here the server performs
-- the requests (hosts listed in `cron.http_allow` only), writes the answers
-- to net._http_response, and, when the call came from a cron SQL job, records
-- them on that job's run. Skipped where the pg_net extension is installed.
DO $do$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_net') THEN
    RAISE NOTICE 'wasmbase: the pg_net extension is installed; net.http_* stay pg_net''s';
    RETURN;
  END IF;
  CREATE SCHEMA IF NOT EXISTS net;

  -- Unlogged, as pg_net's: requests may carry credentials in their headers,
  -- which should not reach WAL, replicas or backups.
  CREATE UNLOGGED TABLE IF NOT EXISTS net.http_request_queue (
    id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    method               text NOT NULL,
    url                  text NOT NULL,
    -- Query parameters, URL-encoded onto `url` by the worker.
    params               jsonb NOT NULL DEFAULT '{}',
    headers              jsonb NOT NULL DEFAULT '{}',
    body                 bytea,
    timeout_milliseconds int NOT NULL DEFAULT 5000,
    -- The cron attempt whose SQL made the request (wasmbase.cron_runs.id).
    cron_run             bigint,
    taken_at             timestamptz,
    created              timestamptz NOT NULL DEFAULT now()
  );

  CREATE TABLE IF NOT EXISTS net._http_response (
    id           bigint PRIMARY KEY,
    status_code  int,
    content_type text,
    headers      jsonb,
    content      text,
    timed_out    boolean,
    error_msg    text,
    created      timestamptz NOT NULL DEFAULT now()
  );

  -- Queues one request; the NOTIFY reaches the servers when the caller commits.
  CREATE OR REPLACE FUNCTION net._enqueue(method text, url text, params jsonb, headers jsonb, body bytea, timeout_milliseconds int)
  RETURNS bigint
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
  DECLARE
    rid bigint;
  BEGIN
    IF url IS NULL OR url !~* '^https?://' THEN
      RAISE EXCEPTION 'url must start with http:// or https://' USING ERRCODE = '22023';
    END IF;
    INSERT INTO net.http_request_queue (method, url, params, headers, body, timeout_milliseconds, cron_run)
    VALUES (method, url, coalesce(params, '{}'), coalesce(headers, '{}'), body, coalesce(timeout_milliseconds, 5000),
            nullif(current_setting('wasmbase.cron_run', true), '')::bigint)
    RETURNING id INTO rid;
    PERFORM pg_notify('wasmbase_net', rid::text);
    RETURN rid;
  END
  $f$;

  CREATE OR REPLACE FUNCTION net.http_get(url text, params jsonb DEFAULT '{}', headers jsonb DEFAULT '{}',
                                          timeout_milliseconds int DEFAULT 5000) RETURNS bigint
  LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
    SELECT net._enqueue('GET', url, params, headers, NULL, timeout_milliseconds)
  $f$;

  CREATE OR REPLACE FUNCTION net.http_post(url text, body jsonb DEFAULT '{}', params jsonb DEFAULT '{}',
                                           headers jsonb DEFAULT '{"Content-Type": "application/json"}',
                                           timeout_milliseconds int DEFAULT 5000) RETURNS bigint
  LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
    SELECT net._enqueue('POST', url, params, headers, convert_to(body::text, 'UTF8'), timeout_milliseconds)
  $f$;

  CREATE OR REPLACE FUNCTION net.http_delete(url text, params jsonb DEFAULT '{}', headers jsonb DEFAULT '{}',
                                             timeout_milliseconds int DEFAULT 5000, body jsonb DEFAULT NULL) RETURNS bigint
  LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
    SELECT net._enqueue('DELETE', url, params, headers, convert_to(body::text, 'UTF8'), timeout_milliseconds)
  $f$;

  REVOKE ALL ON SCHEMA net FROM PUBLIC;
  REVOKE ALL ON ALL FUNCTIONS IN SCHEMA net FROM PUBLIC;
  REVOKE ALL ON ALL TABLES IN SCHEMA net FROM PUBLIC;
  GRANT USAGE ON SCHEMA net TO service_role;
  GRANT EXECUTE ON FUNCTION net.http_get(text, jsonb, jsonb, int), net.http_post(text, jsonb, jsonb, jsonb, int),
                            net.http_delete(text, jsonb, jsonb, int, jsonb) TO service_role;
  GRANT SELECT ON net._http_response TO service_role;
END
$do$;
