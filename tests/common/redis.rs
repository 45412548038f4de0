//! A real `redis-server` (Debian's package, installed by
//! tests/install-services.sh on first use) on a free loopback port, in a
//! temporary folder, with persistence off: what the Redis store tests run
//! against. [`RedisServer::stop`] and [`RedisServer::restart`] take it away
//! and bring it back on the same port.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::Duration;

use super::{run_sh_locked, wait_until};

/// Installs one part of tests/install-services.sh, under the lock every
/// test binary shares.
pub fn install_service(part: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    run_sh_locked(
        &Path::new(env!("CARGO_TARGET_TMPDIR")).join("services.lock"),
        &root.join("tests/install-services.sh"),
        &[Path::new(part)],
        &format!("cannot install {part} (tests/install-services.sh {part})"),
    );
}

pub struct RedisServer {
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
    child: Option<Child>,
    tls: Option<RedisTls>,
}

/// A server that speaks only TLS: its certificate and key, the CA its
/// clients' certificates must come from, and whether it requires one.
#[derive(Clone)]
pub struct RedisTls {
    pub cert: super::certs::CertFiles,
    pub client_ca: std::path::PathBuf,
    pub require_client_certificate: bool,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        RedisServer::launch(None)
    }

    /// A server on a TLS port only (Debian's redis-server is built with TLS).
    pub fn start_tls(tls: RedisTls) -> RedisServer {
        RedisServer::launch(Some(tls))
    }

    fn launch(tls: Option<RedisTls>) -> RedisServer {
        static INSTALLED: Once = Once::new();
        INSTALLED.call_once(|| install_service("redis"));
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = RedisServer {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir: tempfile::tempdir().unwrap(),
            child: None,
            tls,
        };
        server.restart();
        server
    }

    /// The URL a `[[store]]` names it by.
    pub fn url(&self) -> String {
        match self.tls {
            None => format!("redis://{}", self.addr),
            Some(_) => format!("rediss://{}", self.addr),
        }
    }

    /// Kills the server at once, as a crash would.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server (again) on its port, and waits until it answers.
    pub fn restart(&mut self) {
        self.stop();
        let port = self.addr.port().to_string();
        let mut command = Command::new("redis-server");
        command.args(["--bind", "127.0.0.1"]);
        match &self.tls {
            None => command.args(["--port", &port]),
            Some(tls) => command
                .args(["--port", "0", "--tls-port", &port])
                .arg("--tls-cert-file")
                .arg(&tls.cert.cert)
                .arg("--tls-key-file")
                .arg(&tls.cert.key)
                .arg("--tls-ca-cert-file")
                .arg(&tls.client_ca)
                .args([
                    "--tls-auth-clients",
                    if tls.require_client_certificate {
                        "yes"
                    } else {
                        "no"
                    },
                ]),
        };
        let child = command
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting redis-server");
        self.child = Some(child);
        let addr = self.addr;
        if self.tls.is_some() {
            // Listening is what can be seen without a TLS client.
            wait_until("redis-server listens", Duration::from_secs(20), || {
                TcpStream::connect(addr).is_ok()
            });
        } else {
            wait_until("redis-server answers PING", Duration::from_secs(20), || {
                ping(addr)
            });
        }
    }
}

fn ping(addr: SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut reply = [0; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG\r\n"
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
