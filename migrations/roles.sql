-- The roles Wasmbase needs. Not a numbered migration: it runs on every start,
-- because roles are cluster-wide and not part of a database dump (a database
-- restored into a new cluster finds its migrations recorded but no roles).
-- The migration lock is per database, so several databases of one cluster may run
-- this at the same time: every CREATE/GRANT/ALTER is conditional and tolerates
-- losing the race.
--
--   anon, authenticated, service_role  Supabase's API roles (NOLOGIN)
--   authenticator                      the login role of request traffic, member
--                                      of the three above, NOINHERIT
--   wasmbase_auth                      the auth API's own LOGIN role: rights on the
--                                      auth tables only, and NOT reachable from
--                                      authenticator (no membership), so no request
--                                      transaction can SET ROLE into it
--   wasmbase_functions                 login role of raw SQL from functions granted
--                                      db = "service": NOINHERIT, member of
--                                      service_role alone; each transaction does
--                                      SET LOCAL ROLE service_role
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

  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'wasmbase_auth') THEN
    BEGIN
      CREATE ROLE wasmbase_auth LOGIN NOINHERIT;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
    END;
  ELSIF NOT (SELECT rolcanlogin FROM pg_roles WHERE rolname = 'wasmbase_auth') THEN
    BEGIN
      ALTER ROLE wasmbase_auth LOGIN;
    EXCEPTION WHEN internal_error THEN NULL;
    END;
  END IF;
  -- Earlier builds made authenticator a member; no request may become wasmbase_auth.
  IF pg_has_role('authenticator', 'wasmbase_auth', 'MEMBER') THEN
    BEGIN
      REVOKE wasmbase_auth FROM authenticator;
    EXCEPTION WHEN internal_error THEN NULL;
    END;
  END IF;

  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'wasmbase_functions') THEN
    BEGIN
      CREATE ROLE wasmbase_functions LOGIN NOINHERIT;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
    END;
  END IF;
  IF NOT pg_has_role('wasmbase_functions', 'service_role', 'MEMBER') THEN
    BEGIN
      GRANT service_role TO wasmbase_functions;
    EXCEPTION WHEN duplicate_object OR unique_violation OR internal_error THEN NULL;
    END;
  END IF;

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
