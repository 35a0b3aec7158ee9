//! The private PostgreSQL cluster of `wasmbase dev` (and of the test harness).
//!
//! Uses the system's `initdb`/`pg_ctl`. PostgreSQL refuses to run as root, and on
//! many dev boxes and CI machines everything runs as root: then the cluster runs as
//! the unprivileged `postgres` user (which PostgreSQL's packages create), owning
//! the data directory. As root, nothing is trusted that another user could have
//! planted: `.wasmbase` must be ours and not writable by others, and a `pg`
//! symlink may only point into the root-owned `/var/lib/wasmbase/clusters`.
//! If that user cannot reach `./.wasmbase/pg` (e.g. the project lives under a 0700
//! `/root`), the data lives in `/var/lib/wasmbase/clusters/<hash>` and
//! `./.wasmbase/pg` is a symlink to it. The cluster listens on TCP loopback only
//! (no socket directory, so no 107-byte socket path limit), with scram passwords.
//!
//! A postmaster left behind by a crash (or by a SIGKILLed `wasmbase dev`, since it
//! runs in its own process group) is adopted on the next start.

use anyhow::{anyhow, bail, Context, Result};
use nix::unistd::{Gid, Uid, User};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// How to run the cluster.
#[derive(Debug, Clone)]
pub struct Options {
    /// The state directory (`./.wasmbase`); the cluster is `<dir>/pg`.
    pub dir: PathBuf,
    /// Trade durability for speed (fsync off). For test clusters only.
    pub fast: bool,
}

/// A running cluster. (`Debug` leaves out the superuser password.)
#[derive(Clone)]
pub struct Cluster {
    data: PathBuf,
    bin: PathBuf,
    run_as: Option<(Uid, Gid)>,
    /// Loopback TCP port.
    pub port: u16,
    password: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct State {
    port: u16,
    password: String,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("data", &self.data)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// URL of the cluster's superuser for database `db`.
    pub fn superuser_url(&self, db: &str) -> String {
        format!(
            "postgres://postgres:{}@127.0.0.1:{}/{db}",
            self.password, self.port
        )
    }

    /// Stops the postmaster (fast shutdown: open transactions roll back).
    pub fn stop(&self) -> Result<()> {
        let out = self
            .pg_ctl()
            .args(["stop", "-m", "fast", "-w", "-t", "60", "-D"])
            .arg(&self.data)
            .output()
            .context("running pg_ctl stop")?;
        if !out.status.success() {
            bail!(
                "pg_ctl stop failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    fn pg_ctl(&self) -> Command {
        cmd(&self.bin.join("pg_ctl"), self.run_as, &self.data)
    }
}

fn cmd(program: &Path, run_as: Option<(Uid, Gid)>, data: &Path) -> Command {
    let mut c = Command::new(program);
    if let Some((uid, gid)) = run_as {
        c.uid(uid.as_raw()).gid(gid.as_raw());
    }
    // A directory the cluster user can enter (the caller's cwd may be /root).
    c.current_dir(data.parent().unwrap_or(Path::new("/")));
    c.env_remove("PGDATA").env("LC_ALL", "C");
    c
}

/// Finds `initdb`/`pg_ctl`: on PATH, else the newest `/usr/lib/postgresql/*/bin`.
pub fn find_bin_dir() -> Result<PathBuf> {
    if let Some(paths) = std::env::var_os("PATH") {
        for p in std::env::split_paths(&paths) {
            if p.join("initdb").is_file() && p.join("pg_ctl").is_file() {
                return Ok(p);
            }
        }
    }
    let mut found: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((v, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, p)| p).ok_or_else(|| {
        anyhow!(
            "PostgreSQL server programs (initdb, pg_ctl) were not found on PATH or under /usr/lib/postgresql/*/bin. \
             Install them (Debian/Ubuntu: `apt-get install postgresql`; macOS: `brew install postgresql@15`) \
             or point wasmbase at an existing server with DATABASE_URL"
        )
    })
}

/// The unprivileged user to run as when we are root; `None` when not root.
fn cluster_user() -> Result<Option<(Uid, Gid)>> {
    if !Uid::effective().is_root() {
        return Ok(None);
    }
    match User::from_name("postgres")? {
        Some(u) => Ok(Some((u.uid, u.gid))),
        None => bail!(
            "running as root, and there is no 'postgres' user to run PostgreSQL as; \
             install PostgreSQL's server package (it creates the user), or run wasmbase as a normal user"
        ),
    }
}

/// As root: a directory we are about to hand to PostgreSQL must be ours and not
/// writable by group or others, or someone else could have planted links in it.
fn check_private_dir(dir: &Path) -> Result<()> {
    let m = fs::symlink_metadata(dir).with_context(|| format!("reading {}", dir.display()))?;
    if m.file_type().is_symlink()
        || !m.is_dir()
        || m.uid() != Uid::effective().as_raw()
        || m.mode() & 0o022 != 0
    {
        bail!(
            "{} must be a directory owned by you and not writable by group or others (running as root, it is not trusted otherwise)",
            dir.display()
        );
    }
    Ok(())
}

const CLUSTERS: &str = "/var/lib/wasmbase/clusters";

/// Whether `user` may traverse every ancestor of `path`.
fn reachable_by(path: &Path, (uid, gid): (Uid, Gid)) -> bool {
    let mut p = Some(path);
    while let Some(dir) = p {
        if let Ok(m) = fs::metadata(dir) {
            let mode = m.mode();
            let ok = if m.uid() == uid.as_raw() {
                mode & 0o100 != 0
            } else if m.gid() == gid.as_raw() {
                mode & 0o010 != 0
            } else {
                mode & 0o001 != 0
            };
            if !ok {
                return false;
            }
        }
        p = dir.parent();
    }
    true
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn port_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

fn random_password() -> String {
    use rand::Rng;
    rand::thread_rng()
        .sample_iter(&rand::distributions::Alphanumeric)
        .take(32)
        .map(char::from)
        .collect()
}

/// Resolves where the data directory really lives, creating the symlink if needed.
fn data_dir(dir: &Path, run_as: Option<(Uid, Gid)>) -> Result<PathBuf> {
    let link = dir.join("pg");
    if let Ok(target) = fs::read_link(&link) {
        if run_as.is_some()
            && (!target.is_absolute() || target.parent() != Some(Path::new(CLUSTERS)))
        {
            bail!(
                "{} points outside {CLUSTERS}; refusing to use it as root",
                link.display()
            );
        }
        return Ok(target);
    }
    let Some(user) = run_as else { return Ok(link) };
    if link.exists() || reachable_by(dir, user) {
        return Ok(link);
    }
    use sha2::Digest;
    let abs = fs::canonicalize(dir)?;
    let tag = hex::encode(&sha2::Sha256::digest(abs.as_os_str().as_encoded_bytes())[..8]);
    let base = PathBuf::from(CLUSTERS);
    fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
    for d in ["/var/lib/wasmbase", CLUSTERS] {
        let m = fs::symlink_metadata(d)?;
        if m.file_type().is_symlink() || m.uid() != 0 {
            bail!("{d} must be a root-owned directory");
        }
        fs::set_permissions(d, fs::Permissions::from_mode(0o711))?;
    }
    let real = base.join(tag);
    std::os::unix::fs::symlink(&real, &link)
        .with_context(|| format!("linking {}", link.display()))?;
    Ok(real)
}

/// Starts the cluster under `opts.dir` (creating it on first use) or adopts the one
/// already running there. Blocking; call from `spawn_blocking` in async code.
pub fn ensure_running(opts: &Options) -> Result<Cluster> {
    fs::create_dir_all(&opts.dir).with_context(|| format!("creating {}", opts.dir.display()))?;
    let run_as = cluster_user()?;
    if run_as.is_some() {
        check_private_dir(&opts.dir)?;
        // The cluster user must traverse (not list) the state dir to reach pg/.
        fs::set_permissions(&opts.dir, fs::Permissions::from_mode(0o711))?;
    }
    // One starter at a time (two `wasmbase dev`s, or parallel test processes).
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(opts.dir.join("pg.lock"))?;
    let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| anyhow!("locking {}: {e}", opts.dir.display()))?;

    let bin = find_bin_dir()?;
    let data = data_dir(&opts.dir, run_as)?;
    let state_path = opts.dir.join("pg.json");
    let state: Option<State> = fs::read(&state_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());

    let initialized = data.join("PG_VERSION").is_file();
    let password = match (&state, initialized) {
        (Some(s), true) => s.password.clone(),
        (None, true) => bail!(
            "{} holds a PostgreSQL cluster but {} (its password) is missing; move the cluster away to start fresh",
            data.display(),
            state_path.display()
        ),
        (_, false) => {
            let pw = random_password();
            init(&bin, &data, run_as, &pw, opts.fast)?;
            pw
        }
    };

    let mut cluster = Cluster {
        data: data.clone(),
        bin,
        run_as,
        port: 0,
        password,
    };
    let running = cluster
        .pg_ctl()
        .arg("status")
        .arg("-D")
        .arg(&data)
        .output()?
        .status
        .success();
    if running {
        cluster.port = pid_file_port(&data)?;
        tracing::info!(
            port = cluster.port,
            "adopted the running PostgreSQL cluster"
        );
    } else {
        let port = match &state {
            Some(s) if s.port != 0 && port_free(s.port) => s.port,
            _ => free_port()?,
        };
        let log = data.join("server.log");
        let out = cluster
            .pg_ctl()
            .args(["start", "-w", "-t", "120", "-D"])
            .arg(&data)
            .arg("-l")
            .arg(&log)
            .arg("-o")
            .arg(format!("-p {port}"))
            // Own process group: Ctrl-C in the terminal must reach wasmbase (which
            // then stops PostgreSQL cleanly), not PostgreSQL directly.
            .process_group(0)
            .output()
            .context("running pg_ctl start")?;
        if !out.status.success() {
            let tail = fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(15).collect();
            bail!(
                "PostgreSQL did not start: {}\n{}",
                String::from_utf8_lossy(&out.stderr).trim(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        cluster.port = port;
    }
    let st = State {
        port: cluster.port,
        password: cluster.password.clone(),
    };
    write_private(&state_path, &serde_json::to_vec_pretty(&st)?)?;
    Ok(cluster)
}

fn init(
    bin: &Path,
    data: &Path,
    run_as: Option<(Uid, Gid)>,
    password: &str,
    fast: bool,
) -> Result<()> {
    fs::create_dir_all(data)?;
    fs::set_permissions(data, fs::Permissions::from_mode(0o700))?;
    let pwfile = data.with_extension("pwfile");
    write_private(&pwfile, password.as_bytes())?;
    if let Some((uid, gid)) = run_as {
        nix::unistd::chown(data, Some(uid), Some(gid))?;
        nix::unistd::chown(&pwfile, Some(uid), Some(gid))?;
    }
    let mut c = cmd(&bin.join("initdb"), run_as, data);
    c.arg("-D")
        .arg(data)
        .args([
            "-U",
            "postgres",
            "-A",
            "scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C",
        ])
        .arg(format!("--pwfile={}", pwfile.display()));
    if fast {
        c.arg("--no-sync");
    }
    let out = c.output().context("running initdb")?;
    let _ = fs::remove_file(&pwfile);
    if !out.status.success() {
        bail!(
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    let mut conf = fs::OpenOptions::new()
        .append(true)
        .open(data.join("postgresql.conf"))?;
    writeln!(
        conf,
        "\n# wasmbase dev\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\nmax_connections = 200\nwal_level = logical"
    )?;
    if fast {
        writeln!(
            conf,
            "fsync = off\nsynchronous_commit = off\nfull_page_writes = off"
        )?;
    }
    Ok(())
}

/// The port line (4th) of `postmaster.pid`.
fn pid_file_port(data: &Path) -> Result<u16> {
    let pid = fs::read_to_string(data.join("postmaster.pid")).context("reading postmaster.pid")?;
    pid.lines()
        .nth(3)
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| anyhow!("postmaster.pid has no port line"))
}

/// Writes a file readable by its owner only (it holds passwords or keys).
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    // A leftover temp file would keep its old permissions through `mode()`.
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, path)?;
    Ok(())
}
