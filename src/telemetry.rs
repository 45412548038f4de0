//! Log output: human-readable lines on stderr, filtered by level.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the global log subscriber.
///
/// `RUST_LOG` wins when set; otherwise `default` applies, or debug output
/// for arrpc's own crates when `debug` is set (the seed's `debug=True`).
pub fn init(default: &str, debug: bool) {
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.is_empty() => EnvFilter::new(spec),
        _ if debug => EnvFilter::new(format!(
            "{default},arrpc_host=debug,arrpc_client=debug,arrpc_wire=debug"
        )),
        _ => EnvFilter::new(default),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}
