//! One loaded handler and what it costs to run one message through it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::Store;

use super::HostState;
use super::error::CallError;
use super::peer::Peer;
use super::pool::InstancePool;
use super::store::WasiRecipe;
use super::upstream::LocalHandlers;
use super::world::{Context, HandlerPre};
use crate::config::HandlerConfig;
use crate::keyvalue::HandlerStores;
use crate::outbound::HandlerOutbound;

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
    /// Instances running and kept; held to `max_instances` and `reuse`.
    pool: InstancePool,
    /// Whether the engine meters fuel; when it does, a handler without a
    /// fuel limit gets unlimited fuel.
    metered: bool,
    fuel: Option<u64>,
    /// How each message's WASI context is made.
    wasi: Arc<WasiRecipe>,
}

/// One message for a handler.
pub struct Request<'a> {
    /// Exactly one MessagePack value.
    pub payload: &'a [u8],
    pub request_id: u64,
    /// Who sent it: its address, and who called when a client certificate
    /// was verified.
    pub peer: &'a Arc<Peer>,
    pub traceparent: Option<&'a str>,
    /// When the call began: its timeout counts from here.
    pub started: Instant,
}

impl Handler {
    pub(super) fn new(
        config: &HandlerConfig,
        sha256: String,
        pre: Arc<HandlerPre>,
        metered: bool,
        outbound: Arc<HandlerOutbound>,
        local: LocalHandlers,
        stores: Arc<HandlerStores>,
    ) -> Self {
        let max_memory = (config.max_memory_mib as usize) << 20;
        Handler {
            config: config.clone(),
            name: config.name.as_str().into(),
            module: config.module.clone(),
            sha256,
            pre,
            timeout: config.timeout,
            max_memory,
            pool: InstancePool::new(config.max_instances, config.reuse, max_memory),
            metered,
            fuel: config.fuel,
            wasi: Arc::new(WasiRecipe::new(config, outbound, local, stores)),
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
        let (lease, kept) = self.pool.take().ok_or_else(|| CallError::Busy {
            handler: self.name.clone(),
            max: self.pool.max(),
        })?;
        // A traceparent is `version-traceid-parentid-flags`.
        let trace_id: Option<Arc<str>> = request
            .traceparent
            .and_then(|tp| tp.split('-').nth(1))
            .map(Arc::from);
        let (mut store, guest) = match kept {
            Some((store, guest)) => (store, Some(guest)),
            None => (
                self.new_store(request.peer, request.request_id, trace_id.clone())?,
                None,
            ),
        };
        let deadline = request.started + self.timeout;
        store.data_mut().begin(
            request.peer,
            request.request_id,
            trace_id,
            deadline,
            request.traceparent,
        );
        self.begin(&mut store);
        let run = async {
            let context = Context {
                handler: &self.name,
                request_id: request.request_id,
                peer: request.peer,
                timeout_ms: self.timeout.as_millis().try_into().unwrap_or(u32::MAX),
                traceparent: request.traceparent,
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
        let deadline = tokio::time::Instant::from_std(deadline);
        let outcome = tokio::time::timeout_at(deadline, std::pin::pin!(run)).await;
        // The instance goes back to the pool only when it returned.
        let (guest, reply) = match outcome {
            Ok(Ok((guest, reply))) => (Some(guest), reply.map_err(CallError::Failed)),
            Ok(Err(trap)) => (
                None,
                Err(self.failure(store.data(), trap, request.request_id)),
            ),
            Err(_) => (
                None,
                Err(CallError::Timeout {
                    handler: self.name.clone(),
                    after: self.timeout,
                }),
            ),
        };
        self.pool.give_back(lease, store, guest);
        let reply = reply?;
        match arrpc_wire::frame::value_len(&reply) {
            Some(len) if len == reply.len() => Ok(reply),
            Some(_) => Err(self.invalid_output("more than one MessagePack value")),
            None => Err(self.invalid_output("bytes that are not one whole MessagePack value")),
        }
    }

    /// Why a call that did not return failed: the memory cap, the fuel
    /// limit, or a trap.
    fn failure(&self, state: &HostState, trap: wasmtime::Error, request_id: u64) -> CallError {
        if state.memory_hit() {
            return CallError::MemoryLimit {
                handler: self.name.clone(),
                limit: self.max_memory,
            };
        }
        if trap.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::OutOfFuel) {
            return CallError::FuelExhausted {
                handler: self.name.clone(),
                fuel: self.fuel.unwrap_or(u64::MAX),
            };
        }
        tracing::warn!(handler = %self.name, request_id, error = ?trap, "handler trapped");
        let detail = match trap.downcast_ref::<wasmtime::Trap>() {
            Some(code) => code.to_string(),
            None => trap.root_cause().to_string(),
        };
        CallError::Trap {
            handler: self.name.clone(),
            detail,
        }
    }

    /// Readies a store for the next message, once its state knows the
    /// message: a full fuel tank and a new epoch deadline.
    fn begin(&self, store: &mut Store<HostState>) {
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

    /// A store with the memory cap and a yield at every epoch tick.
    fn new_store(
        &self,
        peer: &Arc<Peer>,
        request_id: u64,
        trace_id: Option<Arc<str>>,
    ) -> Result<Store<HostState>, CallError> {
        let state = HostState::new(
            &self.wasi,
            self.max_memory,
            peer.clone(),
            request_id,
            trace_id,
        )?;
        let mut store = Store::new(self.pre.engine(), state);
        store.limiter(HostState::limiter);
        store.epoch_deadline_async_yield_and_update(1);
        Ok(store)
    }
}
