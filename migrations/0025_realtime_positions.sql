-- Catch-up for postgres_changes (docs/REALTIME.md "Catch-up"): every
-- transaction that changes a published table gets one row here, stamped at
-- pre-commit (a deferred trigger, the last thing before COMMIT) with
--   * `snap`, its snapshot then: every transaction visible in it committed
--     before this one did;
--   * `seq`, taken after that snapshot: the order transactions are delivered
--     in (the commit order, up to transactions committing at the same instant,
--     which touched no row in common — one would have waited for the other);
--   * `committed_at`, for pruning and `commit_timestamp`.
-- A client's position is a snapshot (`xmin:xmax:xip`): "every transaction
-- visible in it was delivered". The changes after it are those of committed
-- transactions not visible in it, in `seq` order; each delivered change
-- moves the position on by the union with its transaction's `snap` and xid.
-- Since nodes read by position (not by notification), a node that missed a
-- NOTIFY, restarted, or serves a client coming from another node delivers
-- every change exactly once. Why not logical replication: docs/ARCHITECTURE.md.
CREATE SEQUENCE wasmbase.realtime_commit_seq;

CREATE TABLE wasmbase.realtime_txns (
  xid          xid8 PRIMARY KEY DEFAULT pg_current_xact_id(),
  seq          bigint,
  snap         pg_snapshot,
  committed_at timestamptz
);
-- No index on seq: a read finds its transactions by xid (the primary key)
-- and sorts the few it found.
CREATE INDEX realtime_txns_committed_at ON wasmbase.realtime_txns (committed_at);

-- The union of the pruned transactions' positions (one row): a client
-- position that does not contain it may have missed a pruned change, and gets
-- the catch-up gap message instead of a silent hole.
CREATE TABLE wasmbase.realtime_pruned (
  one  boolean PRIMARY KEY DEFAULT true CHECK (one),
  mark pg_snapshot NOT NULL
);
INSERT INTO wasmbase.realtime_pruned (mark) VALUES ('1:1:');

-- Changes captured before this migration belong to no transaction row: gone
-- (they are kept minutes only, and nothing could deliver them now).
DELETE FROM wasmbase.realtime_changes;

-- At pre-commit, once per transaction: the stamp, and the node's wake-up.
CREATE FUNCTION wasmbase.realtime_commit() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
  -- One statement: its snapshot is taken before nextval runs.
  UPDATE wasmbase.realtime_txns
     SET snap = pg_current_snapshot(),
         seq = nextval('wasmbase.realtime_commit_seq'),
         committed_at = clock_timestamp()
   WHERE xid = NEW.xid;
  -- Stamped: a change after this (a user's SET CONSTRAINTS ALL IMMEDIATE
  -- fired this early, or a later deferred trigger writes) stamps it again.
  PERFORM set_config('wasmbase.realtime_txn', NEW.xid::text || ':stamped', true);
  PERFORM pg_notify('wasmbase_realtime_changes', NEW.xid::text);
  RETURN NULL;
END
$$;

-- Fires for the row's insert, and again whenever the capture clears the
-- stamp (never for the stamp's own update: seq is set then).
CREATE CONSTRAINT TRIGGER realtime_commit AFTER INSERT OR UPDATE ON wasmbase.realtime_txns
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.seq IS NULL)
  EXECUTE FUNCTION wasmbase.realtime_commit();

-- The row trigger: the transaction's row on its first change (a
-- transaction-local setting remembers it; rolled back with a savepoint, as the
-- row is), then the change. A change after the stamp clears it, so the
-- transaction's place in the commit order is taken after its last change.
CREATE OR REPLACE FUNCTION wasmbase.realtime_capture() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
  me text := pg_current_xact_id()::text;
  state text := current_setting('wasmbase.realtime_txn', true);
BEGIN
  IF state IS DISTINCT FROM me THEN
    -- Set first: a stamp fired at once (SET CONSTRAINTS ALL IMMEDIATE)
    -- marks the row stamped again as it goes.
    PERFORM set_config('wasmbase.realtime_txn', me, true);
    IF state = me || ':stamped' THEN
      UPDATE wasmbase.realtime_txns SET seq = NULL WHERE xid = me::xid8;
    ELSE
      INSERT INTO wasmbase.realtime_txns (xid) VALUES (me::xid8) ON CONFLICT DO NOTHING;
    END IF;
  END IF;
  INSERT INTO wasmbase.realtime_changes (rel, kind, record, old_record)
  VALUES (
    TG_RELID,
    TG_OP,
    CASE WHEN TG_OP <> 'DELETE' THEN to_jsonb(NEW) END,
    CASE WHEN TG_OP <> 'INSERT' THEN to_jsonb(OLD) END
  );
  RETURN NULL;
END
$$;
