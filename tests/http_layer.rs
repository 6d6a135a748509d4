//! The HTTP layer (`cachelet::axum::ResponseCacheLayer`) over real HTTP: an axum app served on a
//! free loopback port, a real client, the `http-routes` policy compiled from its source, on the
//! memory backend and a real Redis server.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::Router;
use cachelet::axum::ResponseCacheLayer;
use cachelet::Cache;
use cachelet_tests::{component, suite, Target};

/// How many times the app answered.
#[derive(Clone, Default)]
struct Calls(Arc<AtomicU64>);

impl Calls {
    fn bump(&self) -> u64 {
        self.0.fetch_add(1, Ordering::SeqCst) + 1
    }
    fn get(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

struct App {
    base: String,
    calls: Calls,
    client: reqwest::Client,
}

async fn app(t: &Target) -> App {
    let cache = Cache::builder()
        .settings(t.settings())
        .policy_file(component("http-routes"))
        .build()
        .await
        .expect("the http-routes policy loads");
    let calls = Calls::default();
    let (c1, c2, c3, c4, c5) = (
        calls.clone(),
        calls.clone(),
        calls.clone(),
        calls.clone(),
        calls.clone(),
    );
    let router =
        Router::new()
            .route(
                "/users/{user_id}",
                get(move |Path(id): Path<String>| async move {
                    format!("user {id}, answer {}", c1.bump())
                })
                .put(move |Path(id): Path<String>, body: String| async move {
                    c2.bump();
                    if body == "fail" {
                        (StatusCode::INTERNAL_SERVER_ERROR, format!("not saved {id}"))
                    } else {
                        (StatusCode::OK, format!("saved {id}"))
                    }
                }),
            )
            .route(
                "/orgs/{org_id}/users/{user_id}",
                get(move |Path((o, u)): Path<(String, String)>| async move {
                    format!("org {o} user {u}, answer {}", c3.bump())
                }),
            )
            .route(
                "/private/{what}",
                get(move |Path(what): Path<String>| async move {
                    let n = c4.bump();
                    let mut h = HeaderMap::new();
                    match what.as_str() {
                        "no-store" => h.insert("cache-control", "no-store".parse().unwrap()),
                        "private" => {
                            h.insert("cache-control", "private, max-age=60".parse().unwrap())
                        }
                        "cookie" => h.insert("set-cookie", "session=1".parse().unwrap()),
                        _ => h.insert("vary", "*".parse().unwrap()),
                    };
                    (h, format!("{what} {n}"))
                }),
            )
            .fallback(move || async move { format!("page, answer {}", c5.bump()) })
            .layer(ResponseCacheLayer::new(cache.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    App {
        base,
        calls,
        client: reqwest::Client::new(),
    }
}

impl App {
    async fn get(&self, path: &str) -> (String, Option<String>) {
        self.get_with(path, &[]).await
    }

    async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> (String, Option<String>) {
        let mut req = self.client.get(format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let how = r
            .headers()
            .get("x-cache")
            .map(|v| v.to_str().unwrap().to_string());
        (r.text().await.unwrap(), how)
    }

    async fn put(&self, path: &str, body: &str) -> u16 {
        let r = self
            .client
            .put(format!("{}{path}", self.base))
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        r.status().as_u16()
    }
}

fn hit(s: &str) -> Option<String> {
    Some(s.to_string())
}

pub async fn a_read_route_is_cached_and_its_write_route_invalidates(t: &Target) {
    let app = app(t).await;
    assert_eq!(
        app.get("/users/1").await,
        ("user 1, answer 1".into(), hit("MISS"))
    );
    assert_eq!(
        app.get("/users/1").await,
        ("user 1, answer 1".into(), hit("HIT"))
    );
    assert_eq!(
        app.get("/users/2").await,
        ("user 2, answer 2".into(), hit("MISS"))
    );
    assert_eq!(app.put("/users/1", "ann").await, 200);
    assert_eq!(
        app.get("/users/1").await,
        ("user 1, answer 4".into(), hit("MISS"))
    );
    assert_eq!(
        app.get("/users/2").await.1,
        hit("HIT"),
        "only user:1 was invalidated"
    );
    // A write the app refuses invalidates nothing.
    assert_eq!(app.put("/users/1", "fail").await, 500);
    assert_eq!(
        app.get("/users/1").await,
        ("user 1, answer 4".into(), hit("HIT"))
    );
    assert_eq!(app.calls.get(), 5);
}

pub async fn query_parameters_and_the_catch_all_are_arguments(t: &Target) {
    let app = app(t).await;
    let a = app.get("/orgs/1/users/2?expand=true").await;
    assert_eq!(a.1, hit("MISS"));
    assert_eq!(
        app.get("/orgs/1/users/2?expand=true").await,
        (a.0.clone(), hit("HIT"))
    );
    assert_eq!(app.get("/orgs/1/users/2?expand=false").await.1, hit("MISS"));
    // The catch-all: cached by path.
    let page = app.get("/static/site.css").await;
    assert_eq!(page.1, hit("MISS"));
    assert_eq!(app.get("/static/site.css").await, (page.0, hit("HIT")));
    assert_eq!(app.get("/static/other.css").await.1, hit("MISS"));
    // A route argument with the key's separator cannot reach another user's entry.
    app.get("/users/1").await;
    assert_eq!(app.get("/users/1%3Auser%3A2").await.1, hit("MISS"));
}

pub async fn answers_that_must_not_be_shared_are_not_stored(t: &Target) {
    let app = app(t).await;
    for what in ["no-store", "private", "cookie", "vary"] {
        let path = format!("/private/{what}");
        let first = app.get(&path).await;
        let second = app.get(&path).await;
        assert_ne!(first.0, second.0, "{what}: answered twice");
        assert_eq!(first.1, hit("MISS"), "{what}: forwarded");
        // Remembered as uncacheable for a while (hit-for-miss): passed on, not stored.
        assert_eq!(second.1, hit("PASS"), "{what}: passed on, not stored");
    }
    // A request with credentials is answered for its user alone.
    app.get("/users/9").await;
    let (_, how) = app
        .get_with("/users/9", &[("authorization", "Bearer x")])
        .await;
    assert_eq!(how, hit("PASS"));
    let (_, how) = app.get_with("/users/9", &[("cookie", "session=1")]).await;
    assert_eq!(how, hit("PASS"));
    assert_eq!(app.get("/users/9").await.1, hit("HIT"));
}

suite!(
    memory,
    Target::memory(),
    [
        a_read_route_is_cached_and_its_write_route_invalidates,
        query_parameters_and_the_catch_all_are_arguments,
        answers_that_must_not_be_shared_are_not_stored,
    ]
);

suite!(
    redis,
    Target::redis(),
    [
        a_read_route_is_cached_and_its_write_route_invalidates,
        query_parameters_and_the_catch_all_are_arguments,
        answers_that_must_not_be_shared_are_not_stored,
    ]
);
