-- Storage metadata, shaped as Supabase's `storage` schema so existing policies
-- and SQL port unchanged (docs/STORAGE.md). Bytes live in the backend (local
-- disk or S3) under the object's `version` (a UUID), never under a name a user
-- chose; a row here is what makes bytes visible.
--
-- Every API operation runs as the caller (RLS decides); the service_role
-- policies below make the same work possible for service_role where it lacks
-- BYPASSRLS (a non-superuser owner, docs/OPERATIONS.md).
CREATE SCHEMA IF NOT EXISTS storage;

CREATE TABLE storage.buckets (
  id                 text PRIMARY KEY,
  name               text NOT NULL,
  owner              uuid,
  owner_id           text,
  public             boolean NOT NULL DEFAULT false,
  file_size_limit    bigint CHECK (file_size_limit IS NULL OR file_size_limit >= 0),
  allowed_mime_types text[],
  created_at         timestamptz NOT NULL DEFAULT now(),
  updated_at         timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT bucket_name_length CHECK (length(id) BETWEEN 1 AND 100 AND length(name) BETWEEN 1 AND 100)
);
CREATE UNIQUE INDEX bname ON storage.buckets (name);

CREATE TABLE storage.objects (
  id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  bucket_id        text NOT NULL REFERENCES storage.buckets (id),
  name             text NOT NULL,
  owner            uuid,
  owner_id         text,
  -- size, mimetype, eTag, cacheControl, lastModified, contentLength, httpStatusCode
  metadata         jsonb,
  user_metadata    jsonb,
  -- The backend key of the bytes. A new upload of the same name gets a new
  -- version; the old one's bytes are then queued for deletion (below).
  version          text,
  path_tokens      text[] GENERATED ALWAYS AS (string_to_array(name, '/')) STORED,
  created_at       timestamptz NOT NULL DEFAULT now(),
  updated_at       timestamptz NOT NULL DEFAULT now(),
  last_accessed_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX bucketid_objname ON storage.objects (bucket_id, name);
CREATE INDEX name_prefix_search ON storage.objects (name text_pattern_ops);
CREATE INDEX objects_owner_id ON storage.objects (owner_id) WHERE owner_id IS NOT NULL;
CREATE UNIQUE INDEX objects_version ON storage.objects (version) WHERE version IS NOT NULL;

ALTER TABLE storage.buckets ENABLE ROW LEVEL SECURITY;
ALTER TABLE storage.objects ENABLE ROW LEVEL SECURITY;

GRANT USAGE ON SCHEMA storage TO anon, authenticated, service_role;
-- The request pool prepares storage's statements before its transaction sets
-- the caller's role; name lookup needs USAGE, and authenticator still holds no
-- privilege on the tables themselves (as for the exposed schemas).
GRANT USAGE ON SCHEMA storage TO authenticator;
GRANT SELECT, INSERT, UPDATE, DELETE ON storage.buckets, storage.objects
  TO anon, authenticated, service_role;

CREATE POLICY service_role_all ON storage.buckets TO service_role USING (true) WITH CHECK (true);
CREATE POLICY service_role_all ON storage.objects TO service_role USING (true) WITH CHECK (true);

-- Supabase's helpers, for policies: 'a/b/c.png' → {a,b}, 'c.png', 'png'.
CREATE FUNCTION storage.foldername(name text) RETURNS text[]
LANGUAGE sql IMMUTABLE AS $$
  SELECT (string_to_array(name, '/'))[1 : array_length(string_to_array(name, '/'), 1) - 1]
$$;

CREATE FUNCTION storage.filename(name text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
  SELECT (string_to_array(name, '/'))[array_length(string_to_array(name, '/'), 1)]
$$;

CREATE FUNCTION storage.extension(name text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
  SELECT reverse(split_part(reverse(storage.filename(name)), '.', 1))
$$;

GRANT EXECUTE ON FUNCTION storage.foldername(text), storage.filename(text), storage.extension(text)
  TO anon, authenticated, service_role;

CREATE FUNCTION storage.touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  NEW.updated_at := now();
  RETURN NEW;
END
$$;
CREATE TRIGGER update_objects_updated_at BEFORE UPDATE ON storage.objects
  FOR EACH ROW EXECUTE FUNCTION storage.touch_updated_at();
CREATE TRIGGER update_buckets_updated_at BEFORE UPDATE ON storage.buckets
  FOR EACH ROW EXECUTE FUNCTION storage.touch_updated_at();

-- One folder level of a bucket, as storage-api's `storage.search` (what
-- `POST /object/list` calls): entries directly below `prefix` whose name starts
-- with `prefix || search` (case-insensitive, literal); deeper objects appear once
-- as their folder (id and dates NULL). Sorted by name (folders and files
-- interleaved) or, for a date column, folders first. SECURITY INVOKER: the
-- caller's RLS decides which objects count.
CREATE FUNCTION storage.search(
  prefix text, bucketname text, limits int DEFAULT 100, levels int DEFAULT 1,
  offsets int DEFAULT 0, search text DEFAULT '', sortcolumn text DEFAULT 'name',
  sortorder text DEFAULT 'asc'
) RETURNS TABLE (
  name text, id uuid, updated_at timestamptz, created_at timestamptz,
  last_accessed_at timestamptz, metadata jsonb
)
LANGUAGE plpgsql STABLE AS $$
DECLARE
  plen int := length(prefix);
  wanted text := lower(prefix || search);
  descending boolean := lower(sortorder) = 'desc';
BEGIN
  IF sortcolumn NOT IN ('name', 'updated_at', 'created_at', 'last_accessed_at') THEN
    RAISE EXCEPTION 'invalid sort column %', sortcolumn USING ERRCODE = '22023';
  END IF;
  IF lower(sortorder) NOT IN ('asc', 'desc') THEN
    RAISE EXCEPTION 'invalid sort order %', sortorder USING ERRCODE = '22023';
  END IF;
  RETURN QUERY
  WITH matched AS (
    SELECT o.name AS full_name, o.id, o.updated_at, o.created_at, o.last_accessed_at, o.metadata,
           substr(o.name, plen + 1) AS rest
    FROM storage.objects o
    WHERE o.bucket_id = bucketname AND starts_with(lower(o.name), wanted)
  ), entries AS (
    SELECT DISTINCT ON (lower(split_part(m.rest, '/', 1)))
           split_part(m.rest, '/', 1) AS name, NULL::uuid AS id, NULL::timestamptz AS updated_at,
           NULL::timestamptz AS created_at, NULL::timestamptz AS last_accessed_at, NULL::jsonb AS metadata
    FROM matched m WHERE position('/' IN m.rest) > 0
    UNION ALL
    SELECT m.rest, m.id, m.updated_at, m.created_at, m.last_accessed_at, m.metadata
    FROM matched m WHERE position('/' IN m.rest) = 0
  )
  SELECT e.name, e.id, e.updated_at, e.created_at, e.last_accessed_at, e.metadata
  FROM entries e
  ORDER BY
    CASE WHEN sortcolumn = 'name' THEN 0 WHEN e.id IS NULL THEN 0 ELSE 1 END,
    CASE WHEN sortcolumn = 'name' AND NOT descending THEN lower(e.name) COLLATE "C" END ASC,
    CASE WHEN sortcolumn = 'name' AND descending THEN lower(e.name) COLLATE "C" END DESC,
    CASE WHEN sortcolumn <> 'name' AND NOT descending THEN
      CASE sortcolumn WHEN 'updated_at' THEN e.updated_at WHEN 'created_at' THEN e.created_at
        ELSE e.last_accessed_at END END ASC,
    CASE WHEN sortcolumn <> 'name' AND descending THEN
      CASE sortcolumn WHEN 'updated_at' THEN e.updated_at WHEN 'created_at' THEN e.created_at
        ELSE e.last_accessed_at END END DESC,
    lower(e.name) COLLATE "C"
  OFFSET greatest(offsets, 0) LIMIT least(greatest(limits, 1), 1500);
END
$$;
GRANT EXECUTE ON FUNCTION storage.search(text, text, int, int, int, text, text, text)
  TO anon, authenticated, service_role;

-- Bytes whose metadata is gone: the old version of a replaced object, a deleted
-- object (through the API, by SQL, by emptying a bucket or deleting a user), an
-- upload whose row was refused. Each node's storage worker deletes the bytes,
-- then the row; `NOTIFY wasmbase_storage_gc` wakes the workers.
CREATE TABLE wasmbase.storage_garbage (
  version   text PRIMARY KEY,
  queued_at timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION wasmbase.storage_queue_bytes() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
  IF OLD.version IS NOT NULL AND (TG_OP = 'DELETE' OR NEW.version IS DISTINCT FROM OLD.version) THEN
    INSERT INTO wasmbase.storage_garbage (version) VALUES (OLD.version) ON CONFLICT DO NOTHING;
    PERFORM pg_notify('wasmbase_storage_gc', '');
  END IF;
  RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION wasmbase.storage_queue_bytes() FROM PUBLIC;
CREATE TRIGGER queue_bytes AFTER UPDATE OF version OR DELETE ON storage.objects
  FOR EACH ROW EXECUTE FUNCTION wasmbase.storage_queue_bytes();

-- Deleting a user never fails because of their objects: by default
-- (`storage.on_user_delete = "keep"`) the objects stay and lose their owner.
CREATE FUNCTION wasmbase.storage_forget_owner() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
  UPDATE storage.objects SET owner = NULL, owner_id = NULL WHERE owner_id = OLD.id::text;
  UPDATE storage.buckets SET owner = NULL, owner_id = NULL WHERE owner_id = OLD.id::text;
  RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION wasmbase.storage_forget_owner() FROM PUBLIC;
CREATE TRIGGER storage_forget_owner AFTER DELETE ON auth.users
  FOR EACH ROW EXECUTE FUNCTION wasmbase.storage_forget_owner();
