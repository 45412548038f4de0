//! Client for arrpc servers: `arrpc-host` and the Python `arrpc.Server`.
//!
//! A [`Client`] holds one connection, opened on first use and reopened when
//! the server dropped it. Each [`Client::send`] writes one MessagePack
//! message (signed when a secret is set) and reads one reply; the Python
//! arrpc package's error strings come back as typed [`Error`]s. [`RpcClient`]
//! calls named handlers over MessagePack-RPC, many calls at once on one
//! connection, or balanced over the replicas behind a list or a `dns://` name
//! (see [`balance`]). [`ClientConfig::tls`] talks TLS (see [`tls`]).
//!
//! A call can carry the caller's W3C `traceparent` ([`Client::send_raw_traced`],
//! [`RpcClient::call_raw_traced`]) in a trace envelope, which `arrpc-host`
//! continues; the Python arrpc package's server does not know trace envelopes.
//! With the cargo feature `metrics`, calls are measured into a
//! `prometheus-client` registry (`ClientMetrics`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), arrpc_client::Error> {
//! let mut client = arrpc_client::Client::new(arrpc_client::ClientConfig::new("127.0.0.1:8080"));
//! let reply: String = client.send(&std::collections::HashMap::from([("foo", "bar")])).await?;
//! # Ok(()) }
//! ```

pub mod balance;
mod blocking;
#[cfg(feature = "metrics")]
mod metrics;
mod rpc;
#[cfg(feature = "spiffe")]
pub mod spiffe;
pub mod tls;

use std::borrow::Cow;
use std::time::{Duration, Instant};

use arrpc_wire::{Connection, ErrorKind, ReadError, envelope, reply, trace};
use bytes::Bytes;
use serde::{Serialize, de::DeserializeOwned};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

pub use blocking::{BlockingClient, BlockingRpcClient};
#[cfg(feature = "metrics")]
pub use metrics::ClientMetrics;
pub use rpc::RpcClient;
pub use tls::Tls;

/// Any byte stream a client can talk over (plain TCP, or TLS over TCP).
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// How a [`Client`] connects and behaves. Defaults follow the Python arrpc
/// package's client where it has one: five connection attempts with a growing
/// pause between them.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// `host:port` of the server. [`RpcClient`] also takes a list of
    /// replicas (`a:7400,b:7400`) or a DNS name whose every A/AAAA record is
    /// a replica (`dns://name:7400`) and balances calls over them.
    pub addr: String,
    /// Connection attempts before giving up (at least one is made).
    pub connect_attempts: u32,
    /// Pause after the first failed attempt; doubled after each further one.
    pub backoff: Duration,
    /// Limit on one connection attempt.
    pub connect_timeout: Duration,
    /// Limit on one request, from writing it to reading its whole reply;
    /// over replicas, on the whole call, retries included.
    pub timeout: Option<Duration>,
    /// Sign every message with this secret (the Python arrpc package's
    /// `auth_secret`).
    pub auth_secret: Option<Vec<u8>>,
    /// Largest reply accepted, in bytes.
    pub max_reply: usize,
    /// Talk TLS to the server (the Python arrpc package's `tls_cafile`).
    pub tls: Option<Tls>,
    /// With `auth_secret`: stamp each envelope with the time and a fresh
    /// nonce, for servers that enforce replay protection (not the Python arrpc
    /// package).
    pub replay_protection: bool,
    /// Where calls are measured; clones of one [`ClientMetrics`] share it.
    #[cfg(feature = "metrics")]
    pub metrics: Option<ClientMetrics>,
    /// Connections kept open to each replica of a list or a DNS name.
    pub connections_per_replica: usize,
    /// Longest time between two resolutions of a `dns://` name; a shorter
    /// TTL in the answer resolves it sooner.
    pub resolve_interval: Duration,
    /// Ask this nameserver about `dns://` names instead of the system's.
    pub dns_server: Option<std::net::SocketAddr>,
    /// Failures in a row (connections refused or broken) that eject a
    /// replica from the balancer.
    pub eject_after: u32,
    /// Retries of one call on another replica, for calls that provably did
    /// not run (never sent, refused as busy or by a draining host) or, with
    /// [`RpcClient::idempotent`], that failed in any way but a reply.
    pub max_retries: u32,
    /// Share of calls that may be retries, on top of 10 a second: a sick
    /// cluster is not hammered.
    pub retry_budget: f32,
    /// How long an ejected replica is left alone before it is tried again;
    /// doubled each time it fails again, up to a minute.
    pub eject_backoff: Duration,
}

impl ClientConfig {
    pub fn new(addr: impl Into<String>) -> Self {
        ClientConfig {
            addr: addr.into(),
            connect_attempts: 5,
            backoff: Duration::from_millis(200),
            connect_timeout: Duration::from_secs(5),
            timeout: Some(Duration::from_secs(30)),
            auth_secret: None,
            max_reply: 64 << 20,
            tls: None,
            replay_protection: false,
            #[cfg(feature = "metrics")]
            metrics: None,
            connections_per_replica: 2,
            resolve_interval: Duration::from_secs(30),
            dns_server: None,
            eject_after: 3,
            max_retries: 3,
            retry_budget: 0.1,
            eject_backoff: Duration::from_secs(1),
        }
    }
}

/// What went wrong with a request; mirrors the Python arrpc package's
/// exceptions. Where a lower-level error caused it, that is its
/// [`source`](std::error::Error::source), not part of its text, so a chain
/// printer (anyhow's `{:#}`) shows it once.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No connection could be made (the Python arrpc package's
    /// `ConnectException`).
    #[error("failed to connect to {addr} after {attempts} attempts")]
    Connect {
        addr: String,
        attempts: u32,
        source: std::io::Error,
    },
    /// The request did not finish in time (`RpcTimeoutException` in the Python
    /// arrpc package).
    #[error("request to {addr} timed out after {after:?}")]
    Timeout { addr: String, after: Duration },
    /// The TLS handshake failed or timed out, or the server refused the
    /// client's certificate just after it; not retried, since another
    /// attempt would meet the same certificates.
    #[error("TLS handshake with {addr} failed")]
    Tls {
        addr: String,
        source: tls::HandshakeError,
    },
    /// The server refused the signature (the Python arrpc package's
    /// `AuthException`).
    #[error("authentication failed: {0}")]
    Auth(String),
    /// The server or its handler reported an error (the Python arrpc package's
    /// `RpcException`).
    #[error("remote error: {0}")]
    Rpc(String),
    /// The connection failed mid-request or the reply was not MessagePack.
    #[error("connection to {addr} failed")]
    Transport { addr: String, source: ReadError },
    /// The message could not be encoded as MessagePack.
    #[error("cannot encode message")]
    Encode(#[from] rmp_serde::encode::Error),
    /// The reply did not have the type asked for.
    #[error("cannot decode reply: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    /// The address names no server, or names replicas (a list or a
    /// `dns://` name) where one server is needed.
    #[error("bad address {addr:?}: {reason}")]
    Address { addr: String, reason: String },
    /// No replica behind the address took the call in time (none known, all
    /// connecting or ejected); the call was never sent.
    #[error("no replica of {addr} available: {reason}")]
    Unavailable { addr: String, reason: String },
    /// The call never left this client: its connection closed first.
    #[error("call to {addr} was not sent: {reason}")]
    Unsent { addr: String, reason: String },
    /// The handler had no free instance and refused the call without
    /// running it.
    #[error("{addr} refused the call: {reason}")]
    Busy { addr: String, reason: String },
    /// The host is shutting down and refused the call without running it.
    #[error("{addr} is shutting down and did not run the call")]
    Draining { addr: String },
    /// The system offered no random bytes for a replay-protection nonce.
    #[error("cannot draw a random nonce: {0}")]
    Random(String),
}

impl Error {
    /// Whether the call may have run on the server. `false` only when it
    /// provably did not: it was never sent, or the server refused it before
    /// running it (busy, draining, a refused signature or certificate).
    /// When it is `true`, sending the call again may run it twice.
    pub fn may_have_run(&self) -> bool {
        !matches!(
            self,
            Error::Connect { .. }
                | Error::Tls { .. }
                | Error::Auth(_)
                | Error::Encode(_)
                | Error::Address { .. }
                | Error::Unavailable { .. }
                | Error::Unsent { .. }
                | Error::Busy { .. }
                | Error::Draining { .. }
                | Error::Random(_)
        )
    }
}

/// A connection to one arrpc server.
pub struct Client {
    config: ClientConfig,
    conn: Option<Connection<Box<dyn Io>>>,
    /// Set while a TLS handshake runs, so a request timeout that cuts it
    /// short is reported as the handshake's: a server that does not speak
    /// TLS often just waits for more of what it takes for a message.
    handshaking: bool,
}

impl Client {
    /// A client for `config`; nothing is connected until the first request.
    pub fn new(config: ClientConfig) -> Self {
        Client {
            config,
            conn: None,
            handshaking: false,
        }
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Sends `message` and decodes the reply as `R`.
    pub async fn send<T: Serialize + ?Sized, R: DeserializeOwned>(
        &mut self,
        message: &T,
    ) -> Result<R, Error> {
        let bytes = rmp_serde::to_vec_named(message)?;
        let reply = self.send_raw(&bytes).await?;
        Ok(rmp_serde::from_slice(&reply)?)
    }

    /// Sends one MessagePack value as is and returns the reply's bytes.
    ///
    /// An error string of the Python arrpc package in the reply becomes
    /// [`Error::Rpc`] or [`Error::Auth`].
    pub async fn send_raw(&mut self, message: &[u8]) -> Result<Bytes, Error> {
        let started = Instant::now();
        let result = self.send_frame(message).await;
        record(&self.config, "", started, &result);
        result
    }

    /// Like [`Client::send_raw`], with the caller's W3C `traceparent`
    /// (`00-<trace id>-<span id>-<flags>`) in a trace envelope, so the
    /// host's span for the message continues the caller's trace.
    pub async fn send_raw_traced(
        &mut self,
        message: &[u8],
        traceparent: &str,
    ) -> Result<Bytes, Error> {
        self.send_raw(&trace::wrap(traceparent, message)).await
    }

    async fn send_frame(&mut self, message: &[u8]) -> Result<Bytes, Error> {
        if let Err(reason) = one_server(&self.config.addr) {
            return Err(Error::Address {
                addr: self.config.addr.clone(),
                reason,
            });
        }
        let sealed = seal(&self.config, message)?;
        let message = &sealed[..];
        let reply = match self.config.timeout {
            Some(after) => tokio::time::timeout(after, self.round_trip(message))
                .await
                .map_err(|_| {
                    // The reply may still arrive; it must not answer the next request.
                    self.conn = None;
                    let addr = self.config.addr.clone();
                    if std::mem::take(&mut self.handshaking) {
                        Error::Tls {
                            addr,
                            source: tls::HandshakeError::TimedOut(after),
                        }
                    } else {
                        Error::Timeout { addr, after }
                    }
                })??,
            None => self.round_trip(message).await?,
        };
        match reply::parse_error(&reply) {
            Some(e) if e.kind == ErrorKind::Auth => Err(Error::Auth(e.reason)),
            Some(e) => Err(remote(&self.config.addr, e.reason)),
            None => Ok(reply),
        }
    }

    /// Writes one message and reads one reply, reconnecting once when a
    /// reused connection turns out to have been closed by the server (for
    /// example after its idle timeout).
    async fn round_trip(&mut self, message: &[u8]) -> Result<Bytes, Error> {
        let reused = self.conn.is_some();
        match self.try_round_trip(message).await {
            Err(Error::Transport { source, .. }) if reused && closed_by_peer(&source) => {
                retried(&self.config, "reconnect");
                self.conn = None;
                self.try_round_trip(message).await
            }
            other => other,
        }
    }

    async fn try_round_trip(&mut self, message: &[u8]) -> Result<Bytes, Error> {
        if self.conn.is_none() {
            let stream = connect(&self.config).await?;
            self.handshaking = self.config.tls.is_some();
            let stream = secure(&self.config, stream).await;
            self.handshaking = false;
            self.conn = Some(Connection::new(stream?, self.config.max_reply));
        }
        let tls = self.config.tls.as_ref();
        let conn = self.conn.as_mut().expect("connected above");
        let result = async {
            conn.write_message(message).await?;
            conn.flush().await?;
            match conn.read_message().await? {
                Some(reply) => Ok(reply),
                None => Err(ReadError::Io(std::io::ErrorKind::UnexpectedEof.into())),
            }
        }
        .await;
        result.map_err(|e| {
            self.conn = None;
            let addr = self.config.addr.clone();
            match refusal(tls, &e) {
                Some(source) => Error::Tls { addr, source },
                None => Error::Transport { addr, source: e },
            }
        })
    }
}

/// Whether `addr` names one server, as bare messages need: they carry no
/// id, so one connection serves one message at a time and cannot be
/// balanced call by call.
fn one_server(addr: &str) -> Result<(), String> {
    match balance::Target::parse(addr)? {
        balance::Target::One => Ok(()),
        _ => Err(
            "a list of replicas or a dns:// name needs MessagePack-RPC calls (RpcClient, \
                  or `send --handler`)"
                .to_owned(),
        ),
    }
}

/// A server's error `text` as an [`Error`]: a refusal of a call it did not
/// run (busy, draining), or the handler's error.
fn remote(addr: &str, text: String) -> Error {
    if text == reply::DRAINING {
        return Error::Draining {
            addr: addr.to_owned(),
        };
    }
    if text.starts_with("handler `") && text.contains("` is busy: ") {
        return Error::Busy {
            addr: addr.to_owned(),
            reason: text,
        };
    }
    Error::Rpc(text)
}

/// Connects, with TLS when configured.
async fn open(config: &ClientConfig) -> Result<Box<dyn Io>, Error> {
    secure(config, connect(config).await?).await
}

/// Connects with retries and a doubling pause, as the Python arrpc package
/// does.
async fn connect(config: &ClientConfig) -> Result<TcpStream, Error> {
    let attempts = config.connect_attempts.max(1);
    let mut pause = config.backoff;
    let mut last = None;
    for attempt in 1..=attempts {
        let result = tokio::time::timeout(config.connect_timeout, TcpStream::connect(&config.addr))
            .await
            .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()));
        match result {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) => {
                tracing::debug!(addr = %config.addr, attempt, error = %e, "connect failed");
                last = Some(e);
            }
        }
        if attempt < attempts {
            retried(config, "connect");
            tokio::time::sleep(pause).await;
            pause = pause.saturating_mul(2);
        }
    }
    Err(Error::Connect {
        addr: config.addr.clone(),
        attempts,
        source: last.expect("at least one attempt was made"),
    })
}

/// `message` as it goes on the wire: signed into an envelope when a secret
/// is set (stamped when replay protection is on), else as it is.
fn seal<'a>(config: &ClientConfig, message: &'a [u8]) -> Result<Cow<'a, [u8]>, Error> {
    let Some(secret) = &config.auth_secret else {
        return Ok(Cow::Borrowed(message));
    };
    if !config.replay_protection {
        return Ok(Cow::Owned(envelope::sign(secret, message)));
    }
    let mut nonce = [0u8; 16];
    getrandom::fill(&mut nonce).map_err(|e| Error::Random(e.to_string()))?;
    let timestamp_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64);
    let stamp = envelope::Stamp {
        timestamp_ms,
        nonce: &nonce,
    };
    Ok(Cow::Owned(envelope::sign_stamped(secret, message, stamp)))
}

/// `stream` after the TLS handshake when TLS is configured, within the
/// connect timeout; not retried, since a refused certificate will be
/// refused again.
async fn secure(config: &ClientConfig, stream: TcpStream) -> Result<Box<dyn Io>, Error> {
    let Some(tls) = &config.tls else {
        return Ok(Box::new(stream));
    };
    let secured = tokio::time::timeout(config.connect_timeout, tls.connect(&config.addr, stream))
        .await
        .unwrap_or(Err(tls::HandshakeError::TimedOut(config.connect_timeout)))
        .map_err(|source| Error::Tls {
            addr: config.addr.clone(),
            source,
        })?;
    Ok(Box::new(secured))
}

/// The server's refusal of this client's TLS settings, when that is why
/// reading or writing failed: a TLS 1.3 server checks the client's
/// certificate after the client has finished its side of the handshake.
fn refusal(tls: Option<&Tls>, error: &ReadError) -> Option<tls::HandshakeError> {
    match error {
        ReadError::Io(io) => tls?.refusal(io),
        _ => None,
    }
}

/// Whether a failure means the server had already closed the connection
/// before this request reached it.
fn closed_by_peer(e: &ReadError) -> bool {
    use std::io::ErrorKind::*;
    matches!(e, ReadError::Io(io) if matches!(io.kind(), UnexpectedEof | ConnectionReset | BrokenPipe))
}

/// Records one finished request in the caller's metrics, when enabled.
fn record<T>(config: &ClientConfig, method: &str, started: Instant, result: &Result<T, Error>) {
    #[cfg(feature = "metrics")]
    if let Some(metrics) = &config.metrics {
        metrics.observe(method, started.elapsed(), result.as_ref().err());
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (config, method, started, result);
}

/// Counts a retry for `reason` in the caller's metrics, when enabled.
fn retried(config: &ClientConfig, reason: &'static str) {
    #[cfg(feature = "metrics")]
    if let Some(metrics) = &config.metrics {
        metrics.retry(reason);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (config, reason);
}

/// Locks `mutex`, also after a panic elsewhere left it poisoned: what it
/// guards stays consistent between statements, so the client goes on.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
