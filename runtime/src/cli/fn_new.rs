//! `wasmbase fn new NAME [--lang rust|ts|js]`: scaffolds a function that
//! builds and answers on the first try, in any directory. The binary carries
//! the SDKs and the WIT, and writes them to `functions/.wasmbase-sdk`
//! (refreshed on every `fn new`); a JS/TS function needs nothing else (no
//! Node: the server builds it).

use crate::functions::manifest::valid_name;
use anyhow::{bail, Result};
use std::path::Path;

/// Arguments of `fn`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Subcommand)]
enum Cmd {
    /// Create functions/NAME with a function.toml.
    New {
        /// Function name (lower-case letters, digits, - or _).
        name: String,
        /// `rust` (wasm32-wasip2, built with cargo), `ts` or `js` (built by
        /// wasmbase itself).
        #[arg(long, default_value = "rust", value_parser = ["rust", "ts", "js"])]
        lang: String,
    },
}

/// The SDK and WIT files, embedded at build time.
const SDK: &[(&str, &str)] = &[
    ("Cargo.toml", include_str!("../../../sdk/rust/Cargo.toml")),
    ("src/lib.rs", include_str!("../../../sdk/rust/src/lib.rs")),
    ("src/http.rs", include_str!("../../../sdk/rust/src/http.rs")),
    ("src/data.rs", include_str!("../../../sdk/rust/src/data.rs")),
    ("src/sql.rs", include_str!("../../../sdk/rust/src/sql.rs")),
    (
        "src/storage.rs",
        include_str!("../../../sdk/rust/src/storage.rs"),
    ),
    ("src/auth.rs", include_str!("../../../sdk/rust/src/auth.rs")),
    ("src/env.rs", include_str!("../../../sdk/rust/src/env.rs")),
    ("src/log.rs", include_str!("../../../sdk/rust/src/log.rs")),
    (
        "src/realtime.rs",
        include_str!("../../../sdk/rust/src/realtime.rs"),
    ),
    ("src/cron.rs", include_str!("../../../sdk/rust/src/cron.rs")),
    (
        "js/wasmbase.d.ts",
        include_str!("../../../sdk/js/wasmbase.d.ts"),
    ),
    (
        "wit/platform.wit",
        include_str!("../../../wit/platform.wit"),
    ),
    (
        "wit/deps/cli/cli.wit",
        include_str!("../../../wit/deps/cli/cli.wit"),
    ),
    (
        "wit/deps/clocks/clocks.wit",
        include_str!("../../../wit/deps/clocks/clocks.wit"),
    ),
    (
        "wit/deps/filesystem/filesystem.wit",
        include_str!("../../../wit/deps/filesystem/filesystem.wit"),
    ),
    (
        "wit/deps/http/http.wit",
        include_str!("../../../wit/deps/http/http.wit"),
    ),
    (
        "wit/deps/io/io.wit",
        include_str!("../../../wit/deps/io/io.wit"),
    ),
    (
        "wit/deps/random/random.wit",
        include_str!("../../../wit/deps/random/random.wit"),
    ),
    (
        "wit/deps/sockets/sockets.wit",
        include_str!("../../../wit/deps/sockets/sockets.wit"),
    ),
];

fn cargo_toml(name: &str) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2021"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
wasmbase-sdk = {{ path = "../.wasmbase-sdk" }}
serde_json = "1"

[profile.release]
opt-level = "s"
lto = true
codegen-units = 1
strip = true
panic = "abort"

# A function is its own workspace (built with --target wasm32-wasip2).
[workspace]
"#
    )
}

fn manifest(name: &str) -> String {
    format!(
        r#"# What this function may touch. See docs/FUNCTIONS.md.
name = "{name}"
# "none" | "caller" (the data API as the caller, RLS applies) | "service"
db = "none"
# Environment variables it may read (values: `wasmbase secrets set`, or .env in dev).
env = []
# Hosts outbound HTTP may reach, e.g. ["api.example.com"].
http = []
# Require a valid API key or user JWT (false for public webhooks).
verify_jwt = true

[limits]
memory_mb = 64
timeout_ms = 10000
max_concurrency = 32
"#
    )
}

const LIB: &str = r#"//! A Wasmbase function: POST JSON and it answers with a greeting.

use serde_json::json;
use wasmbase_sdk::{auth, info, Handler, Request, Response};

struct Function;

impl Handler for Function {
    fn handle(req: Request) -> Response {
        let body: serde_json::Value = req.json().unwrap_or(serde_json::Value::Null);
        let user = auth::user();
        info!("called by {}", user.role);
        Response::json(200, &json!({
            "message": format!("Hello, {}!", body["name"].as_str().unwrap_or("world")),
            "user": user.user_id,
        }))
    }
}

wasmbase_sdk::export!(Function);
"#;

const INDEX_TS: &str = r#"// A Wasmbase function: POST JSON and it answers with a greeting.
import { auth, log } from "wasmbase";

export default {
  async fetch(req: Request): Promise<Response> {
    const body = (await req.json().catch(() => ({}))) as { name?: string };
    const user = auth.user();
    log.info(`called by ${user?.role ?? "anon"}`);
    return Response.json({ message: `Hello, ${body.name ?? "world"}!`, user: user?.id ?? null });
  },
};
"#;

const INDEX_JS: &str = r#"// A Wasmbase function: POST JSON and it answers with a greeting.
import { auth, log } from "wasmbase";

export default {
  async fetch(req) {
    const body = await req.json().catch(() => ({}));
    const user = auth.user();
    log.info(`called by ${user?.role ?? "anon"}`);
    return Response.json({ message: `Hello, ${body.name ?? "world"}!`, user: user?.id ?? null });
  },
};
"#;

/// Editor support only (type checking is not part of the build).
const TSCONFIG: &str = r#"{
  "compilerOptions": {
    "target": "ES2022",
    "module": "ES2022",
    "moduleResolution": "bundler",
    "lib": ["ES2022", "DOM"],
    "strict": true,
    "noEmit": true,
    "allowImportingTsExtensions": true,
    "paths": { "wasmbase": ["../.wasmbase-sdk/js/wasmbase.d.ts"] }
  },
  "include": ["**/*.ts", "../.wasmbase-sdk/js/wasmbase.d.ts"]
}
"#;

/// Writes the embedded SDK under `functions/.wasmbase-sdk`.
pub fn write_sdk(functions: &Path) -> Result<()> {
    let root = functions.join(".wasmbase-sdk");
    for (rel, text) in SDK {
        let p = root.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&p, text)?;
    }
    Ok(())
}

/// Runs `fn`.
pub fn run(a: Args) -> Result<()> {
    let Cmd::New { name, lang } = a.cmd;
    if matches!(name.as_str(), "target" | "node_modules") {
        bail!("{name:?} is reserved (it is a build directory name); pick another name");
    }
    if !valid_name(&name) {
        bail!("{name:?}: a function name is lower-case letters, digits, - or _, starting with a letter");
    }
    let functions = Path::new("functions");
    let dir = functions.join(&name);
    if dir.exists() {
        bail!("{} already exists", dir.display());
    }
    write_sdk(functions)?;
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("function.toml"), manifest(&name))?;
    match lang.as_str() {
        "ts" => {
            std::fs::write(dir.join("index.ts"), INDEX_TS)?;
            std::fs::write(dir.join("tsconfig.json"), TSCONFIG)?;
        }
        "js" => std::fs::write(dir.join("index.js"), INDEX_JS)?,
        _ => {
            std::fs::create_dir_all(dir.join("src"))?;
            std::fs::write(dir.join("Cargo.toml"), cargo_toml(&name))?;
            std::fs::write(dir.join("src/lib.rs"), LIB)?;
            std::fs::write(dir.join(".gitignore"), "/target\n")?;
        }
    }
    println!(
        "created {}\n\n  wasmbase dev           serves it at /functions/v1/{name} (rebuilt on every save)\n  wasmbase deploy {name}  uploads it to a server\n",
        dir.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    /// A file added to the SDK but not embedded breaks every scaffolded
    /// function (`mod x;` without `x.rs`); this names it instead.
    #[test]
    fn every_sdk_source_file_is_embedded() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk/rust/src");
        for entry in std::fs::read_dir(dir).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            let path = format!("src/{name}");
            assert!(
                super::SDK.iter().any(|(p, _)| *p == path),
                "sdk/rust/{path} is not in fn_new::SDK"
            );
        }
    }
}
