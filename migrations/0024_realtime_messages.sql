-- Realtime part two (docs/REALTIME.md): Supabase's `realtime.messages`, on
-- which row-level security policies authorize private channels (SELECT to
-- join and receive, INSERT to send), and through which the database
-- broadcasts: `realtime.send` and `realtime.broadcast_changes` have
-- Supabase's signatures, so Supabase migrations that use them apply as they
-- are. A committed message row is announced to every node by NOTIFY (by id:
-- the row, written under the policies, is what nodes deliver, so a forged
-- notification cannot inject a message); each node reads it only when it has
-- a subscriber. Rows are pruned by age (`realtime.messages_retention_hours`).
CREATE SCHEMA IF NOT EXISTS realtime;
GRANT USAGE ON SCHEMA realtime TO anon, authenticated, service_role;

CREATE TABLE realtime.messages (
  topic          text NOT NULL,
  extension      text NOT NULL,
  payload        jsonb,
  event          text,
  private        boolean DEFAULT false,
  updated_at     timestamp NOT NULL DEFAULT now(),
  inserted_at    timestamp NOT NULL DEFAULT now(),
  id             uuid NOT NULL DEFAULT gen_random_uuid(),
  binary_payload bytea,
  CONSTRAINT messages_pkey PRIMARY KEY (id, inserted_at),
  CONSTRAINT messages_payload_exclusive CHECK (payload IS NULL OR binary_payload IS NULL)
);
CREATE INDEX messages_inserted_at ON realtime.messages (inserted_at);
-- Broadcast replay (`config.broadcast.replay`): a topic's latest private broadcasts.
CREATE INDEX messages_replay ON realtime.messages (topic, inserted_at DESC)
  WHERE extension = 'broadcast' AND private IS TRUE;
ALTER TABLE realtime.messages ENABLE ROW LEVEL SECURITY;
GRANT SELECT, INSERT, UPDATE ON realtime.messages TO anon, authenticated, service_role;

-- The topic being authorized or sent to (set by the server's checks and by
-- realtime.send), for policies.
CREATE FUNCTION realtime.topic() RETURNS text
  LANGUAGE sql STABLE AS $$ SELECT nullif(current_setting('realtime.topic', true), '') $$;

-- Broadcasts `payload` as `event` on `topic` (private unless told otherwise),
-- as the caller: the INSERT policies decide. A payload without an "id" gets
-- the message's. A failure is a warning, never the caller's error (as on
-- Supabase: a trigger that broadcasts must not break the write).
CREATE FUNCTION realtime.send(payload jsonb, event text, topic text, private boolean DEFAULT true)
  RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  message_id uuid := gen_random_uuid();
BEGIN
  BEGIN
    PERFORM set_config('realtime.topic', topic, true);
    INSERT INTO realtime.messages (id, payload, event, topic, private, extension)
    VALUES (
      message_id,
      CASE WHEN payload ? 'id' THEN payload ELSE payload || jsonb_build_object('id', message_id) END,
      event, topic, private, 'broadcast'
    );
  EXCEPTION WHEN OTHERS THEN
    RAISE WARNING 'WarnSendingBroadcastMessage: %', SQLERRM;
  END;
END
$$;

-- The same with bytes (delivered as a binary broadcast).
CREATE FUNCTION realtime.send_binary(payload bytea, event text, topic text, private boolean DEFAULT true)
  RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  BEGIN
    PERFORM set_config('realtime.topic', topic, true);
    INSERT INTO realtime.messages (binary_payload, event, topic, private, extension)
    VALUES (payload, event, topic, private, 'broadcast');
  EXCEPTION WHEN OTHERS THEN
    RAISE WARNING 'WarnSendingBroadcastMessage: %', SQLERRM;
  END;
END
$$;

-- For row triggers: broadcasts a change as `{record, old_record, operation,
-- table, schema}` (private), as Supabase's `broadcast_changes` does.
CREATE FUNCTION realtime.broadcast_changes(
  topic_name text, event_name text, operation text, table_name text, table_schema text,
  new record, old record, level text DEFAULT 'ROW'
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  IF level = 'STATEMENT' THEN
    RAISE EXCEPTION 'function can only be triggered for each row, not for each statement';
  END IF;
  IF operation NOT IN ('INSERT', 'UPDATE', 'DELETE') THEN
    RAISE EXCEPTION 'Unexpected operation type: %', operation;
  END IF;
  PERFORM realtime.send(
    jsonb_build_object('old_record', old, 'record', new, 'operation', operation,
                       'table', table_name, 'schema', table_schema),
    event_name, topic_name);
EXCEPTION WHEN OTHERS THEN
  RAISE EXCEPTION 'Failed to process the row: %', SQLERRM;
END
$$;

-- The read check of a private join (runtime/src/api/realtime/authz.rs):
-- probe rows, one per extension, written past the policies so the caller's
-- SELECT policies can be asked whether they may see them. A transaction that
-- calls it can never commit (the guard row's deferred trigger raises at
-- COMMIT), so no caller can use it to write messages past the policies.
CREATE UNLOGGED TABLE wasmbase.realtime_probe_guard (at timestamptz NOT NULL DEFAULT now());
CREATE FUNCTION wasmbase.realtime_probe_never_commits() RETURNS trigger
  LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'realtime.wasmbase_probe() is for authorization checks, which are always rolled back';
END
$$;
CREATE CONSTRAINT TRIGGER never_commits AFTER INSERT ON wasmbase.realtime_probe_guard
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION wasmbase.realtime_probe_never_commits();
CREATE FUNCTION realtime.wasmbase_probe(probe_topic text, ids uuid[]) RETURNS void
  LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog AS $$
  INSERT INTO wasmbase.realtime_probe_guard DEFAULT VALUES;
  INSERT INTO realtime.messages (id, topic, extension)
  VALUES (ids[1], probe_topic, 'broadcast'), (ids[2], probe_topic, 'presence');
$$;
REVOKE ALL ON FUNCTION realtime.wasmbase_probe(text, uuid[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION realtime.wasmbase_probe(text, uuid[]) TO anon, authenticated, service_role;

-- Every committed broadcast row is announced by its key, id and inserted_at
-- (probe rows carry no event).
CREATE FUNCTION wasmbase.realtime_message_notify() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
  IF NEW.extension IS DISTINCT FROM 'broadcast' OR NEW.event IS NULL
     OR (NEW.payload IS NULL AND NEW.binary_payload IS NULL) THEN
    RETURN NULL;
  END IF;
  PERFORM pg_notify('wasmbase_realtime_messages', json_build_object(
    'i', NEW.id,
    'a', (extract(epoch FROM NEW.inserted_at) * 1000000)::bigint,
    'p', coalesce(NEW.private, false),
    't', CASE WHEN octet_length(NEW.topic) <= 1000 THEN NEW.topic END)::text);
  RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION wasmbase.realtime_message_notify() FROM PUBLIC;
CREATE TRIGGER wasmbase_broadcast AFTER INSERT ON realtime.messages
  FOR EACH ROW EXECUTE FUNCTION wasmbase.realtime_message_notify();
