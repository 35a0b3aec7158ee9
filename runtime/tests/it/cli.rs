//! The real binary: `wasmbase dev` end to end (private cluster, env file, token,
//! SIGKILL and restart), and config errors that name the key.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_wasmbase");

fn wasmbase(dir: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.current_dir(dir)
        .env_remove("DATABASE_URL")
        .env("WASMBASE_SERVER_LISTEN", "127.0.0.1:0")
        .env("WASMBASE_LOG_LEVEL", "warn");
    c
}

/// Waits for `.wasmbase/env` to carry a WASMBASE_URL whose server answers /ready
/// (the observable signal that `dev` finished starting), bounded.
async fn wait_dev(dir: &Path, child: &mut std::process::Child) -> Vec<(String, String)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("wasmbase dev exited early: {status}");
        }
        let env = wasmbase::project::read_env(&dir.join(".wasmbase"));
        if let Some(url) = wasmbase::project::env_get(&env, "WASMBASE_URL") {
            if let Ok(r) = reqwest::get(format!("{url}/ready")).await {
                if r.status() == 200 {
                    return env;
                }
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "wasmbase dev did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn get<'a>(env: &'a [(String, String)], k: &str) -> &'a str {
    wasmbase::project::env_get(env, k).unwrap_or_else(|| panic!("{k} missing from .wasmbase/env"))
}

#[tokio::test]
async fn dev_starts_from_nothing_survives_sigkill_and_stops_cleanly() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    // Reachable by the cluster user, so the cluster lives (and dies) inside it.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut child = wasmbase(dir.path())
        .arg("dev")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let env = wait_dev(dir.path(), &mut child).await;
    for k in [
        "WASMBASE_URL",
        "PUBLISHABLE_KEY",
        "SECRET_KEY",
        "ANON_KEY",
        "SERVICE_KEY",
        "DATABASE_URL",
    ] {
        assert!(!get(&env, k).is_empty());
    }
    let url = get(&env, "WASMBASE_URL").to_string();
    let http = reqwest::Client::new();

    // `wasmbase token` mints a JWT the server accepts as that user.
    let sub = "0d8c9f6e-1111-4a2b-9c3d-123456789abc";
    let out = wasmbase(dir.path())
        .args([
            "token",
            "--role",
            "authenticated",
            "--sub",
            sub,
            "--org-id",
            "0d8c9f6e-2222-4a2b-9c3d-123456789abc",
            "--admin",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let who: serde_json::Value = http
        .get(format!("{url}/platform/v1/whoami"))
        .header("apikey", get(&env, "PUBLISHABLE_KEY"))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(who["database"]["current_user"], "authenticated");
    assert_eq!(who["database"]["auth_uid"], sub);
    assert_eq!(who["claims"]["app_metadata"]["role"], "admin");
    for k in ["ANON_KEY", "SERVICE_KEY", "SECRET_KEY"] {
        let r = http
            .get(format!("{url}/platform/v1/whoami"))
            .header("apikey", get(&env, k))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{k}");
    }

    // The owner DATABASE_URL works for DDL; write a row.
    let (owner, conn) = tokio_postgres::connect(get(&env, "DATABASE_URL"), tokio_postgres::NoTls)
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    owner
        .batch_execute("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('survives');")
        .await
        .unwrap();
    drop(owner);
    let _ = conn.await;

    // Each login role got its own generated password.
    let state = dir.path().join(".wasmbase");
    let secrets = |dir: &Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(dir.join("dev.json")).unwrap()).unwrap()
    };
    let pw = |s: &serde_json::Value| -> [String; 3] {
        [
            "authenticator_password",
            "auth_password",
            "functions_password",
        ]
        .map(|k| s[k].as_str().unwrap_or_else(|| panic!("{k}")).to_string())
    };
    let first = pw(&secrets(&state));
    assert!(
        first[0] != first[1] && first[0] != first[2] && first[1] != first[2],
        "three different passwords"
    );
    assert_login_passwords(get(&env, "DATABASE_URL"), &first).await;

    // SIGKILL: PostgreSQL keeps running in its own process group and is adopted.
    child.kill().unwrap();
    child.wait().unwrap();

    // Upgrade path: a project from when the three roles shared the authenticator
    // password (dev.json has only that one; the roles all carry it) gets two new
    // passwords generated, saved and set on its next start.
    {
        let mut s = secrets(&state);
        let shared = s["authenticator_password"].as_str().unwrap().to_string();
        let o = s.as_object_mut().unwrap();
        o.remove("auth_password");
        o.remove("functions_password");
        std::fs::write(state.join("dev.json"), serde_json::to_vec(&s).unwrap()).unwrap();
        let (owner, conn) =
            tokio_postgres::connect(get(&env, "DATABASE_URL"), tokio_postgres::NoTls)
                .await
                .unwrap();
        tokio::spawn(conn);
        for role in ["wasmbase_auth", "wasmbase_functions"] {
            wasmbase::migrate::set_login_password(&owner, role, &shared)
                .await
                .unwrap();
        }
    }
    let mut child = wasmbase(dir.path())
        .arg("dev")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let env2 = wait_dev(dir.path(), &mut child).await;
    let second = pw(&secrets(&state));
    assert_eq!(second[0], first[0], "the authenticator password is kept");
    assert!(
        second[1] != second[0] && second[2] != second[0] && second[1] != second[2],
        "new, different passwords for wasmbase_auth and wasmbase_functions"
    );
    assert_login_passwords(get(&env2, "DATABASE_URL"), &second).await;
    assert_eq!(
        get(&env2, "PUBLISHABLE_KEY"),
        get(&env, "PUBLISHABLE_KEY"),
        "keys are reused"
    );
    assert_eq!(
        get(&env2, "DATABASE_URL"),
        get(&env, "DATABASE_URL"),
        "same cluster"
    );
    let (owner, conn) = tokio_postgres::connect(get(&env2, "DATABASE_URL"), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let v: String = owner
        .query_one("SELECT v FROM kept", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, "survives");
    drop(owner);

    // `keys` and `status` work beside it.
    let out = wasmbase(dir.path())
        .args(["keys", "list"])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success()
            && listing.contains("publishable")
            && !listing.contains(get(&env, "SECRET_KEY"))
    );
    let out = wasmbase(dir.path()).arg("status").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("server: running"));

    // SIGTERM: drains, stops PostgreSQL, exits 0.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
    let pg = dir.path().join(".wasmbase/pg");
    let real = std::fs::read_link(&pg).unwrap_or(pg);
    assert!(
        !real.join("postmaster.pid").exists(),
        "PostgreSQL still running after dev stopped"
    );
}

/// On the dev cluster (scram): each login role's verifier is made from its own
/// password and from neither other, and the authenticator password does not log
/// in as the other two roles.
async fn assert_login_passwords(owner_url: &str, pw: &[String; 3]) {
    use crate::harness::{login_role_verifiers, scram_matches};
    let (owner, conn) = tokio_postgres::connect(owner_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let verifiers = login_role_verifiers(&owner).await;
    assert_eq!(verifiers.len(), 3, "{verifiers:?}");
    for (i, (role, v)) in verifiers.iter().enumerate() {
        let v = v
            .as_deref()
            .unwrap_or_else(|| panic!("{role} has no password"));
        for (j, p) in pw.iter().enumerate() {
            assert_eq!(scram_matches(v, p), i == j, "{role} against password {j}");
        }
    }
    let url: tokio_postgres::Config = owner_url.parse().unwrap();
    for role in ["wasmbase_auth", "wasmbase_functions"] {
        let e = wasmbase::server::login_config(&url, role, Some(&pw[0]))
            .connect(tokio_postgres::NoTls)
            .await
            .err()
            .unwrap_or_else(|| panic!("{role} logged in with the authenticator password"));
        assert_eq!(
            e.code(),
            Some(&tokio_postgres::error::SqlState::INVALID_PASSWORD),
            "{role}: {e}"
        );
    }
}

#[test]
fn bad_config_is_refused_with_the_key_named() {
    let dir = tempfile::tempdir().unwrap();
    let run = |toml: &str| {
        std::fs::write(dir.path().join("w.toml"), toml).unwrap();
        let out = wasmbase(dir.path())
            .env_remove("WASMBASE_SERVER_LISTEN")
            .args(["serve", "--config", "w.toml"])
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let e = run("[server]\nlisten = 5\n");
    assert!(e.contains("server.listen"), "{e}");
    let e = run("[server]\nlistn = \"x\"\n");
    assert!(e.contains("listn"), "{e}");
    let e =
        run("[database]\nurl = \"postgres://u@localhost/db\"\n[auth]\njwt_secret = \"short\"\n");
    assert!(e.contains("auth.jwt_secret"), "{e}");
    let e = run("[database]\nurl = \"postgres://u@localhost/db\"\n");
    assert!(e.contains("auth.jwt_secret"), "{e}");
    // A config from when the three login roles shared one password.
    let shared = format!(
        "[database]\nurl = \"postgres://u@localhost/db\"\nauthenticator_password = \"old-shared-pw\"\n\
         [auth]\njwt_secret = \"{}\"\n",
        "x".repeat(40)
    );
    let e = run(&shared);
    for needle in [
        "database.auth_password",
        "database.functions_password",
        "ALTER ROLE wasmbase_auth PASSWORD",
        "ALTER ROLE wasmbase_functions PASSWORD",
    ] {
        assert!(e.contains(needle), "{needle}: {e}");
    }
    assert!(!e.contains("old-shared-pw"), "{e}");
    let e = run("not toml [");
    assert!(e.contains("w.toml"), "{e}");
    let out = wasmbase(dir.path())
        .args(["serve", "--config", "missing.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("missing.toml"));
}

#[tokio::test]
async fn serve_without_smtp_starts_only_with_an_explicit_dev_mailbox() {
    let db = crate::harness::TestDb::new().await;
    let c = db.config();
    let dir = tempfile::tempdir().unwrap();
    let mut toml = format!(
        "[database]\nurl = \"{}\"\n",
        c.database.url.as_deref().unwrap()
    );
    for (key, pw) in [
        ("authenticator_password", &c.database.authenticator_password),
        ("auth_password", &c.database.auth_password),
        ("functions_password", &c.database.functions_password),
    ] {
        if let Some(pw) = pw {
            toml.push_str(&format!("{key} = \"{pw}\"\n"));
        }
    }
    toml.push_str(&format!(
        "[auth]\njwt_secret = \"{}\"\n",
        crate::harness::JWT_SECRET
    ));
    std::fs::write(dir.path().join("w.toml"), &toml).unwrap();
    // No [auth.smtp], no dev_mailbox: refused, naming both ways out.
    let out = wasmbase(dir.path())
        .args(["serve", "--config", "w.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("auth.dev_mailbox") && e.contains("auth.smtp"),
        "{e}"
    );
    // `dev_mailbox = false` is no different.
    let out = wasmbase(dir.path())
        .env("WASMBASE_AUTH_DEV_MAILBOX", "false")
        .args(["serve", "--config", "w.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("auth.dev_mailbox"));
    // With the flag it starts and serves.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = wasmbase(dir.path())
        .env("WASMBASE_AUTH_DEV_MAILBOX", "true")
        .env("WASMBASE_SERVER_LISTEN", format!("127.0.0.1:{port}"))
        .args(["serve", "--config", "w.toml"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("serve with auth.dev_mailbox = true exited: {status}");
        }
        if let Ok(r) = reqwest::get(format!("http://127.0.0.1:{port}/ready")).await {
            if r.status() == 200 {
                break;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "serve did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // SIGTERM drains and exits cleanly.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(child.wait().unwrap().success());
}

#[test]
fn token_refuses_roles_outside_the_api_roles() {
    let dir = tempfile::tempdir().unwrap();
    let out = wasmbase(dir.path())
        .env("WASMBASE_AUTH_JWT_SECRET", "x".repeat(40))
        .args(["token", "--role", "postgres"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--role"));
}

#[tokio::test]
async fn policy_owner_writes_applies_and_lists_a_migration() {
    let db = crate::harness::TestDb::new().await;
    db.owner()
        .await
        .batch_execute("CREATE TABLE notes (id int PRIMARY KEY, body text)")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = wasmbase(dir.path())
        .env("DATABASE_URL", db.url())
        .args(["policy", "owner", "notes", "--add-owner-col"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let files: Vec<_> = std::fs::read_dir(dir.path().join("db/migrations"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(files.len(), 1);
    assert!(files[0].ends_with("_policy_owner_notes.sql"), "{files:?}");
    let c = db.owner().await;
    let names: Vec<String> = c
        .query(
            "SELECT policyname::text FROM pg_policies WHERE tablename = 'notes' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        names,
        [
            "wb_owner_delete",
            "wb_owner_insert",
            "wb_owner_select",
            "wb_owner_update"
        ]
    );
    let listed = wasmbase(dir.path())
        .env("DATABASE_URL", db.url())
        .args(["policy", "list", "notes"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.status.success() && text.contains("wb_owner_select"),
        "{text}"
    );
    // A hostile table name is refused before any SQL is built.
    let bad = wasmbase(dir.path())
        .env("DATABASE_URL", db.url())
        .args(["policy", "owner", "notes; drop table notes"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("TABLE"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}
