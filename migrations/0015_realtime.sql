-- Realtime (docs/REALTIME.md): what N nodes share through PostgreSQL, the only
-- shared service. Messages cross nodes as NOTIFY on `wasmbase_realtime`; one
-- too large for a NOTIFY payload is kept here and crosses by id.
CREATE TABLE wasmbase.realtime_outbox (
  id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  body       text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);

-- Nodes serving realtime, and when each last said it was alive: a node whose
-- `seen_at` is older than `realtime.presence_timeout_secs` is gone, and any
-- node removes its presences everywhere.
CREATE TABLE wasmbase.realtime_nodes (
  node    uuid PRIMARY KEY,
  seen_at timestamptz NOT NULL DEFAULT now()
);

-- Presence: the union over all nodes is a topic's state.
CREATE TABLE wasmbase.realtime_presence (
  node  uuid NOT NULL,
  topic text NOT NULL,
  key   text NOT NULL,
  ref   text NOT NULL,
  meta  jsonb NOT NULL,
  PRIMARY KEY (node, ref)
);
CREATE INDEX realtime_presence_topic ON wasmbase.realtime_presence (topic);
