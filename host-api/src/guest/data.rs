//! `wasmbase:platform/data`: structured requests run through the data API's
//! planner ([`crate::data::execute`]), exactly as `/rest/v1` runs them, as the
//! function's principal (the caller, or service_role with `db = "service"`).

use super::bindings::wasmbase::platform::data::{
    Action, Filter, Host, OnConflict, Request as GuestRequest, Rows,
};
use super::{error, DbAccess, GuestCtx, GuestError};
use crate::data::parse::{
    order_term, parse_filter_value, parse_query, parse_select, split_filter_key,
};
use crate::data::request::{
    Action as DataAction, Condition, Count, Query, Request, Resolution, Return,
};
use crate::data::{self, DataError, ExecSettings};

impl GuestCtx {
    fn db_access(&self) -> Result<DbAccess, GuestError> {
        self.db.clone().ok_or_else(|| {
            error(403, "WB403", "this function has no database grant (set db = \"caller\" or \"service\" in function.toml)")
        })
    }

    /// Runs `req` in the schema the guest named (`wanted`) or the default
    /// profile, resolved like `/rest/v1`'s profile headers.
    async fn run_data(
        &mut self,
        db: DbAccess,
        wanted: Option<String>,
        mut req: Request,
    ) -> Result<Rows, GuestError> {
        let schema = db
            .schema
            .get()
            .ok_or_else(|| error(503, "PGRST002", "the schema cache is not loaded yet"))?;
        req.schema = schema.profile(wanted.as_deref())?.to_string();
        let _permit = db
            .permits
            .acquire()
            .await
            .map_err(|_| error(503, "WB503", "database access is shutting down"))?;
        // What is left of the call once a permit is in hand.
        let settings = ExecSettings {
            timeout: self.db_timeout(db.statement_timeout)?,
            cache_size: db.cache_size,
            schema_version: db.schema.version(),
            cost: &db.cost,
        };
        let (_, out) = data::execute(
            &db.pool,
            &schema,
            &db.principal,
            &settings,
            &db.limits,
            &req,
        )
        .await?;
        Ok(Rows {
            json: out.body.unwrap_or_else(|| "null".into()),
            affected: out.rows.max(0) as u64,
            total: out.total.map(|t| t.max(0) as u64),
        })
    }
}

/// Filters of a structured call → conditions of `q`, by level. The column and
/// condition arrive separately, so they are never re-joined into a query
/// string: a column named `order`, `limit`, `select` or `columns` is a column
/// like any other. Only a condition in parentheses on `or`/`and`/`not.or`/
/// `not.and` is a logic tree (a plain filter's condition starts with an
/// operator), so a column named `or` can be filtered too.
fn add_filters(q: &mut Query, filters: &[Filter]) -> Result<(), DataError> {
    for f in filters {
        let last = f.column.rsplit('.').next().unwrap_or_default();
        let tree = matches!(last, "or" | "and")
            && f.condition.trim_start().starts_with('(')
            && !f.column.contains("->");
        if tree {
            // A logic tree: PostgREST's own grammar for it, nothing else in the pair.
            let parsed = parse_query(&[(f.column.clone(), f.condition.clone())])?;
            for (path, mods) in parsed.levels {
                q.levels
                    .entry(path)
                    .or_default()
                    .conditions
                    .extend(mods.conditions);
            }
            continue;
        }
        let (path, field) = split_filter_key(&f.column)?;
        let filter = parse_filter_value(field, &f.condition)?;
        q.levels
            .entry(path)
            .or_default()
            .conditions
            .push(Condition::Filter(filter));
    }
    Ok(())
}

/// A structured `run` call → the planner's typed [`Query`], built directly
/// (see [`add_filters`]).
fn structured_query(r: &GuestRequest) -> Result<Query, DataError> {
    let mut q = Query::default();
    if let Some(cols) = &r.columns {
        q.select = parse_select(cols)?;
    }
    add_filters(&mut q, &r.filters)?;
    let count = |what: &str, n: Option<u64>| -> Result<Option<i64>, DataError> {
        n.map(|n| i64::try_from(n).map_err(|_| DataError::parse(what, format!("{n} is too large"))))
            .transpose()
    };
    let mut order = Vec::new();
    for o in &r.order {
        order.push(order_term(&o.column, o.descending, o.nulls_first)?);
    }
    let (limit, offset) = (count("limit", r.limit)?, count("offset", r.offset)?);
    if !order.is_empty() || limit.is_some() || offset.is_some() {
        let root = q.root_mut();
        root.order = order;
        root.limit = limit;
        root.offset = offset;
    }
    Ok(q)
}

impl Host for GuestCtx {
    async fn run(&mut self, r: GuestRequest) -> Result<Rows, GuestError> {
        let db = self.db_access()?;
        let query = structured_query(&r)?;
        let action = match r.action {
            Action::Select => DataAction::Read,
            Action::Insert => DataAction::Insert {
                resolution: match r.conflict {
                    OnConflict::Error => None,
                    OnConflict::Merge => Some(Resolution::Merge),
                    OnConflict::Ignore => Some(Resolution::Ignore),
                },
                on_conflict: (!r.conflict_columns.is_empty()).then(|| r.conflict_columns.clone()),
                columns: None,
                missing_default: false,
            },
            Action::Update => DataAction::Update,
            Action::Delete => DataAction::Delete,
        };
        let read = r.action == Action::Select;
        let req = Request {
            schema: String::new(),
            relation: r.table,
            action,
            query,
            body: r.body,
            count: r.count.then_some(Count::Exact),
            returning: if r.returning {
                Return::Representation
            } else {
                Return::Minimal
            },
            single: false,
            read_only: read,
            head: false,
            max_affected: None,
            rollback: false,
            csv: false,
            strip_nulls: false,
            explain: None,
            geojson: false,
        };
        self.run_data(db, r.schema, req).await
    }

    async fn rpc(
        &mut self,
        schema: Option<String>,
        function: String,
        args: String,
        filters: Vec<Filter>,
    ) -> Result<Rows, GuestError> {
        let db = self.db_access()?;
        let mut query = Query::default();
        add_filters(&mut query, &filters)?;
        let req = Request {
            schema: String::new(),
            relation: String::new(),
            action: DataAction::Call {
                function,
                body: Default::default(),
            },
            query,
            body: Some(args),
            count: None,
            returning: Return::Representation,
            single: false,
            read_only: false,
            head: false,
            max_affected: None,
            rollback: false,
            csv: false,
            strip_nulls: false,
            explain: None,
            geojson: false,
        };
        self.run_data(db, schema, req).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::request::{Field, Filter as DataFilter, Op, Operand};
    use crate::guest::bindings::wasmbase::platform::data::Order;

    fn filter(column: &str, condition: &str) -> Filter {
        Filter {
            column: column.into(),
            condition: condition.into(),
        }
    }

    fn request(filters: Vec<Filter>) -> GuestRequest {
        GuestRequest {
            schema: None,
            table: "t".into(),
            action: Action::Select,
            columns: Some("id".into()),
            filters,
            order: vec![Order {
                column: "limit".into(),
                descending: true,
                nulls_first: None,
            }],
            limit: Some(3),
            offset: None,
            count: false,
            body: None,
            conflict: OnConflict::Error,
            conflict_columns: Vec::new(),
            returning: false,
        }
    }

    fn eq(column: &str, v: &str) -> Condition {
        Condition::Filter(DataFilter {
            field: Field::col(column),
            negate: false,
            op: Op::Eq,
            config: None,
            quantifier: None,
            operand: Operand::Value(v.into()),
        })
    }

    #[test]
    fn columns_named_like_keywords_are_filtered_not_obeyed() {
        let q = structured_query(&request(vec![
            filter("order", "eq.1"),
            filter("limit", "eq.2"),
            filter("select", "eq.3"),
            filter("offset", "eq.4"),
            filter("or", "eq.5"),
            filter("columns", "eq.6"),
        ]))
        .unwrap();
        let root = q.root().unwrap();
        assert_eq!(
            root.conditions,
            vec![
                eq("order", "1"),
                eq("limit", "2"),
                eq("select", "3"),
                eq("offset", "4"),
                eq("or", "5"),
                eq("columns", "6"),
            ]
        );
        // The request's own select, order and limit are untouched by them.
        assert_eq!(q.select.len(), 1);
        assert_eq!(root.limit, Some(3));
        assert_eq!(root.order.len(), 1);
        assert_eq!(root.order[0].field, Field::col("limit"));
        assert!(root.order[0].desc);
    }

    #[test]
    fn logic_trees_and_embed_levels_still_work() {
        let mut r = request(vec![
            filter("or", "(a.eq.1,b.eq.2)"),
            filter("items.order", "eq.7"),
        ]);
        r.columns = Some("id,items(order)".into());
        let q = structured_query(&r).unwrap();
        assert!(matches!(
            &q.root().unwrap().conditions[..],
            [Condition::Or(false, items)] if items.len() == 2
        ));
        assert_eq!(
            q.levels[&vec!["items".to_string()]].conditions,
            vec![eq("order", "7")]
        );
        let mut bad = request(vec![]);
        bad.limit = Some(u64::MAX);
        assert_eq!(structured_query(&bad).unwrap_err().code, "PGRST100");
    }
}
