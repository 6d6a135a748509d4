//! Outages: a circuit breaker in front of every command.
//!
//! Only outages count (no answer, connection lost, cluster down); an answer about the command
//! (WRONGTYPE, not an integer, OOM) is the caller's. `FAILURES_TO_OPEN` outages in a row open
//! the circuit: reads go straight to their loaders, without waiting, for the cooldown. Then one
//! caller — a request, or the background deliverer of held invalidations — probes: PING, then
//! the held invalidations; only when both succeed does the circuit close. While invalidations
//! are held the circuit stays open, so that this host never reads from Redis what they cover.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{Failure, Redis};

/// Consecutive outages that open the circuit.
pub(super) const FAILURES_TO_OPEN: u32 = 2;

pub(super) struct Circuit {
    failures: AtomicU32,
    /// Milliseconds since `start` until which the circuit stays open; 0 = closed.
    open_until: AtomicU64,
    start: Instant,
    cooldown: Duration,
    /// Held by the one caller that probes.
    probing: tokio::sync::Mutex<()>,
}

impl Circuit {
    pub fn new(cooldown: Duration) -> Circuit {
        Circuit {
            failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            start: Instant::now(),
            cooldown,
            probing: tokio::sync::Mutex::new(()),
        }
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64 + 1
    }

    /// Opens the circuit for a cooldown (again, if it is open).
    pub fn open(&self) {
        let until = self.now_ms() + self.cooldown.as_millis() as u64;
        self.open_until.store(until, Ordering::Release);
    }

    pub fn is_open(&self) -> bool {
        self.open_until.load(Ordering::Acquire) != 0
    }

    /// Whether Redis failed since it last answered (the circuit may be closed or open).
    pub fn suspect(&self) -> bool {
        self.failures.load(Ordering::Relaxed) != 0 || self.is_open()
    }

    /// An outage: the circuit opens after `FAILURES_TO_OPEN` in a row.
    pub fn failed(&self, e: &redis::RedisError) {
        let n = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
        if n >= FAILURES_TO_OPEN && !self.is_open() {
            tracing::warn!(
                "Redis failing ({e}); serving uncached for {:?}",
                self.cooldown
            );
            self.open();
        }
    }

    /// Redis answered (whatever the answer): the count of outages in a row starts over.
    pub fn answered(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
    }
}

impl Redis {
    /// Whether the breaker is open now.
    pub(crate) fn breaker_open(&self) -> bool {
        self.circuit.is_open()
    }

    /// Whether commands may go to Redis now. Past the cooldown (or with invalidations held),
    /// the caller probes.
    pub(super) async fn ready(&self) -> Result<(), Failure> {
        let until = self.circuit.open_until.load(Ordering::Acquire);
        if until == 0 && !self.held.any() {
            return Ok(());
        }
        if until != 0 && self.circuit.now_ms() < until {
            return Err(Failure::Open);
        }
        self.recover().await
    }

    /// One probe at a time: PING, deliver what is held, close the circuit. `Open` if another
    /// probe is under way.
    pub(super) async fn recover(&self) -> Result<(), Failure> {
        let Ok(_probe) = self.circuit.probing.try_lock() else {
            return Err(Failure::Open);
        };
        if !self.circuit.is_open() && !self.held.any() {
            return Ok(());
        }
        let pong: Result<String, _> = self.raw(redis::cmd("PING")).await;
        if let Err(e) = pong {
            self.circuit.open();
            return Err(e);
        }
        if let Err(e) = self.deliver_held().await {
            self.circuit.open();
            return Err(e);
        }
        self.circuit.failures.store(0, Ordering::Release);
        if self.circuit.open_until.swap(0, Ordering::AcqRel) != 0 {
            tracing::info!("Redis answers again; cache back in service");
        }
        Ok(())
    }
}
