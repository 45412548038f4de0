//! Addresses a guest is kept from unless an entry names them literally:
//! the host itself, link-local networks, cloud metadata services and
//! multicast. A name that resolves to one of them is refused, so DNS cannot
//! turn an allowed name into a way to the metadata service or to a port
//! the host serves only to itself.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use crate::config::{OutboundHost, OutboundScheme};

/// The guarded range `ip` lies in, and its name for logs; `None` for an
/// address reachable through any entry that admits it.
pub fn guarded(ip: IpAddr) -> Option<(&'static str, IpNet)> {
    let net = |base: IpAddr, len: u8| IpNet::new(base, len).expect("a valid prefix length");
    let v4 = |a, b, c, d| IpAddr::V4(Ipv4Addr::new(a, b, c, d));
    match ip.to_canonical() {
        // Cloud metadata services first: narrower than the ranges below.
        ip @ IpAddr::V4(v) if v == Ipv4Addr::new(169, 254, 169, 254) => {
            Some(("cloud metadata", net(ip, 32)))
        }
        // Alibaba Cloud's metadata service.
        ip @ IpAddr::V4(v) if v == Ipv4Addr::new(100, 100, 100, 200) => {
            Some(("cloud metadata", net(ip, 32)))
        }
        // AWS's IPv6 metadata service.
        ip @ IpAddr::V6(v) if v == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) => {
            Some(("cloud metadata", net(ip, 128)))
        }
        IpAddr::V4(v) if v.is_loopback() => Some(("loopback", net(v4(127, 0, 0, 0), 8))),
        IpAddr::V4(v) if v.is_link_local() => Some(("link-local", net(v4(169, 254, 0, 0), 16))),
        IpAddr::V4(v) if v.is_unspecified() || v.octets()[0] == 0 => {
            Some(("this host", net(v4(0, 0, 0, 0), 8)))
        }
        IpAddr::V4(v) if v.is_multicast() => Some(("multicast", net(v4(224, 0, 0, 0), 4))),
        ip @ IpAddr::V4(v) if v.is_broadcast() => Some(("broadcast", net(ip, 32))),
        ip @ IpAddr::V6(v) if v.is_loopback() => Some(("loopback", net(ip, 128))),
        ip @ IpAddr::V6(v) if v.is_unspecified() => Some(("this host", net(ip, 128))),
        IpAddr::V6(v) if v.is_unicast_link_local() => Some((
            "link-local",
            net(IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0)), 10),
        )),
        IpAddr::V6(v) if v.is_multicast() => Some((
            "multicast",
            net(IpAddr::V6(Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0)), 8),
        )),
        _ => None,
    }
}

/// Whether a connection for `scheme` to `ip` on `port` may be made, given
/// a handler's entries: any address outside the guarded ranges, or a
/// guarded one that an entry for this scheme and port names literally.
/// Why not, otherwise.
pub fn check(
    entries: &[OutboundHost],
    scheme: OutboundScheme,
    ip: IpAddr,
    port: u16,
) -> Result<(), &'static str> {
    let ip = ip.to_canonical();
    let Some((why, range)) = guarded(ip) else {
        return Ok(());
    };
    let named = entries.iter().any(|e| {
        e.scheme == scheme && e.port.is_none_or(|p| p == port) && e.names_literally(ip, &range)
    });
    if named { Ok(()) } else { Err(why) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(texts: &[&str]) -> Vec<OutboundHost> {
        texts
            .iter()
            .map(|t| OutboundHost::try_from(t.to_string()).unwrap())
            .collect()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn guarded_addresses_are_refused_behind_names_and_wide_networks() {
        let list = entries(&[
            "http://api.test:80",
            "http://0.0.0.0/0:80",
            "http://[::/0]:80",
        ]);
        for addr in [
            "127.0.0.1",
            "127.9.9.9",
            "169.254.169.254",
            "169.254.1.1",
            "100.100.100.200",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fd00:ec2::254",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(
                check(&list, OutboundScheme::Http, ip(addr), 80).is_err(),
                "{addr}"
            );
        }
        for addr in ["10.1.2.3", "192.168.1.1", "203.0.113.9", "2001:db8::1"] {
            assert_eq!(
                check(&list, OutboundScheme::Http, ip(addr), 80),
                Ok(()),
                "{addr}"
            );
        }
    }

    #[test]
    fn an_entry_that_names_the_address_opens_it_for_its_scheme_and_port_only() {
        let list = entries(&["http://127.0.0.1:8080", "https://169.254.169.254"]);
        assert_eq!(
            check(&list, OutboundScheme::Http, ip("127.0.0.1"), 8080),
            Ok(())
        );
        assert!(check(&list, OutboundScheme::Http, ip("127.0.0.1"), 8081).is_err());
        assert!(check(&list, OutboundScheme::Https, ip("127.0.0.1"), 8080).is_err());
        assert!(check(&list, OutboundScheme::Http, ip("127.0.0.2"), 8080).is_err());
        assert_eq!(
            check(&list, OutboundScheme::Https, ip("169.254.169.254"), 443),
            Ok(())
        );
        // A link-local network entry does not open the metadata address in it.
        let wide = entries(&["http://169.254.0.0/16:80"]);
        assert_eq!(
            check(&wide, OutboundScheme::Http, ip("169.254.1.1"), 80),
            Ok(())
        );
        assert_eq!(
            check(&wide, OutboundScheme::Http, ip("169.254.169.254"), 80),
            Err("cloud metadata")
        );
    }
}
