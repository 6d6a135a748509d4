//! Rules: what a policy decides for one call, and templates the host renders natively.
//!
//! A policy answers a read with a [`ReadRule`] and a write with a [`WriteRule`]. When a policy
//! declares an operation's rule as templates (`op-info.read-template`), the host keeps the parsed
//! [`Template`]s and renders the rule itself on every call: the hit path then costs no Wasm call.

use std::time::Duration;

use serde::Serialize;

use crate::args::{Args, Value};
use crate::error::Error;

/// A named TTL, resolved from the cache's settings when a rule is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TtlBucket {
    /// `CACHE_TTL_SHORT` (30 s by default).
    Short,
    /// `CACHE_TTL_DEFAULT` (300 s by default).
    Default,
    /// `CACHE_TTL_LONG` (3600 s by default).
    Long,
}

/// How long an entry lives: seconds, or a bucket. Zero seconds means "do not cache".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Ttl {
    /// Exactly this many seconds; 0 = do not cache.
    Seconds(u32),
    /// A bucket from the settings.
    Bucket(TtlBucket),
}

/// A duration as whole seconds, rounded up (a partial second still caches), at most
/// `u32::MAX` seconds; zero stays zero ("do not cache").
///
/// ```
/// use std::time::Duration;
/// use cachelet::Ttl;
/// assert_eq!(Ttl::from(Duration::from_secs(90)), Ttl::Seconds(90));
/// assert_eq!(Ttl::from(Duration::from_millis(1500)), Ttl::Seconds(2));
/// assert_eq!(Ttl::from(Duration::ZERO), Ttl::Seconds(0));
/// ```
impl From<std::time::Duration> for Ttl {
    fn from(d: std::time::Duration) -> Ttl {
        let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
        Ttl::Seconds(u32::try_from(secs).unwrap_or(u32::MAX))
    }
}

/// How to cache one call of a read operation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReadRule {
    /// The key, relative to the cache's namespace.
    pub key: String,
    /// How long the entry lives.
    pub ttl: Ttl,
    /// The entry's tags (relative).
    pub tags: Vec<String>,
    /// Age after which a hit reloads the entry in the background (once per key).
    pub early_ttl: Option<u32>,
    /// Sliding expiry: a hit gives the entry its full TTL again.
    pub refresh: bool,
    /// Concurrent misses of the key run the loader once.
    pub lock: bool,
}

/// One read to warm again after a write.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recache {
    /// The read operation.
    pub op: String,
    /// Its arguments.
    #[serde(serialize_with = "ser_args")]
    pub args: Args,
}

fn ser_args<S: serde::Serializer>(a: &Args, s: S) -> Result<S::Ok, S::Error> {
    a.to_json().serialize(s)
}

/// What a successful write does to the cache.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct WriteRule {
    /// Tags to invalidate (relative).
    pub invalidate: Vec<String>,
    /// Reads to warm again afterwards.
    pub recache: Vec<Recache>,
    /// How many recache reads may run at once.
    pub recache_concurrency: Option<u32>,
}

/// A key or tag template, parsed once: the grammar and renderer the host shares with the Rust
/// guest SDK (crate `cachelet-template`; the rules of the WIT `read-rule` comment).
///
/// ```
/// use cachelet::{Args, Template};
/// let t = Template::parse("org:{org_id}:user:{user_id}").unwrap();
/// let args = Args::new().with("org_id", 7).with("user_id", 42);
/// assert_eq!(t.render(&args).unwrap(), "org:7:user:42");
/// // Text is escaped: distinct arguments never render to one key.
/// let args = Args::new().with("org_id", "1:user:2").with("user_id", 3);
/// assert_eq!(t.render(&args).unwrap(), "org:1%3Auser%3A2:user:3");
/// assert!(Template::parse("user:{user_id").is_err());
/// assert!(Template::parse("{org_id}-{user_id}").is_err());
/// ```
pub use cachelet_template::Template;

/// Parses a template, as the host's error.
pub(crate) fn parse_template(text: &str) -> Result<Template, Error> {
    Template::parse(text).map_err(|e| Error::Template {
        template: e.template().to_owned(),
        problem: e.problem().to_owned(),
    })
}

/// Renders `t` with `args`; a placeholder without an argument names what the call passed.
pub(crate) fn render(t: &Template, args: &Args) -> Result<String, Error> {
    t.render(args).map_err(|m| Error::MissingArg {
        template: m.template.to_owned(),
        param: m.param.to_owned(),
        given: args.iter().map(|(n, _)| n.to_string()).collect(),
    })
}

/// A read rule whose key and tags are templates.
#[derive(Debug, Clone)]
pub(crate) struct ReadTemplate {
    pub key: Template,
    pub tags: Vec<Template>,
    pub ttl: Ttl,
    pub early_ttl: Option<u32>,
    pub refresh: bool,
    pub lock: bool,
}

impl ReadTemplate {
    pub fn render(&self, args: &Args) -> Result<ReadRule, Error> {
        Ok(ReadRule {
            key: render(&self.key, args)?,
            ttl: self.ttl,
            tags: self
                .tags
                .iter()
                .map(|t| render(t, args))
                .collect::<Result<_, _>>()?,
            early_ttl: self.early_ttl,
            refresh: self.refresh,
            lock: self.lock,
        })
    }
}

/// A recache entry derived from a write's arguments.
#[derive(Debug, Clone)]
pub(crate) struct RecacheTemplate {
    pub op: String,
    pub include: Option<Vec<String>>,
    pub rename: Vec<(String, String)>,
    pub extra: Args,
}

impl RecacheTemplate {
    /// The read's arguments: the included write arguments, renamed, plus the extras.
    pub fn args(&self, write_args: &Args) -> Result<Args, Error> {
        let mut out = Args::new();
        match &self.include {
            Some(names) => {
                for n in names {
                    let v = write_args.get(n).ok_or_else(|| Error::MissingArg {
                        template: format!("recache {} include [{}]", self.op, names.join(", ")),
                        param: n.clone(),
                        given: write_args.iter().map(|(n, _)| n.to_string()).collect(),
                    })?;
                    out.set(n.clone(), v.clone());
                }
            }
            None => {
                for (n, v) in write_args.iter() {
                    out.set(n.to_string(), v.clone());
                }
            }
        }
        let mut renamed = Args::new();
        for (n, v) in out.iter() {
            let to = self
                .rename
                .iter()
                .find(|(from, _)| from == n)
                .map_or(n, |(_, to)| to.as_str());
            renamed.set(to.to_string(), v.clone());
        }
        for (n, v) in self.extra.iter() {
            renamed.set(n.to_string(), v.clone());
        }
        Ok(renamed)
    }
}

/// A write rule whose tags are templates.
#[derive(Debug, Clone)]
pub(crate) struct WriteTemplate {
    pub invalidate: Vec<Template>,
    pub recache: Vec<RecacheTemplate>,
    pub recache_concurrency: Option<u32>,
}

impl WriteTemplate {
    pub fn render(&self, args: &Args) -> Result<WriteRule, Error> {
        Ok(WriteRule {
            invalidate: self
                .invalidate
                .iter()
                .map(|t| render(t, args))
                .collect::<Result<_, _>>()?,
            // A recache entry that cannot get its arguments is skipped (and logged): warming is
            // an optimisation, and it must never cost the write its invalidation.
            recache: self
                .recache
                .iter()
                .filter_map(|r| match r.args(args) {
                    Ok(a) => Some(Recache {
                        op: r.op.clone(),
                        args: a,
                    }),
                    Err(e) => {
                        tracing::warn!(recache = r.op, "recache skipped: {e}");
                        None
                    }
                })
                .collect(),
            recache_concurrency: self.recache_concurrency,
        })
    }
}

/// Seconds of a TTL, buckets resolved with the settings.
pub(crate) fn resolve_ttl(ttl: Ttl, buckets: &crate::config::TtlBuckets) -> Duration {
    Duration::from_secs(u64::from(match ttl {
        Ttl::Seconds(s) => s,
        Ttl::Bucket(TtlBucket::Short) => buckets.short,
        Ttl::Bucket(TtlBucket::Default) => buckets.default,
        Ttl::Bucket(TtlBucket::Long) => buckets.long,
    }))
}

/// Parses `name=value` as the CLI and tests take it: integers, floats, `true`/`false`, `null`
/// and JSON lists/objects are typed; anything else is text (`name:=text` forces text).
pub fn parse_arg(s: &str) -> Result<(String, Value), Error> {
    let bad = || Error::Args(format!("argument {s:?} is not of the form name=value"));
    if let Some((n, v)) = s.split_once(":=") {
        if !n.is_empty() && !n.contains('=') {
            return Ok((n.to_string(), Value::Text(v.to_string())));
        }
    }
    let (n, v) = s.split_once('=').ok_or_else(bad)?;
    if n.is_empty() {
        return Err(bad());
    }
    let value = if let Ok(i) = v.parse::<i64>() {
        Value::Int(i)
    } else if v == "true" || v == "false" {
        Value::Bool(v == "true")
    } else if v == "null" {
        Value::Null
    } else if v.starts_with('{') || v.starts_with('[') {
        let j: serde_json::Value = serde_json::from_str(v)
            .map_err(|e| Error::Args(format!("argument {n}: invalid JSON {v:?}: {e}")))?;
        Value::Json(j.to_string())
    } else if let Ok(f) = v.parse::<f64>() {
        if f.is_finite() {
            Value::Float(f)
        } else {
            Value::Text(v.to_string())
        }
    } else {
        Value::Text(v.to_string())
    };
    Ok((n.to_string(), value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_argument_names_the_placeholder_and_what_was_given() {
        let t = parse_template("user:{user_id}").unwrap();
        let e = render(&t, &Args::new().with("usr_id", 1))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("{user_id}") && e.contains("user:{user_id}") && e.contains("usr_id"),
            "{e}"
        );
        let e = parse_template("user:{id").unwrap_err().to_string();
        assert!(e.contains("user:{id") && e.contains("unclosed"), "{e}");
    }

    #[test]
    fn recache_args_include_rename_extra() {
        let r = RecacheTemplate {
            op: "get_org_user".into(),
            include: Some(vec!["org_id".into(), "id".into()]),
            rename: vec![("id".into(), "user_id".into())],
            extra: Args::new().with("expand", true),
        };
        let w = Args::new()
            .with("org_id", 1)
            .with("id", 2)
            .with("data", "x");
        assert_eq!(
            r.args(&w).unwrap(),
            Args::new()
                .with("org_id", 1)
                .with("user_id", 2)
                .with("expand", true)
        );
        let all = RecacheTemplate { include: None, ..r };
        assert_eq!(all.args(&w).unwrap().len(), 4);
    }

    #[test]
    fn cli_arguments_are_typed() {
        assert_eq!(parse_arg("a=1").unwrap().1, Value::Int(1));
        assert_eq!(parse_arg("a=1.5").unwrap().1, Value::Float(1.5));
        assert_eq!(parse_arg("a=true").unwrap().1, Value::Bool(true));
        assert_eq!(parse_arg("a=x=y").unwrap().1, Value::Text("x=y".into()));
        assert_eq!(parse_arg("a:=12").unwrap().1, Value::Text("12".into()));
        assert_eq!(
            parse_arg("a=[1, 2]").unwrap().1,
            Value::Json("[1,2]".into())
        );
        assert!(parse_arg("novalue").is_err());
        assert!(parse_arg("a={bad").is_err());
    }
}
