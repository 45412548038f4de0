//! Hot swap: module files and the config change under a running host, with
//! traffic flowing, and no request fails because of it.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use arrpc_host::config::HandlerConfig;
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

/// Which component answered [`probe`] with `reply`.
fn version_of(reply: &Value) -> Option<Version> {
    match reply {
        Value::Array(items) if items[..] == [Value::from(1), Value::from(2)] => Some(Version::Echo),
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

/// Which component a fresh connection's bare message reaches.
fn served(host: &Host) -> Option<Version> {
    version_of(&decode(&host.connect().call(&probe())))
}

/// Writes a config serving `handlers` (the first the default one) to
/// `config`'s file, where their relative paths start.
fn write_handlers(config: &TestConfig, handlers: Vec<HandlerConfig>) {
    let text = toml::to_string(&serving(handlers)).unwrap();
    std::fs::write(&config.path, text).unwrap();
}

/// A host serving `h` from a module file in its config folder, starting as
/// a copy of `first`.
fn swappable_host(first: &str) -> (Host, PathBuf) {
    let config = write_config("");
    let module = config.dir.path().join("h.wasm");
    std::fs::copy(component(first), &module).unwrap();
    write_handlers(
        &config,
        vec![HandlerConfig {
            max_instances: 500,
            ..HandlerConfig::new("h", "h.wasm")
        }],
    );
    (Host::start_with(config, &[]), module)
}

/// Waits until a fresh connection is answered by `want`; how long that
/// took.
fn wait_for_version(host: &Host, want: Version) -> Duration {
    let started = Instant::now();
    wait_until(
        host.with_log(&format!("{want:?} served")),
        Duration::from_secs(15),
        || served(host) == Some(want),
    );
    started.elapsed()
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
                        let reply = decode(&reply);
                        if version_of(&reply).is_none() {
                            failures.push(reply);
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
    // Every swap is logged, a moment after it serves.
    let log = host.wait_for_log_count("swapped handler", 20);
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
    assert_eq!(served(&host), Some(Version::Echo));

    std::fs::write(&module, b"\0asm this is not a component").unwrap();
    host.wait_for_log("module change not applied");
    assert_eq!(served(&host), Some(Version::Echo));

    let sum = std::fs::read(component("sum")).unwrap();
    std::fs::write(&module, &sum[..sum.len() / 2]).unwrap();
    host.wait_for_log_count("module change not applied", 2);
    assert_eq!(served(&host), Some(Version::Echo));

    std::fs::write(&module, &sum).unwrap();
    wait_for_version(&host, Version::Sum);
}

/// How long a reload may take to show.
const RELOADED: Duration = Duration::from_secs(15);

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
    wait_until(host.with_log("sum added"), RELOADED, || {
        rpc_call(&host, "sum", &numbers).0.is_nil()
    });
    host.wait_for_log("handler added");

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
    wait_until(host.with_log("sum removed"), RELOADED, || {
        rpc_call(&host, "sum", &numbers)
            .0
            .as_str()
            .is_some_and(|e| e.contains("no handler is named `sum`"))
    });
    host.wait_for_log("handler removed");
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
    write_handlers(
        &config,
        vec![HandlerConfig {
            build: Some(r#"cp "$(cat src/which)" h.wasm"#.into()),
            sources: vec!["src".into()],
            ..HandlerConfig::new("h", "h.wasm")
        }],
    );
    let host = Host::start_with(config, &["--watch"]);
    assert_eq!(served(&host), Some(Version::Echo));
    write_atomically(&dir.join("src/which"), component("sum").to_str().unwrap());
    wait_for_version(&host, Version::Sum);
    host.wait_for_log("sources changed: building");
}

/// A `--watch` host whose build reads its sources (`src`), then counts its
/// runs in `builds` (outside the sources), takes `pause` seconds, fails if
/// `src/which` said "broken" when it was read, and otherwise copies the
/// component `src/which` named then to `module`. Beside `h`, the handler
/// built, it serves `marker` from `marker.wasm` for [`settle`]. Returns the
/// host and its config folder.
fn counting_watch_host(module: &str, pause: u32) -> (Host, PathBuf) {
    let config = write_config("");
    let dir = config.dir.path().to_path_buf();
    std::fs::create_dir(dir.join("src")).unwrap();
    std::fs::write(dir.join("src/which"), component("echo").to_str().unwrap()).unwrap();
    std::fs::copy(component("echo"), dir.join("marker.wasm")).unwrap();
    write_handlers(
        &config,
        vec![
            HandlerConfig {
                sources: vec!["src".into()],
                build: Some(format!(
                    "cat src/* > /dev/null; which=$(cat src/which); echo run >> builds; \
                     sleep {pause}; if [ \"$which\" = broken ]; then exit 1; fi; cp \"$which\" {module}"
                )),
                ..HandlerConfig::new("h", module)
            },
            HandlerConfig::new("marker", "marker.wasm"),
        ],
    );
    (Host::start_with(config, &["--watch"]), dir)
}

/// How often the build of a [`counting_watch_host`] has run.
fn builds(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("builds")).map_or(0, |s| s.lines().count())
}

/// Waits until the [`counting_watch_host`] in `dir` has acted on every
/// file change made so far, by swapping its `marker` handler's module and
/// waiting until the new one serves. The host acts on changes one batch at
/// a time, in order, and on `h` before `marker` within a batch: once the
/// marker has swapped, whatever an earlier change set off (a build, or a
/// build retriggering itself) has run. So "nothing more happened" is
/// checked without guessing how long to wait for it.
fn settle(host: &Host, dir: &Path) {
    let marker = || version_of(&rpc_call(host, "marker", &decode(&probe())).1);
    let next = match marker() {
        Some(Version::Echo) => Version::Sum,
        _ => Version::Echo,
    };
    let name = match next {
        Version::Echo => "echo",
        Version::Sum => "sum",
    };
    write_atomically(
        &dir.join("marker.wasm"),
        std::fs::read(component(name)).unwrap(),
    );
    wait_until(
        host.with_log(&format!("the marker serving {next:?}")),
        RELOADED,
        || marker() == Some(next),
    );
}

const BUILD_FAILED: &str = "build failed; still serving the last good version";

#[test]
fn watch_mode_builds_a_broken_edit_once_and_its_fix_once() {
    let (host, dir) = counting_watch_host("h.wasm", 0);
    assert_eq!(served(&host), Some(Version::Echo));
    let at_start = builds(&dir);
    assert_eq!(at_start, 1, "the module was missing, so built at start");

    std::fs::write(dir.join("src/which"), "broken").unwrap();
    host.wait_for_log(BUILD_FAILED);
    // A build that retriggers itself would have run by now.
    settle(&host, &dir);
    assert_eq!(builds(&dir), at_start + 1, "{}", host.log());
    assert_eq!(served(&host), Some(Version::Echo));

    write_atomically(&dir.join("src/which"), component("sum").to_str().unwrap());
    wait_for_version(&host, Version::Sum);
    settle(&host, &dir);
    assert_eq!(builds(&dir), at_start + 2, "{}", host.log());
}

#[test]
fn watch_mode_does_not_rebuild_for_a_touch_or_identical_bytes() {
    let (host, dir) = counting_watch_host("h.wasm", 0);
    let which = dir.join("src/which");
    let at_start = builds(&dir);

    std::fs::File::options()
        .write(true)
        .open(&which)
        .unwrap()
        .set_modified(SystemTime::now())
        .unwrap();
    settle(&host, &dir);
    assert_eq!(builds(&dir), at_start, "touch rebuilt:\n{}", host.log());

    std::fs::write(&which, std::fs::read(&which).unwrap()).unwrap();
    settle(&host, &dir);
    write_atomically(&which, component("echo").to_str().unwrap());
    settle(&host, &dir);
    assert_eq!(
        builds(&dir),
        at_start,
        "identical bytes rebuilt:\n{}",
        host.log()
    );

    // A real edit still builds, once.
    write_atomically(&which, component("sum").to_str().unwrap());
    wait_for_version(&host, Version::Sum);
    settle(&host, &dir);
    assert_eq!(builds(&dir), at_start + 1, "{}", host.log());
}

#[test]
fn watch_mode_builds_again_for_an_edit_made_during_a_build() {
    let (host, dir) = counting_watch_host("h.wasm", 1);
    let at_start = builds(&dir);
    let which = dir.join("src/which");

    write_atomically(&which, component("sum").to_str().unwrap());
    wait_until(host.with_log("the build started"), RELOADED, || {
        builds(&dir) > at_start
    });
    write_atomically(&which, component("echo").to_str().unwrap());
    wait_until(
        host.with_log("a build for the edit made during the first"),
        RELOADED,
        || builds(&dir) == at_start + 2,
    );
    // Both builds have swapped in their module, the edit's last.
    settle(&host, &dir);
    assert_eq!(served(&host), Some(Version::Echo));
    assert_eq!(builds(&dir), at_start + 2, "{}", host.log());
}

#[test]
fn watch_mode_does_not_rebuild_for_a_module_built_among_its_sources() {
    let (host, dir) = counting_watch_host("src/h.wasm", 0);
    let at_start = builds(&dir);
    write_atomically(&dir.join("src/which"), component("sum").to_str().unwrap());
    wait_for_version(&host, Version::Sum);
    // The module's own write among the sources would have set off a build
    // by now.
    settle(&host, &dir);
    assert_eq!(builds(&dir), at_start + 1, "{}", host.log());
}

/// Writes `path` as most tools do: in full beside it, then renamed over it.
fn write_atomically(path: &Path, contents: impl AsRef<[u8]>) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(tmp, path).unwrap();
}

#[test]
fn a_deleted_module_file_leaves_the_last_version_serving() {
    let (host, module) = swappable_host("echo");
    assert_eq!(served(&host), Some(Version::Echo));
    std::fs::remove_file(&module).unwrap();
    host.wait_for_log("module file removed; still serving sha256");
    assert_eq!(served(&host), Some(Version::Echo));
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
