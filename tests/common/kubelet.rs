//! The kubelet's atomic writer, emulated step for step, since no cluster
//! runs here: how Secret, ConfigMap, projected and CSI (csi-lib) volumes
//! appear inside a pod. Follows `Write` in kubernetes
//! `pkg/volume/util/atomic_writer.go`:
//!
//! ```text
//! mount/..2026_11_28_18_00_00.123456789/tls.key   real files, mode as the volume says
//! mount/..data -> ..2026_11_28_18_00_00.123456789
//! mount/tls.key -> ..data/tls.key                 what the pod is told to read
//! ```
//!
//! An update skips identical content, writes a new timestamped folder (mode
//! 0755), adds visible links for new names, points `..data_tmp` at the new
//! folder, renames it over `..data` (the one atomic step), removes visible
//! names no longer in the payload, then deletes the old folder.

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// A volume folder the kubelet keeps up to date.
pub struct AtomicWriter {
    pub dir: PathBuf,
    /// The files' mode: 0644 for a Secret by default, 0440 with
    /// `defaultMode: 0440`, `fsGroup` or csi-lib.
    mode: u32,
}

impl AtomicWriter {
    pub fn new(dir: &Path, mode: u32) -> AtomicWriter {
        std::fs::create_dir_all(dir).unwrap();
        AtomicWriter {
            dir: dir.to_owned(),
            mode,
        }
    }

    /// The visible path of `name` in the volume.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Projects `payload` (top-level names and contents) into the volume.
    pub fn write(&self, payload: &[(&str, &[u8])]) {
        let data = self.dir.join("..data");
        let old = std::fs::read_link(&data).ok();
        if let Some(old) = &old {
            let old = self.dir.join(old);
            let same = payload
                .iter()
                .all(|(name, bytes)| std::fs::read(old.join(name)).is_ok_and(|b| b == *bytes));
            let names: Vec<_> = std::fs::read_dir(&old)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            if same && names.len() == payload.len() {
                return;
            }
        }

        let stamp = self.dir.join(timestamp());
        std::fs::create_dir(&stamp).unwrap();
        std::fs::set_permissions(&stamp, std::fs::Permissions::from_mode(0o755)).unwrap();
        for (name, bytes) in payload {
            let file = stamp.join(name);
            std::fs::write(&file, bytes).unwrap();
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(self.mode)).unwrap();
        }
        for (name, _) in payload {
            let visible = self.dir.join(name);
            if visible.symlink_metadata().is_err() {
                symlink(Path::new("..data").join(name), visible).unwrap();
            }
        }
        let tmp = self.dir.join("..data_tmp");
        symlink(stamp.file_name().unwrap(), &tmp).unwrap();
        std::fs::rename(&tmp, &data).unwrap();

        if let Some(old) = old {
            let old = self.dir.join(old);
            for entry in std::fs::read_dir(&old).unwrap() {
                let name = entry.unwrap().file_name();
                if !payload.iter().any(|(n, _)| name == *n) {
                    std::fs::remove_file(self.dir.join(&name)).unwrap();
                }
            }
            std::fs::remove_dir_all(old).unwrap();
        }
    }
}

/// `..2006_01_02_15_04_05.<random>`, as Go's `os.MkdirTemp` names it; the
/// suffix here is a counter, unique within the test process.
fn timestamp() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let stamp: String = now
        .trim_end_matches('Z')
        .chars()
        .map(|c| if c.is_ascii_digit() { c } else { '_' })
        .collect();
    format!(
        "..{stamp}.{}{:04}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}
