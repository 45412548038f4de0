//! The versions of the `handler` world the host serves, and which one a
//! component targets.
//!
//! `arrpc:handler@0.2.0` (`wit/handler.wit`) gave the context the caller's
//! verified identity; components built against 0.1.0
//! (`wit/0.1.0/handler.wit`) keep loading. The version is read once, at
//! load, from the fields of the context record `handle` takes; each handler
//! then keeps the one pre-instance that fits and builds only its context
//! per message.

use wasmtime::Store;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, InstancePre, Type};

use super::HostState;

/// Bindings for `wit/handler.wit`, the current world.
mod v0_2 {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "handler",
        exports: { default: async },
        // The context is lowered from borrowed strings: no copies per message.
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

/// Who called, as the connection's verified client certificate proves it.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    /// The certificate's SPIFFE ID when it carries exactly one.
    pub spiffe_id: Option<&'a str>,
    /// Its DNS SANs.
    pub dns_names: &'a [String],
}

/// What the host tells a guest about one message, in either world's shape.
pub(super) struct Context<'a> {
    pub handler: &'a str,
    pub request_id: u64,
    pub peer: &'a str,
    pub timeout_ms: u32,
    pub traceparent: Option<&'a str>,
    pub caller: Option<Caller<'a>>,
}

/// A handler's pre-instance, bound to the world its component targets.
pub(super) enum HandlerPre {
    V0_1(v0_1::HandlerPre<HostState>),
    V0_2(v0_2::HandlerPre<HostState>),
}

/// An instance of a handler's component.
pub(super) enum Guest {
    V0_1(v0_1::Handler),
    V0_2(v0_2::Handler),
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
                "exports no `handle` function: it implements neither arrpc:handler@0.2.0 nor @0.1.0"
                    .to_owned(),
            );
        };
        let has_caller = match handle.params().next() {
            Some((_, Type::Record(context))) => context.fields().any(|f| f.name == "caller"),
            _ => false,
        };
        if has_caller {
            v0_2::HandlerPre::new(pre)
                .map(HandlerPre::V0_2)
                .map_err(|e| format!("does not match arrpc:handler@0.2.0: {e:#}"))
        } else {
            v0_1::HandlerPre::new(pre)
                .map(HandlerPre::V0_1)
                .map_err(|e| {
                    format!("matches neither arrpc:handler@0.2.0 nor @0.1.0 (checked against 0.1.0: {e:#})")
                })
        }
    }

    /// The world version, for the load log.
    pub fn version(&self) -> &'static str {
        match self {
            HandlerPre::V0_1(_) => "0.1.0",
            HandlerPre::V0_2(_) => "0.2.0",
        }
    }

    pub fn engine(&self) -> &wasmtime::Engine {
        match self {
            HandlerPre::V0_1(pre) => pre.engine(),
            HandlerPre::V0_2(pre) => pre.engine(),
        }
    }

    pub async fn instantiate_async(&self, store: &mut Store<HostState>) -> wasmtime::Result<Guest> {
        Ok(match self {
            HandlerPre::V0_1(pre) => Guest::V0_1(pre.instantiate_async(store).await?),
            HandlerPre::V0_2(pre) => Guest::V0_2(pre.instantiate_async(store).await?),
        })
    }
}

impl Guest {
    /// Calls `handle` with the context in this world's shape: a 0.1.0
    /// guest gets no caller.
    pub async fn handle(
        &self,
        store: &mut Store<HostState>,
        ctx: Context<'_>,
        payload: &[u8],
    ) -> wasmtime::Result<Result<Vec<u8>, String>> {
        match self {
            Guest::V0_1(guest) => {
                let context = v0_1::arrpc::handler::types::Context {
                    handler: ctx.handler,
                    request_id: ctx.request_id,
                    peer: ctx.peer,
                    timeout_ms: ctx.timeout_ms,
                    traceparent: ctx.traceparent,
                };
                guest.call_handle(store, context, payload).await
            }
            Guest::V0_2(guest) => {
                // The bindings lower a list of `&str`; only a caller with
                // DNS names makes this allocate.
                let dns_names: Vec<&str> = ctx.caller.map_or(Vec::new(), |c| {
                    c.dns_names.iter().map(String::as_str).collect()
                });
                let context = v0_2::arrpc::handler::types::Context {
                    handler: ctx.handler,
                    request_id: ctx.request_id,
                    peer: ctx.peer,
                    timeout_ms: ctx.timeout_ms,
                    traceparent: ctx.traceparent,
                    caller: ctx.caller.map(|c| v0_2::arrpc::handler::types::Caller {
                        spiffe_id: c.spiffe_id.unwrap_or(""),
                        dns_names: &dns_names,
                    }),
                };
                guest.call_handle(store, context, payload).await
            }
        }
    }
}
