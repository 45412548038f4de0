//! The two versions of the handler world, served by a real host over real
//! TLS: a component built against arrpc:handler@0.2.0 (`misbehave`) sees
//! the caller's verified identity in its context, none without a verified
//! client certificate; one built against 0.1.0 (`context-0-1`, compiled from
//! `wit/0.1.0/handler.wit`) still loads and serves; a component that
//! matches neither is refused at start, naming the handler and its file.

mod common;

use std::io::{Read, Write};

use arrpc_host::config::{ClientCertificates, Config, TlsConfig};
use common::certs::{self, Ca, CertFiles};
use common::*;
use rmpv::Value;

const WEB: &str = "spiffe://cluster.local/ns/shop/sa/web";

/// `misbehave` (0.2.0, the default handler) and `old` (0.1.0), both open
/// to anyone.
fn handlers() -> Config {
    serving(vec![
        handler_config("misbehave", "misbehave"),
        handler_config("old", "context_0_1"),
    ])
}

/// [`handlers`] behind TLS that verifies client certificates from `ca`
/// when `client_ca` is set.
fn config(server: &CertFiles, ca: &Ca, client_ca: bool) -> Config {
    let tls = TlsConfig::new(server.cert.clone(), server.key.clone());
    let tls = if client_ca {
        TlsConfig {
            client_ca: Some(ca.cert.clone()),
            client_certificates: ClientCertificates::Optional,
            ..tls
        }
    } else {
        tls
    };
    Config {
        tls: Some(tls),
        ..handlers()
    }
}

/// One MessagePack-RPC call on an open stream: its result, which must not
/// be an error.
fn call(stream: &mut (impl Read + Write), method: &str, params: &Value) -> Value {
    stream
        .write_all(&arrpc_wire::rpc::request(9, method, &encode(params)))
        .unwrap();
    let mut buffer = Vec::new();
    loop {
        if let Some(len) = arrpc_wire::frame::value_len(&buffer) {
            let Value::Array(mut items) = decode(&buffer[..len]) else {
                panic!("not a response");
            };
            assert_eq!(items[2], Value::Nil, "{method} failed");
            return items.pop().unwrap();
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0, "connection closed");
        buffer.extend_from_slice(&chunk[..n]);
    }
}

/// The field `key` of the map `value`.
fn field(value: &Value, key: &str) -> Value {
    value
        .as_map()
        .unwrap_or_else(|| panic!("not a map: {value}"))
        .iter()
        .find(|(k, _)| k.as_str() == Some(key))
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("no {key} in {value}"))
}

/// The `caller` a 0.2.0 handler saw for a message on `stream`.
fn caller_seen(stream: &mut (impl Read + Write)) -> Value {
    let context = call(
        stream,
        "misbehave",
        &Value::Array(vec![str_value("context")]),
    );
    assert_eq!(field(&context, "handler"), str_value("misbehave"));
    field(&context, "caller")
}

fn caller(spiffe_id: Option<&str>, dns_names: &[&str]) -> Value {
    Value::Map(vec![
        (
            str_value("spiffe_id"),
            spiffe_id.map_or(Value::Nil, str_value),
        ),
        (
            str_value("dns_names"),
            Value::Array(dns_names.iter().map(|d| str_value(d)).collect()),
        ),
    ])
}

/// A 0.1.0 handler gets the context its world has, and serves.
fn assert_old_world_serves(stream: &mut (impl Read + Write), peer: &str) {
    let ask = Value::Array(vec![str_value("context")]);
    let context = call(stream, "old", &ask);
    assert_eq!(field(&context, "handler"), str_value("old"));
    assert_eq!(field(&context, "peer"), str_value(peer));
    assert_eq!(field(&context, "timeout_ms"), Value::from(5000));
    assert_eq!(context.as_map().unwrap().len(), 5, "{context}");
    let other = Value::Array(vec![Value::from(42)]);
    assert_eq!(call(stream, "old", &other), other);
}

/// With mutual TLS, the handler sees the certificate's SPIFFE ID and DNS
/// names (lowercased), the DNS names alone, an empty caller for a
/// certificate naming neither, and none when the client presents no
/// certificate; the 0.1.0 handler serves each of them.
#[test]
fn a_handler_sees_the_verified_caller() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "cluster");
    let server = ca.server(dir.path(), "server", certs::local_names());
    let both = ca.workload(
        dir.path(),
        "both",
        Some(WEB),
        &["Web.Shop.svc", "web.shop.svc.cluster.local"],
    );
    let named = ca.workload(dir.path(), "named", None, &["checkout.shop.svc"]);
    let nameless = ca.workload(dir.path(), "nameless", None, &[]);
    let host = Host::start_config(&config(&server, &ca, true));

    let cases: [(Option<&CertFiles>, Value); 4] = [
        (
            Some(&both),
            caller(Some(WEB), &["web.shop.svc", "web.shop.svc.cluster.local"]),
        ),
        (Some(&named), caller(None, &["checkout.shop.svc"])),
        (Some(&nameless), caller(None, &[])),
        (None, Value::Nil),
    ];
    for (identity, expected) in cases {
        let mut stream = certs::tls_connect(host.addr, certs::rustls_client(&ca.cert, identity));
        assert_eq!(caller_seen(&mut stream), expected);
        // Per message, not per connection: a second one sees the same.
        assert_eq!(caller_seen(&mut stream), expected);
        let local = stream.sock.local_addr().unwrap().to_string();
        assert_old_world_serves(&mut stream, &local);
    }
}

/// Without a verified certificate there is no caller: over plain TCP, and
/// over TLS that asks for none even when the client has one to present.
#[test]
fn no_caller_without_a_verified_certificate() {
    let host = Host::start_config(&handlers());
    let mut wire = host.connect();
    assert_eq!(caller_seen(&mut wire.stream), Value::Nil);
    let local = wire.stream.local_addr().unwrap().to_string();
    assert_old_world_serves(&mut wire.stream, &local);

    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "cluster");
    let server = ca.server(dir.path(), "server", certs::local_names());
    let web = ca.workload(dir.path(), "web", Some(WEB), &[]);
    let host = Host::start_config(&config(&server, &ca, false));
    let mut stream = certs::tls_connect(host.addr, certs::rustls_client(&ca.cert, Some(&web)));
    assert_eq!(caller_seen(&mut stream), Value::Nil);
}

/// The load log says which world each component targets.
#[test]
fn the_load_log_names_each_world() {
    let host = Host::start_config(&handlers());
    let log = host.wait_for_log("handler=old");
    let line = |name: &str| {
        log.lines()
            .find(|l| l.contains("loaded handler") && l.contains(&format!("handler={name} ")))
            .unwrap_or_else(|| panic!("no load line for {name} in:\n{log}"))
            .to_owned()
    };
    assert!(line("misbehave").contains("world=0.2.0"), "{log}");
    assert!(line("old").contains("world=0.1.0"), "{log}");
}

/// A component with no `handle` export, and one whose `handle` takes
/// other types, are refused at start with the handler and file named.
#[test]
fn a_component_of_neither_world_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "empty",
            empty_component(),
            "exports no `handle` function: it implements neither arrpc:handler@0.2.0 nor @0.1.0",
        ),
        (
            "other",
            other_handle(),
            "matches neither arrpc:handler@0.2.0 nor @0.1.0",
        ),
    ];
    for (name, bytes, reason) in cases {
        let module = dir.path().join(format!("{name}.wasm"));
        std::fs::write(&module, bytes).unwrap();
        let error = start_refused(
            &format!(
                "[[handler]]\nname = \"{name}\"\nmodule = \"{}\"\n",
                module.display()
            ),
            &[],
            &[],
        );
        assert!(error.contains(reason), "{name}: {error}");
        assert!(
            error.contains(&format!("`{name}`")) && error.contains(&module.display().to_string()),
            "{name}: {error}"
        );
    }
}

/// The smallest valid component: its preamble, nothing inside.
fn empty_component() -> Vec<u8> {
    wasm_encoder::Component::new().finish()
}

/// A component exporting `handle: func(n: u32)`, a function of that name
/// of neither world's type.
fn other_handle() -> Vec<u8> {
    use wasm_encoder::{
        CodeSection, ComponentBuilder, ComponentExportKind, ComponentValType, ExportKind,
        ExportSection, Function, FunctionSection, Instruction, Module, PrimitiveValType,
        TypeSection, ValType,
    };
    let mut module = Module::new();
    let mut types = TypeSection::new();
    types.ty().function([ValType::I32], []);
    module.section(&types);
    let mut functions = FunctionSection::new();
    functions.function(0);
    module.section(&functions);
    let mut exports = ExportSection::new();
    exports.export("handle", ExportKind::Func, 0);
    module.section(&exports);
    let mut code = CodeSection::new();
    let mut body = Function::new([]);
    body.instruction(&Instruction::End);
    code.function(&body);
    module.section(&code);

    let mut component = ComponentBuilder::default();
    let core_module = component.core_module(None, &module);
    let instance = component.core_instantiate(None, core_module, Vec::<(&str, _)>::new());
    let core_func = component.core_alias_export(None, instance, "handle", ExportKind::Func);
    let (ty, encoder) = component.ty(None);
    encoder
        .function()
        .params([("n", ComponentValType::Primitive(PrimitiveValType::U32))])
        .result(None);
    let func = component.lift_func(None, core_func, ty, []);
    component.export("handle", ComponentExportKind::Func, func, None);
    component.finish()
}
