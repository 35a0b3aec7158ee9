//! Storage errors in storage-api's shape: `{statusCode, error, message, code}`
//! with `statusCode` a string. storage-api sends most client errors with HTTP
//! 400 and the real status only in the body (storage-js relies on that, e.g.
//! `exists()` reads 400 as "no"); [`StorageError::http_status`] keeps that
//! quirk in one place.

use super::backend::StoreError;
use crate::db::{self, DbError};

/// One storage failure, as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageError {
    /// The status storage-api puts in the body (`statusCode`).
    pub status: u16,
    /// Stable machine code (`NoSuchKey`, `Duplicate`, ...).
    pub code: &'static str,
    /// storage-api's legacy `error` word.
    pub error: &'static str,
    /// Human words.
    pub message: String,
}

impl StorageError {
    /// An error with the given body status, code, legacy word and message.
    pub fn new(
        status: u16,
        code: &'static str,
        error: &'static str,
        message: impl Into<String>,
    ) -> StorageError {
        StorageError {
            status,
            code,
            error,
            message: message.into(),
        }
    }

    /// The HTTP status sent: 400 for client errors, as storage-api does,
    /// except a bad range (416), an unavailable database (503) and server
    /// errors (500).
    pub fn http_status(&self) -> u16 {
        match self.status {
            416 | 503 => self.status,
            s if s >= 500 => 500,
            _ => 400,
        }
    }

    /// Object missing, or hidden by RLS (the two are not told apart).
    pub fn no_such_key() -> StorageError {
        Self::new(404, "NoSuchKey", "not_found", "Object not found")
    }

    /// Bucket missing, or not readable by the caller.
    pub fn no_such_bucket() -> StorageError {
        Self::new(404, "NoSuchBucket", "Bucket not found", "Bucket not found")
    }

    /// An object of that name exists and upsert was not asked for.
    pub fn key_exists() -> StorageError {
        Self::new(
            409,
            "KeyAlreadyExists",
            "Duplicate",
            "The resource already exists",
        )
    }

    /// RLS refused the write.
    pub fn access_denied(message: impl Into<String>) -> StorageError {
        Self::new(403, "AccessDenied", "Unauthorized", message)
    }

    /// The body passed the bucket's or the server's size limit.
    pub fn too_large() -> StorageError {
        Self::new(
            413,
            "EntityTooLarge",
            "Payload too large",
            "The object exceeded the maximum allowed size",
        )
    }

    /// Bad input of any other kind.
    pub fn invalid(message: impl Into<String>) -> StorageError {
        Self::new(400, "InvalidRequest", "InvalidRequest", message)
    }

    /// A failure of ours; the caller logs the detail, the client gets none.
    pub fn internal() -> StorageError {
        Self::new(500, "InternalError", "Internal", "Internal Server Error")
    }

    /// Maps a database failure: RLS → AccessDenied, unique violation →
    /// `duplicate`, timeouts and unavailability → 5xx; anything else is logged
    /// and answered as an internal error.
    pub fn from_db(e: &DbError, duplicate: fn() -> StorageError) -> StorageError {
        match db::sqlstate(e) {
            Some("42501") => {
                let msg = match e {
                    DbError::Pg(pg) => pg.as_db_error().map(|d| d.message().to_string()),
                    DbError::Pool(_) => None,
                }
                .unwrap_or_default();
                if msg.contains("row-level security") {
                    Self::access_denied("new row violates row-level security policy")
                } else {
                    Self::access_denied(msg)
                }
            }
            Some("23505") => duplicate(),
            Some("23503") => Self::no_such_bucket(),
            Some("57014") => Self::new(
                544,
                "DatabaseTimeout",
                "DatabaseTimeout",
                "The database took too long",
            ),
            Some("22023" | "22P02") => Self::invalid(e.describe()),
            None if matches!(e, DbError::Pool(_)) => Self::new(
                503,
                "DatabaseUnavailable",
                "DatabaseUnavailable",
                "The database is not available",
            ),
            _ => {
                tracing::error!(error = %e.describe(), "storage database error");
                Self::internal()
            }
        }
    }
}

impl From<DbError> for StorageError {
    fn from(e: DbError) -> Self {
        StorageError::from_db(&e, || {
            StorageError::new(
                409,
                "ResourceAlreadyExists",
                "Duplicate",
                "The resource already exists",
            )
        })
    }
}

impl From<StoreError> for StorageError {
    /// What a client is told when bytes could not be moved; a backend's own
    /// failure is logged here and answered without its detail.
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::TooLarge => StorageError::too_large(),
            StoreError::Idle => StorageError::new(
                408,
                "RequestTimeout",
                "RequestTimeout",
                "The upload sent nothing for too long",
            ),
            StoreError::Client(_) => {
                StorageError::invalid("The request body ended before it was complete")
            }
            StoreError::NotFound => StorageError::no_such_key(),
            StoreError::Backend(detail) => {
                tracing::error!(error = %detail, "storage backend failed");
                StorageError::new(
                    503,
                    "StorageBackendError",
                    "StorageBackendError",
                    "The storage backend failed; try again",
                )
            }
        }
    }
}

impl std::fmt::Display for StorageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.status, self.message)
    }
}

impl std::error::Error for StorageError {}

impl From<tokio_postgres::Error> for StorageError {
    fn from(e: tokio_postgres::Error) -> Self {
        DbError::Pg(e).into()
    }
}
