//! The schema cache: what the exposed schemas hold (relations, columns, keys,
//! foreign keys, functions, castable types), read from the catalog in three
//! queries, built beside the current one and swapped in whole.
//!
//! The planner takes every identifier it writes into SQL from here, so a name a
//! client sends either matches an entry (and is then written quoted, from the
//! entry) or the request is refused.

use serde::Deserialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio_postgres::GenericClient;

/// One column of a relation (or of a function's result).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Column {
    /// Column name.
    pub name: String,
    /// The type as SQL (`format_type`), e.g. `character varying(20)`, `text[]`.
    #[serde(rename = "type")]
    pub type_sql: String,
    /// `pg_type.typname`, e.g. `int4`, `_text`, `tsvector`.
    pub typname: String,
    /// Whether the column may hold NULL.
    #[serde(default = "yes")]
    pub nullable: bool,
    /// The default expression from the catalog, if any; for an identity column
    /// `BY DEFAULT` (no catalog default) `nextval` of its sequence, as in
    /// PostgREST's schema cache, so `missing=default` can fill it.
    #[serde(default)]
    pub default: Option<String>,
    /// Whether the column is an identity or generated column.
    #[serde(default)]
    pub generated: bool,
}

fn yes() -> bool {
    true
}

/// What kind of relation (PostgreSQL's `relkind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelKind {
    /// Ordinary or partitioned table.
    Table,
    /// View or materialized view.
    View,
    /// Foreign table.
    Foreign,
}

/// A table or view of an exposed schema.
#[derive(Debug, Clone, PartialEq)]
pub struct Relation {
    /// Schema name.
    pub schema: String,
    /// Relation name.
    pub name: String,
    /// Table, view, foreign table.
    pub kind: RelKind,
    /// Columns in attribute order.
    pub columns: Vec<Column>,
    /// Primary-key columns (empty for views and keyless tables).
    pub pk: Vec<String>,
    /// `COMMENT ON TABLE`, shown in the OpenAPI description.
    pub comment: Option<String>,
}

impl Relation {
    /// The column called `name`.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// A foreign key between two relations of exposed schemas.
#[derive(Debug, Clone, PartialEq)]
pub struct ForeignKey {
    /// Constraint name (usable as an embedding hint).
    pub name: String,
    /// Referencing relation (schema, name).
    pub from: (String, String),
    /// Referencing columns.
    pub from_cols: Vec<String>,
    /// Referenced relation (schema, name).
    pub to: (String, String),
    /// Referenced columns.
    pub to_cols: Vec<String>,
    /// The referencing columns are exactly a primary key or unique
    /// constraint: at most one referencing row per referenced row (PostgREST's
    /// one-to-one).
    pub one_to_one: bool,
}

/// An input argument of a function.
#[derive(Debug, Clone, PartialEq)]
pub struct Arg {
    /// Name (empty for an unnamed argument).
    pub name: String,
    /// The type as SQL.
    pub type_sql: String,
    /// Whether it has a default (may be left out).
    pub has_default: bool,
    /// `VARIADIC` (its type is the array; called with `VARIADIC name := …`).
    pub variadic: bool,
}

/// What a function returns.
#[derive(Debug, Clone, PartialEq)]
pub enum Returns {
    /// Nothing (`void`).
    Void,
    /// One value (or a set of values) of a scalar type.
    Scalar {
        /// Type as SQL.
        type_sql: String,
    },
    /// Rows with these columns; `table` names the relation when the row type is
    /// one (so results can embed through its foreign keys).
    Rows {
        /// Result columns.
        columns: Vec<Column>,
        /// The relation whose row type this is.
        table: Option<(String, String)>,
    },
}

/// A function of an exposed schema, callable at `/rpc/:name`.
#[derive(Debug, Clone, PartialEq)]
pub struct Function {
    /// Schema name.
    pub schema: String,
    /// Function name.
    pub name: String,
    /// Input arguments in order.
    pub args: Vec<Arg>,
    /// Result shape.
    pub returns: Returns,
    /// `RETURNS SETOF` / `TABLE`.
    pub set: bool,
    /// `v`olatile, `s`table or `i`mmutable.
    pub volatility: char,
    /// `COMMENT ON FUNCTION`.
    pub comment: Option<String>,
    /// The relation whose row type is the only argument, if it is one: the
    /// function is then a computed field (scalar result) or a computed
    /// relationship (rows of a relation) of that relation.
    pub row_arg: Option<(String, String)>,
    /// `ROWS 1` on a set-returning function: a computed relationship is to-one.
    pub one_row: bool,
    /// `pg_type.typname` of the result (what filters on a computed field need).
    pub ret_typname: String,
}

impl Function {
    /// A computed relationship's target: rows of a relation, and whether it
    /// is to-one (`ROWS 1` or not `SETOF`, as PostgREST decides).
    pub fn relationship(&self) -> Option<(&(String, String), bool)> {
        match (&self.row_arg, &self.returns) {
            (Some(_), Returns::Rows { table: Some(t), .. }) => Some((t, !self.set || self.one_row)),
            _ => None,
        }
    }
}

/// One loaded snapshot of the exposed schemas.
#[derive(Debug, Default, PartialEq)]
pub struct Schema {
    /// The exposed schemas, first is the default profile.
    pub schemas: Vec<String>,
    relations: HashMap<(String, String), Relation>,
    functions: HashMap<(String, String), Vec<Function>>,
    /// Foreign keys among exposed relations.
    pub fks: Vec<ForeignKey>,
    /// Castable types: name → (schema, typname).
    types: HashMap<String, (String, String)>,
    /// The schema of PostGIS's `st_asgeojson`, when PostGIS is installed in
    /// the database (`Accept: application/geo+json` needs it).
    pub postgis: Option<String>,
}

impl Schema {
    /// A snapshot built by hand (planner tests, tools without a database).
    pub fn from_parts(
        schemas: Vec<String>,
        relations: Vec<Relation>,
        fks: Vec<ForeignKey>,
        functions: Vec<Function>,
        types: &[(&str, &str)],
    ) -> Schema {
        let mut out = Schema {
            schemas,
            fks,
            ..Default::default()
        };
        for r in relations {
            out.relations.insert((r.schema.clone(), r.name.clone()), r);
        }
        for f in functions {
            out.functions
                .entry((f.schema.clone(), f.name.clone()))
                .or_default()
                .push(f);
        }
        for (s, t) in types {
            out.types
                .insert(t.to_string(), (s.to_string(), t.to_string()));
        }
        out
    }

    /// The relation `schema.name`.
    pub fn relation(&self, schema: &str, name: &str) -> Option<&Relation> {
        self.relations.get(&(schema.to_string(), name.to_string()))
    }

    /// Relations of `schema`, sorted by name.
    pub fn relations_in(&self, schema: &str) -> Vec<&Relation> {
        let mut v: Vec<_> = self
            .relations
            .values()
            .filter(|r| r.schema == schema)
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Overloads of `schema.name`.
    pub fn functions(&self, schema: &str, name: &str) -> &[Function] {
        self.functions
            .get(&(schema.to_string(), name.to_string()))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// The computed field `name` of `rel`: a function of an exposed schema
    /// (`rel`'s own first) taking `rel`'s row as its only argument and
    /// returning one value (PostgREST's computed fields).
    pub fn computed_field(&self, rel: &Relation, name: &str) -> Option<&Function> {
        self.row_functions(rel, name)
            .into_iter()
            .find(|f| !f.set && matches!(f.returns, Returns::Scalar { .. }))
    }

    /// The computed relationship `name` of `rel`: a function taking `rel`'s row
    /// and returning rows of a relation.
    pub fn computed_relationship(&self, rel: &Relation, name: &str) -> Option<&Function> {
        self.row_functions(rel, name)
            .into_iter()
            .find(|f| f.relationship().is_some())
    }

    fn row_functions(&self, rel: &Relation, name: &str) -> Vec<&Function> {
        let own = std::iter::once(rel.schema.as_str());
        let others = self
            .schemas
            .iter()
            .map(String::as_str)
            .filter(|s| *s != rel.schema);
        own.chain(others)
            .flat_map(|s| self.functions(s, name))
            .filter(|f| {
                f.args.len() == 1
                    && f.row_arg
                        .as_ref()
                        .is_some_and(|(s, t)| *s == rel.schema && *t == rel.name)
            })
            .collect()
    }

    /// Functions of `schema`, sorted by name.
    pub fn functions_in(&self, schema: &str) -> Vec<&Function> {
        let mut v: Vec<_> = self
            .functions
            .values()
            .flatten()
            .filter(|f| f.schema == schema)
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// The type a `::cast` names, as `(schema, typname)`; common SQL spellings
    /// (`int`, `integer`, `bigint`, `text`…) are accepted as PostgreSQL does.
    pub fn cast_type(&self, name: &str) -> Option<&(String, String)> {
        let canonical = match name {
            "int" | "integer" => "int4",
            "smallint" => "int2",
            "bigint" => "int8",
            "real" => "float4",
            "float" | "double precision" => "float8",
            "boolean" => "bool",
            "decimal" => "numeric",
            "character varying" => "varchar",
            "timestamp with time zone" => "timestamptz",
            "timestamp without time zone" => "timestamp",
            other => other,
        };
        self.types.get(canonical)
    }

    /// Number of relations and functions (for the admin endpoint and logs).
    pub fn counts(&self) -> (usize, usize) {
        (
            self.relations.len(),
            self.functions.values().map(Vec::len).sum(),
        )
    }
}

/// Reads the catalog for `schemas` (as a role that can see them; the cache only
/// describes, privileges are still checked as the caller when a query runs).
pub async fn load(
    client: &impl GenericClient,
    schemas: &[String],
) -> Result<Schema, tokio_postgres::Error> {
    let mut out = Schema {
        schemas: schemas.to_vec(),
        ..Default::default()
    };
    for row in client.query(RELATIONS, &[&schemas]).await? {
        let kind = match row.get::<_, &str>(2) {
            "v" | "m" => RelKind::View,
            "f" => RelKind::Foreign,
            _ => RelKind::Table,
        };
        let columns: Vec<Column> = serde_json::from_str(row.get::<_, &str>(3)).unwrap_or_default();
        let rel = Relation {
            schema: row.get(0),
            name: row.get(1),
            kind,
            columns,
            pk: row.get(4),
            comment: row.get(5),
        };
        out.relations
            .insert((rel.schema.clone(), rel.name.clone()), rel);
    }
    let mut all_fks = Vec::new();
    for row in client.query(FOREIGN_KEYS, &[]).await? {
        all_fks.push(ForeignKey {
            name: row.get(0),
            from: (row.get(1), row.get(2)),
            from_cols: row.get(3),
            to: (row.get(4), row.get(5)),
            to_cols: row.get(6),
            one_to_one: row.get(7),
        });
    }
    let origins = super::view_origins::ViewOrigins::load(client).await?;
    let exposed = |(s, _): &(String, String)| schemas.contains(s);
    out.fks = all_fks
        .iter()
        .filter(|fk| exposed(&fk.from) && exposed(&fk.to))
        .cloned()
        .collect();
    let views: Vec<(String, String)> = out
        .relations
        .values()
        .filter(|r| r.kind == RelKind::View)
        .map(|r| (r.schema.clone(), r.name.clone()))
        .collect();
    out.fks
        .extend(origins.view_keys(&views, &all_fks, &exposed));
    // A view's primary key: its base table's, when the view shows all of it.
    for v in &views {
        let Some(rel) = out.relations.get(v) else {
            continue;
        };
        let pk = origins.base_pk(v, &out.relations);
        if rel.pk.is_empty() && !pk.is_empty() {
            if let Some(rel) = out.relations.get_mut(v) {
                rel.pk = pk;
            }
        }
    }
    for row in client.query(FUNCTIONS, &[&schemas]).await? {
        if let Some(f) = function_from_row(&row) {
            out.functions
                .entry((f.schema.clone(), f.name.clone()))
                .or_default()
                .push(f);
        }
    }
    out.postgis = client.query_opt(POSTGIS, &[]).await?.map(|row| row.get(0));
    for row in client.query(TYPES, &[&schemas]).await? {
        let (schema, name): (String, String) = (row.get(0), row.get(1));
        // pg_catalog wins over a same-named type in an exposed schema.
        if schema == "pg_catalog" || !out.types.contains_key(&name) {
            out.types.insert(name.clone(), (schema, name));
        }
    }
    Ok(out)
}

fn function_from_row(row: &tokio_postgres::Row) -> Option<Function> {
    let names: Vec<String> = row.get(2);
    let modes: Vec<String> = row.get(3);
    let types: Vec<String> = row.get(4);
    let n_defaults: i16 = row.get(5);
    let set: bool = row.get(6);
    let ret_type: String = row.get(7);
    let ret_cols: Option<&str> = row.get(8);
    let ret_table: Option<(String, String)> = match (row.get(9), row.get(10)) {
        (Some(s), Some(t)) => Some((s, t)),
        _ => None,
    };
    let mut args = Vec::new();
    let mut outs = Vec::new();
    for (i, ty) in types.iter().enumerate() {
        let mode = modes.get(i).map(String::as_str).unwrap_or("i");
        let name = names.get(i).cloned().unwrap_or_default();
        match mode {
            "i" | "b" | "v" => args.push(Arg {
                name: name.clone(),
                type_sql: ty.clone(),
                has_default: false,
                variadic: mode == "v",
            }),
            _ => {}
        }
        if matches!(mode, "o" | "b" | "t") {
            outs.push(Column {
                typname: String::new(),
                name,
                type_sql: ty.clone(),
                nullable: true,
                default: None,
                generated: false,
            });
        }
    }
    let n = args.len();
    for a in args
        .iter_mut()
        .skip(n.saturating_sub(n_defaults.max(0) as usize))
    {
        a.has_default = true;
    }
    let returns = if ret_type == "void" {
        Returns::Void
    } else if let Some(cols) = ret_cols {
        Returns::Rows {
            columns: serde_json::from_str(cols).ok()?,
            table: ret_table,
        }
    } else if ret_type == "record" && !outs.is_empty() {
        Returns::Rows {
            columns: outs,
            table: None,
        }
    } else if ret_type == "record" || ret_type == "trigger" || ret_type == "event_trigger" {
        return None;
    } else {
        Returns::Scalar { type_sql: ret_type }
    };
    Some(Function {
        schema: row.get(0),
        name: row.get(1),
        args,
        returns,
        set,
        volatility: row.get::<_, String>(11).chars().next().unwrap_or('v'),
        comment: row.get(12),
        row_arg: match (row.get(13), row.get(14)) {
            (Some(s), Some(t)) => Some((s, t)),
            _ => None,
        },
        one_row: row.get::<_, f32>(15) == 1.0,
        ret_typname: row.get(16),
    })
}

const RELATIONS: &str = "
SELECT n.nspname::text, c.relname::text, c.relkind::text,
  coalesce(json_agg(json_build_object(
      'name', a.attname, 'type', format_type(a.atttypid, a.atttypmod), 'typname', t.typname,
      'nullable', NOT a.attnotnull,
      'default', CASE WHEN a.attidentity = 'd' THEN format('nextval(%L::regclass)',
          pg_get_serial_sequence(format('%I.%I', n.nspname, c.relname), a.attname))
        ELSE pg_get_expr(d.adbin, d.adrelid) END,
      'generated', a.attidentity <> '' OR a.attgenerated <> '')
    ORDER BY a.attnum) FILTER (WHERE a.attnum IS NOT NULL), '[]')::text,
  coalesce((SELECT array_agg(pa.attname::text ORDER BY k.ord)
    FROM pg_constraint pc CROSS JOIN LATERAL unnest(pc.conkey) WITH ORDINALITY k(num, ord)
    JOIN pg_attribute pa ON pa.attrelid = pc.conrelid AND pa.attnum = k.num
    WHERE pc.conrelid = c.oid AND pc.contype = 'p'), '{}'),
  obj_description(c.oid, 'pg_class')
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
WHERE n.nspname = ANY($1) AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
GROUP BY n.nspname, c.relname, c.relkind, c.oid";

const FOREIGN_KEYS: &str = "
SELECT c.conname::text, n1.nspname::text, r1.relname::text,
  (SELECT array_agg(a.attname::text ORDER BY k.ord) FROM unnest(c.conkey) WITH ORDINALITY k(num, ord)
     JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.num),
  n2.nspname::text, r2.relname::text,
  (SELECT array_agg(a.attname::text ORDER BY k.ord) FROM unnest(c.confkey) WITH ORDINALITY k(num, ord)
     JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.num),
  EXISTS (SELECT 1 FROM pg_constraint u
    WHERE u.conrelid = c.conrelid AND u.contype IN ('p', 'u')
      AND (SELECT array_agg(x ORDER BY x) FROM unnest(u.conkey) x)
        = (SELECT array_agg(x ORDER BY x) FROM unnest(c.conkey) x))
FROM pg_constraint c
JOIN pg_class r1 ON r1.oid = c.conrelid JOIN pg_namespace n1 ON n1.oid = r1.relnamespace
JOIN pg_class r2 ON r2.oid = c.confrelid JOIN pg_namespace n2 ON n2.oid = r2.relnamespace
WHERE c.contype = 'f' AND c.conparentid = 0
  AND n1.nspname NOT IN ('pg_catalog', 'information_schema')
ORDER BY c.conrelid, c.conname";

const FUNCTIONS: &str = "
SELECT n.nspname::text, p.proname::text,
  coalesce(p.proargnames, '{}')::text[],
  coalesce(p.proargmodes::text[], '{}'),
  (SELECT coalesce(array_agg(format_type(x.t, NULL) ORDER BY x.o), '{}')
     FROM unnest(coalesce(p.proallargtypes, p.proargtypes::oid[])) WITH ORDINALITY x(t, o)),
  p.pronargdefaults, p.proretset, format_type(p.prorettype, NULL),
  CASE WHEN rt.typrelid <> 0 THEN (SELECT json_agg(json_build_object(
      'name', a.attname, 'type', format_type(a.atttypid, a.atttypmod), 'typname', at.typname)
      ORDER BY a.attnum)
    FROM pg_attribute a JOIN pg_type at ON at.oid = a.atttypid
    WHERE a.attrelid = rt.typrelid AND a.attnum > 0 AND NOT a.attisdropped)::text END,
  rn.nspname::text, rc.relname::text,
  p.provolatile::text,
  obj_description(p.oid, 'pg_proc'),
  an.nspname::text, ac.relname::text,
  p.prorows, rt.typname::text
FROM pg_proc p
JOIN pg_namespace n ON n.oid = p.pronamespace
JOIN pg_type rt ON rt.oid = p.prorettype
LEFT JOIN pg_class rc ON rc.oid = rt.typrelid AND rc.relkind IN ('r', 'p', 'v', 'm', 'f')
LEFT JOIN pg_namespace rn ON rn.oid = rc.relnamespace
LEFT JOIN pg_class ac ON p.pronargs = 1 AND ac.reltype = p.proargtypes[0]
  AND ac.relkind IN ('r', 'p', 'v', 'm', 'f')
LEFT JOIN pg_namespace an ON an.oid = ac.relnamespace
WHERE n.nspname = ANY($1) AND p.prokind = 'f'";

const POSTGIS: &str = "
SELECT n.nspname::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE p.proname = 'st_asgeojson' ORDER BY n.nspname LIMIT 1";

const TYPES: &str = "
SELECT n.nspname::text, t.typname::text
FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE (n.nspname = 'pg_catalog' OR n.nspname = ANY($1))
  AND t.typtype IN ('b', 'd', 'e', 'r', 'm') AND t.typname !~ '^_'
  AND t.typisdefined";

/// The current schema snapshot and its version, shared by every request. A
/// reload builds a new [`Schema`] and swaps the pointer; requests in flight keep
/// the snapshot they started with.
#[derive(Default)]
pub struct SchemaCache {
    current: arc_swap::ArcSwapOption<Schema>,
    version: AtomicU64,
}

impl SchemaCache {
    /// An empty cache (version 0: nothing loaded yet).
    pub fn new() -> SchemaCache {
        SchemaCache::default()
    }

    /// The current snapshot, if one was loaded.
    pub fn get(&self) -> Option<Arc<Schema>> {
        self.current.load_full()
    }

    /// How many times a snapshot was installed; tests wait for it to move past a
    /// value they saw before their DDL, instead of sleeping.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Installs `schema` and bumps the version.
    pub fn install(&self, schema: Schema) -> u64 {
        self.current.store(Some(Arc::new(schema)));
        self.version.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Loads a fresh snapshot and installs it (the old one keeps serving while
    /// this runs).
    pub async fn reload(
        &self,
        client: &impl GenericClient,
        schemas: &[String],
    ) -> Result<u64, tokio_postgres::Error> {
        let s = load(client, schemas).await?;
        Ok(self.install(s))
    }
}
