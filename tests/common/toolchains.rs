//! The guest toolchains, installed by `handlers/install-toolchains.sh` on
//! first use, so `cargo test` needs nothing installed beforehand: once per
//! test process and part, under a lock every test binary shares, the way
//! the Python arrpc package's virtualenv is made.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

fn handlers() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("handlers")
}

/// Installs one part of the toolchains (`rust`, `python`, `js`, `node`, `c`
/// or `zig`; see the script), or fails the test with the script's reason,
/// such as the `apt-get install` to run when this is not root.
pub fn toolchain(part: &str) {
    static READY: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mut ready = READY.lock().unwrap_or_else(|e| e.into_inner());
    if ready.iter().any(|ready| ready == part) {
        return;
    }
    super::run_sh_locked(
        &Path::new(env!("CARGO_TARGET_TMPDIR")).join("toolchains.lock"),
        &handlers().join("install-toolchains.sh"),
        &[Path::new(part)],
        &format!(
            "cannot install the {part} guest toolchain (handlers/install-toolchains.sh {part})"
        ),
    );
    ready.push(part.to_owned());
}
