//! Per-handler limits and capabilities from `arrpc.toml`: misbehaving
//! handlers under load leave a well-behaved one answering, fuel runs out
//! with an error naming it, and files and environment variables reach a
//! guest only as granted.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use arrpc_host::config::{DirGrant, HandlerConfig};
use common::*;
use rmpv::Value;

fn call(wire: &mut Wire, msgid: u32, method: &str, command: &str) -> (Value, Value) {
    wire.rpc(msgid, method, &str_value(command))
}

fn error_of(wire: &mut Wire, method: &str, command: &str) -> String {
    let (error, _) = call(wire, 1, method, command);
    error
        .as_str()
        .unwrap_or_else(|| panic!("{command}: no error"))
        .to_owned()
}

#[test]
fn a_well_behaved_handler_keeps_answering_while_others_misbehave_under_load() {
    let mut config = serving(vec![
        HandlerConfig {
            timeout: Duration::from_millis(400),
            max_instances: 16,
            ..handler_config("misbehave", "misbehave")
        },
        // The same module with one limit each and the default timeout, so
        // that how fast it allocates or prints on a loaded machine does not
        // decide which limit ends a call.
        HandlerConfig {
            max_memory_mib: 16,
            ..handler_config("hungry", "misbehave")
        },
        handler_config("chatty", "misbehave"),
        handler_config("echo", "echo"),
    ]);
    config.server.default_handler = Some("echo".into());
    let host = InProcessHost::start(config);
    let addr = host.addr;
    // Attackers that have finished a round, and whether echo is done.
    let started = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    // Each limit, from several connections at once, until echo is done; a
    // chatty handler among them must still get its reply every time.
    let attackers: Vec<_> = [
        ("misbehave", "loop", Err("exceeded its timeout of 400 ms")),
        ("misbehave", "loop", Err("exceeded its timeout of 400 ms")),
        (
            "hungry",
            "alloc",
            Err("exceeded its memory limit of 16 MiB"),
        ),
        (
            "hungry",
            "alloc",
            Err("exceeded its memory limit of 16 MiB"),
        ),
        ("misbehave", "trap", Err("trapped")),
        ("chatty", "print:20000", Ok(Value::from(20000))),
    ]
    .into_iter()
    .map(|(method, command, expected)| {
        let (started, done) = (started.clone(), done.clone());
        thread::spawn(move || {
            let mut wire = Wire::connect(addr);
            let mut rounds = 0;
            while !done.load(Ordering::Relaxed) {
                let (error, result) = call(&mut wire, rounds, method, command);
                match (&expected, error.as_str()) {
                    (Err(expected), Some(text)) => {
                        assert!(text.contains(expected), "{command}: {text}")
                    }
                    (Err(_), None) => panic!("{command}: answered {result}, not refused"),
                    (Ok(expected), None) => assert_eq!(&result, expected, "{command}"),
                    (Ok(_), Some(text)) => panic!("{command}: refused: {text}"),
                }
                if rounds == 0 {
                    started.fetch_add(1, Ordering::Relaxed);
                }
                rounds += 1;
            }
        })
    })
    .collect();
    // Once every attacker is under way, echo answers while they go on.
    wait_until("every attacker under way", Duration::from_secs(120), || {
        started.load(Ordering::Relaxed) == attackers.len()
    });
    let mut wire = host.connect();
    for i in 0..20 {
        let text = format!("still here {i}");
        let (error, result) = call(&mut wire, i, "echo", &text);
        assert_eq!((error, result), (Value::Nil, str_value(&text)));
    }
    done.store(true, Ordering::Relaxed);
    for attacker in attackers {
        attacker.join().unwrap();
    }
}

#[test]
fn fuel_runs_out_with_an_error_naming_it_and_is_fresh_for_each_message() {
    let host = InProcessHost::start(serving(vec![
        HandlerConfig {
            fuel: Some(5_000_000),
            timeout: Duration::from_secs(20),
            ..handler_config("misbehave", "misbehave")
        },
        handler_config("sum", "sum"),
    ]));
    let mut wire = host.connect();
    // Fuel, not the 20 s timeout, ends it: the error names which.
    let error = error_of(&mut wire, "misbehave", "loop");
    assert_eq!(
        error,
        "handler `misbehave` exhausted its fuel limit of 5000000"
    );
    for round in 0..3 {
        assert_eq!(call(&mut wire, round, "misbehave", "ok").1, str_value("ok"));
    }
    // A handler without a fuel limit on the same host is not metered out.
    let (error, result) = wire.rpc(9, "sum", &Value::Array(vec![Value::from(1)]));
    assert_eq!(error, Value::Nil, "{result}");
}

#[test]
fn files_are_reachable_only_in_granted_directories_with_granted_rights() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.txt"), "not for guests").unwrap();
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("hello.txt"), "hello from the host").unwrap();
    let out = tempfile::tempdir().unwrap();
    let host = misbehave_with_grants(data.path(), out.path());
    let mut wire = host.connect();
    assert_eq!(
        call(&mut wire, 1, "misbehave", "read-file:/data/hello.txt").1,
        str_value("hello from the host")
    );
    let secret = format!("read-file:{}", outside.path().join("secret.txt").display());
    for denied in [
        secret.as_str(),
        "read-file:/etc/hostname",
        "read-file:/data/../../../etc/hostname",
    ] {
        let error = error_of(&mut wire, "misbehave", denied);
        assert!(error.contains("read-file failed"), "{denied}: {error}");
    }
    let error = error_of(&mut wire, "misbehave", "write-file:/data/new.txt");
    assert!(error.contains("write-file failed"), "{error}");
    assert!(!data.path().join("new.txt").exists());
    assert_eq!(
        call(&mut wire, 2, "misbehave", "write-file:/out/new.txt").1,
        str_value("/out/new.txt")
    );
    assert_eq!(
        std::fs::read_to_string(out.path().join("new.txt")).unwrap(),
        "written by misbehave"
    );
}

#[test]
fn a_guest_sees_exactly_the_environment_variables_granted() {
    let host = InProcessHost::start(serving(vec![
        HandlerConfig {
            env: [("GREETING", "hello"), ("MODE", "test")]
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .into(),
            ..handler_config("misbehave", "misbehave")
        },
        handler_config("bare", "misbehave"),
    ]));
    let mut wire = host.connect();
    // The host itself has PATH, HOME and more: none of them leak.
    assert_eq!(
        call(&mut wire, 1, "misbehave", "env").1,
        Value::Map(vec![
            (str_value("GREETING"), str_value("hello")),
            (str_value("MODE"), str_value("test")),
        ])
    );
    assert_eq!(call(&mut wire, 2, "bare", "env").1, Value::Map(vec![]));
}

#[cfg(unix)]
#[test]
fn a_read_only_grant_refuses_change_and_delete_and_its_symlinks_lead_nowhere_outside() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.txt"), "not for guests").unwrap();
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("hello.txt"), "hello from the host").unwrap();
    let link = |target: &Path, name: &str| {
        std::os::unix::fs::symlink(target, data.path().join(name)).unwrap()
    };
    link(&outside.path().join("secret.txt"), "to-secret");
    link(outside.path(), "to-outside");
    link(Path::new("../../../../../../etc/hostname"), "relative-out");
    link(Path::new("hello.txt"), "to-hello");
    let out = tempfile::tempdir().unwrap();
    std::fs::write(out.path().join("old.txt"), "to be removed").unwrap();
    let host = misbehave_with_grants(data.path(), out.path());
    let mut wire = host.connect();

    // Read-only: an existing file can be neither changed nor deleted.
    let error = error_of(&mut wire, "misbehave", "write-file:/data/hello.txt");
    assert!(error.contains("write-file failed"), "{error}");
    let error = error_of(&mut wire, "misbehave", "remove-file:/data/hello.txt");
    assert!(error.contains("remove-file failed"), "{error}");
    assert_eq!(
        std::fs::read_to_string(data.path().join("hello.txt")).unwrap(),
        "hello from the host"
    );
    // In a writable grant the same command deletes.
    assert_eq!(
        call(&mut wire, 1, "misbehave", "remove-file:/out/old.txt").1,
        str_value("/out/old.txt")
    );
    assert!(!out.path().join("old.txt").exists());

    // A link that stays inside the grant is followed; one that leads out,
    // absolute or relative, to a file or a folder, is not.
    assert_eq!(
        call(&mut wire, 2, "misbehave", "read-file:/data/to-hello").1,
        str_value("hello from the host")
    );
    for escape in [
        "read-file:/data/to-secret",
        "read-file:/data/to-outside/secret.txt",
        "read-file:/data/relative-out",
    ] {
        let error = error_of(&mut wire, "misbehave", escape);
        assert!(error.contains("read-file failed"), "{escape}: {error}");
    }
}

/// Serves `misbehave` as the default handler with `data` granted read-only
/// at `/data` and `out` writable at `/out`.
fn misbehave_with_grants(data: &Path, out: &Path) -> InProcessHost {
    let grant = |host: &Path, guest: &str, writable| DirGrant {
        host: host.to_owned(),
        guest: guest.into(),
        writable,
    };
    misbehave_host(|h| HandlerConfig {
        dirs: vec![grant(data, "/data", false), grant(out, "/out", true)],
        ..h
    })
}
