-- The platform's own tables. Nothing here is reachable by the API roles.
REVOKE ALL ON SCHEMA wasmbase FROM PUBLIC;

CREATE TABLE IF NOT EXISTS wasmbase.api_keys (
  id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  kind        text NOT NULL CHECK (kind IN ('publishable', 'secret')),
  name        text NOT NULL DEFAULT '',
  prefix      text NOT NULL,           -- first characters, for lookup and display
  hash        bytea NOT NULL UNIQUE,   -- SHA-256 of the whole key; the key itself is never stored
  created_at  timestamptz NOT NULL DEFAULT now(),
  revoked_at  timestamptz
);
CREATE INDEX IF NOT EXISTS api_keys_active ON wasmbase.api_keys (prefix) WHERE revoked_at IS NULL;

-- Every node reloads its key cache on this notification (payload: id only).
CREATE OR REPLACE FUNCTION wasmbase.notify_api_keys() RETURNS trigger
  LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('wasmbase_keys', coalesce(NEW.id, OLD.id)::text);
  RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS api_keys_notify ON wasmbase.api_keys;
CREATE TRIGGER api_keys_notify AFTER INSERT OR UPDATE OR DELETE ON wasmbase.api_keys
  FOR EACH ROW EXECUTE FUNCTION wasmbase.notify_api_keys();

CREATE TABLE IF NOT EXISTS wasmbase.audit_log (
  id       bigserial PRIMARY KEY,
  at       timestamptz NOT NULL DEFAULT now(),
  actor    text NOT NULL,
  action   text NOT NULL,
  target   text NOT NULL DEFAULT '',
  details  jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS audit_log_at ON wasmbase.audit_log (at);

-- A user's own migrations (db/migrations/*.sql), tracked apart from the platform's.
CREATE TABLE IF NOT EXISTS wasmbase.user_migrations (
  name        text PRIMARY KEY,
  checksum    text NOT NULL,
  applied_at  timestamptz NOT NULL DEFAULT now()
);

-- Settings the database itself needs (read by the event trigger below); the server
-- writes them from its config at every start.
CREATE TABLE IF NOT EXISTS wasmbase.settings (
  id               boolean PRIMARY KEY DEFAULT true CHECK (id),
  rls_by_default   boolean NOT NULL DEFAULT true,
  exposed_schemas  text[] NOT NULL DEFAULT ARRAY['public']
);
INSERT INTO wasmbase.settings (id) VALUES (true) ON CONFLICT DO NOTHING;
