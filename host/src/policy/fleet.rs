//! Fleet rollout: policies pushed to the cache's backend, followed by every host of the cache.
//!
//! A push stores the component under its SHA-256 and makes it its policy's current version
//! (by the name its `describe` gives); the previous pushes of that name stay in its history
//! (the last 20), so a rollback goes back to the one before. A component no push of the
//! history names any more (fallen off its end, or rolled back) is deleted: pushes do not pile
//! up in the backend. Every change bumps a generation and is announced
//! on a pub/sub channel: a following host subscribed to it checks at once. Each host also
//! checks the generation every `Settings::policy_check` (250 ms, one command), so a host that
//! missed the announcement — it was disconnected, its subscription was refused, it started
//! later — catches up at its next check; a host loads the current set before it serves. On a
//! Redis Cluster the announcement reaches every node (PUBLISH is broadcast cluster-wide), so
//! a host subscribes through any one of them. Each host reports what it runs, so `cachelet policy list`
//! tells which hosts run which version.
//!
//! On Redis the keys live under the engine's prefix (see
//! `backend/redis/policies.rs`); on the memory backend, in this process: pushes through the
//! library change what this cache serves, at once.
//!
//! Trust: without a public key configured (`CACHELET_POLICY_PUBKEY`), a host runs whatever is
//! pushed — anyone who can write to the cache's Redis prefix can change its policies. With
//! one, only components signed with the matching secret key load; anything else is refused,
//! logged, kept in the status, and what serves stays.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::lifecycle::{Change, Lifecycle, PolicyOrigin};
use super::signature::PublicKey;
use super::{hex_sha256, PolicySource, RequestedLimits};
use crate::backend::redis::Redis;
use crate::backend::AnyBackend;
use crate::error::Error;

/// How often a following host reports what it runs.
const REPORT: Duration = Duration::from_secs(5);
/// A host whose last report is older than this is no longer listed.
const STALE: Duration = Duration::from_secs(30);
/// Pushes kept per policy name.
const HISTORY: usize = 20;

const CURRENT: &str = "policies";
const GENERATION: &str = "policies:generation";
const HOSTS: &str = "hosts";

fn blob(hash: &str) -> String {
    format!("policy:{hash}")
}

fn history(name: &str) -> String {
    format!("policies:history:{name}")
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// One push of a policy.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct Push {
    /// The policy's name (from `describe`): what `rollback` and `remove` name.
    pub name: String,
    /// Its version (from `describe`).
    pub version: String,
    /// SHA-256 of the component, hex: where its bytes are kept.
    pub hash: String,
    /// The operations it declares.
    pub ops: Vec<String>,
    /// The component's size in bytes.
    pub size: usize,
    /// When it was pushed (milliseconds since the Unix epoch).
    pub pushed_at: u64,
    /// Its Ed25519 signature (hex), if it was signed.
    pub signature: Option<String>,
    /// The limits it asks for (within each host's maxima). Not covered by the signature: a
    /// limit can only tighten what a host allows.
    #[serde(default, skip_serializing_if = "RequestedLimits::is_empty")]
    pub limits: RequestedLimits,
}

/// How to push a policy ([`Cache::push_policy`](crate::cache::Cache::push_policy)).
///
/// ```
/// use std::time::Duration;
/// let options = cachelet::PushOptions::default()
///     .limits(cachelet::RequestedLimits::default().with_deadline(Duration::from_millis(20)));
/// ```
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct PushOptions {
    /// The component's Ed25519 signature (hex), required by hosts with a public key.
    pub signature: Option<String>,
    /// The limits the policy asks for.
    pub limits: RequestedLimits,
}

impl PushOptions {
    /// With this signature ([`sign_policy`](crate::policy::signature::sign_policy)).
    pub fn signature(mut self, signature: impl Into<String>) -> Self {
        self.signature = Some(signature.into());
        self
    }

    /// Asking for these limits.
    pub fn limits(mut self, limits: RequestedLimits) -> Self {
        self.limits = limits;
        self
    }
}

/// A pushed policy: its current version, its history and who runs it.
#[derive(Debug, Clone, serde::Serialize)]
#[non_exhaustive]
pub struct PushedPolicy {
    /// The version every following host should run.
    pub current: Push,
    /// Its pushes, newest first (the current one first, unless rolled back past it).
    pub history: Vec<Push>,
    /// The hosts that reported running this policy, and the hash each runs.
    pub hosts: BTreeMap<String, String>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct HostReport {
    id: String,
    /// Policy name → hash it serves.
    running: BTreeMap<String, String>,
    at: u64,
}

/// The few storage operations the fleet needs, on Redis or in this process.
enum Shelf {
    Memory(Mutex<Mem>),
    Redis(Arc<Redis>),
}

#[derive(Default)]
struct Mem {
    strings: HashMap<String, Vec<u8>>,
    hashes: HashMap<String, BTreeMap<String, Vec<u8>>>,
    lists: HashMap<String, VecDeque<Vec<u8>>>,
}

impl Shelf {
    fn mem(m: &Mutex<Mem>) -> std::sync::MutexGuard<'_, Mem> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        match self {
            Shelf::Memory(m) => Ok(Self::mem(m).strings.get(key).cloned()),
            Shelf::Redis(r) => r.fleet_get(key).await,
        }
    }

    async fn set(&self, key: &str, value: &[u8]) -> Result<(), Error> {
        match self {
            Shelf::Memory(m) => {
                Self::mem(m).strings.insert(key.into(), value.to_vec());
                Ok(())
            }
            Shelf::Redis(r) => r.fleet_set(key, value).await,
        }
    }

    async fn incr(&self, key: &str) -> Result<u64, Error> {
        match self {
            Shelf::Memory(m) => {
                let mut m = Self::mem(m);
                let v = m
                    .strings
                    .get(key)
                    .and_then(|v| std::str::from_utf8(v).ok()?.parse::<u64>().ok())
                    .unwrap_or(0)
                    + 1;
                m.strings.insert(key.into(), v.to_string().into_bytes());
                Ok(v)
            }
            Shelf::Redis(r) => r.fleet_incr(key).await,
        }
    }

    async fn hgetall(&self, key: &str) -> Result<Vec<(String, Vec<u8>)>, Error> {
        match self {
            Shelf::Memory(m) => Ok(Self::mem(m)
                .hashes
                .get(key)
                .map(|h| h.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default()),
            Shelf::Redis(r) => r.fleet_hgetall(key).await,
        }
    }

    async fn hset(&self, key: &str, field: &str, value: &[u8]) -> Result<(), Error> {
        match self {
            Shelf::Memory(m) => {
                Self::mem(m)
                    .hashes
                    .entry(key.into())
                    .or_default()
                    .insert(field.into(), value.to_vec());
                Ok(())
            }
            Shelf::Redis(r) => r.fleet_hset(key, field, value).await,
        }
    }

    async fn hdel(&self, key: &str, field: &str) -> Result<bool, Error> {
        match self {
            Shelf::Memory(m) => Ok(Self::mem(m)
                .hashes
                .get_mut(key)
                .and_then(|h| h.remove(field))
                .is_some()),
            Shelf::Redis(r) => r.fleet_hdel(key, field).await,
        }
    }

    async fn del(&self, key: &str) -> Result<(), Error> {
        match self {
            Shelf::Memory(m) => {
                Self::mem(m).strings.remove(key);
                Ok(())
            }
            Shelf::Redis(r) => r.fleet_del(key).await,
        }
    }

    async fn list(&self, key: &str) -> Result<Vec<Vec<u8>>, Error> {
        match self {
            Shelf::Memory(m) => Ok(Self::mem(m)
                .lists
                .get(key)
                .map(|l| l.iter().cloned().collect())
                .unwrap_or_default()),
            Shelf::Redis(r) => r.fleet_list(key).await,
        }
    }

    async fn list_push(&self, key: &str, value: &[u8]) -> Result<(), Error> {
        match self {
            Shelf::Memory(m) => {
                let mut m = Self::mem(m);
                let l = m.lists.entry(key.into()).or_default();
                l.push_front(value.to_vec());
                l.truncate(HISTORY);
                Ok(())
            }
            Shelf::Redis(r) => r.fleet_list_push(key, value, HISTORY).await,
        }
    }

    async fn list_pop(&self, key: &str) -> Result<(), Error> {
        match self {
            Shelf::Memory(m) => {
                if let Some(l) = Self::mem(m).lists.get_mut(key) {
                    l.pop_front();
                }
                Ok(())
            }
            Shelf::Redis(r) => r.fleet_list_pop(key).await,
        }
    }
}

fn push_error(name: &str, problem: impl Into<String>) -> Error {
    Error::Push {
        name: name.to_string(),
        problem: problem.into(),
    }
}

fn decode(name: &str, json: &[u8]) -> Result<Push, Error> {
    serde_json::from_slice(json)
        .map_err(|e| push_error(name, format!("unreadable push record in the backend: {e}")))
}

/// The fleet of one cache: its shelf, this host's id, the key pushes must be signed with.
pub(crate) struct Fleet {
    shelf: Shelf,
    id: String,
    pubkey: Option<PublicKey>,
    /// Whether this host follows pushes (on the memory backend: always, one process).
    follows: bool,
    /// How often a following host checks for a change it was not told of.
    check: Duration,
}

impl Fleet {
    pub fn new(
        backend: &AnyBackend,
        follows: bool,
        check: Duration,
        pubkey: Option<PublicKey>,
    ) -> Fleet {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "host".into());
        let (shelf, follows) = match backend {
            AnyBackend::Memory(_) => (Shelf::Memory(Mutex::default()), true),
            AnyBackend::Redis(r) => (Shelf::Redis(r.clone()), follows),
        };
        Fleet {
            shelf,
            id: format!("{host}:{}:{:04x}", std::process::id(), now_ms() & 0xffff),
            pubkey,
            follows,
            check,
        }
    }

    /// Bumps the generation and tells the following hosts (on Redis; the memory backend's
    /// one process syncs where the change is made).
    async fn announce(&self) -> Result<(), Error> {
        let generation = self.shelf.incr(GENERATION).await?;
        if let Shelf::Redis(r) = &self.shelf {
            // Best effort: a host that misses it catches up at its next check.
            if let Err(e) = r.fleet_publish(generation).await {
                tracing::warn!(
                    "pushed policies: the change was not announced ({}); following hosts \
                     pick it up at their next check",
                    crate::error::chain(&e)
                );
            }
        }
        Ok(())
    }

    /// This host's id in reports.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Checks `component` (it must load here), stores it and makes it its policy's current
    /// version. Following hosts pick it up at their next check; this one at once.
    pub async fn push(
        &self,
        lifecycle: &Lifecycle,
        component: Vec<u8>,
        options: PushOptions,
    ) -> Result<Push, Error> {
        let PushOptions { signature, limits } = options;
        let hash = hex_sha256(&component);
        limits
            .check()
            .map_err(|e| push_error(&format!("component {}", &hash[..12]), e))?;
        let policy = lifecycle
            .check(
                PolicySource::Bytes {
                    name: format!("pushed component {}", &hash[..12]),
                    bytes: component.clone(),
                },
                &limits,
            )
            .await?;
        let push = Push {
            name: policy.name().to_string(),
            version: policy.report().version.clone(),
            hash: hash.clone(),
            ops: policy.report().ops.iter().map(|o| o.name.clone()).collect(),
            size: component.len(),
            pushed_at: now_ms(),
            signature,
            limits,
        };
        drop(policy);
        let json = serde_json::to_vec(&push).expect("a push serializes");
        let before = self.shelf.list(&history(&push.name)).await?;
        self.shelf.set(&blob(&hash), &component).await?;
        self.shelf.list_push(&history(&push.name), &json).await?;
        self.shelf.hset(CURRENT, &push.name, &json).await?;
        self.announce().await?;
        self.sync_here(lifecycle).await;
        // The pushes that fell off the end of the history.
        let dropped: Vec<String> = before
            .iter()
            .skip(HISTORY - 1)
            .filter_map(|j| decode(&push.name, j).ok().map(|p| p.hash))
            .collect();
        self.release(&push.name, dropped).await?;
        Ok(push)
    }

    /// Deletes the stored components of `hashes` that `name`'s history and current version no
    /// longer name: no rollback can reach them, so they would only pile up.
    async fn release(&self, name: &str, hashes: Vec<String>) -> Result<(), Error> {
        if hashes.is_empty() {
            return Ok(());
        }
        let mut kept: Vec<String> = self
            .shelf
            .list(&history(name))
            .await?
            .iter()
            .filter_map(|j| decode(name, j).ok().map(|p| p.hash))
            .collect();
        if let Some((_, json)) = self
            .shelf
            .hgetall(CURRENT)
            .await?
            .into_iter()
            .find(|(n, _)| n == name)
        {
            kept.extend(decode(name, &json).ok().map(|p| p.hash));
        }
        for hash in hashes {
            if !kept.contains(&hash) {
                self.shelf.del(&blob(&hash)).await?;
                kept.push(hash);
            }
        }
        Ok(())
    }

    /// Makes the push before the current one of `name` current again.
    pub async fn rollback(&self, lifecycle: &Lifecycle, name: &str) -> Result<Push, Error> {
        let pushes = self.shelf.list(&history(name)).await?;
        if pushes.is_empty() {
            return Err(push_error(name, "no policy of this name was pushed"));
        }
        let Some(previous) = pushes.get(1) else {
            return Err(push_error(name, "only one push: nothing to roll back to"));
        };
        let previous_push = decode(name, previous)?;
        self.shelf.list_pop(&history(name)).await?;
        self.shelf.hset(CURRENT, name, previous).await?;
        self.announce().await?;
        self.sync_here(lifecycle).await;
        // The push rolled back is gone from the history: no rollback reaches it again.
        let undone = decode(name, &pushes[0])
            .map(|p| vec![p.hash])
            .unwrap_or_default();
        self.release(name, undone).await?;
        Ok(previous_push)
    }

    /// Stops serving the pushed policy `name` everywhere (its history stays).
    pub async fn remove(&self, lifecycle: &Lifecycle, name: &str) -> Result<(), Error> {
        if !self.shelf.hdel(CURRENT, name).await? {
            return Err(push_error(name, "no pushed policy of this name is current"));
        }
        self.announce().await?;
        self.sync_here(lifecycle).await;
        Ok(())
    }

    /// Every pushed policy, with its history and the hosts that run it.
    pub async fn list(&self) -> Result<Vec<PushedPolicy>, Error> {
        let hosts: Vec<HostReport> = self
            .shelf
            .hgetall(HOSTS)
            .await?
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_slice::<HostReport>(&v).ok())
            .filter(|h| now_ms().saturating_sub(h.at) < STALE.as_millis() as u64)
            .collect();
        let mut out = Vec::new();
        for (name, json) in self.shelf.hgetall(CURRENT).await? {
            let current = decode(&name, &json)?;
            let history = self
                .shelf
                .list(&history(&name))
                .await?
                .iter()
                .map(|j| decode(&name, j))
                .collect::<Result<_, _>>()?;
            let hosts = hosts
                .iter()
                .filter_map(|h| Some((h.id.clone(), h.running.get(&name)?.clone())))
                .collect();
            out.push(PushedPolicy {
                current,
                history,
                hosts,
            });
        }
        Ok(out)
    }

    async fn generation(&self) -> Result<u64, Error> {
        Ok(self
            .shelf
            .get(GENERATION)
            .await?
            .and_then(|v| std::str::from_utf8(&v).ok()?.trim().parse().ok())
            .unwrap_or(0))
    }

    /// Syncs this host after a change it made, if it follows.
    async fn sync_here(&self, lifecycle: &Lifecycle) {
        if self.follows {
            if let Err(e) = self.sync(lifecycle).await {
                tracing::warn!(
                    "pushed policies: {}; the next check tries again",
                    crate::error::chain(&e)
                );
            }
        }
    }

    /// Loads what is current and not served yet, removes what is no longer current, and
    /// reports what this host runs. A refused version (unsigned, tampered with, broken) is
    /// kept in the status; what serves stays.
    pub async fn sync(&self, lifecycle: &Lifecycle) -> Result<(), Error> {
        let current = self.shelf.hgetall(CURRENT).await?;
        let mut names = Vec::with_capacity(current.len());
        for (name, json) in current {
            names.push(name.clone());
            let origin = PolicyOrigin::Pushed(name.clone());
            let push = match decode(&name, &json) {
                Ok(p) => p,
                Err(e) => {
                    lifecycle.refuse(origin, e.to_string(), None);
                    continue;
                }
            };
            // A refusal is remembered per component and signature: the same push is not
            // checked again at every change, a newly signed one is.
            let memo = format!("{}/{}", push.hash, push.signature.as_deref().unwrap_or("-"));
            if lifecycle.serves(&origin, &push.hash, &push.limits)
                || lifecycle.refused(&origin, &memo)
            {
                continue;
            }
            if let Some(key) = &self.pubkey {
                if let Err(why) = key.verify(&push.hash, push.signature.as_deref()) {
                    lifecycle.refuse(
                        origin,
                        format!("push of {name:?} ({}) refused: {why}", &push.hash[..12]),
                        Some(memo),
                    );
                    continue;
                }
            }
            let Some(bytes) = self.shelf.get(&blob(&push.hash)).await? else {
                lifecycle.refuse(
                    origin,
                    format!("push of {name:?}: its component {} is missing", push.hash),
                    Some(memo),
                );
                continue;
            };
            if hex_sha256(&bytes) != push.hash {
                lifecycle.refuse(
                    origin,
                    format!(
                        "push of {name:?} refused: the stored component does not match its \
                         hash {} (changed in the backend)",
                        &push.hash[..12]
                    ),
                    Some(memo),
                );
                continue;
            }
            let source = PolicySource::Bytes {
                name: format!("pushed policy {name:?}"),
                bytes,
            };
            let _ = lifecycle
                .apply(origin, Change::Load(source, push.hash, push.limits))
                .await;
        }
        for origin in lifecycle.origins(|o| matches!(o, PolicyOrigin::Pushed(_))) {
            if let PolicyOrigin::Pushed(n) = &origin {
                if !names.contains(n) {
                    let _ = lifecycle.apply(origin, Change::Remove).await;
                }
            }
        }
        self.report(lifecycle).await
    }

    async fn report(&self, lifecycle: &Lifecycle) -> Result<(), Error> {
        let running = lifecycle
            .status()
            .policies
            .into_iter()
            .filter_map(|p| match (&p.origin, p.serving) {
                (PolicyOrigin::Pushed(name), Some(s)) => Some((name.clone(), s.hash)),
                _ => None,
            })
            .collect();
        let report = HostReport {
            id: self.id.clone(),
            running,
            at: now_ms(),
        };
        let json = serde_json::to_vec(&report).expect("a report serializes");
        self.shelf.hset(HOSTS, &self.id, &json).await
    }

    /// Loads the current set now, then follows changes while `lifecycle` lives.
    pub async fn start(self: &Arc<Self>, lifecycle: &Arc<Lifecycle>) -> Result<(), Error> {
        if !self.follows {
            return Ok(());
        }
        let mut seen = self.generation().await?;
        self.sync(lifecycle).await?;
        if matches!(self.shelf, Shelf::Memory(_)) {
            // One process: every change syncs where it is made.
            return Ok(());
        }
        let (fleet, weak): (Arc<Fleet>, Weak<Lifecycle>) =
            (self.clone(), Arc::downgrade(lifecycle));
        let told = Arc::new(tokio::sync::Notify::new());
        if let Shelf::Redis(r) = &self.shelf {
            r.fleet_subscribe(Arc::downgrade(&told));
        }
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(fleet.check);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut report = tokio::time::interval_at(tokio::time::Instant::now() + REPORT, REPORT);
            report.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let check = tokio::select! {
                    _ = told.notified() => true,
                    _ = tick.tick() => true,
                    _ = report.tick() => false,
                };
                let Some(lifecycle) = weak.upgrade() else {
                    break;
                };
                let r = if check {
                    match fleet.generation().await {
                        Ok(g) if g != seen => fleet.sync(&lifecycle).await.map(|()| seen = g),
                        Ok(_) => Ok(()),
                        Err(e) => Err(e),
                    }
                } else {
                    fleet.report(&lifecycle).await
                };
                if let Err(e) = r {
                    tracing::debug!("pushed policies: {}; trying again", crate::error::chain(&e));
                }
            }
        });
        Ok(())
    }
}
