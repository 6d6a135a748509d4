//! The limits ([`GuestLimits`]) on what a policy's answer may hold, applied: a key, tags, a
//! recache list and the strings in it. Every rule is checked, whether the host rendered it from a template or the guest
//! computed it; an answer past a limit is refused ([`Error::Rule`], naming the limit and its
//! setting) and the call is served uncached.

use crate::args::Value;
use crate::config::GuestLimits;
use crate::error::Error;
use crate::rules::{ReadRule, WriteRule};

impl GuestLimits {
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
