//! Where entries live: the [`Backend`] trait, which the memory backend (in process) and the
//! Redis backend (one server or a cluster) implement. The read and write paths are generic over
//! it, so that a fence always comes from the backend it fences.
//!
//! Keys given to a backend are full keys (`{prefix}:{version}:{key}`); the engine's own keys
//! (tags, locks, early-refresh claims, the namespace epoch) live outside that space, so nothing
//! a caller or a guest names can reach them.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::error::Error;

pub(crate) mod memory;
pub(crate) mod redis;

/// What happened to a write's invalidation.
///
/// ```
/// # let rt = tokio::runtime::Runtime::new().unwrap();
/// # rt.block_on(async {
/// use cachelet::Invalidation;
/// let cache = cachelet::Cache::builder().url("mem://").build().await.unwrap();
/// // The memory backend delivers at once.
/// assert_eq!(cache.invalidate(&["user:1"]).await.unwrap(), Invalidation::Delivered);
/// // No tags, nothing to deliver.
/// assert_eq!(cache.invalidate::<&str>(&[]).await.unwrap(), Invalidation::Nothing);
/// # });
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Invalidation {
    /// There was nothing to invalidate (no rule, an unknown operation, no tags).
    Nothing,
    /// Every host sharing the backend sees it from now on.
    Delivered,
    /// The backend could not be reached: this host holds the invalidation and delivers it by
    /// itself as soon as the backend answers (reads on this host do not use the backend until
    /// then). Until it is delivered, another host that still reaches the backend may serve what
    /// it covers. `journaled`: it is also on disk, and survives this process.
    Held {
        /// Written to the journal ([`crate::builder::CacheBuilder::journal`]) before the write returned.
        journaled: bool,
    },
}

/// A fresh entry found by a lookup.
pub(crate) struct Hit {
    pub value: bytes::Bytes,
    /// This host must refresh the entry in the background (`early_ttl`): the claim is its.
    pub early_due: bool,
}

/// What a lookup saw: the hit, if fresh, and what the backend needs to fence a fill (or to
/// release an early-refresh claim) without reading again.
pub(crate) struct Lookup<S> {
    pub hit: Option<Hit>,
    pub seen: S,
}

/// How a lookup reads an entry.
#[derive(Clone, Copy)]
pub(crate) struct Look {
    /// Sliding expiry: a hit gives the entry this TTL again (and its tags their margin).
    pub slide: Option<Duration>,
    /// The entry may be due for an early refresh: find out.
    pub early: bool,
}

/// How a fill stores an entry.
#[derive(Clone, Copy)]
pub(crate) struct Fill {
    pub ttl: Duration,
    pub early: Option<Duration>,
    pub refresh: bool,
}

/// A cross-host lock this host holds (for `lock` reads).
pub(crate) struct Held(pub Option<String>);

/// One place where entries live. Every method that can fail returns [`Error::Unavailable`]
/// for an outage (the caller serves uncached) and another error for a refusal (a value of the
/// wrong type, a full server).
pub(crate) trait Backend: Send + Sync + 'static {
    /// What a lookup saw that a following fill (or an early claim's release) needs.
    type Seen: Send + Sync + 'static;
    /// The versions of an entry's tags, read before its loader ran.
    type Fence: Send + Sync + 'static;

    /// The fresh entry under `key` whose fill carried `tags`.
    fn lookup(
        &self,
        key: &str,
        tags: &[String],
        look: Look,
    ) -> impl Future<Output = Result<Lookup<Self::Seen>, Error>> + Send;

    /// The current versions of `tags` (and of the namespace), taken before a loader runs;
    /// `seen` is what a lookup just read, which saves reading it again.
    fn fence(
        &self,
        tags: &[String],
        seen: Option<&Self::Seen>,
        ttl: Duration,
    ) -> impl Future<Output = Result<Self::Fence, Error>> + Send;

    /// Stores a loaded value, fresh only while `fence` is current.
    fn fill(
        &self,
        key: &str,
        tags: &[String],
        value: bytes::Bytes,
        fence: Self::Fence,
        fill: Fill,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Lets a later hit claim the early refresh that `seen`'s hit claimed and could not do.
    fn release_early(&self, key: &str, seen: &Self::Seen) -> impl Future<Output = ()> + Send;

    /// The cross-host lock of `key`: `Some` if this host holds it now, `None` if another does.
    /// (In process, single flight already made the caller the only loader.)
    fn try_lock(&self, key: &str) -> impl Future<Output = Result<Option<Held>, Error>> + Send;
    /// Keeps a held lock alive for another lock TTL; whether it was still ours.
    fn extend_lock(&self, key: &str, held: &Held) -> impl Future<Output = bool> + Send;
    fn unlock(&self, key: &str, held: Held) -> impl Future<Output = ()> + Send;
    /// How long a cross-host lock lives without being extended (zero: no cross-host lock).
    fn lock_ttl(&self) -> Duration;

    /// The invalidation sequence: every invalidation (of tags or of the namespace) that any
    /// host delivers moves it, *before* it touches a tag. A fill fenced by tags it learned
    /// only after its load compares it with the value read before the load.
    #[cfg_attr(not(feature = "axum"), allow(dead_code))]
    fn sequence(&self) -> impl Future<Output = Result<u64, Error>> + Send;

    /// Whether an invalidation delivered since the sequence was `since` may cover one of
    /// `tags`: one that names one of them, a namespace flush, or one the backend no longer
    /// remembers (then it says yes). A fill fenced by tags it learned during its load is
    /// stored only if none did: an invalidation of other tags meanwhile does not keep it out.
    fn invalidated_since(
        &self,
        since: u64,
        tags: &[String],
    ) -> impl Future<Output = Result<bool, Error>> + Send;

    /// Invalidates tags (relative names).
    fn invalidate(&self, tags: &[String]) -> impl Future<Output = Invalidation> + Send;
    /// Invalidates every cached read of the namespace: O(1).
    fn invalidate_all(&self) -> impl Future<Output = Invalidation> + Send;

    // ---- direct operations (full keys) ----

    /// The value under `key` if fresh (a read-path entry only while its tags are current).
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<bytes::Bytes>, Error>> + Send;
    /// Stores `value` for `ttl` (non-zero); with `if_absent`, only if no fresh entry is there.
    fn set(
        &self,
        key: &str,
        value: Vec<u8>,
        ttl: Duration,
        if_absent: bool,
    ) -> impl Future<Output = Result<bool, Error>> + Send;
    fn delete(&self, key: &str) -> impl Future<Output = Result<bool, Error>> + Send;
    fn get_delete(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<Option<bytes::Bytes>, Error>> + Send;
    /// Adds `by` to the integer under `key`; a new counter lives `ttl`. `name` (the key as
    /// the caller gave it) is for errors.
    fn incr(
        &self,
        key: &str,
        name: &str,
        by: i64,
        ttl: Duration,
    ) -> impl Future<Output = Result<i64, Error>> + Send;
    /// Deletes the namespace's keys matching a glob relative to `ns`.
    fn delete_match(
        &self,
        ns: &str,
        pattern: &str,
    ) -> impl Future<Output = Result<u64, Error>> + Send;
    fn ping(&self) -> impl Future<Output = Result<(), Error>> + Send;
}

/// The backend of a cache: one of the two, each behind an `Arc` so that background work
/// (early refresh, recache, held deliveries) can keep it.
pub(crate) enum AnyBackend {
    Memory(Arc<memory::Memory>),
    Redis(Arc<redis::Redis>),
}

/// Runs `$body` with `$b` bound to the concrete backend (`&Arc<B>` for some `B: Backend`).
macro_rules! with_backend {
    ($backend:expr, $b:ident => $body:expr) => {
        match $backend {
            $crate::backend::AnyBackend::Memory($b) => $body,
            $crate::backend::AnyBackend::Redis($b) => $body,
        }
    };
}
pub(crate) use with_backend;

/// `s` as a glob that matches only itself (for [`glob_match`] and Redis `SCAN MATCH`).
pub(crate) fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Redis-style glob matching: `*`, `?`, `[abc]`, `[a-z]`, `[^a]` and `\` escapes.
pub(crate) fn glob_match(pat: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0, 0);
    let (mut star_p, mut star_i) = (None, 0);
    while i < s.len() {
        if p < pat.len() {
            match pat[p] {
                b'*' => {
                    star_p = Some(p);
                    star_i = i;
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    i += 1;
                    continue;
                }
                b'[' => {
                    if let Some((matched, next)) = class(pat, p, s[i]) {
                        if matched {
                            p = next;
                            i += 1;
                            continue;
                        }
                    } else if s[i] == b'[' {
                        p += 1;
                        i += 1;
                        continue;
                    }
                }
                b'\\' if p + 1 < pat.len() && pat[p + 1] == s[i] => {
                    p += 2;
                    i += 1;
                    continue;
                }
                b'\\' if p + 1 < pat.len() => {}
                c if c == s[i] => {
                    p += 1;
                    i += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star_p {
            Some(sp) => {
                p = sp + 1;
                star_i += 1;
                i = star_i;
            }
            None => return false,
        }
    }
    pat[p..].iter().all(|&c| c == b'*')
}

/// Matches `c` against the class starting at `pat[start] == '['`: (matched, index after `]`).
fn class(pat: &[u8], start: usize, c: u8) -> Option<(bool, usize)> {
    let mut j = start + 1;
    let negate = pat.get(j) == Some(&b'^');
    if negate {
        j += 1;
    }
    let mut matched = false;
    let mut first = true;
    while j < pat.len() && (pat[j] != b']' || first) {
        first = false;
        let mut lo = pat[j];
        if lo == b'\\' && j + 1 < pat.len() {
            j += 1;
            lo = pat[j];
        }
        if j + 2 < pat.len() && pat[j + 1] == b'-' && pat[j + 2] != b']' {
            let hi = pat[j + 2];
            if (lo.min(hi)..=lo.max(hi)).contains(&c) {
                matched = true;
            }
            j += 3;
        } else {
            if lo == c {
                matched = true;
            }
            j += 1;
        }
    }
    (j < pat.len()).then_some((matched != negate, j + 1))
}

#[cfg(test)]
mod tests {
    use super::{glob_escape, glob_match};

    #[test]
    fn escaped_globs_match_only_themselves() {
        assert_eq!(glob_escape("a*b:[v1]:"), "a\\*b:\\[v1\\]:");
        for s in ["a*b:[v1]:", "x?y\\z", "plain"] {
            assert!(glob_match(glob_escape(s).as_bytes(), s.as_bytes()), "{s}");
        }
        assert!(!glob_match(glob_escape("a*").as_bytes(), b"abc"));
    }

    #[test]
    fn globs_match_like_redis() {
        let m = |p: &str, s: &str| glob_match(p.as_bytes(), s.as_bytes());
        assert!(m("user:*:profile", "user:42:profile"));
        assert!(!m("user:*:profile", "user:42:settings"));
        assert!(m("user:1:*", "user:1:profile"));
        assert!(!m("user:1:*", "user:12:profile"));
        assert!(m("h?llo", "hello") && !m("h?llo", "hllo"));
        assert!(m("h[ae]llo", "hallo") && !m("h[ae]llo", "hillo"));
        assert!(m("h[^e]llo", "hallo") && !m("h[^e]llo", "hello"));
        assert!(m("h[a-c]llo", "hbllo") && !m("h[a-c]llo", "hdllo"));
        assert!(m("a\\*b", "a*b") && !m("a\\*b", "axb"));
        assert!(m("*", "") && m("**", "x") && !m("", "x"));
    }
}
