//! `[access]` and each handler's `allow`: who may call which handler, by
//! the identity the caller's TLS client certificate proves.
//!
//! An entry is a SPIFFE ID (`spiffe://cluster.local/ns/shop/sa/web`), a
//! SPIFFE path prefix (`spiffe://cluster.local/ns/shop/*`), a DNS name from
//! the certificate (`dns:checkout.shop.svc`), `authenticated` (any verified
//! client certificate) or `anyone` (with or without one). Handlers that
//! list nothing get `[access] default_allow`, which is `["anyone"]`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One entry of an allow list.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum Allowed {
    /// Every caller, with or without a client certificate.
    Anyone,
    /// Every caller whose client certificate was verified.
    Authenticated,
    /// The caller whose certificate carries exactly this SPIFFE ID.
    SpiffeId(String),
    /// Callers whose SPIFFE ID starts with this, which ends in `/`.
    SpiffePrefix(String),
    /// The caller whose certificate carries this DNS name.
    DnsName(String),
}

impl Allowed {
    /// Whether this entry names callers by certificate, which only a host
    /// that verifies client certificates can tell apart.
    pub fn needs_client_certificates(&self) -> bool {
        *self != Allowed::Anyone
    }

    /// Checks an entry built in Rust by the rules a read one passes: it must
    /// read back as itself from its text.
    pub fn validate(&self) -> Result<(), String> {
        match Allowed::try_from(self.to_string()) {
            Ok(read) if read == *self => Ok(()),
            Ok(read) => Err(format!(
                "{self:?} reads back as {read:?}; build it from its text"
            )),
            Err(reason) => Err(reason),
        }
    }
}

impl TryFrom<String> for Allowed {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        match text.as_str() {
            "anyone" => return Ok(Allowed::Anyone),
            "authenticated" => return Ok(Allowed::Authenticated),
            _ => {}
        }
        if let Some(name) = text.strip_prefix("dns:") {
            let valid = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'));
            return if valid {
                Ok(Allowed::DnsName(name.to_ascii_lowercase()))
            } else {
                Err(format!("{text:?} is not a DNS name"))
            };
        }
        let Some(rest) = text.strip_prefix("spiffe://") else {
            return Err(format!(
                "{text:?} is none of \"anyone\", \"authenticated\", \"spiffe://...\" or \"dns:...\""
            ));
        };
        let (domain, path) = rest.split_once('/').unwrap_or((rest, ""));
        if domain.is_empty() || path.is_empty() {
            return Err(format!(
                "{text:?} needs a trust domain and a path, as in spiffe://cluster.local/ns/shop/sa/web"
            ));
        }
        match path.strip_suffix('*') {
            Some(prefix) if prefix.is_empty() || prefix.ends_with('/') => {
                Ok(Allowed::SpiffePrefix(format!("spiffe://{domain}/{prefix}")))
            }
            Some(_) => Err(format!(
                "{text:?}: `*` may only stand for whole path segments at the end, as in spiffe://{domain}/ns/shop/*"
            )),
            None if path.contains('*') => Err(format!(
                "{text:?}: `*` may only stand at the end of the path"
            )),
            None => Ok(Allowed::SpiffeId(text)),
        }
    }
}

/// Written as the text it was read from.
impl Serialize for Allowed {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl fmt::Display for Allowed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Allowed::Anyone => f.write_str("anyone"),
            Allowed::Authenticated => f.write_str("authenticated"),
            Allowed::SpiffeId(id) => f.write_str(id),
            Allowed::SpiffePrefix(prefix) => write!(f, "{prefix}*"),
            Allowed::DnsName(name) => write!(f, "dns:{name}"),
        }
    }
}

/// `[access]`: the allow list of handlers that list none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessConfig {
    pub default_allow: Vec<Allowed>,
}

impl AccessConfig {
    /// Checks this section on its own.
    pub fn validate(&self) -> Result<(), String> {
        for entry in &self.default_allow {
            entry
                .validate()
                .map_err(|e| format!("access.default_allow: {e}"))?;
        }
        Ok(())
    }
}

impl Default for AccessConfig {
    fn default() -> Self {
        AccessConfig {
            default_allow: vec![Allowed::Anyone],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Allowed, String> {
        Allowed::try_from(text.to_owned())
    }

    #[test]
    fn entries_built_in_rust_are_checked_as_read_ones_are() {
        assert_eq!(
            Allowed::SpiffeId("spiffe://td/ns/a".into()).validate(),
            Ok(())
        );
        assert!(Allowed::SpiffeId("web".into()).validate().is_err());
        assert!(Allowed::DnsName("Web.Shop".into()).validate().is_err());
        let access = AccessConfig {
            default_allow: vec![Allowed::SpiffePrefix("spiffe://td/ns".into())],
        };
        let error = access.validate().unwrap_err();
        assert!(error.starts_with("access.default_allow: "), "{error}");
    }

    #[test]
    fn entries_parse_into_what_they_allow() {
        assert_eq!(parse("anyone"), Ok(Allowed::Anyone));
        assert_eq!(parse("authenticated"), Ok(Allowed::Authenticated));
        assert_eq!(
            parse("spiffe://cluster.local/ns/shop/sa/web"),
            Ok(Allowed::SpiffeId(
                "spiffe://cluster.local/ns/shop/sa/web".into()
            ))
        );
        assert_eq!(
            parse("spiffe://cluster.local/ns/shop/*"),
            Ok(Allowed::SpiffePrefix(
                "spiffe://cluster.local/ns/shop/".into()
            ))
        );
        assert_eq!(
            parse("dns:Checkout.Shop.svc"),
            Ok(Allowed::DnsName("checkout.shop.svc".into()))
        );
        for entry in ["anyone", "spiffe://td/ns/a/*", "dns:a.b"] {
            assert_eq!(parse(entry).unwrap().to_string(), entry);
        }
    }

    #[test]
    fn malformed_entries_say_what_is_expected() {
        for (entry, said) in [
            ("everyone", "is none of"),
            ("spiffe://cluster.local", "needs a trust domain and a path"),
            ("spiffe://cluster.local/ns/sh*", "whole path segments"),
            ("spiffe://cluster.local/*/sa/web", "only stand at the end"),
            ("dns:", "is not a DNS name"),
            ("dns:a b", "is not a DNS name"),
            ("dns:*.shop.svc", "is not a DNS name"),
        ] {
            let err = parse(entry).unwrap_err();
            assert!(err.contains(said), "{entry}: {err}");
        }
    }
}
