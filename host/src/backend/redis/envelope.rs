//! An entry of the read path as stored in Redis: what fenced its fill, then the value.
//!
//! ```text
//! "\0cl2"                 magic
//! born     f64 LE         the server's clock (ms) when an entry with early refresh was filled
//!                         (0 otherwise): compared only with the same server's clock
//! fill id  u64 LE         tells one fill of a key from the next (one early claim per fill)
//! early    u64 LE         early-refresh age in ms (0: none)
//! n        u8             fence entries: the namespace epoch first, then one per tag
//!   name   u16 LE + bytes the tag (empty for the epoch)
//!   token  u8 + bytes     the token it had before the loader ran
//! value    the rest
//! ```
//!
//! Parsed without copying. A value a direct operation stored is never an envelope (direct
//! values are JSON, which cannot start with a NUL byte).

use crate::tags::{MAX_TAGS, MAX_TAG_LEN};

/// The envelope's first bytes.
pub(super) const MAGIC: &[u8; 4] = b"\0cl2";

pub(super) struct Envelope<'a> {
    pub born_ms: u64,
    pub fill_id: u64,
    pub early_ms: u64,
    /// (tag name, token); the first is the epoch's, with an empty name.
    pub fence: Vec<(&'a [u8], &'a [u8])>,
    pub value: &'a [u8],
}

/// The part of an envelope after `born`, which a fill with early refresh hands to a script
/// that puts the server's clock in front of it.
pub(super) fn encode_after_born(
    fill_id: u64,
    early_ms: u64,
    epoch: &str,
    tags: &[String],
    tokens: &[String],
    value: &[u8],
) -> Vec<u8> {
    debug_assert!(tags.len() <= MAX_TAGS && tokens.len() == tags.len());
    let names: usize = tags.iter().map(|t| t.len() + 2 + 17).sum();
    let mut out = Vec::with_capacity(17 + 20 + names + value.len());
    out.extend_from_slice(&fill_id.to_le_bytes());
    out.extend_from_slice(&early_ms.to_le_bytes());
    out.push((tags.len() + 1) as u8);
    push_entry(&mut out, b"", epoch.as_bytes());
    for (t, tok) in tags.iter().zip(tokens) {
        push_entry(&mut out, t.as_bytes(), tok.as_bytes());
    }
    out.extend_from_slice(value);
    out
}

fn push_entry(out: &mut Vec<u8>, name: &[u8], token: &[u8]) {
    let name = &name[..name.len().min(MAX_TAG_LEN)];
    out.extend_from_slice(&(name.len() as u16).to_le_bytes());
    out.extend_from_slice(name);
    let token = &token[..token.len().min(255)];
    out.push(token.len() as u8);
    out.extend_from_slice(token);
}

/// A whole envelope, with `born` = 0 (a fill without early refresh).
pub(super) fn encode(
    fill_id: u64,
    epoch: &str,
    tags: &[String],
    tokens: &[String],
    value: &[u8],
) -> Vec<u8> {
    let rest = encode_after_born(fill_id, 0, epoch, tags, tokens, value);
    let mut out = Vec::with_capacity(12 + rest.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&0f64.to_le_bytes());
    out.extend_from_slice(&rest);
    out
}

impl<'a> Envelope<'a> {
    pub fn parse(raw: &'a [u8]) -> Option<Envelope<'a>> {
        let rest = raw.strip_prefix(MAGIC)?;
        let born = f64::from_le_bytes(rest.get(..8)?.try_into().ok()?);
        let fill_id = u64::from_le_bytes(rest.get(8..16)?.try_into().ok()?);
        let early_ms = u64::from_le_bytes(rest.get(16..24)?.try_into().ok()?);
        let n = *rest.get(24)? as usize;
        let mut at = 25;
        let mut fence = Vec::with_capacity(n);
        for _ in 0..n {
            let len = u16::from_le_bytes(rest.get(at..at + 2)?.try_into().ok()?) as usize;
            let name = rest.get(at + 2..at + 2 + len)?;
            at += 2 + len;
            let tlen = *rest.get(at)? as usize;
            let token = rest.get(at + 1..at + 1 + tlen)?;
            at += 1 + tlen;
            fence.push((name, token));
        }
        Some(Envelope {
            born_ms: if born.is_finite() && born > 0.0 {
                born as u64
            } else {
                0
            },
            fill_id,
            early_ms,
            fence,
            value: rest.get(at..)?,
        })
    }

    /// Whether it was filled under the epoch and `tags`, in that order, then perhaps tags
    /// learned with its value.
    pub fn has_tags(&self, tags: &[String]) -> bool {
        self.fence.len() > tags.len()
            && self.fence[0].0.is_empty()
            && self.fence[1..]
                .iter()
                .zip(tags)
                .all(|((name, _), t)| *name == t.as_bytes())
    }

    /// The tag names it was filled under (not the epoch).
    pub fn tags(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.fence[1..].iter().map(|(name, _)| *name)
    }

    /// Whether `current` (the epoch's token, then each tag's, as read now) still holds every
    /// token the entry was filled under.
    pub fn is_current(&self, current: &[Option<Vec<u8>>]) -> bool {
        self.fence.len() == current.len() && self.is_current_so_far(current)
    }

    /// Whether the first tokens it was filled under (as many as `current` has) still hold.
    pub fn is_current_so_far(&self, current: &[Option<Vec<u8>>]) -> bool {
        current.len() <= self.fence.len()
            && self
                .fence
                .iter()
                .zip(current)
                .all(|((_, tok), now)| now.as_deref() == Some(*tok))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip() {
        let tags = vec!["user:1".to_string(), "org:2".to_string()];
        let toks = vec!["00aa".to_string(), "ffee".to_string()];
        let raw = encode(7, "e1", &tags, &toks, b"{\"v\":1}");
        let e = Envelope::parse(&raw).unwrap();
        assert_eq!((e.born_ms, e.fill_id, e.early_ms), (0, 7, 0));
        assert!(e.has_tags(&tags));
        // A prefix: the rest are tags learned with the value, checked too.
        assert!(e.has_tags(&tags[..1]));
        assert!(!e.has_tags(&["user:1".to_string(), "org:3".to_string()]));
        assert_eq!(e.value, b"{\"v\":1}");
        let cur = |v: &[&str]| -> Vec<Option<Vec<u8>>> {
            v.iter().map(|s| Some(s.as_bytes().to_vec())).collect()
        };
        assert!(e.is_current(&cur(&["e1", "00aa", "ffee"])));
        assert!(!e.is_current(&cur(&["e2", "00aa", "ffee"])), "epoch");
        assert!(!e.is_current(&cur(&["e1", "00aa", "ffef"])));
        assert!(!e.is_current(&[Some(b"e1".to_vec()), None, None]));

        let mut with_born = MAGIC.to_vec();
        with_born.extend_from_slice(&1_733_000_000_123f64.to_le_bytes());
        with_born.extend_from_slice(&encode_after_born(9, 1000, "e", &[], &[], b"1"));
        let e = Envelope::parse(&with_born).unwrap();
        assert_eq!(
            (e.born_ms, e.fill_id, e.early_ms),
            (1_733_000_000_123, 9, 1000)
        );
        assert!(e.has_tags(&[]) && e.value == b"1");
    }

    #[test]
    fn other_bytes_are_not_envelopes() {
        assert!(Envelope::parse(b"{\"plain\":true}").is_none());
        assert!(Envelope::parse(b"\0cl2\x01").is_none());
        assert!(Envelope::parse(b"\0cl1 an old format").is_none());
        // Truncated anywhere: never a panic, never a value.
        let raw = encode(1, "e", &["t".into()], &["tok".into()], b"v");
        for cut in 0..raw.len() - 1 {
            if let Some(e) = Envelope::parse(&raw[..cut]) {
                assert!(e.fence.len() < 2 || e.value.is_empty(), "cut at {cut}");
            }
        }
    }
}
