//! One loaded handler and what it costs to run one message through it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Store};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder};

use super::HostState;
use super::guest_log::GuestLog;
use super::world::{Caller, Context, Guest, HandlerPre};
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
    pre: Arc<HandlerPre>,
    timeout: Duration,
    max_memory: usize,
    instances: InstanceCount,
    /// Whether the engine meters fuel; when it does, a handler without a
    /// fuel limit gets unlimited fuel.
    metered: bool,
    fuel: Option<u64>,
    /// How each message's WASI context is made.
    wasi: Arc<WasiRecipe>,
    /// Messages one instance may serve (`reuse`); 1 means a fresh instance
    /// per message.
    uses_per_instance: u32,
    /// Instances between messages, for `reuse` > 1.
    idle: Mutex<Vec<Warm>>,
}

/// Instances of one handler running now, held to its `max_instances`.
/// A full handler answers "busy" at once, so nothing ever waits here and
/// a counter serves where a semaphore would take a lock on release.
struct InstanceCount {
    running: AtomicU32,
    max: u32,
}

impl InstanceCount {
    fn try_take(&self) -> Option<Running<'_>> {
        self.running
            .fetch_update(Ordering::Acquire, Ordering::Relaxed, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| Running(&self.running))
    }
}

/// One running instance, counted until dropped.
struct Running<'a>(&'a AtomicU32);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Release);
    }
}

/// An instance kept for its next message, with how many it has served.
struct Warm {
    store: Store<HostState>,
    guest: Guest,
    served: u32,
}

/// What a guest's WASI context is made of: no capabilities but those
/// granted, stdout and stderr into the host log.
pub(super) struct WasiRecipe {
    name: Arc<str>,
    env: Vec<(String, String)>,
    dirs: Vec<DirGrant>,
    max_output: usize,
}

impl WasiRecipe {
    /// Everything but the granted directories, which can fail to open.
    fn builder(
        &self,
        request_id: u64,
        trace_id: Option<Arc<str>>,
    ) -> (WasiCtxBuilder, [GuestLog; 2]) {
        let log = |stream| {
            GuestLog::new(
                self.name.clone(),
                request_id,
                trace_id.clone(),
                stream,
                self.max_output,
            )
        };
        let logs = [log("stdout"), log("stderr")];
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(logs[0].clone())
            .stderr(logs[1].clone())
            .envs(&self.env)
            .allow_tcp(false)
            .allow_udp(false);
        (wasi, logs)
    }

    /// The context with its directories, made before the guest runs so a
    /// directory that cannot be opened fails the message clearly.
    fn build_with_dirs(
        &self,
        request_id: u64,
        trace_id: Option<Arc<str>>,
    ) -> Result<(WasiCtx, [GuestLog; 2]), CallError> {
        let (mut wasi, logs) = self.builder(request_id, trace_id);
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
        Ok((wasi.build(), logs))
    }

    /// The context for a guest that has no directories, made on its first
    /// WASI call; a guest that makes none never pays for it.
    pub(super) fn build_lazily(
        &self,
        request_id: u64,
        trace_id: Option<Arc<str>>,
    ) -> (WasiCtx, [GuestLog; 2]) {
        let (mut wasi, logs) = self.builder(request_id, trace_id);
        (wasi.build(), logs)
    }
}

/// One message for a handler.
pub struct Request<'a> {
    /// Exactly one MessagePack value.
    pub payload: &'a [u8],
    pub request_id: u64,
    pub peer: &'a str,
    pub traceparent: Option<&'a str>,
    /// Who called, when a client certificate was verified; handlers built
    /// against arrpc:handler@0.1.0 are not told.
    pub caller: Option<Caller<'a>>,
    /// When the call began: its timeout counts from here.
    pub started: Instant,
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
    /// Bytes of linear memory the instance has grown to.
    memory: usize,
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
        self.memory = self.memory.max(desired);
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
        pre: Arc<HandlerPre>,
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
            instances: InstanceCount {
                running: AtomicU32::new(0),
                max: config.max_instances,
            },
            metered,
            fuel: config.fuel,
            wasi: Arc::new(WasiRecipe {
                name: config.name.as_str().into(),
                env: config.env.clone().into_iter().collect(),
                dirs: config.dirs.clone(),
                max_output: config.max_output_bytes,
            }),
            uses_per_instance: config.reuse.max(1),
            idle: Mutex::new(Vec::new()),
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

    /// Runs one message in a fresh instance (or, with `reuse`, in a kept
    /// one) and returns the handler's reply, checked to be exactly one
    /// MessagePack value.
    pub async fn call(&self, request: Request<'_>) -> Result<Vec<u8>, CallError> {
        let _running = self.instances.try_take().ok_or_else(|| CallError::Busy {
            handler: self.name.clone(),
            max: self.instances.max,
        })?;
        // A traceparent is `version-traceid-parentid-flags`.
        let trace_id: Option<Arc<str>> = request
            .traceparent
            .and_then(|tp| tp.split('-').nth(1))
            .map(Arc::from);
        let (mut store, guest, served) = self.checkout(request.request_id, trace_id)?;
        let run = async {
            let context = Context {
                handler: &self.name,
                request_id: request.request_id,
                peer: request.peer,
                timeout_ms: self.timeout.as_millis().try_into().unwrap_or(u32::MAX),
                traceparent: request.traceparent,
                caller: request.caller,
            };
            let guest = match guest {
                Some(guest) => guest,
                // Boxed: its future is larger than the rest of this call's
                // together, and a reused instance never needs the room.
                None => Box::pin(self.pre.instantiate_async(&mut store)).await?,
            };
            let reply = guest.handle(&mut store, context, request.payload).await?;
            Ok::<_, wasmtime::Error>((guest, reply))
        };
        // Pinned where it is, so the timeout wraps a pointer, not a copy.
        let deadline = tokio::time::Instant::from_std(request.started + self.timeout);
        let outcome = tokio::time::timeout_at(deadline, std::pin::pin!(run)).await;
        let reply = match outcome {
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
            Ok(Ok((guest, reply))) => {
                // Only an instance that returned normally is kept: after a
                // trap or a cancelled call its state is not to be trusted.
                // One grown past half its memory cap is retired too: a
                // garbage-collected runtime (JavaScript's) grows its heap
                // message after message, and the message that finally hit
                // the cap would fail.
                let roomy = store.data().limits.memory <= self.max_memory / 2;
                if served + 1 < self.uses_per_instance && roomy {
                    lock(&self.idle).push(Warm {
                        store,
                        guest,
                        served: served + 1,
                    });
                }
                reply.map_err(CallError::Failed)
            }
        }?;
        match arrpc_wire::frame::value_len(&reply) {
            Some(len) if len == reply.len() => Ok(reply),
            Some(_) => Err(self.invalid_output("more than one MessagePack value")),
            None => Err(self.invalid_output("bytes that are not one whole MessagePack value")),
        }
    }

    /// A kept instance with its store and count of messages served, or a
    /// new store to instantiate in; either readied for this message.
    fn checkout(
        &self,
        request_id: u64,
        trace_id: Option<Arc<str>>,
    ) -> Result<(Store<HostState>, Option<Guest>, u32), CallError> {
        let warm = lock(&self.idle).pop();
        let (mut store, guest, served) = match warm {
            Some(Warm {
                store,
                guest,
                served,
            }) => (store, Some(guest), served),
            None => (self.new_store(request_id, trace_id.clone())?, None, 0),
        };
        self.begin(&mut store, request_id, trace_id);
        Ok((store, guest, served))
    }

    /// Readies a store for the next message: its request id in the guest's
    /// log lines, a full fuel tank and a new epoch deadline.
    fn begin(&self, store: &mut Store<HostState>, request_id: u64, trace_id: Option<Arc<str>>) {
        store.data_mut().begin(request_id, trace_id);
        if self.metered {
            store
                .set_fuel(self.fuel.unwrap_or(u64::MAX))
                .expect("the engine meters fuel");
        }
        // The deadline must be set before instantiation: a new store's is 0.
        store.set_epoch_deadline(1);
    }

    fn invalid_output(&self, reason: &'static str) -> CallError {
        CallError::InvalidOutput {
            handler: self.name.clone(),
            reason,
        }
    }

    /// A store with the memory cap and a yield at every epoch tick; its
    /// WASI context is made now when directories are granted, else on the
    /// guest's first WASI call.
    fn new_store(
        &self,
        request_id: u64,
        trace_id: Option<Arc<str>>,
    ) -> Result<Store<HostState>, CallError> {
        let wasi = if self.wasi.dirs.is_empty() {
            None
        } else {
            Some(self.wasi.build_with_dirs(request_id, trace_id.clone())?)
        };
        let state = HostState {
            recipe: self.wasi.clone(),
            request_id,
            trace_id,
            wasi,
            table: ResourceTable::new(),
            limits: Limits {
                max_memory: self.max_memory,
                memory_hit: false,
                memory: 0,
            },
        };
        let mut store = Store::new(self.pre.engine(), state);
        store.limiter(|state| &mut state.limits);
        store.epoch_deadline_async_yield_and_update(1);
        Ok(store)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
