//! Security flags on the command line: they override `arrpc.toml`, so
//! operators can keep secrets and key paths out of files.

use std::path::PathBuf;

use anyhow::bail;
use arrpc_client::spiffe::{self, WorkloadApi};
use arrpc_client::tls::{HandshakeError, Identity, Tls, Trust};
use arrpc_client::{ClientConfig, Error};
use clap::Args;

use crate::config::{Config, SecretSource, TlsConfig};

/// `arrpc-host serve` flags for TLS and signatures.
#[derive(Debug, Args)]
pub struct ServeSecurityArgs {
    /// Serve TLS with this PEM certificate chain (replaces `[tls]`).
    #[arg(long, value_name = "F", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert (mode 600).
    #[arg(long, value_name = "F", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require client certificates signed by a CA in this PEM file (mutual TLS).
    #[arg(long, value_name = "F")]
    tls_client_ca: Option<PathBuf>,
    /// Accept messages signed with the secret in this environment variable
    /// (replaces `auth.secrets`; repeat to accept several).
    #[arg(long, value_name = "NAME", conflicts_with = "auth_secret_file")]
    auth_secret_env: Vec<String>,
    /// Accept messages signed with the secret in this file (mode 600;
    /// replaces `auth.secrets`; repeat to accept several).
    #[arg(long, value_name = "F")]
    auth_secret_file: Vec<PathBuf>,
}

impl ServeSecurityArgs {
    /// Writes the flags given over `config`.
    pub fn apply(&self, config: &mut Config) -> anyhow::Result<()> {
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            let (cert, key) = (cert.clone(), key.clone());
            config.tls = Some(match config.tls.take() {
                Some(tls) => TlsConfig {
                    cert: Some(cert),
                    key: Some(key),
                    spiffe: None,
                    ..tls
                },
                None => TlsConfig::new(cert, key),
            });
        }
        if let Some(ca) = &self.tls_client_ca {
            match &mut config.tls {
                Some(tls) if tls.spiffe.is_some() => bail!(
                    "--tls-client-ca does not go with [tls.spiffe]: client certificates are \
                     verified by the trust bundle from the SPIFFE Workload API"
                ),
                Some(tls) => tls.client_ca = Some(ca.clone()),
                None => bail!(
                    "--tls-client-ca needs TLS: give --tls-cert and --tls-key, or a [tls] section"
                ),
            }
        }
        if self.overrides_secrets() {
            config.auth.secrets = self
                .auth_secret_env
                .iter()
                .cloned()
                .map(SecretSource::Env)
                .chain(
                    self.auth_secret_file
                        .iter()
                        .cloned()
                        .map(SecretSource::File),
                )
                .collect();
        }
        Ok(())
    }

    pub fn overrides_secrets(&self) -> bool {
        !self.auth_secret_env.is_empty() || !self.auth_secret_file.is_empty()
    }
}

/// `arrpc-host send` flags for TLS and signatures.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("tls_on").args(["tls", "tls_ca"]).multiple(true)))]
pub struct SendSecurityArgs {
    /// Talk TLS, trusting servers with a certificate from a CA in the roots
    /// that --tls-roots names; --tls-ca trusts another CA instead.
    #[arg(long)]
    tls: bool,
    /// Which CAs --tls trusts.
    #[arg(
        long,
        value_enum,
        default_value_t,
        value_name = "ROOTS",
        requires = "tls",
        conflicts_with = "tls_ca"
    )]
    tls_roots: TlsRoots,
    /// Talk TLS, trusting servers whose certificate a CA in this PEM file signed.
    #[arg(long, value_name = "F")]
    tls_ca: Option<PathBuf>,
    /// The --tls-ca file is the server's own self-signed certificate: trust
    /// exactly it, whatever names it carries (the Python arrpc package's
    /// `tls_self_signed`).
    #[arg(long, requires = "tls_ca")]
    tls_self_signed: bool,
    /// Present this PEM certificate chain (mutual TLS).
    #[arg(long, value_name = "F", requires_all = ["tls_key", "tls_on"])]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert (mode 600).
    #[arg(long, value_name = "F", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Check the server's certificate for this name instead of the
    /// address's host.
    #[arg(
        long,
        value_name = "NAME",
        requires = "tls_on",
        conflicts_with = "tls_self_signed"
    )]
    tls_server_name: Option<String>,
    /// Talk TLS with this workload's SVID from the SPIFFE Workload API (a
    /// SPIRE agent; its socket from SPIFFE_ENDPOINT_SOCKET or
    /// --spiffe-socket), trusting servers whose SVID the agent's trust
    /// bundle verifies.
    #[arg(long, conflicts_with_all = ["tls", "tls_ca", "tls_cert"])]
    tls_spiffe: bool,
    /// The Workload API socket for --tls-spiffe: `unix:///path` or
    /// `tcp://ip:port`.
    #[arg(long, value_name = "URI", requires = "tls_spiffe")]
    spiffe_socket: Option<String>,
    /// Sign the message with the secret in this environment variable.
    #[arg(long, value_name = "NAME", conflicts_with = "auth_secret_file")]
    auth_secret_env: Option<String>,
    /// Sign the message with the secret in this file (mode 600).
    #[arg(long, value_name = "F")]
    auth_secret_file: Option<PathBuf>,
    /// Stamp the signed envelope with the time and a nonce, for hosts with
    /// `auth.replay_protection` on.
    #[arg(long)]
    replay_protection: bool,
}

/// The CAs `send --tls` trusts.
#[derive(Debug, Clone, Copy, Default, clap::ValueEnum)]
pub enum TlsRoots {
    /// This machine's certificate store, as curl uses it (SSL_CERT_FILE and
    /// SSL_CERT_DIR, when set, replace it).
    #[default]
    System,
    /// The Mozilla root set built into arrpc-host, the same on every machine.
    Mozilla,
}

impl SendSecurityArgs {
    /// Writes the flags given into the client's `config`.
    pub fn apply(&self, config: &mut ClientConfig) -> anyhow::Result<()> {
        let trust = match &self.tls_ca {
            Some(ca) if self.tls_self_signed => Some(Trust::Pinned(ca.clone())),
            Some(ca) => Some(Trust::CaFile(ca.clone())),
            None => self.tls.then_some(match self.tls_roots {
                TlsRoots::System => Trust::System,
                TlsRoots::Mozilla => Trust::PublicCas,
            }),
        };
        if self.tls_spiffe {
            // The agent gets as long as a connection would.
            let api = WorkloadApi {
                socket: self.spiffe_socket.clone(),
                startup_timeout: config.connect_timeout,
            };
            let source = spiffe::Source::connect(&api)?;
            config.tls = Some(Tls::new(&Trust::Spiffe(source), None)?);
        }
        if let Some(trust) = trust {
            let identity = self.tls_cert.clone().zip(self.tls_key.clone());
            let identity = identity.map(|(cert, key)| Identity { cert, key });
            let mut tls = Tls::new(&trust, identity.as_ref())?;
            tls.server_name = self.tls_server_name.clone();
            config.tls = Some(tls);
        }
        let source = match (&self.auth_secret_env, &self.auth_secret_file) {
            (Some(name), _) => Some(SecretSource::Env(name.clone())),
            (_, Some(path)) => Some(SecretSource::File(path.clone())),
            _ => None,
        };
        if let Some(source) = source {
            let secret = source
                .read()
                .map_err(|e| anyhow::anyhow!("auth secret ({source}): {e}"))?;
            config.auth_secret = Some(secret);
        } else if self.replay_protection {
            bail!("--replay-protection signs: give --auth-secret-env or --auth-secret-file");
        }
        config.replay_protection = self.replay_protection;
        Ok(())
    }
}

impl SendSecurityArgs {
    /// What to change for a refused TLS handshake, by the `send` flags that
    /// do it where some do; the client's error has already said what was
    /// wrong. Under --tls-spiffe the certificates are the agent's, so no
    /// certificate flag is the fix.
    pub fn tls_hint(&self, error: &Error) -> Option<String> {
        let Error::Tls { source, .. } = error else {
            return None;
        };
        if self.tls_spiffe {
            return spiffe_hint(source);
        }
        file_hint(source)
    }
}

/// [`SendSecurityArgs::tls_hint`] with the workload's SVID from the agent.
fn spiffe_hint(source: &HandshakeError) -> Option<String> {
    Some(match source {
        HandshakeError::UnknownIssuer { .. } => "the server's certificate is from no trust domain \
             in the agent's bundle: serve it an SVID of this trust domain, or federate the two"
            .to_owned(),
        HandshakeError::ClientCertificateRequired { .. }
        | HandshakeError::ClientCertificateRefused { .. } => "the server does not trust this \
             workload's SVID: it must trust this trust domain's bundle (its [tls.spiffe] or \
             client_ca), and the agent must have issued this workload an SVID"
            .to_owned(),
        other => return file_hint(other),
    })
}

/// [`SendSecurityArgs::tls_hint`] with certificates from files.
fn file_hint(source: &HandshakeError) -> Option<String> {
    Some(match source {
        HandshakeError::UnknownIssuer { .. } => "pass the CA that signed it with --tls-ca FILE, \
             or the server's own certificate with --tls-ca FILE --tls-self-signed"
            .to_owned(),
        HandshakeError::NotPinned { .. } => "pass the server's own certificate with --tls-ca \
             FILE --tls-self-signed, or drop --tls-self-signed to trust the CA in FILE that \
             signed it"
            .to_owned(),
        HandshakeError::WrongName { presented, .. } => match presented.first() {
            Some(name) => format!(
                "connect by one of the certificate's names, or check one with \
                 --tls-server-name (e.g. --tls-server-name {name})"
            ),
            None => "give the server a certificate with a subjectAltName for its host".to_owned(),
        },
        HandshakeError::CaCertificate { .. } => "pass the server's certificate itself with \
             --tls-ca FILE, or give the server a certificate without CA:TRUE"
            .to_owned(),
        HandshakeError::ClientCertificateRequired { .. } => {
            "present a client certificate with --tls-cert FILE --tls-key FILE".to_owned()
        }
        HandshakeError::ClientCertificateRefused { .. } => {
            "present a certificate from a CA the server trusts with --tls-cert FILE --tls-key FILE"
                .to_owned()
        }
        HandshakeError::Expired { .. } | HandshakeError::NotYetValid { .. } => {
            "renew the server's certificate, or set this machine's clock right if it is wrong"
                .to_owned()
        }
        HandshakeError::NotTls | HandshakeError::ClosedByServer | HandshakeError::TimedOut(_) => {
            "for a server without TLS, drop --tls and --tls-ca".to_owned()
        }
        _ => return None,
    })
}
