//! A Redis store: a Redis or Valkey server that every replica shares.
//!
//! Each store's keys live under `arrpc:<store>:`, and store names cannot
//! hold a `:`, so two stores on one server never see each other's keys.
//! One multiplexed connection per store is made on first use and made
//! again in the background when it breaks; while the server is away, only
//! the calls made meanwhile fail, each within the store's `timeout`. A
//! `rediss://` server is reached over TLS, trusting `[store.tls]`'s CA file
//! (else the system's) and presenting its certificate when one is set.
//! Durability is the server's (docs/state.md says which settings give what).

use std::future::Future;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, ClientTlsConfig, RedisError, Script, TlsCertificates, Value};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::{PAGE_KEYS, StoreError, Swap, not_a_count};
use crate::config::{SecretSource, StoreConfig, StoreTls};

/// Sets the key only if it holds what the caller read: `ARGV[1]` is `1`
/// with the expected value in `ARGV[2]`, or `0` for "missing"; `ARGV[3]`
/// is the new value. Answers `{1}` when swapped, else `{0, value now}`.
const SWAP: &str = r"
local now = redis.call('GET', KEYS[1])
local matches
if ARGV[1] == '1' then matches = (now == ARGV[2]) else matches = (now == false) end
if matches then
  redis.call('SET', KEYS[1], ARGV[3])
  return {1}
end
return {0, now}
";

pub(super) struct Redis {
    name: Arc<str>,
    prefix: String,
    client: Client,
    timeout: Duration,
    /// Made on first use, inside the tokio runtime it needs.
    manager: OnceLock<Result<ConnectionManager, String>>,
    swap: Script,
}

impl Redis {
    /// Reads the URL and checks it; connects nothing.
    pub(super) fn new(
        name: Arc<str>,
        url: &SecretSource,
        config: &StoreConfig,
    ) -> Result<Redis, String> {
        let bytes = url.read().map_err(|e| format!("redis: {e}"))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| format!("redis: the URL from {url} is not UTF-8"))?;
        let text = text.trim();
        if !(text.starts_with("redis://") || text.starts_with("rediss://")) {
            return Err(format!(
                "redis: the URL from {url} must start with redis:// or rediss:// (TLS)"
            ));
        }
        // The error may quote the URL, password and all: name the source only.
        let not_a_url = |e: RedisError| {
            format!(
                "redis: the URL from {url} is not a Redis URL ({:?})",
                e.kind()
            )
        };
        let client = match &config.tls {
            None => Client::open(text).map_err(not_a_url)?,
            Some(tls) => {
                if !text.starts_with("rediss://") {
                    return Err(format!(
                        "tls: set, but the URL from {url} starts with redis://, not rediss://"
                    ));
                }
                Client::build_with_tls(text, certificates(tls)?).map_err(not_a_url)?
            }
        };
        Ok(Redis {
            prefix: format!("arrpc:{name}:"),
            name,
            client,
            timeout: config.timeout,
            manager: OnceLock::new(),
            swap: Script::new(SWAP),
        })
    }

    pub(super) async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.query(redis::cmd("GET").arg(self.key(key))).await
    }

    pub(super) async fn set(&self, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
        self.query(redis::cmd("SET").arg(self.key(key)).arg(value))
            .await
    }

    pub(super) async fn delete(&self, keys: &[&str]) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("DEL");
        for key in keys {
            cmd.arg(self.key(key));
        }
        self.query::<i64>(&cmd).await.map(drop)
    }

    pub(super) async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        self.query::<i64>(redis::cmd("EXISTS").arg(self.key(key)))
            .await
            .map(|n| n > 0)
    }

    /// One SCAN step; its cursor is Redis's, `0` being the end.
    pub(super) async fn list_keys(
        &self,
        cursor: Option<&str>,
    ) -> Result<(Vec<String>, Option<String>), StoreError> {
        let from = cursor.unwrap_or("0");
        if from.parse::<u64>().is_err() {
            return Err(StoreError::Invalid(format!(
                "store `{}`: cursor {from:?} is not one list-keys returned",
                self.name
            )));
        }
        let (next, keys): (String, Vec<String>) = self
            .query(
                redis::cmd("SCAN")
                    .arg(from)
                    .arg("MATCH")
                    .arg(format!("{}*", self.prefix))
                    .arg("COUNT")
                    .arg(PAGE_KEYS),
            )
            .await?;
        let keys = keys
            .into_iter()
            .filter_map(|k| k.strip_prefix(&self.prefix).map(str::to_owned))
            .collect();
        Ok((keys, (next != "0").then_some(next)))
    }

    pub(super) async fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        let result = self
            .query(redis::cmd("INCRBY").arg(self.key(key)).arg(delta))
            .await;
        match result {
            // Redis's own wording differs by version; say it the way the
            // embedded store does.
            Err(StoreError::Failed(why)) if why.contains("not an integer") => {
                Err(not_a_count(&self.name))
            }
            Err(StoreError::Failed(why)) if why.contains("overflow") => {
                Err(StoreError::Invalid(format!(
                    "store `{}`: adding {delta} overflows a 64-bit integer",
                    self.name
                )))
            }
            other => other,
        }
    }

    pub(super) async fn swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        value: Vec<u8>,
    ) -> Result<Swap, StoreError> {
        let manager = self.manager()?;
        let mut invocation = self.swap.key(self.key(key));
        match expected {
            Some(expected) => invocation.arg("1").arg(expected),
            None => invocation.arg("0").arg(""),
        };
        invocation.arg(value);
        let answer: Vec<Value> = self
            .timed(async move {
                let mut conn = manager;
                invocation.invoke_async(&mut conn).await
            })
            .await?;
        match answer.as_slice() {
            [Value::Int(1)] => Ok(Swap::Done),
            [Value::Int(0), Value::BulkString(now)] => Ok(Swap::Changed(Some(now.clone()))),
            [Value::Int(0), Value::Nil] | [Value::Int(0)] => Ok(Swap::Changed(None)),
            other => Err(StoreError::Failed(format!(
                "store `{}`: unexpected swap answer {other:?}",
                self.name
            ))),
        }
    }

    pub(super) async fn get_many(
        &self,
        keys: &[String],
    ) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut cmd = redis::cmd("MGET");
        for key in keys {
            cmd.arg(self.key(key));
        }
        self.query(&cmd).await
    }

    pub(super) async fn set_many(&self, pairs: Vec<(String, Vec<u8>)>) -> Result<(), StoreError> {
        if pairs.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("MSET");
        for (key, value) in pairs {
            cmd.arg(self.key(&key)).arg(value);
        }
        self.query(&cmd).await
    }

    /// Whether the server answers now.
    pub(super) async fn ping(&self) -> Result<(), StoreError> {
        self.query::<String>(&redis::cmd("PING")).await.map(drop)
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn manager(&self) -> Result<ConnectionManager, StoreError> {
        let made = self.manager.get_or_init(|| {
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(self.timeout))
                .set_response_timeout(Some(self.timeout))
                .set_number_of_retries(2)
                .set_max_delay(self.timeout);
            ConnectionManager::new_lazy_with_config(self.client.clone(), config)
                .map_err(|e| e.to_string())
        });
        made.clone().map_err(|why| {
            StoreError::Failed(format!(
                "store `{}`: cannot make its client: {why}",
                self.name
            ))
        })
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        let mut conn = self.manager()?;
        self.timed(async move { cmd.query_async(&mut conn).await })
            .await
    }

    /// Runs one call within the store's timeout, its error said plainly.
    async fn timed<T>(
        &self,
        call: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(self.error(&e)),
            Err(_) => Err(StoreError::Unavailable(format!(
                "store `{}` is unreachable: no answer within {:?}",
                self.name, self.timeout
            ))),
        }
    }

    fn error(&self, e: &RedisError) -> StoreError {
        let name = &self.name;
        if e.is_io_error()
            || e.is_connection_refusal()
            || e.is_connection_dropped()
            || e.is_timeout()
        {
            StoreError::Unavailable(format!("store `{name}` is unreachable: {e}"))
        } else if e.code() == Some("OOM") {
            StoreError::Full(format!(
                "store `{name}` is full: the Redis server is out of memory ({e})"
            ))
        } else {
            StoreError::Failed(format!("store `{name}`: {e}"))
        }
    }
}

/// `[store.tls]`'s files, read and checked: PEM holding at least one CA
/// certificate, and a certificate chain and its key.
fn certificates(tls: &StoreTls) -> Result<TlsCertificates, String> {
    let read = |key: &str, path: &Path| {
        std::fs::read(path).map_err(|e| format!("tls.{key}: {}: {e}", path.display()))
    };
    let certs = |key: &str, path: &Path| {
        let pem = read(key, path)?;
        let found = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("tls.{key}: {}: {e}", path.display()))?;
        if found.is_empty() {
            return Err(format!(
                "tls.{key}: {}: no PEM certificate in it",
                path.display()
            ));
        }
        Ok(pem)
    };
    let root_cert = tls
        .ca_file
        .as_deref()
        .map(|path| certs("ca_file", path))
        .transpose()?;
    let client_tls = match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => {
            let client_key = read("key", key)?;
            PrivateKeyDer::from_pem_slice(&client_key)
                .map_err(|e| format!("tls.key: {}: {e}", key.display()))?;
            Some(ClientTlsConfig {
                client_cert: certs("cert", cert)?,
                client_key,
            })
        }
        _ => None,
    };
    Ok(TlsCertificates {
        client_tls,
        root_cert,
    })
}
