//! Test harness: one PostgreSQL per test process, one migrated template database,
//! and a fresh database cloned from it for each test.

#![allow(dead_code)]

use serde_json::Value;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::sync::OnceCell;
use wasmbase::config::Config;
use wasmbase::server::{self, RunningServer};
use wasmbase_host_api::keys::{self, KeyKind};

/// JWT secret every test server uses.
pub const JWT_SECRET: &str = "test-secret-test-secret-test-secret-0123";
/// Password of `authenticator` on the test cluster.
pub const AUTHENTICATOR_PW: &str = "test-authenticator-password";
/// Password of `wasmbase_auth` on the test cluster (each login role has its own).
pub const AUTH_PW: &str = "test-auth-password";
/// Password of `wasmbase_functions` on the test cluster.
pub const FUNCTIONS_PW: &str = "test-functions-password";

/// The login-role passwords every test server uses. They are set on the roles
/// (cluster-wide) whatever the cluster, and every test config carries them, so
/// a `trust` cluster given by DATABASE_URL runs the same code and config as the
/// private scram cluster CI uses (there a wrong password is refused).
pub const LOGIN_PASSWORDS: wasmbase::migrate::LoginPasswords<'static> =
    wasmbase::migrate::LoginPasswords {
        authenticator: AUTHENTICATOR_PW,
        auth: AUTH_PW,
        functions: FUNCTIONS_PW,
    };

/// The cluster every test of this process uses.
pub struct Pg {
    /// Superuser URL without the database name (ends with '/').
    base: String,
}

static PG: OnceLock<Pg> = OnceLock::new();
static TEMPLATE: OnceCell<String> = OnceCell::const_new();

/// Starts (or adopts) the test cluster once per process.
pub fn pg() -> &'static Pg {
    PG.get_or_init(|| {
        if let Ok(url) = std::env::var("DATABASE_URL") {
            let base = match url.rfind('/') {
                Some(i) if i > "postgres://".len() => url[..=i].to_string(),
                _ => format!("{url}/"),
            };
            return Pg { base };
        }
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("wasmbase-test");
        let cluster = wasmbase::embedded_pg::ensure_running(&wasmbase::embedded_pg::Options {
            dir,
            fast: true,
        })
        .expect("starting the private test PostgreSQL (set DATABASE_URL to use another server)");
        let url = cluster.superuser_url("postgres");
        Pg {
            base: url.trim_end_matches("postgres").to_string(),
        }
    })
}

impl Pg {
    /// Superuser URL of database `db`.
    pub fn url(&self, db: &str) -> String {
        format!("{}{db}", self.base)
    }
}

/// Connects as the superuser to database `db`.
pub async fn connect(db: &str) -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect(&pg().url(db), tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting to {db}: {e}"));
    tokio::spawn(conn);
    c
}

async fn template() -> &'static str {
    TEMPLATE
        .get_or_init(|| async {
            let name = format!(
                "wasmbase_tmpl_{}",
                wasmbase::migrate::platform_fingerprint()
            );
            let admin = connect("postgres").await;
            admin
                .query_one("SELECT pg_advisory_lock(4242)", &[])
                .await
                .unwrap();
            // Leftovers of earlier runs, and templates of older migrations.
            let old = admin
                .query(
                    "SELECT datname FROM pg_database WHERE datname LIKE 'wasmbase_test_%' \
                     OR (datname LIKE 'wasmbase_tmpl_%' AND datname <> $1)",
                    &[&name],
                )
                .await
                .unwrap();
            for r in old {
                let n: String = r.get(0);
                let _ = admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS \"{n}\" WITH (FORCE)"))
                    .await;
            }
            let exists = admin
                .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
                .await
                .unwrap()
                .is_some();
            if !exists {
                admin
                    .batch_execute(&format!("CREATE DATABASE \"{name}\""))
                    .await
                    .unwrap();
            }
            {
                let mut c = connect(&name).await;
                wasmbase::migrate::run(&mut c, None)
                    .await
                    .expect("migrating the template");
                // Every process sets them, so a cluster left with other
                // passwords (an older build's shared one) is brought in line.
                wasmbase::migrate::set_login_passwords(&c, &LOGIN_PASSWORDS)
                    .await
                    .unwrap();
            }
            // Let the template's connection go before anyone clones it.
            for _ in 0..100 {
                let n: i64 = admin
                    .query_one(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1",
                        &[&name],
                    )
                    .await
                    .unwrap()
                    .get(0);
                if n == 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            admin
                .query_one("SELECT pg_advisory_unlock(4242)", &[])
                .await
                .unwrap();
            name
        })
        .await
}

/// A fresh database for one test.
pub struct TestDb {
    /// Database name.
    pub name: String,
}

impl TestDb {
    /// Clones the migrated template.
    pub async fn new() -> TestDb {
        let tmpl = template().await;
        TestDb::create(Some(tmpl)).await
    }

    /// An empty, unmigrated database.
    pub async fn empty() -> TestDb {
        TestDb::create(None).await
    }

    async fn create(tmpl: Option<&str>) -> TestDb {
        let name = format!("wasmbase_test_{}", uuid::Uuid::new_v4().simple());
        let admin = connect("postgres").await;
        let sql = match tmpl {
            Some(t) => format!("CREATE DATABASE \"{name}\" TEMPLATE \"{t}\""),
            None => format!("CREATE DATABASE \"{name}\""),
        };
        admin.batch_execute(&sql).await.unwrap();
        TestDb { name }
    }

    /// Owner (superuser) URL.
    pub fn url(&self) -> String {
        pg().url(&self.name)
    }

    /// Owner connection.
    pub async fn owner(&self) -> tokio_postgres::Client {
        connect(&self.name).await
    }

    /// Test-server config for this database.
    pub fn config(&self) -> Config {
        let mut c = Config::default();
        c.server.listen = "127.0.0.1:0".into();
        c.database.url = Some(self.url());
        c.database.pool_size = 4;
        c.database.authenticator_password = Some(AUTHENTICATOR_PW.into());
        c.database.auth_password = Some(AUTH_PW.into());
        c.database.functions_password = Some(FUNCTIONS_PW.into());
        c.auth.jwt_secret = Some(JWT_SECRET.into());
        // Mail goes to the dev mailbox, where tests read it.
        c.auth.dev_mailbox = Some(true);
        c.migrations.dir = PathBuf::from("/nonexistent/wasmbase-test-migrations");
        // Nodes of one test database share one storage directory (as nodes
        // share S3).
        c.storage.local_dir = Some(
            PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
                .join("storage")
                .join(&self.name),
        );
        // Each test database its own render cache, as each its own storage.
        c.storage.render_cache_dir = Some(
            PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
                .join("render")
                .join(&self.name),
        );
        c
    }

    /// Starts a ready server on this database.
    pub async fn server(&self) -> TestServer {
        self.server_with(|_| {}).await
    }

    /// Starts a ready server with a tweaked config.
    pub async fn server_with(&self, tweak: impl FnOnce(&mut Config)) -> TestServer {
        let mut c = self.config();
        tweak(&mut c);
        let srv = server::start(c).await.expect("server starts");
        tokio::time::timeout(Duration::from_secs(60), srv.wait_ready())
            .await
            .expect("server ready");
        TestServer::new(srv)
    }

    /// Creates an opaque key directly in the database; returns (id, plaintext).
    pub async fn key(&self, kind: KeyKind) -> (uuid::Uuid, String) {
        let c = self.owner().await;
        let (info, key) = keys::create(&c, kind, "test", "test").await.unwrap();
        (info.id, key)
    }
}

/// A running server plus an HTTP client.
pub struct TestServer {
    /// The server.
    pub srv: RunningServer,
    /// Base URL.
    pub url: String,
    /// Client.
    pub http: reqwest::Client,
}

impl TestServer {
    /// Wraps a running server.
    pub fn new(srv: RunningServer) -> TestServer {
        TestServer {
            url: format!("http://{}", srv.addr),
            srv,
            http: reqwest::Client::new(),
        }
    }

    /// GET with optional apikey and bearer.
    pub async fn get(
        &self,
        path: &str,
        apikey: Option<&str>,
        bearer: Option<&str>,
    ) -> (u16, Value) {
        let mut r = self.http.get(format!("{}{path}", self.url));
        if let Some(k) = apikey {
            r = r.header("apikey", k);
        }
        if let Some(b) = bearer {
            r = r.header("authorization", format!("Bearer {b}"));
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Key-cache version of this server.
    pub fn keys_version(&self) -> u64 {
        self.srv.state.gate.keys().version()
    }

    /// Waits until this server's key cache reloaded past `v` (bounded).
    pub async fn wait_keys_after(&self, v: u64) {
        wait_until("key cache did not reload", 10, || self.keys_version() > v).await;
    }
}

/// Polls `sql` every 20 ms until `done` holds for its rows; fails after `secs`.
pub async fn until_rows(
    c: &tokio_postgres::Client,
    what: &str,
    secs: u64,
    sql: &str,
    done: impl Fn(&[tokio_postgres::Row]) -> bool,
) -> Vec<tokio_postgres::Row> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let rows = c.query(sql, &[]).await.unwrap();
        if done(&rows) {
            return rows;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls an observable condition every 10 ms until it holds; fails with `what`
/// after `secs` seconds.
pub async fn wait_until(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Signs claims with the test secret.
pub fn sign(claims: Value) -> String {
    wasmbase_host_api::jwt::JwtKeys::hs256(JWT_SECRET, None, "wasmbase")
        .unwrap()
        .sign(&claims)
        .unwrap()
}

/// A user access token for `sub`.
pub fn user_token(sub: &str) -> String {
    sign(
        serde_json::json!({"role": "authenticated", "aud": "authenticated", "sub": sub, "exp": now() + 600}),
    )
}

/// A minimal SMTP server that accepts every message and keeps it, so the SMTP
/// mailer is tested over a real SMTP conversation.
pub struct SmtpSink {
    /// Port on 127.0.0.1.
    pub port: u16,
    /// Raw DATA of each received message.
    pub messages: std::sync::Arc<tokio::sync::Mutex<Vec<String>>>,
}

impl SmtpSink {
    /// Starts the sink on a free port.
    pub async fn start() -> SmtpSink {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let messages = std::sync::Arc::new(tokio::sync::Mutex::new(Vec::new()));
        let m = messages.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let m = m.clone();
                tokio::spawn(async move {
                    let (r, mut w) = sock.into_split();
                    let mut lines = BufReader::new(r).lines();
                    w.write_all(b"220 sink ESMTP\r\n").await.ok();
                    while let Ok(Some(line)) = lines.next_line().await {
                        let cmd = line.to_ascii_uppercase();
                        let reply: &[u8] = if cmd.starts_with("EHLO") || cmd.starts_with("HELO") {
                            b"250 sink\r\n"
                        } else if cmd.starts_with("DATA") {
                            w.write_all(b"354 go ahead\r\n").await.ok();
                            let mut data = String::new();
                            while let Ok(Some(l)) = lines.next_line().await {
                                if l == "." {
                                    break;
                                }
                                data.push_str(&l);
                                data.push('\n');
                            }
                            m.lock().await.push(data);
                            b"250 queued\r\n"
                        } else if cmd.starts_with("QUIT") {
                            w.write_all(b"221 bye\r\n").await.ok();
                            break;
                        } else {
                            b"250 ok\r\n"
                        };
                        w.write_all(reply).await.ok();
                    }
                });
            }
        });
        SmtpSink { port, messages }
    }
}

static GUESTS: OnceLock<PathBuf> = OnceLock::new();

/// Builds every example in `functions/` once per test process (real components,
/// from the real SDK) and returns the guest cargo target directory.
pub fn guests() -> &'static std::path::Path {
    GUESTS.get_or_init(|| {
        let target = std::env::var_os("WASMBASE_GUEST_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("../guests"));
        let mut dirs = wasmbase::functions::function_dirs(&repo_root().join("functions"));
        dirs.extend(wasmbase::functions::function_dirs(&fixtures()));
        for f in dirs {
            if !f.join("Cargo.toml").exists() {
                continue;
            }
            let out = std::process::Command::new(
                std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()),
            )
            .args([
                "build",
                "--target",
                "wasm32-wasip2",
                "--release",
                "--quiet",
                "--locked",
            ])
            .current_dir(&f)
            .env("CARGO_TARGET_DIR", &target)
            .env_remove("RUSTFLAGS")
            .output()
            .expect("running cargo for the example functions");
            assert!(
                out.status.success(),
                "building {}: {}",
                f.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        target
    })
}

/// Test-only functions (misbehaving guests).
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/functions")
}

/// The repository root (functions/, sdk/, wit/).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

impl TestServer {
    /// Function-registry version of this server.
    pub fn functions_version(&self) -> u64 {
        self.srv.state.functions.registry.version()
    }

    /// Waits until `name` is serving (bounded); panics with its load error.
    pub async fn wait_function(&self, name: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            match self.srv.state.functions.registry.get(name) {
                wasmbase::functions::registry::Availability::Ready(_) => return,
                _ => {
                    if let Some(e) = self.srv.state.functions.registry.error(name) {
                        panic!("function {name} failed to load: {e}");
                    }
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "function {name} did not load"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl TestDb {
    /// A server serving the functions of `dir` as `wasmbase dev` does: built
    /// on load and rebuilt when their files change.
    pub async fn dev_functions_server(&self, dir: PathBuf) -> TestServer {
        self.functions_server(|c| {
            c.functions.dir = dir;
            c.functions.build = Some(true);
            c.functions.watch = Some(true);
        })
        .await
    }

    /// A server serving the example functions (prebuilt by [`guests`]).
    pub async fn functions_server(&self, tweak: impl FnOnce(&mut Config)) -> TestServer {
        let target = guests().to_path_buf();
        self.server_with(|c| {
            c.functions.dir = repo_root().join("functions");
            c.functions.target_dir = Some(target);
            c.functions.cache_dir =
                Some(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("function-cache"));
            c.functions.build = Some(false);
            c.functions.watch = Some(false);
            c.functions.local = Some(true);
            tweak(c);
        })
        .await
    }
}

/// HMAC-SHA256 (RFC 2104): SCRAM's building block, and what a webhook
/// sender signs with.
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |b: u8| k.iter().map(|x| x ^ b).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// Whether `verifier` (a role's `pg_authid.rolpassword`) was made from
/// `password`: SCRAM-SHA-256 recomputed here (salts differ per verifier, so two
/// verifiers of one password never compare equal; only recomputing tells).
pub fn scram_matches(verifier: &str, password: &str) -> bool {
    use base64::Engine;
    let hmac = hmac_sha256;
    // SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>
    let b64 = base64::engine::general_purpose::STANDARD;
    let parsed = verifier
        .strip_prefix("SCRAM-SHA-256$")
        .and_then(|r| r.split_once('$'))
        .and_then(|(params, keys)| Some((params.split_once(':')?, keys.split_once(':')?)));
    let Some(((iters, salt), (_, server_key))) = parsed else {
        return false;
    };
    let (Ok(iters), Ok(salt), Ok(server_key)) = (
        iters.parse::<u32>(),
        b64.decode(salt),
        b64.decode(server_key),
    ) else {
        return false;
    };
    // PBKDF2-HMAC-SHA-256, one block.
    let mut u = hmac(
        password.as_bytes(),
        &[salt.as_slice(), &[0, 0, 0, 1]].concat(),
    );
    let mut salted = u;
    for _ in 1..iters {
        u = hmac(password.as_bytes(), &u);
        salted.iter_mut().zip(u).for_each(|(s, x)| *s ^= x);
    }
    hmac(&salted, b"Server Key").as_slice() == server_key.as_slice()
}

/// The `pg_authid.rolpassword` of each login role, read as the superuser.
pub async fn login_role_verifiers(c: &tokio_postgres::Client) -> Vec<(String, Option<String>)> {
    let roles: Vec<&str> = wasmbase::migrate::LOGIN_ROLES.iter().map(|r| r.0).collect();
    c.query(
        "SELECT rolname::text, rolpassword FROM pg_authid WHERE rolname = ANY($1) ORDER BY array_position($1, rolname::text)",
        &[&roles],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

/// An `/auth/v1` call as auth-js makes it (`apikey`, the 2024-01-01 error
/// format, an optional bearer): (status, headers, JSON body or `Null`).
pub async fn auth_request(
    s: &TestServer,
    key: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
    bearer: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut r = s
        .http
        .request(method, format!("{}/auth/v1{path}", s.url))
        .header("apikey", key)
        .header("x-supabase-api-version", "2024-01-01");
    if let Some(b) = bearer {
        r = r.header("authorization", format!("Bearer {b}"));
    }
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::Null),
    )
}
