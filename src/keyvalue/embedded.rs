//! An embedded store: one redb file on this host's disk.
//!
//! Every write goes to one writer thread, which takes all the writes
//! waiting, applies them in one transaction and commits it durably (one
//! fsync for the lot) before any of their callers hears back. So a write
//! the guest saw succeed is on disk before its message's reply leaves,
//! and concurrent handlers share the cost of the fsync: group commit.
//! Increments and swaps read and write inside that transaction, so they
//! are atomic however many guests race on one key.
//!
//! Reads run on the caller's task against the last committed snapshot
//! (redb's MVCC): they wait for no writer, and mostly hit redb's page cache.

use std::ops::Bound;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;

use redb::{
    Builder, Database, DatabaseError, ReadOnlyDatabase, ReadableDatabase, ReadableTable,
    StorageError, Table, TableDefinition,
};
use tokio::sync::oneshot;

use super::{PAGE_KEYS, StoreError, Swap, parse_count};
use crate::config::StoreConfig;

/// The one table a store file holds.
const TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("keyvalue");

/// Writes one commit takes at most; more wait for the next.
const MAX_BATCH: usize = 4096;

pub(super) struct Embedded {
    name: Arc<str>,
    db: Arc<Database>,
    writes: mpsc::Sender<Write>,
}

/// One write waiting for the writer thread, and who to tell how it went.
struct Write {
    op: WriteOp,
    done: oneshot::Sender<Result<Written, StoreError>>,
}

enum WriteOp {
    Set(Vec<(String, Vec<u8>)>),
    Delete(Vec<String>),
    Increment(String, i64),
    Swap {
        key: String,
        expected: Option<Vec<u8>>,
        value: Vec<u8>,
    },
}

enum Written {
    Done,
    Count(i64),
    Swap(Swap),
}

impl Embedded {
    /// Opens or creates the file at `path`, checking every page of an
    /// existing one, and starts its writer thread.
    pub(super) fn open(
        name: Arc<str>,
        path: &Path,
        config: &StoreConfig,
    ) -> Result<Embedded, String> {
        let shown = path.display();
        refuse_empty(path)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create the folder of {shown}: {e}"))?;
        }
        let db = open_checked(path, || {
            let mut builder = Builder::new();
            builder
                .set_cache_size(usize::try_from(config.cache_mib << 20).unwrap_or(usize::MAX))
                .set_check_integrity_on_open(true);
            builder.create(path)
        })?;
        // The table exists from the start, so reads never find it missing.
        let txn = db.begin_write().map_err(|e| format!("{shown}: {e}"))?;
        txn.open_table(TABLE).map_err(|e| format!("{shown}: {e}"))?;
        txn.commit().map_err(|e| format!("{shown}: {e}"))?;

        let db = Arc::new(db);
        let (writes, queue) = mpsc::channel();
        let writer = Writer {
            name: name.clone(),
            db: db.clone(),
            path: path.to_owned(),
            max_bytes: config.max_size_mib.saturating_mul(1 << 20),
        };
        std::thread::Builder::new()
            .name(format!("arrpc-store-{name}"))
            .spawn(move || writer.run(queue))
            .map_err(|e| format!("cannot start its writer thread: {e}"))?;
        Ok(Embedded { name, db, writes })
    }

    /// Checks the file at `path`, if there is one, without writing to it.
    pub(super) fn inspect(path: &Path) -> Result<(), String> {
        if !path.exists() {
            return Ok(());
        }
        refuse_empty(path)?;
        open_checked(path, || ReadOnlyDatabase::open(path)).map(drop)
    }

    pub(super) fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let read = self.db.begin_read().map_err(|e| self.failed(e))?;
        let table = read.open_table(TABLE).map_err(|e| self.failed(e))?;
        let value = table.get(key).map_err(|e| self.failed(e))?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    pub(super) fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let read = self.db.begin_read().map_err(|e| self.failed(e))?;
        let table = read.open_table(TABLE).map_err(|e| self.failed(e))?;
        keys.iter()
            .map(|key| {
                let value = table.get(key.as_str()).map_err(|e| self.failed(e))?;
                Ok(value.map(|v| v.value().to_vec()))
            })
            .collect()
    }

    /// Keys in order, from just after `cursor` (the last key of the page
    /// before), [`PAGE_KEYS`] at a time.
    pub(super) fn list_keys(
        &self,
        cursor: Option<&str>,
    ) -> Result<(Vec<String>, Option<String>), StoreError> {
        let read = self.db.begin_read().map_err(|e| self.failed(e))?;
        let table = read.open_table(TABLE).map_err(|e| self.failed(e))?;
        let start: Bound<&str> = cursor.map_or(Bound::Unbounded, Bound::Excluded);
        let mut range = table
            .range((start, Bound::Unbounded))
            .map_err(|e| self.failed(e))?;
        let mut keys = Vec::new();
        for entry in range.by_ref().take(PAGE_KEYS) {
            let (key, _) = entry.map_err(|e| self.failed(e))?;
            keys.push(key.value().to_owned());
        }
        let more = range.next().is_some();
        let next = if more { keys.last().cloned() } else { None };
        Ok((keys, next))
    }

    pub(super) async fn set(&self, key: String, value: Vec<u8>) -> Result<(), StoreError> {
        self.set_many(vec![(key, value)]).await
    }

    pub(super) async fn set_many(&self, pairs: Vec<(String, Vec<u8>)>) -> Result<(), StoreError> {
        self.write(WriteOp::Set(pairs)).await.map(drop)
    }

    pub(super) async fn delete(&self, keys: Vec<String>) -> Result<(), StoreError> {
        self.write(WriteOp::Delete(keys)).await.map(drop)
    }

    pub(super) async fn increment(&self, key: String, delta: i64) -> Result<i64, StoreError> {
        match self.write(WriteOp::Increment(key, delta)).await? {
            Written::Count(n) => Ok(n),
            _ => unreachable!("an increment is answered with its count"),
        }
    }

    pub(super) async fn swap(
        &self,
        key: String,
        expected: Option<Vec<u8>>,
        value: Vec<u8>,
    ) -> Result<Swap, StoreError> {
        let op = WriteOp::Swap {
            key,
            expected,
            value,
        };
        match self.write(op).await? {
            Written::Swap(swap) => Ok(swap),
            _ => unreachable!("a swap is answered with its outcome"),
        }
    }

    /// Hands `op` to the writer thread and waits until it is committed.
    async fn write(&self, op: WriteOp) -> Result<Written, StoreError> {
        let (done, written) = oneshot::channel();
        let gone = || StoreError::Failed(format!("store `{}`: its writer has stopped", self.name));
        self.writes.send(Write { op, done }).map_err(|_| gone())?;
        written.await.map_err(|_| gone())?
    }

    fn failed(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Failed(format!("store `{}`: {e}", self.name))
    }
}

/// The thread that commits every write of one store.
struct Writer {
    name: Arc<str>,
    db: Arc<Database>,
    path: PathBuf,
    max_bytes: u64,
}

impl Writer {
    /// Commits batches until every [`Embedded`] handle is gone.
    fn run(self, queue: mpsc::Receiver<Write>) {
        while let Ok(first) = queue.recv() {
            let mut batch = vec![first];
            batch.extend(queue.try_iter().take(MAX_BATCH - 1));
            match self.commit(&batch) {
                Ok(results) => {
                    for (write, result) in batch.into_iter().zip(results) {
                        let _ = write.done.send(result);
                    }
                }
                Err(e) => {
                    tracing::error!(store = %self.name, file = %self.path.display(), error = %e, "store commit failed");
                    let error = StoreError::Failed(format!(
                        "store `{}`: the write was not committed: {e}",
                        self.name
                    ));
                    for write in batch {
                        let _ = write.done.send(Err(error.clone()));
                    }
                }
            }
        }
    }

    /// Applies `batch` in one durable transaction: each write's own result,
    /// or an error for the whole batch when the transaction fails.
    fn commit(&self, batch: &[Write]) -> Result<Vec<Result<Written, StoreError>>, redb::Error> {
        let full = std::fs::metadata(&self.path).is_ok_and(|m| m.len() >= self.max_bytes);
        // redb's default durability, `Immediate`: on disk when commit returns.
        let txn = self.db.begin_write()?;
        let results = {
            let mut table = txn.open_table(TABLE)?;
            batch
                .iter()
                .map(|write| self.apply(&mut table, &write.op, full))
                .collect::<Result<Vec<_>, redb::Error>>()?
        };
        // A batch of swaps that all lost, or of refused writes, changed
        // nothing: it needs no fsync.
        if results.iter().all(|r| !changes(r)) {
            txn.abort()?;
        } else {
            txn.commit()?;
        }
        Ok(results)
    }

    /// One write inside the batch's transaction. The outer error aborts the
    /// batch; the inner one is this write's alone, which changed nothing.
    fn apply(
        &self,
        table: &mut Table<&str, &[u8]>,
        op: &WriteOp,
        full: bool,
    ) -> Result<Result<Written, StoreError>, redb::Error> {
        let grows = !matches!(op, WriteOp::Delete(_));
        if full && grows {
            return Ok(Err(StoreError::Full(format!(
                "store `{}` is full: {} has reached max_size_mib ({} MiB); deletes still work",
                self.name,
                self.path.display(),
                self.max_bytes >> 20
            ))));
        }
        Ok(Ok(match op {
            WriteOp::Set(pairs) => {
                for (key, value) in pairs {
                    table.insert(key.as_str(), value.as_slice())?;
                }
                Written::Done
            }
            WriteOp::Delete(keys) => {
                for key in keys {
                    table.remove(key.as_str())?;
                }
                Written::Done
            }
            WriteOp::Increment(key, delta) => {
                let now = match table.get(key.as_str())? {
                    Some(value) => match parse_count(&self.name, value.value()) {
                        Ok(n) => n,
                        Err(e) => return Ok(Err(e)),
                    },
                    None => 0,
                };
                let Some(sum) = now.checked_add(*delta) else {
                    return Ok(Err(StoreError::Invalid(format!(
                        "store `{}`: {now} + {delta} overflows a 64-bit integer",
                        self.name
                    ))));
                };
                table.insert(key.as_str(), sum.to_string().as_bytes())?;
                Written::Count(sum)
            }
            WriteOp::Swap {
                key,
                expected,
                value,
            } => {
                let now = table.get(key.as_str())?.map(|v| v.value().to_vec());
                if now == *expected {
                    table.insert(key.as_str(), value.as_slice())?;
                    Written::Swap(Swap::Done)
                } else {
                    Written::Swap(Swap::Changed(now))
                }
            }
        }))
    }
}

/// Whether a write's outcome changed the table.
fn changes(result: &Result<Written, StoreError>) -> bool {
    !matches!(result, Err(_) | Ok(Written::Swap(Swap::Changed(_))))
}

/// An existing empty file is not a store: redb would start it empty, and a
/// store file is never empty once made, so something cut it short.
fn refuse_empty(path: &Path) -> Result<(), String> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.len() == 0 => Err(format!(
            "{} is empty, not a store file: something cut it short; restore it from a backup, or remove it to start the store empty",
            path.display()
        )),
        _ => Ok(()),
    }
}

/// Opens a store file with `open`, turning a corrupt or torn file (even
/// one that makes redb panic) into an error naming the file.
fn open_checked<T>(
    path: &Path,
    open: impl FnOnce() -> Result<T, DatabaseError>,
) -> Result<T, String> {
    let shown = path.display();
    match catch_unwind(AssertUnwindSafe(open)) {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(DatabaseError::DatabaseAlreadyOpen)) => Err(format!(
            "{shown} is open in another process; an embedded store has one host"
        )),
        Ok(Err(DatabaseError::Storage(StorageError::Corrupted(why)))) => Err(format!(
            "{shown} is corrupt ({why}); restore it from a backup, or remove it to start the store empty"
        )),
        Ok(Err(e)) => Err(format!("{shown}: cannot open: {e}")),
        Err(_) => Err(format!(
            "{shown} is corrupt (its pages do not check out); restore it from a backup, or remove it to start the store empty"
        )),
    }
}
