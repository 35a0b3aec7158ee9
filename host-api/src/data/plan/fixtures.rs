//! The small schema and request builders the planner's unit tests share.

use super::{plan, Limits, Statement};
use crate::data::error::DataError;
use crate::data::parse::parse_query;
use crate::data::request::{Action, Query, Request, Return};
use crate::data::schema::{Arg, Column, ForeignKey, Function, RelKind, Relation, Returns, Schema};

/// A nullable column without default.
pub fn col(name: &str, typname: &str) -> Column {
    Column {
        name: name.into(),
        type_sql: typname.into(),
        typname: typname.into(),
        nullable: true,
        default: None,
        generated: false,
    }
}

/// `items` (with a foreign key to `authors`) and `authors` in `public`.
pub fn schema() -> Schema {
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
                    col("parent_id", "int8"),
                ],
            ),
            rel("authors", vec![col("id", "int8"), col("name", "text")]),
        ],
        vec![
            ForeignKey {
                name: "items_author_id_fkey".into(),
                from: ("public".into(), "items".into()),
                from_cols: vec!["author_id".into()],
                to: ("public".into(), "authors".into()),
                to_cols: vec!["id".into()],
                one_to_one: false,
            },
            // Self-referencing: items.parent_id → items.id.
            ForeignKey {
                name: "items_parent_id_fkey".into(),
                from: ("public".into(), "items".into()),
                from_cols: vec!["parent_id".into()],
                to: ("public".into(), "items".into()),
                to_cols: vec!["id".into()],
                one_to_one: false,
            },
        ],
        // A computed field of items: `label(items) returns text`.
        vec![Function {
            schema: "public".into(),
            name: "label".into(),
            args: vec![Arg {
                name: String::new(),
                type_sql: "items".into(),
                has_default: false,
                variadic: false,
            }],
            returns: Returns::Scalar {
                type_sql: "text".into(),
            },
            set: false,
            volatility: 's',
            comment: None,
            row_arg: Some(("public".into(), "items".into())),
            one_row: false,
            ret_typname: "text".into(),
        }],
        &[("pg_catalog", "text"), ("pg_catalog", "int4")],
    )
}

/// Plans a read of `items` with query string `qs`.
pub fn read(qs: &str) -> Result<Statement, DataError> {
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(qs.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let req = request("items", Action::Read, parse_query(&pairs)?);
    plan(&schema(), &req, &limits(1000))
}

/// A request on `public.relation` with no body, count or preferences.
pub fn request(relation: &str, action: Action, query: Query) -> Request {
    Request {
        schema: "public".into(),
        relation: relation.into(),
        read_only: action == Action::Read,
        action,
        query,
        body: None,
        count: None,
        returning: Return::Minimal,
        single: false,
        head: false,
        max_affected: None,
        rollback: false,
        csv: false,
        strip_nulls: false,
        explain: None,
        geojson: false,
    }
}

/// Limits returning at most `max_rows`, refusing unfiltered writes.
pub fn limits(max_rows: i64) -> Limits {
    Limits {
        max_rows,
        allow_unfiltered_writes: false,
        aggregates: true,
    }
}
