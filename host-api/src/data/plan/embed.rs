//! Embedding (PostgREST's resource embedding): which foreign key, or junction
//! for many-to-many, joins a level to an embedded relation, and the subqueries
//! that put the related rows into the parent's object or filter the parent
//! (`!inner`, `rel=is.null`).

use super::sql::{and_more, ident, qualified};
use super::{Builder, Source};
use crate::data::error::DataError;
use crate::data::request::{Embed, Modifiers, Query, SelectItem};
use crate::data::schema::{ForeignKey, Relation};

/// A resolved relationship between a parent level and an embedded relation.
pub(super) struct Link<'s> {
    /// The embedded relation.
    pub(super) target: &'s Relation,
    /// (parent column, target column) pairs (empty when `junction` is set).
    pairs: Vec<(String, String)>,
    /// The target has at most one row per parent (many-to-one).
    pub(super) to_one: bool,
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

/// An embedded level while it is planned.
struct Level<'s> {
    /// How it joins its parent.
    link: Link<'s>,
    /// Its path of embed keys from the top level.
    path: Vec<String>,
    /// The alias its rows are read as.
    alias: String,
    /// Its columns (those of the embedded relation).
    src: Source<'s>,
    /// The filters, order and range given for it.
    mods: Modifiers,
}

impl<'s> Builder<'s> {
    /// Finds the foreign key an embed goes through.
    pub(super) fn link(&self, src: Source<'s>, e: &Embed) -> Result<Link<'s>, DataError> {
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

    /// Enters embed `e` of the level at `path`: its relationship, a fresh alias
    /// and the filters and modifiers given for it.
    fn enter(
        &mut self,
        q: &Query,
        e: &Embed,
        src: Source<'s>,
        path: &[String],
    ) -> Result<Level<'s>, DataError> {
        let link = self.link(src, e)?;
        let mut sub = path.to_vec();
        sub.push(e.key().to_string());
        let ta = self.alias();
        let tsrc = Source::of(link.target);
        let mods = q.levels.get(&sub).cloned().unwrap_or_default();
        Ok(Level {
            link,
            path: sub,
            alias: ta,
            src: tsrc,
            mods,
        })
    }

    /// `EXISTS (…)`: the parent row has a match in embed `e` (with its filters).
    pub(super) fn exists(
        &mut self,
        q: &Query,
        e: &Embed,
        src: Source<'s>,
        a: &str,
        path: &[String],
    ) -> Result<String, DataError> {
        let lv = self.enter(q, e, src, path)?;
        let inner = self.conditions(q, &lv.mods.conditions, lv.src, &lv.alias, &lv.path)?;
        Ok(format!(
            "EXISTS (SELECT 1 FROM {} {} WHERE {}{})",
            qualified(&lv.link.target.schema, &lv.link.target.name),
            lv.alias,
            join_sql(&lv.link, a, &lv.alias),
            and_more(&inner)
        ))
    }

    /// The pairs embed `e` adds to its parent's object at level `path`: its key
    /// and a subquery (one object, or an array of them), or with `...` the
    /// target's own pairs spread into the parent.
    pub(super) fn embed_pairs(
        &mut self,
        q: &Query,
        e: &Embed,
        src: Source<'s>,
        a: &str,
        path: &[String],
        pairs: &mut Vec<(String, String)>,
    ) -> Result<(), DataError> {
        let lv = self.enter(q, e, src, path)?;
        let join = join_sql(&lv.link, a, &lv.alias);
        let target = qualified(&lv.link.target.schema, &lv.link.target.name);
        let from = format!("{target} {}", lv.alias);
        if e.spread {
            if !lv.link.to_one {
                return Err(DataError::new(
                    400,
                    "PGRST119",
                    format!("A spread operation on '{}' is not possible", e.name),
                )
                .details("'...' works on many-to-one relationships only"));
            }
            let conds = self.conditions(q, &lv.mods.conditions, lv.src, &lv.alias, &lv.path)?;
            for (k, v) in self.pairs(q, &e.select, lv.src, &lv.alias, &lv.path)? {
                pairs.push((
                    k,
                    format!("(SELECT {v} FROM {from} WHERE {join}{})", and_more(&conds)),
                ));
            }
            return Ok(());
        }
        let obj = self.object(q, &e.select, lv.src, &lv.alias, &lv.path)?;
        let conds = self.conditions(q, &lv.mods.conditions, lv.src, &lv.alias, &lv.path)?;
        let k = self.param(e.key().to_string());
        let value = if lv.link.to_one {
            format!(
                "(SELECT {obj} FROM {from} WHERE {join}{})",
                and_more(&conds)
            )
        } else {
            let order = self.order(&lv.mods.order, lv.src, &lv.alias, &e.select)?;
            let mut range = String::new();
            if let Some(l) = lv.mods.limit {
                range.push_str(&format!(" LIMIT {}", self.param(l.to_string())));
            }
            if let Some(o) = lv.mods.offset {
                range.push_str(&format!(" OFFSET {}", self.param(o.to_string())));
            }
            format!(
                "(SELECT coalesce(json_agg(_e.j), '[]') FROM (SELECT {obj} AS j FROM {from} WHERE {join}{}{order}{range}) _e)",
                and_more(&conds)
            )
        };
        pairs.push((k, value));
        Ok(())
    }
}

/// The join condition between `parent`'s rows and `target`'s (aliases) through
/// `link`: column equalities, or `EXISTS` over the junction of a many-to-many.
pub(super) fn join_sql(link: &Link<'_>, parent: &str, target: &str) -> String {
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

/// The embed at `path` (keys from the top level) in `items`.
pub(super) fn find_embed<'q>(items: &'q [SelectItem], path: &[String]) -> Option<&'q Embed> {
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

/// A filter or modifier named a level that `select=` does not embed.
pub(super) fn unknown_level(path: &[String]) -> DataError {
    DataError::parse(
        "query",
        format!(
            "\"{}\" is not an embedded resource of select=",
            path.join(".")
        ),
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

#[cfg(test)]
mod tests {
    use super::super::fixtures::{limits, read, request, schema};
    use super::super::plan;
    use crate::data::parse::parse_query;
    use crate::data::request::{Action, Count};

    #[test]
    fn embed_snapshot_to_one_and_inner() {
        let s = read("select=name,authors!inner(name)&authors.name=eq.Ann").unwrap();
        assert!(s.sql.contains("(SELECT json_build_object($2::text, \"_1\".\"name\") FROM \"public\".\"authors\" \"_1\" WHERE \"_1\".\"id\" = \"_0\".\"author_id\" AND (\"_1\".\"name\" = $3))"), "{}", s.sql);
        assert!(s.sql.contains("EXISTS (SELECT 1 FROM \"public\".\"authors\" \"_2\" WHERE \"_2\".\"id\" = \"_0\".\"author_id\" AND (\"_2\".\"name\" = $5))"), "{}", s.sql);
        // to-many from the other side
        let pairs = vec![("select".to_string(), "name,items(name)".to_string())];
        let mut req = request("authors", Action::Read, parse_query(&pairs).unwrap());
        req.count = Some(Count::Exact);
        let s = plan(&schema(), &req, &limits(5)).unwrap();
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
}
