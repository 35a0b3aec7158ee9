//! Where the columns of views come from, so embedding can follow a view's
//! columns back to the foreign keys of its base tables (through views of
//! views), as PostgREST does (`allViewsKeyDependencies`).
//!
//! Each view's `_RETURN` rule is read as PostgreSQL's node text
//! (`pg_rewrite.ev_action`); only the entries of the **top-level** query's
//! `:targetList` count (a view column is one of those; subqueries in the
//! range table, the select list or `WHERE` have target lists of their own),
//! and junk entries are skipped. Each entry's `resorigtbl`/`resorigcol` say
//! which relation column it shows, when it shows one unchanged; the view
//! column is named from the view's own attributes by `resno` (the rule keeps
//! the name a column had when the view was made, `ALTER VIEW … RENAME COLUMN`
//! changes only the attribute; PostgREST reads `resno` too).

use super::schema::{ForeignKey, Relation};
use std::collections::HashMap;
use tokio_postgres::GenericClient;

/// A relation as (schema, name).
pub type RelName = (String, String);

/// A target-list entry: (its `resno`, relation oid, attribute number).
type Target = (i16, i64, i16);

/// A view column, and the relation and column it shows.
type ShownColumn = (String, RelName, String);

/// Per view, its columns that show a column of another relation.
#[derive(Default)]
pub struct ViewOrigins(HashMap<RelName, Vec<ShownColumn>>);

const VIEWS: &str = "
SELECT vn.nspname::text, v.relname::text, r.ev_action::text, v.oid::int8
FROM pg_class v
JOIN pg_namespace vn ON vn.oid = v.relnamespace
JOIN pg_rewrite r ON r.ev_class = v.oid AND r.rulename = '_RETURN'
WHERE v.relkind IN ('v', 'm') AND vn.nspname NOT IN ('pg_catalog', 'information_schema')";

const COLUMNS: &str = "
SELECT c.oid::int8, n.nspname::text, c.relname::text, a.attnum, a.attname::text
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE c.oid::int8 = ANY($1)";

impl ViewOrigins {
    /// Reads every view's rule and resolves the columns it shows.
    pub async fn load(client: &impl GenericClient) -> Result<ViewOrigins, tokio_postgres::Error> {
        let mut raw: Vec<(RelName, i64, Vec<Target>)> = Vec::new();
        for row in client.query(VIEWS, &[]).await? {
            let rule: &str = row.get(2);
            raw.push((
                (row.get(0), row.get(1)),
                row.get(3),
                top_level_targets(rule),
            ));
        }
        let mut oids: Vec<i64> = raw
            .iter()
            .flat_map(|(_, view, t)| std::iter::once(*view).chain(t.iter().map(|(_, oid, _)| *oid)))
            .collect();
        oids.sort_unstable();
        oids.dedup();
        let mut columns: HashMap<(i64, i16), (RelName, String)> = HashMap::new();
        if !oids.is_empty() {
            for row in client.query(COLUMNS, &[&oids]).await? {
                columns.insert(
                    (row.get(0), row.get(3)),
                    ((row.get(1), row.get(2)), row.get(4)),
                );
            }
        }
        let mut out = ViewOrigins::default();
        for (view, view_oid, targets) in raw {
            let shown = targets
                .into_iter()
                .filter_map(|(resno, oid, col)| {
                    let (_, name) = columns.get(&(view_oid, resno))?;
                    let (rel, base_col) = columns.get(&(oid, col))?.clone();
                    Some((name.clone(), rel, base_col))
                })
                .collect();
            out.0.insert(view, shown);
        }
        Ok(out)
    }

    /// The base (non-view) relation and column behind `col` of `rel`
    /// (itself when `rel` is not a view), following views of views.
    fn resolve(&self, rel: &RelName, col: &str) -> Option<(RelName, String)> {
        let (mut rel, mut col) = (rel.clone(), col.to_string());
        for _ in 0..16 {
            let Some(cols) = self.0.get(&rel) else {
                return Some((rel, col));
            };
            let (_, base, base_col) = cols.iter().find(|(c, _, _)| *c == col)?;
            (rel, col) = (base.clone(), base_col.clone());
        }
        None
    }

    /// The columns of `view` showing `cols` of the base relation `base`, in
    /// order, when it shows all of them.
    fn showing(&self, view: &RelName, base: &RelName, cols: &[String]) -> Option<Vec<String>> {
        let shown = self.0.get(view)?;
        cols.iter()
            .map(|c| {
                shown.iter().find_map(|(vc, _, _)| {
                    (self.resolve(view, vc)? == (base.clone(), c.clone())).then(|| vc.clone())
                })
            })
            .collect()
    }

    /// Foreign keys of views (PostgREST's view relationships): for each key
    /// between base tables, one from (and to) every exposed view that shows
    /// all of its columns, beside the key itself when both tables are exposed.
    pub fn view_keys(
        &self,
        views: &[RelName],
        fks: &[ForeignKey],
        exposed: &dyn Fn(&RelName) -> bool,
    ) -> Vec<ForeignKey> {
        let mut out = Vec::new();
        for fk in fks {
            let sides = |base: &RelName, cols: &[String]| {
                let mut v: Vec<(RelName, Vec<String>, bool)> = Vec::new();
                if exposed(base) {
                    v.push((base.clone(), cols.to_vec(), false));
                }
                for view in views {
                    if let Some(c) = self.showing(view, base, cols) {
                        v.push((view.clone(), c, true));
                    }
                }
                v
            };
            for (from, from_cols, from_view) in sides(&fk.from, &fk.from_cols) {
                for (to, to_cols, to_view) in sides(&fk.to, &fk.to_cols) {
                    if from_view || to_view {
                        out.push(ForeignKey {
                            name: fk.name.clone(),
                            from: from.clone(),
                            from_cols: from_cols.clone(),
                            to,
                            to_cols,
                            one_to_one: fk.one_to_one,
                        });
                    }
                }
            }
        }
        out
    }

    /// The primary key of `view`: its base table's, when the view shows it.
    pub fn base_pk(&self, view: &RelName, relations: &HashMap<RelName, Relation>) -> Vec<String> {
        let Some(cols) = self.0.get(view) else {
            return Vec::new();
        };
        let Some((base, _)) = cols.first().and_then(|(c, _, _)| self.resolve(view, c)) else {
            return Vec::new();
        };
        match relations.get(&base) {
            Some(b) if !b.pk.is_empty() => self.showing(view, &base, &b.pk).unwrap_or_default(),
            _ => Vec::new(),
        }
    }
}

/// A token of PostgreSQL's node text: a bracket or a word (backslash
/// escapes kept, so an escaped bracket is part of a word).
#[derive(Debug, PartialEq)]
enum Token<'a> {
    Open,
    Close,
    Word(&'a str),
}

fn tokens(s: &str) -> Vec<Token<'_>> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'{' | b'(' => {
                out.push(Token::Open);
                i += 1;
            }
            b'}' | b')' => {
                out.push(Token::Close);
                i += 1;
            }
            // PostgreSQL's `pg_strtok` separates tokens by these three only.
            b' ' | b'\n' | b'\t' => i += 1,
            _ => {
                let start = i;
                while i < b.len() {
                    match b[i] {
                        b'\\' => i += 2,
                        b'{' | b'}' | b'(' | b')' => break,
                        b' ' | b'\n' | b'\t' => break,
                        _ => i += 1,
                    }
                }
                let end = i.min(b.len());
                out.push(Token::Word(&s[start..end]));
            }
        }
    }
    out
}

/// The (column name, relation oid, attribute number) of each non-junk entry
/// of the top-level query's target list that shows a relation column.
pub fn top_level_targets(rule: &str) -> Vec<Target> {
    let t = tokens(rule);
    // The first `{QUERY`: its own level is one deeper than its brace.
    let Some(q) = t
        .windows(2)
        .position(|w| w == [Token::Open, Token::Word("QUERY")])
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let (mut depth, mut i) = (0usize, q);
    let mut query_depth = None;
    while i < t.len() {
        match t[i] {
            Token::Open => {
                depth += 1;
                query_depth.get_or_insert(depth);
            }
            Token::Close => {
                if Some(depth) == query_depth {
                    break;
                }
                depth -= 1;
            }
            Token::Word(":targetList") if Some(depth) == query_depth => {
                i += 1;
                if t.get(i) != Some(&Token::Open) {
                    continue;
                }
                let list_depth = depth + 1;
                depth = list_depth;
                i += 1;
                // Each `{TARGETENTRY` directly in the list.
                while i < t.len() && depth >= list_depth {
                    match t[i] {
                        Token::Open if depth == list_depth => {
                            let (fields, next) = own_fields(&t, i);
                            if let Some(e) = entry(&fields) {
                                out.push(e);
                            }
                            i = next;
                            continue;
                        }
                        Token::Open => depth += 1,
                        Token::Close => depth -= 1,
                        _ => {}
                    }
                    i += 1;
                }
                return out;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// The `:name value` pairs of the node opening at `start`, at its own level,
/// and the index after its closing bracket.
fn own_fields<'a>(t: &[Token<'a>], start: usize) -> (Vec<(&'a str, &'a str)>, usize) {
    let mut fields = Vec::new();
    let (mut depth, mut i) = (0usize, start);
    while i < t.len() {
        match t[i] {
            Token::Open => depth += 1,
            Token::Close => {
                depth -= 1;
                if depth == 0 {
                    return (fields, i + 1);
                }
            }
            Token::Word(w) if depth == 1 && w.starts_with(':') => {
                if let Some(Token::Word(v)) = t.get(i + 1) {
                    fields.push((w, *v));
                    // The value is not a field name, even if it starts with ':'.
                    i += 2;
                    continue;
                }
            }
            _ => {}
        }
        i += 1;
    }
    (fields, t.len())
}

fn entry(fields: &[(&str, &str)]) -> Option<Target> {
    let get = |k: &str| fields.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
    if get(":resjunk") == Some("true") {
        return None;
    }
    let resno: i16 = get(":resno")?.parse().ok()?;
    let tbl: i64 = get(":resorigtbl")?.parse().ok()?;
    let col: i16 = get(":resorigcol")?.parse().ok()?;
    if tbl == 0 || col <= 0 || resno <= 0 {
        return None;
    }
    Some((resno, tbl, col))
}

#[cfg(test)]
mod tests {
    use super::top_level_targets;

    #[test]
    fn only_the_top_level_target_list_counts() {
        // Shaped like PostgreSQL 15's text of
        // `select t.id, (select c.id from c …) as cat, t."my col" from t order by t.x`:
        // a subquery in the range table, one in the select list, a junk entry.
        let rule = r#"({QUERY :commandType 1 :rtable ({RANGETBLENTRY :subquery {QUERY :targetList ({TARGETENTRY :expr {VAR} :resno 1 :resname id :ressortgroupref 0 :resorigtbl 900 :resorigcol 1 :resjunk false})} :alias <>}) :jointree <> :targetList ({TARGETENTRY :expr {VAR :varno 1} :resno 1 :resname id :ressortgroupref 0 :resorigtbl 100 :resorigcol 1 :resjunk false} {TARGETENTRY :expr {SUBLINK :subselect {QUERY :targetList ({TARGETENTRY :expr {VAR} :resno 1 :resname id :ressortgroupref 0 :resorigtbl 200 :resorigcol 1 :resjunk false})}} :resno 2 :resname cat :ressortgroupref 0 :resorigtbl 0 :resorigcol 0 :resjunk false} {TARGETENTRY :expr {VAR} :resno 3 :resname my\ col :ressortgroupref 0 :resorigtbl 100 :resorigcol 3 :resjunk false} {TARGETENTRY :expr {VAR} :resno 4 :resname x :ressortgroupref 1 :resorigtbl 100 :resorigcol 4 :resjunk true}) :override 0})"#;
        assert_eq!(top_level_targets(rule), vec![(1, 100, 1), (3, 100, 3)]);
        // A value that looks like a field name is a value; a carriage return
        // is part of a word (PostgreSQL splits on space, newline and tab).
        let tricky = "({QUERY :targetList ({TARGETENTRY :expr {VAR} :resno 1 :resname :resorigtbl :ressortgroupref 0 :resorigtbl 100 :resorigcol 2 :resjunk false} {TARGETENTRY :resno 2 :resname a\r:resorigtbl\r1259 :ressortgroupref 0 :resorigtbl 0 :resorigcol 0 :resjunk false})})";
        assert_eq!(top_level_targets(tricky), vec![(1, 100, 2)]);
        assert!(top_level_targets("garbage ((").is_empty());
        assert!(top_level_targets("").is_empty());
    }
}
