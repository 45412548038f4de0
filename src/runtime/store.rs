//! What one instance's store holds: who sent the message being handled,
//! the guest's WASI and `wasi:http` contexts, made from its handler's
//! recipe, and the limiter that caps its memory.

use std::sync::Arc;
use std::time::Instant;

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::error::CallError;
use super::guest_log::GuestLog;
use super::peer::Peer;
use super::upstream::LocalHandlers;
use crate::config::{DirGrant, HandlerConfig};
use crate::keyvalue::HandlerStores;
use crate::outbound::{HandlerOutbound, HttpHooks};

/// Largest table a guest may grow; far above what compilers emit.
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

/// Per-store state: the message being handled, the guest's WASI context
/// and its resource limits.
pub struct HostState {
    /// How to make `wasi` when the guest first needs it.
    recipe: Arc<WasiRecipe>,
    /// Who sent the message being handled, for a guest that asks.
    peer: Arc<Peer>,
    /// The message being handled, for the guest's log lines.
    request_id: u64,
    trace_id: Option<Arc<str>>,
    /// The message being handled, for the guest's outbound requests: when
    /// its time is up, and its `traceparent` when it may make any.
    deadline: Instant,
    traceparent: Option<Arc<str>>,
    /// The WASI context and the stdout/stderr it writes to, once made.
    wasi: Option<(WasiCtx, [GuestLog; 2])>,
    /// The `wasi:http` context, once the guest first uses it.
    http: Option<(WasiHttpCtx, HttpHooks)>,
    table: ResourceTable,
    limits: Limits,
}

impl HostState {
    /// The state of a new store whose memory may grow to `max_memory`
    /// bytes. Its WASI context is made now when directories are granted,
    /// so one that cannot be opened fails the message clearly; else on the
    /// guest's first WASI call, so a guest that makes none never pays for
    /// it.
    pub(super) fn new(
        recipe: &Arc<WasiRecipe>,
        max_memory: usize,
        peer: Arc<Peer>,
        request_id: u64,
        trace_id: Option<Arc<str>>,
    ) -> Result<HostState, CallError> {
        // `begin` sets the message's deadline and trace before it runs.
        let wasi = if recipe.dirs.is_empty() {
            None
        } else {
            Some(recipe.build_with_dirs(request_id, trace_id.clone())?)
        };
        Ok(HostState {
            recipe: recipe.clone(),
            peer,
            request_id,
            trace_id,
            deadline: Instant::now(),
            traceparent: None,
            wasi,
            http: None,
            table: ResourceTable::new(),
            limits: Limits {
                max_memory,
                memory_hit: false,
                memory: 0,
            },
        })
    }

    /// Readies the store for the message from `peer`: what the guest
    /// logs from now on is tagged with `request_id`, and its outbound
    /// requests end by `deadline` and continue `traceparent`.
    pub(super) fn begin(
        &mut self,
        peer: &Arc<Peer>,
        request_id: u64,
        trace_id: Option<Arc<str>>,
        deadline: Instant,
        traceparent: Option<&str>,
    ) {
        self.deadline = deadline;
        // Kept only for a guest that may send it anywhere.
        self.traceparent = traceparent
            .filter(|_| self.recipe.outbound.calls_out())
            .map(Arc::from);
        if !Arc::ptr_eq(&self.peer, peer) {
            self.peer = peer.clone();
        }
        if let Some((_, logs)) = &self.wasi {
            for log in logs {
                log.begin(request_id, trace_id.clone());
            }
        }
        self.request_id = request_id;
        self.trace_id = trace_id;
    }

    /// Who sent the message being handled.
    pub(super) fn sender(&self) -> &Peer {
        &self.peer
    }

    pub(super) fn recipe(&self) -> &WasiRecipe {
        &self.recipe
    }

    pub(super) fn request_id(&self) -> u64 {
        self.request_id
    }

    /// When the message being handled runs out of time.
    pub(super) fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The message's `traceparent`, kept when the guest may call out.
    pub(super) fn traceparent(&self) -> Option<Arc<str>> {
        self.traceparent.clone()
    }

    /// The limiter the store consults when the guest grows a memory or
    /// table.
    pub(super) fn limiter(&mut self) -> &mut dyn ResourceLimiter {
        &mut self.limits
    }

    /// Whether the guest tried to grow its memory past the cap.
    pub(super) fn memory_hit(&self) -> bool {
        self.limits.memory_hit
    }

    /// Bytes of linear memory the guest has grown to.
    pub(super) fn memory(&self) -> usize {
        self.limits.memory
    }

    /// The resources the guest holds handles to: WASI's, and its buckets.
    pub(super) fn table(&mut self) -> &mut ResourceTable {
        &mut self.table
    }

    pub(super) fn table_ref(&self) -> &ResourceTable {
        &self.table
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let (ctx, _) = self.wasi.get_or_insert_with(|| {
            self.recipe
                .build_lazily(self.request_id, self.trace_id.clone())
        });
        WasiCtxView {
            ctx,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        let (ctx, hooks) = self.http.get_or_insert_with(|| {
            (
                WasiHttpCtx::new(),
                HttpHooks::new(self.recipe.outbound.clone()),
            )
        });
        hooks.deadline = self.deadline;
        hooks.traceparent.clone_from(&self.traceparent);
        WasiHttpCtxView {
            ctx,
            hooks,
            table: &mut self.table,
        }
    }
}

/// Per-store resource limits, remembering which one was hit.
struct Limits {
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

/// What a guest's WASI context is made of: no capabilities but those
/// granted, stdout and stderr into the host log.
pub(super) struct WasiRecipe {
    pub(super) name: Arc<str>,
    env: Vec<(String, String)>,
    dirs: Vec<DirGrant>,
    max_output: usize,
    /// Where the guest may connect, and which upstreams it may call.
    pub(super) outbound: Arc<HandlerOutbound>,
    /// This host's handlers, for calls to upstreams served in process.
    pub(super) local: LocalHandlers,
    /// The stores it may open.
    pub(super) stores: Arc<HandlerStores>,
}

impl WasiRecipe {
    pub(super) fn new(
        config: &HandlerConfig,
        outbound: Arc<HandlerOutbound>,
        local: LocalHandlers,
        stores: Arc<HandlerStores>,
    ) -> WasiRecipe {
        WasiRecipe {
            name: config.name.as_str().into(),
            env: config.env.clone().into_iter().collect(),
            dirs: config.dirs.clone(),
            max_output: config.max_output_bytes,
            outbound,
            local,
            stores,
        }
    }

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
            .allow_tcp(self.outbound.tcp())
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        if self.outbound.tcp() {
            wasi.socket_addr_check(self.outbound.socket_check());
        }
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
    /// WASI call.
    fn build_lazily(
        &self,
        request_id: u64,
        trace_id: Option<Arc<str>>,
    ) -> (WasiCtx, [GuestLog; 2]) {
        let (mut wasi, logs) = self.builder(request_id, trace_id);
        (wasi.build(), logs)
    }
}
