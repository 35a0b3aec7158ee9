//! The one identity type that travels from the key/JWT layer to every database call.

use serde_json::{json, Value};
use std::sync::Arc;

/// The PostgreSQL role a request runs as. Closed set on purpose: nothing a client
/// sends can name any other role (in particular not the owner or a superuser).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Unauthenticated callers (publishable key, anon JWT key).
    Anon,
    /// Signed-in users (a user JWT with `role = authenticated`).
    Authenticated,
    /// Trusted servers (secret key, service_role JWT key); bypasses RLS.
    ServiceRole,
}

impl Role {
    /// The database role name, also the value of the `role` claim.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Anon => "anon",
            Role::Authenticated => "authenticated",
            Role::ServiceRole => "service_role",
        }
    }

    /// Parses a `role` claim; `None` for anything outside the closed set.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "anon" => Some(Role::Anon),
            "authenticated" => Some(Role::Authenticated),
            "service_role" => Some(Role::ServiceRole),
            _ => None,
        }
    }
}

/// Who is calling: the role the transaction switches to and the JWT claims that
/// `auth.uid()`, `auth.role()` and `auth.jwt()` read inside it.
///
/// Claims are shared (`Arc`) and pre-serialised once, because every database call
/// of the request sends them to PostgreSQL.
#[derive(Debug, Clone)]
pub struct Principal {
    /// Role to `SET LOCAL ROLE` to.
    pub role: Role,
    /// The verified claims (or the synthetic `{"role": ...}` of an opaque key).
    pub claims: Arc<Value>,
    /// `claims` as JSON text, sent as `request.jwt.claims`.
    pub claims_json: Arc<str>,
}

impl Principal {
    /// Builds a principal from verified claims.
    pub fn new(role: Role, claims: Value) -> Principal {
        let claims_json: Arc<str> = claims.to_string().into();
        Principal {
            role,
            claims: Arc::new(claims),
            claims_json,
        }
    }

    /// The principal of an opaque key or an internal caller with no user: claims are
    /// just `{"role": <role>}`, as Supabase gives for `sb_publishable_` / `sb_secret_`.
    pub fn for_role(role: Role) -> Principal {
        Principal::new(role, json!({ "role": role.as_str() }))
    }

    /// The user id (`sub`), when the principal is a user.
    pub fn user_id(&self) -> Option<&str> {
        self.claims.get("sub").and_then(Value::as_str)
    }

    /// True for the service role (secret key or service_role JWT).
    pub fn is_service(&self) -> bool {
        self.role == Role::ServiceRole
    }
}
