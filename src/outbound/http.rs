//! Guests' HTTP requests (`wasi:http/outgoing-handler`): checked against
//! the handler's allow list, sent over its pool of kept-alive connections,
//! and held to the message's deadline.
//!
//! wasmtime-wasi-http's own sender resolves names inside its connect, with
//! no way to check the addresses, and opens a connection per request. This
//! one resolves with the host's resolver, connects only to addresses that
//! pass [`address::check`](super::address::check), and keeps connections
//! open per handler, so a fresh instance per message does not pay a TCP
//! and TLS handshake per message.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hickory_resolver::TokioResolver;
use http::{HeaderValue, Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;
use tracing::Instrument;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use super::{HandlerOutbound, Outbound, address, capped};
use crate::config::{OutboundHost, OutboundScheme, Target};
use crate::telemetry::otel;

/// What a pending outbound response resolves to.
type Sent = Result<
    (
        Response<WasiBody>,
        Box<dyn Future<Output = Result<(), Error>> + Send>,
    ),
    Error,
>;

/// One handler's HTTP connection pool.
pub(super) struct Client {
    pool: hyper_util::client::legacy::Client<Connector, WasiBody>,
    max_response_bytes: usize,
}

impl Client {
    pub(super) fn new(
        shared: Arc<Outbound>,
        entries: Arc<[OutboundHost]>,
        resolver: TokioResolver,
        tls: Option<arrpc_client::Tls>,
    ) -> Client {
        let max_response_bytes = shared.config.max_response_bytes;
        let pool = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_idle_timeout(shared.config.pool_idle_timeout)
            .pool_timer(TokioTimer::new())
            .build(Connector {
                entries,
                resolver,
                tls,
            });
        Client {
            pool,
            max_response_bytes,
        }
    }
}

tokio::task_local! {
    /// The request being sent, for the connector: the pool asks it for a
    /// connection with nothing but the URI.
    static SENDING: Arc<Sending>;
}

/// A request on its way: how long its connection may take, and since when
/// its first-byte timeout runs, which starts over once a new connection is
/// made.
struct Sending {
    connect: Duration,
    first_byte: Duration,
    phase: Mutex<Phase>,
}

#[derive(Clone, Copy)]
enum Phase {
    /// The connector is making a connection; its own timeout applies.
    Connecting,
    /// Waiting for response headers since this instant.
    Waiting(Instant),
}

impl Sending {
    fn set(&self, phase: Phase) {
        *self.phase.lock().unwrap_or_else(|e| e.into_inner()) = phase;
    }

    /// Sends `request` on `pool`; a timeout error when the response
    /// headers take longer than the first-byte timeout, not counting the
    /// time spent making a connection.
    async fn send(
        self: Arc<Sending>,
        pool: &hyper_util::client::legacy::Client<Connector, WasiBody>,
        request: Request<WasiBody>,
    ) -> Result<Response<hyper::body::Incoming>, Failure> {
        let sent = SENDING.scope(self.clone(), pool.request(request));
        let mut sent = std::pin::pin!(sent);
        loop {
            let phase = *self.phase.lock().unwrap_or_else(|e| e.into_inner());
            let wake = match phase {
                Phase::Connecting => Instant::now() + self.connect,
                Phase::Waiting(since) => since + self.first_byte,
            };
            tokio::select! {
                sent = &mut sent => return sent.map_err(Failure::Client),
                () = tokio::time::sleep_until(wake.into()) => {
                    let phase = *self.phase.lock().unwrap_or_else(|e| e.into_inner());
                    if let Phase::Waiting(since) = phase
                        && since.elapsed() >= self.first_byte
                    {
                        return Err(Failure::FirstByte);
                    }
                }
            }
        }
    }
}

/// Why no response came.
enum Failure {
    Client(hyper_util::client::legacy::Error),
    FirstByte,
}

/// The `wasi:http` hooks of one store: its handler's rights, and the
/// deadline and trace of the message being handled.
pub struct HttpHooks {
    outbound: Arc<HandlerOutbound>,
    pub deadline: Instant,
    /// The caller's W3C `traceparent`, continued on each request.
    pub traceparent: Option<Arc<str>>,
}

impl HttpHooks {
    pub fn new(outbound: Arc<HandlerOutbound>) -> HttpHooks {
        HttpHooks {
            outbound,
            deadline: Instant::now(),
            traceparent: None,
        }
    }
}

impl WasiHttpHooks for HttpHooks {
    fn send_request(
        &mut self,
        request: Request<WasiBody>,
        options: Option<RequestOptions>,
        _body_sent: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<dyn Future<Output = Sent> + Send> {
        let outbound = self.outbound.clone();
        let deadline = self.deadline;
        let traceparent = self.traceparent.clone();
        Box::new(async move {
            outbound
                .send(request, options.unwrap_or_default(), deadline, traceparent)
                .await
        })
    }
}

impl HandlerOutbound {
    async fn send(
        &self,
        mut request: Request<WasiBody>,
        options: RequestOptions,
        deadline: Instant,
        traceparent: Option<Arc<str>>,
    ) -> Sent {
        let url = request.uri().clone();
        let Some((scheme, port)) = scheme_and_port(&url) else {
            return Err(self.refuse(&url, "only http and https are sent"));
        };
        let host = url.host().ok_or(Error::HttpRequestUriInvalid)?;
        let Some(target) = self.admitted(scheme, Target::parse(host), port).cloned() else {
            return Err(self.refuse(&url, "no allowed_outbound_hosts entry admits it"));
        };
        let client = self
            .http
            .as_ref()
            .expect("a handler with an http(s) entry has a pool");
        let trace =
            traceparent.map(|parent| otel::client_trace(&parent, &self.name, "http", &target));
        if let Some(header) = trace.as_ref().and_then(|t| t.traceparent.as_deref())
            && !request.headers().contains_key("traceparent")
            && let Ok(header) = HeaderValue::from_str(header)
        {
            request.headers_mut().insert("traceparent", header);
        }
        let span = trace.map_or_else(tracing::Span::none, |t| t.span);

        let started = Instant::now();
        let left = deadline.saturating_duration_since(started);
        let connect = capped(options.connect_timeout, left);
        let first_byte = capped(options.first_byte_timeout, left);
        let between_bytes = capped(options.between_bytes_timeout, left);
        let sending = Arc::new(Sending {
            connect,
            first_byte,
            phase: Mutex::new(Phase::Waiting(started)),
        });
        let answer = match sending
            .send(&client.pool, request)
            .instrument(span.clone())
            .await
        {
            Ok(response) => Ok(response),
            Err(Failure::Client(e)) => Err(self.failed(&url, &e)),
            Err(Failure::FirstByte) => Err(Error::ConnectionReadTimeout),
        };
        let result = match &answer {
            Ok(_) => "ok",
            Err(Error::DestinationIpProhibited) => "denied",
            Err(Error::ConnectionTimeout | Error::ConnectionReadTimeout) => "timeout",
            Err(_) => "error",
        };
        span.record("result", result);
        let took = answer.is_ok().then(|| started.elapsed());
        self.shared
            .metrics
            .record(&self.name, "http", Some(&target), result, took);
        let response = answer?;
        let cap = client.max_response_bytes;
        let response = response.map(|incoming| {
            Capped {
                incoming,
                read: 0,
                cap,
                between_bytes,
                idle: Box::pin(tokio::time::sleep(between_bytes)),
            }
            .boxed_unsync()
        });
        let io: Box<dyn Future<Output = Result<(), Error>> + Send> =
            Box::new(std::future::ready(Ok(())));
        Ok((response, io))
    }

    /// Logs and counts a request the allow list refuses.
    fn refuse(&self, url: &Uri, why: &'static str) -> Error {
        if let Some(suppressed) = self.refusals.admit() {
            tracing::warn!(handler = %self.name, url = %url, reason = why, suppressed, "outbound HTTP request refused");
        }
        self.shared
            .metrics
            .record(&self.name, "http", None, "denied", None);
        Error::HttpRequestDenied
    }

    /// The `wasi:http` error for a request that was admitted but failed.
    fn failed(&self, url: &Uri, error: &hyper_util::client::legacy::Error) -> Error {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
        while let Some(e) = source {
            if let Some(refused) = e.downcast_ref::<ConnectError>() {
                if let Some(suppressed) = self.refusals.admit() {
                    tracing::warn!(handler = %self.name, url = %url, error = %refused, suppressed, "outbound HTTP request failed");
                }
                return refused.code();
            }
            source = e.source();
        }
        if let Some(suppressed) = self.refusals.admit() {
            tracing::warn!(handler = %self.name, url = %url, error = %error, suppressed, "outbound HTTP request failed");
        }
        Error::HttpProtocolError
    }
}

/// A URL's scheme, when it is `http` or `https`, and its port, the
/// scheme's own when it names none.
fn scheme_and_port(url: &Uri) -> Option<(OutboundScheme, u16)> {
    let scheme = match url.scheme_str()? {
        "http" => OutboundScheme::Http,
        "https" => OutboundScheme::Https,
        _ => return None,
    };
    let port = url.port_u16().or(scheme.default_port())?;
    Some((scheme, port))
}

/// Why the connector gave no connection.
#[derive(Debug, thiserror::Error)]
enum ConnectError {
    #[error("cannot resolve {name}: {reason}")]
    Resolve { name: String, reason: String },
    #[error("{host} resolves only to addresses guests may not reach: {refused}")]
    Refused { host: String, refused: String },
    #[error("connecting to {addr}: {error}")]
    Connect { addr: SocketAddr, error: io::Error },
    #[error("no connection within {0:?}")]
    Timeout(Duration),
    #[error("TLS with {host}: {error}")]
    Tls {
        host: String,
        error: arrpc_client::tls::HandshakeError,
    },
}

impl ConnectError {
    fn code(&self) -> Error {
        match self {
            ConnectError::Resolve { .. } => Error::DnsError {
                rcode: None,
                info_code: None,
            },
            ConnectError::Refused { .. } => Error::DestinationIpProhibited,
            ConnectError::Connect { error, .. }
                if error.kind() == io::ErrorKind::ConnectionRefused =>
            {
                Error::ConnectionRefused
            }
            ConnectError::Connect { .. } => Error::DestinationUnavailable,
            ConnectError::Timeout(_) => Error::ConnectionTimeout,
            ConnectError::Tls { .. } => Error::TlsCertificateError,
        }
    }
}

/// Makes the pool's connections: resolves, checks every address, connects
/// to one that passed, and runs TLS for `https`.
#[derive(Clone)]
struct Connector {
    resolver: TokioResolver,
    entries: Arc<[OutboundHost]>,
    tls: Option<arrpc_client::Tls>,
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<Stream>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        // Read now, while the request that asked is being polled.
        let sending = SENDING.try_with(Arc::clone).ok();
        let limit = sending
            .as_ref()
            .map_or(Duration::from_secs(30), |s| s.connect);
        let connector = self.clone();
        Box::pin(async move {
            if let Some(sending) = &sending {
                sending.set(Phase::Connecting);
            }
            let connected = tokio::time::timeout(limit, connector.connect(uri))
                .await
                .map_err(|_| ConnectError::Timeout(limit));
            if let Some(sending) = &sending {
                sending.set(Phase::Waiting(Instant::now()));
            }
            connected?.map(TokioIo::new)
        })
    }
}

impl Connector {
    async fn connect(self, uri: Uri) -> Result<Stream, ConnectError> {
        // The pool asks only for URIs of requests `send` admitted.
        let (scheme, port) = scheme_and_port(&uri).unwrap_or((OutboundScheme::Http, 80));
        let https = scheme == OutboundScheme::Https;
        let host = uri.host().unwrap_or_default();
        let found = match Target::parse(host) {
            Target::Ip(ip) => vec![ip],
            Target::Name(name) => self
                .resolver
                .lookup_ip(name)
                .await
                .map(|found| found.iter().collect())
                .map_err(|e| ConnectError::Resolve {
                    name: name.to_owned(),
                    reason: e.to_string(),
                })?,
        };
        let (allowed, refused): (Vec<IpAddr>, Vec<IpAddr>) = found
            .into_iter()
            .partition(|ip| address::check(&self.entries, scheme, *ip, port).is_ok());
        if allowed.is_empty() {
            let refused = refused
                .iter()
                .map(|ip| {
                    let why = address::check(&self.entries, scheme, *ip, port).unwrap_err();
                    format!("{ip} ({why})")
                })
                .collect::<Vec<_>>()
                .join(", ");
            return Err(ConnectError::Refused {
                host: host.to_owned(),
                refused,
            });
        }
        let mut last = None;
        for ip in allowed {
            let addr = SocketAddr::new(ip, port);
            match TcpStream::connect(addr).await {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    return match &self.tls {
                        Some(tls) if https => tls
                            .connect(&format!("{host}:{port}"), stream)
                            .await
                            .map(|s| Stream::Tls(Box::new(s)))
                            .map_err(|error| ConnectError::Tls {
                                host: host.to_owned(),
                                error,
                            }),
                        _ => Ok(Stream::Plain(stream)),
                    };
                }
                Err(error) => last = Some(ConnectError::Connect { addr, error }),
            }
        }
        Err(last.expect("at least one address was tried"))
    }
}

/// A pooled connection, plain or TLS.
enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// A response body held to `cap` bytes and to `between_bytes` of silence.
struct Capped {
    incoming: hyper::body::Incoming,
    read: usize,
    cap: usize,
    between_bytes: Duration,
    idle: Pin<Box<Sleep>>,
}

impl Body for Capped {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.incoming).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.read = this.read.saturating_add(data.len());
                    if this.read > this.cap {
                        return Poll::Ready(Some(Err(Error::HttpResponseBodySize(Some(
                            this.cap as u64,
                        )))));
                    }
                }
                let next = tokio::time::Instant::now() + this.between_bytes;
                this.idle.as_mut().reset(next);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Error::from(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                ready!(this.idle.as_mut().poll(cx));
                Poll::Ready(Some(Err(Error::ConnectionReadTimeout)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}
