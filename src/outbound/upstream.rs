//! The `[[upstream]]` services handlers may call, as the host reaches
//! them: through `arrpc-client`, so calls are balanced over replicas,
//! retried only when they cannot have run, signed, and made over TLS with
//! the host's own identity. An upstream that is a handler of this host is
//! only named here; the runtime calls it in process.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrpc_client::tls::{Identity, Tls, Trust};
use arrpc_client::{Client, ClientConfig, RpcClient};

use crate::config::UpstreamConfig;

/// Why an upstream call failed, as the guest is told: whether it may have
/// run decides whether sending it again is safe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamError {
    /// Not allowed, or no such upstream; nothing was sent.
    Denied(String),
    /// Provably not run: safe to send again.
    NotRun(String),
    /// Sent, and then the connection failed: it may have run.
    MayHaveRun(String),
    /// Run, and answered with this error text.
    Remote(String),
    /// No answer in time; it may have run.
    TimedOut,
}

impl UpstreamError {
    /// The result label of the outbound metrics.
    pub fn label(&self) -> &'static str {
        match self {
            UpstreamError::Denied(_) => "denied",
            UpstreamError::NotRun(_) => "not_run",
            UpstreamError::MayHaveRun(_) => "may_have_run",
            UpstreamError::Remote(_) => "remote_error",
            UpstreamError::TimedOut => "timeout",
        }
    }

    /// The client crate's error, sorted by whether the call may have run.
    fn from_client(error: &arrpc_client::Error) -> UpstreamError {
        use arrpc_client::Error;
        match error {
            Error::Timeout { .. } => UpstreamError::TimedOut,
            Error::Rpc(text) => UpstreamError::Remote(text.clone()),
            _ => {
                let text = with_causes(error);
                if error.may_have_run() {
                    UpstreamError::MayHaveRun(text)
                } else {
                    UpstreamError::NotRun(text)
                }
            }
        }
    }
}

/// `error` and its causes, on one line.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// One upstream as loaded.
pub struct Upstream {
    pub name: Arc<str>,
    pub timeout: Duration,
    pub route: Route,
}

/// Where an upstream's calls go.
pub enum Route {
    /// Another arrpc service, with its clients.
    Remote(Box<Remote>),
    /// This host's handler of that name.
    Local(String),
}

/// The clients of one remote upstream: one balanced client for
/// MessagePack-RPC calls, many at once on each connection, and single
/// connections for bare messages, which go one at a time.
pub struct Remote {
    rpc: RpcClient,
    config: ClientConfig,
    /// Idle connections for bare messages.
    bare: Mutex<Vec<Client>>,
}

impl Remote {
    /// Calls `method` with `params`, at most for `left`.
    pub async fn call(
        &self,
        method: &str,
        params: &[u8],
        traceparent: Option<&str>,
        left: Duration,
    ) -> Result<Vec<u8>, UpstreamError> {
        let call = async {
            match traceparent {
                Some(traceparent) => self.rpc.call_raw_traced(method, params, traceparent).await,
                None => self.rpc.call_raw(method, params).await,
            }
        };
        match tokio::time::timeout(left, call).await {
            Ok(Ok(result)) => Ok(result.to_vec()),
            Ok(Err(e)) => Err(UpstreamError::from_client(&e)),
            Err(_) => Err(UpstreamError::TimedOut),
        }
    }

    /// Sends the bare `message`, at most for `left`.
    pub async fn send(
        &self,
        message: &[u8],
        traceparent: Option<&str>,
        left: Duration,
    ) -> Result<Vec<u8>, UpstreamError> {
        let idle = self.bare.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut client = idle.unwrap_or_else(|| Client::new(self.config.clone()));
        let send = async {
            match traceparent {
                Some(traceparent) => client.send_raw_traced(message, traceparent).await,
                None => client.send_raw(message).await,
            }
        };
        // A connection cut off mid-call is dropped with its client: the
        // reply may still come, and must not answer the next message.
        let reply = match tokio::time::timeout(left, send).await {
            Ok(Ok(reply)) => reply.to_vec(),
            Ok(Err(e)) => return Err(UpstreamError::from_client(&e)),
            Err(_) => return Err(UpstreamError::TimedOut),
        };
        self.bare
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(client);
        Ok(reply)
    }
}

/// Every configured upstream by name, with its clients made; secrets and
/// TLS files are read now, so a bad one stops the start naming it.
pub fn load(
    configs: &[UpstreamConfig],
    resolver: Option<SocketAddr>,
) -> Result<HashMap<String, Arc<Upstream>>, String> {
    configs
        .iter()
        .map(|config| {
            let at = |e: String| format!("[[upstream]] `{}`: {e}", config.name);
            let route = match (&config.address, &config.handler) {
                (_, Some(handler)) => Route::Local(handler.clone()),
                (Some(address), None) => {
                    Route::Remote(Box::new(remote(config, address, resolver).map_err(at)?))
                }
                (None, None) => return Err(at("needs an address or a handler".into())),
            };
            let upstream = Upstream {
                name: config.name.as_str().into(),
                timeout: config.timeout,
                route,
            };
            Ok((config.name.clone(), Arc::new(upstream)))
        })
        .collect()
}

fn remote(
    config: &UpstreamConfig,
    address: &str,
    resolver: Option<SocketAddr>,
) -> Result<Remote, String> {
    let mut client = ClientConfig::new(address);
    client.timeout = Some(config.timeout);
    client.connect_timeout = config.timeout.min(Duration::from_secs(5));
    // One attempt per replica: the balancer moves a call that did not run
    // to another, and the guest decides about the rest.
    client.connect_attempts = 1;
    client.dns_server = config.dns_server.or(resolver);
    client.replay_protection = config.replay_protection;
    if let Some(secret) = &config.secret {
        client.auth_secret = Some(secret.read().map_err(|e| format!("secret: {e}"))?);
    }
    if let Some(tls) = &config.tls {
        let (trust, identity) = match &tls.spiffe {
            Some(spiffe) => {
                let api = arrpc_client::spiffe::WorkloadApi {
                    socket: spiffe.socket.clone(),
                    startup_timeout: spiffe.startup_timeout,
                };
                let source = arrpc_client::spiffe::Source::connect(&api)
                    .map_err(|e| format!("tls.spiffe: {e}"))?;
                (Trust::Spiffe(source), None)
            }
            None => (
                match &tls.ca_file {
                    Some(file) => Trust::CaFile(file.clone()),
                    None => Trust::System,
                },
                tls.cert
                    .clone()
                    .zip(tls.key.clone())
                    .map(|(cert, key)| Identity { cert, key }),
            ),
        };
        let mut made = Tls::new(&trust, identity.as_ref()).map_err(|e| format!("tls: {e}"))?;
        made.server_name.clone_from(&tls.server_name);
        client.tls = Some(made);
    }
    Ok(Remote {
        rpc: RpcClient::new(client.clone()),
        config: client,
        bare: Mutex::new(Vec::new()),
    })
}
