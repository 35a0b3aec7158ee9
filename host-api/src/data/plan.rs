//! Request + schema cache → ONE SQL statement with bind parameters.
//!
//! Every identifier written here comes from a schema-cache entry and is quoted
//! by [`ident`]; every value a client sent is a `$n` parameter (sent in text
//! format, typed by PostgreSQL from its context). JSON keys are parameters too,
//! so the statement text depends only on the request's shape, and PostgreSQL
//! builds the whole response body (`json_build_object` / `json_agg`).
//!
//! Every statement returns one row: `(total int8, body text, rows int8)`, and
//! merging upserts a fourth column, `inserted int8`.

use super::error::DataError;
use super::request::*;
use super::schema::{Column, ForeignKey, Function, RelKind, Relation, Returns, Schema};
use std::fmt::Write;

/// A planned statement: SQL text and its parameters (text format; `None` is NULL).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Statement {
    /// The SQL.
    pub sql: String,
    /// Parameter values in `$1..$n` order.
    pub params: Vec<Option<String>>,
    /// The response must be exactly one row (single object), checked before commit.
    pub single: bool,
    /// A scalar function result: the body is the value itself, not an array.
    pub scalar: bool,
    /// Primary-key columns of the written relation (for `Location`).
    pub pk: Vec<String>,
    /// A `void` function: no body (204).
    pub void: bool,
    /// A function returning one composite row (not `SETOF`): the body is sent
    /// as that object, or `null` when filters removed it, without the 406 a
    /// single-object `Accept` would give.
    pub object: bool,
    /// The body is CSV text (`Accept: text/csv`), built by PostgreSQL.
    pub csv: bool,
    /// `Prefer: handling=strict, max-affected=N`: more rows is an error (rolled back).
    pub max_affected: Option<i64>,
    /// `Prefer: tx=rollback`: run, answer, and roll back.
    pub rollback: bool,
}

/// Limits the planner enforces.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most rows a read returns (PostgREST's `db-max-rows`).
    pub max_rows: i64,
    /// Allow PATCH/DELETE without any filter.
    pub allow_unfiltered_writes: bool,
}

/// Quotes an identifier taken from the schema cache.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn qualified(schema: &str, name: &str) -> String {
    format!("{}.{}", ident(schema), ident(name))
}

/// Builds the statement for `req`.
pub fn plan(schema: &Schema, req: &Request, limits: &Limits) -> Result<Statement, DataError> {
    check_levels(&req.query)?;
    let mut b = Builder {
        schema,
        params: Vec::new(),
        aliases: 0,
    };
    let mut stmt = match &req.action {
        Action::Call { function } => b.call(req, function, limits)?,
        _ => {
            let rel = schema
                .relation(&req.schema, &req.relation)
                .ok_or_else(|| DataError::no_table(&req.schema, &req.relation))?;
            match &req.action {
                Action::Read => b.read(req, rel, limits)?,
                _ => b.write(req, rel, limits)?,
            }
        }
    };
    stmt.params = b.params;
    stmt.single = stmt.single || req.single;
    stmt.max_affected = req.max_affected;
    stmt.rollback = req.rollback;
    Ok(stmt)
}

/// What a level of the query reads from: a relation or a function's rows.
#[derive(Clone, Copy)]
struct Source<'s> {
    /// Columns visible at this level.
    columns: &'s [Column],
    /// The relation, when embedding through its foreign keys is possible.
    rel: Option<&'s Relation>,
    /// Name for messages.
    label: &'s str,
}

impl<'s> Source<'s> {
    fn of(rel: &'s Relation) -> Source<'s> {
        Source {
            columns: &rel.columns,
            rel: Some(rel),
            label: &rel.name,
        }
    }

    fn column(&self, name: &str) -> Result<&'s Column, DataError> {
        self.columns.iter().find(|c| c.name == name).ok_or_else(|| {
            DataError::new(
                400,
                "42703",
                format!("column {}.{name} does not exist", self.label),
            )
        })
    }

    /// A column named in a write's body, `columns=` or `on_conflict=`.
    fn write_column(&self, name: &str) -> Result<&'s Column, DataError> {
        self.columns
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| DataError::no_column(self.label, name))
    }
}

/// A resolved relationship between a parent level and an embedded relation.
struct Link<'s> {
    target: &'s Relation,
    /// (parent column, target column) pairs (empty when `junction` is set).
    pairs: Vec<(String, String)>,
    /// The target has at most one row per parent (many-to-one).
    to_one: bool,
    /// Many-to-many: the junction relation, (parent col, junction col) and
    /// (junction col, target col) pairs.
    junction: Option<Junction<'s>>,
}

/// A junction table joining two relations (many-to-many embedding).
struct Junction<'s> {
    rel: &'s Relation,
    parent_pairs: Vec<(String, String)>,
    target_pairs: Vec<(String, String)>,
}

struct Builder<'s> {
    schema: &'s Schema,
    params: Vec<Option<String>>,
    aliases: usize,
}

impl<'s> Builder<'s> {
    fn param(&mut self, v: impl Into<String>) -> String {
        self.params.push(Some(v.into()));
        format!("${}", self.params.len())
    }

    fn alias(&mut self) -> String {
        let a = format!("\"_{}\"", self.aliases);
        self.aliases += 1;
        a
    }

    // ---- reads -------------------------------------------------------------

    fn read(
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
    fn root_select(
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
    fn object(
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
    fn pairs(
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
                SelectItem::Embed(e) => {
                    let link = self.link(src, e)?;
                    let mut sub = path.to_vec();
                    sub.push(e.key().to_string());
                    let ta = self.alias();
                    let tsrc = Source::of(link.target);
                    let mods = q.levels.get(&sub).cloned().unwrap_or_default();
                    let join = join_sql(&link, a, &ta);
                    let from =
                        format!("{} {ta}", qualified(&link.target.schema, &link.target.name));
                    if e.spread {
                        if !link.to_one {
                            return Err(DataError::new(
                                400,
                                "PGRST119",
                                format!("A spread operation on '{}' is not possible", e.name),
                            )
                            .details("'...' works on many-to-one relationships only"));
                        }
                        let conds = self.conditions(q, &mods.conditions, tsrc, &ta, &sub)?;
                        for (k, v) in self.pairs(q, &e.select, tsrc, &ta, &sub)? {
                            pairs.push((
                                k,
                                format!(
                                    "(SELECT {v} FROM {from} WHERE {join}{})",
                                    and_more(&conds)
                                ),
                            ));
                        }
                        continue;
                    }
                    let obj = self.object(q, &e.select, tsrc, &ta, &sub)?;
                    let conds = self.conditions(q, &mods.conditions, tsrc, &ta, &sub)?;
                    let k = self.param(e.key().to_string());
                    let value = if link.to_one {
                        format!(
                            "(SELECT {obj} FROM {from} WHERE {join}{})",
                            and_more(&conds)
                        )
                    } else {
                        let order = self.order(&mods.order, tsrc, &ta, &e.select)?;
                        let mut range = String::new();
                        if let Some(l) = mods.limit {
                            range.push_str(&format!(" LIMIT {}", self.param(l.to_string())));
                        }
                        if let Some(o) = mods.offset {
                            range.push_str(&format!(" OFFSET {}", self.param(o.to_string())));
                        }
                        format!(
                            "(SELECT coalesce(json_agg(_e.j), '[]') FROM (SELECT {obj} AS j FROM {from} WHERE {join}{}{order}{range}) _e)",
                            and_more(&conds)
                        )
                    };
                    pairs.push((k, value));
                }
            }
        }
        Ok(pairs)
    }

    /// SQL of a column with its JSON path.
    fn field(&mut self, src: Source<'s>, a: &str, f: &Field) -> Result<String, DataError> {
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

    fn cast(&self, c: &str) -> Result<String, DataError> {
        let (base, array) = match c.trim().strip_suffix("[]") {
            Some(b) => (b.trim(), "[]"),
            None => (c.trim(), ""),
        };
        let (s, t) = self.schema.cast_type(base).ok_or_else(|| {
            DataError::parse("select parameter", format!("unknown type \"{c}\" in cast"))
        })?;
        Ok(format!("{}{array}", qualified(s, t)))
    }

    /// Finds the foreign key an embed goes through.
    fn link(&self, src: Source<'s>, e: &Embed) -> Result<Link<'s>, DataError> {
        let parent = src.rel.ok_or_else(|| {
            DataError::new(
                400,
                "PGRST200",
                format!("Could not find a relationship for '{}'", e.name),
            )
        })?;
        let pkey = (parent.schema.clone(), parent.name.clone());
        let mut found: Vec<(&ForeignKey, bool)> = Vec::new();
        for fk in &self.schema.fks {
            // many-to-one: parent references target (or the embed names the fk column/constraint)
            let hint_ok = |fk: &ForeignKey, col_side: &[String]| match &e.hint {
                None => true,
                Some(h) => fk.name == *h || (col_side.len() == 1 && col_side[0] == *h),
            };
            if fk.from == pkey {
                let target_named = fk.to.1 == e.name && fk.to.0 == parent.schema;
                let by_column = e.hint.is_none()
                    && (fk.name == e.name
                        || (fk.from_cols.len() == 1 && fk.from_cols[0] == e.name));
                if (target_named && hint_ok(fk, &fk.from_cols)) || by_column {
                    found.push((fk, true));
                }
            }
            if fk.to == pkey
                && fk.from.1 == e.name
                && fk.from.0 == parent.schema
                && hint_ok(fk, &fk.from_cols)
            {
                found.push((fk, false));
            }
        }
        found.dedup_by(|x, y| std::ptr::eq(x.0, y.0) && x.1 == y.1);
        if found.is_empty() {
            if let Some(link) = self.many_to_many(parent, e)? {
                return Ok(link);
            }
        }
        match found.len() {
            0 => Err(DataError::new(
                400,
                "PGRST200",
                format!(
                    "Could not find a relationship between '{}' and '{}' in the schema cache",
                    parent.name, e.name
                ),
            )
            .hint("Embedding follows foreign keys between relations of exposed schemas; check the name, or add a !hint")),
            1 => {
                let (fk, to_one) = found[0];
                let (tschema, tname) = if to_one { &fk.to } else { &fk.from };
                let target = self
                    .schema
                    .relation(tschema, tname)
                    .ok_or_else(|| DataError::no_table(tschema, tname))?;
                let pairs = if to_one {
                    fk.from_cols.iter().cloned().zip(fk.to_cols.iter().cloned()).collect()
                } else {
                    fk.to_cols.iter().cloned().zip(fk.from_cols.iter().cloned()).collect()
                };
                Ok(Link {
                    target,
                    pairs,
                    to_one,
                    junction: None,
                })
            }
            _ => Err(DataError::new(
                300,
                "PGRST201",
                format!("Could not embed because more than one relationship was found for '{}' and '{}'", parent.name, e.name),
            )
            .details(found.iter().map(|(fk, _)| fk.name.as_str()).collect::<Vec<_>>().join(", "))
            .hint(format!("Try changing '{}' to one of the above, as '{}!<constraint>'", e.name, e.name))),
        }
    }

    /// Many-to-many through a junction relation that has a foreign key to the
    /// parent and one to the target (`!hint` may name the junction).
    fn many_to_many(&self, parent: &'s Relation, e: &Embed) -> Result<Option<Link<'s>>, DataError> {
        let pkey = (parent.schema.clone(), parent.name.clone());
        let mut found = Vec::new();
        for to_parent in self.schema.fks.iter().filter(|fk| fk.to == pkey) {
            for to_target in self.schema.fks.iter().filter(|fk| {
                fk.from == to_parent.from
                    && fk.name != to_parent.name
                    && fk.to.1 == e.name
                    && fk.to.0 == parent.schema
            }) {
                if let Some(h) = &e.hint {
                    if to_parent.from.1 != *h && to_target.name != *h {
                        continue;
                    }
                }
                found.push((to_parent, to_target));
            }
        }
        match found.len() {
            0 => Ok(None),
            1 => {
                let (tp, tt) = found[0];
                let rel = self
                    .schema
                    .relation(&tp.from.0, &tp.from.1)
                    .ok_or_else(|| DataError::no_table(&tp.from.0, &tp.from.1))?;
                let target = self
                    .schema
                    .relation(&tt.to.0, &tt.to.1)
                    .ok_or_else(|| DataError::no_table(&tt.to.0, &tt.to.1))?;
                Ok(Some(Link {
                    target,
                    pairs: Vec::new(),
                    to_one: false,
                    junction: Some(Junction {
                        rel,
                        parent_pairs: tp.to_cols.iter().cloned().zip(tp.from_cols.iter().cloned()).collect(),
                        target_pairs: tt.from_cols.iter().cloned().zip(tt.to_cols.iter().cloned()).collect(),
                    }),
                }))
            }
            _ => Err(DataError::new(
                300,
                "PGRST201",
                format!(
                    "Could not embed because more than one relationship was found for '{}' and '{}'",
                    parent.name, e.name
                ),
            )
            .details(found.iter().map(|(a, _)| a.from.1.as_str()).collect::<Vec<_>>().join(", "))
            .hint(format!("Name the junction table: '{}!<junction>'", e.name))),
        }
    }

    /// ` WHERE …` for a level (empty string when there is nothing to filter),
    /// including `EXISTS` for its `!inner` embeds.
    fn conditions(
        &mut self,
        q: &Query,
        conds: &[Condition],
        src: Source<'s>,
        a: &str,
        path: &[String],
    ) -> Result<String, DataError> {
        let items = if path.is_empty() {
            &q.select
        } else {
            match find_embed(&q.select, path) {
                Some(e) => &e.select,
                None => return Err(unknown_level(path)),
            }
        };
        let mut parts = Vec::new();
        for c in conds {
            // `rel=is.null` / `rel=not.is.null`: parents without / with a match.
            if let Condition::Filter(f) = c {
                let embed = items.iter().find_map(|i| match i {
                    SelectItem::Embed(e)
                        if f.field.path.is_empty() && e.key() == f.field.column =>
                    {
                        Some(e)
                    }
                    _ => None,
                });
                if let (Some(e), Operand::Is(v)) = (embed, &f.operand) {
                    let exists = match (v, f.negate) {
                        (IsValue::Null, true) | (IsValue::NotNull, false) => true,
                        (IsValue::Null, false) | (IsValue::NotNull, true) => false,
                        _ => return Err(DataError::parse("filter", format!("an embedded resource can only be filtered with is.null or not.is.null: \"{}\"", e.key()))),
                    };
                    let cond = self.exists(q, e, src, a, path)?;
                    parts.push(if exists { cond } else { format!("NOT {cond}") });
                    continue;
                }
            }
            parts.push(self.condition(c, src, a)?);
        }
        for item in items {
            if let SelectItem::Embed(e) = item {
                if e.join == JoinKind::Inner {
                    let cond = self.exists(q, e, src, a, path)?;
                    parts.push(cond);
                }
            }
        }
        if parts.is_empty() {
            Ok(String::new())
        } else {
            Ok(format!(" WHERE {}", parts.join(" AND ")))
        }
    }

    /// `EXISTS (…)`: the parent row has a match in embed `e` (with its filters).
    fn exists(
        &mut self,
        q: &Query,
        e: &Embed,
        src: Source<'s>,
        a: &str,
        path: &[String],
    ) -> Result<String, DataError> {
        let link = self.link(src, e)?;
        let mut sub = path.to_vec();
        sub.push(e.key().to_string());
        let ta = self.alias();
        let tsrc = Source::of(link.target);
        let mods = q.levels.get(&sub).cloned().unwrap_or_default();
        let inner = self.conditions(q, &mods.conditions, tsrc, &ta, &sub)?;
        Ok(format!(
            "EXISTS (SELECT 1 FROM {} {ta} WHERE {}{})",
            qualified(&link.target.schema, &link.target.name),
            join_sql(&link, a, &ta),
            and_more(&inner)
        ))
    }

    fn condition(&mut self, c: &Condition, src: Source<'s>, a: &str) -> Result<String, DataError> {
        match c {
            Condition::Filter(f) => self.filter(f, src, a),
            Condition::And(neg, items) | Condition::Or(neg, items) => {
                let joiner = if matches!(c, Condition::And(..)) {
                    " AND "
                } else {
                    " OR "
                };
                let mut parts = Vec::new();
                for i in items {
                    parts.push(self.condition(i, src, a)?);
                }
                let body = if parts.is_empty() {
                    (if joiner == " AND " { "true" } else { "false" }).to_string()
                } else {
                    parts.join(joiner)
                };
                Ok(if *neg {
                    format!("NOT ({body})")
                } else {
                    format!("({body})")
                })
            }
        }
    }

    fn filter(&mut self, f: &Filter, src: Source<'s>, a: &str) -> Result<String, DataError> {
        let col = src.column(&f.field.column)?;
        let expr = self.field(src, a, &f.field)?;
        let quant = match f.quantifier {
            Some(Quantifier::Any) => Some("ANY"),
            Some(Quantifier::All) => Some("ALL"),
            None => None,
        };
        let value = |b: &mut Self| -> Result<String, DataError> {
            match &f.operand {
                Operand::Value(v) => {
                    let p = b.param(v.clone());
                    Ok(match quant {
                        Some(q) => format!("{q}({p})"),
                        None => p,
                    })
                }
                _ => Err(DataError::parse("filter", "operator needs a single value")),
            }
        };
        let sql = match f.op {
            Op::Eq => format!("{expr} = {}", value(self)?),
            Op::Neq => format!("{expr} <> {}", value(self)?),
            Op::Gt => format!("{expr} > {}", value(self)?),
            Op::Gte => format!("{expr} >= {}", value(self)?),
            Op::Lt => format!("{expr} < {}", value(self)?),
            Op::Lte => format!("{expr} <= {}", value(self)?),
            Op::Like | Op::Ilike => {
                let v = match &f.operand {
                    Operand::Value(v) => v.replace('*', "%"),
                    _ => return Err(DataError::parse("filter", "like needs a value")),
                };
                let op = if f.op == Op::Like { "LIKE" } else { "ILIKE" };
                let p = self.param(v);
                match quant {
                    Some(q) => format!("{expr} {op} {q}({p})"),
                    None => format!("{expr} {op} {p}"),
                }
            }
            Op::Match => format!("{expr} ~ {}", value(self)?),
            Op::Imatch => format!("{expr} ~* {}", value(self)?),
            Op::IsDistinct => format!("{expr} IS DISTINCT FROM {}", value(self)?),
            Op::Cs => format!("{expr} @> {}", value(self)?),
            Op::Cd => format!("{expr} <@ {}", value(self)?),
            Op::Ov => {
                let v = match &f.operand {
                    // `ov.(a,b)` is accepted for arrays as `{a,b}`.
                    Operand::Value(v)
                        if v.starts_with('(')
                            && v.ends_with(')')
                            && col.typname.starts_with('_') =>
                    {
                        format!("{{{}}}", &v[1..v.len() - 1])
                    }
                    Operand::Value(v) => v.clone(),
                    _ => return Err(DataError::parse("filter", "ov needs a value")),
                };
                format!("{expr} && {}", self.param(v))
            }
            Op::Sl => format!("{expr} << {}", value(self)?),
            Op::Sr => format!("{expr} >> {}", value(self)?),
            // PostgREST: nxr ("does not extend to the right") is `&<`, nxl is `&>`.
            Op::Nxr => format!("{expr} &< {}", value(self)?),
            Op::Nxl => format!("{expr} &> {}", value(self)?),
            Op::Adj => format!("{expr} -|- {}", value(self)?),
            Op::In => match &f.operand {
                Operand::List(items) => {
                    format!("{expr} = ANY({})", self.param(array_literal(items)))
                }
                _ => return Err(DataError::parse("filter", "in. needs a list")),
            },
            Op::Is => match &f.operand {
                Operand::Is(v) => format!(
                    "{expr} {}",
                    match v {
                        IsValue::Null => "IS NULL",
                        IsValue::NotNull => "IS NOT NULL",
                        IsValue::True => "IS TRUE",
                        IsValue::False => "IS FALSE",
                        IsValue::Unknown => "IS UNKNOWN",
                    }
                ),
                _ => {
                    return Err(DataError::parse(
                        "filter",
                        "is. needs null/true/false/unknown",
                    ))
                }
            },
            Op::Fts | Op::Plfts | Op::Phfts | Op::Wfts => {
                let func = match f.op {
                    Op::Fts => "to_tsquery",
                    Op::Plfts => "plainto_tsquery",
                    Op::Phfts => "phraseto_tsquery",
                    _ => "websearch_to_tsquery",
                };
                let cfg = f
                    .config
                    .clone()
                    .map(|c| format!("{}::regconfig, ", self.param(c)));
                let cfg = cfg.unwrap_or_default();
                let doc = if col.typname == "tsvector" && f.field.path.is_empty() {
                    expr.clone()
                } else {
                    format!("to_tsvector({cfg}{expr}::text)")
                };
                let v = value(self)?;
                format!("{doc} @@ {func}({cfg}{v})")
            }
        };
        Ok(if f.negate {
            format!("NOT ({sql})")
        } else {
            format!("({sql})")
        })
    }

    fn order(
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

    // ---- writes ------------------------------------------------------------

    fn write(
        &mut self,
        req: &Request,
        rel: &'s Relation,
        limits: &Limits,
    ) -> Result<Statement, DataError> {
        let target = qualified(&rel.schema, &rel.name);
        let w = self.alias();
        let cte = match &req.action {
            Action::Insert {
                resolution,
                on_conflict,
                columns,
                missing_default,
            } => {
                let body = req.body.as_deref().ok_or_else(|| {
                    DataError::body("a JSON object or array of objects is required")
                })?;
                let parsed: serde_json::Value = serde_json::from_str(body)
                    .map_err(|e| DataError::body(format!("the body is not JSON: {e}")))?;
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
                let _ = write!(sql, " RETURNING {w}.*");
                sql
            }
            Action::Update => {
                let body = req
                    .body
                    .as_deref()
                    .ok_or_else(|| DataError::body("a JSON object is required"))?;
                let parsed: serde_json::Value = serde_json::from_str(body)
                    .map_err(|e| DataError::body(format!("the body is not JSON: {e}")))?;
                let obj = parsed
                    .as_object()
                    .ok_or_else(|| DataError::body("PATCH takes one JSON object"))?;
                let root = req.query.root().cloned().unwrap_or_default();
                let conds =
                    self.conditions(&req.query, &root.conditions, Source::of(rel), &w, &[])?;
                if conds.is_empty() && !limits.allow_unfiltered_writes {
                    return Err(unfiltered("UPDATE"));
                }
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
                    "UPDATE {target} AS {w} SET {} FROM jsonb_populate_record(NULL::{target}, {json}::jsonb) _p{conds} RETURNING {w}.*",
                    sets.join(", ")
                )
            }
            Action::Delete => {
                let root = req.query.root().cloned().unwrap_or_default();
                let conds =
                    self.conditions(&req.query, &root.conditions, Source::of(rel), &w, &[])?;
                if conds.is_empty() && !limits.allow_unfiltered_writes {
                    return Err(unfiltered("DELETE"));
                }
                format!("DELETE FROM {target} AS {w}{conds} RETURNING {w}.*")
            }
            _ => unreachable!("reads and calls are planned elsewhere"),
        };
        let a = self.alias();
        let src = Source::of(rel);
        // What the written rows must give back: with nothing to return, `RETURNING 1`
        // keeps SELECT policies out of a write-only table's inserts (as PostgREST).
        let needs_rows = match req.returning {
            Return::Representation => true,
            Return::HeadersOnly => !rel.pk.is_empty(),
            Return::Minimal => false,
        };
        let mut cte = if needs_rows {
            cte
        } else {
            cte.replace(&format!(" RETURNING {w}.*"), " RETURNING 1")
        };
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
        let body = match req.returning {
            Return::Representation if req.csv => {
                let pairs = self.pairs(&req.query, &req.query.select, src, &a, &[])?;
                format!(
                    "(SELECT {} FROM (SELECT {} AS j FROM _w {a}) _c)",
                    csv_agg(&pairs, "_c.j"),
                    csv_row(&pairs)
                )
            }
            Return::Representation => {
                let obj = self.object(&req.query, &req.query.select, src, &a, &[])?;
                format!("(SELECT coalesce(json_agg({obj}), '[]')::text FROM _w {a})")
            }
            Return::HeadersOnly if !rel.pk.is_empty() => {
                let items: Vec<SelectItem> = rel
                    .pk
                    .iter()
                    .map(|k| SelectItem::Field {
                        alias: None,
                        field: Field::col(k),
                        cast: None,
                    })
                    .collect();
                let obj = self.object(&req.query, &items, src, &a, &[])?;
                format!("(SELECT coalesce(json_agg({obj}), '[]')::text FROM _w {a})")
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

    // ---- calls -------------------------------------------------------------

    fn call(&mut self, req: &Request, name: &str, limits: &Limits) -> Result<Statement, DataError> {
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
                let sql = self.root_select(req, src, &a, &from, limits)?;
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

/// `ROW(v1, …)`: an object's values as a record, whose text form is a CSV line
/// once its parentheses are removed (PostgreSQL's own quoting, as PostgREST's
/// CSV: fields with quotes, commas, spaces, parentheses or backslashes are
/// double-quoted with `"` and `\` doubled; NULL is empty; values keep their
/// text output, such as `t`, `{1,2}` or jsonb's `{"a": 1}`).
fn csv_row(pairs: &[(String, String)]) -> String {
    let values: Vec<&str> = pairs.iter().map(|(_, v)| v.as_str()).collect();
    format!("ROW({})", values.join(", "))
}

/// The CSV text of rows `j` (each a [`csv_row`]): the keys as a header line
/// (empty when there is no row), a line break, then one line per row.
fn csv_agg(pairs: &[(String, String)], j: &str) -> String {
    let keys: Vec<String> = pairs.iter().map(|(k, _)| format!("{k}::text")).collect();
    format!(
        "CASE WHEN count({j}) > 0 THEN array_to_string(ARRAY[{}]::text[], ',') ELSE '' END \
         || E'\\n' || coalesce(string_agg(substring({j}::text, 2, length({j}::text) - 2), E'\\n'), '')",
        keys.join(", ")
    )
}

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

fn join_sql(link: &Link<'_>, parent: &str, target: &str) -> String {
    if let Some(j) = &link.junction {
        let on_parent = j
            .parent_pairs
            .iter()
            .map(|(p, jc)| format!("_j.{} = {parent}.{}", ident(jc), ident(p)));
        let on_target = j
            .target_pairs
            .iter()
            .map(|(jc, t)| format!("_j.{} = {target}.{}", ident(jc), ident(t)));
        let conds: Vec<String> = on_parent.chain(on_target).collect();
        return format!(
            "EXISTS (SELECT 1 FROM {} _j WHERE {})",
            qualified(&j.rel.schema, &j.rel.name),
            conds.join(" AND ")
        );
    }
    link.pairs
        .iter()
        .map(|(p, t)| format!("{target}.{} = {parent}.{}", ident(t), ident(p)))
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// `" AND …"` from a ` WHERE …` clause (or nothing).
fn and_more(conds: &str) -> String {
    match conds.strip_prefix(" WHERE ") {
        Some(c) => format!(" AND {c}"),
        None => String::new(),
    }
}

fn find_embed<'q>(items: &'q [SelectItem], path: &[String]) -> Option<&'q Embed> {
    let (first, rest) = path.split_first()?;
    let e = items.iter().find_map(|i| match i {
        SelectItem::Embed(e) if e.key() == first => Some(e),
        _ => None,
    })?;
    if rest.is_empty() {
        Some(e)
    } else {
        find_embed(&e.select, rest)
    }
}

fn unknown_level(path: &[String]) -> DataError {
    DataError::parse(
        "query",
        format!(
            "\"{}\" is not an embedded resource of select=",
            path.join(".")
        ),
    )
}

/// Refuses a PATCH/DELETE without filters, as pg-safeupdate does for PostgREST.
fn unfiltered(what: &str) -> DataError {
    DataError::new(400, "21000", format!("{what} requires a WHERE clause")).hint(
        "Add a filter (e.g. id=eq.1); a filter that matches every row (id=not.is.null) is allowed",
    )
}

/// Checks that filters and modifiers only name levels that exist in `select=`.
pub fn check_levels(q: &Query) -> Result<(), DataError> {
    for path in q.levels.keys() {
        if !path.is_empty() && find_embed(&q.select, path).is_none() {
            return Err(unknown_level(path));
        }
    }
    Ok(())
}

/// `{"a","b\"c"}`: a PostgreSQL array literal of text items.
fn array_literal(items: &[String]) -> String {
    let quoted: Vec<String> = items
        .iter()
        .map(|i| format!("\"{}\"", i.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!("{{{}}}", quoted.join(","))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::parse::parse_query;
    use crate::data::schema::{Column, RelKind};

    fn col(name: &str, typname: &str) -> Column {
        Column {
            name: name.into(),
            type_sql: typname.into(),
            typname: typname.into(),
            nullable: true,
            default: None,
            generated: false,
        }
    }

    fn schema() -> Schema {
        let rel = |name: &str, cols: Vec<Column>| Relation {
            schema: "public".into(),
            name: name.into(),
            kind: RelKind::Table,
            columns: cols,
            pk: vec!["id".into()],
            comment: None,
        };
        Schema::from_parts(
            vec!["public".into()],
            vec![
                rel(
                    "items",
                    vec![
                        col("id", "int8"),
                        col("name", "text"),
                        col("data", "jsonb"),
                        col("author_id", "int8"),
                    ],
                ),
                rel("authors", vec![col("id", "int8"), col("name", "text")]),
            ],
            vec![ForeignKey {
                name: "items_author_id_fkey".into(),
                from: ("public".into(), "items".into()),
                from_cols: vec!["author_id".into()],
                to: ("public".into(), "authors".into()),
                to_cols: vec!["id".into()],
            }],
            vec![],
            &[("pg_catalog", "text"), ("pg_catalog", "int4")],
        )
    }

    fn read(qs: &str) -> Result<Statement, DataError> {
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(qs.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let req = Request {
            schema: "public".into(),
            relation: "items".into(),
            action: Action::Read,
            query: parse_query(&pairs)?,
            body: None,
            count: None,
            returning: Return::Minimal,
            single: false,
            read_only: true,
            head: false,
            max_affected: None,
            rollback: false,
            csv: false,
        };
        plan(
            &schema(),
            &req,
            &Limits {
                max_rows: 1000,
                allow_unfiltered_writes: false,
            },
        )
    }

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

    #[test]
    fn in_list_is_one_array_parameter_whatever_its_length() {
        let a = read("id=in.(1,2)").unwrap();
        let b = read("id=in.(1,2,3,4,5,6)").unwrap();
        assert_eq!(a.sql, b.sql);
        assert!(a.sql.contains("= ANY($5)"), "{}", a.sql);
        assert_eq!(
            b.params[4].as_deref(),
            Some("{\"1\",\"2\",\"3\",\"4\",\"5\",\"6\"}")
        );
    }

    #[test]
    fn embed_snapshot_to_one_and_inner() {
        let s = read("select=name,authors!inner(name)&authors.name=eq.Ann").unwrap();
        assert!(s.sql.contains("(SELECT json_build_object($2::text, \"_1\".\"name\") FROM \"public\".\"authors\" \"_1\" WHERE \"_1\".\"id\" = \"_0\".\"author_id\" AND (\"_1\".\"name\" = $3))"), "{}", s.sql);
        assert!(s.sql.contains("EXISTS (SELECT 1 FROM \"public\".\"authors\" \"_2\" WHERE \"_2\".\"id\" = \"_0\".\"author_id\" AND (\"_2\".\"name\" = $5))"), "{}", s.sql);
        // to-many from the other side
        let pairs = vec![("select".to_string(), "name,items(name)".to_string())];
        let req = Request {
            schema: "public".into(),
            relation: "authors".into(),
            action: Action::Read,
            query: parse_query(&pairs).unwrap(),
            body: None,
            count: Some(Count::Exact),
            returning: Return::Minimal,
            single: false,
            read_only: true,
            head: false,
            max_affected: None,
            rollback: false,
            csv: false,
        };
        let s = plan(
            &schema(),
            &req,
            &Limits {
                max_rows: 5,
                allow_unfiltered_writes: false,
            },
        )
        .unwrap();
        assert!(
            s.sql
                .starts_with("SELECT (SELECT count(*) FROM \"public\".\"authors\" \"_0\")"),
            "{}",
            s.sql
        );
        assert!(
            s.sql.contains("coalesce(json_agg(_e.j), '[]')"),
            "{}",
            s.sql
        );
        assert_eq!(
            s.params.iter().rev().nth(1).unwrap().as_deref(),
            Some("5"),
            "max_rows caps the limit"
        );
    }

    #[test]
    fn hostile_names_never_reach_sql() {
        for qs in [
            "select=id;drop table items",
            "select=%22id%22",
            "select=nope",
            "order=id;drop",
            "id%22--=eq.1",
            "select=name::text;drop",
            "select=name::nosuchtype",
            "select=authors!x(name)",
            "select=nope(name)",
            "nope.name=eq.1",
        ] {
            let e = read(qs).expect_err(qs);
            assert!(e.status >= 400 && e.status < 500, "{qs}: {e:?}");
        }
        // Values are parameters, whatever they contain.
        let s = read("name=eq.'; drop table items; --").unwrap();
        assert!(!s.sql.contains("drop"), "{}", s.sql);
        assert_eq!(
            s.params[s.params.len() - 3].as_deref(),
            Some("'; drop table items; --")
        );
        // JSON path keys too.
        let s = read("select=data->>x'; drop table items --").unwrap();
        assert!(!s.sql.contains("drop"), "{}", s.sql);
    }

    #[test]
    fn unfiltered_update_and_delete_are_refused() {
        let mut req = Request {
            schema: "public".into(),
            relation: "items".into(),
            action: Action::Delete,
            query: Query::default(),
            body: None,
            count: None,
            returning: Return::Minimal,
            single: false,
            read_only: false,
            head: false,
            max_affected: None,
            rollback: false,
            csv: false,
        };
        let limits = Limits {
            max_rows: 10,
            allow_unfiltered_writes: false,
        };
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
}
