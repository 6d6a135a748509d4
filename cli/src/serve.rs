//! `cachelet serve`: the caching reverse proxy, and the demo upstream of the quick start.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use cachelet::proxy::Proxy;
use cachelet::{Cache, PolicySource};

/// The policy served when none is given: every GET cached by URL, tagged by path prefix.
const BUILT_IN: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/proxy-default.wasm"));
/// The policy of the demo (`--demo-upstream` without policies): the seed policy, whose routes
/// are the guide's endpoints.
const SEED: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/seed-rust.wasm"));

#[derive(clap::Args)]
pub struct ServeArgs {
    /// The service to cache, `http://host:port[/prefix]`.
    #[arg(
        long,
        env = "CACHELET_UPSTREAM",
        required_unless_present = "demo_upstream"
    )]
    upstream: Option<String>,
    /// A directory of policies (`*.wasm`), watched: a file added, replaced or removed changes
    /// what serves. Without policies, the built-in one: every GET cached by its URL.
    #[arg(long, env = "CACHELET_POLICY_DIR", value_name = "DIR")]
    policies: Option<PathBuf>,
    /// A policy file (repeatable), beside the directory's.
    #[arg(long = "policy", value_name = "FILE")]
    policy: Vec<PathBuf>,
    /// Where to listen.
    #[arg(long, env = "CACHELET_LISTEN", default_value = "127.0.0.1:8080")]
    listen: String,
    /// Serve the admin API (`/_cachelet/`) on this address instead of the public one (which
    /// then keeps only `GET /_cachelet/health`, up or down).
    #[arg(long, env = "CACHELET_ADMIN_LISTEN", value_name = "ADDRESS")]
    admin_listen: Option<String>,
    /// Start a small demo service (the guide's users, orgs and profiles) and cache it; prints
    /// the commands that show a miss, a hit, a write's invalidation and a purge.
    #[arg(long)]
    demo_upstream: bool,
    /// Seconds the upstream has to answer before the client gets a 504.
    #[arg(long, env = "CACHELET_UPSTREAM_TIMEOUT", default_value_t = 30)]
    upstream_timeout: u64,
    /// The largest response body stored, in bytes (larger ones stream through).
    #[arg(long, env = "CACHELET_MAX_BODY", default_value_t = 8 << 20)]
    max_body: usize,
    /// Most bytes of answers being read into the cache at once (concurrent misses); past
    /// them, answers stream through without being stored.
    #[arg(long, env = "CACHELET_FILL_BUDGET", default_value_t = 512 << 20)]
    fill_budget: usize,
    /// Seconds an error of the upstream (5xx, a timeout, a refused connection) answers the
    /// requests of its URL before the upstream is asked again (0: only the requests waiting
    /// for it share it).
    #[arg(long, env = "CACHELET_NEGATIVE_TTL", default_value_t = 1)]
    negative_ttl: u64,
    /// The largest request body passed on, in bytes (larger: 413).
    #[arg(long, env = "CACHELET_MAX_REQUEST_BODY", default_value_t = 16 << 20)]
    max_request_body: u64,
    /// Response headers whose values are tags of the response (surrogate keys), instead of
    /// `Surrogate-Key` and `Cache-Tag`; repeatable, or comma-separated.
    #[arg(
        long = "surrogate-key-header",
        env = "CACHELET_SURROGATE_KEY_HEADERS",
        value_name = "NAME",
        value_delimiter = ',',
        value_parser = header_name
    )]
    surrogate_key_headers: Vec<axum::http::HeaderName>,
    /// Pass the surrogate-key headers on to clients (they are stripped by default).
    #[arg(long)]
    forward_surrogate_keys: bool,
    /// Peers (an address or a range, `10.0.0.0/8`) whose `X-Forwarded-For`,
    /// `X-Forwarded-Proto` and `Forwarded` are kept (a load balancer in front); from any other
    /// client they are replaced. Repeatable, or comma-separated.
    #[arg(
        long = "trusted-proxy",
        env = "CACHELET_TRUSTED_PROXIES",
        value_name = "ADDRESS[/BITS]",
        value_delimiter = ',',
        value_parser = ip_range
    )]
    trusted_proxies: Vec<cachelet::proxy::IpRange>,
    /// What the upstream is told in `Host`: `upstream` (its own authority, whatever the client
    /// says: one site) or `client` (the client's, lowercased, which is then part of every
    /// entry's key: one proxy in front of several sites).
    #[arg(long, env = "CACHELET_HOST", default_value = "upstream", value_parser = host_header)]
    host: cachelet::proxy::HostHeader,
}

/// `upstream` or `client`, or why it is neither.
fn host_header(s: &str) -> Result<cachelet::proxy::HostHeader, String> {
    s.parse().map_err(|e: cachelet::Error| e.to_string())
}

/// An address range as a flag gives it, or why it is not one.
fn ip_range(s: &str) -> Result<cachelet::proxy::IpRange, String> {
    cachelet::proxy::IpRange::parse(s).map_err(|e| e.to_string())
}

/// A header name as a flag gives it, or why it is not one.
fn header_name(s: &str) -> Result<axum::http::HeaderName, String> {
    axum::http::HeaderName::from_bytes(s.trim().as_bytes())
        .map_err(|_| format!("{s:?} is not an HTTP header name"))
}

pub async fn run(args: ServeArgs, compile_cache: Option<PathBuf>) -> Result<()> {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("installing the metrics recorder")?;
    // The recorder keeps histogram samples until its upkeep drains them: without it, memory
    // grows with every request while nobody scrapes the metrics.
    let upkeep = recorder.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let listening = listener.local_addr()?;
    let admin_listener = match &args.admin_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (--admin-listen)"))?,
        ),
        None => None,
    };
    let admin_at = admin_listener
        .as_ref()
        .map(|l| l.local_addr())
        .transpose()?;
    let upstream = match (&args.upstream, args.demo_upstream) {
        (_, true) => format!("http://{}", demo_upstream().await?),
        (Some(u), false) => u.clone(),
        (None, false) => anyhow::bail!("--upstream URL (or CACHELET_UPSTREAM) is needed"),
    };
    let mut b = Cache::builder().serves_http();
    if let Some(dir) = compile_cache {
        b = b.compile_cache(dir);
    }
    if let Some(dir) = &args.policies {
        b = b.policy_dir(dir);
    }
    for f in &args.policy {
        b = b.policy_file(f);
    }
    // Read as the cache reads it (on, 1, true, yes): a host that follows the fleet serves what
    // is pushed, not the built-in policy beside it.
    let fleet = cachelet::Settings::from_env()
        .context("cannot start the cache")?
        .fleet;
    let built_in = args.policies.is_none() && args.policy.is_empty() && !fleet;
    if built_in {
        b = b.policy(if args.demo_upstream {
            PolicySource::Bytes {
                name: "seed-rust (built in)".into(),
                bytes: SEED.to_vec(),
            }
        } else {
            PolicySource::Bytes {
                name: "proxy-default (built in)".into(),
                bytes: BUILT_IN.to_vec(),
            }
        });
    }
    let cache = b.build().await.context("cannot start the cache")?;
    let mut token = std::env::var("CACHELET_ADMIN_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    let demo_token = token.is_none() && args.demo_upstream;
    if demo_token {
        // For this demo run only: the purge command below needs one.
        token = Some(random_token());
    }
    let mut proxy = Proxy::builder(cache.clone(), &upstream)?.admin_token(token.clone());
    if let Some(l) = admin_listener {
        proxy = proxy.admin_listener(l);
    }
    let proxy = proxy
        .metrics(Arc::new(move || recorder.render()))
        .upstream_timeout(Duration::from_secs(args.upstream_timeout))
        .max_request_body(args.max_request_body)
        .trusted_proxies(args.trusted_proxies.clone())
        .host(args.host)
        .layer(|l| {
            let l = l
                .max_body(args.max_body)
                .fill_budget(args.fill_budget)
                .negative_ttl(Duration::from_secs(args.negative_ttl))
                .forward_surrogate_keys(args.forward_surrogate_keys);
            if args.surrogate_key_headers.is_empty() {
                l
            } else {
                l.surrogate_key_headers(args.surrogate_key_headers.clone())
            }
        })
        .build();
    let policies: Vec<String> = cache.policies().into_iter().map(|p| p.name).collect();
    say(
        &mut std::io::stderr(),
        &format!(
            "cachelet serve: http://{listening} in front of {upstream}{}; cache {}; policies: {}",
            if args.demo_upstream {
                " (demo upstream)"
            } else {
                ""
            },
            cache.settings().url,
            if policies.is_empty() {
                "none loaded".to_string()
            } else {
                policies.join(", ")
            }
        ),
    );
    if token.is_none() {
        say(
            &mut std::io::stderr(),
            "admin API off (set CACHELET_ADMIN_TOKEN); GET /_cachelet/health is open",
        );
    }
    if let Some(at) = admin_at {
        say(
            &mut std::io::stderr(),
            &format!("admin API on http://{at}/_cachelet/"),
        );
    }
    if args.demo_upstream {
        let t = token.as_deref().unwrap_or_default();
        say(
            &mut std::io::stdout(),
            &demo_commands(&listening.to_string(), t, demo_token),
        );
    }
    proxy.serve(listener, stop_signal()).await?;
    say(&mut std::io::stderr(), "cachelet serve: stopped");
    Ok(())
}

/// Writes a line for the operator. A closed output (piped into `head`, a terminal gone) is
/// no reason to stop serving: the error is ignored, where `println!` would panic.
fn say(to: &mut dyn std::io::Write, line: &str) {
    let _ = writeln!(to, "{line}").and_then(|()| to.flush());
}

/// Ctrl-C or SIGTERM.
async fn stop_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let term = async {
            match term.as_mut() {
                Some(t) => {
                    t.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            () = term => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn random_token() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::new();
    for _ in 0..2 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos(),
        );
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

fn demo_commands(addr: &str, token: &str, generated: bool) -> String {
    let mut s = format!(
        "\
Try it (another terminal):

  curl -si http://{addr}/users/42 | grep -iE '^(x-cache|age)|name'     # MISS: asked the upstream
  curl -si http://{addr}/users/42 | grep -iE '^(x-cache|age)|name'     # HIT: from the cache
  curl -si -X PUT http://{addr}/users/42 -d '{{\"name\": \"ann\"}}'        # the write: invalidates user:42, recaches it
  curl -si http://{addr}/users/42 | grep -iE '^(x-cache|age)|name'     # HIT with the new name (warmed by the recache)
  curl -s -X POST http://{addr}/_cachelet/purge -H 'Authorization: Bearer {token}' -d '{{\"tags\": [\"user:42\"]}}'
  curl -si http://{addr}/users/42 | grep -iE '^(x-cache|age)|name'     # MISS again: purged
  curl -s http://{addr}/_cachelet/health
"
    );
    if generated {
        s.push_str(
            "\n(The admin token above was made for this demo run; set CACHELET_ADMIN_TOKEN to \
             choose one.)\n",
        );
    }
    s
}

/// The demo service: the guide's users, org users and user profile/settings, in memory. Every
/// answer says how many requests the service has answered, so a hit shows as an old count.
#[derive(Default)]
struct Demo {
    users: Mutex<std::collections::HashMap<String, String>>,
    answered: AtomicU64,
}

impl Demo {
    fn user(&self, id: &str) -> serde_json::Value {
        let n = self.answered.fetch_add(1, Ordering::Relaxed) + 1;
        let name = self
            .users
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
            .unwrap_or_else(|| format!("user {id}"));
        serde_json::json!({"id": id, "name": name, "upstream_requests": n})
    }

    fn set(&self, id: &str, body: &str) -> serde_json::Value {
        let name = serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("name")?.as_str().map(str::to_string))
            .unwrap_or_else(|| body.trim().to_string());
        self.users
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_string(), name);
        self.user(id)
    }
}

pub(crate) fn demo_router() -> Router {
    type S = State<Arc<Demo>>;
    Router::new()
        .route(
            "/users/{id}",
            get(|s: S, Path(id): Path<String>| async move { Json(s.user(&id)) }).put(
                |s: S, Path(id): Path<String>, body: String| async move { Json(s.set(&id, &body)) },
            ),
        )
        .route(
            "/orgs/{org}/users/{id}",
            get(|s: S, Path((org, id)): Path<(String, String)>| async move {
                let mut u = s.user(&id);
                u["org"] = org.into();
                Json(u)
            })
            .put(
                |s: S, Path((org, id)): Path<(String, String)>, body: String| async move {
                    let mut u = s.set(&id, &body);
                    u["org"] = org.into();
                    Json(u)
                },
            ),
        )
        .route(
            "/users/{id}/profile",
            get(|s: S, Path(id): Path<String>| async move {
                let mut u = s.user(&id);
                u["profile"] = "public".into();
                Json(u)
            })
            .put(|s: S, Path(id): Path<String>, body: String| async move {
                Json(s.set(&id, &body))
            }),
        )
        .route(
            "/users/{id}/settings",
            get(|s: S, Path(id): Path<String>| async move {
                let mut u = s.user(&id);
                u["settings"] = serde_json::json!({"theme": "dark"});
                Json(u)
            }),
        )
        .with_state(Arc::new(Demo::default()))
}

/// Starts the demo service on a free loopback port.
async fn demo_upstream() -> Result<std::net::SocketAddr> {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(l, demo_router()).await;
    });
    Ok(addr)
}
