//! Handlers keep state in key-value stores (`wasi:keyvalue`): the `state`
//! guest drives every operation from inside the sandbox, against embedded
//! stores (real redb files) and a real `redis-server`, with real host
//! processes over real sockets. Counts from many connections end exact,
//! an acknowledged write survives SIGKILL, a torn file stops the start,
//! and a Redis that goes away costs only the calls made meanwhile.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use arrpc_host::config::{Config, HandlerConfig, SecretSource, StoreConfig, StoreTls};
use common::admin::{get, scrape, start_config_with_admin};
use common::certs::{Ca, local_names};
use common::redis::{RedisServer, RedisTls};
use common::*;
use rmpv::Value;

/// A `state` operation on `store`.
fn op(op: &str, store: &str, fields: &[(&str, Value)]) -> Value {
    let mut pairs = vec![
        (Value::from("op"), Value::from(op)),
        (Value::from("store"), Value::from(store)),
    ];
    pairs.extend(fields.iter().map(|(k, v)| (Value::from(*k), v.clone())));
    Value::Map(pairs)
}

fn key(k: &str) -> (&'static str, Value) {
    ("key", Value::from(k))
}

/// What `state` answered, or the error text it replied with (without
/// the Python arrpc package's exception name in front).
fn ask(wire: &mut Wire, request: &Value) -> Result<Value, String> {
    let reply = wire.call(&encode(request));
    match error_text(&reply) {
        Some(error) => Err(error
            .strip_prefix("arrpc.error.RpcException: ")
            .unwrap_or(&error)
            .to_owned()),
        None => Ok(decode(&reply)),
    }
}

/// One call on `stream`, or `None` once the host is gone.
fn call_until_gone(stream: &mut std::net::TcpStream, request: &[u8]) -> Option<Value> {
    use std::io::{Read, Write};
    stream.write_all(request).ok()?;
    let mut reply = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(len) = arrpc_wire::frame::value_len(&reply) {
            return Some(decode(&reply[..len]));
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => reply.extend_from_slice(&chunk[..n]),
        }
    }
}

/// `state` served as `name`, allowed `stores`.
fn state_handler(name: &str, stores: &[&str]) -> HandlerConfig {
    HandlerConfig {
        stores: stores.iter().map(|s| s.to_string()).collect(),
        max_instances: 100,
        ..handler_config(name, "state")
    }
}

/// A host serving `state` with the embedded store `counts` in `dir`.
fn embedded(dir: &Path) -> Config {
    Config {
        stores: vec![StoreConfig::embedded("counts", dir.join("counts.redb"))],
        ..serving(vec![state_handler("state", &["counts"])])
    }
}

/// `connections` clients each increment `key` `times` times at once; every
/// count they were answered, sorted.
fn increment_from_many(
    addrs: &[std::net::SocketAddr],
    connections: usize,
    times: usize,
) -> Vec<i64> {
    let threads: Vec<_> = (0..connections)
        .map(|i| {
            let addr = addrs[i % addrs.len()];
            std::thread::spawn(move || {
                let mut wire = Wire::connect(addr);
                let request = op("increment", "counts", &[key("hits")]);
                (0..times)
                    .map(|_| match ask(&mut wire, &request) {
                        Ok(Value::Integer(n)) => n.as_i64().unwrap(),
                        other => panic!("increment answered {other:?}"),
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut counts: Vec<i64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    counts.sort_unstable();
    counts
}

/// 64 connections increment one key 1,000 times each: the answers are
/// exactly 1 to 64,000, each once, so no increment was lost or doubled.
#[test]
fn sixty_four_connections_incrementing_one_key_end_at_exactly_64000() {
    let dir = tempfile::tempdir().unwrap();
    let host = InProcessHost::start(embedded(dir.path()));
    let counts = increment_from_many(&[host.addr], 64, 1000);
    assert_eq!(counts, (1..=64_000).collect::<Vec<_>>());
    assert_eq!(
        ask(&mut host.connect(), &op("get", "counts", &[key("hits")])),
        Ok(Value::Binary(b"64000".to_vec()))
    );
    let ops = host.metric(
        "arrpc_store_operations_total",
        &[
            ("store", "counts"),
            ("operation", "increment"),
            ("result", "ok"),
        ],
    );
    assert_eq!(ops, 64_000.0);
}

/// Compare-and-swap from 64 connections at once loses no update: each
/// retry the host asks for is one a competitor won.
#[test]
fn compare_and_swap_from_sixty_four_connections_loses_no_update() {
    let dir = tempfile::tempdir().unwrap();
    let host = InProcessHost::start(embedded(dir.path()));
    let retries = Arc::new(AtomicI64::new(0));
    let threads: Vec<_> = (0..64)
        .map(|_| {
            let addr = host.addr;
            let retries = retries.clone();
            std::thread::spawn(move || {
                let mut wire = Wire::connect(addr);
                for _ in 0..100 {
                    let reply = ask(&mut wire, &op("cas-add", "counts", &[key("total")]));
                    let Ok(Value::Array(pair)) = reply else {
                        panic!("cas-add answered {reply:?}")
                    };
                    retries.fetch_add(pair[1].as_i64().unwrap(), Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(
        ask(&mut host.connect(), &op("get", "counts", &[key("total")])),
        Ok(Value::Binary(b"6400".to_vec()))
    );
    eprintln!("{} retries", retries.load(Ordering::Relaxed));
}

fn bin(bytes: &[u8]) -> Value {
    Value::Binary(bytes.to_vec())
}

/// Every `wasi:keyvalue` operation does what the interface says, over
/// pages of keys and batches.
#[test]
fn every_operation_reads_back_what_was_written() {
    let dir = tempfile::tempdir().unwrap();
    let host = InProcessHost::start(embedded(dir.path()));
    every_operation(&mut host.connect());
}

fn every_operation(wire: &mut Wire) {
    let call = |wire: &mut Wire, name: &str, fields: &[(&str, Value)]| {
        ask(wire, &op(name, "counts", fields))
    };
    assert_eq!(call(wire, "get", &[key("a")]), Ok(Value::Nil));
    assert_eq!(call(wire, "exists", &[key("a")]), Ok(false.into()));
    assert_eq!(
        call(wire, "set", &[key("a"), ("value", bin(b"\x00one"))]),
        Ok(Value::Nil)
    );
    assert_eq!(call(wire, "get", &[key("a")]), Ok(bin(b"\x00one")));
    assert_eq!(call(wire, "exists", &[key("a")]), Ok(true.into()));
    assert_eq!(call(wire, "delete", &[key("a")]), Ok(Value::Nil));
    assert_eq!(call(wire, "delete", &[key("a")]), Ok(Value::Nil));
    assert_eq!(call(wire, "get", &[key("a")]), Ok(Value::Nil));
    assert_eq!(
        call(wire, "increment", &[key("n"), ("by", (-5).into())]),
        Ok((-5).into())
    );
    assert_eq!(
        call(wire, "set", &[key("word"), ("value", bin(b"hello"))]),
        Ok(Value::Nil)
    );
    let error = call(wire, "increment", &[key("word")]).unwrap_err();
    assert!(
        error.starts_with("increment: other: ") && error.contains("not an integer"),
        "{error}"
    );

    // 2,500 keys in batches of 500, then listed page by page.
    let mut written = BTreeSet::new();
    for batch in 0..5 {
        let pairs: Vec<(Value, Value)> = (0..500)
            .map(|i| {
                let k = format!("k{:05}", batch * 500 + i);
                written.insert(k.clone());
                (Value::from(k.as_str()), bin(k.as_bytes()))
            })
            .collect();
        assert_eq!(
            call(wire, "set-many", &[("pairs", Value::Map(pairs))]),
            Ok(Value::Nil)
        );
    }
    written.insert("n".into());
    written.insert("word".into());
    let mut listed = BTreeSet::new();
    let mut cursor = Value::Nil;
    let mut pages = 0;
    loop {
        let page = call(wire, "list", &[("cursor", cursor.clone())]).unwrap();
        let field = |name: &str| {
            page.as_map()
                .unwrap()
                .iter()
                .find(|(k, _)| k.as_str() == Some(name))
                .unwrap()
                .1
                .clone()
        };
        // Redis's SCAN may list a key twice; the interface allows it.
        for k in field("keys").as_array().unwrap() {
            listed.insert(k.as_str().unwrap().to_owned());
        }
        pages += 1;
        cursor = field("cursor");
        if cursor.is_nil() {
            break;
        }
    }
    assert_eq!(listed, written);
    assert!(pages >= 3, "2,502 keys came in {pages} pages");
    let keys = |ks: &[&str]| {
        (
            "keys",
            Value::Array(ks.iter().map(|k| Value::from(*k)).collect()),
        )
    };
    assert_eq!(
        call(wire, "get-many", &[keys(&["k00001", "missing", "k02499"])]),
        Ok(Value::Array(vec![
            bin(b"k00001"),
            Value::Nil,
            bin(b"k02499")
        ]))
    );
    assert_eq!(
        call(wire, "delete-many", &[keys(&["k00001", "k02499"])]),
        Ok(Value::Nil)
    );
    assert_eq!(
        call(wire, "get-many", &[keys(&["k00001", "k00002", "k02499"])]),
        Ok(Value::Array(vec![Value::Nil, bin(b"k00002"), Value::Nil]))
    );
}

/// A handler opens only the stores it lists; two stores never see each
/// other's keys, and two handlers listing one store share it.
#[test]
fn a_handler_opens_only_its_stores_and_stores_keep_their_keys_apart() {
    let dir = tempfile::tempdir().unwrap();
    let host = InProcessHost::start(Config {
        stores: vec![
            StoreConfig::embedded("counts", dir.path().join("counts.redb")),
            StoreConfig::embedded("other", dir.path().join("other.redb")),
        ],
        ..serving(vec![
            state_handler("state", &["counts", "other"]),
            state_handler("reader", &["counts"]),
        ])
    });
    let mut wire = host.connect();
    let incr = |wire: &mut Wire, store: &str| ask(wire, &op("increment", store, &[key("k")]));
    assert_eq!(incr(&mut wire, "counts"), Ok(1.into()));
    assert_eq!(incr(&mut wire, "counts"), Ok(2.into()));
    assert_eq!(incr(&mut wire, "other"), Ok(1.into()));
    // `reader` shares `counts` but may not open `other`, nor a store that
    // does not exist: both are access-denied, so a guest learns nothing of
    // which stores there are.
    let reader = |wire: &mut Wire, store: &str| {
        let (_, error, result) =
            response(&wire.call(&request(1, "reader", &op("increment", store, &[key("k")]))));
        if error.is_nil() {
            Ok(result)
        } else {
            Err(error.as_str().unwrap().to_owned())
        }
    };
    assert_eq!(reader(&mut wire, "counts"), Ok(3.into()));
    assert_eq!(
        reader(&mut wire, "other"),
        Err("increment: access-denied".into())
    );
    assert_eq!(
        reader(&mut wire, "nowhere"),
        Err("increment: access-denied".into())
    );
}

/// Keys and values past a store's limits, and writes to a full store, are
/// errors that say so; the store keeps serving reads and deletes.
#[test]
fn limits_are_errors_that_say_which() {
    let dir = tempfile::tempdir().unwrap();
    let host = InProcessHost::start(Config {
        stores: vec![StoreConfig {
            max_key_bytes: 16,
            max_value_bytes: 256 << 10,
            max_size_mib: 2,
            ..StoreConfig::embedded("counts", dir.path().join("counts.redb"))
        }],
        ..serving(vec![state_handler("state", &["counts"])])
    });
    let mut wire = host.connect();
    let long = ask(&mut wire, &op("get", "counts", &[key(&"k".repeat(17))])).unwrap_err();
    assert!(
        long.contains("key of 17 bytes") && long.contains("max_key_bytes = 16"),
        "{long}"
    );
    let big = ask(
        &mut wire,
        &op(
            "set",
            "counts",
            &[key("big"), ("value", bin(&vec![7; (256 << 10) + 1]))],
        ),
    )
    .unwrap_err();
    assert!(big.contains("max_value_bytes = 262144"), "{big}");
    // Fill the 2 MiB file with 256 KiB values until it says it is full.
    let mut full = None;
    for i in 0..64 {
        let value = bin(&vec![i as u8; 256 << 10]);
        if let Err(e) = ask(
            &mut wire,
            &op("set", "counts", &[key(&format!("v{i}")), ("value", value)]),
        ) {
            full = Some((i, e));
            break;
        }
    }
    let (written, error) = full.expect("a 2 MiB store took 16 MiB of values");
    assert!(written >= 1, "full after {written} values: {error}");
    assert!(
        error.contains("store `counts` is full") && error.contains("max_size_mib"),
        "{error}"
    );
    assert_eq!(
        ask(&mut wire, &op("get", "counts", &[key("v0")])),
        Ok(bin(&vec![0; 256 << 10]))
    );
    assert_eq!(
        ask(&mut wire, &op("delete", "counts", &[key("v0")])),
        Ok(Value::Nil)
    );
    assert_eq!(
        host.metric(
            "arrpc_store_operations_total",
            &[
                ("store", "counts"),
                ("operation", "set"),
                ("result", "full")
            ],
        ),
        1.0
    );
}

/// A host killed with SIGKILL in the middle of a load of increments loses
/// none that a client saw acknowledged: after a restart on the same file,
/// each key holds its last acknowledged count, or one more (the increment
/// in flight when the host died, committed but not answered).
#[test]
fn sigkill_loses_no_acknowledged_increment() {
    let dir = tempfile::tempdir().unwrap();
    let config = embedded(dir.path());
    let mut host = Host::start_config(&config);
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..16)
        .map(|i| {
            let addr = host.addr;
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut stream = std::net::TcpStream::connect(addr).unwrap();
                let request = encode(&op("increment", "counts", &[key(&format!("k{i}"))]));
                let mut acked = 0;
                while !stop.load(Ordering::Relaxed) {
                    match call_until_gone(&mut stream, &request) {
                        Some(reply) => acked = reply.as_i64().expect("a count"),
                        None => break,
                    }
                }
                acked
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    host.child().kill().unwrap();
    host.wait_exit();
    stop.store(true, Ordering::Relaxed);
    let acked: Vec<i64> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(
        acked.iter().all(|&n| n > 0),
        "every client got answers before the kill: {acked:?}"
    );

    let host = Host::start_config(&config);
    let mut wire = host.connect();
    for (i, acked) in acked.iter().enumerate() {
        let stored = ask(&mut wire, &op("get", "counts", &[key(&format!("k{i}"))])).unwrap();
        let stored: i64 = std::str::from_utf8(stored.as_slice().unwrap())
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            stored == *acked || stored == acked + 1,
            "k{i}: acknowledged {acked}, stored {stored}"
        );
    }
    eprintln!(
        "acknowledged before the kill: {}",
        acked.iter().sum::<i64>()
    );
}

/// A store file that is torn, corrupt or empty stops the start with an
/// error naming the store and the file; the host never starts it empty.
#[test]
fn a_torn_or_corrupt_store_file_stops_the_start_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("counts.redb");
    {
        let host = InProcessHost::start(embedded(dir.path()));
        let mut wire = host.connect();
        for i in 0..200 {
            ask(
                &mut wire,
                &op(
                    "set",
                    "counts",
                    &[key(&format!("k{i}")), ("value", bin(&[1; 1000]))],
                ),
            )
            .unwrap();
        }
    }
    let whole = std::fs::read(&file).unwrap();
    let config = toml::to_string(&embedded(dir.path())).unwrap();
    let shown = file.display().to_string();
    let cases: [(&str, Vec<u8>, &str); 3] = [
        ("torn", whole[..whole.len() / 2].to_vec(), ""),
        (
            "corrupt",
            {
                let mut bytes = whole.clone();
                for b in &mut bytes[4096..whole.len().min(12288)] {
                    *b ^= 0x5a;
                }
                bytes
            },
            "corrupt",
        ),
        ("empty", Vec::new(), "is empty, not a store file"),
    ];
    for (case, bytes, says) in cases {
        std::fs::write(&file, &bytes).unwrap();
        let stderr = start_refused(&config, &[], &[]);
        assert!(
            stderr.contains("store `counts`") && stderr.contains(&shown) && stderr.contains(says),
            "{case}: {stderr}"
        );
        // Opening may mark the header, but nothing starts the file anew.
        let len = std::fs::metadata(&file).unwrap().len();
        assert_eq!(len, bytes.len() as u64, "{case}: the file was cut or grown");
    }
}

/// Data outlives handler versions: a hot swap of the handler keeps every
/// key, and a handler newly listing the store reads them.
#[test]
fn a_hot_swap_keeps_every_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = embedded(dir.path());
    let host = InProcessHost::start(config.clone());
    let mut wire = host.connect();
    for _ in 0..3 {
        ask(&mut wire, &op("increment", "counts", &[key("k")])).unwrap();
    }
    let swapped = Config {
        handlers: vec![HandlerConfig {
            timeout: Duration::from_secs(7),
            ..config.handlers[0].clone()
        }],
        ..config
    };
    std::fs::write(&host.config.path, toml::to_string(&swapped).unwrap()).unwrap();
    host.wait_for_metric("arrpc_handler_swaps_total", &[("result", "ok")], 1.0);
    assert_eq!(
        ask(&mut host.connect(), &op("increment", "counts", &[key("k")])),
        Ok(4.into())
    );
}

/// `check` validates every store without writing: a store whose file does
/// not exist yet is not created, and a corrupt one is refused.
#[test]
fn check_inspects_stores_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config_value(&embedded(dir.path()));
    let file = dir.path().join("counts.redb");
    let out = check_config(&config.path);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("store counts: embedded, {}", file.display())),
        "{stdout}"
    );
    assert!(!file.exists(), "check created the store file");
    std::fs::write(&file, b"not a store").unwrap();
    let out = check_config(&config.path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains(&file.display().to_string()),
        "{stderr}"
    );
}

/// A Redis store: `url` as a value, every other key at its default.
fn redis_store(server: &RedisServer) -> StoreConfig {
    StoreConfig {
        timeout: Duration::from_millis(500),
        ..StoreConfig::redis("counts", SecretSource::Value(server.url()))
    }
}

/// Three hosts on 127.0.0.1, .2 and .3 share one Redis store: 64
/// connections spread over them increment one key 1,000 times each and
/// get exactly 1 to 64,000.
#[test]
fn three_hosts_sharing_redis_count_exactly() {
    let server = RedisServer::start();
    let config = Config {
        stores: vec![redis_store(&server)],
        ..serving(vec![state_handler("state", &["counts"])])
    };
    let hosts: Vec<Host> = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
        .iter()
        .map(|ip| Host::start_on(write_config_value(&config), &format!("{ip}:0"), &[], &[]))
        .collect();
    let addrs: Vec<_> = hosts.iter().map(|h| h.addr).collect();
    let counts = increment_from_many(&addrs, 64, 1000);
    assert_eq!(counts, (1..=64_000).collect::<Vec<_>>());
    let mut wire = hosts[1].connect();
    assert_eq!(
        ask(&mut wire, &op("delete", "counts", &[key("hits")])),
        Ok(Value::Nil)
    );
    every_operation(&mut wire);
}

/// Redis killed under load: the host stays up, calls made while it is
/// gone fail saying the store is unreachable, `/readyz` says so, and once
/// it is back calls succeed again and the host is ready.
#[test]
fn redis_going_away_costs_only_the_calls_made_meanwhile() {
    let mut server = RedisServer::start();
    let (host, admin) = start_config_with_admin(&Config {
        stores: vec![redis_store(&server)],
        ..serving(vec![state_handler("state", &["counts"])])
    });
    let mut wire = host.connect();
    let incr = op("increment", "counts", &[key("k")]);
    assert_eq!(ask(&mut wire, &incr), Ok(1.into()));
    assert_eq!(get(admin, "/readyz").0, 200);

    server.stop();
    let error = ask(&mut wire, &incr).unwrap_err();
    assert!(error.contains("store `counts` is unreachable"), "{error}");
    wait_until(
        "/readyz says the store is unreachable",
        Duration::from_secs(20),
        || {
            let (status, body) = get(admin, "/readyz");
            status == 503 && body.contains("store `counts` unreachable")
        },
    );

    server.restart();
    // Persistence is off: the restarted server starts empty.
    wait_until("calls succeed again", Duration::from_secs(20), || {
        ask(&mut wire, &incr).is_ok()
    });
    wait_until("/readyz is 200 again", Duration::from_secs(20), || {
        get(admin, "/readyz").0 == 200
    });
    let unreachable = scrape(admin).value(
        "arrpc_store_operations_total",
        &[
            ("store", "counts"),
            ("operation", "increment"),
            ("result", "unavailable"),
        ],
    );
    assert!(unreachable >= 1.0, "{unreachable}");
    assert!(host.log().contains("not ready: a store cannot be reached"));
}

/// Compare-and-swap on Redis from 32 connections loses no update.
#[test]
fn compare_and_swap_on_redis_loses_no_update() {
    let server = RedisServer::start();
    let host = InProcessHost::start(Config {
        stores: vec![redis_store(&server)],
        ..serving(vec![state_handler("state", &["counts"])])
    });
    let threads: Vec<_> = (0..32)
        .map(|_| {
            let addr = host.addr;
            std::thread::spawn(move || {
                let mut wire = Wire::connect(addr);
                for _ in 0..100 {
                    ask(&mut wire, &op("cas-add", "counts", &[key("total")])).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(
        ask(&mut host.connect(), &op("get", "counts", &[key("total")])),
        Ok(bin(b"3200"))
    );
}

/// A Redis server on a TLS port only, requiring client certificates from
/// its own CA (a real redis-server, with test CAs): a store given the
/// server's CA and this host's certificate counts on it; one that presents
/// no certificate, or trusts only the system's CAs, fails every call with
/// its reason, and the host serves on.
#[test]
fn redis_over_mutual_tls_needs_its_ca_and_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "redis");
    let clients = Ca::new(dir.path(), "clients");
    let server = RedisServer::start_tls(RedisTls {
        cert: ca.server(dir.path(), "redis", local_names()),
        client_ca: clients.cert.clone(),
        require_client_certificate: true,
    });
    let me = clients.client(dir.path(), "me");
    let store = |name: &str, tls: StoreTls| StoreConfig {
        timeout: Duration::from_secs(2),
        tls: Some(tls),
        ..StoreConfig::redis(name, SecretSource::Value(server.url()))
    };
    let trusted = StoreTls {
        ca_file: Some(ca.cert.clone()),
        cert: Some(me.cert.clone()),
        key: Some(me.key.clone()),
    };
    let anonymous = StoreTls {
        cert: None,
        key: None,
        ..trusted.clone()
    };
    let system = StoreTls {
        ca_file: None,
        ..trusted.clone()
    };
    let host = InProcessHost::start(Config {
        stores: vec![
            store("counts", trusted),
            store("anonymous", anonymous),
            store("system", system),
        ],
        ..serving(vec![state_handler(
            "state",
            &["counts", "anonymous", "system"],
        )])
    });
    let mut wire = host.connect();
    let incr = |store: &str| op("increment", store, &[key("k")]);
    assert_eq!(ask(&mut wire, &incr("counts")), Ok(1.into()));
    for (refused, why) in [
        ("anonymous", "CertificateRequired"),
        ("system", "UnknownIssuer"),
    ] {
        let error = ask(&mut wire, &incr(refused)).unwrap_err();
        assert!(
            error.contains(&format!("store `{refused}` is unreachable")) && error.contains(why),
            "{error}"
        );
    }
    assert_eq!(ask(&mut wire, &incr("counts")), Ok(2.into()));
}

/// `[store.tls]` files are read at start: a missing CA file, a file with
/// no certificate in it, and TLS settings for a `redis://` URL each stop
/// the host, naming the store, the key and the file; `check` describes a
/// good one without contacting the server.
#[test]
fn redis_tls_settings_are_checked_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let missing = dir.path().join("missing.pem");
    let ca = Ca::new(dir.path(), "redis");
    let me = ca.client(dir.path(), "me");
    let config = |url: &str, ca: &Path, identity: &str| {
        format!(
            "{}stores = [\"counts\"]\n[[store]]\nname = \"counts\"\nredis = {{ value = \"{url}\" }}\n\
             [store.tls]\nca_file = \"{}\"\n{identity}",
            handler("state", "state", ""),
            ca.display()
        )
    };
    let rediss = "rediss://127.0.0.1:1";
    let cases = [
        (
            config(rediss, &missing, ""),
            format!("tls.ca_file: {}", missing.display()),
        ),
        (
            config(rediss, &empty, ""),
            format!("tls.ca_file: {}: no PEM certificate", empty.display()),
        ),
        (
            config("redis://127.0.0.1:1", &ca.cert, ""),
            "tls: set, but the URL from inline secret starts with redis://, not rediss://"
                .to_owned(),
        ),
        (
            config(
                rediss,
                &ca.cert,
                &format!(
                    "cert = \"{}\"\nkey = \"{}\"\n",
                    me.cert.display(),
                    empty.display()
                ),
            ),
            format!("tls.key: {}", empty.display()),
        ),
    ];
    for (text, says) in cases {
        let stderr = start_refused(&text, &[], &[]);
        assert!(
            stderr.contains("store `counts`") && stderr.contains(&says),
            "{says}: {stderr}"
        );
    }
    let good = write_config(&config(
        rediss,
        &ca.cert,
        &format!(
            "cert = \"{}\"\nkey = \"{}\"\n",
            me.cert.display(),
            me.key.display()
        ),
    ));
    let out = check_config(&good.path);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "TLS trusting {}, presenting {} (not contacted by check)",
            ca.cert.display(),
            me.cert.display()
        )),
        "{stdout}"
    );
}
