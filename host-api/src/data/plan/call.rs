//! Calls (`/rpc/name`): choosing the overload the arguments fit, passing them
//! (named, from one JSON parameter, or as the single json argument), and
//! shaping the result of a void, scalar, set-of-scalar or row-returning function.

use super::sql::{ident, qualified};
use super::suggest;
use super::{Builder, Limits, Source, Statement};
use crate::data::error::DataError;
use crate::data::request::{Action, CallBody, Request};
use crate::data::schema::{Function, Returns, Schema};

impl Builder<'_> {
    /// Plans a call of function `name` of `req.schema`.
    pub(super) fn call(
        &mut self,
        req: &Request,
        name: &str,
        limits: &Limits,
    ) -> Result<Statement, DataError> {
        let how = match &req.action {
            Action::Call { body, .. } => *body,
            _ => CallBody::Named,
        };
        let args: serde_json::Map<String, serde_json::Value> = match (how, req.body.as_deref()) {
            (CallBody::Raw(_), _) | (_, None | Some("")) => Default::default(),
            (_, Some(b)) => match serde_json::from_str::<serde_json::Value>(b) {
                Ok(serde_json::Value::Object(m)) => m,
                Ok(_) => Default::default(),
                Err(_) => return Err(DataError::body("Empty or invalid json")),
            },
        };
        let f = pick_function(self.schema, &req.schema, name, &args, how, !req.read_only)?;
        let fname = qualified(&f.schema, &f.name);
        let whole_body = match how {
            // A raw body, or with `params=single-object` the whole JSON body,
            // is the function's one argument.
            CallBody::Raw(_) | CallBody::SingleObject => true,
            CallBody::Named => single_unnamed(f, JSON_TYPES) && !req.read_only,
        };
        let (from_args, call) = if whole_body {
            let p = self.param(req.body.clone().unwrap_or_else(|| "{}".into()));
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
            // A variadic parameter takes its array with VARIADIC (PostgREST:
            // repeated GET parameters, or a JSON array).
            let named = used
                .iter()
                .map(|a| {
                    let v = if a.variadic { "VARIADIC " } else { "" };
                    format!("{v}{0} := _a.{0}", ident(&a.name))
                })
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
                let range = self.range(Some(limit), root.offset);
                let sql = if req.count.is_some() {
                    // Counted: the call runs once (materialized), the count reads it too.
                    format!(
                        "WITH _f AS MATERIALIZED (SELECT _v.v FROM {from_args}{call} AS _v(v)) SELECT (SELECT count(*) FROM _f), coalesce(json_agg(_r.j), '[]')::text, count(_r.j) FROM (SELECT to_json(_f.v) AS j FROM _f{range}) _r"
                    )
                } else {
                    format!(
                        "SELECT NULL::int8, coalesce(json_agg(_r.j), '[]')::text, count(_r.j) FROM (SELECT to_json(_v.v) AS j FROM {from_args}{call} AS _v(v){range}) _r"
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

/// Types a function with one unnamed parameter accepts a JSON body for.
const JSON_TYPES: &[&str] = &["json", "jsonb"];

/// `f` has a single unnamed parameter of one of `types` (PostgREST's
/// `hasSingleUnnamedParam`).
fn single_unnamed(f: &Function, types: &[&str]) -> bool {
    f.args.len() == 1 && f.args[0].name.is_empty() && types.contains(&f.args[0].type_sql.as_str())
}

/// The overload of `schema.name` the call means, as PostgREST's `findProc`
/// decides: the functions whose parameters the argument keys match (every
/// required parameter given, nothing unknown), else the one with a single
/// unnamed parameter the body's type fits (a JSON body for json/jsonb, a
/// `text/plain`, `text/xml` or `application/octet-stream` body for text, xml
/// or bytea). With `params=single-object`, the one function with a single
/// json/jsonb parameter, named or not.
fn pick_function<'f>(
    schema: &'f Schema,
    schema_name: &str,
    name: &str,
    args: &serde_json::Map<String, serde_json::Value>,
    how: CallBody,
    post: bool,
) -> Result<&'f Function, DataError> {
    let cands = schema.functions(schema_name, name);
    let raw_type = match how {
        CallBody::Raw(t) => Some(t.type_name()),
        _ => None,
    };
    let raw_types = raw_type.map(|t| [t]);
    let unnamed_types: &[&str] = raw_types.as_ref().map_or(JSON_TYPES, |t| &t[..]);
    let keys: std::collections::BTreeSet<&str> = args.keys().map(String::as_str).collect();
    let (mut matching, mut fallback) = (Vec::new(), Vec::new());
    for f in cands {
        let fits = match how {
            CallBody::SingleObject => {
                f.args.len() == 1 && JSON_TYPES.contains(&f.args[0].type_sql.as_str())
            }
            CallBody::Raw(_) => false,
            CallBody::Named if f.args.is_empty() => keys.is_empty(),
            CallBody::Named => {
                let known = |k: &&str| f.args.iter().any(|a| !a.name.is_empty() && a.name == *k);
                keys.iter().all(known)
                    && f.args
                        .iter()
                        .filter(|a| !a.has_default)
                        .all(|a| !a.name.is_empty() && keys.contains(a.name.as_str()))
            }
        };
        if fits {
            matching.push(f);
        } else if post && single_unnamed(f, unnamed_types) {
            fallback.push(f);
        }
    }
    let chosen = if matching.is_empty() {
        fallback
    } else {
        matching
    };
    match chosen.len() {
        1 => Ok(chosen[0]),
        0 => {
            let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
            // noRpcHint: a near function name, or a near parameter list of
            // the overloads; none for a raw body.
            let hint = if raw_type.is_some() {
                None
            } else if cands.is_empty() {
                let names: Vec<&str> = schema
                    .functions_in(schema_name)
                    .into_iter()
                    .map(|f| f.name.as_str())
                    .collect();
                suggest::closest(name, names.into_iter(), suggest::NAME)
                    .map(|n| format!("Perhaps you meant to call the function {schema_name}.{n}"))
            } else {
                let lists: Vec<String> = cands.iter().map(param_list).collect();
                let wanted = format!("({})", keys.join(", "));
                suggest::closest(&wanted, lists.iter().map(String::as_str), suggest::LOOSE).map(
                    |l| format!("Perhaps you meant to call the function {schema_name}.{name}{l}"),
                )
            };
            Err(DataError::no_function(
                schema_name,
                name,
                &keys,
                raw_type,
                post && how == CallBody::Named,
                hint,
            ))
        }
        _ => Err(DataError::ambiguous_function(
            &chosen
                .iter()
                .map(|f| {
                    let args: Vec<String> = f
                        .args
                        .iter()
                        .map(|a| format!("{} => {}", a.name, a.type_sql))
                        .collect();
                    format!("{}.{}({})", f.schema, f.name, args.join(", "))
                })
                .collect::<Vec<_>>(),
        )),
    }
}

/// `(a, b, c)`: a function's parameter names, sorted (PostgREST's `listToText`).
fn param_list(f: &Function) -> String {
    let mut names: Vec<&str> = f.args.iter().map(|a| a.name.as_str()).collect();
    names.sort();
    format!("({})", names.join(", "))
}
