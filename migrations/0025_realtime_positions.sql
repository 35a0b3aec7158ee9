-- Catch-up for postgres_changes (docs/REALTIME.md "Catch-up"): every
-- transaction that changes a published table gets one row in
-- wasmbase.realtime_txns, written at pre-commit (a deferred trigger, the last
-- thing before COMMIT) with
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

-- One row per committed writing transaction, written once at its commit (an
-- update only when a transaction is stamped again, see below): about one
-- tuple per transaction, little for vacuum.
CREATE TABLE wasmbase.realtime_txns (
  xid          xid8 PRIMARY KEY,
  seq          bigint NOT NULL,
  snap         pg_snapshot NOT NULL,
  committed_at timestamptz NOT NULL
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
-- The transaction's first change (since its last stamp) queues the stamp.
ALTER TABLE wasmbase.realtime_changes ADD COLUMN first boolean NOT NULL DEFAULT false;

-- At pre-commit, once per transaction: the stamp, and the node's wake-up.
CREATE FUNCTION wasmbase.realtime_commit() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
  -- One statement: its snapshot is taken before nextval runs.
  INSERT INTO wasmbase.realtime_txns (xid, seq, snap, committed_at)
  SELECT NEW.xid, nextval('wasmbase.realtime_commit_seq'), pg_current_snapshot(), clock_timestamp()
  ON CONFLICT (xid) DO UPDATE
    SET seq = EXCLUDED.seq, snap = EXCLUDED.snap, committed_at = EXCLUDED.committed_at;
  -- Stamped: a change after this (a user's SET CONSTRAINTS ALL IMMEDIATE
  -- fired this early, or a later deferred trigger writes) stamps it again.
  PERFORM set_config('wasmbase.realtime_txn', NEW.xid::text || ':stamped', true);
  PERFORM pg_notify('wasmbase_realtime_changes', NEW.xid::text);
  RETURN NULL;
END
$$;

-- Fires once per transaction: for its first change, and again for the first
-- change after a stamp.
CREATE CONSTRAINT TRIGGER realtime_commit AFTER INSERT ON wasmbase.realtime_changes
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.first)
  EXECUTE FUNCTION wasmbase.realtime_commit();

-- The row trigger: the change, marked `first` when the transaction has no
-- stamp queued (a transaction-local setting remembers it; rolled back with a
-- savepoint, as the queued stamp is). So the transaction's place in the
-- commit order is always taken after its last change.
CREATE OR REPLACE FUNCTION wasmbase.realtime_capture() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
  me text := pg_current_xact_id()::text;
  first boolean := current_setting('wasmbase.realtime_txn', true) IS DISTINCT FROM me;
BEGIN
  IF first THEN
    -- Set first: a stamp fired at once (SET CONSTRAINTS ALL IMMEDIATE)
    -- marks it stamped again as it goes.
    PERFORM set_config('wasmbase.realtime_txn', me, true);
  END IF;
  INSERT INTO wasmbase.realtime_changes (rel, kind, record, old_record, first)
  VALUES (
    TG_RELID,
    TG_OP,
    CASE WHEN TG_OP <> 'DELETE' THEN to_jsonb(NEW) END,
    CASE WHEN TG_OP <> 'INSERT' THEN to_jsonb(OLD) END,
    first
  );
  RETURN NULL;
END
$$;
