//! A LISTEN loop that survives disconnects.
//!
//! NOTIFY payloads carry ids only; after every (re)connect the caller's `resync`
//! runs, because notifications sent while the listener was away are lost. Used for
//! key revocation now and for schema reloads and function deploys later.

use futures::{stream, StreamExt};
use std::future::Future;
use std::time::Duration;
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_util::sync::CancellationToken;

/// Listens on `channels` forever (until `cancel`), calling `on_notify(channel, payload)`
/// for each notification and `resync()` after every successful (re)connect.
pub async fn run<N, NF, R, RF>(
    config: tokio_postgres::Config,
    channels: &[&str],
    cancel: CancellationToken,
    on_notify: N,
    resync: R,
) where
    N: Fn(String, String) -> NF,
    NF: Future<Output = ()>,
    R: Fn() -> RF,
    RF: Future<Output = ()>,
{
    let mut backoff = Duration::from_millis(100);
    loop {
        let session = async {
            let (client, mut conn) = config.connect(NoTls).await?;
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let driver = tokio::spawn(async move {
                let mut messages = stream::poll_fn(move |cx| conn.poll_message(cx));
                while let Some(msg) = messages.next().await {
                    match msg {
                        Ok(AsyncMessage::Notification(n)) => {
                            if tx
                                .send(Some((n.channel().to_string(), n.payload().to_string())))
                                .is_err()
                            {
                                break;
                            }
                        }
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
                let _ = tx.send(None);
            });
            let listen: String = channels
                .iter()
                .map(|c| format!("LISTEN \"{c}\";"))
                .collect();
            client.batch_execute(&listen).await?;
            resync().await;
            tracing::debug!(?channels, "listening");
            while let Some(Some((channel, payload))) = rx.recv().await {
                on_notify(channel, payload).await;
            }
            driver.abort();
            drop(client);
            Ok::<(), tokio_postgres::Error>(())
        };
        tokio::select! {
            r = session => {
                match r {
                    Ok(()) => {
                        backoff = Duration::from_millis(100);
                        tracing::warn!(?channels, "notification connection closed; reconnecting");
                    }
                    Err(e) => tracing::warn!(?channels, error = %e, "notification connection failed; retrying"),
                }
            }
            _ = cancel.cancelled() => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = cancel.cancelled() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
