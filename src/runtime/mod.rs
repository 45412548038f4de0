//! The handler runtime: wasmtime engine, WASI linker and loaded handlers.
//!
//! Work that can be paid once is paid at load: each component is compiled
//! and pre-instantiated when it is loaded. Every message then gets a fresh
//! store and instance from the pooling allocator, so no state survives from
//! one message to the next.

mod guest_log;
mod handler;
mod module;
mod registry;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, InstanceAllocationStrategy, PoolingAllocationConfig};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::config::HandlerConfig;

pub use handler::{CallError, Handler, Request};
pub use module::{LoadError, run_build};
pub use registry::{HandlerRegistry, HandlerSet};

/// Generated bindings for `wit/handler.wit`.
mod bindings {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "handler",
        exports: { default: async },
    });
}

/// How often the engine's epoch advances. A running guest yields to the
/// async executor at every tick, so a busy handler cannot starve the
/// connections sharing its worker thread, and a timeout fires within a tick.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Sizes the instance pool.
#[derive(Debug, Clone, Copy)]
pub struct PoolSize {
    /// Handler instances alive at once, across all handlers.
    pub instances: u32,
    /// Largest linear memory any handler may grow to, in bytes.
    pub max_memory_bytes: usize,
}

impl PoolSize {
    /// A pool large enough for every handler's `max_instances` and memory cap.
    pub fn for_handlers(handlers: &[HandlerConfig]) -> PoolSize {
        PoolSize {
            instances: handlers
                .iter()
                .map(|h| h.max_instances)
                .sum::<u32>()
                .clamp(1, 10_000),
            max_memory_bytes: handlers
                .iter()
                .map(|h| h.max_memory_mib as usize)
                .max()
                .unwrap_or(64)
                << 20,
        }
    }
}

/// Per-store state: the guest's WASI context and its resource limits.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: handler::Limits,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The engine and linker every handler shares.
#[derive(Clone)]
pub struct Runtime {
    engine: Engine,
    linker: Arc<Linker<HostState>>,
}

impl Runtime {
    pub fn new(pool: PoolSize) -> wasmtime::Result<Runtime> {
        let mut limits = PoolingAllocationConfig::default();
        limits
            .total_component_instances(pool.instances)
            .total_core_instances(pool.instances.saturating_mul(8))
            .total_memories(pool.instances.saturating_mul(2))
            .total_tables(pool.instances.saturating_mul(4))
            .total_stacks(pool.instances)
            .max_memory_size(pool.max_memory_bytes);
        let mut config = wasmtime::Config::new();
        config
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(limits));
        let engine = Engine::new(&config)?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;

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
        })
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
        let engine = self.engine.clone();
        let started = std::time::Instant::now();
        // Compiling takes from milliseconds to seconds: keep it off the
        // threads that serve messages.
        let component = tokio::task::spawn_blocking(move || Component::new(&engine, &bytes))
            .await
            .map_err(|e| LoadError::new(config, format!("compilation panicked: {e}")))?
            .map_err(|e| LoadError::new(config, format!("not a valid component: {e:#}")))?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .and_then(bindings::HandlerPre::new)
            .map_err(|e| {
                LoadError::new(
                    config,
                    format!("does not implement the arrpc:handler world: {e:#}"),
                )
            })?;
        tracing::info!(
            handler = %config.name,
            module = %config.module.display(),
            sha256 = %sha256,
            compile_ms = started.elapsed().as_millis() as u64,
            "loaded handler"
        );
        Ok(Handler::new(config, sha256, pre))
    }
}
