//! The versions of the `handler` world the host serves, and which one a
//! component targets.
//!
//! `arrpc:handler@0.3.0` (`wit/handler.wit`) gives the context only what
//! nearly every handler reads and answers who sent the message through
//! the imported `client` interface, so a handler that never asks pays
//! nothing for it. Components built against 0.2.0 (`wit/0.2.0/`, the
//! caller in the context) and 0.1.0 (`wit/0.1.0/`, no caller) keep
//! loading. The version is read once, at load, from the fields of the
//! context record `handle` takes; each handler then keeps the one
//! pre-instance that fits and builds only its context per message.
//!
//! Any 0.3.0 component may also import `codec` and `numbers`
//! (`wit/codec.wit`), which the Python and JavaScript SDKs call to hand
//! `handle` objects: the bindings are those of `served-handler`, the
//! handler world plus both, so a component that imports them needs nothing
//! said in `arrpc.toml`, and one that does not is bound exactly as before.

use wasmtime::Store;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, HasSelf, InstancePre, Linker, Type};

use super::HostState;
use super::peer::Peer;

/// Bindings for `wit/handler.wit`, the current world, with `codec` and
/// `numbers` (`wit/codec.wit`): what any 0.3.0 component may import.
pub(super) mod v0_3 {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "served-handler",
        exports: { default: async },
        // A call to another service waits on the network, or on another
        // handler of this host.
        // So does a store: a Redis round trip, or an embedded write's
        // group commit.
        imports: {
            "arrpc:handler/upstream.call": async,
            "arrpc:handler/upstream.send": async,
            "wasi:keyvalue/store.[method]bucket.get": async,
            "wasi:keyvalue/store.[method]bucket.set": async,
            "wasi:keyvalue/store.[method]bucket.delete": async,
            "wasi:keyvalue/store.[method]bucket.exists": async,
            "wasi:keyvalue/store.[method]bucket.list-keys": async,
            "wasi:keyvalue/atomics.[static]cas.new": async,
            "wasi:keyvalue/atomics.increment": async,
            "wasi:keyvalue/atomics.swap": async,
            "wasi:keyvalue/batch.get-many": async,
            "wasi:keyvalue/batch.set-many": async,
            "wasi:keyvalue/batch.delete-many": async,
        },
        with: {
            "wasi:keyvalue/store.bucket": crate::runtime::keyvalue::Bucket,
            "wasi:keyvalue/atomics.cas": crate::runtime::keyvalue::Cas,
        },
        // The context is lowered from borrowed strings: no copies per message.
        ownership: Borrowing { duplicate_if_necessary: false },
    });
}

/// Bindings for `wit/0.2.0/handler.wit`, the world with the caller in the
/// context.
mod v0_2 {
    wasmtime::component::bindgen!({
        path: "wit/0.2.0",
        world: "handler",
        exports: { default: async },
        ownership: Borrowing { duplicate_if_necessary: false },
    });
}

/// Bindings for `wit/0.1.0/handler.wit`, the world before `caller`.
mod v0_1 {
    wasmtime::component::bindgen!({
        path: "wit/0.1.0",
        world: "handler",
        exports: { default: async },
        ownership: Borrowing { duplicate_if_necessary: false },
    });
}

/// Adds what the current worlds import, `arrpc:handler/client`,
/// `arrpc:handler/upstream`, `arrpc:handler/codec`,
/// `arrpc:handler/numbers` and `wasi:keyvalue`, to `linker`. Components of
/// the older worlds import none of it.
pub(super) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    v0_3::ServedHandler::add_to_linker::<HostState, HasSelf<HostState>>(linker, |state| state)
}

/// `arrpc:handler/client`: who sent the message being handled.
impl v0_3::arrpc::handler::client::Host for HostState {
    fn peer(&mut self) -> String {
        self.sender().addr.to_string()
    }

    fn caller(&mut self) -> Option<v0_3::arrpc::handler::types::Identity> {
        self.sender()
            .caller()
            .map(|c| v0_3::arrpc::handler::types::Identity {
                spiffe_id: c.spiffe_id.map(str::to_owned),
                dns_names: c.dns_names.to_vec(),
            })
    }
}

impl v0_3::arrpc::handler::types::Host for HostState {}

/// `arrpc:handler/codec`: MessagePack to and from the formats CPython and
/// QuickJS decode natively. What the guest passes is read as hostile
/// (arrpc_codec bounds depth and work); an error goes back as its text.
impl v0_3::arrpc::handler::codec::Host for HostState {
    fn msgpack_to_marshal(&mut self, value: Vec<u8>) -> Result<Option<Vec<u8>>, String> {
        arrpc_codec::msgpack_to_marshal(&value).map_err(|e| e.to_string())
    }

    fn marshal_to_msgpack(&mut self, value: Vec<u8>) -> Result<Vec<u8>, String> {
        arrpc_codec::marshal_to_msgpack(&value).map_err(|e| e.to_string())
    }

    fn msgpack_to_json(&mut self, value: Vec<u8>) -> Result<Option<String>, String> {
        arrpc_codec::msgpack_to_json(&value).map_err(|e| e.to_string())
    }

    fn json_to_msgpack(&mut self, value: String) -> Result<Vec<u8>, String> {
        arrpc_codec::json_to_msgpack(&value).map_err(|e| e.to_string())
    }
}

/// `arrpc:handler/numbers`: an array of numbers as floats, for QuickJS.
impl v0_3::arrpc::handler::numbers::Host for HostState {
    fn msgpack_to_numbers(&mut self, value: Vec<u8>) -> Option<Vec<u8>> {
        arrpc_codec::msgpack_to_numbers(&value)
    }
}

/// What the host tells a guest about one message, in any world's shape.
pub(super) struct Context<'a> {
    pub handler: &'a str,
    pub request_id: u64,
    pub peer: &'a Peer,
    pub timeout_ms: u32,
    pub traceparent: Option<&'a str>,
}

/// A handler's pre-instance, bound to the world its component targets.
pub(super) enum HandlerPre {
    V0_1(v0_1::HandlerPre<HostState>),
    V0_2(v0_2::HandlerPre<HostState>),
    V0_3(v0_3::ServedHandlerPre<HostState>),
}

/// An instance of a handler's component.
pub(super) enum Guest {
    V0_1(v0_1::Handler),
    V0_2(v0_2::Handler),
    V0_3(v0_3::ServedHandler),
}

impl HandlerPre {
    /// Binds `pre` to the world whose context its `handle` export takes;
    /// the error says what is missing or which world's types do not match.
    pub fn new(component: &Component, pre: InstancePre<HostState>) -> Result<HandlerPre, String> {
        let engine = pre.engine();
        let handle = component
            .component_type()
            .get_export(engine, "handle")
            .map(|export| export.ty);
        let Some(ComponentItem::ComponentFunc(handle)) = handle else {
            return Err(
                "exports no `handle` function: it implements none of arrpc:handler@0.3.0, @0.2.0 and @0.1.0"
                    .to_owned(),
            );
        };
        let has = |field: &str| match handle.params().next() {
            Some((_, Type::Record(context))) => context.fields().any(|f| f.name == field),
            _ => false,
        };
        // 0.2.0 added `caller` to 0.1.0's context; 0.3.0 took `peer` (and
        // `caller`) out of it.
        if has("caller") {
            v0_2::HandlerPre::new(pre)
                .map(HandlerPre::V0_2)
                .map_err(|e| format!("does not match arrpc:handler@0.2.0: {e:#}"))
        } else if has("peer") {
            v0_1::HandlerPre::new(pre)
                .map(HandlerPre::V0_1)
                .map_err(|e| format!("does not match arrpc:handler@0.1.0: {e:#}"))
        } else {
            v0_3::ServedHandlerPre::new(pre).map(HandlerPre::V0_3).map_err(|e| {
                format!("matches none of arrpc:handler@0.3.0, @0.2.0 and @0.1.0 (checked against 0.3.0: {e:#})")
            })
        }
    }

    /// The world version, for the load log.
    pub fn version(&self) -> &'static str {
        match self {
            HandlerPre::V0_1(_) => "0.1.0",
            HandlerPre::V0_2(_) => "0.2.0",
            HandlerPre::V0_3(_) => "0.3.0",
        }
    }

    pub fn engine(&self) -> &wasmtime::Engine {
        match self {
            HandlerPre::V0_1(pre) => pre.engine(),
            HandlerPre::V0_2(pre) => pre.engine(),
            HandlerPre::V0_3(pre) => pre.engine(),
        }
    }

    pub async fn instantiate_async(&self, store: &mut Store<HostState>) -> wasmtime::Result<Guest> {
        Ok(match self {
            HandlerPre::V0_1(pre) => Guest::V0_1(pre.instantiate_async(store).await?),
            HandlerPre::V0_2(pre) => Guest::V0_2(pre.instantiate_async(store).await?),
            HandlerPre::V0_3(pre) => Guest::V0_3(pre.instantiate_async(store).await?),
        })
    }
}

impl Guest {
    /// Calls `handle` with the context in this world's shape: a 0.3.0
    /// guest asks for the peer and caller if it wants them, a 0.2.0 guest
    /// is given both, a 0.1.0 guest the peer only.
    pub async fn handle(
        &self,
        store: &mut Store<HostState>,
        ctx: Context<'_>,
        payload: &[u8],
    ) -> wasmtime::Result<Result<Vec<u8>, String>> {
        match self {
            Guest::V0_3(guest) => {
                let context = v0_3::arrpc::handler::types::Context {
                    handler: ctx.handler,
                    request_id: ctx.request_id,
                    timeout_ms: ctx.timeout_ms,
                    traceparent: ctx.traceparent,
                };
                guest.call_handle(store, context, payload).await
            }
            Guest::V0_2(guest) => {
                let caller = ctx.peer.caller();
                // The bindings lower a list of `&str`; only a caller with
                // DNS names makes this allocate.
                let dns_names: Vec<&str> = caller.map_or(Vec::new(), |c| {
                    c.dns_names.iter().map(String::as_str).collect()
                });
                let context = v0_2::arrpc::handler::types::Context {
                    handler: ctx.handler,
                    request_id: ctx.request_id,
                    peer: &ctx.peer.addr,
                    timeout_ms: ctx.timeout_ms,
                    traceparent: ctx.traceparent,
                    caller: caller.map(|c| v0_2::arrpc::handler::types::Caller {
                        spiffe_id: c.spiffe_id.unwrap_or(""),
                        dns_names: &dns_names,
                    }),
                };
                guest.call_handle(store, context, payload).await
            }
            Guest::V0_1(guest) => {
                let context = v0_1::arrpc::handler::types::Context {
                    handler: ctx.handler,
                    request_id: ctx.request_id,
                    peer: &ctx.peer.addr,
                    timeout_ms: ctx.timeout_ms,
                    traceparent: ctx.traceparent,
                };
                guest.call_handle(store, context, payload).await
            }
        }
    }
}
