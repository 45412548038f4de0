//! `net`: makes the outbound requests a message asks for and says how each
//! went, so the host's tests can check its allow lists, address rules,
//! timeouts and pooling from inside the sandbox. It is also the smallest
//! example of a Rust handler that calls out, over the plain WASI 0.2
//! bindings (`wasip2`): `wasi:http/outgoing-handler` for HTTP,
//! `wasi:sockets` for TCP.
//!
//! The message is a map with an `op`:
//! - `{"op": "get", "url": "...", "connect_ms"?, "first_byte_ms"?,
//!   "between_bytes_ms"?}` answers `{"status": n, "body": bin}`;
//! - `{"op": "tcp", "addr": "ip:port", "send": bin}` connects, writes
//!   `send`, reads until the peer closes and answers `{"received": bin}`;
//! - `{"op": "resolve", "name": "..."}` answers the addresses as strings;
//! - `{"op": "call", "upstream": "...", "method": "...", "params": value}`
//!   calls an `[[upstream]]` over MessagePack-RPC and answers the result;
//! - `{"op": "send", "upstream": "...", "message": value}` sends it a
//!   bare message and answers the reply.
//!
//! A refusal or failure is the error reply `net: <op>: <error code>`; an
//! upstream's error says whether the call may have run, as
//! `net: call: Denied(..)`, `NotRun(..)`, `MayHaveRun(..)`, `Remote(..)` or
//! `TimedOut`.

use std::net::{IpAddr, SocketAddr};

use arrpc_handler::{Context, upstream};
use rmpv::Value;
use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, RequestOptions, Scheme,
};
use wasip2::io::streams::StreamError;
use wasip2::sockets::network::{
    IpAddressFamily, IpSocketAddress, Ipv4SocketAddress, Ipv6SocketAddress,
};
use wasip2::sockets::{instance_network, ip_name_lookup, tcp_create_socket};

fn net(_ctx: &Context, payload: Vec<u8>) -> Result<Vec<u8>, String> {
    let message = rmpv::decode::read_value(&mut payload.as_slice())
        .map_err(|e| format!("net: not MessagePack: {e}"))?;
    let field = |name: &str| {
        message
            .as_map()
            .and_then(|m| m.iter().find(|(k, _)| k.as_str() == Some(name)))
            .map(|(_, v)| v)
    };
    let text = |name: &str| field(name).and_then(Value::as_str).unwrap_or_default();
    let millis = |name: &str| field(name).and_then(Value::as_u64);
    let op = text("op");
    let reply = match op {
        "get" => get(
            text("url"),
            [
                millis("connect_ms"),
                millis("first_byte_ms"),
                millis("between_bytes_ms"),
            ],
        )
        .map_err(|e| format!("{e:?}")),
        "tcp" => tcp(
            text("addr"),
            field("send").and_then(Value::as_slice).unwrap_or_default(),
        ),
        "resolve" => resolve(text("name")),
        "call" => upstream::call_raw(text("upstream"), text("method"), &encoded(field("params")))
            .map_err(|e| format!("{e:?}"))
            .and_then(decoded),
        "send" => upstream::send_raw(text("upstream"), &encoded(field("message")))
            .map_err(|e| format!("{e:?}"))
            .and_then(decoded),
        other => Err(format!("unknown op {other:?}")),
    }
    .map_err(|e| format!("net: {op}: {e}"))?;
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, &reply).map_err(|e| e.to_string())?;
    Ok(out)
}

arrpc_handler::raw_handler!(net);

/// `value` (nil when absent) as MessagePack.
fn encoded(value: Option<&Value>) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = rmpv::encode::write_value(&mut out, value.unwrap_or(&Value::Nil));
    out
}

fn decoded(bytes: Vec<u8>) -> Result<Value, String> {
    rmpv::decode::read_value(&mut bytes.as_slice()).map_err(|e| e.to_string())
}

/// A GET of `url` with the connect, first-byte and between-bytes timeouts
/// given in milliseconds.
fn get(url: &str, timeouts: [Option<u64>; 3]) -> Result<Value, ErrorCode> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or(ErrorCode::HttpRequestUriInvalid)?;
    let (authority, path) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, "/"),
    };
    let request = OutgoingRequest::new(Fields::new());
    let scheme = match scheme {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => Scheme::Other(other.to_owned()),
    };
    let invalid = |()| ErrorCode::HttpRequestUriInvalid;
    request.set_method(&Method::Get).map_err(invalid)?;
    request.set_scheme(Some(&scheme)).map_err(invalid)?;
    request.set_authority(Some(authority)).map_err(invalid)?;
    request.set_path_with_query(Some(path)).map_err(invalid)?;
    let options = RequestOptions::new();
    let nanos = |ms: Option<u64>| ms.map(|ms| ms * 1_000_000);
    let [connect, first_byte, between_bytes] = timeouts;
    options
        .set_connect_timeout(nanos(connect))
        .map_err(invalid)?;
    options
        .set_first_byte_timeout(nanos(first_byte))
        .map_err(invalid)?;
    options
        .set_between_bytes_timeout(nanos(between_bytes))
        .map_err(invalid)?;
    let body = request.body().map_err(invalid)?;
    OutgoingBody::finish(body, None)?;
    let pending = outgoing_handler::handle(request, Some(options))?;
    pending.subscribe().block();
    let response = pending
        .get()
        .expect("ready after block")
        .expect("taken once")?;
    let status = response.status();
    let incoming = response
        .consume()
        .map_err(|()| ErrorCode::HttpProtocolError)?;
    let stream = incoming
        .stream()
        .map_err(|()| ErrorCode::HttpProtocolError)?;
    let mut body = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => body.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(e)) => {
                return Err(wasip2::http::types::http_error_code(&e)
                    .unwrap_or(ErrorCode::InternalError(Some(e.to_debug_string()))));
            }
        }
    }
    drop(stream);
    IncomingBody::finish(incoming);
    Ok(Value::Map(vec![
        ("status".into(), status.into()),
        ("body".into(), Value::Binary(body)),
    ]))
}

/// A TCP exchange with `addr`: send `data`, read until closed.
fn tcp(addr: &str, data: &[u8]) -> Result<Value, String> {
    let addr: SocketAddr = addr.parse().map_err(|e| format!("{addr:?}: {e}"))?;
    let (family, remote) = match addr {
        SocketAddr::V4(a) => {
            let [a0, a1, a2, a3] = a.ip().octets();
            (
                IpAddressFamily::Ipv4,
                IpSocketAddress::Ipv4(Ipv4SocketAddress {
                    port: a.port(),
                    address: (a0, a1, a2, a3),
                }),
            )
        }
        SocketAddr::V6(a) => {
            let [s0, s1, s2, s3, s4, s5, s6, s7] = a.ip().segments();
            (
                IpAddressFamily::Ipv6,
                IpSocketAddress::Ipv6(Ipv6SocketAddress {
                    port: a.port(),
                    address: (s0, s1, s2, s3, s4, s5, s6, s7),
                    flow_info: 0,
                    scope_id: 0,
                }),
            )
        }
    };
    let socket = tcp_create_socket::create_tcp_socket(family).map_err(|e| format!("{e:?}"))?;
    let network = instance_network::instance_network();
    socket
        .start_connect(&network, remote)
        .map_err(|e| format!("{e:?}"))?;
    let (input, output) = loop {
        socket.subscribe().block();
        match socket.finish_connect() {
            Err(wasip2::sockets::network::ErrorCode::WouldBlock) => continue,
            other => break other.map_err(|e| format!("{e:?}"))?,
        }
    };
    output
        .blocking_write_and_flush(data)
        .map_err(|e| format!("{e:?}"))?;
    let mut received = Vec::new();
    loop {
        match input.blocking_read(64 * 1024) {
            Ok(chunk) => received.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break,
            Err(e) => return Err(format!("{e:?}")),
        }
    }
    Ok(Value::Map(vec![(
        "received".into(),
        Value::Binary(received),
    )]))
}

/// The addresses `name` has, as the guest's own name lookup answers.
fn resolve(name: &str) -> Result<Value, String> {
    let network = instance_network::instance_network();
    let stream = ip_name_lookup::resolve_addresses(&network, name).map_err(|e| format!("{e:?}"))?;
    let mut found = Vec::new();
    loop {
        match stream.resolve_next_address() {
            Ok(Some(addr)) => found.push(Value::from(ip(addr).to_string())),
            Ok(None) => break,
            Err(wasip2::sockets::network::ErrorCode::WouldBlock) => stream.subscribe().block(),
            Err(e) => return Err(format!("{e:?}")),
        }
    }
    Ok(Value::Array(found))
}

fn ip(addr: wasip2::sockets::network::IpAddress) -> IpAddr {
    use wasip2::sockets::network::IpAddress;
    match addr {
        IpAddress::Ipv4((a, b, c, d)) => IpAddr::from([a, b, c, d]),
        IpAddress::Ipv6((a, b, c, d, e, f, g, h)) => IpAddr::from([a, b, c, d, e, f, g, h]),
    }
}
