//! Compiled code paid for once: a restart with an unchanged module loads the
//! compiled component from the on-disk cache instead of compiling again (a
//! damaged entry is ignored and rebuilt), and handler entries that name the
//! same module share one compiled copy.

mod common;

use std::path::{Path, PathBuf};

use arrpc_host::config::Config;
use common::*;
use rmpv::Value;

/// `(from_cache, load_ms)` from the host's "loaded handler" log line.
fn load_report(host: &Host) -> (bool, f64) {
    let log = host.wait_for_log("loaded handler");
    let line = log.lines().find(|l| l.contains("loaded handler")).unwrap();
    let field = |key: &str| {
        let start = line
            .find(key)
            .unwrap_or_else(|| panic!("no {key} in {line}"))
            + key.len();
        line[start..].split_whitespace().next().unwrap().to_owned()
    };
    (
        field("from_cache=").parse().unwrap(),
        field("load_ms=").parse().unwrap(),
    )
}

/// `sum` served with its compile cache in `cache`, or with the cache off.
fn cached_in(cache: &Path, compile_cache: bool) -> Config {
    let mut config = serving(vec![handler_config("sum", "sum")]);
    config.server.cache_dir = Some(cache.to_owned());
    config.server.compile_cache = compile_cache;
    config
}

/// Starts a host serving `sum` with its cache in `cache`, checks that it
/// works, and returns how it loaded.
fn start(cache: &Path) -> (bool, f64) {
    let host = Host::start_config(&cached_in(cache, true));
    let reply = host
        .connect()
        .call_value(&Value::Array(vec![Value::from(2), Value::from(3)]));
    assert_eq!(reply.as_map().unwrap()[0].1, Value::from(5));
    load_report(&host)
}

fn entries(cache: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

#[test]
fn a_restart_with_an_unchanged_module_loads_from_the_cache() {
    let cache = tempfile::tempdir().unwrap();
    let (first_cached, compiled_ms) = start(cache.path());
    let (second_cached, cached_ms) = start(cache.path());
    // How much faster is for `cargo bench`; here only that it was used.
    eprintln!("sum.wasm: compiled in {compiled_ms} ms, loaded from cache in {cached_ms} ms");
    assert!(!first_cached && second_cached);
    // One entry, and no temporary file left behind.
    let files = entries(cache.path());
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].extension().is_some_and(|e| e == "cwasm"));
}

#[test]
fn a_corrupt_or_truncated_entry_is_ignored_and_rebuilt() {
    let cache = tempfile::tempdir().unwrap();
    assert!(!start(cache.path()).0);
    let entry = entries(cache.path()).pop().unwrap();
    let good = std::fs::read(&entry).unwrap();

    let mut corrupt = good.clone();
    let middle = corrupt.len() / 2;
    corrupt[middle] ^= 0xff;
    std::fs::write(&entry, &corrupt).unwrap();
    let host = Host::start_config(&cached_in(cache.path(), true));
    host.wait_for_log("compile cache entry is corrupt; recompiling");
    assert!(!load_report(&host).0);
    drop(host);
    assert_eq!(std::fs::read(&entry).unwrap(), good, "entry rewritten");
    assert!(start(cache.path()).0);

    std::fs::write(&entry, &good[..10]).unwrap();
    assert!(!start(cache.path()).0);
    assert!(start(cache.path()).0);
}

#[test]
fn with_the_cache_off_nothing_is_written() {
    let cache = tempfile::tempdir().unwrap();
    let dir = cache.path().join("never");
    let host = Host::start_config(&cached_in(&dir, false));
    assert!(!load_report(&host).0);
    assert!(!dir.exists());
}

/// Loading an entry runs the native code in it, so the folder the host
/// creates for the cache (and each parent it creates) is its user's alone.
#[cfg(unix)]
#[test]
fn the_cache_folder_is_created_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("made/by/host");
    start(&cache);
    assert!(std::fs::read_dir(&cache).unwrap().next().is_some());
    for folder in [dir.path().join("made"), dir.path().join("made/by"), cache] {
        let mode = std::fs::metadata(&folder).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{} has mode {mode:o}", folder.display());
    }
}

#[test]
fn entries_naming_one_module_share_its_compiled_code() {
    let mut config = serving(vec![
        handler_config("sum", "sum"),
        handler_config("add", "sum"),
        handler_config("echo", "echo"),
    ]);
    config.server.compile_cache = false;
    config.server.default_handler = Some("sum".into());
    let host = Host::start_config(&config);
    let log = host.wait_for_log_count("loaded handler", 3);
    let shared = |name: &str| {
        let line = log
            .lines()
            .find(|l| l.contains("loaded handler") && l.contains(&format!("handler={name} ")))
            .unwrap_or_else(|| panic!("no load line for {name} in {log}"));
        line.contains("shared=true")
    };
    // Handlers load in file order: the first to name a module compiles it.
    assert!(!shared("sum") && shared("add") && !shared("echo"), "{log}");
    let mut wire = host.connect();
    for (msgid, method) in [(1, "sum"), (2, "add")] {
        let numbers = Value::Array(vec![Value::from(2), Value::from(3)]);
        let (error, result) = wire.rpc(msgid, method, &numbers);
        assert_eq!(error, Value::Nil, "{method}");
        assert_eq!(result.as_map().unwrap()[0].1, Value::from(5), "{method}");
    }
}
