//! Calls spread over every replica behind one address.
//!
//! An address is one server (`host:port`), a static list of replicas
//! (`a:7400,b:7400`) or a DNS name whose every A/AAAA record is a replica
//! (`dns://arrpc-host.shop.svc.cluster.local:7400`, as a Kubernetes headless
//! Service answers). Long-lived pipelined connections defeat a
//! connection-level balancer such as kube-proxy, so the client balances calls
//! itself: tower's power-of-two-choices [`Balance`] over the replicas' pending
//! calls, fed by a stream of replicas added and removed.
//!
//! Each [`Replica`] keeps a few connections (each an [`RpcClient`] to its
//! address) and a keeper task that opens them. A replica takes calls only
//! while its connections are up; after consecutive failures it is ejected and
//! tried again after a doubling pause. A replica removed from DNS leaves the
//! balancer at once but its connections live until its calls in flight end.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::Stream;
use futures::future::BoxFuture;
use futures::task::AtomicWaker;
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{LookupIpStrategy, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use tokio::sync::{Notify, OnceCell, mpsc};
use tower::Service;
use tower::balance::p2c::Balance;
use tower::discover::Change;
use tower::load::{CompleteOnResponse, PendingRequestsDiscover};
use tower::retry::budget::{Budget, TpsBudget};

use crate::{ClientConfig, Error, RpcClient, lock};

/// Shortest pause between two resolutions, whatever the TTL says.
const MIN_RESOLVE_PAUSE: Duration = Duration::from_millis(250);
/// Pause between connection attempts to a replica not yet ejected.
const RECONNECT_PAUSE: Duration = Duration::from_millis(100);
/// Longest ejection, however often a replica failed.
const MAX_EJECTION: Duration = Duration::from_secs(60);

/// Where the replicas behind an address are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// One `host:port`, connected as it is.
    One,
    /// A fixed list of `host:port`, each a replica.
    Static(Vec<String>),
    /// Every A/AAAA record of `host` is a replica listening on `port`.
    Dns { host: String, port: u16 },
}

impl Target {
    /// Reads an address: `dns://name:port`, `a:port,b:port` or `host:port`.
    pub(crate) fn parse(addr: &str) -> Result<Target, String> {
        if let Some(rest) = addr.strip_prefix("dns://") {
            let (host, port) = rest
                .rsplit_once(':')
                .ok_or("a dns:// address needs a port (dns://name:port)")?;
            let port = port
                .parse()
                .map_err(|_| format!("{port:?} is not a port number"))?;
            if host.is_empty() || host.contains(['/', ',', ' ']) {
                return Err(format!("{host:?} is not a DNS name"));
            }
            return Ok(Target::Dns {
                host: host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned(),
                port,
            });
        }
        if !addr.contains(',') {
            return Ok(Target::One);
        }
        let replicas: Vec<String> = addr
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect();
        if let Some(bad) = replicas.iter().find(|a| !has_port(a)) {
            return Err(format!("{bad:?} in the list has no port (host:port)"));
        }
        if replicas.is_empty() {
            return Err("the list names no replica".to_owned());
        }
        Ok(Target::Static(replicas))
    }
}

fn has_port(addr: &str) -> bool {
    addr.rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
}

/// What the balancer is asked to run: one RPC call. Built once per call;
/// each attempt hands the balancer a clone, which shares the bytes.
#[derive(Clone)]
pub(crate) struct Call {
    pub method: Arc<str>,
    pub params: Arc<[u8]>,
    pub traceparent: Option<Arc<str>>,
    /// A notification: nothing comes back.
    pub notify: bool,
}

/// A call's result and the replica that answered it (`ip:port`).
pub(crate) type Answer = (Bytes, Arc<str>);

type Replicas = PendingRequestsDiscover<Changes, CompleteOnResponse>;

/// A replica's key in the balancer: a number, as tower's ready cache clones
/// and hashes the key of the replica it picks on every call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct ReplicaId(u64);

/// A call taken by a replica: its answer, once it comes.
type Reply = <Balance<Replicas, Call> as Service<Call>>::Future;

/// tower's power-of-two-choices balancer, driven by the callers themselves:
/// each picks a replica under the lock, for the moment of the pick, and
/// awaits the reply outside it. No worker task stands between a caller and
/// the replica, so a call costs no hand-off to another task and back.
struct Balancer {
    balance: Mutex<Balance<Replicas, Call>>,
    /// Callers waiting for a ready replica.
    waiting: Arc<WakeAll>,
    /// The waker the balancer is polled with: wakes every waiting caller,
    /// since the balancer keeps one waker where many callers may wait.
    waker: Waker,
}

/// Wakes every caller waiting for the balancer.
struct WakeAll(Notify);

impl Wake for WakeAll {
    fn wake(self: Arc<Self>) {
        self.0.notify_waiters();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.notify_waiters();
    }
}

impl Balancer {
    fn new(replicas: Replicas) -> Balancer {
        let waiting = Arc::new(WakeAll(Notify::new()));
        Balancer {
            balance: Mutex::new(Balance::new(replicas)),
            waker: Waker::from(waiting.clone()),
            waiting,
        }
    }

    /// Hands `call` to a replica chosen by load, once one is ready.
    async fn dispatch(&self, call: Call) -> Result<Reply, tower::BoxError> {
        loop {
            // Made before looking, so a replica that becomes ready between
            // the look and the wait still wakes this caller.
            let readiness = self.waiting.0.notified();
            {
                let mut balance = lock(&self.balance);
                match balance.poll_ready(&mut Context::from_waker(&self.waker)) {
                    Poll::Ready(Ok(())) => return Ok(balance.call(call)),
                    Poll::Ready(Err(e)) => return Err(e),
                    Poll::Pending => {}
                }
            }
            readiness.await;
        }
    }
}

/// The balanced side of an [`RpcClient`] whose address names many replicas.
pub(crate) struct Balanced {
    config: ClientConfig,
    target: Target,
    /// Started on the first call, inside the caller's runtime.
    running: OnceCell<Running>,
    /// The latest reason replicas are missing, for callers that found none.
    problem: Arc<Mutex<Option<String>>>,
}

struct Running {
    balancer: Balancer,
    /// Retries allowed: a share of recent calls.
    budget: TpsBudget,
    /// Resolves the name again while the client lives.
    resolver: tokio::task::JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.resolver.abort();
    }
}

impl Balanced {
    pub(crate) fn new(config: ClientConfig, target: Target) -> Balanced {
        Balanced {
            config,
            target,
            running: OnceCell::new(),
            problem: Arc::default(),
        }
    }

    /// Runs one call (or sends one notification) on a replica chosen by
    /// load, within the call timeout, and again on another when the
    /// attempt provably did not run (or, for an `idempotent` call, failed
    /// without a reply), as far as `max_retries` and the budget allow.
    pub(crate) async fn call(
        &self,
        method: &str,
        params: &[u8],
        traceparent: Option<&str>,
        notify: bool,
        idempotent: bool,
    ) -> Result<Answer, Error> {
        let running = self.running.get_or_init(|| async { self.start() }).await;
        let deadline = self
            .config
            .timeout
            .map(|after| (tokio::time::Instant::now() + after, after));
        running.budget.deposit();
        let call = Call {
            method: method.into(),
            params: params.into(),
            traceparent: traceparent.map(Arc::from),
            notify,
        };
        let mut retries = 0;
        loop {
            let result = self.attempt(running, call.clone(), deadline).await;
            let Err(error) = &result else {
                return result;
            };
            let Some(reason) = retry_reason(error, idempotent) else {
                return result;
            };
            let late = deadline.is_some_and(|(at, _)| tokio::time::Instant::now() >= at);
            if retries >= self.config.max_retries || late {
                return result;
            }
            if !running.budget.withdraw() {
                tracing::debug!(error = %error, "retry budget spent; not retrying");
                return result;
            }
            retries += 1;
            tracing::debug!(error = %error, reason, retries, "retrying on another replica");
            crate::retried(&self.config, reason);
        }
    }

    /// One attempt, within what is left of the call's time.
    async fn attempt(
        &self,
        running: &Running,
        call: Call,
        deadline: Option<(tokio::time::Instant, Duration)>,
    ) -> Result<Answer, Error> {
        // Set once a replica took the call: past the deadline, a call that
        // never went out is told apart from one that got no answer in time.
        let mut dispatched = false;
        let outcome = async {
            let reply = running.balancer.dispatch(call).await?;
            dispatched = true;
            reply.await
        };
        let result = match deadline {
            Some((at, after)) => {
                let result = tokio::time::timeout_at(at, outcome).await;
                match result {
                    Ok(result) => result,
                    Err(_) if dispatched => {
                        return Err(Error::Timeout {
                            addr: self.config.addr.clone(),
                            after,
                        });
                    }
                    Err(_) => return Err(self.unavailable(after)),
                }
            }
            None => outcome.await,
        };
        result.map_err(|e| match e.downcast::<Error>() {
            Ok(e) => *e,
            Err(e) => Error::Unavailable {
                addr: self.config.addr.clone(),
                reason: e.to_string(),
            },
        })
    }

    /// No replica took the call within `after`.
    fn unavailable(&self, after: Duration) -> Error {
        let problem = lock(&self.problem).clone();
        Error::Unavailable {
            addr: self.config.addr.clone(),
            reason: match problem {
                Some(problem) => format!("no replica was ready within {after:?}; {problem}"),
                None => format!("no replica was ready within {after:?}"),
            },
        }
    }

    fn start(&self) -> Running {
        let (changes, receiver) = mpsc::unbounded_channel();
        let replicas =
            PendingRequestsDiscover::new::<Call>(Changes(receiver), CompleteOnResponse::default());
        let balancer = Balancer::new(replicas);
        let resolver = match &self.target {
            Target::Dns { host, port } => tokio::spawn(resolve(
                self.config.clone(),
                host.clone(),
                *port,
                changes,
                self.problem.clone(),
            )),
            fixed => {
                let list = match fixed {
                    Target::Static(list) => list.clone(),
                    _ => vec![self.config.addr.clone()],
                };
                // A replica listed twice is one replica.
                let mut started = HashSet::new();
                for addr in &list {
                    if !started.insert(addr.as_str()) {
                        continue;
                    }
                    let replica = Replica::start(&self.config, addr, None, self.problem.clone());
                    let id = ReplicaId(started.len() as u64);
                    let _ = changes.send(Change::Insert(id, replica));
                }
                tracing::debug!(replicas = started.len(), "fixed replica list");
                // Keeping the sender keeps the balancer's discovery open.
                tokio::spawn(async move { changes.closed().await })
            }
        };
        let budget = TpsBudget::new(Duration::from_secs(10), 10, self.config.retry_budget);
        Running {
            balancer,
            budget,
            resolver,
        }
    }
}

/// Why a failed attempt may go to another replica, if it may: it provably
/// did not run, or the caller said running it twice is harmless.
fn retry_reason(error: &Error, idempotent: bool) -> Option<&'static str> {
    match error {
        Error::Unsent { .. } | Error::Connect { .. } => Some("unsent"),
        Error::Busy { .. } => Some("busy"),
        Error::Draining { .. } => Some("draining"),
        Error::Transport { .. } if idempotent => Some("idempotent"),
        _ => None,
    }
}

/// Replicas added and removed, as tower's `Discover` wants them.
struct Changes(mpsc::UnboundedReceiver<Change<ReplicaId, Replica>>);

impl Stream for Changes {
    type Item = Result<Change<ReplicaId, Replica>, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|change| change.map(Ok))
    }
}

/// Resolves `host` again and again (at its TTL, at most `resolve_interval`
/// apart) and turns what changed into replicas added and removed. A failed
/// resolution keeps the replicas known so far.
async fn resolve(
    config: ClientConfig,
    host: String,
    port: u16,
    changes: mpsc::UnboundedSender<Change<ReplicaId, Replica>>,
    problem: Arc<Mutex<Option<String>>>,
) {
    let resolver = match resolver(config.dns_server) {
        Ok(resolver) => resolver,
        Err(e) => {
            *lock(&problem) = Some(format!("cannot set up DNS resolution: {e}"));
            tracing::warn!(error = %e, "cannot set up DNS resolution");
            return;
        }
    };
    let service = format!("{host}:{port}");
    let mut known: HashMap<String, ReplicaId> = HashMap::new();
    let mut last_id = 0;
    loop {
        // Every resolution asks the nameserver: its TTL, not the cache's, paces them.
        resolver.clear_cache();
        let pause = match resolver.lookup_ip(host.as_str()).await {
            Ok(lookup) => {
                let found: HashSet<String> = lookup
                    .iter()
                    .map(|ip| SocketAddr::new(ip, port).to_string())
                    .collect();
                known.retain(|addr, id| {
                    let stays = found.contains(addr);
                    if !stays {
                        tracing::info!(replica = %addr, name = %host, "replica left DNS");
                        let _ = changes.send(Change::Remove(*id));
                    }
                    stays
                });
                for new in found {
                    if known.contains_key(&new) {
                        continue;
                    }
                    tracing::info!(replica = %new, name = %host, "replica found in DNS");
                    let replica =
                        Replica::start(&config, &new, Some(service.as_str()), problem.clone());
                    last_id += 1;
                    let _ = changes.send(Change::Insert(ReplicaId(last_id), replica));
                    known.insert(new, ReplicaId(last_id));
                }
                resolved(&config, true);
                let ttl = lookup
                    .valid_until()
                    .saturating_duration_since(Instant::now());
                ttl.min(config.resolve_interval).max(MIN_RESOLVE_PAUSE)
            }
            Err(e) => {
                resolved(&config, false);
                *lock(&problem) = Some(format!("cannot resolve {host}: {e}"));
                tracing::warn!(name = %host, error = %e, "cannot resolve; keeping the replicas known");
                config
                    .resolve_interval
                    .clamp(MIN_RESOLVE_PAUSE, Duration::from_secs(5))
            }
        };
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = changes.closed() => return,
        }
    }
}

/// A resolver of A and AAAA records asking `server`, or the system's
/// nameservers without one; `arrpc-host` resolves handlers' HTTP hosts
/// with it too.
pub fn resolver(
    server: Option<SocketAddr>,
) -> Result<TokioResolver, hickory_resolver::net::NetError> {
    let mut builder = match server {
        Some(server) => {
            let mut nameserver = NameServerConfig::udp_and_tcp(server.ip());
            for connection in &mut nameserver.connections {
                connection.port = server.port();
            }
            TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(vec![nameserver]),
                TokioRuntimeProvider::default(),
            )
        }
        None => TokioResolver::builder_tokio()?,
    };
    builder.options_mut().ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    builder.build()
}

/// One replica as the balancer sees it: ready while its connections are up.
pub(crate) struct Replica {
    shared: Arc<ReplicaShared>,
}

struct ReplicaShared {
    addr: Arc<str>,
    /// The client's settings, for its metrics.
    config: ClientConfig,
    /// The replica's connections; calls take them in turn.
    connections: Vec<RpcClient>,
    next: AtomicUsize,
    health: Arc<Health>,
}

impl Drop for ReplicaShared {
    fn drop(&mut self) {
        // The keeper waits for news; this is the last.
        self.health.changed.notify_one();
    }
}

/// Whether a replica takes calls, and who to tell when that changes.
struct Health {
    state: Mutex<HealthState>,
    /// Whether `state` is `Up`, read without the lock on every pick.
    up: AtomicBool,
    /// The balancer, waiting for this replica to become ready.
    ready: AtomicWaker,
    /// The keeper, waiting for a failure to mend.
    changed: Notify,
}

struct HealthState {
    state: State,
    /// Failures since the last success.
    failures: u32,
}

/// A replica's state, as counted in the client's metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    /// Opening connections; takes no calls yet.
    Connecting,
    /// Takes calls.
    Up,
    /// Failed too often in a row; takes no calls until its pause is over.
    Ejected,
}

impl Health {
    fn set(&self, config: &ClientConfig, state: State) {
        let mut health = lock(&self.state);
        if health.state != state {
            moved(config, Some(health.state), Some(state));
            health.state = state;
            self.up.store(state == State::Up, Ordering::Release);
        }
        if state == State::Up {
            health.failures = 0;
        }
        drop(health);
        self.ready.wake();
    }

    /// Counts a failure; the number of failures in a row.
    fn fail(&self) -> u32 {
        let mut health = lock(&self.state);
        health.failures += 1;
        health.failures
    }
}

impl Replica {
    /// A replica at `addr` (`ip:port`), verified under TLS as `service` when
    /// given (the name it was found under) and as `addr` otherwise; its keeper
    /// starts opening connections at once.
    fn start(
        config: &ClientConfig,
        addr: &str,
        service: Option<&str>,
        problem: Arc<Mutex<Option<String>>>,
    ) -> Replica {
        let mut own = config.clone();
        own.addr = addr.to_owned();
        own.connect_attempts = 1;
        own.timeout = None;
        if let (Some(tls), Some(service)) = (own.tls.as_mut(), service)
            && tls.server_name.is_none()
        {
            tls.server_name = Some(crate::tls::host_of(service).to_owned());
        }
        let health = Arc::new(Health {
            state: Mutex::new(HealthState {
                state: State::Connecting,
                failures: 0,
            }),
            up: AtomicBool::new(false),
            ready: AtomicWaker::new(),
            changed: Notify::new(),
        });
        moved(config, None, Some(State::Connecting));
        let shared = Arc::new(ReplicaShared {
            addr: addr.into(),
            config: config.clone(),
            connections: (0..config.connections_per_replica.max(1))
                .map(|_| RpcClient::single(own.clone()))
                .collect(),
            next: AtomicUsize::new(0),
            health: health.clone(),
        });
        tokio::spawn(keep(
            Arc::downgrade(&shared),
            health,
            config.clone(),
            problem,
        ));
        Replica { shared }
    }
}

/// Opens a replica's connections, reopens them after a failure, and ejects
/// the replica for a doubling pause after `eject_after` failures in a row.
/// Ends when the replica is gone.
async fn keep(
    replica: Weak<ReplicaShared>,
    health: Arc<Health>,
    config: ClientConfig,
    problem: Arc<Mutex<Option<String>>>,
) {
    let mut ejection = config.eject_backoff;
    loop {
        let Some(shared) = replica.upgrade() else {
            break;
        };
        let mut opened = Ok(());
        for connection in &shared.connections {
            if let Err(e) = connection.link().await {
                opened = Err(e);
                break;
            }
        }
        let addr = shared.addr.clone();
        drop(shared);
        match opened {
            Ok(()) => {
                if lock(&health.state).state == State::Ejected {
                    tracing::info!(replica = %addr, "replica re-admitted");
                }
                health.set(&config, State::Up);
                ejection = config.eject_backoff;
                health.changed.notified().await;
            }
            Err(e) => {
                let failures = health.fail();
                *lock(&problem) = Some(format!("{addr}: {e}"));
                if failures >= config.eject_after.max(1) {
                    if lock(&health.state).state != State::Ejected {
                        ejected(&config);
                    }
                    tracing::warn!(replica = %addr, failures, pause = ?ejection, error = %e, "replica ejected");
                    health.set(&config, State::Ejected);
                    tokio::time::sleep(ejection).await;
                    ejection = ejection.saturating_mul(2).min(MAX_EJECTION);
                } else {
                    health.set(&config, State::Connecting);
                    tokio::time::sleep(RECONNECT_PAUSE).await;
                }
            }
        }
    }
    let state = lock(&health.state).state;
    moved(&config, Some(state), None);
}

impl Service<Call> for Replica {
    type Response = Answer;
    type Error = Error;
    type Future = BoxFuture<'static, Result<Answer, Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let health = &self.shared.health;
        health.ready.register(cx.waker());
        if health.up.load(Ordering::Acquire) {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    fn call(&mut self, call: Call) -> Self::Future {
        let shared = self.shared.clone();
        Box::pin(async move {
            let turn = shared.next.fetch_add(1, Ordering::Relaxed) % shared.connections.len();
            let connection = &shared.connections[turn];
            let result = if call.notify {
                let notified = connection.notify_once(&call.method, &call.params).await;
                notified.map(|()| Bytes::new())
            } else {
                let traceparent = call.traceparent.as_deref();
                connection
                    .call_once(&call.method, &call.params, traceparent)
                    .await
            };
            let draining = matches!(result, Err(Error::Draining { .. }));
            if draining
                || matches!(
                    result,
                    Err(Error::Transport { .. } | Error::Connect { .. } | Error::Unsent { .. })
                )
            {
                // The connection broke, or the host is going away: take no
                // calls until a new connection is open.
                let was_up = {
                    let mut health = lock(&shared.health.state);
                    let was_up = health.state == State::Up;
                    if was_up {
                        health.state = State::Connecting;
                        shared.health.up.store(false, Ordering::Release);
                    }
                    was_up
                };
                if was_up {
                    moved(&shared.config, Some(State::Up), Some(State::Connecting));
                    if draining {
                        tracing::info!(replica = %shared.addr, "replica is shutting down");
                        for connection in &shared.connections {
                            connection.reconnect().await;
                        }
                    }
                }
                shared.health.changed.notify_one();
            }
            result.map(|reply| (reply, shared.addr.clone()))
        })
    }
}

/// Records a replica's move between states (`None`: not there), when
/// metrics are on.
fn moved(config: &ClientConfig, from: Option<State>, to: Option<State>) {
    #[cfg(feature = "metrics")]
    if let Some(metrics) = &config.metrics {
        metrics.endpoint_moved(from, to);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (config, from, to);
}

fn ejected(config: &ClientConfig) {
    #[cfg(feature = "metrics")]
    if let Some(metrics) = &config.metrics {
        metrics.ejected();
    }
    #[cfg(not(feature = "metrics"))]
    let _ = config;
}

fn resolved(config: &ClientConfig, ok: bool) {
    #[cfg(feature = "metrics")]
    if let Some(metrics) = &config.metrics {
        metrics.resolved(ok);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (config, ok);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_name_one_server_a_list_or_a_dns_name() {
        assert_eq!(Target::parse("127.0.0.1:7400"), Ok(Target::One));
        assert_eq!(
            Target::parse("10.0.0.5:7400, 10.0.0.6:7400"),
            Ok(Target::Static(vec![
                "10.0.0.5:7400".to_owned(),
                "10.0.0.6:7400".to_owned()
            ]))
        );
        assert_eq!(
            Target::parse("dns://arrpc-host.shop.svc.cluster.local:7400"),
            Ok(Target::Dns {
                host: "arrpc-host.shop.svc.cluster.local".to_owned(),
                port: 7400
            })
        );
    }

    #[test]
    fn bad_addresses_say_what_is_wrong() {
        assert!(Target::parse("dns://name").unwrap_err().contains("port"));
        assert!(
            Target::parse("dns://:7400")
                .unwrap_err()
                .contains("DNS name")
        );
        assert!(
            Target::parse("dns://name:port")
                .unwrap_err()
                .contains("port number")
        );
        assert!(Target::parse("a:1,b").unwrap_err().contains("\"b\""));
        assert!(Target::parse(",,").unwrap_err().contains("no replica"));
    }

    /// One error of each kind, named as the docs name it.
    fn one_of_each() -> Vec<Error> {
        let addr = || "10.0.0.5:7400".to_owned();
        let reason = || "why".to_owned();
        vec![
            Error::Connect {
                addr: addr(),
                attempts: 5,
                source: std::io::ErrorKind::ConnectionRefused.into(),
            },
            Error::Timeout {
                addr: addr(),
                after: Duration::from_secs(30),
            },
            Error::Tls {
                addr: addr(),
                source: crate::tls::HandshakeError::Expired {
                    not_after: "2020-01-01".into(),
                },
            },
            Error::Auth(reason()),
            Error::Rpc(reason()),
            Error::Transport {
                addr: addr(),
                source: std::io::Error::from(std::io::ErrorKind::ConnectionReset).into(),
            },
            Error::Encode(rmp_serde::encode::Error::UnknownLength),
            Error::Decode(rmp_serde::from_slice::<u8>(&[0xc0]).unwrap_err()),
            Error::Address {
                addr: addr(),
                reason: reason(),
            },
            Error::Unavailable {
                addr: addr(),
                reason: reason(),
            },
            Error::Unsent {
                addr: addr(),
                reason: reason(),
            },
            Error::Busy {
                addr: addr(),
                reason: reason(),
            },
            Error::Draining { addr: addr() },
            Error::Random(reason()),
        ]
    }

    /// The variant's name; a new variant fails to compile here, so whoever
    /// adds one decides whether the retry table in the docs lists it.
    fn name(error: &Error) -> &'static str {
        match error {
            Error::Connect { .. } => "Connect",
            Error::Timeout { .. } => "Timeout",
            Error::Tls { .. } => "Tls",
            Error::Auth(_) => "Auth",
            Error::Rpc(_) => "Rpc",
            Error::Transport { .. } => "Transport",
            Error::Encode(_) => "Encode",
            Error::Decode(_) => "Decode",
            Error::Address { .. } => "Address",
            Error::Unavailable { .. } => "Unavailable",
            Error::Unsent { .. } => "Unsent",
            Error::Busy { .. } => "Busy",
            Error::Draining { .. } => "Draining",
            Error::Random(_) => "Random",
        }
    }

    /// A row of the table: the errors it names, whether they may have run,
    /// and whether they are sent again without and with `idempotent()`.
    struct Row {
        errors: Vec<String>,
        may_have_run: bool,
        retried: (bool, bool),
        text: String,
    }

    /// The rows of the table under "Which failures are retried" in
    /// docs/scale-out.md.
    fn retry_table() -> Vec<Row> {
        let doc = include_str!("../../../docs/scale-out.md");
        let (_, section) = doc
            .split_once("## Which failures are retried")
            .expect("docs/scale-out.md has the section");
        let rows: Vec<Row> = section
            .lines()
            .skip_while(|line| !line.starts_with('|'))
            .take_while(|line| line.starts_with('|'))
            // The header and the separator.
            .skip(2)
            .map(|line| {
                let cells: Vec<&str> = line.split('|').map(str::trim).collect();
                let [_, _, errors, may_have_run, retried, _] = cells[..] else {
                    panic!("not a row of four cells: {line}");
                };
                let yes_or_no = |cell: &str| match cell.trim_matches('*') {
                    c if c.starts_with("yes") => true,
                    c if c.starts_with("no") => false,
                    _ => panic!("neither yes nor no: {line}"),
                };
                let retried = if retried == "only if the call is idempotent" {
                    (false, true)
                } else {
                    let yes = yes_or_no(retried);
                    (yes, yes)
                };
                Row {
                    errors: errors
                        .split('`')
                        .skip(1)
                        .step_by(2)
                        .map(String::from)
                        .collect(),
                    may_have_run: yes_or_no(may_have_run),
                    retried,
                    text: line.to_owned(),
                }
            })
            .collect();
        assert!(!rows.is_empty(), "no table under the section");
        rows
    }

    /// The `reason` values docs/scale-out.md lists for
    /// `arrpc_client_retries_total`.
    fn retry_reasons() -> Vec<&'static str> {
        let doc = include_str!("../../../docs/scale-out.md");
        let row = doc
            .lines()
            .find(|line| line.starts_with("| `arrpc_client_retries_total`"))
            .expect("docs/scale-out.md lists the retries metric");
        // The metric's name, `reason`, then the values.
        row.split('`').skip(5).step_by(2).collect()
    }

    /// The table of docs/scale-out.md is what `may_have_run` and
    /// `retry_reason` do, row by row, and it lists every error that can
    /// come from a replica; those it leaves out arise in the client alone.
    #[test]
    fn retries_follow_the_table_in_the_scale_out_doc() {
        let rows = retry_table();
        let mut listed = Vec::new();
        for error in one_of_each() {
            let name = name(&error);
            let Some(row) = rows.iter().find(|row| row.errors.iter().any(|e| e == name)) else {
                continue;
            };
            listed.push(name);
            let text = &row.text;
            assert_eq!(error.may_have_run(), row.may_have_run, "{name}: {text}");
            let retried = (
                retry_reason(&error, false).is_some(),
                retry_reason(&error, true).is_some(),
            );
            assert_eq!(retried, row.retried, "{name} (plain, idempotent): {text}");
            if let Some(reason) = retry_reason(&error, true) {
                assert!(
                    retry_reasons().contains(&reason),
                    "{name}: retries counted as {reason}, which the client metrics table does not list"
                );
            }
        }
        let named: usize = rows.iter().map(|row| row.errors.len()).sum();
        assert_eq!(named, listed.len(), "the table names an unknown error");
        listed.sort_unstable();
        assert_eq!(
            listed,
            [
                "Auth",
                "Busy",
                "Connect",
                "Draining",
                "Rpc",
                "Timeout",
                "Tls",
                "Transport",
                "Unavailable",
                "Unsent"
            ]
        );
    }
}
