//! The alert rules (deploy/observability) against Debian's real Prometheus
//! 2.42: `promtool` checks them and runs their unit tests, the
//! PrometheusRule carries the same groups, and a Prometheus scraping two
//! running hosts (one plain, one TLS) has a series for every metric the
//! rules name, so a renamed metric fails here, not in a user's alerts.

mod common;

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use arrpc_host::config::{Config, HandlerConfig, TlsConfig};
use common::admin::start_config_with_admin;
use common::certs::{Ca, local_names};
use common::redis::install_service;
use common::*;

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
        // Metric names need no escaping but the parentheses.
        let url = format!("http://{}/api/v1/query?query=count%28{name}%29", self.addr);
        let Ok(text) = reqwest::blocking::get(url).and_then(|r| r.text()) else {
            return 0;
        };
        let body: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        body["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Prometheus scraping a plain host (messages, a refused reload) and a TLS
/// host (certificates, a failed handshake) has data for every metric the
/// rules name.
#[test]
fn every_metric_the_rules_name_is_scraped_from_running_hosts() {
    let (plain, plain_admin) =
        start_config_with_admin(&serving(vec![handler_config("echo", "echo")]));
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ops");
    let server = ca.server(dir.path(), "server", local_names());
    let (tls, tls_admin) = start_config_with_admin(&Config {
        tls: Some(TlsConfig::new(server.cert.clone(), server.key.clone())),
        ..serving(vec![HandlerConfig::new("echo", component("echo"))])
    });

    // A message answered, and a config reload refused.
    assert_eq!(
        plain.connect().call_value(&str_value("hi")),
        str_value("hi")
    );
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

    let prometheus = Prometheus::start(&[plain_admin, tls_admin]);
    let wanted = rule_metrics();
    assert!(wanted.len() >= 8, "{wanted:?}");
    let missing = || -> Vec<String> {
        wanted
            .iter()
            .filter(|m| prometheus.series(m) == 0)
            .cloned()
            .collect()
    };
    wait_until(
        "Prometheus has a series for every metric the rules name",
        Duration::from_secs(60),
        || missing().is_empty(),
    );
    // And a name no host exports has none: the check can fail.
    assert_eq!(prometheus.series("arrpc_no_such_metric_total"), 0);
}
