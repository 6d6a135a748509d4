//! The caching reverse proxy behind `cachelet serve` (feature `proxy`): the
//! [`ResponseCacheLayer`](crate::axum::ResponseCacheLayer) in front of an upstream HTTP
//! service, an authenticated admin API under `/_cachelet/`, and a server with the limits a
//! proxy facing clients needs.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use cachelet::proxy::Proxy;
//!
//! let cache = cachelet::Cache::builder().policy_dir("policies").build().await?;
//! let proxy = Proxy::builder(cache, "http://127.0.0.1:3000")?
//!     .admin_token(std::env::var("CACHELET_ADMIN_TOKEN").ok())
//!     .build();
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! proxy.serve(listener, async { let _ = stopped.await; }).await?;
//! # Ok(()) }
//! ```
//!
//! As a proxy must: hop-by-hop headers are dropped both ways; `Host` is the upstream's
//! authority (as nginx sends it), so no client can make the upstream answer for another host
//! (or, [as a setting](ProxyBuilder::host), the client's, which is then keyed);
//! `X-Forwarded-For`, `-Proto` and `Forwarded` say who asked, written by the proxy (a client's
//! are kept only from [trusted proxies](ProxyBuilder::trusted_proxies)), and headers that would
//! tell the upstream another host or path (`X-Forwarded-Host`, `X-Original-URL`, ...) are
//! never forwarded;
//! bodies stream both ways; connections to the upstream are pooled; an upstream that does not
//! answer within the timeout is a `504`, one whose body stalls that long breaks off (and is not
//! stored), one that cannot be reached a `502` (remembered, as
//! the upstream's own errors are, only for the layer's
//! [negative TTL](crate::axum::ResponseCacheLayer::negative_ttl)); a request body past the
//! limit is a `413`; a connection that sends nothing, or nothing more, for the header timeout
//! is cut, one without a request in flight for the idle timeout closed; the connections served
//! at once are bounded; the admin API may have a listener of its own. HTTP/1.1 (keep-alive)
//! and HTTP/2 (prior knowledge) from clients.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::uri::{Authority, Scheme};
use axum::http::{header, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tower::util::BoxCloneService;
use tower::{Layer, Service, ServiceExt};

use super::layer::ResponseCacheLayer;
use super::semantics::strip_hop_by_hop;
use crate::cache::Cache;
use crate::error::Error;

/// The address of the client a request came from (a request extension).
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub SocketAddr);

/// Renders the metrics for `GET /_cachelet/metrics` (e.g. a Prometheus handle's `render`).
pub type MetricsRender = Arc<dyn Fn() -> String + Send + Sync>;

/// Builds a [`Proxy`].
pub struct ProxyBuilder {
    cache: Cache,
    upstream: Upstream,
    layer: ResponseCacheLayer,
    host: HostHeader,
    admin_token: Option<String>,
    admin_listener: Option<tokio::net::TcpListener>,
    metrics: Option<MetricsRender>,
    max_request_body: u64,
    header_read_timeout: Duration,
    idle_timeout: Duration,
    max_connections: usize,
    max_header_bytes: usize,
    shutdown_grace: Duration,
}

/// A caching reverse proxy: the cache in front of one upstream. See the [module](self).
pub struct Proxy {
    cache: Cache,
    app: BoxCloneService<Request<Body>, Response<Body>, Infallible>,
    admin: Arc<Admin>,
    admin_listener: Option<tokio::net::TcpListener>,
    host: HostHeader,
    max_request_body: u64,
    header_read_timeout: Duration,
    idle_timeout: Duration,
    max_connections: usize,
    max_header_bytes: usize,
    shutdown_grace: Duration,
}

impl Proxy {
    /// A proxy in front of `upstream` (`http://host:port`, optionally with a path prefix that
    /// every request's path is appended to). Only `http` upstreams: put TLS at the client
    /// side of the proxy, or on a sidecar.
    pub fn builder(cache: Cache, upstream: &str) -> Result<ProxyBuilder, Error> {
        let upstream = Upstream::new(upstream)?;
        Ok(ProxyBuilder {
            layer: ResponseCacheLayer::new(cache.clone()),
            cache,
            upstream,
            host: HostHeader::Upstream,
            admin_token: None,
            admin_listener: None,
            metrics: None,
            max_request_body: 16 << 20,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            max_header_bytes: 64 << 10,
            shutdown_grace: Duration::from_secs(30),
        })
    }
}

impl ProxyBuilder {
    /// The token of the admin API (`Authorization: Bearer TOKEN`); without one (or an empty
    /// one) the admin API is off, but for `GET /_cachelet/health`.
    pub fn admin_token(mut self, token: Option<String>) -> Self {
        self.admin_token = token.filter(|t| !t.is_empty());
        self
    }
    /// Serves the admin API (`/_cachelet/`, behind the same token) on a listener of its own,
    /// as [`Proxy::serve`] serves clients, e.g. one bound to a private address: the public
    /// listener then answers `/_cachelet/` with `404`, but for `GET /_cachelet/health`, which
    /// says only up or down there.
    pub fn admin_listener(mut self, listener: tokio::net::TcpListener) -> Self {
        self.admin_listener = Some(listener);
        self
    }
    /// What `GET /_cachelet/metrics` answers.
    pub fn metrics(mut self, render: MetricsRender) -> Self {
        self.metrics = Some(render);
        self
    }
    /// The response-caching layer's settings ([`ResponseCacheLayer`]'s builder methods).
    pub fn layer(mut self, f: impl FnOnce(ResponseCacheLayer) -> ResponseCacheLayer) -> Self {
        self.layer = f(self.layer);
        self
    }
    /// How long the upstream has to answer (its headers): 30 s; past it, `504`. The same bounds
    /// each wait for the next piece of its body: past it the body breaks off (nothing of it is
    /// stored).
    pub fn upstream_timeout(mut self, t: Duration) -> Self {
        self.upstream.timeout = t;
        self
    }
    /// The peers (addresses or ranges) whose `X-Forwarded-For`, `X-Forwarded-Proto` and
    /// `Forwarded` are kept and extended (a load balancer in front of the proxy); from any
    /// other client they are replaced by what the proxy sees. None by default.
    pub fn trusted_proxies(mut self, peers: Vec<IpRange>) -> Self {
        self.upstream.trusted = peers;
        self
    }
    /// What the upstream is told in `Host`: its own authority (the default, as nginx does), or
    /// the client's, which is then part of every entry's key (as Varnish does).
    pub fn host(mut self, host: HostHeader) -> Self {
        self.host = host;
        self.upstream.client_host = host == HostHeader::Client;
        self
    }
    /// The largest request body passed on: 16 MiB; a larger one is a `413`.
    pub fn max_request_body(mut self, bytes: u64) -> Self {
        self.max_request_body = bytes;
        self
    }
    /// How long a client has to send a connection's first bytes and each request's headers
    /// (an HTTP/1 connection idle between requests included), and an HTTP/2 peer to answer a
    /// keep-alive ping: 10 s.
    pub fn header_read_timeout(mut self, t: Duration) -> Self {
        self.header_read_timeout = t.max(Duration::from_millis(1));
        self
    }
    /// How long a connection may stay without a request in flight before it is closed
    /// (HTTP/2: a `GOAWAY`, requests in flight finish), and how often an HTTP/2 connection is
    /// pinged (every half of this), so that one whose peer went away is closed: 60 s.
    pub fn idle_timeout(mut self, t: Duration) -> Self {
        self.idle_timeout = t.max(Duration::from_millis(2));
        self
    }
    /// The most client connections at once: 10,000; past them, new ones wait to be accepted.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n.max(1);
        self
    }
    /// The most bytes of request headers: 64 KiB (HTTP/1.1: the read buffer; HTTP/2: the
    /// header list).
    pub fn max_header_bytes(mut self, bytes: usize) -> Self {
        self.max_header_bytes = bytes.max(8192);
        self
    }
    /// How long requests in flight may take to finish once shutdown begins: 30 s.
    pub fn shutdown_grace(mut self, t: Duration) -> Self {
        self.shutdown_grace = t;
        self
    }

    /// The proxy; recaches of routed ops go through it (a `GET` to the upstream).
    pub fn build(self) -> Proxy {
        // Waiters wait as long as the request they wait for may take (plus a margin for its
        // body), never giving up on a slow origin first.
        let layer = self
            .layer
            .origin_timeout(self.upstream.timeout + Duration::from_secs(1))
            .key_host(self.host == HostHeader::Client);
        let app = BoxCloneService::new(layer.layer(self.upstream));
        super::layer::install_route_loader(&self.cache, app.clone());
        Proxy {
            admin: Arc::new(Admin {
                cache: self.cache.clone(),
                token: self.admin_token.map(|t| digest(t.as_bytes())),
                metrics: self.metrics,
                pinged: std::sync::Mutex::new(None),
                apart: self.admin_listener.is_some(),
            }),
            admin_listener: self.admin_listener,
            cache: self.cache,
            app,
            host: self.host,
            max_request_body: self.max_request_body,
            header_read_timeout: self.header_read_timeout,
            idle_timeout: self.idle_timeout,
            max_connections: self.max_connections,
            max_header_bytes: self.max_header_bytes,
            shutdown_grace: self.shutdown_grace,
        }
    }
}

impl Proxy {
    /// Answers one request as the server does (admin API, or the cache in front of the
    /// upstream), without a connection: for tests and embedding.
    pub async fn handle(&self, req: Request<Body>) -> Response<Body> {
        dispatch(
            &self.admin,
            self.app.clone(),
            self.host,
            self.max_request_body,
            req,
        )
        .await
    }

    /// Serves clients on `listener` until `signal` completes; then stops accepting, lets
    /// requests in flight finish (up to the shutdown grace), and shuts the cache down
    /// (held invalidations delivered, or kept in the journal). A stored response is always
    /// whole: a fill happens once its body has been read to the end.
    pub async fn serve(
        mut self,
        listener: tokio::net::TcpListener,
        signal: impl Future<Output = ()> + Send,
    ) -> std::io::Result<()> {
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_read_timeout)
            .max_buf_size(self.max_header_bytes)
            .keep_alive(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(self.max_header_bytes as u32)
            // An HTTP/2 connection whose peer stops answering pings is closed.
            .keep_alive_interval(self.idle_timeout / 2)
            .keep_alive_timeout(self.header_read_timeout);
        let (stop, stopping) = tokio::sync::watch::channel(false);
        let connections = Arc::new(tokio::sync::Semaphore::new(self.max_connections));
        if let Some(l) = self.admin_listener.take() {
            tokio::spawn(serve_admin(
                l,
                self.admin.clone(),
                builder.clone(),
                stopping.clone(),
                self.header_read_timeout,
            ));
        }
        let mut signal = std::pin::pin!(signal);
        loop {
            // At most `max_connections` at once: past them, new ones wait in the listen queue.
            let permit = tokio::select! {
                p = connections.clone().acquire_owned() => p.expect("the semaphore is never closed"),
                () = &mut signal => break,
            };
            let (stream, addr) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors, a connection reset before accept: go on.
                        tracing::warn!("accept: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                },
                () = &mut signal => break,
            };
            let _ = stream.set_nodelay(true);
            let (admin, app, limit, host) = (
                self.admin.clone(),
                self.app.clone(),
                self.max_request_body,
                self.host,
            );
            let activity = Arc::new(Activity::default());
            let active = activity.clone();
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let (admin, app) = (admin.clone(), app.clone());
                let busy = Busy::new(active.clone());
                async move {
                    let _busy = busy;
                    let mut req =
                        req.map(|b| Body::new(http_body_util::Limited::new(b, limit as usize)));
                    req.extensions_mut().insert(ClientAddr(addr));
                    Ok::<_, Infallible>(dispatch(&admin, app, host, limit, req).await)
                }
            });
            let (builder, first_bytes, idle) =
                (builder.clone(), self.header_read_timeout, self.idle_timeout);
            let mut stopping = stopping.clone();
            tokio::spawn(async move {
                let _permit = permit;
                // A connection that sends nothing is cut: the first bytes decide between
                // HTTP/1 and HTTP/2, before either protocol's own timeouts apply.
                let mut byte = [0u8; 1];
                tokio::select! {
                    biased;
                    _ = stopping.changed() => return,
                    first = tokio::time::timeout(first_bytes, stream.peek(&mut byte)) => {
                        if !matches!(first, Ok(Ok(n)) if n > 0) {
                            tracing::debug!("connection from {addr}: nothing sent within {first_bytes:?}: closed");
                            return;
                        }
                    }
                }
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
                let mut conn = std::pin::pin!(conn);
                // Closed gracefully at shutdown, or once idle (no request in flight) for the
                // idle timeout: an HTTP/2 peer that answers pings keeps nothing open forever.
                let closing = tokio::select! {
                    r = conn.as_mut() => Some(r),
                    _ = stopping.changed() => None,
                    () = activity.idle_for(idle) => {
                        tracing::debug!("connection from {addr}: idle for {idle:?}: closed");
                        None
                    }
                };
                let r = match closing {
                    Some(r) => r,
                    None => {
                        conn.as_mut().graceful_shutdown();
                        conn.await
                    }
                };
                if let Err(e) = r {
                    tracing::debug!("connection from {addr}: {e}");
                }
            });
        }
        let _ = stop.send(true);
        drop(listener);
        // Every connection holds a permit until it is done.
        let all = u32::try_from(self.max_connections).unwrap_or(u32::MAX);
        if tokio::time::timeout(self.shutdown_grace, connections.acquire_many(all))
            .await
            .is_err()
        {
            tracing::warn!(
                "requests still in flight after {:?}: closed",
                self.shutdown_grace
            );
        }
        self.cache.shutdown().await;
        Ok(())
    }
}

/// The admin listener's loop: each connection answers only the admin API, until shutdown.
async fn serve_admin(
    listener: tokio::net::TcpListener,
    admin: Arc<Admin>,
    builder: hyper_util::server::conn::auto::Builder<TokioExecutor>,
    mut stopping: tokio::sync::watch::Receiver<bool>,
    first_bytes: Duration,
) {
    loop {
        let (stream, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("admin accept: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = stopping.changed() => return,
        };
        let admin = admin.clone();
        let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
            let admin = admin.clone();
            async move {
                let req = req.map(|b| Body::new(http_body_util::Limited::new(b, 1 << 20)));
                Ok::<_, Infallible>(admin.handle(req).await)
            }
        });
        let (builder, mut stopping) = (builder.clone(), stopping.clone());
        tokio::spawn(async move {
            let conn = builder.serve_connection(TokioIo::new(stream), svc);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => if let Err(e) = r {
                    tracing::debug!("admin connection from {addr}: {e}");
                },
                _ = stopping.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(first_bytes, conn).await;
                }
            }
        });
    }
}

/// What a connection is doing: requests in flight, and when the last one ended.
#[derive(Default)]
struct Activity {
    in_flight: std::sync::atomic::AtomicUsize,
    /// Milliseconds since `START` when the last request ended.
    ended: std::sync::atomic::AtomicU64,
}

fn since_start() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

impl Activity {
    /// Completes once no request has been in flight for `idle`.
    async fn idle_for(&self, idle: Duration) {
        use std::sync::atomic::Ordering;
        self.ended.fetch_max(since_start(), Ordering::AcqRel);
        loop {
            let wait = if self.in_flight.load(Ordering::Acquire) > 0 {
                idle
            } else {
                let quiet = since_start().saturating_sub(self.ended.load(Ordering::Acquire));
                match idle.checked_sub(Duration::from_millis(quiet)) {
                    Some(left) if !left.is_zero() => left,
                    _ => return,
                }
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// A request in flight on a connection (until it is answered, or dropped).
struct Busy(Arc<Activity>);

impl Busy {
    fn new(a: Arc<Activity>) -> Busy {
        a.in_flight
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Busy(a)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering;
        self.0.ended.fetch_max(since_start(), Ordering::AcqRel);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn dispatch(
    admin: &Admin,
    app: BoxCloneService<Request<Body>, Response<Body>, Infallible>,
    host: HostHeader,
    limit: u64,
    mut req: Request<Body>,
) -> Response<Body> {
    if req.uri().path().starts_with("/_cachelet/") {
        if !admin.apart {
            return admin.handle(req).await;
        }
        if req.uri().path() == "/_cachelet/health" && req.method() == Method::GET {
            return admin.health(false).await;
        }
        return text(
            StatusCode::NOT_FOUND,
            "the admin API is served on its own listener\n".into(),
        );
    }
    if host == HostHeader::Client {
        // One spelling of each host, in `Host`: what is keyed is what the upstream is told.
        match client_host(&req) {
            Ok(h) => {
                req.headers_mut().insert(header::HOST, h);
            }
            Err(why) => return text(StatusCode::BAD_REQUEST, format!("{why}\n")),
        }
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body larger than {limit} bytes"),
        );
    }
    let started = Instant::now();
    let Ok(answer) = app.oneshot(req).await;
    let outcome = match answer.headers().get("x-cache").map(HeaderValue::as_bytes) {
        Some(b"HIT") => "hit",
        Some(b"MISS") => "miss",
        _ => "pass",
    };
    crate::metrics::http_request(outcome, started.elapsed(), body_len(&answer));
    answer
}

fn body_len(r: &Response<Body>) -> u64 {
    http_body::Body::size_hint(r.body()).exact().unwrap_or(0)
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut r = Response::new(Body::from(value.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// What the upstream is told in `Host` ([`ProxyBuilder::host`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HostHeader {
    /// The upstream's own authority, whatever the client says (as nginx sends it): one site.
    #[default]
    Upstream,
    /// The client's (HTTP/2: the `:authority`), lowercased and without the default port; it
    /// is part of every entry's key (as Varnish keys it), so each host has its own entries. A
    /// request without one, or with one that is not an authority, is a `400`. Purges and
    /// invalidations by URL reach every host's entry of that URL; a recache warms the
    /// upstream authority's.
    Client,
}

impl std::str::FromStr for HostHeader {
    type Err = Error;
    fn from_str(s: &str) -> Result<HostHeader, Error> {
        match s.trim() {
            "upstream" => Ok(HostHeader::Upstream),
            "client" => Ok(HostHeader::Client),
            other => Err(Error::Setting {
                name: "host".into(),
                problem: format!("{other:?}: expected upstream or client"),
            }),
        }
    }
}

/// A request's host, normalised: lowercase, no default port (`:80`), no trailing dot.
fn client_host(req: &Request<Body>) -> Result<HeaderValue, &'static str> {
    let given = match req.uri().authority() {
        Some(a) => a.as_str().to_string(),
        None => req
            .headers()
            .get(header::HOST)
            .ok_or("the request names no host (Host)")?
            .to_str()
            .map_err(|_| "the request's Host is not text")?
            .to_string(),
    };
    let authority: Authority = given
        .parse()
        .map_err(|_| "the request's Host is not a host[:port]")?;
    if authority.as_str().contains('@') {
        return Err("the request's Host is not a host[:port]");
    }
    let name = authority.host().trim_end_matches('.').to_ascii_lowercase();
    if name.is_empty() {
        return Err("the request's Host is not a host[:port]");
    }
    let host = match authority.port_u16() {
        Some(80) | None => name,
        Some(port) => format!("{name}:{port}"),
    };
    HeaderValue::from_str(&host).map_err(|_| "the request's Host is not a host[:port]")
}

/// The upstream: a pooled HTTP client that forwards a request as a proxy does.
#[derive(Clone)]
struct Upstream {
    client: Client<HttpConnector, Body>,
    scheme: Scheme,
    authority: Authority,
    /// A path prefix, without its trailing `/`.
    prefix: String,
    timeout: Duration,
    /// Peers whose forwarding headers are kept.
    trusted: Vec<IpRange>,
    /// The client's `Host` is forwarded (normalised), not the upstream's authority.
    client_host: bool,
}

impl Upstream {
    fn new(url: &str) -> Result<Upstream, Error> {
        // Never echo credentials: `user:password@` is shown as `***@`.
        let shown = match url.split_once("://") {
            Some((scheme, rest)) => match rest.split('/').next().and_then(|a| a.rsplit_once('@')) {
                Some((_, host)) => format!("{scheme}://***@{host}"),
                None => url.to_string(),
            },
            None => url.to_string(),
        };
        let bad = |problem: &str| Error::Setting {
            name: "upstream".into(),
            problem: format!("{shown:?}: {problem}"),
        };
        let uri: Uri = url.parse().map_err(|_| bad("not a URL"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(bad(
                    "https upstreams are not supported: the proxy speaks http to its upstream",
                ))
            }
            _ => return Err(bad("expected http://host:port")),
        }
        let authority = uri.authority().ok_or_else(|| bad("no host"))?.clone();
        if authority.as_str().contains('@') {
            return Err(bad("credentials in the upstream URL are not supported"));
        }
        if uri.query().is_some() {
            return Err(bad("a query in the upstream URL is not supported"));
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .timer(TokioTimer::new())
            .build(connector);
        Ok(Upstream {
            client,
            scheme: Scheme::HTTP,
            authority,
            prefix: uri.path().trim_end_matches('/').to_string(),
            timeout: Duration::from_secs(30),
            trusted: Vec::new(),
            client_host: false,
        })
    }

    /// The request as it goes upstream: to the upstream's authority (its `Host`), with the
    /// forwarding headers this proxy writes. What a client sends of them is dropped (a client
    /// could make the upstream build an answer for another host, scheme or path that would then
    /// be stored under this URL) but from the peers [`ProxyBuilder::trusted_proxies`] names,
    /// whose `X-Forwarded-For`, `X-Forwarded-Proto` and `Forwarded` are kept and extended.
    fn forward(&self, req: Request<Body>) -> Request<Body> {
        let (mut parts, body) = req.into_parts();
        let client = parts.extensions.get::<ClientAddr>().map(|a| a.0.ip());
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let uri = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(format!("{}{path}", self.prefix))
            .build()
            .unwrap_or_else(|_| parts.uri.clone());
        strip_hop_by_hop(&mut parts.headers);
        let h = &mut parts.headers;
        let trusted = client.is_some_and(|ip| self.trusted.iter().any(|n| n.contains(ip)));
        if !trusted {
            for name in FORWARDING {
                h.remove(name);
            }
        }
        for name in REWRITING {
            h.remove(name);
        }
        if !(self.client_host && h.contains_key(header::HOST)) {
            h.insert(
                header::HOST,
                HeaderValue::from_str(self.authority.as_str()).expect("an authority is a header"),
            );
        }
        if let Some(ip) = client {
            let xff = match h.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
                Some(prior) => format!("{prior}, {ip}"),
                None => ip.to_string(),
            };
            if let Ok(v) = HeaderValue::from_str(&xff) {
                h.insert("x-forwarded-for", v);
            }
            let node = match ip {
                std::net::IpAddr::V4(ip) => ip.to_string(),
                std::net::IpAddr::V6(ip) => format!("\"[{ip}]\""),
            };
            let this = format!("for={node};proto=http");
            let forwarded = match h.get(header::FORWARDED).and_then(|v| v.to_str().ok()) {
                Some(prior) => format!("{prior}, {this}"),
                None => this,
            };
            if let Ok(v) = HeaderValue::from_str(&forwarded) {
                h.insert(header::FORWARDED, v);
            }
            if !h.contains_key("x-forwarded-proto") {
                h.insert("x-forwarded-proto", HeaderValue::from_static("http"));
            }
        }
        h.append(header::VIA, HeaderValue::from_static("1.1 cachelet"));
        parts.uri = uri;
        parts.version = Version::HTTP_11;
        Request::from_parts(parts, body)
    }
}

/// The forwarding headers a client may not set (kept only from a trusted proxy).
const FORWARDING: [&str; 3] = ["x-forwarded-for", "x-forwarded-proto", "forwarded"];

/// Headers that tell an upstream another host, port, scheme or path than the request's:
/// never forwarded, from anyone, since the cache does not key on them.
const REWRITING: [&str; 10] = [
    "x-forwarded-host",
    "x-forwarded-server",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-scheme",
    "x-forwarded-ssl",
    "x-host",
    "x-original-url",
    "x-rewrite-url",
    "x-original-host",
];

/// An address range (`10.0.0.0/8`, `::1/128`, or one address) of peers whose forwarding
/// headers are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpRange {
    base: std::net::IpAddr,
    bits: u8,
}

impl IpRange {
    /// Parses `ADDRESS` or `ADDRESS/BITS`; the error names what is wrong.
    pub fn parse(s: &str) -> Result<IpRange, Error> {
        let bad = |problem: &str| Error::Setting {
            name: "trusted proxies".into(),
            problem: format!("{s:?}: {problem}"),
        };
        let (addr, bits) = match s.trim().split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (s.trim(), None),
        };
        let base: std::net::IpAddr = addr.parse().map_err(|_| bad("not an IP address"))?;
        let max = if base.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            Some(b) => b
                .parse::<u8>()
                .ok()
                .filter(|b| *b <= max)
                .ok_or_else(|| bad(&format!("the prefix length must be 0 to {max}")))?,
            None => max,
        };
        Ok(IpRange { base, bits })
    }

    /// Whether `ip` is in the range.
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        let prefix = |a: u128, width: u32| -> u128 {
            let keep = u32::from(self.bits);
            if keep == 0 {
                0
            } else {
                a >> (width - keep)
            }
        };
        match (self.base, ip) {
            (std::net::IpAddr::V4(b), std::net::IpAddr::V4(i)) => {
                prefix(u32::from(b).into(), 32) == prefix(u32::from(i).into(), 32)
            }
            (std::net::IpAddr::V6(b), std::net::IpAddr::V6(i)) => {
                prefix(u128::from(b), 128) == prefix(u128::from(i), 128)
            }
            _ => false,
        }
    }
}

impl Service<Request<Body>> for Upstream {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future =
        std::pin::Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let req = self.forward(req);
        let (client, timeout) = (self.client.clone(), self.timeout);
        Box::pin(async move {
            let started = Instant::now();
            use crate::metrics::Upstream as Came;
            let (came, answer) = match tokio::time::timeout(timeout, client.request(req)).await {
                Ok(Ok(r)) => {
                    let (mut parts, body) = r.into_parts();
                    strip_hop_by_hop(&mut parts.headers);
                    parts
                        .headers
                        .append(header::VIA, HeaderValue::from_static("1.1 cachelet"));
                    (
                        Came::Answered(parts.status.as_u16()),
                        Response::from_parts(parts, Body::new(Stalls::new(body, timeout))),
                    )
                }
                Ok(Err(e)) if past_the_limit(&e) => (
                    Came::TooLarge,
                    text(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "request body larger than the limit\n".into(),
                    ),
                ),
                Ok(Err(e)) => {
                    tracing::warn!("upstream: {e}");
                    let mut detail = e.to_string();
                    let mut source = std::error::Error::source(&e);
                    while let Some(s) = source {
                        detail = format!("{detail}: {s}");
                        source = s.source();
                    }
                    (
                        Came::Unreachable,
                        text(
                            StatusCode::BAD_GATEWAY,
                            format!("upstream unreachable: {detail}\n"),
                        ),
                    )
                }
                Err(_) => (
                    Came::Timeout,
                    text(
                        StatusCode::GATEWAY_TIMEOUT,
                        format!("upstream did not answer within {timeout:?}\n"),
                    ),
                ),
            };
            crate::metrics::upstream(came, started.elapsed());
            Ok(answer)
        })
    }
}

/// An upstream's body that fails once no piece of it has come for the upstream timeout: a
/// stalled upstream holds neither its client nor the requests waiting for the fill (which
/// stores nothing of a body that broke off).
struct Stalls {
    body: hyper::body::Incoming,
    timeout: Duration,
    quiet: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl Stalls {
    fn new(body: hyper::body::Incoming, timeout: Duration) -> Stalls {
        Stalls {
            body,
            timeout,
            quiet: Box::pin(tokio::time::sleep(timeout)),
        }
    }
}

impl http_body::Body for Stalls {
    type Data = bytes::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        use std::task::Poll;
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(frame) => {
                let next = tokio::time::Instant::now() + this.timeout;
                this.quiet.as_mut().reset(next);
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => match this.quiet.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(format!(
                    "the upstream sent nothing more of its body for {:?}",
                    this.timeout
                )
                .into()))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Whether an upstream request failed because the client's body went past the limit (a
/// chunked body, whose length was not declared).
fn past_the_limit(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// The SHA-256 of a token: tokens are compared by their digests, in constant time, so that
/// neither their bytes nor their length leak through timing.
fn digest(token: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(token).into()
}

fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The admin API, under `/_cachelet/`.
struct Admin {
    cache: Cache,
    token: Option<[u8; 32]>,
    metrics: Option<MetricsRender>,
    /// The last ping of the backend, and its answer.
    pinged: std::sync::Mutex<Option<(Instant, Result<(), String>)>>,
    /// Served on a listener of its own ([`ProxyBuilder::admin_listener`]).
    apart: bool,
}

/// What `POST /_cachelet/purge` takes (any of the fields).
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Purge {
    #[serde(default)]
    tags: Vec<String>,
    /// Entry keys as the policies render them (`user:42`).
    #[serde(default)]
    keys: Vec<String>,
    /// Globs over the namespace's keys (`user:*`).
    #[serde(default)]
    patterns: Vec<String>,
    /// Request paths (`/users/42?expand=true`): the entries their GET reads.
    #[serde(default)]
    urls: Vec<String>,
}

impl Admin {
    async fn handle(&self, req: Request<Body>) -> Response<Body> {
        let path = req.uri().path().to_string();
        let method = req.method().clone();
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| digest(t.trim().as_bytes()));
        let authorized = match (&self.token, &given) {
            (Some(token), Some(g)) => same(g, token),
            _ => false,
        };
        if path == "/_cachelet/health" && method == Method::GET {
            return self.health(authorized).await;
        }
        let Some(token) = &self.token else {
            return text(
                StatusCode::FORBIDDEN,
                "the admin API is off: the proxy has no admin token (CACHELET_ADMIN_TOKEN)\n"
                    .into(),
            );
        };
        if !given.is_some_and(|g| same(&g, token)) {
            let mut r = text(
                StatusCode::UNAUTHORIZED,
                "the admin API needs Authorization: Bearer <token>\n".into(),
            );
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"cachelet\""),
            );
            return r;
        }
        match (method, path.as_str()) {
            (Method::POST, "/_cachelet/purge") => self.purge(req).await,
            (Method::POST, "/_cachelet/reload") => {
                let status = self.cache.reload_policies().await;
                json(
                    StatusCode::OK,
                    &serde_json::to_value(&status).unwrap_or_default(),
                )
            }
            (Method::GET, "/_cachelet/metrics") => match &self.metrics {
                Some(render) => {
                    let mut r = text(StatusCode::OK, render());
                    r.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("text/plain; version=0.0.4"),
                    );
                    r
                }
                None => text(StatusCode::NOT_FOUND, "no metrics recorder\n".into()),
            },
            (Method::GET, "/_cachelet/policies") => self.policies(),
            _ => text(
                StatusCode::NOT_FOUND,
                format!(
                    "no admin endpoint {path}: GET health, metrics, policies; POST purge, reload\n"
                ),
            ),
        }
    }

    /// Up (`200`) or down (`503`: the backend does not answer); the details (policies,
    /// quarantines, the backend's error, held invalidations) only with the token. The
    /// backend is pinged at most once a second, however often health is asked.
    async fn health(&self, authorized: bool) -> Response<Body> {
        let backend = {
            let recent = self
                .pinged
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
                .filter(|(at, _)| at.elapsed() < Duration::from_secs(1));
            match recent {
                Some((_, answer)) => answer,
                None => {
                    let answer = self.cache.ping().await.map_err(|e| e.to_string());
                    *self.pinged.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some((Instant::now(), answer.clone()));
                    answer
                }
            }
        };
        let code = if backend.is_ok() {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        if !authorized {
            let up = if backend.is_ok() { "up" } else { "down" };
            return json(code, &serde_json::json!({ "status": up }));
        }
        let status = self.cache.policy_status();
        let quarantined: Vec<_> = status
            .policies
            .iter()
            .filter_map(|p| {
                let s = p.serving.as_ref()?;
                Some((s.name.clone(), s.quarantined.clone()?))
            })
            .collect();
        let body = serde_json::json!({
            "status": if backend.is_ok() { "up" } else { "down" },
            "backend": match &backend { Ok(()) => "ok".to_string(), Err(e) => e.clone() },
            "policies": self.cache.policies().iter().map(|p| &p.name).collect::<Vec<_>>(),
            "quarantined": quarantined.iter().map(|(n, why)| serde_json::json!({"policy": n, "why": why})).collect::<Vec<_>>(),
            "held_invalidations": self.cache.held_invalidations(),
        });
        json(code, &body)
    }

    fn policies(&self) -> Response<Body> {
        let status = self.cache.policy_status();
        let body = serde_json::json!({
            "policies": self.cache.policies().iter().map(|p| serde_json::json!({
                "name": p.name,
                "version": p.version,
                "ops": p.ops.iter().map(|o| serde_json::json!({
                    "name": o.name,
                    "kind": match o.kind { crate::policy::OpKind::Read => "read", crate::policy::OpKind::Write => "write" },
                    "route": o.route,
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "status": serde_json::to_value(&status).unwrap_or_default(),
        });
        json(StatusCode::OK, &body)
    }

    /// Invalidates `tags`: whether it was delivered, held (the backend could not take it now;
    /// this host delivers it as soon as it can) or had nothing to do.
    async fn invalidate(&self, tags: &[String]) -> Result<&'static str, Response<Body>> {
        match self.cache.invalidate(tags).await {
            Ok(crate::backend::Invalidation::Held { .. }) => Ok("held"),
            Ok(crate::backend::Invalidation::Nothing) => Ok("nothing"),
            Ok(_) => Ok("delivered"),
            Err(e) => Err(text(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n"))),
        }
    }

    async fn purge(&self, req: Request<Body>) -> Response<Body> {
        let bytes = match http_body_util::Limited::new(req.into_body(), 1 << 20)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(e) => return text(StatusCode::BAD_REQUEST, format!("purge body: {e}\n")),
        };
        let purge: Purge = match serde_json::from_slice(&bytes) {
            Ok(p) => p,
            Err(e) => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "purge body: {e} (expected JSON: {{\"tags\": [...], \"keys\": [...], \
                         \"patterns\": [...], \"urls\": [...]}})\n"
                    ),
                )
            }
        };
        let mut out = serde_json::Map::new();
        if !purge.tags.is_empty() {
            match self.invalidate(&purge.tags).await {
                Ok(how) => out.insert("tags".into(), how.into()),
                Err(e) => return e,
            };
        }
        let mut keys = purge.keys;
        let mut unrouted = Vec::new();
        for url in &purge.urls {
            let uri: Uri = match url.parse() {
                Ok(u) => u,
                Err(_) => return text(StatusCode::BAD_REQUEST, format!("{url:?} is not a path\n")),
            };
            let key = match self.cache.route("GET", uri.path(), uri.query()) {
                Some(r) => match self.cache.plan(&r.op, &r.args).await {
                    Ok(plan) => Some(self.cache.relative_key(&plan.key).to_string()),
                    Err(_) => None,
                },
                None => None,
            };
            match key {
                Some(k) => keys.push(k),
                None => unrouted.push(url.clone()),
            }
        }
        let mut deleted = 0u64;
        if !keys.is_empty() {
            // Each entry and its variants carry their key as a tag: one invalidation, fenced
            // (a fill in flight does not put a purged answer back), no scan of the namespace.
            let tags: Vec<String> = keys.iter().map(|k| crate::tags::of_key(k)).collect();
            match self.invalidate(&tags).await {
                Ok(how) => out.insert("keys".into(), how.into()),
                Err(e) => return e,
            };
        }
        for key in &keys {
            // The entry itself too, whoever stored it (a direct write carries no such tag).
            match self.cache.delete(key).await {
                Ok(d) => deleted += u64::from(d),
                Err(e) => return text(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
            }
        }
        for pattern in &purge.patterns {
            match self.cache.delete_match(pattern).await {
                Ok(n) => deleted += n,
                Err(e) => return text(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
            }
        }
        if !keys.is_empty() || !purge.patterns.is_empty() {
            out.insert("deleted".into(), deleted.into());
        }
        if !unrouted.is_empty() {
            out.insert("not_cached_urls".into(), unrouted.into());
        }
        json(StatusCode::OK, &serde_json::Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_by_digest() {
        assert!(same(&digest(b"s3cret"), &digest(b"s3cret")));
        assert!(!same(&digest(b"s3cret"), &digest(b"s3cre")));
        assert!(!same(&digest(b"s3cret"), &digest(b"")));
    }

    #[test]
    fn upstream_urls_are_checked() {
        for (url, says) in [
            ("https://a:1", "https"),
            ("ftp://a", "expected http"),
            ("http://u:p@a:1", "credentials"),
            ("not a url", "not a URL"),
            ("http://a:1/?x=1", "query"),
        ] {
            let e = Upstream::new(url).err().unwrap().to_string();
            assert!(e.contains(says), "{url}: {e}");
            assert!(!e.contains("u:p"), "{e}");
        }
        let u = Upstream::new("http://127.0.0.1:9/api/").unwrap();
        let req = Request::get("/users/1?x=2").body(Body::empty()).unwrap();
        let f = u.forward(req);
        assert_eq!(f.uri(), "http://127.0.0.1:9/api/users/1?x=2");
        assert_eq!(f.headers()["host"], "127.0.0.1:9");
    }

    #[test]
    fn hop_by_hop_and_forwarding_headers() {
        let mut u = Upstream::new("http://127.0.0.1:9").unwrap();
        let req = || {
            Request::get("/x")
                .header("host", "example.com")
                .header("connection", "keep-alive, x-private")
                .header("x-private", "1")
                .header("te", "trailers")
                .header("x-forwarded-for", "10.0.0.1")
                .header("x-forwarded-host", "evil.example")
                .header("forwarded", "for=10.0.0.1")
                .extension(ClientAddr("192.0.2.7:5555".parse().unwrap()))
                .body(Body::empty())
                .unwrap()
        };
        let f = u.forward(req());
        let h = f.headers();
        assert!(
            !h.contains_key("connection") && !h.contains_key("x-private") && !h.contains_key("te")
        );
        assert_eq!(h["host"], "127.0.0.1:9");
        assert_eq!(h["x-forwarded-for"], "192.0.2.7");
        assert!(!h.contains_key("x-forwarded-host"));
        assert_eq!(h["forwarded"], "for=192.0.2.7;proto=http");
        // From a trusted peer the chain goes on; X-Forwarded-Host still never does.
        u.trusted = vec![IpRange::parse("192.0.2.0/24").unwrap()];
        let f = u.forward(req());
        let h = f.headers();
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 192.0.2.7");
        assert_eq!(h["forwarded"], "for=10.0.0.1, for=192.0.2.7;proto=http");
        assert!(!h.contains_key("x-forwarded-host"));
        assert_eq!(f.version(), Version::HTTP_11);
    }

    #[test]
    fn address_ranges_parse_and_match() {
        let r = IpRange::parse("10.0.0.0/8").unwrap();
        assert!(r.contains("10.1.2.3".parse().unwrap()));
        assert!(!r.contains("11.0.0.1".parse().unwrap()));
        assert!(!r.contains("::1".parse().unwrap()));
        let one = IpRange::parse("::1").unwrap();
        assert!(one.contains("::1".parse().unwrap()));
        assert!(!one.contains("::2".parse().unwrap()));
        assert!(IpRange::parse("0.0.0.0/0")
            .unwrap()
            .contains("203.0.113.9".parse().unwrap()));
        for bad in ["10.0.0.0/33", "nonsense", "10.0.0.0/x"] {
            let e = IpRange::parse(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
    }
}
