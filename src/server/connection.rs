//! One client connection: read messages, run them, write replies in order.
//!
//! Messages are read ahead of their replies (pipelining) up to a cap; each
//! runs as its own task, so one connection's messages use every core, and
//! replies leave in request order, batched into one flush when several are
//! ready. At the cap the connection stops reading: backpressure reaches the
//! client through TCP instead of an unbounded queue here.

use std::sync::Arc;
use std::time::Duration;

use arrpc_wire::reply::{ErrorKind, error_reply};
use arrpc_wire::{Connection, ReadError};
use futures::FutureExt;
use futures::future::{Either, Ready, ready};
use futures::stream::{FuturesOrdered, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::{JoinError, JoinHandle};
use tokio::time::{Instant, sleep};

use super::dispatch::Dispatcher;
use super::shutdown::Shutdown;

/// Per-connection limits from `[server]`.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_message: usize,
    pub max_pipelined: usize,
    pub idle_timeout: Duration,
}

/// A reply still being produced, or one known already (an error).
type PendingReply = Either<JoinHandle<Vec<u8>>, Ready<Result<Vec<u8>, JoinError>>>;

/// Serves one connection until the peer closes it, it breaks, it idles out,
/// or shutdown begins; replies owed for messages already read are sent.
pub async fn serve<S>(
    stream: S,
    peer: Arc<str>,
    dispatcher: Arc<Dispatcher>,
    limits: ConnectionLimits,
    mut shutdown: Shutdown,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut conn = Connection::new(stream, limits.max_message);
    let mut pending: FuturesOrdered<PendingReply> = FuturesOrdered::new();
    let mut reading = true;
    let idle = sleep(limits.idle_timeout);
    tokio::pin!(idle);

    while reading || !pending.is_empty() {
        tokio::select! {
            biased;
            Some(reply) = pending.next(), if !pending.is_empty() => {
                if let Err(e) = write_replies(&mut conn, reply, &mut pending).await {
                    tracing::debug!(peer = %peer, error = %e, "cannot write reply; closing");
                    return;
                }
                idle.as_mut().reset(Instant::now() + limits.idle_timeout);
            }
            read = conn.read_message(), if reading && pending.len() < limits.max_pipelined => {
                idle.as_mut().reset(Instant::now() + limits.idle_timeout);
                match read {
                    Ok(Some(message)) => {
                        let dispatcher = dispatcher.clone();
                        let peer = peer.clone();
                        pending.push_back(Either::Left(tokio::spawn(async move {
                            dispatcher.dispatch(message, peer).await
                        })));
                    }
                    Ok(None) => reading = false,
                    Err(ReadError::Frame(e)) => {
                        tracing::info!(peer = %peer, error = %e, "refusing message; closing connection");
                        pending.push_back(Either::Right(ready(Ok(error_reply(ErrorKind::Rpc, &e.to_string())))));
                        reading = false;
                    }
                    Err(e) => {
                        tracing::debug!(peer = %peer, error = %e, "connection broke");
                        return;
                    }
                }
            }
            _ = &mut idle, if pending.is_empty() => {
                tracing::debug!(peer = %peer, "closing idle connection");
                break;
            }
            _ = shutdown.recv(), if reading => reading = false,
        }
    }
    let _ = conn.shutdown().await;
}

/// Writes `first` and every further reply that is already finished, then
/// flushes once.
async fn write_replies<S>(
    conn: &mut Connection<S>,
    first: Result<Vec<u8>, JoinError>,
    pending: &mut FuturesOrdered<PendingReply>,
) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    conn.write_message(&reply_bytes(first)).await?;
    while let Some(Some(next)) = pending.next().now_or_never() {
        conn.write_message(&reply_bytes(next)).await?;
    }
    conn.flush().await
}

fn reply_bytes(result: Result<Vec<u8>, JoinError>) -> Vec<u8> {
    result.unwrap_or_else(|e| {
        tracing::error!(error = %e, "message task failed");
        error_reply(ErrorKind::Rpc, "internal error while handling the message")
    })
}
