-- Each node's channels (topic → joined channels) and open connections, as of
-- its last heartbeat, for GET /admin/v1/realtime (the union over nodes).
ALTER TABLE wasmbase.realtime_nodes
  ADD COLUMN channels jsonb NOT NULL DEFAULT '{}',
  ADD COLUMN connections int NOT NULL DEFAULT 0;
