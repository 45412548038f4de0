//! Trace envelopes: W3C trace context travelling with a message.
//!
//! A traced message is the MessagePack map
//! `{"arrpc.trace": "<traceparent>", "data": <bin>}` where `data` holds the
//! message itself (a bare message or a MessagePack-RPC request or
//! notification) and `arrpc.trace` its W3C `traceparent` header value. It
//! needs no secret; with one, the whole trace envelope is what gets signed
//! (it is the signed envelope's `data`), so the trace context is covered by
//! the signature. A bare message that is exactly such a map is read as a
//! trace envelope; every other message is read as before.

use crate::frame::is_single_value;

const TRACE_KEY: &str = "arrpc.trace";
const DATA_KEY: &str = "data";

/// Why a `traceparent` is not one a receiver would continue.
pub fn check_traceparent(text: &str) -> Result<(), &'static str> {
    let hex = |part: &str, len: usize| {
        part.len() == len && part.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let zero = |part: &str| part.bytes().all(|b| b == b'0');
    let parts: Vec<&str> = text.split('-').collect();
    match parts[..] {
        [version, trace_id, parent_id, flags]
            if hex(version, 2) && hex(trace_id, 32) && hex(parent_id, 16) && hex(flags, 2) =>
        {
            if version == "ff" {
                Err("version ff is invalid")
            } else if zero(trace_id) {
                Err("the trace id is all zeros")
            } else if zero(parent_id) {
                Err("the parent id is all zeros")
            } else {
                Ok(())
            }
        }
        _ => Err("expected `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`, lowercase"),
    }
}

/// Wraps `message` (one MessagePack value) with its `traceparent`.
pub fn wrap(traceparent: &str, message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + traceparent.len() + 24);
    // Writing into a Vec cannot fail.
    let _ = rmp::encode::write_map_len(&mut out, 2);
    let _ = rmp::encode::write_str(&mut out, TRACE_KEY);
    let _ = rmp::encode::write_str(&mut out, traceparent);
    let _ = rmp::encode::write_str(&mut out, DATA_KEY);
    let _ = rmp::encode::write_bin(&mut out, message);
    out
}

/// A message read out of a trace envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Traced<'a> {
    /// The `arrpc.trace` text as sent; it is not checked here.
    pub traceparent: &'a str,
    /// The message, a sub-slice of the envelope.
    pub data: &'a [u8],
}

/// What a message that is a trace envelope holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unwrapped<'a> {
    /// Not a trace envelope: the message is to be read as it is.
    Plain,
    /// A trace envelope around exactly one MessagePack value.
    Traced(Traced<'a>),
    /// Shaped like a trace envelope, but `data` is not exactly one value.
    BadData,
}

/// Reads `message` as a trace envelope: a map of exactly the two entries
/// `arrpc.trace` (a string) and `data` (binary), in either order.
pub fn unwrap(message: &[u8]) -> Unwrapped<'_> {
    let mut rest = message;
    if !matches!(rmp::decode::read_map_len(&mut rest), Ok(2)) {
        return Unwrapped::Plain;
    }
    let (mut traceparent, mut data) = (None, None);
    for _ in 0..2 {
        let Ok((key, after)) = rmp::decode::read_str_from_slice(rest) else {
            return Unwrapped::Plain;
        };
        rest = after;
        match key {
            TRACE_KEY => {
                let Ok((text, after)) = rmp::decode::read_str_from_slice(rest) else {
                    return Unwrapped::Plain;
                };
                traceparent = Some(text);
                rest = after;
            }
            DATA_KEY => {
                let mut value = rest;
                let Ok(len) = rmp::decode::read_bin_len(&mut value) else {
                    return Unwrapped::Plain;
                };
                let Some(bytes) = value.get(..len as usize) else {
                    return Unwrapped::Plain;
                };
                data = Some(bytes);
                rest = &value[len as usize..];
            }
            _ => return Unwrapped::Plain,
        }
    }
    match (traceparent, data) {
        (Some(traceparent), Some(data)) if rest.is_empty() => {
            if is_single_value(data) {
                Unwrapped::Traced(Traced { traceparent, data })
            } else {
                Unwrapped::BadData
            }
        }
        _ => Unwrapped::Plain,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn traceparents_are_checked_as_w3c_defines_them() {
        assert_eq!(check_traceparent(TP), Ok(()));
        for (bad, why) in [
            ("", "expected"),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
                "expected",
            ),
            (
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                "expected",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
                "expected",
            ),
            (
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "ff",
            ),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                "trace id",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                "parent id",
            ),
        ] {
            let err = check_traceparent(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn wrapped_messages_come_back_byte_for_byte() {
        let message = [0x93, 0x01, 0x02, 0x03];
        let traced = wrap(TP, &message);
        assert_eq!(
            unwrap(&traced),
            Unwrapped::Traced(Traced {
                traceparent: TP,
                data: &message
            })
        );
    }

    #[test]
    fn other_maps_stay_plain_messages() {
        // {"foo": "bar"}: the Python arrpc package's usual example.
        let foo = [0x81, 0xa3, b'f', b'o', b'o', 0xa3, b'b', b'a', b'r'];
        assert_eq!(unwrap(&foo), Unwrapped::Plain);
        // {"arrpc.trace": "x", "data": 5}: data is not binary.
        let mut not_bin = vec![0x82, 0xab];
        not_bin.extend(TRACE_KEY.as_bytes());
        not_bin.extend([0xa1, b'x', 0xa4]);
        not_bin.extend(DATA_KEY.as_bytes());
        not_bin.push(0x05);
        assert_eq!(unwrap(&not_bin), Unwrapped::Plain);
    }

    #[test]
    fn data_that_is_not_one_value_is_reported() {
        assert_eq!(unwrap(&wrap(TP, &[0x01, 0x02])), Unwrapped::BadData);
        assert_eq!(unwrap(&wrap(TP, &[0x92, 0x01])), Unwrapped::BadData);
    }
}
