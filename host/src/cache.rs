//! The cache: settings, the store, the policies in force, and the direct operations.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures_util::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::args::{Args, ToArgs};
use crate::backend::Invalidation;
use crate::config::Settings;
use crate::error::Error;
use crate::flight::Flights;
use crate::loader::Loaders;
use crate::policy::fleet::{Fleet, Push, PushedPolicy};
use crate::policy::lifecycle::{Lifecycle, PolicyStatus};
use crate::policy::{PolicyReport, PolicySet, PolicySource};
use crate::rules::{ReadRule, Ttl, WriteRule};
use crate::store::Store;

/// Warms a read op through the HTTP caching layer: a GET of the op's route, with the recache
/// arguments filled in, through the layer's read path (see `http::layer`). The layer installs
/// it; it serves the recaches of routed ops that have no loader of their own.
pub(crate) type RouteLoader =
    Arc<dyn Fn(&Cache, String, Args) -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// A cache host: policies decide, the cache stores.
///
/// Cloning is cheap (the clones share everything).
///
/// ```
/// # fn main() -> Result<(), cachelet::Error> {
/// # let rt = tokio::runtime::Runtime::new().unwrap();
/// # rt.block_on(async {
/// let cache = cachelet::Cache::builder().url("mem://").prefix("docs").build().await?;
/// cache.set("greeting", &"hello", None).await?;
/// assert_eq!(cache.get::<String>("greeting").await?, Some("hello".to_string()));
/// assert_eq!(cache.incr("visits", 5).await?, 5);
/// # Ok::<(), cachelet::Error>(())
/// # })?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Cache {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub settings: Settings,
    pub store: Arc<Store>,
    pub policies: Arc<ArcSwap<PolicySet>>,
    /// Every change to the policies goes through it (builder, watched directory, pushes).
    pub lifecycle: Arc<Lifecycle>,
    /// Pushed policies: this cache's share of the fleet.
    pub fleet: Arc<Fleet>,
    pub flights: Arc<Flights>,
    /// Registered loaders and the values given for skipped parameters.
    pub loaders: Loaders,
    /// The HTTP layer's loader for routed read ops.
    pub route_loader: arc_swap::ArcSwapOption<RouteLoader>,
    /// The cache serves HTTP through its routes ([`CacheBuilder::serves_http`], or a route
    /// loader installed).
    pub serves_http: AtomicBool,
    pub stats: Counters,
    /// Bumped by every write of this process before it invalidates: a read that comes after
    /// it never joins a load that began before it.
    pub generation: AtomicU64,
    /// Writes whose caller went away after the action: finishing in the background. Reads
    /// wait for them, so that the caller's next read is fresh.
    pub detached: AtomicU64,
    pub settled: tokio::sync::Notify,
    /// Operations already warned about (unknown op, missing loader): each is logged once.
    warned: Mutex<HashSet<String>>,
}

impl Inner {
    pub fn new(
        settings: Settings,
        store: Arc<Store>,
        lifecycle: Arc<Lifecycle>,
        fleet: Arc<Fleet>,
        serves_http: bool,
    ) -> Inner {
        Inner {
            settings,
            store,
            policies: lifecycle.serving().clone(),
            lifecycle,
            fleet,
            flights: Arc::new(Flights::default()),
            loaders: Loaders::default(),
            route_loader: arc_swap::ArcSwapOption::empty(),
            serves_http: AtomicBool::new(serves_http),
            stats: Counters::default(),
            generation: AtomicU64::new(0),
            detached: AtomicU64::new(0),
            settled: tokio::sync::Notify::new(),
            warned: Mutex::new(HashSet::new()),
        }
    }
}

/// Counters of what the cache did, for metrics and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct Stats {
    /// Reads served from the cache.
    pub hits: u64,
    /// Reads that found no fresh entry.
    pub misses: u64,
    /// Of the misses: an entry was there but one of its tags had been invalidated.
    pub invalidated: u64,
    /// Loader runs (misses, early refreshes and recache).
    pub loads: u64,
    /// Reads that waited for another task's load of the same key (`lock`).
    pub coalesced: u64,
    /// Early refreshes started in the background.
    pub early_refreshes: u64,
    /// Reads served without caching: TTL 0, a rule of `none`, an unknown operation, an error.
    pub uncached: u64,
    /// Policy errors (a guest's `Err`, a template missing an argument, bad arguments).
    pub policy_errors: u64,
    /// Calls of a quarantined policy's ops: not made; reads served uncached, writes flush the
    /// namespace. Neither logged one by one nor counted as policy errors (the quarantine was
    /// logged once, when it began).
    pub quarantined: u64,
    /// Guest faults (trap, deadline, memory cap); each discarded an instance.
    pub guest_faults: u64,
    /// Calls served uncached because every instance of their policy was busy.
    pub guest_busy: u64,
    /// Policy instances alive now (all policies).
    pub guest_instances: u64,
    /// The most policy instances alive at once, since the policies were loaded.
    pub guest_instances_peak: u64,
    /// Tags invalidated by writes and `invalidate`.
    pub invalidations: u64,
    /// Writes whose rule could not be computed: the whole namespace was invalidated instead.
    pub namespace_flushes: u64,
    /// Recache reads run after writes.
    pub recaches: u64,
    /// Commands sent to Redis (0 on the memory backend).
    pub redis_commands: u64,
    /// Invalidations held now, waiting for the backend (see [`Invalidation::Held`]).
    pub held_invalidations: u64,
    /// Writes whose caller went away after the action, finished in the background.
    pub detached_writes: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub invalidated: AtomicU64,
    pub loads: AtomicU64,
    pub coalesced: AtomicU64,
    pub early_refreshes: AtomicU64,
    pub uncached: AtomicU64,
    pub policy_errors: AtomicU64,
    pub quarantined: AtomicU64,
    pub invalidations: AtomicU64,
    pub namespace_flushes: AtomicU64,
    pub recaches: AtomicU64,
    pub detached_writes: AtomicU64,
}

pub(crate) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Cache {
    /// The settings in force.
    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// Replaces the policies in force, while serving: the new set is loaded and checked first,
    /// and swapped in whole only if every policy loads. Calls in flight finish on the old set.
    pub async fn replace_policies(
        &self,
        sources: impl IntoIterator<Item = PolicySource>,
    ) -> Result<(), Error> {
        let sources: Vec<_> = sources.into_iter().collect();
        self.inner.lifecycle.replace_builder(&sources).await?;
        self.warn_unloaded_recaches();
        Ok(())
    }

    /// Every policy: where it comes from (the builder, a file of the
    /// [watched directory](crate::CacheBuilder::policy_dir), a push), the version serving it (name,
    /// version, hash, ops, faults, quarantine), and the last version that failed to load.
    ///
    /// ```
    /// # let rt = tokio::runtime::Runtime::new().unwrap();
    /// # rt.block_on(async {
    /// let cache = cachelet::Cache::builder().url("mem://").build().await.unwrap();
    /// let status = cache.policy_status();
    /// assert!(status.policies.is_empty());
    /// assert_eq!(status.retired_alive, 0);
    /// # });
    /// ```
    pub fn policy_status(&self) -> PolicyStatus {
        self.inner.lifecycle.status()
    }

    /// Looks at the [watched directory](crate::CacheBuilder::policy_dir) now: every file changed
    /// since it was taken is taken (without waiting for it to settle), and the policies of
    /// files that are gone stop serving. Returns the status after it.
    pub async fn reload_policies(&self) -> PolicyStatus {
        self.inner.lifecycle.rescan().await;
        self.policy_status()
    }

    /// Publishes `component` to every host of this cache (`cachelet policy push`): it is
    /// checked here first (it must load), stored under its SHA-256 and made the current
    /// version of its policy (by the name its `describe` gives). Hosts that follow pushes
    /// ([`CacheBuilder::fleet`](crate::CacheBuilder::fleet)) pick it up at once (a notification; a periodic check
    /// catches up with a missed one); on the memory backend this cache serves it when this
    /// returns. `options` carry its Ed25519 signature in hex ([`sign_policy`](crate::policy::signature::sign_policy)),
    /// required by hosts with a public key, and the limits it asks for ([`RequestedLimits`](crate::policy::RequestedLimits)).
    ///
    /// ```no_run
    /// # async fn demo(cache: cachelet::Cache) -> Result<(), cachelet::Error> {
    /// let bytes = std::fs::read("policy.wasm").unwrap();
    /// let push = cache.push_policy(bytes, Default::default()).await?;
    /// println!("{} {} is current ({})", push.name, push.version, &push.hash[..12]);
    /// cache.rollback_policy(&push.name).await?; // back to the push before
    /// # Ok(()) }
    /// ```
    pub async fn push_policy(
        &self,
        component: Vec<u8>,
        options: crate::policy::fleet::PushOptions,
    ) -> Result<Push, Error> {
        self.inner
            .fleet
            .push(&self.inner.lifecycle, component, options)
            .await
    }

    /// Every pushed policy: its current push, its history (newest first) and the hosts
    /// that report running it, with the hash each runs.
    pub async fn pushed_policies(&self) -> Result<Vec<PushedPolicy>, Error> {
        self.inner.fleet.list().await
    }

    /// Makes the push before the current one of `name` current again, on every host.
    pub async fn rollback_policy(&self, name: &str) -> Result<Push, Error> {
        self.inner.fleet.rollback(&self.inner.lifecycle, name).await
    }

    /// Stops serving the pushed policy `name` on every host: its ops are no longer cached.
    pub async fn remove_policy(&self, name: &str) -> Result<(), Error> {
        self.inner.fleet.remove(&self.inner.lifecycle, name).await
    }

    /// This host's id in the fleet's reports ([`PushedPolicy::hosts`]).
    pub fn host_id(&self) -> &str {
        self.inner.fleet.id()
    }

    /// The op an HTTP request is routed to by the policies' routes, its arguments (path and
    /// query parameters), whether it reads or writes, and its route's options.
    #[cfg_attr(not(feature = "axum"), allow(dead_code))]
    pub(crate) fn route(
        &self,
        method: &str,
        path: &str,
        query: Option<&str>,
    ) -> Option<crate::policy::Routed> {
        self.inner.policies.load().route(method, path, query)
    }

    /// A full key without the namespace.
    pub(crate) fn relative_key<'k>(&self, full: &'k str) -> &'k str {
        self.inner.store.relative(full)
    }

    /// The path (and query) of a GET to read op `op`'s route with `args`, if it has a route.
    #[cfg_attr(not(feature = "axum"), allow(dead_code))]
    pub(crate) fn route_path(&self, op: &str, args: &Args) -> Option<String> {
        self.inner
            .policies
            .load()
            .http_routes()
            .of_op(op)?
            .path_for(args)
    }

    /// What each loaded policy declares.
    pub fn policies(&self) -> Vec<PolicyReport> {
        self.inner
            .policies
            .load()
            .policies()
            .map(|p| p.report().clone())
            .collect()
    }

    /// The read rule the policies give for one call (`None`: not cached).
    ///
    /// With `guest = true` the guest's own `read` is called even for an operation the host
    /// renders natively, which shows whether both agree.
    pub async fn read_rule<A: ToArgs + ?Sized>(
        &self,
        op: &str,
        args: &A,
        guest: bool,
    ) -> Result<Option<ReadRule>, Error> {
        let args = args.to_args()?;
        let set = self.inner.policies.load();
        if guest {
            set.guest_read_rule(op, &args).await
        } else {
            set.read_rule(op, &args).await
        }
    }

    /// The write rule the policies give for one call; `result` is the write's return value.
    pub async fn write_rule<A: ToArgs + ?Sized>(
        &self,
        op: &str,
        args: &A,
        result: Option<crate::args::Value>,
        guest: bool,
    ) -> Result<Option<WriteRule>, Error> {
        let args = args.to_args()?;
        let set = self.inner.policies.load();
        if guest {
            set.guest_write_rule(op, &args, result.as_ref()).await
        } else {
            set.write_rule(op, &args, || result).await
        }
    }

    /// Entries held by the memory backend (expired ones leave at its next maintenance);
    /// `None` on Redis.
    pub fn entry_count(&self) -> Option<u64> {
        self.inner.store.entry_count()
    }

    /// Counters since the cache was built.
    pub fn stats(&self) -> Stats {
        let c = &self.inner.stats;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let policies = self.inner.policies.load();
        Stats {
            hits: g(&c.hits),
            misses: g(&c.misses),
            invalidated: g(&c.invalidated),
            loads: g(&c.loads),
            coalesced: g(&c.coalesced),
            early_refreshes: g(&c.early_refreshes),
            uncached: g(&c.uncached),
            policy_errors: g(&c.policy_errors),
            quarantined: g(&c.quarantined),
            guest_faults: policies.policies().map(|p| p.faults()).sum(),
            guest_busy: policies.policies().map(|p| p.busy()).sum(),
            guest_instances: policies.policies().map(|p| p.instances().0 as u64).sum(),
            guest_instances_peak: policies.policies().map(|p| p.instances().1 as u64).sum(),
            invalidations: g(&c.invalidations),
            namespace_flushes: g(&c.namespace_flushes),
            recaches: g(&c.recaches),
            redis_commands: self.inner.store.redis_commands().unwrap_or(0),
            held_invalidations: self.inner.store.held() as u64,
            detached_writes: g(&c.detached_writes),
        }
    }

    /// Invalidations this host holds because the backend could not take them (0 on memory).
    /// They are delivered by the host itself as soon as the backend answers.
    pub fn held_invalidations(&self) -> usize {
        self.inner.store.held()
    }

    /// Ends the cache's work before the process exits: waits (up to 10 s) for writes whose
    /// callers went away to finish invalidating, then delivers the held invalidations it can.
    /// What stays held is in the journal if one is configured ([`CacheBuilder::journal`](crate::CacheBuilder::journal)),
    /// and lost otherwise (logged). The cache stays usable.
    ///
    /// ```
    /// # let rt = tokio::runtime::Runtime::new().unwrap();
    /// # rt.block_on(async {
    /// let cache = cachelet::Cache::builder().url("mem://").build().await.unwrap();
    /// assert_eq!(cache.shutdown().await, cachelet::Invalidation::Nothing);
    /// # });
    /// ```
    pub async fn shutdown(&self) -> Invalidation {
        let _ = tokio::time::timeout(Duration::from_secs(10), self.settle()).await;
        self.inner.store.flush_held().await
    }

    /// Waits until no write whose caller went away is still invalidating.
    pub(crate) async fn settle(&self) {
        loop {
            let notified = self.inner.settled.notified();
            if self.inner.detached.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Logs `message` once per `what` (bounded: past 10,000 distinct names it stops remembering).
    pub(crate) fn warn_once(&self, what: &str, message: std::fmt::Arguments<'_>) {
        let mut w = self.inner.warned.lock().unwrap_or_else(|p| p.into_inner());
        if w.len() < 10_000 && w.insert(what.to_string()) {
            tracing::warn!("{message}");
        }
    }

    // ---- direct operations, confined to the namespace ----

    /// The value under `key`, if present and fresh.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Error> {
        self.inner
            .store
            .get(key)
            .await?
            .map(|b| decode(key, &b))
            .transpose()
    }

    /// Stores `value` under `key` for `ttl` (the default bucket when `None`; 0 stores nothing).
    pub async fn set<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        ttl: Option<Ttl>,
    ) -> Result<(), Error> {
        let bytes = encode(key, value)?;
        self.inner
            .store
            .set(key, bytes, self.inner.store.ttl(ttl), false)
            .await?;
        Ok(())
    }

    /// Stores `value` only if `key` holds no fresh entry; returns whether it was stored.
    pub async fn set_if_absent<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        ttl: Option<Ttl>,
    ) -> Result<bool, Error> {
        let bytes = encode(key, value)?;
        self.inner
            .store
            .set(key, bytes, self.inner.store.ttl(ttl), true)
            .await
    }

    /// Removes `key`; returns whether a fresh entry was there.
    pub async fn delete(&self, key: &str) -> Result<bool, Error> {
        self.inner.store.delete(key).await
    }

    /// Whether `key` holds a fresh entry.
    pub async fn exists(&self, key: &str) -> Result<bool, Error> {
        self.inner.store.exists(key).await
    }

    /// Removes `key` and returns its value (pop).
    pub async fn get_delete<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Error> {
        self.inner
            .store
            .get_delete(key)
            .await?
            .map(|b| decode(key, &b))
            .transpose()
    }

    /// Adds `by` to the integer under `key` (absent counts as 0) and returns the new value.
    pub async fn incr(&self, key: &str, by: i64) -> Result<i64, Error> {
        self.inner.store.incr(key, by).await
    }

    /// Deletes every key of the namespace matching a Redis-style glob (`user:*:profile`);
    /// returns how many were deleted.
    pub async fn delete_match(&self, pattern: &str) -> Result<u64, Error> {
        self.inner.store.delete_match(pattern).await
    }

    /// Invalidates tags: every entry carrying one of them is stale from now on. O(1) a tag.
    /// If the backend cannot take them now they are held ([`Invalidation::Held`]), never lost.
    pub async fn invalidate<S: AsRef<str>>(&self, tags: &[S]) -> Result<Invalidation, Error> {
        self.inner.generation.fetch_add(1, Ordering::AcqRel);
        let outcome = self.inner.store.invalidate(tags).await;
        self.inner
            .stats
            .invalidations
            .fetch_add(tags.len() as u64, Ordering::Relaxed);
        Ok(outcome)
    }

    /// Checks that the backend answers.
    pub async fn ping(&self) -> Result<(), Error> {
        self.inner.store.ping().await
    }
}

pub(crate) fn encode<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(value).map_err(|e| Error::Value {
        key: key.to_string(),
        problem: format!("cannot be serialized: {e}"),
    })
}

pub(crate) fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(bytes).map_err(|e| Error::Value {
        key: key.to_string(),
        problem: format!("stored value does not deserialize into the requested type: {e}"),
    })
}
