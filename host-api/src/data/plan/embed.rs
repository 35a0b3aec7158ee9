//! Embedding (PostgREST's resource embedding): the subqueries that put the
//! related rows into the parent's object (or spread their columns into it) or
//! filter the parent (`!inner`, `rel=is.null`). Which relationship an embed
//! goes through is `relationship`'s decision.

use super::relationship::Link;
use super::select::Pair;
use super::sql::{and_more, ident, qualified};
use super::{Builder, Source};
use crate::data::error::DataError;
use crate::data::request::{Embed, Modifiers, Query, SelectItem};

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
            "EXISTS (SELECT 1 FROM {} WHERE {}{})",
            source_sql(&lv.link, a, &lv.alias),
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
        pairs: &mut Vec<Pair>,
    ) -> Result<(), DataError> {
        let lv = self.enter(q, e, src, path)?;
        let join = join_sql(&lv.link, a, &lv.alias);
        let from = source_sql(&lv.link, a, &lv.alias);
        if e.spread && !lv.link.to_one {
            return self.spread_many(q, e, &lv, &from, &join, pairs);
        }
        if e.spread {
            // The values first: a spread of nothing binds no parameter.
            let values = self.pairs(q, &e.select, lv.src, &lv.alias, &lv.path)?;
            if values.is_empty() {
                return Ok(());
            }
            let conds = self.conditions(q, &lv.mods.conditions, lv.src, &lv.alias, &lv.path)?;
            let lookup =
                |v: &str| format!("(SELECT {v} FROM {from} WHERE {join}{})", and_more(&conds));
            for p in values {
                pairs.push(match p.agg {
                    // An aggregate in a to-one spread is hoisted: it aggregates
                    // the parent's rows (their related row's value).
                    Some((agg, arg)) => {
                        Pair::aggregate(p.key, agg, Some(lookup(arg.as_deref().unwrap_or("1"))))
                    }
                    None => Pair {
                        value: lookup(&p.value),
                        ..p
                    },
                });
            }
            return Ok(());
        }
        let (obj, group) = self.object(q, &e.select, lv.src, &lv.alias, &lv.path)?;
        let group = group.unwrap_or_default();
        let conds = self.conditions(q, &lv.mods.conditions, lv.src, &lv.alias, &lv.path)?;
        let k = self.param(e.key().to_string());
        let value = if lv.link.to_one {
            format!(
                "(SELECT {obj} FROM {from} WHERE {join}{}{group})",
                and_more(&conds)
            )
        } else {
            let order = self.order(&lv.mods.order, lv.src, &lv.alias, &e.select)?;
            let range = self.range(lv.mods.limit, lv.mods.offset);
            format!(
                "(SELECT coalesce(json_agg(_e.j), '[]') FROM (SELECT {obj} AS j FROM {from} WHERE {join}{}{group}{order}{range}) _e)",
                and_more(&conds)
            )
        };
        pairs.push(Pair {
            key: k,
            value,
            agg: None,
            embed: true,
            geo: false,
        });
        Ok(())
    }

    /// A to-many spread (PostgREST 13): each selected value of the related
    /// rows becomes an array in the parent, in the embed's order.
    fn spread_many(
        &mut self,
        q: &Query,
        e: &Embed,
        lv: &Level<'s>,
        from: &str,
        join: &str,
        pairs: &mut Vec<Pair>,
    ) -> Result<(), DataError> {
        // The values first: a spread of nothing binds no parameter.
        let values = self.pairs(q, &e.select, lv.src, &lv.alias, &lv.path)?;
        if values.is_empty() {
            return Ok(());
        }
        let conds = self.conditions(q, &lv.mods.conditions, lv.src, &lv.alias, &lv.path)?;
        let order = self.order(&lv.mods.order, lv.src, &lv.alias, &e.select)?;
        let range = self.range(lv.mods.limit, lv.mods.offset);
        for p in values {
            if p.agg.is_some() {
                return Err(DataError::not_implemented(
                    "Aggregates are not implemented for one-to-many or many-to-many spreads.",
                ));
            }
            // The related rows in the embed's order and range, their values
            // aggregated in that order.
            pairs.push(Pair {
                value: format!(
                    "(SELECT coalesce(json_agg(_s.v), '[]') FROM (SELECT {} AS v FROM {from} WHERE {join}{}{order}{range}) _s)",
                    p.value,
                    and_more(&conds)
                ),
                embed: true,
                geo: false,
                ..p
            });
        }
        Ok(())
    }
}

/// What an embedded level reads, aliased `target`: the related relation, or
/// for a computed relationship its function called with the parent's row.
pub(super) fn source_sql(link: &Link<'_>, parent: &str, target: &str) -> String {
    match link.computed {
        Some(f) => format!("{}({parent}) {target}", qualified(&f.schema, &f.name)),
        None => format!(
            "{} {target}",
            qualified(&link.target.schema, &link.target.name)
        ),
    }
}

/// The join condition between `parent`'s rows and `target`'s (aliases) through
/// `link`: column equalities, `EXISTS` over the junction of a many-to-many, or
/// nothing for a computed relationship (its function gives the parent's rows).
pub(super) fn join_sql(link: &Link<'_>, parent: &str, target: &str) -> String {
    if link.computed.is_some() {
        return "true".into();
    }
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

/// A filter or modifier named a level that `select=` does not embed
/// (PGRST108, named by its last key as PostgREST names the resource).
pub(super) fn unknown_level(path: &[String]) -> DataError {
    DataError::not_embedded(path.last().map_or("", String::as_str))
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
        assert!(
            s.sql.ends_with(" LIMIT 5) _r"),
            "max_rows caps the limit: {}",
            s.sql
        );
    }
}
