//! `wasmbase:platform/sql`: raw parameterised SQL for functions granted
//! `db = "service"`. It runs on its own pool that logs in as
//! `wasmbase_functions` (NOINHERIT, member of service_role alone), and every
//! call is a transaction that does `SET LOCAL ROLE service_role` with a
//! statement timeout no longer than the call's remaining time. (The guest's
//! SQL runs inside that transaction and could change its own timeout; the
//! call's wall-clock limit still ends the call and drops the connection.)

use super::bindings::wasmbase::platform::sql::{Host, Rows, Statement, Value};
use super::{error, DbAccess, GuestCtx, GuestError};
use crate::data::exec::TextParam;
use crate::db::{Acting, DbError, PoolKind, Tx};
use crate::time;
use deadpool_postgres::ClientWrapper;
use futures::future::BoxFuture;
use tokio_postgres::types::{FromSql, ToSql, Type};

impl GuestCtx {
    fn sql_access(&self) -> Result<(DbAccess, deadpool_postgres::Pool), GuestError> {
        let db = self.db.clone();
        match db {
            Some(d) if d.sql.is_some() => {
                let pool = d.sql.clone().expect("checked");
                Ok((d, pool))
            }
            _ => Err(error(
                403,
                "WB403",
                "raw SQL needs db = \"service\" in function.toml",
            )),
        }
    }

    /// Runs `work` in one transaction as service_role on the raw-SQL pool
    /// (`db::PoolKind::Isolated`): a database permit, a connection, then
    /// `db::Tx` with a statement timeout no longer than what is left of the
    /// call (computed once the permit and connection are in hand). What a
    /// guest left in the session is reset by `DISCARD ALL` when the pool
    /// hands the connection out again.
    async fn in_service_tx<T>(
        &mut self,
        work: impl for<'c> FnOnce(&'c ClientWrapper) -> BoxFuture<'c, Result<T, GuestError>>,
    ) -> Result<T, GuestError> {
        let (db, pool) = self.sql_access()?;
        let _permit = db
            .permits
            .acquire()
            .await
            .map_err(|_| error(503, "WB503", "database access is shutting down"))?;
        let tx = Tx::connect(&pool, PoolKind::Isolated)
            .await
            .map_err(|e| pg_error(&e))?;
        let acting = Acting {
            role: "service_role",
            claims: &db.principal.claims_json,
            timeout: self.db_timeout(db.statement_timeout)?,
            read_only: false,
        };
        tx.run(Some(&acting), work).await
    }
}

impl From<DbError> for GuestError {
    fn from(e: DbError) -> Self {
        pg_error(&e)
    }
}

fn pg(e: tokio_postgres::Error) -> GuestError {
    pg_error(&DbError::Pg(e))
}

fn params(values: &[Value]) -> Vec<Option<String>> {
    values.iter().map(text_of).collect()
}

/// Most rows one raw SQL statement may return to a guest.
const MAX_ROWS: usize = 100_000;

fn pg_error(e: &DbError) -> GuestError {
    match e {
        DbError::Pool(_) => error(503, "WB503", "no database connection available"),
        DbError::Pg(pg) => match pg.as_db_error() {
            Some(db) => GuestError {
                code: db.code().code().to_string(),
                message: db.message().to_string(),
                details: db.detail().map(str::to_string),
                hint: db.hint().map(str::to_string),
                status: crate::data::error::status_of(db.code().code(), crate::Role::ServiceRole),
            },
            None if pg.is_closed() => error(503, "WB503", "database connection error"),
            // e.g. a parameter count that does not match the statement
            None => error(400, "WB400", pg.to_string()),
        },
    }
}

fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::Boolean(b) => Some(if *b { "t".into() } else { "f".into() }),
        Value::Int(i) => Some(i.to_string()),
        Value::Float(f) => Some(f.to_string()),
        Value::Text(s) | Value::Json(s) | Value::Uuid(s) | Value::Timestamp(s) => Some(s.clone()),
        Value::Bytes(b) => {
            let mut s = String::with_capacity(2 + b.len() * 2);
            s.push_str("\\x");
            for byte in b {
                s.push_str(&format!("{byte:02x}"));
            }
            Some(s)
        }
    }
}

async fn run_one(client: &tokio_postgres::Client, st: &Statement) -> Result<Rows, GuestError> {
    let texts = params(&st.params);
    let values: Vec<TextParam<'_>> = texts.iter().map(|t| TextParam(t.as_deref())).collect();
    let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
    let stmt = client.prepare(&st.sql).await.map_err(pg)?;
    let columns: Vec<String> = stmt
        .columns()
        .iter()
        .map(|c| c.name().to_string())
        .collect();
    // Streamed and bounded: a huge result is an error, not host memory.
    let rows = client.query_raw(&stmt, refs).await.map_err(pg)?;
    futures::pin_mut!(rows);
    let mut out = Vec::new();
    while let Some(row) = futures::StreamExt::next(&mut rows).await {
        let row = row.map_err(pg)?;
        if out.len() >= MAX_ROWS {
            return Err(error(
                400,
                "WB413",
                format!("the query returned more than {MAX_ROWS} rows; add a LIMIT"),
            ));
        }
        let mut vals = Vec::with_capacity(columns.len());
        for (i, c) in stmt.columns().iter().enumerate() {
            vals.push(decode(&row, i, c.type_())?);
        }
        out.push(vals);
    }
    Ok(Rows { columns, rows: out })
}

fn out_of_range(i: usize) -> GuestError {
    error(
        400,
        "WB400",
        format!("column {i} is a date too far from today to show; cast it (e.g. ::text)"),
    )
}

fn decode(row: &tokio_postgres::Row, i: usize, ty: &Type) -> Result<Value, GuestError> {
    let bad = |e: tokio_postgres::Error| error(500, "WB500", format!("reading column {i}: {e}"));
    macro_rules! get {
        ($t:ty, $f:expr) => {
            match row.try_get::<_, Option<$t>>(i).map_err(bad)? {
                None => Value::Null,
                Some(v) => $f(v),
            }
        };
    }
    Ok(match *ty {
        Type::BOOL => get!(bool, Value::Boolean),
        Type::INT2 => get!(i16, |v: i16| Value::Int(v.into())),
        Type::INT4 => get!(i32, |v: i32| Value::Int(v.into())),
        Type::INT8 => get!(i64, Value::Int),
        Type::OID => get!(u32, |v: u32| Value::Int(v.into())),
        Type::FLOAT4 => get!(f32, |v: f32| Value::Float(v.into())),
        Type::FLOAT8 => get!(f64, Value::Float),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
            get!(String, Value::Text)
        }
        Type::JSON | Type::JSONB => get!(serde_json::Value, |v: serde_json::Value| Value::Json(
            v.to_string()
        )),
        Type::BYTEA => get!(Vec<u8>, Value::Bytes),
        Type::UUID => get!(uuid::Uuid, |v: uuid::Uuid| Value::Uuid(v.to_string())),
        Type::TIMESTAMPTZ | Type::TIMESTAMP => {
            match row.try_get::<_, Option<Micros>>(i).map_err(bad)? {
                None => Value::Null,
                Some(v) => Value::Timestamp(
                    time::pg_timestamp(v.0, *ty == Type::TIMESTAMPTZ)
                        .ok_or_else(|| out_of_range(i))?,
                ),
            }
        }
        Type::DATE => match row.try_get::<_, Option<Days>>(i).map_err(bad)? {
            None => Value::Null,
            Some(v) => Value::Text(time::pg_date(v.0).ok_or_else(|| out_of_range(i))?),
        },
        Type::NUMERIC => get!(Numeric, |v: Numeric| Value::Text(v.0)),
        _ => {
            return Err(error(
                400,
                "WB400",
                format!(
                    "column {i} has type {ty}, which sql does not decode; cast it (e.g. ::text)"
                ),
            ))
        }
    })
}

/// Microseconds since 2000-01-01 (PostgreSQL's binary timestamp).
struct Micros(i64);

impl<'a> FromSql<'a> for Micros {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        let b: [u8; 8] = raw.try_into()?;
        Ok(Micros(i64::from_be_bytes(b)))
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::TIMESTAMP || *ty == Type::TIMESTAMPTZ
    }
}

/// Days since 2000-01-01 (PostgreSQL's binary date).
struct Days(i32);

impl<'a> FromSql<'a> for Days {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        let b: [u8; 4] = raw.try_into()?;
        Ok(Days(i32::from_be_bytes(b)))
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::DATE
    }
}

/// A numeric as its decimal text (decoded from the binary format).
struct Numeric(String);

impl<'a> FromSql<'a> for Numeric {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        let word = |i: usize| -> Result<u16, Box<dyn std::error::Error + Sync + Send>> {
            let b = raw.get(i * 2..i * 2 + 2).ok_or("short numeric")?;
            Ok(u16::from_be_bytes([b[0], b[1]]))
        };
        let ndigits = word(0)? as usize;
        let weight = word(1)? as i16 as i64;
        let sign = word(2)?;
        let dscale = word(3)? as usize;
        match sign {
            0xC000 => return Ok(Numeric("NaN".into())),
            0xD000 => return Ok(Numeric("Infinity".into())),
            0xF000 => return Ok(Numeric("-Infinity".into())),
            _ => {}
        }
        let digits: Vec<u16> = (0..ndigits)
            .map(|i| word(4 + i))
            .collect::<Result<_, _>>()?;
        let mut int = String::new();
        for w in 0..=weight.max(-1) {
            let d = digits.get(w as usize).copied().unwrap_or(0);
            if int.is_empty() {
                int = d.to_string();
            } else {
                int.push_str(&format!("{d:04}"));
            }
        }
        if int.is_empty() {
            int.push('0');
        }
        let mut frac = String::new();
        let mut k = weight + 1;
        while frac.len() < dscale {
            let d = if k < 0 {
                0
            } else {
                digits.get(k as usize).copied().unwrap_or(0)
            };
            frac.push_str(&format!("{d:04}"));
            k += 1;
        }
        frac.truncate(dscale);
        let mut s = String::new();
        if sign == 0x4000 {
            s.push('-');
        }
        s.push_str(&int);
        if dscale > 0 {
            s.push('.');
            s.push_str(&frac);
        }
        Ok(Numeric(s))
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }
}

impl Host for GuestCtx {
    async fn query(&mut self, sql: String, params: Vec<Value>) -> Result<Rows, GuestError> {
        let statement = Statement { sql, params };
        self.in_service_tx(move |client| Box::pin(async move { run_one(client, &statement).await }))
            .await
    }

    async fn execute(&mut self, sql: String, values: Vec<Value>) -> Result<u64, GuestError> {
        // The affected-row count, which `query` does not give for
        // INSERT/UPDATE/DELETE without RETURNING.
        self.in_service_tx(move |client| {
            Box::pin(async move {
                let texts = params(&values);
                let values: Vec<TextParam<'_>> =
                    texts.iter().map(|t| TextParam(t.as_deref())).collect();
                let refs: Vec<&(dyn ToSql + Sync)> =
                    values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
                let stmt = client.prepare(&sql).await.map_err(pg)?;
                client.execute(&stmt, &refs).await.map_err(pg)
            })
        })
        .await
    }

    async fn transaction(&mut self, statements: Vec<Statement>) -> Result<Vec<Rows>, GuestError> {
        self.in_service_tx(move |client| {
            Box::pin(async move {
                let mut out = Vec::with_capacity(statements.len());
                for st in &statements {
                    out.push(run_one(client, st).await?);
                }
                Ok(out)
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numerics_decode() {
        // 12345.678 = ndigits 3, weight 1, sign +, dscale 3, digits [1, 2345, 6780]
        let raw: Vec<u8> = [3u16, 1, 0, 3, 1, 2345, 6780]
            .iter()
            .flat_map(|w| w.to_be_bytes())
            .collect();
        assert_eq!(
            Numeric::from_sql(&Type::NUMERIC, &raw).unwrap().0,
            "12345.678"
        );
        // -0.05 = ndigits 1, weight -1, sign -, dscale 2, digits [500]
        let raw: Vec<u8> = [1u16, 0xFFFF, 0x4000, 2, 500]
            .iter()
            .flat_map(|w| w.to_be_bytes())
            .collect();
        assert_eq!(Numeric::from_sql(&Type::NUMERIC, &raw).unwrap().0, "-0.05");
    }
}
