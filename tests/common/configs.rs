//! Test configs built in Rust rather than written as TOML text: a typo in a
//! key is a compile error, and the host still reads a real file, the
//! config serialized as TOML.

use arrpc_host::config::{Config, DirGrant, HandlerConfig, ServerConfig};

use super::{Gate, Host, TestConfig, component};

/// `component_name`'s component served as `name`, every other key at its
/// default; set others as `HandlerConfig { reuse: 100, ..handler_config(..) }`.
pub fn handler_config(name: &str, component_name: &str) -> HandlerConfig {
    HandlerConfig::new(name, component(component_name))
}

/// A config serving `handlers`, the first as the default handler, every
/// other section at its default.
pub fn serving(handlers: Vec<HandlerConfig>) -> Config {
    Config {
        server: ServerConfig {
            default_handler: handlers.first().map(|h| h.name.clone()),
            ..ServerConfig::default()
        },
        handlers,
        ..Config::default()
    }
}

/// [`super::misbehave_host`]'s config: the `misbehave` handler, as
/// `settings` changes it, as the default handler.
pub fn misbehave_config(settings: impl FnOnce(HandlerConfig) -> HandlerConfig) -> Config {
    serving(vec![settings(handler_config("misbehave", "misbehave"))])
}

/// `config`, checked as the host will check it, written as TOML into a
/// temporary folder.
pub fn write_config_value(config: &Config) -> TestConfig {
    if let Err(why) = config.validate() {
        panic!("the test's config is invalid: {why}");
    }
    super::write_config(&toml::to_string(config).expect("a config serializes as TOML"))
}

impl Host {
    /// Starts a host on `config`, written to a temporary file as TOML.
    pub fn start_config(config: &Config) -> Host {
        Host::start_with(write_config_value(config), &[])
    }
}

impl Gate {
    /// The grant of the folder as `/gate`, read-only, as [`Gate::dirs`]
    /// writes it in TOML.
    pub fn grant(&self) -> DirGrant {
        DirGrant {
            host: self.dir.path().to_owned(),
            guest: "/gate".into(),
            writable: false,
        }
    }
}
