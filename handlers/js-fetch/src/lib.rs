//! `js-fetch`: one HTTP request over the host's `wasi:http`, exported as
//! `arrpc:fetch/http` in plain types (`wit/fetch.wit`) for the JavaScript
//! handlers' `fetch.js`.
//!
//! componentize-qjs snapshots a component by running it in a linker that
//! stands in for every import it does not serve with stubs, and its stub of
//! `wasi:http/types` carries streams of its own, which do not match the
//! `wasi:io` streams it does serve: a JavaScript component that imports
//! `wasi:http` fails to build. It imports this plain interface instead, and
//! `handlers/js-example/build.sh` composes this component into it with
//! `wasm-tools compose`, so the finished handler imports `wasi:http` as any
//! other does, and the host's `allowed_outbound_hosts` apply.

use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, Scheme,
};
use wasip2::io::streams::StreamError;

wit_bindgen::generate!({ world: "adapter", path: "wit" });

use exports::arrpc::fetch::http::{Guest, Request, Response};

struct Fetch;

export!(Fetch);

impl Guest for Fetch {
    fn send(request: Request) -> Result<Response, String> {
        // `HttpRequestDenied`, `DnsError(DnsErrorPayload { .. })`, ...
        send(request).map_err(|code| {
            format!("{code:?}")
                .trim_start_matches("ErrorCode::")
                .to_owned()
        })
    }
}

/// WASI's blocking-write-and-flush takes at most 4096 bytes a call.
const CHUNK: usize = 4096;

fn send(request: Request) -> Result<Response, ErrorCode> {
    let invalid = |()| ErrorCode::HttpRequestUriInvalid;
    let (scheme, rest) = request
        .url
        .split_once("://")
        .ok_or(ErrorCode::HttpRequestUriInvalid)?;
    let (authority, path) = match rest.find(['/', '?']) {
        Some(at) => rest.split_at(at),
        None => (rest, "/"),
    };
    let path = path.split('#').next().unwrap_or_default();
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        _ => Scheme::Other(scheme.to_owned()),
    };
    let method = match request.method.to_ascii_uppercase().as_str() {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "CONNECT" => Method::Connect,
        "OPTIONS" => Method::Options,
        "TRACE" => Method::Trace,
        "PATCH" => Method::Patch,
        _ => Method::Other(request.method.clone()),
    };
    let mut headers = request.headers;
    if !request.body.is_empty()
        && !headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("content-length"))
    {
        // As the web's fetch does; without it the body goes chunked.
        headers.push((
            "content-length".into(),
            request.body.len().to_string().into_bytes(),
        ));
    }
    let fields = Fields::from_list(&headers)
        .map_err(|e| ErrorCode::InternalError(Some(format!("headers: {e:?}"))))?;
    let outgoing = OutgoingRequest::new(fields);
    outgoing
        .set_method(&method)
        .map_err(|()| ErrorCode::HttpRequestMethodInvalid)?;
    outgoing.set_scheme(Some(&scheme)).map_err(invalid)?;
    outgoing.set_authority(Some(authority)).map_err(invalid)?;
    outgoing
        .set_path_with_query(Some(if path.is_empty() { "/" } else { path }))
        .map_err(invalid)?;
    let body = outgoing.body().map_err(invalid)?;
    let pending = outgoing_handler::handle(outgoing, None)?;
    // Written once the request is on its way: the host takes the body as
    // it sends it. A failed write is the response's error, read below.
    write_body(body, &request.body);

    pending.subscribe().block();
    let response = pending
        .get()
        .expect("ready after block")
        .expect("taken once")?;
    let headers = response.headers().entries();
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
    Ok(Response {
        status: response.status(),
        headers,
        body,
    })
}

/// Writes `bytes` to the request's body and finishes it; when the
/// connection fails first, drops the body, which ends the request.
fn write_body(body: OutgoingBody, bytes: &[u8]) {
    if !bytes.is_empty() {
        let Ok(stream) = body.write() else { return };
        for chunk in bytes.chunks(CHUNK) {
            if stream.blocking_write_and_flush(chunk).is_err() {
                return;
            }
        }
    }
    // A failure here is the response's error too.
    let _ = OutgoingBody::finish(body, None);
}
