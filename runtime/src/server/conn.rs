//! Serving one TCP connection, and the accept loop, with the limits a public
//! server needs against slow or idle clients (both serving modes use this):
//!
//! - `server.header_read_timeout_ms`: a request head (and, on a new
//!   connection, everything before the first request is read, including the
//!   HTTP/2 preface) must arrive whole within this time — a total deadline, so
//!   a client sending its headers byte by byte is cut as well.
//! - `server.keepalive_idle_timeout_ms`: a connection between requests, with
//!   nothing sent either way, is closed after this time (HTTP/1.1: while waiting
//!   for the first byte of the next request; HTTP/2: no frame either way, then a
//!   graceful GOAWAY).
//! - `server.max_connections`: past this many open connections a new one is
//!   accepted, answered `503` with `Retry-After: 1`, `Connection: close` and a
//!   `{"code":"too_many_connections",...}` body, and closed — so a client sees
//!   why, rather than a reset or a hang in the listen backlog.

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::{Service, ServiceExt};

/// What both serving modes can serve: a cloneable, infallible tower service of
/// hyper requests whose future may move between threads (axum's `Router` is
/// one). Named once so the accept loop, the per-connection server and the
/// per-core runtimes state the same bounds.
pub trait HttpService<B>:
    Service<
        http::Request<Incoming>,
        Response = http::Response<B>,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
}

impl<S, B> HttpService<B> for S where
    S: Service<
            http::Request<Incoming>,
            Response = http::Response<B>,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static
{
}

/// A response body hyper can send from any thread.
pub trait ResponseBody:
    hyper::body::Body<Data = bytes::Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
    + Send
    + 'static
{
}

impl<B> ResponseBody for B where
    B: hyper::body::Body<
            Data = bytes::Bytes,
            Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        > + Send
        + 'static
{
}

/// The per-connection limits, from `[server]` (see the module doc).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest time for a whole request head.
    pub header_read_timeout: Duration,
    /// Longest quiet time between requests.
    pub keepalive_idle_timeout: Duration,
    /// Most connections open at once; more are answered 503 and closed.
    pub max_connections: usize,
}

impl Limits {
    /// The limits `config` asks for.
    pub fn from_config(c: &crate::config::ServerConfig) -> Limits {
        Limits {
            header_read_timeout: Duration::from_millis(c.header_read_timeout_ms),
            keepalive_idle_timeout: Duration::from_millis(c.keepalive_idle_timeout_ms),
            max_connections: c.max_connections,
        }
    }
}

/// Connections open on the whole server; the accept loop checks it against
/// [`Limits::max_connections`].
#[derive(Debug, Default, Clone)]
pub struct OpenCount(Arc<AtomicUsize>);

impl OpenCount {
    /// Counts a connection as open until the returned guard is dropped.
    fn open(&self) -> OpenGuard {
        self.0.fetch_add(1, Ordering::Relaxed);
        OpenGuard(self.0.clone())
    }
    fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// One open connection; dropping it (when the connection closes) uncounts it.
pub struct OpenGuard(Arc<AtomicUsize>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a connection did, as its IO wrapper and service see it (relaxed
/// counters: read by the same connection's timers only).
struct Activity {
    accepted: Instant,
    /// Bytes read so far.
    read: AtomicU64,
    /// Bytes written so far.
    written: AtomicU64,
    /// Milliseconds after `accepted` of the last byte read or written.
    last_ms: AtomicU64,
    /// Requests whose head was read.
    requests: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            accepted: Instant::now(),
            read: AtomicU64::new(0),
            written: AtomicU64::new(0),
            last_ms: AtomicU64::new(0),
            requests: AtomicU64::new(0),
        }
    }
    fn touch(&self) {
        let ms = self.accepted.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }
    fn last(&self) -> Instant {
        self.accepted + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// The TCP stream, counting bytes and noting when the last one moved.
struct Tracked {
    io: TcpStream,
    act: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.act.read.fetch_add(n as u64, Ordering::Relaxed);
            self.act.touch();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.act.written.fetch_add(n as u64, Ordering::Relaxed);
            self.act.touch();
        }
        r
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            self.act.written.fetch_add(n as u64, Ordering::Relaxed);
            self.act.touch();
        }
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// hyper's HTTP/1 header-read timer, per connection. hyper starts it whenever
/// it waits for a request head, including between keep-alive requests; this
/// timer turns that into the two limits: before the next request's first byte
/// the deadline is the keep-alive idle timeout, from that byte on it is the
/// header timeout (on a new connection: the header timeout from accept).
#[derive(Clone)]
struct HeadTimer {
    act: Arc<Activity>,
    limits: Limits,
}

impl hyper::rt::Timer for HeadTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep_until(std::time::Instant::now() + duration)
    }
    fn sleep_until(&self, _deadline: std::time::Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        let now = Instant::now();
        Box::pin(HeadSleep {
            sleep: Box::pin(tokio::time::sleep_until(
                now + self.limits.header_read_timeout,
            )),
            act: self.act.clone(),
            limits: self.limits,
            started: now,
            read_at_start: self.act.read.load(Ordering::Relaxed),
            first_byte: None,
        })
    }
}

/// The deadline of one wait for a request head (see [`HeadTimer`]).
struct HeadSleep {
    sleep: Pin<Box<tokio::time::Sleep>>,
    act: Arc<Activity>,
    limits: Limits,
    started: Instant,
    read_at_start: u64,
    first_byte: Option<Instant>,
}

impl hyper::rt::Sleep for HeadSleep {}

impl Future for HeadSleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        // hyper polls this right after each read that left the head incomplete,
        // so "now" is when the first byte of this head arrived.
        let deadline = if this.act.written.load(Ordering::Relaxed) == 0 {
            this.act.accepted + this.limits.header_read_timeout
        } else {
            if this.first_byte.is_none()
                && this.act.read.load(Ordering::Relaxed) > this.read_at_start
            {
                this.first_byte = Some(Instant::now());
            }
            match this.first_byte {
                Some(t) => t + this.limits.header_read_timeout,
                None => this.started + this.limits.keepalive_idle_timeout,
            }
        };
        if this.sleep.deadline() != deadline {
            this.sleep.as_mut().reset(deadline);
        }
        this.sleep.as_mut().poll(cx)
    }
}

/// The connection builder both serving modes share: HTTP/1.1 and HTTP/2 with
/// upgrades (WebSockets; over HTTP/2 through the CONNECT protocol).
pub fn builder() -> Builder<TokioExecutor> {
    let mut b = Builder::new(TokioExecutor::new());
    b.http2().enable_connect_protocol();
    b
}

/// Serves one accepted connection until it closes: the service gets the peer
/// address as axum's `ConnectInfo<SocketAddr>`; `stop` asks the connection to
/// finish its requests in flight and close. Enforces [`Limits`] (see the
/// module doc).
pub async fn serve<S, B>(
    mut builder: Builder<TokioExecutor>,
    tcp: TcpStream,
    peer: SocketAddr,
    service: S,
    limits: Limits,
    stop: CancellationToken,
) where
    S: HttpService<B>,
    B: ResponseBody,
{
    let act = Arc::new(Activity::new());
    let svc = TowerToHyperService::new(service.map_request({
        let act = act.clone();
        move |mut req: http::Request<Incoming>| {
            act.requests.fetch_add(1, Ordering::Relaxed);
            req.extensions_mut().insert(ConnectInfo(peer));
            req
        }
    }));
    builder
        .http1()
        .timer(HeadTimer {
            act: act.clone(),
            limits,
        })
        .header_read_timeout(limits.header_read_timeout);
    let io = TokioIo::new(Tracked {
        io: tcp,
        act: act.clone(),
    });
    let mut conn = pin!(builder.serve_connection_with_upgrades(io, svc));
    let mut stopping = pin!(stop.cancelled());
    // Before the first request: the header deadline from accept (covers a
    // client that sends nothing, or only part of the HTTP/2 preface, which
    // hyper's HTTP/1 timer never sees). After: the idle timeout.
    let first_deadline = act.accepted + limits.header_read_timeout;
    let mut watch = pin!(tokio::time::sleep_until(first_deadline));
    let mut shutting_down = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::trace!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = &mut stopping, if !shutting_down => {
                shutting_down = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = &mut watch, if !shutting_down => {
                let now = Instant::now();
                if act.requests.load(Ordering::Relaxed) == 0 {
                    if now >= first_deadline {
                        tracing::debug!(%peer, "no request head within server.header_read_timeout_ms; closing");
                        return;
                    }
                    watch.as_mut().reset(first_deadline);
                    continue;
                }
                let idle_until = act.last() + limits.keepalive_idle_timeout;
                if now >= idle_until {
                    // A request still running finishes first; an idle
                    // connection closes now.
                    shutting_down = true;
                    conn.as_mut().graceful_shutdown();
                } else {
                    watch.as_mut().reset(idle_until);
                }
            }
        }
    }
}

/// Answers a connection past `server.max_connections` with `503` (one
/// request, `Connection: close`) and closes it; bounded by the header timeout
/// (at most 5 s), so refused connections cannot pile up.
pub async fn refuse(tcp: TcpStream, limits: Limits) {
    let svc = hyper::service::service_fn(|_req: http::Request<Incoming>| async {
        let body = serde_json::json!({
            "code": "too_many_connections",
            "message": "The server has too many open connections; retry shortly",
        });
        let resp = http::Response::builder()
            .status(http::StatusCode::SERVICE_UNAVAILABLE)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::RETRY_AFTER, "1")
            .header(http::header::CONNECTION, "close")
            .body(http_body_util::Full::new(bytes::Bytes::from(
                body.to_string(),
            )))
            .expect("static response");
        Ok::<_, Infallible>(resp)
    });
    let mut b = hyper::server::conn::http1::Builder::new();
    b.keep_alive(false);
    let budget = limits.header_read_timeout.min(Duration::from_secs(5));
    let conn = b.serve_connection(TokioIo::new(tcp), svc);
    let _ = tokio::time::timeout(budget, conn).await;
}

/// Refusals (503 answers past the cap) in flight at once; past this, further
/// connections over the cap are closed without an answer.
const MAX_REFUSING: usize = 256;

/// Accepts until `stop`, handing each connection within the cap to `hand`
/// (with the guard that counts it open) and refusing the others (see
/// [`refuse`]; at most [`MAX_REFUSING`] at once, the rest closed unanswered);
/// a failed accept that is not about one connection (out of file
/// descriptors) backs off a second rather than spin.
pub async fn accept(
    listener: TcpListener,
    limits: Limits,
    open: OpenCount,
    stop: &CancellationToken,
    mut hand: impl FnMut(TcpStream, SocketAddr, OpenGuard),
) {
    let refusing = OpenCount::default();
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    if !transient(&e) {
                        tracing::error!(error = %e, "accepting a connection failed");
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                            _ = stop.cancelled() => return,
                        }
                    }
                    continue;
                }
            },
            _ = stop.cancelled() => return,
        };
        let _ = tcp.set_nodelay(true);
        if open.get() >= limits.max_connections {
            if refusing.get() >= MAX_REFUSING {
                // A flood: no answer, just close, so refusals cannot hold
                // file descriptors either.
                drop(tcp);
                continue;
            }
            tracing::warn!(%peer, max = limits.max_connections, "server.max_connections reached; refusing a connection");
            let guard = refusing.open();
            tokio::spawn(async move {
                refuse(tcp, limits).await;
                drop(guard);
            });
            continue;
        }
        hand(tcp, peer, open.open());
    }
}

/// Errors that concern one connection only (the peer went away before accept).
fn transient(e: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

/// Serves `service` on `listener` on the current (work-stealing) runtime until
/// `stop`; then stops accepting, asks every connection to finish its requests
/// in flight, and resolves once all of them closed (what `axum::serve` with
/// graceful shutdown did, plus [`Limits`]).
pub async fn serve_shared<S, B>(
    listener: TcpListener,
    service: S,
    limits: Limits,
    stop: CancellationToken,
) where
    S: HttpService<B>,
    B: ResponseBody,
{
    let (closed_tx, closed_rx) = watch::channel(());
    let builder = builder();
    accept(
        listener,
        limits,
        OpenCount::default(),
        &stop,
        |tcp, peer, guard| {
            let (builder, svc, stop, closed) = (
                builder.clone(),
                service.clone(),
                stop.clone(),
                closed_rx.clone(),
            );
            tokio::spawn(async move {
                serve(builder, tcp, peer, svc, limits, stop).await;
                drop(guard);
                drop(closed);
            });
        },
    )
    .await;
    drop(closed_rx);
    closed_tx.closed().await;
}
