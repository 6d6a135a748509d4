//! The write path: run the action; on success ask the policy which tags it invalidates, bump
//! them, then warm the recache reads with bounded concurrency.

use std::future::Future;
use std::sync::atomic::Ordering;

use futures_util::stream::{self, StreamExt};
use serde::Serialize;

use crate::args::{ToArgs, Value};
use crate::cache::{bump, Cache};
use crate::rules::{Recache, WriteRule};
use crate::Error;

/// Recache reads run at once when the policy does not say.
const DEFAULT_RECACHE_CONCURRENCY: usize = 8;

impl Cache {
    /// Writes through the cache.
    ///
    /// Runs `action`; if it succeeds, the policy's write rule for `op` (given `args` and the
    /// action's result) names the tags to invalidate and the reads to warm again. When `write`
    /// returns, no read returns a value cached before the write.
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
        let args = args.to_args();
        let result = action().await?;
        let rule = match args {
            Ok(args) => {
                let set = self.inner.policies.load();
                set.write_rule(op, &args, || {
                    serde_json::to_value(&result)
                        .ok()
                        .map(|v| Value::from_json(&v))
                })
                .await
            }
            Err(e) => Err(e),
        };
        match rule {
            Ok(Some(rule)) => self.apply(rule).await,
            Ok(None) => {}
            Err(Error::UnknownOp(_)) => self.warn_once(
                op,
                format_args!("operation {op:?} is declared by no policy: it invalidates nothing"),
            ),
            Err(e) => {
                if !matches!(e, Error::Guest { .. }) {
                    bump(&self.inner.stats.policy_errors);
                }
                bump(&self.inner.stats.namespace_flushes);
                self.inner.store.invalidate_all().await;
                tracing::error!(
                    op,
                    "write rule failed ({e}); invalidated the whole namespace so that nothing stale is served"
                );
            }
        }
        Ok(result)
    }

    /// Applies a write rule: invalidate, then recache.
    pub(crate) async fn apply(&self, rule: WriteRule) {
        self.inner.store.invalidate(&rule.invalidate).await;
        self.inner
            .stats
            .invalidations
            .fetch_add(rule.invalidate.len() as u64, Ordering::Relaxed);
        if rule.recache.is_empty() {
            return;
        }
        let limit = rule
            .recache_concurrency
            .map_or(DEFAULT_RECACHE_CONCURRENCY, |n| n.max(1) as usize);
        stream::iter(rule.recache)
            .for_each_concurrent(limit, |rc| self.recache(rc))
            .await;
    }

    async fn recache(&self, rc: Recache) {
        let loader = self
            .inner
            .loaders
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&rc.op)
            .cloned();
        let Some(loader) = loader else {
            self.warn_once(
                &format!("recache:{}", rc.op),
                format_args!(
                    "recache of {:?} skipped: no loader registered for it (Cache::register_loader)",
                    rc.op
                ),
            );
            return;
        };
        bump(&self.inner.stats.recaches);
        let args = rc.args.clone();
        let out: Result<serde_json::Value, String> =
            self.read(&rc.op, &args, move || loader(rc.args)).await;
        if let Err(e) = out {
            tracing::warn!(op = rc.op, "recache failed: {e}");
        }
    }
}
