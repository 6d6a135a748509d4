//! The policies' lifecycle: where each policy comes from (the builder, a file of the watched
//! directory, a push), the version serving it, and the last failure to load a new one.
//!
//! A change (a version loaded, replaced or removed) is compiled and checked off the request
//! path, then the whole [`PolicySet`] is swapped at once: a call that started on the old set
//! finishes on it, the next one gets the new set. A version that fails to compile, to
//! validate, or whose ops collide with another policy's, changes nothing that serves: the
//! failure is logged and kept in the status ([`Cache::policy_status`](crate::cache::Cache::policy_status)).
//! Unchanged policies are shared by the old set and the new one; a replaced version is
//! released when its last call finishes (the status counts those still alive).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::SystemTime;

use arc_swap::ArcSwap;

use super::{Policy, PolicyLimits, PolicySet, PolicySource, RequestedLimits};
use crate::config::GuestLimits;
use crate::error::Error;
use crate::store::Store;

/// Where a policy comes from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyOrigin {
    /// Given to the builder ([`CacheBuilder::policy_file`](crate::builder::CacheBuilder::policy_file),
    /// [`Cache::replace_policies`](crate::cache::Cache::replace_policies)), in that order.
    Builder {
        /// Its position among the builder's policies.
        index: usize,
        /// Its file or name.
        label: String,
    },
    /// A component file of the watched directory
    /// ([`CacheBuilder::policy_dir`](crate::builder::CacheBuilder::policy_dir)).
    File(PathBuf),
    /// Pushed to the cache's backend under this name (`cachelet policy push`).
    Pushed(String),
}

impl std::fmt::Display for PolicyOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PolicyOrigin::Builder { label, .. } => write!(f, "{label}"),
            PolicyOrigin::File(p) => write!(f, "{}", p.display()),
            PolicyOrigin::Pushed(name) => write!(f, "pushed policy {name:?}"),
        }
    }
}

/// The version of a policy that serves.
#[derive(Debug, Clone, serde::Serialize)]
#[non_exhaustive]
pub struct Serving {
    /// The policy's name (from `describe`).
    pub name: String,
    /// Its version (from `describe`).
    pub version: String,
    /// SHA-256 of the component, hex.
    pub hash: String,
    /// The operations it declares.
    pub ops: Vec<String>,
    /// When this version started serving.
    pub since: SystemTime,
    /// Its faults (traps, deadlines, memory) since then.
    pub faults: u64,
    /// Why it is no longer called, once it faulted too often: its ops are served uncached
    /// until a new version is loaded.
    pub quarantined: Option<String>,
    /// The deadline its calls run under: the host's, or less if the policy asked for less
    /// ([`RequestedLimits`]).
    pub deadline: std::time::Duration,
    /// The memory cap of its instances, in bytes: the host's, or less if it asked for less.
    pub memory: usize,
}

/// A version that could not be loaded: what serves did not change.
#[derive(Debug, Clone, serde::Serialize)]
#[non_exhaustive]
pub struct PolicyFailure {
    /// What was wrong, naming the file or the push.
    pub message: String,
    /// When it was tried.
    pub at: SystemTime,
}

/// One policy: where it comes from, what serves, what last failed.
#[derive(Debug, Clone, serde::Serialize)]
#[non_exhaustive]
pub struct PolicyState {
    /// Where it comes from.
    pub origin: PolicyOrigin,
    /// The version that serves, if one does.
    pub serving: Option<Serving>,
    /// The last version that failed to load, unless a later one loaded.
    pub failure: Option<PolicyFailure>,
}

/// What [`Cache::policy_status`](crate::cache::Cache::policy_status) reports.
#[derive(Debug, Clone, serde::Serialize)]
#[non_exhaustive]
pub struct PolicyStatus {
    /// Every policy, in the order the set is composed (builder, files, pushes).
    pub policies: Vec<PolicyState>,
    /// Replaced versions still alive: calls that started on them are finishing. Back to 0
    /// once they have.
    pub retired_alive: usize,
    /// Bumped by every change tried, loaded or not.
    pub generation: u64,
}

impl PolicyStatus {
    /// The state of the policy from `origin`.
    pub fn get(&self, origin: &PolicyOrigin) -> Option<&PolicyState> {
        self.policies.iter().find(|p| &p.origin == origin)
    }

    /// The state of the policy loaded from `path` (a file of the watched directory).
    pub fn file(&self, path: impl AsRef<Path>) -> Option<&PolicyState> {
        // The directory is watched by its canonical path.
        let path = path.as_ref();
        let canonical = path
            .parent()
            .and_then(|d| std::fs::canonicalize(d).ok())
            .zip(path.file_name())
            .map(|(d, n)| d.join(n));
        let path = canonical.as_deref().unwrap_or(path);
        self.policies
            .iter()
            .find(|p| matches!(&p.origin, PolicyOrigin::File(f) if f == path))
    }

    /// The state of the policy whose serving version is called `name`.
    pub fn named(&self, name: &str) -> Option<&PolicyState> {
        self.policies
            .iter()
            .find(|p| p.serving.as_ref().is_some_and(|s| s.name == name))
    }
}

/// A change to one origin.
pub(crate) enum Change {
    /// Load this version (bytes, their hash, the limits it asks for), replacing what serves.
    Load(PolicySource, String, RequestedLimits),
    /// Stop serving it.
    Remove,
}

struct Entry {
    serving: Option<(Arc<Policy>, SystemTime)>,
    failure: Option<(PolicyFailure, Option<String>)>,
}

#[derive(Default)]
struct State {
    entries: BTreeMap<PolicyOrigin, Entry>,
    retired: Vec<Weak<Policy>>,
}

/// The policies in force and where each came from; every change goes through here.
pub(crate) struct Lifecycle {
    store: Arc<Store>,
    limits: PolicyLimits,
    guest: GuestLimits,
    compile_cache: Option<PathBuf>,
    serving: Arc<ArcSwap<PolicySet>>,
    /// One change at a time (held across the load).
    changing: tokio::sync::Mutex<()>,
    state: Mutex<State>,
    generation: AtomicU64,
    /// Asks the watched directory's task to look at every file now (see `rescan`).
    pub(crate) rescans:
        Mutex<Option<tokio::sync::mpsc::UnboundedSender<tokio::sync::oneshot::Sender<()>>>>,
}

impl Lifecycle {
    pub fn new(
        store: Arc<Store>,
        limits: PolicyLimits,
        guest: GuestLimits,
        compile_cache: Option<PathBuf>,
    ) -> Lifecycle {
        Lifecycle {
            store,
            limits,
            guest,
            compile_cache,
            serving: Arc::new(ArcSwap::from_pointee(PolicySet::empty(guest))),
            changing: tokio::sync::Mutex::new(()),
            state: Mutex::default(),
            generation: AtomicU64::new(0),
            rescans: Mutex::new(None),
        }
    }

    /// Takes every file of the watched directory that changed, now (not waiting for it to
    /// settle), and drops the policies of files that are gone; returns when done. Nothing to
    /// do without a watched directory.
    pub async fn rescan(&self) {
        let tx = self
            .rescans
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(tx) = tx {
            let (done, wait) = tokio::sync::oneshot::channel();
            if tx.send(done).is_ok() {
                let _ = wait.await;
            }
        }
    }

    /// The set calls use.
    pub fn serving(&self) -> &Arc<ArcSwap<PolicySet>> {
        &self.serving
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Loads `source` under the limits it asks for, as a check (nothing serves it): what a
    /// push validates first.
    pub async fn check(
        &self,
        source: PolicySource,
        asked: &RequestedLimits,
    ) -> Result<Arc<Policy>, Error> {
        self.load(source, self.limits.bounding(asked)).await
    }

    /// Whether `origin` serves the version `hash` under the limits `asked` gives it.
    pub fn serves(&self, origin: &PolicyOrigin, hash: &str, asked: &RequestedLimits) -> bool {
        let limits = self.limits.bounding(asked);
        let state = self.lock();
        state
            .entries
            .get(origin)
            .and_then(|e| e.serving.as_ref())
            .is_some_and(|(p, _)| p.hash() == hash && p.limits() == limits)
    }

    /// Records that a version of `origin` was refused before loading (unsigned, tampered
    /// with): what serves stays.
    pub fn refuse(&self, origin: PolicyOrigin, message: String, hash: Option<String>) {
        tracing::warn!("{origin}: not loaded, what serves stays: {message}");
        let mut state = self.lock();
        let entry = state.entries.entry(origin).or_insert(Entry {
            serving: None,
            failure: None,
        });
        entry.failure = Some((
            PolicyFailure {
                message,
                at: SystemTime::now(),
            },
            hash,
        ));
        drop(state);
        self.bump();
    }

    /// Whether the version `hash` of `origin` was refused already (it is not tried again).
    pub fn refused(&self, origin: &PolicyOrigin, hash: &str) -> bool {
        let state = self.lock();
        state
            .entries
            .get(origin)
            .and_then(|e| e.failure.as_ref())
            .is_some_and(|(_, h)| h.as_deref() == Some(hash))
    }

    /// Compiles and checks `source` off the request path (a blocking thread: a Python
    /// component compiles for seconds).
    async fn load(&self, source: PolicySource, limits: PolicyLimits) -> Result<Arc<Policy>, Error> {
        let (store, cache) = (self.store.clone(), self.compile_cache.clone());
        let handle = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            handle.block_on(Policy::load(&source, store, limits, cache.as_deref()))
        })
        .await
        .unwrap_or_else(|e| {
            Err(Error::Load {
                source_name: "policy".into(),
                problem: format!("the load panicked: {e}"),
            })
        })
        .map(Arc::new)
    }

    /// The set of what serves, with `origin`'s policies replaced by `with` (none: removed).
    fn compose(
        &self,
        state: &State,
        replace: &dyn Fn(&PolicyOrigin) -> bool,
        with: Vec<(PolicyOrigin, Arc<Policy>)>,
    ) -> Result<PolicySet, Error> {
        let mut all: Vec<(PolicyOrigin, Arc<Policy>)> = state
            .entries
            .iter()
            .filter(|(o, _)| !replace(o))
            .filter_map(|(o, e)| Some((o.clone(), e.serving.as_ref()?.0.clone())))
            .collect();
        all.extend(with);
        all.sort_by(|a, b| a.0.cmp(&b.0));
        PolicySet::of(all.into_iter().map(|(_, p)| p).collect(), self.guest)
    }

    /// Swaps `set` in and retires what `origin`s served before.
    fn install(&self, state: &mut State, set: PolicySet) {
        self.serving.store(Arc::new(set));
        state.retired.retain(|w| w.strong_count() > 0);
    }

    fn retire(state: &mut State, old: Option<(Arc<Policy>, SystemTime)>) {
        if let Some((p, _)) = old {
            state.retired.push(Arc::downgrade(&p));
        }
    }

    fn bump(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Applies one change; `Ok(false)` when it changes nothing (the same version again).
    /// A failure is kept in the status and returned; what serves stays.
    pub async fn apply(&self, origin: PolicyOrigin, change: Change) -> Result<bool, Error> {
        let _one = self.changing.lock().await;
        let out = match change {
            Change::Remove => {
                let mut state = self.lock();
                match state.entries.remove(&origin) {
                    None => Ok(false),
                    Some(old) => {
                        let set = self
                            .compose(&state, &|o| o == &origin, Vec::new())
                            .expect("removing a policy leaves no op declared twice");
                        self.install(&mut state, set);
                        if old.serving.is_some() {
                            tracing::info!("{origin}: removed; its ops are no longer cached");
                        }
                        Self::retire(&mut state, old.serving);
                        Ok(true)
                    }
                }
            }
            Change::Load(source, hash, asked) => {
                self.load_version(&origin, source, hash, asked).await
            }
        };
        self.bump();
        out
    }

    async fn load_version(
        &self,
        origin: &PolicyOrigin,
        source: PolicySource,
        hash: String,
        asked: RequestedLimits,
    ) -> Result<bool, Error> {
        let limits = self.limits.bounding(&asked);
        // A version is its bytes and the limits it runs under.
        let memo = format!("{hash} {asked:?}");
        {
            let mut state = self.lock();
            if let Some(e) = state.entries.get_mut(origin) {
                if e.serving
                    .as_ref()
                    .is_some_and(|(p, _)| p.hash() == hash && p.limits() == limits)
                {
                    e.failure = None;
                    return Ok(false);
                }
                if let Some((f, Some(h))) = &e.failure {
                    if *h == memo {
                        // The same broken bytes again (a rescan): no second compile.
                        return Err(Error::Load {
                            source_name: origin.to_string(),
                            problem: f.message.clone(),
                        });
                    }
                }
            }
        }
        let loaded = match self.load(source, limits).await {
            Ok(p) => {
                let state = self.lock();
                self.compose(&state, &|o| o == origin, vec![(origin.clone(), p.clone())])
                    .map(|set| (p, set))
            }
            Err(e) => Err(e),
        };
        let mut state = self.lock();
        match loaded {
            Ok((policy, set)) => {
                self.install(&mut state, set);
                tracing::info!(
                    "{origin}: policy {:?} {} ({}) serving",
                    policy.name(),
                    policy.report().version,
                    &policy.hash()[..12]
                );
                let old = state.entries.insert(
                    origin.clone(),
                    Entry {
                        serving: Some((policy, SystemTime::now())),
                        failure: None,
                    },
                );
                Self::retire(&mut state, old.and_then(|o| o.serving));
                Ok(true)
            }
            Err(e) => {
                tracing::warn!(
                    "{origin}: not loaded, what serves stays: {}",
                    crate::error::chain(&e)
                );
                let entry = state.entries.entry(origin.clone()).or_insert(Entry {
                    serving: None,
                    failure: None,
                });
                entry.failure = Some((
                    PolicyFailure {
                        message: e.to_string(),
                        at: SystemTime::now(),
                    },
                    Some(memo),
                ));
                Err(e)
            }
        }
    }

    /// Replaces every builder policy at once: all load, or nothing changes.
    pub async fn replace_builder(&self, sources: &[PolicySource]) -> Result<(), Error> {
        let _one = self.changing.lock().await;
        // Each on a blocking thread, as every other load: a Python component compiles for
        // seconds, which must not hold a worker of the runtime serving calls (nor the CLI's
        // progress display).
        let mut loaded = Vec::with_capacity(sources.len());
        let mut failed = None;
        for source in sources {
            match self.load(source.clone(), self.limits).await {
                Ok(p) => loaded.push(p),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        self.bump();
        if let Some(e) = failed {
            return Err(e);
        }
        let with: Vec<(PolicyOrigin, Arc<Policy>)> = sources
            .iter()
            .enumerate()
            .zip(loaded)
            .map(|((index, s), p)| {
                (
                    PolicyOrigin::Builder {
                        index,
                        label: s.label(),
                    },
                    p,
                )
            })
            .collect();
        let mut state = self.lock();
        let builder = |o: &PolicyOrigin| matches!(o, PolicyOrigin::Builder { .. });
        let set = self.compose(&state, &builder, with.clone())?;
        self.install(&mut state, set);
        let old: Vec<PolicyOrigin> = state
            .entries
            .keys()
            .filter(|o| builder(o))
            .cloned()
            .collect();
        for o in old {
            let e = state.entries.remove(&o);
            Self::retire(&mut state, e.and_then(|e| e.serving));
        }
        let now = SystemTime::now();
        for (o, p) in with {
            state.entries.insert(
                o,
                Entry {
                    serving: Some((p, now)),
                    failure: None,
                },
            );
        }
        Ok(())
    }

    /// The origins of one kind.
    pub fn origins(&self, of_kind: impl Fn(&PolicyOrigin) -> bool) -> Vec<PolicyOrigin> {
        self.lock()
            .entries
            .keys()
            .filter(|o| of_kind(o))
            .cloned()
            .collect()
    }

    pub fn status(&self) -> PolicyStatus {
        let state = self.lock();
        PolicyStatus {
            policies: state
                .entries
                .iter()
                .map(|(origin, e)| PolicyState {
                    origin: origin.clone(),
                    serving: e.serving.as_ref().map(|(p, since)| Serving {
                        name: p.name().to_string(),
                        version: p.report().version.clone(),
                        hash: p.hash().to_string(),
                        ops: p.report().ops.iter().map(|o| o.name.clone()).collect(),
                        since: *since,
                        faults: p.faults(),
                        quarantined: p.quarantined(),
                        deadline: p.limits().deadline,
                        memory: p.limits().memory,
                    }),
                    failure: e.failure.as_ref().map(|(f, _)| f.clone()),
                })
                .collect(),
            retired_alive: state
                .retired
                .iter()
                .filter(|w| w.strong_count() > 0)
                .count(),
            generation: self.generation.load(Ordering::Acquire),
        }
    }
}
