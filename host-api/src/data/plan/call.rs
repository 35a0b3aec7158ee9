//! Calls (`/rpc/name`): choosing the overload the arguments fit, passing them
//! (named, from one JSON parameter, or as the single json argument), and
//! shaping the result of a void, scalar, set-of-scalar or row-returning function.

use super::sql::{ident, qualified};
use super::{Builder, Limits, Source, Statement};
use crate::data::error::DataError;
use crate::data::request::Request;
use crate::data::schema::{Function, Returns};

impl Builder<'_> {
    /// Plans a call of function `name` of `req.schema`.
    pub(super) fn call(
        &mut self,
        req: &Request,
        name: &str,
        limits: &Limits,
    ) -> Result<Statement, DataError> {
        let args: serde_json::Map<String, serde_json::Value> = match req.body.as_deref() {
            None | Some("") => Default::default(),
            Some(b) => match serde_json::from_str::<serde_json::Value>(b) {
                Ok(serde_json::Value::Object(m)) => m,
                Ok(_) => Default::default(),
                Err(e) => return Err(DataError::body(format!("the body is not JSON: {e}"))),
            },
        };
        let raw_body = req.body.clone().unwrap_or_else(|| "{}".into());
        let f = pick_function(
            self.schema.functions(&req.schema, name),
            &args,
            &req.schema,
            name,
        )?;
        let single_json = f.args.len() == 1
            && f.args[0].name.is_empty()
            && matches!(f.args[0].type_sql.as_str(), "json" | "jsonb");
        let fname = qualified(&f.schema, &f.name);
        let (from_args, call) = if single_json {
            let p = self.param(raw_body);
            (
                String::new(),
                format!("{fname}({p}::{})", f.args[0].type_sql),
            )
        } else if args.is_empty() {
            (String::new(), format!("{fname}()"))
        } else {
            let used: Vec<_> = f
                .args
                .iter()
                .filter(|a| args.contains_key(&a.name))
                .collect();
            let defs = used
                .iter()
                .map(|a| format!("{} {}", ident(&a.name), a.type_sql))
                .collect::<Vec<_>>()
                .join(", ");
            let named = used
                .iter()
                .map(|a| format!("{0} := _a.{0}", ident(&a.name)))
                .collect::<Vec<_>>()
                .join(", ");
            let p = self.param(serde_json::Value::Object(args.clone()).to_string());
            (
                format!("jsonb_to_record({p}::jsonb) AS _a({defs}), LATERAL "),
                format!("{fname}({named})"),
            )
        };
        match &f.returns {
            Returns::Void => Ok(Statement {
                sql: format!("SELECT NULL::int8, NULL::text, count(*) FROM {from_args}{call} _v"),
                scalar: true,
                void: true,
                ..Default::default()
            }),
            Returns::Scalar { .. } if !f.set => {
                // One value is one row: its count is 1 (PostgREST's `0-0/1`).
                let total = if req.count.is_some() {
                    "1::int8"
                } else {
                    "NULL::int8"
                };
                Ok(Statement {
                    sql: format!("SELECT {total}, coalesce(to_json(_v.v)::text, 'null'), 1::int8 FROM {from_args}{call} AS _v(v)"),
                    scalar: true,
                    ..Default::default()
                })
            }
            Returns::Scalar { .. } => {
                let root = req.query.root().cloned().unwrap_or_default();
                let limit = root.limit.unwrap_or(limits.max_rows).min(limits.max_rows);
                let (l, o) = (
                    self.param(limit.to_string()),
                    self.param(root.offset.unwrap_or(0).to_string()),
                );
                let sql = if req.count.is_some() {
                    // Counted: the call runs once (materialized), the count reads it too.
                    format!(
                        "WITH _f AS MATERIALIZED (SELECT _v.v FROM {from_args}{call} AS _v(v)) SELECT (SELECT count(*) FROM _f), coalesce(json_agg(_r.j), '[]')::text, count(_r.j) FROM (SELECT to_json(_f.v) AS j FROM _f LIMIT {l} OFFSET {o}) _r"
                    )
                } else {
                    format!(
                        "SELECT NULL::int8, coalesce(json_agg(_r.j), '[]')::text, count(_r.j) FROM (SELECT to_json(_v.v) AS j FROM {from_args}{call} AS _v(v) LIMIT {l} OFFSET {o}) _r"
                    )
                };
                Ok(Statement {
                    sql,
                    ..Default::default()
                })
            }
            Returns::Rows { columns, table } => {
                let rel = table.as_ref().and_then(|(s, t)| self.schema.relation(s, t));
                let src = Source {
                    columns,
                    rel,
                    label: &f.name,
                };
                let a = self.alias();
                // The call runs once (materialized), whether or not a count reads it too.
                let from = format!("_f {a}");
                let sql = self.root_select(req, src, &a, &from, limits, false)?;
                Ok(Statement {
                    sql: format!(
                        "WITH _f AS MATERIALIZED (SELECT _c.* FROM {from_args}{call} _c) {sql}"
                    ),
                    // One composite row: answered as an object, or `null` when
                    // filters removed it (PostgREST); only the single-object
                    // `Accept` makes zero rows a 406.
                    object: !f.set,
                    csv: req.csv,
                    ..Default::default()
                })
            }
        }
    }
}

/// The overload of `name` whose named arguments match `args`.
fn pick_function<'f>(
    cands: &'f [Function],
    args: &serde_json::Map<String, serde_json::Value>,
    schema: &str,
    name: &str,
) -> Result<&'f Function, DataError> {
    let fits: Vec<&Function> = cands
        .iter()
        .filter(|f| {
            if f.args.len() == 1
                && f.args[0].name.is_empty()
                && matches!(f.args[0].type_sql.as_str(), "json" | "jsonb")
            {
                return true;
            }
            // An unnamed parameter cannot be passed by name (not even as ""):
            // it must have a default, as in PostgREST's schema cache.
            args.keys()
                .all(|k| !k.is_empty() && f.args.iter().any(|a| a.name == *k))
                && f.args
                    .iter()
                    .all(|a| a.has_default || (!a.name.is_empty() && args.contains_key(&a.name)))
        })
        .collect();
    match fits.len() {
        1 => Ok(fits[0]),
        0 => {
            let mut keys: Vec<&str> = args.keys().map(String::as_str).collect();
            keys.sort();
            Err(DataError::new(
                404,
                "PGRST202",
                format!(
                    "Could not find the function {schema}.{name}({}) in the schema cache",
                    keys.join(", ")
                ),
            )
            .hint("Check the function's name and argument names"))
        }
        _ => Err(DataError::new(
            300,
            "PGRST203",
            format!(
                "Could not choose the best candidate function between overloads of {schema}.{name}"
            ),
        )),
    }
}
