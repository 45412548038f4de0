//! The servers a run measures, each started as its own process, optionally
//! pinned to one CPU with `taskset` so it cannot borrow the load
//! generator's core.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use arrpc_host::config::{
    AuthConfig, Config, HandlerConfig, OutboundHost, SecretSource, ServerConfig, StoreConfig,
    TlsConfig, UpstreamConfig,
};

use crate::tls::SelfSigned;

/// `--message`'s values, shared with the wire and codec crates' benches.
#[path = "../../wire/benches/support/messages.rs"]
mod messages;

/// A server process under test; killed on drop.
pub struct Target {
    child: Child,
    pub addr: SocketAddr,
    _workdir: Option<tempfile::TempDir>,
}

impl Target {
    /// Resident and peak resident memory of the server process, in KiB
    /// (`VmRSS`, `VmHWM` from `/proc`).
    pub fn memory_kib(&self) -> anyhow::Result<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .with_context(|| format!("no {name} in /proc status"))
        };
        Ok((field("VmRSS:")?, field("VmHWM:")?))
    }

    /// CPU time the server process has used, user and system, all its
    /// threads (`utime` + `stime` from `/proc/<pid>/stat`, in Linux's
    /// fixed 100 ticks a second).
    pub fn cpu_time(&self) -> anyhow::Result<Duration> {
        let path = format!("/proc/{}/stat", self.child.id());
        cpu_time(&std::fs::read_to_string(path)?)
    }
}

/// `utime` + `stime` of a `/proc/<pid>/stat` line.
fn cpu_time(stat: &str) -> anyhow::Result<Duration> {
    // The command name, in parentheses, may hold spaces and parentheses:
    // count from after its last `)`, where the state (field 3) comes first.
    let (_, after) = stat.rsplit_once(')').context("no command in /proc stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |field: usize| -> anyhow::Result<u64> {
        let text = fields.get(field - 3).context("a short /proc stat")?;
        text.parse()
            .with_context(|| format!("field {field} of /proc stat"))
    };
    Ok(Duration::from_millis((ticks(14)? + ticks(15)?) * 10))
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn command(program: &Path, cpu: Option<usize>) -> Command {
    match cpu {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(cpu.to_string()).arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// Starts a process that logs `listening addr=ADDR` on stderr and waits
/// for that line.
fn spawn_logging(mut cmd: Command, workdir: Option<tempfile::TempDir>) -> anyhow::Result<Target> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    let stderr = child.stderr.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // What it said before listening, to tell why when it never does.
        let mut said = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(at) = line.find("listening addr=") {
                let addr = line[at + "listening addr=".len()..]
                    .split_whitespace()
                    .next()
                    .map(str::to_owned);
                let _ = tx.send(addr.ok_or_else(|| line.clone()));
                said.clear();
            } else if said.len() < 20 {
                said.push(line);
            }
        }
        let _ = tx.send(Err(said.join("\n")));
    });
    match rx.recv_timeout(Duration::from_secs(300)) {
        Ok(Ok(addr)) => Ok(Target {
            child,
            addr: addr.parse()?,
            _workdir: workdir,
        }),
        Ok(Err(said)) => {
            let _ = child.kill();
            bail!("{cmd:?} did not start listening:\n{said}")
        }
        Err(_) => {
            let _ = child.kill();
            bail!("{cmd:?} did not start listening within 300 s")
        }
    }
}

/// The native echo ceiling: this same binary's `ceiling` subcommand,
/// serving TLS with `tls`'s certificate when given.
pub fn ceiling(cpu: Option<usize>, tls: Option<&SelfSigned>) -> anyhow::Result<Target> {
    let mut cmd = command(&std::env::current_exe()?, cpu);
    cmd.args(["ceiling", "--listen", "127.0.0.1:0"]);
    if let Some(tls) = tls {
        cmd.arg("--tls-cert").arg(&tls.cert);
        cmd.arg("--tls-key").arg(&tls.key);
    }
    spawn_logging(cmd, None)
}

/// The secret of the signed variant.
pub const BENCH_SECRET: &[u8] = b"arrpc-bench-secret";

/// How the host under test serves the echo component.
#[derive(Clone, Copy)]
pub enum HostVariant<'a> {
    /// A fresh instance per message (the default).
    Fresh,
    /// `reuse = 10000`: instances serve many messages.
    Reuse,
    /// Messages are HMAC-signed envelopes, verified before the handler.
    Signed,
    /// TLS with this certificate; a fresh instance per message.
    Tls(&'a SelfSigned),
    /// This many handlers (all the echo component) and default settings.
    Handlers(usize),
}

/// Messages one instance serves in the reusing variants.
pub const REUSE: u32 = 10_000;

/// `arrpc-host` serving the echo component as `variant` says.
pub fn host(
    host_bin: &Path,
    echo_wasm: &Path,
    cpu: Option<usize>,
    variant: HostVariant<'_>,
    cache_dir: Option<&Path>,
) -> anyhow::Result<Target> {
    host_on("127.0.0.1:0", host_bin, echo_wasm, cpu, variant, cache_dir)
}

/// [`host`] listening on `listen`: replicas share a port on 127.0.0.1, .2, .3.
pub fn host_on(
    listen: &str,
    host_bin: &Path,
    echo_wasm: &Path,
    cpu: Option<usize>,
    variant: HostVariant<'_>,
    cache_dir: Option<&Path>,
) -> anyhow::Result<Target> {
    let (dir, config) = write_config(&host_config(echo_wasm, variant))?;
    let mut cmd = command(host_bin, cpu);
    cmd.arg("--config")
        .arg(&config)
        .args(["--listen", listen])
        .env("RUST_LOG", "info")
        .env(
            "ARRPC_BENCH_SECRET",
            String::from_utf8_lossy(BENCH_SECRET).as_ref(),
        );
    if let Some(cache) = cache_dir {
        cmd.env("XDG_CACHE_HOME", cache);
    }
    spawn_logging(cmd, Some(dir))
}

/// A config serving `handler` alone, its server sized for the largest
/// load point.
fn sized(handler: HandlerConfig) -> Config {
    Config {
        server: ServerConfig {
            max_connections: 4096,
            max_pipelined: 64,
            ..ServerConfig::default()
        },
        handlers: vec![handler],
        ..Config::default()
    }
}

/// The config for `variant`, sized for the largest load point.
fn host_config(echo_wasm: &Path, variant: HostVariant<'_>) -> Config {
    let echo = HandlerConfig {
        max_instances: 4096,
        ..HandlerConfig::new("echo", echo_wasm)
    };
    match variant {
        HostVariant::Fresh => sized(echo),
        HostVariant::Reuse => sized(HandlerConfig {
            reuse: REUSE,
            ..echo
        }),
        HostVariant::Signed => Config {
            auth: AuthConfig {
                secrets: vec![SecretSource::Env("ARRPC_BENCH_SECRET".into())],
                ..AuthConfig::default()
            },
            ..sized(echo)
        },
        HostVariant::Tls(tls) => Config {
            tls: Some(TlsConfig::new(tls.cert.clone(), tls.key.clone())),
            ..sized(echo)
        },
        HostVariant::Handlers(count) => Config {
            server: ServerConfig {
                default_handler: Some("h0".into()),
                max_connections: 4096,
                ..ServerConfig::default()
            },
            handlers: (0..count)
                .map(|i| HandlerConfig::new(format!("h{i}"), echo_wasm))
                .collect(),
            ..Config::default()
        },
    }
}

/// Writes `config` into a new temporary folder, as the file a spawned host
/// reads; the folder lives as long as the target.
fn write_config(config: &Config) -> anyhow::Result<(tempfile::TempDir, PathBuf)> {
    config.validate().map_err(anyhow::Error::msg)?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("arrpc.toml");
    std::fs::write(&path, minimal_toml(config)?)?;
    Ok((dir, path))
}

/// `config` as TOML with only the keys whose values differ from their
/// defaults, as a user writes it: a baseline build from before a key was
/// added reads it too.
fn minimal_toml(config: &Config) -> anyhow::Result<String> {
    let mut value = toml::Value::try_from(config)?;
    prune_defaults(&mut value, &toml::Value::try_from(Config::default())?);
    if let Some(handlers) = value.get_mut("handler").and_then(toml::Value::as_array_mut) {
        // Against a handler of another name and module: those two are
        // always written.
        let default = toml::Value::try_from(HandlerConfig::new("", ""))?;
        for written in handlers {
            prune_defaults(written, &default);
        }
    }
    // Likewise against TLS with other files.
    if let Some(tls) = value.get_mut("tls") {
        prune_defaults(
            tls,
            &toml::Value::try_from(TlsConfig::new(PathBuf::new(), PathBuf::new()))?,
        );
    }
    Ok(toml::to_string(&value)?)
}

/// Removes from the tables in `value` every key whose value is the one
/// `default` holds.
fn prune_defaults(value: &mut toml::Value, default: &toml::Value) {
    let (Some(table), Some(default)) = (value.as_table_mut(), default.as_table()) else {
        return;
    };
    table.retain(|key, value| match default.get(key) {
        Some(default) if default == value => false,
        Some(default) => {
            prune_defaults(value, default);
            true
        }
        None => true,
    });
}

/// What a handler does with a message, in the Python arrpc server and in
/// the language examples alike (their served name's suffix picks it).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// The message back: as bytes in the examples, as `lambda m: m` in the
    /// Python arrpc server.
    Echo,
    /// The message back as objects: decoded, returned, encoded.
    Identity,
    Sum,
}

/// What the language targets send (`--message`).
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum Message {
    /// Echo sends `--payload` bytes of bin, sum 10 floats.
    Sized,
    /// An array of 1,000 integers from 1,000 to 61,939, each a uint 16:
    /// 3,003 bytes.
    Ints,
    /// A record: a map of 20 keys holding strings, integers, floats and a
    /// list of 10 maps of 4 keys (1,008 bytes). Every float has a fraction,
    /// so JavaScript gives it back as a float.
    Record,
}

impl Message {
    /// The message's values, for the kinds that are not `--payload` sized.
    fn value(self) -> Option<rmpv::Value> {
        match self {
            Message::Sized => None,
            Message::Ints => Some(messages::ints()),
            Message::Record => Some(messages::record()),
        }
    }
}

impl Operation {
    /// Whether this operation can run on `message`: sum takes an array.
    pub fn takes(self, message: Message) -> anyhow::Result<()> {
        anyhow::ensure!(
            !(self == Operation::Sum && message == Message::Record),
            "sum takes an array of numbers: use --message ints or sized"
        );
        Ok(())
    }

    /// The message a load point sends and the reply it must get. With
    /// `--message sized`, sum adds [`SUM_TERMS`] floats whose total has a
    /// fraction, so every server encodes it as the same float 64 (an
    /// integral total may come back as an integer from one and a float
    /// from another).
    /// A message the operation [`takes`](Operation::takes).
    pub fn exchange(self, payload: usize, message: Message) -> crate::load::Exchange {
        use crate::load::{Exchange, Reply};
        match (self, message.value()) {
            (Operation::Echo | Operation::Identity, None) => Exchange::plain(payload),
            (Operation::Echo | Operation::Identity, Some(value)) => {
                let request = messages::pack(&value);
                Exchange {
                    reply: Reply::Exactly(request.clone()),
                    request,
                }
            }
            (Operation::Sum, None) => {
                let terms: Vec<f64> = (0..SUM_TERMS).map(|i| i as f64 + 0.25).collect();
                let mut request = vec![0x90 | SUM_TERMS as u8];
                for t in &terms {
                    request.push(0xcb);
                    request.extend(t.to_be_bytes());
                }
                let mut reply = vec![0x82, 0xa3];
                reply.extend(b"sum");
                reply.push(0xcb);
                reply.extend(terms.iter().sum::<f64>().to_be_bytes());
                reply.push(0xa5);
                reply.extend(b"count");
                reply.push(SUM_TERMS as u8);
                Exchange {
                    request,
                    reply: Reply::Exactly(reply),
                }
            }
            (Operation::Sum, Some(value)) => {
                let rmpv::Value::Array(items) = value else {
                    unreachable!("Operation::takes refuses sum of a record")
                };
                let total: u64 = items.iter().filter_map(rmpv::Value::as_u64).sum();
                let reply = rmpv::Value::Map(vec![
                    ("sum".into(), total.into()),
                    ("count".into(), items.len().into()),
                ]);
                Exchange {
                    request: messages::pack(&rmpv::Value::Array(items)),
                    reply: Reply::Exactly(messages::pack(&reply)),
                }
            }
        }
    }
}

/// Numbers in a sum message: a fixarray, and a fixint count in the reply.
const SUM_TERMS: usize = 10;

/// The Python arrpc package's `arrpc.Server` with a plain-Python handler:
/// `lambda m: m` for echo and identity, and for sum the very functions of
/// the Python example (`sum_numbers` and its helpers, taken from
/// `handlers/python-example/app.py` with `ast`), checks included.
pub fn python_arrpc(
    python: &Path,
    repo: &Path,
    cpu: Option<usize>,
    op: Operation,
) -> anyhow::Result<Target> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let handler = match op {
        Operation::Echo | Operation::Identity => "lambda m: m",
        Operation::Sum => "lambda m: sum_numbers(m, None)",
    };
    let app = repo.join("handlers/python-example/app.py");
    let script = format!(
        "import arrpc, ast, logging\n\
         from functools import reduce\n\
         from operator import add\n\
         logging.disable(logging.INFO)\n\
         Error = ValueError\n\
         app = {app:?}\n\
         wanted = {{'sum_numbers', 'first_not_a_number', 'numbers', 'kind', 'EXPECTED'}}\n\
         names = lambda node: [getattr(t, 'id', None) for t in getattr(node, 'targets', [])] + [getattr(node, 'name', None)]\n\
         body = [n for n in ast.parse(open(app).read()).body if wanted & set(names(n))]\n\
         exec(compile(ast.Module(body, []), app, 'exec'))\n\
         arrpc.Server('127.0.0.1', {port}, {handler}).start()\n",
        app = app.display().to_string(),
    );
    let mut child = command(python, cpu)
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", python.display()))?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).is_err() {
        if Instant::now() > deadline || child.try_wait()?.is_some() {
            let _ = child.kill();
            bail!(
                "the Python arrpc server did not start (is arrpc==0.5.0 installed for {}?)",
                python.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(Target {
        child,
        addr,
        _workdir: None,
    })
}

/// A guest language whose example component (`handlers/LANG-example`,
/// echo and sum in one) the language targets serve.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Example {
    Python,
    Js,
}

impl Example {
    fn folder(self) -> &'static str {
        match self {
            Example::Python => "python-example",
            Example::Js => "js-example",
        }
    }

    /// The example's component, built with its `build.sh` when missing
    /// (that needs the language's toolchain, from
    /// `handlers/install-toolchains.sh`).
    pub fn component(self, repo: &Path) -> anyhow::Result<PathBuf> {
        let dir = repo.join("handlers").join(self.folder());
        let wasm = dir.join(format!("{}.wasm", self.folder()));
        if !wasm.exists() {
            let status = Command::new("sh").arg(dir.join("build.sh")).status()?;
            if !status.success() || !wasm.exists() {
                bail!(
                    "{} failed (install the toolchain with sh handlers/install-toolchains.sh)",
                    dir.join("build.sh").display()
                );
            }
        }
        Ok(wasm)
    }
}

/// `arrpc-host` serving `wasm` as the one handler `name` with `reuse`
/// and everything else left at its default, as a user's entry would.
pub fn example_host(
    host_bin: &Path,
    wasm: &Path,
    name: &str,
    reuse: u32,
    cpu: Option<usize>,
) -> anyhow::Result<Target> {
    let config = sized(HandlerConfig {
        reuse,
        ..HandlerConfig::new(name, wasm)
    });
    serve(host_bin, &config, cpu)
}

/// The echo component, built with `handlers/build.sh` when missing.
pub fn echo_component(repo: &Path) -> anyhow::Result<PathBuf> {
    handler_component(repo, "echo")
}

/// The Rust handler component `name`, built with `handlers/build.sh` when
/// missing.
pub fn handler_component(repo: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let wasm = repo.join(format!("handlers/target/wasm32-wasip2/release/{name}.wasm"));
    if !wasm.exists() {
        let status = Command::new("sh")
            .arg(repo.join("handlers/build.sh"))
            .arg(name)
            .status()?;
        if !status.success() {
            bail!("handlers/build.sh {name} failed");
        }
    }
    Ok(wasm)
}

/// `arrpc-host` serving the `forward` component, which sends each message
/// on to the echo host at `upstream` (its `[[upstream]]` `next`), each
/// instance serving `reuse` messages.
pub fn forwarding_host(
    host_bin: &Path,
    forward_wasm: &Path,
    upstream: SocketAddr,
    reuse: u32,
    cpu: Option<usize>,
) -> anyhow::Result<Target> {
    let config = Config {
        upstreams: vec![UpstreamConfig::remote("next", upstream.to_string())],
        ..sized(HandlerConfig {
            max_instances: 4096,
            reuse,
            upstreams: vec!["next".into()],
            ..HandlerConfig::new("forward", forward_wasm)
        })
    };
    serve(host_bin, &config, cpu)
}

/// `arrpc-host` serving the `net` component, allowed plain HTTP to `web`.
pub fn fetching_host(
    host_bin: &Path,
    net_wasm: &Path,
    web: SocketAddr,
    cpu: Option<usize>,
) -> anyhow::Result<Target> {
    let allowed = OutboundHost::try_from(format!("http://{web}")).map_err(anyhow::Error::msg)?;
    let config = sized(HandlerConfig {
        max_instances: 4096,
        allowed_outbound_hosts: vec![allowed],
        ..HandlerConfig::new("net", net_wasm)
    });
    serve(host_bin, &config, cpu)
}

/// `arrpc-host` serving the `state` component with `store`, which it may
/// open, a fresh instance per message.
pub fn store_host(
    host_bin: &Path,
    state_wasm: &Path,
    store: StoreConfig,
    cpu: Option<usize>,
) -> anyhow::Result<Target> {
    let config = Config {
        stores: vec![store.clone()],
        ..sized(HandlerConfig {
            max_instances: 4096,
            stores: vec![store.name],
            ..HandlerConfig::new("state", state_wasm)
        })
    };
    serve(host_bin, &config, cpu)
}

/// `arrpc-host` serving `config` on an ephemeral port.
fn serve(host_bin: &Path, config: &Config, cpu: Option<usize>) -> anyhow::Result<Target> {
    let (dir, path) = write_config(config)?;
    let mut cmd = command(host_bin, cpu);
    cmd.arg("--config")
        .arg(&path)
        .args(["--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info");
    spawn_logging(cmd, Some(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_reads_utime_and_stime_past_any_command_name() {
        let line = "4242 (arrpc (x) host) S 1 4242 4242 0 -1 4194560 900 0 0 0 \
                    250 50 0 0 20 0 3 0 100 0 0";
        assert_eq!(cpu_time(line).unwrap(), Duration::from_secs(3));
        assert!(cpu_time("4242 (cut) S 1 2").is_err());
        let own = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert!(cpu_time(&own).is_ok(), "{own}");
    }

    /// Each variant's config is one the host accepts, and reads back from
    /// its file as built, with no key left at its default written.
    #[test]
    fn every_variant_writes_a_config_the_host_reads_back() {
        let tls = SelfSigned::generate().unwrap();
        let echo = Path::new("/bench/echo.wasm");
        let variants = [
            HostVariant::Fresh,
            HostVariant::Reuse,
            HostVariant::Signed,
            HostVariant::Tls(&tls),
            HostVariant::Handlers(3),
        ];
        for (i, variant) in variants.into_iter().enumerate() {
            let config = host_config(echo, variant);
            let (_dir, path) = write_config(&config).unwrap();
            let text = std::fs::read_to_string(&path).unwrap();
            assert_eq!(toml::from_str::<Config>(&text).unwrap(), config);
            let loaded = Config::load(&path).unwrap();
            assert_eq!(loaded.handlers[0].module, echo);
            let keys = match i {
                1 => "reuse = 10000",
                2 => "env = \"ARRPC_BENCH_SECRET\"",
                3 => "[tls]",
                4 => "name = \"h2\"",
                _ => "max_instances = 4096",
            };
            assert!(text.contains(keys), "{keys} not in\n{text}");
            // Only what differs from the defaults, so older builds read it.
            for default in ["idle_timeout", "handshake_timeout", "max_memory_mib"] {
                assert!(!text.contains(default), "{default} in\n{text}");
            }
        }
    }
}
