//! The handler runtime: wasmtime engine, WASI linker and loaded handlers.
//!
//! Work that can be paid once is paid at load: each component is compiled
//! (or read back from the compile cache) and pre-instantiated when it is
//! loaded. Every message then gets a fresh store and instance from the
//! pooling allocator, so no state survives from one message to the next,
//! unless its handler sets `reuse` (see `pool.rs`).

mod cache;
mod error;
mod guest_log;
mod handler;
mod keyvalue;
mod module;
mod peer;
mod pool;
mod registry;
mod store;
mod upstream;
mod world;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::config::{Config, HandlerConfig, OutboundConfig, UpstreamConfig};
use crate::keyvalue::Stores;
use crate::outbound::{Outbound, OutboundMetrics};

pub use cache::ComponentCache;
pub use error::CallError;
pub use handler::{Handler, Request};
pub use module::{LoadError, run_build};
pub use peer::{Caller, Identity, Peer};
pub use registry::{HandlerRegistry, HandlerSet};
pub use store::HostState;
pub use upstream::MAX_CALL_DEPTH;

/// How often the engine's epoch advances. A running guest yields to the
/// async executor at every tick, so a busy handler cannot starve the
/// connections sharing its worker thread, and a timeout fires within a tick.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Bytes of each linear memory, table and fiber stack kept mapped between
/// instances in a pool slot.
const KEEP_RESIDENT: usize = 2 << 20;

/// Sizes the instance pool.
#[derive(Debug, Clone, Copy)]
pub struct PoolSize {
    /// Handler instances alive at once, across all handlers.
    pub instances: u32,
}

impl PoolSize {
    /// Room for every handler's `max_instances` twice over (at least 1,000),
    /// so a config reload can add handlers without a restart.
    pub fn for_handlers(handlers: &[HandlerConfig]) -> PoolSize {
        let needed: u32 = handlers.iter().map(|h| h.max_instances).sum();
        PoolSize {
            instances: needed
                .saturating_mul(2)
                .clamp(1_000, crate::config::MAX_INSTANCES),
        }
    }

    /// Whether a pool of this size serves `handlers`.
    pub fn fits(&self, handlers: &[HandlerConfig]) -> bool {
        handlers.iter().map(|h| h.max_instances).sum::<u32>() <= self.instances
    }
}

/// How to build the engine for a set of handlers.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    pub pool: PoolSize,
    /// Meter fuel. It slows every guest, so it is on only when some handler
    /// sets a fuel limit; the others then get unlimited fuel.
    pub consume_fuel: bool,
    /// Where compiled components are kept; `None` compiles at every start.
    pub cache: Option<ComponentCache>,
    /// Name guest functions for `perf` in `/tmp/perf-<pid>.map`.
    pub perf_map: bool,
    /// How handlers' allowed outbound requests are made.
    pub outbound: OutboundConfig,
    /// The arrpc services handlers may call.
    pub upstreams: Vec<UpstreamConfig>,
    /// Where those requests are counted; unregistered unless the caller
    /// registered them.
    pub outbound_metrics: OutboundMetrics,
    /// The key-value stores, opened (or, for `check`, inspected) already.
    pub stores: Arc<Stores>,
}

impl RuntimeOptions {
    /// Options for `config` (whose paths are already resolved), with no
    /// stores: the caller opens those and sets `stores`.
    pub fn for_config(config: &Config) -> RuntimeOptions {
        let cache_dir = match (&config.server.cache_dir, config.server.compile_cache) {
            (_, false) => None,
            (Some(dir), true) => Some(dir.clone()),
            (None, true) => ComponentCache::default_dir(),
        };
        RuntimeOptions {
            pool: PoolSize::for_handlers(&config.handlers),
            consume_fuel: config.handlers.iter().any(|h| h.fuel.is_some()),
            cache: cache_dir.map(|dir| {
                ComponentCache::new(dir, config.server.cache_max_mib.saturating_mul(1 << 20))
            }),
            perf_map: config.server.perf_map,
            outbound: config.outbound.clone(),
            upstreams: config.upstreams.clone(),
            outbound_metrics: OutboundMetrics::default(),
            stores: Arc::default(),
        }
    }
}

/// The engine and linker every handler shares.
#[derive(Clone)]
pub struct Runtime {
    engine: Engine,
    linker: Arc<Linker<HostState>>,
    consume_fuel: bool,
    cache: Option<ComponentCache>,
    /// Pre-instantiated components by module sha256, while some handler
    /// serves them: entries that name the same module share its compiled
    /// code and memory images (tens of MiB for an interpreter) instead of
    /// holding a copy each.
    loaded: Arc<Mutex<HashMap<String, Weak<world::HandlerPre>>>>,
    /// What handlers' outbound requests share.
    outbound: Arc<Outbound>,
    /// The handlers being served, for in-process upstream calls.
    local: upstream::LocalHandlers,
    stores: Arc<Stores>,
}

impl Runtime {
    pub fn new(options: RuntimeOptions) -> wasmtime::Result<Runtime> {
        let pool = options.pool;
        let mut limits = PoolingAllocationConfig::default();
        limits
            .total_component_instances(pool.instances)
            .total_core_instances(pool.instances.saturating_mul(8))
            .total_memories(pool.instances)
            .total_tables(pool.instances.saturating_mul(4))
            .total_stacks(pool.instances)
            // Slots are reserved at 4 GiB each anyway; the per-handler cap is
            // enforced by the store's limiter, so a reload may raise it.
            .max_memory_size((crate::config::MAX_MEMORY_MIB as usize) << 20)
            // Reset a slot by zeroing only the pages the last instance dirtied
            // (found with PAGEMAP_SCAN where the kernel has it), keeping them
            // mapped: unmapping and faulting pages back in dominated the cost
            // of a fresh instance.
            .pagemap_scan(wasmtime::Enabled::Auto)
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(KEEP_RESIDENT)
            .async_stack_keep_resident(KEEP_RESIDENT);
        let mut config = wasmtime::Config::new();
        config
            .epoch_interruption(true)
            .consume_fuel(options.consume_fuel)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(limits));
        if options.perf_map {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config)?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        world::add_to_linker(&mut linker)?;

        let weak = engine.weak();
        std::thread::Builder::new()
            .name("arrpc-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .map_err(wasmtime::Error::from)?;

        Ok(Runtime {
            engine,
            linker: Arc::new(linker),
            consume_fuel: options.consume_fuel,
            cache: options.cache,
            loaded: Arc::default(),
            outbound: Arc::new(
                Outbound::new(
                    &options.outbound,
                    &options.upstreams,
                    options.outbound_metrics,
                )
                .map_err(wasmtime::Error::msg)?,
            ),
            local: Arc::default(),
            stores: options.stores,
        })
    }

    /// The stores handlers open.
    pub fn stores(&self) -> &Arc<Stores> {
        &self.stores
    }

    /// Lets handlers call `registry`'s handlers in process, as upstreams
    /// with a `handler`; the first registry given is the one served.
    pub fn serve_locally(&self, registry: &Arc<HandlerRegistry>) {
        let _ = self.local.set(Arc::downgrade(registry));
    }

    /// Builds the module if it is missing and a build command is set, then
    /// compiles and pre-instantiates it.
    pub async fn load(
        &self,
        config: &HandlerConfig,
        base_dir: &Path,
    ) -> Result<Handler, LoadError> {
        module::build_if_missing(config, base_dir).await?;
        let module = module::read(config)?;
        self.compile(config, module).await
    }

    /// Like [`Runtime::load`], but `None` when `current` already serves the
    /// same module bytes with the same settings.
    pub async fn reload(
        &self,
        config: &HandlerConfig,
        base_dir: &Path,
        current: &Handler,
    ) -> Result<Option<Handler>, LoadError> {
        module::build_if_missing(config, base_dir).await?;
        let module = module::read(config)?;
        if module.sha256 == current.sha256() && current.config() == config {
            return Ok(None);
        }
        self.compile(config, module).await.map(Some)
    }

    async fn compile(
        &self,
        config: &HandlerConfig,
        module: module::ModuleBytes,
    ) -> Result<Handler, LoadError> {
        let module::ModuleBytes { bytes, sha256 } = module;
        let started = std::time::Instant::now();
        let shared = self.shared(&sha256);
        let (pre, from_cache) = match &shared {
            Some(pre) => (pre.clone(), false),
            None => {
                let (component, from_cache) = self.component(config, bytes, &sha256).await?;
                let pre = self
                    .linker
                    .instantiate_pre(&component)
                    .map_err(|e| format!("does not implement the arrpc:handler world: {e:#}"))
                    .and_then(|pre| world::HandlerPre::new(&component, pre))
                    .map_err(|reason| LoadError::new(config, reason))?;
                (self.share(&sha256, pre), from_cache)
            }
        };
        let load_ms = (started.elapsed().as_secs_f64() * 1e6).round() / 1e3;
        tracing::info!(
            handler = %config.name,
            module = %config.module.display(),
            sha256 = %sha256,
            from_cache,
            shared = shared.is_some(),
            load_ms,
            world = %pre.version(),
            "loaded handler"
        );
        let outbound = self
            .outbound
            .for_handler(config)
            .map_err(|reason| LoadError::new(config, reason))?;
        let stores = self
            .stores
            .for_handler(config)
            .map_err(|reason| LoadError::new(config, reason))?;
        Ok(Handler::new(
            config,
            sha256,
            pre,
            self.consume_fuel,
            outbound,
            self.local.clone(),
            stores,
        ))
    }

    /// The pre-instantiated component a loaded handler already serves for
    /// this module, if any.
    fn shared(&self, sha256: &str) -> Option<Arc<world::HandlerPre>> {
        let loaded = lock(&self.loaded);
        loaded.get(sha256).and_then(Weak::upgrade)
    }

    /// Lists `pre` for handlers loaded later, dropping entries no handler
    /// serves any more.
    fn share(&self, sha256: &str, pre: world::HandlerPre) -> Arc<world::HandlerPre> {
        let pre = Arc::new(pre);
        let mut loaded = lock(&self.loaded);
        loaded.retain(|_, pre| pre.strong_count() > 0);
        loaded.insert(sha256.to_owned(), Arc::downgrade(&pre));
        pre
    }

    /// The compiled component, from the cache when it holds a usable entry,
    /// else compiled now (and stored for the next start). Both run on a
    /// blocking thread: compiling takes from milliseconds to seconds, and
    /// reading an entry is file I/O.
    async fn component(
        &self,
        config: &HandlerConfig,
        bytes: Vec<u8>,
        sha256: &str,
    ) -> Result<(Component, bool), LoadError> {
        let engine = self.engine.clone();
        let cache = self.cache.clone();
        let sha256 = sha256.to_owned();
        let name = config.name.clone();
        tokio::task::spawn_blocking(move || {
            if let Some(component) = cache.as_ref().and_then(|c| c.load(&engine, &sha256)) {
                return Ok((component, true));
            }
            let component = Component::new(&engine, &bytes)?;
            if let Some(cache) = &cache
                && let Err(e) = cache.store(&engine, &sha256, &component)
            {
                tracing::warn!(handler = %name, error = %e, "compiled component not cached");
            }
            Ok((component, false))
        })
        .await
        .map_err(|e| LoadError::new(config, format!("compilation panicked: {e}")))?
        .map_err(|e: wasmtime::Error| {
            LoadError::new(config, format!("not a valid component: {e:#}"))
        })
    }
}

/// Locks `mutex`, also after a panic elsewhere left it poisoned: what it
/// guards stays consistent between statements, so serving goes on.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
