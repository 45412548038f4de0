//! Rate limits for log lines a client can cause at will.
//!
//! A peer can send bad signatures, malformed frames or broken TLS
//! handshakes as fast as it likes; a line for each would let it flood the
//! log and bury everything else. Each kind of refusal is logged at most
//! [`LINES_PER_SECOND`] times a second, and the next line logged after some
//! were held back says how many (`suppressed=N`). The metrics still count
//! every refusal.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lines of one kind logged per second at most.
pub const LINES_PER_SECOND: u32 = 10;

const WINDOW: Duration = Duration::from_secs(1);

/// One kind of refusal's budget of log lines.
pub struct LogThrottle {
    state: Mutex<State>,
}

struct State {
    /// When the current one-second window opened; `None` before any line.
    opened: Option<Instant>,
    logged: u32,
    /// Lines held back since the last one logged.
    suppressed: u64,
}

impl LogThrottle {
    pub const fn new() -> LogThrottle {
        LogThrottle {
            state: Mutex::new(State {
                opened: None,
                logged: 0,
                suppressed: 0,
            }),
        }
    }

    /// `Some(held back so far)` when one more line may be logged now, to
    /// go in that line; `None` when this one is to be held back.
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(Instant::now())
    }

    fn admit_at(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.opened.is_none_or(|opened| now >= opened + WINDOW) {
            state.opened = Some(now);
            state.logged = 0;
        }
        if state.logged == LINES_PER_SECOND {
            state.suppressed += 1;
            return None;
        }
        state.logged += 1;
        Some(std::mem::take(&mut state.suppressed))
    }
}

impl Default for LogThrottle {
    fn default() -> Self {
        LogThrottle::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_cut_to_the_budget_and_the_next_window_reports_what_was_held_back() {
        let throttle = LogThrottle::new();
        let start = Instant::now();
        let admitted: Vec<_> = (0..100).filter_map(|_| throttle.admit_at(start)).collect();
        assert_eq!(admitted, vec![0; LINES_PER_SECOND as usize]);
        let later = start + WINDOW;
        assert_eq!(
            throttle.admit_at(later),
            Some(100 - u64::from(LINES_PER_SECOND))
        );
        assert_eq!(throttle.admit_at(later), Some(0));
    }
}
