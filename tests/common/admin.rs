//! The admin listener of a running host, where it listens, and the one
//! reader of metrics in the Prometheus text format: its `/metrics`, an
//! in-process host's, and a client's registry.

use std::fmt;
use std::net::SocketAddr;

use arrpc_host::config::Config;
use prometheus_client::registry::Registry;

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

/// The host's `/metrics` now.
pub fn scrape(admin: SocketAddr) -> Scrape {
    let (status, body) = get(admin, "/metrics");
    assert_eq!(status, 200, "{body}");
    Scrape::parse(&body)
}

/// What a client's metrics registered in `registry` show now.
pub fn scrape_registry(registry: &Registry) -> Scrape {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    Scrape::parse(&text)
}

/// Metrics in the Prometheus text format, read by name and labels.
///
/// Label values are read whole, escapes and all, so a value holding `=` or
/// `,` (a certificate subject) is matched like any other.
pub struct Scrape {
    text: String,
    /// The families the text declares (`# TYPE`), whether or not they have
    /// a series yet.
    families: Vec<String>,
    series: Vec<Series>,
}

/// One sample line.
struct Series {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

/// What a family's name may be followed by in its samples' names.
const SAMPLE_SUFFIXES: [&str; 6] = ["_total", "_count", "_sum", "_bucket", "_created", "_info"];

impl Scrape {
    /// Reads `text`; a line that is neither a comment nor a sample fails
    /// the test, as a scraper would reject it.
    pub fn parse(text: &str) -> Scrape {
        let mut families = Vec::new();
        let mut series = Vec::new();
        for line in text.lines() {
            if let Some(declared) = line.strip_prefix("# TYPE ") {
                let family = declared.split_whitespace().next();
                families.push(family.expect("a family name").to_owned());
            } else if !line.starts_with('#') && !line.trim().is_empty() {
                let sample = Series::parse(line);
                series.push(sample.unwrap_or_else(|| panic!("not a sample line: {line}")));
            }
        }
        Scrape {
            text: text.to_owned(),
            families,
            series,
        }
    }

    /// The sum of the series named `name` whose labels include `labels`.
    ///
    /// prometheus-client shows no series of a labelled family until one is
    /// first counted or set, so no series matching reads as 0. That holds
    /// only for a family the text declares, and only for labels its series
    /// carry: a renamed metric or label fails the test instead of reading
    /// as 0.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.try_value(name, labels)
            .unwrap_or_else(|| panic!("no metric family declares {name}:\n{self}"))
    }

    /// [`Scrape::value`], or `None` while no family declares `name`.
    /// prometheus-client leaves a labelled family out altogether until its
    /// first series, so this is for waiting on one to appear, or for "none
    /// counted yet" where the same test also reads the family with
    /// [`Scrape::value`], which proves its name.
    pub fn try_value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let declared = self.families.iter().any(|family| {
            name.strip_prefix(family.as_str())
                .is_some_and(|suffix| suffix.is_empty() || SAMPLE_SUFFIXES.contains(&suffix))
        });
        if !declared {
            return None;
        }
        let named: Vec<&Series> = self.series.iter().filter(|s| s.name == name).collect();
        if let Some(first) = named.first() {
            for (key, _) in labels {
                assert!(
                    first.labels.iter().any(|(k, _)| k == key),
                    "{name} has no label {key}:\n{self}"
                );
            }
        }
        Some(
            named
                .iter()
                .filter(|s| labels.iter().all(|(k, v)| s.label(k) == Some(*v)))
                .map(|s| s.value)
                .sum(),
        )
    }
}

impl fmt::Display for Scrape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Series {
    /// `name{label="value",...} value [timestamp or exemplar]`; `None` when
    /// the line is not one.
    fn parse(line: &str) -> Option<Series> {
        let name_end = line.find(['{', ' '])?;
        let (name, mut rest) = line.split_at(name_end);
        let mut labels = Vec::new();
        if let Some(mut inner) = rest.strip_prefix('{') {
            loop {
                inner = inner.trim_start_matches(',');
                if let Some(after) = inner.strip_prefix('}') {
                    rest = after;
                    break;
                }
                let (key, quoted) = inner.split_once("=\"")?;
                let mut value = String::new();
                let mut chars = quoted.char_indices();
                let end = loop {
                    match chars.next()? {
                        (i, '"') => break i,
                        (_, '\\') => match chars.next()?.1 {
                            'n' => value.push('\n'),
                            escaped => value.push(escaped),
                        },
                        (_, c) => value.push(c),
                    }
                };
                labels.push((key.to_owned(), value));
                inner = &quoted[end + 1..];
            }
        }
        let value = rest.split_whitespace().next()?.parse().ok()?;
        Some(Series {
            name: name.to_owned(),
            labels,
            value,
        })
    }

    fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}
