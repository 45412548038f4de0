//! The admin listener of a running host: where it listens, and its
//! `/metrics` parsed with a Prometheus text-format parser.

use std::net::SocketAddr;

use arrpc_host::config::Config;
use prometheus_parse::{Scrape, Value as Sample};

use super::{Host, write_config, write_config_value};

/// Starts a host with its admin listener on an ephemeral port.
pub fn start_with_admin(config: &str) -> (Host, SocketAddr) {
    let host = Host::start_with(write_config(config), &["--admin-listen", "127.0.0.1:0"]);
    let admin = admin_of(&host);
    (host, admin)
}

/// [`start_with_admin`] on a config built in Rust.
pub fn start_config_with_admin(config: &Config) -> (Host, SocketAddr) {
    let host = Host::start_with(
        write_config_value(config),
        &["--admin-listen", "127.0.0.1:0"],
    );
    let admin = admin_of(&host);
    (host, admin)
}

/// The admin address of a host started with `--admin-listen 127.0.0.1:0`.
pub fn admin_of(host: &Host) -> SocketAddr {
    let log = host.wait_for_log("admin endpoint up");
    let line = log
        .lines()
        .find(|l| l.contains("admin endpoint up"))
        .unwrap();
    line.split_whitespace()
        .find_map(|word| word.strip_prefix("admin="))
        .expect("admin= in the log line")
        .parse()
        .unwrap()
}

pub fn get(admin: SocketAddr, path: &str) -> (u16, String) {
    let response = reqwest::blocking::get(format!("http://{admin}{path}")).unwrap();
    (response.status().as_u16(), response.text().unwrap())
}

pub fn scrape(admin: SocketAddr) -> Scrape {
    let (status, body) = get(admin, "/metrics");
    assert_eq!(status, 200, "{body}");
    parse(&body)
}

/// Metrics in the Prometheus text format, parsed.
pub fn parse(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("Prometheus text format")
}

/// The value of the sample named `metric` whose labels include `labels`.
pub fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            Sample::Counter(v) | Sample::Gauge(v) | Sample::Untyped(v) => *v,
            other => panic!("{metric} is not a single value: {other:?}"),
        })
}
