//! `arrpc-host serve` and `arrpc-host check`.

use std::sync::Arc;

use anyhow::{Context, anyhow};

use super::security::server_security;
use super::{ConfigArgs, ServeArgs};
use crate::config::Config;
use crate::runtime::{HandlerRegistry, PoolSize, Runtime};
use crate::server::Server;

/// Loads the config and every handler, the part `serve` and `check` share.
async fn load(args: &ConfigArgs) -> anyhow::Result<(Config, HandlerRegistry)> {
    let config = Config::load(&args.config)?;
    let runtime = Runtime::new(PoolSize::for_handlers(&config.handlers))
        .map_err(|e| anyhow!("cannot create the WebAssembly engine: {e:#}"))?;
    let registry = HandlerRegistry::load(&runtime, &config, &Config::base_dir(&args.config))
        .await
        .with_context(|| format!("{}", args.config.display()))?;
    Ok((config, registry))
}

pub async fn check(args: &ConfigArgs) -> anyhow::Result<()> {
    let (config, registry) = load(args).await?;
    server_security(&config, &args.config.display().to_string())?;
    for handler in &config.handlers {
        let loaded = registry
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
    let (mut config, registry) = load(&args.config).await?;
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
    let mut server = Server::bind(&config.server, Arc::new(registry))
        .await
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    if let Some(tls) = tls {
        server = server.with_tls(tls);
    }
    if let Some(auth) = auth {
        server = server.with_auth(auth);
    }
    tracing::info!(addr = %server.local_addr()?, default_handler = config.default_handler().unwrap_or("-"), "listening");
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
