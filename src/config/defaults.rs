//! Every default of `arrpc.toml`, named once. The sections' `Default`s and
//! [`HandlerConfig::new`](super::HandlerConfig::new) read these, and a test
//! checks that docs/operations.md and the shipped arrpc.toml state the
//! same values, so the three cannot drift apart.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

/// `[server] listen`.
pub const LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8080));
/// `[server] max_message_bytes`: 4 MiB.
pub const MAX_MESSAGE_BYTES: usize = 4 << 20;
/// `[server] idle_timeout`.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// `[server] max_connections`.
pub const MAX_CONNECTIONS: usize = 1024;
/// `[server] max_pipelined`.
pub const MAX_PIPELINED: usize = 128;
/// `[server] shutdown_grace`.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// `[server] cache_max_mib`.
pub const CACHE_MAX_MIB: u64 = 1024;

/// `[[handler]] max_memory_mib`.
pub const MAX_MEMORY_MIB: u32 = 64;
/// `[[handler]] timeout`.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// `[[handler]] max_instances`.
pub const MAX_INSTANCES: u32 = 100;
/// `[[handler]] max_output_bytes`: 64 KiB.
pub const MAX_OUTPUT_BYTES: usize = 64 << 10;

/// `[auth] replay_window`.
pub const REPLAY_WINDOW: Duration = Duration::from_secs(30);
/// `[auth] replay_max_nonces`.
pub const REPLAY_MAX_NONCES: usize = 100_000;

/// `[tls] handshake_timeout`.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// `[tls] recheck_interval`.
pub const RECHECK_INTERVAL: Duration = Duration::from_secs(60);
/// `[tls.spiffe] startup_timeout`.
pub const SPIFFE_STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// `[outbound] max_response_bytes`: 16 MiB.
pub const MAX_RESPONSE_BYTES: usize = 16 << 20;
/// `[outbound] pool_idle_timeout`.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// `[[upstream]] timeout`.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(10);

/// `[[store]] max_key_bytes`.
pub const STORE_MAX_KEY_BYTES: usize = 1024;
/// `[[store]] max_value_bytes`: 1 MiB.
pub const STORE_MAX_VALUE_BYTES: usize = 1 << 20;
/// `[[store]] max_size_mib`, an embedded store's file.
pub const STORE_MAX_SIZE_MIB: u64 = 1024;
/// `[[store]] cache_mib`, an embedded store's page cache.
pub const STORE_CACHE_MIB: u64 = 64;
/// `[[store]] timeout`, a Redis store's per operation.
pub const STORE_TIMEOUT: Duration = Duration::from_secs(2);

#[cfg(test)]
mod tests {
    use super::*;

    /// A size as docs/operations.md writes it: whole MiB as `N MiB`, else
    /// the number of bytes.
    fn size(bytes: usize) -> String {
        if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
            format!("{} MiB", bytes >> 20)
        } else {
            bytes.to_string()
        }
    }

    fn secs(duration: Duration) -> String {
        format!("{}s", duration.as_secs())
    }

    /// Each default: its section as docs/operations.md heads the bullet,
    /// its key, how the docs write it in parentheses, and how the shipped
    /// arrpc.toml writes it (`None` where the file does not list the key).
    fn defaults() -> Vec<(&'static str, &'static str, String, Option<String>)> {
        let toml_secs = |d: Duration| Some(format!("\"{}s\"", d.as_secs()));
        vec![
            (
                "[server]",
                "max_message_bytes",
                size(MAX_MESSAGE_BYTES),
                Some(MAX_MESSAGE_BYTES.to_string()),
            ),
            (
                "[server]",
                "idle_timeout",
                secs(IDLE_TIMEOUT),
                toml_secs(IDLE_TIMEOUT),
            ),
            (
                "[server]",
                "max_connections",
                MAX_CONNECTIONS.to_string(),
                Some(MAX_CONNECTIONS.to_string()),
            ),
            (
                "[server]",
                "max_pipelined",
                MAX_PIPELINED.to_string(),
                Some(MAX_PIPELINED.to_string()),
            ),
            (
                "[server]",
                "shutdown_grace",
                secs(SHUTDOWN_GRACE),
                toml_secs(SHUTDOWN_GRACE),
            ),
            (
                "[server]",
                "cache_max_mib",
                CACHE_MAX_MIB.to_string(),
                Some(CACHE_MAX_MIB.to_string()),
            ),
            (
                "[[handler]]",
                "max_memory_mib",
                MAX_MEMORY_MIB.to_string(),
                Some(MAX_MEMORY_MIB.to_string()),
            ),
            ("[[handler]]", "timeout", secs(TIMEOUT), toml_secs(TIMEOUT)),
            (
                "[[handler]]",
                "max_instances",
                MAX_INSTANCES.to_string(),
                Some(MAX_INSTANCES.to_string()),
            ),
            (
                "[[handler]]",
                "max_output_bytes",
                MAX_OUTPUT_BYTES.to_string(),
                Some(MAX_OUTPUT_BYTES.to_string()),
            ),
            (
                "[auth]",
                "replay_window",
                secs(REPLAY_WINDOW),
                toml_secs(REPLAY_WINDOW),
            ),
            (
                "[auth]",
                "replay_max_nonces",
                REPLAY_MAX_NONCES.to_string(),
                Some(REPLAY_MAX_NONCES.to_string()),
            ),
            (
                "[tls]",
                "handshake_timeout",
                secs(HANDSHAKE_TIMEOUT),
                toml_secs(HANDSHAKE_TIMEOUT),
            ),
            (
                "[tls]",
                "recheck_interval",
                secs(RECHECK_INTERVAL),
                toml_secs(RECHECK_INTERVAL),
            ),
            (
                "[tls]",
                "startup_timeout",
                secs(SPIFFE_STARTUP_TIMEOUT),
                toml_secs(SPIFFE_STARTUP_TIMEOUT),
            ),
            (
                "[outbound]",
                "max_response_bytes",
                size(MAX_RESPONSE_BYTES),
                Some(MAX_RESPONSE_BYTES.to_string()),
            ),
            (
                "[outbound]",
                "pool_idle_timeout",
                secs(POOL_IDLE_TIMEOUT),
                toml_secs(POOL_IDLE_TIMEOUT),
            ),
            (
                "[[upstream]]",
                "timeout",
                secs(UPSTREAM_TIMEOUT),
                toml_secs(UPSTREAM_TIMEOUT),
            ),
            (
                "[[store]]",
                "max_key_bytes",
                STORE_MAX_KEY_BYTES.to_string(),
                Some(STORE_MAX_KEY_BYTES.to_string()),
            ),
            (
                "[[store]]",
                "max_value_bytes",
                size(STORE_MAX_VALUE_BYTES),
                Some(STORE_MAX_VALUE_BYTES.to_string()),
            ),
            (
                "[[store]]",
                "max_size_mib",
                STORE_MAX_SIZE_MIB.to_string(),
                Some(STORE_MAX_SIZE_MIB.to_string()),
            ),
            (
                "[[store]]",
                "cache_mib",
                STORE_CACHE_MIB.to_string(),
                Some(STORE_CACHE_MIB.to_string()),
            ),
            (
                "[[store]]",
                "timeout",
                secs(STORE_TIMEOUT),
                toml_secs(STORE_TIMEOUT),
            ),
        ]
    }

    /// The bullet of docs/operations.md's configuration reference that
    /// starts with `section`.
    fn bullet<'a>(docs: &'a str, section: &str) -> &'a str {
        let start = docs
            .find(&format!("\n- `{section}`"))
            .unwrap_or_else(|| panic!("docs/operations.md has no bullet for {section}"));
        let rest = &docs[start + 1..];
        let end = rest[1..].find("\n- ").map_or(rest.len(), |at| at + 1);
        &rest[..end]
    }

    /// The lines of arrpc.toml from the table `section` (or its commented
    /// form) to the next table.
    fn table<'a>(file: &'a str, section: &str) -> Vec<&'a str> {
        let lines: Vec<&str> = file.lines().collect();
        let header = |line: &str| line.trim_start_matches("# ").trim_start().starts_with('[');
        let start = lines
            .iter()
            .position(|l| l.trim_start_matches("# ").starts_with(section))
            .unwrap_or_else(|| panic!("arrpc.toml has no {section}"));
        lines[start + 1..]
            .iter()
            .take_while(|l| !header(l))
            .copied()
            .collect()
    }

    #[test]
    fn the_docs_and_the_shipped_config_state_the_defaults_the_code_has() {
        let docs = include_str!("../../docs/operations.md");
        let shipped = include_str!("../../arrpc.toml");
        for (section, key, written, in_toml) in defaults() {
            // The bullets wrap anywhere.
            let text = bullet(docs, section)
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            let stated = format!("`{key}` ({written}");
            assert!(
                text.contains(&stated),
                "docs/operations.md's {section} bullet does not say {stated})"
            );
            let Some(value) = in_toml else { continue };
            // [tls.spiffe] follows [tls] in the file.
            let table_name = if key == "startup_timeout" {
                "[tls.spiffe]"
            } else {
                section
            };
            let lines = table(shipped, table_name);
            let found = lines.iter().any(|line| {
                let line = line.trim_start_matches('#').trim();
                line.strip_prefix(key)
                    .and_then(|rest| rest.trim_start().strip_prefix('='))
                    .is_some_and(|rest| rest.split('#').next().unwrap_or("").trim() == value)
            });
            assert!(
                found,
                "arrpc.toml's {table_name} does not say {key} = {value}"
            );
        }
    }
}
