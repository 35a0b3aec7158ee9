//! `functions/<name>/function.toml`: what a function is granted.
//!
//! Everything a guest can reach is listed here and nowhere else: the database
//! mode, environment variable names, outbound hosts, and its limits. The
//! component's imports are checked against these grants when it is loaded or
//! deployed.

use serde::{Deserialize, Serialize};
use wasmbase_host_api::guest::realtime::TopicGrants;
use wasmbase_host_api::guest::storage::Grants;

/// How a function may reach the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DbMode {
    /// No database access.
    #[default]
    None,
    /// The data API's planner as the caller (RLS applies).
    Caller,
    /// The data API as `service_role`, plus raw SQL (`wasmbase:platform/sql`).
    Service,
}

impl DbMode {
    /// As written in function.toml.
    pub fn as_str(self) -> &'static str {
        match self {
            DbMode::None => "none",
            DbMode::Caller => "caller",
            DbMode::Service => "service",
        }
    }
}

/// Per-call limits.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Linear memory cap in MiB.
    pub memory_mb: u64,
    /// Wall-clock budget of one call (also bounds its statement timeouts).
    pub timeout_ms: u64,
    /// Calls of this function running at once; more get 503.
    pub max_concurrency: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_mb: 64,
            timeout_ms: 10_000,
            max_concurrency: 32,
        }
    }
}

/// A function's manifest.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Route name: `/functions/v1/<name>` and `/fn/<name>`.
    pub name: String,
    /// The entry file of a JS/TS function, relative to its directory
    /// (default: the first of `index.ts`, `index.js`, … that exists).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub main: Option<String>,
    /// Database access.
    #[serde(default)]
    pub db: DbMode,
    /// Environment variables the guest may read (values from secrets or `.env`).
    #[serde(default)]
    pub env: Vec<String>,
    /// Hosts (`host` or `host:port`) outbound HTTP may reach.
    #[serde(default)]
    pub http: Vec<String>,
    /// Buckets and modes the `storage` interface may use
    /// (`["avatars:read", "uploads:write"]`), as the caller (or service_role
    /// with `db = "service"`).
    #[serde(default)]
    pub storage: Vec<String>,
    /// Realtime topics the `realtime` interface may broadcast to
    /// (`["room:*"]`; `*` matches any run of characters).
    #[serde(default)]
    pub realtime: Vec<String>,
    /// Require a valid key or user JWT (default true, as on Supabase); `false`
    /// for public webhooks (the caller is then anon).
    #[serde(default = "yes")]
    pub verify_jwt: bool,
    /// Answer CORS preflights and add CORS headers (default true).
    #[serde(default = "yes")]
    pub cors: bool,
    /// Limits.
    #[serde(default)]
    pub limits: Limits,
    /// Requests one instance may serve before it is replaced. 1 (the default):
    /// a fresh instance for every request, nothing carried from one caller to
    /// the next. More keeps warm instances between calls, which skips
    /// instantiation but lets globals (caches, and anything else left in
    /// memory) outlive a request: opt in only for functions that keep no
    /// per-caller data. See docs/FUNCTIONS.md.
    #[serde(default = "one")]
    pub reuse: u32,
    /// Schedules that call the component's `cron-handler` export
    /// (`[[cron]]`; docs/CRON.md). Registered as jobs `<function>.<name>`
    /// when the function is deployed (or loaded by `dev`), removed with it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cron: Vec<CronEntry>,
}

/// One `[[cron]]` entry of a manifest.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CronEntry {
    /// What the handler sees as `schedule-event.name`; unique per function.
    pub name: String,
    /// As a job's `schedule`.
    pub schedule: String,
    /// IANA zone (UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// Handed to the handler as JSON text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<serde_json::Value>,
    /// `service_role` (the default) or `anon`: whom the handler's data calls
    /// act as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// One attempt's limit (the function's `limits.timeout_ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<i32>,
    /// Attempts per tick (1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<i32>,
    /// First retry delay (1000 ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_ms: Option<i32>,
    /// `forbid` (default) or `allow`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlap: Option<crate::cron::job::Overlap>,
    /// `skip` (default), `run_once` or `catch_up`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missed: Option<crate::cron::job::Missed>,
    /// With `missed = "catch_up"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catch_up_max: Option<i32>,
    /// `{ after, webhook, email }`: alerts on consecutive failures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<crate::cron::job::AlertSpec>,
}

fn yes() -> bool {
    true
}

fn one() -> u32 {
    1
}

/// Names a function may have: they become URL path segments and file names.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
}

impl Manifest {
    /// Parses and checks a manifest; errors name the key.
    pub fn parse(text: &str) -> Result<Manifest, String> {
        let de = toml::Deserializer::new(text);
        let m: Manifest = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            format!("function.toml: `{path}`: {}", e.inner().message())
        })?;
        m.check()?;
        Ok(m)
    }

    /// Checks values the types cannot.
    pub fn check(&self) -> Result<(), String> {
        if !valid_name(&self.name) {
            return Err(format!(
                "function.toml: `name`: {:?} must be lower-case letters, digits, - or _, starting with a letter (max 64)",
                self.name
            ));
        }
        for e in &self.env {
            if e.is_empty() || !e.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!(
                    "function.toml: `env`: {e:?} is not a variable name"
                ));
            }
        }
        for h in &self.http {
            if !valid_host_grant(h) {
                return Err(format!(
                    "function.toml: `http`: {h:?} must be a host or host:port (no scheme, no path)"
                ));
            }
        }
        self.storage_grants()
            .map_err(|e| format!("function.toml: `storage`: {e}"))?;
        self.realtime_grants()
            .map_err(|e| format!("function.toml: `realtime`: {e}"))?;
        let l = &self.limits;
        if !(1..=1024).contains(&l.memory_mb) {
            return Err("function.toml: `limits.memory_mb` must be between 1 and 1024".into());
        }
        if !(1..=600_000).contains(&l.timeout_ms) {
            return Err("function.toml: `limits.timeout_ms` must be between 1 and 600000".into());
        }
        if !(1..=10_000).contains(&l.max_concurrency) {
            return Err(
                "function.toml: `limits.max_concurrency` must be between 1 and 10000".into(),
            );
        }
        if !(1..=1_000_000).contains(&self.reuse) {
            return Err("function.toml: `reuse` must be between 1 and 1000000".into());
        }
        let mut seen = std::collections::HashSet::new();
        for (i, job) in self.cron_jobs().iter().enumerate() {
            let entry = &self.cron[i];
            let at = format!("function.toml: `cron[{i}]`");
            if !valid_name(&entry.name) || !seen.insert(entry.name.as_str()) {
                return Err(format!(
                    "{at}.name: {:?} must be unique, lower-case letters, digits, - or _, starting with a letter",
                    entry.name
                ));
            }
            if !matches!(
                entry.role.as_deref(),
                None | Some("service_role") | Some("anon")
            ) {
                return Err(format!("{at}.role must be \"service_role\" or \"anon\""));
            }
            job.validate().map_err(|e| match e.position {
                Some(p) => format!("{at}: {} (at position {p})", e.message),
                None => format!("{at}: {}", e.message),
            })?;
        }
        Ok(())
    }

    /// The `[[cron]]` entries as the jobs they register.
    pub fn cron_jobs(&self) -> Vec<crate::cron::job::JobDef> {
        self.cron
            .iter()
            .map(|e| crate::cron::job::JobDef {
                name: format!("{}.{}", self.name, e.name),
                schedule: e.schedule.clone(),
                timezone: e.timezone.clone().unwrap_or_else(|| "UTC".into()),
                sql: None,
                http: None,
                call: None,
                function: Some(crate::cron::job::HandlerSpec {
                    function: self.name.clone(),
                    entry: e.name.clone(),
                    payload: e.payload.clone(),
                    role: e.role.clone(),
                }),
                timeout_ms: e
                    .timeout_ms
                    .unwrap_or(self.limits.timeout_ms.min(i32::MAX as u64) as i32),
                max_attempts: e.max_attempts.unwrap_or(1),
                backoff_ms: e.backoff_ms.unwrap_or(1000),
                overlap: e.overlap.unwrap_or_default(),
                missed: e.missed.unwrap_or_default(),
                catch_up_max: e.catch_up_max.unwrap_or(0),
                paused: false,
                alert: e.alert.clone(),
            })
            .collect()
    }

    /// Whether outbound HTTP may go to `authority` (`host` or `host:port`).
    /// A grant without a port allows the default ports only; `*.example.com`
    /// allows subdomains.
    pub fn allows_host(&self, host: &str, port: Option<u16>, default_port: u16) -> bool {
        host_allowed(&self.http, host, port, default_port)
    }

    /// The storage grants, parsed.
    pub fn storage_grants(&self) -> Result<Grants, String> {
        Grants::parse(&self.storage)
    }

    /// The realtime grants, parsed.
    pub fn realtime_grants(&self) -> Result<TopicGrants, String> {
        TopicGrants::parse(&self.realtime)
    }

    /// The platform interfaces the grants allow a component to import.
    pub fn allowed_platform_imports(&self) -> Vec<&'static str> {
        let mut out = vec!["types", "auth", "log"];
        match self.db {
            DbMode::None => {}
            DbMode::Caller => out.push("data"),
            DbMode::Service => out.extend(["data", "sql"]),
        }
        if !self.storage.is_empty() {
            out.push("storage");
        }
        if !self.realtime.is_empty() {
            out.push("realtime");
        }
        out
    }
}

/// A host grant's shape: `host`, `host:port` or `*.domain`, no scheme, no path.
pub fn valid_host_grant(h: &str) -> bool {
    !h.is_empty()
        && !h.contains("://")
        && !h.contains('/')
        && h.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '*'))
}

/// Whether `grants` (`host`, `host:port` or `*.domain` entries, as a
/// manifest's `http` and `cron.http_allow` list them) allow `host` on `port`.
/// A grant without a port allows the default ports only; `*.example.com`
/// allows subdomains.
pub fn host_allowed(grants: &[String], host: &str, port: Option<u16>, default_port: u16) -> bool {
    let host = host.to_ascii_lowercase();
    grants.iter().any(|g| {
        let g = g.to_ascii_lowercase();
        let (gh, gp) = match g.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.parse::<u16>().ok()),
            None => (g.clone(), None),
        };
        let host_ok = match gh.strip_prefix("*.") {
            Some(suffix) => host.ends_with(&format!(".{suffix}")),
            None => host == gh,
        };
        let port_ok = match gp {
            Some(p) => port.unwrap_or(default_port) == p,
            None => port.is_none_or(|p| p == default_port),
        };
        host_ok && port_ok
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_defaults_and_names_bad_keys() {
        let m = Manifest::parse("name = \"hello\"").unwrap();
        assert_eq!(m.db, DbMode::None);
        assert!(m.verify_jwt && m.cors);
        assert_eq!(m.limits, Limits::default());
        assert_eq!(m.reuse, 1, "a fresh instance per request unless asked");
        let e = Manifest::parse("name = \"x\"\nreuse = 0").unwrap_err();
        assert!(e.contains("`reuse`"), "{e}");
        let e = Manifest::parse("name = \"x\"\ndb = \"root\"").unwrap_err();
        assert!(e.contains("`db`"), "{e}");
        let e = Manifest::parse("name = \"x\"\n[limits]\nmemory_gb = 1").unwrap_err();
        assert!(e.contains("limits"), "{e}");
        let e = Manifest::parse("name = \"../etc\"").unwrap_err();
        assert!(e.contains("`name`"), "{e}");
        let e = Manifest::parse("name = \"x\"\nhttp = [\"https://a.com/x\"]").unwrap_err();
        assert!(e.contains("`http`"), "{e}");
        for bad in ["avatars", "avatars:admin", "../x:read", ":read"] {
            let e = Manifest::parse(&format!("name = \"x\"\nstorage = [\"{bad}\"]")).unwrap_err();
            assert!(e.contains("`storage`"), "{bad}: {e}");
        }
        let m = Manifest::parse("name = \"x\"\nstorage = [\"a:b:read\", \"up:write\"]").unwrap();
        assert!(m.allowed_platform_imports().contains(&"storage"));
        let g = m.storage_grants().unwrap();
        assert!(g
            .check("a:b", wasmbase_host_api::guest::storage::Mode::Read)
            .is_ok());
        assert!(g
            .check("a:b", wasmbase_host_api::guest::storage::Mode::Write)
            .is_err());
        assert!(g
            .check("up", wasmbase_host_api::guest::storage::Mode::Read)
            .is_err());
        assert!(g
            .check("other", wasmbase_host_api::guest::storage::Mode::Write)
            .is_err());
    }

    #[test]
    fn cron_entries() {
        let m = Manifest::parse(
            "name = \"x\"\n[[cron]]\nname = \"nightly\"\nschedule = \"0 3 * * *\"\ntimezone = \"Europe/Berlin\"\npayload = { keep_days = 7 }\n",
        )
        .unwrap();
        let jobs = m.cron_jobs();
        assert_eq!(jobs[0].name, "x.nightly");
        assert_eq!(jobs[0].kind(), "function");
        assert_eq!(jobs[0].timeout_ms, 10_000);
        let f = jobs[0].function.as_ref().unwrap();
        assert_eq!(f.payload, Some(serde_json::json!({"keep_days": 7})));
        let e = Manifest::parse("name = \"x\"\n[[cron]]\nname = \"a\"\nschedule = \"0 25 * * *\"")
            .unwrap_err();
        assert!(e.contains("cron[0]") && e.contains("position 3"), "{e}");
        let e = Manifest::parse(
            "name = \"x\"\n[[cron]]\nname = \"a\"\nschedule = \"@daily\"\n[[cron]]\nname = \"a\"\nschedule = \"@daily\"",
        )
        .unwrap_err();
        assert!(e.contains("unique"), "{e}");
        let e = Manifest::parse(
            "name = \"x\"\n[[cron]]\nname = \"a\"\nschedule = \"@daily\"\nrole = \"postgres\"",
        )
        .unwrap_err();
        assert!(e.contains("role"), "{e}");
    }

    #[test]
    fn host_grants() {
        let m = Manifest::parse(
            "name = \"x\"\nhttp = [\"api.example.com\", \"localhost:8080\", \"*.svc.test\"]",
        )
        .unwrap();
        assert!(m.allows_host("api.example.com", None, 443));
        assert!(m.allows_host("API.example.com", Some(443), 443));
        assert!(!m.allows_host("api.example.com", Some(8443), 443));
        assert!(m.allows_host("localhost", Some(8080), 80));
        assert!(!m.allows_host("localhost", None, 80));
        assert!(m.allows_host("a.svc.test", None, 80));
        assert!(!m.allows_host("svc.test", None, 80));
        assert!(!m.allows_host("evil.com", None, 443));
        assert!(!m.allows_host("api.example.com.evil.com", None, 443));
    }
}
