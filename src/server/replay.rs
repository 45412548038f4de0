//! Replay protection: a stamped envelope is accepted once, and only while
//! its timestamp is within the window of the host's clock.
//!
//! Memory is bounded: a nonce is remembered only until its timestamp falls
//! out of the window (after that the timestamp alone refuses a replay), and
//! at most `max_nonces` at once. When that many fresh envelopes arrived
//! within one window, further ones are refused rather than the cache grown:
//! forgetting a live nonce early would let its envelope be replayed.

use std::collections::{BTreeSet, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use arrpc_wire::envelope::Stamp;

/// Nonces shorter than this carry too little randomness to be unique.
const MIN_NONCE: usize = 8;
/// Nonces longer than this would only inflate the cache.
const MAX_NONCE: usize = 64;

/// Why a stamped envelope was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    #[error("timestamp is {skew_ms} ms from the host clock, outside the {window:?} window")]
    OutsideWindow { skew_ms: i128, window: Duration },
    #[error("nonce was already used within the window (replayed envelope)")]
    Replayed,
    #[error("nonce must be {MIN_NONCE} to {MAX_NONCE} bytes, not {0}")]
    BadNonce(usize),
    #[error("{0} nonces are already remembered; refusing until some expire")]
    Full(usize),
}

/// The window and the nonces seen in it; shared by every connection.
pub struct ReplayGuard {
    window_ms: u64,
    window: Duration,
    max_nonces: usize,
    seen: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    nonces: HashSet<Box<[u8]>>,
    /// The same nonces ordered by when they may be forgotten.
    by_expiry: BTreeSet<(u64, Box<[u8]>)>,
}

impl ReplayGuard {
    pub fn new(window: Duration, max_nonces: usize) -> Self {
        ReplayGuard {
            window_ms: window.as_millis().try_into().unwrap_or(u64::MAX),
            window,
            max_nonces,
            seen: Mutex::new(Seen::default()),
        }
    }

    /// Accepts `stamp` once, judged at `now_ms` (Unix time in ms).
    pub fn check(&self, stamp: Stamp<'_>, now_ms: u64) -> Result<(), ReplayError> {
        let skew_ms = i128::from(now_ms) - i128::from(stamp.timestamp_ms);
        if skew_ms.unsigned_abs() > u128::from(self.window_ms) {
            return Err(ReplayError::OutsideWindow {
                skew_ms,
                window: self.window,
            });
        }
        if !(MIN_NONCE..=MAX_NONCE).contains(&stamp.nonce.len()) {
            return Err(ReplayError::BadNonce(stamp.nonce.len()));
        }
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(first) = seen.by_expiry.first() {
            if first.0 >= now_ms {
                break;
            }
            let (_, nonce) = seen.by_expiry.pop_first().expect("checked above");
            seen.nonces.remove(&nonce);
        }
        if seen.nonces.contains(stamp.nonce) {
            return Err(ReplayError::Replayed);
        }
        if seen.nonces.len() >= self.max_nonces {
            return Err(ReplayError::Full(self.max_nonces));
        }
        let nonce: Box<[u8]> = stamp.nonce.into();
        let expiry = stamp.timestamp_ms.saturating_add(self.window_ms);
        seen.by_expiry.insert((expiry, nonce.clone()));
        seen.nonces.insert(nonce);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(timestamp_ms: u64, nonce: &[u8]) -> Stamp<'_> {
        Stamp {
            timestamp_ms,
            nonce,
        }
    }

    #[test]
    fn a_nonce_is_accepted_once_within_the_window() {
        let guard = ReplayGuard::new(Duration::from_secs(10), 100);
        assert_eq!(
            guard.check(stamp(1_000_000, b"nonce-01"), 1_000_500),
            Ok(())
        );
        assert_eq!(
            guard.check(stamp(1_000_000, b"nonce-01"), 1_000_600),
            Err(ReplayError::Replayed)
        );
        // A little ahead of the host's clock is fine too.
        assert_eq!(
            guard.check(stamp(1_005_000, b"nonce-02"), 1_000_000),
            Ok(())
        );
    }

    #[test]
    fn stamps_outside_the_window_are_refused() {
        let guard = ReplayGuard::new(Duration::from_secs(10), 100);
        assert!(matches!(
            guard.check(stamp(1_000_000, b"nonce-01"), 1_010_001),
            Err(ReplayError::OutsideWindow {
                skew_ms: 10_001,
                ..
            })
        ));
        assert!(matches!(
            guard.check(stamp(1_020_000, b"nonce-01"), 1_000_000),
            Err(ReplayError::OutsideWindow { .. })
        ));
        assert_eq!(
            guard.check(stamp(1_000_000, b"short"), 1_000_000),
            Err(ReplayError::BadNonce(5))
        );
    }

    #[test]
    fn a_full_cache_refuses_until_nonces_expire() {
        let guard = ReplayGuard::new(Duration::from_secs(1), 2);
        assert_eq!(guard.check(stamp(10_000, b"nonce-01"), 10_000), Ok(()));
        assert_eq!(guard.check(stamp(10_500, b"nonce-02"), 10_500), Ok(()));
        assert_eq!(
            guard.check(stamp(10_600, b"nonce-03"), 10_600),
            Err(ReplayError::Full(2))
        );
        // nonce-01 expires at 11_000; its slot is free again after that.
        assert_eq!(guard.check(stamp(11_001, b"nonce-03"), 11_001), Ok(()));
        assert_eq!(
            guard.check(stamp(11_002, b"nonce-02"), 11_002),
            Err(ReplayError::Replayed)
        );
    }
}
