//! Which schema a data request works in (PostgREST's "profile"), and which
//! schemas can never be one. `/rest/v1` (profile headers, the OpenAPI root) and
//! guests' data calls resolve through here, so a name is exposed by one rule.

use super::{DataError, Schema};

/// The default profile when no schema is exposed at all (configuration
/// refuses an empty list; a hand-built snapshot may have one).
const FALLBACK: &str = "public";

impl Schema {
    /// The schema a request works in: the one its profile names
    /// (`Accept-Profile`/`Content-Profile`, a guest's `schema`), which must be
    /// exposed (PGRST106 otherwise), or else the default profile, the first
    /// exposed schema. The check is by equality with the exposed list, so a
    /// profile can never name anything else.
    pub fn profile(&self, wanted: Option<&str>) -> Result<&str, DataError> {
        match wanted {
            Some(w) => self
                .schemas
                .iter()
                .find(|s| *s == w)
                .map(String::as_str)
                .ok_or_else(|| not_exposed(w, &self.schemas)),
            None => Ok(self.schemas.first().map_or(FALLBACK, String::as_str)),
        }
    }
}

/// PGRST106: a profile named a schema that is not exposed.
pub fn not_exposed(wanted: &str, exposed: &[String]) -> DataError {
    DataError::schema_not_exposed(wanted, exposed)
}

/// Whether `schema` belongs to the platform or to PostgreSQL itself (`auth`,
/// `wasmbase`, `information_schema`, `pg_*`): the platform's roles read its
/// tables, so it can never be exposed to the data API nor given a project's
/// policies.
pub fn is_platform_schema(schema: &str) -> bool {
    matches!(
        schema,
        "auth" | "storage" | "wasmbase" | "information_schema"
    ) || schema.starts_with("pg_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profile_is_an_exposed_schema_or_the_first() {
        let s = Schema::from_parts(
            vec!["api".into(), "public".into()],
            vec![],
            vec![],
            vec![],
            &[],
        );
        assert_eq!(s.profile(None).unwrap(), "api");
        assert_eq!(s.profile(Some("public")).unwrap(), "public");
        assert_eq!(s.profile(Some("auth")).unwrap_err().code, "PGRST106");
        assert_eq!(Schema::default().profile(None).unwrap(), "public");
    }

    #[test]
    fn platform_schemas() {
        for s in [
            "auth",
            "wasmbase",
            "information_schema",
            "pg_catalog",
            "pg_toast",
        ] {
            assert!(is_platform_schema(s), "{s}");
        }
        for s in ["public", "api", "authx", "pgx"] {
            assert!(!is_platform_schema(s), "{s}");
        }
    }
}
