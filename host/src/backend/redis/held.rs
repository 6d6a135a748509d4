//! Invalidations Redis could not take: held by this host until it can deliver them.
//!
//! What is held is a set of keys to delete (tag keys, or the namespace epoch). While anything
//! is held, the circuit stays open: this host reads nothing from Redis that a held
//! invalidation covers. A background task delivers them as soon as Redis answers again, with a
//! bounded back-off (50 ms doubling up to the cooldown), without waiting for a request.
//!
//! With a journal (`CACHE_JOURNAL`), every invalidation is appended to the file before it is
//! sent (so that a process killed while sending it loses nothing), and a held one is flushed to
//! disk before the write that held it returns; at the next start, whatever the journal holds is
//! delivered before the cache serves. Delivery is at least once: a key delivered twice
//! invalidates twice, which costs a miss, never a stale read. The file is emptied whenever
//! nothing is held and no invalidation is being sent, and locked while a cache uses it.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufRead, BufReader, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use super::{Failure, Redis};
use crate::backend::Invalidation;
use crate::error::Error;

/// Most keys held; past it, the whole namespace is invalidated on delivery instead.
const MAX_HELD: usize = 100_000;
/// Keys deleted per command (a server) or at once (a cluster, one command per key).
const BATCH: usize = 500;
/// Size past which the journal is emptied after delivered invalidations (64 KiB).
const EMPTY_PAST: u64 = 64 << 10;

pub(super) struct HeldLog {
    keys: Mutex<HashSet<String>>,
    any: AtomicBool,
    journal: Option<Journal>,
    /// A background deliverer is running.
    delivering: AtomicBool,
}

struct Journal {
    path: PathBuf,
    /// The file, and how many invalidations written to it are being sent now.
    file: Mutex<(File, usize)>,
}

/// An invalidation being sent: written to the journal first; when it is done (delivered,
/// held, or its future dropped) the journal may be emptied again.
pub(super) struct Sending<'a>(Option<&'a Journal>, &'a HeldLog);

impl Drop for Sending<'_> {
    fn drop(&mut self) {
        if let Some(j) = self.0 {
            let mut f = j.file.lock().unwrap_or_else(|p| p.into_inner());
            f.1 -= 1;
            if f.1 == 0 && !self.1.any() {
                j.empty(&mut f.0, EMPTY_PAST);
            }
        }
    }
}

impl Journal {
    /// Appends one JSON string per key (flushed to disk with `sync`).
    fn append(&self, f: &mut File, keys: &[&str], sync: bool) -> bool {
        let mut lines = String::new();
        for k in keys {
            lines.push_str(&serde_json::to_string(k).unwrap_or_default());
            lines.push('\n');
        }
        let written =
            f.write_all(lines.as_bytes())
                .and_then(|()| if sync { f.sync_data() } else { Ok(()) });
        match written {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(
                    "journal {}: cannot write invalidations ({e}); they are in memory only",
                    self.path.display()
                );
                false
            }
        }
    }

    /// Empties the file once it has grown past `at_least` bytes. What was delivered may stay
    /// in it until then: delivered again at a start, it costs a miss, never a stale read; and
    /// a write does not pay a truncation each time.
    fn empty(&self, f: &mut File, at_least: u64) {
        if f.metadata().map_or(true, |m| m.len() <= at_least) {
            return;
        }
        let emptied = f.set_len(0).and_then(|()| f.rewind());
        if let Err(e) = emptied {
            // Left as it is, it is delivered again at the next start: a miss, not a stale read.
            tracing::warn!("journal {}: cannot empty it ({e})", self.path.display());
        }
    }
}

impl HeldLog {
    /// Opens (and locks) the journal at `path`, and holds what it kept.
    pub fn open(path: Option<&Path>) -> Result<HeldLog, Error> {
        let mut keys = HashSet::new();
        let journal = match path {
            None => None,
            Some(path) => {
                let bad = |problem: String| Error::Setting {
                    name: "CACHE_JOURNAL".into(),
                    problem: format!("{}: {problem}", path.display()),
                };
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .append(true)
                    .create(true)
                    .open(path)
                    .map_err(|e| bad(e.to_string()))?;
                file.try_lock().map_err(|e| {
                    bad(format!(
                        "in use by another cache (one journal per process): {e}"
                    ))
                })?;
                for (n, line) in BufReader::new(&file).lines().enumerate() {
                    let line = line.map_err(|e| bad(e.to_string()))?;
                    if line.is_empty() {
                        continue;
                    }
                    match serde_json::from_str::<String>(&line) {
                        Ok(k) => {
                            keys.insert(k);
                        }
                        // A line cut short by a crash is the last one: what it held was not
                        // acknowledged to any caller.
                        Err(e) => tracing::warn!(
                            "journal {}: line {} ignored ({e})",
                            path.display(),
                            n + 1
                        ),
                    }
                }
                Some(Journal {
                    path: path.to_path_buf(),
                    file: Mutex::new((file, 0)),
                })
            }
        };
        if !keys.is_empty() {
            tracing::info!(
                "journal: {} invalidation(s) held by an earlier run, to deliver",
                keys.len()
            );
        }
        Ok(HeldLog {
            any: AtomicBool::new(!keys.is_empty()),
            keys: Mutex::new(keys),
            journal,
            delivering: AtomicBool::new(false),
        })
    }

    pub fn any(&self) -> bool {
        self.any.load(Ordering::Acquire)
    }

    pub fn count(&self) -> usize {
        self.keys.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Holds `keys` (past the bound, the namespace's `epoch` instead of them all). Returns
    /// whether they are on disk.
    fn hold(&self, keys: &[String], epoch: &str) -> bool {
        let mut held = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        let mut new: Vec<&str> = Vec::new();
        if held.contains(epoch) {
            // The whole namespace goes already.
        } else if held.len() + keys.len() > MAX_HELD {
            held.clear();
            held.insert(epoch.to_string());
            new.push(epoch);
        } else {
            for k in keys {
                if held.insert(k.clone()) {
                    new.push(k);
                }
            }
        }
        self.any.store(true, Ordering::Release);
        let Some(j) = &self.journal else {
            return false;
        };
        // Under the lock of the set: the file never lacks a key the set has. The keys are
        // there already (written before sending); flushing makes them durable.
        let mut f = j.file.lock().unwrap_or_else(|p| p.into_inner());
        j.append(&mut f.0, &new, true)
    }

    /// Writes `keys` to the journal before they are sent (no flush: a killed process's
    /// writes are in the file; flushing is for what is held).
    pub(super) fn sending(&self, keys: &[String]) -> Sending<'_> {
        let Some(j) = &self.journal else {
            return Sending(None, self);
        };
        let mut f = j.file.lock().unwrap_or_else(|p| p.into_inner());
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        j.append(&mut f.0, &keys, false);
        f.1 += 1;
        Sending(Some(j), self)
    }

    fn snapshot(&self) -> Vec<String> {
        let held = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        held.iter().cloned().collect()
    }

    /// `keys` were deleted in Redis: forget them; with nothing left (and nothing being sent),
    /// empty the journal.
    fn delivered(&self, keys: &[String]) {
        let mut held = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        for k in keys {
            held.remove(k);
        }
        if !held.is_empty() {
            return;
        }
        self.any.store(false, Ordering::Release);
        if let Some(j) = &self.journal {
            let mut f = j.file.lock().unwrap_or_else(|p| p.into_inner());
            if f.1 == 0 {
                j.empty(&mut f.0, 0);
            }
        }
    }
}

impl Redis {
    /// Deletes `keys` (tag keys, the epoch), or holds them if Redis cannot take them now.
    pub(super) async fn invalidate_keys(&self, keys: Vec<String>) -> Invalidation {
        if keys.is_empty() {
            return Invalidation::Nothing;
        }
        let _sending = self.held.sending(&keys);
        let sent = match self.ready().await {
            Ok(()) => {
                let r = self.invalidate_now(&keys).await;
                self.count(&r);
                r
            }
            Err(e) => Err(e),
        };
        match sent {
            Ok(_) => Invalidation::Delivered,
            Err(e) => {
                tracing::warn!("invalidation held until Redis answers: {e}");
                self.hold(&keys)
            }
        }
    }

    /// Holds keys this host could not delete, and makes sure they are delivered.
    fn hold(&self, keys: &[String]) -> Invalidation {
        let journaled = self.held.hold(keys, &self.keys.epoch);
        // Nothing is read from Redis until they are delivered.
        if !self.circuit.is_open() {
            self.circuit.open();
        }
        self.deliver_in_background();
        Invalidation::Held { journaled }
    }

    /// Moves the invalidation sequence and records the keys it names (the stream of recent
    /// invalidations, trimmed to about 1,024), then deletes the keys (tag keys, the epoch): a
    /// fill that learned its tags during its load sees the move, and whether it names one of
    /// its tags, if it reads its tags' versions after the deletion (see
    /// `Backend::invalidated_since`). Neither key expires.
    async fn invalidate_now(&self, keys: &[String]) -> Result<u64, Failure> {
        let mut c = redis::cmd("EVALSHA");
        c.arg(&self.scripts.advance.hash)
            .arg(2)
            .arg(&self.keys.sequence)
            .arg(&self.keys.recent);
        // What a fill in flight compares its tags with; a large batch is recorded as covering
        // every tag.
        if keys.len() > 256 {
            c.arg("*");
        } else {
            c.arg(keys);
        }
        self.send(&[c]).await?;
        self.unlink(keys).await
    }

    /// Deletes keys without blocking the server on their values: batched on one server, one
    /// command per key on a cluster (their slots differ). Returns how many existed.
    pub(super) async fn unlink(&self, keys: &[String]) -> Result<u64, Failure> {
        let mut deleted = 0;
        for chunk in keys.chunks(BATCH) {
            let cmds: Vec<redis::Cmd> = if self.cluster {
                chunk
                    .iter()
                    .map(|k| {
                        let mut c = redis::cmd("UNLINK");
                        c.arg(k);
                        c
                    })
                    .collect()
            } else {
                let mut c = redis::cmd("UNLINK");
                c.arg(chunk);
                vec![c]
            };
            deleted += self
                .send(&cmds)
                .await?
                .into_iter()
                .filter_map(|v| u64::from_redis_value(v).ok())
                .sum::<u64>();
        }
        Ok(deleted)
    }

    /// Delivers everything held (the probe calls it before the circuit closes).
    pub(super) async fn deliver_held(&self) -> Result<(), Failure> {
        if !self.held.any() {
            return Ok(());
        }
        let keys = self.held.snapshot();
        self.invalidate_now(&keys).await?;
        self.held.delivered(&keys);
        tracing::info!(
            "delivered {} invalidation(s) held while Redis was unreachable",
            keys.len()
        );
        Ok(())
    }

    /// Starts the background deliverer, unless one runs.
    pub(super) fn deliver_in_background(&self) {
        if self.held.delivering.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            // No runtime to run it: the next request probes and delivers.
            self.held.delivering.store(false, Ordering::Release);
            return;
        };
        let me = self.me.clone();
        rt.spawn(async move {
            let mut pause = Duration::from_millis(50);
            loop {
                tokio::time::sleep(pause).await;
                let Some(redis) = me.upgrade() else { return };
                if !redis.held.any() || redis.recover().await.is_ok() {
                    redis.held.delivering.store(false, Ordering::Release);
                    // A hold that came in meanwhile saw a deliverer running: take it over.
                    if !redis.held.any() || redis.held.delivering.swap(true, Ordering::AcqRel) {
                        return;
                    }
                }
                pause = (pause * 2).min(redis.opts.cooldown.max(Duration::from_millis(50)));
            }
        });
    }

    /// At start: deliver what the journal kept (in the background if Redis refuses now).
    pub(super) async fn deliver_journal(&self) {
        if self.held.any() && self.recover().await.is_err() {
            self.circuit.open();
            self.deliver_in_background();
        }
    }

    /// Invalidations held now, and whether they are journaled.
    pub fn held(&self) -> (usize, bool) {
        (self.held.count(), self.held.journal.is_some())
    }

    /// Delivers what it can within the timeout; what stays held is in the journal if there
    /// is one.
    pub async fn flush_held(&self) -> Invalidation {
        if !self.held.any() {
            return Invalidation::Nothing;
        }
        match self.recover().await {
            Ok(()) if !self.held.any() => Invalidation::Delivered,
            _ => {
                let (n, journaled) = self.held();
                if journaled {
                    tracing::warn!("{n} invalidation(s) still held, kept in the journal");
                } else {
                    tracing::error!(
                        "{n} invalidation(s) still held and no journal is configured: they are \
                         lost with this process (CACHE_JOURNAL keeps them)"
                    );
                }
                Invalidation::Held { journaled }
            }
        }
    }
}

use redis::FromRedisValue;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_journal_keeps_what_is_held_until_delivered() {
        let dir = std::env::temp_dir().join(format!("cachelet-journal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("held.journal");
        let _ = std::fs::remove_file(&path);
        {
            let log = HeldLog::open(Some(&path)).unwrap();
            assert!(!log.any());
            // Hostile names survive the round trip (one JSON string per line).
            let keys = vec!["p:v~tag:a\nb".to_string(), "p:v~tag:\"q\"".to_string()];
            assert!(log.hold(&keys, "p:v~epoch"));
            assert!(
                log.hold(&keys[..1], "p:v~epoch"),
                "a repeat writes nothing new"
            );
            // A second cache cannot take the same journal.
            let e = HeldLog::open(Some(&path)).err().unwrap().to_string();
            assert!(e.contains("in use"), "{e}");
        }
        // A restart finds them.
        let log = HeldLog::open(Some(&path)).unwrap();
        assert!(log.any());
        let mut held = log.snapshot();
        held.sort();
        assert_eq!(held, ["p:v~tag:\"q\"", "p:v~tag:a\nb"]);
        log.delivered(&held);
        assert!(!log.any());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        drop(log);
        assert!(!HeldLog::open(Some(&path)).unwrap().any());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_invalidation_being_sent_survives_a_crash_in_the_journal() {
        let dir = std::env::temp_dir().join(format!("cachelet-sending-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("held.journal");
        let _ = std::fs::remove_file(&path);
        let keys = vec!["p:v~tag:user:1".to_string()];
        {
            let log = HeldLog::open(Some(&path)).unwrap();
            let sending = log.sending(&keys);
            // Killed here, before the command was answered: the key is in the file.
            std::mem::forget(sending);
        }
        let log = HeldLog::open(Some(&path)).unwrap();
        assert_eq!(log.snapshot(), keys, "the next start delivers it");
        log.delivered(&keys);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        // Sent and answered: left in the file (a miss at the next start at most) until it
        // grows past its bound.
        for _ in 0..3000 {
            drop(log.sending(&keys));
        }
        assert!(std::fs::metadata(&path).unwrap().len() <= EMPTY_PAST);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn past_the_bound_the_namespace_goes_instead() {
        let log = HeldLog::open(None).unwrap();
        let many: Vec<String> = (0..MAX_HELD + 1).map(|i| format!("t{i}")).collect();
        assert!(!log.hold(&many[..10], "epoch"));
        log.hold(&many, "epoch");
        assert_eq!(log.snapshot(), ["epoch"]);
        log.hold(&many[..3], "epoch");
        assert_eq!(log.snapshot(), ["epoch"]);
    }
}
