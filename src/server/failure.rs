//! Failure replies: what failed, and how a client is told.
//!
//! [`Failure`] says what went wrong with a message; [`reply`] writes it as
//! the message's form asks: a bare reply (the Python arrpc package's
//! `arrpc.error.<Kind>Exception: <reason>` string), the `error` of a
//! MessagePack-RPC response, or nothing for a notification. Every refusal
//! and failure the message port sends is worded here, so its clients' view
//! of a failure changes in this one file.

use std::borrow::Cow;
use std::fmt;

use arrpc_wire::reply::{DRAINING, ErrorKind, error_reply, error_text};
use arrpc_wire::{FrameError, rpc};

use super::auth::Refusal;
use crate::runtime::CallError;

/// Why a message got no reply from a handler.
pub enum Failure {
    /// The frame could not be read; the connection closes after this.
    Malformed(FrameError),
    /// The signature, stamp or signed data was refused.
    Unsigned(Refusal),
    /// A trace envelope whose `data` is not one MessagePack value.
    BadTrace,
    /// Read after shutdown began or past the connection's max age: not run,
    /// so the client may send it elsewhere.
    Draining,
    /// A bare message with no default handler configured.
    NoDefaultHandler,
    /// An RPC method that names no handler.
    NoSuchMethod(String),
    /// The caller is not on the handler's allow list; the peer's refusal text.
    Denied(String),
    /// The handler ran and failed.
    Call(CallError),
    /// Handling the message panicked.
    Internal,
}

/// How a failed message is answered, from its form.
#[derive(Debug, Clone, Copy)]
pub enum Form {
    /// The Python arrpc package's bare form: an error string.
    Bare,
    /// A MessagePack-RPC request: a response with this msgid.
    Request(u32),
    /// A MessagePack-RPC notification: nothing.
    Notification,
}

impl Form {
    /// The form of an RPC request (`Some(msgid)`) or notification (`None`).
    pub fn rpc(msgid: Option<u32>) -> Self {
        msgid.map_or(Form::Notification, Form::Request)
    }
}

impl Failure {
    /// The Python arrpc package's exception and the reason that goes with it.
    /// Signature and stamp failures all get its one auth error (see
    /// [`Refusal`]), so a prober learns nothing of which check failed.
    fn kind_and_reason(&self) -> (ErrorKind, Cow<'_, str>) {
        match self {
            Failure::Malformed(e) => (ErrorKind::Rpc, e.to_string().into()),
            Failure::Unsigned(refusal) => {
                let (kind, reason) = refusal.answer();
                (kind, reason.into())
            }
            Failure::BadTrace => (
                ErrorKind::Rpc,
                "the trace envelope's data is not exactly one MessagePack value".into(),
            ),
            Failure::Draining => (ErrorKind::Rpc, DRAINING.into()),
            Failure::NoDefaultHandler => (
                ErrorKind::Rpc,
                "no default handler is configured for bare messages".into(),
            ),
            Failure::NoSuchMethod(method) => (
                ErrorKind::Rpc,
                format!("no handler is named `{method}`").into(),
            ),
            Failure::Denied(refusal) => (ErrorKind::Auth, refusal.as_str().into()),
            Failure::Call(e) => (ErrorKind::Rpc, e.to_string().into()),
            Failure::Internal => (
                ErrorKind::Rpc,
                "internal error while handling the message".into(),
            ),
        }
    }

    /// The `error` text of an RPC response. Security refusals keep the
    /// Python arrpc package's exception prefix, so an RPC client can tell
    /// them from a handler's failure; other failures send the reason alone.
    fn rpc_text(&self) -> Cow<'_, str> {
        let (kind, reason) = self.kind_and_reason();
        match self {
            Failure::Unsigned(_) | Failure::Denied(_) => error_text(kind, &reason).into(),
            _ => reason,
        }
    }
}

/// The reason alone, for logs.
impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.kind_and_reason().1)
    }
}

/// Writes `failure` as a message of `form` is answered: an error reply, an
/// RPC response carrying the error, or nothing for a notification.
pub fn reply(failure: &Failure, form: Form) -> Option<Vec<u8>> {
    match form {
        Form::Bare => Some(bare_reply(failure)),
        Form::Request(msgid) => Some(rpc::response(msgid, Err(&failure.rpc_text()))),
        Form::Notification => None,
    }
}

/// [`reply`] for a bare message, which always gets one.
pub fn bare_reply(failure: &Failure) -> Vec<u8> {
    let (kind, reason) = failure.kind_and_reason();
    error_reply(kind, &reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_form_frames_the_same_failure() {
        let missing = Failure::NoSuchMethod("nope".into());
        assert_eq!(
            reply(&missing, Form::Bare),
            Some(error_reply(ErrorKind::Rpc, "no handler is named `nope`"))
        );
        assert_eq!(
            reply(&missing, Form::Request(7)),
            Some(rpc::response(7, Err("no handler is named `nope`")))
        );
        assert_eq!(reply(&missing, Form::Notification), None);
    }

    #[test]
    fn refusals_keep_their_exception_in_rpc_responses() {
        let denied = Failure::Denied("not on the list".into());
        assert_eq!(
            reply(&denied, Form::Request(1)),
            Some(rpc::response(
                1,
                Err("arrpc.error.AuthException: not on the list")
            ))
        );
        let unsigned = Failure::Unsigned(Refusal::DataNotMessagePack);
        assert_eq!(
            reply(&unsigned, Form::Request(2)),
            Some(rpc::response(
                2,
                Err("arrpc.error.RpcException: signed data is not exactly one MessagePack value")
            ))
        );
        assert_eq!(
            reply(&Failure::Draining, Form::Request(3)),
            Some(rpc::response(3, Err(DRAINING)))
        );
    }
}
