-- Deployed functions, their versions, invocation logs and encrypted secrets.
--
-- Components are stored as uploaded (WebAssembly bytes); each node compiles
-- them itself into a local cache. Compiled native code never lives here.
CREATE TABLE wasmbase.functions (
  name           text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_-]{0,63}$'),
  active_version int  NOT NULL,
  updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE wasmbase.function_versions (
  name       text NOT NULL REFERENCES wasmbase.functions (name) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
  version    int  NOT NULL CHECK (version > 0),
  manifest   text NOT NULL,
  component  bytea NOT NULL,
  hash       text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  created_by text NOT NULL,
  PRIMARY KEY (name, version)
);

-- Written in batches by every node; `wasmbase functions logs NAME` reads them.
CREATE TABLE wasmbase.function_logs (
  id          bigserial PRIMARY KEY,
  at          timestamptz NOT NULL DEFAULT now(),
  name        text NOT NULL,
  version     int,
  request_id  text,
  status      int NOT NULL,
  duration_ms double precision NOT NULL,
  outcome     text NOT NULL,
  lines       jsonb NOT NULL DEFAULT '[]'
);
CREATE INDEX function_logs_name_at ON wasmbase.function_logs (name, at DESC);

-- Env values for functions, AES-256-GCM encrypted with the configured master
-- key (`functions.secrets_key`); the database never sees a plaintext value.
CREATE TABLE wasmbase.secrets (
  name       text PRIMARY KEY CHECK (name ~ '^[A-Za-z_][A-Za-z0-9_]{0,127}$'),
  nonce      bytea NOT NULL,
  ciphertext bytea NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now()
);

-- Every node reloads on these (payload: a function name, or nothing for
-- secrets); a node that was not listening re-syncs after it reconnects.
CREATE FUNCTION wasmbase.notify_function_change() RETURNS trigger
  LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
  PERFORM pg_notify('wasmbase_functions', coalesce(NEW.name, OLD.name));
  RETURN NULL;
END $$;
CREATE TRIGGER functions_changed AFTER INSERT OR UPDATE OR DELETE ON wasmbase.functions
  FOR EACH ROW EXECUTE FUNCTION wasmbase.notify_function_change();

CREATE FUNCTION wasmbase.notify_secret_change() RETURNS trigger
  LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
  PERFORM pg_notify('wasmbase_secrets', '');
  RETURN NULL;
END $$;
CREATE TRIGGER secrets_changed AFTER INSERT OR UPDATE OR DELETE ON wasmbase.secrets
  FOR EACH STATEMENT EXECUTE FUNCTION wasmbase.notify_secret_change();
