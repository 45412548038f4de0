//! One client connection: read messages, run them, write replies.
//!
//! Messages are read ahead of their replies (pipelining) up to a cap and
//! run concurrently inside the connection's task: no task is spawned per
//! message, so one connection's messages share one worker thread while
//! many connections spread over all of them. Every whole message already
//! read starts before any runs, and whatever replies are ready leave in
//! one flush. Replies to bare messages leave in request order;
//! MessagePack-RPC responses, which carry their msgid, leave as soon as
//! their handler finishes. At the cap (bare and RPC messages in flight
//! together) the connection stops reading: backpressure reaches the client
//! through TCP instead of an unbounded queue here.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrpc_wire::reply::{ErrorKind, error_reply};
use arrpc_wire::{Connection, ReadError, rpc};
use bytes::Bytes;
use futures::FutureExt;
use futures::future::{BoxFuture, Either, Ready, ready};
use futures::stream::{FuturesOrdered, FuturesUnordered, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::sleep;

use super::dispatch::{Dispatcher, Incoming};
use super::shutdown::Shutdown;
use crate::telemetry::{LogThrottle, Outcome};

/// Malformed input is logged within a budget: a peer can send it as fast
/// as it likes.
static MALFORMED: LogThrottle = LogThrottle::new();

/// Per-connection limits from `[server]`.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_message: usize,
    pub max_pipelined: usize,
    pub idle_timeout: Duration,
}

/// A reply still being produced, or one known already (an error).
type PendingReply = Either<BoxFuture<'static, Vec<u8>>, Ready<Vec<u8>>>;

/// An RPC call in flight: its response, or nothing for a notification.
type PendingCall = BoxFuture<'static, Option<Vec<u8>>>;

/// Replies owed on one connection.
#[derive(Default)]
struct Owed {
    /// Replies to bare messages, in request order.
    ordered: FuturesOrdered<PendingReply>,
    /// RPC calls, answered in the order they finish.
    calls: FuturesUnordered<PendingCall>,
}

impl Owed {
    fn len(&self) -> usize {
        self.ordered.len() + self.calls.len()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Starts one message; its reply is owed from now on.
    fn take(&mut self, message: Bytes, at: Instant, dispatcher: &Arc<Dispatcher>, peer: &Arc<str>) {
        let dispatcher = dispatcher.clone();
        let peer = peer.clone();
        match dispatcher.classify(message, &peer, at) {
            Incoming::Bare(message) => {
                self.ordered.push_back(Either::Left(Box::pin(async move {
                    contain(dispatcher.dispatch(message, peer))
                        .await
                        .unwrap_or_else(|| error_reply(ErrorKind::Rpc, INTERNAL_ERROR))
                })));
            }
            Incoming::Refused(reply) => {
                if let Some(reply) = reply {
                    self.ordered.push_back(Either::Right(ready(reply)));
                }
            }
            Incoming::Rpc(call) => {
                self.calls.push(Box::pin(async move {
                    let msgid = call.msgid();
                    contain(dispatcher.dispatch_rpc(call, peer))
                        .await
                        .unwrap_or_else(|| msgid.map(|id| rpc::response(id, Err(INTERNAL_ERROR))))
                }));
            }
        }
    }
}

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
    let mut owed = Owed::default();
    let mut reading = true;
    let mut draining = false;
    let idle = sleep(limits.idle_timeout);
    tokio::pin!(idle);
    // Made once: a wait made anew on every turn of the loop would register
    // with the shared signal and unregister again for every message.
    let shutting_down = shutdown.recv();
    tokio::pin!(shutting_down);

    while reading || !owed.is_empty() {
        tokio::select! {
            biased;
            Some(reply) = owed.ordered.next(), if !owed.ordered.is_empty() => {
                if let Err(e) = write_replies(&mut conn, Some(reply), &mut owed).await {
                    tracing::debug!(peer = %peer, error = %e, "cannot write reply; closing");
                    return;
                }
                idle.as_mut().reset(tokio::time::Instant::now() + limits.idle_timeout);
            }
            Some(response) = owed.calls.next(), if !owed.calls.is_empty() => {
                if let Err(e) = write_replies(&mut conn, response, &mut owed).await {
                    tracing::debug!(peer = %peer, error = %e, "cannot write reply; closing");
                    return;
                }
                idle.as_mut().reset(tokio::time::Instant::now() + limits.idle_timeout);
            }
            read = conn.read_message(), if reading && owed.len() < limits.max_pipelined => {
                // One clock reading serves every message read together.
                let at = Instant::now();
                idle.as_mut().reset((at + limits.idle_timeout).into());
                let mut read = read;
                loop {
                    match read {
                        Ok(Some(message)) => owed.take(message, at, &dispatcher, &peer),
                        Ok(None) => reading = false,
                        Err(ReadError::Frame(e)) => {
                            if let Some(suppressed) = MALFORMED.admit() {
                                tracing::info!(peer = %peer, error = %e, suppressed, "refusing message; closing connection");
                            }
                            dispatcher.metrics().refused(Outcome::Malformed);
                            owed.ordered.push_back(Either::Right(ready(error_reply(ErrorKind::Rpc, &e.to_string()))));
                            reading = false;
                            draining = true;
                        }
                        Err(e) => {
                            tracing::debug!(peer = %peer, error = %e, "connection broke");
                            return;
                        }
                    }
                    // Every whole message already read joins in before any
                    // runs, so their replies leave in one write.
                    if !reading || owed.len() >= limits.max_pipelined {
                        break;
                    }
                    read = match conn.try_message() {
                        Ok(None) => break,
                        buffered => buffered.map_err(ReadError::Frame),
                    };
                }
            }
            _ = &mut idle, if owed.is_empty() => {
                tracing::debug!(peer = %peer, "closing idle connection");
                break;
            }
            _ = &mut shutting_down, if reading => {
                reading = false;
                draining = true;
            }
        }
    }
    let _ = conn.shutdown().await;
    if draining {
        // Whatever the client still sends is read and dropped until it
        // closes too, so the last replies are not lost to a reset.
        let _ = tokio::time::timeout(LINGER, conn.drain()).await;
    }
}

/// How long a connection closed by shutdown or after malformed input waits
/// for the client to close.
const LINGER: Duration = Duration::from_secs(2);

const INTERNAL_ERROR: &str = "internal error while handling the message";

/// Writes `first` (if any: a notification has no response) and every
/// further reply that is already finished, then flushes once.
async fn write_replies<S>(
    conn: &mut Connection<S>,
    first: Option<Vec<u8>>,
    owed: &mut Owed,
) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if let Some(first) = first {
        conn.write_message(&first).await?;
    }
    while let Some(Some(next)) = owed.ordered.next().now_or_never() {
        conn.write_message(&next).await?;
    }
    while let Some(Some(next)) = owed.calls.next().now_or_never() {
        if let Some(response) = next {
            conn.write_message(&response).await?;
        }
    }
    conn.flush().await
}

/// Runs one message's future, turning a panic into `None` so that one bad
/// message cannot take its connection down. Not an `async fn`: that would
/// hold `work` twice (as its argument and inside `catch_unwind`).
fn contain<T>(work: impl Future<Output = T>) -> impl Future<Output = Option<T>> {
    AssertUnwindSafe(work).catch_unwind().map(|done| {
        done.inspect_err(|_| tracing::error!("message handling panicked"))
            .ok()
    })
}
