//! The `.wasmbase/` state directory of a project in dev mode: the private cluster
//! (`pg/`, `pg.json`), generated secrets (`dev.json`), and `env` — the URLs and keys
//! a developer copies into their app, printed again by `wasmbase status`.
//! Files holding secrets are written 0600.

use crate::embedded_pg::write_private;
use anyhow::{Context, Result};
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Name of the state directory inside a project.
pub const STATE_DIR: &str = ".wasmbase";

/// Secrets generated on the first `wasmbase dev` and reused afterwards.
#[derive(Clone, Serialize, Deserialize)]
pub struct DevSecrets {
    /// HS256 secret of the project's JWTs.
    pub jwt_secret: String,
    /// Password of the `authenticator` role.
    pub authenticator_password: String,
    /// Password of the `wasmbase_auth` role (added later: projects created when
    /// the three login roles shared `authenticator_password` get one on their
    /// next start, and the server then sets it on the role).
    #[serde(default)]
    pub auth_password: Option<String>,
    /// Password of the `wasmbase_functions` role (added later, like `auth_password`).
    #[serde(default)]
    pub functions_password: Option<String>,
    /// Base64 AES-256 key that encrypts function secrets (added later: projects
    /// created before it get one on their next start).
    #[serde(default)]
    pub secrets_key: Option<String>,
}

fn random(n: usize) -> String {
    rand::thread_rng()
        .sample_iter(&rand::distributions::Alphanumeric)
        .take(n)
        .map(char::from)
        .collect()
}

/// The state directory of the project in `root`.
pub fn state_dir(root: &Path) -> PathBuf {
    root.join(STATE_DIR)
}

impl std::fmt::Debug for DevSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DevSecrets { <redacted> }")
    }
}

impl DevSecrets {
    /// Loads `dev.json`, creating it with fresh random secrets on first use.
    pub fn load_or_create(dir: &Path) -> Result<DevSecrets> {
        let path = dir.join("dev.json");
        if let Ok(bytes) = std::fs::read(&path) {
            let mut s: DevSecrets = serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is not valid", path.display()))?;
            let mut changed = false;
            if s.secrets_key.is_none() {
                s.secrets_key = Some(crate::functions::secrets::generate_key());
                changed = true;
            }
            for pw in [&mut s.auth_password, &mut s.functions_password] {
                if pw.is_none() {
                    *pw = Some(random(32));
                    changed = true;
                }
            }
            if changed {
                write_private(&path, &serde_json::to_vec_pretty(&s)?)?;
            }
            return Ok(s);
        }
        let s = DevSecrets {
            jwt_secret: random(48),
            authenticator_password: random(32),
            auth_password: Some(random(32)),
            functions_password: Some(random(32)),
            secrets_key: Some(crate::functions::secrets::generate_key()),
        };
        std::fs::create_dir_all(dir)?;
        write_private(&path, &serde_json::to_vec_pretty(&s)?)?;
        Ok(s)
    }

    /// Loads `dev.json` if it exists.
    pub fn load(dir: &Path) -> Option<DevSecrets> {
        serde_json::from_slice(&std::fs::read(dir.join("dev.json")).ok()?).ok()
    }
}

/// Ordered KEY=VALUE pairs of `.wasmbase/env`.
pub type EnvFile = Vec<(String, String)>;

/// Reads `.wasmbase/env` (missing file: empty).
pub fn read_env(dir: &Path) -> EnvFile {
    std::fs::read_to_string(dir.join("env"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// Looks a key up in an env file.
pub fn env_get<'a>(env: &'a [(String, String)], key: &str) -> Option<&'a str> {
    env.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// Writes `.wasmbase/env` (0600).
pub fn write_env(dir: &Path, env: &EnvFile) -> Result<()> {
    let text: String = env.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    write_private(&dir.join("env"), text.as_bytes())
}

/// Renders the env as the short table `dev` and `status` print.
pub fn table(env: &EnvFile) -> String {
    let w = env.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    env.iter()
        .map(|(k, v)| format!("  {k:<w$}  {v}\n"))
        .collect()
}
