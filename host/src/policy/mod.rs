//! Policies: loading components, checking them against the world, and calling them.
//!
//! A [`Policy`] is one compiled component with a pool of ready instances. Calls from many tasks
//! take different instances from the pool (a lock-free queue), so they run in parallel. A call
//! that traps, runs past its deadline or its memory cap loses its instance (its `Store` is
//! dropped, since a trap poisons it); the pool builds a new one on demand.
//!
//! The operations a policy declares with templates are rendered by the host itself
//! ([`crate::rules`]): only dynamic operations cost a Wasm call per request.

mod bindings;
mod calls;
pub(crate) mod fleet;
pub(crate) mod lifecycle;
pub(crate) mod limits;
pub(crate) mod precompiled;
pub(crate) mod quarantine;
mod runtime;
pub(crate) mod signature;
mod wasi;
pub(crate) mod watch;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use rustc_hash::FxHashMap;
use wasmtime::component::{Component, ComponentNamedList, InstancePre, Lift, Lower, TypedFunc};
use wasmtime::Store as WasmStore;

use self::bindings::cachelet::policy::types as wit;
use self::calls::{
    wire_args, DescribeResults, Exports, Funcs, ReadParams, ReadResults, WireValue, WriteParams,
    WriteResults,
};
use self::quarantine::Quarantine;
use self::runtime::{from_wit_ttl, runtime, HostState, TICK};
use crate::args::{Args, Value};
use crate::config::GuestLimits;
use crate::error::Error;
use crate::metrics::{PolicyMetrics, ReadMetrics};
use crate::rules::{
    parse_template, ReadRule, ReadTemplate, Recache, RecacheTemplate, Template, WriteRule,
    WriteTemplate,
};
use crate::store::Store;

/// The WIT package this host implements.
pub const WORLD: &str = "cachelet:policy/cache-policy@0.2.0";
const POLICY_EXPORT: &str = "cachelet:policy/policy@0.2.0";
const PACKAGE: &str = "cachelet:policy";
const PACKAGE_VERSION: &str = "0.2.0";

/// Limits every instance of a policy runs under: the defaults, changed with the `with_*`
/// setters.
///
/// ```
/// use std::time::Duration;
/// let limits = cachelet::PolicyLimits::default().with_deadline(Duration::from_millis(20));
/// assert_eq!((limits.deadline, limits.memory), (Duration::from_millis(20), 64 << 20));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PolicyLimits {
    /// Longest a single policy call may run (default 100 ms). Past it the call traps.
    pub deadline: Duration,
    /// Most linear memory one instance may hold (default 64 MiB). Growing past it traps.
    pub memory: usize,
    /// Idle instances kept ready per policy (default 8; at most `max_instances`).
    pub idle_instances: usize,
    /// Most instances of one policy alive at once, idle or busy (default 8): a Python or
    /// JavaScript instance holds tens of MiB. A call that finds them all busy waits up to
    /// `instance_wait` for one (a write up to 1 s), then is served uncached and counted
    /// (`Stats::guest_busy`); a write whose rule cannot be computed invalidates the namespace.
    pub max_instances: usize,
    /// How long a read's call waits for a busy policy's instance (default 10 ms).
    pub instance_wait: Duration,
}

impl Default for PolicyLimits {
    fn default() -> Self {
        PolicyLimits {
            deadline: Duration::from_millis(100),
            memory: 64 << 20,
            idle_instances: 8,
            max_instances: 8,
            instance_wait: Duration::from_millis(10),
        }
    }
}

impl PolicyLimits {
    /// Longest a single policy call may run.
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// Most linear memory one instance may hold, in bytes.
    pub fn with_memory(mut self, bytes: usize) -> Self {
        self.memory = bytes;
        self
    }

    /// Idle instances kept ready per policy.
    pub fn with_idle_instances(mut self, n: usize) -> Self {
        self.idle_instances = n;
        self
    }

    /// Most instances of one policy alive at once.
    pub fn with_max_instances(mut self, n: usize) -> Self {
        self.max_instances = n;
        self
    }

    /// How long a read's call waits for a busy policy's instance.
    pub fn with_instance_wait(mut self, wait: Duration) -> Self {
        self.instance_wait = wait;
        self
    }
}

/// The limits a policy asks for itself: carried by a push (`cachelet policy push --limits
/// FILE`, [`PushOptions::limits`](crate::policy::fleet::PushOptions)) or by a file `NAME.limits.json` next to
/// `NAME.wasm` in the watched directory. Each is bounded by the host's [`PolicyLimits`]: a
/// policy may ask for less than the host allows, never for more (it gets the host's maximum).
/// Unset, the host's own applies.
///
/// ```
/// use std::time::Duration;
/// use cachelet::{PolicyLimits, RequestedLimits};
/// let asked = RequestedLimits::from_json(br#"{"deadline_ms": 20, "memory_bytes": 1073741824}"#).unwrap();
/// let host = PolicyLimits::default(); // 100 ms, 64 MiB
/// let applied = host.bounding(&asked);
/// assert_eq!((applied.deadline, applied.memory), (Duration::from_millis(20), 64 << 20));
/// // Unknown fields and zeros are refused, naming the problem.
/// assert!(RequestedLimits::from_json(br#"{"deadline": 20}"#).unwrap_err().contains("deadline"));
/// assert!(RequestedLimits::from_json(br#"{"deadline_ms": 0}"#).unwrap_err().contains("deadline_ms"));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RequestedLimits {
    /// Longest a single call may run, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    /// Most linear memory one instance may hold, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
}

impl RequestedLimits {
    /// Asks for a deadline (whole milliseconds, rounded up).
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline_ms = Some(deadline.as_nanos().div_ceil(1_000_000) as u64);
        self
    }

    /// Asks for a memory cap, in bytes.
    pub fn with_memory(mut self, bytes: u64) -> Self {
        self.memory_bytes = Some(bytes);
        self
    }

    /// Whether it asks for nothing.
    pub fn is_empty(&self) -> bool {
        *self == RequestedLimits::default()
    }

    /// Parses `{"deadline_ms": N, "memory_bytes": N}` (either may be left out); the error
    /// names what is wrong.
    pub fn from_json(json: &[u8]) -> Result<RequestedLimits, String> {
        let asked: RequestedLimits = serde_json::from_slice(json).map_err(|e| {
            format!("not a limits file ({{\"deadline_ms\": N, \"memory_bytes\": N}}): {e}")
        })?;
        asked.check()?;
        Ok(asked)
    }

    /// The error of a limit no call could run under.
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.deadline_ms == Some(0) {
            return Err("deadline_ms is 0: a call needs at least 1 ms".into());
        }
        if self.memory_bytes.is_some_and(|m| m < 1 << 16) {
            return Err(format!(
                "memory_bytes is {}: an instance needs at least one 64 KiB page",
                self.memory_bytes.unwrap_or(0)
            ));
        }
        Ok(())
    }
}

impl PolicyLimits {
    /// These limits, tightened to what `asked` asks for where it asks for less.
    pub fn bounding(self, asked: &RequestedLimits) -> PolicyLimits {
        let mut l = self;
        if let Some(ms) = asked.deadline_ms {
            l.deadline = l.deadline.min(Duration::from_millis(ms));
        }
        if let Some(bytes) = asked.memory_bytes {
            l.memory = l.memory.min(usize::try_from(bytes).unwrap_or(usize::MAX));
        }
        l
    }
}

/// Epoch ticks of a deadline.
fn ticks(d: Duration) -> u64 {
    (d.as_nanos() / TICK.as_nanos()).max(1) as u64 + 1
}

/// What instantiating a component and its `describe` at load may take: they run off the
/// request path, and a Python or JavaScript component's start-up on a busy machine can take
/// longer than one call's deadline. 10 times the deadline, at least 1 s.
fn setup_budget(deadline: Duration) -> Duration {
    (deadline * 10).max(Duration::from_secs(1))
}

/// How long a write's call waits for a busy policy's instance.
const WRITE_INSTANCE_WAIT: Duration = Duration::from_secs(1);

/// The count of a policy's live instances: one [`Slot`] per instance.
#[derive(Default)]
struct Slots {
    live: std::sync::atomic::AtomicUsize,
    peak: std::sync::atomic::AtomicUsize,
    /// Woken when an instance goes back to the pool or is dropped.
    freed: tokio::sync::Notify,
}

/// Held by each live instance: the policy's count goes down when the instance is dropped
/// (a trap, a full pool, a cancelled call).
struct Slot(Arc<Slots>);

impl Slots {
    /// A slot for a new instance, if fewer than `max` are alive.
    fn take(self: &Arc<Self>, max: usize) -> Option<Slot> {
        let mut n = self.live.load(Ordering::Acquire);
        loop {
            if n >= max {
                return None;
            }
            match self
                .live
                .compare_exchange_weak(n, n + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    self.peak.fetch_max(n + 1, Ordering::Relaxed);
                    return Some(Slot(self.clone()));
                }
                Err(now) => n = now,
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::AcqRel);
        self.0.freed.notify_one();
    }
}

/// Where a policy component comes from.
#[derive(Debug, Clone)]
pub enum PolicySource {
    /// A component file (`.wasm`).
    File(std::path::PathBuf),
    /// Component bytes, with a name for messages.
    Bytes {
        /// Shown in errors and logs.
        name: String,
        /// The component.
        bytes: Vec<u8>,
    },
}

impl PolicySource {
    /// A component file.
    pub fn file(path: impl AsRef<Path>) -> PolicySource {
        PolicySource::File(path.as_ref().to_path_buf())
    }

    fn label(&self) -> String {
        match self {
            PolicySource::File(p) => p.display().to_string(),
            PolicySource::Bytes { name, .. } => name.clone(),
        }
    }
}

/// The kind of an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    /// A cached read.
    Read,
    /// A write that invalidates.
    Write,
}

/// One operation a policy declares.
#[derive(Debug, Clone, serde::Serialize)]
#[non_exhaustive]
pub struct OpInfo {
    /// The operation's name.
    pub name: String,
    /// Read or write.
    pub kind: OpKind,
    /// Declared parameters; `None` when the policy declares none for the op (then the host
    /// cannot check its placeholders: see [`PolicyReport::warnings`]).
    pub params: Option<Vec<String>>,
    /// Route for the HTTP proxy, e.g. `GET /users/{user_id}`.
    pub route: Option<String>,
    /// Whether the host renders the rule natively (`true`) or calls the guest per request.
    pub native: bool,
}

/// What `cachelet check` reports about a component.
#[derive(Debug, Clone, serde::Serialize)]
#[non_exhaustive]
pub struct PolicyReport {
    /// The policy's name (from `describe`).
    pub name: String,
    /// The policy's version (from `describe`).
    pub version: String,
    /// Size of the component in bytes.
    pub size: usize,
    /// Time to compile the component (or to load its precompiled code).
    pub compile_time: Duration,
    /// Whether the machine code came from the precompiled cache
    /// ([`CacheBuilder::compile_cache`](crate::builder::CacheBuilder::compile_cache)).
    pub precompiled: bool,
    /// Interfaces the component imports.
    pub imports: Vec<String>,
    /// Whether calls run synchronously, without a fiber: none of the component's imports
    /// waits (it does not import `store`, which awaits the backend). Such calls cost less.
    pub synchronous: bool,
    /// The operations it declares.
    pub ops: Vec<OpInfo>,
    /// What the policy declares that the host cannot check, one line per op, naming it: an op
    /// with placeholders or a computed rule that declares no params (a misspelled placeholder
    /// then fails its calls instead of the load). `cachelet check` prints them.
    pub warnings: Vec<String>,
}

#[derive(Debug)]
enum Rule {
    Read(Option<ReadTemplate>),
    Write(Option<WriteTemplate>),
}

impl Rule {
    /// Whether a template of the rule names an argument.
    fn has_placeholders(&self) -> bool {
        match self {
            Rule::Read(Some(t)) => std::iter::once(&t.key)
                .chain(&t.tags)
                .any(|t| t.params().next().is_some()),
            Rule::Write(Some(t)) => {
                t.invalidate.iter().any(|t| t.params().next().is_some())
                    || t.recache.iter().any(|r| {
                        r.include.as_ref().is_some_and(|i| !i.is_empty()) || !r.rename.is_empty()
                    })
            }
            Rule::Read(None) | Rule::Write(None) => false,
        }
    }
}

/// Records the time until it is dropped (a guest call, also when its future is dropped).
struct Timed<'a> {
    histogram: &'a ::metrics::Histogram,
    start: std::time::Instant,
}

impl<'a> Timed<'a> {
    fn new(histogram: &'a ::metrics::Histogram) -> Timed<'a> {
        Timed {
            histogram,
            start: std::time::Instant::now(),
        }
    }
}

impl Drop for Timed<'_> {
    fn drop(&mut self) {
        self.histogram.record(self.start.elapsed());
    }
}

struct Instance {
    store: WasmStore<HostState>,
    funcs: Funcs,
    _slot: Slot,
}

/// A loaded policy: a compiled component and a pool of instances.
pub(crate) struct Policy {
    name: Arc<str>,
    pre: InstancePre<HostState>,
    exports: Exports,
    /// Whether instances are called without a fiber: none of the component's imports waits
    /// (it does not import `store`). Found when the policy is loaded; the report says the same
    /// (`PolicyReport::synchronous`), this copy sits with the fields every call reads.
    sync: bool,
    pool: ArrayQueue<Instance>,
    slots: Arc<Slots>,
    limits: PolicyLimits,
    store: Arc<Store>,
    faults: AtomicU64,
    metrics: PolicyMetrics,
    /// The HTTP routes of its ops, parsed.
    routes: Vec<(String, crate::route::Route)>,
    /// Faults in the recent window; past the bound the policy is no longer called.
    quarantine: Quarantine,
    /// Calls served uncached because every instance was busy.
    busy: AtomicU64,
    /// SHA-256 of the component's bytes, hex: what a version is known by.
    hash: String,
    report: PolicyReport,
    rules: Vec<(String, Rule)>,
}

impl Policy {
    /// Compiles `source`, checks it against the world, instantiates it once and reads its
    /// description.
    pub async fn load(
        source: &PolicySource,
        store: Arc<Store>,
        limits: PolicyLimits,
        compile_cache: Option<&Path>,
    ) -> Result<Policy, Error> {
        let label = source.label();
        let bad = |problem: String| Error::Load {
            source_name: label.clone(),
            problem,
        };
        let bytes = match source {
            PolicySource::File(p) => std::fs::read(p).map_err(|e| Error::Io {
                path: p.display().to_string(),
                source: e,
            })?,
            PolicySource::Bytes { bytes, .. } => bytes.clone(),
        };
        check_header(&bytes).map_err(&bad)?;
        let hash = hex_sha256(&bytes);
        let rt = runtime();
        let t0 = Instant::now();
        let (component, precompiled) = precompiled::component(&rt.engine, &bytes, compile_cache)
            .map_err(|e| bad(format!("not a valid WebAssembly component: {e:#}")))?;
        let compile_time = t0.elapsed();
        let imports = check_world(&component).map_err(&bad)?;
        let pre = rt
            .linker
            .instantiate_pre(&component)
            .map_err(|e| bad(format!("cannot link: {e:#}")))?;
        let exports = Exports::find(&component, POLICY_EXPORT)
            .map_err(|e| bad(format!("does not match world {WORLD}: {e}")))?;

        let default_name = match source {
            PolicySource::File(p) => p
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| label.clone()),
            PolicySource::Bytes { name, .. } => name.clone(),
        };
        let mut policy = Policy {
            name: default_name.as_str().into(),
            pre,
            exports,
            sync: true,
            pool: ArrayQueue::new(limits.idle_instances.clamp(1, limits.max_instances.max(1))),
            slots: Arc::default(),
            limits,
            store,
            faults: AtomicU64::new(0),
            metrics: PolicyMetrics::new(&default_name),
            routes: Vec::new(),
            quarantine: Quarantine::default(),
            busy: AtomicU64::new(0),
            hash,
            report: PolicyReport {
                name: default_name,
                version: String::new(),
                size: bytes.len(),
                compile_time,
                precompiled,
                imports,
                synchronous: true,
                ops: Vec::new(),
                warnings: Vec::new(),
            },
            rules: Vec::new(),
        };
        // The first instance tells whether calls can skip the fiber: instantiating without
        // one fails at once, before any guest code runs, when an import waits.
        let mut store = policy.new_store();
        let instance = match policy.pre.instantiate(&mut store) {
            Ok(instance) => Ok(instance),
            Err(_) => {
                policy.sync = false;
                policy.report.synchronous = false;
                store = policy.new_store();
                policy.pre.instantiate_async(&mut store).await
            }
        };
        let slot = policy.slot("describe")?;
        let inst = policy
            .with_funcs("describe", slot, store, instance)
            .map_err(|e| bad(format!("cannot instantiate: {e}")))?;
        inst.funcs
            .typecheck(&inst.store)
            .map_err(|e| bad(format!("does not match world {WORLD}: {e}")))?;
        let _ = policy.pool.push(inst);
        // `describe` runs once, off the request path: with the set-up budget.
        let call_deadline = policy.limits.deadline;
        policy.limits.deadline = setup_budget(call_deadline);
        let pick = Funcs::describe;
        let described = if policy.sync {
            policy.call_now::<(), DescribeResults>("describe", pick, ())
        } else {
            policy
                .call_on_fiber::<(), DescribeResults>("describe", pick, (), WRITE_INSTANCE_WAIT)
                .await
        };
        policy.limits.deadline = call_deadline;
        let (info,) = described.map_err(|e| bad(format!("describe() failed: {e}")))?;
        // The policy's own word that a declaration is wrong: nothing of it is served.
        let info = info.map_err(|mistakes| bad(format!("declaration refused: {mistakes}")))?;
        if !info.name.is_empty() {
            policy.name = info.name.as_str().into();
            policy.metrics = PolicyMetrics::new(&info.name);
            policy.report.name = info.name.clone();
        }
        policy.report.version = info.version.clone();
        let mut seen = std::collections::HashSet::new();
        for op in info.ops {
            if !seen.insert(op.name.clone()) {
                return Err(bad(format!("declares operation {:?} twice", op.name)));
            }
            let (rule, native) =
                op_rule(&op).map_err(|e| bad(format!("operation {:?}: {e}", op.name)))?;
            if let Some(route) = &op.route {
                let parsed = crate::route::Route::parse(route)
                    .map_err(|e| bad(format!("operation {:?}: {e}", op.name)))?;
                let reads = matches!(op.kind, wit::OpKind::Read);
                if reads != matches!(parsed.method.as_str(), "GET" | "HEAD") {
                    return Err(bad(format!(
                        "operation {:?}: a {} op is routed by {} (reads are GET, writes POST, PUT, PATCH or DELETE)",
                        op.name,
                        if reads { "read" } else { "write" },
                        parsed.method
                    )));
                }
                if let (Some(params), Some(p)) = (
                    &op.params,
                    parsed
                        .params()
                        .find(|p| !op.params.iter().flatten().any(|d| d == p)),
                ) {
                    return Err(bad(format!(
                        "operation {:?}: route parameter {p:?} is not one of its params {params:?}",
                        op.name
                    )));
                }
                policy.routes.push((op.name.clone(), parsed));
            }
            if op.params.is_none() && (!native || rule.has_placeholders()) {
                policy.report.warnings.push(format!(
                    "{}: no params declared, so its placeholders cannot be checked at load (a \
                     misspelled one fails every call{})",
                    op.name,
                    match op.kind {
                        wit::OpKind::Write => ", and a write that fails invalidates the namespace",
                        wit::OpKind::Read => "",
                    }
                ));
            }
            policy.report.ops.push(OpInfo {
                name: op.name.clone(),
                kind: match op.kind {
                    wit::OpKind::Read => OpKind::Read,
                    wit::OpKind::Write => OpKind::Write,
                },
                params: op.params.clone(),
                route: op.route.clone(),
                native,
            });
            policy.rules.push((op.name, rule));
        }
        Ok(policy)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn report(&self) -> &PolicyReport {
        &self.report
    }

    /// The limits its calls run under.
    pub fn limits(&self) -> PolicyLimits {
        self.limits
    }

    pub fn faults(&self) -> u64 {
        self.faults.load(Ordering::Relaxed)
    }

    /// SHA-256 of the component, hex.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// Why the policy is no longer called, once it faulted too often.
    pub fn quarantined(&self) -> Option<String> {
        self.quarantine.reason()
    }

    /// The error of a call to a quarantined policy, if it is.
    fn check_quarantine(&self, op: &str) -> Result<(), Error> {
        match self.quarantine.reason() {
            None => Ok(()),
            Some(reason) => Err(Error::Quarantined {
                policy: self.name.to_string(),
                op: op.to_string(),
                reason,
            }),
        }
    }

    /// Calls served uncached because every instance was busy.
    pub fn busy(&self) -> u64 {
        self.busy.load(Ordering::Relaxed)
    }

    /// Instances alive now, and the most that were at once.
    pub fn instances(&self) -> (usize, usize) {
        (
            self.slots.live.load(Ordering::Relaxed),
            self.slots.peak.load(Ordering::Relaxed),
        )
    }

    /// A slot for a new instance, or the error of a policy whose instances are all busy.
    fn slot(&self, op: &str) -> Result<Slot, Error> {
        self.slots
            .take(self.limits.max_instances.max(1))
            .ok_or_else(|| self.all_busy(op))
    }

    fn all_busy(&self, op: &str) -> Error {
        self.busy.fetch_add(1, Ordering::Relaxed);
        Error::Busy {
            policy: self.name.to_string(),
            op: op.to_string(),
            instances: self.limits.max_instances.max(1),
        }
    }

    /// An instance from the pool, armed with the call deadline; `None` when the pool is empty.
    fn pooled(&self) -> Option<Instance> {
        let mut inst = self.pool.pop()?;
        self.arm(&mut inst.store, self.limits.deadline);
        Some(inst)
    }

    /// A new store, limited, armed with the instantiation budget (see [`setup_budget`]); the
    /// call deadline is armed once the instance exists.
    fn new_store(&self) -> WasmStore<HostState> {
        let state = HostState::new(self.store.clone(), self.name.clone(), self.limits.memory);
        let mut store = WasmStore::new(&runtime().engine, state);
        store.limiter(|s| &mut s.limits);
        self.arm(&mut store, setup_budget(self.limits.deadline));
        store
    }

    /// The exports of a new instance, or the fault that prevented it.
    fn with_funcs(
        &self,
        op: &str,
        slot: Slot,
        mut store: WasmStore<HostState>,
        instance: wasmtime::Result<wasmtime::component::Instance>,
    ) -> Result<Instance, Error> {
        let funcs = instance.and_then(|i| {
            self.exports
                .funcs(&mut store, &i)
                .ok_or_else(|| wasmtime::format_err!("an export of {WORLD} is missing"))
        });
        match funcs {
            Ok(funcs) => {
                self.arm(&mut store, self.limits.deadline);
                Ok(Instance {
                    store,
                    funcs,
                    _slot: slot,
                })
            }
            Err(e) => Err(self.fault(op, e)),
        }
    }

    /// Calls the export `pick` of an instance without a fiber (the policy is `sync`).
    fn call_now<P, R>(
        &self,
        op: &str,
        pick: fn(&Funcs) -> TypedFunc<P, R>,
        params: P,
    ) -> Result<R, Error>
    where
        P: ComponentNamedList + Lower + Send + Sync,
        R: ComponentNamedList + Lift + Send + Sync + 'static,
    {
        // A synchronous call holds its instance only while it runs on this thread: it never
        // waits for one (the bound is only reached with as many threads calling at once).
        let mut inst = match self.pooled() {
            Some(inst) => inst,
            None => {
                let slot = self.slot(op)?;
                let mut store = self.new_store();
                let instance = self.pre.instantiate(&mut store);
                self.with_funcs(op, slot, store, instance)?
            }
        };
        let out = pick(&inst.funcs).call(&mut inst.store, params);
        self.give_back(op, inst, out)
    }

    /// Calls the export `pick` of an instance on a fiber (the policy imports something that
    /// waits: `store`).
    async fn call_on_fiber<P, R>(
        &self,
        op: &str,
        pick: fn(&Funcs) -> TypedFunc<P, R>,
        params: P,
        wait: Duration,
    ) -> Result<R, Error>
    where
        P: ComponentNamedList + Lower + Send + Sync,
        R: ComponentNamedList + Lift + Send + Sync + 'static,
    {
        let mut inst = self.instance_within(op, wait).await?;
        let out = pick(&inst.funcs).call_async(&mut inst.store, params).await;
        self.give_back(op, inst, out)
    }

    /// An idle instance, a new one if fewer than the bound are alive, or one that another
    /// call gives back within `wait`.
    async fn instance_within(&self, op: &str, wait: Duration) -> Result<Instance, Error> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let freed = self.slots.freed.notified();
            if let Some(inst) = self.pooled() {
                return Ok(inst);
            }
            if let Some(slot) = self.slots.take(self.limits.max_instances.max(1)) {
                let mut store = self.new_store();
                let instance = self.pre.instantiate_async(&mut store).await;
                return self.with_funcs(op, slot, store, instance);
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return Err(self.all_busy(op));
            }
        }
    }

    /// Returns a healthy instance to the pool (a full pool drops it); a trapped one is
    /// dropped with its `Store`. Either way a waiting call is woken.
    fn give_back<R>(&self, op: &str, inst: Instance, out: wasmtime::Result<R>) -> Result<R, Error> {
        match out {
            Ok(r) => {
                if self.pool.push(inst).is_ok() {
                    self.slots.freed.notify_one();
                }
                Ok(r)
            }
            Err(e) => Err(self.fault(op, e)),
        }
    }

    /// Arms `store` for a call of at most `d`: the epoch deadline for the guest's code, and
    /// the same instant for the host calls it makes.
    fn arm(&self, store: &mut WasmStore<HostState>, d: Duration) {
        store.set_epoch_deadline(ticks(d));
        store.data_mut().deadline = Instant::now() + d;
    }

    fn fault(&self, op: &str, e: wasmtime::Error) -> Error {
        self.faults.fetch_add(1, Ordering::Relaxed);
        self.metrics.faults.increment(1);
        if let Some(reason) = self.quarantine.record() {
            tracing::error!(
                policy = &*self.name,
                "policy quarantined: {reason}; its ops are served uncached without calling it \
                 until a new version is loaded"
            );
        }
        let message = match e.downcast_ref::<wasmtime::Trap>() {
            Some(wasmtime::Trap::Interrupt) => format!(
                "ran past its deadline of {:?} and was stopped",
                self.limits.deadline
            ),
            Some(trap) => format!("{trap}"),
            None => {
                let text = e.root_cause().to_string();
                if text.contains("grow") || text.contains("memory") {
                    format!(
                        "exceeded its memory cap of {} bytes ({text})",
                        self.limits.memory
                    )
                } else {
                    text
                }
            }
        };
        tracing::warn!(
            policy = &*self.name,
            op,
            "policy fault, instance discarded: {message}"
        );
        Error::Guest {
            policy: self.name.to_string(),
            op: op.to_string(),
            message,
        }
    }

    /// The guest's read rule. Synchronous policies are called in place (this future holds
    /// nothing across an await); the others on a boxed fiber call.
    async fn guest_read(
        &self,
        op: &str,
        index: u32,
        args: &Args,
    ) -> Result<Option<ReadRule>, Error> {
        self.check_quarantine(op)?;
        let _timed = Timed::new(&self.metrics.call);
        let span = tracing::debug_span!("cachelet.policy", policy = &*self.name, op);
        tracing::Instrument::instrument(self.guest_read_in(op, index, args), span).await
    }

    async fn guest_read_in(
        &self,
        op: &str,
        index: u32,
        args: &Args,
    ) -> Result<Option<ReadRule>, Error> {
        let pick = Funcs::read;
        let (out,) = if self.sync {
            let wargs = wire_args(args);
            let params: ReadParams<'_> = (index, &wargs);
            self.call_now::<_, ReadResults>(op, pick, params)?
        } else {
            Box::pin(async {
                let wargs = wire_args(args);
                let params: ReadParams<'_> = (index, &wargs);
                self.call_on_fiber::<_, ReadResults>(op, pick, params, self.limits.instance_wait)
                    .await
            })
            .await?
        };
        match out {
            Ok(rule) => Ok(rule.map(from_wit_read)),
            Err(message) => Err(self.refused(op, message)),
        }
    }

    async fn guest_write(
        &self,
        op: &str,
        index: u32,
        args: &Args,
        result: Option<&Value>,
    ) -> Result<Option<WriteRule>, Error> {
        self.check_quarantine(op)?;
        let _timed = Timed::new(&self.metrics.call);
        let span = tracing::debug_span!("cachelet.policy", policy = &*self.name, op);
        tracing::Instrument::instrument(self.guest_write_in(op, index, args, result), span).await
    }

    async fn guest_write_in(
        &self,
        op: &str,
        index: u32,
        args: &Args,
        result: Option<&Value>,
    ) -> Result<Option<WriteRule>, Error> {
        let pick = Funcs::write;
        let (out,) = if self.sync {
            let wargs = wire_args(args);
            let params: WriteParams<'_> = (index, &wargs, result.map(WireValue::from));
            self.call_now::<_, WriteResults>(op, pick, params)?
        } else {
            Box::pin(async {
                let wargs = wire_args(args);
                let params: WriteParams<'_> = (index, &wargs, result.map(WireValue::from));
                self.call_on_fiber::<_, WriteResults>(op, pick, params, WRITE_INSTANCE_WAIT)
                    .await
            })
            .await?
        };
        match out {
            Ok(rule) => Ok(rule.map(|r| WriteRule {
                invalidate: r.invalidate,
                recache: r
                    .recache
                    .into_iter()
                    .map(|rc| Recache {
                        op: rc.op,
                        args: from_wit_args(rc.args),
                    })
                    .collect(),
                recache_concurrency: r.recache_concurrency,
            })),
            Err(message) => Err(self.refused(op, message)),
        }
    }

    fn refused(&self, op: &str, message: String) -> Error {
        Error::Policy {
            policy: self.name.to_string(),
            op: op.to_string(),
            message,
        }
    }
}

pub(crate) use crate::digest::hex_sha256;

/// A clear word for bytes that are not a component at all.
fn check_header(bytes: &[u8]) -> Result<(), String> {
    match bytes.get(..8) {
        Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => Err("this is a core WebAssembly module, not a \
            component: build it for wasm32-wasip2, or wrap it with `wasm-tools component new`"
            .into()),
        Some([0, b'a', b's', b'm', _, _, 1, 0]) => Ok(()),
        _ if bytes.is_empty() => Err("the file is empty".into()),
        _ => Err("not a WebAssembly component (no `\\0asm` header)".into()),
    }
}

/// Checks what the component exports and imports against what this host provides.
fn check_world(component: &Component) -> Result<Vec<String>, String> {
    let engine = &runtime().engine;
    let ty = component.component_type();
    let exports: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_string()).collect();
    let imports: Vec<String> = ty.imports(engine).map(|(n, _)| n.to_string()).collect();
    let other_version = |names: &[String]| {
        names.iter().find_map(|n| {
            let (pkg, rest) = n.split_once('/')?;
            let (_, ver) = rest.split_once('@')?;
            (pkg == PACKAGE && ver != PACKAGE_VERSION).then(|| ver.to_string())
        })
    };
    if let Some(v) = other_version(&exports).or_else(|| other_version(&imports)) {
        return Err(format!(
            "built for {PACKAGE}@{v}, but this host implements {PACKAGE}@{PACKAGE_VERSION}: \
             rebuild the policy against the WIT of this release"
        ));
    }
    if !exports.iter().any(|n| n == POLICY_EXPORT) {
        return Err(format!(
            "does not export {POLICY_EXPORT} (it exports: {}); a policy must target world {WORLD}",
            if exports.is_empty() {
                "nothing".into()
            } else {
                exports.join(", ")
            }
        ));
    }
    for n in &imports {
        let ours = n.starts_with("cachelet:policy/");
        let wasi = n.starts_with("wasi:");
        if n.starts_with("wasi:http/") {
            // componentize-js's default `http` feature; a policy has no one to call.
            return Err(format!(
                "imports {n}: this host does not link wasi:http (a policy makes no requests);                  build without it (componentize-js: `-d http fetch-event`)"
            ));
        }
        if !ours && !wasi {
            return Err(format!(
                "imports {n}, which this host does not provide (it provides {PACKAGE}/store, \
                 {PACKAGE}/log and WASI 0.2 with nothing granted)"
            ));
        }
    }
    Ok(imports)
}

fn op_rule(op: &wit::OpInfo) -> Result<(Rule, bool), Error> {
    let check = |t: Template| -> Result<Template, Error> {
        if let Some(params) = &op.params {
            if let Some(p) = t.params().find(|p| !params.iter().any(|d| d == p)) {
                return Err(Error::Template {
                    template: t.text().to_string(),
                    problem: format!(
                        "{{{p}}} is not a parameter of the operation (parameters: {})",
                        params.join(", ")
                    ),
                });
            }
        }
        Ok(t)
    };
    match op.kind {
        wit::OpKind::Read => {
            if op.write_template.is_some() {
                return Err(Error::Args("a read declares a write template".into()));
            }
            let t = match &op.read_template {
                None => None,
                Some(r) => Some(ReadTemplate {
                    key: check(parse_template(&r.key)?)?,
                    tags: r
                        .tags
                        .iter()
                        .map(|t| parse_template(t).and_then(check))
                        .collect::<Result<_, _>>()?,
                    ttl: from_wit_ttl(r.ttl),
                    early_ttl: r.early_ttl,
                    refresh: r.refresh,
                    lock: r.lock,
                }),
            };
            let native = t.is_some();
            Ok((Rule::Read(t), native))
        }
        wit::OpKind::Write => {
            if op.read_template.is_some() {
                return Err(Error::Args("a write declares a read template".into()));
            }
            let t = match &op.write_template {
                None => None,
                Some(w) => Some(WriteTemplate {
                    invalidate: w
                        .invalidate
                        .iter()
                        .map(|t| parse_template(t).and_then(check))
                        .collect::<Result<_, _>>()?,
                    recache: w
                        .recache
                        .iter()
                        .map(|r| {
                            // The write's arguments it names are parameters too.
                            if let Some(params) = &op.params {
                                let mut names = r
                                    .include
                                    .iter()
                                    .flatten()
                                    .chain(r.rename.iter().map(|(from, _)| from));
                                if let Some(n) = names.find(|n| !params.contains(n)) {
                                    return Err(Error::Template {
                                        template: format!("recache of {}", r.op),
                                        problem: format!(
                                            "`{n}` is not a parameter of the operation \
                                             (parameters: {})",
                                            params.join(", ")
                                        ),
                                    });
                                }
                            }
                            Ok(RecacheTemplate {
                                op: r.op.clone(),
                                include: r.include.clone(),
                                rename: r.rename.clone(),
                                extra: from_wit_args(r.extra.clone()),
                            })
                        })
                        .collect::<Result<_, _>>()?,
                    recache_concurrency: w.recache_concurrency,
                }),
            };
            let native = t.is_some();
            Ok((Rule::Write(t), native))
        }
    }
}

fn from_wit_args(a: Vec<(String, wit::Value)>) -> Args {
    a.into_iter()
        .map(|(n, v)| {
            let v = match v {
                wit::Value::Null => Value::Null,
                wit::Value::Boolean(b) => Value::Bool(b),
                wit::Value::Integer(i) => Value::Int(i),
                wit::Value::Float(f) => Value::Float(f),
                wit::Value::Text(s) => Value::Text(s),
                wit::Value::Json(s) => Value::Json(s),
            };
            (n, v)
        })
        .collect()
}

fn from_wit_read(r: wit::ReadRule) -> ReadRule {
    ReadRule {
        key: r.key,
        ttl: from_wit_ttl(r.ttl),
        tags: r.tags,
        early_ttl: r.early_ttl,
        refresh: r.refresh,
        lock: r.lock,
    }
}

/// Where an operation's rule comes from: its policy, its position there (what the guest is
/// called with), and its template when the host renders it.
enum Route {
    Read {
        policy: usize,
        index: u32,
        template: Option<ReadTemplate>,
        metrics: Arc<ReadMetrics>,
    },
    Write {
        policy: usize,
        index: u32,
        template: Option<WriteTemplate>,
    },
}

/// An HTTP request's op (see [`PolicySet::route`]).
#[cfg_attr(not(feature = "axum"), allow(dead_code))]
pub(crate) struct Routed {
    pub op: String,
    pub args: Args,
    pub kind: OpKind,
    pub options: crate::route::RouteOptions,
    /// What the request's query named.
    pub query: crate::route::QueryNames,
}

/// The policies in force: swapped as a whole when a policy is loaded, replaced or removed
/// (see [`lifecycle`]). A policy unchanged by a swap is shared by the old set and the new one.
pub(crate) struct PolicySet {
    policies: Vec<Arc<Policy>>,
    /// By operation name (Fx hashing: the names are the policies' own, looked up per call).
    routes: FxHashMap<String, Route>,
    /// The HTTP routes of every policy, most specific first.
    http: crate::route::Routes,
    /// What an answer may hold (checked on every rule, rendered by the host or the guest).
    limits: GuestLimits,
}

impl PolicySet {
    pub fn empty(limits: GuestLimits) -> PolicySet {
        PolicySet {
            policies: Vec::new(),
            routes: FxHashMap::default(),
            http: crate::route::Routes::default(),
            limits,
        }
    }

    /// The set of `policies`, routed by operation; an operation declared by two of them is
    /// an error naming both.
    pub fn of(policies: Vec<Arc<Policy>>, limits: GuestLimits) -> Result<PolicySet, Error> {
        let mut set = PolicySet::empty(limits);
        for policy in policies {
            let idx = set.policies.len();
            let Policy { rules, .. } = &*policy;
            let mut routes = Vec::with_capacity(rules.len());
            for (index, (op, rule)) in (0u32..).zip(rules) {
                if let Some(first) = set.route_policy(op) {
                    return Err(Error::DuplicateOp {
                        op: op.clone(),
                        first: first.to_string(),
                        second: policy.name().to_string(),
                    });
                }
                let route = match rule {
                    Rule::Read(t) => Route::Read {
                        policy: idx,
                        index,
                        template: t.clone(),
                        metrics: Arc::new(ReadMetrics::new(policy.name(), op)),
                    },
                    Rule::Write(t) => Route::Write {
                        policy: idx,
                        index,
                        template: t.clone(),
                    },
                };
                routes.push((op.clone(), route));
            }
            set.routes.extend(routes);
            for (op, route) in &policy.routes {
                set.http.add(route.clone(), op.clone());
            }
            set.policies.push(policy);
        }
        Ok(set)
    }

    /// The read ops the declared write rules recache (computed rules may name others); only
    /// those of writes with an HTTP route when `routed_writes_only`.
    pub fn recached_ops(&self, routed_writes_only: bool) -> std::collections::BTreeSet<&str> {
        self.routes
            .iter()
            .filter(|(op, _)| !routed_writes_only || self.http.of_op(op).is_some())
            .filter_map(|(_, r)| match r {
                Route::Write {
                    template: Some(t), ..
                } => Some(t.recache.iter().map(|r| r.op.as_str())),
                _ => None,
            })
            .flatten()
            .collect()
    }

    fn route_policy(&self, op: &str) -> Option<&str> {
        self.routes.get(op).map(|r| match r {
            Route::Read { policy, .. } | Route::Write { policy, .. } => {
                self.policies[*policy].name()
            }
        })
    }

    pub fn policies(&self) -> impl Iterator<Item = &Arc<Policy>> {
        self.policies.iter()
    }

    /// The read rule for one call; `Ok(None)` when the call is not to be cached.
    pub async fn read_rule(&self, op: &str, args: &Args) -> Result<Option<ReadRule>, Error> {
        self.read_rule_metered(op, args).await.1
    }

    /// The op an HTTP request is routed to, its arguments, whether it reads or writes, and
    /// what its route says beyond the path.
    pub fn route(&self, method: &str, path: &str, query: Option<&str>) -> Option<Routed> {
        if self.http.is_empty() {
            return None;
        }
        let (route, op, args, query) = self.http.find_route(method, path, query)?;
        let kind = match self.routes.get(op)? {
            Route::Read { .. } => OpKind::Read,
            Route::Write { .. } => OpKind::Write,
        };
        Some(Routed {
            op: op.to_string(),
            args,
            kind,
            options: route.options,
            query,
        })
    }

    /// The HTTP routes of the loaded policies, most specific first.
    pub fn http_routes(&self) -> &crate::route::Routes {
        &self.http
    }

    /// The metrics of a read op.
    pub fn read_metrics(&self, op: &str) -> Option<&Arc<ReadMetrics>> {
        match self.routes.get(op) {
            Some(Route::Read { metrics, .. }) => Some(metrics),
            _ => None,
        }
    }

    /// [`PolicySet::read_rule`], and the op's metrics (`None` for an op no policy declares).
    /// The rule is checked against the guest limits, whoever rendered it.
    pub async fn read_rule_metered(
        &self,
        op: &str,
        args: &Args,
    ) -> (Option<&Arc<ReadMetrics>>, Result<Option<ReadRule>, Error>) {
        let (metrics, rule) = match self.routes.get(op) {
            None => (None, Err(Error::UnknownOp(op.to_string()))),
            Some(Route::Read {
                policy,
                template: Some(t),
                metrics,
                ..
            }) => (
                Some(metrics),
                self.policies[*policy]
                    .check_quarantine(op)
                    .and_then(|()| t.render(args).map(Some)),
            ),
            Some(Route::Read {
                policy,
                index,
                template: None,
                metrics,
            }) => (
                Some(metrics),
                self.policies[*policy].guest_read(op, *index, args).await,
            ),
            Some(Route::Write { .. }) => (
                None,
                Err(Error::WrongKind {
                    op: op.to_string(),
                    kind: "write",
                    wanted: "read",
                }),
            ),
        };
        let checked = rule.and_then(|r| r.map(|r| self.limits.read(op, r)).transpose());
        (metrics, checked)
    }

    /// The write rule for one call. `result` is computed only if the guest is called.
    pub async fn write_rule(
        &self,
        op: &str,
        args: &Args,
        result: impl FnOnce() -> Option<Value>,
    ) -> Result<Option<WriteRule>, Error> {
        let rule = match self.routes.get(op) {
            None => Err(Error::UnknownOp(op.to_string())),
            Some(Route::Write {
                policy,
                template: Some(t),
                ..
            }) => self.policies[*policy]
                .check_quarantine(op)
                .and_then(|()| t.render(args).map(Some)),
            Some(Route::Write {
                policy,
                index,
                template: None,
            }) => {
                self.policies[*policy]
                    .guest_write(op, *index, args, result().as_ref())
                    .await
            }
            Some(Route::Read { .. }) => Err(Error::WrongKind {
                op: op.to_string(),
                kind: "read",
                wanted: "write",
            }),
        }?;
        rule.map(|r| self.limits.write(op, r)).transpose()
    }

    /// Calls the guest's own `read` even for a templated operation (to compare both renders).
    pub async fn guest_read_rule(&self, op: &str, args: &Args) -> Result<Option<ReadRule>, Error> {
        match self.routes.get(op) {
            Some(Route::Read { policy, index, .. }) => {
                self.policies[*policy].guest_read(op, *index, args).await
            }
            Some(Route::Write { .. }) => Err(Error::WrongKind {
                op: op.to_string(),
                kind: "write",
                wanted: "read",
            }),
            None => Err(Error::UnknownOp(op.to_string())),
        }
    }

    /// Calls the guest's own `write` even for a templated operation.
    pub async fn guest_write_rule(
        &self,
        op: &str,
        args: &Args,
        result: Option<&Value>,
    ) -> Result<Option<WriteRule>, Error> {
        match self.routes.get(op) {
            Some(Route::Write { policy, index, .. }) => {
                self.policies[*policy]
                    .guest_write(op, *index, args, result)
                    .await
            }
            Some(Route::Read { .. }) => Err(Error::WrongKind {
                op: op.to_string(),
                kind: "read",
                wanted: "write",
            }),
            None => Err(Error::UnknownOp(op.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_told_apart() {
        assert!(check_header(b"\0asm\x01\0\0\0")
            .unwrap_err()
            .contains("core WebAssembly module"));
        assert!(check_header(b"\0asm\x0d\0\x01\0").is_ok());
        assert!(check_header(b"").unwrap_err().contains("empty"));
        assert!(check_header(b"hello world").unwrap_err().contains("\\0asm"));
    }
}
