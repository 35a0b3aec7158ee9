-- Resumable (TUS) uploads in progress. Platform state, written only by the
-- server's own pool: the caller's rights are checked as the caller when the
-- upload is created and again when its object row is written. Any node can
-- continue an upload: the parts the backend holds are listed here, and bytes
-- short of a part (S3 needs 5 MiB) are a temporary backend object (`tail`).
CREATE TABLE IF NOT EXISTS wasmbase.storage_uploads (
  id              text PRIMARY KEY,
  bucket_id       text NOT NULL,
  name            text NOT NULL,
  -- The object version (backend key) the bytes become.
  version         text NOT NULL,
  -- The backend's handle (S3's UploadId; empty on the local disk).
  handle          text NOT NULL,
  length          bigint NOT NULL CHECK (length >= 0),
  received        bigint NOT NULL DEFAULT 0 CHECK (received >= 0 AND received <= length),
  parts           jsonb NOT NULL DEFAULT '[]',
  tail            text,
  tail_size       bigint NOT NULL DEFAULT 0,
  mime            text NOT NULL,
  cache_control   text NOT NULL,
  user_metadata   jsonb,
  -- Upload-Metadata as the client sent it (HEAD echoes it).
  metadata_header text NOT NULL,
  upsert          boolean NOT NULL,
  -- The object's owner when it is written.
  owner           text,
  -- Who may continue it: a signed upload's token holder, or this role and user.
  signed          boolean NOT NULL,
  creator_role    text NOT NULL,
  creator_sub     text,
  expires_at      timestamptz NOT NULL,
  created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS storage_uploads_expires ON wasmbase.storage_uploads (expires_at);
CREATE INDEX IF NOT EXISTS storage_uploads_tail ON wasmbase.storage_uploads (tail) WHERE tail IS NOT NULL;
REVOKE ALL ON wasmbase.storage_uploads FROM PUBLIC;
