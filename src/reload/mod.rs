//! Hot swap: new handler modules and config changes take effect while the
//! host serves, without failing a request.
//!
//! Changes arrive from a file watcher (module files, the config, the TLS
//! files, and under `--watch` each handler's `sources`), from SIGHUP, and
//! for the TLS files from a periodic check that catches what the watcher
//! missed. The config and the TLS files are watched through the folders
//! they are named in and compared by content, so the kubelet's swap of a
//! mounted ConfigMap or Secret (`..data` renamed over) is seen. Every change is
//! compiled and pre-instantiated here, off the request path, and only a
//! version that loaded completely is published; a module that does not
//! compile (a broken build, a half-written copy) leaves the working version
//! serving until the next good write. Under `--watch` a build runs only
//! when the sources' content differs from what the last build started
//! from, so a failed build waits for the next edit.

mod sources;
mod watch;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use sha2::{Digest, Sha256};

use crate::config::{Config, HandlerConfig};
use crate::runtime::{HandlerRegistry, HandlerSet, Runtime, RuntimeOptions};
use crate::server::tls::{Reloaded, TlsListener};
use crate::telemetry::Metrics;
use sources::Snapshot;
use watch::{FileWatcher, canonical, canonical_folder};

/// How long the files must be quiet before a burst of writes is acted on.
const QUIET: Duration = Duration::from_millis(300);

/// What asked for a reload.
enum Trigger {
    Changed(Vec<PathBuf>),
    Hangup,
    /// Time to read the TLS files again, changed or not.
    RecheckTls,
}

/// Applies changes to the running host's handler set.
pub struct Reloader {
    runtime: Runtime,
    registry: Arc<HandlerRegistry>,
    config_path: PathBuf,
    base_dir: PathBuf,
    /// The config now in force.
    config: Config,
    /// SHA-256 of the config file as last loaded or refused, so that only
    /// a change of content reloads it.
    config_digest: Option<[u8; 32]>,
    /// The message port's certificate, key and client CA, when it serves
    /// TLS, and the folders they are named in.
    tls: Option<(Arc<TlsListener>, Vec<PathBuf>)>,
    /// The engine was built for this at start (pool size, fuel metering);
    /// a config that needs more requires a restart.
    engine: RuntimeOptions,
    /// Also watch sources and run build commands (`--watch`).
    build_on_change: bool,
    watcher: FileWatcher,
    /// Under `--watch`, by handler name: its sources when its last build
    /// started, or when watching began.
    built_from: HashMap<String, Snapshot>,
    /// Counts swaps and keeps the handler info series current.
    metrics: Arc<Metrics>,
}

/// What a [`Reloader`] watches, and what it applies changes to.
pub struct ReloadOptions<'a> {
    /// The engine the handlers were loaded into.
    pub runtime: Runtime,
    /// The handlers being served, swapped on a change.
    pub registry: Arc<HandlerRegistry>,
    /// The config file, watched.
    pub config_path: &'a Path,
    /// The config as read from it, before command-line overrides.
    pub config: Config,
    /// The message port's TLS, whose files are watched and re-read.
    pub tls: Option<Arc<TlsListener>>,
    /// Also watch sources and run build commands (`--watch`).
    pub build_on_change: bool,
    pub metrics: Arc<Metrics>,
}

impl Reloader {
    /// Starts watching and reloading in the background, in the tasks it
    /// returns: they stop when those are dropped.
    pub fn spawn(options: ReloadOptions<'_>) -> anyhow::Result<JoinSet<()>> {
        let ReloadOptions {
            runtime,
            registry,
            config_path,
            config,
            tls,
            build_on_change,
            metrics,
        } = options;
        let mut tasks = JoinSet::new();
        let (paths_tx, mut paths_rx) = mpsc::unbounded_channel();
        let (tx, rx) = mpsc::unbounded_channel();
        let forward = tx.clone();
        tasks.spawn(async move {
            while let Some(paths) = paths_rx.recv().await {
                if forward.send(Trigger::Changed(paths)).is_err() {
                    break;
                }
            }
        });
        if let Some(tls) = &tls {
            let recheck = tx.clone();
            let mut every = tokio::time::interval(tls.recheck_interval());
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tasks.spawn(async move {
                // The first tick is at once: the files were just read.
                every.tick().await;
                loop {
                    every.tick().await;
                    if recheck.send(Trigger::RecheckTls).is_err() {
                        break;
                    }
                }
            });
        }
        #[cfg(unix)]
        {
            let mut hangup =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
            tasks.spawn(async move {
                while hangup.recv().await.is_some() {
                    if tx.send(Trigger::Hangup).is_err() {
                        break;
                    }
                }
            });
        }
        let mut reloader = Reloader {
            runtime,
            registry,
            config_path: canonical(config_path),
            base_dir: Config::base_dir(config_path),
            engine: RuntimeOptions::for_config(&config),
            config,
            config_digest: file_digest(config_path),
            tls: tls.map(|tls| {
                let folders = tls.folders().iter().map(|f| canonical_folder(f)).collect();
                (tls, folders)
            }),
            build_on_change,
            watcher: FileWatcher::new(paths_tx, QUIET)?,
            built_from: HashMap::new(),
            metrics,
        };
        reloader.watcher.watch_file(&reloader.config_path.clone())?;
        let files = reloader.tls.iter().flat_map(|(tls, _)| tls.files());
        warn_if_frozen([config_path].into_iter().chain(files));
        if let Some((tls, folders)) = &reloader.tls {
            for folder in folders {
                reloader.watcher.watch_folder(folder)?;
            }
            reloader.metrics.certificates_served(
                tls.certificates()
                    .iter()
                    .map(|c| (c.role, c.subject.as_str(), c.not_after)),
            );
        }
        reloader.remember_sources();
        reloader.watch_handlers()?;
        tasks.spawn(reloader.run(rx));
        Ok(tasks)
    }

    async fn run(mut self, mut triggers: mpsc::UnboundedReceiver<Trigger>) {
        while let Some(trigger) = triggers.recv().await {
            match trigger {
                Trigger::Hangup => {
                    tracing::info!("SIGHUP: reloading config");
                    self.reload_tls();
                    self.reload_config().await;
                }
                Trigger::RecheckTls => self.reload_tls(),
                Trigger::Changed(paths) => {
                    if self.touches_tls(&paths) {
                        self.reload_tls();
                    }
                    if self.config_edited(&paths) {
                        tracing::info!(config = %self.config_path.display(), "config changed: reloading");
                        // Reloading the config loads every changed module too.
                        self.reload_config().await;
                        continue;
                    }
                    for handler in self.config.handlers.clone() {
                        let module = canonical(&handler.module);
                        if self.build_on_change
                            && touches_sources(&handler, &module, &paths)
                            && self.sources_edited(&handler).await
                        {
                            self.rebuild(&handler).await;
                        } else if paths.contains(&module) {
                            self.swap_module(&handler).await;
                        }
                    }
                }
            }
        }
    }

    /// Whether any of `paths` lies in a folder the TLS files are named in.
    fn touches_tls(&self, paths: &[PathBuf]) -> bool {
        self.tls.as_ref().is_some_and(|(_, folders)| {
            paths
                .iter()
                .any(|p| p.parent().is_some_and(|f| folders.iter().any(|t| t == f)))
        })
    }

    /// Whether `paths` touch the config's folder and the file's content
    /// differs from what was last loaded or refused. The kubelet's swap of a
    /// ConfigMap names only `..data`, never the file, so any change in the
    /// folder is checked.
    fn config_edited(&self, paths: &[PathBuf]) -> bool {
        let folder = self.config_path.parent();
        paths.iter().any(|p| p.parent() == folder)
            && file_digest(&self.config_path) != self.config_digest
    }

    /// Reads the TLS files again; new handshakes get them if they changed
    /// and load, and the current ones serve on if they do not.
    fn reload_tls(&self) {
        let Some((tls, _)) = &self.tls else {
            return;
        };
        match tls.reload() {
            Ok(Reloaded::Unchanged) => tracing::debug!("TLS files unchanged"),
            Ok(Reloaded::Replaced(leaf)) => {
                self.metrics.tls_reload(true);
                self.metrics.certificates_served(
                    tls.certificates()
                        .iter()
                        .map(|c| (c.role, c.subject.as_str(), c.not_after)),
                );
                tracing::info!(identity = %leaf, "TLS files reloaded: new handshakes get them");
            }
            Err(e) => {
                self.metrics.tls_reload(false);
                tracing::error!(error = %e, "TLS files changed but not loaded; still serving the previous ones");
            }
        }
    }

    fn watch_handlers(&mut self) -> anyhow::Result<()> {
        for handler in &self.config.handlers {
            self.watcher.watch_file(&handler.module)?;
            if self.build_on_change {
                for source in &handler.sources {
                    self.watcher.watch_source(source)?;
                }
            }
        }
        Ok(())
    }

    /// Under `--watch`, records the sources of handlers not yet recorded
    /// and forgets handlers no longer configured. Runs before their sources
    /// are watched, so that an edit made after it arrives as an event, and
    /// on this thread, as it runs at start (before listening) or after a
    /// config change, not per event.
    fn remember_sources(&mut self) {
        if !self.build_on_change {
            return;
        }
        let handlers = &self.config.handlers;
        self.built_from
            .retain(|name, _| handlers.iter().any(|h| &h.name == name));
        for handler in &self.config.handlers {
            if !self.built_from.contains_key(&handler.name) {
                let now = Snapshot::take(&handler.sources, &handler.module, None);
                self.built_from.insert(handler.name.clone(), now);
            }
        }
    }

    /// Whether `config`'s sources differ from what its last build started
    /// from. Either way, what they hold now is what the next build is
    /// compared against.
    async fn sources_edited(&mut self, config: &HandlerConfig) -> bool {
        let earlier = self.built_from.get(&config.name);
        let Some(now) = read_sources(config, earlier).await else {
            return true;
        };
        let edited = earlier.is_none_or(|earlier| !earlier.same_contents(&now));
        if !edited {
            tracing::debug!(handler = %config.name, "sources unchanged since the last build: not building");
        }
        self.built_from.insert(config.name.clone(), now);
        edited
    }

    /// Compiles a changed module and, if it loads, swaps it in.
    async fn swap_module(&self, config: &HandlerConfig) {
        let Some(current) = self.registry.get(&config.name) else {
            return;
        };
        if !config.module.exists() {
            tracing::warn!(handler = %config.name, module = %config.module.display(),
                "module file removed; still serving sha256 {}", current.sha256());
            return;
        }
        let started = Instant::now();
        match self.runtime.reload(config, &self.base_dir, &current).await {
            Ok(None) => tracing::debug!(handler = %config.name, "module unchanged"),
            Ok(Some(next)) => {
                let next = Arc::new(next);
                let new_sha256 = next.sha256().to_owned();
                let old = self.registry.swap_handler(next);
                self.swapped();
                tracing::info!(
                    handler = %config.name,
                    old_sha256 = old.as_ref().map_or("-", |h| h.sha256()),
                    new_sha256 = %new_sha256,
                    compile_ms = started.elapsed().as_millis() as u64,
                    "swapped handler"
                );
            }
            Err(e) => {
                self.metrics.swap(false);
                tracing::error!(
                    handler = %config.name,
                    error = %e,
                    "module change not applied; still serving sha256 {}",
                    current.sha256()
                )
            }
        }
    }

    /// Runs the handler's build command, then swaps in what it produced.
    async fn rebuild(&self, config: &HandlerConfig) {
        let Some(command) = &config.build else {
            tracing::warn!(handler = %config.name, "sources changed but no `build` command is configured");
            return;
        };
        tracing::info!(handler = %config.name, command = %command, "sources changed: building");
        match crate::runtime::run_build(config, &self.base_dir).await {
            Ok(()) => self.swap_module(config).await,
            Err(e) => {
                self.metrics.swap(false);
                tracing::error!(handler = %config.name, error = %e, "build failed; still serving the last good version")
            }
        }
    }

    /// Counts an applied swap and publishes the modules now served.
    fn swapped(&self) {
        self.metrics.swap(true);
        self.metrics.handlers_served(&self.registry.snapshot());
    }

    /// Whether the engine built at start can serve `next`.
    fn fits_engine(&self, next: &Config) -> Result<(), String> {
        let have = &self.engine;
        let need = RuntimeOptions::for_config(next);
        if !have.pool.fits(&next.handlers) {
            return Err(format!(
                "its handlers' max_instances add up to more than the {} instances the pool was sized for at start",
                have.pool.instances
            ));
        }
        if need.consume_fuel && !have.consume_fuel {
            return Err("a handler now sets `fuel`, but fuel metering was off at start".into());
        }
        Ok(())
    }

    /// Loads the config again and applies it whole, or not at all.
    async fn reload_config(&mut self) {
        self.config_digest = file_digest(&self.config_path);
        let next = match Config::load(&self.config_path) {
            Ok(next) => next,
            Err(e) => {
                self.metrics.swap(false);
                tracing::error!(error = %e, "config reload refused; nothing changed");
                return;
            }
        };
        for section in restart_required(&self.config, &next) {
            tracing::warn!("{section} changed: this takes effect only after a restart");
        }
        let verifies = self
            .tls
            .as_ref()
            .is_some_and(|(tls, _)| tls.verifies_client_certificates());
        if let Err(why) = next.check_access(verifies) {
            self.metrics.swap(false);
            tracing::error!("config reload refused; nothing changed: {why}");
            return;
        }
        if let Err(why) = self.fits_engine(&next) {
            self.metrics.swap(false);
            tracing::error!("config reload refused; nothing changed: {why}; restart to apply");
            return;
        }
        let current = self.registry.snapshot();
        let set = match HandlerSet::load(&self.runtime, &next, &self.base_dir, Some(&current)).await
        {
            Ok(set) => set,
            Err(e) => {
                self.metrics.swap(false);
                tracing::error!(error = %e, "config reload refused; nothing changed");
                return;
            }
        };
        for handler in set.iter() {
            match current.get(handler.name()) {
                None => tracing::info!(
                    handler = handler.name(),
                    sha256 = handler.sha256(),
                    "handler added"
                ),
                Some(old) if !Arc::ptr_eq(old, handler) => tracing::info!(
                    handler = handler.name(),
                    old_sha256 = old.sha256(),
                    new_sha256 = handler.sha256(),
                    "handler replaced"
                ),
                Some(_) => {}
            }
        }
        for old in current.iter().filter(|old| set.get(old.name()).is_none()) {
            tracing::info!(handler = old.name(), "handler removed");
        }
        self.registry.replace(set);
        self.swapped();
        // [server] stays as started, but for the default handler, which the
        // new set already applies.
        let server = crate::config::ServerConfig {
            default_handler: next.server.default_handler.clone(),
            ..self.config.server.clone()
        };
        self.config = Config { server, ..next };
        self.remember_sources();
        if let Err(e) = self.watch_handlers() {
            tracing::warn!(error = %e, "cannot watch a new handler's files");
        }
        tracing::info!(handlers = self.config.handlers.len(), "config reloaded");
    }
}

/// Sections that differ between `old` and `new` and are read only at start.
fn restart_required(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut sections = Vec::new();
    if old.server.listen != new.server.listen {
        sections.push("server.listen");
    }
    let settings = |c: &Config| crate::config::ServerConfig {
        listen: c.server.listen,
        default_handler: None,
        ..c.server.clone()
    };
    if settings(old) != settings(new) {
        sections.push("[server] settings other than default_handler");
    }
    if old.tls != new.tls {
        sections.push("[tls]");
    }
    if old.auth != new.auth {
        sections.push("[auth]");
    }
    if old.admin != new.admin {
        sections.push("[admin]");
    }
    if old.telemetry != new.telemetry {
        sections.push("[telemetry]");
    }
    if old.outbound != new.outbound {
        sections.push("[outbound]");
    }
    if old.upstreams != new.upstreams {
        sections.push("[[upstream]]");
    }
    if old.stores != new.stores {
        sections.push("[[store]]");
    }
    sections
}

/// On Kubernetes, warns of each of `files` that the kubelet will never
/// update: a file mounted with `subPath` is a plain copy made at pod start,
/// so a rotated certificate or changed ConfigMap would never arrive.
fn warn_if_frozen<'a>(files: impl IntoIterator<Item = &'a Path>) {
    if std::env::var_os("KUBERNETES_SERVICE_HOST").is_none() {
        return;
    }
    for file in files {
        if !arrpc_wire::pem::kubelet_managed(file) {
            tracing::warn!(
                file = %file.display(),
                "not in a folder the kubelet manages (a subPath mount?): changes to its Secret or ConfigMap will never reach it; mount the volume as a folder"
            );
        }
    }
}

/// SHA-256 of a file's content; `None` when it cannot be read.
fn file_digest(path: &Path) -> Option<[u8; 32]> {
    std::fs::read(path)
        .ok()
        .map(|bytes| Sha256::digest(bytes).into())
}

/// Whether any of `paths` lies in the handler's sources; its `module`
/// does not count, even when built among them.
fn touches_sources(handler: &HandlerConfig, module: &Path, paths: &[PathBuf]) -> bool {
    handler.sources.iter().map(|s| canonical(s)).any(|source| {
        paths
            .iter()
            .any(|p| p.starts_with(&source) && p.as_path() != module)
    })
}

/// Snapshots the handler's sources on a blocking thread, as hashing file
/// contents is file I/O; `None` only when the runtime is shutting down.
async fn read_sources(config: &HandlerConfig, earlier: Option<&Snapshot>) -> Option<Snapshot> {
    let (sources, module) = (config.sources.clone(), config.module.clone());
    let earlier = earlier.cloned();
    tokio::task::spawn_blocking(move || Snapshot::take(&sources, &module, earlier.as_ref()))
        .await
        .inspect_err(
            |e| tracing::warn!(handler = %config.name, error = %e, "cannot read the sources"),
        )
        .ok()
}
