//! The binary as an operator uses it: `send`, `check`, and refusing to start
//! on a bad config, naming what is wrong.

mod common;

use std::io::Write;
use std::process::{Output, Stdio};

use common::*;

fn run(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = host_command()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn send_prints_the_json_reply_from_argument_stdin_and_file() {
    let host = Host::start_config(&serving(vec![handler_config("echo", "echo")]));
    let addr = host.addr.to_string();
    let out = run(&["send", "--addr", &addr, r#"{"foo":"bar"}"#], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "{\"foo\":\"bar\"}\n");

    let out = run(&["send", "--addr", &addr], b"[1, 2.5, null]");
    assert_eq!(stdout(&out), "[1,2.5,null]\n");

    let file = write_config("{\"from\": \"file\"}");
    let path = file.path.to_str().unwrap();
    let out = run(&["send", "--addr", &addr, "--file", path], b"");
    assert_eq!(stdout(&out), "{\"from\":\"file\"}\n");

    let out = run(&["send", "--addr", &addr, "--hex", "92c40201020a"], b"");
    assert_eq!(stdout(&out), "92c40201020a\n");

    let out = run(&["send", "--addr", &addr, "--raw"], &[0x93, 1, 2, 3]);
    assert_eq!(out.stdout, [0x93, 1, 2, 3]);
}

#[test]
fn send_fails_with_one_line_and_nonzero_exit() {
    let host = Host::start_config(&misbehave_config(|handler| handler));
    let addr = host.addr.to_string();
    let out = run(&["send", "--addr", &addr, "\"error\""], b"");
    assert!(!out.status.success());
    assert_eq!(
        stderr(&out),
        "error: remote error: misbehave: asked to fail\n"
    );

    let out = run(&["send", "--addr", &addr, "{not json"], b"");
    assert!(!out.status.success());
    assert!(
        stderr(&out).starts_with("error: message is not JSON"),
        "{}",
        stderr(&out)
    );

    // Nothing listens on this port: connect fails after the attempts.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let out = run(
        &["send", "--addr", &closed.to_string(), "--retries", "2", "1"],
        b"",
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.starts_with("error: failed to connect to") && err.contains("after 2 attempts"),
        "{err}"
    );
    // The reason is given once, not repeated by the error chain.
    assert_eq!(err.matches("os error 111").count(), 1, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// `check` prints each handler with its module and the module's sha256,
/// and listens on nothing: the message and admin ports it names are held
/// by this test, and it still succeeds.
#[test]
fn check_loads_every_handler_without_listening() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let admin = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let config = write_config(&format!(
        "[server]\nlisten = \"{}\"\ndefault_handler = \"echo\"\n\
         [admin]\nlisten = \"{}\"\n{}{}",
        taken.local_addr().unwrap(),
        admin.local_addr().unwrap(),
        handler("echo", "echo", ""),
        handler("sum", "sum", "")
    ));
    components();
    let out = run(&["check", "--config", config.path.to_str().unwrap()], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for name in ["echo", "sum"] {
        let module = component(name);
        let line = format!(
            "ok  {name}  {}  sha256:{}",
            module.display(),
            sha256_of(&module)
        );
        assert!(
            text.lines().any(|l| l == line),
            "no line {line:?} in\n{text}"
        );
    }
    assert!(text.ends_with("2 handler(s) ok\n"), "{text}");
    assert!(!stderr(&out).contains("listening"), "{}", stderr(&out));
}

#[test]
fn check_exits_non_zero_naming_a_bad_handler() {
    let config = write_config(&format!(
        "[server]\ndefault_handler = \"echo\"\n{}\
         [[handler]]\nname = \"junk\"\nmodule = \"junk.wasm\"\n",
        handler("echo", "echo", "")
    ));
    std::fs::write(config.dir.path().join("junk.wasm"), b"not wasm at all").unwrap();
    components();
    let out = run(&["check", "--config", config.path.to_str().unwrap()], b"");
    assert!(!out.status.success(), "{}", stdout(&out));
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        text.contains("junk") && text.contains("not a valid component"),
        "{text}"
    );
}

/// Starts the host on `config` and expects it to refuse, returning stderr.
fn refuses(config: &TestConfig) -> String {
    components();
    let out = host_command()
        .args([
            "--config",
            config.path.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "host started on a bad config");
    stderr(&out)
}

#[test]
fn unknown_key_is_named_with_the_file() {
    let config = write_config(&format!(
        "{}colour = \"red\"\n",
        handler("echo", "echo", "")
    ));
    let err = refuses(&config);
    assert!(
        err.contains("arrpc.toml") && err.contains("unknown field `colour`"),
        "{err}"
    );
}

#[test]
fn unreadable_config_is_named() {
    let config = write_config("");
    std::fs::remove_file(&config.path).unwrap();
    let err = refuses(&config);
    assert!(err.contains("arrpc.toml: cannot read"), "{err}");
}

#[test]
fn missing_module_names_the_handler_and_path() {
    let config = write_config("[[handler]]\nname = \"ghost\"\nmodule = \"nowhere/ghost.wasm\"\n");
    let err = refuses(&config);
    assert!(
        err.contains("handler `ghost`") && err.contains("nowhere/ghost.wasm"),
        "{err}"
    );
    assert!(err.contains("not found"), "{err}");
}

#[test]
fn failing_build_command_is_reported() {
    let config =
        write_config("[[handler]]\nname = \"b\"\nmodule = \"b.wasm\"\nbuild = \"exit 3\"\n");
    let err = refuses(&config);
    assert!(
        err.contains("handler `b`") && err.contains("build command `exit 3` failed"),
        "{err}"
    );
}

#[test]
fn build_command_runs_when_the_module_is_missing() {
    let echo = component("echo");
    let config = write_config(&format!(
        "[[handler]]\nname = \"built\"\nmodule = \"out/built.wasm\"\nbuild = \"mkdir -p out && cp '{}' out/built.wasm\"\n",
        echo.display()
    ));
    let host = Host::start_with(config, &[]);
    assert_eq!(host.connect().call(&[0x07]), [0x07]);
}

/// The shipped `arrpc.toml` names `handlers/target/...`, so the handlers'
/// build script must put components there even in a shell that sets
/// `CARGO_TARGET_DIR` for other work.
#[test]
fn handler_build_script_ignores_cargo_target_dir() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let elsewhere = tempfile::tempdir().unwrap();
    run_sh(
        &root.join("handlers/build.sh"),
        &[std::path::Path::new("echo")],
        &[("CARGO_TARGET_DIR", elsewhere.path())],
        "building echo failed",
    );
    assert!(
        root.join("handlers/target/wasm32-wasip2/release/echo.wasm")
            .is_file()
    );
    let written: Vec<_> = std::fs::read_dir(elsewhere.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert!(
        written.is_empty(),
        "build output went to CARGO_TARGET_DIR: {written:?}"
    );
}

#[test]
fn invalid_module_is_refused_with_the_reason() {
    let config = write_config("[[handler]]\nname = \"junk\"\nmodule = \"junk.wasm\"\n");
    std::fs::write(config.dir.path().join("junk.wasm"), b"not wasm at all").unwrap();
    let err = refuses(&config);
    assert!(
        err.contains("handler `junk`") && err.contains("not a valid component"),
        "{err}"
    );
}

#[test]
fn port_in_use_is_refused() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let config = write_config_value(&serving(vec![handler_config("echo", "echo")]));
    components();
    let out = host_command()
        .args(["--config", config.path.to_str().unwrap(), "--listen", &addr])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");
}

#[test]
fn rust_client_round_trip_typed_and_raw() {
    use std::collections::BTreeMap;
    let host = Host::start_config(&serving(vec![handler_config("echo", "echo")]));
    let mut client =
        arrpc_client::BlockingClient::new(arrpc_client::ClientConfig::new(host.addr.to_string()))
            .unwrap();
    let message = BTreeMap::from([("foo".to_string(), "bar".to_string())]);
    let reply: BTreeMap<String, String> = client.send(&message).unwrap();
    assert_eq!(reply, message);
    assert_eq!(&client.send_raw(&[0xc3]).unwrap()[..], [0xc3]);
}

#[test]
fn send_continues_a_trace_it_is_given() {
    let host = Host::start_config(&misbehave_config(|handler| handler));
    let addr = host.addr.to_string();
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    // With tracing off the host hands the caller's context to the handler
    // unchanged, which `context` prints back; bare and RPC alike.
    for rpc in [&[][..], &["--handler", "misbehave"]] {
        let mut args = vec!["send", "--addr", &addr, "--traceparent", traceparent];
        args.extend_from_slice(rpc);
        args.push(if rpc.is_empty() {
            "\"context\""
        } else {
            "[\"context\"]"
        });
        let out = run(&args, b"");
        assert!(out.status.success(), "{}", stderr(&out));
        let context: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        assert_eq!(context["traceparent"], traceparent, "{context}");
    }
    let out = run(&["send", "--addr", &addr, "\"context\""], b"");
    let context: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(context["traceparent"], serde_json::Value::Null);

    let out = run(
        &["send", "--addr", &addr, "--traceparent", "00-abc-01", "1"],
        b"",
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("expected `00-<32 hex trace id>"),
        "{}",
        stderr(&out)
    );
}
