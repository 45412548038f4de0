//! `[auth]` and `[tls]`: who may send messages, and how the port is encrypted.
//!
//! Secrets are named here, not written here: each comes from an environment
//! variable or a file (an inline value works but is warned about at start),
//! so `arrpc.toml` can be shared and committed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::defaults;

/// `[auth]`: signed messages, as the Python arrpc package's `auth_secret`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Secrets a signature may be made with; any one verifies, so a new
    /// secret can be added before clients move to it and the old one removed
    /// after. Empty: messages need no signature.
    pub secrets: Vec<SecretSource>,
    /// Require stamped envelopes (time and nonce under the MAC) and refuse
    /// replays. Python arrpc clients cannot send these, so it is off by
    /// default.
    pub replay_protection: bool,
    /// How far an envelope's time may be from the host's clock, either way.
    #[serde(with = "humantime_serde")]
    pub replay_window: Duration,
    /// Nonces remembered at once; when this many envelopes arrived within
    /// one window, further ones are refused until old nonces expire.
    pub replay_max_nonces: usize,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            secrets: Vec::new(),
            replay_protection: false,
            replay_window: defaults::REPLAY_WINDOW,
            replay_max_nonces: defaults::REPLAY_MAX_NONCES,
        }
    }
}

/// Where one secret comes from: `{ env = "NAME" }`, `{ file = "path" }` or
/// `{ value = "text" }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum SecretSource {
    Env(String),
    File(PathBuf),
    Value(String),
}

impl SecretSource {
    /// The secret's bytes. A file's trailing line break is not part of it,
    /// and the file must be readable by its owner only (or its group, in a
    /// Kubernetes volume: see `arrpc_wire::pem::secret_mode`).
    pub fn read(&self) -> Result<Vec<u8>, String> {
        let secret = match self {
            SecretSource::Env(name) => std::env::var_os(name)
                .ok_or_else(|| format!("environment variable `{name}` is not set"))?
                .into_encoded_bytes(),
            SecretSource::File(path) => {
                arrpc_wire::pem::secret_mode(path).map_err(|e| e.to_string())?;
                let mut bytes = std::fs::read(path)
                    .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
                for end in [b'\n', b'\r'] {
                    if bytes.last() == Some(&end) {
                        bytes.pop();
                    }
                }
                bytes
            }
            SecretSource::Value(text) => text.clone().into_bytes(),
        };
        if secret.is_empty() {
            return Err(format!("{self} is empty"));
        }
        Ok(secret)
    }
}

impl std::fmt::Display for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretSource::Env(name) => write!(f, "environment variable `{name}`"),
            SecretSource::File(path) => write!(f, "secret file {}", path.display()),
            SecretSource::Value(_) => f.write_str("inline secret"),
        }
    }
}

/// `[tls]`: serve TLS instead of plain TCP, with certificates from files
/// (`cert`, `key`, `client_ca`) or from the SPIFFE Workload API
/// (`[tls.spiffe]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert: Option<PathBuf>,
    /// PEM private key of the leaf; readable by its owner only.
    pub key: Option<PathBuf>,
    /// PEM CA certificate(s): when set, clients must present a certificate
    /// signed by one of them (mutual TLS).
    pub client_ca: Option<PathBuf>,
    /// Certificate, key and trust bundle from the SPIFFE Workload API (a
    /// SPIRE agent) instead of files.
    pub spiffe: Option<SpiffeConfig>,
    /// With `client_ca` or `[tls.spiffe]`: whether a client without a
    /// certificate (the Python arrpc client cannot present one) may connect
    /// at all. Either way a certificate presented must verify.
    pub client_certificates: ClientCertificates,
    /// A connection that has not finished its handshake in this long is
    /// closed.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// How often the files are read again, besides when the folders they
    /// sit in change: a safety net for a change the watcher missed.
    #[serde(with = "humantime_serde")]
    pub recheck_interval: Duration,
}

/// No certificate source yet, which does not validate: give `cert` and
/// `key` (see [`TlsConfig::new`]) or `spiffe`.
impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert: None,
            key: None,
            client_ca: None,
            spiffe: None,
            client_certificates: ClientCertificates::default(),
            handshake_timeout: defaults::HANDSHAKE_TIMEOUT,
            recheck_interval: defaults::RECHECK_INTERVAL,
        }
    }
}

/// `[tls.spiffe]`: this workload's X.509-SVID, its key and its trust
/// domain's bundle, as a SPIRE agent pushes them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpiffeConfig {
    /// `unix:///absolute/path` or `tcp://ip:port`; absent, the
    /// `SPIFFE_ENDPOINT_SOCKET` environment variable names it.
    pub socket: Option<String>,
    /// How long the host waits at start for the agent's first SVID (the
    /// agent may start after this pod's containers) before it gives up.
    #[serde(with = "humantime_serde")]
    pub startup_timeout: Duration,
}

impl Default for SpiffeConfig {
    fn default() -> Self {
        SpiffeConfig {
            socket: None,
            startup_timeout: defaults::SPIFFE_STARTUP_TIMEOUT,
        }
    }
}

/// `[tls] client_certificates`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientCertificates {
    /// A client without one fails the handshake.
    #[default]
    Required,
    /// A client without one connects, and reaches only handlers that allow
    /// `anyone`.
    Optional,
}

impl AuthConfig {
    /// Checks this section on its own.
    pub fn validate(&self) -> Result<(), String> {
        if self.replay_protection && self.secrets.is_empty() {
            return Err(
                "auth.replay_protection needs auth.secrets: only signed envelopes carry a stamp"
                    .into(),
            );
        }
        if self.replay_window.is_zero() {
            return Err("auth.replay_window must be longer than zero".into());
        }
        if self.replay_max_nonces == 0 {
            return Err("auth.replay_max_nonces must be at least 1".into());
        }
        Ok(())
    }

    /// Makes relative secret files absolute against `base`.
    pub(super) fn resolve(&mut self, base: &Path) {
        for source in &mut self.secrets {
            if let SecretSource::File(path) = source {
                *path = base.join(&*path);
            }
        }
    }
}

impl TlsConfig {
    /// Serves `cert` with `key`, no client certificates, default timings.
    pub fn new(cert: PathBuf, key: PathBuf) -> TlsConfig {
        TlsConfig {
            cert: Some(cert),
            key: Some(key),
            ..TlsConfig::default()
        }
    }

    /// Whether client certificates are verified: by `client_ca`, or by the
    /// trust bundle from the SPIFFE Workload API.
    pub fn verifies_clients(&self) -> bool {
        self.client_ca.is_some() || self.spiffe.is_some()
    }

    /// Checks this section on its own, `[tls.spiffe]` included.
    pub fn validate(&self) -> Result<(), String> {
        if self.handshake_timeout.is_zero() {
            return Err("tls.handshake_timeout must be longer than zero".into());
        }
        if self.recheck_interval.is_zero() {
            return Err("tls.recheck_interval must be longer than zero".into());
        }
        let files = [
            ("cert", self.cert.is_some()),
            ("key", self.key.is_some()),
            ("client_ca", self.client_ca.is_some()),
        ];
        match &self.spiffe {
            None => {
                if self.client_certificates == ClientCertificates::Optional
                    && self.client_ca.is_none()
                {
                    return Err(
                        "tls.client_certificates = \"optional\" needs tls.client_ca, \
                         the CA they must come from, or [tls.spiffe], whose trust bundle \
                         verifies them"
                            .into(),
                    );
                }
                for (name, given) in &files[..2] {
                    if !given {
                        return Err(format!(
                            "tls.{name} is missing: give tls.cert and tls.key, or [tls.spiffe] \
                             for certificates from the SPIFFE Workload API"
                        ));
                    }
                }
            }
            Some(spiffe) => {
                if let Some((name, _)) = files.iter().find(|(_, given)| *given) {
                    return Err(format!(
                        "tls.{name} does not go with [tls.spiffe]: the certificate, key and \
                         trust bundle come from the SPIFFE Workload API"
                    ));
                }
                spiffe.validate()?;
            }
        }
        Ok(())
    }

    /// Makes relative certificate and key paths absolute against `base`.
    pub(super) fn resolve(&mut self, base: &Path) {
        super::rebase(base, [&mut self.cert, &mut self.key, &mut self.client_ca]);
    }
}

impl SpiffeConfig {
    /// The Workload API as the client crate's source takes it.
    pub fn workload_api(&self) -> arrpc_client::spiffe::WorkloadApi {
        arrpc_client::spiffe::WorkloadApi {
            socket: self.socket.clone(),
            startup_timeout: self.startup_timeout,
        }
    }

    /// An explicit socket is checked here; `SPIFFE_ENDPOINT_SOCKET` only
    /// when serving, since `check` runs where no agent is (an image build).
    pub fn validate(&self) -> Result<(), String> {
        if self.startup_timeout.is_zero() {
            return Err("tls.spiffe.startup_timeout must be longer than zero".into());
        }
        match &self.socket {
            Some(socket) => arrpc_client::spiffe::check_socket(socket)
                .map_err(|e| format!("tls.spiffe.socket {socket:?}: {e}")),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `[tls]` as written, checked as at load.
    fn tls(text: &str) -> Result<TlsConfig, String> {
        let tls: TlsConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        tls.validate()?;
        Ok(tls)
    }

    #[test]
    fn the_spiffe_source_replaces_the_files_and_is_checked_at_load() {
        let spiffe = tls("[spiffe]\nsocket = \"unix:///run/spire/agent.sock\"\n").unwrap();
        let source = spiffe.spiffe.as_ref().unwrap();
        assert_eq!(source.startup_timeout, Duration::from_secs(30));
        assert!(spiffe.verifies_clients());
        let open = tls(
            "client_certificates = \"optional\"\n[spiffe]\nsocket = \"tcp://127.0.0.1:8081\"\n",
        );
        assert_eq!(
            open.unwrap().client_certificates,
            ClientCertificates::Optional
        );
        // The socket may come from SPIFFE_ENDPOINT_SOCKET when serving.
        assert_eq!(tls("[spiffe]\n").unwrap().spiffe.unwrap().socket, None);

        let cases = [
            ("", "tls.cert is missing"),
            ("cert = \"c.pem\"\n", "tls.key is missing"),
            (
                "key = \"k.pem\"\n[spiffe]\nsocket = \"unix:///s\"\n",
                "tls.key does not go with [tls.spiffe]",
            ),
            (
                "client_ca = \"ca.pem\"\n[spiffe]\nsocket = \"unix:///s\"\n",
                "tls.client_ca does not go with [tls.spiffe]",
            ),
            (
                "[spiffe]\nsocket = \"unix://relative/agent.sock\"\n",
                "tls.spiffe.socket \"unix://relative/agent.sock\"",
            ),
            (
                "[spiffe]\nsocket = \"http://agent:80\"\n",
                "expected unix:///absolute/path or tcp://ip:port",
            ),
            (
                "[spiffe]\nsocket = \"unix:///s\"\nstartup_timeout = \"0s\"\n",
                "tls.spiffe.startup_timeout",
            ),
            (
                "[spiffe]\nsockets = \"unix:///s\"\n",
                "unknown field `sockets`",
            ),
        ];
        for (text, want) in cases {
            let err = tls(text).unwrap_err();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }
}
