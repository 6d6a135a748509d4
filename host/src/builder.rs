//! The builder: settings from code over the environment, checked, then the store opened and
//! the policies loaded before the cache serves.

use std::sync::Arc;

use crate::cache::{Cache, Inner};
use crate::config::{BackendUrl, Settings};
use crate::error::Error;
use crate::policy::fleet::Fleet;
use crate::policy::lifecycle::Lifecycle;
use crate::policy::{PolicyLimits, PolicySource};
use crate::store::Store;

impl Cache {
    /// A builder; settings it is not given come from the environment.
    pub fn builder() -> CacheBuilder {
        CacheBuilder::default()
    }
}

/// Builds a [`Cache`]. Settings not given here come from the environment when
/// [`CacheBuilder::build`] runs (see [`Settings::from_env`]).
#[derive(Default)]
pub struct CacheBuilder {
    url: Option<String>,
    prefix: Option<String>,
    version: Option<String>,
    ttl_short: Option<u32>,
    ttl_default: Option<u32>,
    ttl_long: Option<u32>,
    mem_max_bytes: Option<u64>,
    limits: PolicyLimits,
    policies: Vec<PolicySource>,
    settings: Option<Settings>,
    compile_cache: Option<std::path::PathBuf>,
    journal: Option<std::path::PathBuf>,
    policy_dir: Option<std::path::PathBuf>,
    fleet: Option<bool>,
    policy_pubkey: Option<String>,
    serves_http: bool,
}

impl CacheBuilder {
    /// Says the cache will serve HTTP through its policies' routes (`cachelet serve`,
    /// [`crate::axum::serve`]): there a routed write is what runs a write rule, and a recache
    /// of a routed read is a GET of its route. So the load-time warning about recaches without
    /// a loader ([`Cache::recaches_without_loader`]) considers only the recaches of routed
    /// writes, and counts routed reads as loaded.
    pub fn serves_http(mut self) -> Self {
        self.serves_http = true;
        self
    }
    /// The backend URL (`mem://`, `redis://...`), instead of `CACHE_URL`.
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url.into());
        self
    }
    /// The key prefix, instead of `CACHE_PREFIX`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Some(prefix.into());
        self
    }
    /// The key version, instead of `CACHE_VERSION`.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }
    /// The `short` bucket in seconds, instead of `CACHE_TTL_SHORT`.
    pub fn ttl_short(mut self, secs: u32) -> Self {
        self.ttl_short = Some(secs);
        self
    }
    /// The `default` bucket in seconds, instead of `CACHE_TTL_DEFAULT`.
    pub fn ttl_default(mut self, secs: u32) -> Self {
        self.ttl_default = Some(secs);
        self
    }
    /// The `long` bucket in seconds, instead of `CACHE_TTL_LONG`.
    pub fn ttl_long(mut self, secs: u32) -> Self {
        self.ttl_long = Some(secs);
        self
    }
    /// The memory backend's bound in bytes, instead of `CACHE_MEM_MAX_BYTES`.
    pub fn mem_max_bytes(mut self, bytes: u64) -> Self {
        self.mem_max_bytes = Some(bytes);
        self
    }
    /// Keeps invalidations that Redis could not take in this file (instead of
    /// `CACHE_JOURNAL`): each is on disk before the write that held it returns, and is
    /// delivered at the next start if this process dies first. One journal per cache; the
    /// file is locked while the cache lives.
    pub fn journal(mut self, path: impl AsRef<std::path::Path>) -> Self {
        self.journal = Some(path.as_ref().to_path_buf());
        self
    }
    /// Use these settings instead of reading the environment (builder values still apply).
    pub fn settings(mut self, settings: Settings) -> Self {
        self.settings = Some(settings);
        self
    }
    /// Limits for every policy instance.
    pub fn policy_limits(mut self, limits: PolicyLimits) -> Self {
        self.limits = limits;
        self
    }
    /// Keeps compiled policies in `dir` (instead of `CACHELET_COMPILE_CACHE`), so that loading
    /// the same component again skips compiling it: seconds for a Python or JavaScript policy,
    /// milliseconds from the cache. The folder must be writable only by the host's user: its
    /// files are machine code that the host runs.
    pub fn compile_cache(mut self, dir: impl AsRef<std::path::Path>) -> Self {
        self.compile_cache = Some(dir.as_ref().to_path_buf());
        self
    }
    /// Serves every policy component (`*.wasm`) of `dir` (instead of `CACHELET_POLICY_DIR`),
    /// and watches it while the cache lives: a file added, replaced or removed there changes
    /// what serves, without a restart and without dropping a call. A new version is compiled
    /// and checked first (through the [compile cache](Self::compile_cache)) and swapped in
    /// whole; one that fails to load leaves the serving version in place, and the failure is
    /// in [`Cache::policy_status`]. A file is taken once whole (closed by its writer, or
    /// renamed into place); names not ending in `.wasm` and dot files are ignored.
    ///
    /// ```
    /// # let rt = tokio::runtime::Runtime::new().unwrap();
    /// # rt.block_on(async {
    /// let dir = std::env::temp_dir().join(format!("cachelet-doc-dir-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir).unwrap();
    /// std::fs::write(dir.join("broken.wasm"), b"not a component").unwrap();
    /// let cache = cachelet::Cache::builder().url("mem://").policy_dir(&dir).build().await.unwrap();
    /// let status = cache.policy_status();
    /// let broken = status.file(dir.join("broken.wasm")).unwrap();
    /// assert!(broken.serving.is_none());
    /// assert!(broken.failure.as_ref().unwrap().message.contains("broken.wasm"));
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # });
    /// ```
    pub fn policy_dir(mut self, dir: impl AsRef<std::path::Path>) -> Self {
        self.policy_dir = Some(dir.as_ref().to_path_buf());
        self
    }
    /// Whether this host loads and follows the policies pushed to its Redis (instead of
    /// `CACHELET_POLICY_FLEET`; off by default): the current set is loaded before the cache
    /// serves, and each push, rollback or removal is picked up at once (announced through
    /// Redis pub/sub), also after this host was disconnected (a check every
    /// [`Settings::policy_check`], 250 ms, catches up). The memory backend
    /// always follows its own pushes ([`Cache::push_policy`]).
    pub fn fleet(mut self, follow: bool) -> Self {
        self.fleet = Some(follow);
        self
    }
    /// The Ed25519 public key (hex) pushed components must be signed with (instead of
    /// `CACHELET_POLICY_PUBKEY`): anything unsigned, signed with another key or changed
    /// after signing is refused, and what serves stays. Without one, this host runs what
    /// anyone who can write to the cache's Redis prefix pushes.
    pub fn policy_pubkey(mut self, key: impl Into<String>) -> Self {
        self.policy_pubkey = Some(key.into());
        self
    }
    /// Loads a policy component file.
    pub fn policy_file(mut self, path: impl AsRef<std::path::Path>) -> Self {
        self.policies.push(PolicySource::file(path));
        self
    }
    /// Loads a policy from a source.
    pub fn policy(mut self, source: PolicySource) -> Self {
        self.policies.push(source);
        self
    }

    /// Reads the environment for what was not set, checks everything, loads the policies.
    pub async fn build(self) -> Result<Cache, Error> {
        let mut s = match self.settings {
            Some(s) => s,
            None => Settings::from_env()?,
        };
        if let Some(u) = self.url {
            s.url = BackendUrl::parse(&u)?;
        }
        if let Some(p) = self.prefix {
            s.prefix = p;
        }
        if let Some(v) = self.version {
            s.version = v;
        }
        s.ttl.short = self.ttl_short.unwrap_or(s.ttl.short);
        s.ttl.default = self.ttl_default.unwrap_or(s.ttl.default);
        s.ttl.long = self.ttl_long.unwrap_or(s.ttl.long);
        s.mem_max_bytes = self.mem_max_bytes.unwrap_or(s.mem_max_bytes);
        if let Some(j) = self.journal {
            s.redis.journal = Some(j);
        }
        s.fleet = self.fleet.unwrap_or(s.fleet);
        if let Some(k) = self.policy_pubkey {
            s.policy_pubkey = Some(k);
        }
        s.validate()?;
        let pubkey = s
            .policy_pubkey
            .as_deref()
            .map(crate::policy::signature::PublicKey::parse)
            .transpose()?;
        let store = Arc::new(Store::open(&s).await?);
        let compile_cache = self
            .compile_cache
            .or_else(crate::policy::precompiled::dir_from_env);
        let lifecycle = Arc::new(Lifecycle::new(
            store.clone(),
            self.limits,
            s.guest,
            compile_cache,
        ));
        lifecycle.replace_builder(&self.policies).await?;
        if let Some(dir) = self.policy_dir.or_else(|| s.policy_dir.clone()) {
            crate::policy::watch::start(&lifecycle, &dir).await?;
            s.policy_dir = Some(dir);
        }
        let fleet = Arc::new(Fleet::new(&store.backend, s.fleet, s.policy_check, pubkey));
        fleet.start(&lifecycle).await?;
        let cache = Cache {
            inner: Arc::new(Inner::new(s, store, lifecycle, fleet, self.serves_http)),
        };
        cache.warn_unloaded_recaches();
        cache.inner.store.sample();
        Ok(cache)
    }
}
