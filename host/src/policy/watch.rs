//! The watched policy directory ([`CacheBuilder::policy_dir`](crate::builder::CacheBuilder::policy_dir)):
//! every `*.wasm` file in it is a policy; one added, replaced or removed changes what serves
//! while the cache does (through [`Lifecycle`]).
//!
//! A file is taken when it is whole: when the process writing it closes it, or when it is
//! renamed into place (an atomic rename is taken at once). A file still being written — a copy
//! in progress, a slow upload — is never taken for a broken policy, and an editor's temporary
//! and backup files (dot files, `~`, `.swp`, `.tmp`: anything not named `*.wasm`) are never
//! looked at. A file `NAME.limits.json` beside `NAME.wasm` holds the limits that policy asks
//! for ([`RequestedLimits`]); a change to it reloads the policy under the new limits, a broken
//! one is refused like a broken component (what serves stays). Events can be missed (an overflowing queue, a file system that reports none): a
//! scan every second catches up with any file whose size or time changed and that has not
//! changed for [`SETTLE`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind, RenameMode};
use notify::{RecursiveMode, Watcher};

use super::lifecycle::{Change, Lifecycle, PolicyOrigin};
use super::{hex_sha256, PolicySource, RequestedLimits};
use crate::error::Error;

/// How long a file found changed by a scan (not by an event) must stay unchanged before it is
/// taken: long enough that a writer pausing between chunks is not caught halfway.
pub(crate) const SETTLE: Duration = Duration::from_secs(2);
/// How often the directory is scanned.
const SCAN: Duration = Duration::from_secs(1);

/// Whether `path` names a policy file: `*.wasm`, not hidden.
fn is_policy(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    !name.starts_with('.') && !name.starts_with('#') && name.ends_with(".wasm")
}

/// The limits file of the policy file `NAME.wasm`: `NAME.limits.json`, beside it.
pub(crate) fn limits_file(policy: &Path) -> PathBuf {
    policy.with_extension("limits.json")
}

/// The policy file whose limits `path` holds, if it is a limits file.
fn limits_of(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?.to_str()?;
    let stem = name.strip_suffix(".limits.json")?;
    is_policy(&path.with_file_name(format!("{stem}.wasm")))
        .then(|| path.with_file_name(format!("{stem}.wasm")))
}

/// Size and modification time of a policy file, and of its limits file if there is one:
/// what a scan compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mark {
    len: u64,
    modified: SystemTime,
    limits: Option<(u64, SystemTime)>,
}

impl Mark {
    /// When either file last changed.
    fn modified(&self) -> SystemTime {
        self.limits
            .map_or(self.modified, |(_, t)| t.max(self.modified))
    }
}

fn mark(path: &Path) -> Option<Mark> {
    let size_and_time = |p: &Path| {
        let m = std::fs::metadata(p).ok()?;
        m.is_file()
            .then(|| (m.len(), m.modified().unwrap_or(SystemTime::UNIX_EPOCH)))
    };
    let (len, modified) = size_and_time(path)?;
    Some(Mark {
        len,
        modified,
        limits: size_and_time(&limits_file(path)),
    })
}

/// The policy files of `dir`, by name.
fn list(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| is_policy(p) && p.is_file())
        .collect();
    files.sort();
    files
}

struct Watch {
    dir: PathBuf,
    lifecycle: Weak<Lifecycle>,
    /// What each file looked like when it was last taken (loaded or refused).
    taken: HashMap<PathBuf, Mark>,
    /// Files a scan found changed, and how they looked then: taken at a later scan if they
    /// still look the same and have settled.
    changing: HashMap<PathBuf, Mark>,
}

impl Watch {
    /// Loads the file at `path` as it is now (or removes its policy when it is gone).
    async fn take(&mut self, lifecycle: &Lifecycle, path: &Path) {
        self.changing.remove(path);
        let origin = PolicyOrigin::File(path.to_path_buf());
        let before = mark(path);
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.taken.remove(path);
                let _ = lifecycle.apply(origin, Change::Remove).await;
                return;
            }
            Err(e) => {
                tracing::warn!("{}: cannot read the policy: {e}", path.display());
                return;
            }
        };
        if let Some(m) = before {
            self.taken.insert(path.to_path_buf(), m);
        }
        let limits = limits_file(path);
        let asked = match std::fs::read(&limits) {
            Ok(json) => match RequestedLimits::from_json(&json) {
                Ok(asked) => asked,
                Err(e) => {
                    lifecycle.refuse(origin, format!("{}: {e}", limits.display()), None);
                    return;
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => RequestedLimits::default(),
            Err(e) => {
                tracing::warn!("{}: cannot read the limits: {e}", limits.display());
                return;
            }
        };
        let hash = hex_sha256(&bytes);
        let source = PolicySource::Bytes {
            name: path.display().to_string(),
            bytes,
        };
        // A failure is kept in the status and logged by the lifecycle.
        let _ = lifecycle
            .apply(origin, Change::Load(source, hash, asked))
            .await;
    }

    /// Removes the policy of `path` if the file is gone (a file renamed over it comes with
    /// its own event).
    async fn remove(&mut self, lifecycle: &Lifecycle, path: &Path) {
        self.changing.remove(path);
        self.taken.remove(path);
        if !path.exists() {
            let _ = lifecycle
                .apply(PolicyOrigin::File(path.to_path_buf()), Change::Remove)
                .await;
        }
    }

    /// Takes every file that changed since it was taken, settled or not (a reload asked for).
    async fn rescan(&mut self, lifecycle: &Lifecycle) {
        for path in list(&self.dir) {
            if mark(&path).is_some() && self.taken.get(&path) != mark(&path).as_ref() {
                self.take(lifecycle, &path).await;
            }
        }
        self.scan(lifecycle).await;
    }

    /// Catches up with what events did not tell: files changed and settled, files gone.
    async fn scan(&mut self, lifecycle: &Lifecycle) {
        let now = SystemTime::now();
        let files = list(&self.dir);
        for path in &files {
            let Some(m) = mark(path) else { continue };
            if self.taken.get(path) == Some(&m) {
                self.changing.remove(path);
                continue;
            }
            let settled = now.duration_since(m.modified()).unwrap_or_default() >= SETTLE;
            if settled && self.changing.get(path) == Some(&m) {
                self.take(lifecycle, path).await;
            } else {
                self.changing.insert(path.clone(), m);
            }
        }
        let gone: Vec<PathBuf> = self
            .taken
            .keys()
            .filter(|p| !files.contains(p))
            .cloned()
            .collect();
        for path in gone {
            self.remove(lifecycle, &path).await;
        }
        // Policies of files that vanished while no event said so (and were never taken).
        for origin in lifecycle.origins(|o| matches!(o, PolicyOrigin::File(_))) {
            if let PolicyOrigin::File(p) = &origin {
                if p.parent() == Some(self.dir.as_path()) && !files.contains(p) {
                    let _ = lifecycle.apply(origin, Change::Remove).await;
                }
            }
        }
        self.changing.retain(|p, _| files.contains(p));
    }

    async fn event(&mut self, lifecycle: &Lifecycle, ev: notify::Event) {
        let dir = self.dir.clone();
        let mine = |p: &PathBuf| p.parent() == Some(dir.as_path()) && is_policy(p);
        let (gone, whole): (Vec<PathBuf>, Vec<PathBuf>) = match ev.kind {
            // The writer closed it: whole.
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => (vec![], ev.paths),
            EventKind::Modify(ModifyKind::Name(RenameMode::From)) => (ev.paths, vec![]),
            EventKind::Modify(ModifyKind::Name(RenameMode::To)) => (vec![], ev.paths),
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => {
                let mut paths = ev.paths.into_iter();
                (paths.next().into_iter().collect(), paths.collect())
            }
            EventKind::Modify(ModifyKind::Name(_)) => {
                ev.paths.into_iter().partition(|p| !p.exists())
            }
            EventKind::Remove(_) => (ev.paths, vec![]),
            // Created or written: not whole yet; its close (or a scan, once settled) takes it.
            _ => (vec![], vec![]),
        };
        // A limits file written, renamed or removed: its policy again, under what it says now.
        let limits_changed: Vec<PathBuf> = gone
            .iter()
            .chain(&whole)
            .filter(|p| p.parent() == Some(dir.as_path()))
            .filter_map(|p| limits_of(p))
            .filter(|p| p.is_file() && !whole.contains(p))
            .collect();
        for p in gone.iter().filter(|p| mine(p)) {
            self.remove(lifecycle, p).await;
        }
        for p in whole.iter().filter(|p| mine(p)).chain(&limits_changed) {
            self.take(lifecycle, p).await;
        }
    }
}

/// Loads the policies of `dir` now (failures are kept in the status, not returned), then
/// watches it for as long as `lifecycle` lives.
pub(crate) async fn start(lifecycle: &Arc<Lifecycle>, dir: &Path) -> Result<(), Error> {
    let io = |e: std::io::Error| Error::Io {
        path: dir.display().to_string(),
        source: e,
    };
    let dir = std::fs::canonicalize(dir).map_err(io)?;
    if !dir.is_dir() {
        return Err(io(std::io::Error::other("not a directory")));
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        let _ = tx.send(ev);
    })
    .map_err(|e| io(std::io::Error::other(e.to_string())))?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(|e| io(std::io::Error::other(e.to_string())))?;
    let mut w = Watch {
        dir: dir.clone(),
        lifecycle: Arc::downgrade(lifecycle),
        taken: HashMap::new(),
        changing: HashMap::new(),
    };
    for path in list(&dir) {
        w.take(lifecycle, &path).await;
    }
    let (rescans, mut asked) =
        tokio::sync::mpsc::unbounded_channel::<tokio::sync::oneshot::Sender<()>>();
    *lifecycle.rescans.lock().unwrap_or_else(|p| p.into_inner()) = Some(rescans);
    tokio::spawn(async move {
        let _watching = watcher;
        let mut tick = tokio::time::interval(SCAN);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                ev = rx.recv() => {
                    let Some(lifecycle) = w.lifecycle.upgrade() else { break };
                    match ev {
                        Some(Ok(ev)) => w.event(&lifecycle, ev).await,
                        Some(Err(e)) => tracing::warn!(
                            dir = %w.dir.display(),
                            "policy directory watch: {e}; the next scan catches up"
                        ),
                        None => break,
                    }
                }
                _ = tick.tick() => {
                    let Some(lifecycle) = w.lifecycle.upgrade() else { break };
                    w.scan(&lifecycle).await;
                }
                Some(done) = asked.recv() => {
                    let Some(lifecycle) = w.lifecycle.upgrade() else { break };
                    w.rescan(&lifecycle).await;
                    let _ = done.send(());
                }
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_wasm_files_that_are_not_hidden_are_policies() {
        for yes in ["p.wasm", "my-policy.wasm"] {
            assert!(is_policy(Path::new(yes)), "{yes}");
        }
        for no in [
            ".p.wasm.swp",
            "p.wasm~",
            "4913",
            "#p.wasm#",
            ".p.wasm",
            "p.wasm.tmp",
            "p.wasm.part",
        ] {
            assert!(!is_policy(Path::new(no)), "{no}");
        }
    }

    #[test]
    fn a_limits_file_belongs_to_the_policy_of_its_name() {
        assert_eq!(
            limits_file(Path::new("/d/p.wasm")),
            Path::new("/d/p.limits.json")
        );
        assert_eq!(
            limits_of(Path::new("/d/p.limits.json")).as_deref(),
            Some(Path::new("/d/p.wasm"))
        );
        for no in [
            "/d/p.json",
            "/d/.p.limits.json",
            "/d/.limits.json",
            "/d/p.limits.json~",
        ] {
            assert_eq!(limits_of(Path::new(no)), None, "{no}");
        }
    }
}
