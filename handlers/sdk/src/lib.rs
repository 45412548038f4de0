//! `arrpc-handler`: write an `arrpc-host` handler as a plain Rust function.
//!
//! The host calls a component's `handle` export (see `wit/handler.wit`) with
//! the message's MessagePack bytes. This crate owns the WIT bindings and the
//! MessagePack round trip, so a handler is one function and one macro line:
//!
//! ```ignore
//! #[derive(serde::Deserialize)]
//! struct Order { items: Vec<u32> }
//!
//! #[derive(serde::Serialize)]
//! struct Total { total: u32 }
//!
//! fn total(_ctx: &arrpc_handler::Context, order: Order) -> Result<Total, String> {
//!     Ok(Total { total: order.items.iter().sum() })
//! }
//!
//! arrpc_handler::handler!(total);
//! ```
//!
//! [`handler!`] decodes the payload into the function's input type and
//! encodes its output as a MessagePack map with the field names; an `Err`
//! reaches the client as `arrpc.error.RpcException: <text>`. [`raw_handler!`]
//! passes the payload bytes through untouched, for handlers that must not
//! re-encode them. Anything written to stdout or stderr lands in the host's
//! log, tagged with the handler name and request id.
//!
//! `ctx.caller()` asks the host who called, when it verified a client
//! certificate: its SPIFFE ID and DNS names, for decisions finer than the
//! host's per-handler allow list. Only handlers that ask pay for it:
//!
//! ```ignore
//! fn refund(ctx: &arrpc_handler::Context, order: Order) -> Result<Total, String> {
//!     if ctx.spiffe_id().as_deref() != Some("spiffe://cluster.local/ns/shop/sa/billing") {
//!         return Err("refunds are for billing only".into());
//!     }
//!     // ...
//! }
//! ```
//!
//! [`upstream`] calls the other arrpc services `arrpc.toml` lets this
//! handler call, with errors that say whether the call may have run:
//!
//! ```ignore
//! let price: u32 = arrpc_handler::upstream::call("prices", "price", &("sku-1",))
//!     .map_err(|e| e.to_string())?;
//! ```
//!
//! [`store`] keeps state between messages in the key-value stores the
//! handler's `stores` lists (`wasi:keyvalue`):
//!
//! ```ignore
//! let visits = arrpc_handler::store::Store::open("default")?.increment("visits", 1)?;
//! ```

use std::fmt::Display;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The bindings for the `handler` world, generated once here so handler
/// crates do not repeat them. The export glue takes one argument per
/// flattened field of `context` and `payload`, more than clippy's default.
#[doc(hidden)]
#[allow(clippy::too_many_arguments)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "handler",
        path: "../../wit",
        pub_export_macro: true,
        export_macro_name: "export_handler_world",
        default_bindings_module: "arrpc_handler::bindings",
        // wasi:keyvalue is generated here too: no published crate binds
        // the 0.2.0-draft2 the host implements.
        generate_all,
    });
}

/// What the host tells a handler about the message: handler name, request
/// id, time allowed and trace context. Who sent it, the handler asks for
/// ([`Context::peer`], [`Context::caller`]).
pub use bindings::Context;

/// Who called: the SPIFFE ID and DNS names of the client certificate the
/// host verified.
pub use bindings::arrpc::handler::types::Identity;

/// Who sent the message being handled, asked of the host when wanted.
impl Context {
    /// The client's address, `ip:port`.
    pub fn peer(&self) -> String {
        bindings::arrpc::handler::client::peer()
    }

    /// Who called: `None` over plain TCP and when the client presented no
    /// certificate.
    pub fn caller(&self) -> Option<Identity> {
        bindings::arrpc::handler::client::caller()
    }

    /// The caller's SPIFFE ID, when a verified certificate carried one.
    pub fn spiffe_id(&self) -> Option<String> {
        self.caller()?.spiffe_id
    }
}

/// Calls to the `[[upstream]]` services this handler's `upstreams` lists.
pub mod upstream {
    use serde::Serialize;
    use serde::de::DeserializeOwned;

    use crate::bindings::arrpc::handler::upstream as wit;

    /// Why a call failed; [`CallError::may_have_run`] says whether sending
    /// it again could run it twice.
    pub use crate::bindings::arrpc::handler::upstream::CallError;

    impl CallError {
        /// Whether the upstream may have run the call.
        pub fn may_have_run(&self) -> bool {
            !matches!(self, CallError::Denied(_) | CallError::NotRun(_))
        }
    }

    /// Calls `method` on `upstream` over MessagePack-RPC with `params`
    /// (usually a tuple) and decodes the result as `R`. A value that does
    /// not encode or decode is a [`CallError::NotRun`] or a
    /// [`CallError::Remote`].
    pub fn call<P: Serialize + ?Sized, R: DeserializeOwned>(
        upstream: &str,
        method: &str,
        params: &P,
    ) -> Result<R, CallError> {
        let params = rmp_serde::to_vec(params)
            .map_err(|e| CallError::NotRun(format!("cannot encode the params: {e}")))?;
        let result = call_raw(upstream, method, &params)?;
        rmp_serde::from_slice(&result)
            .map_err(|e| CallError::Remote(format!("cannot decode the result: {e}")))
    }

    /// Calls `method` with `params`, exactly one MessagePack value, and
    /// returns the result's bytes.
    pub fn call_raw(upstream: &str, method: &str, params: &[u8]) -> Result<Vec<u8>, CallError> {
        wit::call(upstream, method, params)
    }

    /// Sends `message`, exactly one MessagePack value, as a bare message
    /// (the Python arrpc package's form) and returns the reply's bytes.
    pub fn send_raw(upstream: &str, message: &[u8]) -> Result<Vec<u8>, CallError> {
        wit::send(upstream, message)
    }
}

/// The key-value stores this handler's `stores` lists in `arrpc.toml`,
/// over `wasi:keyvalue`. Writes are durable once a call returns `Ok`, and
/// every later read, by any handler sharing the store, sees them.
pub mod store {
    use crate::bindings::wasi::keyvalue::{atomics, batch, store as wit};

    /// Why an operation failed: `AccessDenied` for a store the handler
    /// does not list, `Other` with the host's words for anything else (a
    /// store full or unreachable, a key or value over the store's limits).
    pub use crate::bindings::wasi::keyvalue::store::Error;

    impl Error {
        /// The error in WIT's words: `access-denied`, `no-such-store` or
        /// `other: <the host's words>`.
        pub fn describe(&self) -> String {
            match self {
                Error::NoSuchStore => "no-such-store".into(),
                Error::AccessDenied => "access-denied".into(),
                Error::Other(why) => format!("other: {why}"),
            }
        }
    }

    /// An open store.
    pub struct Store {
        bucket: wit::Bucket,
    }

    impl Store {
        /// Opens the store `name`.
        pub fn open(name: &str) -> Result<Store, Error> {
            Ok(Store {
                bucket: wit::open(name)?,
            })
        }

        pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
            self.bucket.get(key)
        }

        pub fn set(&self, key: &str, value: &[u8]) -> Result<(), Error> {
            self.bucket.set(key, value)
        }

        pub fn delete(&self, key: &str) -> Result<(), Error> {
            self.bucket.delete(key)
        }

        pub fn exists(&self, key: &str) -> Result<bool, Error> {
            self.bucket.exists(key)
        }

        /// One page of keys from `cursor` (`None`: the first), and the
        /// cursor of the next page (`None` on the last).
        pub fn keys_page(&self, cursor: Option<&str>) -> Result<(Vec<String>, Option<String>), Error> {
            let page = self.bucket.list_keys(cursor)?;
            Ok((page.keys, page.cursor))
        }

        /// Adds `delta` to the integer under `key` (0 when missing) and
        /// returns the sum, atomically. The value is kept as decimal text.
        pub fn increment(&self, key: &str, delta: i64) -> Result<i64, Error> {
            atomics::increment(&self.bucket, key, delta)
        }

        /// Replaces the value under `key` with `change(value now)`, retrying
        /// while another writer got there first; returns the new value and
        /// how many times it had to retry.
        pub fn update(
            &self,
            key: &str,
            mut change: impl FnMut(Option<&[u8]>) -> Vec<u8>,
        ) -> Result<(Vec<u8>, u32), Error> {
            let mut cas = atomics::Cas::new(&self.bucket, key)?;
            let mut retries = 0;
            loop {
                let next = change(cas.current()?.as_deref());
                match atomics::swap(cas, &next) {
                    Ok(()) => return Ok((next, retries)),
                    Err(atomics::CasError::CasFailed(again)) => {
                        cas = again;
                        retries += 1;
                    }
                    Err(atomics::CasError::StoreError(e)) => return Err(e),
                }
            }
        }

        /// Each key's value, in order.
        pub fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, Error> {
            let found = batch::get_many(&self.bucket, keys)?;
            Ok(found.into_iter().map(|kv| kv.map(|(_, v)| v)).collect())
        }

        pub fn set_many(&self, pairs: &[(String, Vec<u8>)]) -> Result<(), Error> {
            batch::set_many(&self.bucket, pairs)
        }

        pub fn delete_many(&self, keys: &[String]) -> Result<(), Error> {
            batch::delete_many(&self.bucket, keys)
        }
    }
}

/// Runs a typed handler on one payload: decode, call, encode.
#[doc(hidden)]
pub fn call_typed<I, O, E>(
    ctx: &Context,
    payload: &[u8],
    handler: impl FnOnce(&Context, I) -> Result<O, E>,
) -> Result<Vec<u8>, String>
where
    I: DeserializeOwned,
    O: Serialize,
    E: Display,
{
    let input = rmp_serde::from_slice(payload)
        .map_err(|e| format!("{}: cannot decode the message: {e}", ctx.handler))?;
    let output = handler(ctx, input).map_err(|e| e.to_string())?;
    rmp_serde::to_vec_named(&output)
        .map_err(|e| format!("{}: cannot encode the reply: {e}", ctx.handler))
}

/// Exports `fn(&Context, I) -> Result<O, E>` as the component's handler,
/// where `I: Deserialize`, `O: Serialize` and `E: Display`.
#[macro_export]
macro_rules! handler {
    ($function:path) => {
        $crate::__export!(ctx, payload => $crate::call_typed(&ctx, &payload, $function));
    };
}

/// Exports `fn(&Context, Vec<u8>) -> Result<Vec<u8>, E>` as the component's
/// handler: the payload's bytes in, exactly one MessagePack value out.
#[macro_export]
macro_rules! raw_handler {
    ($function:path) => {
        $crate::__export!(ctx, payload =>
            $function(&ctx, payload).map_err(|e| ::std::string::ToString::to_string(&e)));
    };
}

/// The export glue both forms share: `$body` computes the reply from
/// `$ctx` and `$payload`.
#[doc(hidden)]
#[macro_export]
macro_rules! __export {
    ($ctx:ident, $payload:ident => $body:expr) => {
        struct ArrpcHandler;

        impl $crate::bindings::Guest for ArrpcHandler {
            fn handle(
                $ctx: $crate::Context,
                $payload: ::std::vec::Vec<u8>,
            ) -> ::std::result::Result<::std::vec::Vec<u8>, ::std::string::String> {
                $body
            }
        }

        $crate::bindings::export_handler_world!(ArrpcHandler);
    };
}
