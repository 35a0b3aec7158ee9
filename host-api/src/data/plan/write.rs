//! Writes: INSERT (with upserts and `missing=default`), UPDATE and DELETE as a
//! `WITH _w AS (…)` whose `RETURNING` is chosen by the caller ([`Returning`]),
//! and the answer built from the written rows.

use super::select::{build_object, Pair};
use super::sql::{csv_agg, csv_row, ident, qualified};
use super::{Builder, Limits, Source, Statement};
use crate::data::error::DataError;
use crate::data::request::{Action, Field, Query, Request, Resolution, Return, SelectItem};
use crate::data::schema::{RelKind, Relation};
use std::fmt::{self, Display, Write};

/// What the written rows give back to the statement around the write (its
/// `RETURNING`), a parameter of [`Builder::write`] so the planned text never
/// needs editing afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Returning {
    /// `RETURNING w.*`: the rows are read for the body or `Location`.
    Rows,
    /// `RETURNING 1`: only counted, which keeps SELECT policies out of a
    /// write-only table's inserts (as PostgREST).
    Count,
}

impl Returning {
    /// What a write answering with `ret` needs from relation `rel`'s rows:
    /// `headers-only` reads them only for a primary key to put in `Location`.
    pub(super) fn of(ret: Return, rel: &Relation) -> Returning {
        let needs_rows = match ret {
            Return::Representation => true,
            Return::HeadersOnly => !rel.pk.is_empty(),
            Return::Minimal => false,
        };
        if needs_rows {
            Returning::Rows
        } else {
            Returning::Count
        }
    }

    /// The clause (with its leading space) for the written relation aliased
    /// `w`, written straight into the statement's text.
    fn clause(self, w: &str) -> Clause<'_> {
        Clause(self, w)
    }
}

/// ` RETURNING …` of a [`Returning`] choice for alias `.1`.
struct Clause<'a>(Returning, &'a str);

impl Display for Clause<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Returning::Rows => write!(f, " RETURNING {}.*", self.1),
            Returning::Count => f.write_str(" RETURNING 1"),
        }
    }
}

impl<'s> Builder<'s> {
    /// Plans an INSERT, UPDATE or DELETE of `rel` whose written rows give back
    /// what `returning` says.
    pub(super) fn write(
        &mut self,
        req: &Request,
        rel: &'s Relation,
        limits: &Limits,
        returning: Returning,
    ) -> Result<Statement, DataError> {
        let target = qualified(&rel.schema, &rel.name);
        let w = self.alias();
        let mut cte = match &req.action {
            Action::Insert {
                resolution,
                on_conflict,
                columns,
                missing_default,
            } => {
                let body = req
                    .body
                    .as_deref()
                    .ok_or_else(|| DataError::body("Empty or invalid json"))?;
                let parsed: serde_json::Value = serde_json::from_str(body)
                    .map_err(|_| DataError::body("Empty or invalid json"))?;
                let first = match &parsed {
                    serde_json::Value::Object(m) => Some(m),
                    serde_json::Value::Array(a) => {
                        if a.iter().any(|v| !v.is_object()) {
                            return Err(DataError::body(
                                "every element of the array must be an object",
                            ));
                        }
                        if a.is_empty() {
                            // Nothing to insert: answer [] without touching the table
                            // (an upsert that inserted nothing: 0 inserted, see below).
                            let inserted = if *resolution == Some(Resolution::Merge) {
                                ", 0::int8"
                            } else {
                                ""
                            };
                            return Ok(Statement {
                                sql: format!("SELECT NULL::int8, '[]'::text, 0::int8{inserted}"),
                                pk: rel.pk.clone(),
                                ..Default::default()
                            });
                        }
                        if a.len() > 1
                            && a.iter()
                                .all(|v| v.as_object().is_some_and(|m| m.is_empty()))
                        {
                            return Err(DataError::body(
                                "several rows with no columns cannot be inserted; send the columns or one {}",
                            ));
                        }
                        a.first().and_then(|v| v.as_object())
                    }
                    _ => {
                        return Err(DataError::body(
                            "expected a JSON object or an array of objects",
                        ))
                    }
                };
                let names: Vec<String> = match columns {
                    Some(c) => c.clone(),
                    None => first
                        .map(|m| m.keys().cloned().collect())
                        .unwrap_or_default(),
                };
                let mut cols = Vec::new();
                for n in &names {
                    cols.push(Source::of(rel).write_column(n)?);
                }
                let json = if cols.is_empty() {
                    String::new()
                } else if parsed.is_array() {
                    self.param(body.to_string())
                } else {
                    self.param(format!("[{body}]"))
                };
                let list = cols
                    .iter()
                    .map(|c| ident(&c.name))
                    .collect::<Vec<_>>()
                    .join(", ");
                let values = if *missing_default {
                    cols.iter()
                        .map(|c| {
                            let k = self.param(c.name.clone());
                            let dflt = c.default.clone().unwrap_or_else(|| "NULL".into());
                            format!(
                                "CASE WHEN _e.j ? {k} THEN _p.{} ELSE {dflt} END",
                                ident(&c.name)
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                } else {
                    cols.iter()
                        .map(|c| format!("_p.{}", ident(&c.name)))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let source = if *missing_default {
                    format!("jsonb_array_elements({json}::jsonb) _e(j), LATERAL jsonb_populate_record(NULL::{target}, _e.j) _p")
                } else {
                    format!("jsonb_populate_recordset(NULL::{target}, {json}::jsonb) _p")
                };
                let mut sql = if cols.is_empty() {
                    // `{}`: a row of defaults.
                    format!("INSERT INTO {target} AS {w} DEFAULT VALUES")
                } else {
                    format!("INSERT INTO {target} AS {w} ({list}) SELECT {values} FROM {source}")
                };
                if let Some(res) = resolution {
                    let keys = match on_conflict {
                        Some(k) => k.clone(),
                        None => rel.pk.clone(),
                    };
                    if keys.is_empty() {
                        return Err(DataError::new(
                            400,
                            "PGRST100",
                            "upsert needs on_conflict or a primary key",
                        ));
                    }
                    let mut kcols = Vec::new();
                    for k in &keys {
                        kcols.push(ident(&Source::of(rel).write_column(k)?.name));
                    }
                    let _ = write!(sql, " ON CONFLICT ({})", kcols.join(", "));
                    match res {
                        Resolution::Ignore => sql.push_str(" DO NOTHING"),
                        Resolution::Merge => {
                            let sets: Vec<String> = cols
                                .iter()
                                .map(|c| format!("{0} = EXCLUDED.{0}", ident(&c.name)))
                                .collect();
                            if sets.is_empty() {
                                sql.push_str(" DO NOTHING");
                            } else {
                                let _ = write!(sql, " DO UPDATE SET {}", sets.join(", "));
                            }
                        }
                    }
                }
                let _ = write!(sql, "{}", returning.clause(&w));
                sql
            }
            Action::Update => {
                let body = req
                    .body
                    .as_deref()
                    .ok_or_else(|| DataError::body("a JSON object is required"))?;
                let parsed: serde_json::Value = serde_json::from_str(body)
                    .map_err(|_| DataError::body("Empty or invalid json"))?;
                let obj = parsed
                    .as_object()
                    .ok_or_else(|| DataError::body("PATCH takes one JSON object"))?;
                let conds = self.write_filter(req, rel, &w, limits, "UPDATE")?;
                let mut sets = Vec::new();
                for k in obj.keys() {
                    let c = Source::of(rel).write_column(k)?;
                    sets.push(format!("{0} = _p.{0}", ident(&c.name)));
                }
                if sets.is_empty() {
                    return Err(DataError::body("PATCH needs at least one column to set"));
                }
                let json = self.param(body.to_string());
                format!(
                    "UPDATE {target} AS {w} SET {} FROM jsonb_populate_record(NULL::{target}, {json}::jsonb) _p{conds}{}",
                    sets.join(", "),
                    returning.clause(&w)
                )
            }
            Action::Delete => {
                let conds = self.write_filter(req, rel, &w, limits, "DELETE")?;
                format!("DELETE FROM {target} AS {w}{conds}{}", returning.clause(&w))
            }
            _ => unreachable!("reads and calls are planned elsewhere"),
        };
        let a = self.alias();
        let src = Source::of(rel);
        // A merging upsert answers 201 only when it inserted a row, 200 when it
        // only updated (PostgREST): a row version this statement inserted has
        // no xmax, an updated one has this transaction's. (Views have no xmax:
        // an upsert through one keeps 201.)
        let merge = rel.kind == RelKind::Table
            && matches!(
                req.action,
                Action::Insert {
                    resolution: Some(Resolution::Merge),
                    ..
                }
            );
        let inserted = if merge {
            let _ = write!(cte, ", ({w}.xmax = 0) AS \"_wb_inserted\"");
            ", (SELECT count(*) FROM _w WHERE _w.\"_wb_inserted\")"
        } else {
            ""
        };
        let total = if req.count.is_some() {
            "(SELECT count(*) FROM _w)"
        } else {
            "NULL::int8"
        };
        // The written rows as the relation's row type: a merging upsert's
        // `_w` has one more column, and a computed field takes the row.
        let rows = if merge {
            let cols: Vec<String> = rel.columns.iter().map(|c| ident(&c.name)).collect();
            format!("(SELECT {} FROM _w) {a}", cols.join(", "))
        } else {
            format!("_w {a}")
        };
        let body = match req.returning {
            Return::Representation if req.csv => {
                let pairs = self.pairs(&req.query, &req.query.select, src, &a, &[])?;
                no_aggregate(&pairs)?;
                format!(
                    "(SELECT {} FROM (SELECT {} AS j FROM {rows}) _c)",
                    csv_agg(&pairs, "_c.j"),
                    csv_row(&pairs)
                )
            }
            Return::Representation => {
                let mut obj = self.plain_object(&req.query, &req.query.select, src, &a)?;
                if req.strip_nulls {
                    obj = format!("json_strip_nulls({obj})");
                }
                format!("(SELECT coalesce(json_agg({obj}), '[]')::text FROM {rows})")
            }
            Return::HeadersOnly if !rel.pk.is_empty() => {
                let items: Vec<SelectItem> = rel
                    .pk
                    .iter()
                    .map(|k| SelectItem::Field {
                        alias: None,
                        field: Field::col(k),
                        cast: None,
                        aggregate: None,
                        agg_cast: None,
                    })
                    .collect();
                let obj = self.plain_object(&req.query, &items, src, &a)?;
                format!("(SELECT coalesce(json_agg({obj}), '[]')::text FROM {rows})")
            }
            _ => "NULL::text".into(),
        };
        Ok(Statement {
            sql: format!(
                "WITH _w AS ({cte}) SELECT {total}, {body}, (SELECT count(*) FROM _w){inserted}"
            ),
            pk: rel.pk.clone(),
            csv: req.csv && req.returning == Return::Representation,
            ..Default::default()
        })
    }

    /// The ` WHERE …` of an UPDATE or DELETE (`what`) of `rel` aliased `w`,
    /// refused when empty unless the limits allow unfiltered writes.
    /// The object of a written row: its own level cannot be aggregated (the
    /// rows are `json_agg`ed as they are; embedded resources may aggregate).
    fn plain_object(
        &mut self,
        q: &Query,
        items: &[SelectItem],
        src: Source<'s>,
        a: &str,
    ) -> Result<String, DataError> {
        let pairs = self.pairs(q, items, src, a, &[])?;
        no_aggregate(&pairs)?;
        Ok(build_object(&pairs))
    }

    fn write_filter(
        &mut self,
        req: &Request,
        rel: &'s Relation,
        w: &str,
        limits: &Limits,
        what: &str,
    ) -> Result<String, DataError> {
        let root = req.query.root().cloned().unwrap_or_default();
        let conds = self.conditions(&req.query, &root.conditions, Source::of(rel), w, &[])?;
        if conds.is_empty() && !limits.allow_unfiltered_writes {
            return Err(unfiltered(what));
        }
        Ok(conds)
    }
}

/// Refuses a PATCH/DELETE without filters, as pg-safeupdate does for PostgREST.
fn unfiltered(what: &str) -> DataError {
    DataError::new(400, "21000", format!("{what} requires a WHERE clause")).hint(
        "Add a filter (e.g. id=eq.1); a filter that matches every row (id=not.is.null) is allowed",
    )
}

/// PGRST127: the returned rows of a write are not aggregated.
fn no_aggregate(pairs: &[Pair]) -> Result<(), DataError> {
    if pairs.iter().any(|p| p.agg.is_some()) {
        return Err(DataError::not_implemented(
            "Aggregates are not implemented for the rows a write returns.",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{limits, request, schema};
    use super::super::{plan, Limits};
    use crate::data::parse::parse_query;
    use crate::data::request::{Action, Query, Return};

    #[test]
    fn unfiltered_update_and_delete_are_refused() {
        let mut req = request("items", Action::Delete, Query::default());
        let limits = limits(10);
        assert_eq!(plan(&schema(), &req, &limits).unwrap_err().code, "21000");
        req.action = Action::Update;
        req.body = Some("{\"name\":\"x\"}".into());
        assert_eq!(plan(&schema(), &req, &limits).unwrap_err().code, "21000");
        let open = Limits {
            allow_unfiltered_writes: true,
            ..limits
        };
        assert!(plan(&schema(), &req, &open).is_ok());
    }

    #[test]
    fn returning_is_chosen_by_the_caller_not_edited_into_the_text() {
        let filtered = parse_query(&[("id".to_string(), "eq.1".to_string())]).unwrap();
        let mut req = request("items", Action::Delete, filtered);
        // headers-only reads the written rows for their primary key.
        for (ret, clause) in [
            (Return::Minimal, "RETURNING 1"),
            (Return::Representation, "RETURNING \"_0\".*"),
            (Return::HeadersOnly, "RETURNING \"_0\".*"),
        ] {
            req.returning = ret;
            let sql = plan(&schema(), &req, &limits(10)).unwrap().sql;
            let cte = format!(
                "WITH _w AS (DELETE FROM \"public\".\"items\" AS \"_0\" WHERE (\"_0\".\"id\" = $1) {clause})"
            );
            assert!(sql.starts_with(&cte), "{ret:?}: {sql}");
        }
    }
}
