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
//! What it stores, as a shared cache (RFC 9111) does: an answer to a `GET` (or `HEAD`)
//! without `Authorization` or `Cookie` (unless the route says `credentials`), unless it says
//! `no-store` or `private`, sets a cookie, varies on `*`, is a `5xx`, or is larger than the
//! largest body stored. It is fresh as long as `s-maxage` / `max-age` / `Expires` (and `Age`)
//! say, else for the op's TTL (the route's `ttl=policy` makes the TTL win); `Vary` puts the
//! named request headers into the key; `stale-while-revalidate` serves it while one request
//! refreshes it in the background; `stale-if-error` (or the route's `grace=SECONDS`) serves it
//! while the origin fails; a stale answer with validators is revalidated (`304` refreshes it).
//! Tags also come from its `Surrogate-Key` / `Cache-Tag` headers, fenced like the policy's:
//! a purge that lands while the answer is in flight leaves nothing stale. A conditional
//! request (`If-None-Match`, `If-Modified-Since`) is answered `304` from a stored answer.
//! Answers carry `X-Cache` (`HIT`, `MISS`, `PASS`), `Age` and `Cache-Status` (RFC 9211). A miss
//! streams to its client while it is stored. An answer that may not be stored lets the
//! requests of its key through, not waiting for each other, for a while (hit-for-miss).
//!
//! A request to a write route runs the handler as the write's action: a `2xx` answer applies
//! the op's write rule (invalidations, recache) before the client sees it, any other
//! invalidates nothing. Everything else passes through (`X-Cache: PASS`). A recache of a
//! routed op is a `GET` of its route through the app [`serve`] serves (or the one given to
//! [`recache_through`]).
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

use axum::body::Body;
use axum::http::{Request, Response};
use tower::util::BoxCloneService;

use crate::cache::Cache;

pub use crate::http::layer::{ResponseCache, ResponseCacheLayer};

/// Serves `app` on `listener` until `signal` completes, then lets requests in flight finish
/// (a write among them finishes its invalidation) and shuts the cache down: held
/// invalidations are delivered, or kept in the journal (see [`Cache::shutdown`]). Recaches of
/// routed ops go through `app` ([`recache_through`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    cache: Cache,
    signal: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    recache_through(&cache, app.clone());
    let out = axum::serve(listener, app)
        .with_graceful_shutdown(signal)
        .await;
    cache.shutdown().await;
    out
}

/// Makes the recaches of ops that have a route (and no loader of their own) `GET`s of that
/// route through `app`, so that the [`ResponseCacheLayer`] in it stores the answers.
/// [`serve`] does this; call it when serving `app` another way.
pub fn recache_through<S>(cache: &Cache, app: S)
where
    S: tower::Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    crate::http::layer::install_route_loader(cache, BoxCloneService::new(app));
}
