//! A minimal fan-out WebSocket server: the baseline `bench/realtime-broadcast.sh`
//! measures realtime broadcast against. Same library (axum's WebSocket, i.e.
//! tungstenite) and the same buffer sizes as `/realtime/v1`, no protocol, no
//! database: a client connects to `/ws?topic=T`, every text message it sends
//! goes to every client of `T` (itself included, as realtime's `self: true`).

use anyhow::Result;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::Response;
use axum::routing::get;
use futures::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::broadcast;

type Topics = Arc<parking_lot::Mutex<HashMap<String, broadcast::Sender<Message>>>>;

/// Serves until the process ends.
pub async fn serve(addr: SocketAddr) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!("minimal fan-out on ws://{}/ws", listener.local_addr()?);
    let topics: Topics = Default::default();
    let app = axum::Router::new()
        .route("/ws", get(upgrade))
        .with_state(topics);
    axum::serve(listener, app).await?;
    Ok(())
}

async fn upgrade(
    State(topics): State<Topics>,
    Query(q): Query<HashMap<String, String>>,
    ws: WebSocketUpgrade,
) -> Response {
    let topic = q.get("topic").cloned().unwrap_or_default();
    let tx = topics
        .lock()
        .entry(topic)
        .or_insert_with(|| broadcast::channel(1024).0)
        .clone();
    ws.read_buffer_size(crate::api::realtime::READ_BUFFER)
        .write_buffer_size(0)
        .on_upgrade(move |socket| client(socket, tx))
}

async fn client(socket: WebSocket, tx: broadcast::Sender<Message>) {
    let (mut sink, mut stream) = socket.split();
    let mut rx = tx.subscribe();
    let writer = tokio::spawn(async move {
        while let Ok(m) = rx.recv().await {
            if sink.send(m).await.is_err() {
                return;
            }
        }
    });
    while let Some(Ok(m)) = stream.next().await {
        if let Message::Text(_) = m {
            let _ = tx.send(m);
        }
    }
    writer.abort();
}
