//! The message port: accept loop, connection limit and graceful shutdown.

pub mod access;
pub mod auth;
mod connection;
mod dispatch;
mod failure;
pub mod replay;
pub mod shutdown;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::config::ServerConfig;
use crate::runtime::HandlerRegistry;
use crate::telemetry::{LogThrottle, Metrics};

/// Failed handshakes are logged within a budget: anyone who can connect
/// can fail them as fast as they like.
static FAILED_HANDSHAKES: LogThrottle = LogThrottle::new();
pub use access::{Identity, Peer};
pub use connection::{ConnectionLimits, serve as serve_connection};
pub use dispatch::Dispatcher;
pub use tls::TlsListener;

/// A bound listener, ready to serve.
pub struct Server {
    listener: TcpListener,
    /// What each connection's task is given.
    peers: Arc<Peers>,
    /// One permit per connection served at once; when none is left the
    /// accept loop waits, and new clients queue in the kernel's backlog.
    connections: Arc<Semaphore>,
    shutdown_grace: Duration,
}

/// How the message port guards itself; both off by default.
#[derive(Default)]
pub struct Security {
    /// Set: every connection starts with a TLS handshake.
    pub tls: Option<Arc<TlsListener>>,
    /// Set: every message must be a signed envelope.
    pub auth: Option<auth::Authenticator>,
}

/// What every connection is served with, shared by their tasks.
struct Peers {
    dispatcher: Arc<Dispatcher>,
    limits: ConnectionLimits,
    tls: Option<Arc<TlsListener>>,
    metrics: Arc<Metrics>,
}

impl Server {
    /// Binds the message port; fails (e.g. address in use) before serving.
    /// Messages and connections are counted in `metrics`.
    pub async fn bind(
        config: &ServerConfig,
        registry: Arc<HandlerRegistry>,
        security: Security,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Server> {
        let listener = TcpListener::bind(config.listen).await?;
        // Ready from here: the kernel queues connections for `run`, so
        // `/readyz` agrees with the "listening" line logged after binding.
        metrics.set_accepting(true);
        let dispatcher = Dispatcher::new(registry, config.rpc, security.auth, metrics.clone());
        Ok(Server {
            listener,
            peers: Arc::new(Peers {
                dispatcher: Arc::new(dispatcher),
                limits: ConnectionLimits {
                    max_message: config.max_message_bytes,
                    max_pipelined: config.max_pipelined,
                    idle_timeout: config.idle_timeout,
                    max_age: config.max_connection_age,
                },
                tls: security.tls,
                metrics,
            }),
            connections: Arc::new(Semaphore::new(config.max_connections)),
            shutdown_grace: config.shutdown_grace,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `stop` completes, then stops accepting, lets messages
    /// already read finish (up to the configured grace) and returns.
    pub async fn run(self, stop: impl Future<Output = ()>) {
        let (trigger, shutdown) = shutdown::channel();
        let mut tasks = JoinSet::new();
        tokio::pin!(stop);
        loop {
            let permit = tokio::select! {
                permit = self.connections.clone().acquire_owned() => permit.expect("semaphore is never closed"),
                _ = &mut stop => break,
            };
            let accepted = tokio::select! {
                accepted = self.listener.accept() => accepted,
                _ = &mut stop => break,
            };
            let (stream, peer) = match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Typically out of file descriptors: wait rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let peers = self.peers.clone();
            let shutdown = shutdown.clone();
            // Reap finished connections so the set stays small.
            while tasks.try_join_next().is_some() {}
            tasks.spawn(async move {
                peers.serve(stream, peer, shutdown).await;
                drop(permit);
            });
        }
        drop(self.listener);
        self.peers.metrics.set_accepting(false);
        trigger.trigger();
        tracing::info!(connections = tasks.len(), grace = ?self.shutdown_grace, "shutting down; draining connections");
        let drained = tokio::time::timeout(self.shutdown_grace, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                connections = tasks.len(),
                "grace period over; closing remaining connections"
            );
            tasks.shutdown().await;
        }
    }
}

impl Peers {
    /// Serves one accepted connection from `addr` to its end: the TLS
    /// handshake first, when TLS is on, in this connection's own task, so
    /// a slow or broken one holds up no other connection.
    async fn serve(&self, stream: TcpStream, addr: SocketAddr, shutdown: shutdown::Shutdown) {
        let open = self.metrics.connection_opened();
        let addr: Arc<str> = addr.to_string().into();
        tracing::debug!(peer = %addr, "connection opened");
        let dispatcher = self.dispatcher.clone();
        match &self.tls {
            None => {
                let peer = Arc::new(Peer::anonymous(addr.clone()));
                connection::serve(stream, peer, dispatcher, self.limits, shutdown).await
            }
            Some(tls) => match tls.accept(stream).await {
                Ok(stream) => {
                    self.metrics.tls_handshake(true);
                    let tls = stream.get_ref().1;
                    let peer = Arc::new(Peer {
                        addr: addr.clone(),
                        identity: tls
                            .peer_certificates()
                            .and_then(|chain| chain.first())
                            .map(|leaf| Identity::from_certificate(leaf)),
                        depth: 0,
                    });
                    tracing::debug!(peer = %addr, version = ?tls.protocol_version(), caller = %peer, "TLS established");
                    connection::serve(stream, peer, dispatcher, self.limits, shutdown).await
                }
                Err(e) => {
                    self.metrics.tls_handshake(false);
                    self.metrics.tls_handshake_failure(e.reason());
                    if let Some(suppressed) = FAILED_HANDSHAKES.admit() {
                        tracing::info!(peer = %addr, reason = %e.reason(), error = %e, suppressed, "closing connection");
                    }
                }
            },
        }
        tracing::debug!(peer = %addr, "connection closed");
        drop(open);
    }
}
