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

use tokio::net::TcpListener;
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
    dispatcher: Arc<Dispatcher>,
    limits: ConnectionLimits,
    /// One permit per connection served at once; when none is left the
    /// accept loop waits, and new clients queue in the kernel's backlog.
    connections: Arc<Semaphore>,
    shutdown_grace: Duration,
    /// Set: every connection starts with a TLS handshake.
    tls: Option<Arc<TlsListener>>,
    metrics: Arc<Metrics>,
}

impl Server {
    /// Binds the message port; fails (e.g. address in use) before serving.
    /// Messages and connections are counted in `metrics`.
    pub async fn bind(
        config: &ServerConfig,
        registry: Arc<HandlerRegistry>,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Server> {
        let listener = TcpListener::bind(config.listen).await?;
        // Ready from here: the kernel queues connections for `run`, so
        // `/readyz` agrees with the "listening" line logged after binding.
        metrics.set_accepting(true);
        Ok(Server {
            listener,
            dispatcher: Arc::new(Dispatcher::new(registry, config.rpc, metrics.clone())),
            limits: ConnectionLimits {
                max_message: config.max_message_bytes,
                max_pipelined: config.max_pipelined,
                idle_timeout: config.idle_timeout,
                max_age: config.max_connection_age,
            },
            connections: Arc::new(Semaphore::new(config.max_connections)),
            shutdown_grace: config.shutdown_grace,
            tls: None,
            metrics,
        })
    }

    /// Serves TLS instead of plain TCP.
    pub fn with_tls(mut self, tls: Arc<TlsListener>) -> Server {
        self.tls = Some(tls);
        self
    }

    /// Requires every message to be a signed envelope.
    pub fn with_auth(mut self, auth: auth::Authenticator) -> Server {
        Arc::get_mut(&mut self.dispatcher)
            .expect("the dispatcher is shared only once serving")
            .set_auth(auth);
        self
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
            let dispatcher = self.dispatcher.clone();
            let limits = self.limits;
            let shutdown = shutdown.clone();
            let tls = self.tls.clone();
            let open = self.metrics.connection_opened();
            let metrics = self.metrics.clone();
            // Reap finished connections so the set stays small.
            while tasks.try_join_next().is_some() {}
            tasks.spawn(async move {
                let addr: Arc<str> = peer.to_string().into();
                tracing::debug!(peer = %addr, "connection opened");
                match tls {
                    None => {
                        let peer = Arc::new(Peer::anonymous(addr.clone()));
                        connection::serve(stream, peer, dispatcher, limits, shutdown).await
                    }
                    // The handshake runs in this connection's own task, so
                    // a slow or broken one holds up no other connection.
                    Some(tls) => match tls.accept(stream).await {
                        Ok(stream) => {
                            metrics.tls_handshake(true);
                            let tls = stream.get_ref().1;
                            let peer = Arc::new(Peer {
                                addr: addr.clone(),
                                identity: tls
                                    .peer_certificates()
                                    .and_then(|chain| chain.first())
                                    .map(|leaf| Identity::from_certificate(leaf)),
                            });
                            tracing::debug!(peer = %addr, version = ?tls.protocol_version(), caller = %peer, "TLS established");
                            connection::serve(stream, peer, dispatcher, limits, shutdown).await
                        }
                        Err(e) => {
                            metrics.tls_handshake(false);
                            metrics.tls_handshake_failure(e.reason());
                            if let Some(suppressed) = FAILED_HANDSHAKES.admit() {
                                tracing::info!(peer = %addr, reason = %e.reason(), error = %e, suppressed, "closing connection");
                            }
                        }
                    },
                }
                tracing::debug!(peer = %addr, "connection closed");
                drop(open);
                drop(permit);
            });
        }
        drop(self.listener);
        self.metrics.set_accepting(false);
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
