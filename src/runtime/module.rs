//! Getting a handler's component bytes: build it when missing, read it,
//! fingerprint it.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::config::HandlerConfig;

/// A handler that could not be loaded, with the reason.
#[derive(Debug, thiserror::Error)]
#[error("handler `{handler}` (module {}): {reason}", module.display())]
pub struct LoadError {
    pub handler: String,
    pub module: PathBuf,
    pub reason: String,
}

impl LoadError {
    pub fn new(config: &HandlerConfig, reason: impl Into<String>) -> Self {
        LoadError {
            handler: config.name.clone(),
            module: config.module.clone(),
            reason: reason.into(),
        }
    }
}

/// A component file's bytes and their SHA-256, which names the version
/// being served in logs.
pub struct ModuleBytes {
    pub bytes: Vec<u8>,
    pub sha256: String,
}

/// Runs the handler's `build` command in `base_dir` when its module file
/// does not exist yet.
pub async fn build_if_missing(config: &HandlerConfig, base_dir: &Path) -> Result<(), LoadError> {
    if config.module.exists() {
        return Ok(());
    }
    if config.build.is_none() {
        return Err(LoadError::new(
            config,
            "module file not found and no `build` command is configured",
        ));
    }
    tracing::info!(handler = %config.name, "module missing; building");
    run_build(config, base_dir).await
}

/// Runs the handler's `build` command (with `sh -c`, in `base_dir`) and
/// checks that it produced the module.
pub async fn run_build(config: &HandlerConfig, base_dir: &Path) -> Result<(), LoadError> {
    let Some(command) = &config.build else {
        return Err(LoadError::new(config, "no `build` command is configured"));
    };
    let status = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .current_dir(base_dir)
        .stdin(std::process::Stdio::null())
        .status()
        .await
        .map_err(|e| {
            LoadError::new(config, format!("cannot run build command `{command}`: {e}"))
        })?;
    if !status.success() {
        return Err(LoadError::new(
            config,
            format!("build command `{command}` failed ({status})"),
        ));
    }
    if !config.module.exists() {
        return Err(LoadError::new(
            config,
            format!("build command `{command}` succeeded but did not produce the module"),
        ));
    }
    Ok(())
}

/// Reads the module file.
pub fn read(config: &HandlerConfig) -> Result<ModuleBytes, LoadError> {
    let bytes = std::fs::read(&config.module)
        .map_err(|e| LoadError::new(config, format!("cannot read module: {e}")))?;
    let sha256 = hex::encode(Sha256::digest(&bytes));
    Ok(ModuleBytes { bytes, sha256 })
}
