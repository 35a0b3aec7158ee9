//! Thread-per-core serving (`server.threads = N`, opt-in): one acceptor hands
//! each new connection to one of N single-threaded tokio runtimes, which keeps
//! it, and every request on it, for the connection's whole life.
//!
//! Why offer it: on tokio's work-stealing runtime a request can hop between
//! workers at every wake-up, and idle workers are woken to steal; on its own
//! thread a function call's futures, store and instance memory stay on one
//! core. Measured on 2 cores: functions +8–14%, `/health` +12%. Why it is not
//! the default: database-bound routes lost 20% (`GET /auth/v1/user`), because
//! a pooled connection's driver runs on the thread that opened it and a thread
//! descheduled by PostgreSQL or the load generator stalls all its connections,
//! where work stealing lets the other worker take them (docs/ARCHITECTURE.md).
//! A spinning guest still yields every epoch tick (see `functions::invoke`).
//!
//! Background work (schema reloads, LISTEN, sweeps, compiles) stays on the
//! process's main runtime; only connections live here.

use super::conn::{self, HttpService, Limits, OpenCount, OpenGuard, ResponseBody};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// Serving threads for a requested count where 0 means one per available core
/// (`wasmbase bench-hello --threads 0`; the server's own `threads = 0` means
/// the work-stealing runtime instead and never gets here).
pub fn thread_count(setting: usize) -> usize {
    if setting > 0 {
        return setting;
    }
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// One serving thread as the acceptor sees it.
struct Core {
    /// New connections for this core.
    tx: mpsc::UnboundedSender<(std::net::TcpStream, SocketAddr, OpenGuard)>,
    /// Connections this core has open (the acceptor picks the least loaded).
    open: Arc<AtomicUsize>,
}

/// Serves `service` on `listener` with `threads` serving threads until `stop`
/// is cancelled; then stops accepting, asks every connection to finish its
/// in-flight requests, and resolves once all of them closed. Each request
/// carries the peer address as axum's `ConnectInfo<SocketAddr>`; `limits`
/// apply as on the shared runtime (`server::conn`).
pub fn serve<S, B>(
    listener: TcpListener,
    threads: usize,
    service: S,
    limits: Limits,
    stop: CancellationToken,
) -> std::io::Result<impl Future<Output = ()> + Send + 'static>
where
    S: HttpService<B>,
    B: ResponseBody,
{
    let mut cores = Vec::with_capacity(threads.max(1));
    let mut done = Vec::with_capacity(threads.max(1));
    for i in 0..threads.max(1) {
        let (tx, rx) = mpsc::unbounded_channel();
        let open = Arc::new(AtomicUsize::new(0));
        let (svc, stop, count) = (service.clone(), stop.clone(), open.clone());
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name(format!("wasmbase-core-{i}"))
            .spawn(move || {
                rt.block_on(run_core(rx, svc, limits, stop, count));
                // The runtime (and the pool connections whose drivers it ran)
                // goes before the server reports itself stopped.
                drop(rt);
                let _ = done_tx.send(());
            })?;
        cores.push(Core { tx, open });
        done.push(done_rx);
    }
    Ok(async move {
        accept(listener, limits, &cores, &stop).await;
        drop(cores);
        for d in done {
            let _ = d.await;
        }
    })
}

/// Accepts until `stop` (within `server.max_connections`, see
/// [`conn::accept`]), handing each connection to the core with the fewest open
/// connections (ties: round-robin).
async fn accept(listener: TcpListener, limits: Limits, cores: &[Core], stop: &CancellationToken) {
    let mut next = 0usize;
    conn::accept(
        listener,
        limits,
        OpenCount::default(),
        stop,
        |tcp, peer, guard| {
            let Ok(std) = tcp.into_std() else { return };
            let n = cores.len();
            let pick = (0..n)
                .map(|k| (next + k) % n)
                .min_by_key(|&i| cores[i].open.load(Ordering::Relaxed))
                .unwrap_or(0);
            next = (pick + 1) % n;
            cores[pick].open.fetch_add(1, Ordering::Relaxed);
            if cores[pick].tx.send((std, peer, guard)).is_err() {
                cores[pick].open.fetch_sub(1, Ordering::Relaxed);
            }
        },
    )
    .await;
}

/// One core: serves the connections it is handed (HTTP/1.1 with upgrades for
/// WebSockets, or HTTP/2); on `stop` each finishes its requests in flight and
/// closes; when the acceptor is gone, waits for them all to close.
async fn run_core<S, B>(
    mut rx: mpsc::UnboundedReceiver<(std::net::TcpStream, SocketAddr, OpenGuard)>,
    service: S,
    limits: Limits,
    stop: CancellationToken,
    open: Arc<AtomicUsize>,
) where
    S: HttpService<B>,
    B: ResponseBody,
{
    let (closed_tx, closed_rx) = watch::channel(());
    let builder = conn::builder();
    while let Some((std, peer, guard)) = rx.recv().await {
        let Ok(tcp) = TcpStream::from_std(std) else {
            open.fetch_sub(1, Ordering::Relaxed);
            continue;
        };
        let (builder, svc, stop, open, closed) = (
            builder.clone(),
            service.clone(),
            stop.clone(),
            open.clone(),
            closed_rx.clone(),
        );
        tokio::spawn(async move {
            conn::serve(builder, tcp, peer, svc, limits, stop).await;
            open.fetch_sub(1, Ordering::Relaxed);
            drop(guard);
            drop(closed);
        });
    }
    drop(closed_rx);
    closed_tx.closed().await;
}
