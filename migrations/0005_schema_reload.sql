-- Schema-cache reloads: every DDL statement NOTIFYs `wasmbase_schema` (empty
-- payload: ids only, nothing about the change; PostgreSQL folds identical
-- notifications of one transaction into one). Each node reloads its cache
-- beside the old one and swaps. `NOTIFY pgrst, 'reload schema'` works too.
--
-- Event triggers need a superuser; without one the server polls instead
-- (`database.schema_poll_secs`), see docs/DATA.md.
CREATE OR REPLACE FUNCTION wasmbase.notify_schema_change() RETURNS event_trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
  PERFORM pg_notify('wasmbase_schema', '');
END $$;

DO $$
BEGIN
  IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
     AND NOT EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = 'wasmbase_schema_changed') THEN
    CREATE EVENT TRIGGER wasmbase_schema_changed ON ddl_command_end
      EXECUTE FUNCTION wasmbase.notify_schema_change();
  END IF;
END
$$;
