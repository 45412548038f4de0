//! What a handler's `sources` hold, so that `--watch` builds on an edit
//! and not on events that change nothing: a touch, the same bytes written
//! again, a build writing its module among its sources.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use super::watch::canonical;

/// How much older than the last hash a file's modification time must be
/// before size and time alone vouch for its content. File systems stamp
/// times coarsely, so a write just after hashing can keep the old time.
const SETTLED: Duration = Duration::from_secs(2);

/// The files below a handler's sources, each with a hash of its content.
#[derive(Clone)]
pub struct Snapshot {
    files: BTreeMap<PathBuf, FileState>,
    /// When the contents were read.
    taken: SystemTime,
}

#[derive(Clone)]
struct FileState {
    len: u64,
    modified: SystemTime,
    sha256: [u8; 32],
}

impl Snapshot {
    /// Reads every file below `sources` except `module`: a build that
    /// writes its output among its sources must not count as an edit.
    /// Hashes in `earlier` are reused for files whose size and settled
    /// modification time are unchanged since.
    pub fn take(sources: &[PathBuf], module: &Path, earlier: Option<&Snapshot>) -> Snapshot {
        let mut snapshot = Snapshot {
            files: BTreeMap::new(),
            taken: SystemTime::now(),
        };
        let module = canonical(module);
        for source in sources {
            snapshot.add(&canonical(source), &module, earlier);
        }
        snapshot
    }

    /// Whether both hold the same files with the same contents.
    pub fn same_contents(&self, other: &Snapshot) -> bool {
        self.files.len() == other.files.len()
            && self
                .files
                .iter()
                .zip(&other.files)
                .all(|((a, a_state), (b, b_state))| a == b && a_state.sha256 == b_state.sha256)
    }

    /// Adds `path`, a file or a folder read recursively. What vanishes or
    /// cannot be read meanwhile is left out, as it is not a source now.
    fn add(&mut self, path: &Path, module: &Path, earlier: Option<&Snapshot>) {
        let Ok(meta) = fs::metadata(path) else {
            return;
        };
        if meta.is_dir() {
            let Ok(entries) = fs::read_dir(path) else {
                return;
            };
            for entry in entries.flatten() {
                // A linked folder may link back up: only real folders are entered.
                let linked_folder =
                    entry.file_type().is_ok_and(|t| t.is_symlink()) && entry.path().is_dir();
                if !linked_folder {
                    self.add(&entry.path(), module, earlier);
                }
            }
        } else if meta.is_file()
            && path != module
            && let Ok(modified) = meta.modified()
        {
            let len = meta.len();
            let known = earlier.and_then(|e| {
                let state = e.files.get(path)?;
                let settled = modified.checked_add(SETTLED).is_some_and(|t| t <= e.taken);
                (state.len == len && state.modified == modified && settled).then_some(state.sha256)
            });
            if let Some(sha256) = known.or_else(|| hash(path)) {
                self.files.insert(
                    path.to_path_buf(),
                    FileState {
                        len,
                        modified,
                        sha256,
                    },
                );
            }
        }
    }
}

fn hash(path: &Path) -> Option<[u8; 32]> {
    let mut file = fs::File::open(path).ok()?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).ok()?;
    Some(hasher.finalize().into())
}
