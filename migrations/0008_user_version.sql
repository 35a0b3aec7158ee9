-- `GET /auth/v1/user` answers from a per-node cache of the rendered user
-- object while the user row's version (`xmin`) is unchanged; the session is
-- still checked on every request. Identities are part of that object, so any
-- change to them writes a new version of their user's row.
CREATE OR REPLACE FUNCTION auth.touch_user() RETURNS trigger
  LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP <> 'INSERT' THEN
    UPDATE auth.users SET updated_at = updated_at WHERE id = OLD.user_id;
  END IF;
  IF TG_OP <> 'DELETE' AND (TG_OP = 'INSERT' OR NEW.user_id IS DISTINCT FROM OLD.user_id) THEN
    UPDATE auth.users SET updated_at = updated_at WHERE id = NEW.user_id;
  END IF;
  RETURN NULL;
END $$;

CREATE TRIGGER identities_touch_user
  AFTER INSERT OR UPDATE OR DELETE ON auth.identities
  FOR EACH ROW EXECUTE FUNCTION auth.touch_user();
