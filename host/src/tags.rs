//! Versioned tags for the in-process backend, and the bounds of the tags every entry records.
//!
//! Every tag is a [`TagCell`] holding a version counter. An entry keeps a pointer to each of its
//! tags' cells together with the version it read *before its loader ran* (the fence); the entry is
//! fresh only while every one of those versions is still current. Invalidating a tag bumps one
//! counter: O(1), whatever the number of entries that carry it.
//!
//! The index from tag names to cells holds weak pointers: a cell lives exactly as long as an entry
//! (or a fill in flight) holds it, so the index never outgrows the entries. Dead slots are swept
//! when a shard doubles. Because entries point at cells rather than naming tags, a tag whose cell
//! was dropped and created again can never make an old entry valid again.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// Most tags one entry records, on every backend (on Redis the epoch takes one more place in
/// the entry's envelope).
pub(crate) const MAX_TAGS: usize = 254;
/// Longest tag name an entry records, in bytes.
pub(crate) const MAX_TAG_LEN: usize = u16::MAX as usize;

/// The tag every entry the HTTP layer stores under `key` (relative to the namespace) carries,
/// its variants included: a purge by key or URL, and a write's invalidation of a URI, is the
/// invalidation of one tag, O(1) and fenced like every other (a fill in flight does not put
/// the purged answer back). A key past 512 bytes is named by its digest (a tag's name is
/// bounded; a digest never makes two keys one tag).
pub(crate) fn of_key(key: &str) -> String {
    if key.len() <= 512 {
        return format!("#key {key}");
    }
    format!("#key sha256:{}", crate::digest::hex_sha256(key.as_bytes()))
}

/// One tag's version.
#[derive(Debug, Default)]
pub(crate) struct TagCell {
    version: AtomicU64,
}

impl TagCell {
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    pub fn bump(&self) {
        self.version.fetch_add(1, Ordering::AcqRel);
    }
}

/// The versions an entry was filled under.
#[derive(Debug, Default)]
pub(crate) struct Fence {
    seen: Vec<(Arc<TagCell>, u64)>,
}

impl Fence {
    /// Whether no tag of the fence was invalidated since it was taken.
    pub fn is_current(&self) -> bool {
        self.seen.iter().all(|(c, v)| c.version() == *v)
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }
}

const SHARDS: usize = 64;

struct Shard {
    cells: HashMap<Box<str>, Weak<TagCell>>,
    /// Size after the last sweep; the next sweep runs when the shard has doubled.
    swept_at: usize,
}

/// Tag name -> cell, sharded so that tasks touching different tags do not contend.
pub(crate) struct TagIndex {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    /// Carried by every entry: bumping it invalidates the whole namespace.
    epoch: Arc<TagCell>,
    /// Moved by every invalidation before it touches a tag (see `Backend::sequence`).
    sequence: AtomicU64,
    recent: Mutex<Recent>,
}

/// The latest invalidations, by sequence: the tags each named (`None`: the namespace).
type Recent = VecDeque<(u64, Option<Box<[Box<str>]>>)>;

/// How many invalidations the index remembers for [`TagIndex::invalidated_since`]: a fill
/// whose load saw more land says its tags may be covered.
const RECENT: usize = 1024;

impl TagIndex {
    pub fn new() -> TagIndex {
        TagIndex {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        cells: HashMap::new(),
                        swept_at: 16,
                    })
                })
                .collect(),
            hasher: RandomState::new(),
            epoch: Arc::new(TagCell::default()),
            sequence: AtomicU64::new(0),
            recent: Mutex::new(VecDeque::new()),
        }
    }

    fn shard(&self, tag: &str) -> &Mutex<Shard> {
        &self.shards[(self.hasher.hash_one(tag) as usize) % SHARDS]
    }

    /// The current versions of `tags` (each a namespaced tag), creating cells as needed.
    /// Taken before a loader runs, it fences the fill.
    pub fn fence<'a>(&self, tags: impl IntoIterator<Item = &'a str>) -> Fence {
        let mut seen = vec![(self.epoch.clone(), self.epoch.version())];
        for tag in tags {
            let cell = self.cell(tag);
            let v = cell.version();
            seen.push((cell, v));
        }
        Fence { seen }
    }

    fn cell(&self, tag: &str) -> Arc<TagCell> {
        let mut shard = self.shard(tag).lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = shard.cells.get(tag).and_then(Weak::upgrade) {
            return c;
        }
        let cell = Arc::new(TagCell::default());
        shard.cells.insert(tag.into(), Arc::downgrade(&cell));
        if shard.cells.len() >= shard.swept_at * 2 {
            shard.cells.retain(|_, w| w.strong_count() > 0);
            shard.swept_at = shard.cells.len().max(16);
        }
        cell
    }

    /// Invalidates a namespaced tag. A tag no live entry carries has nothing to invalidate.
    pub fn invalidate(&self, tag: &str) {
        let shard = self.shard(tag).lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = shard.cells.get(tag).and_then(Weak::upgrade) {
            c.bump();
        }
    }

    /// The invalidation sequence.
    pub fn sequence(&self) -> u64 {
        self.sequence.load(Ordering::Acquire)
    }

    /// Moves the invalidation sequence, remembering which tags the invalidation names (`None`:
    /// the namespace): called before an invalidation touches its tags.
    pub fn advance(&self, tags: Option<&[String]>) {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let seq = self.sequence.fetch_add(1, Ordering::AcqRel) + 1;
        if recent.len() == RECENT {
            recent.pop_front();
        }
        recent.push_back((
            seq,
            tags.map(|t| t.iter().map(|t| t.as_str().into()).collect()),
        ));
    }

    /// Whether an invalidation since the sequence was `since` may cover one of `tags`: one
    /// that names one of them, a namespace flush, or one no longer remembered.
    pub fn invalidated_since(&self, since: u64, tags: &[String]) -> bool {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let now = self.sequence();
        if now == since {
            return false;
        }
        if recent.front().is_none_or(|(first, _)| *first > since + 1) {
            return true;
        }
        recent
            .iter()
            .filter(|(seq, _)| *seq > since)
            .any(|(_, named)| match named {
                None => true,
                Some(named) => named.iter().any(|n| tags.iter().any(|t| **n == **t)),
            })
    }

    /// Invalidates every entry of the namespace.
    pub fn invalidate_all(&self) {
        self.epoch.bump();
    }

    /// Number of slots in the index (live or awaiting a sweep).
    #[cfg(test)]
    pub fn slots(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).cells.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalidation_breaks_only_fences_that_hold_the_tag() {
        let idx = TagIndex::new();
        let a = idx.fence(["t:a"]);
        let ab = idx.fence(["t:a", "t:b"]);
        let b = idx.fence(["t:b"]);
        idx.invalidate("t:a");
        assert!(!a.is_current() && !ab.is_current());
        assert!(b.is_current());
        idx.invalidate_all();
        assert!(!b.is_current());
    }

    #[test]
    fn invalidations_since_a_sequence_are_told_by_tag() {
        let idx = TagIndex::new();
        let since = idx.sequence();
        let tags = |t: &[&str]| t.iter().map(|t| t.to_string()).collect::<Vec<_>>();
        assert!(!idx.invalidated_since(since, &tags(&["a"])));
        idx.advance(Some(&tags(&["b", "c"])));
        assert!(
            !idx.invalidated_since(since, &tags(&["a"])),
            "another tag's"
        );
        assert!(idx.invalidated_since(since, &tags(&["a", "c"])));
        let later = idx.sequence();
        idx.advance(None);
        assert!(
            idx.invalidated_since(later, &tags(&["a"])),
            "a flush covers every tag"
        );
        // Past what is remembered: covered, whatever the tags.
        let old = idx.sequence();
        for _ in 0..RECENT {
            idx.advance(Some(&tags(&["b"])));
        }
        assert!(!idx.invalidated_since(old, &tags(&["a"])));
        idx.advance(Some(&tags(&["b"])));
        assert!(idx.invalidated_since(old, &tags(&["a"])), "forgotten");
    }

    #[test]
    fn a_dropped_cell_never_revalidates_an_old_fence() {
        let idx = TagIndex::new();
        let old = idx.fence(["t"]);
        idx.invalidate("t");
        assert!(!old.is_current());
        drop(old);
        // The cell is gone; a new one starts at version 0 again, but no old fence points to it.
        let new = idx.fence(["t"]);
        assert!(new.is_current());
    }

    #[test]
    fn the_index_does_not_outgrow_live_entries() {
        let idx = TagIndex::new();
        let live: Vec<Fence> = (0..100)
            .map(|i| idx.fence([format!("keep:{i}").as_str()]))
            .collect();
        for i in 0..200_000 {
            drop(idx.fence([format!("gone:{i}").as_str()]));
        }
        // Live tags plus at most one unswept generation per shard.
        assert!(idx.slots() < 100 + SHARDS * 64, "{} slots", idx.slots());
        assert!(live.iter().all(Fence::is_current));
    }
}
