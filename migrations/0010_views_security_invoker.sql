-- Views in exposed schemas run with the caller's rights (security_invoker).
--
-- PostgreSQL runs a view's query as the view's owner by default (the owner of a
-- migration's view is the owner role, which RLS does not restrict), so
-- `CREATE VIEW public.notes_view AS SELECT * FROM notes` let anon read every row
-- of `notes` and let one user update another's rows through the view: the
-- advisor of Supabase calls this `security_definer_view`.
--
-- The event trigger of 0003 (superuser only) now also fires on CREATE VIEW
-- (which CREATE OR REPLACE VIEW is too) and on CREATE SCHEMA (whose embedded
-- CREATE TABLE/VIEW elements it did not see before), and sets
-- `security_invoker = on` (PostgreSQL 15+) on each new view in an exposed
-- schema, so the caller's grants and RLS policies apply to the base tables.
--
-- Opt-out, per view: say it in the statement, `CREATE VIEW v WITH
-- (security_invoker = false) AS ...`. The trigger reads the view's options and
-- leaves any explicit `security_invoker` alone. `CREATE OR REPLACE VIEW` without
-- the option makes the view invoker again (PostgreSQL replaces the options with
-- the statement's), and `ALTER VIEW v SET/RESET (security_invoker ...)` is never
-- overridden. Independent of `rls_by_default`, which governs tables only.
-- See docs/SECURITY.md.
CREATE OR REPLACE FUNCTION wasmbase.enable_rls_on_new_tables() RETURNS event_trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
  cfg wasmbase.settings;
  obj record;
BEGIN
  SELECT * INTO cfg FROM wasmbase.settings WHERE id;
  IF cfg IS NULL THEN
    RETURN;
  END IF;
  FOR obj IN SELECT * FROM pg_event_trigger_ddl_commands()
             WHERE schema_name = ANY (cfg.exposed_schemas)
  LOOP
    IF obj.object_type = 'table'
       AND obj.command_tag IN ('CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO') THEN
      IF cfg.rls_by_default THEN
        EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', obj.object_identity);
      END IF;
    ELSIF obj.object_type = 'view' AND obj.command_tag = 'CREATE VIEW'
       AND current_setting('server_version_num')::int >= 150000
       AND NOT EXISTS (SELECT 1 FROM pg_class c, pg_options_to_table(c.reloptions) o
                       WHERE c.oid = obj.objid AND o.option_name = 'security_invoker') THEN
      EXECUTE format('ALTER VIEW %s SET (security_invoker = on)', obj.object_identity);
    END IF;
  END LOOP;
END $$;

-- An event trigger's tags cannot be altered: recreate it, keeping its
-- enabled/disabled state. Without a superuser there is no trigger (see 0003);
-- an owner that lost superuser since keeps the old trigger (tables only).
DO $$
DECLARE
  state "char" := (SELECT evtenabled FROM pg_event_trigger WHERE evtname = 'wasmbase_enable_rls');
BEGIN
  IF state IS NOT NULL AND NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
    RAISE WARNING 'wasmbase: not a superuser: new views keep PostgreSQL''s default (they run as their owner); see docs/SECURITY.md';
  ELSIF state IS NOT NULL THEN
    DROP EVENT TRIGGER wasmbase_enable_rls;
    CREATE EVENT TRIGGER wasmbase_enable_rls ON ddl_command_end
      WHEN TAG IN ('CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO', 'CREATE VIEW', 'CREATE SCHEMA')
      EXECUTE FUNCTION wasmbase.enable_rls_on_new_tables();
    IF state = 'D' THEN
      ALTER EVENT TRIGGER wasmbase_enable_rls DISABLE;
    END IF;
  END IF;
END
$$;
