//! Single flight: concurrent misses of one key in this process run one loader; the others wait
//! for what it lands — its value, or its error.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// How a flight ended.
#[derive(Clone)]
pub(crate) enum Landing {
    /// Still loading.
    Pending,
    /// The loader's value (serialized); `filled`: it is also in the backend, fenced, so a
    /// waiter that can reach the backend looks it up there (and sees a write that came in
    /// meanwhile).
    Value { value: bytes::Bytes, filled: bool },
    /// The loader's error, as its message: each waiter gets it as a [`crate::error::LoadError`].
    Failed(Arc<str>),
    /// The leader was cancelled, or could not serialize its value: waiters go again.
    Abandoned,
}

struct Flight {
    id: u64,
    /// The cache's write generation when the flight began: a reader that comes after a write
    /// of this process does not join a load that began before it.
    generation: u64,
    rx: watch::Receiver<Landing>,
}

/// Loads in flight, by full key.
#[derive(Default)]
pub(crate) struct Flights {
    inflight: Mutex<HashMap<Box<str>, Flight>>,
    next_id: AtomicU64,
}

pub(crate) enum Joined {
    Leader(FlightGuard),
    Waiter(watch::Receiver<Landing>),
}

impl Flights {
    /// Leads a new flight of `key`, or joins the one under way if it began at `generation`.
    pub fn join(self: &Arc<Self>, key: &str, generation: u64) -> Joined {
        let mut map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = map.get(key) {
            if f.generation == generation {
                return Joined::Waiter(f.rx.clone());
            }
        }
        let (tx, rx) = watch::channel(Landing::Pending);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        map.insert(key.into(), Flight { id, generation, rx });
        Joined::Leader(FlightGuard {
            flights: self.clone(),
            key: key.into(),
            id,
            tx,
            landed: false,
        })
    }
}

/// Held by the task that loads; lands the flight and wakes the waiters, also when dropped (a
/// cancelled leader lands `Abandoned`).
pub(crate) struct FlightGuard {
    flights: Arc<Flights>,
    key: Box<str>,
    id: u64,
    tx: watch::Sender<Landing>,
    landed: bool,
}

impl FlightGuard {
    pub fn land(mut self, landing: Landing) {
        self.finish(landing);
    }

    fn finish(&mut self, landing: Landing) {
        if self.landed {
            return;
        }
        self.landed = true;
        {
            let mut map = self
                .flights
                .inflight
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if map.get(&self.key).is_some_and(|f| f.id == self.id) {
                map.remove(&self.key);
            }
        }
        let _ = self.tx.send(landing);
    }
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        self.finish(Landing::Abandoned);
    }
}
