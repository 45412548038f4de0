//! `[outbound]` and each handler's `allowed_outbound_hosts`: where a
//! handler may connect. Nothing is allowed by default.
//!
//! An entry is `scheme://host[:port]`:
//! - the scheme is `http`, `https` or `tcp`;
//! - the host is a name (`api.example.com`), any name under a suffix
//!   (`*.shop.svc`, any depth), an IP (`10.1.2.3`, `[fd00::1]`) or a CIDR
//!   (`10.0.0.0/8`, `[fd00::/8]`); `tcp` entries take only an IP or CIDR,
//!   since guests are given no name lookup;
//! - the port is a number or `*`; left out, it is the scheme's own (80,
//!   443), and `tcp` needs one.
//!
//! A path, another scheme, or a bare `*` anywhere is refused at load, so a
//! typo never widens what a handler may reach.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::defaults;

/// `[outbound]`: how the host makes the connections handlers are allowed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboundConfig {
    /// PEM file of the CAs HTTPS servers are checked against; default: the
    /// system's trust store. Read again when it changes.
    pub ca_file: Option<PathBuf>,
    /// DNS server (`IP:port`) the host asks for handlers' HTTP host names;
    /// default: the system's nameservers.
    pub resolver: Option<SocketAddr>,
    /// Bytes of one HTTP response body a guest may be handed; a longer body
    /// ends in an error at this point.
    pub max_response_bytes: usize,
    /// A kept-alive connection unused for this long is closed.
    #[serde(with = "humantime_serde")]
    pub pool_idle_timeout: Duration,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        OutboundConfig {
            ca_file: None,
            resolver: None,
            max_response_bytes: defaults::MAX_RESPONSE_BYTES,
            pool_idle_timeout: defaults::POOL_IDLE_TIMEOUT,
        }
    }
}

impl OutboundConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.max_response_bytes == 0 {
            return Err("outbound.max_response_bytes must be at least 1".into());
        }
        if self
            .ca_file
            .as_ref()
            .is_some_and(|f| f.as_os_str().is_empty())
        {
            return Err("outbound.ca_file is empty; leave it out for the system's CAs".into());
        }
        Ok(())
    }
}

/// What an entry lets a handler open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutboundScheme {
    Http,
    Https,
    /// A TCP connection through `wasi:sockets`.
    Tcp,
}

impl OutboundScheme {
    pub fn as_str(self) -> &'static str {
        match self {
            OutboundScheme::Http => "http",
            OutboundScheme::Https => "https",
            OutboundScheme::Tcp => "tcp",
        }
    }

    /// The port a URL of this scheme means when it names none.
    pub fn default_port(self) -> Option<u16> {
        match self {
            OutboundScheme::Http => Some(80),
            OutboundScheme::Https => Some(443),
            OutboundScheme::Tcp => None,
        }
    }
}

/// Which hosts an entry names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// Exactly this name, lowercase.
    Name(String),
    /// Any name ending in `.` and this, lowercase, at any depth; not the
    /// suffix itself.
    Suffix(String),
    /// This address, named literally.
    Ip(IpAddr),
    /// Any address in this network.
    Cidr(IpNet),
}

/// What a request or connection is aimed at, as the allow list sees it.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    Name(&'a str),
    Ip(IpAddr),
}

impl<'a> Target<'a> {
    /// A URL's host: an IP literal (with or without brackets) or a name.
    pub fn parse(host: &'a str) -> Target<'a> {
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        match bare.parse::<IpAddr>() {
            Ok(ip) => Target::Ip(ip.to_canonical()),
            Err(_) => Target::Name(host),
        }
    }
}

/// One entry of `allowed_outbound_hosts`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct OutboundHost {
    pub scheme: OutboundScheme,
    pub host: HostPattern,
    /// `None`: any port.
    pub port: Option<u16>,
}

impl OutboundHost {
    /// Whether this entry admits `scheme` to `target` on `port`. Names
    /// match names and addresses match addresses: a name is never let
    /// through by an address entry on the strength of what it resolves to.
    pub fn admits(&self, scheme: OutboundScheme, target: Target<'_>, port: u16) -> bool {
        if self.scheme != scheme || self.port.is_some_and(|p| p != port) {
            return false;
        }
        match (&self.host, target) {
            (HostPattern::Name(name), Target::Name(host)) => {
                host.trim_end_matches('.').eq_ignore_ascii_case(name)
            }
            (HostPattern::Suffix(suffix), Target::Name(host)) => {
                let host = host.trim_end_matches('.');
                host.len() > suffix.len() + 1
                    && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
                    && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            }
            (HostPattern::Ip(ip), Target::Ip(addr)) => *ip == addr,
            (HostPattern::Cidr(net), Target::Ip(addr)) => net.contains(&addr),
            _ => false,
        }
    }

    /// Whether this entry names `ip` itself rather than reaching it through
    /// a name or a wide network: an exact IP, or a CIDR that lies wholly
    /// inside `range`. Addresses a guest is kept from by default (loopback,
    /// link-local, cloud metadata) are reached only through such entries.
    pub fn names_literally(&self, ip: IpAddr, range: &IpNet) -> bool {
        match &self.host {
            HostPattern::Ip(own) => *own == ip,
            HostPattern::Cidr(net) => net.contains(&ip) && range.contains(net),
            _ => false,
        }
    }
}

impl fmt::Display for OutboundHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", self.scheme.as_str())?;
        match &self.host {
            HostPattern::Name(name) => write!(f, "{name}")?,
            HostPattern::Suffix(suffix) => write!(f, "*.{suffix}")?,
            HostPattern::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]")?,
            HostPattern::Ip(ip) => write!(f, "{ip}")?,
            HostPattern::Cidr(IpNet::V6(net)) => write!(f, "[{net}]")?,
            HostPattern::Cidr(net) => write!(f, "{net}")?,
        }
        match (self.port, self.scheme.default_port()) {
            (None, _) => write!(f, ":*"),
            (Some(port), Some(default)) if port == default => Ok(()),
            (Some(port), _) => write!(f, ":{port}"),
        }
    }
}

impl Serialize for OutboundHost {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl OutboundHost {
    /// Checks an entry built in Rust by the rules a read one passes: it must
    /// read back as itself from its text.
    pub fn validate(&self) -> Result<(), String> {
        match OutboundHost::try_from(self.to_string()) {
            Ok(read) if read == *self => Ok(()),
            Ok(read) => Err(format!(
                "{self:?} reads back as {read:?}; build it from its text"
            )),
            Err(reason) => Err(reason),
        }
    }
}

impl TryFrom<String> for OutboundHost {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        parse(&text).map_err(|why| format!("{text:?}: {why}"))
    }
}

/// When `toml` (a config file that did not load) has an
/// `allowed_outbound_hosts` entry that cannot be read, says which handler
/// and which entry, as [`Config::validate`](super::Config::validate) words
/// its errors; the parser's own error names only the line.
pub(super) fn explain(toml: &str) -> Option<String> {
    let table: toml::Table = toml.parse().ok()?;
    let handlers = table.get("handler")?.as_array()?;
    handlers.iter().enumerate().find_map(|(i, handler)| {
        let name = handler.get("name").and_then(|n| n.as_str()).unwrap_or("");
        let entries = handler.get("allowed_outbound_hosts")?.as_array()?;
        entries.iter().find_map(|entry| {
            let reason = match entry.as_str() {
                Some(text) => OutboundHost::try_from(text.to_owned()).err()?,
                None => format!("{entry} is not a string"),
            };
            Some(format!(
                "handler #{} (`{name}`): allowed_outbound_hosts: {reason}",
                i + 1
            ))
        })
    })
}

fn parse(text: &str) -> Result<OutboundHost, String> {
    let hint =
        "write scheme://host[:port], as in \"https://api.example.com\" or \"tcp://10.0.0.5:5432\"";
    let Some((scheme, rest)) = text.split_once("://") else {
        return Err(if text.contains('*') && !text.contains('.') {
            format!("a bare `*` would allow everything; {hint}")
        } else {
            format!("no scheme; {hint}")
        });
    };
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "http" => OutboundScheme::Http,
        "https" => OutboundScheme::Https,
        "tcp" => OutboundScheme::Tcp,
        other => return Err(format!("unknown scheme {other:?}; use http, https or tcp")),
    };
    let (host, port) = split_port(rest)?;
    let host = host_pattern(host)?;
    if scheme == OutboundScheme::Tcp
        && matches!(host, HostPattern::Name(_) | HostPattern::Suffix(_))
    {
        return Err("tcp entries name an IP or a CIDR: handlers are given no name lookup".into());
    }
    let port = match port {
        None => Some(
            scheme
                .default_port()
                .ok_or("tcp entries need a port (or `*`)")?,
        ),
        Some("*") => None,
        Some(port) => match port.parse::<u16>() {
            Ok(0) | Err(_) => return Err(format!("port {port:?} is not 1 to 65535 or `*`")),
            Ok(port) => Some(port),
        },
    };
    Ok(OutboundHost { scheme, host, port })
}

/// Splits `host[:port]`, `[v6][:port]` and `[v6/len][:port]`; refuses a
/// path, a query or user info.
fn split_port(rest: &str) -> Result<(&str, Option<&str>), String> {
    if rest.contains(['?', '#', '@']) {
        return Err("only a scheme, host and port are allowed".into());
    }
    let (host, after) = match rest.strip_prefix('[') {
        Some(inner) => {
            let (host, after) = inner.split_once(']').ok_or("`[` without `]`")?;
            (host, after)
        }
        None => match rest.rsplit_once(':') {
            Some((host, _)) => (host, &rest[host.len()..]),
            None => (rest, ""),
        },
    };
    let port = match after {
        "" => None,
        _ => Some(after.strip_prefix(':').ok_or("a path is not allowed")?),
    };
    if port.is_some_and(|p| p.contains('/')) {
        return Err("a path is not allowed".into());
    }
    if host.is_empty() {
        return Err("no host".into());
    }
    Ok((host, port))
}

fn host_pattern(host: &str) -> Result<HostPattern, String> {
    if host == "*" {
        return Err("a bare `*` host would allow every host; name them".into());
    }
    if let Some((net, _)) = host.split_once('/') {
        if net.parse::<IpAddr>().is_err() {
            return Err("a path is not allowed".into());
        }
        let cidr: IpNet = host
            .parse()
            .map_err(|_| format!("{host:?} is not a CIDR such as 10.0.0.0/8"))?;
        if cidr.trunc() != cidr {
            return Err(format!(
                "{host:?} has host bits set; the network is {}",
                cidr.trunc()
            ));
        }
        return Ok(HostPattern::Cidr(cidr));
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(HostPattern::Ip(ip.to_canonical()));
    }
    let (suffix, name) = match host.strip_prefix("*.") {
        Some(name) => (true, name),
        None => (false, host),
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    // `10.0.0.1.` is the address, as it prints.
    if let (false, Ok(ip)) = (suffix, name.parse::<IpAddr>()) {
        return Ok(HostPattern::Ip(ip.to_canonical()));
    }
    let valid = !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        });
    if !valid {
        return Err(if name.contains('*') {
            format!("{host:?}: `*` may only begin a name, as in *.example.com")
        } else {
            format!("{host:?} is not a host name, IP or CIDR")
        });
    }
    Ok(if suffix {
        HostPattern::Suffix(name)
    } else {
        HostPattern::Name(name)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(text: &str) -> OutboundHost {
        OutboundHost::try_from(text.to_owned()).unwrap()
    }

    fn refused(text: &str) -> String {
        OutboundHost::try_from(text.to_owned()).unwrap_err()
    }

    #[test]
    fn the_issue_examples_read_and_print_back() {
        for text in [
            "https://api.example.com",
            "https://*.shop.svc:8443",
            "http://10.0.0.0/8:8080",
            "tcp://10.0.0.5:5432",
            "tcp://[fd00::/8]:*",
            "http://[::1]:8080",
            "http://127.0.0.1:*",
        ] {
            let read = entry(text);
            assert_eq!(read.to_string(), text);
            read.validate().unwrap();
        }
        assert_eq!(
            entry("HTTPS://API.Example.com.:443").to_string(),
            "https://api.example.com"
        );
    }

    #[test]
    fn paths_unknown_schemes_and_bare_stars_are_refused() {
        for (text, why) in [
            ("https://api.example.com/v1", "path"),
            ("https://api.example.com:443/v1", "path"),
            ("http://10.0.0.0/8/x:80", "CIDR"),
            ("ftp://files.example.com", "unknown scheme"),
            ("*", "bare `*`"),
            ("https://*", "bare `*`"),
            ("https://*:*", "bare `*`"),
            ("https://api.*.com", "`*` may only begin"),
            ("https://api.example.com:0", "not 1 to 65535"),
            ("https://api.example.com:99999", "not 1 to 65535"),
            ("tcp://db.example.com:5432", "IP or a CIDR"),
            ("tcp://10.0.0.5", "need a port"),
            ("https://user@api.example.com", "only a scheme"),
            ("api.example.com", "no scheme"),
            ("http://10.0.0.1/8:80", "host bits"),
        ] {
            let error = refused(text);
            assert!(error.contains(why), "{text}: {error}");
            assert!(error.contains(text), "{text}: {error}");
        }
    }

    #[test]
    fn a_file_with_a_bad_entry_is_refused_naming_the_handler_and_the_entry() {
        let text = "[[handler]]\nname = \"a\"\nmodule = \"a.wasm\"\n\
                    [[handler]]\nname = \"fetch\"\nmodule = \"f.wasm\"\n\
                    allowed_outbound_hosts = [\"https://ok.example.com\", \"https://api.example.com/v1\"]\n";
        assert_eq!(
            explain(text).unwrap(),
            "handler #2 (`fetch`): allowed_outbound_hosts: \"https://api.example.com/v1\": a path is not allowed"
        );
        let good = text.replace("/v1", "");
        assert_eq!(explain(&good), None);
    }

    #[test]
    fn names_suffixes_and_networks_admit_what_they_say() {
        use OutboundScheme::*;
        let name = entry("https://api.example.com");
        assert!(name.admits(Https, Target::parse("API.example.com"), 443));
        assert!(!name.admits(Https, Target::parse("api.example.com"), 8443));
        assert!(!name.admits(Http, Target::parse("api.example.com"), 443));
        assert!(!name.admits(Https, Target::parse("evil-api.example.com"), 443));

        let suffix = entry("https://*.shop.svc:8443");
        assert!(suffix.admits(Https, Target::parse("a.b.shop.svc"), 8443));
        assert!(!suffix.admits(Https, Target::parse("shop.svc"), 8443));
        assert!(!suffix.admits(Https, Target::parse("evilshop.svc"), 8443));

        let net = entry("http://10.0.0.0/8:8080");
        assert!(net.admits(Http, Target::parse("10.2.3.4"), 8080));
        assert!(!net.admits(Http, Target::parse("11.2.3.4"), 8080));
        // An IPv4-mapped IPv6 literal is the IPv4 address.
        assert!(net.admits(Http, Target::parse("[::ffff:10.2.3.4]"), 8080));
        // A name is not admitted by what an address entry covers.
        assert!(!net.admits(Http, Target::parse("ten.example.com"), 8080));

        let any_port = entry("tcp://192.0.2.7:*");
        assert!(any_port.admits(Tcp, Target::parse("192.0.2.7"), 1));
    }

    #[test]
    fn only_exact_addresses_and_narrow_networks_name_an_address_literally() {
        let loopback: IpNet = "127.0.0.0/8".parse().unwrap();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(entry("http://127.0.0.1:80").names_literally(ip, &loopback));
        assert!(entry("http://127.0.0.0/8:80").names_literally(ip, &loopback));
        assert!(!entry("http://0.0.0.0/0:80").names_literally(ip, &loopback));
        assert!(!entry("http://localhost:80").names_literally(ip, &loopback));
    }
}
