-- What deleting a user does to their objects, from `storage.on_user_delete`
-- (each node writes it at start; one value per database, the last start wins):
-- "keep" (the default) clears the owner and keeps the objects; "delete"
-- deletes them (their bytes follow through the deletion queue). Either way the
-- user's deletion never fails because of their objects.
CREATE TABLE wasmbase.storage_settings (
  id             boolean PRIMARY KEY DEFAULT true CHECK (id),
  on_user_delete text NOT NULL DEFAULT 'keep' CHECK (on_user_delete IN ('keep', 'delete'))
);
INSERT INTO wasmbase.storage_settings DEFAULT VALUES;

CREATE OR REPLACE FUNCTION wasmbase.storage_forget_owner() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
  IF (SELECT on_user_delete FROM wasmbase.storage_settings) = 'delete' THEN
    DELETE FROM storage.objects WHERE owner_id = OLD.id::text;
  ELSE
    UPDATE storage.objects SET owner = NULL, owner_id = NULL WHERE owner_id = OLD.id::text;
  END IF;
  UPDATE storage.buckets SET owner = NULL, owner_id = NULL WHERE owner_id = OLD.id::text;
  RETURN NULL;
END
$$;
