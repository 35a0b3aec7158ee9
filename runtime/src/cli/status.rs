//! `wasmbase status`.

use crate::project;

/// Prints `.wasmbase/env` as a table and whether the server answers `/health`.
pub async fn run() -> anyhow::Result<()> {
    let dir = project::state_dir(&std::env::current_dir()?);
    let env = project::read_env(&dir);
    if env.is_empty() {
        anyhow::bail!(
            "no {}/env here: run `wasmbase dev` in this directory first",
            project::STATE_DIR
        );
    }
    print!("{}", project::table(&env));
    if let Some(url) = project::env_get(&env, "WASMBASE_URL") {
        let up = health(url).await;
        println!("\n  server: {}", if up { "running" } else { "not running" });
    }
    Ok(())
}

async fn health(url: &str) -> bool {
    let Some(hostport) = url.strip_prefix("http://") else {
        return false;
    };
    let Ok(mut s) = tokio::net::TcpStream::connect(hostport.trim_end_matches('/')).await else {
        return false;
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let req = format!("GET /health HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(s.read(&mut buf).await, Ok(n) if buf[..n].starts_with(b"HTTP/1.1 200"))
}
