//! Where handlers may connect, and the host's side of those connections.
//!
//! Nothing is allowed by default. A handler's `allowed_outbound_hosts`
//! admits HTTP requests (`wasi:http/outgoing-handler`, sent by [`http`])
//! and TCP connections (`wasi:sockets`, checked by [`HandlerOutbound::socket_check`]).
//! The host resolves names itself, checks every address it got (see
//! [`address`]), and connects to the address it checked, so a name cannot
//! be rebound between the check and the connection.

pub mod address;
mod http;
mod metrics;
mod upstream;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrpc_client::tls::{Tls, Trust};
use hickory_resolver::TokioResolver;
use wasmtime_wasi::sockets::SocketAddrUse;

use crate::config::{
    HandlerConfig, OutboundConfig, OutboundHost, OutboundScheme, Target, UpstreamConfig,
};
use crate::telemetry::LogThrottle;

pub use http::HttpHooks;
pub use metrics::OutboundMetrics;
pub use upstream::{Remote, Route, Upstream, UpstreamError};

/// What every handler's outbound connections share: the settings, the
/// resolver, the HTTPS trust and the metrics.
pub struct Outbound {
    config: OutboundConfig,
    /// The resolver and the HTTPS trust, made when the first handler that
    /// needs them loads: a host whose handlers make no HTTP requests never
    /// reads the system's DNS settings or trust store.
    made: Mutex<(Option<TokioResolver>, Option<Tls>)>,
    /// Every `[[upstream]]`, by name, as read at start.
    upstreams: HashMap<String, Arc<Upstream>>,
    metrics: OutboundMetrics,
}

impl Outbound {
    /// Reads each upstream's secret and TLS files; an error names the
    /// upstream and the file.
    pub fn new(
        config: &OutboundConfig,
        upstreams: &[UpstreamConfig],
        metrics: OutboundMetrics,
    ) -> Result<Outbound, String> {
        Ok(Outbound {
            config: config.clone(),
            made: Mutex::default(),
            upstreams: upstream::load(upstreams, config.resolver)?,
            metrics,
        })
    }

    /// The outbound rights of one handler as loaded: its entries, and a
    /// connection pool of its own when it may make HTTP requests.
    pub fn for_handler(
        self: &Arc<Outbound>,
        config: &HandlerConfig,
    ) -> Result<Arc<HandlerOutbound>, String> {
        let entries: Arc<[OutboundHost]> = config.allowed_outbound_hosts.clone().into();
        let has = |scheme| entries.iter().any(|e| e.scheme == scheme);
        let http = if has(OutboundScheme::Http) || has(OutboundScheme::Https) {
            let (resolver, tls) = self.made(has(OutboundScheme::Https))?;
            Some(http::Client::new(
                self.clone(),
                entries.clone(),
                resolver,
                tls,
            ))
        } else {
            None
        };
        let upstreams = config
            .upstreams
            .iter()
            .map(|name| match self.upstreams.get(name) {
                Some(upstream) => Ok((name.clone(), upstream.clone())),
                None => Err(format!(
                    "upstreams: `{name}` is not an upstream this host started with; [[upstream]] changes take a restart"
                )),
            })
            .collect::<Result<_, String>>()?;
        Ok(Arc::new(HandlerOutbound {
            name: config.name.as_str().into(),
            upstreams,
            refusals: LogThrottle::new(),
            targets: entries.iter().map(|e| Arc::from(e.to_string())).collect(),
            tcp: has(OutboundScheme::Tcp),
            entries,
            http,
            shared: self.clone(),
        }))
    }

    /// The resolver, and the HTTPS trust when `https`; each read on first use.
    fn made(&self, https: bool) -> Result<(TokioResolver, Option<Tls>), String> {
        let mut made = self.made.lock().unwrap_or_else(|e| e.into_inner());
        let (resolver, tls) = &mut *made;
        if resolver.is_none() {
            *resolver = Some(self.resolver()?);
        }
        if https && tls.is_none() {
            let trust = match &self.config.ca_file {
                Some(file) => Trust::CaFile(file.clone()),
                None => Trust::System,
            };
            *tls =
                Some(Tls::new(&trust, None).map_err(|e| format!("[outbound] HTTPS trust: {e}"))?);
        }
        let resolver = resolver.clone().expect("made above");
        Ok((resolver, tls.clone().filter(|_| https)))
    }

    /// A resolver asking `[outbound] resolver`, or the system's nameservers.
    fn resolver(&self) -> Result<TokioResolver, String> {
        arrpc_client::balance::resolver(self.config.resolver).map_err(|e| {
            match self.config.resolver {
                Some(server) => format!("[outbound] resolver {server}: {e}"),
                None => format!("[outbound] cannot use the system's DNS settings: {e}"),
            }
        })
    }
}

/// One handler's outbound rights, shared by its instances.
pub struct HandlerOutbound {
    name: Arc<str>,
    entries: Arc<[OutboundHost]>,
    /// Each entry as text, a metrics label.
    targets: Vec<Arc<str>>,
    tcp: bool,
    /// Kept-alive connections for its HTTP requests, when it may make any.
    http: Option<http::Client>,
    /// The upstreams it may call, by name.
    upstreams: HashMap<String, Arc<Upstream>>,
    /// A guest can fail requests as fast as it can make them: their log
    /// lines are throttled (the metrics count every one).
    refusals: LogThrottle,
    shared: Arc<Outbound>,
}

impl HandlerOutbound {
    /// Whether any entry is `tcp://`, which turns `wasi:sockets` TCP on.
    pub fn tcp(&self) -> bool {
        self.tcp
    }

    /// Whether any entry is `http://` or `https://`.
    pub fn http(&self) -> bool {
        self.http.is_some()
    }

    /// Whether it may send anything out, which makes its messages' trace
    /// worth keeping for the requests.
    pub fn calls_out(&self) -> bool {
        self.http.is_some() || !self.upstreams.is_empty()
    }

    /// The upstream `name`, when this handler may call it; else why not,
    /// counted and logged.
    pub fn upstream(&self, name: &str) -> Result<&Arc<Upstream>, UpstreamError> {
        self.upstreams.get(name).ok_or_else(|| {
            let why = if self.shared.upstreams.contains_key(name) {
                format!("handler `{}` may not call upstream `{name}`: its upstreams do not list it", self.name)
            } else {
                format!("no upstream is named `{name}`")
            };
            if let Some(suppressed) = self.refusals.admit() {
                tracing::warn!(handler = %self.name, upstream = name, reason = %why, suppressed, "upstream call refused");
            }
            self.shared.metrics.record(&self.name, "arrpc", None, "denied", None);
            UpstreamError::Denied(why)
        })
    }

    /// Counts one call to `upstream` that got as far as being tried.
    pub fn record_upstream(
        &self,
        upstream: &Upstream,
        result: Result<(), &UpstreamError>,
        took: std::time::Duration,
    ) {
        let label = result.err().map_or("ok", UpstreamError::label);
        self.shared
            .metrics
            .record(&self.name, "arrpc", Some(&upstream.name), label, Some(took));
    }

    /// The entry that admits `scheme` to `target` on `port`, as a label.
    fn admitted(&self, scheme: OutboundScheme, target: Target<'_>, port: u16) -> Option<&Arc<str>> {
        self.entries
            .iter()
            .position(|e| e.admits(scheme, target, port))
            .map(|i| &self.targets[i])
    }

    /// The check `wasi:sockets` asks before each bind and connect: a TCP
    /// connect to an address a `tcp://` entry admits, and the implicit bind
    /// to the wildcard address that precedes every connect. Nothing else:
    /// no listening, no UDP.
    pub fn socket_check(
        self: &Arc<HandlerOutbound>,
    ) -> impl Fn(
        SocketAddr,
        SocketAddrUse,
    ) -> std::pin::Pin<Box<dyn Future<Output = bool> + Send + Sync>>
    + Send
    + Sync
    + 'static {
        let outbound = self.clone();
        move |addr, used| {
            let allowed = match used {
                SocketAddrUse::TcpBind => addr.ip().is_unspecified() && addr.port() == 0,
                SocketAddrUse::TcpConnect => outbound.tcp_connect(addr),
                _ => false,
            };
            Box::pin(std::future::ready(allowed))
        }
    }

    fn tcp_connect(&self, addr: SocketAddr) -> bool {
        let ip = addr.ip().to_canonical();
        let target = self.admitted(OutboundScheme::Tcp, Target::Ip(ip), addr.port());
        let refused = match target {
            None => Some("no allowed_outbound_hosts entry admits it"),
            Some(_) => address::check(&self.entries, OutboundScheme::Tcp, ip, addr.port()).err(),
        };
        let result = match refused {
            Some(why) => {
                if let Some(suppressed) = self.refusals.admit() {
                    tracing::warn!(handler = %self.name, addr = %addr, reason = why, suppressed, "outbound TCP connection refused");
                }
                "denied"
            }
            None => "ok",
        };
        self.shared
            .metrics
            .record(&self.name, "tcp", target, result, None);
        refused.is_none()
    }
}

/// Caps a guest's own timeout at what is left of the message's.
fn capped(asked: Option<Duration>, left: Duration) -> Duration {
    asked.map_or(left, |asked| asked.min(left))
}
