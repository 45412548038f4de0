//! The dashboard and alert rules (deploy/observability) against Debian's
//! real Prometheus 2.42: `promtool` checks the rules and runs their unit
//! tests, the PrometheusRule carries the same groups, the checked-in
//! dashboard is what its code builds, and a Prometheus scraping running
//! hosts (one plain, one TLS) and a client's metrics answers every panel's
//! query with data and has a series for every metric the rules name. A
//! renamed metric fails here, not on a user's dashboard.

mod common;

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use std::sync::Arc;

use arrpc_client::{ClientConfig, ClientMetrics, RpcClient};
use arrpc_host::config::{
    Allowed, ClientCertificates, Config, HandlerConfig, StoreConfig, TlsConfig,
};
use common::admin::start_config_with_admin;
use common::certs::{self, Ca, local_names};
use common::redis::install_service;
use common::*;
use prometheus_client::registry::Registry;

fn observability() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/observability")
}

fn promtool(args: &[&str]) -> String {
    install_service("prometheus");
    let out = Command::new("promtool")
        .args(args)
        .current_dir(observability())
        .output()
        .expect("running promtool");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

/// The rules load, and each alert fires on its unit test's failing series
/// and stays quiet on the others.
#[test]
fn the_alert_rules_check_and_pass_their_unit_tests() {
    let checked = promtool(&["check", "rules", "alerts.yaml"]);
    assert!(checked.contains("SUCCESS: 7 rules found"), "{checked}");
    let tested = promtool(&["test", "rules", "alerts_test.yaml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
    // Every alert has a unit test.
    let rules = std::fs::read_to_string(observability().join("alerts.yaml")).unwrap();
    let tests = std::fs::read_to_string(observability().join("alerts_test.yaml")).unwrap();
    for alert in names_after(&rules, "- alert: ") {
        assert!(
            tests.contains(&format!("alertname: {alert}")),
            "{alert} has no unit test"
        );
    }
}

/// The PrometheusRule is the rules file's groups, indented under `spec:`.
#[test]
fn the_prometheus_rule_holds_the_rules_files_groups() {
    let rules = std::fs::read_to_string(observability().join("alerts.yaml")).unwrap();
    let crd = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("deploy/kubernetes/components/monitoring/prometheusrule.yaml"),
    )
    .unwrap();
    let groups = &rules[rules.find("groups:").unwrap()..];
    let spec = &crd[crd.find("spec:\n").unwrap() + "spec:\n".len()..];
    let unindented: String = spec
        .lines()
        .map(|l| l.strip_prefix("  ").unwrap_or(l))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(unindented.trim_end(), groups.trim_end());
}

/// The checked-in dashboard.json is what dashboard.py builds with the
/// pinned SDK.
#[test]
fn the_checked_in_dashboard_is_what_its_code_builds() {
    let dir = tempfile::tempdir().unwrap();
    let built = dir.path().join("dashboard.json");
    run_sh_locked(
        &Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.lock"),
        &observability().join("build-dashboard.sh"),
        &[&built],
        "building the dashboard (deploy/observability/build-dashboard.sh)",
    );
    let checked_in = std::fs::read_to_string(observability().join("dashboard.json")).unwrap();
    assert!(
        std::fs::read_to_string(&built).unwrap() == checked_in,
        "deploy/observability/dashboard.json is not what dashboard.py builds: run build-dashboard.sh"
    );
}

/// Every query of every panel in dashboard.json, with Grafana's
/// `$__rate_interval` read as a minute.
fn panel_queries() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(observability().join("dashboard.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            queries.push((
                panel["title"].as_str().unwrap().to_owned(),
                target["expr"]
                    .as_str()
                    .unwrap()
                    .replace("$__rate_interval", "1m"),
            ));
        }
    }
    queries
}

fn names_after<'a>(text: &'a str, marker: &'a str) -> impl Iterator<Item = &'a str> {
    text.lines()
        .filter_map(move |l| l.trim().strip_prefix(marker))
        .map(str::trim)
}

/// Every `arrpc_*` metric the rules name.
fn rule_metrics() -> BTreeSet<String> {
    let rules = std::fs::read_to_string(observability().join("alerts.yaml")).unwrap();
    let mut names = BTreeSet::new();
    for (at, _) in rules.match_indices("arrpc_") {
        let name: String = rules[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        names.insert(name);
    }
    names
}

/// A real Prometheus on a free port, scraping `targets` every second.
struct Prometheus {
    addr: SocketAddr,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(targets: &[SocketAddr]) -> Prometheus {
        install_service("prometheus");
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: arrpc\n    static_configs:\n      - targets: [{}]\n",
                targets.join(", ")
            ),
        )
        .unwrap();
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting prometheus");
        let prometheus = Prometheus {
            addr,
            child,
            _dir: dir,
        };
        wait_until("prometheus is ready", Duration::from_secs(60), || {
            reqwest::blocking::get(format!("http://{addr}/-/ready"))
                .is_ok_and(|r| r.status().is_success())
        });
        prometheus
    }

    /// How many series `name` has now.
    fn series(&self, name: &str) -> usize {
        self.query(&format!("count({name})"))
            .first()
            .and_then(|r| r["value"][1].as_str())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    /// Prometheus's graph page for `expr` over the last minute. Every
    /// byte but letters and digits is percent-encoded: the classic page
    /// reads a `+` as a plus, not a space.
    fn graph_url(&self, expr: &str) -> String {
        let encoded: String = expr
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        format!(
            "http://{}/graph?g0.expr={encoded}&g0.tab=0&g0.range_input=1m",
            self.addr
        )
    }

    /// The result vector of the instant query `expr` (empty on any error).
    fn query(&self, expr: &str) -> Vec<serde_json::Value> {
        let url = format!("http://{}/api/v1/query", self.addr);
        let Ok(url) = reqwest::Url::parse_with_params(&url, &[("query", expr)]) else {
            return Vec::new();
        };
        let Ok(text) = reqwest::blocking::get(url).and_then(|r| r.text()) else {
            return Vec::new();
        };
        let body: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Serves `registry` as a `/metrics` page on a free port, as a client
/// process exporting its own metrics would.
fn serve_registry(registry: Arc<Registry>) -> SocketAddr {
    use std::io::{Read, Write};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().map_while(Result::ok) {
            let _ = stream.read(&mut [0; 4096]);
            let mut body = String::new();
            prometheus_client::encoding::text::encode(&mut body, &registry).unwrap();
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(body.as_bytes());
        }
    });
    addr
}

/// Prometheus scraping a plain host (messages, a timeout, an access
/// refusal, a refused outbound request, store operations, a refused
/// reload), a TLS host (certificates, a failed handshake) and a balancing
/// client (one replica down) has data for every panel's query and a series
/// for every metric the rules name.
#[test]
fn every_panel_and_rule_has_data_from_running_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let (plain, plain_admin) = start_config_with_admin(&Config {
        stores: vec![StoreConfig::embedded(
            "counts",
            dir.path().join("counts.redb"),
        )],
        ..serving(vec![
            handler_config("echo", "echo"),
            HandlerConfig {
                timeout: Duration::from_millis(200),
                ..handler_config("misbehave", "misbehave")
            },
            handler_config("net", "net"),
            HandlerConfig {
                stores: vec!["counts".into()],
                ..handler_config("state", "state")
            },
        ])
    });
    let ca = Ca::new(dir.path(), "ops");
    let server = ca.server(dir.path(), "server", local_names());
    let (tls, tls_admin) = start_config_with_admin(&Config {
        tls: Some(TlsConfig {
            client_ca: Some(ca.cert.clone()),
            client_certificates: ClientCertificates::Optional,
            ..TlsConfig::new(server.cert.clone(), server.key.clone())
        }),
        ..serving(vec![
            handler_config("echo", "echo"),
            HandlerConfig {
                allow: Some(vec![Allowed::Authenticated]),
                ..handler_config("guarded", "echo")
            },
        ])
    });

    // Messages: answered, timed out, an HTTP request no entry admits, a
    // store increment; and over TLS without a certificate, one refused by
    // an allow list.
    let mut wire = plain.connect();
    assert_eq!(wire.call_value(&str_value("hi")), str_value("hi"));
    // RPC params reach the handler as they are: `net` and `state` take a map.
    for (method, params) in [
        ("misbehave", rmpv::Value::Array(vec![str_value("loop")])),
        (
            "net",
            rmpv::Value::Map(vec![
                ("op".into(), "get".into()),
                ("url".into(), "http://192.0.2.1/".into()),
            ]),
        ),
        (
            "state",
            rmpv::Value::Map(vec![
                ("op".into(), "increment".into()),
                ("store".into(), "counts".into()),
                ("key".into(), "k".into()),
            ]),
        ),
    ] {
        wire.rpc(1, method, &params);
    }
    {
        use std::io::{Read, Write};
        let mut stream = certs::tls_connect(tls.addr, certs::rustls_client(&ca.cert, None));
        stream
            .write_all(&request(1, "guarded", &rmpv::Value::Array(vec![1.into()])))
            .unwrap();
        let _ = stream.read(&mut [0; 256]);
    }
    // A config reload refused.
    std::fs::write(&plain.config.path, "[server\n").unwrap();
    plain.wait_for_log("config reload refused");
    // A handshake that fails: plain bytes at the TLS port.
    {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(tls.addr).unwrap();
        stream
            .write_all(b"not a TLS client hello, just bytes\r\n\r\n")
            .unwrap();
        let _ = stream.read(&mut [0; 64]);
    }
    // A balancing client over the plain host and a port nothing listens on.
    let mut registry = Registry::default();
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let metrics = ClientMetrics::register(&mut registry);
    let mut config = ClientConfig::new(format!("{},{dead}", plain.addr));
    config.metrics = Some(metrics.clone());
    config.connect_timeout = Duration::from_millis(200);
    let client = RpcClient::new(config);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for _ in 0..20 {
        let _ =
            runtime.block_on(client.call_raw("echo", &encode(&rmpv::Value::Array(vec![1.into()]))));
    }
    // A bare client tries a dead address again before giving up: retries.
    let mut config = ClientConfig::new(dead.to_string());
    config.metrics = Some(metrics);
    config.connect_attempts = 2;
    config.backoff = Duration::from_millis(10);
    let mut bare = arrpc_client::Client::new(config);
    assert!(
        runtime
            .block_on(bare.send_raw(&encode(&str_value("hi"))))
            .is_err()
    );
    let client_metrics = serve_registry(Arc::new(registry));

    let prometheus = Prometheus::start(&[plain_admin, tls_admin, client_metrics]);
    let queries = panel_queries();
    assert!(queries.len() >= 14, "{queries:?}");
    let empty = || -> Vec<&(String, String)> {
        queries
            .iter()
            .filter(|(_, expr)| prometheus.query(expr).is_empty())
            .collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while !empty().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
    }
    let empty = empty();
    assert!(
        empty.is_empty(),
        "panels whose queries return no data: {empty:#?}"
    );
    let wanted = rule_metrics();
    assert!(wanted.len() >= 8, "{wanted:?}");
    for metric in &wanted {
        assert!(
            prometheus.series(metric) > 0,
            "no series for {metric}, which the rules name"
        );
    }
    // A name no host exports has no data: the checks can fail.
    assert!(
        prometheus
            .query("rate(arrpc_no_such_metric_total[1m])")
            .is_empty()
    );

    // With ARRPC_DOCS_PICTURES set to a folder (docs/images), the key
    // panels as Prometheus's own graph page draws them under load, taken
    // with headless Chromium, for docs/operations.md. Not checked: how
    // soon the page draws depends on the machine's load.
    if let Some(dir) = std::env::var_os("ARRPC_DOCS_PICTURES") {
        let addr = plain.addr;
        std::thread::spawn(move || {
            let mut wire = Wire::connect(addr);
            let until = std::time::Instant::now() + Duration::from_secs(20);
            while std::time::Instant::now() < until {
                wire.call_value(&str_value("hi"));
            }
        })
        .join()
        .unwrap();
        let pictures = tempfile::tempdir().unwrap();
        for (title, file) in [
            ("Handler latency", "panel-latency.png"),
            ("Instances in use", "panel-instances.png"),
        ] {
            let (_, expr) = queries.iter().find(|(t, _)| t == title).unwrap();
            let page = prometheus.graph_url(expr);
            let png = pictures.path().join(file);
            // The largest of a few: a run may shoot before the page drew.
            let mut best = Vec::new();
            for _ in 0..5 {
                chromium(
                    &[&format!("--screenshot={}", png.display()), page.as_str()],
                    pictures.path(),
                );
                let bytes = std::fs::read(&png).unwrap();
                if bytes.len() > best.len() {
                    best = bytes;
                }
            }
            std::fs::write(Path::new(&dir).join(file), best).unwrap();
        }
    }
}

/// Runs headless Chromium (Debian's, installed by
/// tests/install-services.sh) with `args` and a profile in `dir`, as the
/// machine's closed network needs; returns what it printed on stdout.
fn chromium(args: &[&str], dir: &Path) -> String {
    install_service("chromium");
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1200,900",
            // Real time for the page's queries to come back and draw.
            "--timeout=10000",
        ])
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .args(args)
        .output()
        .expect("running chromium");
    assert!(
        out.status.success(),
        "chromium {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
