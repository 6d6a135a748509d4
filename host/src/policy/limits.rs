//! Limits on what a policy's answer may hold: a key, tags, a recache list and the strings in
//! it. Every rule is checked, whether the host rendered it from a template or the guest
//! computed it; an answer past a limit is refused ([`Error::Rule`], naming the limit and its
//! setting) and the call is served uncached.

use crate::args::Value;
use crate::backend::redis::envelope::{MAX_TAGS, MAX_TAG_LEN};
use crate::rules::{ReadRule, WriteRule};
use crate::Error;

/// What one answer of a policy may hold. Each limit is a setting (read by
/// [`Settings::from_env`](crate::Settings::from_env)); the tag limits cannot go past what an
/// entry records (254 tags of 65,535 bytes).
///
/// ```
/// let l = cachelet::GuestLimits::default();
/// assert_eq!((l.max_key_bytes, l.max_tags, l.max_tag_bytes), (4096, 254, 1024));
/// assert_eq!((l.max_recache, l.max_string_bytes), (256, 65536));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct GuestLimits {
    /// `CACHE_MAX_KEY_BYTES` (4096): the longest key a read rule may name.
    pub max_key_bytes: usize,
    /// `CACHE_MAX_TAGS` (254, at most 254): most tags of a read rule, and most tags a write
    /// rule invalidates.
    pub max_tags: usize,
    /// `CACHE_MAX_TAG_BYTES` (1024, at most 65,535): the longest tag.
    pub max_tag_bytes: usize,
    /// `CACHE_MAX_RECACHE` (256): most reads a write rule asks to warm again.
    pub max_recache: usize,
    /// `CACHE_MAX_STRING_BYTES` (65,536): the longest text or JSON argument of a recache read.
    pub max_string_bytes: usize,
}

impl Default for GuestLimits {
    fn default() -> Self {
        GuestLimits {
            max_key_bytes: 4096,
            max_tags: MAX_TAGS,
            max_tag_bytes: 1024,
            max_recache: 256,
            max_string_bytes: 64 << 10,
        }
    }
}

impl GuestLimits {
    /// The error of a limit that cannot be configured that high.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        let over = |name: &str, v: usize, max: usize| {
            (v > max).then(|| Error::Setting {
                name: name.into(),
                problem: format!("{v} is more than an entry records ({max})"),
            })
        };
        match over("CACHE_MAX_TAGS", self.max_tags, MAX_TAGS)
            .or_else(|| over("CACHE_MAX_TAG_BYTES", self.max_tag_bytes, MAX_TAG_LEN))
        {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// `rule`, or the limit it goes past.
    pub(crate) fn read(&self, op: &str, rule: ReadRule) -> Result<ReadRule, Error> {
        let past = |problem: String| Error::Rule {
            op: op.to_string(),
            problem,
        };
        if rule.key.len() > self.max_key_bytes {
            return Err(past(format!(
                "a key of {} bytes, past the limit of {} (CACHE_MAX_KEY_BYTES)",
                rule.key.len(),
                self.max_key_bytes
            )));
        }
        self.tags(&rule.tags).map_err(past)?;
        Ok(rule)
    }

    /// `rule`, or the limit it goes past.
    pub(crate) fn write(&self, op: &str, rule: WriteRule) -> Result<WriteRule, Error> {
        let past = |problem: String| Error::Rule {
            op: op.to_string(),
            problem,
        };
        self.tags(&rule.invalidate).map_err(past)?;
        if rule.recache.len() > self.max_recache {
            return Err(past(format!(
                "{} recache reads, past the limit of {} (CACHE_MAX_RECACHE)",
                rule.recache.len(),
                self.max_recache
            )));
        }
        for r in &rule.recache {
            for (name, v) in r.args.iter() {
                let len = match v {
                    Value::Text(s) | Value::Json(s) => s.len(),
                    _ => 0,
                };
                if len > self.max_string_bytes {
                    return Err(past(format!(
                        "recache argument {name:?} of {} is {len} bytes, past the limit of {} \
                         (CACHE_MAX_STRING_BYTES)",
                        r.op, self.max_string_bytes
                    )));
                }
            }
        }
        Ok(rule)
    }

    fn tags(&self, tags: &[String]) -> Result<(), String> {
        if tags.len() > self.max_tags {
            return Err(format!(
                "{} tags, past the limit of {} (CACHE_MAX_TAGS)",
                tags.len(),
                self.max_tags
            ));
        }
        if let Some(t) = tags.iter().find(|t| t.len() > self.max_tag_bytes) {
            return Err(format!(
                "a tag of {} bytes, past the limit of {} (CACHE_MAX_TAG_BYTES)",
                t.len(),
                self.max_tag_bytes
            ));
        }
        Ok(())
    }
}
