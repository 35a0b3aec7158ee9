//! The platform audit log (`wasmbase.audit_log`): who did what to which object.
//! Callers pass no secrets here; details are for ids, kinds and names only.

use tokio_postgres::GenericClient;

/// Appends one entry to the audit log.
pub async fn record(
    client: &impl GenericClient,
    actor: &str,
    action: &str,
    target: &str,
    details: serde_json::Value,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "INSERT INTO wasmbase.audit_log (actor, action, target, details) VALUES ($1, $2, $3, $4)",
            &[&actor, &action, &target, &details],
        )
        .await?;
    Ok(())
}
