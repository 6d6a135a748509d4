//! The namespaced store: every key a caller or a guest names lives under `{prefix}:{version}:`.
//! Direct operations (`get`, `set`, `incr`, ...) from callers and from guests go through here,
//! whatever the backend; the read path builds its full keys here too, so there is one place
//! that makes a full key.

use std::sync::Arc;
use std::time::Duration;

use crate::backend::{
    memory::Memory, redis::Redis, with_backend, AnyBackend, Backend, Invalidation,
};
use crate::config::{BackendUrl, Settings, TtlBuckets};
use crate::error::Error;
use crate::rules::{resolve_ttl, Ttl, TtlBucket};

pub(crate) struct Store {
    pub backend: AnyBackend,
    /// `{prefix}:{version}:`
    ns: String,
    pub ttl: TtlBuckets,
}

impl Store {
    pub async fn open(settings: &Settings) -> Result<Store, Error> {
        let ns = format!("{}:{}:", settings.prefix, settings.version);
        let backend = match &settings.url {
            BackendUrl::Memory => AnyBackend::Memory(Arc::new(Memory::new(settings.mem_max_bytes))),
            BackendUrl::Redis(url) => {
                AnyBackend::Redis(Redis::connect(url, &settings.redis, &ns).await?)
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

    /// A full key of the namespace without its namespace.
    pub fn relative<'k>(&self, full: &'k str) -> &'k str {
        full.strip_prefix(self.ns.as_str()).unwrap_or(full)
    }

    pub fn ttl(&self, ttl: Option<Ttl>) -> Duration {
        resolve_ttl(ttl.unwrap_or(Ttl::Bucket(TtlBucket::Default)), &self.ttl)
    }

    // ---- invalidation (relative tags) ----

    /// Invalidates tags. On Redis, tags that cannot be delivered now are held, and delivered
    /// by this host as soon as Redis answers.
    pub async fn invalidate<S: AsRef<str>>(&self, tags: &[S]) -> Invalidation {
        let tags: Vec<String> = tags.iter().map(|t| t.as_ref().to_string()).collect();
        with_backend!(&self.backend, b => b.invalidate(&tags).await)
    }

    /// Invalidates every cached read of the namespace: O(1).
    pub async fn invalidate_all(&self) -> Invalidation {
        with_backend!(&self.backend, b => b.invalidate_all().await)
    }

    // ---- direct operations (relative keys) ----

    pub async fn get(&self, key: &str) -> Result<Option<bytes::Bytes>, Error> {
        let key = self.key(key);
        with_backend!(&self.backend, b => b.get(&key).await)
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
        with_backend!(&self.backend, b => b.set(&key, value, ttl, if_absent).await)
    }

    pub async fn delete(&self, key: &str) -> Result<bool, Error> {
        let key = self.key(key);
        with_backend!(&self.backend, b => b.delete(&key).await)
    }

    pub async fn exists(&self, key: &str) -> Result<bool, Error> {
        Ok(self.get(key).await?.is_some())
    }

    pub async fn get_delete(&self, key: &str) -> Result<Option<bytes::Bytes>, Error> {
        let key = self.key(key);
        with_backend!(&self.backend, b => b.get_delete(&key).await)
    }

    /// Adds `by` to the integer under `key`; an absent key counts from 0 and lives for the
    /// default TTL; an existing one keeps the time it had left.
    pub async fn incr(&self, key: &str, by: i64) -> Result<i64, Error> {
        let full = self.key(key);
        let ttl = self.ttl(None);
        with_backend!(&self.backend, b => b.incr(&full, key, by, ttl).await)
    }

    /// Deletes every key of the namespace that matches a Redis-style glob.
    pub async fn delete_match(&self, pattern: &str) -> Result<u64, Error> {
        with_backend!(&self.backend, b => b.delete_match(&self.ns, pattern).await)
    }

    pub async fn ping(&self) -> Result<(), Error> {
        with_backend!(&self.backend, b => b.ping().await)
    }

    /// Entries held by the memory backend; `None` on Redis.
    pub fn entry_count(&self) -> Option<u64> {
        match &self.backend {
            AnyBackend::Memory(m) => Some(m.entry_count()),
            AnyBackend::Redis(_) => None,
        }
    }

    /// Entries and their weighted size in bytes, on the memory backend.
    /// Samples the gauges (see [`crate::metrics`]) every second while the store lives.
    pub fn sample(self: &Arc<Self>) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let store = Arc::downgrade(self);
        rt.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some(store) = store.upgrade() else { return };
                crate::metrics::store_gauges(
                    store.held(),
                    store.breaker_open(),
                    store.memory_size(),
                );
            }
        });
    }

    pub fn memory_size(&self) -> Option<(u64, u64)> {
        match &self.backend {
            AnyBackend::Memory(m) => Some((m.entry_count(), m.weighted_size())),
            AnyBackend::Redis(_) => None,
        }
    }

    /// Whether the breaker is open (Redis considered down); never on memory.
    pub fn breaker_open(&self) -> bool {
        match &self.backend {
            AnyBackend::Memory(_) => false,
            AnyBackend::Redis(r) => r.breaker_open(),
        }
    }

    /// Commands sent to Redis so far; `None` on memory.
    pub fn redis_commands(&self) -> Option<u64> {
        match &self.backend {
            AnyBackend::Memory(_) => None,
            AnyBackend::Redis(r) => Some(r.commands.load(std::sync::atomic::Ordering::Relaxed)),
        }
    }

    /// Invalidations held for delivery (always 0 on memory).
    pub fn held(&self) -> usize {
        match &self.backend {
            AnyBackend::Memory(_) => 0,
            AnyBackend::Redis(r) => r.held().0,
        }
    }

    /// Delivers held invalidations if it can; what stays held is in the journal, if any.
    pub async fn flush_held(&self) -> Invalidation {
        match &self.backend {
            AnyBackend::Memory(_) => Invalidation::Nothing,
            AnyBackend::Redis(r) => r.flush_held().await,
        }
    }
}
