//! The config loader (`Config::load`, `src/config.rs`) on arbitrary text:
//! whatever the file holds, loading it gives a config or an error, never a
//! panic.
//!
//! The host's config module is compiled here on its own, from its source
//! file, rather than through the `arrpc-host` crate: it depends only on
//! serde, toml and the wire and client crates, while the host would bring
//! wasmtime into an instrumented build that takes over 20 minutes.

#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

/// `src/config.rs` as the module `host::config`, its submodules found in
/// `src/config/` as in the host.
#[path = "../../src"]
#[allow(dead_code, unused_imports)]
mod host {
    pub mod config;
}

use host::config::Config;

/// One file, rewritten for each input, in a folder kept for the run.
fn path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary folder").keep();
        dir.join("arrpc.toml")
    })
}

fuzz_target!(|input: &[u8]| {
    std::fs::write(path(), input).expect("writing the config");
    if let Ok(config) = Config::load(path()) {
        let _ = config.default_handler();
        let _ = config.check_access(config.verifies_client_certificates());
        let _ = config.check_access(false);
    }
});
