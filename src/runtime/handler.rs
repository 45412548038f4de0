//! One loaded handler and what it costs to run one message through it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Store};
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use super::HostState;
use super::bindings::{HandlerPre, arrpc::handler::types::Context};
use super::guest_log::GuestLog;
use crate::config::{DirGrant, HandlerConfig};

/// Largest table a guest may grow; far above what compilers emit.
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

/// A compiled, pre-instantiated handler component.
pub struct Handler {
    /// The settings this version was loaded with.
    config: HandlerConfig,
    name: Arc<str>,
    module: PathBuf,
    sha256: String,
    pre: HandlerPre<HostState>,
    timeout: Duration,
    max_memory: usize,
    /// One permit per instance allowed to run at once.
    instances: Arc<Semaphore>,
    max_instances: u32,
    /// Whether the engine meters fuel; when it does, a handler without a
    /// fuel limit gets unlimited fuel.
    metered: bool,
    fuel: Option<u64>,
    env: Vec<(String, String)>,
    dirs: Vec<DirGrant>,
    max_output: usize,
}

/// One message for a handler.
pub struct Request<'a> {
    /// Exactly one MessagePack value.
    pub payload: &'a [u8],
    pub request_id: u64,
    pub peer: String,
    pub traceparent: Option<String>,
}

/// Why a message produced no reply from its handler. The `Display` text is
/// what the client receives.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("handler `{handler}` is busy: all {max} instances are in use")]
    Busy { handler: Arc<str>, max: u32 },
    #[error("handler `{handler}` exceeded its timeout of {} ms", after.as_millis())]
    Timeout { handler: Arc<str>, after: Duration },
    #[error("handler `{handler}` exceeded its memory limit of {} MiB", limit >> 20)]
    MemoryLimit { handler: Arc<str>, limit: usize },
    #[error("handler `{handler}` exhausted its fuel limit of {fuel}")]
    FuelExhausted { handler: Arc<str>, fuel: u64 },
    /// A granted directory could not be opened for this message.
    #[error("handler `{handler}` cannot open its granted directory {host}: {detail}")]
    Grant {
        handler: Arc<str>,
        host: String,
        detail: String,
    },
    #[error("handler `{handler}` trapped: {detail}")]
    Trap { handler: Arc<str>, detail: String },
    /// The handler returned an error: its text goes to the client unchanged.
    #[error("{0}")]
    Failed(String),
    #[error("handler `{handler}` returned {reason}")]
    InvalidOutput {
        handler: Arc<str>,
        reason: &'static str,
    },
}

/// Per-store resource limits, remembering which one was hit.
pub(super) struct Limits {
    max_memory: usize,
    memory_hit: bool,
}

impl ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_memory {
            self.memory_hit = true;
            return Err(wasmtime::Error::msg("memory limit reached"));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

impl Handler {
    pub(super) fn new(
        config: &HandlerConfig,
        sha256: String,
        pre: HandlerPre<HostState>,
        metered: bool,
    ) -> Self {
        Handler {
            config: config.clone(),
            name: config.name.as_str().into(),
            module: config.module.clone(),
            sha256,
            pre,
            timeout: config.timeout,
            max_memory: (config.max_memory_mib as usize) << 20,
            instances: Arc::new(Semaphore::new(config.max_instances as usize)),
            max_instances: config.max_instances,
            metered,
            fuel: config.fuel,
            env: config.env.clone().into_iter().collect(),
            dirs: config.dirs.clone(),
            max_output: config.max_output_bytes,
        }
    }

    pub fn config(&self) -> &HandlerConfig {
        &self.config
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name, shared: metrics label their series with it.
    pub fn shared_name(&self) -> &Arc<str> {
        &self.name
    }

    pub fn module(&self) -> &std::path::Path {
        &self.module
    }

    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// Runs one message in a fresh instance and returns the handler's reply,
    /// checked to be exactly one MessagePack value.
    pub async fn call(&self, request: Request<'_>) -> Result<Vec<u8>, CallError> {
        let _permit = self.instances.try_acquire().map_err(|_| CallError::Busy {
            handler: self.name.clone(),
            max: self.max_instances,
        })?;
        // A traceparent is `version-traceid-parentid-flags`.
        let trace_id = request
            .traceparent
            .as_deref()
            .and_then(|tp| tp.split('-').nth(1))
            .map(Arc::from);
        let mut store = self.new_store(request.request_id, trace_id)?;
        let context = Context {
            handler: self.name.to_string(),
            request_id: request.request_id,
            peer: request.peer,
            timeout_ms: self.timeout.as_millis().try_into().unwrap_or(u32::MAX),
            traceparent: request.traceparent,
        };
        let run = async {
            let guest = self.pre.instantiate_async(&mut store).await?;
            guest
                .call_handle(&mut store, &context, request.payload)
                .await
        };
        let outcome = tokio::time::timeout(self.timeout, run).await;
        match outcome {
            Err(_) => Err(CallError::Timeout {
                handler: self.name.clone(),
                after: self.timeout,
            }),
            Ok(Err(_)) if store.data().limits.memory_hit => Err(CallError::MemoryLimit {
                handler: self.name.clone(),
                limit: self.max_memory,
            }),
            Ok(Err(trap))
                if trap.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::OutOfFuel) =>
            {
                Err(CallError::FuelExhausted {
                    handler: self.name.clone(),
                    fuel: self.fuel.unwrap_or(u64::MAX),
                })
            }
            Ok(Err(trap)) => {
                tracing::warn!(handler = %self.name, request_id = request.request_id, error = ?trap, "handler trapped");
                let detail = match trap.downcast_ref::<wasmtime::Trap>() {
                    Some(code) => code.to_string(),
                    None => trap.root_cause().to_string(),
                };
                Err(CallError::Trap {
                    handler: self.name.clone(),
                    detail,
                })
            }
            Ok(Ok(Err(message))) => Err(CallError::Failed(message)),
            Ok(Ok(Ok(reply))) => match arrpc_wire::frame::value_len(&reply) {
                Some(len) if len == reply.len() => Ok(reply),
                Some(_) => Err(self.invalid_output("more than one MessagePack value")),
                None => Err(self.invalid_output("bytes that are not one whole MessagePack value")),
            },
        }
    }

    fn invalid_output(&self, reason: &'static str) -> CallError {
        CallError::InvalidOutput {
            handler: self.name.clone(),
            reason,
        }
    }

    /// A store with logged stdout/stderr, only the capabilities granted in
    /// the config, the memory cap, the fuel limit, and a yield at every
    /// epoch tick.
    fn new_store(
        &self,
        request_id: u64,
        trace_id: Option<Arc<str>>,
    ) -> Result<Store<HostState>, CallError> {
        let mut wasi = WasiCtxBuilder::new();
        let log = |stream| {
            GuestLog::new(
                self.name.clone(),
                request_id,
                trace_id.clone(),
                stream,
                self.max_output,
            )
        };
        wasi.stdout(log("stdout"))
            .stderr(log("stderr"))
            .envs(&self.env)
            .allow_tcp(false)
            .allow_udp(false);
        for grant in &self.dirs {
            let perms = if grant.writable {
                FsPerms::ReadWrite
            } else {
                FsPerms::ReadOnly
            };
            wasi.preopened_dir(&grant.host, &grant.guest, perms)
                .map_err(|e| CallError::Grant {
                    handler: self.name.clone(),
                    host: grant.host.display().to_string(),
                    detail: format!("{e:#}"),
                })?;
        }
        let state = HostState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limits: Limits {
                max_memory: self.max_memory,
                memory_hit: false,
            },
        };
        let mut store = Store::new(self.pre.engine(), state);
        store.limiter(|state| &mut state.limits);
        if self.metered {
            store
                .set_fuel(self.fuel.unwrap_or(u64::MAX))
                .expect("the engine meters fuel");
        }
        // The deadline must be set before instantiation: a new store's is 0.
        store.set_epoch_deadline(1);
        store.epoch_deadline_async_yield_and_update(1);
        Ok(store)
    }
}
