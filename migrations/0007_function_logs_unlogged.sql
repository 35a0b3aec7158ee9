-- Invocation logs are diagnostics written at request rate: an UNLOGGED table
-- skips the write-ahead log (several times cheaper per row). The trade-off,
-- documented in FUNCTIONS.md: after a PostgreSQL crash the table is emptied,
-- and it is not copied to streaming replicas.
ALTER TABLE wasmbase.function_logs SET UNLOGGED;
