//! The read path: rule, namespaced key, fenced lookup; on a miss the loader (once per key with
//! `lock`), then a fill fenced by the tag versions read before the loader ran.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::args::ToArgs;
use crate::backend::{with_backend, Backend, Fill, Look, Lookup};
use crate::cache::{bump, Cache};
use crate::error::chain;
use crate::error::Error;
use crate::flight::{Joined, Landing};
use crate::metrics::{Outcome, ReadMetrics};
use crate::rules::{resolve_ttl, ReadRule};
use tracing::Instrument;

/// How often a waiter of a `lock`ed key goes again when the load it waited for was
/// invalidated or abandoned, before it loads on its own without caching.
const MAX_FLIGHT_ROUNDS: usize = 3;

/// How a lock's leader and waiters look a key up again: no sliding, no early claim (the
/// caller's own lookup did that).
const AGAIN: Look = Look {
    slide: None,
    early: false,
};

/// A read rule with its TTL resolved and its key namespaced.
pub(crate) struct Plan {
    pub key: String,
    pub tags: Vec<String>,
    pub ttl: Duration,
    pub early: Option<Duration>,
    pub refresh: bool,
    pub lock: bool,
    /// In this process, identical misses wait for one load (the HTTP layer's waiting list),
    /// without `lock`'s cross-host lock.
    pub coalesce: bool,
    /// How long a waiter waits for another's load at least (the cache's `lock_wait` if
    /// longer): the HTTP layer's is the upstream's timeout, so that waiters never give up on a
    /// slow origin before the request they wait for does.
    pub wait_at_least: Duration,
    /// Look the key up with the backend's clock even when the rule has no early refresh: a
    /// stored value may have asked for its own ([`Codec::storage`], e.g. an HTTP response's
    /// `stale-while-revalidate`).
    pub timed: bool,
    pub metrics: Arc<ReadMetrics>,
}

impl Plan {
    fn look(&self) -> Look {
        Look {
            slide: self.refresh.then_some(self.ttl),
            early: self.early.is_some() || self.timed,
        }
    }

    fn fill(&self) -> Fill {
        Fill {
            ttl: self.ttl,
            early: self.early,
            refresh: self.refresh,
        }
    }
}

/// How a read's value is kept in the backend: JSON for the typed API ([`Json`]); the HTTP
/// layer keeps whole responses in a form of its own, whose body it serves without a copy.
pub(crate) trait Codec: Sized {
    fn encode(&self) -> Result<bytes::Bytes, String>;
    fn decode(bytes: &bytes::Bytes) -> Result<Self, String>;
    /// Whether a stored value may still be served. One that may not (a stored HTTP response
    /// past its freshness) is a miss, and the loader gets it as the previous value (to
    /// revalidate it, or to serve it if the origin fails).
    fn usable(&self) -> bool {
        true
    }
    /// How a loaded value asks to be kept, when it knows better than the rule: its own TTL
    /// and early refresh, and tags learned with it (`None`: as the rule says).
    fn storage(&self) -> Option<Storage> {
        None
    }
}

/// How a loaded value asks to be kept ([`Codec::storage`]).
pub(crate) struct Storage {
    /// How long it lives; zero: it is not stored.
    pub ttl: Duration,
    pub early: Option<Duration>,
    /// Tags learned with the value (beside the rule's): the fill is fenced by their versions
    /// read after the load, and happens only if no invalidation of its tags landed since
    /// `since` (the backend's invalidation sequence read before the load began).
    pub tags: Vec<String>,
    pub since: Option<u64>,
}

/// A typed read's value, kept as JSON.
pub(crate) struct Json<T>(pub T);

impl<T: Serialize + DeserializeOwned> Codec for Json<T> {
    fn encode(&self) -> Result<bytes::Bytes, String> {
        serde_json::to_vec(&self.0)
            .map(bytes::Bytes::from)
            .map_err(|e| format!("it does not serialize: {e}"))
    }
    fn decode(bytes: &bytes::Bytes) -> Result<Self, String> {
        serde_json::from_slice(bytes)
            .map(Json)
            .map_err(|e| format!("stored value does not deserialize into the requested type: {e}"))
    }
}

/// A stored value, decoded if it may be served; the reason otherwise.
fn served<C: Codec>(key: &str, bytes: &bytes::Bytes) -> Result<C, Option<C>> {
    match C::decode(bytes) {
        Ok(v) if v.usable() => Ok(v),
        Ok(v) => Err(Some(v)),
        Err(e) => {
            tracing::warn!(key, "{e}; reloading");
            Err(None)
        }
    }
}

/// What a lookup served: a value, or a hit whose early refresh this caller claimed (the
/// loader is handed back to run it).
enum Served<T, S, F> {
    Value(T),
    EarlyDue(EarlyDue<T, S, F>),
}

struct EarlyDue<T, S, F> {
    value: T,
    seen: S,
    plan: Plan,
    loader: F,
}

/// A loader's value, and whether it went into the backend.
struct Loaded<T> {
    value: T,
    bytes: Option<bytes::Bytes>,
    filled: bool,
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
    /// or fault, TTL 0, a backend that does not answer or a value that does not serialize all
    /// serve the loader's value uncached (logged and counted in [`Cache::stats`]). Errors are
    /// the loader's. With `lock`, the callers waiting for another caller's load of the same key
    /// get its value, or its error as a [`LoadError`](crate::error::LoadError) (`E: From<LoadError>`),
    /// instead of loading again one after another.
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
        E: std::fmt::Display + From<crate::error::LoadError> + Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        let read = self.read_coded(op, args, move |_| async move { loader().await.map(Json) });
        // Wrapped only when the span is on: moving the whole future into `Instrumented`
        // costs the hit path a copy of it.
        let span = read_span(op);
        let out = if span.is_disabled() {
            read.await
        } else {
            read.instrument(span).await
        };
        out.map(|j| j.0)
    }

    /// [`Cache::read`] for any [`Codec`]: the loader gets the stored value that may no longer
    /// be served, if there is one.
    pub(crate) async fn read_coded<A, C, E, F, Fut>(
        &self,
        op: &str,
        args: &A,
        loader: F,
    ) -> Result<C, E>
    where
        A: ToArgs + ?Sized,
        C: Codec + Send + 'static,
        E: std::fmt::Display + From<crate::error::LoadError> + Send + 'static,
        F: FnOnce(Option<C>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<C, E>> + Send + 'static,
    {
        match self.plan(op, args).await {
            Ok(plan) => self.read_planned(op, plan, loader).await,
            Err(metrics) => Box::pin(self.uncached(&metrics, || loader(None))).await,
        }
    }

    /// The read of a plan made by [`Cache::plan`] (which the HTTP layer may have adjusted).
    pub(crate) async fn read_planned<C, E, F, Fut>(
        &self,
        op: &str,
        plan: Plan,
        loader: F,
    ) -> Result<C, E>
    where
        C: Codec + Send + 'static,
        E: std::fmt::Display + From<crate::error::LoadError> + Send + 'static,
        F: FnOnce(Option<C>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<C, E>> + Send + 'static,
    {
        with_backend!(&self.inner.store.backend, b => {
            match self.read_on(b, op, plan, loader).await? {
                Served::Value(v) => Ok(v),
                Served::EarlyDue(due) => {
                    self.refresh_early(b.clone(), due.seen, due.plan, due.loader);
                    Ok(due.value)
                }
            }
        })
    }

    /// [`Cache::read`] with a loader that may borrow (a database handle, a request): it runs
    /// in this call, never in the background. So when the op declares `early_ttl`, the one
    /// caller that claims an entry's early refresh runs the loader in line and gets the new
    /// value (its latency is a miss's; every other caller keeps getting the hit). With
    /// [`Cache::read`], whose loader is `'static`, that refresh runs in a task of its own and
    /// no caller waits for it.
    ///
    /// ```
    /// # let rt = tokio::runtime::Runtime::new().unwrap();
    /// # rt.block_on(async {
    /// let cache = cachelet::Cache::builder().url("mem://").build().await.unwrap();
    /// let names = vec!["ann".to_string(), "bob".to_string()];
    /// let first: String = cache
    ///     .read_scoped("first_name", &(), || async { Ok::<_, std::io::Error>(names[0].clone()) })
    ///     .await
    ///     .unwrap();
    /// assert_eq!(first, "ann");
    /// # });
    /// ```
    pub async fn read_scoped<A, T, E, F, Fut>(&self, op: &str, args: &A, loader: F) -> Result<T, E>
    where
        A: ToArgs + ?Sized,
        T: Serialize + DeserializeOwned,
        E: std::fmt::Display + From<crate::error::LoadError>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        // Wrapped only when the span is on: moving the whole future into `Instrumented`
        // costs the hit path a copy of it.
        let span = read_span(op);
        if span.is_disabled() {
            self.read_borrowing(op, args, loader).await
        } else {
            self.read_borrowing(op, args, loader).instrument(span).await
        }
    }

    async fn read_borrowing<A, T, E, F, Fut>(&self, op: &str, args: &A, loader: F) -> Result<T, E>
    where
        A: ToArgs + ?Sized,
        T: Serialize + DeserializeOwned,
        E: std::fmt::Display + From<crate::error::LoadError>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let plan = match self.plan(op, args).await {
            Ok(plan) => plan,
            Err(metrics) => return Box::pin(self.uncached(&metrics, loader)).await,
        };
        let loader = move |_: Option<Json<T>>| async move { loader().await.map(Json) };
        with_backend!(&self.inner.store.backend, b => {
            match self.read_on(b, op, plan, loader).await? {
                Served::Value(v) => Ok(v.0),
                Served::EarlyDue(due) => {
                    bump(&self.inner.stats.early_refreshes);
                    let EarlyDue { value, seen, plan, loader } = due;
                    match Box::pin(self.load_and_fill(&**b, &plan, None, None, loader)).await {
                        Ok(fresh) => Ok(fresh.value.0),
                        Err(e) => {
                            tracing::warn!(op, "early refresh failed: {e}");
                            b.release_early(&plan.key, &seen).await;
                            Ok(value.0)
                        }
                    }
                }
            }
        })
    }

    async fn read_on<B, C, E, F, Fut>(
        &self,
        b: &Arc<B>,
        op: &str,
        plan: Plan,
        loader: F,
    ) -> Result<Served<C, B::Seen, F>, E>
    where
        B: Backend,
        C: Codec,
        E: std::fmt::Display + From<crate::error::LoadError>,
        F: FnOnce(Option<C>) -> Fut,
        Fut: Future<Output = Result<C, E>>,
    {
        if self.inner.detached.load(Ordering::Acquire) != 0 {
            // A write whose caller went away is still invalidating: its caller's next read
            // must not see what it invalidates.
            let _ = tokio::time::timeout(Duration::from_secs(5), self.settle()).await;
        }
        let Lookup { hit, seen } = match b.lookup(&plan.key, &plan.tags, plan.look()).await {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!(op, "{}; serving uncached", chain(&e));
                if plan.lock {
                    // Single flight holds while the backend is down: one loader per key.
                    return Box::pin(self.read_locked(b, op, plan, None, loader, false))
                        .await
                        .map(Served::Value);
                }
                return Box::pin(self.uncached(&plan.metrics, || loader(None)))
                    .await
                    .map(Served::Value);
            }
        };
        let mut previous = None;
        if let Some(hit) = hit {
            match served::<C>(&plan.key, &hit.value) {
                Ok(value) => {
                    bump(&self.inner.stats.hits);
                    if hit.early_due {
                        plan.metrics.count(Outcome::Stale);
                        return Ok(Served::EarlyDue(EarlyDue {
                            value,
                            seen,
                            plan,
                            loader,
                        }));
                    }
                    plan.metrics.count(Outcome::Hit);
                    return Ok(Served::Value(value));
                }
                Err(unusable) => {
                    if hit.early_due {
                        b.release_early(&plan.key, &seen).await;
                    }
                    previous = unusable;
                }
            }
        }
        bump(&self.inner.stats.misses);
        plan.metrics.count(Outcome::Miss);
        // The miss paths are boxed: the hit path's future stays small (it is moved on every
        // read), and a miss pays for a loader anyway.
        if plan.lock || plan.coalesce {
            Box::pin(self.read_locked(b, op, plan, previous, loader, true))
                .await
                .map(Served::Value)
        } else {
            Box::pin(self.load_and_fill(&**b, &plan, Some(&seen), previous, loader))
                .await
                .map(|l| Served::Value(l.value))
        }
    }

    /// The rule for a call, resolved; `Err` (with the op's metrics) when the call is not to be
    /// cached.
    pub(crate) async fn plan<A: ToArgs + ?Sized>(
        &self,
        op: &str,
        args: &A,
    ) -> Result<Plan, Arc<ReadMetrics>> {
        let set = self.inner.policies.load();
        let (metrics, rule) = match args.to_args() {
            Ok(a) => set.read_rule_metered(op, &a).await,
            Err(e) => (set.read_metrics(op), Err(e)),
        };
        let metrics = metrics.cloned().unwrap_or_else(undeclared);
        // The rule is within the guest limits (`GuestLimits`): the policy set checked it.
        let rule = match rule {
            Ok(Some(r)) => r,
            Ok(None) => return Err(metrics),
            Err(Error::UnknownOp(_)) => {
                self.warn_once(
                    op,
                    format_args!("operation {op:?} is declared by no policy: not cached"),
                );
                return Err(metrics);
            }
            Err(e @ Error::Quarantined { .. }) => {
                // Logged once, when the quarantine began; each call is only counted.
                bump(&self.inner.stats.quarantined);
                tracing::debug!(op, "serving uncached: {e}");
                return Err(metrics);
            }
            Err(e) => {
                if !matches!(e, Error::Guest { .. } | Error::Busy { .. }) {
                    bump(&self.inner.stats.policy_errors);
                }
                tracing::warn!(op, "serving uncached: {}", chain(&e));
                return Err(metrics);
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
            return Err(metrics);
        }
        Ok(Plan {
            key: self.inner.store.key(&key),
            tags,
            ttl,
            early: early_ttl
                .map(|s| Duration::from_secs(u64::from(s)))
                .filter(|e| *e < ttl),
            refresh,
            lock,
            coalesce: false,
            wait_at_least: Duration::ZERO,
            timed: false,
            metrics,
        })
    }

    /// Runs the loader, timed; its error is counted.
    async fn load<T, E, Fut>(
        &self,
        metrics: &ReadMetrics,
        loader: impl FnOnce() -> Fut,
    ) -> Result<T, E>
    where
        Fut: Future<Output = Result<T, E>>,
    {
        bump(&self.inner.stats.loads);
        let start = Instant::now();
        let out = loader()
            .instrument(tracing::debug_span!("cachelet.loader"))
            .await;
        metrics.loader.record(start.elapsed());
        if out.is_err() {
            metrics.count(Outcome::Error);
        }
        out
    }

    /// A read served without the cache: the loader's value as it is.
    pub(crate) async fn uncached<T, E, Fut>(
        &self,
        metrics: &ReadMetrics,
        loader: impl FnOnce() -> Fut,
    ) -> Result<T, E>
    where
        Fut: Future<Output = Result<T, E>>,
    {
        bump(&self.inner.stats.uncached);
        metrics.count(Outcome::Uncached);
        self.load(metrics, loader).await
    }

    /// Fence, load, fill. The fence is taken before the loader runs; `seen` (a lookup just
    /// made) saves reading tag versions twice. If the backend fails, the value is still
    /// returned, uncached.
    async fn load_and_fill<B, C, E, F, Fut>(
        &self,
        b: &B,
        plan: &Plan,
        seen: Option<&B::Seen>,
        previous: Option<C>,
        loader: F,
    ) -> Result<Loaded<C>, E>
    where
        B: Backend,
        C: Codec,
        F: FnOnce(Option<C>) -> Fut,
        Fut: Future<Output = Result<C, E>>,
    {
        let fence = b.fence(&plan.tags, seen, plan.ttl).await;
        let value = self.load(&plan.metrics, || loader(previous)).await?;
        let bytes = match value.encode() {
            Ok(bytes) => bytes,
            Err(err) => {
                tracing::warn!(key = plan.key, "value not cached: {err}");
                return Ok(Loaded {
                    value,
                    bytes: None,
                    filled: false,
                });
            }
        };
        let shared = bytes.clone();
        let filled = match value.storage() {
            None => match fence {
                Ok(fence) => match b
                    .fill(&plan.key, &plan.tags, bytes, fence, plan.fill())
                    .await
                {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::debug!(key = plan.key, "not cached: {}", chain(&e));
                        false
                    }
                },
                Err(e) => {
                    tracing::debug!(key = plan.key, "not cached: {}", chain(&e));
                    false
                }
            },
            Some(storage) => fill_as(b, plan, bytes, fence, storage).await,
        };
        Ok(Loaded {
            value,
            bytes: Some(shared),
            filled,
        })
    }

    /// Load and fill while holding the cross-host lock, which is kept alive while the loader
    /// runs (a loader slower than the lock TTL does not let another host load too).
    async fn load_holding<B, C, E, F, Fut>(
        &self,
        b: &B,
        plan: &Plan,
        seen: &B::Seen,
        held: crate::backend::Held,
        previous: Option<C>,
        loader: F,
    ) -> Result<Loaded<C>, E>
    where
        B: Backend,
        C: Codec,
        F: FnOnce(Option<C>) -> Fut,
        Fut: Future<Output = Result<C, E>>,
    {
        let ttl = b.lock_ttl();
        let work = self.load_and_fill(b, plan, Some(seen), previous, loader);
        let out = if ttl.is_zero() {
            work.await
        } else {
            let mut work = pin!(work);
            let mut tick = tokio::time::interval((ttl / 3).max(Duration::from_millis(10)));
            tick.tick().await;
            loop {
                tokio::select! {
                    out = &mut work => break out,
                    _ = tick.tick() => {
                        if !b.extend_lock(&plan.key, &held).await {
                            tracing::debug!(key = plan.key, "lock lost while loading");
                        }
                    }
                }
            }
        };
        b.unlock(&plan.key, held).await;
        out
    }

    /// Stampede control: in this process, the first miss of a key loads and the others wait
    /// for it (at most `lock_wait`) and get its value or its error; across hosts, the loader
    /// is the one that takes the key's lock in the backend, and the others look again with a
    /// growing pause (a few commands each, not a busy poll) until its value lands or the lock
    /// expires. A waiter only takes a landed value if it is still fresh, so a write during the
    /// load is never hidden from it. With the backend down (`online` false), the single flight
    /// still holds: the waiters take the leader's value.
    async fn read_locked<B, C, E, F, Fut>(
        &self,
        b: &Arc<B>,
        op: &str,
        plan: Plan,
        mut previous: Option<C>,
        loader: F,
        mut online: bool,
    ) -> Result<C, E>
    where
        B: Backend,
        C: Codec,
        E: std::fmt::Display + From<crate::error::LoadError>,
        F: FnOnce(Option<C>) -> Fut,
        Fut: Future<Output = Result<C, E>>,
    {
        let wait = self.inner.settings.lock_wait.max(plan.wait_at_least);
        let deadline = tokio::time::Instant::now() + wait;
        let mut loader = Some(loader);
        'rounds: for _ in 0..MAX_FLIGHT_ROUNDS {
            let generation = self.inner.generation.load(Ordering::Acquire);
            match self.inner.flights.join(&plan.key, generation) {
                Joined::Leader(guard) => {
                    let mut pause = Duration::from_millis(5);
                    if online {
                        loop {
                            // Another task or host may have filled the key since our lookup.
                            let Ok(Lookup { hit, seen }) =
                                b.lookup(&plan.key, &plan.tags, AGAIN).await
                            else {
                                break;
                            };
                            if let Some(h) = hit {
                                match served::<C>(&plan.key, &h.value) {
                                    Ok(v) => {
                                        guard.land(Landing::Value {
                                            value: h.value,
                                            filled: true,
                                        });
                                        return Ok(v);
                                    }
                                    Err(unusable) => previous = unusable.or(previous),
                                }
                            }
                            if !plan.lock {
                                // Coalesced in this process only: the leader loads and fills
                                // as any miss does, for its waiters too.
                                let f = loader.take().expect("the loader runs once");
                                let out = self
                                    .load_and_fill(&**b, &plan, Some(&seen), previous, f)
                                    .await;
                                return land(guard, out);
                            }
                            match b.try_lock(&plan.key).await {
                                Ok(Some(held)) => {
                                    let f = loader.take().expect("the loader runs once");
                                    let out = self
                                        .load_holding(&**b, &plan, &seen, held, previous, f)
                                        .await;
                                    return land(guard, out);
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
                    }
                    // The backend is down, or another host's load did not land in time: load
                    // here, for this process's waiters too.
                    let f = loader.take().expect("the loader runs once");
                    let out = self
                        .uncached(&plan.metrics, || f(previous))
                        .await
                        .map(|value| {
                            let bytes = value.encode().ok();
                            Loaded {
                                value,
                                bytes,
                                filled: false,
                            }
                        });
                    return land(guard, out);
                }
                Joined::Waiter(mut rx) => {
                    bump(&self.inner.stats.coalesced);
                    crate::metrics::lock_wait(op);
                    let landed = {
                        let waited = rx.wait_for(|l| !matches!(l, Landing::Pending));
                        match tokio::time::timeout_at(deadline, waited).await {
                            Ok(Ok(l)) => Some(l.clone()),
                            Ok(Err(_)) => None,
                            Err(_) => {
                                crate::metrics::lock_timeout(op);
                                tracing::warn!(
                                    op,
                                    key = plan.key,
                                    "lock: the load did not land within {wait:?}; loading here"
                                );
                                break 'rounds;
                            }
                        }
                    };
                    let landing = match landed {
                        Some(l) => l,
                        None => continue,
                    };
                    match landing {
                        Landing::Value { value, filled } => {
                            if filled && online {
                                match b.lookup(&plan.key, &plan.tags, AGAIN).await {
                                    Ok(Lookup { hit: Some(h), .. }) => {
                                        if let Ok(v) = served::<C>(&plan.key, &h.value) {
                                            return Ok(v);
                                        }
                                    }
                                    // Invalidated while in flight: go again.
                                    Ok(_) => continue,
                                    Err(_) => online = false,
                                }
                            }
                            // What the leader loaded, served as it is (also a value it did
                            // not store, such as a stale response served for a failing
                            // origin).
                            if let Ok(v) = C::decode(&value) {
                                return Ok(v);
                            }
                        }
                        Landing::Failed(message) => {
                            return Err(E::from(crate::error::LoadError::new(message)));
                        }
                        Landing::Abandoned | Landing::Pending => {}
                    }
                }
            }
        }
        tracing::warn!(op, key = plan.key, "lock: no fresh value, loading uncached");
        let f = loader.take().expect("the loader runs once");
        self.uncached(&plan.metrics, || f(previous)).await
    }

    /// Runs the loader in the background and stores its value, fenced as any fill. If it fails,
    /// the next hit in the early window tries again.
    fn refresh_early<B, C, E, F, Fut>(&self, b: Arc<B>, seen: B::Seen, plan: Plan, loader: F)
    where
        B: Backend,
        C: Codec + Send + 'static,
        E: std::fmt::Display + Send + 'static,
        F: FnOnce(Option<C>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<C, E>> + Send + 'static,
    {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        bump(&self.inner.stats.early_refreshes);
        let cache = self.clone();
        rt.spawn(async move {
            // The fence is read afresh: what the hit saw validated the old fill.
            if let Err(e) = cache.load_and_fill(&*b, &plan, None, None, loader).await {
                tracing::warn!(key = plan.key, "early refresh failed: {e}");
                b.release_early(&plan.key, &seen).await;
            }
        });
    }

    /// The backend's invalidation sequence: it moves (before the tags do) with every
    /// invalidation any host delivers. Read before a load whose value may name tags of its
    /// own ([`Storage::since`]).
    #[cfg(feature = "axum")]
    pub(crate) async fn sequence(&self) -> Option<u64> {
        with_backend!(&self.inner.store.backend, b => b.sequence().await.ok())
    }

    /// Stores `bytes` under the full `key` with tags learned during a load: see
    /// [`Storage::tags`]. Whether it was stored.
    #[cfg(feature = "axum")]
    pub(crate) async fn fill_learned(
        &self,
        key: &str,
        tags: &[String],
        bytes: bytes::Bytes,
        since: Option<u64>,
        ttl: Duration,
        early: Option<Duration>,
    ) -> bool {
        let fill = Fill {
            ttl,
            early: early.filter(|e| *e < ttl),
            refresh: false,
        };
        with_backend!(&self.inner.store.backend, b => {
            fill_learned(&**b, key, tags, bytes, since, fill).await
        })
    }
}

/// A fill as the loaded value asks ([`Codec::storage`]).
async fn fill_as<B: Backend>(
    b: &B,
    plan: &Plan,
    bytes: bytes::Bytes,
    fence: Result<B::Fence, Error>,
    storage: Storage,
) -> bool {
    if storage.ttl.is_zero() {
        return false;
    }
    let fill = Fill {
        ttl: storage.ttl,
        early: storage.early.filter(|e| *e < storage.ttl),
        refresh: plan.refresh,
    };
    if storage.tags.is_empty() {
        let Ok(fence) = fence else { return false };
        return b
            .fill(&plan.key, &plan.tags, bytes, fence, fill)
            .await
            .is_ok();
    }
    let mut tags = plan.tags.clone();
    for t in storage.tags {
        if !tags.contains(&t) {
            tags.push(t);
        }
    }
    fill_learned(b, &plan.key, &tags, bytes, storage.since, fill).await
}

/// A fill fenced by tags learned during the load: their versions are read now, and the fill
/// happens only if no invalidation that may cover its tags landed since the sequence was
/// `since` (read before the load began; `Backend::invalidated_since`). An invalidation moves
/// the sequence, recording its tags, before it touches a tag, so one of these tags that landed
/// during the load is seen here (nothing is stored), one of other tags does not keep the value
/// out, and one that lands after the versions were read makes the entry stale.
async fn fill_learned<B: Backend>(
    b: &B,
    key: &str,
    tags: &[String],
    bytes: bytes::Bytes,
    since: Option<u64>,
    fill: Fill,
) -> bool {
    let Some(since) = since else { return false };
    let Ok(fence) = b.fence(tags, None, fill.ttl).await else {
        return false;
    };
    match b.invalidated_since(since, tags).await {
        Ok(false) => {}
        _ => {
            tracing::debug!(
                key,
                "an invalidation of its tags landed while loading: the value is not stored"
            );
            return false;
        }
    }
    b.fill(key, tags, bytes, fence, fill).await.is_ok()
}

/// Lands a leader's load for its waiters and returns it to its caller.
fn land<T, E: std::fmt::Display>(
    guard: crate::flight::FlightGuard,
    out: Result<Loaded<T>, E>,
) -> Result<T, E> {
    match out {
        Ok(l) => {
            guard.land(match l.bytes {
                Some(value) => Landing::Value {
                    value,
                    filled: l.filled,
                },
                None => Landing::Abandoned,
            });
            Ok(l.value)
        }
        Err(e) => {
            guard.land(Landing::Failed(e.to_string().into()));
            Err(e)
        }
    }
}
/// The metrics of calls to ops no policy declares.
fn undeclared() -> Arc<ReadMetrics> {
    static UNDECLARED: std::sync::OnceLock<Arc<ReadMetrics>> = std::sync::OnceLock::new();
    UNDECLARED.get_or_init(ReadMetrics::undeclared).clone()
}

fn read_span(op: &str) -> tracing::Span {
    tracing::debug_span!("cachelet.read", op, outcome = tracing::field::Empty)
}
