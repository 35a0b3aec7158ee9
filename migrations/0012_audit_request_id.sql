-- The request an audit entry came from: the X-Request-Id of an admin API call
-- (the same id its log lines and error body carry), or `cli:<uuid>` for one run
-- of a CLI command that writes straight to the database. NULL for older rows.
ALTER TABLE wasmbase.audit_log ADD COLUMN IF NOT EXISTS request_id text;
