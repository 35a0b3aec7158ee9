//! The SQL-building helpers every part of the planner shares, so that quoting
//! and parameter numbering follow one rule: identifiers come only from the
//! schema cache, quoted by [`ident`]; values only as `$n` parameters (the
//! one number written into the text is a row limit, see [`Builder::range`]).

use super::select::Pair;
use super::Builder;

/// Quotes an identifier taken from the schema cache.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `"schema"."name"` of a relation, type or function from the schema cache.
pub(super) fn qualified(schema: &str, name: &str) -> String {
    format!("{}.{}", ident(schema), ident(name))
}

impl Builder<'_> {
    /// Adds `v` as the next bind parameter and gives its placeholder (`$n`).
    pub(super) fn param(&mut self, v: impl Into<String>) -> String {
        self.params.push(Some(v.into()));
        format!("${}", self.params.len())
    }

    /// ` LIMIT n OFFSET $m`: the row bound written as a number, the offset
    /// bound as a parameter and left out when it is 0. Why the limit is not
    /// a parameter: PostgreSQL costs a generic plan of `LIMIT $n` as if it
    /// returned a tenth of the rows, so it never reuses one and plans every
    /// execution again (a seventh of its CPU on `bench/rest.sh`'s aggregate;
    /// docs/ARCHITECTURE.md). Nothing a client sent can reach SQL this way:
    /// it is an `i64`, printed. Each distinct limit is its own prepared
    /// statement (apps use a few page sizes; the cache is bounded); offsets
    /// change with every page, so they stay bound.
    pub(super) fn range(&mut self, limit: Option<i64>, offset: Option<i64>) -> String {
        let mut range = String::new();
        if let Some(l) = limit {
            range.push_str(&format!(" LIMIT {l}"));
        }
        if let Some(o) = offset.filter(|o| *o != 0) {
            range.push_str(&format!(" OFFSET {}", self.param(o.to_string())));
        }
        range
    }

    /// A JSON-path key as a typed parameter (`$n::int4` for an array index,
    /// else `$n::text`), bound once per statement: the same path written
    /// twice is the same expression text, so PostgreSQL matches a grouped
    /// `data->>k` in `ORDER BY` with the one in `GROUP BY`.
    pub(super) fn path_key(&mut self, key: &str) -> String {
        if let Some(p) = self.path_keys.get(key) {
            return p.clone();
        }
        let cast = if key.parse::<i32>().is_ok() {
            "int4"
        } else {
            "text"
        };
        let p = format!("{}::{cast}", self.param(key));
        self.path_keys.insert(key.to_string(), p.clone());
        p
    }

    /// A fresh table alias (`"_0"`, `"_1"`, …), unique in the statement.
    pub(super) fn alias(&mut self) -> String {
        let a = format!("\"_{}\"", self.aliases);
        self.aliases += 1;
        a
    }
}

/// `ROW(v1, …)`: an object's values as a record, whose text form is a CSV line
/// once its parentheses are removed (PostgreSQL's own quoting, as PostgREST's
/// CSV: fields with quotes, commas, spaces, parentheses or backslashes are
/// double-quoted with `"` and `\` doubled; NULL is empty; values keep their
/// text output, such as `t`, `{1,2}` or jsonb's `{"a": 1}`).
pub(super) fn csv_row(pairs: &[Pair]) -> String {
    let values: Vec<&str> = pairs.iter().map(|p| p.value.as_str()).collect();
    format!("ROW({})", values.join(", "))
}

/// The CSV text of rows `j` (each a [`csv_row`]): the keys as a header line
/// (empty when there is no row), a line break, then one line per row.
pub(super) fn csv_agg(pairs: &[Pair], j: &str) -> String {
    let keys: Vec<String> = pairs.iter().map(|p| format!("{}::text", p.key)).collect();
    format!(
        "CASE WHEN count({j}) > 0 THEN array_to_string(ARRAY[{}]::text[], ',') ELSE '' END \
         || E'\\n' || coalesce(string_agg(substring({j}::text, 2, length({j}::text) - 2), E'\\n'), '')",
        keys.join(", ")
    )
}

/// `" AND …"` from a ` WHERE …` clause (or nothing).
pub(super) fn and_more(conds: &str) -> String {
    match conds.strip_prefix(" WHERE ") {
        Some(c) => format!(" AND {c}"),
        None => String::new(),
    }
}
