//! A raw hyper "hello" server with no middleware, routing or database: the baseline
//! the benchmarks in `bench/` measure the real server against, served by this same
//! binary, so the ratio shows the cost of Wasmbase's own layers.
//!
//! By default it is the textbook hyper server (an accept loop spawning each
//! connection on tokio's work-stealing runtime): on this 2-core box, with wrk
//! sharing the cores, that is the faster baseline. `--threads N` serves it with
//! the server's own thread-per-core layout instead, to compare layouts.

use anyhow::Result;
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use tokio_util::sync::CancellationToken;

/// Serves `{"status":"ok"}` on every path until the process ends.
pub async fn serve(addr: SocketAddr, threads: Option<usize>) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!("raw hyper hello on http://{}", listener.local_addr()?);
    let svc = tower::service_fn(|_req: http::Request<hyper::body::Incoming>| async {
        Ok::<_, Infallible>(
            hyper::Response::builder()
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from_static(br#"{"status":"ok"}"#)))
                .expect("static response"),
        )
    });
    if let Some(n) = threads {
        let n = crate::server::cores::thread_count(n);
        let limits = crate::server::conn::Limits::from_config(&Default::default());
        crate::server::cores::serve(listener, n, svc, limits, CancellationToken::new())?.await;
        return Ok(());
    }
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let svc = hyper_util::service::TowerToHyperService::new(svc);
        tokio::spawn(async move {
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}
