//! `arrpc-host serve` and `arrpc-host check`.

use std::sync::Arc;

use anyhow::{Context, anyhow};

use super::security::server_security;
use super::{ConfigArgs, ServeArgs};
use crate::config::Config;
use crate::reload::Reloader;
use crate::runtime::{HandlerRegistry, HandlerSet, Runtime, RuntimeOptions};
use crate::server::Server;

/// Loads the config and every handler, the part `serve` and `check` share.
async fn load(args: &ConfigArgs) -> anyhow::Result<(Config, Runtime, HandlerSet)> {
    let config = Config::load(&args.config)?;
    let runtime = Runtime::new(RuntimeOptions::for_config(&config))
        .map_err(|e| anyhow!("cannot create the WebAssembly engine: {e:#}"))?;
    let handlers = HandlerSet::load(&runtime, &config, &Config::base_dir(&args.config), None)
        .await
        .with_context(|| format!("{}", args.config.display()))?;
    Ok((config, runtime, handlers))
}

pub async fn check(args: &ConfigArgs) -> anyhow::Result<()> {
    let (config, _, handlers) = load(args).await?;
    server_security(&config, &args.config.display().to_string())?;
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
    }
    println!(
        "{}: {} handler(s) ok",
        args.config.display(),
        config.handlers.len()
    );
    Ok(())
}

pub async fn serve(args: &ServeArgs) -> anyhow::Result<()> {
    let (mut config, runtime, handlers) = load(&args.config).await?;
    // Reloads compare against the file, not the command-line overrides.
    let file_config = config.clone();
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    args.security.apply(&mut config)?;
    let origin = args.config.config.display().to_string();
    let (tls, auth) = server_security(&config, &origin)?;
    tracing::info!(
        tls = tls.is_some(),
        client_certificates = config.tls.as_ref().is_some_and(|t| t.client_ca.is_some()),
        signed = auth.is_some(),
        replay_protection = auth.is_some() && config.auth.replay_protection,
        "security"
    );
    let registry = Arc::new(HandlerRegistry::new(handlers));
    let mut server = Server::bind(&config.server, registry.clone())
        .await
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    if let Some(tls) = tls {
        server = server.with_tls(tls);
    }
    if let Some(auth) = auth {
        server = server.with_auth(auth);
    }
    let default_handler = config.default_handler().unwrap_or("-").to_owned();
    // Changes are watched from before the first message is served.
    Reloader::spawn(
        runtime,
        registry,
        &args.config.config,
        file_config,
        args.watch,
    )
    .context("cannot watch handler modules and the config for changes")?;
    tracing::info!(addr = %server.local_addr()?, default_handler = %default_handler, "listening");
    server.run(stop_signal()).await;
    tracing::info!("stopped");
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
async fn stop_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = interrupt => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
