//! The shape of what a statement answers: the top-level `SELECT` with its
//! range and count, each level's JSON object (or CSV row), column and JSON-path
//! expressions, casts and `ORDER BY`.

use super::embed::join_sql;
use super::sql::{csv_agg, csv_row, ident, qualified};
use super::{Builder, Limits, Source, Statement};
use crate::data::error::DataError;
use crate::data::request::{Field, OrderTerm, Query, Request, SelectItem};
use crate::data::schema::Relation;

impl<'s> Builder<'s> {
    pub(super) fn read(
        &mut self,
        req: &Request,
        rel: &'s Relation,
        limits: &Limits,
    ) -> Result<Statement, DataError> {
        let a = self.alias();
        let from = format!("{} {a}", qualified(&rel.schema, &rel.name));
        let src = Source::of(rel);
        let sql = self.root_select(req, src, &a, &from, limits)?;
        Ok(Statement {
            sql,
            pk: rel.pk.clone(),
            csv: req.csv,
            ..Default::default()
        })
    }

    /// `SELECT total, body, rows FROM (…page…)` over `from` (which binds `a`).
    pub(super) fn root_select(
        &mut self,
        req: &Request,
        src: Source<'s>,
        a: &str,
        from: &str,
        limits: &Limits,
    ) -> Result<String, DataError> {
        let root = req.query.root().cloned().unwrap_or_default();
        let (obj, csv) = if req.csv {
            let pairs = self.pairs(&req.query, &req.query.select, src, a, &[])?;
            (csv_row(&pairs), Some(csv_agg(&pairs, "_r.j")))
        } else {
            (
                self.object(&req.query, &req.query.select, src, a, &[])?,
                None,
            )
        };
        let conds = self.conditions(&req.query, &root.conditions, src, a, &[])?;
        let order = self.order(&root.order, src, a, &req.query.select)?;
        let limit = root.limit.unwrap_or(limits.max_rows).min(limits.max_rows);
        let (l, o) = (
            self.param(limit.to_string()),
            self.param(root.offset.unwrap_or(0).to_string()),
        );
        let total = match req.count {
            Some(_) => format!("(SELECT count(*) FROM {from}{conds})"),
            None => "NULL::int8".into(),
        };
        let body = match csv {
            _ if req.head => "NULL::text".to_string(),
            Some(csv) => csv,
            None => "coalesce(json_agg(_r.j), '[]')::text".to_string(),
        };
        Ok(format!(
            "SELECT {total}, {body}, count(_r.j) FROM (SELECT {obj} AS j FROM {from}{conds}{order} LIMIT {l} OFFSET {o}) _r"
        ))
    }

    /// `json_build_object(k1, v1, …)` for `items` of level `path` read from `src`
    /// as alias `a`.
    pub(super) fn object(
        &mut self,
        q: &Query,
        items: &[SelectItem],
        src: Source<'s>,
        a: &str,
        path: &[String],
    ) -> Result<String, DataError> {
        let pairs = self.pairs(q, items, src, a, path)?;
        Ok(build_object(&pairs))
    }

    /// (key parameter, value SQL) pairs of an object.
    pub(super) fn pairs(
        &mut self,
        q: &Query,
        items: &[SelectItem],
        src: Source<'s>,
        a: &str,
        path: &[String],
    ) -> Result<Vec<(String, String)>, DataError> {
        let star = [SelectItem::Star];
        let items = if items.is_empty() { &star[..] } else { items };
        let mut pairs = Vec::new();
        for item in items {
            match item {
                SelectItem::Star => {
                    for c in src.columns {
                        let k = self.param(c.name.clone());
                        pairs.push((k, format!("{a}.{}", ident(&c.name))));
                    }
                }
                SelectItem::Field { alias, field, cast } => {
                    let mut expr = self.field(src, a, field)?;
                    if let Some(c) = cast {
                        expr = format!("CAST({expr} AS {})", self.cast(c)?);
                    }
                    let k = self.param(
                        alias
                            .clone()
                            .unwrap_or_else(|| field.output_name().to_string()),
                    );
                    pairs.push((k, expr));
                }
                // An empty embed (`users()`) only filters (`!inner`, `users=not.is.null`,
                // `users.col=…`): PostgREST leaves it out of the output.
                SelectItem::Embed(e) if e.select.is_empty() => {
                    self.link(src, e)?;
                }
                SelectItem::Embed(e) => self.embed_pairs(q, e, src, a, path, &mut pairs)?,
            }
        }
        Ok(pairs)
    }

    /// SQL of a column with its JSON path.
    pub(super) fn field(
        &mut self,
        src: Source<'s>,
        a: &str,
        f: &Field,
    ) -> Result<String, DataError> {
        let col = src.column(&f.column)?;
        let mut expr = format!("{a}.{}", ident(&col.name));
        for step in &f.path {
            let op = if step.text { "->>" } else { "->" };
            let key = if step.key.parse::<i32>().is_ok() {
                format!("{}::int4", self.param(step.key.clone()))
            } else {
                format!("{}::text", self.param(step.key.clone()))
            };
            expr = format!("({expr}{op}{key})");
        }
        Ok(expr)
    }

    pub(super) fn cast(&self, c: &str) -> Result<String, DataError> {
        let (base, array) = match c.trim().strip_suffix("[]") {
            Some(b) => (b.trim(), "[]"),
            None => (c.trim(), ""),
        };
        let (s, t) = self.schema.cast_type(base).ok_or_else(|| {
            DataError::parse("select parameter", format!("unknown type \"{c}\" in cast"))
        })?;
        Ok(format!("{}{array}", qualified(s, t)))
    }

    pub(super) fn order(
        &mut self,
        terms: &[OrderTerm],
        src: Source<'s>,
        a: &str,
        items: &[SelectItem],
    ) -> Result<String, DataError> {
        if terms.is_empty() {
            return Ok(String::new());
        }
        let mut parts = Vec::new();
        for t in terms {
            let expr = match &t.embed {
                None => self.field(src, a, &t.field)?,
                Some(key) => {
                    // `order=rel(col)`: a many-to-one embed of this level.
                    let e = items
                        .iter()
                        .find_map(|i| match i {
                            SelectItem::Embed(e) if e.key() == key => Some(e),
                            _ => None,
                        })
                        .ok_or_else(|| {
                            DataError::parse(
                                "order",
                                format!("\"{key}\" is not an embedded resource of select="),
                            )
                        })?;
                    let link = self.link(src, e)?;
                    if !link.to_one {
                        return Err(DataError::new(
                            400,
                            "PGRST118",
                            format!("A related order on '{key}' is not possible"),
                        )
                        .details("only many-to-one embeds can be ordered on"));
                    }
                    let ta = self.alias();
                    let col = self.field(Source::of(link.target), &ta, &t.field)?;
                    format!(
                        "(SELECT {col} FROM {} {ta} WHERE {})",
                        qualified(&link.target.schema, &link.target.name),
                        join_sql(&link, a, &ta)
                    )
                }
            };
            let dir = if t.desc { " DESC" } else { " ASC" };
            let nulls = match t.nulls_first {
                Some(true) => " NULLS FIRST",
                Some(false) => " NULLS LAST",
                None => "",
            };
            parts.push(format!("{expr}{dir}{nulls}"));
        }
        Ok(format!(" ORDER BY {}", parts.join(", ")))
    }
}

/// `json_build_object(k1, v1, …)` of (key parameter, value SQL) pairs.
fn build_object(pairs: &[(String, String)]) -> String {
    // json_build_object takes at most 100 arguments; wider objects are concatenated.
    if pairs.is_empty() {
        return "json_build_object()".into();
    }
    let chunks: Vec<String> = pairs
        .chunks(50)
        .map(|c| {
            let args: Vec<String> = c.iter().map(|(k, v)| format!("{k}::text, {v}")).collect();
            format!("json_build_object({})", args.join(", "))
        })
        .collect();
    if chunks.len() == 1 {
        chunks.into_iter().next().unwrap_or_default()
    } else {
        let j: Vec<String> = chunks.into_iter().map(|c| format!("{c}::jsonb")).collect();
        format!("({})::json", j.join(" || "))
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::read;

    #[test]
    fn select_filter_order_snapshot() {
        let s = read("select=id,label:name&id=gt.5&order=name.desc.nullslast&limit=10").unwrap();
        assert_eq!(
            s.sql,
            "SELECT NULL::int8, coalesce(json_agg(_r.j), '[]')::text, count(_r.j) FROM (SELECT json_build_object($1::text, \"_0\".\"id\", $2::text, \"_0\".\"name\") AS j FROM \"public\".\"items\" \"_0\" WHERE (\"_0\".\"id\" > $3) ORDER BY \"_0\".\"name\" DESC NULLS LAST LIMIT $4 OFFSET $5) _r"
        );
        let p: Vec<_> = s.params.iter().map(|p| p.as_deref().unwrap()).collect();
        assert_eq!(p, ["id", "label", "5", "10", "0"]);
    }
}
