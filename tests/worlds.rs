//! The three versions of the handler world, served by a real host over
//! real TLS: a component built against arrpc:handler@0.3.0 (`misbehave`)
//! asks the host who called and is told the caller's verified identity,
//! none without a verified client certificate; one built against 0.2.0
//! (`context-0-2`, compiled from `wit/0.2.0/handler.wit`) is told the same
//! in its context; one built against 0.1.0 (`context-0-1`) still loads and
//! serves; a component that matches none is refused at start, naming the
//! handler and its file. A component that never asks who called imports
//! nothing for it: the Rust echo imports nothing at all.

mod common;

use std::io::{Read, Write};

use arrpc_host::config::{ClientCertificates, Config, TlsConfig};
use common::certs::{self, Ca, CertFiles};
use common::*;
use rmpv::Value;
use wasmtime::component::types::ComponentItem;

const WEB: &str = "spiffe://cluster.local/ns/shop/sa/web";

/// `misbehave` (0.3.0, the default handler), `v2` (0.2.0) and `old`
/// (0.1.0), all open to anyone.
fn handlers() -> Config {
    serving(vec![
        handler_config("misbehave", "misbehave"),
        handler_config("v2", "context_0_2"),
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

/// The `caller` handler `name` (of world 0.3.0 or 0.2.0) saw for a
/// message on `stream`, which it was told comes from `peer`.
fn caller_seen(stream: &mut (impl Read + Write), name: &str, peer: &str) -> Value {
    let context = call(stream, name, &Value::Array(vec![str_value("context")]));
    assert_eq!(field(&context, "handler"), str_value(name));
    assert_eq!(field(&context, "peer"), str_value(peer));
    field(&context, "caller")
}

/// The caller both current worlds see for a message on `stream`, each
/// asked twice: per message, not per connection.
fn callers_seen(stream: &mut (impl Read + Write), peer: &str, expected: &Value) {
    for name in ["misbehave", "v2", "misbehave", "v2"] {
        assert_eq!(&caller_seen(stream, name, peer), expected, "{name}");
    }
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
        let local = stream.sock.local_addr().unwrap().to_string();
        callers_seen(&mut stream, &local, &expected);
        assert_old_world_serves(&mut stream, &local);
    }
}

/// Without a verified certificate there is no caller: over plain TCP, and
/// over TLS that asks for none even when the client has one to present.
#[test]
fn no_caller_without_a_verified_certificate() {
    let host = Host::start_config(&handlers());
    let mut wire = host.connect();
    let local = wire.stream.local_addr().unwrap().to_string();
    callers_seen(&mut wire.stream, &local, &Value::Nil);
    assert_old_world_serves(&mut wire.stream, &local);

    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "cluster");
    let server = ca.server(dir.path(), "server", certs::local_names());
    let web = ca.workload(dir.path(), "web", Some(WEB), &[]);
    let host = Host::start_config(&config(&server, &ca, false));
    let mut stream = certs::tls_connect(host.addr, certs::rustls_client(&ca.cert, Some(&web)));
    let local = stream.sock.local_addr().unwrap().to_string();
    callers_seen(&mut stream, &local, &Value::Nil);
}

/// A handler whose instance is reused is told who sent each message, not
/// who sent its first: two clients, one instance.
#[test]
fn a_reused_instance_is_told_each_messages_caller() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "cluster");
    let server = ca.server(dir.path(), "server", certs::local_names());
    let web = ca.workload(dir.path(), "web", Some(WEB), &[]);
    let mut reused = handler_config("misbehave", "misbehave");
    reused.reuse = 100;
    reused.max_instances = 1;
    let host = Host::start_config(&Config {
        handlers: vec![reused],
        ..config(&server, &ca, true)
    });
    let mut with_cert = certs::tls_connect(host.addr, certs::rustls_client(&ca.cert, Some(&web)));
    let mut without = certs::tls_connect(host.addr, certs::rustls_client(&ca.cert, None));
    let with_addr = with_cert.sock.local_addr().unwrap().to_string();
    let without_addr = without.sock.local_addr().unwrap().to_string();
    let count = Value::Array(vec![str_value("count")]);
    assert_eq!(call(&mut with_cert, "misbehave", &count), Value::from(1));
    for _ in 0..2 {
        assert_eq!(
            caller_seen(&mut with_cert, "misbehave", &with_addr),
            caller(Some(WEB), &[])
        );
        assert_eq!(
            caller_seen(&mut without, "misbehave", &without_addr),
            Value::Nil
        );
    }
    // `count` counts the calls to it an instance has served.
    assert_eq!(
        call(&mut without, "misbehave", &count),
        Value::from(2),
        "one instance served every message"
    );
}

/// A component that never asks who called imports nothing for it, and
/// the Rust echo, which does nothing but return its payload, imports no
/// function at all: no WASI either.
#[test]
fn the_rust_echo_imports_nothing() {
    let engine = wasmtime::Engine::default();
    let load = |name: &str| {
        let path = components().join(format!("{name}.wasm"));
        let component = wasmtime::component::Component::from_file(&engine, path).unwrap();
        component.component_type()
    };
    let names = |ty: &wasmtime::component::types::Component| -> Vec<String> {
        ty.imports(&engine)
            .map(|(name, _)| name.to_owned())
            .collect()
    };
    let echo = load("echo");
    // Its one import is the instance of WIT types its `handle` names:
    // types only, no function.
    for (name, item) in echo.imports(&engine) {
        let ComponentItem::ComponentInstance(instance) = item.ty else {
            panic!("echo imports {name}, not an instance of types");
        };
        let functions: Vec<&str> = instance
            .exports(&engine)
            .filter(|(_, item)| !matches!(item.ty, ComponentItem::Type(_)))
            .map(|(name, _)| name)
            .collect();
        assert!(
            functions.is_empty(),
            "echo imports {functions:?} from {name}"
        );
    }
    assert_eq!(names(&echo), ["arrpc:handler/types@0.3.0"]);
    let imports = names(&load("misbehave"));
    assert!(
        imports.iter().any(|i| i == "arrpc:handler/client@0.3.0"),
        "misbehave asks who called, so it imports the client interface: {imports:?}"
    );
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
    assert!(line("misbehave").contains("world=0.3.0"), "{log}");
    assert!(line("v2").contains("world=0.2.0"), "{log}");
    assert!(line("old").contains("world=0.1.0"), "{log}");
}

/// A component with no `handle` export, and one whose `handle` takes
/// other types, are refused at start with the handler and file named.
#[test]
fn a_component_of_no_world_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "empty",
            empty_component(),
            "exports no `handle` function: it implements none of arrpc:handler@0.3.0, @0.2.0 and @0.1.0",
        ),
        (
            "other",
            other_handle(),
            "matches none of arrpc:handler@0.3.0, @0.2.0 and @0.1.0",
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
