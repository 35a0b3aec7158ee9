-- Cron (docs/CRON.md): jobs and their runs, shared by every node through
-- PostgreSQL. No leader: each node keeps the schedules in memory and, when a
-- tick is due, claims it by inserting (job_id, scheduled_for, attempt) under
-- the unique key below; only the node whose insert succeeds runs it.
CREATE TABLE wasmbase.cron_jobs (
  id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  name          text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 200),
  -- 'sql' | 'http' | 'function' (a handler a function exports) | 'call' (a
  -- function's HTTP entry point called with a JSON body).
  kind          text NOT NULL CHECK (kind IN ('sql', 'http', 'function', 'call')),
  schedule      text NOT NULL,
  timezone      text NOT NULL DEFAULT 'UTC',
  -- What to run, by kind (docs/CRON.md): {command} | {method, url, headers,
  -- body, success} | {function, entry, payload, role} | {function, body}.
  spec          jsonb NOT NULL,
  -- 'api' (admin API, CLI), 'sql' (cron.schedule), 'manifest' (function.toml;
  -- replaced on every deploy of `function_name`).
  source        text NOT NULL DEFAULT 'api',
  function_name text,
  timeout_ms    int NOT NULL DEFAULT 30000 CHECK (timeout_ms > 0),
  max_attempts  int NOT NULL DEFAULT 1 CHECK (max_attempts BETWEEN 1 AND 100),
  backoff_ms    int NOT NULL DEFAULT 1000 CHECK (backoff_ms >= 0),
  overlap       text NOT NULL DEFAULT 'forbid' CHECK (overlap IN ('forbid', 'allow')),
  missed        text NOT NULL DEFAULT 'skip' CHECK (missed IN ('skip', 'run_once', 'catch_up')),
  catch_up_max  int NOT NULL DEFAULT 0 CHECK (catch_up_max >= 0),
  paused        boolean NOT NULL DEFAULT false,
  -- {after, webhook, email}: who hears of consecutive failed ticks.
  alert         jsonb,
  -- 'ok' or 'failing': an alert goes out on the change to 'failing' and a
  -- recovery notice on the change back, once each (one node wins the UPDATE).
  alert_state   text NOT NULL DEFAULT 'ok' CHECK (alert_state IN ('ok', 'failing')),
  -- Ticks before this instant are never "missed" (creation, resume or a
  -- schedule change moves it).
  active_since  timestamptz NOT NULL DEFAULT now(),
  -- Bumped by every change: a claim carries the version the node scheduled
  -- the tick from, and a tick of an older definition is not claimed.
  version       bigint NOT NULL DEFAULT 1,
  created_at    timestamptz NOT NULL DEFAULT now(),
  updated_at    timestamptz NOT NULL DEFAULT now()
);

-- One row per attempt. `run_id` is the same for every attempt of one tick:
-- what a handler uses to make its work idempotent.
CREATE TABLE wasmbase.cron_runs (
  id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  run_id        uuid NOT NULL DEFAULT gen_random_uuid(),
  -- No foreign key: a deleted job's history stays.
  job_id        bigint NOT NULL,
  job_name      text NOT NULL,
  scheduled_for timestamptz NOT NULL,
  attempt       int NOT NULL DEFAULT 1,
  -- 'pending' (a retry or a manual run waiting for `due_at`), 'running',
  -- 'succeeded', 'failed', 'timed_out', 'lost', 'skipped'.
  status        text NOT NULL CHECK (status IN ('pending', 'running', 'succeeded', 'failed', 'timed_out', 'lost', 'skipped')),
  -- 'schedule' | 'retry' | 'manual' | 'missed'
  trigger       text NOT NULL DEFAULT 'schedule',
  due_at        timestamptz NOT NULL DEFAULT now(),
  node          uuid,
  lease_until   timestamptz,
  started_at    timestamptz,
  finished_at   timestamptz,
  duration_ms   bigint,
  error         text,
  output        text,
  created_at    timestamptz NOT NULL DEFAULT now(),
  UNIQUE (job_id, scheduled_for, attempt)
);
CREATE INDEX cron_runs_job_time ON wasmbase.cron_runs (job_id, scheduled_for DESC);
CREATE INDEX cron_runs_open ON wasmbase.cron_runs (status, job_id) WHERE status IN ('pending', 'running');
CREATE INDEX cron_runs_created ON wasmbase.cron_runs (created_at);

-- Nodes running cron, and when each last said so (every third of a lease):
-- a job's ticks are claimed first by one "home" node among those seen within
-- a lease, and by the others a moment later (runtime/src/cron/scheduler.rs).
CREATE TABLE wasmbase.cron_nodes (
  node    uuid PRIMARY KEY,
  seen_at timestamptz NOT NULL DEFAULT now()
);

-- Log lines of a run, appended in small batches while it runs (live logs
-- follow them), kept and pruned with the run.
CREATE TABLE wasmbase.cron_run_logs (
  id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  run     bigint NOT NULL REFERENCES wasmbase.cron_runs (id) ON DELETE CASCADE,
  at      timestamptz NOT NULL DEFAULT now(),
  level   text NOT NULL,
  message text NOT NULL
);
CREATE INDEX cron_run_logs_run ON wasmbase.cron_run_logs (run, id);

-- The delay before the attempt after `attempt`: `backoff_ms` doubled for each
-- attempt already made, at most an hour, with jitter (between half and all of
-- it) so retries of many jobs that failed together do not fire together.
CREATE FUNCTION wasmbase.cron_backoff(backoff_ms int, attempt int) RETURNS interval
LANGUAGE sql VOLATILE AS $$
  SELECT make_interval(secs => least(backoff_ms::float8 * power(2, least(attempt - 1, 30)), 3600000)
                               / 1000.0 * (0.5 + random() * 0.5))
$$;

-- Wakes every node's scheduler for queued attempt `id`: `run:<id>:<due, ms
-- since the epoch>`, so a node schedules it without reading it first.
CREATE FUNCTION wasmbase.cron_announce_run(id bigint) RETURNS void
LANGUAGE sql AS $$
  SELECT pg_notify('wasmbase_cron', 'run:' || r.id || ':' || (extract(epoch FROM r.due_at) * 1000)::bigint)
    FROM wasmbase.cron_runs r WHERE r.id = $1
$$;

-- Queues the next attempt of run row `r` when its job has attempts left, and
-- wakes every node's scheduler. The one place retries are decided: a failed
-- or timed-out attempt (cron_finish) and a lost one (cron_reap) both come here.
CREATE FUNCTION wasmbase.cron_queue_retry(r wasmbase.cron_runs) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
  j wasmbase.cron_jobs;
  new_id bigint;
BEGIN
  SELECT * INTO j FROM wasmbase.cron_jobs WHERE id = r.job_id;
  IF NOT FOUND OR r.attempt >= j.max_attempts THEN
    RETURN;
  END IF;
  INSERT INTO wasmbase.cron_runs (run_id, job_id, job_name, scheduled_for, attempt, status, trigger, due_at)
  VALUES (r.run_id, r.job_id, r.job_name, r.scheduled_for, r.attempt + 1, 'pending', 'retry',
          now() + wasmbase.cron_backoff(j.backoff_ms, r.attempt))
  ON CONFLICT DO NOTHING
  RETURNING id INTO new_id;
  IF new_id IS NOT NULL THEN
    PERFORM wasmbase.cron_announce_run(new_id);
  END IF;
END
$$;

-- Records how an attempt ended and queues its retry. 0 when the attempt was
-- no longer running here (its lease ran out and it was recorded as lost), 1
-- when recorded, 2 when recorded and its job has alerts to check.
CREATE FUNCTION wasmbase.cron_finish(p_run bigint, p_status text, p_error text, p_output text, p_duration_ms bigint)
RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
  r wasmbase.cron_runs;
BEGIN
  UPDATE wasmbase.cron_runs
     SET status = p_status, finished_at = now(), duration_ms = p_duration_ms, error = p_error,
         -- net.http_* answers may have been noted on the run already.
         output = nullif(concat_ws(E'\n', p_output, output), ''), lease_until = NULL
   WHERE id = p_run AND status = 'running'
  RETURNING * INTO r;
  IF NOT FOUND THEN
    RETURN 0;
  END IF;
  IF p_status IN ('failed', 'timed_out') THEN
    PERFORM wasmbase.cron_queue_retry(r);
  END IF;
  -- Followers of its live log stop.
  PERFORM pg_notify('wasmbase_cron_logs', p_run::text);
  -- Attempts of this job that waited for it (`overlap = forbid`) may start.
  PERFORM wasmbase.cron_announce_run(q.id)
     FROM wasmbase.cron_runs q WHERE q.job_id = r.job_id AND q.status = 'pending';
  RETURN CASE WHEN EXISTS (SELECT 1 FROM wasmbase.cron_jobs j WHERE j.id = r.job_id
                             AND (j.alert IS NOT NULL OR j.alert_state = 'failing')) THEN 2 ELSE 1 END;
END
$$;

-- Attempts whose node stopped renewing the lease are lost; each is retried
-- per its job. Any node may call this; a row is reaped once. Returns each
-- reaped attempt's job and whether it has alerts to check.
CREATE FUNCTION wasmbase.cron_reap() RETURNS TABLE (job bigint, alerts boolean)
LANGUAGE plpgsql AS $$
DECLARE
  r wasmbase.cron_runs;
BEGIN
  FOR r IN
    UPDATE wasmbase.cron_runs
       SET status = 'lost', finished_at = now(), lease_until = NULL,
           duration_ms = (extract(epoch FROM now() - started_at) * 1000)::bigint,
           error = 'node ' || node || ' stopped renewing its lease while this attempt ran (the node stopped or lost the database)'
     WHERE status = 'running' AND lease_until < now()
    RETURNING *
  LOOP
    PERFORM wasmbase.cron_queue_retry(r);
    PERFORM pg_notify('wasmbase_cron_logs', r.id::text);
    job := r.job_id;
    alerts := EXISTS (SELECT 1 FROM wasmbase.cron_jobs j WHERE j.id = r.job_id
                        AND (j.alert IS NOT NULL OR j.alert_state = 'failing'));
    RETURN NEXT;
  END LOOP;
  -- Attempts queued for a job deleted meanwhile never start.
  UPDATE wasmbase.cron_runs q
     SET status = 'failed', finished_at = now(), error = 'the job was deleted before this attempt started'
   WHERE q.status = 'pending'
     AND NOT EXISTS (SELECT 1 FROM wasmbase.cron_jobs j WHERE j.id = q.job_id);
  RETURN;
END
$$;
