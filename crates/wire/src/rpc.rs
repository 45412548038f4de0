//! MessagePack-RPC messages, as the public MessagePack-RPC spec defines them.
//!
//! - request: `[0, msgid, method, params]`
//! - response: `[1, msgid, error, result]`
//! - notification: `[2, method, params]`
//!
//! Parsing borrows: `params`, `error` and `result` come back as slices of
//! the message, each exactly one MessagePack value, so a payload passes from
//! socket to handler and back without being decoded and encoded again. A
//! message the framing already walked is not walked again
//! ([`parse_whole`]).

use crate::frame::{is_single_value, value_len};

const REQUEST: u8 = 0;
const RESPONSE: u8 = 1;
const NOTIFICATION: u8 = 2;

/// One MessagePack-RPC message, borrowing from the bytes it was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message<'a> {
    Request {
        msgid: u32,
        method: &'a str,
        params: &'a [u8],
    },
    Response {
        msgid: u32,
        error: &'a [u8],
        result: &'a [u8],
    },
    Notification {
        method: &'a str,
        params: &'a [u8],
    },
}

/// Reads `message` as MessagePack-RPC.
///
/// `None` when it does not have the exact shape of one: an array of four
/// (request, response) or three (notification) items, the type tag first,
/// an integer `msgid` that fits 32 bits unsigned, a string `method`, and
/// nothing after the last item. `params` (or `error` and `result`) are
/// each checked to be exactly one well-formed value, so `message` may be
/// any bytes.
pub fn parse(message: &[u8]) -> Option<Message<'_>> {
    let parsed = parse_whole_unchecked(message)?;
    let last = match parsed {
        Message::Request { params, .. } | Message::Notification { params, .. } => params,
        Message::Response { result, .. } => result,
    };
    is_single_value(last).then_some(parsed)
}

/// [`parse`] for a `message` already known to be exactly one whole,
/// well-formed MessagePack value: a message [`Connection`] read, or bytes
/// [`is_single_value`] accepted. Its last item is then the rest of the
/// bytes, which are not walked again.
///
/// [`Connection`]: crate::connection::Connection
pub fn parse_whole(message: &[u8]) -> Option<Message<'_>> {
    debug_assert!(is_single_value(message), "not one whole value");
    parse_whole_unchecked(message)
}

/// The message's items, the last taken to be the rest of the bytes.
fn parse_whole_unchecked(message: &[u8]) -> Option<Message<'_>> {
    let mut rest = message;
    let len = rmp::decode::read_array_len(&mut rest).ok()?;
    let kind: u8 = rmp::decode::read_int(&mut rest).ok()?;
    match (kind, len) {
        (REQUEST, 4) => {
            let msgid = rmp::decode::read_int(&mut rest).ok()?;
            let (method, params) = rmp::decode::read_str_from_slice(rest).ok()?;
            Some(Message::Request {
                msgid,
                method,
                params,
            })
        }
        (RESPONSE, 4) => {
            let msgid = rmp::decode::read_int(&mut rest).ok()?;
            let (error, result) = rest.split_at(value_len(rest)?);
            Some(Message::Response {
                msgid,
                error,
                result,
            })
        }
        (NOTIFICATION, 3) => {
            let (method, params) = rmp::decode::read_str_from_slice(rest).ok()?;
            Some(Message::Notification { method, params })
        }
        _ => None,
    }
}

/// Encodes a request; `params` must be exactly one MessagePack value.
pub fn request(msgid: u32, method: &str, params: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(params.len() + method.len() + 12);
    // Writing into a Vec cannot fail.
    let _ = rmp::encode::write_array_len(&mut out, 4);
    let _ = rmp::encode::write_uint(&mut out, REQUEST.into());
    let _ = rmp::encode::write_uint(&mut out, msgid.into());
    let _ = rmp::encode::write_str(&mut out, method);
    out.extend_from_slice(params);
    out
}

/// Encodes a notification; `params` must be exactly one MessagePack value.
pub fn notification(method: &str, params: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(params.len() + method.len() + 8);
    let _ = rmp::encode::write_array_len(&mut out, 3);
    let _ = rmp::encode::write_uint(&mut out, NOTIFICATION.into());
    let _ = rmp::encode::write_str(&mut out, method);
    out.extend_from_slice(params);
    out
}

/// Encodes a response: `Ok(result)` (one MessagePack value, spliced in
/// verbatim) with a nil error, or `Err(text)` as a string error with a nil
/// result.
pub fn response(msgid: u32, outcome: Result<&[u8], &str>) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + outcome.map_or_else(str::len, <[u8]>::len));
    let _ = rmp::encode::write_array_len(&mut out, 4);
    let _ = rmp::encode::write_uint(&mut out, RESPONSE.into());
    let _ = rmp::encode::write_uint(&mut out, msgid.into());
    match outcome {
        Ok(result) => {
            let _ = rmp::encode::write_nil(&mut out);
            out.extend_from_slice(result);
        }
        Err(text) => {
            let _ = rmp::encode::write_str(&mut out, text);
            let _ = rmp::encode::write_nil(&mut out);
        }
    }
    out
}

/// The text of a response's `error` value when it is a string.
pub fn error_text(error: &[u8]) -> Option<&str> {
    rmp::decode::read_str_from_slice(error)
        .ok()
        .map(|(text, _)| text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_notifications_round_trip_with_params_untouched() {
        let params = [0x92, 0x01, 0xa1, b'x'];
        let bytes = request(70_000, "sum", &params);
        assert_eq!(
            parse(&bytes),
            Some(Message::Request {
                msgid: 70_000,
                method: "sum",
                params: &params
            })
        );
        let bytes = notification("log", &[0xc0]);
        assert_eq!(
            parse(&bytes),
            Some(Message::Notification {
                method: "log",
                params: &[0xc0]
            })
        );
    }

    #[test]
    fn responses_carry_either_a_result_or_an_error_text() {
        let ok = response(7, Ok(&[0x2a]));
        assert_eq!(ok, [0x94, 0x01, 0x07, 0xc0, 0x2a]);
        assert_eq!(
            parse(&ok),
            Some(Message::Response {
                msgid: 7,
                error: &[0xc0],
                result: &[0x2a]
            })
        );
        let err = response(8, Err("no"));
        let Some(Message::Response {
            msgid,
            error,
            result,
        }) = parse(&err)
        else {
            panic!("not a response: {err:?}");
        };
        assert_eq!(
            (msgid, error_text(error), result),
            (8, Some("no"), &[0xc0][..])
        );
    }

    /// Found by the `rpc` fuzz target: a peer may write an error text in a
    /// longer string form than ours (a one-byte text as str8 here). It is kept as
    /// sent and reads as the same text as ours.
    #[test]
    fn an_error_text_in_a_longer_string_form_reads_as_the_same_text() {
        let theirs = [0x94, 0x01, 0xcd, 0xec, 0xff, 0xd9, 0x01, 0x00, 0xc0];
        let Some(Message::Response { msgid, error, .. }) = parse(&theirs) else {
            panic!("not a response");
        };
        assert_eq!((msgid, error), (60671, &[0xd9, 0x01, 0x00][..]));
        let ours = response(msgid, Err(error_text(error).unwrap()));
        let Some(Message::Response { error: again, .. }) = parse(&ours) else {
            panic!("not a response");
        };
        assert_eq!(error_text(again), error_text(error));
    }

    #[test]
    fn whole_messages_parse_the_same_either_way() {
        let params = [0x92, 0x01, 0xa1, b'x'];
        for bytes in [
            request(1, "sum", &params),
            notification("log", &params),
            response(2, Ok(&params)),
            response(3, Err("no")),
        ] {
            assert!(parse(&bytes).is_some());
            assert_eq!(parse_whole(&bytes), parse(&bytes), "{bytes:?}");
        }
    }

    #[test]
    fn params_that_are_not_one_value_are_refused() {
        // The last item missing a byte, or followed by another value.
        let mut cut = request(1, "sum", &[0x92, 0x01]);
        assert_eq!(parse(&cut), None);
        cut.extend([0x02, 0x03]);
        assert_eq!(parse(&cut), None);
        let mut trailing = response(1, Ok(&[0x01]));
        trailing.push(0x01);
        assert_eq!(parse(&trailing), None);
        assert_eq!(parse(&notification("log", &[])), None);
    }

    #[test]
    fn values_that_only_look_similar_are_not_rpc() {
        let not_rpc: [&[u8]; 7] = [
            // [0, 1, 2, 3]: method is not a string.
            &[0x94, 0x00, 0x01, 0x02, 0x03],
            // [0, -1, "m", nil]: msgid is negative.
            &[0x94, 0x00, 0xff, 0xa1, b'm', 0xc0],
            // [0, 2^32, "m", nil]: msgid does not fit 32 bits.
            &[0x94, 0x00, 0xcf, 0, 0, 0, 1, 0, 0, 0, 0, 0xa1, b'm', 0xc0],
            // [0, 1, "m"]: a request needs four items.
            &[0x93, 0x00, 0x01, 0xa1, b'm'],
            // [3, "m", nil]: unknown type tag.
            &[0x93, 0x03, 0xa1, b'm', 0xc0],
            // "text" and {}: not arrays.
            &[0xa4, b't', b'e', b'x', b't'],
            &[0x80],
        ];
        for bytes in not_rpc {
            assert_eq!(parse(bytes), None, "{bytes:?}");
        }
    }
}
