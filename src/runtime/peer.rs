//! Who sent a message, as a handler may ask: the client's address and the
//! names its verified certificate carries. The server fills this in per
//! connection (and decides with it who may call what, in
//! `server::access`); the runtime hands it to the guest only when the
//! guest asks.

use std::sync::Arc;

/// The other end of a connection.
#[derive(Debug)]
pub struct Peer {
    /// `ip:port`, for logs and the handler.
    pub addr: Arc<str>,
    /// What its client certificate proves; `None` without a verified one.
    pub identity: Option<Identity>,
    /// 0 for a client of the message port; n for a handler of this host
    /// calling in process, n calls deep.
    pub depth: u8,
}

/// The names a verified client certificate carries.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Identity {
    /// URI SANs that are SPIFFE IDs.
    pub spiffe_ids: Vec<String>,
    /// DNS SANs, lowercased.
    pub dns_names: Vec<String>,
}

/// Who called, as a handler is told it.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    /// The certificate's SPIFFE ID when it carries exactly one.
    pub spiffe_id: Option<&'a str>,
    /// Its DNS SANs.
    pub dns_names: &'a [String],
}

impl Peer {
    /// A peer that proved nothing (plain TCP, or TLS without a client
    /// certificate).
    pub fn anonymous(addr: impl Into<Arc<str>>) -> Peer {
        Peer {
            addr: addr.into(),
            identity: None,
            depth: 0,
        }
    }

    /// Who called, as a handler is told it: `None` without a verified
    /// certificate; a SPIFFE ID only when the certificate carries exactly
    /// one, as an X.509-SVID does.
    pub fn caller(&self) -> Option<Caller<'_>> {
        self.identity.as_ref().map(|who| Caller {
            spiffe_id: match who.spiffe_ids.as_slice() {
                [id] => Some(id),
                _ => None,
            },
            dns_names: &who.dns_names,
        })
    }
}

/// A peer whose verified certificate carries these names, for tests.
#[cfg(test)]
impl Peer {
    pub(crate) fn with_certificate(spiffe_ids: &[&str], dns_names: &[&str]) -> Peer {
        Peer {
            addr: "10.0.0.7:5000".into(),
            identity: Some(Identity {
                spiffe_ids: spiffe_ids.iter().map(|s| s.to_string()).collect(),
                dns_names: dns_names.iter().map(|s| s.to_string()).collect(),
            }),
            depth: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(spiffe: &[&str], dns: &[&str]) -> Peer {
        Peer::with_certificate(spiffe, dns)
    }

    /// A handler is told a SPIFFE ID only when it names one workload, and
    /// is told a certificate was verified even when it names nothing.
    #[test]
    fn the_caller_a_handler_sees() {
        let both = peer(&["spiffe://td/ns/a/sa/b"], &["b.a.svc", "b"]);
        let caller = both.caller().unwrap();
        assert_eq!(caller.spiffe_id, Some("spiffe://td/ns/a/sa/b"));
        assert_eq!(caller.dns_names, ["b.a.svc", "b"]);
        let two = peer(&["spiffe://td/x", "spiffe://td/y"], &[]);
        assert_eq!(two.caller().unwrap().spiffe_id, None);
        let nameless = peer(&[], &[]);
        let bare = nameless.caller().unwrap();
        assert!(bare.spiffe_id.is_none() && bare.dns_names.is_empty());
        assert!(Peer::anonymous("1.2.3.4:5").caller().is_none());
    }
}
