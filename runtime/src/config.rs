//! The one `Config`: `wasmbase.toml`, then `WASMBASE_<SECTION>_<KEY>` environment
//! overrides (and `DATABASE_URL`), validated at start with errors naming the key.
//!
//! `wasmbase dev` needs no file at all: every field has a default, and the dev
//! command fills in the database URL and secrets of its private cluster.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Which command is running; some defaults differ (listen address, log format).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `wasmbase dev`: laptop defaults, pretty logs, permissive CORS.
    Dev,
    /// `wasmbase serve`: production, JSON logs.
    Serve,
}

/// A configuration problem, always naming the key or file at fault.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(pub String);

/// Everything the server reads at start.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// HTTP listener and request pipeline.
    pub server: ServerConfig,
    /// PostgreSQL connection and request-transaction settings.
    pub database: DatabaseConfig,
    /// JWT and API-key settings.
    pub auth: AuthConfig,
    /// Log format and level.
    pub log: LogConfig,
    /// Where the project's own SQL migrations live.
    pub migrations: MigrationsConfig,
    /// Edge functions (WebAssembly components).
    pub functions: FunctionsConfig,
    /// File storage (`/storage/v1`).
    pub storage: StorageConfig,
    /// Realtime (`/realtime/v1`).
    pub realtime: RealtimeConfig,
    /// Scheduled jobs.
    pub cron: CronConfig,
    /// The data API's query features (`/rest/v1`).
    pub data: DataConfig,
}

/// `[data]` (each key also `WASMBASE_DATA_<KEY>`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// Aggregates in `select=` (`count()`, `sum()`, `avg()`, `max()`,
    /// `min()`); on by default, guarded by `aggregate_max_cost`.
    pub aggregates: bool,
    /// The highest planner cost estimate (`EXPLAIN`'s total cost) an anon or
    /// authenticated request with an aggregate may have (100,000: about a
    /// sequential scan of four million narrow rows); service_role is not
    /// limited.
    pub aggregate_max_cost: f64,
    /// Answer `Accept: application/vnd.pgrst.plan` with the statement's
    /// `EXPLAIN` (PostgREST's `db-plan-enabled`); off by default, as a plan
    /// shows table sizes and indexes.
    pub plan_enabled: bool,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            aggregates: true,
            aggregate_max_cost: 100_000.0,
            plan_enabled: false,
        }
    }
}

/// `[cron]` (each key also `WASMBASE_CRON_<KEY>`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CronConfig {
    /// Whether this node claims and runs ticks (true). A node with `false`
    /// still serves the admin API; the others run the jobs.
    pub enabled: bool,
    /// A running attempt whose node has not renewed its lease for this long
    /// is `lost` and retried elsewhere (30). Renewed every third of it.
    pub lease_secs: u64,
    /// Runs older than this many days are deleted (30).
    pub history_days: u32,
    /// At most this many runs are kept per job, newest first (1,000).
    pub history_per_job: u32,
    /// A run's recorded output and error are cut to this many bytes (4,096).
    pub output_max_bytes: usize,
    /// Hosts `net.http_get/post/delete` may reach (`host`, `host:port`,
    /// `*.domain`, as a function's `http` grants); none by default.
    pub http_allow: Vec<String>,
}

impl Default for CronConfig {
    fn default() -> Self {
        CronConfig {
            enabled: true,
            lease_secs: 30,
            history_days: 30,
            history_per_job: 1000,
            output_max_bytes: 4096,
            http_allow: Vec::new(),
        }
    }
}

/// `[realtime]` (each key also `WASMBASE_REALTIME_<KEY>`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RealtimeConfig {
    /// A node silent for this long is gone: its presences are removed on
    /// every node (30).
    pub presence_timeout_secs: u64,
    /// Channels one socket may join (100, as Supabase).
    pub max_channels_per_client: usize,
    /// Largest broadcast or presence payload, bytes (3,000,000, as Supabase).
    pub max_payload_bytes: usize,
    /// WebSocket connections one node serves at once (10,000); more are
    /// refused at upgrade with 429.
    pub max_connections: usize,
    /// Joins one socket may make per second (100); past it the join is
    /// refused and the socket closed, as Supabase does.
    pub max_joins_per_second: u32,
    /// Broadcast and presence messages one socket may send per second (100);
    /// past it the channel is closed with Supabase's system message.
    pub max_events_per_second: u32,
    /// Refuse joins of public channels (false): every channel is then
    /// authorized by the policies on `realtime.messages`.
    pub private_only: bool,
    /// Rows of `realtime.messages` older than this are deleted (72 h).
    pub messages_retention_hours: u64,
    /// postgres_changes are kept this long, so a client that reconnects
    /// within it catches up on what it missed (120; at least 10).
    pub catchup_window_secs: u64,
}

impl Default for RealtimeConfig {
    fn default() -> Self {
        RealtimeConfig {
            private_only: false,
            messages_retention_hours: 72,
            catchup_window_secs: 120,
            presence_timeout_secs: 30,
            max_channels_per_client: 100,
            max_payload_bytes: 3_000_000,
            max_connections: 10_000,
            max_joins_per_second: 100,
            max_events_per_second: 100,
        }
    }
}

/// `[storage]` (flat keys, so each can come from `WASMBASE_STORAGE_<KEY>`)
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Where bytes live: `"local"` (a directory; the default) or `"s3"` (any
    /// S3-compatible server; what N nodes share).
    pub backend: String,
    /// S3 endpoint URL (`http://127.0.0.1:9000` for MinIO); unset for AWS.
    pub s3_endpoint: Option<String>,
    /// S3 region (default `us-east-1`).
    pub s3_region: String,
    /// The S3 bucket that holds every object (created at start if missing).
    pub s3_bucket: Option<String>,
    /// S3 access key id.
    pub s3_access_key_id: Option<String>,
    /// S3 secret access key.
    pub s3_secret_access_key: Option<String>,
    /// Path-style addressing (default true: MinIO and most self-hosted servers).
    pub s3_force_path_style: bool,
    /// Prefix of every key in the bucket (default `wasmbase/`).
    pub s3_prefix: String,
    /// Directory of the local backend (default `.wasmbase/storage` in `dev`,
    /// `storage` in the working directory for `serve`). Nodes that share it
    /// must share the filesystem.
    pub local_dir: Option<PathBuf>,
    /// Largest upload, whatever a bucket allows (default 5 GiB).
    pub max_upload_bytes: u64,
    /// Longest pause in an upload's body before it is cut off (30 s).
    pub upload_idle_timeout_ms: u64,
    /// What deleting a user does to their objects: `"keep"` (clear the owner;
    /// the default) or `"delete"`. Either way the deletion never fails
    /// because of them.
    pub on_user_delete: String,
    /// Bytes no object points at are deleted once older than this (24 h, so a
    /// database restored from a backup never races the sweeper).
    pub orphan_grace_secs: u64,
    /// How often a node tries to sweep (one node at a time sweeps; 1 h).
    pub orphan_sweep_interval_secs: u64,
    /// Where this node caches transformed images (default: `render` next to
    /// the functions' code cache, `~/.cache/wasmbase/render`).
    pub render_cache_dir: Option<PathBuf>,
    /// Most bytes of transformed images cached on this node (1 GiB; 0: none).
    pub render_cache_bytes: u64,
    /// Image transformations running at once on this node (default: half the
    /// cores, at least 1); more wait.
    pub render_concurrency: Option<usize>,
    /// How long an unfinished resumable upload lives after its last request
    /// (`Upload-Expires`; 24 h), after which its parts are deleted.
    pub resumable_expiry_secs: u64,
}

impl std::fmt::Debug for StorageConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageConfig")
            .field("backend", &self.backend)
            .field("s3_endpoint", &self.s3_endpoint)
            .field("s3_region", &self.s3_region)
            .field("s3_bucket", &self.s3_bucket)
            .field("s3_access_key_id", &self.s3_access_key_id)
            .field(
                "s3_secret_access_key",
                &self.s3_secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .field("s3_force_path_style", &self.s3_force_path_style)
            .field("s3_prefix", &self.s3_prefix)
            .field("local_dir", &self.local_dir)
            .field("max_upload_bytes", &self.max_upload_bytes)
            .field("upload_idle_timeout_ms", &self.upload_idle_timeout_ms)
            .field("on_user_delete", &self.on_user_delete)
            .field("orphan_grace_secs", &self.orphan_grace_secs)
            .field(
                "orphan_sweep_interval_secs",
                &self.orphan_sweep_interval_secs,
            )
            .field("render_cache_dir", &self.render_cache_dir)
            .field("render_cache_bytes", &self.render_cache_bytes)
            .field("render_concurrency", &self.render_concurrency)
            .field("resumable_expiry_secs", &self.resumable_expiry_secs)
            .finish()
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            backend: "local".into(),
            s3_endpoint: None,
            s3_region: "us-east-1".into(),
            s3_bucket: None,
            s3_access_key_id: None,
            s3_secret_access_key: None,
            s3_force_path_style: true,
            s3_prefix: "wasmbase/".into(),
            local_dir: None,
            max_upload_bytes: 5 * 1024 * 1024 * 1024,
            upload_idle_timeout_ms: 30_000,
            on_user_delete: "keep".into(),
            orphan_grace_secs: 24 * 3600,
            orphan_sweep_interval_secs: 3600,
            render_cache_dir: None,
            render_cache_bytes: 1 << 30,
            render_concurrency: None,
            resumable_expiry_secs: 24 * 3600,
        }
    }
}

/// `[functions]`
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FunctionsConfig {
    /// Directory of `<name>/function.toml` (+ Rust source or a `<name>.wasm`).
    pub dir: PathBuf,
    /// Build Rust functions with cargo at start and on change (default: on in
    /// `dev`, off in `serve`).
    pub build: Option<bool>,
    /// Watch `dir` and rebuild/reload on change (default: on in `dev`).
    pub watch: Option<bool>,
    /// Cargo target directory of guest builds (shared by all functions).
    pub target_dir: Option<PathBuf>,
    /// Where this node keeps compiled (native) artifacts, keyed by content hash
    /// and engine fingerprint.
    pub cache_dir: Option<PathBuf>,
    /// Calls running at once across all functions; more get 503.
    pub max_concurrency: usize,
    /// Guest database calls running at once (a bounded share of the pool).
    pub max_db_calls: Option<usize>,
    /// Epoch tick, in milliseconds: how often a spinning guest yields.
    pub tick_ms: u64,
    /// Idle warm instances the node keeps for functions with `reuse` > 1,
    /// over all functions (each holds memory and a slot of the instance pool).
    pub warm_instances: usize,
    /// Serve the functions found in `dir` (default: on in `dev`; deployed
    /// functions are always served).
    pub local: Option<bool>,
    /// Keep one invocation record per call (`wasmbase functions logs`).
    pub invocation_logs: bool,
    /// Hours invocation records are kept (0: forever). Seven days by default,
    /// as on Supabase's Pro plan; the logs table otherwise grows without end.
    pub log_retention_hours: u64,
    /// Base64 of the 32-byte AES-256-GCM key that encrypts secrets
    /// (`WASMBASE_FUNCTIONS_SECRETS_KEY`; generated for `dev`).
    pub secrets_key: Option<String>,
}

impl std::fmt::Debug for FunctionsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FunctionsConfig")
            .field("dir", &self.dir)
            .field("build", &self.build)
            .field("watch", &self.watch)
            .field("target_dir", &self.target_dir)
            .field("cache_dir", &self.cache_dir)
            .field("max_concurrency", &self.max_concurrency)
            .field("max_db_calls", &self.max_db_calls)
            .field("tick_ms", &self.tick_ms)
            .field("warm_instances", &self.warm_instances)
            .field("local", &self.local)
            .field("invocation_logs", &self.invocation_logs)
            .field("log_retention_hours", &self.log_retention_hours)
            .field(
                "secrets_key",
                &self.secrets_key.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl Default for FunctionsConfig {
    fn default() -> Self {
        FunctionsConfig {
            dir: PathBuf::from("functions"),
            build: None,
            watch: None,
            target_dir: None,
            cache_dir: None,
            max_concurrency: 256,
            max_db_calls: None,
            tick_ms: 2,
            warm_instances: 32,
            local: None,
            secrets_key: None,
            invocation_logs: true,
            log_retention_hours: 168,
        }
    }
}

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to bind, `host:port` (port 0 picks a free one).
    pub listen: String,
    /// Largest accepted request body, in bytes.
    pub body_limit_bytes: u64,
    /// Time allowed to produce a response head, in milliseconds.
    pub request_timeout_ms: u64,
    /// Allowed CORS origins; `["*"]` allows any (Supabase's default).
    pub cors_origins: Vec<String>,
    /// How long shutdown waits for in-flight requests, in milliseconds.
    pub shutdown_grace_ms: u64,
    /// Take the client IP from the last `X-Forwarded-For` hop (behind a proxy).
    pub trust_forwarded_for: bool,
    /// 0 (default): connections are served on tokio's work-stealing runtime.
    /// N: on N threads of their own, one single-threaded runtime each
    /// (`server::cores`; faster for functions, slower for database-bound
    /// routes, measured in docs/ARCHITECTURE.md).
    pub threads: usize,
    /// Time for a whole request head (from accept for the first request, from
    /// its first byte for the next ones), in milliseconds; slower clients are
    /// disconnected (`server::conn`).
    pub header_read_timeout_ms: u64,
    /// A connection with no request and nothing sent either way for this long
    /// is closed, in milliseconds.
    pub keepalive_idle_timeout_ms: u64,
    /// Most connections open at once; past it a new one gets `503`
    /// `too_many_connections` and is closed.
    pub max_connections: usize,
}

/// `[database]`
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// Owner connection (migrations, platform bookkeeping). Also `DATABASE_URL`.
    pub url: Option<String>,
    /// Password the `authenticator` role logs in with (set on the role at start).
    pub authenticator_password: Option<String>,
    /// Password of `wasmbase_auth`, the auth API's login role. Its own secret, so
    /// the request pool's credential does not open the auth tables.
    pub auth_password: Option<String>,
    /// Password of `wasmbase_functions`, the login role of functions' raw SQL
    /// (member of `service_role`). Its own secret, for the same reason.
    pub functions_password: Option<String>,
    /// Connections in the request pool.
    pub pool_size: usize,
    /// How long a request waits for a pooled connection, in milliseconds.
    pub pool_timeout_ms: u64,
    /// `statement_timeout` of anon request transactions, in milliseconds.
    pub anon_statement_timeout_ms: u64,
    /// `statement_timeout` of authenticated and service request transactions.
    pub statement_timeout_ms: u64,
    /// Schemas the APIs expose.
    pub exposed_schemas: Vec<String>,
    /// Enable row-level security on every new table in an exposed schema.
    pub rls_by_default: bool,
    /// Most rows one `/rest/v1` read returns (PostgREST's `db-max-rows`).
    pub max_rows: i64,
    /// Allow PATCH and DELETE without any filter (refused by default).
    pub allow_unfiltered_writes: bool,
    /// Prepared data-API statements kept per connection (cleared when full; a
    /// schema reload changes every statement's text, so old ones are never reused).
    pub statement_cache_size: usize,
    /// Seconds between schema-cache checks when DDL cannot be observed through
    /// the event trigger (a non-superuser owner); 0 disables polling.
    pub schema_poll_secs: u64,
}

/// `[auth]`
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// HS256 secret (at least 32 characters). Also `WASMBASE_AUTH_JWT_SECRET`.
    pub jwt_secret: Option<String>,
    /// Required `aud` of user tokens; empty string disables the check.
    pub jwt_audience: String,
    /// `iss` of tokens minted by `wasmbase token` and of the legacy API keys (access
    /// tokens from `/auth/v1` carry `<external_url>/auth/v1`, as GoTrue's do).
    pub jwt_issuer: String,
    /// Accept legacy JWT `anon`/`service_role` keys as `apikey`.
    pub legacy_jwt_keys: bool,
    /// PKCS#8 PEM files of ES256/RS256 keys: the first signs access tokens, all
    /// verify, all are published at `/auth/v1/.well-known/jwks.json`.
    pub signing_keys: Vec<PathBuf>,
    /// Where the app lives: the default redirect after email links (GoTrue's SITE_URL).
    pub site_url: String,
    /// Allowed `redirect_to` targets besides `site_url`; `*` matches within a path
    /// segment, a trailing `**` matches any rest (`http://localhost:3000/**`).
    pub redirect_urls: Vec<String>,
    /// Public base URL of this server, used in email links; default: the listen address.
    pub external_url: Option<String>,
    /// Sign users in without email confirmation (default: on in `dev`, off in `serve`).
    pub autoconfirm: Option<bool>,
    /// Refuse new sign-ups.
    pub disable_signup: bool,
    /// Shortest accepted password.
    pub password_min_length: usize,
    /// Lifetime of access tokens, in seconds.
    pub access_token_ttl_secs: u64,
    /// Window in which a just-rotated refresh token may be reused (two tabs).
    pub refresh_token_reuse_interval_secs: u64,
    /// A session ends this many seconds after sign-in, whatever its use (GoTrue's
    /// `GOTRUE_SESSIONS_TIMEBOX`); 0 = never.
    pub sessions_timebox_secs: u64,
    /// A session ends after this many seconds without a refresh (GoTrue's
    /// `GOTRUE_SESSIONS_INACTIVITY_TIMEOUT`); 0 = never.
    pub sessions_inactivity_timeout_secs: u64,
    /// Lifetime of email links and OTP codes, in seconds.
    pub otp_ttl_secs: u64,
    /// Minimum seconds between two emails of one kind to one user.
    pub email_min_interval_secs: u64,
    /// Requests per minute per client IP on sign-in, sign-up, recover, otp and verify.
    pub rate_limit_ip_per_minute: u32,
    /// Requests per minute per email address on the same endpoints.
    pub rate_limit_email_per_minute: u32,
    /// Password hashes computed at once (default: cores - 1, at least 1).
    pub hash_concurrency: Option<usize>,
    /// Password hashes allowed to wait; more get 503.
    pub hash_queue: usize,
    /// Outgoing mail; without it, mail goes to the dev mailbox (`wasmbase mail`),
    /// which takes `dev_mailbox = true`.
    pub smtp: Option<SmtpConfig>,
    /// Keep auth emails in the dev mailbox (`wasmbase.mailbox`) when no `smtp` is
    /// set. Its rows hold live magic links and recovery and invite codes, which
    /// anyone with database or secret-key access can use, so a server without
    /// SMTP starts only when this is `true`: `dev` sets it by default, `serve`
    /// never does. With `smtp` set, mail goes out by SMTP either way.
    pub dev_mailbox: Option<bool>,
    /// Sign-in providers by name (`[auth.external.github]`, `[auth.external.google]`,
    /// or any OpenID Connect issuer under a name of your choice).
    pub external: BTreeMap<String, ExternalProvider>,
    /// Allow `signInAnonymously()` (default: on in `dev`, off in `serve`), as
    /// GoTrue's `GOTRUE_EXTERNAL_ANONYMOUS_USERS_ENABLED`.
    pub anonymous_sign_ins: Option<bool>,
    /// Anonymous users older than this many days are deleted by the sweeper
    /// (0 = never), so abandoned guest accounts do not pile up.
    pub anonymous_max_age_days: u32,
    /// Anonymous sign-ins per hour per client IP (GoTrue's default: 30); 0 = no limit.
    pub rate_limit_anonymous_per_hour: u32,
    /// Let a signed-in user link another provider (`linkIdentity`) and unlink one.
    pub manual_linking: bool,
    /// Longest wait for any one call to a sign-in provider, in seconds.
    pub provider_timeout_secs: u64,
}

/// `[auth.external.<name>]`: one OAuth 2 / OpenID Connect provider. `github` is
/// GitHub's OAuth 2; `google` and `apple` are OIDC with their issuers built in;
/// any other name is a generic OIDC provider found by `issuer` discovery.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExternalProvider {
    /// Offered to users (a configured provider is on unless this says false).
    pub enabled: bool,
    /// The OAuth client id registered with the provider.
    pub client_id: String,
    /// The OAuth client secret. Also `WASMBASE_AUTH_EXTERNAL_<NAME>_SECRET`.
    pub secret: String,
    /// The callback URL registered with the provider; default
    /// `<external_url>/auth/v1/callback`.
    pub redirect_uri: Option<String>,
    /// OIDC issuer URL (required for a generic provider; overrides Google's or Apple's).
    pub issuer: Option<String>,
    /// Scopes requested besides the provider's defaults.
    pub scopes: Vec<String>,
    /// GitHub's web address (GitHub Enterprise, or a test double); default `https://github.com`.
    pub url: Option<String>,
    /// GitHub's API address; default `https://api.github.com`.
    pub api_url: Option<String>,
    /// More accepted `aud` values for ID-token sign-in (an app's iOS or Android client ids).
    pub additional_client_ids: Vec<String>,
}

impl Default for ExternalProvider {
    fn default() -> Self {
        ExternalProvider {
            enabled: true,
            client_id: String::new(),
            secret: String::new(),
            redirect_uri: None,
            issuer: None,
            scopes: Vec::new(),
            url: None,
            api_url: None,
            additional_client_ids: Vec::new(),
        }
    }
}

/// `[auth.smtp]`
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    /// Server host name.
    pub host: String,
    /// Port (587 for STARTTLS, 465 for TLS, 25 plain).
    #[serde(default = "default_smtp_port")]
    pub port: u16,
    /// Login user, if the server needs one.
    #[serde(default)]
    pub user: Option<String>,
    /// Login password.
    #[serde(default)]
    pub pass: Option<String>,
    /// Sender, e.g. `Acme <no-reply@acme.dev>`.
    pub from: String,
    /// `starttls` (default), `tls` or `none`.
    #[serde(default = "default_smtp_tls")]
    pub tls: String,
}

fn default_smtp_port() -> u16 {
    587
}

fn default_smtp_tls() -> String {
    "starttls".into()
}

/// `[log]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `json` or `pretty`; default json in `serve`, pretty in `dev`.
    pub format: Option<String>,
    /// A tracing filter such as `info` or `wasmbase=debug`.
    pub level: String,
}

/// `[migrations]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MigrationsConfig {
    /// Directory of the project's `*.sql` migrations, applied in name order.
    pub dir: PathBuf,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "0.0.0.0:8000".into(),
            body_limit_bytes: 10 * 1024 * 1024,
            request_timeout_ms: 30_000,
            cors_origins: vec!["*".into()],
            shutdown_grace_ms: 10_000,
            trust_forwarded_for: false,
            threads: 0,
            header_read_timeout_ms: 10_000,
            keepalive_idle_timeout_ms: 60_000,
            max_connections: 10_000,
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: None,
            authenticator_password: None,
            auth_password: None,
            functions_password: None,
            pool_size: 16,
            pool_timeout_ms: 5_000,
            anon_statement_timeout_ms: 3_000,
            statement_timeout_ms: 8_000,
            exposed_schemas: vec!["public".into()],
            rls_by_default: true,
            max_rows: 1000,
            allow_unfiltered_writes: false,
            statement_cache_size: 256,
            schema_poll_secs: 30,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            jwt_secret: None,
            jwt_audience: "authenticated".into(),
            jwt_issuer: "wasmbase".into(),
            legacy_jwt_keys: true,
            signing_keys: Vec::new(),
            site_url: "http://localhost:3000".into(),
            redirect_urls: Vec::new(),
            external_url: None,
            autoconfirm: None,
            disable_signup: false,
            password_min_length: 8,
            access_token_ttl_secs: 3600,
            refresh_token_reuse_interval_secs: 10,
            sessions_timebox_secs: 0,
            sessions_inactivity_timeout_secs: 0,
            otp_ttl_secs: 3600,
            email_min_interval_secs: 60,
            rate_limit_ip_per_minute: 300,
            rate_limit_email_per_minute: 20,
            hash_concurrency: None,
            hash_queue: 32,
            smtp: None,
            dev_mailbox: None,
            external: BTreeMap::new(),
            anonymous_sign_ins: None,
            anonymous_max_age_days: 30,
            rate_limit_anonymous_per_hour: 30,
            manual_linking: true,
            provider_timeout_secs: 10,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: None,
            level: "info".into(),
        }
    }
}

impl Default for MigrationsConfig {
    fn default() -> Self {
        MigrationsConfig {
            dir: PathBuf::from("db/migrations"),
        }
    }
}

/// What `Debug` shows for a secret: whether it is set, never its value (a stray
/// `?config` in a log line must not leak keys or passwords).
fn redacted<T>(v: &Option<T>) -> &'static str {
    if v.is_some() {
        "<redacted>"
    } else {
        "<unset>"
    }
}

impl DatabaseConfig {
    /// The three login roles each have their own password, or none has one
    /// (PostgreSQL authenticates them some other way, e.g. `trust` or `peer`).
    /// Installations from before the split have only `authenticator_password`:
    /// the message names the missing keys and the `ALTER ROLE` an administrator
    /// runs when the owner cannot set them itself.
    fn check_login_passwords(&self) -> Result<(), ConfigError> {
        let keys = [
            (
                "database.authenticator_password",
                "authenticator",
                &self.authenticator_password,
            ),
            (
                "database.auth_password",
                "wasmbase_auth",
                &self.auth_password,
            ),
            (
                "database.functions_password",
                "wasmbase_functions",
                &self.functions_password,
            ),
        ];
        let missing: Vec<_> = keys.iter().filter(|k| k.2.is_none()).collect();
        if !missing.is_empty() && missing.len() < keys.len() {
            let names = missing
                .iter()
                .map(|k| format!("`{}`", k.0))
                .collect::<Vec<_>>()
                .join(", ");
            let vars = missing
                .iter()
                .map(|k| format!("WASMBASE_{}", k.0.replace('.', "_").to_ascii_uppercase()))
                .collect::<Vec<_>>()
                .join(", ");
            let alter = missing
                .iter()
                .map(|k| format!("ALTER ROLE {} PASSWORD '<{}>';", k.1, k.0))
                .collect::<Vec<_>>()
                .join(" ");
            return Err(ConfigError(format!(
                "{names}: not set. Each login role has its own password (the request pool's \
                 password must not open the auth tables or the functions role): set {vars} \
                 to new random values (different from each other and from any password set \
                 already). At start the node sets them on the roles (the owner needs \
                 CREATEROLE); otherwise run as an administrator: \
                 {alter} See docs/OPERATIONS.md (Roles and privileges)"
            )));
        }
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                if a.2.is_some() && a.2 == b.2 {
                    return Err(ConfigError(format!(
                        "`{}`: must differ from `{}` (each login role has its own password)",
                        b.0, a.0
                    )));
                }
            }
        }
        Ok(())
    }
}

impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &redacted(&self.url))
            .field(
                "authenticator_password",
                &redacted(&self.authenticator_password),
            )
            .field("auth_password", &redacted(&self.auth_password))
            .field("functions_password", &redacted(&self.functions_password))
            .field("pool_size", &self.pool_size)
            .field("pool_timeout_ms", &self.pool_timeout_ms)
            .field("anon_statement_timeout_ms", &self.anon_statement_timeout_ms)
            .field("statement_timeout_ms", &self.statement_timeout_ms)
            .field("exposed_schemas", &self.exposed_schemas)
            .field("max_rows", &self.max_rows)
            .field("allow_unfiltered_writes", &self.allow_unfiltered_writes)
            .field("statement_cache_size", &self.statement_cache_size)
            .field("schema_poll_secs", &self.schema_poll_secs)
            .field("rls_by_default", &self.rls_by_default)
            .finish()
    }
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("jwt_secret", &redacted(&self.jwt_secret))
            .field("jwt_audience", &self.jwt_audience)
            .field("site_url", &self.site_url)
            .field("redirect_urls", &self.redirect_urls)
            .field("signing_keys", &self.signing_keys)
            .field("smtp", &self.smtp)
            .field("dev_mailbox", &self.dev_mailbox)
            .field("external", &self.external)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for ExternalProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalProvider")
            .field("enabled", &self.enabled)
            .field("client_id", &self.client_id)
            .field(
                "secret",
                &redacted(&Some(()).filter(|_| !self.secret.is_empty())),
            )
            .field("redirect_uri", &self.redirect_uri)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("pass", &redacted(&self.pass))
            .field("from", &self.from)
            .field("tls", &self.tls)
            .finish()
    }
}

const SECTIONS: &[&str] = &[
    "data",
    "server",
    "database",
    "auth",
    "log",
    "migrations",
    "functions",
    "storage",
    "realtime",
    "cron",
];

/// Keys whose environment value is always taken verbatim, so a password such as
/// `123456` or `true` is not read as a number or boolean.
const STRING_KEYS: &[&str] = &[
    "server.listen",
    "database.url",
    "database.authenticator_password",
    "database.auth_password",
    "database.functions_password",
    "auth.jwt_secret",
    "auth.jwt_audience",
    "auth.jwt_issuer",
    "auth.site_url",
    "auth.external_url",
    "log.format",
    "log.level",
    "storage.s3_access_key_id",
    "storage.s3_secret_access_key",
    "storage.s3_bucket",
    "storage.s3_prefix",
    "migrations.dir",
    "functions.secrets_key",
];

impl Config {
    /// Loads `path` (if it exists, or fails if `required`), applies the environment,
    /// and applies `mode` defaults. Validation is separate: see [`Config::validate`].
    pub fn load(path: Option<&Path>, required: bool, mode: Mode) -> Result<Config, ConfigError> {
        let file = path.unwrap_or(Path::new("wasmbase.toml"));
        let mut table = match std::fs::read_to_string(file) {
            Ok(text) => toml::from_str::<toml::Table>(&text)
                .map_err(|e| ConfigError(format!("{}: {}", file.display(), e.message())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => toml::Table::new(),
            Err(e) => return Err(ConfigError(format!("{}: {e}", file.display()))),
        };
        if mode == Mode::Dev {
            let server = table
                .entry("server")
                .or_insert_with(|| toml::Table::new().into());
            if let Some(t) = server.as_table_mut() {
                t.entry("listen")
                    .or_insert_with(|| "127.0.0.1:54321".into());
            }
        }
        apply_env(&mut table, std::env::vars())?;
        let de = toml::Value::Table(table);
        let cfg: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().message().to_string();
            if path == "." {
                ConfigError(inner)
            } else {
                ConfigError(format!("`{path}`: {inner}"))
            }
        })?;
        Ok(cfg)
    }

    /// Checks every value the server relies on; the message names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |k: &str, m: String| Err(ConfigError(format!("`{k}`: {m}")));
        if SocketAddr::from_str(&self.server.listen).is_err() {
            return err(
                "server.listen",
                format!(
                    "'{}' is not an address like 127.0.0.1:8000",
                    self.server.listen
                ),
            );
        }
        if !matches!(self.storage.on_user_delete.as_str(), "keep" | "delete") {
            return err(
                "storage.on_user_delete",
                format!(
                    "'{}' is not \"keep\" or \"delete\"",
                    self.storage.on_user_delete
                ),
            );
        }
        match self.storage.backend.as_str() {
            "local" => {}
            "s3" => {
                for (k, v) in [
                    ("storage.s3_bucket", &self.storage.s3_bucket),
                    ("storage.s3_access_key_id", &self.storage.s3_access_key_id),
                    (
                        "storage.s3_secret_access_key",
                        &self.storage.s3_secret_access_key,
                    ),
                ] {
                    if v.as_deref().is_none_or(str::is_empty) {
                        return err(
                            k,
                            format!(
                                "not set, and storage.backend is \"s3\" (set it or WASMBASE_{})",
                                k.replace('.', "_").to_ascii_uppercase()
                            ),
                        );
                    }
                }
            }
            other => {
                return err(
                    "storage.backend",
                    format!("'{other}' is not a backend; use \"local\" or \"s3\""),
                )
            }
        }
        if self.realtime.messages_retention_hours == 0 {
            return err(
                "realtime.messages_retention_hours",
                "realtime.messages_retention_hours must be greater than 0".into(),
            );
        }
        if self.realtime.catchup_window_secs < 10 {
            return err(
                "realtime.catchup_window_secs",
                "realtime.catchup_window_secs must be at least 10 (changes are pruned after it, \
                 and a node must have read them first)"
                    .into(),
            );
        }
        if self.storage.resumable_expiry_secs == 0 {
            return err(
                "storage.resumable_expiry_secs",
                "storage.resumable_expiry_secs must be greater than 0".into(),
            );
        }
        if self.storage.max_upload_bytes == 0 || self.storage.upload_idle_timeout_ms == 0 {
            return err(
                "storage.max_upload_bytes",
                "storage.max_upload_bytes and storage.upload_idle_timeout_ms must be greater than 0".into(),
            );
        }
        if let Some(h) = self
            .cron
            .http_allow
            .iter()
            .find(|h| !crate::functions::manifest::valid_host_grant(h))
        {
            return err(
                "cron.http_allow",
                format!("{h:?} must be a host or host:port (no scheme, no path)"),
            );
        }
        if !(self.data.aggregate_max_cost > 0.0 && self.data.aggregate_max_cost.is_finite()) {
            return err(
                "data.aggregate_max_cost",
                "must be a positive number".into(),
            );
        }
        if self.cron.lease_secs == 0
            || self.cron.history_per_job == 0
            || self.cron.output_max_bytes == 0
        {
            return Err(ConfigError(
                "`cron.lease_secs`, `cron.history_per_job` and `cron.output_max_bytes` must be greater than 0".into(),
            ));
        }
        if self.realtime.presence_timeout_secs == 0
            || self.realtime.max_channels_per_client == 0
            || self.realtime.max_payload_bytes == 0
            || self.realtime.max_connections == 0
            || self.realtime.max_joins_per_second == 0
            || self.realtime.max_events_per_second == 0
        {
            return err(
                "realtime.presence_timeout_secs",
                "every realtime.* limit must be greater than 0".into(),
            );
        }
        if self.server.body_limit_bytes == 0 {
            return err("server.body_limit_bytes", "must be greater than 0".into());
        }
        if self.server.request_timeout_ms == 0 {
            return err("server.request_timeout_ms", "must be greater than 0".into());
        }
        for (key, v) in [
            (
                "server.header_read_timeout_ms",
                self.server.header_read_timeout_ms,
            ),
            (
                "server.keepalive_idle_timeout_ms",
                self.server.keepalive_idle_timeout_ms,
            ),
            ("server.max_connections", self.server.max_connections as u64),
        ] {
            if v == 0 {
                return err(key, "must be greater than 0".into());
            }
        }
        for o in &self.server.cors_origins {
            if o != "*" && !(o.starts_with("http://") || o.starts_with("https://"))
                || o.ends_with('/')
            {
                return err(
                    "server.cors_origins",
                    format!("'{o}' is not '*' or an origin like https://app.example.com"),
                );
            }
        }
        match &self.database.url {
            None => {
                return err(
                    "database.url",
                    "not set (set it in wasmbase.toml, WASMBASE_DATABASE_URL or DATABASE_URL)"
                        .into(),
                )
            }
            Some(u) => {
                match tokio_postgres::Config::from_str(u) {
                    Err(e) => return err("database.url", format!("not a PostgreSQL URL: {e}")),
                    Ok(c) if c.get_ssl_mode() == tokio_postgres::config::SslMode::Require => {
                        return err(
                            "database.url",
                            "sslmode=require is not supported yet (no TLS to PostgreSQL); see docs/OPERATIONS.md".into(),
                        )
                    }
                    Ok(_) => {}
                }
            }
        }
        self.database.check_login_passwords()?;
        if !(1..=1000).contains(&self.database.pool_size) {
            return err("database.pool_size", "must be between 1 and 1000".into());
        }
        if !(1..=50).contains(&self.functions.tick_ms) {
            return err(
                "functions.tick_ms",
                "must be between 1 and 50 (a spinning guest yields once per tick)".into(),
            );
        }
        if self.functions.warm_instances > 10_000 {
            return err("functions.warm_instances", "must be at most 10000".into());
        }
        if self.functions.max_concurrency == 0 {
            return err("functions.max_concurrency", "must be at least 1".into());
        }
        if !(1..=1_000_000).contains(&self.database.max_rows) {
            return err("database.max_rows", "must be between 1 and 1000000".into());
        }
        for (k, v) in [
            ("database.pool_timeout_ms", self.database.pool_timeout_ms),
            (
                "database.statement_timeout_ms",
                self.database.statement_timeout_ms,
            ),
            (
                "database.anon_statement_timeout_ms",
                self.database.anon_statement_timeout_ms,
            ),
        ] {
            if v == 0 {
                return err(k, "must be greater than 0".into());
            }
        }
        if self.database.exposed_schemas.is_empty() {
            return err(
                "database.exposed_schemas",
                "must name at least one schema".into(),
            );
        }
        for s in &self.database.exposed_schemas {
            let ok = s
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if !ok || wasmbase_host_api::data::profile::is_platform_schema(s) {
                return err(
                    "database.exposed_schemas",
                    format!("'{s}' is not an exposable schema name"),
                );
            }
        }
        match &self.auth.jwt_secret {
            None => {
                return err(
                    "auth.jwt_secret",
                    "not set (set it in wasmbase.toml or WASMBASE_AUTH_JWT_SECRET)".into(),
                )
            }
            Some(s) if s.len() < wasmbase_host_api::jwt::MIN_SECRET_LEN => {
                return err(
                    "auth.jwt_secret",
                    format!(
                        "must be at least {} characters",
                        wasmbase_host_api::jwt::MIN_SECRET_LEN
                    ),
                )
            }
            _ => {}
        }
        for (k, u) in [
            ("auth.site_url", Some(&self.auth.site_url)),
            ("auth.external_url", self.auth.external_url.as_ref()),
        ] {
            if let Some(u) = u {
                if url::Url::parse(u)
                    .map(|u| u.scheme() != "http" && u.scheme() != "https")
                    .unwrap_or(true)
                {
                    return err(k, format!("'{u}' is not an http(s) URL"));
                }
            }
        }
        if !(6..=72).contains(&self.auth.password_min_length) {
            return err(
                "auth.password_min_length",
                "must be between 6 and 72".into(),
            );
        }
        for (name, p) in &self.auth.external {
            let key = |k: &str| format!("auth.external.{name}.{k}");
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
            {
                return err(
                    &format!("auth.external.{name}"),
                    "a provider name is lower-case letters, digits, `_` and `-`".into(),
                );
            }
            if matches!(name.as_str(), "email" | "phone" | "anonymous") {
                // Their identities would mix with e-mail ones (keyed by user id).
                return err(
                    &format!("auth.external.{name}"),
                    format!("`{name}` is a built-in sign-in method, not a provider name"),
                );
            }
            if !p.enabled {
                continue;
            }
            if p.client_id.is_empty() {
                return err(
                    &key("client_id"),
                    "an enabled provider needs its client id".into(),
                );
            }
            if p.issuer.is_none() && !matches!(name.as_str(), "github" | "google" | "apple") {
                return err(
                    &key("issuer"),
                    format!(
                        "`{name}` is not GitHub, Google or Apple, so it is an OpenID Connect provider \
                         and needs the issuer URL it publishes discovery under"
                    ),
                );
            }
            for (k, v) in [
                ("issuer", p.issuer.as_ref()),
                ("url", p.url.as_ref()),
                ("api_url", p.api_url.as_ref()),
                ("redirect_uri", p.redirect_uri.as_ref()),
            ] {
                if let Some(v) = v {
                    if !matches!(url::Url::parse(v), Ok(u) if matches!(u.scheme(), "http" | "https"))
                    {
                        return err(&key(k), format!("'{v}' is not an http(s) URL"));
                    }
                }
            }
        }
        if self.auth.access_token_ttl_secs < 30 {
            return err("auth.access_token_ttl_secs", "must be at least 30".into());
        }
        if self.auth.smtp.is_none() && self.auth.dev_mailbox != Some(true) {
            return err(
                "auth.dev_mailbox",
                "no `[auth.smtp]` is configured, so auth emails (live magic links, recovery and \
                 invite codes) would be stored in the dev mailbox instead of sent; configure \
                 `[auth.smtp]` (or WASMBASE_AUTH_SMTP), or set `auth.dev_mailbox = true` \
                 (WASMBASE_AUTH_DEV_MAILBOX=true) to keep them in the mailbox on purpose"
                    .into(),
            );
        }
        if let Some(s) = &self.auth.smtp {
            if !matches!(s.tls.as_str(), "starttls" | "tls" | "none") {
                return err(
                    "auth.smtp.tls",
                    format!("'{}' is not starttls, tls or none", s.tls),
                );
            }
            if s.from.parse::<lettre::message::Mailbox>().is_err() {
                return err(
                    "auth.smtp.from",
                    format!(
                        "'{}' is not an address like 'App <no-reply@app.dev>'",
                        s.from
                    ),
                );
            }
        }
        if let Some(f) = &self.log.format {
            if f != "json" && f != "pretty" {
                return err("log.format", format!("'{f}' is not 'json' or 'pretty'"));
            }
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return err(
                "log.level",
                format!("'{}' is not a log filter such as 'info'", self.log.level),
            );
        }
        Ok(())
    }

    /// The listen address (valid after [`Config::validate`]).
    pub fn listen_addr(&self) -> SocketAddr {
        SocketAddr::from_str(&self.server.listen).expect("validated")
    }
}

/// Applies `WASMBASE_<SECTION>_<KEY>=value` and `DATABASE_URL` to the TOML table.
/// Values are read as TOML when they parse (`8`, `true`, `["a","b"]`), else as
/// strings. Variables whose section is not a config section (e.g. `WASMBASE_URL`,
/// which `.wasmbase/env` sets) are ignored; unknown keys in a known section are
/// reported by the deserializer like unknown keys in the file.
pub fn apply_env(
    table: &mut toml::Table,
    vars: impl Iterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    let mut vars: Vec<(String, String)> = vars.collect();
    // DATABASE_URL first so WASMBASE_DATABASE_URL wins.
    vars.sort_by_key(|(k, _)| k != "DATABASE_URL");
    for (name, value) in vars {
        let (section, key) = if name == "DATABASE_URL" {
            ("database".to_string(), "url".to_string())
        } else if let Some(rest) = name.strip_prefix("WASMBASE_") {
            let lower = rest.to_ascii_lowercase();
            let Some((s, k)) = lower.split_once('_') else {
                continue;
            };
            if !SECTIONS.contains(&s) || k.is_empty() {
                continue;
            }
            (s.to_string(), k.to_string())
        } else {
            continue;
        };
        // WASMBASE_AUTH_EXTERNAL_<NAME>_<KEY> goes to [auth.external.<name>].
        let (path, key, verbatim, list) = match external_key(&section, &key) {
            Some((name, k)) => (
                vec![section.clone(), "external".to_string(), name],
                k.to_string(),
                !EXTERNAL_LIST_KEYS.contains(&k) && k != "enabled",
                EXTERNAL_LIST_KEYS.contains(&k),
            ),
            None => {
                let verbatim = STRING_KEYS.contains(&format!("{section}.{key}").as_str());
                (vec![section.clone()], key, verbatim, false)
            }
        };
        let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .filter(|v| !verbatim && (!list || v.is_array()))
            .unwrap_or_else(|| {
                if list {
                    // `read:user,user:email` or `read:user user:email`.
                    toml::Value::Array(
                        value
                            .split([',', ' '])
                            .filter(|s| !s.is_empty())
                            .map(|s| toml::Value::String(s.to_string()))
                            .collect(),
                    )
                } else {
                    toml::Value::String(value.clone())
                }
            });
        let mut t = &mut *table;
        for part in &path {
            let entry = t
                .entry(part.clone())
                .or_insert_with(|| toml::Table::new().into());
            t = entry
                .as_table_mut()
                .ok_or_else(|| ConfigError(format!("`{}` must be a table", path.join("."))))?;
        }
        t.insert(key, parsed);
    }
    Ok(())
}

/// Keys of `[auth.external.<name>]`, longest first so `github_api_url` is
/// `github` + `api_url`, not `github_api` + `url`.
const EXTERNAL_KEYS: &[&str] = &[
    "additional_client_ids",
    "redirect_uri",
    "client_id",
    "api_url",
    "enabled",
    "secret",
    "issuer",
    "scopes",
    "url",
];

/// Keys of `[auth.external.<name>]` that hold lists.
const EXTERNAL_LIST_KEYS: &[&str] = &["additional_client_ids", "scopes"];

/// `(provider name, key)` when `section.key` is `auth.external_<name>_<key>`.
fn external_key(section: &str, key: &str) -> Option<(String, &'static str)> {
    let rest = key
        .strip_prefix("external_")
        .filter(|_| section == "auth")?;
    EXTERNAL_KEYS.iter().find_map(|k| {
        let name = rest.strip_suffix(k)?.strip_suffix('_')?;
        (!name.is_empty()).then(|| (name.to_string(), *k))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Iterator<Item = (String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn env_overrides_and_names_bad_keys() {
        let mut t = toml::Table::new();
        apply_env(
            &mut t,
            env(&[
                ("WASMBASE_DATABASE_POOL_SIZE", "4"),
                ("DATABASE_URL", "postgres://a@b/c"),
                ("WASMBASE_URL", "http://ignored"),
                ("WASMBASE_SERVER_CORS_ORIGINS", r#"["https://a.example"]"#),
                ("WASMBASE_AUTH_JWT_SECRET", "123456"),
            ]),
        )
        .unwrap();
        let c: Config = toml::Value::Table(t).try_into().unwrap();
        assert_eq!(c.database.pool_size, 4);
        assert_eq!(c.database.url.as_deref(), Some("postgres://a@b/c"));
        assert_eq!(c.server.cors_origins, vec!["https://a.example"]);
        assert_eq!(
            c.auth.jwt_secret.as_deref(),
            Some("123456"),
            "secrets stay strings"
        );

        let mut t = toml::Table::new();
        apply_env(&mut t, env(&[("WASMBASE_SERVER_LISTN", "x")])).unwrap();
        let e = serde_path_to_error::deserialize::<_, Config>(toml::Value::Table(t)).unwrap_err();
        assert!(e.to_string().contains("listn"), "{e}");
    }

    #[test]
    fn external_providers_come_from_flat_env_names() {
        let mut t = toml::Table::new();
        apply_env(
            &mut t,
            env(&[
                ("WASMBASE_AUTH_EXTERNAL_GITHUB_ENABLED", "true"),
                ("WASMBASE_AUTH_EXTERNAL_GITHUB_CLIENT_ID", "1234"),
                ("WASMBASE_AUTH_EXTERNAL_GITHUB_SECRET", "0x99"),
                (
                    "WASMBASE_AUTH_EXTERNAL_GITHUB_API_URL",
                    "http://127.0.0.1:9/api",
                ),
                ("WASMBASE_AUTH_EXTERNAL_GITHUB_SCOPES", "read:org,repo"),
                (
                    "WASMBASE_AUTH_EXTERNAL_LINKEDIN_OIDC_ISSUER",
                    "https://www.linkedin.com/oauth",
                ),
            ]),
        )
        .unwrap();
        let c: Config = toml::Value::Table(t).try_into().unwrap();
        let gh = &c.auth.external["github"];
        assert!(gh.enabled);
        assert_eq!(gh.client_id, "1234", "ids stay strings");
        assert_eq!(gh.secret, "0x99", "secrets stay strings");
        assert_eq!(gh.api_url.as_deref(), Some("http://127.0.0.1:9/api"));
        assert_eq!(gh.url, None);
        assert_eq!(gh.scopes, vec!["read:org", "repo"]);
        assert_eq!(
            c.auth.external["linkedin_oidc"].issuer.as_deref(),
            Some("https://www.linkedin.com/oauth")
        );
        assert!(
            !format!("{c:?}").contains("0x99"),
            "the secret is not shown"
        );
    }

    #[test]
    fn debug_never_shows_secrets() {
        let mut c = Config::default();
        c.database.url = Some("postgres://u:hunter2@h/db".into());
        c.database.authenticator_password = Some("hunter3".into());
        c.database.auth_password = Some("hunter5".into());
        c.database.functions_password = Some("hunter6".into());
        c.auth.jwt_secret = Some("hunter4".repeat(8));
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter"), "{shown}");
    }

    #[test]
    fn a_server_without_smtp_needs_an_explicit_dev_mailbox() {
        let mut c = Config::default();
        c.database.url = Some("postgres://x@localhost/db".into());
        c.auth.jwt_secret = Some("x".repeat(40));
        // What `serve` gets by default: refused, naming both options.
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("auth.dev_mailbox") && e.contains("auth.smtp"),
            "{e}"
        );
        c.auth.dev_mailbox = Some(false);
        assert!(c.validate().is_err());
        c.auth.dev_mailbox = Some(true);
        c.validate().unwrap();
        c.auth.dev_mailbox = None;
        c.auth.smtp = Some(SmtpConfig {
            host: "smtp.example.com".into(),
            port: 587,
            user: None,
            pass: None,
            from: "App <no-reply@app.dev>".into(),
            tls: "starttls".into(),
        });
        c.validate().unwrap();
        // The key is read from the file and the environment like any other.
        let mut t = toml::Table::new();
        apply_env(&mut t, env(&[("WASMBASE_AUTH_DEV_MAILBOX", "true")])).unwrap();
        let c: Config = toml::Value::Table(t).try_into().unwrap();
        assert_eq!(c.auth.dev_mailbox, Some(true));
    }

    #[test]
    fn validate_names_key() {
        let mut c = Config::default();
        c.database.url = Some("postgres://x@localhost/db".into());
        c.auth.jwt_secret = Some("short".into());
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("auth.jwt_secret"), "{e}");
        c.auth.jwt_secret = Some("x".repeat(40));
        c.server.listen = "nope".into();
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("server.listen"));
        c.server.listen = "127.0.0.1:0".into();
        c.database.exposed_schemas = vec!["public; drop".into()];
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("database.exposed_schemas"));
    }

    #[test]
    fn login_roles_need_their_own_passwords() {
        let mut c = Config::default();
        c.database.url = Some("postgres://x@localhost/db".into());
        c.auth.jwt_secret = Some("x".repeat(40));
        c.auth.dev_mailbox = Some(true);
        // None at all: PostgreSQL authenticates the roles some other way.
        c.validate().unwrap();
        // An installation from before the split: only the shared password.
        c.database.authenticator_password = Some("pw-a".into());
        let e = c.validate().unwrap_err().to_string();
        for needle in [
            "`database.auth_password`",
            "`database.functions_password`",
            "WASMBASE_DATABASE_AUTH_PASSWORD",
            "ALTER ROLE wasmbase_auth PASSWORD",
            "ALTER ROLE wasmbase_functions PASSWORD",
        ] {
            assert!(e.contains(needle), "{needle}: {e}");
        }
        assert!(!e.contains("pw-a"), "{e}");
        c.database.auth_password = Some("pw-b".into());
        c.database.functions_password = Some("pw-a".into());
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("database.functions_password") && e.contains("must differ"),
            "{e}"
        );
        c.database.functions_password = Some("pw-c".into());
        c.validate().unwrap();
    }
}
