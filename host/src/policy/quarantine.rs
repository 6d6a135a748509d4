//! Quarantine: a policy that keeps faulting (traps, deadlines, memory) is no longer called.
//!
//! Every fault is counted in a sliding window; at the bound the policy is quarantined: its ops
//! are served uncached without a call (so a broken version costs no instance, no retry storm)
//! until a new version of it is loaded, which starts with a clean record.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Faults within [`WINDOW`] that quarantine a policy.
pub(crate) const BOUND: usize = 20;
/// The window the faults are counted in.
pub(crate) const WINDOW: Duration = Duration::from_secs(10);

#[derive(Default)]
pub(crate) struct Quarantine {
    /// Read by every call: a plain flag, the reason behind the lock.
    on: AtomicBool,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    recent: VecDeque<Instant>,
    reason: Option<String>,
}

impl Quarantine {
    /// Why the policy is quarantined, if it is.
    pub fn reason(&self) -> Option<String> {
        if !self.on.load(Ordering::Acquire) {
            return None;
        }
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .reason
            .clone()
    }

    /// Counts a fault; returns the reason when this one quarantines the policy.
    pub fn record(&self) -> Option<String> {
        let now = Instant::now();
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.reason.is_some() {
            return None;
        }
        while s.recent.front().is_some_and(|t| now - *t > WINDOW) {
            s.recent.pop_front();
        }
        s.recent.push_back(now);
        if s.recent.len() < BOUND {
            return None;
        }
        let reason = format!("{BOUND} faults within {WINDOW:?}");
        s.reason = Some(reason.clone());
        self.on.store(true, Ordering::Release);
        Some(reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_within_the_window_quarantines_once() {
        let q = Quarantine::default();
        for _ in 1..BOUND {
            assert_eq!(q.record(), None);
        }
        assert!(q.reason().is_none());
        assert!(q.record().unwrap().contains("faults within"));
        assert!(q.reason().is_some());
        assert_eq!(q.record(), None, "reported once");
    }
}
