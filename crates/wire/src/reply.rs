//! Error replies, spelled as the Python arrpc package spells them.
//!
//! The Python arrpc package answers a failure with a MessagePack string
//! `arrpc.error.<Kind>Exception: <reason>`; its client turns that into the
//! matching exception. Both sides of arrpc use the same spelling so its
//! clients and servers interoperate.

/// Which exception of the Python arrpc package a failure maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request was not processed as asked (bad input, handler failure).
    Rpc,
    /// The signature was missing or wrong.
    Auth,
}

impl ErrorKind {
    fn prefix(self) -> &'static str {
        match self {
            ErrorKind::Rpc => "arrpc.error.RpcException: ",
            ErrorKind::Auth => "arrpc.error.AuthException: ",
        }
    }
}

/// The Python arrpc package's reason text for a missing or wrong signature.
pub const AUTH_FAILED: &str =
    "Invalid or missing message signature, make sure 'auth_secret' is set/correct";

/// The reason a host gives for a message it read after it began shutting
/// down and did not run: a client may send the message again, elsewhere.
pub const DRAINING: &str =
    "arrpc-host is shutting down and did not run this message; send it to another replica";

/// An error reply's text, as the Python arrpc package's client parses it.
pub fn error_text(kind: ErrorKind, reason: &str) -> String {
    format!("{}{reason}", kind.prefix())
}

/// Encodes an error reply.
pub fn error_reply(kind: ErrorKind, reason: &str) -> Vec<u8> {
    let prefix = kind.prefix();
    let mut out = Vec::with_capacity(prefix.len() + reason.len() + 5);
    let _ = rmp::encode::write_str_len(&mut out, (prefix.len() + reason.len()) as u32);
    out.extend_from_slice(prefix.as_bytes());
    out.extend_from_slice(reason.as_bytes());
    out
}

/// A reply that carries one of the Python arrpc package's error strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteError {
    pub kind: ErrorKind,
    pub reason: String,
}

/// Reads `reply` as an error reply, if it is one.
pub fn parse_error(reply: &[u8]) -> Option<RemoteError> {
    let mut rest = reply;
    let len = rmp::decode::read_str_len(&mut rest).ok()? as usize;
    let text = std::str::from_utf8(rest.get(..len)?).ok()?;
    [ErrorKind::Rpc, ErrorKind::Auth]
        .into_iter()
        .find_map(|kind| {
            text.strip_prefix(kind.prefix()).map(|reason| RemoteError {
                kind,
                reason: reason.to_owned(),
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_replies_round_trip_and_match_the_seed_bytes() {
        let reply = error_reply(ErrorKind::Auth, AUTH_FAILED);
        // msgpack.packb("arrpc.error.AuthException: " + AUTH_FAILED) starts so.
        assert_eq!(&reply[..2], &[0xd9, 103]);
        assert_eq!(
            parse_error(&reply),
            Some(RemoteError {
                kind: ErrorKind::Auth,
                reason: AUTH_FAILED.into()
            })
        );
        let short = error_reply(ErrorKind::Rpc, "x");
        assert_eq!(short[0], 0xa0 | 27);
        assert_eq!(parse_error(&short).unwrap().reason, "x");
    }

    #[test]
    fn ordinary_strings_are_not_errors() {
        assert_eq!(parse_error(&[0xa2, b'o', b'k']), None);
        assert_eq!(parse_error(&[0x01]), None);
    }
}
