//! MessagePack-RPC classification (`arrpc_wire::rpc::parse`) on arbitrary
//! bytes.
//!
//! Checked: no panic; input that is one whole value reads the same with
//! `parse_whole`, which does not walk the last item again; whatever is
//! read as a request, response or notification has parts that are each
//! one whole value, and encoding
//! those parts again reads back as the same message (an error text as the
//! same text, whichever string form it came in).

#![no_main]

use arrpc_wire::frame::is_single_value;
use arrpc_wire::rpc::{self, Message};
use libfuzzer_sys::fuzz_target;

const NIL: &[u8] = &[0xc0];

fuzz_target!(|input: &[u8]| {
    if is_single_value(input) {
        assert_eq!(rpc::parse_whole(input), rpc::parse(input));
    }
    let Some(message) = rpc::parse(input) else {
        return;
    };
    let again = match message {
        Message::Request {
            msgid,
            method,
            params,
        } => {
            assert!(is_single_value(params));
            rpc::request(msgid, method, params)
        }
        Message::Notification { method, params } => {
            assert!(is_single_value(params));
            rpc::notification(method, params)
        }
        Message::Response {
            msgid,
            error,
            result,
        } => {
            assert!(is_single_value(error) && is_single_value(result));
            match rpc::error_text(error) {
                // Only nil-error and string-error responses are ever sent.
                Some(text) if result == NIL => rpc::response(msgid, Err(text)),
                None if error == NIL => rpc::response(msgid, Ok(result)),
                _ => return,
            }
        }
    };
    let reread = rpc::parse(&again).expect("the message encoded again reads back");
    match (message, reread) {
        // An error text is written in the shortest string form, which the
        // sender need not have used: the text must match, not the bytes.
        (
            Message::Response {
                msgid,
                error,
                result,
            },
            Message::Response {
                msgid: msgid_again,
                error: error_again,
                result: result_again,
            },
        ) => assert_eq!(
            (msgid, rpc::error_text(error), result),
            (msgid_again, rpc::error_text(error_again), result_again)
        ),
        (message, reread) => assert_eq!(message, reread),
    }
});
