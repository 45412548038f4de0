//! The message port's TLS and signature checks, made from the config:
//! certificate files, the SPIFFE Workload API, secrets.

use anyhow::Context;

use crate::config::{Config, SecretSource};
use crate::server::TlsListener;
use crate::server::auth::Authenticator;
use crate::server::replay::ReplayGuard;

/// The TLS listener for certificates from files and the authenticator
/// `config` asks for; errors name `origin` (the config file or the command
/// line) and the setting. A listener for the SPIFFE Workload API is made by
/// [`spiffe_listener`], since it waits for the agent.
pub fn server_security(
    config: &Config,
    origin: &str,
) -> anyhow::Result<(Option<TlsListener>, Option<Authenticator>)> {
    let tls = config
        .tls
        .as_ref()
        .filter(|tls| tls.spiffe.is_none())
        .map(TlsListener::new)
        .transpose()
        .with_context(|| format!("{origin}: [tls]"))?;
    config
        .check_access(config.verifies_client_certificates())
        .map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
    let auth = &config.auth;
    if auth.secrets.is_empty() {
        return Ok((tls, None));
    }
    let mut secrets = Vec::with_capacity(auth.secrets.len());
    for (i, source) in auth.secrets.iter().enumerate() {
        let at = format!("{origin}: auth.secrets #{} ({source})", i + 1);
        if matches!(source, SecretSource::Value(_)) {
            tracing::warn!(
                "{at} is written inline; prefer {{ env = \"NAME\" }} or {{ file = \"path\" }}"
            );
        }
        secrets.push(source.read().map_err(|e| anyhow::anyhow!("{at}: {e}"))?);
    }
    let replay = auth
        .replay_protection
        .then(|| ReplayGuard::new(auth.replay_window, auth.replay_max_nonces));
    Ok((tls, Some(Authenticator::new(secrets, replay))))
}

/// The TLS listener for `[tls.spiffe]`, once the agent has sent a first
/// SVID; `None` without it.
pub async fn spiffe_listener(config: &Config, origin: &str) -> anyhow::Result<Option<TlsListener>> {
    let Some(tls) = &config.tls else {
        return Ok(None);
    };
    let Some(spiffe) = &tls.spiffe else {
        return Ok(None);
    };
    let listener = TlsListener::spiffe(tls, spiffe)
        .await
        .with_context(|| format!("{origin}: [tls.spiffe]"))?;
    Ok(Some(listener))
}
