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
//! As a proxy must: hop-by-hop headers are dropped both ways; `Host` is passed on as the
//! client sent it; `X-Forwarded-For`, `-Host`, `-Proto` and `Forwarded` say who asked;
//! bodies stream both ways; connections to the upstream are pooled; an upstream that does not
//! answer within the timeout is a `504`, one that cannot be reached a `502` (neither is ever
//! stored); a request body past the limit is a `413`; a client that sends its headers too
//! slowly is cut off. HTTP/1.1 (keep-alive) and HTTP/2 (prior knowledge) from clients.

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

use super::layer::{Recache, ResponseCacheLayer};
use super::semantics::strip_hop_by_hop;
use crate::backend::glob_escape;
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
    admin_token: Option<String>,
    metrics: Option<MetricsRender>,
    max_request_body: u64,
    header_read_timeout: Duration,
    max_header_bytes: usize,
    shutdown_grace: Duration,
}

/// A caching reverse proxy: the cache in front of one upstream. See the [module](self).
pub struct Proxy {
    cache: Cache,
    app: BoxCloneService<Request<Body>, Response<Body>, Infallible>,
    admin: Arc<Admin>,
    max_request_body: u64,
    header_read_timeout: Duration,
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
            admin_token: None,
            metrics: None,
            max_request_body: 16 << 20,
            header_read_timeout: Duration::from_secs(10),
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
    /// How long the upstream has to answer (its headers): 30 s; past it, `504`.
    pub fn upstream_timeout(mut self, t: Duration) -> Self {
        self.upstream.timeout = t;
        self
    }
    /// The largest request body passed on: 16 MiB; a larger one is a `413`.
    pub fn max_request_body(mut self, bytes: u64) -> Self {
        self.max_request_body = bytes;
        self
    }
    /// How long a client has to send a request's headers: 10 s.
    pub fn header_read_timeout(mut self, t: Duration) -> Self {
        self.header_read_timeout = t;
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
        let app = BoxCloneService::new(self.layer.layer(self.upstream));
        super::layer::install_route_loader(&self.cache, app.clone());
        Proxy {
            admin: Arc::new(Admin {
                cache: self.cache.clone(),
                token: self.admin_token.map(|t| digest(t.as_bytes())),
                metrics: self.metrics,
            }),
            cache: self.cache,
            app,
            max_request_body: self.max_request_body,
            header_read_timeout: self.header_read_timeout,
            max_header_bytes: self.max_header_bytes,
            shutdown_grace: self.shutdown_grace,
        }
    }
}

impl Proxy {
    /// Answers one request as the server does (admin API, or the cache in front of the
    /// upstream), without a connection: for tests and embedding.
    pub async fn handle(&self, req: Request<Body>) -> Response<Body> {
        dispatch(&self.admin, self.app.clone(), self.max_request_body, req).await
    }

    /// Serves clients on `listener` until `signal` completes; then stops accepting, lets
    /// requests in flight finish (up to the shutdown grace), and shuts the cache down
    /// (held invalidations delivered, or kept in the journal). A stored response is always
    /// whole: a fill happens once its body has been read to the end.
    pub async fn serve(
        self,
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
            .max_header_list_size(self.max_header_bytes as u32);
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let mut signal = std::pin::pin!(signal);
        loop {
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
            let (admin, app, limit) = (self.admin.clone(), self.app.clone(), self.max_request_body);
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let (admin, app) = (admin.clone(), app.clone());
                async move {
                    let mut req =
                        req.map(|b| Body::new(http_body_util::Limited::new(b, limit as usize)));
                    req.extensions_mut().insert(ClientAddr(addr));
                    Ok::<_, Infallible>(dispatch(&admin, app, limit, req).await)
                }
            });
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
            let conn = graceful.watch(conn.into_owned());
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!("connection from {addr}: {e}");
                }
            });
        }
        drop(listener);
        if tokio::time::timeout(self.shutdown_grace, graceful.shutdown())
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

async fn dispatch(
    admin: &Admin,
    app: BoxCloneService<Request<Body>, Response<Body>, Infallible>,
    limit: u64,
    req: Request<Body>,
) -> Response<Body> {
    if req.uri().path().starts_with("/_cachelet/") {
        return admin.handle(req).await;
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

/// The upstream: a pooled HTTP client that forwards a request as a proxy does.
#[derive(Clone)]
struct Upstream {
    client: Client<HttpConnector, Body>,
    scheme: Scheme,
    authority: Authority,
    /// A path prefix, without its trailing `/`.
    prefix: String,
    timeout: Duration,
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
        })
    }

    /// The request as it goes upstream.
    fn forward(&self, req: Request<Body>) -> Request<Body> {
        let (mut parts, body) = req.into_parts();
        let client = parts.extensions.get::<ClientAddr>().map(|a| a.0.ip());
        let recache = parts.extensions.get::<Recache>().is_some();
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let uri = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(format!("{}{path}", self.prefix))
            .build()
            .unwrap_or_else(|_| parts.uri.clone());
        // The host the client asked for: its Host header, else (HTTP/2) the URI's authority.
        let host = parts
            .headers
            .get(header::HOST)
            .cloned()
            .or_else(|| {
                parts
                    .uri
                    .authority()
                    .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            })
            .unwrap_or_else(|| {
                HeaderValue::from_str(self.authority.as_str())
                    .unwrap_or(HeaderValue::from_static("localhost"))
            });
        strip_hop_by_hop(&mut parts.headers);
        let h = &mut parts.headers;
        h.insert(header::HOST, host.clone());
        if !recache {
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
                let host_text = host.to_str().unwrap_or("");
                let this = format!("for={node};host=\"{host_text}\";proto=http");
                let forwarded = match h.get(header::FORWARDED).and_then(|v| v.to_str().ok()) {
                    Some(prior) => format!("{prior}, {this}"),
                    None => this,
                };
                if let Ok(v) = HeaderValue::from_str(&forwarded) {
                    h.insert(header::FORWARDED, v);
                }
            }
            if !h.contains_key("x-forwarded-host") {
                h.insert("x-forwarded-host", host);
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
            let answer = match tokio::time::timeout(timeout, client.request(req)).await {
                Ok(Ok(r)) => {
                    let (mut parts, body) = r.into_parts();
                    strip_hop_by_hop(&mut parts.headers);
                    Response::from_parts(parts, Body::new(body))
                }
                Ok(Err(e)) => {
                    tracing::warn!("upstream: {e}");
                    let mut detail = e.to_string();
                    let mut source = std::error::Error::source(&e);
                    while let Some(s) = source {
                        detail = format!("{detail}: {s}");
                        source = s.source();
                    }
                    text(
                        StatusCode::BAD_GATEWAY,
                        format!("upstream unreachable: {detail}\n"),
                    )
                }
                Err(_) => text(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!("upstream did not answer within {timeout:?}\n"),
                ),
            };
            crate::metrics::upstream(answer.status().as_u16(), started.elapsed());
            Ok(answer)
        })
    }
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
        if path == "/_cachelet/health" && method == Method::GET {
            return self.health().await;
        }
        let Some(token) = &self.token else {
            return text(
                StatusCode::FORBIDDEN,
                "the admin API is off: the proxy has no admin token (CACHELET_ADMIN_TOKEN)\n"
                    .into(),
            );
        };
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| digest(t.trim().as_bytes()));
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

    async fn health(&self) -> Response<Body> {
        let backend = self.cache.ping().await;
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
            "backend": match &backend { Ok(()) => "ok".to_string(), Err(e) => e.to_string() },
            "policies": self.cache.policies().iter().map(|p| &p.name).collect::<Vec<_>>(),
            "quarantined": quarantined.iter().map(|(n, why)| serde_json::json!({"policy": n, "why": why})).collect::<Vec<_>>(),
            "held_invalidations": self.cache.held_invalidations(),
        });
        let code = if backend.is_ok() {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
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
            let how = match self.cache.invalidate(&purge.tags).await {
                Ok(crate::backend::Invalidation::Held { .. }) => "held",
                Ok(crate::backend::Invalidation::Nothing) => "nothing",
                Ok(_) => "delivered",
                Err(e) => return text(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
            };
            out.insert("tags".into(), how.into());
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
        for key in &keys {
            // The entry, and the variants of a response that varies by request headers.
            match self.cache.delete(key).await {
                Ok(d) => deleted += u64::from(d),
                Err(e) => return text(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
            }
            let variants = format!("{}|vary|*", glob_escape(key));
            match self.cache.delete_match(&variants).await {
                Ok(n) => deleted += n,
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
        let u = Upstream::new("http://127.0.0.1:9").unwrap();
        let req = Request::get("/x")
            .header("host", "example.com")
            .header("connection", "keep-alive, x-private")
            .header("x-private", "1")
            .header("te", "trailers")
            .header("x-forwarded-for", "10.0.0.1")
            .extension(ClientAddr("192.0.2.7:5555".parse().unwrap()))
            .body(Body::empty())
            .unwrap();
        let f = u.forward(req);
        let h = f.headers();
        assert!(
            !h.contains_key("connection") && !h.contains_key("x-private") && !h.contains_key("te")
        );
        assert_eq!(h["host"], "example.com");
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 192.0.2.7");
        assert_eq!(h["x-forwarded-host"], "example.com");
        assert_eq!(
            h["forwarded"],
            "for=192.0.2.7;host=\"example.com\";proto=http"
        );
        assert_eq!(f.version(), Version::HTTP_11);
    }
}
