//! The read path: rule, namespaced key, fenced lookup; on a miss the loader (once per key with
//! `lock`), then a fill fenced by the tag versions read before the loader ran.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::watch;

use crate::args::ToArgs;
use crate::cache::{bump, decode, Cache};
use crate::rules::{resolve_ttl, ReadRule};
use crate::store::Lookup;
use crate::Error;

/// How often a waiter of a `lock`ed key retries when the load it waited for was invalidated
/// or failed, before it loads on its own without caching.
const MAX_FLIGHT_ROUNDS: usize = 3;

/// A finished flight: waiters look the key up again (the landed entry is only theirs if it
/// is still fresh, which the lookup checks).
type Landing = Option<()>;
type Flight = (u64, watch::Receiver<Landing>);

/// Loads in flight, by full key (for `lock`).
#[derive(Default)]
pub(crate) struct Flights {
    inflight: Mutex<HashMap<Box<str>, Flight>>,
    next_id: std::sync::atomic::AtomicU64,
}

enum Joined {
    Leader(FlightGuard),
    Waiter(watch::Receiver<Landing>),
}

/// Held by the task that loads; removes the flight and wakes the waiters when dropped (also
/// on cancellation).
pub(crate) struct FlightGuard {
    cache: Cache,
    key: Box<str>,
    id: u64,
    tx: watch::Sender<Landing>,
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        {
            let mut map = self
                .cache
                .inner
                .flights
                .inflight
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if map.get(&self.key).is_some_and(|(id, _)| *id == self.id) {
                map.remove(&self.key);
            }
        }
        let _ = self.tx.send(Some(()));
    }
}

/// A read rule with its TTL resolved and its key namespaced.
struct Plan {
    key: String,
    tags: Vec<String>,
    ttl: Duration,
    early: Option<Duration>,
    refresh: bool,
    lock: bool,
}

impl Plan {
    /// The TTL a hit gives the entry again, for sliding expiry.
    fn sliding(&self) -> Option<Duration> {
        self.refresh.then_some(self.ttl)
    }
}

impl Cache {
    /// Reads through the cache.
    ///
    /// The policy gives the key, TTL and tags for `op` called with `args`. A fresh entry is
    /// returned as is; otherwise `loader` runs and its value is stored, fenced by the versions
    /// its tags had *before* the loader ran: if a write invalidates one of them meanwhile, the
    /// value still goes back to this caller but is never served to anyone else.
    ///
    /// The cache never fails a read for its own reasons: an unknown operation, a policy error
    /// or fault, TTL 0 or a value that does not serialize all serve the loader's value
    /// uncached (logged and counted in [`Cache::stats`]). Errors are the loader's.
    ///
    /// The loader is `'static` because an `early_ttl` hit runs it in the background.
    ///
    /// ```
    /// # let rt = tokio::runtime::Runtime::new().unwrap();
    /// # rt.block_on(async {
    /// let cache = cachelet::Cache::builder().url("mem://").build().await.unwrap();
    /// // No policy declares "get_user", so this read is not cached: the loader always runs.
    /// let user: String = cache
    ///     .read("get_user", &serde_json::json!({"user_id": 1}), || async {
    ///         Ok::<_, std::io::Error>("ann".to_string())
    ///     })
    ///     .await
    ///     .unwrap();
    /// assert_eq!(user, "ann");
    /// # });
    /// ```
    pub async fn read<A, T, E, F, Fut>(&self, op: &str, args: &A, loader: F) -> Result<T, E>
    where
        A: ToArgs + ?Sized,
        T: Serialize + DeserializeOwned + Send + 'static,
        E: std::fmt::Display + Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        let Some(plan) = self.plan(op, args).await else {
            bump(&self.inner.stats.uncached);
            return Box::pin(self.load(loader)).await;
        };
        let store = &self.inner.store;
        let seen = match store.lookup(&plan.key, &plan.tags, plan.sliding()).await {
            Ok(seen) => seen,
            Err(e) => {
                tracing::debug!(op, "{e}; serving uncached");
                bump(&self.inner.stats.uncached);
                return Box::pin(self.load(loader)).await;
            }
        };
        if let Some(hit) = &seen.hit {
            match decode::<T>(&plan.key, &hit.value) {
                Ok(v) => {
                    bump(&self.inner.stats.hits);
                    if hit.early_due {
                        self.refresh_early(seen, plan, loader);
                    }
                    return Ok(v);
                }
                Err(e) => tracing::warn!(op, "{e}; reloading"),
            }
        }
        bump(&self.inner.stats.misses);
        // The miss paths are boxed: the hit path's future stays small (it is moved on every
        // read), and a miss pays for a loader anyway.
        if plan.lock {
            Box::pin(self.read_locked(op, plan, loader)).await
        } else {
            Box::pin(self.load_and_fill(&plan, Some(&seen), loader)).await
        }
    }

    /// The rule for a call, resolved; `None` when the call is not to be cached.
    async fn plan<A: ToArgs + ?Sized>(&self, op: &str, args: &A) -> Option<Plan> {
        let rule = match args.to_args() {
            Ok(a) => self.inner.policies.load().read_rule(op, &a).await,
            Err(e) => Err(e),
        };
        let rule = match rule {
            Ok(Some(r)) => r,
            Ok(None) => return None,
            Err(Error::UnknownOp(_)) => {
                self.warn_once(
                    op,
                    format_args!("operation {op:?} is declared by no policy: not cached"),
                );
                return None;
            }
            Err(e) => {
                if !matches!(e, Error::Guest { .. }) {
                    bump(&self.inner.stats.policy_errors);
                }
                tracing::warn!(op, "serving uncached: {e}");
                return None;
            }
        };
        let ReadRule {
            key,
            ttl,
            tags,
            early_ttl,
            refresh,
            lock,
        } = rule;
        let ttl = resolve_ttl(ttl, &self.inner.store.ttl);
        if ttl.is_zero() {
            return None;
        }
        Some(Plan {
            key: self.inner.store.key(&key),
            tags,
            ttl,
            early: early_ttl
                .map(|s| Duration::from_secs(u64::from(s)))
                .filter(|e| *e < ttl),
            refresh,
            lock,
        })
    }

    async fn load<T, E, Fut>(&self, loader: impl FnOnce() -> Fut) -> Result<T, E>
    where
        Fut: Future<Output = Result<T, E>>,
    {
        bump(&self.inner.stats.loads);
        loader().await
    }

    /// Fence, load, fill. The fence is taken before the loader runs; `seen` (a lookup just
    /// made) saves reading tag versions twice. If the backend fails, the value is still
    /// returned, uncached.
    async fn load_and_fill<T, E, Fut>(
        &self,
        plan: &Plan,
        seen: Option<&Lookup>,
        loader: impl FnOnce() -> Fut,
    ) -> Result<T, E>
    where
        T: Serialize,
        Fut: Future<Output = Result<T, E>>,
    {
        let store = &self.inner.store;
        let fence = store.fence(&plan.tags, seen, plan.ttl).await;
        let value = self.load(loader).await?;
        let fence = match fence {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!(key = plan.key, "not cached: {e}");
                return Ok(value);
            }
        };
        match serde_json::to_vec(&value) {
            Ok(bytes) => {
                if let Err(e) = store
                    .fill(&plan.key, bytes, fence, plan.ttl, plan.early, plan.refresh)
                    .await
                {
                    tracing::debug!(key = plan.key, "not cached: {e}");
                }
            }
            Err(err) => {
                tracing::warn!(
                    key = plan.key,
                    "value not cached, it does not serialize: {err}"
                );
            }
        }
        Ok(value)
    }

    /// Stampede control: in this process, the first miss of a key loads and the others wait
    /// for it; across hosts, the loader is the one that takes the key's lock in the backend,
    /// and the others look again with a growing pause (a few commands each, not a busy poll)
    /// until its value lands or the lock expires. A waiter only takes a landed value if it is
    /// still fresh, so a write during the load is never hidden from it.
    async fn read_locked<T, E, F, Fut>(&self, op: &str, plan: Plan, loader: F) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let store = &self.inner.store;
        for _ in 0..MAX_FLIGHT_ROUNDS {
            match self.join(&plan.key) {
                Joined::Leader(_guard) => {
                    let deadline = tokio::time::Instant::now() + store.lock_ttl();
                    let mut pause = Duration::from_millis(5);
                    loop {
                        // Another task or host may have filled the key since our lookup.
                        let seen = match store.lookup(&plan.key, &plan.tags, None).await {
                            Ok(seen) => seen,
                            Err(_) => break,
                        };
                        if let Some(v) = seen
                            .hit
                            .as_ref()
                            .and_then(|h| decode::<T>(&plan.key, &h.value).ok())
                        {
                            return Ok(v);
                        }
                        match store.try_lock(&plan.key).await {
                            Ok(Some(owner)) => {
                                let out = self.load_and_fill(&plan, Some(&seen), loader).await;
                                store.unlock(&plan.key, owner).await;
                                return out;
                            }
                            Ok(None) => {}
                            Err(_) => break,
                        }
                        if tokio::time::Instant::now() + pause > deadline {
                            break;
                        }
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_millis(200));
                    }
                    break;
                }
                Joined::Waiter(mut rx) => {
                    bump(&self.inner.stats.coalesced);
                    let _ = rx.wait_for(Option::is_some).await;
                    if let Ok(seen) = store.lookup(&plan.key, &plan.tags, None).await {
                        if let Some(v) = seen
                            .hit
                            .as_ref()
                            .and_then(|h| decode::<T>(&plan.key, &h.value).ok())
                        {
                            return Ok(v);
                        }
                    }
                    // The load failed, was cancelled, or was invalidated while in flight: go
                    // again (a new flight, or the fresh entry another one stored).
                }
            }
        }
        tracing::warn!(op, key = plan.key, "lock: no fresh value, loading uncached");
        bump(&self.inner.stats.uncached);
        self.load(loader).await
    }

    fn join(&self, key: &str) -> Joined {
        let flights = &self.inner.flights;
        let mut map = flights.inflight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, rx)) = map.get(key) {
            return Joined::Waiter(rx.clone());
        }
        let (tx, rx) = watch::channel(None);
        let id = flights.next_id.fetch_add(1, Ordering::Relaxed);
        map.insert(key.into(), (id, rx));
        Joined::Leader(FlightGuard {
            cache: self.clone(),
            key: key.into(),
            id,
            tx,
        })
    }

    /// Runs the loader in the background and stores its value, fenced as any fill. If it fails,
    /// the next hit in the early window tries again.
    fn refresh_early<T, E, F, Fut>(&self, seen: Lookup, plan: Plan, loader: F)
    where
        T: Serialize + Send + 'static,
        E: std::fmt::Display + Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            if let Some(h) = &seen.hit {
                h.release_early_claim();
            }
            return;
        };
        bump(&self.inner.stats.early_refreshes);
        let cache = self.clone();
        rt.spawn(async move {
            // The fence is read afresh: the tokens `seen` holds are the ones the hit validated.
            if let Err(e) = cache.load_and_fill(&plan, Some(&seen), loader).await {
                tracing::warn!(key = plan.key, "early refresh failed: {e}");
                if let Some(h) = &seen.hit {
                    h.release_early_claim();
                }
            }
        });
    }
}
