-- Supabase-compatible API roles. Roles are cluster-wide while the migration lock is
-- per database, so several databases of one cluster may run this at the same time:
-- every CREATE/GRANT/ALTER is conditional and tolerates losing the race.
DO $$
DECLARE
  r text;
  is_super boolean := (SELECT rolsuper FROM pg_roles WHERE rolname = current_user);
BEGIN
  FOREACH r IN ARRAY ARRAY['anon', 'authenticated', 'service_role'] LOOP
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
      BEGIN
        EXECUTE format('CREATE ROLE %I NOLOGIN NOINHERIT', r);
      EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
      END;
    END IF;
  END LOOP;

  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticator') THEN
    BEGIN
      CREATE ROLE authenticator LOGIN NOINHERIT;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
    END;
  END IF;

  FOREACH r IN ARRAY ARRAY['anon', 'authenticated', 'service_role'] LOOP
    IF NOT pg_has_role('authenticator', r, 'MEMBER') THEN
      BEGIN
        EXECUTE format('GRANT %I TO authenticator', r);
      EXCEPTION WHEN duplicate_object OR unique_violation OR internal_error THEN NULL;
      END;
    END IF;
  END LOOP;

  -- service_role bypasses RLS, as on Supabase. Only a superuser may grant BYPASSRLS.
  IF NOT (SELECT rolbypassrls FROM pg_roles WHERE rolname = 'service_role') THEN
    IF is_super THEN
      BEGIN
        ALTER ROLE service_role BYPASSRLS;
      EXCEPTION WHEN internal_error THEN NULL; -- "tuple concurrently updated": another database did it
      END;
    ELSE
      RAISE WARNING 'wasmbase: not a superuser, so service_role cannot get BYPASSRLS; see docs/OPERATIONS.md';
    END IF;
  END IF;
END
$$;
