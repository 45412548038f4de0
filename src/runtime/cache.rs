//! Compiled components kept on disk, so a restart does not recompile.
//!
//! An entry is named by the module's SHA-256 and a hash of everything that
//! makes compiled code usable by this engine
//! ([`Engine::precompile_compatibility_hash`]: wasmtime's version, target
//! and compiler settings). A changed module or a new wasmtime therefore
//! misses and compiles afresh. Each entry is the serialized component
//! followed by the SHA-256 of those bytes; an entry that fails that check
//! or that wasmtime refuses is logged, ignored and rewritten. Entries are
//! written to a temporary file and renamed into place, so a crash or a
//! concurrent host never leaves half an entry under an entry's name.
//!
//! The folder is kept under a size cap (`[server] cache_max_mib`): every
//! load marks its entry as used (its modification time), and after each
//! write the least recently used entries are deleted until the rest fit.
//! Without it, every hot-swapped module version would stay forever.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

const CHECKSUM_LEN: usize = 32;

/// A folder of compiled components, owned by this host.
#[derive(Debug, Clone)]
pub struct ComponentCache {
    dir: PathBuf,
    /// Bytes the entries may take together.
    max_bytes: u64,
}

/// Why an entry could not be written; loading never fails on the cache.
#[derive(Debug, thiserror::Error)]
#[error("cannot write compile cache entry in {}: {source}", dir.display())]
pub struct CacheWriteError {
    dir: PathBuf,
    source: std::io::Error,
}

impl ComponentCache {
    pub fn new(dir: PathBuf, max_bytes: u64) -> Self {
        ComponentCache { dir, max_bytes }
    }

    /// `$XDG_CACHE_HOME/arrpc-host`, else `$HOME/.cache/arrpc-host`.
    pub fn default_dir() -> Option<PathBuf> {
        let non_empty = |name| std::env::var_os(name).filter(|v| !v.is_empty());
        let base = non_empty("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| non_empty("HOME").map(|home| Path::new(&home).join(".cache")))?;
        Some(base.join("arrpc-host"))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the entry for a module with this SHA-256 lives for `engine`.
    pub fn entry_path(&self, engine: &Engine, module_sha256: &str) -> PathBuf {
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        self.dir
            .join(format!("{module_sha256}-{:016x}.cwasm", hasher.finish()))
    }

    /// The cached component for this module, or `None` when there is no
    /// usable entry (a broken one is logged).
    pub fn load(&self, engine: &Engine, module_sha256: &str) -> Option<Component> {
        let path = self.entry_path(engine, module_sha256);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read compile cache entry; recompiling");
                return None;
            }
        };
        let Some(split) = bytes.len().checked_sub(CHECKSUM_LEN) else {
            tracing::warn!(path = %path.display(), "compile cache entry is truncated; recompiling");
            return None;
        };
        let (artifact, checksum) = bytes.split_at(split);
        if Sha256::digest(artifact).as_slice() != checksum {
            tracing::warn!(path = %path.display(), "compile cache entry is corrupt; recompiling");
            return None;
        }
        // SAFETY: deserializing trusts the bytes to be wasmtime's own output
        // for a compatible engine. They are: the entry sits in this host's
        // cache folder (created owner-only), was written by
        // `Component::serialize` in `store` below, its checksum matches, and
        // wasmtime itself refuses artifacts of another version or config.
        // Anyone who can write this folder can already change the host.
        match unsafe { Component::deserialize(engine, artifact) } {
            Ok(component) => {
                mark_used(&path);
                Some(component)
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "compile cache entry refused by wasmtime; recompiling");
                None
            }
        }
    }

    /// Writes `component` as the entry for this module.
    pub fn store(
        &self,
        engine: &Engine,
        module_sha256: &str,
        component: &Component,
    ) -> Result<(), CacheWriteError> {
        let error = |source| CacheWriteError {
            dir: self.dir.clone(),
            source,
        };
        let artifact = component
            .serialize()
            .map_err(|e| error(std::io::Error::other(e)))?;
        create_private_dir(&self.dir).map_err(error)?;
        let mut file = tempfile::NamedTempFile::new_in(&self.dir).map_err(error)?;
        file.write_all(&artifact).map_err(error)?;
        file.write_all(&Sha256::digest(&artifact)).map_err(error)?;
        let path = self.entry_path(engine, module_sha256);
        file.persist(&path).map_err(|e| error(e.error))?;
        self.evict(&path);
        Ok(())
    }

    /// Deletes the least recently used entries, never `keep`, until the
    /// entries fit under the cap. Failures are logged: a cache that cannot
    /// shrink still works.
    fn evict(&self, keep: &Path) {
        let listing = match std::fs::read_dir(&self.dir) {
            Ok(listing) => listing,
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot list the compile cache to trim it");
                return;
            }
        };
        let mut entries: Vec<(std::time::SystemTime, u64, PathBuf)> = listing
            .filter_map(|entry| {
                let entry = entry.ok()?;
                let path = entry.path();
                if path.extension()? != "cwasm" {
                    return None;
                }
                let meta = entry.metadata().ok()?;
                Some((meta.modified().ok()?, meta.len(), path))
            })
            .collect();
        let mut total: u64 = entries.iter().map(|(_, len, _)| len).sum();
        entries.sort();
        for (_, len, path) in entries {
            if total <= self.max_bytes {
                break;
            }
            if path == keep {
                continue;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    total -= len;
                    tracing::info!(path = %path.display(), bytes = len, "compile cache entry evicted (least recently used)");
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot evict compile cache entry")
                }
            }
        }
    }
}

/// Records that the entry at `path` was just used, for eviction order.
fn mark_used(path: &Path) {
    let touched = std::fs::File::options()
        .write(true)
        .open(path)
        .and_then(|file| file.set_modified(std::time::SystemTime::now()));
    if let Err(e) = touched {
        tracing::debug!(path = %path.display(), error = %e, "cannot mark compile cache entry as used");
    }
}

/// Creates `dir` (and its parents) readable and writable by this user only.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;

    /// A fake entry of `len` bytes last used `age` ago.
    fn entry(dir: &Path, name: &str, len: usize, age: Duration) -> PathBuf {
        let path = dir.join(format!("{name}.cwasm"));
        std::fs::write(&path, vec![0; len]).unwrap();
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(SystemTime::now() - age).unwrap();
        path
    }

    #[test]
    fn the_least_recently_used_entries_go_until_the_rest_fit() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ComponentCache::new(dir.path().to_owned(), 250);
        let hour = Duration::from_secs(3600);
        let oldest = entry(dir.path(), "a", 100, 3 * hour);
        let used_lately = entry(dir.path(), "b", 100, 2 * hour);
        let middle = entry(dir.path(), "c", 100, hour);
        let other_file = dir.path().join("notes.txt");
        std::fs::write(&other_file, vec![0; 1000]).unwrap();
        mark_used(&used_lately);
        let written = entry(dir.path(), "d", 100, Duration::ZERO);

        cache.evict(&written);
        assert!(!oldest.exists() && !middle.exists());
        assert!(used_lately.exists() && written.exists() && other_file.exists());
    }

    #[test]
    fn the_entry_just_written_stays_even_alone_over_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ComponentCache::new(dir.path().to_owned(), 10);
        let older = entry(dir.path(), "a", 100, Duration::from_secs(60));
        let written = entry(dir.path(), "b", 100, Duration::from_secs(3600));
        cache.evict(&written);
        assert!(!older.exists() && written.exists());
    }
}
