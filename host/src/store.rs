//! The namespaced store: every key a caller or a guest names lives under `{prefix}:{version}:`.
//! Direct operations (`get`, `set`, `incr`, ...) and the read path's fenced lookups and fills
//! both go through here, whatever the backend, so there is one place that builds a full key.

use std::sync::Arc;
use std::time::Duration;

use crate::backend::memory::{Entry, Memory};
use crate::backend::redis::{Redis, RedisFailure, Tokens};
use crate::config::{BackendUrl, Settings, TtlBuckets};
use crate::rules::{resolve_ttl, Ttl, TtlBucket};
use crate::tags;
use crate::Error;

pub(crate) enum Backend {
    Memory(Memory),
    Redis(Box<Redis>),
}

/// Tag versions read before a loader ran.
pub(crate) enum Fence {
    Memory(tags::Fence),
    Redis(Tokens),
}

/// What a lookup saw: the hit, if fresh, and (on Redis) the tag tokens it read, which fence a
/// fill without another round trip.
pub(crate) struct Lookup {
    pub hit: Option<Hit>,
    known: Tokens,
}

pub(crate) struct Hit {
    pub value: Arc<[u8]>,
    /// This host must refresh the entry in the background (`early_ttl`).
    pub early_due: bool,
    /// The memory entry, whose early-refresh claim is released if the refresh fails.
    entry: Option<Arc<Entry>>,
}

impl Hit {
    /// Lets a later hit try the early refresh again.
    pub fn release_early_claim(&self) {
        if let Some(e) = &self.entry {
            e.refreshing
                .store(false, std::sync::atomic::Ordering::Release);
        }
    }
}

/// Whoever holds a key's cross-host lock.
pub(crate) struct LockOwner(Option<String>);

fn unavailable(e: RedisFailure) -> Error {
    Error::Unavailable(e.to_string())
}

pub(crate) struct Store {
    pub backend: Backend,
    /// `{prefix}:{version}:`
    ns: String,
    pub ttl: TtlBuckets,
}

impl Store {
    pub async fn open(settings: &Settings) -> Result<Store, Error> {
        let ns = format!("{}:{}:", settings.prefix, settings.version);
        let backend = match &settings.url {
            BackendUrl::Memory => Backend::Memory(Memory::new(settings.mem_max_bytes)),
            BackendUrl::Redis(url) => {
                Backend::Redis(Box::new(Redis::connect(url, &settings.redis, &ns).await?))
            }
        };
        Ok(Store {
            backend,
            ns,
            ttl: settings.ttl,
        })
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

    // ---- the read path (full keys, relative tags) ----

    /// The fresh entry under `key`, if any. `refresh` gives a hit its TTL again.
    pub async fn lookup(
        &self,
        key: &str,
        tags: &[String],
        refresh: Option<Duration>,
    ) -> Result<Lookup, Error> {
        match &self.backend {
            Backend::Memory(m) => Ok(Lookup {
                hit: m.get_fresh(key).map(|e| Hit {
                    value: e.value.clone(),
                    early_due: e.claim_early_refresh(),
                    entry: Some(e),
                }),
                known: Tokens::default(),
            }),
            Backend::Redis(r) => {
                let (hit, known) = r.lookup(key, tags, refresh).await.map_err(unavailable)?;
                Ok(Lookup {
                    hit: hit.map(|h| Hit {
                        value: h.value,
                        early_due: h.early_due,
                        entry: None,
                    }),
                    known,
                })
            }
        }
    }

    /// Versions of `tags`, taken before a loader runs.
    pub async fn fence(
        &self,
        tags: &[String],
        seen: Option<&Lookup>,
        ttl: Duration,
    ) -> Result<Fence, Error> {
        match &self.backend {
            Backend::Memory(m) => Ok(Fence::Memory(m.tags.fence(tags.iter().map(String::as_str)))),
            Backend::Redis(r) => {
                let none = Tokens::default();
                let known = seen.map_or(&none, |l| &l.known);
                r.fence(tags, known, ttl)
                    .await
                    .map(Fence::Redis)
                    .map_err(unavailable)
            }
        }
    }

    /// Stores a loaded value under the fence taken before its loader ran.
    pub async fn fill(
        &self,
        key: &str,
        value: Vec<u8>,
        fence: Fence,
        ttl: Duration,
        early: Option<Duration>,
        refresh: bool,
    ) -> Result<(), Error> {
        match (&self.backend, fence) {
            (Backend::Memory(m), Fence::Memory(f)) => {
                let mut e = Entry::new(value.into(), f, ttl);
                e.early = early;
                e.refresh = refresh;
                m.insert(key, e);
                Ok(())
            }
            (Backend::Redis(r), Fence::Redis(t)) => r
                .fill(key, &value, &t, ttl, early)
                .await
                .map_err(unavailable),
            _ => unreachable!("a fence always comes from the store it fills"),
        }
    }

    /// The cross-host lock of a key (always granted in process: the in-process single flight
    /// already made this task the only loader). `None`: another host holds it.
    pub async fn try_lock(&self, key: &str) -> Result<Option<LockOwner>, Error> {
        match &self.backend {
            Backend::Memory(_) => Ok(Some(LockOwner(None))),
            Backend::Redis(r) => Ok(r
                .try_lock(key)
                .await
                .map_err(unavailable)?
                .map(|o| LockOwner(Some(o)))),
        }
    }

    pub async fn unlock(&self, key: &str, owner: LockOwner) {
        if let (Backend::Redis(r), Some(o)) = (&self.backend, owner.0) {
            r.unlock(key, &o).await;
        }
    }

    /// How long a waiter may wait for another host's load.
    pub fn lock_ttl(&self) -> Duration {
        match &self.backend {
            Backend::Memory(_) => Duration::ZERO,
            Backend::Redis(r) => r.lock_ttl(),
        }
    }

    // ---- invalidation (relative tags) ----

    /// Invalidates tags. On Redis, tags that cannot be delivered now are held and delivered
    /// before the next read from Redis.
    pub async fn invalidate<S: AsRef<str>>(&self, tags: &[S]) {
        match &self.backend {
            Backend::Memory(m) => {
                for t in tags {
                    m.tags.invalidate(t.as_ref());
                }
            }
            Backend::Redis(r) => {
                let tags: Vec<String> = tags.iter().map(|t| t.as_ref().to_string()).collect();
                r.invalidate(&tags).await;
            }
        }
    }

    /// Invalidates every cached read of the namespace.
    pub async fn invalidate_all(&self) {
        match &self.backend {
            Backend::Memory(m) => m.tags.invalidate_all(),
            Backend::Redis(r) => {
                r.invalidate_all().await;
            }
        }
    }

    // ---- direct operations (relative keys) ----

    pub async fn get(&self, key: &str) -> Result<Option<Arc<[u8]>>, Error> {
        let key = self.key(key);
        match &self.backend {
            Backend::Memory(m) => Ok(m.get_fresh(&key).map(|e| e.value.clone())),
            Backend::Redis(r) => Ok(r.get(&key).await.map_err(unavailable)?.map(Into::into)),
        }
    }

    /// Stores `value`; a zero TTL stores nothing. Returns whether it was stored.
    pub async fn set(
        &self,
        key: &str,
        value: Vec<u8>,
        ttl: Duration,
        if_absent: bool,
    ) -> Result<bool, Error> {
        if ttl.is_zero() {
            return Ok(false);
        }
        let key = self.key(key);
        match &self.backend {
            Backend::Memory(m) => {
                let entry = Entry::new(value.into(), tags::Fence::default(), ttl);
                if if_absent {
                    Ok(m.insert_if_absent(&key, entry))
                } else {
                    m.insert(&key, entry);
                    Ok(true)
                }
            }
            Backend::Redis(r) => r
                .set(&key, &value, ttl, if_absent)
                .await
                .map_err(unavailable),
        }
    }

    pub async fn delete(&self, key: &str) -> Result<bool, Error> {
        let key = self.key(key);
        match &self.backend {
            Backend::Memory(m) => Ok(m.remove(&key).is_some()),
            Backend::Redis(r) => r.delete(&key).await.map_err(unavailable),
        }
    }

    pub async fn exists(&self, key: &str) -> Result<bool, Error> {
        let key = self.key(key);
        match &self.backend {
            Backend::Memory(m) => Ok(m.get_fresh(&key).is_some()),
            Backend::Redis(r) => r.exists(&key).await.map_err(unavailable),
        }
    }

    pub async fn get_delete(&self, key: &str) -> Result<Option<Arc<[u8]>>, Error> {
        let key = self.key(key);
        match &self.backend {
            Backend::Memory(m) => Ok(m.remove(&key).map(|e| e.value.clone())),
            Backend::Redis(r) => Ok(r
                .get_delete(&key)
                .await
                .map_err(unavailable)?
                .map(Into::into)),
        }
    }

    /// Adds `by` to the integer under `key`; an absent key counts from 0 and lives for the
    /// default TTL; an existing one keeps the time it had left.
    pub async fn incr(&self, key: &str, by: i64) -> Result<i64, Error> {
        let full = self.key(key);
        let default_ttl = self.ttl(None);
        match &self.backend {
            Backend::Memory(m) => m.incr(&full, key, by, default_ttl),
            Backend::Redis(r) => r.incr(&full, by, default_ttl).await.map_err(|e| match e {
                RedisFailure::Redis(re) if re.to_string().contains("not an integer") => {
                    Error::Value {
                        key: key.to_string(),
                        problem: "holds a value that is not an integer".into(),
                    }
                }
                other => unavailable(other),
            }),
        }
    }

    /// Deletes every key of the namespace that matches a Redis-style glob.
    pub async fn delete_match(&self, pattern: &str) -> Result<u64, Error> {
        match &self.backend {
            Backend::Memory(m) => Ok(m.remove_matching(&self.ns, pattern)),
            Backend::Redis(r) => r.delete_match(pattern).await.map_err(unavailable),
        }
    }

    pub async fn ping(&self) -> Result<(), Error> {
        match &self.backend {
            Backend::Memory(_) => Ok(()),
            Backend::Redis(r) => r.ping().await.map_err(unavailable),
        }
    }

    /// Entries held by the memory backend; `None` on Redis.
    pub fn entry_count(&self) -> Option<u64> {
        match &self.backend {
            Backend::Memory(m) => Some(m.entry_count()),
            Backend::Redis(_) => None,
        }
    }

    /// Commands sent to Redis so far; `None` on memory.
    pub fn redis_commands(&self) -> Option<u64> {
        match &self.backend {
            Backend::Memory(_) => None,
            Backend::Redis(r) => Some(r.commands.load(std::sync::atomic::Ordering::Relaxed)),
        }
    }
}
