//! The one wasmtime engine, its linker, and the per-instance host state.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, StoreLimits};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::cachelet::policy::{log, store, types};
use super::bindings::CachePolicy;
use crate::rules::{resolve_ttl, Ttl, TtlBucket};
use crate::store::Store;

/// How often the engine's epoch advances; per-call deadlines are counted in these ticks.
pub(crate) const TICK: Duration = Duration::from_millis(2);

pub(crate) struct Runtime {
    pub engine: Engine,
    pub linker: Linker<HostState>,
}

/// The process-wide engine: compiled code and the epoch ticker are shared by every cache.
pub(crate) fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        let engine = Engine::new(&config).expect("the engine configuration is valid");
        let mut linker = Linker::new(&engine);
        // WASI 0.2 is linked so that components built with a language's default imports
        // instantiate; the context grants nothing (see `HostState::new`).
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).expect("WASI links once");
        super::wasi::link_io_at_once(&mut linker).expect("wasi:io links again");
        CachePolicy::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            .expect("the policy world links once");
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("cachelet-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(TICK);
                }
            })
            .expect("spawn the epoch thread");
        Runtime { engine, linker }
    })
}

/// What one instance of a policy can reach.
pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub limits: StoreLimits,
    store: Arc<Store>,
    policy: Arc<str>,
    /// When the running call's deadline passes: a host call the guest makes (`store`) waits
    /// at most until then (the epoch stops the guest as soon as it runs again).
    pub deadline: std::time::Instant,
}

impl HostState {
    pub fn new(store: Arc<Store>, policy: Arc<str>, memory: usize) -> HostState {
        // No preopened directories, no environment, no arguments, stdio to nothing, no sockets,
        // no name lookups. Clocks and randomness are WASI's defaults.
        let wasi = WasiCtx::builder()
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        HostState {
            wasi,
            table: ResourceTable::new(),
            limits: wasmtime::StoreLimitsBuilder::new()
                .memory_size(memory)
                .table_elements(1 << 20)
                .instances(64)
                .tables(64)
                .memories(16)
                .trap_on_grow_failure(true)
                .build(),
            store,
            policy,
            deadline: std::time::Instant::now(),
        }
    }

    /// Runs a host call the guest made within the call's deadline, in a span naming it;
    /// `None` when the deadline passed first.
    /// (An associated function: the future holds only what it names, not the whole state,
    /// which is not `Sync`.)
    async fn bounded<T>(
        policy: &str,
        deadline: std::time::Instant,
        call: &'static str,
        f: impl std::future::Future<Output = T>,
    ) -> Option<T> {
        use tracing::Instrument;
        let span = tracing::debug_span!("guest store call", policy, call);
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match tokio::time::timeout(left, f).instrument(span).await {
            Ok(v) => Some(v),
            Err(_) => {
                tracing::debug!(policy, call, "store call cut at the policy's deadline");
                None
            }
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for HostState {}

pub(crate) fn from_wit_ttl(t: types::Ttl) -> Ttl {
    match t {
        types::Ttl::Seconds(s) => Ttl::Seconds(s),
        types::Ttl::Bucket(b) => Ttl::Bucket(match b {
            types::TtlBucket::Short => TtlBucket::Short,
            types::TtlBucket::Default => TtlBucket::Default,
            types::TtlBucket::Long => TtlBucket::Long,
        }),
    }
}

// A backend that does not answer looks like an absent key (and a refused write) to the guest;
// the host logs it.
impl store::Host for HostState {
    async fn get(&mut self, key: String) -> Option<String> {
        match HostState::bounded(&self.policy, self.deadline, "get", self.store.get(&key)).await? {
            Ok(v) => v.map(|v| String::from_utf8_lossy(&v).into_owned()),
            Err(e) => {
                tracing::debug!(
                    policy = &*self.policy,
                    "store.get: {}",
                    crate::error::chain(&e)
                );
                None
            }
        }
    }

    async fn set(
        &mut self,
        key: String,
        value: String,
        ttl: Option<types::Ttl>,
        if_absent: bool,
    ) -> bool {
        // Values are JSON text, as every value the host stores.
        if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&value) {
            tracing::warn!(
                policy = &*self.policy,
                "store.set of {key:?} refused: the value is not JSON ({e})"
            );
            return false;
        }
        let ttl = match ttl {
            Some(t) => resolve_ttl(from_wit_ttl(t), &self.store.ttl),
            None => self.store.ttl(None),
        };
        let set = self.store.set(&key, value.into_bytes(), ttl, if_absent);
        matches!(
            HostState::bounded(&self.policy, self.deadline, "set", set).await,
            Some(Ok(true))
        )
    }

    async fn delete(&mut self, key: String) -> bool {
        matches!(
            HostState::bounded(
                &self.policy,
                self.deadline,
                "delete",
                self.store.delete(&key)
            )
            .await,
            Some(Ok(true))
        )
    }

    async fn exists(&mut self, key: String) -> bool {
        matches!(
            HostState::bounded(
                &self.policy,
                self.deadline,
                "exists",
                self.store.exists(&key)
            )
            .await,
            Some(Ok(true))
        )
    }

    async fn incr(&mut self, key: String, by: i64) -> Result<i64, String> {
        match HostState::bounded(
            &self.policy,
            self.deadline,
            "incr",
            self.store.incr(&key, by),
        )
        .await
        {
            Some(r) => r.map_err(|e| e.to_string()),
            None => Err("the policy's deadline passed".into()),
        }
    }

    async fn invalidate(&mut self, tags: Vec<String>) {
        // Not cut at the deadline: an invalidation, once asked for, is held until delivered.
        use tracing::Instrument;
        let span = tracing::debug_span!(
            "guest store call",
            policy = &*self.policy,
            call = "invalidate"
        );
        self.store.invalidate(&tags).instrument(span).await;
    }
}

impl log::Host for HostState {
    fn log(&mut self, level: log::Level, message: String) {
        let policy = &*self.policy;
        match level {
            log::Level::Trace => tracing::trace!(policy, "{message}"),
            log::Level::Debug => tracing::debug!(policy, "{message}"),
            log::Level::Info => tracing::info!(policy, "{message}"),
            log::Level::Warn => tracing::warn!(policy, "{message}"),
            log::Level::Error => tracing::error!(policy, "{message}"),
        }
    }
}
