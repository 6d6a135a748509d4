//! The Redis backend: one node (plain, TLS, password or ACL user) or a Redis Cluster, through
//! redis-rs (multiplexed connections; the cluster client routes every command by its key).
//!
//! Layout, for the namespace `{prefix}:{version}`:
//! - `{prefix}:{version}:{key}` — every key a caller, a guest or a rendered rule names. A read
//!   path entry holds an [envelope](envelope): the tag tokens it was filled under, then the
//!   value. A direct operation's value is stored as given (JSON).
//! - `{prefix}:{version}~tag:{tag}` — a tag: a random token. A fill reads (or creates) its tags'
//!   tokens *before* its loader runs; a hit is fresh only if each still matches. Invalidating
//!   a tag deletes its key: O(1); a token is never reused, so a tag key lost to expiry or
//!   eviction makes its entries misses — never valid again.
//! - `{prefix}:{version}~epoch` — the namespace's token, in every fence: deleting it
//!   invalidates every cached read of the namespace at once, tagged or not.
//! - `{prefix}:{version}~lock:{key}`, `~early:{key}:{fill}` — a `lock` read's cross-host lock,
//!   and the claim of one fill's early refresh.
//!
//! The engine's keys start with `{prefix}:{version}~`, which no key of the namespace does: no
//! name a caller or a guest passes reaches them.
//!
//! No command spans two hash slots; a hit is one round trip (one MGET on a server; concurrent
//! single-key commands on a cluster).
//!
//! Modules by concern: [`circuit`] (outages and the breaker), [`held`] (invalidations that
//! could not be delivered: held, journaled, delivered in the background), [`read`] (the read
//! path), [`direct`] (direct operations and scans).

mod circuit;
mod direct;
pub(crate) mod envelope;
mod held;
mod policies;
mod read;

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::future::join_all;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ConnectionAddr, FromRedisValue, IntoConnectionInfo, RedisConnectionInfo};

use self::circuit::Circuit;
use self::held::HeldLog;
use super::{Backend, Fill, Held, Invalidation, Look, Lookup};
use crate::config::{RedisOptions, RedisUrl};
use crate::error::Cause;
use crate::error::Error;

/// The oldest server the engine runs on: `EXPIRE ... GT` and `PEXPIRE ... NX` are 7.0's.
const MIN_VERSION: (u32, u32) = (7, 0);

/// Why a Redis operation did not happen.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The circuit is open: Redis failed recently, or held invalidations wait for delivery.
    Open,
    /// Redis did not answer: connection refused or lost, timeout, cluster down. Counts toward
    /// opening the circuit.
    Outage(redis::RedisError),
    /// Redis answered with an error about this command (WRONGTYPE, not an integer, OOM under
    /// `noeviction`, no permission): the request was wrong, not the connection.
    Refused(redis::RedisError),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Open => f.write_str(
                "Redis is unavailable (circuit open after failures, or invalidations held for \
                 delivery; probing again shortly)",
            ),
            Failure::Outage(e) => write!(f, "Redis did not answer: {e}"),
            Failure::Refused(e) => write!(f, "Redis refused the command: {e}"),
        }
    }
}

impl From<Failure> for Error {
    fn from(f: Failure) -> Error {
        match f {
            Failure::Open => Error::Unavailable {
                problem: f.to_string(),
                source: None,
            },
            Failure::Outage(e) => Error::Unavailable {
                problem: "Redis did not answer".into(),
                source: Some(Cause::new(e)),
            },
            Failure::Refused(e) => Error::Refused {
                source: Cause::new(e),
            },
        }
    }
}

/// Whether an error means Redis could not be reached (as opposed to an answer about the
/// command).
fn is_outage(e: &redis::RedisError) -> bool {
    use redis::ErrorKind::{AuthenticationFailed, ClusterConnectionNotFound, Io, Server};
    use redis::ServerErrorKind::{BusyLoading, ClusterDown, MasterDown, TryAgain};
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || matches!(
            e.kind(),
            Io | ClusterConnectionNotFound
                | AuthenticationFailed
                | Server(ClusterDown | MasterDown | TryAgain | BusyLoading)
        )
}

/// The outage of an operation that got no answer within `limit`.
fn timed_out(limit: Duration) -> Failure {
    Failure::Outage(redis::RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("no answer within {limit:?}"),
    )))
}

fn classify(e: redis::RedisError) -> Failure {
    if is_outage(&e) {
        Failure::Outage(e)
    } else {
        Failure::Refused(e)
    }
}

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// The names of a namespace's keys.
pub(super) struct Keys {
    /// `{prefix}:{version}:`, the start of every key of the namespace.
    ns: String,
    /// `{prefix}:{version}~`, the start of every key of the engine's.
    engine: String,
    epoch: String,
    /// The invalidation sequence (see `Backend::sequence`).
    sequence: String,
    /// The latest invalidations (a stream: each the sequence it moved to and the keys it
    /// deleted), in the sequence's cluster slot (see `Backend::invalidated_since`).
    recent: String,
}

impl Keys {
    fn new(ns: &str) -> Keys {
        let base = ns.strip_suffix(':').unwrap_or(ns);
        Keys {
            ns: ns.to_string(),
            engine: format!("{base}~"),
            epoch: format!("{base}~epoch"),
            sequence: format!("{base}~seq"),
            // Prefix and version hold no braces (the settings refuse them): the sequence key is
            // hashed whole, and is this key's hash tag.
            recent: format!("{base}~recent{{{base}~seq}}"),
        }
    }

    fn tag(&self, tag: &str) -> String {
        let mut k = String::with_capacity(self.engine.len() + 4 + tag.len());
        k.push_str(&self.engine);
        k.push_str("tag:");
        k.push_str(tag);
        k
    }

    /// The key relative to the namespace (the full key if it is not the namespace's).
    fn relative<'k>(&self, full: &'k str) -> &'k str {
        full.strip_prefix(&self.ns).unwrap_or(full)
    }

    fn lock(&self, full: &str) -> String {
        format!("{}lock:{}", self.engine, self.relative(full))
    }

    fn early(&self, full: &str, fill_id: u64) -> String {
        format!(
            "{}early:{}:{fill_id:016x}",
            self.engine,
            self.relative(full)
        )
    }
}

/// A Lua script: its text, and the SHA1 that `EVALSHA` names it by.
struct Lua {
    code: &'static str,
    hash: String,
}

impl Lua {
    fn new(code: &'static str) -> Lua {
        Lua {
            code,
            hash: redis::Script::new(code).get_hash().to_string(),
        }
    }
}

/// The engine's Lua scripts; each touches one key (the invalidation's two, in one slot).
struct Scripts {
    /// A tag's (or the epoch's) token, made if absent; its key lives at least ARGV[2] ms more.
    fence: Lua,
    /// Releases a lock only if this host still holds it.
    unlock: Lua,
    /// Extends a lock only if this host still holds it.
    extend: Lua,
    /// INCRBY, and a new counter's TTL, in one step.
    incr: Lua,
    /// SET an entry with the server's clock as its birth (entries with early refresh).
    fill_born: Lua,
    /// GET (or slide) an entry, with the server's clock (entries with early refresh).
    get_timed: Lua,
    /// SET a key only if it still holds ARGV[1] (a stale entry that `set_if_absent` replaces).
    replace: Lua,
    /// Moves the sequence (KEYS[1]) and records the keys ARGV names in the stream of recent
    /// invalidations (KEYS[2]), in one step.
    advance: Lua,
    /// Whether an invalidation since the sequence was ARGV[1] names one of the keys ARGV[2..]
    /// (or `*`), or is no longer recorded: 1, else 0.
    invalidated: Lua,
}

impl Scripts {
    fn new() -> Scripts {
        Scripts {
            fence: Lua::new(
                r"if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
                    return ARGV[1]
                  end
                  redis.call('PEXPIRE', KEYS[1], ARGV[2], 'GT')
                  return redis.call('GET', KEYS[1])",
            ),
            unlock: Lua::new(
                r"if redis.call('GET', KEYS[1]) == ARGV[1] then
                    return redis.call('DEL', KEYS[1])
                  end
                  return 0",
            ),
            extend: Lua::new(
                r"if redis.call('GET', KEYS[1]) == ARGV[1] then
                    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
                  end
                  return 0",
            ),
            incr: Lua::new(
                r"local n = redis.call('INCRBY', KEYS[1], ARGV[1])
                  redis.call('PEXPIRE', KEYS[1], ARGV[2], 'NX')
                  return n",
            ),
            fill_born: Lua::new(
                r"local t = redis.call('TIME')
                  local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
                  redis.call('SET', KEYS[1], ARGV[1] .. struct.pack('<d', ms) .. ARGV[2],
                    'PX', ARGV[3])
                  return 1",
            ),
            get_timed: Lua::new(
                r"local v = redis.call('GET', KEYS[1])
                  if v and tonumber(ARGV[1]) > 0 then
                    redis.call('PEXPIRE', KEYS[1], ARGV[1])
                  end
                  local t = redis.call('TIME')
                  return {v or false, tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)}",
            ),
            replace: Lua::new(
                r"if redis.call('GET', KEYS[1]) == ARGV[1] then
                    redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
                    return 1
                  end
                  return 0",
            ),
            advance: Lua::new(
                r"local s = redis.call('INCR', KEYS[1])
                  local add = {'XADD', KEYS[2], 'MAXLEN', '~', '1024', '*', 's', s}
                  for i = 1, #ARGV do
                    add[#add + 1] = 'k'
                    add[#add + 1] = ARGV[i]
                  end
                  redis.call(unpack(add))
                  return s",
            ),
            invalidated: Lua::new(
                r"local now = tonumber(redis.call('GET', KEYS[1]) or '0')
                  local since = tonumber(ARGV[1])
                  if now == since then return 0 end
                  if now < since or now - since > 256 then return 1 end
                  local wanted = {['*'] = true}
                  for i = 2, #ARGV do wanted[ARGV[i]] = true end
                  local seen = 0
                  for _, e in ipairs(redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', now - since)) do
                    local f = e[2]
                    local s = tonumber(f[2])
                    if s == nil or s <= since or s > now then return 1 end
                    seen = seen + 1
                    for j = 3, #f, 2 do
                      if wanted[f[j + 1]] then return 1 end
                    end
                  end
                  if seen < now - since then return 1 end
                  return 0",
            ),
        }
    }

    fn all(&self) -> [&Lua; 9] {
        [
            &self.fence,
            &self.unlock,
            &self.extend,
            &self.incr,
            &self.fill_born,
            &self.get_timed,
            &self.replace,
            &self.advance,
            &self.invalidated,
        ]
    }
}

/// `EVALSHA` of `script` with one key, as a command that pipelines (the script is loaded on
/// every node at connect, and again after a server lost its script cache).
fn evalsha(script: &Lua, key: &str) -> Cmd {
    let mut c = redis::cmd("EVALSHA");
    c.arg(&script.hash).arg(1).arg(key);
    c
}

pub(crate) struct Redis {
    me: Weak<Redis>,
    conn: Conn,
    cluster: bool,
    opts: RedisOptions,
    keys: Keys,
    circuit: Circuit,
    /// How long lookups take (`cachelet_backend_seconds`).
    lookup_seconds: ::metrics::Histogram,
    held: HeldLog,
    scripts: Scripts,
    ids: RandomState,
    next_id: AtomicU64,
    /// Commands sent, for the benchmarks' commands-per-operation figures.
    pub commands: AtomicU64,
    /// A client per node, for the fleet's pub/sub subscription (its own connection).
    subscribers: Vec<redis::Client>,
}

/// Explains a connection failure, with the client's error as its source. Neither repeats
/// credentials: the client is given the password apart from the addresses it names.
fn connect_error(shown: &str, e: redis::RedisError) -> Error {
    use redis::ErrorKind;
    let text = e.to_string();
    let problem = if e.kind() == ErrorKind::AuthenticationFailed
        || text.contains("WRONGPASS")
        || text.contains("NOAUTH")
    {
        "authentication failed: Redis refused the user name or password"
    } else if text.to_ascii_lowercase().contains("tls")
        || text.contains("certificate")
        || text.contains("handshake")
        || text.contains("InvalidCertificate")
    {
        "TLS handshake failed"
    } else {
        "cannot connect"
    };
    Error::Backend {
        url: shown.to_string(),
        problem: problem.into(),
        source: Some(Cause::new(e)),
    }
}

fn tls_certs(opts: &RedisOptions) -> Result<redis::TlsCertificates, Error> {
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| Error::Setting {
            name: "TLS file".into(),
            problem: format!("{}: {e}", p.display()),
        })
    };
    Ok(redis::TlsCertificates {
        client_tls: match &opts.tls_client_cert {
            Some((cert, key)) => Some(redis::ClientTlsConfig {
                client_cert: read(cert)?,
                client_key: read(key)?,
            }),
            None => None,
        },
        root_cert: opts.tls_ca_file.as_deref().map(read).transpose()?,
    })
}

/// rustls needs one process-wide crypto provider; ring is the one this build carries.
fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Whether the servers that answered `INFO server` (one, or each master of a cluster) all run
/// [`MIN_VERSION`] or newer; else what the refusal says: the oldest one's version decides.
fn old_enough(infos: &[String]) -> Result<(), String> {
    let oldest = infos
        .iter()
        .map(|t| server_version(t))
        .min_by_key(|v| v.unwrap_or((0, 0)))
        .flatten();
    match oldest {
        Some(v) if v >= MIN_VERSION && !infos.is_empty() => Ok(()),
        found => Err(format!(
            "Redis {}.{} or newer is needed (EXPIRE GT, PEXPIRE NX); this server runs {}",
            MIN_VERSION.0,
            MIN_VERSION.1,
            found.map_or("an unknown version".to_string(), |(a, b)| format!(
                "{a}.{b}"
            ))
        )),
    }
}

/// The `major.minor` of an `INFO server` answer's `redis_version`.
fn server_version(info: &str) -> Option<(u32, u32)> {
    let v = info
        .lines()
        .find_map(|l| l.trim().strip_prefix("redis_version:"))?;
    let mut parts = v.trim().split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

impl Redis {
    /// Connects and checks that the server answers and is recent enough, so that a wrong
    /// host, password, certificate or server is reported when the cache is built. Then
    /// delivers what a journal kept from an earlier run.
    pub async fn connect(
        url: &RedisUrl,
        opts: &RedisOptions,
        ns: &str,
    ) -> Result<Arc<Redis>, Error> {
        install_crypto_provider();
        let shown = crate::config::BackendUrl::Redis(url.clone()).to_string();
        let held = HeldLog::open(opts.journal.as_deref())?;
        let infos: Vec<redis::ConnectionInfo> = url
            .nodes
            .iter()
            .map(|(host, port)| {
                let addr = if url.tls {
                    ConnectionAddr::TcpTls {
                        host: host.clone(),
                        port: *port,
                        insecure: false,
                        tls_params: None,
                    }
                } else {
                    ConnectionAddr::Tcp(host.clone(), *port)
                };
                let mut rc = RedisConnectionInfo::default();
                if let Some(u) = &url.username {
                    rc = rc.set_username(u);
                }
                if let Some(p) = &url.password {
                    rc = rc.set_password(p);
                }
                if let Some(db) = url.db {
                    rc = rc.set_db(i64::from(db));
                }
                addr.into_connection_info()
                    .map(|ci| ci.set_redis_settings(rc))
                    .map_err(|e| connect_error(&shown, e))
            })
            .collect::<Result<_, _>>()?;
        let certs = if url.tls {
            Some(tls_certs(opts)?)
        } else {
            None
        };
        let cluster = url.is_cluster();
        let subscribers = infos
            .iter()
            .map(|info| match &certs {
                Some(c) => redis::Client::build_with_tls(info.clone(), c.clone()),
                None => redis::Client::open(info.clone()),
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| connect_error(&shown, e))?;
        let connecting = async {
            if cluster {
                let mut b = redis::cluster::ClusterClientBuilder::new(infos)
                    .connection_timeout(opts.timeout.max(Duration::from_millis(500)))
                    .response_timeout(opts.timeout)
                    .retries(1);
                if let Some(c) = certs {
                    b = b.certs(c);
                }
                let client = b.build()?;
                Ok::<_, redis::RedisError>(Conn::Cluster(client.get_async_connection().await?))
            } else {
                let info = infos.into_iter().next().expect("one node");
                let client = match certs {
                    Some(c) => redis::Client::build_with_tls(info, c)?,
                    None => redis::Client::open(info)?,
                };
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(opts.timeout.max(Duration::from_millis(500))))
                    .set_response_timeout(Some(opts.timeout))
                    .set_number_of_retries(1);
                Ok(Conn::Single(
                    ConnectionManager::new_with_config(client, config).await?,
                ))
            }
        };
        let limit = opts.timeout.max(Duration::from_secs(3));
        let conn = match tokio::time::timeout(limit, connecting).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(connect_error(&shown, e)),
            Err(_) => {
                return Err(Error::Backend {
                    url: shown,
                    problem: format!("cannot connect: no answer within {limit:?}"),
                    source: None,
                })
            }
        };
        let redis = Arc::new_cyclic(|me| Redis {
            me: me.clone(),
            conn,
            cluster,
            opts: opts.clone(),
            keys: Keys::new(ns),
            circuit: Circuit::new(opts.cooldown),
            lookup_seconds: crate::metrics::backend_seconds(),
            held,
            scripts: Scripts::new(),
            ids: RandomState::new(),
            next_id: AtomicU64::new(1),
            commands: AtomicU64::new(0),
            subscribers,
        });
        let backend_error = |e: Failure| match e {
            Failure::Outage(e) | Failure::Refused(e) => connect_error(&shown, e),
            Failure::Open => Error::Backend {
                url: shown.clone(),
                problem: e.to_string(),
                source: None,
            },
        };
        // A cluster answers for every node: the oldest one counts.
        let info: redis::Value = redis
            .raw({
                let mut c = redis::cmd("INFO");
                c.arg("server");
                c
            })
            .await
            .map_err(backend_error)?;
        let texts: Vec<String> = match info {
            redis::Value::Map(nodes) => nodes
                .into_iter()
                .filter_map(|(_, v)| String::from_redis_value(v).ok())
                .collect(),
            other => String::from_redis_value(other).into_iter().collect(),
        };
        old_enough(&texts).map_err(|problem| Error::Backend {
            url: shown.clone(),
            problem,
            source: None,
        })?;
        redis.load_scripts().await.map_err(backend_error)?;
        redis.deliver_journal().await;
        Ok(redis)
    }

    fn token(&self) -> String {
        format!("{:016x}", self.fill_id())
    }

    /// A random 64-bit number, different for every call.
    fn fill_id(&self) -> u64 {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.ids.hash_one(n)
    }

    /// How long a tag key (or the epoch) lives past the entries it fences.
    fn tag_life(&self, ttl: Duration) -> Duration {
        ttl + self.opts.tag_margin
    }

    // ---- commands ----

    /// Loads the scripts on the server (every master of a cluster), so that `EVALSHA`
    /// pipelines.
    async fn load_scripts(&self) -> Result<(), Failure> {
        for s in self.scripts.all() {
            let mut c = redis::cmd("SCRIPT");
            c.arg("LOAD").arg(s.code);
            self.commands.fetch_add(1, Ordering::Relaxed);
            let r = match &self.conn {
                Conn::Single(conn) => c.query_async::<redis::Value>(&mut conn.clone()).await,
                Conn::Cluster(conn) => {
                    use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo};
                    conn.clone()
                        .route_command(
                            c,
                            RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None)),
                        )
                        .await
                }
            };
            r.map_err(classify)?;
        }
        Ok(())
    }

    /// Sends `cmds` (one round trip: a pipeline on a server, concurrent commands on a
    /// cluster), bounded by the timeout, without the circuit. A server that lost its scripts
    /// (restarted) gets them again, once.
    async fn send(&self, cmds: &[Cmd]) -> Result<Vec<redis::Value>, Failure> {
        if let [cmd] = cmds {
            return self.send_one(cmd).await.map(|v| vec![v]);
        }
        match self.send_many(cmds).await {
            Err(e) if lost_scripts(&e) => {
                self.load_scripts().await?;
                self.send_many(cmds).await
            }
            r => r,
        }
    }

    /// One command, its answer parsed straight into `T` (the hit path: no intermediate
    /// values), bounded by the timeout.
    async fn send_one<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, Failure> {
        match self.send_one_once(cmd).await {
            Err(e) if lost_scripts(&e) => {
                self.load_scripts().await?;
                self.send_one_once(cmd).await
            }
            r => r,
        }
    }

    async fn send_one_once<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, Failure> {
        self.commands.fetch_add(1, Ordering::Relaxed);
        let fut = async {
            match &self.conn {
                Conn::Single(c) => cmd.query_async::<T>(&mut c.clone()).await,
                Conn::Cluster(c) => cmd.query_async::<T>(&mut c.clone()).await,
            }
        };
        self.bounded(fut).await
    }

    async fn send_many(&self, cmds: &[Cmd]) -> Result<Vec<redis::Value>, Failure> {
        self.commands
            .fetch_add(cmds.len() as u64, Ordering::Relaxed);
        let fut = async {
            match &self.conn {
                Conn::Single(c) => {
                    let mut p = redis::pipe();
                    for cmd in cmds {
                        p.add_command(cmd.clone());
                    }
                    p.query_async::<Vec<redis::Value>>(&mut c.clone()).await
                }
                Conn::Cluster(c) => join_all(cmds.iter().map(|cmd| {
                    let mut c = c.clone();
                    async move { cmd.query_async::<redis::Value>(&mut c).await }
                }))
                .await
                .into_iter()
                .collect(),
            }
        };
        self.bounded(fut).await
    }

    /// Bounds an operation by the timeout. On a healthy connection redis-rs's response
    /// timeout (the same value) bounds the request, and nothing more is armed (a timer costs
    /// ~3% of a hit). Once something failed — the connection may be reconnecting, which can
    /// take longer — every operation also runs under a timer, until Redis answers again.
    async fn bounded<T>(
        &self,
        fut: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, Failure> {
        if !self.circuit.suspect() {
            return fut.await.map_err(classify);
        }
        match tokio::time::timeout(self.opts.timeout, fut).await {
            Ok(r) => r.map_err(classify),
            Err(_) => Err(timed_out(self.opts.timeout)),
        }
    }

    /// One command, without the circuit (the probe, connect).
    async fn raw<T: FromRedisValue>(&self, cmd: Cmd) -> Result<T, Failure> {
        self.send_one(&cmd).await
    }

    /// Several commands in one round trip through the circuit: an outage counts toward
    /// opening it, an answer closes the count.
    async fn run_many(&self, cmds: &[Cmd]) -> Result<Vec<redis::Value>, Failure> {
        self.ready().await?;
        let r = self.send(cmds).await;
        self.count(&r);
        r
    }

    /// One command through the circuit.
    async fn run<T: FromRedisValue>(&self, cmd: Cmd) -> Result<T, Failure> {
        self.ready().await?;
        let r = self.send_one(&cmd).await;
        self.count(&r);
        r
    }

    /// Tells the circuit how an operation went.
    fn count<T>(&self, r: &Result<T, Failure>) {
        match r {
            Err(Failure::Outage(e)) => self.circuit.failed(e),
            _ => self.circuit.answered(),
        }
    }
}

/// Whether a server answered that it does not know a script (it restarted, or flushed them).
fn lost_scripts(e: &Failure) -> bool {
    matches!(e, Failure::Refused(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript))
}

impl Backend for Redis {
    type Seen = read::Seen;
    /// The tokens of the epoch and of each tag.
    type Fence = Vec<String>;

    async fn lookup(
        &self,
        key: &str,
        tags: &[String],
        look: Look,
    ) -> Result<Lookup<read::Seen>, Error> {
        let start = std::time::Instant::now();
        let out = tracing::Instrument::instrument(
            self.lookup_entry(key, tags, look),
            tracing::debug_span!("cachelet.backend", backend = "redis"),
        )
        .await;
        self.lookup_seconds.record(start.elapsed());
        out
    }

    async fn fence(
        &self,
        tags: &[String],
        seen: Option<&read::Seen>,
        ttl: Duration,
    ) -> Result<Vec<String>, Error> {
        self.fence_tags(tags, seen, ttl).await
    }

    async fn fill(
        &self,
        key: &str,
        tags: &[String],
        value: bytes::Bytes,
        fence: Vec<String>,
        fill: Fill,
    ) -> Result<(), Error> {
        self.fill_entry(key, tags, &value, &fence, fill).await
    }

    async fn release_early(&self, _key: &str, seen: &read::Seen) {
        self.release_claim(seen).await
    }

    async fn try_lock(&self, key: &str) -> Result<Option<Held>, Error> {
        self.take_lock(key).await
    }

    async fn extend_lock(&self, key: &str, held: &Held) -> bool {
        self.extend_held_lock(key, held).await
    }

    async fn unlock(&self, key: &str, held: Held) {
        self.release_lock(key, held).await
    }

    fn lock_ttl(&self) -> Duration {
        self.opts.lock_ttl
    }

    async fn sequence(&self) -> Result<u64, Error> {
        let mut c = redis::cmd("GET");
        c.arg(&self.keys.sequence);
        Ok(self.run::<Option<u64>>(c).await?.unwrap_or(0))
    }

    async fn invalidated_since(&self, since: u64, tags: &[String]) -> Result<bool, Error> {
        let mut c = redis::cmd("EVALSHA");
        c.arg(&self.scripts.invalidated.hash)
            .arg(2)
            .arg(&self.keys.sequence)
            .arg(&self.keys.recent)
            .arg(since)
            .arg(&self.keys.epoch);
        for t in tags {
            c.arg(self.keys.tag(t));
        }
        Ok(self.run::<i64>(c).await? != 0)
    }

    async fn invalidate(&self, tags: &[String]) -> Invalidation {
        self.invalidate_keys(tags.iter().map(|t| self.keys.tag(t)).collect())
            .await
    }

    async fn invalidate_all(&self) -> Invalidation {
        self.invalidate_keys(vec![self.keys.epoch.clone()]).await
    }

    async fn get(&self, key: &str) -> Result<Option<bytes::Bytes>, Error> {
        self.get_direct(key).await
    }

    async fn set(
        &self,
        key: &str,
        value: Vec<u8>,
        ttl: Duration,
        if_absent: bool,
    ) -> Result<bool, Error> {
        self.set_direct(key, &value, ttl, if_absent).await
    }

    async fn delete(&self, key: &str) -> Result<bool, Error> {
        Ok(self.get_delete_direct(key).await?.is_some())
    }

    async fn get_delete(&self, key: &str) -> Result<Option<bytes::Bytes>, Error> {
        self.get_delete_direct(key).await
    }

    async fn incr(&self, key: &str, name: &str, by: i64, ttl: Duration) -> Result<i64, Error> {
        self.incr_direct(key, name, by, ttl).await
    }

    async fn delete_match(&self, ns: &str, pattern: &str) -> Result<u64, Error> {
        self.delete_matching(ns, pattern).await
    }

    async fn ping(&self) -> Result<(), Error> {
        self.raw::<String>(redis::cmd("PING"))
            .await
            .map(|_| ())
            .map_err(Error::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recent_invalidations_share_the_sequences_slot() {
        // What a cluster hashes (its specification): the first `{...}` holding something,
        // else the whole key.
        fn hashed(key: &str) -> &str {
            if let Some(open) = key.find('{') {
                if let Some(len) = key[open + 1..].find('}').filter(|l| *l > 0) {
                    return &key[open + 1..open + 1 + len];
                }
            }
            key
        }
        let k = Keys::new("svc:v1:");
        assert_eq!(hashed(&k.recent), hashed(&k.sequence), "{}", k.recent);
        assert!(k.recent.starts_with(&k.engine), "{}", k.recent);
    }

    #[test]
    fn engine_keys_are_outside_the_namespace() {
        let k = Keys::new("svc:v1:");
        assert_eq!(k.tag("user:1"), "svc:v1~tag:user:1");
        assert_eq!(k.epoch, "svc:v1~epoch");
        assert_eq!(k.lock("svc:v1:user:1"), "svc:v1~lock:user:1");
        assert_eq!(
            k.early("svc:v1:user:1", 255),
            "svc:v1~early:user:1:00000000000000ff"
        );
        // Whatever a caller names is under `svc:v1:`; the engine's keys never are.
        for engine in [k.tag("x"), k.epoch.clone(), k.lock("svc:v1:x")] {
            assert!(!engine.starts_with(&k.ns), "{engine}");
        }
    }

    #[test]
    fn the_server_version_is_read_from_info() {
        let info = "# Server\r\nredis_version:7.0.15\r\nredis_git_sha1:0\r\n";
        assert_eq!(server_version(info), Some((7, 0)));
        assert!(server_version("redis_version:6.2.14\r\n").unwrap() < MIN_VERSION);
        assert!(server_version("redis_version:7.2.4").unwrap() >= MIN_VERSION);
        assert_eq!(server_version("# Server\r\n"), None);
    }

    #[test]
    fn a_server_older_than_7_0_is_refused_naming_its_version() {
        let info = |v: &str| format!("# Server\r\nredis_version:{v}\r\n");
        assert_eq!(old_enough(&[info("7.0.15")]), Ok(()));
        assert_eq!(old_enough(&[info("7.2.4"), info("7.0.0")]), Ok(()));
        let e = old_enough(&[info("6.2.14")]).unwrap_err();
        assert!(e.contains("7.0 or newer") && e.contains("runs 6.2"), "{e}");
        // On a cluster the oldest master decides.
        let e = old_enough(&[info("7.2.4"), info("6.0.9"), info("7.0.1")]).unwrap_err();
        assert!(e.contains("runs 6.0"), "{e}");
        let e = old_enough(&["# Server\r\n".to_string()]).unwrap_err();
        assert!(e.contains("an unknown version"), "{e}");
        assert!(old_enough(&[]).is_err(), "no answer is no proof");
    }

    #[test]
    fn only_unreachable_servers_are_outages() {
        let io = redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "refused",
        ));
        assert!(is_outage(&io));
        let timeout =
            redis::RedisError::from(std::io::Error::new(std::io::ErrorKind::TimedOut, "slow"));
        assert!(is_outage(&timeout));
    }
}
