//! GitHub's user: `/user` for the profile and `/user/emails` for the addresses
//! with GitHub's own verified flags (the profile's `email` is whatever the user
//! made public and says nothing about verification).

use super::client::Client;
use super::{ProviderError, ProviderUser};
use serde_json::{json, Value};

/// The GitHub user behind `token`.
pub async fn user(client: &Client, api: &str, token: &str) -> Result<ProviderUser, ProviderError> {
    let u = client.get_json(&format!("{api}/user"), Some(token)).await?;
    let id = match &u["id"] {
        Value::Number(n) => n.to_string(),
        Value::String(s) if !s.is_empty() => s.clone(),
        _ => return Err(ProviderError::Garbage("GitHub's user has no id".into())),
    };
    let emails = client
        .get_json(&format!("{api}/user/emails"), Some(token))
        .await?;
    let list = emails
        .as_array()
        .ok_or_else(|| ProviderError::Garbage("GitHub's e-mail list is not a list".into()))?;
    let entry = |primary_only: bool, verified_only: bool| {
        list.iter().find(|e| {
            (!primary_only || e["primary"] == json!(true))
                && (!verified_only || e["verified"] == json!(true))
                && e["email"].as_str().is_some_and(|s| !s.is_empty())
        })
    };
    // The primary address if verified, else any verified one, else the primary.
    let chosen = entry(true, true)
        .or_else(|| entry(false, true))
        .or_else(|| entry(true, false));
    let email = chosen
        .and_then(|e| e["email"].as_str())
        .map(str::to_ascii_lowercase);
    let verified = chosen.is_some_and(|e| e["verified"] == json!(true));
    let text = |k: &str| u.get(k).and_then(Value::as_str).map(str::to_string);
    Ok(ProviderUser::new(
        api,
        id,
        email,
        verified,
        text("name"),
        text("avatar_url"),
        json!({
            "user_name": text("login"),
            "preferred_username": text("login"),
        }),
    ))
}
