-- pg_cron's SQL interface, backed by Wasmbase's scheduler (docs/CRON.md,
-- "pg_cron compatibility"), so migrations written for Supabase Cron port
-- unchanged: cron.schedule / cron.unschedule / cron.alter_job and the views
-- cron.job / cron.job_run_details. Skipped where the pg_cron extension itself
-- is installed (its own cron schema wins). Jobs scheduled here are SQL jobs:
-- they run on the `wasmbase_functions` login as service_role — never as the
-- user who scheduled them, unlike pg_cron.
DO $do$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron') THEN
    RAISE NOTICE 'wasmbase: the pg_cron extension is installed; cron.schedule stays pg_cron''s';
    RETURN;
  END IF;
  CREATE SCHEMA IF NOT EXISTS cron;

  -- The shape of a schedule (the scheduler checks it fully: a job whose
  -- expression it cannot read is reported in its log and not scheduled).
  CREATE OR REPLACE FUNCTION wasmbase.cron_check_schedule(schedule text) RETURNS void
  LANGUAGE plpgsql IMMUTABLE AS $f$
  BEGIN
    IF schedule IS NULL OR schedule !~* '^\s*(@(yearly|annually|monthly|weekly|daily|hourly)|[0-9]+\s+(seconds?|minutes?|hours?)|([0-9A-Za-z*/,#?LW-]+\s+){4,5}[0-9A-Za-z*/,#?LW-]+)\s*$' THEN
      RAISE EXCEPTION 'invalid schedule: %', schedule
        USING ERRCODE = '22023',
              HINT = '5 fields (minute hour day month weekday), 6 with seconds first, @daily and friends, or ''30 seconds''';
    END IF;
  END
  $f$;

  CREATE OR REPLACE FUNCTION cron.schedule(job_name text, schedule text, command text) RETURNS bigint
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
  DECLARE
    jid bigint;
  BEGIN
    PERFORM wasmbase.cron_check_schedule(schedule);
    IF command IS NULL OR btrim(command) = '' THEN
      RAISE EXCEPTION 'command is empty' USING ERRCODE = '22023';
    END IF;
    -- Like pg_cron, scheduling an existing name replaces that job.
    INSERT INTO wasmbase.cron_jobs AS j (name, kind, schedule, spec, source)
    VALUES (job_name, 'sql', schedule, jsonb_build_object('command', command), 'sql')
    ON CONFLICT (name) DO UPDATE
      SET kind = 'sql', schedule = EXCLUDED.schedule, timezone = 'UTC', spec = EXCLUDED.spec, updated_at = now(),
          version = j.version + 1,
          active_since = CASE WHEN j.schedule <> EXCLUDED.schedule THEN now() ELSE j.active_since END
      -- Only jobs made through this interface: an API or manifest job of the
      -- same name is not taken over.
      WHERE j.source = 'sql'
    RETURNING id INTO jid;
    IF jid IS NULL THEN
      RAISE EXCEPTION 'a job named % exists and was not made with cron.schedule', job_name
        USING ERRCODE = '23505', HINT = 'change it with the admin API or wasmbase cron, or pick another name';
    END IF;
    PERFORM pg_notify('wasmbase_cron', 'job:' || jid);
    INSERT INTO wasmbase.audit_log (actor, action, target, details)
    VALUES ('sql:' || session_user, 'cron.job.create', job_name, jsonb_build_object('id', jid, 'source', 'sql'));
    RETURN jid;
  END
  $f$;

  -- pg_cron's unnamed form: the job gets a generated name.
  CREATE OR REPLACE FUNCTION cron.schedule(schedule text, command text) RETURNS bigint
  LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
    SELECT cron.schedule('sql-' || substr(md5(random()::text || clock_timestamp()::text), 1, 12), schedule, command)
  $f$;

  CREATE OR REPLACE FUNCTION cron.unschedule(job_id bigint) RETURNS boolean
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
  DECLARE
    jname text;
  BEGIN
    -- Jobs made through this interface only (API and manifest jobs are
    -- managed where they were made).
    DELETE FROM wasmbase.cron_jobs WHERE id = job_id AND source = 'sql' RETURNING name INTO jname;
    IF NOT FOUND THEN
      RAISE EXCEPTION 'could not find valid entry for job %', job_id USING ERRCODE = 'P0002';
    END IF;
    UPDATE wasmbase.cron_runs SET status = 'failed', finished_at = now(),
           error = 'the job was deleted before this attempt started'
     WHERE cron_runs.job_id = unschedule.job_id AND status = 'pending';
    PERFORM pg_notify('wasmbase_cron', 'job:' || job_id);
    INSERT INTO wasmbase.audit_log (actor, action, target, details)
    VALUES ('sql:' || session_user, 'cron.job.delete', jname, jsonb_build_object('id', job_id));
    RETURN true;
  END
  $f$;

  CREATE OR REPLACE FUNCTION cron.unschedule(job_name text) RETURNS boolean
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
  DECLARE
    jid bigint;
  BEGIN
    SELECT id INTO jid FROM wasmbase.cron_jobs WHERE name = job_name;
    IF NOT FOUND THEN
      RAISE EXCEPTION 'could not find valid entry for job ''%''', job_name USING ERRCODE = 'P0002';
    END IF;
    RETURN cron.unschedule(jid);
  END
  $f$;

  CREATE OR REPLACE FUNCTION cron.alter_job(job_id bigint, schedule text DEFAULT NULL, command text DEFAULT NULL,
                                            database text DEFAULT NULL, username text DEFAULT NULL,
                                            active boolean DEFAULT NULL) RETURNS void
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
  BEGIN
    IF schedule IS NOT NULL THEN
      PERFORM wasmbase.cron_check_schedule(schedule);
    END IF;
    IF database IS NOT NULL AND database <> current_database() THEN
      RAISE EXCEPTION 'jobs run in this database only (%)', current_database() USING ERRCODE = '0A000';
    END IF;
    UPDATE wasmbase.cron_jobs j
       SET schedule = coalesce(alter_job.schedule, j.schedule),
           spec = CASE WHEN alter_job.command IS NULL THEN j.spec ELSE jsonb_build_object('command', alter_job.command) END,
           kind = CASE WHEN alter_job.command IS NULL THEN j.kind ELSE 'sql' END,
           paused = coalesce(NOT alter_job.active, j.paused),
           active_since = CASE WHEN (alter_job.schedule IS NOT NULL AND alter_job.schedule <> j.schedule)
                                  OR (j.paused AND alter_job.active) THEN now() ELSE j.active_since END,
           version = j.version + 1, updated_at = now()
     WHERE j.id = job_id AND j.source = 'sql';
    IF NOT FOUND THEN
      RAISE EXCEPTION 'could not find valid entry for job %', job_id USING ERRCODE = 'P0002';
    END IF;
    PERFORM pg_notify('wasmbase_cron', 'job:' || job_id);
    INSERT INTO wasmbase.audit_log (actor, action, target, details)
    SELECT 'sql:' || session_user, 'cron.job.update', name, jsonb_build_object('id', job_id)
      FROM wasmbase.cron_jobs WHERE id = job_id;
  END
  $f$;

  CREATE OR REPLACE VIEW cron.job AS
    SELECT j.id AS jobid, j.schedule, coalesce(j.spec ->> 'command', j.kind || ' job') AS command,
           'localhost'::text AS nodename, 5432 AS nodeport, current_database()::text AS database,
           'service_role'::text AS username, NOT j.paused AS active, j.name AS jobname
      FROM wasmbase.cron_jobs j;

  CREATE OR REPLACE VIEW cron.job_run_details AS
    SELECT r.job_id AS jobid, r.id AS runid, NULL::int AS job_pid, current_database()::text AS database,
           'service_role'::text AS username, j.spec ->> 'command' AS command,
           CASE r.status WHEN 'succeeded' THEN 'succeeded' WHEN 'running' THEN 'running'
                         WHEN 'pending' THEN 'starting' ELSE 'failed' END AS status,
           coalesce(r.error, r.output) AS return_message, r.started_at AS start_time, r.finished_at AS end_time
      FROM wasmbase.cron_runs r LEFT JOIN wasmbase.cron_jobs j ON j.id = r.job_id;

  -- Operators and the service role only; never anon or authenticated.
  REVOKE ALL ON SCHEMA cron FROM PUBLIC;
  REVOKE ALL ON ALL FUNCTIONS IN SCHEMA cron FROM PUBLIC;
  REVOKE ALL ON ALL TABLES IN SCHEMA cron FROM PUBLIC;
  GRANT USAGE ON SCHEMA cron TO service_role;
  GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA cron TO service_role;
  GRANT SELECT ON ALL TABLES IN SCHEMA cron TO service_role;
END
$do$;
