//! One handler's instances: how many may run at once, and which are kept
//! for a next message.
//!
//! With `reuse` above 1, an instance that returned normally is kept for
//! the next message until it has served `reuse` of them. One that trapped,
//! timed out or hit a limit is dropped: its state is not to be trusted.
//! One grown past half its memory cap is dropped too: a garbage-collected
//! runtime (JavaScript's) grows its heap message after message, and the
//! message that finally hit the cap would fail.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use wasmtime::Store;

use super::world::Guest;
use super::{HostState, lock};

/// The instances of one handler: those running, held to `max_instances`,
/// and those kept between messages.
pub(super) struct InstancePool {
    /// Instances running now. A full handler answers "busy" at once, so
    /// nothing ever waits here and a counter serves where a semaphore
    /// would take a lock on release.
    running: AtomicU32,
    max: u32,
    /// Messages one instance may serve (`reuse`); 1 means a fresh instance
    /// per message.
    uses_per_instance: u32,
    /// Bytes of linear memory an instance may have grown to and be kept.
    keep_below: usize,
    /// Instances between messages.
    kept: Mutex<Vec<Kept>>,
}

/// An instance: its store and the guest instantiated in it.
pub(super) type Instance = (Store<HostState>, Guest);

/// An instance kept for its next message, with how many it has served.
struct Kept {
    store: Store<HostState>,
    guest: Guest,
    served: u32,
}

/// One message's place among the running instances, held until its
/// instance is given back (or dropped, when the message fails before its
/// instance exists).
pub(super) struct Lease<'a> {
    running: &'a AtomicU32,
    /// Messages its instance served before this one.
    served: u32,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        self.running.fetch_sub(1, Ordering::Release);
    }
}

impl InstancePool {
    /// A pool for `max_instances` running at once, each serving up to
    /// `reuse` messages while its linear memory stays within half of
    /// `max_memory` bytes.
    pub(super) fn new(max_instances: u32, reuse: u32, max_memory: usize) -> InstancePool {
        InstancePool {
            running: AtomicU32::new(0),
            max: max_instances,
            uses_per_instance: reuse.max(1),
            keep_below: max_memory / 2,
            kept: Mutex::new(Vec::new()),
        }
    }

    /// Instances that may run at once.
    pub(super) fn max(&self) -> u32 {
        self.max
    }

    /// Room to run one message, with a kept instance and its store when
    /// one is waiting (else the caller makes a new one); `None` when all
    /// `max` instances are running.
    pub(super) fn take(&self) -> Option<(Lease<'_>, Option<Instance>)> {
        self.running
            .fetch_update(Ordering::Acquire, Ordering::Relaxed, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()?;
        let lease = |served| Lease {
            running: &self.running,
            served,
        };
        // With a fresh instance per message nothing is ever kept: no lock.
        let kept = (self.uses_per_instance > 1)
            .then(|| lock(&self.kept).pop())
            .flatten();
        Some(match kept {
            Some(Kept {
                store,
                guest,
                served,
            }) => (lease(served), Some((store, guest))),
            None => (lease(0), None),
        })
    }

    /// Ends one message's run. `guest` is its instance when the call
    /// returned normally, `None` when it trapped, timed out or hit a limit;
    /// the instance is kept for the next message if it may serve more and
    /// has stayed within its memory, else dropped with its store.
    pub(super) fn give_back(
        &self,
        lease: Lease<'_>,
        store: Store<HostState>,
        guest: Option<Guest>,
    ) {
        let served = lease.served + 1;
        match guest {
            Some(guest)
                if served < self.uses_per_instance && store.data().memory() <= self.keep_below =>
            {
                lock(&self.kept).push(Kept {
                    store,
                    guest,
                    served,
                });
            }
            // Its pool slot is free before the count says so.
            _ => drop(store),
        }
        drop(lease);
    }
}
