//! The shape of what a statement answers: the top-level `SELECT` with its
//! range and count, each level's JSON object (or CSV row), column and JSON-path
//! expressions, casts and `ORDER BY`.

use super::embed::{join_sql, source_sql};
use super::sql::{csv_agg, csv_row, ident, qualified};
use super::{Builder, CountEstimate, Limits, Source, Statement};
use crate::data::error::DataError;
use crate::data::request::{Count, Field, OrderTerm, Query, Request, SelectItem};
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
        let sql = self.root_select(req, src, &a, &from, limits, true)?;
        let estimate = match req.count {
            Some(Count::Planned | Count::Estimated) => {
                Some(self.count_estimate(req, src, &a, &from, limits)?)
            }
            _ => None,
        };
        Ok(Statement {
            sql,
            pk: rel.pk.clone(),
            csv: req.csv,
            estimate,
            ..Default::default()
        })
    }

    /// The statement whose row estimate answers `count=planned|estimated`:
    /// the root's filters over `from`, with parameters of its own.
    fn count_estimate(
        &self,
        req: &Request,
        src: Source<'s>,
        a: &str,
        from: &str,
        limits: &Limits,
    ) -> Result<CountEstimate, DataError> {
        // Its own parameters; aliases continue this statement's (the `from`
        // text names one).
        let mut b = Builder {
            aliases: self.aliases,
            ..Builder::new(self.schema, self.aggregates)
        };
        let root = req.query.root().cloned().unwrap_or_default();
        let conds = b.conditions(&req.query, &root.conditions, src, a, &[])?;
        Ok(CountEstimate {
            sql: format!("SELECT 1 FROM {from}{conds}"),
            params: b.params,
            exact_up_to: (req.count == Some(Count::Estimated)).then_some(limits.max_rows),
            offset: root.offset.unwrap_or(0),
        })
    }

    /// `SELECT total, body, rows FROM (…page…)` over `from` (which binds `a`).
    /// A `count=planned|estimated` is `estimable` on a relation (a
    /// function's rows are counted exactly).
    pub(super) fn root_select(
        &mut self,
        req: &Request,
        src: Source<'s>,
        a: &str,
        from: &str,
        limits: &Limits,
        estimable: bool,
    ) -> Result<String, DataError> {
        let root = req.query.root().cloned().unwrap_or_default();
        let mut pairs = self.pairs(&req.query, &req.query.select, src, a, &[])?;
        let group = group_by(&mut pairs);
        let (obj, csv) = if req.csv {
            (csv_row(&pairs), Some(csv_agg(&pairs, "_r.j")))
        } else if req.geojson {
            (self.feature(pairs)?, None)
        } else {
            (build_object(&pairs), None)
        };
        let conds = self.conditions(&req.query, &root.conditions, src, a, &[])?;
        let order = self.order(&root.order, src, a, &req.query.select)?;
        let limit = root.limit.unwrap_or(limits.max_rows).min(limits.max_rows);
        let range = self.range(Some(limit), root.offset);
        // An aggregated level counts the rows it aggregates, not its groups
        // (PostgREST's count query ignores the GROUP BY).
        let total = match req.count {
            None => "NULL::int8".into(),
            // A relation's planned count is its estimate alone (see `read`);
            // an estimated one is exact up to `max_rows`.
            Some(Count::Planned) if estimable => "NULL::int8".into(),
            Some(Count::Estimated) if estimable => format!(
                "(SELECT count(*) FROM (SELECT 1 FROM {from}{conds}{}) _c)",
                self.range(Some(limits.max_rows + 1), None)
            ),
            Some(_) => format!("(SELECT count(*) FROM {from}{conds})"),
        };
        let group = group.unwrap_or_default();
        let body = match csv {
            _ if req.head => "NULL::text".to_string(),
            Some(csv) => csv,
            None if req.geojson => "json_build_object('type', 'FeatureCollection', 'features', \
                 coalesce(json_agg(_r.j), '[]'))::text"
                .to_string(),
            None if req.strip_nulls => {
                "coalesce(json_agg(json_strip_nulls(_r.j)), '[]')::text".to_string()
            }
            None => "coalesce(json_agg(_r.j), '[]')::text".to_string(),
        };
        Ok(format!(
            "SELECT {total}, {body}, count(_r.j) FROM (SELECT {obj} AS j FROM {from}{conds}{group}{order}{range}) _r"
        ))
    }

    /// `json_build_object(k1, v1, …)` for `items` of level `path` read from `src`
    /// as alias `a`, with the ` GROUP BY …` its aggregates need (see
    /// [`group_by`]).
    pub(super) fn object(
        &mut self,
        q: &Query,
        items: &[SelectItem],
        src: Source<'s>,
        a: &str,
        path: &[String],
    ) -> Result<(String, Option<String>), DataError> {
        let mut pairs = self.pairs(q, items, src, a, path)?;
        let group = group_by(&mut pairs);
        Ok((build_object(&pairs), group))
    }

    /// The keys and values of an object.
    pub(super) fn pairs(
        &mut self,
        q: &Query,
        items: &[SelectItem],
        src: Source<'s>,
        a: &str,
        path: &[String],
    ) -> Result<Vec<Pair>, DataError> {
        let star = [SelectItem::Star];
        let items = if items.is_empty() { &star[..] } else { items };
        let mut pairs = Vec::new();
        for item in items {
            match item {
                SelectItem::Star => {
                    for c in src.columns {
                        let k = self.param(c.name.clone());
                        pairs.push(Pair::column(
                            k,
                            format!("{a}.{}", ident(&c.name)),
                            &c.typname,
                        ));
                    }
                }
                // Legacy `count` (PostgREST before 12) where no column has that name.
                SelectItem::Field {
                    alias,
                    field,
                    cast: None,
                    aggregate: None,
                    ..
                } if field.column == "count"
                    && field.path.is_empty()
                    && src.columns.iter().all(|c| c.name != "count") =>
                {
                    pairs.push(self.count_all(alias, &None)?);
                }
                SelectItem::CountAll { alias, cast } => pairs.push(self.count_all(alias, cast)?),
                SelectItem::Field {
                    alias,
                    field,
                    cast,
                    aggregate,
                    agg_cast,
                } => {
                    let (mut expr, typname) = self.typed_field(src, a, field)?;
                    if let Some(c) = cast {
                        expr = format!("CAST({expr} AS {})", self.cast(c)?);
                    }
                    let default_key = match aggregate {
                        Some(g) => g.name(),
                        None => field.output_name(),
                    };
                    let k = self.param(alias.as_deref().unwrap_or(default_key).to_string());
                    pairs.push(match aggregate {
                        None if field.path.is_empty() && cast.is_none() => {
                            Pair::column(k, expr, typname)
                        }
                        None => Pair::value(k, expr),
                        Some(g) => {
                            self.allow_aggregate()?;
                            let agg = AggSql {
                                func: g.name(),
                                cast: agg_cast.as_deref().map(|c| self.cast(c)).transpose()?,
                            };
                            Pair::aggregate(k, agg, Some(expr))
                        }
                    });
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

    /// A row as a GeoJSON Feature (PostgREST's `application/geo+json`): its
    /// first PostGIS value is the `geometry` (PostGIS's `st_asgeojson`, from
    /// the schema it is installed in), the other values the `properties`.
    /// Without PostGIS the media type is not available (406 PGRST107).
    fn feature(&self, pairs: Vec<Pair>) -> Result<String, DataError> {
        let postgis = self
            .schema
            .postgis
            .as_deref()
            .ok_or_else(|| DataError::media_type("application/geo+json"))?;
        let at = pairs.iter().position(|p| p.geo);
        let mut props = pairs;
        // The geometry's key is not in the output, but its parameter is
        // bound: it stays referenced (a key is never NULL).
        let geometry = match at.map(|i| props.remove(i)) {
            Some(g) => format!(
                "CASE WHEN {}::text IS NULL THEN NULL ELSE {}({})::json END",
                g.key,
                qualified(postgis, "st_asgeojson"),
                g.value
            ),
            None => "NULL::json".into(),
        };
        Ok(format!(
            "json_build_object('type', 'Feature', 'geometry', {geometry}, 'properties', {})",
            build_object(&props)
        ))
    }

    /// PGRST123 unless aggregates are allowed; notes that one was planned.
    fn allow_aggregate(&mut self) -> Result<(), DataError> {
        if !self.aggregates {
            return Err(DataError::aggregates_off());
        }
        self.aggregated = true;
        Ok(())
    }

    /// `count(*)` of the level's rows (or group), keyed `alias` or `count`.
    fn count_all(
        &mut self,
        alias: &Option<String>,
        cast: &Option<String>,
    ) -> Result<Pair, DataError> {
        self.allow_aggregate()?;
        let key = self.param(alias.as_deref().unwrap_or("count").to_string());
        let agg = AggSql {
            func: "count",
            cast: cast.as_deref().map(|c| self.cast(c)).transpose()?,
        };
        Ok(Pair::aggregate(key, agg, None))
    }

    /// SQL of a column with its JSON path.
    pub(super) fn field(
        &mut self,
        src: Source<'s>,
        a: &str,
        f: &Field,
    ) -> Result<String, DataError> {
        Ok(self.typed_field(src, a, f)?.0)
    }

    /// SQL of a column with its JSON path, and the column's `typname` (what
    /// filters and GeoJSON need), resolved once.
    pub(super) fn typed_field(
        &mut self,
        src: Source<'s>,
        a: &str,
        f: &Field,
    ) -> Result<(String, &'s str), DataError> {
        let (mut expr, typname) = self.column(src, a, &f.column)?;
        for step in &f.path {
            let op = if step.text { "->>" } else { "->" };
            let key = self.path_key(&step.key);
            expr = format!("({expr}{op}{key})");
        }
        Ok((expr, typname))
    }

    /// The SQL of column `name` of `src` (aliased `a`) and its `typname`; a
    /// name that is no column may be a computed field of `src`'s relation
    /// (PostgREST: a function taking the row, `full_name(people)`), called
    /// with the whole row.
    pub(super) fn column(
        &self,
        src: Source<'s>,
        a: &str,
        name: &str,
    ) -> Result<(String, &'s str), DataError> {
        match src.column(name) {
            Ok(c) => Ok((format!("{a}.{}", ident(&c.name)), &c.typname)),
            Err(e) => match src.rel.and_then(|r| self.schema.computed_field(r, name)) {
                Some(f) => Ok((
                    format!("{}({a})", qualified(&f.schema, &f.name)),
                    &f.ret_typname,
                )),
                None => Err(e),
            },
        }
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
                        return Err(DataError::related_order(src.label, &e.name));
                    }
                    let ta = self.alias();
                    let col = self.field(Source::of(link.target), &ta, &t.field)?;
                    format!(
                        "(SELECT {col} FROM {} WHERE {})",
                        source_sql(&link, a, &ta),
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

/// One key of an object: the key's bind parameter and the value's SQL; for
/// an aggregate also how it was built, so that a to-one spread can hoist it
/// into its parent (PostgREST's "aggregates in to-one spreads").
pub(super) struct Pair {
    /// `$n` holding the key.
    pub(super) key: String,
    /// The value's SQL.
    pub(super) value: String,
    /// The aggregate and its argument (`None`: `count(*)`).
    pub(super) agg: Option<(AggSql, Option<String>)>,
    /// An embedded resource (JSON): a grouped level compares it as jsonb.
    pub(super) embed: bool,
    /// A PostGIS `geometry` or `geography` value (GeoJSON's `geometry`).
    pub(super) geo: bool,
}

impl Pair {
    /// A plain (grouping) value.
    pub(super) fn value(key: String, value: String) -> Pair {
        Pair {
            key,
            value,
            agg: None,
            embed: false,
            geo: false,
        }
    }

    /// An aggregate of `arg` (`None`: `count(*)`), kept apart so a to-one
    /// spread can hoist it.
    pub(super) fn aggregate(key: String, agg: AggSql, arg: Option<String>) -> Pair {
        Pair {
            value: agg.apply(arg.as_deref()),
            agg: Some((agg, arg)),
            ..Pair::value(key, String::new())
        }
    }

    /// A column's value, marked when its type is PostGIS's.
    fn column(key: String, value: String, typname: &str) -> Pair {
        Pair {
            geo: matches!(typname, "geometry" | "geography"),
            ..Pair::value(key, value)
        }
    }
}

/// An aggregate call: the function (from the closed [`Aggregate`] set) and
/// the cast of its result (a type from the schema cache).
///
/// [`Aggregate`]: crate::data::request::Aggregate
pub(super) struct AggSql {
    func: &'static str,
    cast: Option<String>,
}

impl AggSql {
    /// `func(arg)` (`func(*)` without one), cast when asked.
    pub(super) fn apply(&self, arg: Option<&str>) -> String {
        let call = format!("{}({})", self.func, arg.unwrap_or("*"));
        match &self.cast {
            Some(t) => format!("CAST({call} AS {t})"),
            None => call,
        }
    }
}

/// PostgREST's automatic `GROUP BY`: a level with an aggregate is grouped by
/// every other value it selects (columns, to-one spreads, embedded resources —
/// those compared as jsonb, as json has no equality). `None` when the level has
/// no aggregate; `Some("")` when it is aggregated whole (one row).
pub(super) fn group_by(pairs: &mut [Pair]) -> Option<String> {
    if pairs.iter().all(|p| p.agg.is_none()) {
        return None;
    }
    let mut keys = Vec::new();
    for p in pairs.iter_mut().filter(|p| p.agg.is_none()) {
        if p.embed {
            p.value = format!("({})::jsonb", p.value);
        }
        keys.push(p.value.clone());
    }
    Some(if keys.is_empty() {
        String::new()
    } else {
        format!(" GROUP BY {}", keys.join(", "))
    })
}

/// `json_build_object(k1, v1, …)` of an object's pairs.
pub(super) fn build_object(pairs: &[Pair]) -> String {
    // json_build_object takes at most 100 arguments; wider objects are concatenated.
    if pairs.is_empty() {
        return "json_build_object()".into();
    }
    let chunks: Vec<String> = pairs
        .chunks(50)
        .map(|c| {
            let args: Vec<String> = c
                .iter()
                .map(|p| format!("{}::text, {}", p.key, p.value))
                .collect();
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
            "SELECT NULL::int8, coalesce(json_agg(_r.j), '[]')::text, count(_r.j) FROM (SELECT json_build_object($1::text, \"_0\".\"id\", $2::text, \"_0\".\"name\") AS j FROM \"public\".\"items\" \"_0\" WHERE (\"_0\".\"id\" > $3) ORDER BY \"_0\".\"name\" DESC NULLS LAST LIMIT 10) _r"
        );
        let p: Vec<_> = s.params.iter().map(|p| p.as_deref().unwrap()).collect();
        assert_eq!(p, ["id", "label", "5"]);
        // An offset stays a parameter (pages differ per request).
        let s = read("select=id&limit=10&offset=20").unwrap();
        assert!(s.sql.ends_with(" LIMIT 10 OFFSET $2) _r"), "{}", s.sql);
        assert_eq!(s.params.last().unwrap().as_deref(), Some("20"));
    }

    #[test]
    fn aggregates_group_by_the_other_values_with_the_same_text() {
        let s = read("select=name,total:id.sum()::int,count()").unwrap();
        assert!(s.aggregate);
        assert!(
            s.sql.contains("json_build_object($1::text, \"_0\".\"name\", $2::text, CAST(sum(\"_0\".\"id\") AS \"pg_catalog\".\"int4\"), $3::text, count(*)) AS j FROM \"public\".\"items\" \"_0\" GROUP BY \"_0\".\"name\" LIMIT"),
            "{}",
            s.sql
        );
        // A JSON path is grouped by its own text (same parameters), so
        // PostgreSQL sees the select and GROUP BY expressions as equal.
        let s = read("select=data->>k,count()").unwrap();
        assert!(
            s.sql.contains("GROUP BY (\"_0\".\"data\"->>$1::text)"),
            "{}",
            s.sql
        );
        // Without other values: one row, no GROUP BY.
        let s = read("select=count()").unwrap();
        assert!(!s.sql.contains("GROUP BY"), "{}", s.sql);
        // No aggregate: no guard.
        assert!(!read("select=name").unwrap().aggregate);
        // Grouped by a to-one embed, compared as jsonb.
        let s = read("select=id.max(),authors(name)").unwrap();
        assert!(
            s.sql.contains(")::jsonb LIMIT") || s.sql.contains("GROUP BY ((SELECT"),
            "{}",
            s.sql
        );
    }

    #[test]
    fn computed_fields_are_called_with_the_row() {
        let s = read("select=id,label&label=eq.x&order=label").unwrap();
        assert!(s.sql.contains("\"public\".\"label\"(\"_0\")"), "{}", s.sql);
        assert!(
            s.sql.contains("WHERE (\"public\".\"label\"(\"_0\") = $3)"),
            "{}",
            s.sql
        );
        assert!(
            s.sql.contains("ORDER BY \"public\".\"label\"(\"_0\") ASC"),
            "{}",
            s.sql
        );
        // Not in `*`; not a column for other names.
        assert!(!read("select=*").unwrap().sql.contains("\"label\"("));
        assert_eq!(read("select=labels").unwrap_err().code, "42703");
    }
}
