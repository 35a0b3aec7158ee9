-- Realtime postgres_changes (docs/REALTIME.md): a table opts in the Supabase
-- way, `ALTER PUBLICATION supabase_realtime ADD TABLE todos`, and gets a row
-- trigger that records each change in `wasmbase.realtime_changes` and sends
-- `NOTIFY wasmbase_realtime_changes` with the transaction id (one per
-- transaction: PostgreSQL folds identical notifications). NOTIFY is delivered
-- at commit, so a node reads exactly the committed changes of that
-- transaction, by id, never a half. Who may see a change is decided by the
-- server, as each subscriber (runtime/src/api/realtime/changes.rs). Why
-- triggers and not logical replication: docs/ARCHITECTURE.md.
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'supabase_realtime') THEN
    CREATE PUBLICATION supabase_realtime;
  END IF;
END
$$;

CREATE TABLE wasmbase.realtime_changes (
  id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  xid        xid8 NOT NULL DEFAULT pg_current_xact_id(),
  rel        oid NOT NULL,
  kind       text NOT NULL,
  record     jsonb,
  old_record jsonb,
  at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX realtime_changes_xid ON wasmbase.realtime_changes (xid);
CREATE INDEX realtime_changes_at ON wasmbase.realtime_changes (at);

-- The row trigger of every table in the publication. SECURITY DEFINER: the
-- writing role needs no privilege on the platform's table.
CREATE FUNCTION wasmbase.realtime_capture() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
  INSERT INTO wasmbase.realtime_changes (rel, kind, record, old_record)
  VALUES (
    TG_RELID,
    TG_OP,
    CASE WHEN TG_OP <> 'DELETE' THEN to_jsonb(NEW) END,
    CASE WHEN TG_OP <> 'INSERT' THEN to_jsonb(OLD) END
  );
  PERFORM pg_notify('wasmbase_realtime_changes', pg_current_xact_id()::text);
  RETURN NULL;
END
$$;

-- Puts the trigger on every table of the publication and takes it off every
-- table that left. Run by the event trigger below in the same transaction as
-- the ALTER PUBLICATION (so no change slips between), and by each node after a
-- schema reload (where no event trigger exists).
CREATE FUNCTION wasmbase.realtime_sync_triggers() RETURNS void
  LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
  r record;
BEGIN
  FOR r IN
    SELECT c.oid::regclass AS rel
    FROM pg_publication_tables p
    JOIN pg_namespace n ON n.nspname = p.schemaname
    JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = p.tablename
    WHERE p.pubname = 'supabase_realtime'
      AND NOT EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = c.oid AND t.tgname = 'wasmbase_realtime')
  LOOP
    -- A table this role may not put a trigger on is skipped, never an error:
    -- the statement that fired this (a user's ALTER PUBLICATION) must not fail.
    BEGIN
      EXECUTE format(
        'CREATE TRIGGER wasmbase_realtime AFTER INSERT OR UPDATE OR DELETE ON %s '
        'FOR EACH ROW EXECUTE FUNCTION wasmbase.realtime_capture()', r.rel);
    EXCEPTION WHEN insufficient_privilege THEN
      RAISE WARNING 'realtime: cannot capture changes of % (not its owner)', r.rel;
    END;
  END LOOP;
  FOR r IN
    SELECT t.tgrelid::regclass AS rel
    FROM pg_trigger t
    WHERE t.tgname = 'wasmbase_realtime'
      AND NOT EXISTS (
        SELECT 1 FROM pg_publication_tables p
        JOIN pg_namespace n ON n.nspname = p.schemaname
        JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = p.tablename
        WHERE p.pubname = 'supabase_realtime' AND c.oid = t.tgrelid)
  LOOP
    BEGIN
      EXECUTE format('DROP TRIGGER wasmbase_realtime ON %s', r.rel);
    EXCEPTION WHEN insufficient_privilege THEN
      RAISE WARNING 'realtime: cannot stop capturing changes of % (not its owner)', r.rel;
    END;
  END LOOP;
END
$$;

-- SECURITY DEFINER (owned by the superuser that created the event trigger),
-- so whoever alters the publication, the capture triggers follow.
CREATE FUNCTION wasmbase.realtime_publication_changed() RETURNS event_trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
  PERFORM wasmbase.realtime_sync_triggers();
END
$$;

DO $$
BEGIN
  IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
    CREATE EVENT TRIGGER wasmbase_realtime_publication ON ddl_command_end
      WHEN TAG IN ('ALTER PUBLICATION', 'CREATE PUBLICATION', 'DROP TABLE')
      EXECUTE FUNCTION wasmbase.realtime_publication_changed();
  END IF;
END
$$;
