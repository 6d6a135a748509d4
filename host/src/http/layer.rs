//! The response-caching layer: a tower `Layer` that caches whole responses by the routes the
//! policies declare, in front of an axum app or (in `cachelet serve`) an upstream.
//!
//! A request is routed natively (no Wasm call for a templated op) to its op and arguments;
//! the op's rule (key, TTL, tags, `lock`, `early_ttl`) comes from the policy. A read is served
//! from the stored response while it is fresh; otherwise the request goes through, once per
//! key with `lock`, and the answer streams to its client while it is stored. What the upstream
//! says decides what is stored and for how long ([`semantics`](super::semantics)).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::{header, request, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::sync::{mpsc, oneshot};
use tower::util::BoxCloneService;
use tower::{Layer, Service, ServiceExt};

use super::entry::{HttpEntry, Kind, Stored};
use super::semantics::{self, cache_status, Keep};
use crate::args::Args;
use crate::cache::Cache;
use crate::error::LoadError;
use crate::policy::OpKind;
use crate::policy::Routed;
use crate::read::{Plan, Storage};
use crate::route::RouteOptions;

/// Caches whole responses by the routes the policies declare. See the [module](crate::axum).
#[derive(Clone)]
pub struct ResponseCacheLayer {
    ctx: Arc<Ctx>,
}

/// What every request of a layer shares.
struct Ctx {
    cache: Cache,
    max_body: usize,
    hit_for_miss: Duration,
    negative: Duration,
    origin_timeout: Duration,
    surrogate: Vec<HeaderName>,
    forward_surrogate: bool,
    key_host: bool,
    /// Most bytes of bodies read for fills at once, and how many are.
    fill_budget: usize,
    filling: std::sync::atomic::AtomicUsize,
}

impl Ctx {
    /// Removes what the upstream tells this cache alone: `Surrogate-Control`, and the
    /// surrogate-key headers unless they are forwarded.
    fn for_clients(&self, h: &mut axum::http::HeaderMap) {
        h.remove(semantics::SURROGATE_CONTROL);
        if !self.forward_surrogate {
            for n in &self.surrogate {
                h.remove(n);
            }
        }
    }
}

impl ResponseCacheLayer {
    /// A layer over `cache`: bodies up to 8 MiB are stored; an uncacheable answer lets the
    /// requests of its key through without waiting for each other for 10 s (hit-for-miss);
    /// tags are also read from the answers' `Surrogate-Key` and `Cache-Tag` headers, which
    /// are not passed on to the client.
    pub fn new(cache: Cache) -> ResponseCacheLayer {
        ResponseCacheLayer {
            ctx: Arc::new(Ctx {
                cache,
                max_body: 8 << 20,
                hit_for_miss: Duration::from_secs(10),
                negative: Duration::from_secs(1),
                origin_timeout: Duration::ZERO,
                surrogate: vec![
                    HeaderName::from_static("surrogate-key"),
                    HeaderName::from_static("cache-tag"),
                ],
                forward_surrogate: false,
                key_host: false,
                fill_budget: 512 << 20,
                filling: Default::default(),
            }),
        }
    }

    fn with(mut self, f: impl FnOnce(&mut Ctx)) -> ResponseCacheLayer {
        if let Some(ctx) = Arc::get_mut(&mut self.ctx) {
            f(ctx)
        } else {
            let c = &*self.ctx;
            let mut ctx = Ctx {
                cache: c.cache.clone(),
                max_body: c.max_body,
                hit_for_miss: c.hit_for_miss,
                negative: c.negative,
                origin_timeout: c.origin_timeout,
                surrogate: c.surrogate.clone(),
                forward_surrogate: c.forward_surrogate,
                key_host: c.key_host,
                fill_budget: c.fill_budget,
                filling: Default::default(),
            };
            f(&mut ctx);
            self.ctx = Arc::new(ctx);
        }
        self
    }

    /// The largest body stored, in bytes: a larger answer streams to its client and is not
    /// stored (requests of its key then pass for the hit-for-miss time).
    pub fn max_body(self, bytes: usize) -> ResponseCacheLayer {
        self.with(|c| c.max_body = bytes)
    }

    /// Most bytes of bodies being read for fills at once (512 MiB): past them, an answer
    /// streams to its client without being stored (and leaves no hit-for-miss marker), so that
    /// many concurrent misses of large answers cannot exhaust the memory.
    pub fn fill_budget(self, bytes: usize) -> ResponseCacheLayer {
        self.with(|c| c.fill_budget = bytes)
    }

    /// How long an answer that may not be stored lets the requests of its key straight
    /// through (each to the origin, none waiting for another): 10 s by default.
    pub fn hit_for_miss(self, time: Duration) -> ResponseCacheLayer {
        self.with(|c| c.hit_for_miss = time)
    }

    /// How long an error of the origin (a `5xx`, a timeout, a refused connection) answers the
    /// requests of its key without asking the origin again (a negative entry): 1 s by default.
    /// The requests that waited for the failing request get its answer in any case, so a
    /// failing origin is asked once per key and period, not once per request. Zero: shared
    /// with the waiting requests only.
    pub fn negative_ttl(self, time: Duration) -> ResponseCacheLayer {
        self.with(|c| c.negative = time)
    }

    /// How long the origin may take to answer (the proxy's upstream timeout): requests waiting
    /// for another's request of the same key wait at least this long before they ask on their
    /// own (else the cache's `lock_wait`), so a slow origin is not stampeded by the waiters.
    pub fn origin_timeout(self, time: Duration) -> ResponseCacheLayer {
        self.with(|c| c.origin_timeout = time)
    }

    /// The response headers whose values are tags of the response (separated by spaces or
    /// commas), beside the policy's: `Surrogate-Key` and `Cache-Tag` by default. A purge
    /// of such a tag, or a write that invalidates it, makes those responses stale.
    pub fn surrogate_key_headers(self, names: Vec<HeaderName>) -> ResponseCacheLayer {
        self.with(|c| c.surrogate = names)
    }

    /// Whether the request's `Host` is part of every entry's key (not by default: one site).
    /// Each host's entries are then its own; the key tag (purges and invalidations by URL)
    /// is the same for all hosts.
    pub fn key_host(self, keyed: bool) -> ResponseCacheLayer {
        self.with(|c| c.key_host = keyed)
    }

    /// Whether the surrogate-key headers are passed on to the client (not by default).
    pub fn forward_surrogate_keys(self, forward: bool) -> ResponseCacheLayer {
        self.with(|c| c.forward_surrogate = forward)
    }
}

impl<S> Layer<S> for ResponseCacheLayer {
    type Service = ResponseCache<S>;

    fn layer(&self, inner: S) -> ResponseCache<S> {
        ResponseCache {
            inner,
            ctx: self.ctx.clone(),
        }
    }
}

/// The service [`ResponseCacheLayer`] makes.
#[derive(Clone)]
pub struct ResponseCache<S> {
    inner: S,
    ctx: Arc<Ctx>,
}

/// The service the layer wraps (an axum router's routes, an upstream).
pub(crate) trait Routes:
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

impl<S: Routes> Service<Request<Body>> for ResponseCache<S> {
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
        let ctx = self.ctx.clone();
        Box::pin(async move { Ok(handle(ctx, inner, req).await) })
    }
}

/// Where recaches of routed ops go: a GET of the op's route through the whole app (the
/// router or the proxy in front of which the layer sits), so that the layer stores the answer.
/// `serve` (axum) and the proxy install it; an app served otherwise can call
/// [`recache_through`](crate::axum::recache_through).
pub(crate) fn install_route_loader(
    cache: &Cache,
    app: BoxCloneService<Request<Body>, Response<Body>, Infallible>,
) {
    let app = Arc::new(Mutex::new(app));
    let loader: crate::cache::RouteLoader =
        Arc::new(move |cache: &Cache, op: String, args: Args| {
            let path = cache.route_path(&op, &args);
            let svc = app.lock().unwrap_or_else(|p| p.into_inner()).clone();
            Box::pin(async move {
                let path = path.ok_or_else(|| {
                    format!("the recache arguments do not fill the route of {op:?}")
                })?;
                let req = Request::get(&path)
                    .extension(Recache)
                    .body(Body::empty())
                    .map_err(|e| format!("recache of {op:?}: {e}"))?;
                let Ok(answer) = svc.oneshot(req).await;
                let status = answer.status();
                // Read to the end: the layer stores the body as it goes.
                let _ = answer.into_body().collect().await;
                if status.is_success() {
                    Ok(())
                } else {
                    Err(format!("GET {path} answered {status}"))
                }
            })
        });
    cache.inner.route_loader.store(Some(Arc::new(loader)));
    cache
        .inner
        .serves_http
        .store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Marks a request the cache makes itself (a recache), not a client's.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Recache;

async fn handle<S: Routes>(ctx: Arc<Ctx>, inner: S, mut req: Request<Body>) -> Response<Body> {
    // Hop-by-hop headers, and those `Connection` names, are this hop's: gone before the request
    // is routed, keyed or varied on (`Connection: accept-language` must not make a French
    // request fetch the default language's answer).
    semantics::strip_hop_by_hop(req.headers_mut());
    let method = req.method().clone();
    let Some(routed) = ctx
        .cache
        .route(method.as_str(), req.uri().path(), req.uri().query())
    else {
        if unsafe_method(&method) {
            let answer = write(&ctx.cache, None, Args::new(), inner, req).await;
            return marked(answer, "PASS", "fwd=bypass; detail=no-route");
        }
        return pass(inner, req, "fwd=bypass; detail=no-route").await;
    };
    match routed.kind {
        OpKind::Read if method == Method::GET || method == Method::HEAD => {
            if semantics::personal(req.headers()) && !routed.options.credentials {
                let req = rebuilt(&ctx.cache, &routed, req);
                return pass(inner, req, "fwd=bypass; detail=credentials").await;
            }
            read(&ctx, inner, routed, req).await
        }
        OpKind::Write if unsafe_method(&method) => {
            write(&ctx.cache, Some(&routed.op), routed.args, inner, req).await
        }
        _ if unsafe_method(&method) => {
            let answer = write(&ctx.cache, None, Args::new(), inner, req).await;
            marked(answer, "PASS", "fwd=bypass")
        }
        _ => pass(inner, req, "fwd=bypass").await,
    }
}

/// A routed read as it leaves for the upstream, whatever happens to it (a pass included): it
/// asks for the URI its arguments rebuild, so that no spelling of a URI the key does not hold
/// reaches the upstream.
fn rebuilt(cache: &Cache, routed: &Routed, mut req: Request<Body>) -> Request<Body> {
    if let Some(uri) = super::key::upstream_uri(cache, &routed.op, &routed.args, req.uri()) {
        *req.uri_mut() = uri;
    }
    req
}

/// A method that may change what the origin holds (RFC 9110 §9.2.1: not `GET`, `HEAD`,
/// `OPTIONS` or `TRACE`).
fn unsafe_method(m: &Method) -> bool {
    !matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// Passes a request through untouched but for `X-Cache: PASS` on its answer.
async fn pass<S: Routes>(inner: S, req: Request<Body>, status: &str) -> Response<Body> {
    let Ok(answer) = inner.oneshot(req).await;
    marked(answer, "PASS", status)
}

/// Says on an answer how the cache came to it: `X-Cache` and `Cache-Status` (RFC 9211); what
/// the upstream told this cache alone (`Surrogate-Control`) is not passed on.
fn marked(mut answer: Response<Body>, x_cache: &'static str, status: &str) -> Response<Body> {
    let h = answer.headers_mut();
    h.remove(semantics::SURROGATE_CONTROL);
    h.insert("x-cache", HeaderValue::from_static(x_cache));
    h.insert("cache-status", cache_status(status));
    answer
}

/// A read's request, shared by its loader and its caller.
struct ReadReq {
    op: String,
    args: Args,
    parts: request::Parts,
    options: RouteOptions,
    /// The entry's full key and the rule's tags and TTL.
    key: String,
    tags: Vec<String>,
    rule_time: semantics::RuleTime,
    /// This read looks up one variant of a response that varies by request headers.
    variant: bool,
}

/// Why a load stored nothing, for its caller.
enum NotStored {
    /// The loader answered its caller itself (an error of the origin, a broken body).
    Answered,
    /// The caller waited for another's load that stored nothing: it asks on its own.
    Waited,
}

impl std::fmt::Display for NotStored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotStored::Answered => write!(f, "the answer was not cacheable"),
            NotStored::Waited => write!(f, "the load waited for stored nothing"),
        }
    }
}

impl From<LoadError> for NotStored {
    fn from(_: LoadError) -> Self {
        NotStored::Waited
    }
}

/// What a read through the engine came to.
enum Read {
    /// The loader asked the origin and answered the client (streaming, as it stores).
    Answered(Response<Body>),
    /// What is stored (a hit, or another request's load).
    Entry(HttpEntry),
    /// Nothing to serve: ask the origin.
    Nothing,
}

async fn read<S: Routes>(
    ctx: &Arc<Ctx>,
    inner: S,
    routed: Routed,
    req: Request<Body>,
) -> Response<Body> {
    let passed = |req| rebuilt(&ctx.cache, &routed, req);
    if semantics::request_no_store(req.headers()) {
        return pass(inner, passed(req), "fwd=bypass; detail=no-store").await;
    }
    let plan = match ctx.cache.plan(&routed.op, &routed.args).await {
        Ok(plan) => plan,
        // TTL 0, a rule of `none`, an op or policy that fails: not cached.
        Err(_) => return pass(inner, passed(req), "fwd=bypass; detail=uncached").await,
    };
    if let Some(why) = super::key::unkeyed_query(&ctx.cache, &routed, &plan.key).await {
        tracing::debug!(op = routed.op, "passes: {why}");
        return pass(inner, passed(req), "fwd=bypass; detail=unkeyed-query").await;
    }
    let mut plan = plan;
    // The entry, and each of its variants, carries its key as a tag: a purge by key or URL is
    // one tag's invalidation, fenced like the rule's own.
    plan.tags
        .push(crate::tags::of_key(ctx.cache.relative_key(&plan.key)));
    if ctx.key_host {
        super::key::push_host(&mut plan.key, req.headers().get(header::HOST));
    }
    let head = req.method() == Method::HEAD;
    let (mut parts, _) = req.into_parts();
    // A read's answer is keyed without a body: none is forwarded, nor its framing (an upstream
    // told `Content-Length: 5` would take the next request on the connection for those bytes).
    parts.headers.remove(header::CONTENT_LENGTH);
    let mut r = ReadReq {
        op: routed.op,
        args: routed.args,
        parts,
        options: routed.options,
        key: plan.key.clone(),
        tags: plan.tags.clone(),
        rule_time: semantics::RuleTime {
            ttl: plan.ttl,
            early: plan.early,
        },
        variant: false,
    };
    // A stored response may ask for a background refresh of its own (stale-while-revalidate).
    plan.timed = true;
    // Identical misses wait for one request to the origin (Varnish's waiting list); `lock`
    // adds the cross-host lock.
    plan.coalesce = true;
    plan.wait_at_least = ctx.origin_timeout;
    let mut detail = "hit";
    for _ in 0..2 {
        let shared = Arc::new(r);
        match through_engine(ctx, inner.clone(), shared.clone(), plan).await {
            Read::Answered(answer) => return answer,
            Read::Entry(HttpEntry {
                kind: Kind::Response(stored),
                ..
            }) => {
                let h = &shared.parts.headers;
                // Only a request with directives of its own pays for reading them (and the
                // stored headers): a plain hit stays a plain hit.
                let directives =
                    h.contains_key(header::CACHE_CONTROL) || h.contains_key(header::PRAGMA);
                if directives
                    && !semantics::request_accepts(
                        h,
                        &stored.freshness,
                        &stored.header_map(),
                        super::now_ms(),
                    )
                    && !semantics::only_if_cached(h)
                {
                    return for_this_request(ctx, inner, &stored, &shared).await;
                }
                return replay(&stored, &shared.parts, head, detail);
            }
            Read::Entry(HttpEntry {
                kind: Kind::Variants(names),
                ..
            }) if !shared.variant => {
                // The response varies: read the variant of this request's headers.
                r = Arc::into_inner(shared).expect("the read's loader is done");
                let suffix = semantics::vary_suffix(&names, &r.parts.headers);
                r.key.push_str(&suffix);
                r.variant = true;
                plan = match ctx.cache.plan(&r.op, &r.args).await {
                    Ok(mut p) => {
                        p.key.clone_from(&r.key);
                        p.tags.clone_from(&r.tags);
                        p.timed = true;
                        p.coalesce = true;
                        p.wait_at_least = ctx.origin_timeout;
                        p
                    }
                    Err(_) => break,
                };
                detail = "hit; detail=vary";
                continue;
            }
            Read::Entry(HttpEntry {
                kind: Kind::Pass, ..
            }) => {
                let mut parts = shared.parts.clone();
                parts.uri = shared.upstream_uri(&ctx.cache);
                let req = Request::from_parts(parts, Body::empty());
                return pass(inner, req, "fwd=uri-miss; detail=hit-for-miss").await;
            }
            Read::Entry(_) | Read::Nothing => {
                r = Arc::into_inner(shared).expect("the read's loader is done");
                break;
            }
        }
    }
    // Asked the origin on our own: another request's load stored nothing for us.
    if semantics::only_if_cached(&r.parts.headers) {
        return not_in_the_cache();
    }
    r.parts.uri = r.upstream_uri(&ctx.cache);
    let req = Request::from_parts(r.parts, Body::empty());
    let Ok(answer) = inner.oneshot(req).await;
    marked(answer, "MISS", "fwd=miss; detail=collapsed")
}

/// The length an answer declares, if it does.
fn content_length(h: &axum::http::HeaderMap) -> Option<usize> {
    h.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// The answer to `only-if-cached` when nothing is stored: `504` (RFC 9111 §5.2.1.7).
fn not_in_the_cache() -> Response<Body> {
    let mut answer = Response::new(Body::from("not in the cache (only-if-cached)\n"));
    *answer.status_mut() = StatusCode::GATEWAY_TIMEOUT;
    answer.headers_mut().insert(
        "cache-status",
        cache_status("fwd=miss; detail=only-if-cached"),
    );
    answer
}

/// One read through the engine: a hit, a wait for another request's load, or a load by this
/// request, which answers its client as soon as the origin answers (the engine stores the
/// response once it is whole, in the background if the client's answer went first).
async fn through_engine<S: Routes>(ctx: &Arc<Ctx>, inner: S, r: Arc<ReadReq>, plan: Plan) -> Read {
    let (tx, mut rx) = oneshot::channel();
    let (hold, mut held) = oneshot::channel::<Held>();
    let loader = {
        let (ctx, r) = (ctx.clone(), r.clone());
        move |previous: Option<HttpEntry>| fetch(ctx, inner, r, previous, tx, hold)
    };
    let mut engine = Box::pin({
        let ctx = ctx.clone();
        async move {
            ctx.cache
                .read_planned::<HttpEntry, NotStored, _, _>(&r.op, plan, loader)
                .await
        }
    });
    tokio::select! {
        biased;
        Ok(answer) = &mut rx => {
            // The rest of the load (the body, the fill) finishes without the client, whose
            // last piece of the body waits for the fill.
            tokio::spawn(async move {
                let _ = engine.await;
                if let Ok(h) = held.await {
                    h.release().await;
                }
            });
            Read::Answered(answer)
        }
        out = &mut engine => {
            if let Ok(answer) = rx.try_recv() {
                if let Ok(h) = held.try_recv() {
                    // The client reads its body only once it has the answer.
                    tokio::spawn(h.release());
                }
                return Read::Answered(answer);
            }
            match out {
                Ok(entry) => Read::Entry(entry),
                Err(NotStored::Answered | NotStored::Waited) => Read::Nothing,
            }
        }
    }
}

impl ReadReq {
    /// The URI the upstream is asked for ([`super::key::upstream_uri`]).
    fn upstream_uri(&self, cache: &Cache) -> axum::http::Uri {
        super::key::upstream_uri(cache, &self.op, &self.args, &self.parts.uri)
            .unwrap_or_else(|| self.parts.uri.clone())
    }
}

/// The request to the origin for a read: its URI rebuilt, its client's headers and extensions,
/// without their conditions and range (the cache answers those from the whole object), with
/// the validators of the stored answer at hand, if any.
fn to_origin(cache: &Cache, r: &ReadReq, method: Method, stored: Option<&Stored>) -> Request<Body> {
    let parts = &r.parts;
    let mut up = Request::builder()
        .method(method)
        .uri(r.upstream_uri(cache))
        .version(parts.version)
        .body(Body::empty())
        .expect("a request from a valid one");
    *up.headers_mut() = parts.headers.clone();
    *up.extensions_mut() = parts.extensions.clone();
    let h = up.headers_mut();
    for name in &semantics::CONDITIONAL {
        h.remove(name);
    }
    h.remove(header::RANGE);
    if let Some(s) = stored {
        for (from, to) in [
            ("etag", header::IF_NONE_MATCH),
            ("last-modified", header::IF_MODIFIED_SINCE),
        ] {
            if let Some(v) = s
                .header(from)
                .and_then(|v| HeaderValue::from_maybe_shared(v).ok())
            {
                h.insert(to, v);
            }
        }
    }
    up
}

/// A stored answer this request's own directives refuse (`no-cache`, `max-age`, `min-fresh`,
/// `max-stale`): the origin is asked for this request alone, with the stored validators; a
/// `304` serves the stored answer, anything else is passed on as it came. Nothing is stored
/// nor replaced: the directives bind this request, not what the next client gets.
async fn for_this_request<S: Routes>(
    ctx: &Ctx,
    inner: S,
    stored: &Stored,
    r: &ReadReq,
) -> Response<Body> {
    let parts = &r.parts;
    let up = to_origin(&ctx.cache, r, parts.method.clone(), Some(stored));
    let Ok(answer) = inner.oneshot(up).await;
    if answer.status() == StatusCode::NOT_MODIFIED {
        return replay(
            stored,
            parts,
            parts.method == Method::HEAD,
            "fwd=request; fwd-status=304",
        );
    }
    marked(answer, "MISS", "fwd=request")
}

/// A stored response for its client: `304` when the client's conditions hold, the headers
/// and body otherwise, with `Age`, `X-Cache` and `Cache-Status`.
fn replay(stored: &Stored, req: &request::Parts, head: bool, detail: &str) -> Response<Body> {
    let now = super::now_ms();
    let unchanged = (req.headers.contains_key(header::IF_NONE_MATCH)
        || req.headers.contains_key(header::IF_MODIFIED_SINCE))
        && semantics::not_modified(
            &req.headers,
            stored.header("etag").as_deref(),
            stored.header("last-modified").as_deref(),
        );
    let range = if unchanged || stored.status != 200 {
        None
    } else {
        let body = stored.body();
        semantics::byte_range(
            &req.headers,
            body.len() as u64,
            stored.header("etag").as_deref(),
            stored.header("last-modified").as_deref(),
        )
        .map(|r| (r, body))
    };
    let mut r = stored.response(now, head || unchanged || range.is_some());
    if unchanged {
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r.headers_mut().remove(header::CONTENT_LENGTH);
    }
    if let Some((range, body)) = range {
        let len = body.len();
        let h = r.headers_mut();
        match range {
            Ok((first, last)) => {
                *r.status_mut() = StatusCode::PARTIAL_CONTENT;
                let h = r.headers_mut();
                h.insert(
                    header::CONTENT_RANGE,
                    HeaderValue::from_str(&format!("bytes {first}-{last}/{len}")).expect("digits"),
                );
                h.insert(header::CONTENT_LENGTH, HeaderValue::from(last - first + 1));
                if !head {
                    *r.body_mut() = Body::from(body.slice(first as usize..=last as usize));
                }
            }
            Err(()) => {
                h.insert(
                    header::CONTENT_RANGE,
                    HeaderValue::from_str(&format!("bytes */{len}")).expect("digits"),
                );
                h.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
                *r.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
            }
        }
    }
    let h = r.headers_mut();
    h.insert("x-cache", HeaderValue::from_static("HIT"));
    let f = &stored.freshness;
    let status = if f.fresh(now) {
        format!("{detail}; ttl={}", f.ttl(now))
    } else {
        format!("{detail}; fwd=stale; ttl={}", f.ttl(now))
    };
    h.insert("cache-status", cache_status(&status));
    r
}

/// The loader of a read: asks the origin (conditionally, when a stale response with
/// validators is at hand), answers the client through `reply`, and returns what to store.
async fn fetch<S: Routes>(
    ctx: Arc<Ctx>,
    inner: S,
    r: Arc<ReadReq>,
    previous: Option<HttpEntry>,
    reply: oneshot::Sender<Response<Body>>,
    hold: oneshot::Sender<Held>,
) -> Result<HttpEntry, NotStored> {
    if semantics::only_if_cached(&r.parts.headers) {
        let _ = reply.send(not_in_the_cache());
        return Err(NotStored::Answered);
    }
    // Before anything is asked: tags the answer names are fenced by this.
    let since = ctx.cache.sequence().await;
    // A remembered error is no stand-in, nor revalidated: the origin is asked afresh.
    let previous = previous.and_then(|e| match e.kind {
        Kind::Response(s) if s.status < 500 => Some(s),
        _ => None,
    });
    // The fill asks for the whole object: a range, or the client's conditions, are answered
    // from it.
    let up = to_origin(&ctx.cache, &r, Method::GET, previous.as_ref());
    let Ok(answer) = inner.oneshot(up).await;
    let now = SystemTime::now();
    let (mut parts, body) = answer.into_parts();
    // A stale answer that may still stand in for a failing upstream (`stale-if-error`, the
    // route's grace) is not replaced by a hit-for-miss marker: an answer that may not be
    // stored passes, and the stale one stays for the upstream's next failure.
    let stand_in = previous
        .as_ref()
        .is_some_and(|p| p.freshness.within_stale_if_error(super::ms_of(now)));

    // Revalidated: the stored body with the new headers.
    if parts.status == StatusCode::NOT_MODIFIED {
        if let Some(p) = previous {
            let headers = semantics::refreshed(&p.header_map(), &parts.headers);
            let mut res = axum::http::Response::new(());
            *res.status_mut() = StatusCode::from_u16(p.status).unwrap_or(StatusCode::OK);
            *res.headers_mut() = headers;
            let (rparts, ()) = res.into_parts();
            return match semantics::assess(&r.parts, &rparts, r.options, r.rule_time, now) {
                Ok(keep) => {
                    let entry = stored_entry(&ctx, &r, &rparts, p.body(), &keep, since);
                    if let Kind::Response(s) = &entry.kind {
                        let _ = reply.send(replay(
                            s,
                            &r.parts,
                            r.parts.method == Method::HEAD,
                            "fwd=stale; fwd-status=304; stored",
                        ));
                    }
                    Ok(entry)
                }
                Err(_) => {
                    let _ = reply.send(replay(
                        &p,
                        &r.parts,
                        r.parts.method == Method::HEAD,
                        "fwd=stale; fwd-status=304",
                    ));
                    Ok(HttpEntry::unstored(Kind::Pass))
                }
            };
        }
    }

    // The origin failed: a stale response may stand in for it.
    if parts.status.is_server_error() {
        if let Some(p) = previous.filter(|p| p.freshness.within_stale_if_error(super::ms_of(now))) {
            let detail = format!(
                "fwd=stale; fwd-status={}; detail=stale-if-error",
                parts.status.as_u16()
            );
            let _ = reply.send(replay(
                &p,
                &r.parts,
                r.parts.method == Method::HEAD,
                &detail,
            ));
            return Ok(HttpEntry::unstored(Kind::Response(p)));
        }
        return failure(&ctx, &r, parts, body, since, now, reply).await;
    }

    // An answer to a request with Authorization is kept only where RFC 9111 §3.5 allows it
    // (`public`, `s-maxage`, `must-revalidate`); one that may not be kept is this request's
    // alone: no hit-for-miss marker switches the route off for its other users.
    let personal = semantics::personal(&r.parts.headers);
    if personal && !semantics::shared_despite_authorization(&r.parts.headers, &parts.headers) {
        ctx.for_clients(&mut parts.headers);
        let answer = Response::from_parts(parts, body);
        let _ = reply.send(marked(
            answer,
            "MISS",
            "fwd=uri-miss; detail=\"not stored: Authorization\"",
        ));
        return Err(NotStored::Answered);
    }
    let keep = semantics::assess(&r.parts, &parts, r.options, r.rule_time, now);
    let declared = content_length(&parts.headers);
    let too_big = declared.is_some_and(|n| n > ctx.max_body);
    let keep = match keep {
        Ok(keep) if !too_big => keep,
        refused => {
            let why = match refused {
                Err(why) => why,
                Ok(_) => "larger than the largest body stored",
            };
            ctx.for_clients(&mut parts.headers);
            let answer = Response::from_parts(parts, body);
            let status = format!("fwd=uri-miss; detail=\"not stored: {why}\"");
            let _ = reply.send(marked(answer, "MISS", &status));
            return Ok(pass_marker(&ctx, stand_in));
        }
    };
    let mut keep = keep;
    if r.options.credentials {
        // Each user's answer is its own: the credentials are a variant of the key (digested,
        // as every varied value is, so no credential is ever in a key).
        for name in ["authorization", "cookie"] {
            if !keep.vary.iter().any(|v| v == name) {
                keep.vary.push(name.to_string());
            }
        }
        keep.vary.sort();
    }

    // Cacheable: the client gets the answer as it comes, while it is read for the fill.
    let mut client_headers = parts.headers.clone();
    ctx.for_clients(&mut client_headers);
    client_headers.insert("x-cache", HeaderValue::from_static("MISS"));
    // Not `stored`: the answer's head goes out before its body is read and the fill tried (a
    // body that breaks off, or a write landing meanwhile, stores nothing).
    client_headers.insert(
        "cache-status",
        cache_status(if r.variant {
            "fwd=vary-miss"
        } else {
            "fwd=uri-miss"
        }),
    );
    let unchanged = semantics::not_modified(
        &r.parts.headers,
        parts.headers.get(header::ETAG).map(HeaderValue::as_bytes),
        parts
            .headers
            .get(header::LAST_MODIFIED)
            .map(HeaderValue::as_bytes),
    ) && (r.parts.headers.contains_key(header::IF_NONE_MATCH)
        || r.parts.headers.contains_key(header::IF_MODIFIED_SINCE));
    let (frames, client_body) = mpsc::channel(16);
    let mut to_client = Some(frames);
    {
        let body = if unchanged || r.parts.method == Method::HEAD {
            to_client = None;
            Body::empty()
        } else {
            Body::new(http_body_util::StreamBody::new(tokio_stream_from(
                client_body,
            )))
        };
        let mut answer = Response::new(body);
        *answer.status_mut() = if unchanged {
            StatusCode::NOT_MODIFIED
        } else {
            parts.status
        };
        *answer.version_mut() = parts.version;
        *answer.headers_mut() = client_headers;
        if unchanged {
            answer.headers_mut().remove(header::CONTENT_LENGTH);
        }
        let _ = reply.send(answer);
    }
    // The body goes straight into the entry's encoding (room made for it when its length is
    // declared): never copied again on its way to the backend. Held against the budget of
    // bytes being read for fills: past it, the answer streams through unstored.
    let mut keeping = keeping(
        &ctx,
        &r,
        &parts,
        &keep,
        declared.unwrap_or(0).min(ctx.max_body),
    );
    let mut reserved = Reserved {
        ctx: ctx.clone(),
        bytes: 0,
    };
    if keeping.is_some() && !reserved.more(declared.unwrap_or(0).min(ctx.max_body)) {
        tracing::debug!(
            op = r.op,
            "the fills in flight hold their budget: not stored"
        );
        keeping = None;
    }
    let mut read = 0usize;
    let mut last = None;
    // What the client has not taken yet: the fill reads at the upstream's pace whatever the
    // client does (a client that stops reading never holds the requests waiting for this
    // fill). Bounded by the largest body stored: past it the fill is given up.
    let mut backlog: std::collections::VecDeque<http_body::Frame<Bytes>> = Default::default();
    let mut body = body;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!(op = r.op, "the origin's body broke off: {e}; not stored");
                if let Some(tx) = to_client {
                    backlog.extend(last.take());
                    tokio::spawn(async move {
                        if send_all(&tx, backlog).await {
                            let _ = tx.send(Err(e)).await;
                        }
                    });
                }
                return Err(NotStored::Answered);
            }
        };
        if let Some(data) = frame.data_ref() {
            read += data.len();
            if let Some(k) = &mut keeping {
                let past = (k.encoded.len() - k.head + data.len()).saturating_sub(reserved.bytes);
                if past > 0 && !reserved.more(past) {
                    tracing::debug!(
                        op = r.op,
                        "the fills in flight hold their budget: not stored"
                    );
                    keeping = None;
                } else {
                    k.encoded.extend_from_slice(data);
                }
            }
        }
        // One piece behind: the last one reaches the client once the fill is done, so that a
        // client that has read a whole miss finds it stored.
        if let Some(previous) = last.replace(frame) {
            if let Some(tx) = &to_client {
                backlog.push_back(previous);
                if !offer(tx, &mut backlog) {
                    // The client went away: the body is still read, for the fill.
                    to_client = None;
                    backlog.clear();
                }
            }
        }
        if read > ctx.max_body {
            // Too big to store: the rest streams on its own, and the key passes for a while.
            if let Some(tx) = to_client {
                backlog.extend(last);
                tokio::spawn(async move {
                    if !send_all(&tx, backlog).await {
                        return;
                    }
                    while let Some(frame) = body.frame().await {
                        if tx.send(frame).await.is_err() {
                            break;
                        }
                    }
                });
            }
            return Ok(pass_marker(&ctx, stand_in));
        }
        if keeping.is_none() && to_client.is_none() {
            // Nothing to store and nobody to answer: the rest is not read.
            return Ok(HttpEntry::unstored(Kind::Pass));
        }
    }
    if let Some(tx) = to_client {
        backlog.extend(last);
        let _ = hold.send(Held { tx, backlog });
    }
    let Some(keeping) = keeping else {
        // Not stored (the budget, a surrogate key past the limits); the requests that waited
        // pass, and no marker is left: the next request may store it.
        return Ok(HttpEntry::unstored(Kind::Pass));
    };
    let entry = keeping.entry(&keep, since);
    drop(reserved);
    if !keep.vary.is_empty() && !r.variant {
        // Stored as the variant of this request's headers; the key itself says what varies.
        let key = format!(
            "{}{}",
            r.key,
            semantics::vary_suffix(&keep.vary, &r.parts.headers)
        );
        let bytes = crate::read::Codec::encode(&entry).unwrap_or_default();
        let storage = entry.storage.expect("a loaded entry");
        let mut tags = r.tags.clone();
        tags.extend(storage.tags);
        ctx.cache
            .fill_learned(&key, &tags, bytes, since, storage.ttl, storage.early)
            .await;
        return Ok(HttpEntry::loaded(
            Kind::Variants(keep.vary.clone()),
            Storage {
                ttl: keep.ttl,
                early: None,
                tags: Vec::new(),
                since: None,
            },
        ));
    }
    Ok(entry)
}

/// An error of the origin: answered to this request, shared with the requests waiting for it,
/// and kept for the negative TTL (fresh that long, so it answers without asking the origin).
/// A body past the largest one stored, or an answer to a request with credentials, streams to
/// this request alone.
async fn failure(
    ctx: &Ctx,
    r: &ReadReq,
    mut parts: axum::http::response::Parts,
    body: Body,
    since: Option<u64>,
    now: SystemTime,
    reply: oneshot::Sender<Response<Body>>,
) -> Result<HttpEntry, NotStored> {
    let status = format!(
        "fwd=uri-miss; fwd-status={}; detail=error",
        parts.status.as_u16()
    );
    let declared = content_length(&parts.headers);
    ctx.for_clients(&mut parts.headers);
    // A user's error is not shared with other users, nor kept.
    if declared.is_some_and(|n| n > ctx.max_body) || semantics::personal(&r.parts.headers) {
        let _ = reply.send(marked(Response::from_parts(parts, body), "MISS", &status));
        return Err(NotStored::Answered);
    }
    let bytes = match http_body_util::Limited::new(body, ctx.max_body)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            tracing::debug!(op = r.op, "the origin's error answer broke off: {e}");
            let mut answer = Response::new(Body::from("the upstream's error answer broke off\n"));
            *answer.status_mut() = StatusCode::BAD_GATEWAY;
            let _ = reply.send(answer);
            return Err(NotStored::Answered);
        }
    };
    let now_ms = super::ms_of(now);
    let freshness = super::entry::Freshness {
        stored_ms: now_ms,
        fresh_ms: now_ms + ctx.negative.as_millis() as u64,
        age0: 0,
        swr: 0,
        sie: 0,
    };
    semantics::strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(header::AGE);
    let encoded = Stored::encode(parts.status, &parts.headers, &bytes, freshness);
    let Ok(HttpEntry {
        kind: Kind::Response(stored),
        ..
    }) = <HttpEntry as crate::read::Codec>::decode(&Bytes::from(encoded))
    else {
        unreachable!("an entry just encoded decodes");
    };
    let answer = replay(&stored, &r.parts, r.parts.method == Method::HEAD, &status);
    let _ = reply.send(marked(answer, "MISS", &status));
    let kind = Kind::Response(stored);
    if ctx.negative.is_zero() {
        return Ok(HttpEntry::unstored(kind));
    }
    Ok(HttpEntry::loaded(
        kind,
        Storage {
            ttl: ctx.negative,
            early: None,
            tags: Vec::new(),
            since,
        },
    ))
}

type Frames = mpsc::Sender<Result<http_body::Frame<Bytes>, axum::Error>>;

/// A client's body held back by its last piece (and what it has not taken yet) until the fill
/// of its response is done.
struct Held {
    tx: Frames,
    backlog: std::collections::VecDeque<http_body::Frame<Bytes>>,
}

impl Held {
    async fn release(self) {
        send_all(&self.tx, self.backlog).await;
    }
}

/// Hands the client what it can take now, without waiting; false if it went away.
fn offer(tx: &Frames, backlog: &mut std::collections::VecDeque<http_body::Frame<Bytes>>) -> bool {
    use tokio::sync::mpsc::error::TrySendError;
    while let Some(f) = backlog.pop_front() {
        match tx.try_send(Ok(f)) {
            Ok(()) => {}
            Err(TrySendError::Full(Ok(f))) => {
                backlog.push_front(f);
                return true;
            }
            Err(TrySendError::Full(Err(_))) => return true,
            Err(TrySendError::Closed(_)) => return false,
        }
    }
    true
}

/// Sends the client every frame of `backlog`, at its pace; false if it went away.
async fn send_all(
    tx: &Frames,
    backlog: std::collections::VecDeque<http_body::Frame<Bytes>>,
) -> bool {
    for f in backlog {
        if tx.send(Ok(f)).await.is_err() {
            return false;
        }
    }
    true
}

/// A stream of a channel's items.
fn tokio_stream_from<T: Send + 'static>(
    rx: mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|t| (t, rx)) })
}

/// The marker that lets a key's requests through for the hit-for-miss time; not stored when
/// it would replace a stale answer that may still stand in for a failing upstream (the
/// requests that waited for this one pass all the same).
fn pass_marker(ctx: &Ctx, stand_in: bool) -> HttpEntry {
    if stand_in {
        return HttpEntry::unstored(Kind::Pass);
    }
    HttpEntry::loaded(
        Kind::Pass,
        Storage {
            ttl: ctx.hit_for_miss,
            early: None,
            tags: Vec::new(),
            since: None,
        },
    )
}

/// What of a response to keep is known from its head, before its body is read: the encoding
/// up to the body (the headers worth replaying), and its tags from the surrogate-key headers
/// (as many as an entry records beside the rule's). `None`: it is not stored (a surrogate key
/// past the tag limits).
struct Keeping {
    encoded: Vec<u8>,
    head: usize,
    tags: Vec<String>,
}

fn keeping(
    ctx: &Ctx,
    r: &ReadReq,
    parts: &axum::http::response::Parts,
    keep: &Keep,
    body: usize,
) -> Option<Keeping> {
    let mut headers = parts.headers.clone();
    semantics::strip_hop_by_hop(&mut headers);
    headers.remove(header::AGE);
    let mut tags = semantics::surrogate_keys(&headers, &ctx.surrogate);
    // Held to the limits a policy's tags are held to: a tag past them is never truncated (it
    // would name another tag), the answer is not stored.
    let limits = &ctx.cache.inner.settings.guest;
    if let Some(long) = tags.iter().find(|t| t.len() > limits.max_tag_bytes) {
        tracing::warn!(
            op = r.op,
            "the response names a surrogate key of {} bytes, past the limit of {} \
             (CACHE_MAX_TAG_BYTES): not stored",
            long.len(),
            limits.max_tag_bytes
        );
        return None;
    }
    let room = limits.max_tags.saturating_sub(r.tags.len());
    if tags.len() > room {
        tracing::warn!(
            op = r.op,
            "the response names {} surrogate keys; an entry records {room} more: not stored",
            tags.len()
        );
        return None;
    }
    ctx.for_clients(&mut headers);
    tags.retain(|t| !r.tags.contains(t));
    let encoded = Stored::head(parts.status, &headers, keep.freshness, body);
    Some(Keeping {
        head: encoded.len(),
        encoded,
        tags,
    })
}

impl Keeping {
    /// The entry, once the whole body is appended to `encoded`.
    fn entry(mut self, keep: &Keep, since: Option<u64>) -> HttpEntry {
        // A body of undeclared length grew its buffer by doubling: give back the room left.
        if self.encoded.capacity() - self.encoded.len() > self.encoded.len() / 8 {
            self.encoded.shrink_to_fit();
        }
        let stored = <HttpEntry as crate::read::Codec>::decode(&Bytes::from(self.encoded))
            .expect("an entry just encoded decodes");
        HttpEntry {
            kind: stored.kind,
            storage: Some(Storage {
                ttl: keep.ttl,
                early: keep.early,
                tags: self.tags,
                since,
            }),
        }
    }
}

/// The entry of a response to keep whose body is at hand (a revalidated one).
fn stored_entry(
    ctx: &Ctx,
    r: &ReadReq,
    parts: &axum::http::response::Parts,
    body: Bytes,
    keep: &Keep,
    since: Option<u64>,
) -> HttpEntry {
    match keeping(ctx, r, parts, keep, body.len()) {
        Some(mut k) => {
            k.encoded.extend_from_slice(&body);
            k.entry(keep, since)
        }
        None => HttpEntry::unstored(Kind::Pass),
    }
}

/// Bytes of bodies being read for fills, held against the layer's budget while they are.
struct Reserved {
    ctx: Arc<Ctx>,
    bytes: usize,
}

impl Reserved {
    /// Holds `more` bytes too; false (holding nothing more) past the budget.
    fn more(&mut self, more: usize) -> bool {
        let total = self
            .ctx
            .filling
            .fetch_add(more, std::sync::atomic::Ordering::AcqRel)
            + more;
        if total > self.ctx.fill_budget {
            self.ctx
                .filling
                .fetch_sub(more, std::sync::atomic::Ordering::AcqRel);
            return false;
        }
        self.bytes += more;
        true
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        self.ctx
            .filling
            .fetch_sub(self.bytes, std::sync::atomic::Ordering::AcqRel);
    }
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

/// An unsafe request: it goes through as a write's action. On a write route, a `2xx` answer
/// applies the op's write rule before the client sees it, any other invalidates nothing; with
/// the rule's tags go the entries RFC 9111 §4.4 names: the `GET` of the target URI, and of the
/// `Location` and `Content-Location` the answer names on the same origin. Without a route
/// (`op` none), those entries alone, on any answer but an error (`1xx` to `3xx`).
async fn write<S: Routes>(
    cache: &Cache,
    op: Option<&str>,
    args: Args,
    inner: S,
    req: Request<Body>,
) -> Response<Body> {
    let target = req.uri().clone();
    let host = req.headers().get(header::HOST).cloned();
    let reads = |answer: &Answered| {
        let h = answer.0.headers();
        let named = [header::LOCATION, header::CONTENT_LOCATION]
            .into_iter()
            .filter_map(|n| h.get(n))
            .filter_map(|v| same_origin(v, host.as_ref()));
        std::iter::once(target)
            .chain(named)
            .filter_map(|uri| cache.route("GET", uri.path(), uri.query()))
            .filter(|r| r.kind == OpKind::Read)
            .map(|r| (r.op, r.args))
            .collect()
    };
    let out = cache
        .write_invalidating(
            op,
            Ok(args),
            || async move {
                let Ok(answer) = inner.oneshot(req).await;
                let done = if op.is_some() {
                    answer.status().is_success()
                } else {
                    !answer.status().is_client_error() && !answer.status().is_server_error()
                };
                if done {
                    Ok(Answered(answer))
                } else {
                    Err(answer)
                }
            },
            reads,
        )
        .await;
    match out {
        Ok(w) => w.value.0,
        Err(answer) => answer,
    }
}

/// A `Location` or `Content-Location` on the origin of the request (a path, or an absolute URI
/// whose authority is the request's `Host`): another origin's URI is never invalidated, or
/// one site could empty another's entries.
fn same_origin(value: &HeaderValue, host: Option<&HeaderValue>) -> Option<axum::http::Uri> {
    let uri: axum::http::Uri = value.to_str().ok()?.trim().parse().ok()?;
    match uri.authority() {
        None if uri.path().starts_with('/') && !uri.path().starts_with("//") => Some(uri),
        Some(a)
            if host.is_some_and(|h| a.as_str().eq_ignore_ascii_case(h.to_str().unwrap_or(""))) =>
        {
            Some(uri)
        }
        _ => None,
    }
}
