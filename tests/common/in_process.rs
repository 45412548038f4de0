//! A host served inside the test process, through the same entry the
//! binary's `serve` runs (`Serving`), on a tokio runtime of its own. Its
//! address is known once it is bound, so nothing waits on a log line; a
//! test that needs the host's log, signals, exit status or command line
//! uses the spawned [`Host`](super::Host) instead.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use arrpc_host::config::{Config, HandlerConfig, ServerConfig};
use arrpc_host::host::{Origin, Serving};
use arrpc_host::telemetry::Metrics;
use tokio::sync::oneshot;

use super::admin::Scrape;
use super::{
    Serves, TestConfig, components, handler_config, misbehave_config, serving, wait_until,
    write_config_value,
};

/// A host running in this process; stopped on drop, which returns once
/// its connections have drained.
pub struct InProcessHost {
    pub addr: SocketAddr,
    /// The config file it serves, which reloads follow as the binary's do.
    pub config: TestConfig,
    /// What its `/metrics` shows: how a test sees a guest running or a
    /// connection closed without reading a log.
    metrics: Arc<Metrics>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl InProcessHost {
    /// Serves `config` on an ephemeral loopback port, with the compile cache
    /// the spawned hosts use. The config is written to a file first and
    /// read back as the binary reads it, so reloads see what is served.
    pub fn start(config: Config) -> InProcessHost {
        let (file, config) = in_process_config(config);
        let (started, ready) = std::sync::mpsc::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let path = file.path.clone();
        let thread = std::thread::Builder::new()
            .name("in-process host".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("a tokio runtime");
                runtime.block_on(async move {
                    let origin = Origin {
                        path: &path,
                        as_read: config.clone(),
                        watch: false,
                    };
                    let serving = match Serving::start(config, origin).await {
                        Ok(serving) => serving,
                        Err(e) => {
                            let _ = started.send(Err(format!("{e:#}")));
                            return;
                        }
                    };
                    let _ = started.send(Ok((serving.local_addr(), serving.metrics().clone())));
                    serving
                        .run(async {
                            let _ = stopped.await;
                        })
                        .await;
                });
            })
            .expect("starting the host's thread");
        let (addr, metrics) = match ready.recv() {
            Ok(Ok(up)) => up,
            Ok(Err(e)) => panic!("the host did not start: {e}"),
            Err(_) => panic!("the host's thread ended before it was listening"),
        };
        InProcessHost {
            addr,
            config: file,
            metrics,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

/// `config` as an in-process host serves it: on an ephemeral loopback
/// port, with the compile cache the spawned hosts use, written to a file
/// and read back as the binary reads it.
pub fn in_process_config(mut config: Config) -> (TestConfig, Config) {
    components();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config
        .server
        .cache_dir
        .get_or_insert_with(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("arrpc-host"));
    let file = write_config_value(&config);
    let config = Config::load(&file.path).unwrap_or_else(|e| panic!("{e}"));
    (file, config)
}

impl InProcessHost {
    /// The host's metrics now, as `/metrics` shows them.
    pub fn scrape(&self) -> Scrape {
        Scrape::parse(&self.metrics.encode())
    }

    /// The sample `metric` with `labels` now, as [`Scrape::value`] reads
    /// it.
    pub fn metric(&self, metric: &str, labels: &[(&str, &str)]) -> f64 {
        self.scrape().value(metric, labels)
    }

    /// Waits (at most a minute) until the sample `metric` with `labels`
    /// reads `want`, e.g. `arrpc_messages_in_flight` once every message
    /// sent is running.
    pub fn wait_for_metric(&self, metric: &str, labels: &[(&str, &str)], want: f64) {
        wait_until(
            format!("{metric} {labels:?} reading {want}"),
            Duration::from_secs(60),
            || self.scrape().try_value(metric, labels) == Some(want),
        );
    }

    /// Waits until `count` messages are running in handlers.
    pub fn wait_for_in_flight(&self, count: usize) {
        self.wait_for_metric("arrpc_messages_in_flight", &[], count as f64);
    }
}

impl Serves for InProcessHost {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for InProcessHost {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A host in process serving the `misbehave` handler, as `settings`
/// changes it, as the default handler.
pub fn misbehave_host(settings: impl FnOnce(HandlerConfig) -> HandlerConfig) -> InProcessHost {
    InProcessHost::start(misbehave_config(settings))
}

/// A host in process serving `echo`, with `server` as its `[server]`.
pub fn echo_host(server: ServerConfig) -> InProcessHost {
    let mut config = serving(vec![handler_config("echo", "echo")]);
    config.server = server;
    InProcessHost::start(config)
}
