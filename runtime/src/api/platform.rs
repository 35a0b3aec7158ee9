//! `/platform/v1`: platform-level endpoints any valid key may call.
//!
//! `GET /platform/v1/whoami` shows how the server sees the caller — the principal
//! from the key/JWT layer and the database identity its transactions really run
//! with — which is what a developer needs when a policy does not do what they think.

use crate::server::caller::Caller;
use crate::server::error::ApiError;
use crate::server::state::AppState;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use wasmbase_host_api::db;

/// Routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new().route("/platform/v1/whoami", get(whoami))
}

async fn whoami(State(st): State<AppState>, Caller(p): Caller) -> Result<Json<Value>, ApiError> {
    let timeout = st.statement_timeout(&p);
    let row = db::run_as::<_, db::DbError, _>(&st.pool, &db::Acting::principal(&p, timeout), |c| {
        Box::pin(async move {
            Ok(c.query_one(
                "SELECT current_user::text, session_user::text, auth.role(), auth.uid()::text, \
                 (SELECT rolsuper FROM pg_roles WHERE rolname = current_user), \
                 current_setting('statement_timeout')",
                &[],
            )
            .await?)
        })
    })
    .await?;
    Ok(Json(json!({
        "role": p.role.as_str(),
        "claims": &*p.claims,
        "database": {
            "current_user": row.get::<_, String>(0),
            "session_user": row.get::<_, String>(1),
            "auth_role": row.get::<_, Option<String>>(2),
            "auth_uid": row.get::<_, Option<String>>(3),
            "superuser": row.get::<_, bool>(4),
            "statement_timeout": row.get::<_, String>(5),
        }
    })))
}
