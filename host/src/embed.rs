//! What the attribute macros ([`read`](crate::read), [`write`](crate::write)) stand on: the
//! cache installed at startup, the loaders every `#[cachelet::read]` function registers at
//! link time, and the loader a recache finds for an op (a registered closure first, see
//! `loader`).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use arc_swap::ArcSwapOption;
use futures_util::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::args::Args;
use crate::cache::Cache;
use crate::loader::LoaderFn;

/// The first cache installed, for the life of the process: what an annotated call reads with
/// plain loads (no reference count touched on the hit path).
static FIRST: OnceLock<Cache> = OnceLock::new();
/// A cache installed in place of the first one, and whether there is one.
static REPLACEMENT: ArcSwapOption<Cache> = ArcSwapOption::const_empty();
static REPLACED: AtomicBool = AtomicBool::new(false);
/// One install at a time.
static INSTALLING: Mutex<()> = Mutex::new(());

/// Installs the cache the attribute macros use when a function is given none as a parameter
/// (the modelled library's `init_cache()`); returns the one it replaces. Call it once at
/// startup, before the first annotated call. The first cache installed is kept for the life
/// of the process (so that an annotated call reads it without touching a reference count),
/// also when another one replaces it.
///
/// ```
/// # let rt = tokio::runtime::Runtime::new().unwrap();
/// # rt.block_on(async {
/// let cache = cachelet::Cache::builder().url("mem://").build().await.unwrap();
/// cachelet::install(cache);
/// assert!(cachelet::installed().is_some());
/// # });
/// ```
pub fn install(cache: Cache) -> Option<Cache> {
    let _one = INSTALLING.lock().unwrap_or_else(|p| p.into_inner());
    if FIRST.get().is_none() {
        let _ = FIRST.set(cache);
        return None;
    }
    let previous = installed();
    REPLACEMENT.store(Some(Arc::new(cache)));
    REPLACED.store(true, Ordering::Release);
    previous
}

/// The cache [`install`]ed, if any. An annotated function called before one is installed
/// runs its body uncached (and says so once in the log).
pub fn installed() -> Option<Cache> {
    __private::installed().map(|c| c.get().clone())
}

impl Cache {
    /// Gives the cache a value for the parameters of type `T` that annotated reads skip (a
    /// database pool, a client): when a write's recache warms such a read, its function is
    /// called with a clone of this value. One value per type; a later call replaces it.
    ///
    /// ```
    /// # let rt = tokio::runtime::Runtime::new().unwrap();
    /// # rt.block_on(async {
    /// #[derive(Clone)]
    /// struct Db;
    /// let cache = cachelet::Cache::builder().url("mem://").build().await.unwrap();
    /// cache.provide(Db);
    /// # });
    /// ```
    pub fn provide<T: Clone + Send + Sync + 'static>(&self, value: T) {
        self.inner.loaders.provide(value);
    }

    /// The loader of a read operation: a closure given to [`Cache::register_loader`], else the
    /// `#[cachelet::read]` function declared for it.
    pub(crate) fn loader(&self, op: &str) -> Option<LoaderFn> {
        if let Some(f) = self.inner.loaders.registered(op) {
            return Some(f);
        }
        let r = registered().get(op)?;
        let cache = self.clone();
        let load = r.load;
        Some(Arc::new(move |args| load(&cache, args)))
    }

    /// Registers the loader of a read operation, used to warm it again after a write that
    /// lists it in `recache`. The arguments arrive as `A` (deserialized from the recache
    /// arguments).
    pub fn register_loader<A, T, E, F, Fut>(&self, op: &str, loader: F)
    where
        A: DeserializeOwned + Send + 'static,
        T: Serialize + Send + 'static,
        E: std::fmt::Display + Send + 'static,
        F: Fn(A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        let loader = Arc::new(loader);
        let f: LoaderFn = Arc::new(move |args: Args| {
            let loader = loader.clone();
            Box::pin(async move {
                let a: A = serde_json::from_value(args.to_json())
                    .map_err(|e| format!("recache arguments do not fit the loader: {e}"))?;
                let v = loader(a).await.map_err(|e| e.to_string())?;
                serde_json::to_value(v).map_err(|e| e.to_string())
            })
        });
        self.inner.loaders.register(op, f);
    }

    /// The read ops the policies' declared write rules recache for which there is no loader:
    /// no `#[cachelet::read]` function, no [`Cache::register_loader`] closure, and no route
    /// served by the HTTP caching layer. Their recaches are skipped (the write still
    /// invalidates). Loading policies logs a warning listing them.
    pub fn recaches_without_loader(&self) -> Vec<String> {
        let set = self.inner.policies.load();
        let http = self.inner.serves_http.load(Ordering::Relaxed);
        set.recached_ops(http)
            .into_iter()
            .filter(|op| self.loader(op).is_none())
            .filter(|op| !(http && set.http_routes().of_op(op).is_some()))
            .map(str::to_string)
            .collect()
    }

    pub(crate) fn warn_unloaded_recaches(&self) {
        let missing = self.recaches_without_loader();
        if !missing.is_empty() {
            // A target of its own, which hosts that serve nothing (`cachelet check`) turn off.
            tracing::warn!(
                target: "cachelet::recache",
                "the policies recache {missing:?}, which no #[cachelet::read] function loads: \
                 those recaches are skipped unless a loader is registered (Cache::register_loader)"
            );
        }
    }
}

/// The `#[cachelet::read]` functions of the program, by op.
fn registered() -> &'static HashMap<&'static str, &'static __private::Registered> {
    static MAP: OnceLock<HashMap<&'static str, &'static __private::Registered>> = OnceLock::new();
    MAP.get_or_init(|| {
        let mut map = HashMap::new();
        for r in inventory::iter::<__private::Registered> {
            if let Some(first) = map.insert(r.op, r) {
                tracing::error!(
                    op = r.op,
                    "two #[cachelet::read] functions declare this op ({} and {}); recache uses {}",
                    first.function,
                    r.function,
                    r.function
                );
            }
        }
        map
    })
}

#[doc(hidden)]
pub mod __private {
    //! Used by the code the attribute macros generate; not a stable API.

    use std::future::Future;

    use serde::de::DeserializeOwned;
    use serde::Serialize;

    use super::BoxFuture;
    use crate::args::Args;
    use crate::cache::Cache;
    use crate::error::Error;

    pub use inventory;
    pub use serde_json;

    /// The cache an annotated call uses: the installed one, borrowed for the life of the
    /// process, or one given as a parameter.
    pub enum CacheArg {
        /// The first cache installed.
        Installed(&'static Cache),
        /// A cache given as a parameter, or installed in place of the first one.
        Given(Cache),
    }

    impl CacheArg {
        pub fn get(&self) -> &Cache {
            match self {
                CacheArg::Installed(c) => c,
                CacheArg::Given(c) => c,
            }
        }
    }

    /// The installed cache, if any: the first one without touching its reference count.
    pub fn installed() -> Option<CacheArg> {
        if !super::REPLACED.load(std::sync::atomic::Ordering::Acquire) {
            return super::FIRST.get().map(CacheArg::Installed);
        }
        super::REPLACEMENT
            .load()
            .as_deref()
            .map(|c| CacheArg::Given(c.clone()))
    }

    /// A `#[cachelet::read]` function, registered as the loader of its op.
    pub struct Registered {
        /// The op.
        pub op: &'static str,
        /// The function's path, for messages.
        pub function: &'static str,
        /// Calls the function (uncached) with a recache's arguments.
        pub load: fn(&Cache, Args) -> LoadFuture,
    }

    /// What a registered loader returns: the loaded value as JSON, or the error's message.
    pub type LoadFuture = BoxFuture<'static, Result<serde_json::Value, String>>;

    inventory::collect!(Registered);

    /// Builds a call's arguments from its parameters; the first that does not convert is kept
    /// as the error (the call is then served uncached).
    pub struct ArgsBuilder {
        args: Result<Args, Error>,
    }

    #[allow(clippy::new_without_default)]
    impl ArgsBuilder {
        pub fn new() -> ArgsBuilder {
            ArgsBuilder {
                args: Ok(Args::new()),
            }
        }

        pub fn arg<T: Serialize + ?Sized>(mut self, name: &'static str, value: &T) -> Self {
            if let Ok(args) = &mut self.args {
                match crate::args::Value::of(value) {
                    Ok(v) => args.set(name, v),
                    Err(e) => {
                        self.args = Err(Error::Args(format!("parameter `{name}`: {e}")));
                    }
                }
            }
            self
        }

        pub fn finish(self) -> Result<Args, Error> {
            self.args
        }
    }

    /// A call whose arguments do not convert: served uncached, counted as the cache counts a
    /// policy error.
    fn uncached(cache: &Cache, function: &'static str, why: &Error) {
        crate::cache::bump(&cache.inner.stats.policy_errors);
        crate::cache::bump(&cache.inner.stats.uncached);
        tracing::warn!(function, "served uncached: {why}");
    }

    /// Pins the output type of an annotated function's body, so `?` in it converts into the
    /// function's own error type.
    pub fn body<T, F: Future<Output = T>>(f: F) -> F {
        f
    }

    /// The cache and arguments of an annotated read, or `None` when it runs uncached: no cache
    /// installed (said once in the log), or arguments that do not convert (counted, logged).
    /// The expansion then calls [`Cache::read`] (a body that owns what it uses: an early
    /// refresh runs in the background) or [`Cache::read_scoped`] (a body that borrows).
    pub fn prepare(
        cache: Option<CacheArg>,
        function: &'static str,
        args: Result<Args, Error>,
    ) -> Option<(CacheArg, Args)> {
        match (cache, args) {
            (Some(cache), Ok(args)) => Some((cache, args)),
            (None, _) => {
                not_installed(function);
                None
            }
            (Some(cache), Err(e)) => {
                uncached(cache.get(), function, &e);
                None
            }
        }
    }

    /// The expansion of `#[cachelet::write]`.
    pub async fn write<R, E, F, Fut>(
        cache: Option<CacheArg>,
        function: &'static str,
        op: &str,
        args: Result<Args, Error>,
        action: F,
    ) -> Result<R, E>
    where
        R: Serialize,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<R, E>>,
    {
        match cache {
            // Arguments that do not convert still invalidate: the write path flushes the
            // namespace when it cannot compute the rule.
            Some(cache) => cache
                .get()
                .write_converted(op, args, action)
                .await
                .map(|w| w.value),
            None => {
                not_installed(function);
                action().await
            }
        }
    }

    fn not_installed(function: &'static str) {
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| {
            tracing::warn!(
                function,
                "no cache installed (cachelet::install): annotated functions run uncached"
            );
        });
    }

    /// A recache's argument `name`, as the parameter's owned type.
    pub fn arg<T: DeserializeOwned>(args: &Args, name: &str) -> Result<T, String> {
        let v = args
            .get(name)
            .map(|v| v.to_json())
            .unwrap_or(serde_json::Value::Null);
        serde_json::from_value(v).map_err(|e| format!("recache argument `{name}`: {e}"))
    }

    /// The value provided for a skipped parameter of type `T` ([`Cache::provide`]).
    pub fn provided<T: Clone + Send + Sync + 'static>(cache: &Cache) -> Result<T, String> {
        cache.inner.loaders.provided::<T>().ok_or_else(|| {
            format!(
                "a skipped parameter of type {} has no value: give one with Cache::provide",
                std::any::type_name::<T>()
            )
        })
    }

    /// A loaded value as JSON, for a recache's fill.
    pub fn loaded<T: Serialize, E: std::fmt::Display>(
        out: Result<T, E>,
    ) -> Result<serde_json::Value, String> {
        let v = out.map_err(|e| e.to_string())?;
        serde_json::to_value(v).map_err(|e| e.to_string())
    }
}
