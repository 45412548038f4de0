//! The SPIFFE Workload API (a SPIRE agent's socket) as a source of
//! certificates: this workload's X.509-SVID and key, and the trust bundle
//! of its trust domain, pushed again by the agent as they rotate.
//!
//! The only module that uses the `spiffe` and `spiffe-rustls` crates, which
//! break their API at nearly every minor version. The source runs on a
//! thread of its own, so it keeps following the agent whether its user is
//! async (the host) or blocking (`arrpc-host send`, [`crate::BlockingClient`]).
//! When the agent goes away the last SVID stays in use while the source
//! reconnects with backoff; an agent that withdraws the identity
//! (`PermissionDenied`) is reported by [`Source::current`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use spiffe::{X509Source, X509SourceError};
use tokio::sync::oneshot;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The variable that names the Workload API socket, as the SPIFFE Workload
/// Endpoint specification has it.
pub const SOCKET_VARIABLE: &str = "SPIFFE_ENDPOINT_SOCKET";

/// Where the Workload API is and how long to wait for it at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadApi {
    /// `unix:///absolute/path` or `tcp://ip:port`; `None` reads
    /// [`SOCKET_VARIABLE`].
    pub socket: Option<String>,
    /// How long to wait for a first SVID before giving up: the agent may
    /// still be starting next to this workload.
    pub startup_timeout: Duration,
}

/// Why the Workload API cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SpiffeError {
    #[error("no SPIFFE Workload API socket: {SOCKET_VARIABLE} is not set and none is named")]
    NoSocket,
    #[error("{socket}: {reason}")]
    BadSocket { socket: String, reason: String },
    #[error(
        "no X.509-SVID from the SPIFFE Workload API at {socket} within {timeout:?}: is the agent running, and is this workload registered?"
    )]
    TimedOut { socket: String, timeout: Duration },
    #[error("the SPIFFE Workload API at {socket} refused: {reason}")]
    Refused { socket: String, reason: String },
    #[error("the SPIFFE Workload API's identity cannot be used for TLS: {0}")]
    Tls(String),
}

/// This workload's identity as the agent last sent it.
#[derive(Debug)]
pub struct Svid {
    /// `spiffe://trust-domain/path`.
    pub spiffe_id: String,
    /// Leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// The CAs of the SVID's own trust domain.
    pub bundle: Vec<CertificateDer<'static>>,
}

/// What the agent says about this workload now.
#[derive(Debug)]
pub enum Current {
    Svid(Svid),
    /// The agent withdrew the identity, or the SVID it sent has expired.
    Withdrawn(String),
}

/// A live connection to the Workload API; cheap to clone, and the thread
/// following the agent ends when the last clone is dropped.
#[derive(Clone)]
pub struct Source {
    source: X509Source,
    /// The runtime on the source's thread, where the TLS settings built
    /// from it watch it too.
    runtime: tokio::runtime::Handle,
    /// The socket, for logs and errors.
    socket: Arc<str>,
    _thread: Arc<Stop>,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("socket", &self.socket)
            .finish()
    }
}

/// Ends the source's thread when dropped.
struct Stop(Option<oneshot::Sender<()>>);

impl Drop for Stop {
    fn drop(&mut self) {
        if let Some(stop) = self.0.take() {
            let _ = stop.send(());
        }
    }
}

/// Whether `socket` is a Workload API address this source can use, in the
/// words of the endpoint specification.
pub fn check_socket(socket: &str) -> Result<(), String> {
    spiffe::transport::Endpoint::parse(socket)
        .map(|_| ())
        .map_err(|e| format!("{e}; expected unix:///absolute/path or tcp://ip:port"))
}

impl Source {
    /// Connects and waits (blocking, up to the startup timeout) for a first
    /// SVID. May be called from async code only through `spawn_blocking`.
    pub fn connect(api: &WorkloadApi) -> Result<Source, SpiffeError> {
        let socket = match &api.socket {
            Some(socket) => socket.clone(),
            None => std::env::var(SOCKET_VARIABLE).map_err(|_| SpiffeError::NoSocket)?,
        };
        check_socket(&socket).map_err(|reason| SpiffeError::BadSocket {
            socket: match api.socket {
                Some(_) => socket.clone(),
                None => format!("{SOCKET_VARIABLE}={socket}"),
            },
            reason,
        })?;
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel();
        let timeout = api.startup_timeout;
        let endpoint = socket.clone();
        std::thread::Builder::new()
            .name("spiffe-source".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = ready_tx.send(Err(SpiffeError::Refused {
                            socket: endpoint,
                            reason: format!("cannot start a runtime: {e}"),
                        }));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let serving = Arc::new(AtomicBool::new(false));
                    let built = X509Source::builder()
                        .endpoint(&endpoint)
                        .initial_sync_timeout(timeout)
                        .reconnect_backoff(Duration::from_millis(200), Duration::from_secs(10))
                        .metrics(Arc::new(Outages {
                            socket: endpoint.clone(),
                            serving: serving.clone(),
                        }))
                        .build()
                        .await
                        .map_err(|e| startup_error(&endpoint, timeout, e));
                    let source = built.as_ref().ok().cloned();
                    serving.store(source.is_some(), Ordering::Relaxed);
                    let _ = ready_tx.send(built.map(|s| (s, tokio::runtime::Handle::current())));
                    if let Some(source) = source {
                        // Follows the agent until every handle is dropped.
                        let _ = stop_rx.await;
                        source.shutdown().await;
                    }
                });
            })
            .map_err(|e| SpiffeError::Refused {
                socket: socket.clone(),
                reason: format!("cannot start a thread: {e}"),
            })?;
        let (source, runtime) = ready_rx.recv().map_err(|_| SpiffeError::Refused {
            socket: socket.clone(),
            reason: "the source's thread ended".into(),
        })??;
        Ok(Source {
            source,
            runtime,
            socket: socket.into(),
            _thread: Arc::new(Stop(Some(stop_tx))),
        })
    }

    /// The Workload API's address.
    pub fn socket(&self) -> &str {
        &self.socket
    }

    /// The identity and bundle as the agent last sent them.
    pub fn current(&self) -> Current {
        let state = self.source.state();
        let (svid, context) = match state.svid().and_then(|svid| Ok((svid, state.context()?))) {
            Ok(found) => found,
            Err(X509SourceError::Withdrawn(reason)) => {
                return Current::Withdrawn(reason.to_string());
            }
            Err(e) => return Current::Withdrawn(e.to_string()),
        };
        let bundle = context
            .bundle_set()
            .get(svid.spiffe_id().trust_domain())
            .map(|bundle| {
                bundle
                    .authorities()
                    .iter()
                    .map(|ca| CertificateDer::from(ca.as_bytes().to_vec()))
                    .collect()
            })
            .unwrap_or_default();
        Current::Svid(Svid {
            spiffe_id: svid.spiffe_id().to_string(),
            chain: svid
                .cert_chain()
                .iter()
                .map(|cert| CertificateDer::from(cert.as_bytes().to_vec()))
                .collect(),
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                svid.private_key().as_bytes().to_vec(),
            )),
            bundle,
        })
    }

    /// A handle to wait on for the agent's changes.
    pub fn updates(&self) -> Updates {
        Updates(self.source.updated())
    }

    /// Client settings that present this workload's SVID and accept a
    /// server whose SVID the trust bundle verifies, whatever its SPIFFE ID
    /// (SVIDs carry no host name to check); both follow rotations.
    pub(crate) fn client_config(&self) -> Result<rustls::ClientConfig, SpiffeError> {
        let _on_the_source_thread = self.runtime.enter();
        spiffe_rustls::mtls_client(self.source.clone())
            .build()
            .map_err(|e| SpiffeError::Tls(e.to_string()))
    }
}

/// Notices of the agent's changes.
pub struct Updates(spiffe::X509SourceUpdates);

impl Updates {
    /// Waits for the agent's next change (a new SVID or bundle, or a
    /// withdrawal); `false` once the source has closed.
    pub async fn changed(&mut self) -> bool {
        self.0.changed().await.is_ok()
    }
}

fn startup_error(socket: &str, timeout: Duration, error: X509SourceError) -> SpiffeError {
    match error {
        X509SourceError::InitialSyncTimeout => SpiffeError::TimedOut {
            socket: socket.to_owned(),
            timeout,
        },
        other => SpiffeError::Refused {
            socket: socket.to_owned(),
            reason: other.to_string(),
        },
    }
}

/// Logs when the stream from the agent is lost once an SVID is served,
/// naming the socket; the crate logs each reconnection attempt itself.
struct Outages {
    socket: String,
    /// A first SVID arrived: there is one to keep serving.
    serving: Arc<AtomicBool>,
}

impl spiffe::x509_source::MetricsRecorder for Outages {
    fn record_update(&self) {}

    fn record_reconnect(&self) {}

    fn record_error(&self, kind: spiffe::x509_source::MetricsErrorKind) {
        use spiffe::x509_source::MetricsErrorKind as K;
        if matches!(kind, K::StreamEnded | K::StreamError) && self.serving.load(Ordering::Relaxed) {
            tracing::warn!(
                socket = %self.socket,
                "lost the SPIFFE Workload API stream: keeping the last SVID, reconnecting with backoff"
            );
        }
    }
}
