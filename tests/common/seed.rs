//! The real Python arrpc package, `arrpc==0.5.0` from PyPI, in a virtualenv
//! the tests create on first use (shared by every test binary, under a lock).
//! "Seed" in names here (`SeedServer`, `seed-venv`) means that package.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use super::wait_until;

fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python")
}

/// The virtualenv's Python, creating the virtualenv if needed.
pub fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("seed-venv");
        super::run_sh_locked(
            &venv.with_extension("lock"),
            &scripts().join("setup-seed-venv.sh"),
            &[&venv],
            "cannot install Python arrpc==0.5.0 (needs python3 with venv and PyPI)",
        );
        venv.join("bin/python")
    })
}

/// Runs the Python arrpc package's `Client.send` calls (see
/// tests/python/seed_client.py).
pub fn client_calls(calls: &serde_json::Value) -> Vec<serde_json::Value> {
    let output = Command::new(python())
        .arg(scripts().join("seed_client.py"))
        .arg(calls.to_string())
        .output()
        .expect("running the seed client");
    assert!(
        output.status.success(),
        "seed client failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "seed client printed no JSON ({e}):\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running Python `arrpc.Server`; killed on drop.
pub struct SeedServer {
    child: Child,
    pub addr: SocketAddr,
}

impl SeedServer {
    /// Starts tests/python/seed_server.py with `args` and waits until it
    /// accepts connections; `env` is set for the server process.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> SeedServer {
        let port = free_port();
        let mut child = Command::new(python())
            .arg(scripts().join("seed_server.py"))
            .arg(port.to_string())
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting the seed server");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        wait_until("the seed server listening", Duration::from_secs(30), || {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("seed server exited before listening: {status}");
            }
            TcpStream::connect(addr).is_ok()
        });
        SeedServer { child, addr }
    }
}

impl Drop for SeedServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
