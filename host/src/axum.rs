//! axum integration (feature `axum`): a tower layer that caches whole responses by the routes
//! the policies declare, and serving with a graceful shutdown that delivers held
//! invalidations.
//!
//! Handlers read and write through the cache with the attribute macros and a `Cache` in the
//! app's state (`State<Cache>`); [`ResponseCacheLayer`] caches whole responses instead, for
//! the ops whose policy declares a route (`op-info.route`, e.g. `GET /users/{user_id}`): path
//! and query parameters are the op's arguments. It is the layer `cachelet serve` puts in front
//! of an upstream, so one policy drives both.
//!
//! What it stores: a `200` answer to a `GET` without `Authorization` or `Cookie`, unless the
//! answer says `Cache-Control: no-store` or `private`, sets a cookie, or varies on `*`;
//! replayed with its status, body and headers (hop-by-hop headers dropped) and `X-Cache: HIT`
//! (`MISS` when it was loaded). A request to a write route runs the handler as the write's
//! action: a `2xx` answer applies the op's write rule (invalidations, recache), any other
//! invalidates nothing. Everything else passes through.
//!
//! ```no_run
//! use axum::{routing::get, Router};
//! use cachelet::axum::{serve, ResponseCacheLayer};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let cache = cachelet::Cache::builder().policy_file("policy.wasm").build().await?;
//! let app = Router::new()
//!     .route("/users/{user_id}", get(|| async { "ann" }))
//!     .layer(ResponseCacheLayer::new(cache.clone()));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! // The stop signal: e.g. `tokio::signal::ctrl_c()` (tokio's `signal` feature).
//! let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! serve(listener, app, cache, async {
//!     let _ = stopped.await;
//! })
//! .await?;
//! # Ok(()) }
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::{
    header, HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode,
};
use base64::Engine as _;
use tower::{Layer, Service, ServiceExt};

use crate::{Cache, LoadError};

/// Serves `app` on `listener` until `signal` completes, then lets requests in flight finish
/// (a write among them finishes its invalidation) and shuts the cache down: held
/// invalidations are delivered, or kept in the journal (see [`Cache::shutdown`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    cache: Cache,
    signal: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let out = axum::serve(listener, app)
        .with_graceful_shutdown(signal)
        .await;
    cache.shutdown().await;
    out
}

/// Caches whole responses by the routes the policies declare. See the [module](self).
#[derive(Clone)]
pub struct ResponseCacheLayer {
    cache: Cache,
    max_body: usize,
}

impl ResponseCacheLayer {
    /// A layer over `cache`; bodies up to 8 MiB are stored.
    pub fn new(cache: Cache) -> ResponseCacheLayer {
        ResponseCacheLayer {
            cache,
            max_body: 8 << 20,
        }
    }

    /// The largest body stored, in bytes: a larger answer is passed on, not cached.
    pub fn max_body(mut self, bytes: usize) -> ResponseCacheLayer {
        self.max_body = bytes;
        self
    }
}

impl<S> Layer<S> for ResponseCacheLayer {
    type Service = ResponseCache<S>;

    fn layer(&self, inner: S) -> ResponseCache<S> {
        ResponseCache {
            inner,
            cache: self.cache.clone(),
            max_body: self.max_body,
        }
    }
}

/// The service [`ResponseCacheLayer`] makes.
#[derive(Clone)]
pub struct ResponseCache<S> {
    inner: S,
    cache: Cache,
    max_body: usize,
}

impl<S> Service<Request<Body>> for ResponseCache<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        // The clone that was made ready serves this request (tower's rule for cloned services).
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let cache = self.cache.clone();
        let max_body = self.max_body;
        Box::pin(async move {
            let found = cache.route(req.method().as_str(), req.uri().path(), req.uri().query());
            let Some((op, args, kind)) = found else {
                return inner.oneshot(req).await;
            };
            match kind {
                crate::OpKind::Read if req.method() == Method::GET && !personal(req.headers()) => {
                    Ok(read(&cache, &op, args, inner, req, max_body).await)
                }
                crate::OpKind::Write
                    if req.method() != Method::GET && req.method() != Method::HEAD =>
                {
                    Ok(write(&cache, &op, args, inner, req).await)
                }
                _ => inner.oneshot(req).await,
            }
        })
    }
}

/// The service the layer wraps (an axum router's routes).
trait Routes:
    Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future: Send>
    + Clone
    + Send
    + 'static
{
}

impl<S> Routes for S
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
}

/// A request that carries credentials: answered for one user, never shared.
fn personal(h: &HeaderMap) -> bool {
    h.contains_key(header::AUTHORIZATION) || h.contains_key(header::COOKIE)
}

/// A stored response.
#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    status: u16,
    headers: Vec<(String, String)>,
    /// Base64.
    body: String,
}

/// Why a loaded answer is not stored: it goes back to its caller as it is.
enum NotStored {
    /// The answer, to pass on.
    Answer(Response<Body>),
    /// This caller waited for another's load, which was not stored: it asks itself.
    Waited,
}

impl std::fmt::Display for NotStored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotStored::Answer(r) => write!(f, "answer not cacheable ({})", r.status()),
            NotStored::Waited => write!(f, "the load waited for was not cacheable"),
        }
    }
}

impl From<LoadError> for NotStored {
    fn from(_: LoadError) -> Self {
        NotStored::Waited
    }
}

const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "age",
];

fn cacheable(r: &Response<Body>) -> bool {
    if r.status() != StatusCode::OK || r.headers().contains_key(header::SET_COOKIE) {
        return false;
    }
    let says = |name: HeaderName, what: &[&str]| {
        r.headers().get_all(name).iter().any(|v| {
            v.to_str().unwrap_or("").split(',').any(|d| {
                let d = d.trim().to_ascii_lowercase();
                what.iter()
                    .any(|w| d == *w || d.starts_with(&format!("{w}=")))
            })
        })
    };
    !says(header::CACHE_CONTROL, &["no-store", "private"]) && !says(header::VARY, &["*"])
}

async fn read<S: Routes>(
    cache: &Cache,
    op: &str,
    args: crate::Args,
    inner: S,
    req: Request<Body>,
    max_body: usize,
) -> Response<Body> {
    let loaded = Arc::new(AtomicBool::new(false));
    let flag = loaded.clone();
    // Kept for a waiter whose leader's answer was not stored: it asks on its own.
    let (parts, body) = req.into_parts();
    let again = Request::from_parts(parts.clone(), Body::empty());
    let first = Request::from_parts(parts, body);
    let fallback = inner.clone();
    let out = cache
        .read(op, &args, move || async move {
            flag.store(true, Ordering::Relaxed);
            let Ok(answer) = inner.oneshot(first).await;
            if !cacheable(&answer) {
                return Err(NotStored::Answer(answer));
            }
            let (parts, body) = answer.into_parts();
            match axum::body::to_bytes(body, max_body).await {
                Ok(bytes) => Ok(Stored {
                    status: parts.status.as_u16(),
                    headers: parts
                        .headers
                        .iter()
                        .filter(|(n, _)| !HOP_BY_HOP.contains(&n.as_str()))
                        .filter_map(|(n, v)| Some((n.to_string(), v.to_str().ok()?.to_string())))
                        .collect(),
                    body: base64::engine::general_purpose::STANDARD.encode(&bytes),
                }),
                Err(e) => Err(NotStored::Answer(
                    Response::builder()
                        .status(StatusCode::BAD_GATEWAY)
                        .body(Body::from(format!("answer body not read: {e}")))
                        .expect("a valid response"),
                )),
            }
        })
        .await;
    match out {
        Ok(stored) => replay(
            stored,
            if loaded.load(Ordering::Relaxed) {
                "MISS"
            } else {
                "HIT"
            },
        ),
        Err(NotStored::Answer(answer)) => answer,
        Err(NotStored::Waited) => {
            let Ok(answer) = fallback.oneshot(again).await;
            answer
        }
    }
}

fn replay(stored: Stored, how: &'static str) -> Response<Body> {
    let body = base64::engine::general_purpose::STANDARD
        .decode(stored.body.as_bytes())
        .unwrap_or_default();
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    for (n, v) in stored.headers {
        if let (Ok(n), Ok(v)) = (HeaderName::try_from(n), HeaderValue::try_from(v)) {
            r.headers_mut().append(n, v);
        }
    }
    r.headers_mut()
        .insert("x-cache", HeaderValue::from_static(how));
    r
}

/// The answer of a write, for the write rule: its status.
struct Answered(Response<Body>);

impl serde::Serialize for Answered {
    fn serialize<Z: serde::Serializer>(&self, s: Z) -> Result<Z::Ok, Z::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(1))?;
        m.serialize_entry("status", &self.0.status().as_u16())?;
        m.end()
    }
}

async fn write<S: Routes>(
    cache: &Cache,
    op: &str,
    args: crate::Args,
    inner: S,
    req: Request<Body>,
) -> Response<Body> {
    let out = cache
        .write(op, &args, || async move {
            let Ok(answer) = inner.oneshot(req).await;
            if answer.status().is_success() {
                Ok(Answered(answer))
            } else {
                Err(answer)
            }
        })
        .await;
    match out {
        Ok(Answered(answer)) | Err(answer) => answer,
    }
}
