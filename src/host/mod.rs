//! The host in one value: [`Serving`] brings up the admin endpoint, TLS
//! and signatures, the handlers with their outbound clients, the message
//! port and reloads from a [`Config`], and serves until told to stop. The
//! binary's `serve` and the tests both run it, so a test exercises the real
//! path; `cli` only parses flags and calls it.

mod security;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, anyhow};
use tokio::task::JoinSet;

use crate::admin::{AdminListener, Readiness};
use crate::config::Config;
use crate::keyvalue::{READY_CHECK_INTERVAL, Stores};
use crate::reload::{ReloadOptions, Reloader};
use crate::runtime::{HandlerRegistry, HandlerSet, Runtime, RuntimeOptions};
use crate::server::{Security, Server};
use crate::telemetry::Metrics;

pub(crate) use security::server_security;
use security::spiffe_listener;

/// Loads every handler of `config` without serving them: what `check`
/// does.
pub(crate) async fn check_handlers(
    path: &Path,
    config: Config,
) -> anyhow::Result<(Config, HandlerSet)> {
    let (config, _, handlers) = load_handlers(path, config, None).await?;
    Ok((config, handlers))
}

/// Loads every handler of an already loaded config, the part serving and
/// `check` share. Serving opens the stores and counts outbound requests
/// and store operations in `metrics`; `check` (no metrics) only inspects
/// the stores, writing nothing.
async fn load_handlers(
    path: &Path,
    config: Config,
    metrics: Option<&Metrics>,
) -> anyhow::Result<(Config, Runtime, HandlerSet)> {
    let mut options = RuntimeOptions::for_config(&config);
    if let Some(metrics) = metrics {
        options.outbound_metrics = metrics.outbound().clone();
    }
    let stores = config.stores.clone();
    let store_metrics = metrics.map(|m| m.stores().clone());
    let named = path.display().to_string();
    // On a blocking thread: stores read their files, and an upstream over
    // the SPIFFE Workload API waits for its first SVID.
    let runtime = tokio::task::spawn_blocking(move || {
        let stores = match store_metrics {
            Some(metrics) => Stores::open(&stores, metrics),
            None => Stores::inspect(&stores),
        };
        options.stores = Arc::new(stores.map_err(|e| anyhow!("{named}: {e}"))?);
        Runtime::new(options)
            .map_err(|e| anyhow!("{named}: cannot start the handler runtime: {e:#}"))
    })
    .await??;
    let handlers = HandlerSet::load(&runtime, &config, &Config::base_dir(path), None)
        .await
        .with_context(|| format!("{}", path.display()))?;
    Ok((config, runtime, handlers))
}

/// Keeps `/readyz` at 503 while a Redis store does not answer, so a load
/// balancer sends new work to replicas that can keep state.
fn watch_stores(stores: Arc<Stores>, readiness: Arc<Readiness>, tasks: &mut JoinSet<()>) {
    tasks.spawn(async move {
        let mut was = None;
        loop {
            let now = stores.unreachable().await;
            if now != was {
                match &now {
                    Some(why) => {
                        tracing::warn!(reason = %why, "not ready: a store cannot be reached");
                        readiness.hold("stores", why.clone());
                    }
                    None => {
                        tracing::info!("ready: every store answers again");
                        readiness.release("stores");
                    }
                }
                was = now;
            }
            tokio::time::sleep(READY_CHECK_INTERVAL).await;
        }
    });
}

/// Where a served config came from, which reloads follow.
pub struct Origin<'a> {
    /// The config file: watched, read again when it changes or on SIGHUP,
    /// named in errors, and where relative paths and builds start.
    pub path: &'a Path,
    /// The file's config as read, before any command-line override: what a
    /// reload compares with.
    pub as_read: Config,
    /// `--watch`: rebuild a handler when its `sources` change.
    pub watch: bool,
}

/// The whole host, up and bound in the current tokio runtime: admin
/// endpoint, TLS and signatures, handlers, the message port and reloads.
/// The binary and the tests both serve through it, so a test exercises
/// the real path; [`Serving::run`] serves until a stop future completes.
pub struct Serving {
    server: Server,
    addr: SocketAddr,
    admin: Option<SocketAddr>,
    metrics: Arc<Metrics>,
    /// The admin endpoint and SPIFFE rotation, and the reloader's tasks:
    /// aborted when these drop, once serving has stopped or when a
    /// `Serving` is dropped unrun.
    _background: JoinSet<()>,
    _reloads: JoinSet<()>,
}

impl Serving {
    /// Brings the host up from `config` (the config in force) and binds its
    /// ports; messages wait in the listener's backlog until [`Serving::run`].
    /// The admin endpoint, reloads and SPIFFE rotation run as tasks of the
    /// current runtime from here on, until serving stops.
    pub async fn start(config: Config, origin: Origin<'_>) -> anyhow::Result<Serving> {
        let metrics = Arc::new(Metrics::new());
        let readiness = Arc::new(Readiness::default());
        // Filled as tasks start, so a failure further on stops those begun.
        let mut background = JoinSet::new();
        // Up before handlers load, so /healthz answers and /readyz says why not.
        let admin = match config.admin.listen {
            Some(addr) => {
                let admin = AdminListener::bind(addr, metrics.clone(), readiness.clone())
                    .await
                    .with_context(|| format!("cannot listen on {addr} (admin)"))?;
                let bound = admin.local_addr()?;
                tracing::info!(admin = %bound, "admin endpoint up: /metrics /healthz /readyz");
                admin.spawn(&mut background);
                Some(bound)
            }
            None => None,
        };
        // Certificates, keys and secrets first: compiling handlers takes longer.
        let named = origin.path.display().to_string();
        let (tls, auth) = server_security(&config, &named)?;
        let tls = match tls {
            Some(files) => Some(files),
            None => spiffe_listener(&config, &named).await?,
        };
        tracing::info!(
            tls = tls.is_some(),
            identity = tls.as_ref().map(|tls| tls.identity()),
            client_certificates = config.tls.as_ref().is_some_and(|t| t.verifies_clients()),
            signed = auth.is_some(),
            replay_protection = auth.is_some() && config.auth.replay_protection,
            "security"
        );
        let (config, runtime, handlers) =
            load_handlers(origin.path, config, Some(&metrics)).await?;
        if runtime.stores().has_remote() {
            watch_stores(runtime.stores().clone(), readiness.clone(), &mut background);
        }
        metrics.handlers_served(&handlers);
        let registry = Arc::new(HandlerRegistry::new(handlers));
        runtime.serve_locally(&registry);
        let tls = tls.map(Arc::new);
        let security = Security {
            tls: tls.clone(),
            auth,
        };
        let server = Server::bind(&config.server, registry.clone(), security, metrics.clone())
            .await
            .with_context(|| format!("cannot listen on {}", config.server.listen))?;
        if let Some(tls) = &tls {
            tls.follow_spiffe(metrics.clone(), readiness, &mut background);
        }
        // Changes are watched from before the first message is served.
        let reloads = Reloader::spawn(ReloadOptions {
            runtime,
            registry,
            config_path: origin.path,
            config: origin.as_read,
            tls,
            build_on_change: origin.watch,
            metrics: metrics.clone(),
        })
        .context("cannot watch handler modules and the config for changes")?;
        let addr = server.local_addr()?;
        let default_handler = config.default_handler().unwrap_or("-");
        tracing::info!(addr = %addr, default_handler = %default_handler, "listening");
        Ok(Serving {
            server,
            addr,
            admin,
            metrics,
            _background: background,
            _reloads: reloads,
        })
    }

    /// The message port's address (its port, when the config said port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The admin endpoint's address, when the config has one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin
    }

    /// The metrics `/metrics` shows.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Serves until `stop` completes, then drains: new messages are refused
    /// as not run, owed replies are written, and connections close within
    /// `shutdown_grace`. The background tasks stop with it.
    pub async fn run(self, stop: impl Future<Output = ()>) {
        self.server.run(stop).await;
        tracing::info!("stopped");
    }
}
