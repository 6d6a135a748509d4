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
use axum::http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tower::util::BoxCloneService;
use tower::{Layer, ServiceExt};

mod admin;
mod upstream;

pub use upstream::{HostHeader, IpRange};

use self::admin::{digest, Admin};
use self::upstream::{client_host, Upstream};
use super::layer::ResponseCacheLayer;
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
                accepted = accept(&listener, "accept") => accepted,
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

/// The next connection: an error accepting one (out of file descriptors, a connection reset
/// before it was accepted) is logged, and the listener tried again.
async fn accept(
    listener: &tokio::net::TcpListener,
    what: &str,
) -> (tokio::net::TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(a) => return a,
            Err(e) => {
                tracing::warn!("{what}: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
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
            accepted = accept(&listener, "admin accept") => accepted,
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

pub(super) fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

pub(super) fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut r = Response::new(Body::from(value.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}
