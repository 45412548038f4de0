//! The key-value stores handlers keep state in: `[[store]]`s opened once at
//! start, shared by every handler that lists them, and served to guests
//! through `wasi:keyvalue` (`runtime/keyvalue.rs`).
//!
//! A store is [`embedded`] (a redb file, writes group-committed and on disk
//! before the guest hears they succeeded) or [`redis`] (a server replicas
//! share). Both keep integers as their decimal text, so a counter reads
//! the same whichever holds it. Limits on keys and values are checked here,
//! once, before either backend sees the call.

mod embedded;
mod metrics;
mod redis;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{HandlerConfig, StoreBackend, StoreConfig};
use crate::telemetry::LogThrottle;

pub use metrics::StoreMetrics;

/// Keys one `list-keys` page holds at most.
const PAGE_KEYS: usize = 1000;

/// Why a store operation failed; the guest gets the text as `other`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The call itself is at fault: a key or value past the limits, or an
    /// increment of a value that is not an integer.
    #[error("{0}")]
    Invalid(String),
    /// The store has no room for the write.
    #[error("{0}")]
    Full(String),
    /// The store cannot be reached, or did not answer in time.
    #[error("{0}")]
    Unavailable(String),
    /// The store failed otherwise.
    #[error("{0}")]
    Failed(String),
}

impl StoreError {
    /// The metrics label.
    fn label(&self) -> &'static str {
        match self {
            StoreError::Invalid(_) => "invalid",
            StoreError::Full(_) => "full",
            StoreError::Unavailable(_) => "unavailable",
            StoreError::Failed(_) => "error",
        }
    }
}

/// What a compare-and-swap found.
#[derive(Debug, PartialEq)]
pub enum Swap {
    /// The key still held the expected value, and now holds the new one.
    Done,
    /// The key held something else: this, for the next try.
    Changed(Option<Vec<u8>>),
}

/// One `[[store]]`, open.
pub struct Store {
    name: Arc<str>,
    max_key_bytes: usize,
    max_value_bytes: usize,
    backend: Backend,
    metrics: StoreMetrics,
}

enum Backend {
    Embedded(embedded::Embedded),
    Redis(Box<redis::Redis>),
    /// Checked by `arrpc-host check`, which writes nothing: never serves.
    Unopened,
}

impl Store {
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.run("get", async {
            self.check_key(key)?;
            match &self.backend {
                Backend::Embedded(e) => e.get(key),
                Backend::Redis(r) => r.get(key).await,
                Backend::Unopened => Err(unopened()),
            }
        })
        .await
    }

    pub async fn set(&self, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
        self.run("set", async {
            self.check_key(key)?;
            self.check_value(&value)?;
            match &self.backend {
                Backend::Embedded(e) => e.set(key.to_owned(), value).await,
                Backend::Redis(r) => r.set(key, value).await,
                Backend::Unopened => Err(unopened()),
            }
        })
        .await
    }

    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.run("delete", async {
            self.check_key(key)?;
            match &self.backend {
                Backend::Embedded(e) => e.delete(vec![key.to_owned()]).await,
                Backend::Redis(r) => r.delete(&[key]).await,
                Backend::Unopened => Err(unopened()),
            }
        })
        .await
    }

    pub async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        self.run("exists", async {
            self.check_key(key)?;
            match &self.backend {
                Backend::Embedded(e) => e.get(key).map(|v| v.is_some()),
                Backend::Redis(r) => r.exists(key).await,
                Backend::Unopened => Err(unopened()),
            }
        })
        .await
    }

    /// One page of keys after `cursor`, and the cursor of the next page.
    pub async fn list_keys(
        &self,
        cursor: Option<&str>,
    ) -> Result<(Vec<String>, Option<String>), StoreError> {
        self.run("list_keys", async {
            match &self.backend {
                Backend::Embedded(e) => e.list_keys(cursor),
                Backend::Redis(r) => r.list_keys(cursor).await,
                Backend::Unopened => Err(unopened()),
            }
        })
        .await
    }

    /// Adds `delta` to the integer under `key` (0 when missing), atomically.
    pub async fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        self.run("increment", async {
            self.check_key(key)?;
            match &self.backend {
                Backend::Embedded(e) => e.increment(key.to_owned(), delta).await,
                Backend::Redis(r) => r.increment(key, delta).await,
                Backend::Unopened => Err(unopened()),
            }
        })
        .await
    }

    /// Writes `value` if `key` still holds `expected` (none: is missing).
    pub async fn swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        value: Vec<u8>,
    ) -> Result<Swap, StoreError> {
        self.run("swap", async {
            self.check_key(key)?;
            self.check_value(&value)?;
            match &self.backend {
                Backend::Embedded(e) => {
                    e.swap(key.to_owned(), expected.map(<[u8]>::to_vec), value)
                        .await
                }
                Backend::Redis(r) => r.swap(key, expected, value).await,
                Backend::Unopened => Err(unopened()),
            }
        })
        .await
    }

    /// Each key's value, in the order given.
    pub async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        self.run("get_many", async {
            keys.iter().try_for_each(|k| self.check_key(k))?;
            match &self.backend {
                Backend::Embedded(e) => e.get_many(keys),
                Backend::Redis(r) => r.get_many(keys).await,
                Backend::Unopened => Err(unopened()),
            }
        })
        .await
    }

    pub async fn set_many(&self, pairs: Vec<(String, Vec<u8>)>) -> Result<(), StoreError> {
        self.run("set_many", async {
            for (key, value) in &pairs {
                self.check_key(key)?;
                self.check_value(value)?;
            }
            match &self.backend {
                Backend::Embedded(e) => e.set_many(pairs).await,
                Backend::Redis(r) => r.set_many(pairs).await,
                Backend::Unopened => Err(unopened()),
            }
        })
        .await
    }

    pub async fn delete_many(&self, keys: Vec<String>) -> Result<(), StoreError> {
        self.run("delete_many", async {
            keys.iter().try_for_each(|k| self.check_key(k))?;
            match &self.backend {
                Backend::Embedded(e) => e.delete(keys).await,
                Backend::Redis(r) => {
                    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
                    r.delete(&keys).await
                }
                Backend::Unopened => Err(unopened()),
            }
        })
        .await
    }

    /// Why the store cannot serve now, if it cannot: for `/readyz`.
    async fn unreachable(&self) -> Option<String> {
        match &self.backend {
            Backend::Redis(r) => r.ping().await.err().map(|e| e.to_string()),
            Backend::Embedded(_) | Backend::Unopened => None,
        }
    }

    /// Counts and times one operation.
    async fn run<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let result = call.await;
        let label = result.as_ref().err().map_or("ok", StoreError::label);
        self.metrics
            .record(&self.name, operation, label, started.elapsed());
        result
    }

    fn check_key(&self, key: &str) -> Result<(), StoreError> {
        if key.len() > self.max_key_bytes {
            return Err(StoreError::Invalid(format!(
                "key of {} bytes is longer than store `{}` allows (max_key_bytes = {})",
                key.len(),
                self.name,
                self.max_key_bytes
            )));
        }
        Ok(())
    }

    fn check_value(&self, value: &[u8]) -> Result<(), StoreError> {
        if value.len() > self.max_value_bytes {
            return Err(StoreError::Invalid(format!(
                "value of {} bytes is larger than store `{}` allows (max_value_bytes = {})",
                value.len(),
                self.name,
                self.max_value_bytes
            )));
        }
        Ok(())
    }
}

fn unopened() -> StoreError {
    StoreError::Unavailable("store not opened: `arrpc-host check` only inspects stores".into())
}

/// The integer a stored value holds, as decimal text (Redis's INCRBY form).
fn parse_count(store: &str, value: &[u8]) -> Result<i64, StoreError> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| not_a_count(store))
}

fn not_a_count(store: &str) -> StoreError {
    StoreError::Invalid(format!(
        "store `{store}`: the value is not an integer in decimal text, so it cannot be incremented"
    ))
}

/// Every `[[store]]` of the config, by name.
#[derive(Default)]
pub struct Stores {
    stores: HashMap<String, Arc<Store>>,
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.stores.keys()).finish()
    }
}

impl Stores {
    /// Opens every store: embedded files are created or checked whole
    /// (a torn or corrupt file is refused, never started empty), Redis
    /// clients are made and connect on first use. Blocks on file I/O.
    /// Errors name the store and the file or URL.
    pub fn open(configs: &[StoreConfig], metrics: StoreMetrics) -> Result<Stores, String> {
        Stores::make(configs, metrics, true)
    }

    /// Checks every store's settings and files without writing anything:
    /// what `arrpc-host check` does. The stores it returns never serve.
    pub fn inspect(configs: &[StoreConfig]) -> Result<Stores, String> {
        Stores::make(configs, StoreMetrics::default(), false)
    }

    fn make(configs: &[StoreConfig], metrics: StoreMetrics, open: bool) -> Result<Stores, String> {
        let mut stores = HashMap::new();
        for config in configs {
            let name: Arc<str> = config.name.as_str().into();
            let at = |e: String| format!("store `{name}`: {e}");
            let backend = match config.backend() {
                StoreBackend::Embedded(path) if open => Backend::Embedded(
                    embedded::Embedded::open(name.clone(), path, config).map_err(at)?,
                ),
                StoreBackend::Embedded(path) => {
                    embedded::Embedded::inspect(path).map_err(at)?;
                    Backend::Unopened
                }
                StoreBackend::Redis(url) => {
                    let redis = redis::Redis::new(name.clone(), url, config).map_err(at)?;
                    if open {
                        Backend::Redis(Box::new(redis))
                    } else {
                        Backend::Unopened
                    }
                }
            };
            let store = Store {
                name,
                max_key_bytes: config.max_key_bytes,
                max_value_bytes: config.max_value_bytes,
                backend,
                metrics: metrics.clone(),
            };
            stores.insert(config.name.clone(), Arc::new(store));
        }
        Ok(Stores { stores })
    }

    /// The stores `config`'s handler may open; an error when it lists one
    /// this host did not start with.
    pub fn for_handler(&self, config: &HandlerConfig) -> Result<Arc<HandlerStores>, String> {
        let stores = config
            .stores
            .iter()
            .map(|name| match self.stores.get(name) {
                Some(store) => Ok((name.clone(), store.clone())),
                None => Err(format!(
                    "stores: `{name}` is not a store this host started with; [[store]] changes take a restart"
                )),
            })
            .collect::<Result<_, String>>()?;
        Ok(Arc::new(HandlerStores {
            handler: config.name.as_str().into(),
            stores,
            refusals: LogThrottle::new(),
        }))
    }

    /// Why some store cannot serve now, each named; `None` when all can.
    pub async fn unreachable(&self) -> Option<String> {
        let mut reasons = Vec::new();
        for store in self.stores.values() {
            if let Some(why) = store.unreachable().await {
                reasons.push(format!("store `{}` unreachable: {why}", store.name));
            }
        }
        reasons.sort();
        (!reasons.is_empty()).then(|| reasons.join("; "))
    }

    /// Whether any store needs watching for `/readyz`.
    pub fn has_remote(&self) -> bool {
        self.stores
            .values()
            .any(|s| matches!(s.backend, Backend::Redis(_)))
    }

    /// A line on each store, for `check`'s report.
    pub fn describe(configs: &[StoreConfig]) -> Vec<String> {
        configs
            .iter()
            .map(|c| match c.backend() {
                StoreBackend::Embedded(path) => format!(
                    "store {}: embedded, {} (max {} MiB)",
                    c.name,
                    path.display(),
                    c.max_size_mib
                ),
                StoreBackend::Redis(url) => {
                    let tls = c.tls.as_ref().map_or_else(String::new, |tls| {
                        let trust = tls.ca_file.as_ref().map_or_else(
                            || "the system's CAs".to_owned(),
                            |ca| ca.display().to_string(),
                        );
                        let identity = tls.cert.as_ref().map_or_else(String::new, |cert| {
                            format!(", presenting {}", cert.display())
                        });
                        format!(", TLS trusting {trust}{identity}")
                    });
                    format!(
                        "store {}: redis, {url}{tls} (not contacted by check)",
                        c.name
                    )
                }
            })
            .collect()
    }
}

/// The stores one handler may open, by name.
pub struct HandlerStores {
    handler: Arc<str>,
    stores: HashMap<String, Arc<Store>>,
    /// A guest can ask for stores it may not open as fast as it likes.
    refusals: LogThrottle,
}

impl HandlerStores {
    /// The store `name`, when this handler lists it; else `None`, logged.
    pub fn open(&self, name: &str) -> Option<&Arc<Store>> {
        let store = self.stores.get(name);
        if store.is_none()
            && let Some(suppressed) = self.refusals.admit()
        {
            tracing::warn!(
                handler = %self.handler,
                store = name,
                suppressed,
                "store open refused: the handler's stores do not list it"
            );
        }
        store
    }
}

/// How long `/readyz` waits between checks of Redis stores.
pub const READY_CHECK_INTERVAL: Duration = Duration::from_secs(2);
