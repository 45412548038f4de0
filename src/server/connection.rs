//! One client connection: read messages, run them, write replies.
//!
//! Messages are read ahead of their replies (pipelining) up to a cap and
//! run concurrently inside the connection's task: no task is spawned per
//! message, so one connection's messages share one worker thread while
//! many connections spread over all of them. Each message starts as soon
//! as it is read; one that finishes at once (most do) has its reply
//! buffered straight away, the rest are owed and polled with the
//! connection. Every whole message already read starts before the
//! connection waits, and whatever replies are ready leave in one flush.
//! Replies to bare messages leave in request order; MessagePack-RPC
//! responses, which carry their msgid, leave as soon as their handler
//! finishes. At the cap (bare and RPC messages in flight together) the
//! connection stops reading: backpressure reaches the client through TCP
//! instead of an unbounded queue here. The same cap bounds one turn: after
//! starting that many messages the connection flushes their replies and,
//! with more input buffered, lets the other connections on its worker run
//! first, so a deep pipeline of quick messages cannot hold a worker for a
//! whole read's worth of them.
//!
//! When shutdown begins, the connection keeps reading for [`DRAIN_NOTICE`]
//! but runs nothing more: each message read gets a refusal that says the
//! host is draining and did not run it, so a balancing client moves its
//! calls to other replicas and may resend these. Then it stops reading,
//! sends the replies still owed and closes.
//!
//! Past `max_age` (give or take 10%) a connection ends too, so balancing
//! clients reconnect and spread onto replicas added since, without cutting
//! a reply or a message: RPC calls read from then on are refused the same
//! way (the client resends them, elsewhere or on a new connection) and the
//! connection reads on until the client closes it; a connection that
//! carries no RPC call closes at its first moment with no reply owed and no
//! input read ahead, as after `idle_timeout`.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use arrpc_wire::{Connection, ReadError};
use bytes::Bytes;
use futures::FutureExt;
use futures::future::{BoxFuture, Either, Ready, ready};
use futures::stream::{FuturesOrdered, FuturesUnordered, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::sleep;

use super::access::Peer;
use super::dispatch::{Dispatcher, Incoming};
use super::failure::{self, Failure, Form};
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
    /// Close the connection after about this long, between replies.
    pub max_age: Option<Duration>,
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

    /// Starts one message. Its reply comes back when the message finished
    /// at once and no earlier reply is still owed (it can leave now);
    /// otherwise the reply is owed from now on.
    fn take(
        &mut self,
        message: Bytes,
        at: Instant,
        dispatcher: &Arc<Dispatcher>,
        peer: &Arc<Peer>,
    ) -> Option<Vec<u8>> {
        let dispatcher = dispatcher.clone();
        let peer = peer.clone();
        match dispatcher.classify(message, &peer.addr, at) {
            Incoming::Bare(message) => {
                let work: BoxFuture<'static, Vec<u8>> = Box::pin(async move {
                    contain(dispatcher.dispatch(message, peer))
                        .await
                        .unwrap_or_else(|| failure::bare_reply(&Failure::Internal))
                });
                // Behind an owed bare reply it could not leave anyway.
                let work = if self.ordered.is_empty() {
                    match poll_once(work) {
                        Ok(reply) => return Some(reply),
                        Err(work) => work,
                    }
                } else {
                    work
                };
                self.ordered.push_back(Either::Left(work));
                None
            }
            Incoming::Refused(reply) => reply.and_then(|reply| self.answer(reply)),
            Incoming::Rpc(call) => {
                let work: PendingCall = Box::pin(async move {
                    let msgid = call.msgid();
                    contain(dispatcher.dispatch_rpc(call, peer))
                        .await
                        .unwrap_or_else(|| failure::reply(&Failure::Internal, Form::rpc(msgid)))
                });
                poll_once(work).unwrap_or_else(|work| {
                    self.calls.push(work);
                    None
                })
            }
        }
    }

    /// A reply known already, given back if it can leave now; else it
    /// waits its turn behind the bare replies still owed.
    fn answer(&mut self, reply: Vec<u8>) -> Option<Vec<u8>> {
        if self.ordered.is_empty() {
            Some(reply)
        } else {
            self.ordered.push_back(Either::Right(ready(reply)));
            None
        }
    }
}

/// Polls a message's work once with a waker that does nothing; unfinished
/// work is given back to be owed. No wake-up is lost: owed work is polled
/// again, with the connection's waker, before the connection waits.
fn poll_once<T>(mut work: BoxFuture<'static, T>) -> Result<T, BoxFuture<'static, T>> {
    match work
        .as_mut()
        .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
    {
        Poll::Ready(done) => Ok(done),
        Poll::Pending => Err(work),
    }
}

/// Serves one connection until the peer closes it, it breaks, it idles out,
/// or shutdown begins; replies owed for messages already read are sent.
pub async fn serve<S>(
    stream: S,
    peer: Arc<Peer>,
    dispatcher: Arc<Dispatcher>,
    limits: ConnectionLimits,
    shutdown: Shutdown,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    Session {
        conn: Connection::new(stream, limits.max_message),
        peer,
        dispatcher,
        limits,
        owed: Owed::default(),
        reading: true,
        lingers: false,
        refusing: false,
        aged: false,
        refused: false,
        speaks_rpc: false,
    }
    .run(shutdown)
    .await
}

/// One connection being served: its stream, the replies it owes, and
/// where it stands between opening and closing. Its timers live in
/// [`Session::run`], pinned there.
struct Session<S> {
    conn: Connection<S>,
    peer: Arc<Peer>,
    dispatcher: Arc<Dispatcher>,
    limits: ConnectionLimits,
    owed: Owed,
    /// Messages are still read; once not, the connection ends when the
    /// replies owed are sent.
    reading: bool,
    /// The host, not the client, ends the connection: it reads and drops
    /// what the client still sends for [`LINGER`], so the last replies
    /// are not lost to a reset.
    lingers: bool,
    /// Shutdown began: messages read now are refused, not run.
    refusing: bool,
    /// Past its age: RPC calls are refused, and `refused` says one was.
    aged: bool,
    refused: bool,
    /// Whether the client made an RPC call: then it is told to move, not
    /// closed on at a quiet moment. Watched only with a max age.
    speaks_rpc: bool,
}

/// What one event leaves the connection to do.
enum Turn {
    /// Carry on.
    Next,
    /// Replies owed from earlier turns went out: the idle clock restarts.
    Wrote,
    /// Close, with no reply owed: the connection idled out.
    Idle,
    /// The connection broke: end at once.
    Broken,
}

impl<S> Session<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    async fn run(mut self, mut shutdown: Shutdown) {
        let notice = sleep(Duration::ZERO);
        tokio::pin!(notice);
        let age = sleep(self.limits.max_age.map_or(FOREVER, jitter));
        tokio::pin!(age);
        let idle = sleep(self.limits.idle_timeout);
        tokio::pin!(idle);
        // Made once: a wait made anew on every turn of the loop would
        // register with the shared signal and unregister again for every
        // message.
        let shutting_down = shutdown.recv();
        tokio::pin!(shutting_down);

        while self.reading || !self.owed.is_empty() {
            let turn = tokio::select! {
                biased;
                // Before reading, so a busy connection hears of shutdown too.
                _ = &mut shutting_down, if self.reading && !self.refusing => {
                    self.refusing = true;
                    notice.as_mut().reset(tokio::time::Instant::now() + DRAIN_NOTICE);
                    Turn::Next
                }
                _ = &mut notice, if self.reading && self.refusing => {
                    self.stop_reading();
                    Turn::Next
                }
                _ = &mut age, if self.age_watched() => {
                    if self.grow_old() {
                        age.as_mut().reset(tokio::time::Instant::now() + AGED_LINGER);
                    }
                    Turn::Next
                }
                Some(reply) = self.owed.ordered.next(), if !self.owed.ordered.is_empty() => {
                    self.write_owed(Some(reply)).await
                }
                Some(response) = self.owed.calls.next(), if !self.owed.calls.is_empty() => {
                    self.write_owed(response).await
                }
                read = self.conn.read_message(), if self.has_credit() => {
                    // One clock reading serves every message read together.
                    let at = Instant::now();
                    idle.as_mut().reset((at + self.limits.idle_timeout).into());
                    self.take_messages(read, at).await
                }
                _ = &mut idle, if self.owed.is_empty() => Turn::Idle,
            };
            match turn {
                Turn::Idle => {
                    tracing::debug!(peer = %self.peer.addr, "closing idle connection");
                    break;
                }
                Turn::Broken => return,
                Turn::Wrote => idle
                    .as_mut()
                    .reset(tokio::time::Instant::now() + self.limits.idle_timeout),
                Turn::Next => {}
            }
            self.close_if_aged_and_quiet();
        }
        let _ = self.conn.shutdown().await;
        if self.lingers {
            // Whatever the client still sends is read and dropped until it
            // closes too, so the last replies are not lost to a reset.
            let _ = tokio::time::timeout(LINGER, self.conn.drain()).await;
        }
    }

    /// Stops reading on the host's initiative: the replies owed are sent,
    /// then the connection closes and lingers.
    fn stop_reading(&mut self) {
        self.reading = false;
        self.lingers = true;
    }

    /// Reading goes on while fewer messages than the pipelining cap are
    /// in flight: at the cap, backpressure reaches the client through TCP.
    fn has_credit(&self) -> bool {
        self.reading && self.owed.len() < self.limits.max_pipelined
    }

    /// Whether the age timer matters: with a max age, before the
    /// connection is old, and after, while the client that was (or would
    /// be) told to move has its linger to close. Without one it is never
    /// polled, so a connection pays nothing for the feature per turn.
    fn age_watched(&self) -> bool {
        self.limits.max_age.is_some()
            && self.reading
            && !self.refusing
            && (!self.aged || self.refused || self.speaks_rpc)
    }

    /// The age timer fired: the connection is old now (`true`: its linger
    /// starts), or its client, told to move, never left and it closes.
    fn grow_old(&mut self) -> bool {
        if self.aged {
            self.stop_reading();
            false
        } else {
            self.aged = true;
            true
        }
    }

    /// An old connection whose client makes no RPC call closes at its
    /// first moment with no reply owed and no input read ahead.
    fn close_if_aged_and_quiet(&mut self) {
        if self.aged
            && !self.speaks_rpc
            && self.reading
            && self.owed.is_empty()
            && !self.conn.has_buffered()
        {
            tracing::debug!(peer = %self.peer.addr, "closing connection past its max age");
            self.stop_reading();
        }
    }

    /// Starts `read` and every further whole message already buffered, up
    /// to the cap, before the connection waits, and writes the replies
    /// ready at once in one flush. The idle clock restarted when these
    /// were read, at `at`.
    async fn take_messages(
        &mut self,
        mut read: Result<Option<Bytes>, ReadError>,
        at: Instant,
    ) -> Turn {
        let mut wrote = false;
        let mut started = 0;
        loop {
            let reply = match read {
                Ok(Some(message)) => self.start(message, at),
                Ok(None) => {
                    self.reading = false;
                    None
                }
                Err(ReadError::Frame(e)) => {
                    if let Some(suppressed) = MALFORMED.admit() {
                        tracing::info!(peer = %self.peer.addr, error = %e, suppressed, "refusing message; closing connection");
                    }
                    self.dispatcher.metrics().refused(Outcome::Malformed);
                    self.stop_reading();
                    self.owed
                        .answer(failure::bare_reply(&Failure::Malformed(e)))
                }
                Err(e) => {
                    tracing::debug!(peer = %self.peer.addr, error = %e, "connection broke");
                    return Turn::Broken;
                }
            };
            if let Some(reply) = reply {
                if let Err(e) = self.conn.write_message(&reply).await {
                    return self.write_failed(e);
                }
                wrote = true;
            }
            started += 1;
            if !self.reading
                || started == self.limits.max_pipelined
                || self.owed.len() >= self.limits.max_pipelined
            {
                break;
            }
            read = match self.conn.try_message() {
                Ok(None) => break,
                buffered => buffered.map_err(ReadError::Frame),
            };
        }
        if wrote && let Err(e) = self.conn.flush().await {
            return self.write_failed(e);
        }
        // A deep pipeline of quick messages lets the other connections on
        // this worker run before it takes the next batch.
        if started == self.limits.max_pipelined && self.conn.has_buffered() {
            tokio::task::yield_now().await;
        }
        Turn::Next
    }

    /// Starts one message, or refuses it while draining or, for an RPC
    /// call, past the connection's age; gives back a reply that can
    /// leave now.
    fn start(&mut self, message: Bytes, at: Instant) -> Option<Vec<u8>> {
        if self.refusing {
            return self.refuse(&message);
        }
        // Whether the client speaks RPC is watched only with a max age
        // (which `aged` implies); past it, every RPC call is refused.
        let watched = self.aged || (self.limits.max_age.is_some() && !self.speaks_rpc);
        if watched && self.dispatcher.is_rpc_call(&message) {
            self.speaks_rpc = true;
            if self.aged {
                self.refused = true;
                return self.refuse(&message);
            }
        }
        self.owed.take(message, at, &self.dispatcher, &self.peer)
    }

    /// The "draining, not run" refusal for `message`, if it gets a reply.
    fn refuse(&mut self, message: &Bytes) -> Option<Vec<u8>> {
        self.dispatcher
            .refuse_draining(message)
            .and_then(|reply| self.owed.answer(reply))
    }

    /// Writes `first` (if any: a notification has no response) and every
    /// further reply that is already finished, then flushes once.
    async fn write_owed(&mut self, first: Option<Vec<u8>>) -> Turn {
        match write_replies(&mut self.conn, first, &mut self.owed).await {
            Ok(()) => Turn::Wrote,
            Err(e) => self.write_failed(e),
        }
    }

    fn write_failed(&self, e: std::io::Error) -> Turn {
        tracing::debug!(peer = %self.peer.addr, error = %e, "cannot write reply; closing");
        Turn::Broken
    }
}

/// Stands in for a timer that never fires.
const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// How long a connection past its max age that refused an RPC call reads on
/// for its client to close it.
const AGED_LINGER: Duration = Duration::from_secs(5);

/// `age` give or take 10%, so connections opened together do not all close
/// together.
fn jitter(age: Duration) -> Duration {
    use std::hash::BuildHasher;
    let draw = std::collections::hash_map::RandomState::new().hash_one(Instant::now());
    let spread = (draw % 2001) as f64 / 10_000.0 - 0.1;
    age.mul_f64(1.0 + spread)
}

/// How long a connection keeps reading after shutdown began, refusing what
/// it reads, so clients learn the host is draining before it stops reading.
const DRAIN_NOTICE: Duration = Duration::from_millis(500);

/// How long a connection closed by shutdown or after malformed input waits
/// for the client to close.
const LINGER: Duration = Duration::from_secs(2);

/// The replies of [`Session::write_owed`]: `first`, then those already
/// finished, in one flush.
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
