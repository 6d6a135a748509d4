//! The Redis backend: one node (plain, TLS, password or ACL user) or a Redis Cluster, through
//! redis-rs (multiplexed connections; the cluster client routes every command by its key).
//!
//! Layout, under the cache's namespace `{prefix}:{version}:`:
//! - an entry is a string key holding an envelope: the tag tokens it was filled under (its
//!   fence), when it was filled, its early-refresh age, then the value;
//! - a tag is the key `~tag:{tag}` holding a random token. A fill reads (or creates) its tags'
//!   tokens *before* its loader runs; a hit is fresh only if every token still matches.
//!   Invalidating a tag deletes its key: O(1), and a token is never reused, so a tag key lost to
//!   expiry or eviction makes its entries misses — never valid again;
//! - `~lock:{key}` is the cross-host `lock` (SET NX PX: it expires on its own if its holder dies),
//!   `~early:{key}` claims an entry's early refresh for one host.
//!
//! No command spans two hash slots; a hit is one round trip (one MGET, or a pipeline, on a
//! single node; concurrent single-key commands on a cluster).
//!
//! Degradation: every operation is bounded by a timeout. Failures open a circuit breaker: reads
//! go straight to their loaders until a probe finds Redis again. An invalidation that could not
//! be delivered is kept in a pending log (bounded; past its bound, the whole namespace is
//! invalidated instead) and replayed before the circuit closes, so no cached value that a write
//! invalidated is served by this host after Redis returns.

use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::future::join_all;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ConnectionAddr, FromRedisValue, IntoConnectionInfo, RedisConnectionInfo};

use crate::config::{RedisOptions, RedisUrl};
use crate::Error;

/// Most pending invalidations kept while Redis is unreachable; past it, the namespace is
/// invalidated whole on recovery.
const MAX_PENDING: usize = 100_000;
/// Consecutive failures that open the circuit.
const FAILURES_TO_OPEN: u32 = 2;
const MAGIC: &[u8; 4] = b"\0cl1";

/// Why a Redis operation did not happen.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RedisFailure {
    #[error("Redis is unavailable (circuit open after failures; probing again shortly)")]
    Open,
    #[error("Redis error: {0}")]
    Redis(#[from] redis::RedisError),
}

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// A hit: the value, and whether this host must refresh it early.
pub(crate) struct RedisHit {
    pub value: Arc<[u8]>,
    pub early_due: bool,
}

/// Tag tokens read before a loader ran.
#[derive(Debug, Default, Clone)]
pub(crate) struct Tokens(Vec<String>);

pub(crate) struct Redis {
    conn: Conn,
    cluster: bool,
    opts: RedisOptions,
    ns: String,
    failures: AtomicU32,
    /// Milliseconds since `epoch` until which the circuit stays open; 0 = closed.
    open_until: AtomicU64,
    epoch: Instant,
    probing: tokio::sync::Mutex<()>,
    pending: Mutex<Pending>,
    has_pending: AtomicBool,
    fence: redis::Script,
    unlock: redis::Script,
    ids: RandomState,
    next_id: AtomicU64,
    /// Commands sent, for the benchmarks' commands-per-operation figures.
    pub commands: AtomicU64,
}

#[derive(Default)]
struct Pending {
    tags: HashSet<String>,
    all: bool,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Explains a connection failure without repeating credentials.
fn connect_error(shown: &str, e: &redis::RedisError) -> Error {
    use redis::ErrorKind;
    let text = e.to_string();
    let problem = if e.kind() == ErrorKind::AuthenticationFailed
        || text.contains("WRONGPASS")
        || text.contains("NOAUTH")
    {
        format!("authentication failed: Redis refused the user name or password ({text})")
    } else if text.to_ascii_lowercase().contains("tls")
        || text.contains("certificate")
        || text.contains("handshake")
        || text.contains("InvalidCertificate")
    {
        format!("TLS handshake failed: {text}")
    } else {
        format!("cannot connect: {text}")
    };
    Error::Backend {
        url: shown.to_string(),
        problem,
    }
}

fn tls_certs(opts: &RedisOptions, shown: &str) -> Result<redis::TlsCertificates, Error> {
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| Error::Setting {
            name: "TLS file".into(),
            problem: format!("{}: {e}", p.display()),
        })
    };
    let _ = shown;
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

impl Redis {
    /// Connects and checks that the server answers, so that a wrong host, password or
    /// certificate is reported when the cache is built.
    pub async fn connect(url: &RedisUrl, opts: &RedisOptions, ns: &str) -> Result<Redis, Error> {
        install_crypto_provider();
        let shown = crate::BackendUrl::Redis(url.clone()).to_string();
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
                    .map_err(|e| connect_error(&shown, &e))
            })
            .collect::<Result<_, _>>()?;
        let certs = if url.tls {
            Some(tls_certs(opts, &shown)?)
        } else {
            None
        };
        let cluster = url.is_cluster();
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
            Ok(Err(e)) => return Err(connect_error(&shown, &e)),
            Err(_) => {
                return Err(Error::Backend {
                    url: shown,
                    problem: format!("cannot connect: no answer within {limit:?}"),
                })
            }
        };
        let redis = Redis {
            conn,
            cluster,
            opts: opts.clone(),
            ns: ns.to_string(),
            failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            epoch: Instant::now(),
            probing: tokio::sync::Mutex::new(()),
            pending: Mutex::new(Pending::default()),
            has_pending: AtomicBool::new(false),
            fence: redis::Script::new(
                r"local v = redis.call('GET', KEYS[1])
                  if v then
                    redis.call('EXPIRE', KEYS[1], ARGV[2], 'GT')
                    return v
                  end
                  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
                  return ARGV[1]",
            ),
            unlock: redis::Script::new(
                r"if redis.call('GET', KEYS[1]) == ARGV[1] then
                    return redis.call('DEL', KEYS[1])
                  end
                  return 0",
            ),
            ids: RandomState::new(),
            next_id: AtomicU64::new(1),
            commands: AtomicU64::new(0),
        };
        let pong: Result<String, RedisFailure> = redis.raw(redis::cmd("PING")).await;
        match pong {
            Ok(_) => Ok(redis),
            Err(RedisFailure::Redis(e)) => Err(connect_error(&shown, &e)),
            Err(e) => Err(Error::Backend {
                url: shown,
                problem: e.to_string(),
            }),
        }
    }

    fn token(&self) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!("{:016x}", self.ids.hash_one(n))
    }

    fn tag_key(&self, tag: &str) -> String {
        format!("{}~tag:{tag}", self.ns)
    }

    // ---- the circuit ----

    fn elapsed_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    fn open(&self) {
        let until = self.elapsed_ms() + self.opts.cooldown.as_millis() as u64;
        self.open_until.store(until, Ordering::Release);
    }

    fn failed(&self, e: &RedisFailure) {
        if matches!(e, RedisFailure::Open) {
            return;
        }
        let n = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
        if n >= FAILURES_TO_OPEN && self.open_until.load(Ordering::Acquire) == 0 {
            tracing::warn!(
                "Redis failing ({e}); serving uncached for {:?}",
                self.opts.cooldown
            );
            self.open();
        }
    }

    /// Whether operations may go to Redis now. When the circuit's cooldown is over, one caller
    /// probes: PING, then the pending invalidations; only then does the circuit close.
    async fn ready(&self) -> Result<(), RedisFailure> {
        let until = self.open_until.load(Ordering::Acquire);
        if until == 0 && !self.has_pending.load(Ordering::Acquire) {
            return Ok(());
        }
        if until != 0 && self.elapsed_ms() < until {
            return Err(RedisFailure::Open);
        }
        let Ok(_probe) = self.probing.try_lock() else {
            return Err(RedisFailure::Open);
        };
        if self.open_until.load(Ordering::Acquire) == 0 && !self.has_pending.load(Ordering::Acquire)
        {
            return Ok(());
        }
        let pong: Result<String, _> = self.raw(redis::cmd("PING")).await;
        if let Err(e) = pong {
            self.open();
            return Err(e);
        }
        if let Err(e) = self.replay_pending().await {
            self.open();
            return Err(e);
        }
        self.failures.store(0, Ordering::Release);
        self.open_until.store(0, Ordering::Release);
        tracing::info!("Redis answers again; cache back in service");
        Ok(())
    }

    async fn replay_pending(&self) -> Result<(), RedisFailure> {
        let (tags, all) = {
            let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            (std::mem::take(&mut p.tags), std::mem::take(&mut p.all))
        };
        let result = if all {
            self.delete_all_tags().await.map(|_| ())
        } else {
            let tags: Vec<String> = tags.iter().cloned().collect();
            self.del_tags(&tags).await
        };
        match result {
            Ok(()) => {
                let p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
                if p.tags.is_empty() && !p.all {
                    self.has_pending.store(false, Ordering::Release);
                }
                if all || !tags.is_empty() {
                    tracing::info!(
                        "replayed {} invalidation(s) held while Redis was unreachable",
                        if all {
                            "all".to_string()
                        } else {
                            tags.len().to_string()
                        }
                    );
                }
                Ok(())
            }
            Err(e) => {
                let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
                p.all |= all;
                p.tags.extend(tags);
                Err(e)
            }
        }
    }

    fn hold(&self, tags: &[String], all: bool) {
        let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if all || p.all || p.tags.len() + tags.len() > MAX_PENDING {
            p.all = true;
            p.tags.clear();
        } else {
            p.tags.extend(tags.iter().cloned());
        }
        self.has_pending.store(true, Ordering::Release);
        // Nothing is read from Redis until the held invalidations are delivered.
        if self.open_until.load(Ordering::Acquire) == 0 {
            self.open();
        }
    }

    // ---- commands ----

    /// One command, bounded by the timeout, without the circuit (used by the probe itself).
    async fn raw<T: FromRedisValue>(&self, cmd: Cmd) -> Result<T, RedisFailure> {
        self.commands.fetch_add(1, Ordering::Relaxed);
        let fut = async {
            match &self.conn {
                Conn::Single(c) => cmd.query_async(&mut c.clone()).await,
                Conn::Cluster(c) => cmd.query_async(&mut c.clone()).await,
            }
        };
        // redis-rs bounds each request by the response timeout (and a reconnection by the
        // connection timeout): no second timer on the hot path.
        Ok(fut.await?)
    }

    /// One command through the circuit.
    async fn run<T: FromRedisValue>(&self, cmd: Cmd) -> Result<T, RedisFailure> {
        self.ready().await?;
        let r = self.raw(cmd).await;
        match &r {
            Ok(_) => self.failures.store(0, Ordering::Relaxed),
            Err(e) => self.failed(e),
        }
        r
    }

    /// Several single-key commands in one round trip, without the circuit: a pipeline on one
    /// node, concurrent commands on a cluster (a pipeline there may not span hash slots).
    async fn raw_many(&self, cmds: Vec<Cmd>) -> Result<Vec<redis::Value>, RedisFailure> {
        self.commands
            .fetch_add(cmds.len() as u64, Ordering::Relaxed);
        let r = match &self.conn {
            Conn::Single(c) => {
                let mut p = redis::pipe();
                for cmd in cmds {
                    p.add_command(cmd);
                }
                p.query_async::<Vec<redis::Value>>(&mut c.clone()).await
            }
            Conn::Cluster(c) => join_all(cmds.into_iter().map(|cmd| {
                let mut c = c.clone();
                async move { cmd.query_async::<redis::Value>(&mut c).await }
            }))
            .await
            .into_iter()
            .collect(),
        };
        Ok(r?)
    }

    /// [`Redis::raw_many`] through the circuit.
    async fn run_many(&self, cmds: Vec<Cmd>) -> Result<Vec<redis::Value>, RedisFailure> {
        self.ready().await?;
        let r = self.raw_many(cmds).await;
        match &r {
            Ok(_) => self.failures.store(0, Ordering::Relaxed),
            Err(e) => self.failed(e),
        }
        r
    }

    /// Runs one of the cache's Lua scripts (each touches a single key).
    async fn invoke<T: FromRedisValue>(
        &self,
        inv: &redis::ScriptInvocation<'_>,
    ) -> Result<T, RedisFailure> {
        self.commands.fetch_add(1, Ordering::Relaxed);
        let r = match &self.conn {
            Conn::Single(c) => inv.invoke_async::<T>(&mut c.clone()).await,
            Conn::Cluster(c) => inv.invoke_async::<T>(&mut c.clone()).await,
        };
        Ok(r?)
    }

    // ---- the read path ----

    /// The entry under `key` if every one of `tags` still has the token it was filled under.
    /// With `refresh`, the hit also gives the entry `ttl` again (sliding expiry).
    pub async fn lookup(
        &self,
        key: &str,
        tags: &[String],
        refresh: Option<Duration>,
    ) -> Result<(Option<RedisHit>, Tokens), RedisFailure> {
        let get = match refresh {
            Some(ttl) => {
                let mut c = redis::cmd("GETEX");
                c.arg(key).arg("PX").arg(ttl.as_millis().max(1) as u64);
                c
            }
            None => {
                let mut c = redis::cmd("GET");
                c.arg(key);
                c
            }
        };
        let values: Vec<Option<Vec<u8>>> = if !self.cluster && refresh.is_none() {
            let mut c = redis::cmd("MGET");
            c.arg(key);
            for t in tags {
                c.arg(self.tag_key(t));
            }
            self.run(c).await?
        } else {
            let mut cmds = vec![get];
            for t in tags {
                let mut c = redis::cmd("GET");
                c.arg(self.tag_key(t));
                cmds.push(c);
            }
            self.run_many(cmds)
                .await?
                .into_iter()
                .map(|v| Option::<Vec<u8>>::from_redis_value(v).unwrap_or(None))
                .collect()
        };
        let mut values = values.into_iter();
        let entry = values.next().flatten();
        let current: Vec<Option<Vec<u8>>> = values.collect();
        let env = entry.as_deref().and_then(Envelope::parse);
        let fresh = env.as_ref().is_some_and(|env| {
            env.tokens.len() == current.len()
                && env
                    .tokens
                    .iter()
                    .zip(&current)
                    .all(|(a, b)| b.as_deref() == Some(*a))
        });
        let (Some(env), true) = (env, fresh) else {
            // A miss: the tokens just read fence the fill that follows.
            let known = current
                .into_iter()
                .map(|t| {
                    t.and_then(|b| String::from_utf8(b).ok())
                        .unwrap_or_default()
                })
                .collect();
            return Ok((None, Tokens(known)));
        };
        let early_due = env.early_ms > 0 && now_ms().saturating_sub(env.born_ms) >= env.early_ms;
        let value: Arc<[u8]> = env.value.into();
        let early_due = early_due && self.claim_early(key).await;
        Ok((Some(RedisHit { value, early_due }), Tokens::default()))
    }

    /// One host refreshes an entry early; the others keep serving it.
    async fn claim_early(&self, key: &str) -> bool {
        let mut c = redis::cmd("SET");
        c.arg(format!("{}~early:{key}", self.ns))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(self.opts.lock_ttl.as_millis() as u64);
        matches!(self.run::<Option<String>>(c).await, Ok(Some(_)))
    }

    /// Tokens of `tags`, creating the missing ones; `known` are tokens a lookup just read
    /// (only the missing ones cost a command). The tag keys live at least `ttl` more.
    pub async fn fence(
        &self,
        tags: &[String],
        known: &Tokens,
        ttl: Duration,
    ) -> Result<Tokens, RedisFailure> {
        let life = (ttl + Duration::from_secs(60)).as_secs().max(1);
        let mut out = Vec::with_capacity(tags.len());
        let mut need = Vec::new();
        for i in 0..tags.len() {
            match known.0.get(i).filter(|s| !s.is_empty()) {
                Some(tok) => out.push(tok.clone()),
                None => {
                    out.push(String::new());
                    need.push(i);
                }
            }
        }
        if !need.is_empty() {
            self.ready().await?;
            let made: Vec<Result<String, RedisFailure>> =
                join_all(need.iter().map(|&i| self.fence_one(&tags[i], life))).await;
            for (&i, m) in need.iter().zip(made) {
                out[i] = m?;
            }
        }
        Ok(Tokens(out))
    }

    async fn fence_one(&self, tag: &str, life: u64) -> Result<String, RedisFailure> {
        let key = self.tag_key(tag);
        let token = self.token();
        let mut inv = self.fence.key(&key);
        inv.arg(&token).arg(life);
        let r = self.invoke(&inv).await;
        if let Err(e) = &r {
            self.failed(e);
        }
        r
    }

    /// Stores a value fenced by `tokens`.
    pub async fn fill(
        &self,
        key: &str,
        value: &[u8],
        tokens: &Tokens,
        ttl: Duration,
        early: Option<Duration>,
    ) -> Result<(), RedisFailure> {
        let env = Envelope::encode(
            &tokens.0,
            now_ms(),
            early.map_or(0, |e| e.as_millis() as u64),
            value,
        );
        let mut c = redis::cmd("SET");
        c.arg(key)
            .arg(env)
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64);
        self.run::<()>(c).await
    }

    /// Takes the cross-host lock of `key`; `Some(owner)` if this host holds it now.
    pub async fn try_lock(&self, key: &str) -> Result<Option<String>, RedisFailure> {
        let owner = self.token();
        let mut c = redis::cmd("SET");
        c.arg(format!("{}~lock:{key}", self.ns))
            .arg(&owner)
            .arg("NX")
            .arg("PX")
            .arg(self.opts.lock_ttl.as_millis() as u64);
        let r: Option<String> = self.run(c).await?;
        Ok(r.map(|_| owner))
    }

    pub async fn unlock(&self, key: &str, owner: &str) {
        let lock = format!("{}~lock:{key}", self.ns);
        let mut inv = self.unlock.key(&lock);
        inv.arg(owner);
        // A lock we fail to release expires by itself.
        let _: Result<i64, _> = self.invoke(&inv).await;
    }

    pub fn lock_ttl(&self) -> Duration {
        self.opts.lock_ttl
    }

    // ---- invalidation ----

    async fn del_tags(&self, tags: &[String]) -> Result<(), RedisFailure> {
        let keys: Vec<Vec<u8>> = tags.iter().map(|t| self.tag_key(t).into_bytes()).collect();
        self.unlink(keys).await.map(|_| ())
    }

    /// Deletes keys (without blocking the server on their values): one command on a single
    /// server, one per key on a cluster (their slots differ). Returns how many existed.
    async fn unlink(&self, keys: Vec<Vec<u8>>) -> Result<u64, RedisFailure> {
        if keys.is_empty() {
            return Ok(0);
        }
        let cmds: Vec<Cmd> = if self.cluster {
            keys.iter()
                .map(|k| {
                    let mut c = redis::cmd("UNLINK");
                    c.arg(k);
                    c
                })
                .collect()
        } else {
            let mut c = redis::cmd("UNLINK");
            c.arg(&keys);
            vec![c]
        };
        let counts = self.raw_many(cmds).await?;
        Ok(counts
            .into_iter()
            .filter_map(|v| u64::from_redis_value(v).ok())
            .sum())
    }

    /// Invalidates tags. If Redis cannot be told now, the tags are held and delivered before
    /// this host reads from Redis again. Returns whether they were delivered now.
    pub async fn invalidate(&self, tags: &[String]) -> bool {
        if tags.is_empty() {
            return true;
        }
        let r = match self.ready().await {
            Ok(()) => self.del_tags(tags).await,
            Err(e) => Err(e),
        };
        match r {
            Ok(()) => true,
            Err(e) => {
                self.failed(&e);
                tracing::warn!("invalidation held until Redis answers: {e}");
                self.hold(tags, false);
                false
            }
        }
    }

    /// Invalidates every entry of the namespace (all its tag keys).
    pub async fn invalidate_all(&self) -> bool {
        let r = match self.ready().await {
            Ok(()) => self.delete_all_tags().await,
            Err(e) => Err(e),
        };
        match r {
            Ok(_) => true,
            Err(e) => {
                self.failed(&e);
                self.hold(&[], true);
                false
            }
        }
    }

    async fn delete_all_tags(&self) -> Result<u64, RedisFailure> {
        let pattern = format!("{}~tag:*", glob_escape(&self.ns));
        self.scan_delete(&pattern, |_| true).await
    }

    /// SCAN (every master, on a cluster) for `pattern` and delete what `keep` accepts, a page
    /// at a time: the server is never blocked by one big command.
    async fn scan_delete(
        &self,
        pattern: &str,
        keep: impl Fn(&[u8]) -> bool,
    ) -> Result<u64, RedisFailure> {
        use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
        // The nodes to scan: the server, or each master by address.
        let nodes: Vec<Option<(String, u16)>> = match &self.conn {
            Conn::Single(_) => vec![None],
            Conn::Cluster(c) => self
                .cluster_masters(c)
                .await?
                .into_iter()
                .map(Some)
                .collect(),
        };
        let mut deleted = 0;
        for node in nodes {
            let mut cursor: u64 = 0;
            loop {
                let mut scan = redis::cmd("SCAN");
                scan.arg(cursor)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(500);
                self.commands.fetch_add(1, Ordering::Relaxed);
                let page = match (&self.conn, &node) {
                    (Conn::Cluster(c), Some((host, port))) => {
                        let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                            host: host.clone(),
                            port: *port,
                        });
                        c.clone().route_command(scan, route).await
                    }
                    (Conn::Single(c), _) => scan.query_async(&mut c.clone()).await,
                    (Conn::Cluster(c), None) => scan.query_async(&mut c.clone()).await,
                }?;
                let (next, keys): (u64, Vec<Vec<u8>>) = FromRedisValue::from_redis_value(page)
                    .map_err(|e| RedisFailure::Redis(redis::RedisError::from(e)))?;
                deleted += self
                    .unlink(keys.into_iter().filter(|k| keep(k)).collect())
                    .await?;
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
        Ok(deleted)
    }

    async fn cluster_masters(
        &self,
        c: &ClusterConnection,
    ) -> Result<Vec<(String, u16)>, RedisFailure> {
        let mut cmd = redis::cmd("CLUSTER");
        cmd.arg("SLOTS");
        self.commands.fetch_add(1, Ordering::Relaxed);
        let slots: Vec<redis::Value> = (cmd.query_async(&mut c.clone()))
            .await
            .map_err(RedisFailure::from)?;
        let mut masters = Vec::new();
        for s in slots {
            let redis::Value::Array(parts) = s else {
                continue;
            };
            if let Some(redis::Value::Array(node)) = parts.get(2) {
                let host: Option<String> = node
                    .first()
                    .and_then(|v| FromRedisValue::from_redis_value(v.clone()).ok());
                let port: Option<u16> = node
                    .get(1)
                    .and_then(|v| FromRedisValue::from_redis_value(v.clone()).ok());
                if let (Some(h), Some(p)) = (host, port) {
                    if !masters.contains(&(h.clone(), p)) {
                        masters.push((h, p));
                    }
                }
            }
        }
        Ok(masters)
    }

    // ---- direct operations ----

    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, RedisFailure> {
        let mut c = redis::cmd("GET");
        c.arg(key);
        let v: Option<Vec<u8>> = self.run(c).await?;
        self.unwrap_direct(v).await
    }

    /// A direct read of a key the read path filled gives its value if it is still fresh.
    async fn unwrap_direct(&self, v: Option<Vec<u8>>) -> Result<Option<Vec<u8>>, RedisFailure> {
        let Some(raw) = v else { return Ok(None) };
        if Envelope::parse(&raw).is_none() {
            return Ok(Some(raw));
        }
        // Entries of the read path are only fresh with their tags, which a direct read does
        // not know: report them as absent rather than risk a stale value.
        Ok(None)
    }

    pub async fn set(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
        if_absent: bool,
    ) -> Result<bool, RedisFailure> {
        let mut c = redis::cmd("SET");
        c.arg(key)
            .arg(value)
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64);
        if if_absent {
            c.arg("NX");
        }
        let r: Option<String> = self.run(c).await?;
        Ok(r.is_some())
    }

    pub async fn delete(&self, key: &str) -> Result<bool, RedisFailure> {
        let mut c = redis::cmd("DEL");
        c.arg(key);
        Ok(self.run::<u64>(c).await? > 0)
    }

    pub async fn exists(&self, key: &str) -> Result<bool, RedisFailure> {
        Ok(self.get(key).await?.is_some())
    }

    pub async fn get_delete(&self, key: &str) -> Result<Option<Vec<u8>>, RedisFailure> {
        let mut c = redis::cmd("GETDEL");
        c.arg(key);
        let v: Option<Vec<u8>> = self.run(c).await?;
        self.unwrap_direct(v).await
    }

    /// INCRBY, giving a new counter the default TTL (Redis keeps an existing key's TTL).
    pub async fn incr(&self, key: &str, by: i64, ttl: Duration) -> Result<i64, RedisFailure> {
        let mut c = redis::cmd("INCRBY");
        c.arg(key).arg(by);
        let n: i64 = self.run(c).await?;
        if n == by {
            let mut e = redis::cmd("PEXPIRE");
            e.arg(key).arg(ttl.as_millis().max(1) as u64).arg("NX");
            let _: Result<i64, _> = self.run(e).await;
        }
        Ok(n)
    }

    /// Deletes the namespace's keys matching `pattern` (a glob relative to the namespace),
    /// leaving the cache's own bookkeeping keys (`~tag:`, `~lock:`, ...) alone.
    pub async fn delete_match(&self, pattern: &str) -> Result<u64, RedisFailure> {
        self.ready().await?;
        let full = format!("{}{pattern}", glob_escape(&self.ns));
        let internal = format!("{}~", self.ns).into_bytes();
        let r = self.scan_delete(&full, |k| !k.starts_with(&internal)).await;
        if let Err(e) = &r {
            self.failed(e);
        }
        r
    }

    pub async fn ping(&self) -> Result<(), RedisFailure> {
        self.raw::<String>(redis::cmd("PING")).await.map(|_| ())
    }
}

/// Escapes glob characters of a literal prefix.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// An entry as stored: `MAGIC`, born (ms, u64 LE), early age (ms, u64 LE), token count (u8),
/// each token (u8 length + bytes), then the value. Parsed without copying.
struct Envelope<'a> {
    tokens: Vec<&'a [u8]>,
    born_ms: u64,
    early_ms: u64,
    value: &'a [u8],
}

impl<'a> Envelope<'a> {
    fn encode(tokens: &[String], born_ms: u64, early_ms: u64, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + 17 + tokens.len() * 17 + value.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&born_ms.to_le_bytes());
        out.extend_from_slice(&early_ms.to_le_bytes());
        out.push(tokens.len().min(255) as u8);
        for t in tokens.iter().take(255) {
            let b = &t.as_bytes()[..t.len().min(255)];
            out.push(b.len() as u8);
            out.extend_from_slice(b);
        }
        out.extend_from_slice(value);
        out
    }

    fn parse(raw: &'a [u8]) -> Option<Envelope<'a>> {
        let rest = raw.strip_prefix(MAGIC)?;
        let born_ms = u64::from_le_bytes(rest.get(..8)?.try_into().ok()?);
        let early_ms = u64::from_le_bytes(rest.get(8..16)?.try_into().ok()?);
        let n = *rest.get(16)? as usize;
        let mut at = 17;
        let mut tokens = Vec::with_capacity(n);
        for _ in 0..n {
            let len = *rest.get(at)? as usize;
            tokens.push(rest.get(at + 1..at + 1 + len)?);
            at += 1 + len;
        }
        Some(Envelope {
            tokens,
            born_ms,
            early_ms,
            value: rest.get(at..)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip() {
        let toks = vec!["00aa".to_string(), "ffee".to_string()];
        let raw = Envelope::encode(&toks, 12345, 678, b"{\"v\":1}");
        let e = Envelope::parse(&raw).unwrap();
        assert_eq!(e.tokens, [b"00aa".as_slice(), b"ffee".as_slice()]);
        assert_eq!((e.born_ms, e.early_ms), (12345, 678));
        assert_eq!(e.value, b"{\"v\":1}");
        assert!(Envelope::parse(b"{\"plain\":true}").is_none());
        assert!(Envelope::parse(b"\0cl1\x01").is_none());
    }

    #[test]
    fn namespace_globs_are_escaped() {
        assert_eq!(glob_escape("a*b:[v1]:"), "a\\*b:\\[v1\\]:");
    }
}
