//! The write path: run the action; on success ask the policy which tags it invalidates, bump
//! them, then warm the recache reads with bounded concurrency. Once the action has succeeded,
//! the rest happens even if the caller goes away.

use std::future::Future;
use std::sync::atomic::Ordering;

use futures_util::stream::{self, StreamExt};
use serde::Serialize;
use tracing::Instrument;

use crate::args::{Args, ToArgs, Value};
use crate::backend::Invalidation;
use crate::cache::{bump, Cache};
use crate::error::Error;
use crate::rules::{Recache, WriteRule};

/// Recache reads run at once when the policy does not say.
const DEFAULT_RECACHE_CONCURRENCY: usize = 8;

/// A write's value and what became of its invalidation ([`Cache::write_outcome`]).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Written<R> {
    /// What the action returned.
    pub value: R,
    /// Delivered, held (the backend could not take it; delivered later by this host), or
    /// nothing to invalidate.
    pub invalidation: Invalidation,
}

/// What a write must still do once its action succeeded.
struct WriteJob {
    /// The write op whose rule applies (none: an unsafe request no route names, which
    /// invalidates only `reads`).
    op: Option<String>,
    args: Result<Args, Error>,
    result: Option<Value>,
    /// Reads whose entries the write invalidates beside the rule's tags (the HTTP layer's
    /// target URI, `Location`, `Content-Location`: RFC 9111 §4.4), by their key's tag.
    reads: Vec<(String, Args)>,
}

/// Finishes a write's job even if the caller's future is dropped on the way: then the job
/// runs again (from the start: invalidating twice is harmless) in a task of its own.
struct Finishing {
    cache: Cache,
    job: Option<WriteJob>,
}

impl Finishing {
    async fn run(&mut self) -> Invalidation {
        let job = self.job.as_ref().expect("a job until it is done");
        let outcome = self.cache.apply_job(job).await;
        self.job = None;
        outcome
    }
}

impl Drop for Finishing {
    fn drop(&mut self) {
        let Some(job) = self.job.take() else { return };
        let cache = self.cache.clone();
        bump(&cache.inner.stats.detached_writes);
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                cache.inner.detached.fetch_add(1, Ordering::AcqRel);
                rt.spawn(async move {
                    cache.apply_job(&job).await;
                    cache.inner.detached.fetch_sub(1, Ordering::AcqRel);
                    cache.inner.settled.notify_waiters();
                });
            }
            // No runtime to finish on (dropped outside one): invalidate everything rather
            // than lose this write's invalidation; the backend holds it if it must.
            Err(_) => {
                tracing::error!(
                    op = job.op.as_deref().unwrap_or("unrouted"),
                    "write dropped outside a runtime after its action: flushing the namespace"
                );
                let store = cache.inner.store.clone();
                std::thread::spawn(move || {
                    if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        rt.block_on(store.invalidate_all());
                    }
                });
            }
        }
    }
}

impl Cache {
    /// Writes through the cache.
    ///
    /// Runs `action`; if it succeeds, the policy's write rule for `op` (given `args` and the
    /// action's result) names the tags to invalidate and the reads to warm again. When `write`
    /// returns, no read returns a value cached before the write. If the backend cannot take
    /// the invalidation now it is held and delivered by this host as soon as it can
    /// ([`Cache::write_outcome`] tells which).
    ///
    /// Once the action has succeeded, the invalidation happens even if this future is
    /// dropped (a timeout, a client that went away): it finishes in the background, and this
    /// process's reads wait for it.
    ///
    /// An invalidation is never lost: if the rule cannot be computed (the policy faults or
    /// errs, an argument is missing), every entry of the namespace is invalidated instead, and
    /// the error is logged and counted. An action error is returned as is and touches nothing.
    ///
    /// ```
    /// # let rt = tokio::runtime::Runtime::new().unwrap();
    /// # rt.block_on(async {
    /// let cache = cachelet::Cache::builder().url("mem://").build().await.unwrap();
    /// let saved = cache
    ///     .write("update_user", &serde_json::json!({"user_id": 1}), || async {
    ///         Ok::<_, std::io::Error>(true)
    ///     })
    ///     .await
    ///     .unwrap();
    /// assert!(saved);
    /// # });
    /// ```
    pub async fn write<A, R, E, F, Fut>(&self, op: &str, args: &A, action: F) -> Result<R, E>
    where
        A: ToArgs + ?Sized,
        R: Serialize,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<R, E>>,
    {
        self.write_outcome(op, args, action).await.map(|w| w.value)
    }

    /// [`Cache::write`], telling what became of the invalidation: delivered, or held because
    /// the backend could not take it (this host delivers it by itself as soon as the backend
    /// answers; another host may serve what it covers until then).
    ///
    /// ```
    /// # let rt = tokio::runtime::Runtime::new().unwrap();
    /// # rt.block_on(async {
    /// use cachelet::Invalidation;
    /// let cache = cachelet::Cache::builder().url("mem://").build().await.unwrap();
    /// let w = cache
    ///     .write_outcome("update_user", &serde_json::json!({"user_id": 1}), || async {
    ///         Ok::<_, std::io::Error>(7)
    ///     })
    ///     .await
    ///     .unwrap();
    /// // No policy declares "update_user": nothing to invalidate.
    /// assert_eq!((w.value, w.invalidation), (7, Invalidation::Nothing));
    /// # });
    /// ```
    pub async fn write_outcome<A, R, E, F, Fut>(
        &self,
        op: &str,
        args: &A,
        action: F,
    ) -> Result<Written<R>, E>
    where
        A: ToArgs + ?Sized,
        R: Serialize,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<R, E>>,
    {
        let args = args.to_args().map(std::borrow::Cow::into_owned);
        self.write_converted(op, args, action).await
    }

    /// [`Cache::write_outcome`] with the arguments already converted (or not: then the
    /// namespace is flushed, as for any rule that cannot be computed).
    pub(crate) async fn write_converted<R, E, F, Fut>(
        &self,
        op: &str,
        args: Result<Args, Error>,
        action: F,
    ) -> Result<Written<R>, E>
    where
        R: Serialize,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<R, E>>,
    {
        self.write_invalidating(Some(op), args, action, |_| Vec::new())
            .await
    }

    /// [`Cache::write_converted`], invalidating also the entries of the reads `reads` names
    /// from the action's value (each by its key's tag, [`crate::tags::of_key`]): in the same
    /// invalidation as the rule's tags, before its recaches, and as surely (the caller's future
    /// dropped, the rule failing). Without an op, only those entries.
    pub(crate) async fn write_invalidating<R, E, F, Fut>(
        &self,
        op: Option<&str>,
        args: Result<Args, Error>,
        action: F,
        reads: impl FnOnce(&R) -> Vec<(String, Args)>,
    ) -> Result<Written<R>, E>
    where
        R: Serialize,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<R, E>>,
    {
        let span = tracing::debug_span!(
            "cachelet.write",
            op = op.unwrap_or("unrouted"),
            outcome = tracing::field::Empty
        );
        self.write_in(op, args, action, reads)
            .instrument(span)
            .await
    }

    async fn write_in<R, E, F, Fut>(
        &self,
        op: Option<&str>,
        args: Result<Args, Error>,
        action: F,
        reads: impl FnOnce(&R) -> Vec<(String, Args)>,
    ) -> Result<Written<R>, E>
    where
        R: Serialize,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<R, E>>,
    {
        let value = match action().await {
            Ok(v) => v,
            Err(e) => {
                tracing::Span::current().record("outcome", "error");
                return Err(e);
            }
        };
        // From here the write has happened: so must its invalidation.
        let mut finishing = Finishing {
            cache: self.clone(),
            job: Some(WriteJob {
                op: op.map(str::to_string),
                args,
                result: serde_json::to_value(&value)
                    .ok()
                    .map(|v| Value::from_json(&v)),
                reads: reads(&value),
            }),
        };
        let invalidation = finishing.run().await;
        Ok(Written {
            value,
            invalidation,
        })
    }

    /// The rule of a write that succeeded, applied.
    async fn apply_job(&self, job: &WriteJob) -> Invalidation {
        let op = job.op.as_deref().unwrap_or("unrouted");
        let rule = match (&job.op, &job.args) {
            (None, _) => Ok(None),
            (Some(_), Ok(args)) => {
                let set = self.inner.policies.load();
                set.write_rule(op, args, || job.result.clone()).await
            }
            (Some(_), Err(e)) => Err(Error::Args(e.to_string())),
        };
        let (label, flushed) = match &rule {
            Err(Error::UnknownOp(_)) => ("undeclared", false),
            Err(_) => (op, true),
            Ok(_) => (op, false),
        };
        let mut entries = Vec::new();
        for (read, args) in &job.reads {
            // A read that is not cached has no entry to invalidate.
            if let Ok(plan) = self.plan(read, args).await {
                entries.push(crate::tags::of_key(self.relative_key(&plan.key)));
            }
        }
        let outcome = match rule {
            Ok(Some(mut rule)) => {
                rule.invalidate.extend(entries);
                self.apply(rule).await
            }
            Ok(None) if !entries.is_empty() => {
                self.apply(WriteRule {
                    invalidate: entries,
                    ..WriteRule::default()
                })
                .await
            }
            Ok(None) => Invalidation::Nothing,
            Err(Error::UnknownOp(_)) => {
                self.warn_once(
                    op,
                    format_args!(
                        "operation {op:?} is declared by no policy: it invalidates nothing"
                    ),
                );
                Invalidation::Nothing
            }
            Err(e) => {
                let quarantined = matches!(e, Error::Quarantined { .. });
                if quarantined {
                    bump(&self.inner.stats.quarantined);
                } else if !matches!(e, Error::Guest { .. } | Error::Busy { .. }) {
                    bump(&self.inner.stats.policy_errors);
                }
                bump(&self.inner.stats.namespace_flushes);
                self.inner.generation.fetch_add(1, Ordering::AcqRel);
                let outcome = self.inner.store.invalidate_all().await;
                if quarantined {
                    // The quarantine was logged once, when it began; the flush is counted.
                    tracing::debug!(op, "{e}: invalidated the whole namespace");
                } else {
                    tracing::error!(
                        op,
                        "write rule failed ({e}); invalidated the whole namespace so that nothing stale is served"
                    );
                }
                outcome
            }
        };
        let name = match (&outcome, flushed) {
            (_, true) => "flushed",
            (Invalidation::Nothing, _) => "nothing",
            (Invalidation::Delivered, _) => "delivered",
            (Invalidation::Held { .. }, _) => "held",
        };
        crate::metrics::write(label, name);
        tracing::Span::current().record("outcome", name);
        outcome
    }

    /// Applies a write rule: invalidate, then recache.
    pub(crate) async fn apply(&self, rule: WriteRule) -> Invalidation {
        self.inner.generation.fetch_add(1, Ordering::AcqRel);
        let outcome = self.inner.store.invalidate(&rule.invalidate).await;
        self.inner
            .stats
            .invalidations
            .fetch_add(rule.invalidate.len() as u64, Ordering::Relaxed);
        crate::metrics::invalidations(rule.invalidate.len() as u64);
        if rule.recache.is_empty() {
            return outcome;
        }
        let limit = rule
            .recache_concurrency
            .map_or(DEFAULT_RECACHE_CONCURRENCY, |n| n.max(1) as usize);
        stream::iter(rule.recache)
            .for_each_concurrent(limit, |rc| self.recache(rc))
            .await;
        outcome
    }

    async fn recache(&self, rc: Recache) {
        let span = tracing::debug_span!("cachelet.recache", op = rc.op);
        self.recache_in(rc).instrument(span).await
    }

    async fn recache_in(&self, rc: Recache) {
        let route_loader = || {
            let l = self.inner.route_loader.load_full()?;
            let set = self.inner.policies.load();
            set.http_routes().of_op(&rc.op).map(|_| l)
        };
        let Some(loader) = self.loader(&rc.op) else {
            if let Some(through) = route_loader() {
                bump(&self.inner.stats.recaches);
                match through(self, rc.op.clone(), rc.args).await {
                    Ok(()) => crate::metrics::recache(&rc.op, "ok"),
                    Err(e) => {
                        crate::metrics::recache(&rc.op, "error");
                        tracing::warn!(op = rc.op, "recache failed: {e}");
                    }
                }
                return;
            }
            self.warn_once(
                &format!("recache:{}", rc.op),
                format_args!(
                    "recache of {:?} skipped: no #[cachelet::read] function or Cache::register_loader closure loads it",
                    rc.op
                ),
            );
            crate::metrics::recache(&rc.op, "no_loader");
            return;
        };
        bump(&self.inner.stats.recaches);
        let args = rc.args.clone();
        let out: Result<serde_json::Value, String> =
            self.read(&rc.op, &args, move || loader(rc.args)).await;
        match out {
            Ok(_) => crate::metrics::recache(&rc.op, "ok"),
            Err(e) => {
                crate::metrics::recache(&rc.op, "error");
                tracing::warn!(op = rc.op, "recache failed: {e}");
            }
        }
    }
}
