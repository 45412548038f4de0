//! Watching files for changes, with bursts of events folded into one.
//!
//! Files are watched through their folder, so a file replaced by rename
//! (how most tools write atomically) is seen as well as one written in
//! place. Paths are compared in canonical form.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode};
use notify_debouncer_mini::{DebounceEventResult, Debouncer, new_debouncer};
use tokio::sync::mpsc::UnboundedSender;

/// Sends the set of changed paths after each quiet period.
pub struct FileWatcher {
    debouncer: Debouncer<RecommendedWatcher>,
    folders: HashSet<PathBuf>,
}

impl FileWatcher {
    /// Changed paths go to `changes`, once no further event arrived for
    /// `quiet`.
    pub fn new(
        changes: UnboundedSender<Vec<PathBuf>>,
        quiet: Duration,
    ) -> notify::Result<FileWatcher> {
        let debouncer = new_debouncer(quiet, move |result: DebounceEventResult| match result {
            Ok(events) => {
                let paths = events.into_iter().map(|e| canonical(&e.path)).collect();
                let _ = changes.send(paths);
            }
            Err(e) => tracing::warn!(error = %e, "file watch error"),
        })?;
        Ok(FileWatcher {
            debouncer,
            folders: HashSet::new(),
        })
    }

    /// Watches `file` (through its folder).
    pub fn watch_file(&mut self, file: &Path) -> notify::Result<()> {
        let folder = canonical(file)
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("/"));
        self.watch(folder, RecursiveMode::NonRecursive)
    }

    /// Watches everything below `folder`.
    pub fn watch_tree(&mut self, folder: &Path) -> notify::Result<()> {
        self.watch(canonical(folder), RecursiveMode::Recursive)
    }

    fn watch(&mut self, folder: PathBuf, mode: RecursiveMode) -> notify::Result<()> {
        if self.folders.insert(folder.clone()) {
            self.debouncer.watcher().watch(&folder, mode)?;
        }
        Ok(())
    }
}

/// `path` with its folder resolved (symlinks, `.` and `..`); the file
/// itself may not exist.
pub fn canonical(path: &Path) -> PathBuf {
    if let Ok(full) = path.canonicalize() {
        return full;
    }
    match (path.parent(), path.file_name()) {
        (Some(folder), Some(name)) => folder
            .canonicalize()
            .map(|f| f.join(name))
            .unwrap_or_else(|_| path.to_path_buf()),
        _ => path.to_path_buf(),
    }
}
