//! `arrpc.toml`: one typed struct, read and validated before anything starts.
//!
//! Unknown keys are refused, and every error names the file and the key (or
//! handler) at fault, so an operator learns of a bad config at start, not
//! from the first request.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod access;
pub mod defaults;
mod outbound;
mod security;
mod store;
mod upstream;
pub use access::{AccessConfig, Allowed};
pub use outbound::{HostPattern, OutboundConfig, OutboundHost, OutboundScheme, Target};
pub use security::{AuthConfig, ClientCertificates, SecretSource, SpiffeConfig, TlsConfig};
pub use store::{DEFAULT_STORE, StoreBackend, StoreConfig, StoreTls};
pub use upstream::{UpstreamConfig, UpstreamTls};

/// A config file that cannot be used, with the reason.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct ConfigError {
    pub path: PathBuf,
    pub message: String,
}

/// The whole of `arrpc.toml`. Read from a file with [`Config::load`], or
/// built in Rust (from `Config::default()` and [`HandlerConfig::new`]) and
/// checked with [`Config::prepare`]; written back as TOML with
/// `toml::to_string`. Every section's defaults are its `Default`, which
/// serde fills left-out keys from too.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    /// `[[handler]]` tables, in file order.
    #[serde(rename = "handler")]
    pub handlers: Vec<HandlerConfig>,
    /// `[auth]`: message signatures.
    pub auth: AuthConfig,
    /// `[tls]`: absent means plain TCP.
    pub tls: Option<TlsConfig>,
    /// `[access]`: who may call handlers that list nobody themselves.
    pub access: AccessConfig,
    pub admin: AdminConfig,
    pub telemetry: TelemetryConfig,
    /// `[outbound]`: how handlers' allowed HTTP requests are made.
    pub outbound: OutboundConfig,
    /// `[[upstream]]` tables: the arrpc services handlers may call.
    #[serde(rename = "upstream", skip_serializing_if = "Vec::is_empty")]
    pub upstreams: Vec<UpstreamConfig>,
    /// `[[store]]` tables: the key-value stores handlers may open.
    #[serde(rename = "store", skip_serializing_if = "Vec::is_empty")]
    pub stores: Vec<StoreConfig>,
}

/// `[admin]`: the HTTP listener for `/metrics`, `/healthz` and `/readyz`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Address of the admin listener; no admin listener when left out.
    pub listen: Option<SocketAddr>,
}

/// `[telemetry]`: OpenTelemetry trace export. The standard `OTEL_*`
/// environment variables apply too; these keys win over them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Base URL of an OTLP/HTTP collector, e.g. `http://127.0.0.1:4318`
    /// (plain HTTP: a collector on the host or a sidecar);
    /// spans go to `<otlp_endpoint>/v1/traces`. Setting it turns tracing on.
    pub otlp_endpoint: Option<String>,
    /// Extra HTTP headers sent with every export (e.g. an API key).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// `service.name` of the exported spans; default `arrpc-host`, or
    /// `OTEL_SERVICE_NAME` when set.
    pub service_name: Option<String>,
    /// Fraction of new traces recorded, 0.0 to 1.0; a trace the caller
    /// started follows the caller's sampling decision. Default: all.
    pub sample_ratio: Option<f64>,
}

/// `[server]`: the message listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address the message port listens on.
    pub listen: SocketAddr,
    /// Handler that receives bare messages (the Python arrpc package's form).
    /// May be left out when exactly one handler is configured.
    pub default_handler: Option<String>,
    /// Largest message accepted, in bytes; a larger one is answered with an
    /// error and its connection closed.
    pub max_message_bytes: usize,
    /// A connection with no message for this long is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Connections served at once; further ones wait in the accept queue.
    pub max_connections: usize,
    /// Messages read from one connection ahead of their replies.
    pub max_pipelined: usize,
    /// On shutdown, how long messages in flight may take to finish.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Close a connection after about this long (give or take 10%), between
    /// replies, so balancing clients spread onto replicas added since.
    #[serde(with = "humantime_serde")]
    pub max_connection_age: Option<Duration>,
    /// Whether messages shaped like MessagePack-RPC requests and
    /// notifications are routed by method; when off, every message is bare.
    pub rpc: bool,
    /// Whether compiled components are kept on disk across restarts.
    pub compile_cache: bool,
    /// Where compiled components are kept; relative paths start at the
    /// config's folder. Default: `$XDG_CACHE_HOME/arrpc-host` (or
    /// `~/.cache/arrpc-host`).
    pub cache_dir: Option<PathBuf>,
    /// MiB the compile cache may take; the least recently used entries go
    /// first.
    pub cache_max_mib: u64,
    /// Write `/tmp/perf-<pid>.map` as handlers load, so `perf report` names
    /// the functions of their compiled code instead of bare addresses.
    pub perf_map: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: defaults::LISTEN,
            default_handler: None,
            max_message_bytes: defaults::MAX_MESSAGE_BYTES,
            idle_timeout: defaults::IDLE_TIMEOUT,
            max_connections: defaults::MAX_CONNECTIONS,
            max_pipelined: defaults::MAX_PIPELINED,
            shutdown_grace: defaults::SHUTDOWN_GRACE,
            max_connection_age: None,
            rpc: true,
            compile_cache: true,
            cache_dir: None,
            cache_max_mib: defaults::CACHE_MAX_MIB,
            perf_map: false,
        }
    }
}

impl ServerConfig {
    /// Checks this section on its own; whether `default_handler` names a
    /// handler is [`Config::validate`]'s to say.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_message_bytes == 0 {
            return Err("server.max_message_bytes must be at least 1".into());
        }
        if self.max_connections == 0 {
            return Err("server.max_connections must be at least 1".into());
        }
        if self.max_pipelined == 0 {
            return Err("server.max_pipelined must be at least 1".into());
        }
        if self.cache_max_mib == 0 {
            return Err(
                "server.cache_max_mib must be at least 1; set compile_cache = false for no cache"
                    .into(),
            );
        }
        if self.idle_timeout.is_zero() {
            return Err("server.idle_timeout must be longer than zero".into());
        }
        if self.max_connection_age.is_some_and(|age| age.is_zero()) {
            return Err("server.max_connection_age must be longer than zero".into());
        }
        Ok(())
    }
}

/// One `[[handler]]`: a WebAssembly component served under a name.
///
/// `name` and `module` must be given; every other key has the default
/// [`HandlerConfig::new`] gives it, which serde fills left-out keys from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandlerConfig {
    pub name: String,
    /// Path of the component; relative paths start at the config's folder.
    pub module: PathBuf,
    /// Shell command that produces `module` when it is missing, run in the
    /// config's folder.
    #[serde(default = "handler_defaults::build")]
    pub build: Option<String>,
    /// Files or folders whose changes rerun `build` under `--watch`;
    /// relative paths start at the config's folder.
    #[serde(
        default = "handler_defaults::sources",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub sources: Vec<PathBuf>,
    /// Linear memory one instance may grow to, in MiB.
    #[serde(default = "handler_defaults::max_memory_mib")]
    pub max_memory_mib: u32,
    /// Wall-clock time one message may take.
    #[serde(default = "handler_defaults::timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Instances of this handler running at once; further messages get a
    /// "busy" error rather than queueing without bound.
    #[serde(default = "handler_defaults::max_instances")]
    pub max_instances: u32,
    /// Fuel one message may burn (about one unit per WebAssembly
    /// instruction); unset means no fuel metering for this handler.
    #[serde(default = "handler_defaults::fuel")]
    pub fuel: Option<u64>,
    /// Environment variables the guest sees; none by default.
    #[serde(
        default = "handler_defaults::env",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub env: BTreeMap<String, String>,
    /// Host directories the guest may open; none by default.
    #[serde(
        default = "handler_defaults::dirs",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub dirs: Vec<DirGrant>,
    /// Bytes of stdout, and of stderr, one message may log; the rest is
    /// dropped with a notice.
    #[serde(default = "handler_defaults::max_output_bytes")]
    pub max_output_bytes: usize,
    /// Messages one instance may serve, one at a time, before it is
    /// replaced (also after a trap or a timeout). 0 or 1: a fresh instance
    /// per message, the default. Higher is faster but lets a message see
    /// what earlier ones left in memory: for trusted handlers only.
    #[serde(default = "handler_defaults::reuse")]
    pub reuse: u32,
    /// Who may call this handler, by the identity their client certificate
    /// proves; unset: `[access] default_allow`, filled in at load.
    #[serde(default = "handler_defaults::allow")]
    pub allow: Option<Vec<Allowed>>,
    /// Where the guest may connect: `http://`, `https://` and `tcp://`
    /// entries (see docs/outbound.md); none by default.
    #[serde(
        default = "handler_defaults::allowed_outbound_hosts",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub allowed_outbound_hosts: Vec<OutboundHost>,
    /// The `[[upstream]]` services the guest may call, by name; none by
    /// default.
    #[serde(
        default = "handler_defaults::upstreams",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub upstreams: Vec<String>,
    /// The `[[store]]` stores the guest may open, by name; none by default.
    /// `default` needs no `[[store]]`: it is embedded, beside the config.
    #[serde(
        default = "handler_defaults::stores",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub stores: Vec<String>,
}

/// Each of [`HandlerConfig`]'s defaults, read by serde one key at a time.
/// `name` and `module` have no default, so the struct has no `Default` for
/// serde to fill from; these functions take one value each from
/// [`HandlerConfig::new`], which takes them from [`defaults`].
mod handler_defaults {
    use super::*;

    fn of<T>(key: impl FnOnce(HandlerConfig) -> T) -> T {
        key(HandlerConfig::new("", ""))
    }
    pub fn build() -> Option<String> {
        of(|h| h.build)
    }
    pub fn sources() -> Vec<PathBuf> {
        of(|h| h.sources)
    }
    pub fn max_memory_mib() -> u32 {
        of(|h| h.max_memory_mib)
    }
    pub fn timeout() -> Duration {
        of(|h| h.timeout)
    }
    pub fn max_instances() -> u32 {
        of(|h| h.max_instances)
    }
    pub fn fuel() -> Option<u64> {
        of(|h| h.fuel)
    }
    pub fn env() -> BTreeMap<String, String> {
        of(|h| h.env)
    }
    pub fn dirs() -> Vec<DirGrant> {
        of(|h| h.dirs)
    }
    pub fn max_output_bytes() -> usize {
        of(|h| h.max_output_bytes)
    }
    pub fn reuse() -> u32 {
        of(|h| h.reuse)
    }
    pub fn allow() -> Option<Vec<Allowed>> {
        of(|h| h.allow)
    }
    pub fn allowed_outbound_hosts() -> Vec<OutboundHost> {
        of(|h| h.allowed_outbound_hosts)
    }
    pub fn upstreams() -> Vec<String> {
        of(|h| h.upstreams)
    }
    pub fn stores() -> Vec<String> {
        of(|h| h.stores)
    }
}

impl HandlerConfig {
    /// Serves the component at `module` under `name`, every other key at
    /// its default: 64 MiB, a 5 s timeout, 100 instances, no fuel limit, no
    /// environment or directories, 64 KiB of output, a fresh instance per
    /// message, `[access] default_allow`.
    pub fn new(name: impl Into<String>, module: impl Into<PathBuf>) -> HandlerConfig {
        HandlerConfig {
            name: name.into(),
            module: module.into(),
            build: None,
            sources: Vec::new(),
            max_memory_mib: defaults::MAX_MEMORY_MIB,
            timeout: defaults::TIMEOUT,
            max_instances: defaults::MAX_INSTANCES,
            fuel: None,
            env: BTreeMap::new(),
            dirs: Vec::new(),
            max_output_bytes: defaults::MAX_OUTPUT_BYTES,
            reuse: 0,
            allow: None,
            allowed_outbound_hosts: Vec::new(),
            upstreams: Vec::new(),
            stores: Vec::new(),
        }
    }

    /// Checks this handler on its own. Errors name the key;
    /// [`Config::validate`] puts which handler in front.
    pub fn validate(&self) -> Result<(), String> {
        check_name(&self.name)?;
        if self.module.as_os_str().is_empty() {
            return Err("module is empty".into());
        }
        if self.build.as_deref().is_some_and(|b| b.trim().is_empty()) {
            return Err("build is empty; leave it out instead".into());
        }
        if !(1..=MAX_MEMORY_MIB).contains(&self.max_memory_mib) {
            return Err(format!(
                "max_memory_mib must be between 1 and {MAX_MEMORY_MIB}"
            ));
        }
        if self.timeout.is_zero() || self.timeout > Duration::from_secs(3600) {
            return Err("timeout must be between 1ms and 1h".into());
        }
        if !(1..=MAX_INSTANCES).contains(&self.max_instances) {
            return Err(format!(
                "max_instances must be between 1 and {MAX_INSTANCES}"
            ));
        }
        if self.reuse > MAX_REUSE {
            return Err(format!("reuse must be at most {MAX_REUSE}"));
        }
        if self.fuel == Some(0) {
            return Err("fuel must be at least 1; leave it out for no limit".into());
        }
        if let Some(key) = self
            .env
            .keys()
            .find(|k| k.is_empty() || k.contains(['=', '\0']))
        {
            return Err(format!(
                "env name {key:?} must be non-empty, without '=' or NUL"
            ));
        }
        if let Some(value) = self.env.values().find(|v| v.contains('\0')) {
            return Err(format!("env value {value:?} contains NUL"));
        }
        for (j, grant) in self.dirs.iter().enumerate() {
            if grant.host.as_os_str().is_empty() || grant.guest.is_empty() {
                return Err(format!("dirs[{j}] needs a non-empty host and guest"));
            }
        }
        for entry in self.allow.iter().flatten() {
            entry.validate().map_err(|e| format!("allow: {e}"))?;
        }
        for entry in &self.allowed_outbound_hosts {
            entry
                .validate()
                .map_err(|e| format!("allowed_outbound_hosts: {e}"))?;
        }
        Ok(())
    }
}

/// Makes each of `paths` that is set absolute against `base`, the
/// config file's folder.
fn rebase<'a>(base: &Path, paths: impl IntoIterator<Item = &'a mut Option<PathBuf>>) {
    for path in paths.into_iter().flatten() {
        *path = base.join(&*path);
    }
}

/// Checks a handler's or upstream's `name`: what a client or a handler
/// calls it by, so plain ASCII.
fn check_name(name: &str) -> Result<(), String> {
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if name.is_empty() || !name.chars().all(plain) {
        return Err("name must be non-empty ASCII letters, digits, '-', '_' or '.'".into());
    }
    Ok(())
}

/// A host directory preopened for a handler's guest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirGrant {
    /// The directory on the host; relative paths start at the config's folder.
    pub host: PathBuf,
    /// Where the guest sees it, e.g. `/data`.
    pub guest: String,
    /// Whether the guest may create, change and delete files in it.
    #[serde(default)]
    pub writable: bool,
}

/// Upper bounds that keep the pooling allocator's reservations sane.
pub const MAX_MEMORY_MIB: u32 = 4096;
const MAX_REUSE: u32 = 1_000_000;
/// Handler instances one host pools at most, across all handlers; so also
/// the most one handler's `max_instances`, and their sum, may be.
pub const MAX_INSTANCES: u32 = 10_000;

impl Config {
    /// Reads, parses and validates `path`; relative paths are made absolute
    /// against the config's folder.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let error = |message: String| ConfigError {
            path: path.to_owned(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| error(format!("cannot read: {e}")))?;
        let config: Config = toml::from_str(&text)
            .map_err(|e| error(outbound::explain(&text).unwrap_or_else(|| e.to_string())))?;
        config.prepare(&Config::base_dir(path)).map_err(error)
    }

    /// Validates a config and makes it ready to serve, as [`Config::load`]
    /// does a file's: relative paths are made absolute against `base` (the
    /// folder a config file would sit in), granted directories must exist,
    /// and handlers that list no callers get `[access] default_allow`.
    pub fn prepare(mut self, base: &Path) -> Result<Config, String> {
        self.validate()?;
        for handler in &mut self.handlers {
            handler.module = base.join(&handler.module);
            for source in &mut handler.sources {
                *source = base.join(&*source);
            }
            handler
                .allow
                .get_or_insert_with(|| self.access.default_allow.clone());
        }
        self.resolve_grants(base)?;
        if let Some(dir) = &mut self.server.cache_dir {
            *dir = base.join(&*dir);
        }
        self.auth.resolve(base);
        if let Some(tls) = &mut self.tls {
            tls.resolve(base);
        }
        if let Some(file) = &mut self.outbound.ca_file {
            *file = base.join(&*file);
        }
        for upstream in &mut self.upstreams {
            upstream.resolve(base);
        }
        let default_listed = self
            .handlers
            .iter()
            .any(|h| h.stores.iter().any(|s| s == DEFAULT_STORE));
        if default_listed && !self.stores.iter().any(|s| s.name == DEFAULT_STORE) {
            self.stores
                .push(StoreConfig::blank(DEFAULT_STORE.to_owned()));
        }
        for store in &mut self.stores {
            store.resolve(base);
        }
        Ok(self)
    }

    /// Whether the message port verifies client certificates, which every
    /// allow list but `anyone` needs to tell callers apart.
    pub fn verifies_client_certificates(&self) -> bool {
        self.tls.as_ref().is_some_and(TlsConfig::verifies_clients)
    }

    /// Refuses allow lists that name callers by certificate when `verifies`
    /// is false: no caller could ever match them. Checked once the command
    /// line has had its say, and on reload against the TLS in force.
    pub fn check_access(&self, verifies: bool) -> Result<(), String> {
        if verifies {
            return Ok(());
        }
        let lists = std::iter::once((
            "access.default_allow".to_owned(),
            &self.access.default_allow,
        ))
        .chain(self.handlers.iter().enumerate().filter_map(|(i, h)| {
            let list = h.allow.as_ref()?;
            Some((format!("handler #{} (`{}`): allow", i + 1, h.name), list))
        }));
        for (key, list) in lists {
            if let Some(entry) = list.iter().find(|e| e.needs_client_certificates()) {
                return Err(format!(
                    "{key} lists {entry:?}, but the message port verifies no client certificates: set tls.client_ca (or --tls-client-ca) or [tls.spiffe], or allow \"anyone\"",
                    entry = entry.to_string()
                ));
            }
        }
        Ok(())
    }

    /// The folder relative paths and build commands start from, given the
    /// config's own path.
    pub fn base_dir(path: &Path) -> PathBuf {
        let base = path.parent().filter(|p| !p.as_os_str().is_empty());
        std::path::absolute(base.unwrap_or(Path::new("."))).unwrap_or_else(|_| PathBuf::from("."))
    }

    /// The handler bare messages go to.
    pub fn default_handler(&self) -> Option<&str> {
        match (&self.server.default_handler, self.handlers.as_slice()) {
            (Some(name), _) => Some(name),
            (None, [only]) => Some(&only.name),
            _ => None,
        }
    }

    /// Makes granted directories absolute and checks that each exists, so a
    /// typo is found at start rather than at a handler's first message.
    fn resolve_grants(&mut self, base: &Path) -> Result<(), String> {
        for (i, h) in self.handlers.iter_mut().enumerate() {
            for (j, grant) in h.dirs.iter_mut().enumerate() {
                grant.host = base.join(&grant.host);
                if !grant.host.is_dir() {
                    return Err(format!(
                        "handler #{} (`{}`): dirs[{j}].host {} is not a directory",
                        i + 1,
                        h.name,
                        grant.host.display()
                    ));
                }
            }
        }
        Ok(())
    }

    /// Checks every section, then what no section can check alone: at least
    /// one handler, unique names, the instances all handlers pool, the
    /// default handler, and the admin port apart from the message port.
    /// Paths are not touched; [`Config::prepare`] resolves them.
    pub fn validate(&self) -> Result<(), String> {
        self.server.validate()?;
        if self.handlers.is_empty() {
            return Err("no [[handler]] is configured; at least one is needed".into());
        }
        self.auth.validate()?;
        self.access.validate()?;
        if let Some(tls) = &self.tls {
            tls.validate()?;
        }
        let mut names = HashSet::new();
        for (i, h) in self.handlers.iter().enumerate() {
            let at = format!("handler #{} (`{}`)", i + 1, h.name);
            h.validate().map_err(|e| format!("{at}: {e}"))?;
            if !names.insert(h.name.as_str()) {
                return Err(format!("{at}: name is used by an earlier handler"));
            }
        }
        let pooled: u64 = self
            .handlers
            .iter()
            .map(|h| u64::from(h.max_instances))
            .sum();
        if pooled > u64::from(MAX_INSTANCES) {
            return Err(format!(
                "the handlers' max_instances add up to {pooled}, more than the {MAX_INSTANCES} instances one host pools"
            ));
        }
        self.telemetry.validate()?;
        self.outbound.validate()?;
        self.validate_upstreams(&names)?;
        self.validate_stores()?;
        if let (Some(admin), listen) = (self.admin.listen, self.server.listen)
            && admin == listen
            && admin.port() != 0
        {
            return Err(format!(
                "admin.listen {admin} is the message port's address; it needs its own"
            ));
        }
        match (&self.server.default_handler, self.handlers.len()) {
            (Some(name), _) if !names.contains(name.as_str()) => Err(format!(
                "server.default_handler: no handler is named `{name}`"
            )),
            (None, n) if n > 1 => Err(
                "server.default_handler must name the handler for bare messages when several are configured"
                    .into(),
            ),
            _ => Ok(()),
        }
    }
}

impl Config {
    /// Each `[[upstream]]` on its own, unique names, local ones naming a
    /// handler, and every handler's `upstreams` naming one.
    fn validate_upstreams(&self, handlers: &HashSet<&str>) -> Result<(), String> {
        let mut names = HashSet::new();
        for (i, upstream) in self.upstreams.iter().enumerate() {
            let at = format!("upstream #{} (`{}`)", i + 1, upstream.name);
            upstream.validate().map_err(|e| format!("{at}: {e}"))?;
            if !names.insert(upstream.name.as_str()) {
                return Err(format!("{at}: name is used by an earlier upstream"));
            }
            if let Some(handler) = &upstream.handler
                && !handlers.contains(handler.as_str())
            {
                return Err(format!("{at}: handler: no handler is named `{handler}`"));
            }
        }
        for (i, handler) in self.handlers.iter().enumerate() {
            if let Some(unknown) = handler
                .upstreams
                .iter()
                .find(|u| !names.contains(u.as_str()))
            {
                return Err(format!(
                    "handler #{} (`{}`): upstreams: no [[upstream]] is named `{unknown}`",
                    i + 1,
                    handler.name
                ));
            }
        }
        Ok(())
    }
}

impl Config {
    /// Each `[[store]]` on its own, unique names and files, and every
    /// handler's `stores` naming one (or `default`).
    fn validate_stores(&self) -> Result<(), String> {
        let mut names = HashSet::new();
        let mut files = HashSet::new();
        for (i, store) in self.stores.iter().enumerate() {
            let at = format!("store #{} (`{}`)", i + 1, store.name);
            store.validate().map_err(|e| format!("{at}: {e}"))?;
            if !names.insert(store.name.as_str()) {
                return Err(format!("{at}: name is used by an earlier store"));
            }
            if let Some(path) = &store.path
                && !files.insert(path)
            {
                return Err(format!(
                    "{at}: path {} is an earlier store's file; two stores never share one",
                    path.display()
                ));
            }
        }
        for (i, handler) in self.handlers.iter().enumerate() {
            if let Some(unknown) = handler
                .stores
                .iter()
                .find(|s| *s != DEFAULT_STORE && !names.contains(s.as_str()))
            {
                return Err(format!(
                    "handler #{} (`{}`): stores: no [[store]] is named `{unknown}`",
                    i + 1,
                    handler.name
                ));
            }
        }
        Ok(())
    }
}

impl TelemetryConfig {
    /// Checks this section on its own.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(endpoint) = &self.otlp_endpoint
            && !endpoint.starts_with("http://")
        {
            return Err(format!(
                "telemetry.otlp_endpoint {endpoint:?} must be an http:// URL (TLS to the collector is not built in)"
            ));
        }
        if let Some(ratio) = self.sample_ratio
            && !(0.0..=1.0).contains(&ratio)
        {
            return Err("telemetry.sample_ratio must be between 0.0 and 1.0".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        let config: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        config.validate()?;
        Ok(config)
    }

    const ONE: &str = "[[handler]]\nname = \"echo\"\nmodule = \"echo.wasm\"\n";

    #[test]
    fn defaults_fill_what_is_left_out() {
        let config = parse(ONE).unwrap();
        assert_eq!(config.server.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(config.default_handler(), Some("echo"));
        assert_eq!(config.handlers[0].timeout, Duration::from_secs(5));
        assert_eq!(config.handlers[0].max_memory_mib, 64);
    }

    #[test]
    fn left_out_keys_take_the_rust_defaults() {
        fn empty<T: serde::de::DeserializeOwned>() -> T {
            toml::from_str("").unwrap()
        }
        assert_eq!(empty::<Config>(), Config::default());
        assert_eq!(empty::<ServerConfig>(), ServerConfig::default());
        assert_eq!(empty::<AuthConfig>(), AuthConfig::default());
        assert_eq!(empty::<TlsConfig>(), TlsConfig::default());
        assert_eq!(empty::<SpiffeConfig>(), SpiffeConfig::default());
        assert_eq!(empty::<AccessConfig>(), AccessConfig::default());
        assert_eq!(empty::<AdminConfig>(), AdminConfig::default());
        assert_eq!(empty::<TelemetryConfig>(), TelemetryConfig::default());
        let handler: HandlerConfig =
            toml::from_str("name = \"echo\"\nmodule = \"e.wasm\"").unwrap();
        assert_eq!(handler, HandlerConfig::new("echo", "e.wasm"));
        let missing = toml::from_str::<HandlerConfig>("name = \"echo\"").unwrap_err();
        assert!(
            missing.to_string().contains("missing field `module`"),
            "{missing}"
        );
        // Empty, a config lacks only a handler.
        let empty = Config::default().validate().unwrap_err();
        assert!(empty.contains("no [[handler]]"), "{empty}");
        let one = Config {
            handlers: vec![HandlerConfig::new("echo", "e.wasm")],
            ..Config::default()
        };
        one.validate().unwrap();
    }

    #[test]
    fn a_config_built_in_rust_is_checked_as_a_file_is() {
        let crowded = Config {
            handlers: vec![HandlerConfig {
                max_instances: 0,
                ..HandlerConfig::new("echo", "e.wasm")
            }],
            ..Config::default()
        };
        assert_eq!(
            crowded.validate().unwrap_err(),
            "handler #1 (`echo`): max_instances must be between 1 and 10000"
        );
        assert_eq!(
            crowded.handlers[0].validate().unwrap_err(),
            "max_instances must be between 1 and 10000"
        );
        let server = ServerConfig {
            max_pipelined: 0,
            ..ServerConfig::default()
        };
        assert_eq!(
            server.validate().unwrap_err(),
            "server.max_pipelined must be at least 1"
        );
        let tls = TlsConfig::default().validate().unwrap_err();
        assert!(tls.starts_with("tls.cert is missing"), "{tls}");

        // `prepare` resolves paths against the folder given, as `load`
        // does against the file's.
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("data")).unwrap();
        let config = Config {
            handlers: vec![HandlerConfig {
                dirs: vec![DirGrant {
                    host: "data".into(),
                    guest: "/data".into(),
                    writable: false,
                }],
                ..HandlerConfig::new("echo", "e.wasm")
            }],
            ..Config::default()
        }
        .prepare(dir.path())
        .unwrap();
        assert_eq!(config.handlers[0].module, dir.path().join("e.wasm"));
        assert_eq!(config.handlers[0].dirs[0].host, dir.path().join("data"));
        assert_eq!(config.handlers[0].allow, Some(vec![Allowed::Anyone]));
    }

    #[test]
    fn a_config_written_as_toml_reads_back_the_same() {
        let config = Config {
            server: ServerConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                default_handler: Some("echo".into()),
                idle_timeout: Duration::from_millis(1500),
                max_connection_age: Some(Duration::from_secs(90)),
                rpc: false,
                cache_dir: Some("/var/cache/arrpc".into()),
                ..ServerConfig::default()
            },
            handlers: vec![
                HandlerConfig {
                    build: Some("cargo component build".into()),
                    sources: vec!["src".into()],
                    timeout: Duration::from_millis(250),
                    fuel: Some(1_000_000),
                    env: BTreeMap::from([("MODE".into(), "test".into())]),
                    dirs: vec![DirGrant {
                        host: "/srv/data".into(),
                        guest: "/data".into(),
                        writable: true,
                    }],
                    reuse: 100,
                    allow: Some(vec![
                        Allowed::try_from("spiffe://td/ns/shop/*".to_owned()).unwrap(),
                        Allowed::try_from("dns:web.shop.svc".to_owned()).unwrap(),
                    ]),
                    allowed_outbound_hosts: ["https://*.shop.svc:8443", "tcp://[fd00::/8]:5432"]
                        .map(|t| OutboundHost::try_from(t.to_owned()).unwrap())
                        .to_vec(),
                    upstreams: vec!["prices".into(), "inner".into()],
                    stores: vec!["sessions".into(), "shared".into(), "default".into()],
                    ..HandlerConfig::new("echo", "/m/echo.wasm")
                },
                HandlerConfig::new("sum", "sum.wasm"),
            ],
            auth: AuthConfig {
                secrets: vec![
                    SecretSource::Env("A".into()),
                    SecretSource::File("s.key".into()),
                    SecretSource::Value("v".into()),
                ],
                replay_protection: true,
                ..AuthConfig::default()
            },
            tls: Some(TlsConfig {
                client_ca: Some("ca.pem".into()),
                client_certificates: ClientCertificates::Optional,
                ..TlsConfig::new("c.pem".into(), "k.pem".into())
            }),
            access: AccessConfig {
                default_allow: vec![Allowed::Authenticated],
            },
            admin: AdminConfig {
                listen: Some("127.0.0.1:9100".parse().unwrap()),
            },
            telemetry: TelemetryConfig {
                otlp_endpoint: Some("http://127.0.0.1:4318".into()),
                headers: BTreeMap::from([("x-key".into(), "k".into())]),
                service_name: Some("shop".into()),
                sample_ratio: Some(0.25),
            },
            outbound: OutboundConfig {
                ca_file: Some("ca.pem".into()),
                resolver: Some("127.0.0.1:53".parse().unwrap()),
                max_response_bytes: 1 << 20,
                pool_idle_timeout: Duration::from_secs(30),
            },
            upstreams: vec![
                UpstreamConfig {
                    secret: Some(SecretSource::Env("PRICES_SECRET".into())),
                    replay_protection: true,
                    tls: Some(UpstreamTls {
                        ca_file: Some("ca.pem".into()),
                        cert: Some("me.pem".into()),
                        key: Some("me.key".into()),
                        server_name: Some("prices.shop.svc".into()),
                        spiffe: None,
                    }),
                    timeout: Duration::from_millis(750),
                    ..UpstreamConfig::remote("prices", "dns://prices.shop.svc:7400")
                },
                UpstreamConfig::local("inner", "sum"),
            ],
            stores: vec![
                StoreConfig {
                    max_key_bytes: 64,
                    max_size_mib: 10,
                    ..StoreConfig::embedded("sessions", "data/sessions.redb")
                },
                StoreConfig {
                    timeout: Duration::from_millis(300),
                    tls: Some(StoreTls {
                        ca_file: Some("redis-ca.pem".into()),
                        cert: Some("me.pem".into()),
                        key: Some("me.key".into()),
                    }),
                    ..StoreConfig::redis("shared", SecretSource::Env("REDIS_URL".into()))
                },
            ],
        };
        config.validate().unwrap();
        let text = toml::to_string(&config).unwrap();
        assert!(text.contains("idle_timeout = \"1s 500ms\""), "{text}");
        assert_eq!(parse(&text).unwrap(), config);
        let spiffe = Config {
            tls: Some(TlsConfig {
                spiffe: Some(SpiffeConfig {
                    socket: Some("unix:///run/spire/agent.sock".into()),
                    ..SpiffeConfig::default()
                }),
                ..TlsConfig::default()
            }),
            ..config
        };
        assert_eq!(parse(&toml::to_string(&spiffe).unwrap()).unwrap(), spiffe);
    }

    #[test]
    fn durations_read_as_human_text() {
        let text = format!("[server]\nidle_timeout = \"90s\"\n{ONE}timeout = \"250ms\"\n");
        let config = parse(&text).unwrap();
        assert_eq!(config.server.idle_timeout, Duration::from_secs(90));
        assert_eq!(config.handlers[0].timeout, Duration::from_millis(250));
    }

    #[test]
    fn errors_name_the_key() {
        let unknown = parse(&format!("{ONE}colour = \"red\"\n")).unwrap_err();
        assert!(unknown.contains("unknown field `colour`"), "{unknown}");
        let bad_listen = parse(&format!("[server]\nlisten = \"nowhere\"\n{ONE}")).unwrap_err();
        assert!(bad_listen.contains("listen"), "{bad_listen}");
        let dup = parse(&format!("{ONE}{ONE}[server]\ndefault_handler = \"echo\"\n")).unwrap_err();
        assert!(dup.contains("handler #2 (`echo`)"), "{dup}");
        let missing = parse(&format!("[server]\ndefault_handler = \"nope\"\n{ONE}")).unwrap_err();
        assert!(missing.contains("server.default_handler"), "{missing}");
        let two = format!("{ONE}[[handler]]\nname = \"sum\"\nmodule = \"s.wasm\"\n");
        assert!(parse(&two).unwrap_err().contains("server.default_handler"));
        assert!(parse("").unwrap_err().contains("[[handler]]"));
        let mem = parse(&format!("{ONE}max_memory_mib = 0\n")).unwrap_err();
        assert!(mem.contains("max_memory_mib"), "{mem}");
        let fuel = parse(&format!("{ONE}fuel = 0\n")).unwrap_err();
        assert!(fuel.contains("fuel"), "{fuel}");
        // Each within bounds, together more than one host pools: refused at
        // load, not first at an unchanged reload.
        let big = |name: &str| {
            format!("[[handler]]\nname = \"{name}\"\nmodule = \"m.wasm\"\nmax_instances = 6000\n")
        };
        let pooled = parse(&format!(
            "[server]\ndefault_handler = \"a\"\n{}{}",
            big("a"),
            big("b")
        ))
        .unwrap_err();
        assert!(
            pooled.contains("max_instances add up to 12000, more than the 10000"),
            "{pooled}"
        );
        let env = parse(&format!("{ONE}env = {{ \"A=B\" = \"x\" }}\n")).unwrap_err();
        assert!(env.contains("env name"), "{env}");
        let dir = parse(&format!("{ONE}dirs = [{{ host = \"x\" }}]\n")).unwrap_err();
        assert!(dir.contains("guest"), "{dir}");
        let cache = parse(&format!("[server]\ncache_max_mib = 0\n{ONE}")).unwrap_err();
        assert!(cache.contains("server.cache_max_mib"), "{cache}");
    }

    #[test]
    fn store_errors_name_the_store_and_the_key() {
        let listed = |stores: &str| format!("{ONE}stores = [{stores}]\n");
        let unknown = parse(&listed("\"sessions\"")).unwrap_err();
        assert!(
            unknown.contains("handler #1 (`echo`): stores: no [[store]] is named `sessions`"),
            "{unknown}"
        );
        // `default` needs no [[store]].
        parse(&listed("\"default\"")).unwrap();
        let store = |body: &str| format!("{ONE}[[store]]\nname = \"s\"\n{body}");
        let both = parse(&store("path = \"s.redb\"\nredis = { env = \"R\" }\n")).unwrap_err();
        assert!(both.contains("store #1 (`s`): path and redis"), "{both}");
        let key = parse(&store("max_key_bytes = 0\n")).unwrap_err();
        assert!(key.contains("store #1 (`s`): max_key_bytes"), "{key}");
        let size = parse(&store("max_size_mib = 0\n")).unwrap_err();
        assert!(size.contains("max_size_mib"), "{size}");
        let name = parse(&store("")).map(drop);
        assert!(name.is_ok());
        let tls = parse(&store("[store.tls]\nca_file = \"ca.pem\"\n")).unwrap_err();
        assert!(
            tls.contains("store #1 (`s`): tls: only a Redis store"),
            "{tls}"
        );
        let half = parse(&store(
            "redis = { env = \"R\" }\n[store.tls]\ncert = \"me.pem\"\n",
        ))
        .unwrap_err();
        assert!(
            half.contains("store #1 (`s`): tls: cert and key go together"),
            "{half}"
        );
        let typo = parse(&store(
            "redis = { env = \"R\" }\n[store.tls]\nca = \"ca.pem\"\n",
        ))
        .unwrap_err();
        assert!(typo.contains("unknown field `ca`"), "{typo}");
        let colon = parse(&format!("{ONE}[[store]]\nname = \"a:b\"\n")).unwrap_err();
        assert!(colon.contains("store #1 (`a:b`): name"), "{colon}");
        let twice = parse(&format!(
            "{ONE}[[store]]\nname = \"a\"\npath = \"x.redb\"\n[[store]]\nname = \"b\"\npath = \"x.redb\"\n"
        ))
        .unwrap_err();
        assert!(
            twice.contains("store #2 (`b`): path x.redb is an earlier store's file"),
            "{twice}"
        );
    }

    #[test]
    fn stores_resolve_paths_and_default_is_made_when_listed() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            handlers: vec![HandlerConfig {
                stores: vec!["default".into(), "named".into()],
                ..HandlerConfig::new("echo", "e.wasm")
            }],
            stores: vec![
                StoreConfig::blank("named".into()),
                StoreConfig {
                    tls: Some(StoreTls {
                        ca_file: Some("ca.pem".into()),
                        cert: Some("tls/me.pem".into()),
                        key: Some("tls/me.key".into()),
                    }),
                    ..StoreConfig::redis("shared", SecretSource::Env("REDIS_URL".into()))
                },
            ],
            ..Config::default()
        }
        .prepare(dir.path())
        .unwrap();
        assert_eq!(
            config.stores[1].tls,
            Some(StoreTls {
                ca_file: Some(dir.path().join("ca.pem")),
                cert: Some(dir.path().join("tls/me.pem")),
                key: Some(dir.path().join("tls/me.key")),
            })
        );
        let paths: Vec<_> = config
            .stores
            .iter()
            .map(|s| (s.name.as_str(), s.path.clone()))
            .collect();
        assert_eq!(
            paths,
            [
                ("named", Some(dir.path().join(".arrpc/named.redb"))),
                ("shared", None),
                ("default", Some(dir.path().join(".arrpc/default.redb"))),
            ]
        );
    }

    #[test]
    fn security_sections_read_secret_sources_and_resolve_paths() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("arrpc.toml");
        let text = format!(
            "[auth]\nsecrets = [{{ env = \"A\" }}, {{ file = \"s.key\" }}, {{ value = \"v\" }}]\n\
             replay_protection = true\nreplay_window = \"5s\"\n\
             [tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n{ONE}"
        );
        std::fs::write(&path, text).unwrap();
        let config = Config::load(&path).unwrap();
        assert!(matches!(&config.auth.secrets[0], SecretSource::Env(n) if n == "A"));
        assert!(
            matches!(&config.auth.secrets[1], SecretSource::File(p) if *p == dir.path().join("s.key"))
        );
        assert_eq!(config.auth.replay_window, Duration::from_secs(5));
        let tls = config.tls.unwrap();
        assert_eq!(tls.key, Some(dir.path().join("k.pem")));
        assert_eq!(
            tls.handshake_timeout,
            TlsConfig::default().handshake_timeout
        );
        assert_eq!(tls.recheck_interval, Duration::from_secs(60));
        let never = parse(&format!(
            "[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\nrecheck_interval = \"0s\"\n{ONE}"
        ))
        .unwrap_err();
        assert!(never.contains("tls.recheck_interval"), "{never}");

        let bad = parse(&format!("[auth]\nsecrets = [{{ url = \"x\" }}]\n{ONE}")).unwrap_err();
        assert!(bad.contains("secrets"), "{bad}");
        let lonely = parse(&format!("[auth]\nreplay_protection = true\n{ONE}")).unwrap_err();
        assert!(lonely.contains("auth.replay_protection"), "{lonely}");
    }

    #[test]
    fn secret_sources_refuse_unset_empty_and_exposed_secrets() {
        let unset = SecretSource::Env("ARRPC_TEST_SURELY_UNSET".into()).read();
        assert!(unset.unwrap_err().contains("ARRPC_TEST_SURELY_UNSET"));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "s3cret\n").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
            let exposed = SecretSource::File(file.clone()).read().unwrap_err();
            assert!(exposed.contains("chmod 600"), "{exposed}");
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        assert_eq!(SecretSource::File(file).read().unwrap(), b"s3cret");
        assert!(SecretSource::Value(String::new()).read().is_err());
    }

    #[test]
    fn admin_and_telemetry_sections_are_optional_and_checked() {
        let config = parse(ONE).unwrap();
        assert_eq!(config.admin.listen, None);
        assert_eq!(config.telemetry.otlp_endpoint, None);
        let text = format!(
            "[admin]\nlisten = \"127.0.0.1:9100\"\n[telemetry]\notlp_endpoint = \"http://127.0.0.1:4318\"\nsample_ratio = 0.5\n{ONE}"
        );
        let config = parse(&text).unwrap();
        assert_eq!(config.admin.listen, Some("127.0.0.1:9100".parse().unwrap()));
        assert_eq!(config.telemetry.sample_ratio, Some(0.5));
        let ratio = parse(&format!("[telemetry]\nsample_ratio = 2.0\n{ONE}")).unwrap_err();
        assert!(ratio.contains("telemetry.sample_ratio"), "{ratio}");
        let url = parse(&format!(
            "[telemetry]\notlp_endpoint = \"https://c:4318\"\n{ONE}"
        ))
        .unwrap_err();
        assert!(url.contains("telemetry.otlp_endpoint"), "{url}");
        let same = parse(&format!(
            "[server]\nlisten = \"127.0.0.1:8080\"\n[admin]\nlisten = \"127.0.0.1:8080\"\n{ONE}"
        ))
        .unwrap_err();
        assert!(same.contains("admin.listen"), "{same}");
        let unknown = parse(&format!("[admin]\nport = 1\n{ONE}")).unwrap_err();
        assert!(unknown.contains("unknown field `port`"), "{unknown}");
    }

    #[test]
    fn relative_modules_resolve_against_the_config_folder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("arrpc.toml");
        std::fs::write(&path, ONE).unwrap();
        let config = Config::load(&path).unwrap();
        assert_eq!(config.handlers[0].module, dir.path().join("echo.wasm"));
        let granted = format!("{ONE}dirs = [{{ host = \"data\", guest = \"/data\" }}]\n");
        std::fs::write(&path, &granted).unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("dirs[0].host") && err.contains("not a directory"),
            "{err}"
        );
        std::fs::create_dir(dir.path().join("data")).unwrap();
        let config = Config::load(&path).unwrap();
        assert_eq!(config.handlers[0].dirs[0].host, dir.path().join("data"));
        let err = Config::load(&dir.path().join("missing.toml")).unwrap_err();
        assert!(
            err.to_string().contains("missing.toml: cannot read"),
            "{err}"
        );
    }
}
