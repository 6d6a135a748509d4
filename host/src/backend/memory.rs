//! The in-process backend: a bounded moka cache of entries, with versioned tags.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Backend, Fill, Held, Invalidation, Look, Lookup};

use moka::ops::compute::Op;
use moka::sync::Cache as Moka;
use moka::Expiry;

use crate::tags::{Fence, TagIndex};

/// One cached value with what decides its freshness.
pub(crate) struct Entry {
    /// The serialized value (JSON by default).
    pub value: bytes::Bytes,
    /// Tag versions read before the value was loaded.
    pub fence: Fence,
    /// When the value was stored (for `early_ttl`).
    pub born: Instant,
    pub ttl: Duration,
    /// Age after which a hit refreshes the entry in the background.
    pub early: Option<Duration>,
    /// Sliding expiry.
    pub refresh: bool,
    /// Set by the one hit that starts the early refresh.
    pub refreshing: AtomicBool,
    /// Stored by a direct operation (`set`, `incr`): the read path never serves it.
    pub direct: bool,
}

impl Entry {
    /// An entry of a direct operation.
    pub fn direct(value: bytes::Bytes, ttl: Duration) -> Entry {
        Entry {
            value,
            fence: Fence::default(),
            born: Instant::now(),
            ttl,
            early: None,
            refresh: false,
            refreshing: AtomicBool::new(false),
            direct: true,
        }
    }

    /// Whether this hit is the one that must start an early refresh.
    pub fn claim_early_refresh(&self) -> bool {
        match self.early {
            Some(early) if self.born.elapsed() >= early => {
                !self.refreshing.swap(true, Ordering::AcqRel)
            }
            _ => false,
        }
    }
}

struct EntryExpiry;

impl Expiry<String, Arc<Entry>> for EntryExpiry {
    fn expire_after_create(&self, _: &String, e: &Arc<Entry>, _: Instant) -> Option<Duration> {
        Some(e.ttl)
    }
    fn expire_after_read(
        &self,
        _: &String,
        e: &Arc<Entry>,
        _: Instant,
        left: Option<Duration>,
        _: Instant,
    ) -> Option<Duration> {
        if e.refresh {
            Some(e.ttl)
        } else {
            left
        }
    }
    fn expire_after_update(
        &self,
        _: &String,
        e: &Arc<Entry>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(e.ttl)
    }
}

/// Bytes an entry is charged against the memory bound: key, value, fence and bookkeeping.
fn weight(key: &str, e: &Entry) -> u32 {
    let w = key.len() + e.value.len() + 24 * e.fence.len() + 160;
    u32::try_from(w).unwrap_or(u32::MAX)
}

/// The memory backend. Keys are full (namespaced) keys.
pub(crate) struct Memory {
    entries: Moka<String, Arc<Entry>>,
    pub tags: TagIndex,
}

impl Memory {
    pub fn new(max_bytes: u64) -> Memory {
        Memory {
            entries: Moka::builder()
                .max_capacity(max_bytes)
                .weigher(|k: &String, e: &Arc<Entry>| weight(k, e))
                .expire_after(EntryExpiry)
                .build(),
            tags: TagIndex::new(),
        }
    }

    /// The entry under `key` if it is present and none of its tags was invalidated.
    pub fn get_fresh(&self, key: &str) -> Option<Arc<Entry>> {
        self.entries.get(key).filter(|e| e.fence.is_current())
    }

    /// The read path's fresh entry under `key` (never one a direct operation stored).
    fn get_read(&self, key: &str) -> Option<Arc<Entry>> {
        self.get_fresh(key).filter(|e| !e.direct)
    }

    pub fn insert(&self, key: &str, entry: Entry) {
        self.entries.insert(key.into(), Arc::new(entry));
    }

    /// Stores `entry` unless a fresh entry is there; returns whether it was stored.
    pub fn insert_if_absent(&self, key: &str, entry: Entry) -> bool {
        let mut stored = false;
        self.entries
            .entry_by_ref(key)
            .and_compute_with(|cur| match cur {
                Some(c) if c.value().fence.is_current() => Op::Nop,
                _ => {
                    stored = true;
                    Op::Put(Arc::new(entry))
                }
            });
        stored
    }

    /// Atomically replaces the entry with `f(current fresh entry)`; `None` leaves it alone.
    pub fn update<R>(&self, key: &str, f: impl FnOnce(Option<&Entry>) -> (Option<Entry>, R)) -> R {
        let mut out = None;
        self.entries.entry_by_ref(key).and_compute_with(|cur| {
            let fresh = cur
                .as_ref()
                .map(|c| c.value())
                .filter(|e| e.fence.is_current());
            let (new, r) = f(fresh.map(|e| &**e));
            out = Some(r);
            match new {
                Some(e) => Op::Put(Arc::new(e)),
                None => Op::Nop,
            }
        });
        out.expect("compute closure ran")
    }

    /// Adds `by` to the integer under `key` (`name` is the key as the caller gave it, for
    /// errors). An absent key counts from 0 and lives `ttl`; an existing one keeps its time.
    pub fn add(
        &self,
        key: &str,
        name: &str,
        by: i64,
        ttl: Duration,
    ) -> Result<i64, crate::error::Error> {
        let bad = |problem: String| crate::error::Error::Value {
            key: name.to_string(),
            problem,
        };
        self.update(key, |cur| {
            let (old, ttl) = match cur {
                None => (0, ttl),
                Some(e) => match serde_json::from_slice::<i64>(&e.value) {
                    Ok(n) => (n, e.ttl.saturating_sub(e.born.elapsed())),
                    Err(_) => {
                        return (
                            None,
                            Err(bad("holds a value that is not an integer".into())),
                        )
                    }
                },
            };
            let Some(new) = old.checked_add(by) else {
                return (
                    None,
                    Err(bad(format!("{old} + {by} overflows a 64-bit integer"))),
                );
            };
            let bytes = new.to_string().into_bytes();
            (Some(Entry::direct(bytes.into(), ttl)), Ok(new))
        })
    }

    /// Removes `key`, returning the entry if it was fresh.
    pub fn remove(&self, key: &str) -> Option<Arc<Entry>> {
        self.entries.remove(key).filter(|e| e.fence.is_current())
    }

    /// Removes every key that starts with `prefix` and matches `pattern` (after the prefix).
    pub fn remove_matching(&self, prefix: &str, pattern: &str) -> u64 {
        let mut n = 0;
        let doomed: Vec<Arc<String>> = self
            .entries
            .iter()
            .filter(|(k, _)| {
                k.strip_prefix(prefix)
                    .is_some_and(|rest| super::glob_match(pattern.as_bytes(), rest.as_bytes()))
            })
            .map(|(k, _)| k)
            .collect();
        for k in doomed {
            if self.entries.remove(&**k).is_some() {
                n += 1;
            }
        }
        n
    }

    /// The entries' weighted size in bytes.
    pub fn weighted_size(&self) -> u64 {
        self.entries.weighted_size()
    }

    /// Entries held (including ones not yet swept after expiry).
    pub fn entry_count(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.entry_count()
    }
}

impl Backend for Memory {
    /// The entry a hit returned, whose early-refresh claim can be released.
    type Seen = Option<Arc<Entry>>;
    type Fence = Fence;

    async fn lookup(
        &self,
        key: &str,
        _tags: &[String],
        _look: Look,
    ) -> Result<Lookup<Self::Seen>, crate::error::Error> {
        // Sliding expiry is moka's `expire_after_read`; the fence is in the entry.
        Ok(match self.get_read(key) {
            Some(e) => Lookup {
                hit: Some(super::Hit {
                    value: e.value.clone(),
                    early_due: e.claim_early_refresh(),
                }),
                seen: Some(e),
            },
            None => Lookup {
                hit: None,
                seen: None,
            },
        })
    }

    async fn fence(
        &self,
        tags: &[String],
        _seen: Option<&Self::Seen>,
        _ttl: Duration,
    ) -> Result<Fence, crate::error::Error> {
        Ok(self.tags.fence(tags.iter().map(String::as_str)))
    }

    async fn fill(
        &self,
        key: &str,
        _tags: &[String],
        value: bytes::Bytes,
        fence: Fence,
        fill: Fill,
    ) -> Result<(), crate::error::Error> {
        self.insert(
            key,
            Entry {
                value,
                fence,
                born: Instant::now(),
                ttl: fill.ttl,
                early: fill.early,
                refresh: fill.refresh,
                refreshing: AtomicBool::new(false),
                direct: false,
            },
        );
        Ok(())
    }

    async fn release_early(&self, _key: &str, seen: &Self::Seen) {
        if let Some(e) = seen {
            e.refreshing.store(false, Ordering::Release);
        }
    }

    async fn try_lock(&self, _key: &str) -> Result<Option<Held>, crate::error::Error> {
        Ok(Some(Held(None)))
    }

    async fn extend_lock(&self, _key: &str, _held: &Held) -> bool {
        true
    }

    async fn unlock(&self, _key: &str, _held: Held) {}

    fn lock_ttl(&self) -> Duration {
        Duration::ZERO
    }

    async fn sequence(&self) -> Result<u64, crate::error::Error> {
        Ok(self.tags.sequence())
    }

    async fn invalidated_since(
        &self,
        since: u64,
        tags: &[String],
    ) -> Result<bool, crate::error::Error> {
        Ok(self.tags.invalidated_since(since, tags))
    }

    async fn invalidate(&self, tags: &[String]) -> Invalidation {
        if !tags.is_empty() {
            self.tags.advance(Some(tags));
        }
        for t in tags {
            self.tags.invalidate(t);
        }
        if tags.is_empty() {
            Invalidation::Nothing
        } else {
            Invalidation::Delivered
        }
    }

    async fn invalidate_all(&self) -> Invalidation {
        self.tags.advance(None);
        self.tags.invalidate_all();
        Invalidation::Delivered
    }

    async fn get(&self, key: &str) -> Result<Option<bytes::Bytes>, crate::error::Error> {
        Ok(self.get_fresh(key).map(|e| e.value.clone()))
    }

    async fn set(
        &self,
        key: &str,
        value: Vec<u8>,
        ttl: Duration,
        if_absent: bool,
    ) -> Result<bool, crate::error::Error> {
        let entry = Entry::direct(value.into(), ttl);
        if if_absent {
            Ok(self.insert_if_absent(key, entry))
        } else {
            self.insert(key, entry);
            Ok(true)
        }
    }

    async fn delete(&self, key: &str) -> Result<bool, crate::error::Error> {
        Ok(self.remove(key).is_some())
    }

    async fn get_delete(&self, key: &str) -> Result<Option<bytes::Bytes>, crate::error::Error> {
        Ok(self.remove(key).map(|e| e.value.clone()))
    }

    async fn incr(
        &self,
        key: &str,
        name: &str,
        by: i64,
        ttl: Duration,
    ) -> Result<i64, crate::error::Error> {
        self.add(key, name, by, ttl)
    }

    async fn delete_match(&self, ns: &str, pattern: &str) -> Result<u64, crate::error::Error> {
        Ok(self.remove_matching(ns, pattern))
    }

    async fn ping(&self) -> Result<(), crate::error::Error> {
        Ok(())
    }
}
