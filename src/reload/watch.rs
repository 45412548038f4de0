//! Watching files for changes, with bursts of events folded into one.
//!
//! Files are watched through their folder, so a file replaced by rename
//! (how most tools write atomically) is seen as well as one written in
//! place. That is the folder the file is named in, not the one a symlinked
//! file resolves to: the kubelet keeps a mounted file behind `..data`
//! links and replaces the folder they resolve to, whose watch would die
//! with it (see [`canonical`]). Opening and reading a file are not changes:
//! a build reading its sources must not look like an edit.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{
    Config, Event, EventHandler, EventKind, RecommendedWatcher, RecursiveMode, Watcher, WatcherKind,
};
use notify_debouncer_mini::{DebounceEventResult, Debouncer, new_debouncer_opt};
use tokio::sync::mpsc::UnboundedSender;

/// Sends the set of changed paths after each quiet period.
pub struct FileWatcher {
    debouncer: Debouncer<ChangesOnly>,
    folders: HashSet<PathBuf>,
}

impl FileWatcher {
    /// Changed paths go to `changes`, once no further event arrived for
    /// `quiet`.
    pub fn new(
        changes: UnboundedSender<Vec<PathBuf>>,
        quiet: Duration,
    ) -> notify::Result<FileWatcher> {
        let config = notify_debouncer_mini::Config::default().with_timeout(quiet);
        let debouncer =
            new_debouncer_opt(config, move |result: DebounceEventResult| match result {
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

    /// Watches the files directly in `folder`.
    pub fn watch_folder(&mut self, folder: &Path) -> notify::Result<()> {
        self.watch(canonical_folder(folder), RecursiveMode::NonRecursive)
    }

    /// Watches everything below `source`, a folder, or `source` itself, a
    /// file: through its folder, like [`FileWatcher::watch_file`], so that
    /// an editor's save by rename is seen and the watch outlives it.
    pub fn watch_source(&mut self, source: &Path) -> notify::Result<()> {
        if source.is_dir() {
            self.watch(canonical_folder(source), RecursiveMode::Recursive)
        } else {
            self.watch_file(source)
        }
    }

    fn watch(&mut self, folder: PathBuf, mode: RecursiveMode) -> notify::Result<()> {
        if self.folders.insert(folder.clone()) {
            self.debouncer.watcher().watch(&folder, mode)?;
        }
        Ok(())
    }
}

/// The platform's watcher, minus the events that change nothing.
///
/// The debouncer forgets what kind each event was, so reads are dropped
/// before it sees them: inotify reports every open and close, and a build
/// that reads its sources would otherwise trigger the next build.
struct ChangesOnly(RecommendedWatcher);

impl Watcher for ChangesOnly {
    fn new<F: EventHandler>(mut handler: F, config: Config) -> notify::Result<Self> {
        let changes = move |event: notify::Result<Event>| {
            if !event.as_ref().is_ok_and(|e| changes_nothing(&e.kind)) {
                handler.handle_event(event);
            }
        };
        RecommendedWatcher::new(changes, config).map(ChangesOnly)
    }

    fn watch(&mut self, path: &Path, recursive_mode: RecursiveMode) -> notify::Result<()> {
        self.0.watch(path, recursive_mode)
    }

    fn unwatch(&mut self, path: &Path) -> notify::Result<()> {
        self.0.unwatch(path)
    }

    fn configure(&mut self, option: Config) -> notify::Result<bool> {
        self.0.configure(option)
    }

    fn kind() -> WatcherKind {
        RecommendedWatcher::kind()
    }
}

/// Opening, reading and closing a file leave it as it was. Closing after a
/// write is kept: it ends a write, and a module is complete only then.
fn changes_nothing(kind: &EventKind) -> bool {
    matches!(kind, EventKind::Access(access) if *access != AccessKind::Close(AccessMode::Write))
}

/// `path` with its folder resolved (symlinks, `.` and `..`) and its own
/// name kept, as events name it: a file that is a symlink stays itself
/// rather than becoming the file it points to. The file may not exist.
pub fn canonical(path: &Path) -> PathBuf {
    match (path.parent(), path.file_name()) {
        (Some(folder), Some(name)) => canonical_folder(folder).join(name),
        _ => canonical_folder(path),
    }
}

/// `folder` with every symlink resolved, as the watcher names its events.
pub fn canonical_folder(folder: &Path) -> PathBuf {
    let folder = if folder.as_os_str().is_empty() {
        Path::new(".")
    } else {
        folder
    };
    folder
        .canonicalize()
        .unwrap_or_else(|_| folder.to_path_buf())
}
