//! `[[store]]`: the key-value stores handlers keep state in, each by name.
//! A store is embedded (one redb file on this host's disk) or a Redis
//! server that replicas share. A handler opens only those its `stores`
//! lists.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{SecretSource, defaults};

/// The store a handler gets when its `stores` lists `default` and no
/// `[[store]]` has that name: embedded, in `.arrpc/default.redb` beside
/// the config.
pub const DEFAULT_STORE: &str = "default";

/// One `[[store]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// What handlers open it by, and list in `stores`.
    pub name: String,
    /// An embedded store's file; relative paths start at the config's
    /// folder. Default: `.arrpc/<name>.redb`. Leave out with `redis`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// A Redis or Valkey server's URL, `redis://` or `rediss://` (TLS),
    /// from the environment, a file or the config itself:
    /// `redis = { env = "REDIS_URL" }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<SecretSource>,
    /// Longest key a guest may use, in bytes.
    #[serde(default = "max_key_bytes")]
    pub max_key_bytes: usize,
    /// Largest value a guest may store, in bytes.
    #[serde(default = "max_value_bytes")]
    pub max_value_bytes: usize,
    /// An embedded store's file may grow to this many MiB; past it, writes
    /// fail with "store is full" and deletes still work.
    #[serde(default = "max_size_mib")]
    pub max_size_mib: u64,
    /// MiB of an embedded store's pages kept in memory.
    #[serde(default = "cache_mib")]
    pub cache_mib: u64,
    /// Longest one operation on a Redis store may take, reconnecting included.
    #[serde(default = "timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// How a `rediss://` server is trusted, and this host's certificate
    /// for one that asks for it. Unset: the system's trust store, no
    /// certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<StoreTls>,
}

/// `[store.tls]`: what a Redis store's TLS connections use.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreTls {
    /// PEM file of the CAs the server's certificate is checked against;
    /// default: the system's trust store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// This host's client certificate chain, for a server that requires
    /// one (with `key`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
}

fn max_key_bytes() -> usize {
    defaults::STORE_MAX_KEY_BYTES
}
fn max_value_bytes() -> usize {
    defaults::STORE_MAX_VALUE_BYTES
}
fn max_size_mib() -> u64 {
    defaults::STORE_MAX_SIZE_MIB
}
fn cache_mib() -> u64 {
    defaults::STORE_CACHE_MIB
}
fn timeout() -> Duration {
    defaults::STORE_TIMEOUT
}

/// Where a store keeps its data.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreBackend<'a> {
    /// A redb file on this host.
    Embedded(&'a Path),
    /// A Redis server.
    Redis(&'a SecretSource),
}

impl StoreConfig {
    /// An embedded store at `path`, every other key at its default.
    pub fn embedded(name: impl Into<String>, path: impl Into<PathBuf>) -> StoreConfig {
        StoreConfig {
            path: Some(path.into()),
            ..StoreConfig::blank(name.into())
        }
    }

    /// A Redis store at `url`, every other key at its default.
    pub fn redis(name: impl Into<String>, url: SecretSource) -> StoreConfig {
        StoreConfig {
            redis: Some(url),
            ..StoreConfig::blank(name.into())
        }
    }

    pub(super) fn blank(name: String) -> StoreConfig {
        StoreConfig {
            name,
            path: None,
            redis: None,
            max_key_bytes: max_key_bytes(),
            max_value_bytes: max_value_bytes(),
            max_size_mib: max_size_mib(),
            cache_mib: cache_mib(),
            timeout: timeout(),
            tls: None,
        }
    }

    /// Where this store keeps its data; paths already resolved.
    pub fn backend(&self) -> StoreBackend<'_> {
        match (&self.redis, &self.path) {
            (Some(url), _) => StoreBackend::Redis(url),
            (None, Some(path)) => StoreBackend::Embedded(path),
            (None, None) => unreachable!("resolve gives every embedded store a path"),
        }
    }

    /// Checks this store on its own. Errors name the key;
    /// [`Config::validate`](super::Config::validate) puts which store in front.
    pub fn validate(&self) -> Result<(), String> {
        super::check_name(&self.name)?;
        if self.redis.is_some() && self.path.is_some() {
            return Err(
                "path and redis: a store is either embedded (path) or Redis, not both".into(),
            );
        }
        if let Some(path) = &self.path
            && path.as_os_str().is_empty()
        {
            return Err("path is empty; leave it out for .arrpc/<name>.redb".into());
        }
        if self.max_key_bytes == 0 || self.max_key_bytes > 64 << 10 {
            return Err("max_key_bytes must be between 1 and 65536".into());
        }
        if self.max_value_bytes == 0 || self.max_value_bytes > 512 << 20 {
            return Err("max_value_bytes must be between 1 and 536870912 (512 MiB)".into());
        }
        if self.max_size_mib == 0 {
            return Err("max_size_mib must be at least 1".into());
        }
        if self.timeout.is_zero() {
            return Err("timeout must be more than 0s".into());
        }
        if let Some(tls) = &self.tls {
            if self.redis.is_none() {
                return Err("tls: only a Redis store (redis = ...) connects over TLS".into());
            }
            if tls.cert.is_some() != tls.key.is_some() {
                return Err("tls: cert and key go together".into());
            }
        }
        Ok(())
    }

    /// Makes `path` absolute against the config's folder, and gives an
    /// embedded store without one its default file.
    pub(super) fn resolve(&mut self, base: &Path) {
        if self.redis.is_none() {
            let path = self
                .path
                .take()
                .unwrap_or_else(|| PathBuf::from(format!(".arrpc/{}.redb", self.name)));
            self.path = Some(base.join(path));
        }
        if let Some(SecretSource::File(file)) = &mut self.redis {
            *file = base.join(&*file);
        }
        if let Some(tls) = &mut self.tls {
            super::rebase(base, [&mut tls.ca_file, &mut tls.cert, &mut tls.key]);
        }
    }
}
