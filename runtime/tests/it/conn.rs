//! Connection limits against slow or idle clients (`server::conn`), in both
//! serving modes: half-sent and byte-by-byte request heads are cut, idle
//! keep-alive connections are closed, and past `server.max_connections` a new
//! connection is answered 503 and closed. Every wait is bounded and ends on an
//! observable close (EOF or reset), never on elapsed time.

use crate::harness::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wasmbase::config::Config;

/// Both serving modes: tokio's work-stealing runtime and thread-per-core.
const MODES: [usize; 2] = [0, 2];

/// Reads until the server closes the connection (EOF or reset); panics if it
/// is still open after `secs`. Returns what was read.
async fn read_to_close(tcp: &mut TcpStream, secs: u64, what: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(secs), async {
        let mut buf = [0u8; 4096];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(r.is_ok(), "{what}: connection still open after {secs} s");
    out
}

/// Sends one keep-alive `GET /health` and reads its whole answer (head and
/// `content-length` bytes of body).
async fn health(tcp: &mut TcpStream) -> String {
    tcp.write_all(b"GET /health HTTP/1.1\r\nhost: t\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&out).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .expect("a content-length");
            if out.len() >= end + 4 + len {
                return text;
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(30), tcp.read(&mut buf))
            .await
            .expect("an answer to GET /health")
            .unwrap();
        assert!(n > 0, "closed before answering: {text}");
        out.extend_from_slice(&buf[..n]);
    }
}

async fn server(db: &TestDb, threads: usize, tweak: impl FnOnce(&mut Config)) -> TestServer {
    db.server_with(|c| {
        c.server.threads = threads;
        tweak(c);
    })
    .await
}

#[tokio::test]
async fn half_sent_and_trickled_request_heads_are_cut() {
    let db = TestDb::new().await;
    for threads in MODES {
        let s = server(&db, threads, |c| c.server.header_read_timeout_ms = 300).await;
        // Half a head, then silence.
        let mut tcp = TcpStream::connect(s.srv.addr).await.unwrap();
        tcp.write_all(b"GET /health HTTP/1.1\r\nhost: t\r\n")
            .await
            .unwrap();
        read_to_close(&mut tcp, 30, "half-sent head").await;

        // Nothing at all.
        let mut tcp = TcpStream::connect(s.srv.addr).await.unwrap();
        read_to_close(&mut tcp, 30, "silent connection").await;

        // A head sent byte by byte, each byte well within any per-read
        // timeout: cut before it is complete (the head takes ~20 s to send).
        let head = format!(
            "GET /health HTTP/1.1\r\nhost: t\r\nx-pad: {}\r\n\r\n",
            "a".repeat(1000)
        );
        let mut tcp = TcpStream::connect(s.srv.addr).await.unwrap();
        let mut cut = false;
        for b in head.as_bytes() {
            if tcp.write_all(&[*b]).await.is_err() {
                cut = true;
                break;
            }
            // The server speaking (an error answer, EOF or reset) means it
            // gave up on this head; then it must close.
            if tokio::time::timeout(Duration::from_millis(20), tcp.readable())
                .await
                .is_ok()
            {
                let said = read_to_close(&mut tcp, 30, "trickled head").await;
                let said = String::from_utf8_lossy(&said);
                assert!(
                    !said.starts_with("HTTP/1.1 2"),
                    "answered a trickled head: {said}"
                );
                cut = true;
                break;
            }
        }
        assert!(cut, "threads={threads}: a byte-by-byte head was never cut");
        // A client that sends whole requests is served.
        let mut tcp = TcpStream::connect(s.srv.addr).await.unwrap();
        assert!(health(&mut tcp).await.starts_with("HTTP/1.1 200"));
        s.srv.shutdown().await;
    }
}

#[tokio::test]
async fn idle_keepalive_connections_are_closed() {
    let db = TestDb::new().await;
    for threads in MODES {
        // The header timeout is long: only the idle timeout can close it.
        let s = server(&db, threads, |c| {
            c.server.keepalive_idle_timeout_ms = 300;
            c.server.header_read_timeout_ms = 120_000;
        })
        .await;
        let mut tcp = TcpStream::connect(s.srv.addr).await.unwrap();
        assert!(health(&mut tcp).await.starts_with("HTTP/1.1 200"));
        assert!(
            health(&mut tcp).await.starts_with("HTTP/1.1 200"),
            "keep-alive works"
        );
        let rest = read_to_close(&mut tcp, 60, "idle keep-alive connection").await;
        assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
        s.srv.shutdown().await;
    }
}

#[tokio::test]
async fn connections_past_the_cap_get_503_and_are_closed() {
    let db = TestDb::new().await;
    for threads in MODES {
        let s = server(&db, threads, |c| c.server.max_connections = 3).await;
        // Three open (each answered, so each was accepted and counted).
        let mut open = Vec::new();
        for _ in 0..3 {
            let mut tcp = TcpStream::connect(s.srv.addr).await.unwrap();
            assert!(health(&mut tcp).await.starts_with("HTTP/1.1 200"));
            open.push(tcp);
        }
        // The fourth: 503, a reason, and closed.
        let mut tcp = TcpStream::connect(s.srv.addr).await.unwrap();
        tcp.write_all(b"GET /health HTTP/1.1\r\nhost: t\r\n\r\n")
            .await
            .unwrap();
        let answer = read_to_close(&mut tcp, 30, "refused connection").await;
        let answer = String::from_utf8_lossy(&answer).to_lowercase();
        assert!(answer.starts_with("http/1.1 503"), "{answer}");
        assert!(answer.contains("retry-after: 1"), "{answer}");
        assert!(answer.contains("connection: close"), "{answer}");
        assert!(
            answer.contains("\"code\":\"too_many_connections\""),
            "{answer}"
        );
        // The open ones still work; once one closes, a new one is served.
        assert!(health(&mut open[0]).await.starts_with("HTTP/1.1 200"));
        drop(open.pop());
        let mut served = false;
        for _ in 0..200 {
            let mut tcp = TcpStream::connect(s.srv.addr).await.unwrap();
            if health(&mut tcp).await.starts_with("HTTP/1.1 200") {
                served = true;
                break;
            }
            // The close has not reached the server yet: try again.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(served, "threads={threads}: a freed slot was never reused");
        drop(open);
        s.srv.shutdown().await;
    }
}

/// The limits are on by default: a connection that sends half a head to a
/// server with the default config is closed (default header timeout 10 s).
#[tokio::test]
async fn default_config_cuts_slow_clients() {
    let d = Config::default().server;
    assert!(d.header_read_timeout_ms > 0 && d.header_read_timeout_ms <= 30_000);
    assert!(d.keepalive_idle_timeout_ms > 0);
    assert!(d.max_connections > 0);
    let db = TestDb::new().await;
    let s = db.server().await;
    let mut tcp = TcpStream::connect(s.srv.addr).await.unwrap();
    tcp.write_all(b"GET /health HTTP/1.1\r\nhost: t\r\n")
        .await
        .unwrap();
    read_to_close(&mut tcp, 60, "half-sent head on the default config").await;
}
