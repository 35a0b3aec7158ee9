//! `wasmbase token`: mints a JWT signed with the project's secret, for trying
//! policies by hand. Admin and tenant are claims in `app_metadata`, never roles.

use super::cli_config;
use anyhow::{bail, Context};
use serde_json::{json, Value};
use wasmbase_host_api::jwt::JwtKeys;

/// Arguments of `token`.
#[derive(clap::Args)]
pub struct Args {
    /// anon, authenticated or service_role.
    #[arg(long)]
    role: String,
    /// The user id (`sub`); required by `auth.uid()` policies.
    #[arg(long)]
    sub: Option<uuid::Uuid>,
    /// The user's email claim.
    #[arg(long)]
    email: Option<String>,
    /// Sets app_metadata.role = "admin".
    #[arg(long)]
    admin: bool,
    /// Sets app_metadata.org_id (the tenant).
    #[arg(long)]
    org_id: Option<uuid::Uuid>,
    /// Extra claims as a JSON object, merged last.
    #[arg(long)]
    claims: Option<String>,
    /// Lifetime, e.g. 15m, 1h, 7d.
    #[arg(long, default_value = "1h")]
    expires_in: humantime::Duration,
    /// Config file (for auth.jwt_secret); default wasmbase.toml or .wasmbase/dev.json.
    #[arg(long, short)]
    config: Option<std::path::PathBuf>,
}

/// Builds the claims and prints the signed token.
pub fn run(a: Args) -> anyhow::Result<()> {
    let cfg = cli_config(a.config.as_deref())?;
    let secret = cfg.auth.jwt_secret.as_deref().context(
        "no JWT secret: set WASMBASE_AUTH_JWT_SECRET or auth.jwt_secret, or run inside a project where `wasmbase dev` has run",
    )?;
    let keys = JwtKeys::hs256(secret, None, &cfg.auth.jwt_issuer).map_err(anyhow::Error::msg)?;
    let claims = build_claims(&a, &cfg.auth.jwt_audience, keys.issuer())?;
    println!("{}", keys.sign(&claims)?);
    Ok(())
}

fn build_claims(a: &Args, audience: &str, issuer: &str) -> anyhow::Result<Value> {
    if wasmbase_host_api::Role::parse(&a.role).is_none() {
        bail!(
            "--role must be anon, authenticated or service_role (got '{}')",
            a.role
        );
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let mut c = json!({
        "role": a.role,
        "iss": issuer,
        "iat": now,
        "exp": now + a.expires_in.as_secs(),
    });
    if a.role == "authenticated" && !audience.is_empty() {
        c["aud"] = json!(audience);
    }
    if let Some(sub) = a.sub {
        c["sub"] = json!(sub.to_string());
    }
    if let Some(e) = &a.email {
        c["email"] = json!(e);
    }
    let mut app = serde_json::Map::new();
    if a.admin {
        app.insert("role".into(), json!("admin"));
    }
    if let Some(o) = a.org_id {
        app.insert("org_id".into(), json!(o.to_string()));
    }
    if !app.is_empty() {
        c["app_metadata"] = Value::Object(app);
    }
    if let Some(extra) = &a.claims {
        let extra: Value = serde_json::from_str(extra).context("--claims is not valid JSON")?;
        let Value::Object(extra) = extra else {
            bail!("--claims must be a JSON object")
        };
        for (k, v) in extra {
            c[k] = v;
        }
    }
    Ok(c)
}
