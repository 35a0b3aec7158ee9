//! `wasmbase:platform/data`: structured requests run through the data API's
//! planner ([`crate::data::execute`]), exactly as `/rest/v1` runs them, as the
//! function's principal (the caller, or service_role with `db = "service"`).

use super::bindings::wasmbase::platform::data::{
    Action, Filter, Host, OnConflict, Request as GuestRequest, Rows,
};
use super::{error, DbAccess, GuestCtx, GuestError};
use crate::data::parse::parse_query;
use crate::data::request::{Action as DataAction, Count, Request, Resolution, Return};
use crate::data::{self, ExecSettings};

impl GuestCtx {
    fn db_access(&self) -> Result<DbAccess, GuestError> {
        self.db.clone().ok_or_else(|| {
            error(403, "WB403", "this function has no database grant (set db = \"caller\" or \"service\" in function.toml)")
        })
    }

    async fn run_data(&mut self, db: DbAccess, req: Request) -> Result<Rows, GuestError> {
        let schema = db
            .schema
            .get()
            .ok_or_else(|| error(503, "PGRST002", "the schema cache is not loaded yet"))?;
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

fn pairs(filters: &[Filter]) -> Vec<(String, String)> {
    filters
        .iter()
        .map(|f| (f.column.clone(), f.condition.clone()))
        .collect()
}

fn schema_name(db: &DbAccess, wanted: Option<String>) -> String {
    wanted.unwrap_or_else(|| {
        db.schema
            .get()
            .and_then(|s| s.schemas.first().cloned())
            .unwrap_or_else(|| "public".into())
    })
}

impl Host for GuestCtx {
    async fn run(&mut self, r: GuestRequest) -> Result<Rows, GuestError> {
        let db = self.db_access()?;
        let mut pairs = pairs(&r.filters);
        if let Some(cols) = &r.columns {
            pairs.push(("select".into(), cols.clone()));
        }
        if !r.order.is_empty() {
            let terms: Vec<String> = r
                .order
                .iter()
                .map(|o| {
                    let mut t = o.column.clone();
                    t.push_str(if o.descending { ".desc" } else { ".asc" });
                    match o.nulls_first {
                        Some(true) => t.push_str(".nullsfirst"),
                        Some(false) => t.push_str(".nullslast"),
                        None => {}
                    }
                    t
                })
                .collect();
            pairs.push(("order".into(), terms.join(",")));
        }
        if let Some(l) = r.limit {
            pairs.push(("limit".into(), l.to_string()));
        }
        if let Some(o) = r.offset {
            pairs.push(("offset".into(), o.to_string()));
        }
        let query = parse_query(&pairs)?;
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
            schema: schema_name(&db, r.schema),
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
        };
        self.run_data(db, req).await
    }

    async fn rpc(
        &mut self,
        schema: Option<String>,
        function: String,
        args: String,
        filters: Vec<Filter>,
    ) -> Result<Rows, GuestError> {
        let db = self.db_access()?;
        let query = parse_query(&pairs(&filters))?;
        let req = Request {
            schema: schema_name(&db, schema),
            relation: String::new(),
            action: DataAction::Call { function },
            query,
            body: Some(args),
            count: None,
            returning: Return::Representation,
            single: false,
            read_only: false,
            head: false,
            max_affected: None,
            rollback: false,
        };
        self.run_data(db, req).await
    }
}
