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
    fn start(
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
    Session::new(stream, peer, dispatcher, limits)
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
    phase: Phase,
}

/// Where a connection stands between opening and closing: whether it
/// reads, what becomes of a message it reads, and what closes it. The
/// transitions are its methods, named for what happened, so no other
/// combination can be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reads messages and runs them; no max age applies.
    Open,
    /// Reads messages and runs them until its max age. `rpc_seen`: the
    /// client has made an RPC call, so at that age it is told to move
    /// rather than closed on.
    Young { rpc_seen: bool },
    /// Past its max age, with a client that has made no RPC call: runs what
    /// it reads and closes at its first quiet moment (no reply owed, no
    /// input read ahead), as after `idle_timeout`.
    AgedBare,
    /// Past its max age, with a client that makes RPC calls: each call read
    /// is refused, so the client resends it elsewhere or on a new
    /// connection, and the connection reads on until the client closes it,
    /// or [`AGED_LINGER`] after its max age.
    AgedRpc,
    /// Shutdown began: reads on for [`DRAIN_NOTICE`] but refuses every
    /// message read. `close_when_quiet`: it was [`Phase::AgedBare`], and
    /// still closes at its first quiet moment.
    Notice { close_when_quiet: bool },
    /// Reads no more: the replies owed go out, then the connection closes.
    /// `linger`: the host, not the client, ended it; after closing, it
    /// reads and drops what the client still sends for [`LINGER`], so the
    /// last replies are not lost to a reset.
    Closing { linger: bool },
}

impl Phase {
    /// A new connection's phase: with a max age, it watches for RPC calls.
    fn new(max_age: Option<Duration>) -> Phase {
        match max_age {
            Some(_) => Phase::Young { rpc_seen: false },
            None => Phase::Open,
        }
    }

    /// Whether messages are still read.
    fn reads(self) -> bool {
        !matches!(self, Phase::Closing { .. })
    }

    /// Whether shutdown beginning would change anything: not once the
    /// notice is given or reading stopped.
    fn awaits_shutdown(self) -> bool {
        matches!(
            self,
            Phase::Open | Phase::Young { .. } | Phase::AgedBare | Phase::AgedRpc
        )
    }

    /// Whether the age timer matters: before the max age, and after it
    /// while an RPC client told to move has its [`AGED_LINGER`] to leave.
    /// Without a max age it is never polled, so a connection pays nothing
    /// for the feature per turn.
    fn watches_age(self) -> bool {
        matches!(self, Phase::Young { .. } | Phase::AgedRpc)
    }

    /// Whether the connection closes at its first quiet moment.
    fn closes_when_quiet(self) -> bool {
        matches!(
            self,
            Phase::AgedBare
                | Phase::Notice {
                    close_when_quiet: true
                }
        )
    }

    /// Whether, once closed, the connection reads and drops what the client
    /// still sends.
    fn lingers(self) -> bool {
        matches!(self, Phase::Closing { linger: true })
    }

    /// Whether a message read now runs; if not, it is refused as
    /// [`Failure::Draining`]. `is_rpc_call` is asked only where the answer
    /// matters: with a max age, until the client makes its first RPC call
    /// (which decides how it is made to leave at that age), and past it,
    /// where RPC calls are refused. A closing connection reads nothing to
    /// ask about.
    fn admit(&mut self, is_rpc_call: impl FnOnce() -> bool) -> bool {
        match *self {
            Phase::Notice { .. } => false,
            Phase::Young { rpc_seen: false } => {
                if is_rpc_call() {
                    *self = Phase::Young { rpc_seen: true };
                }
                true
            }
            Phase::AgedBare => {
                if is_rpc_call() {
                    *self = Phase::AgedRpc;
                    false
                } else {
                    true
                }
            }
            Phase::AgedRpc => !is_rpc_call(),
            Phase::Open | Phase::Young { rpc_seen: true } | Phase::Closing { .. } => true,
        }
    }

    /// Shutdown began: the notice starts.
    fn begin_notice(&mut self) {
        if self.awaits_shutdown() {
            *self = Phase::Notice {
                close_when_quiet: *self == Phase::AgedBare,
            };
        }
    }

    /// The max age passed.
    fn pass_max_age(&mut self) {
        if let Phase::Young { rpc_seen } = *self {
            *self = if rpc_seen {
                Phase::AgedRpc
            } else {
                Phase::AgedBare
            };
        }
    }

    /// The host ends the connection: the notice is over, the input was
    /// malformed, or an old connection's time ran out.
    fn stop_reading(&mut self) {
        *self = Phase::Closing { linger: true };
    }

    /// The client closed its side.
    fn input_ended(&mut self) {
        *self = Phase::Closing { linger: false };
    }
}

/// What one event leaves the connection to do.
enum Turn {
    /// Carry on.
    Next,
    /// Replies owed from earlier turns went out: restart the idle clock.
    RestartIdleClock,
    /// Close, with no reply owed: the connection idled out.
    Idle,
    /// The connection broke: end at once.
    Broken,
}

impl<S> Session<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn new(
        stream: S,
        peer: Arc<Peer>,
        dispatcher: Arc<Dispatcher>,
        limits: ConnectionLimits,
    ) -> Self {
        Session {
            conn: Connection::new(stream, limits.max_message),
            peer,
            dispatcher,
            limits,
            owed: Owed::default(),
            phase: Phase::new(limits.max_age),
        }
    }

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

        while self.phase.reads() || !self.owed.is_empty() {
            let turn = tokio::select! {
                biased;
                // Before reading, so a busy connection hears of shutdown too.
                _ = &mut shutting_down, if self.phase.awaits_shutdown() => {
                    self.phase.begin_notice();
                    notice.as_mut().reset(tokio::time::Instant::now() + DRAIN_NOTICE);
                    Turn::Next
                }
                _ = &mut notice, if matches!(self.phase, Phase::Notice { .. }) => {
                    self.phase.stop_reading();
                    Turn::Next
                }
                _ = &mut age, if self.phase.watches_age() => {
                    if self.phase == Phase::AgedRpc {
                        // Told to move, its client stayed on.
                        self.phase.stop_reading();
                    } else {
                        self.phase.pass_max_age();
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
                    // tokio's, so the idle clock follows a test's paused time.
                    let now = tokio::time::Instant::now();
                    idle.as_mut().reset(now + self.limits.idle_timeout);
                    self.take_messages(read, now.into_std()).await
                }
                _ = &mut idle, if self.owed.is_empty() => Turn::Idle,
            };
            match turn {
                Turn::Idle => {
                    tracing::debug!(peer = %self.peer.addr, "closing idle connection");
                    break;
                }
                Turn::Broken => return,
                Turn::RestartIdleClock => idle
                    .as_mut()
                    .reset(tokio::time::Instant::now() + self.limits.idle_timeout),
                Turn::Next => {}
            }
            self.close_if_aged_and_quiet();
        }
        let _ = self.conn.shutdown().await;
        if self.phase.lingers() {
            // Whatever the client still sends is read and dropped until it
            // closes too, so the last replies are not lost to a reset.
            let _ = tokio::time::timeout(LINGER, self.conn.drain()).await;
        }
    }

    /// Reading goes on while fewer messages than the pipelining cap are
    /// in flight: at the cap, backpressure reaches the client through TCP.
    fn has_credit(&self) -> bool {
        self.phase.reads() && self.owed.len() < self.limits.max_pipelined
    }

    /// An old connection whose client makes no RPC call closes at its
    /// first moment with no reply owed and no input read ahead.
    fn close_if_aged_and_quiet(&mut self) {
        if self.phase.closes_when_quiet() && self.owed.is_empty() && !self.conn.has_buffered() {
            tracing::debug!(peer = %self.peer.addr, "closing connection past its max age");
            self.phase.stop_reading();
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
                Ok(Some(message)) => self.start_or_refuse(message, at),
                Ok(None) => {
                    self.phase.input_ended();
                    None
                }
                Err(ReadError::Frame(e)) => {
                    if let Some(suppressed) = MALFORMED.admit() {
                        tracing::info!(peer = %self.peer.addr, error = %e, suppressed, "refusing message; closing connection");
                    }
                    self.dispatcher.metrics().refused(Outcome::Malformed);
                    self.phase.stop_reading();
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
            if !self.phase.reads()
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

    /// Starts one message, or refuses it as the phase says (while
    /// draining, or an RPC call past the connection's age); gives back a
    /// reply that can leave now.
    fn start_or_refuse(&mut self, message: Bytes, at: Instant) -> Option<Vec<u8>> {
        let dispatcher = &self.dispatcher;
        if self.phase.admit(|| dispatcher.is_rpc_call(&message)) {
            self.owed.start(message, at, &self.dispatcher, &self.peer)
        } else {
            self.dispatcher
                .refuse_draining(&message)
                .and_then(|reply| self.owed.answer(reply))
        }
    }

    /// Writes `first` (if any: a notification has no response) and every
    /// further reply that is already finished, then flushes once.
    async fn write_owed(&mut self, first: Option<Vec<u8>>) -> Turn {
        match write_replies(&mut self.conn, first, &mut self.owed).await {
            Ok(()) => Turn::RestartIdleClock,
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

/// How long past its max age a connection whose client makes RPC calls
/// reads on for the client, told to move, to close it.
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

/// How long a connection the host closed (shutdown, malformed input, past
/// its max age) reads and drops input for the client to close too.
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

#[cfg(test)]
mod tests {
    //! A [`Session`] over an in-memory stream, on a runtime whose clock
    //! moves only when every task waits, so each timer fires at its
    //! deadline: the tests check when the host closed as well as what it
    //! sent. The dispatcher serves no handler, so every message is answered
    //! at once (no default handler, no such method); a slow handler's reply
    //! is a future owed before the session starts.

    use std::io::ErrorKind;

    use arrpc_wire::frame::Scanner;
    use arrpc_wire::rpc;
    use tokio::io::DuplexStream;
    use tokio::task::JoinHandle;
    use tokio::time::{Instant, sleep_until, timeout};

    use super::*;
    use crate::runtime::{HandlerRegistry, HandlerSet};
    use crate::server::shutdown::{self, ShutdownTrigger};
    use crate::telemetry::Metrics;

    /// What the in-memory stream holds each way: less than a lingering
    /// host is sent.
    const PIPE: usize = 1024;
    const IDLE: Duration = Duration::from_secs(60);
    const MAX_AGE: Duration = Duration::from_secs(10);
    /// A slow handler's reply, a MessagePack string.
    const SLOW: &[u8] = b"\xa4slow";

    /// A session being served, and the client's end of its stream.
    struct Served {
        client: Connection<DuplexStream>,
        session: JoinHandle<()>,
        shutdown: ShutdownTrigger,
        opened: Instant,
    }

    /// Serves a session on a port that reads RPC, owing what `owe` adds.
    fn serve(
        idle_timeout: Duration,
        max_age: Option<Duration>,
        owe: impl FnOnce(&mut Owed),
    ) -> Served {
        let (client, server) = tokio::io::duplex(PIPE);
        let dispatcher = Dispatcher::new(
            Arc::new(HandlerRegistry::new(HandlerSet::default())),
            true,
            None,
            Arc::new(Metrics::new()),
        );
        let limits = ConnectionLimits {
            max_message: 1 << 20,
            max_pipelined: 16,
            idle_timeout,
            max_age,
        };
        let peer = Arc::new(Peer::anonymous("127.0.0.1:1"));
        let mut session = Session::new(server, peer, Arc::new(dispatcher), limits);
        owe(&mut session.owed);
        let (trigger, shutdown) = shutdown::channel();
        Served {
            client: Connection::new(client, 1 << 20),
            session: tokio::spawn(session.run(shutdown)),
            shutdown: trigger,
            opened: Instant::now(),
        }
    }

    /// A bare message's reply, owed until `at`.
    fn owe_bare(owed: &mut Owed, at: Instant) {
        owed.ordered.push_back(Either::Left(Box::pin(async move {
            sleep_until(at).await;
            SLOW.to_vec()
        })));
    }

    /// An RPC call's response, owed until `at`.
    fn owe_call(owed: &mut Owed, at: Instant) {
        owed.calls.push(Box::pin(async move {
            sleep_until(at).await;
            Some(SLOW.to_vec())
        }));
    }

    impl Served {
        async fn send(&mut self, message: &[u8]) {
            self.try_send(message).await.expect("the host reads");
        }

        async fn try_send(&mut self, message: &[u8]) -> std::io::Result<()> {
            self.client.write_message(message).await?;
            self.client.flush().await
        }

        async fn reply(&mut self) -> Vec<u8> {
            let reply = self.client.read_message().await.expect("a whole reply");
            reply.expect("a reply, not the close").to_vec()
        }

        async fn expect_close(&mut self) {
            let read = self.client.read_message().await.expect("a clean close");
            assert_eq!(read, None, "the host closed");
        }

        /// How long since the session opened.
        fn at(&self) -> Duration {
            self.opened.elapsed()
        }

        /// The session ends within `within`, and then nothing reads what
        /// the client sends.
        async fn expect_end(&mut self, within: Duration) {
            timeout(within, &mut self.session)
                .await
                .expect("the session ends")
                .expect("the session does not panic");
            let sent = self.try_send(&[0x2a]).await;
            assert_eq!(sent.map_err(|e| e.kind()), Err(ErrorKind::BrokenPipe));
        }
    }

    /// `at` is `expected`, to the millisecond the timer wheel rounds to.
    fn assert_at(at: Duration, expected: Duration) {
        assert!(
            at >= expected && at <= expected + Duration::from_millis(2),
            "at {at:?}, expected {expected:?}"
        );
    }

    fn call(msgid: u32) -> Vec<u8> {
        rpc::request(msgid, "m", &[0x90])
    }

    fn no_default_handler() -> Vec<u8> {
        failure::bare_reply(&Failure::NoDefaultHandler)
    }

    fn no_such_method(msgid: u32) -> Vec<u8> {
        failure::reply(&Failure::NoSuchMethod("m".into()), Form::Request(msgid)).unwrap()
    }

    fn draining(form: Form) -> Vec<u8> {
        failure::reply(&Failure::Draining, form).unwrap()
    }

    fn secs(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_connection_closes_after_its_idle_timeout_without_lingering() {
        let mut served = serve(secs(30), None, |_| {});
        served.send(&[0x2a]).await;
        assert_eq!(served.reply().await, no_default_handler());

        // A message read restarts the idle clock.
        tokio::time::sleep(secs(20)).await;
        served.send(&[0x2b]).await;
        assert_eq!(served.reply().await, no_default_handler());

        served.expect_close().await;
        assert_at(served.at(), secs(50));
        served.expect_end(Duration::from_millis(1)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn after_malformed_input_the_host_closes_then_reads_and_drops_until_its_linger_ends() {
        let mut served = serve(IDLE, None, |_| {});
        // 0xc1 is no MessagePack marker.
        served.send(&[0xc1]).await;
        let error = Scanner::new(1 << 20).scan(&[0xc1]).unwrap_err();
        assert_eq!(
            served.reply().await,
            failure::bare_reply(&Failure::Malformed(error))
        );
        served.expect_close().await;
        let closed = served.at();

        // More than the stream holds goes through: the host reads it.
        served.send(&[0; 4 * PIPE]).await;
        served.expect_end(LINGER + Duration::from_millis(2)).await;
        assert_at(served.at() - closed, LINGER);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_refuses_what_is_read_during_the_notice_then_sends_what_is_owed_and_closes() {
        let mut served = serve(IDLE, None, |owed| owe_call(owed, Instant::now() + secs(2)));
        served.shutdown.trigger();

        served.send(&[0x2a]).await;
        assert_eq!(served.reply().await, draining(Form::Bare));
        served.send(&call(1)).await;
        assert_eq!(served.reply().await, draining(Form::Request(1)));

        // Past the notice nothing more is read: this message gets no
        // reply, the owed one does.
        tokio::time::sleep(DRAIN_NOTICE + Duration::from_millis(100)).await;
        served.send(&[0x2b]).await;
        assert_eq!(served.reply().await, SLOW);
        assert_at(served.at(), secs(2));
        served.expect_close().await;
        served.expect_end(LINGER + Duration::from_millis(2)).await;
        assert_at(served.at(), secs(2) + LINGER);
    }

    #[tokio::test(start_paused = true)]
    async fn past_its_max_age_an_rpc_client_has_its_calls_refused_then_is_closed_on_if_it_stays() {
        let mut served = serve(IDLE, Some(MAX_AGE), |_| {});
        served.send(&call(1)).await;
        assert_eq!(served.reply().await, no_such_method(1));

        // Past the max age (give or take 10%), calls are refused so the
        // client moves them; bare messages still run.
        tokio::time::sleep(MAX_AGE * 12 / 10).await;
        served.send(&call(2)).await;
        assert_eq!(served.reply().await, draining(Form::Request(2)));
        served.send(&[0x2a]).await;
        assert_eq!(served.reply().await, no_default_handler());

        // The client stays: the host closes AGED_LINGER after the max age.
        served.expect_close().await;
        let at = served.at();
        assert!(
            at >= MAX_AGE * 9 / 10 + AGED_LINGER
                && at <= MAX_AGE * 11 / 10 + AGED_LINGER + Duration::from_millis(2),
            "closed at {at:?}"
        );
        served.expect_end(LINGER + Duration::from_millis(2)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn past_its_max_age_a_bare_client_is_closed_at_its_first_quiet_moment() {
        let mut served = serve(IDLE, Some(MAX_AGE), |owed| {
            owe_bare(owed, Instant::now() + secs(15))
        });

        // Past the max age, with a reply owed: the connection reads on and
        // runs what it reads.
        tokio::time::sleep(MAX_AGE * 12 / 10).await;
        served.send(&[0x2a]).await;
        assert_eq!(served.reply().await, SLOW);
        assert_eq!(served.reply().await, no_default_handler());
        assert_at(served.at(), secs(15));

        // Then nothing is owed: it closes at once.
        served.expect_close().await;
        assert_at(served.at(), secs(15));
        served.expect_end(LINGER + Duration::from_millis(2)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn past_its_max_age_a_bare_client_is_closed_when_quiet_during_the_notice_too() {
        let quiet = MAX_AGE * 12 / 10 + DRAIN_NOTICE / 2;
        let mut served = serve(IDLE, Some(MAX_AGE), |owed| {
            owe_bare(owed, Instant::now() + quiet)
        });
        tokio::time::sleep(MAX_AGE * 12 / 10).await;
        served.shutdown.trigger();

        assert_eq!(served.reply().await, SLOW);
        served.expect_close().await;
        // Not at the notice's end.
        assert_at(served.at(), quiet);
    }
}
