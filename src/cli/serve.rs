//! `arrpc-host serve` and `arrpc-host check`: the config and the command
//! line's overrides, handed to [`crate::host`].

use anyhow::Context;

use super::{ConfigArgs, ServeArgs};
use crate::config::Config;
use crate::host::{Origin, Serving, check_handlers, server_security};

pub(super) async fn check(args: &ConfigArgs) -> anyhow::Result<()> {
    let config = Config::load(&args.config)?;
    // Certificates, keys and secrets first: compiling handlers takes longer.
    let (tls, _) = server_security(&config, &args.config.display().to_string())?;
    if let Some(tls) = tls {
        println!("tls {}", tls.identity());
    }
    if let Some(spiffe) = config.tls.as_ref().and_then(|tls| tls.spiffe.as_ref()) {
        let socket = spiffe
            .socket
            .as_deref()
            .unwrap_or("$SPIFFE_ENDPOINT_SOCKET");
        println!("tls from the SPIFFE Workload API at {socket} (not contacted by check)");
    }
    let (config, handlers) = check_handlers(&args.config, config).await?;
    for line in crate::keyvalue::Stores::describe(&config.stores) {
        println!("{line}");
    }
    for handler in &config.handlers {
        let loaded = handlers
            .get(&handler.name)
            .expect("every configured handler is loaded");
        println!(
            "ok  {}  {}  sha256:{}",
            loaded.name(),
            loaded.module().display(),
            loaded.sha256()
        );
        let outbound = &handler.allowed_outbound_hosts;
        if outbound.is_empty() {
            println!("    outbound: none");
        }
        for entry in outbound {
            println!("    outbound: {entry}");
        }
        for upstream in &handler.upstreams {
            println!("    upstream: {upstream}");
        }
        for store in &handler.stores {
            println!("    store: {store}");
        }
    }
    println!(
        "{}: {} handler(s) ok",
        args.config.display(),
        config.handlers.len()
    );
    Ok(())
}

/// `serve` from start to exit: logs and trace export are set up from the
/// config, and buffered spans are flushed once serving has stopped.
pub(super) fn run(args: &ServeArgs) -> anyhow::Result<()> {
    let config = Config::load(&args.config.config)?;
    let telemetry = crate::telemetry::install(
        "info",
        args.config.debug,
        args.config.log_format,
        Some(&config.telemetry),
    )
    .with_context(|| format!("{}: [telemetry]", args.config.config.display()))?;
    let served = super::runtime().and_then(|rt| rt.block_on(serve(args, config)));
    telemetry.shutdown();
    served
}

/// The binary's `serve`: the command line's overrides on the config, then
/// [`Serving`] until the first SIGTERM or SIGINT.
pub(super) async fn serve(args: &ServeArgs, config: Config) -> anyhow::Result<()> {
    // Reloads compare against the file, not the command-line overrides.
    let as_read = config.clone();
    let mut config = config;
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    if let Some(admin) = args.admin_listen {
        config.admin.listen = Some(admin);
    }
    args.security.apply(&mut config)?;
    let origin = Origin {
        path: &args.config.config,
        as_read,
        watch: args.watch,
    };
    let serving = Serving::start(config, origin).await?;
    let mut signals = StopSignals::new()?;
    let stop = async move {
        let first = signals.recv().await;
        tracing::info!(
            signal = first,
            "stop signal: draining; a second one exits at once"
        );
        tokio::spawn(async move {
            let second = signals.recv().await;
            tracing::warn!(signal = second, "second stop signal: exiting now");
            std::process::exit(EXIT_ON_SECOND_SIGNAL);
        });
    };
    serving.run(stop).await;
    Ok(())
}

/// Exit status when a second stop signal cuts the drain short.
const EXIT_ON_SECOND_SIGNAL: i32 = 130;

/// SIGINT and SIGTERM, listened for from start to exit so that none is
/// missed between the first and the second.
struct StopSignals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn new() -> std::io::Result<StopSignals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(StopSignals {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        Ok(StopSignals {})
    }

    /// Completes on the next stop signal, naming it.
    async fn recv(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.interrupt.recv() => "SIGINT",
                _ = self.terminate.recv() => "SIGTERM",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}
