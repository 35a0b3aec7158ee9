-- Defaults for tables the project creates in exposed schemas.
--
-- With a superuser (the embedded default): an event trigger enables row-level
-- security on every new table in an exposed schema, and the API roles get the usual
-- Supabase grants, so a new table is reachable through the API but returns nothing
-- to anon/authenticated until its policies exist.
--
-- Without a superuser (some managed PostgreSQL), event triggers cannot be created.
-- Then only service_role gets default grants: a table is never readable by anon
-- before someone has both granted access and written policies. See OPERATIONS.md.
GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role;
-- PostgreSQL 15 already does this; older servers let any role create objects in
-- public that could shadow built-ins in someone else's search_path.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

CREATE OR REPLACE FUNCTION wasmbase.enable_rls_on_new_tables() RETURNS event_trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
  cfg wasmbase.settings;
  obj record;
BEGIN
  SELECT * INTO cfg FROM wasmbase.settings WHERE id;
  IF cfg IS NULL OR NOT cfg.rls_by_default THEN
    RETURN;
  END IF;
  FOR obj IN SELECT * FROM pg_event_trigger_ddl_commands()
             WHERE object_type = 'table' AND command_tag IN ('CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO')
  LOOP
    IF obj.schema_name = ANY (cfg.exposed_schemas) THEN
      EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', obj.object_identity);
    END IF;
  END LOOP;
END $$;

DO $$
BEGIN
  IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
    IF NOT EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = 'wasmbase_enable_rls') THEN
      CREATE EVENT TRIGGER wasmbase_enable_rls ON ddl_command_end
        WHEN TAG IN ('CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO')
        EXECUTE FUNCTION wasmbase.enable_rls_on_new_tables();
    END IF;
    ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO anon, authenticated, service_role;
    ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON SEQUENCES TO anon, authenticated, service_role;
    ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT EXECUTE ON FUNCTIONS TO anon, authenticated, service_role;
  ELSE
    RAISE WARNING 'wasmbase: not a superuser: no event trigger, so new tables get no automatic RLS and anon/authenticated get no default grants; see docs/OPERATIONS.md';
    ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO service_role;
    ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON SEQUENCES TO service_role;
    ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT EXECUTE ON FUNCTIONS TO service_role;
  END IF;
END
$$;
