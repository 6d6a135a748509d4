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
        match self.store.get(&key).await {
            Ok(v) => v.map(|v| String::from_utf8_lossy(&v).into_owned()),
            Err(e) => {
                tracing::debug!(policy = &*self.policy, "store.get: {e}");
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
        self.store
            .set(&key, value.into_bytes(), ttl, if_absent)
            .await
            .unwrap_or(false)
    }

    async fn delete(&mut self, key: String) -> bool {
        self.store.delete(&key).await.unwrap_or(false)
    }

    async fn exists(&mut self, key: String) -> bool {
        self.store.exists(&key).await.unwrap_or(false)
    }

    async fn incr(&mut self, key: String, by: i64) -> Result<i64, String> {
        self.store.incr(&key, by).await.map_err(|e| e.to_string())
    }

    async fn invalidate(&mut self, tags: Vec<String>) {
        self.store.invalidate(&tags).await;
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
