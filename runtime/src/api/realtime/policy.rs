//! Row-level security the server decides itself, for the policy most apps
//! put on the tables they subscribe to: "a user sees their own rows"
//! (`owner = auth.uid()`, or Supabase's recommended `owner = (select
//! auth.uid())`). With 100 signed-in users subscribed to one table, asking
//! PostgreSQL costs one row lookup per user per change (each as that user's
//! role and claims), so the work grows with users × inserts and delivery
//! fell far behind the insert rate (docs/REALTIME.md "Who sees a change").
//! For a role whose SELECT policies on a table are all of that shape, the
//! answer needs only the change's record and the subscriber's `sub` claim.
//!
//! Sound by construction: the server decides only when it recognizes every
//! policy that applies (the policies' text as PostgreSQL itself prints it,
//! matched exactly), the column is a `uuid`, `auth.uid()` and `auth.jwt()`
//! are the platform's own definitions, unchanged, and the `sub` claim is a
//! UUID in its canonical text. Anything else — a restrictive policy, a
//! subquery, another function, a replaced `auth.uid()`, a malformed `sub` —
//! goes to PostgreSQL as before. The record checked is the change's own
//! (what the subscriber is sent), not the table's current row.

use crate::migrate::PLATFORM;
use deadpool_postgres::Pool;
use rustc_hash::FxHashMap;
use serde_json::Value;
use std::sync::LazyLock;

/// How one role's SELECT policies on one table decide who sees a row, when
/// the server can evaluate them itself.
#[derive(Debug, Clone, PartialEq)]
pub enum Inline {
    /// Every row: the role bypasses RLS (or owns the table), or a permissive
    /// policy is `true`.
    All,
    /// A row whose value in one of these `uuid` columns equals `auth.uid()`
    /// (none listed: no policy applies, so no row).
    Owner(Vec<String>),
}

/// What a subscriber's claims make of `auth.uid()`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Uid {
    /// SQL NULL (no `sub`, or an empty one): equal to nothing.
    Null,
    /// A UUID.
    Is(uuid::Uuid),
}

impl Uid {
    /// `auth.uid()` for these claims, or `None` when only PostgreSQL can
    /// say (a `sub` that is not a UUID in canonical form would make the cast
    /// raise, or read differently there).
    pub fn of(claims: &Value) -> Option<Uid> {
        match claims.get("sub") {
            None | Some(Value::Null) => Some(Uid::Null),
            Some(Value::String(s)) if s.is_empty() => Some(Uid::Null),
            Some(Value::String(s)) => canonical(s).map(Uid::Is),
            Some(_) => None,
        }
    }
}

/// A UUID written as PostgreSQL writes one (lower-case, hyphenated).
fn canonical(s: &str) -> Option<uuid::Uuid> {
    let u = uuid::Uuid::try_parse(s).ok()?;
    let mut buf = uuid::Uuid::encode_buffer();
    (u.hyphenated().encode_lower(&mut buf) == s).then_some(u)
}

/// The groups of subscribers an owner rule lets see a row, found by the
/// row's owner columns rather than by visiting every group (a change costs
/// its own subscribers' work, not every user's).
#[derive(Default)]
pub struct Owners {
    /// Per distinct rule (its columns): the groups by `auth.uid()`.
    rules: Vec<OwnerRule>,
}

/// An owner rule's columns, and the groups by `auth.uid()`.
type OwnerRule = (Vec<String>, FxHashMap<uuid::Uuid, Vec<usize>>);

impl Owners {
    /// Group `g`, whose `auth.uid()` is `uid`, sees rows whose value in one
    /// of `cols` is `uid`.
    pub fn add(&mut self, cols: Vec<String>, uid: uuid::Uuid, g: usize) {
        let at = match self.rules.iter().position(|(c, _)| *c == cols) {
            Some(at) => at,
            None => {
                self.rules.push((cols, FxHashMap::default()));
                self.rules.len() - 1
            }
        };
        self.rules[at].1.entry(uid).or_default().push(g);
    }

    /// Adds to `seen` the groups that see `row` (the change's record as
    /// JSON, where a `uuid` column is its canonical text), each once.
    pub fn seen_by(&self, row: &Value, seen: &mut Vec<usize>) {
        for (cols, by_uid) in &self.rules {
            for col in cols {
                let owner = row
                    .get(col)
                    .and_then(Value::as_str)
                    .and_then(|s| uuid::Uuid::try_parse(s).ok());
                for &g in owner.and_then(|u| by_uid.get(&u)).into_iter().flatten() {
                    if !seen.contains(&g) {
                        seen.push(g);
                    }
                }
            }
        }
    }
}

/// The role's standing and the policies that apply to it on the table, as
/// PostgreSQL prints them (`search_path` is only `pg_catalog`, so every
/// other schema's function or operator is printed qualified).
const POLICIES_SQL: &str = "SELECT r.rolbypassrls \
       OR (pg_has_role(r.oid, c.relowner, 'USAGE') AND NOT c.relforcerowsecurity), \
     coalesce((SELECT json_agg(json_build_array(p.polpermissive, pg_get_expr(p.polqual, p.polrelid))) \
       FROM pg_policy p WHERE p.polrelid = c.oid AND p.polcmd IN ('r', '*') \
        AND (0::oid = ANY (p.polroles) OR EXISTS (SELECT 1 FROM unnest(p.polroles) pr \
             WHERE pr <> 0 AND pg_has_role(r.oid, pr, 'USAGE')))), '[]'), \
     coalesce((SELECT json_agg(a.attname) FROM pg_attribute a \
       WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
         AND a.atttypid = 'pg_catalog.uuid'::regtype), '[]'), \
     (SELECT json_agg(json_build_array(f.prosrc, f.proconfig IS NULL AND l.lanname = 'sql')) \
       FROM pg_proc f JOIN pg_language l ON l.oid = f.prolang \
       WHERE f.oid IN (to_regprocedure('auth.uid()'), to_regprocedure('auth.jwt()'))) \
   FROM pg_class c, pg_roles r WHERE c.oid = $1 AND r.rolname = $2";

/// Reads how `role`'s policies on table `oid` decide; `None` when
/// PostgreSQL must decide.
pub async fn load(system: &Pool, role: &str, oid: u32) -> anyhow::Result<Option<Inline>> {
    let mut c = system.get().await?;
    let tx = c.transaction().await?;
    tx.batch_execute("SET LOCAL search_path = pg_catalog")
        .await?;
    let row = tx.query_opt(POLICIES_SQL, &[&oid, &role]).await?;
    tx.commit().await?;
    let Some(row) = row else { return Ok(None) };
    let bypass: bool = row.try_get(0)?;
    let policies: Value = row.try_get(1)?;
    let uuid_cols: Value = row.try_get(2)?;
    let funcs: Option<Value> = row.try_get(3)?;
    Ok(decide(bypass, &policies, &uuid_cols, funcs.as_ref()))
}

/// The decision from the catalog's answer (see [`POLICIES_SQL`]).
fn decide(
    bypass: bool,
    policies: &Value,
    uuid_cols: &Value,
    funcs: Option<&Value>,
) -> Option<Inline> {
    if bypass {
        return Some(Inline::All);
    }
    let ours = funcs.and_then(Value::as_array).is_some_and(|fs| {
        let mut srcs: Vec<&str> = fs
            .iter()
            .filter(|f| f[1] == true)
            .filter_map(|f| f[0].as_str())
            .collect();
        srcs.sort_unstable();
        let mut want = vec![UID_SRC.as_str(), JWT_SRC.as_str()];
        want.sort_unstable();
        srcs == want
    });
    let uuid_cols: Vec<&str> = uuid_cols
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    // Every policy must be recognized before any decides (a restrictive
    // one narrows every permissive one, wherever it is listed).
    let mut owners = Vec::new();
    let mut all = false;
    for p in policies.as_array()? {
        if p[0] != true {
            return None;
        }
        match owner_column(p[1].as_str()?) {
            Some(Qual::True) => all = true,
            Some(Qual::Owner(col)) if ours && uuid_cols.contains(&col.as_str()) => owners.push(col),
            _ => return None,
        }
    }
    Some(if all {
        Inline::All
    } else {
        Inline::Owner(owners)
    })
}

/// A policy's `USING` the server evaluates.
#[derive(Debug, PartialEq)]
enum Qual {
    True,
    /// `column = auth.uid()`, either way round, either call form.
    Owner(String),
}

/// How PostgreSQL prints `auth.uid()` in a policy: called, or in a
/// subquery (evaluated once per statement; same value).
const UID_CALLS: [&str; 2] = ["auth.uid()", "( SELECT auth.uid() AS uid)"];

/// Recognizes `qual` as PostgreSQL prints it, exactly; anything else is
/// `None`.
fn owner_column(qual: &str) -> Option<Qual> {
    if qual == "true" {
        return Some(Qual::True);
    }
    let inner = qual.strip_prefix('(')?.strip_suffix(')')?;
    let (left, right) = inner.split_once(" = ")?;
    let col = if UID_CALLS.contains(&right) {
        left
    } else if UID_CALLS.contains(&left) {
        right
    } else {
        return None;
    };
    identifier(col).map(Qual::Owner)
}

/// A column name as PostgreSQL prints one: bare (lower case, digits,
/// `_`, `$`), or double-quoted with `""` for a quote.
fn identifier(s: &str) -> Option<String> {
    if let Some(q) = s.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        let name = q.replace("\"\"", "\"");
        // Any other lone quote would have ended the identifier.
        return (!name.is_empty() && name.matches('"').count() * 2 == q.matches('"').count())
            .then_some(name);
    }
    let mut chars = s.chars();
    let first = chars.next()?;
    let ok = (first.is_ascii_lowercase() || first == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$');
    ok.then(|| s.to_string())
}

/// The body of the platform's last definition of `auth.<name>()`, as
/// PostgreSQL stores it (`prosrc`: the text between the `$$`).
fn platform_body(name: &str) -> String {
    let head = format!("FUNCTION auth.{name}()");
    PLATFORM
        .iter()
        .rev()
        .find_map(|m| {
            let at = m.sql.find(&head)?;
            let rest = &m.sql[at..];
            let start = rest.find("$$")? + 2;
            let end = rest[start..].find("$$")? + start;
            Some(rest[start..end].to_string())
        })
        .unwrap_or_default()
}

static UID_SRC: LazyLock<String> = LazyLock::new(|| platform_body("uid"));
static JWT_SRC: LazyLock<String> = LazyLock::new(|| platform_body("jwt"));

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn policies_recognized_only_in_the_exact_shapes_postgres_prints() {
        let own = |c: &str| Some(Qual::Owner(c.into()));
        assert_eq!(owner_column("true"), Some(Qual::True));
        assert_eq!(owner_column("(owner = auth.uid())"), own("owner"));
        assert_eq!(owner_column("(auth.uid() = \"Who\")"), own("Who"));
        assert_eq!(owner_column("(\"a\"\"b\" = auth.uid())"), own("a\"b"));
        assert_eq!(
            owner_column("(owner = ( SELECT auth.uid() AS uid))"),
            own("owner")
        );
        assert_eq!(
            owner_column("(( SELECT auth.uid() AS uid) = owner)"),
            own("owner")
        );
        for other in [
            "(o2 = (auth.uid())::text)",
            "((owner = auth.uid()) OR (owner IS NULL))",
            "(owner = public.uid())",
            "(owner OPERATOR(public.=) auth.uid())",
            "(Owner = auth.uid())",
            "(\"a\"b\" = auth.uid())",
            "(owner = auth.uid()) AND true",
            "false",
        ] {
            assert_eq!(owner_column(other), None, "{other}");
        }
    }

    #[test]
    fn the_platform_functions_are_found_in_the_migrations() {
        assert!(UID_SRC.contains("request.jwt.claim.sub"), "{}", *UID_SRC);
        assert!(JWT_SRC.contains("request.jwt.claims"), "{}", *JWT_SRC);
    }

    #[test]
    fn decisions_from_the_catalog() {
        let funcs = json!([[UID_SRC.as_str(), true], [JWT_SRC.as_str(), true]]);
        let cols = json!(["owner", "other"]);
        let d = |p: Value, f: &Value| decide(false, &p, &cols, Some(f));
        assert_eq!(
            d(json!([[true, "(owner = auth.uid())"]]), &funcs),
            Some(Inline::Owner(vec!["owner".into()]))
        );
        assert_eq!(d(json!([]), &funcs), Some(Inline::Owner(vec![])));
        assert_eq!(
            d(
                json!([[true, "(owner = auth.uid())"], [true, "true"]]),
                &funcs
            ),
            Some(Inline::All)
        );
        // A restrictive policy, a column that is not a uuid, a replaced
        // auth.uid(): PostgreSQL decides.
        assert_eq!(d(json!([[false, "(owner = auth.uid())"]]), &funcs), None);
        assert_eq!(
            d(
                json!([[true, "true"], [false, "(owner = auth.uid())"]]),
                &funcs
            ),
            None
        );
        assert_eq!(
            d(
                json!([[true, "true"], [true, "(o2 = (auth.uid())::text)"]]),
                &funcs
            ),
            None
        );
        assert_eq!(d(json!([[true, "(id = auth.uid())"]]), &funcs), None);
        let replaced = json!([["SELECT 'x'::uuid", true], [JWT_SRC.as_str(), true]]);
        assert_eq!(d(json!([[true, "(owner = auth.uid())"]]), &replaced), None);
        let with_config = json!([[UID_SRC.as_str(), false], [JWT_SRC.as_str(), true]]);
        assert_eq!(
            d(json!([[true, "(owner = auth.uid())"]]), &with_config),
            None
        );
        assert_eq!(
            decide(true, &json!([[false, "x"]]), &cols, None),
            Some(Inline::All)
        );
    }

    #[test]
    fn who_sees_a_row() {
        let a = "6f1d2a7e-3c4b-4d5e-8f90-a1b2c3d4e5f6";
        let b = "00000000-0000-0000-0000-000000000001";
        let uid = |c: Value| Uid::of(&c);
        let Some(Uid::Is(ua)) = uid(json!({"sub": a})) else {
            panic!()
        };
        let Some(Uid::Is(ub)) = uid(json!({"sub": b})) else {
            panic!()
        };
        let mut owners = Owners::default();
        let author = vec!["author".to_string()];
        let either = vec!["author".to_string(), "editor".to_string()];
        owners.add(author.clone(), ua, 0);
        owners.add(author, ub, 1);
        owners.add(either.clone(), ua, 2);
        owners.add(either, ub, 3);
        let seen = |row: Value| {
            let mut seen = Vec::new();
            owners.seen_by(&row, &mut seen);
            seen.sort_unstable();
            seen
        };
        assert_eq!(seen(json!({"author": a})), vec![0, 2]);
        assert_eq!(seen(json!({"author": a, "editor": b})), vec![0, 2, 3]);
        assert_eq!(seen(json!({"author": a, "editor": a})), vec![0, 2]);
        assert_eq!(
            seen(json!({"author": null, "editor": 7})),
            Vec::<usize>::new()
        );
        assert_eq!(uid(json!({})), Some(Uid::Null));
        assert_eq!(uid(json!({"sub": ""})), Some(Uid::Null));
        // Only PostgreSQL says what these make of auth.uid().
        assert_eq!(uid(json!({"sub": a.to_uppercase()})), None);
        assert_eq!(uid(json!({"sub": "not-a-uuid"})), None);
        assert_eq!(uid(json!({"sub": 7})), None);
    }
}
