//! `[[upstream]]`: the arrpc services handlers may call, each by name, and
//! how the host reaches them. A handler calls only those its `upstreams`
//! lists.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{SecretSource, SpiffeConfig, defaults};

/// One `[[upstream]]`: another arrpc service (an `arrpc-host` or the
/// Python arrpc package's `Server`), or a handler of this host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// What handlers call it by, and list in `upstreams`.
    pub name: String,
    /// `host:port`, a list of replicas `a:7400,b:7400`, or a DNS name whose
    /// every address is a replica, `dns://name:7400`. Leave out with
    /// `handler`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// A handler of this host, called in process without the network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handler: Option<String>,
    /// Longest a call may take, retries included; a message's own deadline
    /// cuts it shorter.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Sign each message with this secret, as the upstream's `[auth]`
    /// expects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretSource>,
    /// With `secret`: stamp each message with the time and a nonce, for an
    /// `arrpc-host` upstream with `replay_protection`.
    #[serde(default)]
    pub replay_protection: bool,
    /// Talk TLS to it; plain TCP when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<UpstreamTls>,
    /// Nameserver for a `dns://` address; default: `[outbound] resolver`,
    /// or the system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_server: Option<SocketAddr>,
}

/// `[upstream.tls]`: whom the host trusts to be the upstream, and what it
/// presents as its own identity.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamTls {
    /// PEM file of the CAs the upstream's certificate is checked against;
    /// default: the system's trust store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// This host's client certificate chain, for mutual TLS (with `key`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// The name the upstream's certificate must carry; default: the host of
    /// `address`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// Present this workload's SVID from the SPIFFE Workload API and trust
    /// its bundle, instead of files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spiffe: Option<SpiffeConfig>,
}

fn default_timeout() -> Duration {
    defaults::UPSTREAM_TIMEOUT
}

impl UpstreamConfig {
    /// An upstream at `address`, every other key at its default: a 10 s
    /// timeout, plain TCP, unsigned.
    pub fn remote(name: impl Into<String>, address: impl Into<String>) -> UpstreamConfig {
        UpstreamConfig {
            name: name.into(),
            address: Some(address.into()),
            handler: None,
            timeout: defaults::UPSTREAM_TIMEOUT,
            secret: None,
            replay_protection: false,
            tls: None,
            dns_server: None,
        }
    }

    /// The handler `handler` of this host, called in process.
    pub fn local(name: impl Into<String>, handler: impl Into<String>) -> UpstreamConfig {
        UpstreamConfig {
            address: None,
            handler: Some(handler.into()),
            ..UpstreamConfig::remote(name, "")
        }
    }

    /// Checks this upstream on its own; errors name the key, and
    /// [`Config::validate`](super::Config::validate) puts which upstream in
    /// front.
    pub fn validate(&self) -> Result<(), String> {
        super::check_name(&self.name)?;
        match (&self.address, &self.handler) {
            (Some(_), Some(_)) => {
                return Err("give address or handler, not both".into());
            }
            (None, None) => {
                return Err("needs an address (host:port, a list or dns://) or a handler".into());
            }
            (Some(address), None) if address.trim().is_empty() => {
                return Err("address is empty".into());
            }
            (None, Some(_)) if self.tls.is_some() || self.secret.is_some() => {
                return Err(
                    "a handler of this host is called in process: tls and secret do not apply"
                        .into(),
                );
            }
            _ => {}
        }
        if self.timeout.is_zero() {
            return Err("timeout must be longer than zero".into());
        }
        if self.replay_protection && self.secret.is_none() {
            return Err("replay_protection needs a secret".into());
        }
        if let Some(tls) = &self.tls {
            if tls.cert.is_some() != tls.key.is_some() {
                return Err("tls.cert and tls.key go together".into());
            }
            if tls.spiffe.is_some() && (tls.cert.is_some() || tls.ca_file.is_some()) {
                return Err(
                    "tls.spiffe presents the SVID and trusts its bundle: leave out tls.cert, tls.key and tls.ca_file"
                        .into(),
                );
            }
        }
        Ok(())
    }

    /// Makes relative paths absolute against `base`.
    pub(super) fn resolve(&mut self, base: &Path) {
        if let Some(SecretSource::File(path)) = &mut self.secret {
            *path = base.join(&*path);
        }
        if let Some(tls) = &mut self.tls {
            super::rebase(base, [&mut tls.ca_file, &mut tls.cert, &mut tls.key]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upstream_is_remote_or_local_and_its_tls_is_whole() {
        assert_eq!(
            UpstreamConfig::remote("prices", "a:7400").validate(),
            Ok(())
        );
        assert_eq!(UpstreamConfig::local("inner", "sum").validate(), Ok(()));
        let both = UpstreamConfig {
            handler: Some("sum".into()),
            ..UpstreamConfig::remote("x", "a:1")
        };
        assert!(both.validate().unwrap_err().contains("not both"));
        let half = UpstreamConfig {
            tls: Some(UpstreamTls {
                cert: Some("c.pem".into()),
                ..UpstreamTls::default()
            }),
            ..UpstreamConfig::remote("x", "a:1")
        };
        assert!(half.validate().unwrap_err().contains("go together"));
        let local_tls = UpstreamConfig {
            tls: Some(UpstreamTls::default()),
            ..UpstreamConfig::local("x", "sum")
        };
        assert!(local_tls.validate().unwrap_err().contains("in process"));
    }
}
