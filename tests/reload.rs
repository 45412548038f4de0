//! Hot swap: module files and the config change under a running host, with
//! traffic flowing, and no request fails because of it.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use arrpc_host::config::{Config, HandlerConfig};
use common::*;
use rmpv::Value;

/// `[1, 2]`: echo returns it as is, sum returns `{"sum": 3, "count": 2}`.
fn probe() -> Vec<u8> {
    encode(&Value::Array(vec![Value::from(1), Value::from(2)]))
}

#[derive(Debug, PartialEq, Clone, Copy)]
enum Version {
    Echo,
    Sum,
}

fn version_of(reply: &[u8]) -> Option<Version> {
    match decode(reply) {
        Value::Array(_) if reply == probe() => Some(Version::Echo),
        Value::Map(entries)
            if entries
                .iter()
                .any(|(k, v)| k.as_str() == Some("sum") && v.as_u64() == Some(3)) =>
        {
            Some(Version::Sum)
        }
        _ => None,
    }
}

/// Writes a config serving `handler` alone to `config`'s file, where its
/// relative paths start.
fn write_handler(config: &TestConfig, handler: HandlerConfig) {
    let text = toml::to_string(&Config {
        handlers: vec![handler],
        ..Config::default()
    })
    .unwrap();
    std::fs::write(&config.path, text).unwrap();
}

/// A host serving `h` from a module file in its config folder, starting as
/// a copy of `first`.
fn swappable_host(first: &str) -> (Host, PathBuf) {
    let config = write_config("");
    let module = config.dir.path().join("h.wasm");
    std::fs::copy(component(first), &module).unwrap();
    write_handler(
        &config,
        HandlerConfig {
            max_instances: 500,
            ..HandlerConfig::new("h", "h.wasm")
        },
    );
    (Host::start_with(config, &[]), module)
}

/// Waits until a fresh connection is answered by `want`.
fn wait_for_version(host: &Host, want: Version) -> Duration {
    let started = Instant::now();
    loop {
        let reply = host.connect().call(&probe());
        if version_of(&reply) == Some(want) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{want:?} never served:\n{}",
            host.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn twenty_swaps_under_pipelined_load_fail_no_request() {
    let (host, module) = swappable_host("echo");
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (stop, answered) = (stop.clone(), answered.clone());
            let mut wire = host.connect();
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                let batch: Vec<u8> = (0..8).flat_map(|_| probe()).collect();
                while !stop.load(Ordering::Relaxed) {
                    wire.write(&batch);
                    for _ in 0..8 {
                        let reply = wire.read().expect("connection stays open");
                        if version_of(&reply).is_none() {
                            failures.push(decode(&reply));
                        }
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                }
                failures
            })
        })
        .collect();

    let mut slowest = Duration::ZERO;
    for swap in 0..20 {
        let (file, version) = if swap % 2 == 0 {
            ("sum", Version::Sum)
        } else {
            ("echo", Version::Echo)
        };
        std::fs::copy(component(file), &module).unwrap();
        slowest = slowest.max(wait_for_version(&host, version));
    }
    stop.store(true, Ordering::Relaxed);
    let failures: Vec<_> = load.into_iter().flat_map(|t| t.join().unwrap()).collect();
    assert!(
        failures.is_empty(),
        "failed replies during swaps: {failures:?}"
    );
    assert!(answered.load(Ordering::Relaxed) > 100);
    let log = host.log();
    assert!(log.matches("swapped handler").count() >= 20, "{log}");
    let swap_line = log.lines().find(|l| l.contains("swapped handler")).unwrap();
    assert!(
        swap_line.contains("old_sha256=")
            && swap_line.contains("new_sha256=")
            && swap_line.contains("compile_ms="),
        "{swap_line}"
    );
    eprintln!(
        "20 swaps, {} replies, slowest switch-over {slowest:?}",
        answered.load(Ordering::Relaxed)
    );
}

#[test]
fn broken_and_truncated_modules_never_replace_the_working_one() {
    let (host, module) = swappable_host("echo");
    assert_eq!(
        version_of(&host.connect().call(&probe())),
        Some(Version::Echo)
    );

    std::fs::write(&module, b"\0asm this is not a component").unwrap();
    host.wait_for_log("module change not applied");
    assert_eq!(
        version_of(&host.connect().call(&probe())),
        Some(Version::Echo)
    );

    let sum = std::fs::read(component("sum")).unwrap();
    std::fs::write(&module, &sum[..sum.len() / 2]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while host.log().matches("module change not applied").count() < 2 {
        assert!(
            Instant::now() < deadline,
            "truncated module not reported:\n{}",
            host.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        version_of(&host.connect().call(&probe())),
        Some(Version::Echo)
    );

    std::fs::write(&module, &sum).unwrap();
    wait_for_version(&host, Version::Sum);
}

fn wait_until(host: &Host, what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !ok() {
        assert!(Instant::now() < deadline, "{what}:\n{}", host.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn config_reload_adds_removes_and_refuses_invalid_changes() {
    let base = format!(
        "[server]\ndefault_handler = \"echo\"\n{}",
        handler("echo", "echo", "")
    );
    let host = Host::start(&base);
    let path = host.config.path.clone();
    let numbers = Value::Array(vec![Value::from(4), Value::from(5)]);
    let (error, _) = rpc_call(&host, "sum", &numbers);
    assert!(
        error
            .as_str()
            .unwrap()
            .contains("no handler is named `sum`")
    );

    // Add a handler.
    std::fs::write(&path, format!("{base}{}", handler("sum", "sum", ""))).unwrap();
    wait_until(&host, "sum was never added", || {
        rpc_call(&host, "sum", &numbers).0.is_nil()
    });
    assert!(host.log().contains("handler added"));

    // An invalid config changes nothing.
    std::fs::write(
        &path,
        format!("{base}{}colour = \"red\"\n", handler("sum", "sum", "")),
    )
    .unwrap();
    host.wait_for_log("config reload refused");
    assert!(rpc_call(&host, "sum", &numbers).0.is_nil());
    assert_eq!(host.connect().call(&[0x05]), [0x05]);

    // Remove it again: later requests get a clear error.
    std::fs::write(&path, &base).unwrap();
    wait_until(&host, "sum was never removed", || {
        rpc_call(&host, "sum", &numbers)
            .0
            .as_str()
            .is_some_and(|e| e.contains("no handler is named `sum`"))
    });
    assert!(host.log().contains("handler removed"));
}

#[test]
fn restart_only_settings_are_reported_not_ignored() {
    let host = Host::start(&handler("echo", "echo", ""));
    std::fs::write(
        &host.config.path,
        format!(
            "[server]\nlisten = \"127.0.0.1:1\"\n{}",
            handler("echo", "echo", "")
        ),
    )
    .unwrap();
    host.wait_for_log("server.listen changed: this takes effect only after a restart");
    assert_eq!(host.connect().call(&[0x01]), [0x01]);
}

#[cfg(unix)]
#[test]
fn sighup_reloads_the_config() {
    let host = Host::start_config(&serving(vec![handler_config("echo", "echo")]));
    host.signal("HUP");
    host.wait_for_log("SIGHUP: reloading config");
    host.wait_for_log("config reloaded");
    assert_eq!(host.connect().call(&[0x02]), [0x02]);
}

#[test]
fn watch_mode_rebuilds_when_sources_change_and_swaps_the_result() {
    // The "build" copies whichever component `src/which` names.
    let config = write_config("");
    let dir = config.dir.path().to_path_buf();
    std::fs::create_dir(dir.join("src")).unwrap();
    std::fs::write(dir.join("src/which"), component("echo").to_str().unwrap()).unwrap();
    write_handler(
        &config,
        HandlerConfig {
            build: Some(r#"cp "$(cat src/which)" h.wasm"#.into()),
            sources: vec!["src".into()],
            ..HandlerConfig::new("h", "h.wasm")
        },
    );
    let host = Host::start_with(config, &["--watch"]);
    assert_eq!(
        version_of(&host.connect().call(&probe())),
        Some(Version::Echo)
    );
    write_atomically(&dir.join("src/which"), component("sum").to_str().unwrap());
    wait_for_version(&host, Version::Sum);
    assert!(host.log().contains("sources changed: building"));
}

/// A `--watch` host whose build reads its sources (`src`), then counts its
/// runs in `builds` (outside the sources), takes `pause` seconds, fails if
/// `src/which` said "broken" when it was read, and otherwise copies the
/// component `src/which` named then to `module`. Returns the host and its
/// config folder.
fn counting_watch_host(module: &str, pause: u32) -> (Host, PathBuf) {
    let config = write_config("");
    let dir = config.dir.path().to_path_buf();
    std::fs::create_dir(dir.join("src")).unwrap();
    std::fs::write(dir.join("src/which"), component("echo").to_str().unwrap()).unwrap();
    write_handler(
        &config,
        HandlerConfig {
            sources: vec!["src".into()],
            build: Some(format!(
                "cat src/* > /dev/null; which=$(cat src/which); echo run >> builds; \
                 sleep {pause}; if [ \"$which\" = broken ]; then exit 1; fi; cp \"$which\" {module}"
            )),
            ..HandlerConfig::new("h", module)
        },
    );
    let host = Host::start_with_env(
        config,
        &["--watch"],
        &[("RUST_LOG", "info,arrpc_host::reload=debug")],
    );
    (host, dir)
}

/// How often the build of a [`counting_watch_host`] has run.
fn builds(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("builds")).map_or(0, |s| s.lines().count())
}

const BUILD_FAILED: &str = "build failed; still serving the last good version";

#[test]
fn watch_mode_builds_a_broken_edit_once_and_its_fix_once() {
    let (host, dir) = counting_watch_host("h.wasm", 0);
    assert_eq!(
        version_of(&host.connect().call(&probe())),
        Some(Version::Echo)
    );
    let at_start = builds(&dir);
    assert_eq!(at_start, 1, "the module was missing, so built at start");

    std::fs::write(dir.join("src/which"), "broken").unwrap();
    host.wait_for_log(BUILD_FAILED);
    // Ten quiet periods: a build that retriggers itself shows by now.
    std::thread::sleep(Duration::from_secs(3));
    let log = host.log();
    assert_eq!(builds(&dir), at_start + 1, "{log}");
    assert_eq!(log.matches(BUILD_FAILED).count(), 1, "{log}");
    assert_eq!(
        version_of(&host.connect().call(&probe())),
        Some(Version::Echo)
    );

    write_atomically(&dir.join("src/which"), component("sum").to_str().unwrap());
    wait_for_version(&host, Version::Sum);
    std::thread::sleep(Duration::from_secs(2));
    let log = host.log();
    assert_eq!(builds(&dir), at_start + 2, "{log}");
    assert_eq!(log.matches(BUILD_FAILED).count(), 1, "{log}");
}

#[test]
fn watch_mode_does_not_rebuild_for_a_touch_or_identical_bytes() {
    let (host, dir) = counting_watch_host("h.wasm", 0);
    let which = dir.join("src/which");
    let at_start = builds(&dir);
    let skipped = || host.log().matches("sources unchanged").count();
    // Waits until the host has either skipped the change or started a build.
    let settled = |skips_before: usize| {
        wait_until(&host, "the change was never noticed", || {
            skipped() > skips_before || builds(&dir) > at_start
        })
    };

    let before = skipped();
    std::fs::File::options()
        .write(true)
        .open(&which)
        .unwrap()
        .set_modified(SystemTime::now())
        .unwrap();
    settled(before);
    assert_eq!(builds(&dir), at_start, "touch rebuilt:\n{}", host.log());

    let before = skipped();
    std::fs::write(&which, std::fs::read(&which).unwrap()).unwrap();
    settled(before);
    let before = skipped();
    write_atomically(&which, component("echo").to_str().unwrap());
    settled(before);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        builds(&dir),
        at_start,
        "identical bytes rebuilt:\n{}",
        host.log()
    );

    // A real edit still builds, once.
    write_atomically(&which, component("sum").to_str().unwrap());
    wait_for_version(&host, Version::Sum);
    assert_eq!(builds(&dir), at_start + 1, "{}", host.log());
}

#[test]
fn watch_mode_builds_again_for_an_edit_made_during_a_build() {
    let (host, dir) = counting_watch_host("h.wasm", 1);
    let at_start = builds(&dir);
    let which = dir.join("src/which");

    write_atomically(&which, component("sum").to_str().unwrap());
    wait_until(&host, "the build never started", || builds(&dir) > at_start);
    write_atomically(&which, component("echo").to_str().unwrap());
    wait_until(&host, "the edit made during the build was lost", || {
        builds(&dir) == at_start + 2
    });
    wait_for_version(&host, Version::Echo);
    let log = host.wait_for_log("swapped handler");
    assert_eq!(log.matches("swapped handler").count(), 2, "{log}");
}

#[test]
fn watch_mode_does_not_rebuild_for_a_module_built_among_its_sources() {
    let (host, dir) = counting_watch_host("src/h.wasm", 0);
    let at_start = builds(&dir);
    write_atomically(&dir.join("src/which"), component("sum").to_str().unwrap());
    wait_for_version(&host, Version::Sum);
    // Ten quiet periods: a build that retriggers itself shows by now.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(builds(&dir), at_start + 1, "{}", host.log());
}

fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(tmp, path).unwrap();
}

#[test]
fn a_deleted_module_file_leaves_the_last_version_serving() {
    let (host, module) = swappable_host("echo");
    assert_eq!(
        version_of(&host.connect().call(&probe())),
        Some(Version::Echo)
    );
    std::fs::remove_file(&module).unwrap();
    host.wait_for_log("module file removed; still serving sha256");
    assert_eq!(
        version_of(&host.connect().call(&probe())),
        Some(Version::Echo)
    );
    // The file written again is picked up as any change is.
    std::fs::copy(component("sum"), &module).unwrap();
    wait_for_version(&host, Version::Sum);
}

#[test]
fn a_reload_needing_a_bigger_pool_or_fuel_is_refused_with_the_reason() {
    // 100 instances: the pool is sized at its floor of 1,000.
    let host = Host::start(&handler("echo", "echo", "max_instances = 100"));
    let path = host.config.path.clone();
    std::fs::write(&path, handler("echo", "echo", "max_instances = 1001")).unwrap();
    let log = host.wait_for_log("config reload refused");
    assert!(
        log.contains(
            "more than the 1000 instances the pool was sized for at start; restart to apply"
        ),
        "{log}"
    );
    assert_eq!(host.connect().call(&[0x01]), [0x01]);

    std::fs::write(
        &path,
        handler("echo", "echo", "max_instances = 100\nfuel = 1000000"),
    )
    .unwrap();
    let log = host.wait_for_log_count("config reload refused", 2);
    assert!(
        log.contains("a handler now sets `fuel`, but fuel metering was off at start"),
        "{log}"
    );
    assert_eq!(host.connect().call(&[0x02]), [0x02]);

    // A change that fits is applied.
    std::fs::write(
        &path,
        format!(
            "[server]\ndefault_handler = \"echo\"\n{}{}",
            handler("echo", "echo", "max_instances = 100"),
            handler("sum", "sum", "max_instances = 900")
        ),
    )
    .unwrap();
    host.wait_for_log("handler added");
    let numbers = Value::Array(vec![Value::from(4), Value::from(5)]);
    assert!(rpc_call(&host, "sum", &numbers).0.is_nil());
}
