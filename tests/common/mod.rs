//! Shared test scaffolding: built handler components, a host on an
//! ephemeral port (served in this process, or a real `arrpc-host` process
//! where a test needs one), and raw sockets that speak the wire format.

#![allow(dead_code)]

pub mod admin;
pub mod certs;
mod configs;
pub mod corpus;
pub mod dns;
mod in_process;
pub mod kubelet;
pub mod redis;
pub mod seed;
pub mod toolchains;
pub mod web;

pub use configs::*;

use std::fmt;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

// Not every test binary serves in process.
#[allow(unused_imports)]
pub use in_process::*;

pub const HOST: &str = env!("CARGO_BIN_EXE_arrpc-host");

/// `arrpc-host` as a command, with its default compile cache under the
/// test's target folder (`XDG_CACHE_HOME`), not the user's home: every test
/// starts the host through this.
pub fn host_command() -> Command {
    let mut command = Command::new(HOST);
    command.env("XDG_CACHE_HOME", env!("CARGO_TARGET_TMPDIR"));
    command
}

/// Checks `condition` until it holds; fails the test, naming `what` it
/// waited for, when it has not within `timeout`. Tests wait on a state
/// (a metric, a reply, a file) this way instead of sleeping a guessed
/// length, so a busy machine makes them slower, not wrong; `timeout` only
/// bounds how long a broken host can hang one.
pub fn wait_until(what: impl fmt::Display, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "never happened within {timeout:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Folder of the built handler components; builds them on first use.
pub fn components() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        run_sh(
            &root.join("handlers/build.sh"),
            &[],
            &[],
            "building the Rust handlers failed",
        );
        root.join("handlers/target/wasm32-wasip2/release")
    })
}

/// Runs `sh script args...` with `env` added to the environment; when it
/// fails, the test fails with `failure` and the script's output.
pub fn run_sh(script: &Path, args: &[&Path], env: &[(&str, &Path)], failure: &str) {
    let output = Command::new("sh")
        .arg(script)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        output.status.success(),
        "{failure}\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// [`run_sh`] under the file lock `lock`: test binaries run at once, and a
/// setup script (a virtualenv, toolchains) runs in one of them while the
/// others wait, then find everything in place.
pub fn run_sh_locked(lock: &Path, script: &Path, args: &[&Path], failure: &str) {
    let lock = std::fs::File::create(lock).unwrap();
    lock.lock().unwrap();
    run_sh(script, args, &[], failure);
}

/// Of a log's throttled lines containing `needle`: how many were logged,
/// and how many more their `suppressed=N` fields say were held back.
pub fn throttled_lines(log: &str, needle: &str) -> (u64, u64) {
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(needle)).collect();
    let suppressed: u64 = lines
        .iter()
        .map(|l| {
            let n = l.split("suppressed=").nth(1).expect("every line counts");
            n.split_whitespace().next().unwrap().parse::<u64>().unwrap()
        })
        .sum();
    (lines.len() as u64, suppressed)
}

/// The sha256 of a file, in lowercase hex, as the host logs and prints a
/// module's.
pub fn sha256_of(path: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

pub fn component(name: &str) -> PathBuf {
    components().join(format!("{name}.wasm"))
}

/// A handler entry for a test config.
pub fn handler(name: &str, component_name: &str, extra: &str) -> String {
    format!(
        "[[handler]]\nname = \"{name}\"\nmodule = \"{}\"\n{extra}\n",
        component(component_name).display()
    )
}

/// A folder granted to the `misbehave` handler as `/gate`: its command
/// [`Gate::wait`] holds a call open until the test calls [`Gate::open`], so
/// a test decides when a call ends instead of guessing with sleep lengths.
pub struct Gate {
    dir: tempfile::TempDir,
}

impl Gate {
    pub fn new() -> Gate {
        Gate {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// The handler setting that grants the folder, read-only.
    pub fn dirs(&self) -> String {
        format!(
            "dirs = [{{ host = \"{}\", guest = \"/gate\" }}]",
            self.dir.path().display()
        )
    }

    /// The `misbehave` command that waits for `name` to open; the guest logs
    /// `misbehave: waiting for /gate/<name>` when it starts waiting, and
    /// replies `/gate/<name>`.
    pub fn wait(name: &str) -> String {
        format!("wait-file:/gate/{name}")
    }

    pub fn open(&self, name: &str) {
        std::fs::write(self.path(name), "").unwrap();
    }

    /// Where gate `name` opens on the host's side.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// Runs `arrpc-host check` on the config file at `path`.
pub fn check_config(path: &Path) -> std::process::Output {
    host_command()
        .args(["check", "--config"])
        .arg(path)
        .output()
        .expect("running arrpc-host check")
}

/// A config file in a temporary folder.
pub struct TestConfig {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
}

pub fn write_config(text: &str) -> TestConfig {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("arrpc.toml");
    std::fs::write(&path, text).unwrap();
    TestConfig { dir, path }
}

/// Runs `arrpc-host` on `config` with `args`, which must refuse to start;
/// what it printed on stderr.
pub fn start_refused(config: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    /// A host that refuses exits long before this; one that started
    /// serves on, and is stopped here so the test fails instead of hanging.
    const REFUSAL_WITHIN: Duration = Duration::from_secs(60);
    components();
    let config = write_config(config);
    let mut child = host_command()
        .arg("--config")
        .arg(&config.path)
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().expect("stderr is piped");
    // Read beside the wait, so a chatty host never blocks on a full pipe.
    let reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stderr, &mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > REFUSAL_WITHIN {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = reader.join().expect("the stderr reader");
    match status {
        None => panic!("the host started: still running after {REFUSAL_WITHIN:?}\n{stderr}"),
        Some(status) => assert!(!status.success(), "the host started\n{stderr}"),
    }
    stderr
}

/// A running `arrpc-host`; killed on drop.
pub struct Host {
    child: Child,
    pub addr: SocketAddr,
    log: Arc<Mutex<String>>,
    /// The thread copying stderr into `log`, until the host exits.
    reader: Option<JoinHandle<()>>,
    pub config: TestConfig,
}

impl Host {
    /// Starts a host on `config` (listening on an ephemeral port) and waits
    /// until it is listening.
    pub fn start(config: &str) -> Host {
        Host::start_with(write_config(config), &[])
    }

    pub fn start_with(config: TestConfig, args: &[&str]) -> Host {
        Host::start_with_env(config, args, &[])
    }

    /// Like [`Host::start_with`], with `env` set for the host process.
    pub fn start_with_env(config: TestConfig, args: &[&str], env: &[(&str, &str)]) -> Host {
        Host::start_on(config, "127.0.0.1:0", args, env)
    }

    /// Like [`Host::start_with_env`], listening on `listen` (a loopback
    /// address, so replicas can share one port on 127.0.0.1, .2 and .3).
    pub fn start_on(config: TestConfig, listen: &str, args: &[&str], env: &[(&str, &str)]) -> Host {
        Host::spawn_on(config, listen, args, env).listening()
    }

    /// Like [`Host::start_with`], for a host that first builds its handlers
    /// from source (their modules are missing): waits up to 15 minutes,
    /// time for a first cargo build beside other tests on two cores.
    pub fn start_building(config: TestConfig, args: &[&str]) -> Host {
        Host::spawn_on(config, "127.0.0.1:0", args, &[]).listening_within(Duration::from_secs(900))
    }

    /// Starts a host as [`Host::start_on`] does, without waiting for it to
    /// listen: for what it does before (`/readyz` while handlers load).
    pub fn spawn_on(
        config: TestConfig,
        listen: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Starting {
        components();
        let mut child = host_command()
            .arg("--config")
            .arg(&config.path)
            .args(["--listen", listen])
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting arrpc-host");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line
                    .contains(" listening")
                    .then(|| field(&line, "addr="))
                    .flatten()
                {
                    let _ = tx.send(addr);
                }
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        Starting {
            host: Host {
                child,
                addr: SocketAddr::from(([0, 0, 0, 0], 0)),
                log,
                reader: Some(reader),
                config,
            },
            listening: rx,
        }
    }

    /// Everything the host has logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the log contains `needle`.
    pub fn wait_for_log(&self, needle: &str) -> String {
        self.wait_for_log_count(needle, 1)
    }

    /// Waits (at most a minute) until `needle` has been logged `count` times.
    pub fn wait_for_log_count(&self, needle: &str, count: usize) -> String {
        let what = format!("{needle:?} logged {count} times");
        wait_until(self.with_log(&what), Duration::from_secs(60), || {
            self.log().matches(needle).count() >= count
        });
        self.log()
    }

    /// `what` a test waits for, told with the host's log as it is when
    /// told: for [`wait_until`], which tells it only on failure.
    pub fn with_log<'a>(&'a self, what: &'a str) -> impl fmt::Display + 'a {
        struct WithLog<'a>(&'a Host, &'a str);
        impl fmt::Display for WithLog<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}; log:\n{}", self.1, self.0.log())
            }
        }
        WithLog(self, what)
    }

    /// Waits for the host to exit and for the last of its stderr to reach
    /// [`Host::log`], so that a test may check what the log never says.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let status = self.child.wait().expect("waiting for arrpc-host");
        if let Some(reader) = self.reader.take() {
            reader.join().expect("the log reader");
        }
        status
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends the host a signal by name (`TERM`, `INT`, `HUP`) with `kill`.
    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .args([format!("-{name}"), self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} failed");
    }

    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }
}

/// A host process that may not be listening yet; its log, but not its
/// `addr`, can be read meanwhile.
pub struct Starting {
    host: Host,
    /// The address from the `listening` line, once logged.
    listening: std::sync::mpsc::Receiver<String>,
}

impl Starting {
    /// Waits (at most two minutes) until the host listens.
    pub fn listening(self) -> Host {
        self.listening_within(Duration::from_secs(120))
    }

    /// Waits at most `within` until the host listens.
    pub fn listening_within(mut self, within: Duration) -> Host {
        match self.listening.recv_timeout(within) {
            Ok(addr) => self.host.addr = addr.parse().unwrap(),
            Err(_) => panic!("host did not start listening; log:\n{}", self.host.log()),
        }
        self.host
    }
}

impl std::ops::Deref for Starting {
    type Target = Host;

    /// The host as far as it is up: its log, its pid, its admin address.
    fn deref(&self) -> &Host {
        &self.host
    }
}

/// What a test needs of a running host, in process or spawned.
pub trait Serves {
    fn addr(&self) -> SocketAddr;

    fn connect(&self) -> Wire {
        Wire::connect(self.addr())
    }
}

impl Serves for Host {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of a `key=value` field in a log line.
fn field(line: &str, key: &str) -> Option<String> {
    let start = line.find(key)? + key.len();
    Some(line[start..].split_whitespace().next()?.to_string())
}

/// A raw socket that reads whole MessagePack replies.
pub struct Wire {
    pub stream: TcpStream,
    buffer: Vec<u8>,
}

impl Wire {
    pub fn connect(addr: SocketAddr) -> Wire {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Wire {
            stream,
            buffer: Vec::new(),
        }
    }

    pub fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Reads one whole MessagePack value; `None` when the server closed the
    /// connection first.
    pub fn read(&mut self) -> Option<Vec<u8>> {
        use std::io::Read;
        loop {
            if let Some(len) = arrpc_wire::frame::value_len(&self.buffer) {
                return Some(self.buffer.drain(..len).collect());
            }
            let mut chunk = [0u8; 65536];
            let n = self.stream.read(&mut chunk).expect("reading a reply");
            if n == 0 {
                assert!(self.buffer.is_empty(), "connection closed mid-reply");
                return None;
            }
            self.buffer.extend_from_slice(&chunk[..n]);
        }
    }

    /// Sends one value and reads one reply.
    pub fn call(&mut self, message: &[u8]) -> Vec<u8> {
        self.write(message);
        self.read().expect("a reply")
    }

    /// A MessagePack-RPC request and its response's error and result; the
    /// response must carry `msgid`.
    pub fn rpc(
        &mut self,
        msgid: u32,
        method: &str,
        params: &rmpv::Value,
    ) -> (rmpv::Value, rmpv::Value) {
        let (id, error, result) = response(&self.call(&request(msgid, method, params)));
        assert_eq!(id, u64::from(msgid), "the response to another request");
        (error, result)
    }

    /// Sends a value and decodes the reply.
    pub fn call_value(&mut self, value: &rmpv::Value) -> rmpv::Value {
        decode(&self.call(&encode(value)))
    }
}

pub fn encode(value: &rmpv::Value) -> Vec<u8> {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, value).unwrap();
    out
}

pub fn decode(bytes: &[u8]) -> rmpv::Value {
    let mut slice = bytes;
    let value = rmpv::decode::read_value(&mut slice).unwrap();
    assert!(slice.is_empty(), "trailing bytes after the reply");
    value
}

/// The text of an error reply in the Python arrpc package's spelling
/// (`arrpc.error.RpcException: ...`), if the reply is one.
pub fn error_text(reply: &[u8]) -> Option<String> {
    match decode(reply) {
        rmpv::Value::String(s) => s.into_str().filter(|s| s.starts_with("arrpc.error.")),
        _ => None,
    }
}

/// A MessagePack-RPC call on a new connection: the response's error and
/// result.
pub fn rpc_call(
    host: &impl Serves,
    method: &str,
    params: &rmpv::Value,
) -> (rmpv::Value, rmpv::Value) {
    host.connect().rpc(7, method, params)
}

/// A MessagePack-RPC request with `params`.
pub fn request(msgid: u32, method: &str, params: &rmpv::Value) -> Vec<u8> {
    arrpc_wire::rpc::request(msgid, method, &encode(params))
}

/// A MessagePack-RPC response as `(msgid, error, result)`.
pub fn response(bytes: &[u8]) -> (u64, rmpv::Value, rmpv::Value) {
    match decode(bytes) {
        rmpv::Value::Array(items) => match items.as_slice() {
            [kind, msgid, error, result] if kind.as_u64() == Some(1) => {
                (msgid.as_u64().unwrap(), error.clone(), result.clone())
            }
            _ => panic!("not a response: {items:?}"),
        },
        other => panic!("not a response: {other:?}"),
    }
}

/// A blocking client of `host` that gives up on a reply after `timeout`.
pub fn client(host: &impl Serves, timeout: Duration) -> arrpc_client::BlockingClient {
    let mut config = arrpc_client::ClientConfig::new(host.addr().to_string());
    config.timeout = Some(timeout);
    arrpc_client::BlockingClient::new(config).unwrap()
}

/// One MessagePack-RPC request on an open stream (TLS or not) with the
/// params `1`: the response's error, nil when the call succeeded.
pub fn rpc_error_on(stream: &mut (impl std::io::Read + Write), method: &str) -> rmpv::Value {
    stream
        .write_all(&arrpc_wire::rpc::request(
            3,
            method,
            &encode(&rmpv::Value::from(1)),
        ))
        .unwrap();
    let mut buffer = Vec::new();
    loop {
        if let Some(len) = arrpc_wire::frame::value_len(&buffer) {
            let rmpv::Value::Array(items) = decode(&buffer[..len]) else {
                panic!("not a response");
            };
            return items[2].clone();
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0, "connection closed");
        buffer.extend_from_slice(&chunk[..n]);
    }
}

pub fn str_value(s: &str) -> rmpv::Value {
    rmpv::Value::from(s)
}

/// Bytes as lowercase hex: how tests hand MessagePack to the reference
/// programs (Python, Node) they compare with, and read their answers.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes `text`, lowercase hex, spells.
pub fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex digits"))
        .collect()
}
