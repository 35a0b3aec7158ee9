//! Storage metadata in PostgreSQL (`storage.buckets`, `storage.objects`): the
//! statements behind every storage operation, each run through `db::run_as`
//! as the caller, so row-level security decides with Supabase's mapping
//! (upload → INSERT; upsert → INSERT + SELECT + UPDATE; move → SELECT +
//! UPDATE; copy → SELECT + INSERT; remove → SELECT + DELETE; reads → SELECT).
//! Only what Supabase reads with elevated rights — a bucket's settings, public
//! downloads, signed downloads and signed uploads — acts as `service_role`.
//!
//! JSON bodies are built by PostgreSQL; identifiers are fixed text here and
//! every value is a bind parameter.

use super::error::StorageError;
use crate::db::{self, Acting, DbError};
use deadpool_postgres::Pool;
use serde_json::Value;
use std::time::SystemTime;
use tokio_postgres::types::ToSql;

/// Who a storage operation acts as.
#[derive(Debug, Clone, Copy)]
pub struct As<'a> {
    /// The request pool.
    pub pool: &'a Pool,
    /// The caller (or `service_role` for the elevated reads).
    pub acting: Acting<'a>,
}

impl<'a> As<'a> {
    /// The same caller's claims, acting as `service_role` (for what Supabase
    /// reads with elevated rights).
    pub fn service(&self) -> As<'a> {
        As {
            pool: self.pool,
            acting: Acting {
                role: "service_role",
                ..self.acting
            },
        }
    }

    /// The caller's `sub`, if a user: objects record it as their owner.
    pub fn sub(&self) -> Option<String> {
        serde_json::from_str::<Value>(self.acting.claims)
            .ok()
            .and_then(|c| c.get("sub").and_then(Value::as_str).map(str::to_string))
    }

    /// Runs one platform statement as the whole transaction, in one round
    /// trip (`db::Tx::once`; the statement is prepared once per connection).
    async fn once<T>(
        &self,
        sql: &'static str,
        params: &[Box<dyn ToSql + Sync + Send>],
        run: impl for<'c> FnOnce(
            &'c deadpool_postgres::ClientWrapper,
            &'c tokio_postgres::Statement,
            &'c [&'c (dyn ToSql + Sync)],
        )
            -> futures::future::BoxFuture<'c, Result<T, tokio_postgres::Error>>,
        duplicate: fn() -> StorageError,
    ) -> Result<T, StorageError> {
        let tx = db::Tx::connect(self.pool, db::PoolKind::Request).await?;
        let conn = tx.conn();
        let stmt = conn.prepare_cached(sql).await.map_err(DbError::Pg)?;
        let refs: Vec<&(dyn ToSql + Sync)> = params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect();
        let out = tx.once(Some(&self.acting), run(conn, &stmt, &refs)).await?;
        tx.release();
        out.map_err(|e| StorageError::from_db(&DbError::Pg(e), duplicate))
    }

    async fn one<T>(
        &self,
        sql: &'static str,
        params: Vec<Box<dyn ToSql + Sync + Send>>,
        read: impl FnOnce(Option<tokio_postgres::Row>) -> Result<T, StorageError>,
        duplicate: fn() -> StorageError,
    ) -> Result<T, StorageError> {
        let row = self
            .once(
                sql,
                &params,
                |c, s, p| Box::pin(c.query_opt(s, p)),
                duplicate,
            )
            .await?;
        read(row)
    }

    async fn count(
        &self,
        sql: &'static str,
        params: Vec<Box<dyn ToSql + Sync + Send>>,
        duplicate: fn() -> StorageError,
    ) -> Result<u64, StorageError> {
        self.once(sql, &params, |c, s, p| Box::pin(c.execute(s, p)), duplicate)
            .await
    }
}

fn bucket_exists() -> StorageError {
    StorageError::new(
        409,
        "BucketAlreadyExists",
        "Duplicate",
        "The resource already exists",
    )
}

fn resource_exists() -> StorageError {
    StorageError::new(
        409,
        "ResourceAlreadyExists",
        "Duplicate",
        "The resource already exists",
    )
}

fn text(row: &Option<tokio_postgres::Row>) -> Option<String> {
    row.as_ref().and_then(|r| r.get::<_, Option<String>>(0))
}

fn boxed<T: ToSql + Sync + Send + 'static>(v: T) -> Box<dyn ToSql + Sync + Send> {
    Box::new(v)
}

/// The owner columns of what a caller creates: `owner` (a UUID `sub`) and
/// `owner_id` (any `sub`).
fn owner(sub: Option<&str>) -> (Option<uuid::Uuid>, Option<String>) {
    (
        sub.and_then(|s| uuid::Uuid::try_parse(s).ok()),
        sub.map(str::to_string),
    )
}

// ---------------------------------------------------------------- buckets

/// A bucket's settings, which upload and download paths need whoever asks.
#[derive(Debug, Clone)]
pub struct Bucket {
    /// Bucket id.
    pub id: String,
    /// Objects readable by anyone through `/object/public/`.
    pub public: bool,
    /// Largest object, in bytes.
    pub file_size_limit: Option<i64>,
    /// Content types accepted (`image/*` style), or all.
    pub allowed_mime_types: Option<Vec<String>>,
}

/// A bucket as storage-api's JSON (alias `b`), for `concat!`.
macro_rules! bucket_json {
    () => {
        "json_build_object('id', b.id, 'name', b.name, \
         'owner', coalesce(b.owner::text, ''), 'owner_id', b.owner_id, 'public', b.public, \
         'type', 'STANDARD', 'file_size_limit', b.file_size_limit, \
         'allowed_mime_types', b.allowed_mime_types, 'created_at', b.created_at, \
         'updated_at', b.updated_at)"
    };
}

/// A bucket's settings, read as `service_role` (as storage-api does): a
/// caller who may upload need not be able to read `storage.buckets`.
pub async fn bucket(who: &As<'_>, id: &str) -> Result<Bucket, StorageError> {
    who.service()
        .one(
            "SELECT id, public, file_size_limit, allowed_mime_types \
             FROM storage.buckets WHERE id = $1",
            vec![boxed(id.to_string())],
            |row| {
                let r = row.ok_or_else(StorageError::no_such_bucket)?;
                Ok(Bucket {
                    id: r.get(0),
                    public: r.get(1),
                    file_size_limit: r.get(2),
                    allowed_mime_types: r.get(3),
                })
            },
            resource_exists,
        )
        .await
}

/// `GET /bucket`: the buckets the caller may see, as JSON text.
pub async fn list_buckets(
    who: &As<'_>,
    search: Option<String>,
    limit: Option<i64>,
    offset: Option<i64>,
) -> Result<String, StorageError> {
    const SQL: &str = concat!(
        "SELECT coalesce(json_agg(j ORDER BY n), '[]')::text FROM (SELECT ",
        bucket_json!(),
        " AS j, b.name AS n FROM storage.buckets b \
         WHERE $1::text IS NULL OR strpos(lower(b.name), lower($1)) > 0 \
         ORDER BY b.name LIMIT $2 OFFSET $3) s"
    );
    who.one(
        SQL,
        vec![
            boxed(search),
            boxed(limit.unwrap_or(i64::MAX)),
            boxed(offset.unwrap_or(0)),
        ],
        |row| Ok(text(&row).unwrap_or_else(|| "[]".into())),
        resource_exists,
    )
    .await
}

/// `GET /bucket/:id`, as the caller.
pub async fn get_bucket(who: &As<'_>, id: &str) -> Result<String, StorageError> {
    who.one(
        concat!(
            "SELECT ",
            bucket_json!(),
            "::text FROM storage.buckets b WHERE b.id = $1"
        ),
        vec![boxed(id.to_string())],
        |row| text(&row).ok_or_else(StorageError::no_such_bucket),
        resource_exists,
    )
    .await
}

/// What `POST /bucket` and `PUT /bucket/:id` set; `None` leaves a column as
/// it is (update) or at its default (create).
#[derive(Debug, Clone, Default)]
pub struct BucketChange {
    /// `public`.
    pub public: Option<bool>,
    /// `file_size_limit` (inner `None` clears it).
    pub file_size_limit: Option<Option<i64>>,
    /// `allowed_mime_types` (inner `None` clears it).
    pub allowed_mime_types: Option<Option<Vec<String>>>,
}

/// `POST /bucket`, as the caller (RLS on `storage.buckets`).
pub async fn create_bucket(
    who: &As<'_>,
    id: &str,
    name: &str,
    change: BucketChange,
) -> Result<(), StorageError> {
    let sub = who.sub();
    let (owner, owner_id) = owner(sub.as_deref());
    who.count(
        "INSERT INTO storage.buckets (id, name, owner, owner_id, public, file_size_limit, allowed_mime_types) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        vec![
            boxed(id.to_string()),
            boxed(name.to_string()),
            boxed(owner),
            boxed(owner_id),
            boxed(change.public.unwrap_or(false)),
            boxed(change.file_size_limit.flatten()),
            boxed(change.allowed_mime_types.flatten()),
        ],
        bucket_exists,
    )
    .await
    .map(drop)
}

/// `PUT /bucket/:id`, as the caller.
pub async fn update_bucket(
    who: &As<'_>,
    id: &str,
    change: BucketChange,
) -> Result<(), StorageError> {
    let n = who
        .count(
            "UPDATE storage.buckets SET \
               public = CASE WHEN $2 THEN $3 ELSE public END, \
               file_size_limit = CASE WHEN $4 THEN $5 ELSE file_size_limit END, \
               allowed_mime_types = CASE WHEN $6 THEN $7 ELSE allowed_mime_types END \
             WHERE id = $1",
            vec![
                boxed(id.to_string()),
                boxed(change.public.is_some()),
                boxed(change.public.unwrap_or(false)),
                boxed(change.file_size_limit.is_some()),
                boxed(change.file_size_limit.flatten()),
                boxed(change.allowed_mime_types.is_some()),
                boxed(change.allowed_mime_types.flatten()),
            ],
            bucket_exists,
        )
        .await?;
    if n == 0 {
        return Err(StorageError::no_such_bucket());
    }
    Ok(())
}

fn not_empty() -> StorageError {
    StorageError::new(
        409,
        "ResourceNotEmpty",
        "ResourceNotEmpty",
        "The bucket you tried to delete is not empty",
    )
}

/// `DELETE /bucket/:id`: refused while the bucket holds objects (checked as
/// `service_role`, so objects the caller cannot see count too), then deleted
/// as the caller.
pub async fn delete_bucket(who: &As<'_>, id: &str) -> Result<(), StorageError> {
    let has_objects = who
        .service()
        .one(
            "SELECT EXISTS (SELECT 1 FROM storage.objects WHERE bucket_id = $1)",
            vec![boxed(id.to_string())],
            |row| Ok(row.is_some_and(|r| r.get::<_, bool>(0))),
            resource_exists,
        )
        .await?;
    if has_objects {
        return Err(not_empty());
    }
    let n = db::run_as::<_, StorageError, _>(who.pool, &who.acting, {
        let id = id.to_string();
        move |c| {
            Box::pin(async move {
                c.execute("DELETE FROM storage.buckets WHERE id = $1", &[&id])
                    .await
                    .map_err(|e| {
                        let e = DbError::Pg(e);
                        match db::sqlstate(&e) {
                            // An object arrived since the check.
                            Some("23503") => not_empty(),
                            _ => StorageError::from_db(&e, resource_exists),
                        }
                    })
            })
        }
    })
    .await?;
    if n == 0 {
        return Err(StorageError::no_such_bucket());
    }
    Ok(())
}

/// `POST /bucket/:id/empty`: deletes the objects the caller may delete (their
/// bytes follow through the deletion queue).
pub async fn empty_bucket(who: &As<'_>, id: &str) -> Result<u64, StorageError> {
    bucket(who, id).await?;
    who.count(
        "DELETE FROM storage.objects WHERE bucket_id = $1",
        vec![boxed(id.to_string())],
        resource_exists,
    )
    .await
}

// ---------------------------------------------------------------- objects

/// An object as downloads need it.
#[derive(Debug, Clone)]
pub struct Object {
    /// Row id.
    pub id: String,
    /// Backend key of the bytes.
    pub version: String,
    /// System metadata (size, mimetype, eTag, cacheControl, ...).
    pub metadata: Value,
    /// When the row last changed (the download's `Last-Modified`).
    pub updated_at: SystemTime,
}

impl Object {
    /// From a row of `id::text, version, metadata, updated_at`.
    fn from_row(r: &tokio_postgres::Row) -> Object {
        Object {
            id: r.get(0),
            version: r.get::<_, Option<String>>(1).unwrap_or_default(),
            metadata: r.get(2),
            updated_at: r.get(3),
        }
    }

    /// A metadata field as text.
    pub fn meta_str(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).and_then(Value::as_str)
    }

    /// The stored size.
    pub fn size(&self) -> u64 {
        self.metadata
            .get("size")
            .and_then(Value::as_u64)
            .unwrap_or(0)
    }
}

/// Finds an object (SELECT as whoever `who` is; missing and hidden look alike).
pub async fn find(who: &As<'_>, bucket: &str, name: &str) -> Result<Object, StorageError> {
    who.one(
        "SELECT id::text, version, coalesce(metadata, '{}'), updated_at \
         FROM storage.objects WHERE bucket_id = $1 AND name = $2",
        vec![boxed(bucket.to_string()), boxed(name.to_string())],
        |row| {
            Ok(Object::from_row(
                &row.ok_or_else(StorageError::no_such_key)?,
            ))
        },
        resource_exists,
    )
    .await
}

/// Finds an object of a public bucket (as `service_role`, one statement);
/// a bucket that is missing or not public is `NoSuchBucket`.
pub async fn find_public(who: &As<'_>, bucket: &str, name: &str) -> Result<Object, StorageError> {
    who.service()
        .one(
            "SELECT o.id::text, o.version, coalesce(o.metadata, '{}'), o.updated_at \
             FROM storage.buckets b LEFT JOIN storage.objects o \
               ON o.bucket_id = b.id AND o.name = $2 \
             WHERE b.id = $1 AND b.public",
            vec![boxed(bucket.to_string()), boxed(name.to_string())],
            |row| {
                let r = row.ok_or_else(StorageError::no_such_bucket)?;
                // The bucket is public but holds no such object.
                if r.get::<_, Option<String>>(0).is_none() {
                    return Err(StorageError::no_such_key());
                }
                Ok(Object::from_row(&r))
            },
            resource_exists,
        )
        .await
}

/// `GET /object/info/...`: storage-api's info body, as JSON text.
pub async fn info(who: &As<'_>, bucket: &str, name: &str) -> Result<String, StorageError> {
    who.one(
        "SELECT json_build_object('id', o.id, 'name', o.name, 'version', o.version, \
           'bucket_id', o.bucket_id, 'size', (o.metadata->>'size')::bigint, \
           'content_type', o.metadata->>'mimetype', 'cache_control', o.metadata->>'cacheControl', \
           'etag', o.metadata->>'eTag', 'metadata', o.user_metadata, \
           'last_modified', o.updated_at, 'created_at', o.created_at)::text \
         FROM storage.objects o WHERE o.bucket_id = $1 AND o.name = $2",
        vec![boxed(bucket.to_string()), boxed(name.to_string())],
        |row| text(&row).ok_or_else(StorageError::no_such_key),
        resource_exists,
    )
    .await
}

/// A new object's row.
#[derive(Debug, Clone)]
pub struct NewObject {
    /// Bucket id.
    pub bucket: String,
    /// Object name.
    pub name: String,
    /// Backend key of its bytes.
    pub version: String,
    /// System metadata.
    pub metadata: Value,
    /// The client's metadata.
    pub user_metadata: Option<Value>,
    /// Owner `sub` (the caller, or the signed upload URL's).
    pub owner: Option<String>,
}

/// Records an uploaded object; returns its id. Without `upsert` a plain
/// INSERT (the INSERT policy alone decides; an existing name is
/// `KeyAlreadyExists`); with it, INSERT ... ON CONFLICT DO UPDATE, which
/// needs SELECT and UPDATE too, and keeps the row's id.
pub async fn insert(who: &As<'_>, o: NewObject, upsert: bool) -> Result<String, StorageError> {
    let (owner, owner_id) = owner(o.owner.as_deref());
    let id = uuid::Uuid::new_v4();
    let params = vec![
        boxed(id),
        boxed(o.bucket),
        boxed(o.name),
        boxed(owner),
        boxed(owner_id),
        boxed(o.metadata),
        boxed(o.user_metadata),
        boxed(o.version),
    ];
    if !upsert {
        who.count(
            "INSERT INTO storage.objects (id, bucket_id, name, owner, owner_id, metadata, user_metadata, version) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            params,
            StorageError::key_exists,
        )
        .await?;
        return Ok(id.to_string());
    }
    who.one(
        "INSERT INTO storage.objects (id, bucket_id, name, owner, owner_id, metadata, user_metadata, version) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (bucket_id, name) DO UPDATE SET metadata = EXCLUDED.metadata, \
           user_metadata = EXCLUDED.user_metadata, version = EXCLUDED.version, \
           owner = EXCLUDED.owner, owner_id = EXCLUDED.owner_id, last_accessed_at = now() \
         RETURNING id::text",
        params,
        |row| text(&row).ok_or_else(StorageError::internal),
        StorageError::key_exists,
    )
    .await
}

/// `POST /object/list/:bucket`: one folder level, as the caller (RLS), as
/// JSON text (see `storage.search`).
#[allow(clippy::too_many_arguments)]
pub async fn list(
    who: &As<'_>,
    bucket: &str,
    prefix: &str,
    search: &str,
    limit: i32,
    offset: i32,
    sort_column: &str,
    sort_order: &str,
) -> Result<String, StorageError> {
    who.one(
        "SELECT coalesce(json_agg(json_build_object('name', s.name, 'id', s.id, \
           'updated_at', s.updated_at, 'created_at', s.created_at, \
           'last_accessed_at', s.last_accessed_at, 'metadata', s.metadata) ORDER BY s.n), '[]')::text \
         FROM storage.search($1, $2, $3, 1, $4, $5, $6, $7) WITH ORDINALITY AS s(name, id, updated_at, created_at, last_accessed_at, metadata, n)",
        vec![
            boxed(prefix.to_string()),
            boxed(bucket.to_string()),
            boxed(limit),
            boxed(offset),
            boxed(search.to_string()),
            boxed(sort_column.to_string()),
            boxed(sort_order.to_string()),
        ],
        |row| Ok(text(&row).unwrap_or_else(|| "[]".into())),
        resource_exists,
    )
    .await
}

/// `POST /object/move`: renames (and re-buckets) the row as the caller
/// (SELECT + UPDATE; the UPDATE's WITH CHECK sees the new name). The bytes
/// stay where they are: backend keys are versions, not names.
pub async fn rename(
    who: &As<'_>,
    from: (&str, &str),
    to: (&str, &str),
) -> Result<(), StorageError> {
    let sub = who.sub();
    let (owner, owner_id) = owner(sub.as_deref());
    let n = who
        .count(
            "UPDATE storage.objects SET bucket_id = $3, name = $4, owner = $5, owner_id = $6 \
             WHERE bucket_id = $1 AND name = $2",
            vec![
                boxed(from.0.to_string()),
                boxed(from.1.to_string()),
                boxed(to.0.to_string()),
                boxed(to.1.to_string()),
                boxed(owner),
                boxed(owner_id),
            ],
            resource_exists,
        )
        .await?;
    if n == 0 {
        return Err(StorageError::no_such_key());
    }
    Ok(())
}

/// A source object as copy needs it: its key, metadata and user metadata.
pub async fn copy_source(
    who: &As<'_>,
    bucket: &str,
    name: &str,
) -> Result<(String, Value, Option<Value>), StorageError> {
    who.one(
        "SELECT version, coalesce(metadata, '{}'), user_metadata \
         FROM storage.objects WHERE bucket_id = $1 AND name = $2",
        vec![boxed(bucket.to_string()), boxed(name.to_string())],
        |row| {
            let r = row.ok_or_else(StorageError::no_such_key)?;
            Ok((
                r.get::<_, Option<String>>(0).unwrap_or_default(),
                r.get(1),
                r.get(2),
            ))
        },
        resource_exists,
    )
    .await
}

/// `DELETE /object/:bucket` (`{prefixes}`: exact names, or with
/// `recursive`, folders whose every object goes): deletes what the caller may
/// (DELETE + SELECT for the rows returned), returns them as JSON text;
/// invisible and missing names are skipped.
pub async fn remove(
    who: &As<'_>,
    bucket: &str,
    names: Vec<String>,
    recursive: bool,
) -> Result<String, StorageError> {
    macro_rules! removed {
        ($matching:literal) => {
            concat!(
                "WITH d AS (DELETE FROM storage.objects WHERE bucket_id = $1 AND ",
                $matching,
                " RETURNING *) \
                 SELECT coalesce(json_agg(json_build_object('name', d.name, 'bucket_id', d.bucket_id, \
                   'owner', coalesce(d.owner::text, ''), 'owner_id', d.owner_id, 'version', d.version, \
                   'id', d.id, 'updated_at', d.updated_at, 'created_at', d.created_at, \
                   'last_accessed_at', d.last_accessed_at, 'metadata', d.metadata, \
                   'user_metadata', d.user_metadata) ORDER BY d.name), '[]')::text FROM d"
            )
        };
    }
    let (sql, names) = if recursive {
        // A folder is everything below `name/`.
        let folders = names
            .into_iter()
            .map(|n| format!("{}/", n.trim_end_matches('/')))
            .collect::<Vec<_>>();
        (
            removed!("EXISTS (SELECT 1 FROM unnest($2::text[]) f WHERE starts_with(name, f))"),
            folders,
        )
    } else {
        (removed!("name = ANY($2)"), names)
    };
    who.one(
        sql,
        vec![boxed(bucket.to_string()), boxed(names)],
        |row| Ok(text(&row).unwrap_or_else(|| "[]".into())),
        resource_exists,
    )
    .await
}

/// Which of `names` the caller can see (for batch signing).
pub async fn visible(
    who: &As<'_>,
    bucket: &str,
    names: Vec<String>,
) -> Result<Vec<String>, StorageError> {
    let rows = who
        .once(
            "SELECT name FROM storage.objects WHERE bucket_id = $1 AND name = ANY($2)",
            &[boxed(bucket.to_string()), boxed(names)],
            |c, s, p| Box::pin(c.query(s, p)),
            resource_exists,
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Whether the caller could upload `bucket`/`name` now (the INSERT policy,
/// and an existing name unless `upsert`): the insert is tried and rolled
/// back, as storage-api does before handing out a signed upload URL.
pub async fn can_insert(
    who: &As<'_>,
    bucket: &str,
    name: &str,
    upsert: bool,
) -> Result<(), StorageError> {
    let sql = if upsert {
        "INSERT INTO storage.objects (bucket_id, name, owner, owner_id, version) \
         VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (bucket_id, name) DO UPDATE SET version = EXCLUDED.version"
    } else {
        "INSERT INTO storage.objects (bucket_id, name, owner, owner_id, version) \
         VALUES ($1, $2, $3, $4, $5)"
    };
    let sub = who.sub();
    let (owner, owner_id) = owner(sub.as_deref());
    let probe = uuid::Uuid::new_v4().to_string();
    let (bucket, name) = (bucket.to_string(), name.to_string());
    let tx = db::Tx::connect(who.pool, db::PoolKind::Request).await?;
    let params: [&(dyn ToSql + Sync); 5] = [&bucket, &name, &owner, &owner_id, &probe];
    let tried = tx
        .begin(Some(&who.acting), tx.conn().execute(sql, &params))
        .await?;
    tx.end(false).await?;
    tried
        .map(drop)
        .map_err(|e| StorageError::from_db(&DbError::Pg(e), StorageError::key_exists))
}

/// `POST /object/list-v2/:bucket`: up to `limit + 1` entries after `cursor`
/// (an entry name), by name (`descending` reverses), as the caller (RLS).
/// With `delimiter`, objects deeper than one level below `prefix` fold into
/// their folder (`name` = `prefix` + segment + `/`, `folder: true`). JSON
/// text: `[{entry, folder, key, id, name, metadata, updated_at, created_at,
/// last_accessed_at}]`.
pub async fn list_v2(
    who: &As<'_>,
    bucket: &str,
    prefix: &str,
    delimiter: bool,
    cursor: Option<String>,
    limit: i64,
    descending: bool,
) -> Result<String, StorageError> {
    macro_rules! listed {
        ($cmp:literal, $order:literal) => {
            concat!(
                "WITH m AS ( \
                   SELECT o.id, o.name, o.metadata, o.updated_at, o.created_at, o.last_accessed_at, \
                          substr(o.name, length($2) + 1) AS rest \
                   FROM storage.objects o WHERE o.bucket_id = $1 AND starts_with(o.name, $2) \
                 ), e AS ( \
                   SELECT ($3 AND position('/' IN m.rest) > 0) AS folder, m.* FROM m \
                 ), g AS ( \
                   SELECT DISTINCT ON (entry) \
                     CASE WHEN folder THEN $2 || split_part(rest, '/', 1) || '/' ELSE name END AS entry, \
                     folder, split_part(rest, '/', 1) AS key, \
                     CASE WHEN folder THEN NULL ELSE id END AS id, \
                     CASE WHEN folder THEN NULL ELSE metadata END AS metadata, \
                     CASE WHEN folder THEN NULL ELSE updated_at END AS updated_at, \
                     CASE WHEN folder THEN NULL ELSE created_at END AS created_at, \
                     CASE WHEN folder THEN NULL ELSE last_accessed_at END AS last_accessed_at \
                   FROM e ORDER BY entry \
                 ), page AS ( \
                   SELECT * FROM g WHERE $4::text IS NULL OR (entry COLLATE \"C\") ",
                $cmp,
                " ($4 COLLATE \"C\") ORDER BY entry COLLATE \"C\" ",
                $order,
                " LIMIT $5 \
                 ) \
                 SELECT coalesce(json_agg(json_build_object('entry', entry, 'folder', folder, \
                   'key', key, 'id', id, 'name', entry, 'metadata', metadata, \
                   'updated_at', updated_at, 'created_at', created_at, \
                   'last_accessed_at', last_accessed_at) ORDER BY entry COLLATE \"C\" ",
                $order,
                "), '[]')::text FROM page"
            )
        };
    }
    let sql = if descending {
        listed!("<", "DESC")
    } else {
        listed!(">", "ASC")
    };
    who.one(
        sql,
        vec![
            boxed(bucket.to_string()),
            boxed(prefix.to_string()),
            boxed(delimiter),
            boxed(cursor),
            boxed(limit),
        ],
        |row| Ok(text(&row).unwrap_or_else(|| "[]".into())),
        resource_exists,
    )
    .await
}
