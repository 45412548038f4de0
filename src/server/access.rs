//! Who is calling, and whether they may: the identity a verified client
//! certificate proves, checked per message against the allow list of the
//! handler it is for (see `config::Allowed`). Checking per message rather
//! than per handshake lets one connection reach some handlers and not
//! others, and gives a refused caller a reply it can read.

use std::fmt;

use x509_parser::extensions::GeneralName;

use crate::config::Allowed;

pub use crate::runtime::{Identity, Peer};

impl Identity {
    /// The names in `der`, a certificate the handshake already verified.
    pub fn from_certificate(der: &[u8]) -> Identity {
        let mut identity = Identity::default();
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
            return identity;
        };
        if let Ok(Some(names)) = cert.subject_alternative_name() {
            for name in &names.value.general_names {
                match name {
                    GeneralName::URI(uri) if uri.starts_with("spiffe://") => {
                        identity.spiffe_ids.push((*uri).to_owned())
                    }
                    GeneralName::DNSName(dns) => identity.dns_names.push(dns.to_ascii_lowercase()),
                    _ => {}
                }
            }
        }
        identity
    }
}

impl Peer {
    /// Whether any entry of `allow` lets this peer in.
    pub fn is_allowed(&self, allow: &[Allowed]) -> bool {
        allow.iter().any(|entry| match (entry, &self.identity) {
            (Allowed::Anyone, _) => true,
            (_, None) => false,
            (Allowed::Authenticated, Some(_)) => true,
            (Allowed::SpiffeId(id), Some(who)) => who.spiffe_ids.iter().any(|s| s == id),
            (Allowed::SpiffePrefix(prefix), Some(who)) => {
                who.spiffe_ids.iter().any(|s| s.starts_with(prefix))
            }
            (Allowed::DnsName(name), Some(who)) => who.dns_names.iter().any(|d| d == name),
        })
    }

    /// The reason a refused message gets, naming the caller and handler.
    pub fn refusal(&self, handler: &str) -> String {
        format!("{self} may not call `{handler}`")
    }
}

/// The caller as a refusal names it: its SPIFFE ID, else its DNS names,
/// else that it presented no certificate.
impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.identity {
            None => write!(f, "a caller without a client certificate ({})", self.addr),
            Some(who) if !who.spiffe_ids.is_empty() => f.write_str(&who.spiffe_ids.join(", ")),
            Some(who) if !who.dns_names.is_empty() => {
                write!(f, "the certificate for {}", who.dns_names.join(", "))
            }
            Some(_) => write!(
                f,
                "a client certificate with no SPIFFE ID or DNS name ({})",
                self.addr
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(entries: &[&str]) -> Vec<Allowed> {
        entries
            .iter()
            .map(|e| Allowed::try_from(e.to_string()).unwrap())
            .collect()
    }

    fn peer(spiffe: &[&str], dns: &[&str]) -> Peer {
        Peer::with_certificate(spiffe, dns)
    }

    #[test]
    fn each_kind_of_entry_admits_its_callers_only() {
        let web = peer(&["spiffe://cluster.local/ns/shop/sa/web"], &[]);
        let billing = peer(&["spiffe://cluster.local/ns/billing/sa/api"], &[]);
        let named = peer(&[], &["checkout.shop.svc"]);
        let nobody = Peer::anonymous("10.0.0.9:1");

        let exact = allowed(&["spiffe://cluster.local/ns/shop/sa/web"]);
        assert!(web.is_allowed(&exact) && !billing.is_allowed(&exact));
        let shop = allowed(&["spiffe://cluster.local/ns/shop/*"]);
        assert!(web.is_allowed(&shop) && !billing.is_allowed(&shop));
        // A prefix stops at a segment: ns/shopping is not ns/shop.
        assert!(!peer(&["spiffe://cluster.local/ns/shopping/sa/x"], &[]).is_allowed(&shop));
        let dns = allowed(&["dns:checkout.shop.svc"]);
        assert!(named.is_allowed(&dns) && !web.is_allowed(&dns));
        let any_cert = allowed(&["authenticated"]);
        assert!(web.is_allowed(&any_cert) && named.is_allowed(&any_cert));
        assert!(!nobody.is_allowed(&any_cert) && !nobody.is_allowed(&exact));
        assert!(nobody.is_allowed(&allowed(&["anyone"])));
        assert!(!web.is_allowed(&[]), "an empty list admits nobody");
    }

    #[test]
    fn refusals_name_the_caller_and_the_handler() {
        assert_eq!(
            peer(&["spiffe://td/ns/a/sa/b"], &["x.y"]).refusal("orders"),
            "spiffe://td/ns/a/sa/b may not call `orders`"
        );
        assert_eq!(
            peer(&[], &["x.y"]).refusal("orders"),
            "the certificate for x.y may not call `orders`"
        );
        assert_eq!(
            Peer::anonymous("1.2.3.4:5").refusal("orders"),
            "a caller without a client certificate (1.2.3.4:5) may not call `orders`"
        );
    }
}
