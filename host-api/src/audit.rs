//! The platform audit log (`wasmbase.audit_log`): who did what to which object,
//! under which request. Callers pass no secrets here; details are for ids,
//! kinds, names and version numbers only.

use tokio_postgres::GenericClient;

/// Who made a change: a name for the row's `actor` (`key:service_role`,
/// `user:<id>`, `cli`) and the id that ties the row to the request's log
/// lines and its answer's `X-Request-Id` (the admin API), or to one CLI run.
#[derive(Clone, Copy, Debug)]
pub struct Actor<'a> {
    /// The `actor` column.
    pub name: &'a str,
    /// The `request_id` column (None: not known to the caller).
    pub request_id: Option<&'a str>,
}

impl<'a> Actor<'a> {
    /// `name` acting under request `request_id`.
    pub fn new(name: &'a str, request_id: Option<&'a str>) -> Actor<'a> {
        Actor { name, request_id }
    }
}

impl<'a> From<&'a str> for Actor<'a> {
    fn from(name: &'a str) -> Actor<'a> {
        Actor {
            name,
            request_id: None,
        }
    }
}

impl<'a> From<&'a String> for Actor<'a> {
    fn from(name: &'a String) -> Actor<'a> {
        Actor::from(name.as_str())
    }
}

/// Appends one entry to the audit log.
pub async fn record<'a>(
    client: &impl GenericClient,
    actor: impl Into<Actor<'a>>,
    action: &str,
    target: &str,
    details: serde_json::Value,
) -> Result<(), tokio_postgres::Error> {
    let actor = actor.into();
    client
        .execute(
            "INSERT INTO wasmbase.audit_log (actor, request_id, action, target, details) VALUES ($1, $2, $3, $4, $5)",
            &[&actor.name, &actor.request_id, &action, &target, &details],
        )
        .await?;
    Ok(())
}
