//! The namespaced store: every key a caller or a guest names lives under `{prefix}:{version}:`.
//! Direct operations (`get`, `set`, `incr`, ...) and the read path's fenced lookups and fills
//! both go through here, so there is one place that builds a full key.

use std::sync::Arc;
use std::time::Duration;

use crate::backend::memory::{Entry, Memory};
use crate::config::{Settings, TtlBuckets};
use crate::rules::{resolve_ttl, Ttl, TtlBucket};
use crate::tags::Fence;
use crate::Error;

pub(crate) struct Store {
    pub mem: Memory,
    /// `{prefix}:{version}:`
    ns: String,
    pub ttl: TtlBuckets,
}

impl Store {
    pub fn new(settings: &Settings) -> Store {
        Store {
            mem: Memory::new(settings.mem_max_bytes),
            ns: format!("{}:{}:", settings.prefix, settings.version),
            ttl: settings.ttl,
        }
    }

    /// The full key of a relative key.
    pub fn key(&self, key: &str) -> String {
        let mut k = String::with_capacity(self.ns.len() + key.len());
        k.push_str(&self.ns);
        k.push_str(key);
        k
    }

    pub fn ttl(&self, ttl: Option<Ttl>) -> Duration {
        resolve_ttl(ttl.unwrap_or(Ttl::Bucket(TtlBucket::Default)), &self.ttl)
    }

    /// Versions of (relative) tags, taken before a loader runs.
    pub fn fence<S: AsRef<str>>(&self, tags: &[S]) -> Fence {
        self.mem.tags.fence(tags.iter().map(AsRef::as_ref))
    }

    pub fn invalidate<S: AsRef<str>>(&self, tags: &[S]) {
        for t in tags {
            self.mem.tags.invalidate(t.as_ref());
        }
    }

    pub fn invalidate_all(&self) {
        self.mem.tags.invalidate_all();
    }

    pub fn get(&self, key: &str) -> Option<Arc<[u8]>> {
        self.mem.get_fresh(&self.key(key)).map(|e| e.value.clone())
    }

    /// Stores `value`; a zero TTL stores nothing. Returns whether it was stored.
    pub fn set(&self, key: &str, value: Vec<u8>, ttl: Duration, if_absent: bool) -> bool {
        if ttl.is_zero() {
            return false;
        }
        let entry = Entry::new(value.into(), self.fence::<&str>(&[]), ttl);
        let key = self.key(key);
        if if_absent {
            self.mem.insert_if_absent(&key, entry)
        } else {
            self.mem.insert(&key, entry);
            true
        }
    }

    pub fn delete(&self, key: &str) -> bool {
        self.mem.remove(&self.key(key)).is_some()
    }

    pub fn exists(&self, key: &str) -> bool {
        self.mem.get_fresh(&self.key(key)).is_some()
    }

    pub fn get_delete(&self, key: &str) -> Option<Arc<[u8]>> {
        self.mem.remove(&self.key(key)).map(|e| e.value.clone())
    }

    /// Adds `by` to the integer under `key`; an absent key counts from 0 and lives for the
    /// default TTL; an existing one keeps the time it had left.
    pub fn incr(&self, key: &str, by: i64) -> Result<i64, Error> {
        let full = self.key(key);
        let default_ttl = self.ttl(None);
        let fence = self.fence::<&str>(&[]);
        self.mem.update(&full, |cur| {
            let (old, ttl) = match cur {
                None => (0, default_ttl),
                Some(e) => match serde_json::from_slice::<i64>(&e.value) {
                    Ok(n) => (n, e.ttl.saturating_sub(e.born.elapsed())),
                    Err(_) => {
                        return (
                            None,
                            Err(Error::Value {
                                key: key.to_string(),
                                problem: "holds a value that is not an integer".into(),
                            }),
                        )
                    }
                },
            };
            let Some(new) = old.checked_add(by) else {
                return (
                    None,
                    Err(Error::Value {
                        key: key.to_string(),
                        problem: format!("{old} + {by} overflows a 64-bit integer"),
                    }),
                );
            };
            let bytes = new.to_string().into_bytes();
            (Some(Entry::new(bytes.into(), fence, ttl)), Ok(new))
        })
    }

    /// Deletes every key of the namespace that matches a Redis-style glob.
    pub fn delete_match(&self, pattern: &str) -> u64 {
        self.mem.remove_matching(&self.ns, pattern)
    }
}
