//! Settings: from the environment when a cache is built, or set in code.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::Error;
use crate::tags::{MAX_TAGS, MAX_TAG_LEN};

/// The TTL buckets a policy may name instead of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct TtlBuckets {
    /// `CACHE_TTL_SHORT`, 30 s by default.
    pub short: u32,
    /// `CACHE_TTL_DEFAULT`, 300 s by default.
    pub default: u32,
    /// `CACHE_TTL_LONG`, 3600 s by default.
    pub long: u32,
}

impl Default for TtlBuckets {
    fn default() -> Self {
        TtlBuckets {
            short: 30,
            default: 300,
            long: 3600,
        }
    }
}

/// Where entries live, parsed from a cache URL.
///
/// ```
/// use cachelet::BackendUrl;
/// assert_eq!(BackendUrl::parse("mem://").unwrap(), BackendUrl::Memory);
/// let r = BackendUrl::parse("redis://app:s3cret@cache.internal:6379/2").unwrap();
/// // Credentials never show up when a URL is printed or debugged.
/// assert_eq!(r.to_string(), "redis://app:***@cache.internal:6379/2");
/// assert!(!format!("{r:?}").contains("s3cret"));
/// assert!(BackendUrl::parse("memcached://x").is_err());
/// ```
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackendUrl {
    /// The in-process memory backend (`mem://`).
    Memory,
    /// A Redis server (`redis://`, `rediss://` for TLS) or, with several nodes, a Redis Cluster.
    Redis(RedisUrl),
}

/// A parsed `redis://` / `rediss://` URL.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisUrl {
    /// `rediss://`: TLS.
    pub tls: bool,
    /// User name, for ACL authentication.
    pub username: Option<String>,
    /// Password (never printed).
    pub password: Option<String>,
    /// `host:port` of each node; more than one means Redis Cluster.
    pub nodes: Vec<(String, u16)>,
    /// Database index (single node only).
    pub db: Option<u32>,
}

impl RedisUrl {
    /// Whether this URL names a cluster (several nodes).
    pub fn is_cluster(&self) -> bool {
        self.nodes.len() > 1
    }
}

impl BackendUrl {
    /// Parses a cache URL: `mem://`, `redis://[user:password@]host[:port][/db]`, `rediss://...`,
    /// or `redis://host1:port1,host2:port2,...` for a cluster. Errors name the problem and never
    /// repeat a password.
    pub fn parse(url: &str) -> Result<BackendUrl, Error> {
        let url = url.trim();
        let shown = redact(url);
        let bad = |problem: String| Error::Url {
            url: shown.clone(),
            problem,
        };
        let (scheme, rest) = url.split_once("://").ok_or_else(|| {
            bad("expected scheme://..., e.g. mem:// or redis://host:6379/0".into())
        })?;
        match scheme.to_ascii_lowercase().as_str() {
            "mem" | "memory" => {
                if rest.is_empty() || rest == "/" {
                    Ok(BackendUrl::Memory)
                } else {
                    Err(bad("mem:// takes no host or path".into()))
                }
            }
            "redis" | "rediss" => {
                let tls = scheme.eq_ignore_ascii_case("rediss");
                let (auth, hosts) = match rest.rsplit_once('@') {
                    Some((a, h)) => (Some(a), h),
                    None => (None, rest),
                };
                let (username, password) = match auth {
                    None => (None, None),
                    Some(a) => match a.split_once(':') {
                        Some((u, p)) => (
                            (!u.is_empty()).then(|| percent_decode(u)),
                            Some(percent_decode(p)),
                        ),
                        None => (None, Some(percent_decode(a))),
                    },
                };
                let (hosts, db) = match hosts.split_once('/') {
                    Some((h, "")) => (h, None),
                    Some((h, d)) => (
                        h,
                        Some(d.parse::<u32>().map_err(|_| {
                            bad(format!(
                                "database {d:?} is not a number (redis://host:port/0)"
                            ))
                        })?),
                    ),
                    None => (hosts, None),
                };
                let mut nodes = Vec::new();
                for node in hosts.split(',') {
                    let node = node.trim();
                    if node.is_empty() {
                        return Err(bad("empty host in the node list".into()));
                    }
                    let (host, port) = match node.rsplit_once(':') {
                        Some((h, p)) if !h.ends_with(']') || node.starts_with('[') => (
                            h,
                            p.parse::<u16>().map_err(|_| {
                                bad(format!("port {p:?} of node {h:?} is not a port number"))
                            })?,
                        ),
                        _ => (node, 6379),
                    };
                    if host.is_empty() {
                        return Err(bad(format!("node {node:?} has no host")));
                    }
                    nodes.push((host.trim_matches(['[', ']']).to_string(), port));
                }
                if nodes.len() > 1 && db.is_some_and(|d| d != 0) {
                    return Err(bad(
                        "Redis Cluster has a single database: drop the /db index".into(),
                    ));
                }
                Ok(BackendUrl::Redis(RedisUrl {
                    tls,
                    username,
                    password,
                    nodes,
                    db,
                }))
            }
            other => Err(bad(format!(
                "unsupported scheme {other:?}: expected mem://, redis:// or rediss://"
            ))),
        }
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(hex, 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The URL with any password replaced by `***`, also when the URL is malformed (no scheme,
/// a mangled `//`): whatever precedes the last `@` is credentials.
pub(crate) fn redact(url: &str) -> String {
    let Some(at) = url.rfind('@') else {
        return url.to_string();
    };
    let start = url[..at]
        .find("://")
        .map(|s| s + 3)
        .or_else(|| url[..at].rfind("//").map(|s| s + 2))
        .unwrap_or(0);
    let auth = &url[start..at];
    match auth.split_once(':') {
        Some((user, _)) => format!("{}{user}:***{}", &url[..start], &url[at..]),
        None => format!("{}***{}", &url[..start], &url[at..]),
    }
}

impl fmt::Display for BackendUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendUrl::Memory => f.write_str("mem://"),
            BackendUrl::Redis(r) => {
                f.write_str(if r.tls { "rediss://" } else { "redis://" })?;
                match (&r.username, &r.password) {
                    (Some(u), Some(_)) => write!(f, "{u}:***@")?,
                    (None, Some(_)) => f.write_str("***@")?,
                    (Some(u), None) => write!(f, "{u}@")?,
                    (None, None) => {}
                }
                for (i, (h, p)) in r.nodes.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    if h.contains(':') {
                        write!(f, "[{h}]:{p}")?;
                    } else {
                        write!(f, "{h}:{p}")?;
                    }
                }
                if let Some(db) = r.db {
                    write!(f, "/{db}")?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Debug for BackendUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BackendUrl({self})")
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({})", BackendUrl::Redis(self.clone()))
    }
}

/// Everything a cache is configured with. [`Settings::from_env`] reads the environment;
/// every field can be set in code through [`crate::builder::CacheBuilder`], or on the defaults (new
/// fields may come: start from [`Settings::default`] or [`Settings::from_env`]).
///
/// ```
/// use std::time::Duration;
/// let mut s = cachelet::Settings::default();
/// s.prefix = "orders".into();
/// s.redis.timeout = Duration::from_millis(100);
/// s.guest.max_tags = 16;
/// let builder = cachelet::Cache::builder().settings(s);
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Settings {
    /// `CACHE_URL`, else `REDIS_URL`, else `mem://`.
    pub url: BackendUrl,
    /// `CACHE_PREFIX` (`svc`): the first part of every key.
    pub prefix: String,
    /// `CACHE_VERSION` (`v1`): the second part; change it to start from an empty cache.
    pub version: String,
    /// `CACHE_TTL_SHORT` / `CACHE_TTL_DEFAULT` / `CACHE_TTL_LONG`.
    pub ttl: TtlBuckets,
    /// `CACHE_MEM_MAX_BYTES`: the memory backend's bound (256 MiB by default), counting keys,
    /// values and per-entry overhead.
    pub mem_max_bytes: u64,
    /// `CACHE_LOCK_WAIT_MS` (10000): longest a `lock` read waits for another caller's load
    /// of the same key (in this process or on another host) before it loads by itself.
    pub lock_wait: Duration,
    /// How the Redis backend talks to its server (ignored on `mem://`).
    pub redis: RedisOptions,
    /// `CACHE_MAX_*`: what one answer of a policy may hold.
    pub guest: GuestLimits,
    /// `CACHELET_POLICY_DIR`: a folder of policy components, watched while the cache serves
    /// (see [`crate::builder::CacheBuilder::policy_dir`]).
    pub policy_dir: Option<PathBuf>,
    /// `CACHELET_POLICY_FLEET` (`off`): whether this host loads and follows the policies
    /// pushed to its Redis (`cachelet policy push`). Off by default: a following host runs
    /// what anyone who can write to the cache's Redis prefix pushes, unless a public key is
    /// configured. The memory backend always follows its own pushes (one process).
    pub fleet: bool,
    /// `CACHELET_POLICY_CHECK_MS` (250): how often a host that follows pushes checks for a
    /// change it was not told of. On Redis each push, rollback and removal is also announced
    /// (pub/sub): a following host acts on it at once; this check catches up with an
    /// announcement it missed (disconnected, started later, a subscription refused).
    pub policy_check: Duration,
    /// `CACHELET_POLICY_PUBKEY`: the Ed25519 public key (hex, or a file holding it) pushed
    /// components must be signed with; none: pushes are not checked.
    pub policy_pubkey: Option<String>,
}

/// Settings of the Redis backend.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisOptions {
    /// `CACHE_REDIS_TIMEOUT_MS` (250): longest a cache operation waits for Redis before the
    /// read falls through to its loader.
    pub timeout: Duration,
    /// `CACHE_REDIS_COOLDOWN_MS` (1000): after Redis failed, how long the circuit stays open
    /// (reads go straight to their loaders) before one request probes it again.
    pub cooldown: Duration,
    /// `CACHE_LOCK_TTL_MS` (10000): a `lock` held by a host that died expires after this long.
    pub lock_ttl: Duration,
    /// `CACHE_TLS_CA_FILE`: PEM file of the CA that signed the server's certificate, for
    /// `rediss://` with a private CA (the system's roots otherwise).
    pub tls_ca_file: Option<PathBuf>,
    /// `CACHE_TLS_CERT_FILE` and `CACHE_TLS_KEY_FILE`: a client certificate and its key, for
    /// servers that require mutual TLS.
    pub tls_client_cert: Option<(PathBuf, PathBuf)>,
    /// `CACHE_TAG_MARGIN_MS` (60000): how long a tag key (and the namespace's epoch) outlives
    /// the longest-lived entry it fences. Every fill and every sliding hit extends it.
    pub tag_margin: Duration,
    /// `CACHE_JOURNAL`: a file that keeps invalidations Redis could not take, so that they
    /// survive this process (see [`crate::builder::CacheBuilder::journal`]). None: held in memory.
    pub journal: Option<PathBuf>,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            timeout: Duration::from_millis(250),
            cooldown: Duration::from_millis(1000),
            lock_ttl: Duration::from_secs(10),
            tls_ca_file: None,
            tls_client_cert: None,
            tag_margin: Duration::from_secs(60),
            journal: None,
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            url: BackendUrl::Memory,
            prefix: "svc".into(),
            version: "v1".into(),
            ttl: TtlBuckets::default(),
            mem_max_bytes: 256 << 20,
            lock_wait: Duration::from_secs(10),
            redis: RedisOptions::default(),
            guest: GuestLimits::default(),
            policy_dir: None,
            fleet: false,
            policy_check: Duration::from_millis(250),
            policy_pubkey: None,
        }
    }
}

impl Settings {
    /// Reads the settings from the process environment.
    pub fn from_env() -> Result<Settings, Error> {
        Settings::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads the settings through `get` (a stand-in for the environment).
    ///
    /// ```
    /// use cachelet::Settings;
    /// let s = Settings::from_lookup(|k| (k == "CACHE_TTL_SHORT").then(|| "15".to_string())).unwrap();
    /// assert_eq!((s.ttl.short, s.ttl.default, s.prefix.as_str()), (15, 300, "svc"));
    /// let e = Settings::from_lookup(|k| (k == "CACHE_TTL_LONG").then(|| "1h".to_string()));
    /// assert!(e.unwrap_err().to_string().contains("CACHE_TTL_LONG"));
    /// ```
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Settings, Error> {
        let d = Settings::default();
        let nonempty = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        let url = match nonempty("CACHE_URL").or_else(|| nonempty("REDIS_URL")) {
            Some(u) => BackendUrl::parse(&u)?,
            None => BackendUrl::Memory,
        };
        let num = |k: &str, default: u64| -> Result<u64, Error> {
            match nonempty(k) {
                None => Ok(default),
                Some(v) => v.trim().parse::<u64>().map_err(|_| Error::Setting {
                    name: k.to_string(),
                    problem: format!("{v:?} is not a whole number"),
                }),
            }
        };
        let secs = |k: &str, default: u32| -> Result<u32, Error> {
            let v = num(k, u64::from(default))?;
            u32::try_from(v).map_err(|_| Error::Setting {
                name: k.to_string(),
                problem: format!("{v} seconds is too long"),
            })
        };
        let size = |k: &str, default: usize| -> Result<usize, Error> {
            let v = num(k, default as u64)?;
            usize::try_from(v).map_err(|_| Error::Setting {
                name: k.to_string(),
                problem: format!("{v} is too large"),
            })
        };
        Ok(Settings {
            url,
            prefix: nonempty("CACHE_PREFIX").unwrap_or(d.prefix),
            version: nonempty("CACHE_VERSION").unwrap_or(d.version),
            ttl: TtlBuckets {
                short: secs("CACHE_TTL_SHORT", d.ttl.short)?,
                default: secs("CACHE_TTL_DEFAULT", d.ttl.default)?,
                long: secs("CACHE_TTL_LONG", d.ttl.long)?,
            },
            mem_max_bytes: num("CACHE_MEM_MAX_BYTES", d.mem_max_bytes)?,
            lock_wait: Duration::from_millis(num(
                "CACHE_LOCK_WAIT_MS",
                d.lock_wait.as_millis() as u64,
            )?),
            redis: RedisOptions {
                timeout: Duration::from_millis(num(
                    "CACHE_REDIS_TIMEOUT_MS",
                    d.redis.timeout.as_millis() as u64,
                )?),
                cooldown: Duration::from_millis(num(
                    "CACHE_REDIS_COOLDOWN_MS",
                    d.redis.cooldown.as_millis() as u64,
                )?),
                lock_ttl: Duration::from_millis(num(
                    "CACHE_LOCK_TTL_MS",
                    d.redis.lock_ttl.as_millis() as u64,
                )?),
                tag_margin: Duration::from_millis(num(
                    "CACHE_TAG_MARGIN_MS",
                    d.redis.tag_margin.as_millis() as u64,
                )?),
                journal: nonempty("CACHE_JOURNAL").map(PathBuf::from),
                tls_ca_file: nonempty("CACHE_TLS_CA_FILE").map(PathBuf::from),
                tls_client_cert: match (
                    nonempty("CACHE_TLS_CERT_FILE"),
                    nonempty("CACHE_TLS_KEY_FILE"),
                ) {
                    (Some(c), Some(k)) => Some((c.into(), k.into())),
                    (None, None) => None,
                    _ => {
                        return Err(Error::Setting {
                            name: "CACHE_TLS_CERT_FILE".into(),
                            problem: "a client certificate needs both CACHE_TLS_CERT_FILE and \
                                      CACHE_TLS_KEY_FILE"
                                .into(),
                        })
                    }
                },
            },
            guest: GuestLimits {
                max_key_bytes: size("CACHE_MAX_KEY_BYTES", d.guest.max_key_bytes)?,
                max_tags: size("CACHE_MAX_TAGS", d.guest.max_tags)?,
                max_tag_bytes: size("CACHE_MAX_TAG_BYTES", d.guest.max_tag_bytes)?,
                max_recache: size("CACHE_MAX_RECACHE", d.guest.max_recache)?,
                max_string_bytes: size("CACHE_MAX_STRING_BYTES", d.guest.max_string_bytes)?,
            },
            policy_dir: nonempty("CACHELET_POLICY_DIR").map(PathBuf::from),
            fleet: match nonempty("CACHELET_POLICY_FLEET").map(|v| v.trim().to_ascii_lowercase()) {
                None => false,
                Some(v) if ["1", "on", "true", "yes"].contains(&v.as_str()) => true,
                Some(v) if ["0", "off", "false", "no"].contains(&v.as_str()) => false,
                Some(v) => {
                    return Err(Error::Setting {
                        name: "CACHELET_POLICY_FLEET".into(),
                        problem: format!("{v:?} is neither on nor off"),
                    })
                }
            },
            policy_check: match num(
                "CACHELET_POLICY_CHECK_MS",
                d.policy_check.as_millis() as u64,
            )? {
                0 => {
                    return Err(Error::Setting {
                        name: "CACHELET_POLICY_CHECK_MS".into(),
                        problem: "0: the check needs an interval of at least 1 ms".into(),
                    })
                }
                ms => Duration::from_millis(ms),
            },
            policy_pubkey: nonempty("CACHELET_POLICY_PUBKEY"),
        })
    }

    /// Checks values that the environment or the builder may have got wrong.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        for (name, d) in [
            ("CACHE_REDIS_TIMEOUT_MS", self.redis.timeout),
            ("CACHE_LOCK_TTL_MS", self.redis.lock_ttl),
            ("CACHE_LOCK_WAIT_MS", self.lock_wait),
        ] {
            if d.is_zero() {
                return Err(Error::Setting {
                    name: name.into(),
                    problem: "must be more than 0".into(),
                });
            }
        }
        self.guest.validate()?;
        // The namespace is `{prefix}:{version}:`, the engine's keys `{prefix}:{version}~`:
        // neither part may contain what would let one namespace's keys meet another's (or a
        // cluster hash tag, or a glob).
        for (name, v) in [("prefix", &self.prefix), ("version", &self.version)] {
            let bad = v
                .chars()
                .find(|c| c.is_whitespace() || c.is_control() || ":~{}*?[]\\".contains(*c));
            if v.is_empty() || bad.is_some() {
                return Err(Error::Setting {
                    name: name.into(),
                    problem: format!(
                        "{v:?} must be non-empty, without spaces or any of : ~ {{ }} * ? [ ] \\"
                    ),
                });
            }
        }
        Ok(())
    }
}

/// What one answer of a policy may hold. Each limit is a setting (read by
/// [`Settings::from_env`](crate::config::Settings::from_env)); the tag limits cannot go past what an
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden_in_malformed_urls_too() {
        for (url, shown) in [
            ("redis://app:pw@h:1/0", "redis://app:***@h:1/0"),
            ("redis://:pw@h", "redis://:***@h"),
            ("app:pw@h:6379", "app:***@h:6379"),
            ("redis//app:pw@h", "redis//app:***@h"),
            ("rediss://u:p@ss@h", "rediss://u:***@h"),
            ("redis://h:6379", "redis://h:6379"),
        ] {
            assert_eq!(redact(url), shown, "{url}");
        }
        let e = BackendUrl::parse("app:s3cret@h:6379")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("s3cret") && e.contains("app:***@"), "{e}");
    }

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    #[test]
    fn defaults_and_fallbacks() {
        let s = Settings::from_lookup(env(&[])).unwrap();
        assert_eq!(s, Settings::default());
        let s = Settings::from_lookup(env(&[("REDIS_URL", "redis://h:1/0")])).unwrap();
        assert!(matches!(s.url, BackendUrl::Redis(_)));
        let s = Settings::from_lookup(env(&[
            ("CACHE_URL", "mem://"),
            ("REDIS_URL", "redis://h:1/0"),
            ("CACHE_PREFIX", "app"),
            ("CACHE_VERSION", "v2"),
            ("CACHE_TTL_DEFAULT", "600"),
        ]))
        .unwrap();
        assert_eq!(
            (s.url, s.prefix.as_str(), s.version.as_str(), s.ttl.default),
            (BackendUrl::Memory, "app", "v2", 600)
        );
    }

    #[test]
    fn a_ttl_that_is_not_a_number_is_named() {
        let e = Settings::from_lookup(env(&[("CACHE_TTL_SHORT", "thirty")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("CACHE_TTL_SHORT") && e.contains("thirty"), "{e}");
    }

    #[test]
    fn redis_urls() {
        let BackendUrl::Redis(r) = BackendUrl::parse("rediss://u:p%40ss@h:6380/3").unwrap() else {
            panic!()
        };
        assert!(r.tls);
        assert_eq!(r.username.as_deref(), Some("u"));
        assert_eq!(r.password.as_deref(), Some("p@ss"));
        assert_eq!(r.nodes, vec![("h".to_string(), 6380)]);
        assert_eq!(r.db, Some(3));
        let BackendUrl::Redis(c) = BackendUrl::parse("redis://n1:7000,n2:7001,n3:7002").unwrap()
        else {
            panic!()
        };
        assert!(c.is_cluster());
        assert_eq!(c.nodes.len(), 3);
        let BackendUrl::Redis(d) = BackendUrl::parse("redis://localhost").unwrap() else {
            panic!()
        };
        assert_eq!(d.nodes, vec![("localhost".to_string(), 6379)]);
    }

    #[test]
    fn bad_urls_are_named_without_secrets() {
        for (url, want) in [
            ("memcached://h", "unsupported scheme \"memcached\""),
            ("localhost:6379", "expected scheme://"),
            ("redis://h:notaport", "not a port number"),
            ("redis://h:1/zero", "not a number"),
            ("redis://a:1,,b:2", "empty host"),
            ("redis://a:1,b:2/3", "single database"),
            ("redis://user:hunter2@a:1,b:2/3", "single database"),
        ] {
            let e = BackendUrl::parse(url).unwrap_err().to_string();
            assert!(e.contains(want), "{url}: {e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
    }
}
