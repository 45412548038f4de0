//! The `allowed_outbound_hosts` grammar (`src/config/outbound.rs`) and the
//! address rules (`src/outbound/address.rs`) on arbitrary text: the input's
//! first line is an entry, its second a URL host, its third a port.
//!
//! Beyond "no panic": an entry that reads prints as text that reads back
//! as itself; an address entry never admits a name, nor a name entry an
//! address; and an address the entry names literally passes the address
//! rules for that entry's scheme and port.
//!
//! Both modules are compiled here on their own, as the `config` target
//! compiles the config module (see fuzz_targets/config.rs).

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../src"]
#[allow(dead_code, unused_imports)]
mod host {
    pub mod config;
    pub mod outbound {
        pub mod address;
    }
}

// `crate::config`, as the address rules name it in the host.
use host::config;
use host::config::{HostPattern, OutboundHost, Target};
use host::outbound::address;

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    let mut lines = text.splitn(3, '\n');
    let entry = lines.next().unwrap_or_default();
    let host = lines.next().unwrap_or_default();
    let port: u16 = lines
        .next()
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or(443);
    let Ok(read) = OutboundHost::try_from(entry.to_owned()) else {
        return;
    };
    let printed = read.to_string();
    assert_eq!(
        OutboundHost::try_from(printed.clone()).as_ref(),
        Ok(&read),
        "{entry:?} printed as {printed:?}"
    );
    let target = Target::parse(host);
    let admitted = read.admits(read.scheme, target, port);
    match (&read.host, target) {
        (HostPattern::Ip(_) | HostPattern::Cidr(_), Target::Name(_))
        | (HostPattern::Name(_) | HostPattern::Suffix(_), Target::Ip(_)) => {
            assert!(!admitted, "{printed} admitted {host:?}")
        }
        _ => {}
    }
    if let (HostPattern::Ip(ip), true) = (&read.host, admitted) {
        assert_eq!(
            address::check(std::slice::from_ref(&read), read.scheme, *ip, port),
            Ok(()),
            "{printed} names {ip} literally"
        );
    }
});
