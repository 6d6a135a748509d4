//! The caching reverse proxy (`cachelet::proxy`, what `cachelet serve` runs) over real HTTP: a
//! scripted upstream server and the proxy on free loopback ports, a real client, real compiled
//! policies (the Rust seed for the guide's endpoints, `http-routes` for HTTP semantics), on the
//! memory backend and a real Redis server.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::response::Response;
use axum::Router;
use cachelet::proxy::Proxy;
use cachelet::{Cache, PolicySource, Settings};
use cachelet_tests::{component, suite, Target};
use futures_util::future::join_all;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod edge;

/// What the upstream answers for one path (its default: 200, the path, its version and how
/// many times it was asked, `Cache-Control: max-age=300`).
#[derive(Clone)]
struct Script {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Option<String>,
    /// A body streamed in this many pieces of this many bytes, instead.
    stream: Option<(usize, usize)>,
    /// The streamed body stops after this many pieces, and sends nothing more (the
    /// connection stays open).
    stall_after: Option<usize>,
}

impl Script {
    fn new(status: u16, headers: &[(&'static str, &str)]) -> Script {
        Script {
            status,
            headers: headers.iter().map(|(k, v)| (*k, v.to_string())).collect(),
            body: None,
            stream: None,
            stall_after: None,
        }
    }
}

/// A write's scripted answer: its status and headers.
type WriteAnswer = (u16, Vec<(&'static str, String)>);

#[derive(Default)]
struct UpState {
    scripts: Mutex<HashMap<String, Script>>,
    /// Delays of the next GETs of a path, one per request.
    delays: Mutex<HashMap<String, VecDeque<Duration>>>,
    /// Every path's current version (a PUT sets it to its body).
    versions: Mutex<HashMap<String, String>>,
    asked: Mutex<HashMap<String, u64>>,
    /// The last request's headers, per path.
    seen: Mutex<HashMap<String, HeaderMap>>,
    /// What a write (any method but GET and HEAD) of a path answers instead of `200 saved`:
    /// a status and headers.
    writes: Mutex<HashMap<String, WriteAnswer>>,
    in_flight: AtomicU64,
    peak: AtomicU64,
}

#[derive(Clone)]
struct Upstream {
    url: String,
    state: Arc<UpState>,
}

impl Upstream {
    async fn start() -> Upstream {
        let state = Arc::new(UpState::default());
        let s = state.clone();
        let app = Router::new().fallback(move |req: Request<Body>| answer(s.clone(), req));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Upstream { url, state }
    }

    fn script(&self, path: &str, s: Script) {
        self.state.scripts.lock().unwrap().insert(path.into(), s);
    }

    fn delay_next(&self, path: &str, d: Duration) {
        self.state
            .delays
            .lock()
            .unwrap()
            .entry(path.into())
            .or_default()
            .push_back(d);
    }

    fn script_write(&self, path: &str, status: u16, headers: &[(&'static str, &str)]) {
        let headers = headers.iter().map(|(k, v)| (*k, v.to_string())).collect();
        self.state
            .writes
            .lock()
            .unwrap()
            .insert(path.into(), (status, headers));
    }

    fn asked(&self, path: &str) -> u64 {
        *self.state.asked.lock().unwrap().get(path).unwrap_or(&0)
    }

    fn seen(&self, path: &str) -> HeaderMap {
        self.state.seen.lock().unwrap()[path].clone()
    }
}

async fn answer(s: Arc<UpState>, req: Request<Body>) -> Response {
    let path = req.uri().path().to_string();
    let n = {
        let mut asked = s.asked.lock().unwrap();
        let n = asked.entry(path.clone()).or_default();
        *n += 1;
        *n
    };
    s.seen
        .lock()
        .unwrap()
        .insert(path.clone(), req.headers().clone());
    let now = s.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    s.peak.fetch_max(now, Ordering::SeqCst);
    let delay = s
        .delays
        .lock()
        .unwrap()
        .get_mut(&path)
        .and_then(VecDeque::pop_front);
    // Read before the delay, as a slow database read would be: a write landing meanwhile is
    // not in this answer.
    let version = s.versions.lock().unwrap().get(&path).cloned();
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    let response = if req.method() == Method::GET || req.method() == Method::HEAD {
        let script = s
            .scripts
            .lock()
            .unwrap()
            .get(&path)
            .cloned()
            .unwrap_or_else(|| Script::new(200, &[("cache-control", "max-age=300")]));
        let etag = script
            .headers
            .iter()
            .find(|(k, _)| *k == "etag")
            .map(|(_, v)| v.clone());
        let matches = etag.is_some_and(|e| {
            req.headers()
                .get("if-none-match")
                .is_some_and(|v| v.as_bytes() == e.as_bytes())
        });
        let mut b = Response::builder().status(if matches { 304 } else { script.status });
        for (k, v) in &script.headers {
            b = b.header(*k, v);
        }
        if let (false, Some((pieces, size))) = (matches, script.stream) {
            let stall = script.stall_after;
            let stream = futures_util::stream::iter(0..pieces).then(move |i| async move {
                if stall.is_some_and(|k| i >= k) {
                    std::future::pending::<()>().await;
                }
                tokio::task::yield_now().await;
                Ok::<_, std::io::Error>(axum::body::Bytes::from(vec![b'a' + (i % 26) as u8; size]))
            });
            s.in_flight.fetch_sub(1, Ordering::SeqCst);
            return b.body(Body::from_stream(stream)).unwrap();
        }
        let body = if matches {
            String::new()
        } else {
            script.body.unwrap_or_else(|| {
                format!(
                    "{path} {} #{n}",
                    version.unwrap_or_else(|| "v0".to_string())
                )
            })
        };
        b.body(Body::from(body)).unwrap()
    } else {
        let body = axum::body::to_bytes(req.into_body(), 1 << 20)
            .await
            .unwrap_or_default();
        let body = String::from_utf8_lossy(&body).to_string();
        if body == "fail" {
            Response::builder()
                .status(500)
                .body(Body::from("not saved"))
                .unwrap()
        } else {
            s.versions.lock().unwrap().insert(path.clone(), body);
            let scripted = s.writes.lock().unwrap().get(&path).cloned();
            let (status, headers) = scripted.unwrap_or((200, Vec::new()));
            let mut b = Response::builder().status(status);
            for (k, v) in headers {
                b = b.header(k, v);
            }
            b.body(Body::from("saved")).unwrap()
        }
    };
    s.in_flight.fetch_sub(1, Ordering::SeqCst);
    response
}

/// A proxy in front of `upstream`, serving on a free port until the test ends.
struct Front {
    base: String,
    cache: Cache,
    client: reqwest::Client,
}

const TOKEN: &str = "s3cret-admin-token";

async fn front_with(
    settings: Settings,
    policy: &str,
    upstream: &str,
    configure: impl FnOnce(cachelet::proxy::ProxyBuilder) -> cachelet::proxy::ProxyBuilder,
) -> Front {
    let cache = Cache::builder()
        .settings(settings)
        .policy(PolicySource::file(component(policy)))
        .build()
        .await
        .expect("the policy loads");
    let proxy = configure(
        Proxy::builder(cache.clone(), upstream)
            .unwrap()
            .admin_token(Some(TOKEN.into()))
            .upstream_timeout(Duration::from_secs(2)),
    )
    .build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(proxy.serve(listener, std::future::pending()));
    Front {
        base,
        cache,
        // What the proxy answers, as it answers it: redirects are not followed.
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
    }
}

async fn front(t: &Target, policy: &str, upstream: &Upstream) -> Front {
    front_with(t.settings(), policy, &upstream.url, |b| b).await
}

/// One answer: status, `X-Cache`, body, headers.
#[derive(Debug)]
struct Got {
    status: u16,
    cache: String,
    body: String,
    headers: HeaderMap,
}

impl Front {
    async fn send(&self, method: Method, path: &str, headers: &[(&str, &str)], body: &str) -> Got {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .body(body.to_string());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = req.send().await.unwrap();
        let headers = r.headers().clone();
        Got {
            status: r.status().as_u16(),
            cache: headers
                .get("x-cache")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default(),
            body: r.text().await.unwrap(),
            headers,
        }
    }

    /// Waits until `path` is a hit (the fill of a miss lands after its answer).
    async fn hit_soon(&self, path: &str) {
        for _ in 0..100 {
            if self.get(path).await.cache == "HIT" {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{path} is not stored");
    }

    async fn get(&self, path: &str) -> Got {
        self.send(Method::GET, path, &[], "").await
    }

    async fn put(&self, path: &str, body: &str) -> Got {
        self.send(Method::PUT, path, &[], body).await
    }

    async fn admin(&self, path: &str, token: Option<&str>, body: &str) -> u16 {
        let mut req = self
            .client
            .post(format!("{}/_cachelet/{path}", self.base))
            .body(body.to_string());
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        req.send().await.unwrap().status().as_u16()
    }
}

// The guide's endpoints through the proxy, with the seed policy.

pub async fn the_guides_endpoints_miss_hit_invalidate_and_recache(t: &Target) {
    let up = Upstream::start().await;
    let p = front(t, "seed-rust", &up).await;
    // Routed reads are recached through their routes; unrouted writes are not served here.
    assert_eq!(p.cache.recaches_without_loader(), Vec::<String>::new());
    let first = p.get("/users/7").await;
    assert_eq!(
        (first.cache.as_str(), first.body.as_str()),
        ("MISS", "/users/7 v0 #1")
    );
    let again = p.get("/users/7").await;
    assert_eq!(
        (again.cache.as_str(), again.body.as_str()),
        ("HIT", "/users/7 v0 #1")
    );
    assert!(again.headers.contains_key("age"));
    assert!(again.headers["cache-status"]
        .to_str()
        .unwrap()
        .starts_with("cachelet; hit"));
    // update_user invalidates user:7 and recaches get_user: a GET of its route, to the upstream.
    assert_eq!(p.put("/users/7", "ann").await.status, 200);
    let after = p.get("/users/7").await;
    assert_eq!(
        (after.cache.as_str(), after.body.as_str()),
        ("HIT", "/users/7 ann #3"),
        "warmed by the recache with the new data"
    );
    assert_eq!(up.asked("/users/7"), 3, "GET, PUT, the recache's GET");

    // Org users: the PUT invalidates the org user's entry (tag user:{user_id}); no recache.
    assert_eq!(p.get("/orgs/1/users/7").await.cache, "MISS");
    assert_eq!(p.get("/orgs/1/users/7").await.cache, "HIT");
    assert_eq!(p.put("/orgs/1/users/7", "bob").await.status, 200);
    let fresh = p.get("/orgs/1/users/7").await;
    assert_eq!(
        (fresh.cache.as_str(), fresh.body.as_str()),
        ("MISS", "/orgs/1/users/7 bob #3")
    );

    // The resource: profile and settings, both invalidated by the profile's PUT and recached.
    assert_eq!(p.get("/users/8/profile").await.cache, "MISS");
    assert_eq!(p.get("/users/8/settings").await.cache, "MISS");
    assert_eq!(p.get("/users/8/settings").await.cache, "HIT");
    assert_eq!(p.put("/users/8/profile", "new").await.status, 200);
    let profile = p.get("/users/8/profile").await;
    assert_eq!(
        (profile.cache.as_str(), profile.body.as_str()),
        ("HIT", "/users/8/profile new #3")
    );
    assert_eq!(
        p.get("/users/8/settings").await.body,
        "/users/8/settings v0 #2"
    );
    assert_eq!(up.asked("/users/8/settings"), 2, "recached after the write");

    // A write the upstream refuses invalidates nothing.
    let before = p.get("/users/7").await.body;
    assert_eq!(p.put("/users/7", "fail").await.status, 500);
    let after = p.get("/users/7").await;
    assert_eq!((after.cache.as_str(), after.body), ("HIT", before));
}

/// A slow GET read the old version; a PUT landed meanwhile. Once the PUT has answered, no GET
/// returns the old version: the slow GET's answer is not stored.
pub async fn a_slow_read_racing_a_write_leaves_nothing_stale(t: &Target) {
    let up = Upstream::start().await;
    let settings = t.settings();
    let one = front_with(settings.clone(), "seed-rust", &up.url, |b| b).await;
    // A second proxy on the same backend (on Redis: another replica).
    let two = front_with(settings.clone(), "seed-rust", &up.url, |b| b).await;
    // Two proxies share entries only on a shared backend.
    let shared = !settings.url.to_string().starts_with("mem:");
    let pairs: &[_] = if shared {
        &[(&one, &one, 1), (&one, &two, 2), (&two, &one, 3)]
    } else {
        &[(&one, &one, 1)]
    };
    let fronts: &[&Front] = if shared {
        &[&one, &two, &one]
    } else {
        &[&one, &one]
    };
    for &(reader, writer, id) in pairs {
        let path = format!("/users/{id}");
        up.delay_next(&path, Duration::from_millis(600));
        let slow = {
            let (client, url) = (reader.client.clone(), format!("{}{path}", reader.base));
            tokio::spawn(async move { client.get(url).send().await.unwrap().text().await })
        };
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(writer.put(&path, "new").await.status, 200);
        let old = slow.await.unwrap().unwrap();
        assert!(
            old.contains(" v0 "),
            "the slow read loaded the old version: {old}"
        );
        for front in fronts {
            let got = front.get(&path).await;
            assert!(got.body.contains(" new "), "{path}: {got:?}");
        }
    }
}

/// 100 concurrent GETs of a cold route with `lock`: one upstream request. 100 of an
/// uncacheable one: not serialised behind the lock (hit-for-miss).
pub async fn concurrent_misses_coalesce_and_uncacheable_answers_do_not_queue(t: &Target) {
    let up = Upstream::start().await;
    let p = front(t, "http-routes", &up).await;
    up.delay_next("/locked/1", Duration::from_millis(300));
    let gets = (0..100).map(|_| p.get("/locked/1"));
    let answers = join_all(gets).await;
    assert!(
        answers.iter().all(|g| g.body == "/locked/1 v0 #1"),
        "one load served all"
    );
    assert_eq!(up.asked("/locked/1"), 1);

    up.script(
        "/locked/2",
        Script::new(200, &[("cache-control", "no-store")]),
    );
    up.state.peak.store(0, Ordering::SeqCst);
    for _ in 0..100 {
        up.delay_next("/locked/2", Duration::from_millis(300));
    }
    let answers = join_all((0..100).map(|_| p.get("/locked/2"))).await;
    assert!(answers.iter().all(|g| g.status == 200));
    assert_eq!(up.asked("/locked/2"), 100, "each asked the upstream");
    let peak = up.state.peak.load(Ordering::SeqCst);
    assert!(
        peak >= 50,
        "the requests behind the first one went to the upstream together, not one by one: \
         at most {peak} at once"
    );
    let later = p.get("/locked/2").await;
    assert_eq!(later.cache, "PASS", "remembered as uncacheable");
}

/// Answers that must not be shared, and failures: nothing stored, the right status.
pub async fn errors_and_private_answers_are_not_stored(t: &Target) {
    let up = Upstream::start().await;
    // Errors are not remembered here (see the edge tests for the negative entry).
    let p = front_with(t.settings(), "http-routes", &up.url, |b| {
        b.layer(|l| l.negative_ttl(Duration::ZERO))
    })
    .await;
    for (path, script) in [
        (
            "/e500",
            Script::new(500, &[("cache-control", "max-age=300")]),
        ),
        (
            "/nostore",
            Script::new(200, &[("cache-control", "no-store")]),
        ),
        (
            "/private",
            Script::new(200, &[("cache-control", "private, max-age=60")]),
        ),
        (
            "/cookie",
            Script::new(
                200,
                &[("cache-control", "max-age=60"), ("set-cookie", "s=1")],
            ),
        ),
        (
            "/varystar",
            Script::new(200, &[("cache-control", "max-age=60"), ("vary", "*")]),
        ),
    ] {
        up.script(path, script.clone());
        let first = p.get(path).await;
        let second = p.get(path).await;
        assert_eq!(first.status, script.status, "{path}");
        assert_eq!(second.status, script.status, "{path}");
        assert_ne!(first.body, second.body, "{path}: asked twice");
        assert_ne!(second.cache, "HIT", "{path}");
    }
    // A timeout: 504, not stored.
    up.delay_next("/slow", Duration::from_secs(3));
    let slow = p.get("/slow").await;
    assert_eq!(slow.status, 504);
    assert_eq!(p.get("/slow").await.body, "/slow v0 #2");
    // A refused connection: 502.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let gone = front_with(t.settings(), "http-routes", &closed, |b| {
        b.layer(|l| l.negative_ttl(Duration::ZERO))
    })
    .await;
    let r = gone.get("/users/1").await;
    assert_eq!(r.status, 502, "{r:?}");
    assert_eq!(gone.get("/users/1").await.cache, "MISS", "nothing stored");
    assert!(
        !r.body.contains("127.0.0.1:"),
        "the upstream's address stays private: {r:?}"
    );
}

/// `stale-if-error` and a route's grace: the stored answer stands in for a failing upstream.
pub async fn a_stale_answer_stands_in_for_a_failing_upstream(t: &Target) {
    let up = Upstream::start().await;
    let p = front(t, "http-routes", &up).await;
    up.script(
        "/sie",
        Script::new(200, &[("cache-control", "max-age=1, stale-if-error=60")]),
    );
    up.script(
        "/graced/1",
        Script::new(200, &[("cache-control", "max-age=1")]),
    );
    up.script(
        "/plain",
        Script::new(200, &[("cache-control", "max-age=1")]),
    );
    let sie = p.get("/sie").await.body;
    let graced = p.get("/graced/1").await.body;
    p.get("/plain").await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    for path in ["/sie", "/graced/1", "/plain"] {
        up.script(path, Script::new(503, &[]));
    }
    let got = p.get("/sie").await;
    assert_eq!((got.status, got.body), (200, sie));
    assert!(got.headers["cache-status"]
        .to_str()
        .unwrap()
        .contains("stale-if-error"));
    let got = p.get("/graced/1").await;
    assert_eq!((got.status, got.body), (200, graced));
    assert_eq!(
        p.get("/plain").await.status,
        503,
        "no stale-if-error, no grace"
    );
}

/// Conditional requests, revalidation with 304, Vary, Age, HEAD, stale-while-revalidate.
pub async fn http_semantics(t: &Target) {
    let up = Upstream::start().await;
    let p = front(t, "http-routes", &up).await;

    // A client's conditions are answered from the stored entry.
    up.script(
        "/etag",
        Script::new(200, &[("cache-control", "max-age=1"), ("etag", "\"v1\"")]),
    );
    assert_eq!(p.get("/etag").await.cache, "MISS");
    let cond = p
        .send(Method::GET, "/etag", &[("if-none-match", "\"v1\"")], "")
        .await;
    assert_eq!(
        (cond.status, cond.cache.as_str(), cond.body.as_str()),
        (304, "HIT", "")
    );
    let other = p
        .send(Method::GET, "/etag", &[("if-none-match", "\"v0\"")], "")
        .await;
    assert_eq!((other.status, other.body.as_str()), (200, "/etag v0 #1"));
    // Stale: revalidated upstream with the stored validator; a 304 refreshes the entry.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let revalidated = p.get("/etag").await;
    assert_eq!(
        (revalidated.status, revalidated.body.as_str()),
        (200, "/etag v0 #1")
    );
    assert_eq!(up.seen("/etag")["if-none-match"], "\"v1\"");
    assert_eq!(up.asked("/etag"), 2);
    assert_eq!(p.get("/etag").await.cache, "HIT", "refreshed by the 304");
    assert_eq!(up.asked("/etag"), 2);

    // Vary: one entry per value of the named header.
    up.script(
        "/vary",
        Script::new(
            200,
            &[("cache-control", "max-age=60"), ("vary", "accept-language")],
        ),
    );
    let en = [("accept-language", "en")];
    let fr = [("accept-language", "fr")];
    let a = p.send(Method::GET, "/vary", &en, "").await;
    let b = p.send(Method::GET, "/vary", &fr, "").await;
    assert_eq!((a.cache.as_str(), b.cache.as_str()), ("MISS", "MISS"));
    assert_ne!(a.body, b.body);
    assert_eq!(p.send(Method::GET, "/vary", &en, "").await.body, a.body);
    assert_eq!(p.send(Method::GET, "/vary", &fr, "").await.body, b.body);
    assert_eq!(up.asked("/vary"), 2);

    // Age: the upstream's own plus the time stored; max-age bounds the entry by it.
    up.script(
        "/aged",
        Script::new(200, &[("cache-control", "max-age=100"), ("age", "40")]),
    );
    p.get("/aged").await;
    let hit = p.get("/aged").await;
    let age: u64 = hit.headers["age"].to_str().unwrap().parse().unwrap();
    assert!((40..=42).contains(&age), "age {age}");
    let ttl = hit.headers["cache-status"].to_str().unwrap().to_string();
    assert!(ttl.contains("ttl=5") || ttl.contains("ttl=6"), "{ttl}");

    // HEAD: the stored headers, no body.
    let head = p.send(Method::HEAD, "/aged", &[], "").await;
    assert_eq!(
        (head.status, head.cache.as_str(), head.body.as_str()),
        (200, "HIT", "")
    );

    // stale-while-revalidate: the stored answer at once, one background refresh.
    up.script(
        "/swr",
        Script::new(
            200,
            &[("cache-control", "max-age=1, stale-while-revalidate=60")],
        ),
    );
    let first = p.get("/swr").await.body;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    up.delay_next("/swr", Duration::from_millis(500));
    let stale = p.get("/swr").await;
    assert_eq!((stale.cache.as_str(), stale.body), ("HIT", first));
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(up.asked("/swr"), 2, "one background refresh");
    assert_eq!(p.get("/swr").await.body, "/swr v0 #2");

    // The op's early_ttl: a fresh answer this old is refreshed in the background.
    p.get("/early/1").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let served = p.get("/early/1").await;
    assert_eq!(
        (served.cache.as_str(), served.body.as_str()),
        ("HIT", "/early/1 v0 #1")
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(up.asked("/early/1"), 2, "one background refresh");
    assert_eq!(p.get("/early/1").await.body, "/early/1 v0 #2");

    // The upstream silent: the policy's TTL; `ttl=policy`: the policy's over the upstream's.
    up.script("/silent", Script::new(200, &[]));
    p.get("/silent").await;
    assert_eq!(p.get("/silent").await.cache, "HIT");
    up.script(
        "/fixed/1",
        Script::new(200, &[("cache-control", "max-age=0")]),
    );
    p.get("/fixed/1").await;
    assert_eq!(p.get("/fixed/1").await.cache, "HIT");
    up.script("/zero", Script::new(200, &[("cache-control", "max-age=0")]));
    p.get("/zero").await;
    assert_ne!(p.get("/zero").await.cache, "HIT");

    // Credentials pass, unless the route opts in.
    let auth = [("authorization", "Bearer x")];
    p.get("/users/3").await;
    assert_eq!(
        p.send(Method::GET, "/users/3", &auth, "").await.cache,
        "PASS"
    );
    up.script(
        "/mine/1",
        Script::new(200, &[("cache-control", "public, max-age=60")]),
    );
    p.send(Method::GET, "/mine/1", &auth, "").await;
    assert_eq!(p.send(Method::GET, "/mine/1", &auth, "").await.cache, "HIT");
}

/// Surrogate keys: tags from the upstream's headers, purged exactly, stripped from answers.
pub async fn a_purge_by_an_upstream_tag_invalidates_exactly_its_answers(t: &Target) {
    let up = Upstream::start().await;
    let p = front(t, "http-routes", &up).await;
    up.script(
        "/a",
        Script::new(
            200,
            &[
                ("cache-control", "max-age=60"),
                ("surrogate-key", "red blue"),
            ],
        ),
    );
    up.script(
        "/b",
        Script::new(
            200,
            &[("cache-control", "max-age=60"), ("cache-tag", "blue,green")],
        ),
    );
    up.script("/c", Script::new(200, &[("cache-control", "max-age=60")]));
    for path in ["/a", "/b", "/c"] {
        let got = p.get(path).await;
        assert!(!got.headers.contains_key("surrogate-key"), "{got:?}");
        assert!(!got.headers.contains_key("cache-tag"), "{got:?}");
    }
    // A miss is answered before its fill lands (and a purge meanwhile would void the fill).
    for path in ["/a", "/b", "/c"] {
        p.hit_soon(path).await;
    }
    assert_eq!(
        p.admin("purge", Some(TOKEN), r#"{"tags": ["red"]}"#).await,
        200
    );
    assert_eq!(p.get("/a").await.cache, "MISS");
    assert_eq!(p.get("/b").await.cache, "HIT");
    assert_eq!(
        p.admin("purge", Some(TOKEN), r#"{"tags": ["green"]}"#)
            .await,
        200
    );
    assert_eq!(p.get("/a").await.cache, "HIT");
    assert_eq!(p.get("/b").await.cache, "MISS");
    assert_eq!(p.get("/c").await.cache, "HIT");

    // A purge that lands while a tagged answer is in flight leaves nothing stale.
    up.delay_next("/a", Duration::from_millis(500));
    assert_eq!(
        p.admin("purge", Some(TOKEN), r#"{"tags": ["blue"]}"#).await,
        200
    );
    let slow = {
        let (client, url) = (p.client.clone(), format!("{}/a", p.base));
        tokio::spawn(async move { client.get(url).send().await.unwrap().text().await })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        p.admin("purge", Some(TOKEN), r#"{"tags": ["red"]}"#).await,
        200
    );
    slow.await.unwrap().unwrap();
    assert_eq!(
        p.get("/a").await.cache,
        "MISS",
        "the in-flight answer was fenced"
    );
}

/// The admin API: no token or a wrong one purges nothing; the right one does.
pub async fn the_admin_api_needs_the_token(t: &Target) {
    let up = Upstream::start().await;
    let p = front(t, "seed-rust", &up).await;
    p.get("/users/5").await;
    let purge = r#"{"tags": ["user:5"]}"#;
    assert_eq!(p.admin("purge", None, purge).await, 401);
    assert_eq!(p.admin("purge", Some("wrong"), purge).await, 401);
    assert_eq!(
        p.admin("purge", Some(&TOKEN[..TOKEN.len() - 1]), purge)
            .await,
        401
    );
    assert_eq!(p.get("/users/5").await.cache, "HIT", "nothing purged");
    assert_eq!(p.admin("purge", Some(TOKEN), purge).await, 200);
    assert_eq!(p.get("/users/5").await.cache, "MISS");
    // By key and by pattern.
    p.get("/users/6").await;
    assert_eq!(
        p.admin("purge", Some(TOKEN), r#"{"keys": ["user:5"]}"#)
            .await,
        200
    );
    assert_eq!(p.get("/users/5").await.cache, "MISS");
    assert_eq!(p.get("/users/6").await.cache, "HIT");
    assert_eq!(
        p.admin("purge", Some(TOKEN), r#"{"patterns": ["user:*"]}"#)
            .await,
        200
    );
    assert_eq!(p.get("/users/6").await.cache, "MISS");
    // A malformed purge is refused, naming the problem.
    assert_eq!(p.admin("purge", Some(TOKEN), "{tags").await, 400);
    // Health is open; the policies are not.
    let health = p
        .client
        .get(format!("{}/_cachelet/health", p.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(
        health.text().await.unwrap(),
        r#"{"status":"up"}"#,
        "up or down, nothing more, without the token"
    );
    let detailed = p
        .client
        .get(format!("{}/_cachelet/health", p.base))
        .header("authorization", format!("bearer {TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(detailed.status(), 200);
    let detailed = detailed.text().await.unwrap();
    assert!(detailed.contains("\"policies\""), "{detailed}");
    // The scheme is case-insensitive (RFC 9110 §11.1).
    let lower = p
        .client
        .post(format!("{}/_cachelet/purge", p.base))
        .header("authorization", format!("bearer {TOKEN}"))
        .body(r#"{"tags": ["x"]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(lower.status(), 200);
    let policies = p
        .client
        .get(format!("{}/_cachelet/policies", p.base))
        .send()
        .await
        .unwrap();
    assert_eq!(policies.status(), 401);

    // No token configured: the admin API is off.
    let off = front_with(t.settings(), "seed-rust", &up.url, |b| b.admin_token(None)).await;
    assert_eq!(off.admin("purge", None, purge).await, 403);
    assert_eq!(off.admin("purge", Some(TOKEN), purge).await, 403);
}

/// Bad input: no route, an oversized body, invalid header bytes, encoded separators.
pub async fn bad_input_gets_a_clear_answer_and_never_a_shared_key(t: &Target) {
    let up = Upstream::start().await;
    let p = front_with(t.settings(), "seed-rust", &up.url, |b| {
        b.max_request_body(1024)
            .header_read_timeout(Duration::from_secs(1))
    })
    .await;
    // No route: passed through untouched.
    let other = p.get("/nowhere/at/all").await;
    assert_eq!((other.status, other.cache.as_str()), (200, "PASS"));
    // A body past the limit: 413, and the upstream never sees it.
    let big = "x".repeat(4096);
    assert_eq!(p.put("/users/1", &big).await.status, 413);
    assert_eq!(up.asked("/users/1"), 0);
    // Encoded separators are arguments of their own: never another user's entry. (`%3A` and
    // `:` are the same URL; `%2F` is not `/`.)
    let one = p.get("/users/1").await.body;
    for path in ["/users/1%3Auser%3A2", "/users/1:user:2", "/users/1%2F2"] {
        let got = p.get(path).await;
        assert_ne!(got.body, one, "{path} shares user 1's entry: {got:?}");
    }
    assert_eq!(
        p.get("/users/1%2F2").await.cache,
        "HIT",
        "but is cached itself"
    );
    assert_eq!(p.get("/users/1/2").await.cache, "PASS", "no route");
    // Invalid header bytes and a slow client: the connection ends, the proxy goes on.
    let addr = p.base.trim_start_matches("http://").to_string();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"GET /users/1 HTTP/1.1\r\nHost: x\r\nX-Bad: a\x01b\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer)).await;
    assert!(
        answer.starts_with(b"HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /users/1 HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "a client that never finishes its headers is let go"
    );
    assert_eq!(p.get("/users/1").await.cache, "HIT", "still serving");
}

/// Hot reload through the proxy while requests flow: no request fails.
pub async fn a_reload_while_serving_fails_no_request(t: &Target) {
    let up = Upstream::start().await;
    let dir = std::env::temp_dir().join(format!("cachelet-proxy-reload-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let policy = dir.join("routes.wasm");
    std::fs::copy(component("http-routes"), &policy).unwrap();
    let cache = Cache::builder()
        .settings(t.settings())
        .policy_dir(&dir)
        .build()
        .await
        .unwrap();
    let proxy = Proxy::builder(cache.clone(), &up.url)
        .unwrap()
        .admin_token(Some(TOKEN.into()))
        .build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(proxy.serve(listener, std::future::pending()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..8 {
        let (base, stop) = (base.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let (mut ok, mut failed) = (0u64, Vec::new());
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let url = format!("{base}/users/{}", (c * 1000 + i) % 50);
                match client.get(url).send().await {
                    Ok(r) if r.status() == StatusCode::OK => ok += 1,
                    Ok(r) => failed.push(r.status().to_string()),
                    Err(e) => failed.push(e.to_string()),
                }
            }
            (ok, failed)
        }));
    }
    let client = reqwest::Client::new();
    let serving = || {
        cache
            .policy_status()
            .file(&policy)
            .and_then(|s| s.serving.as_ref().map(|s| s.hash.clone()))
    };
    let mut swaps = 0;
    for i in 0..10 {
        // Replace the file with the other policy (both route GET /users/{user_id}; a new copy,
        // renamed in place), and ask for a reload too: each round swaps what serves.
        let before = serving();
        let next = if i % 2 == 0 {
            "seed-rust"
        } else {
            "http-routes"
        };
        let tmp = dir.join(format!(".routes-{i}.tmp"));
        std::fs::copy(component(next), &tmp).unwrap();
        std::fs::rename(&tmp, &policy).unwrap();
        let r = client
            .post(format!("{base}/_cachelet/reload"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        for _ in 0..100 {
            if serving() != before {
                swaps += 1;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(swaps, 10, "every round swapped the serving policy");
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for c in clients {
        let (ok, failed) = c.await.unwrap();
        assert!(failed.is_empty(), "{failed:?}");
        total += ok;
    }
    assert!(total > 100, "requests flowed: {total}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A shutdown lets the requests in flight finish, and a write among them delivers its
/// invalidation: a proxy started afterwards on the same Redis serves the new data.
pub async fn a_shutdown_finishes_requests_in_flight_and_loses_no_invalidation(t: &Target) {
    let up = Upstream::start().await;
    let settings = t.settings();
    let cache = Cache::builder()
        .settings(settings.clone())
        .policy(PolicySource::file(component("seed-rust")))
        .build()
        .await
        .unwrap();
    let proxy = Proxy::builder(cache, &up.url).unwrap().build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(proxy.serve(listener, async {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();
    let get = || client.get(format!("{base}/users/1")).send();
    assert_eq!(get().await.unwrap().headers()["x-cache"], "MISS");
    assert_eq!(get().await.unwrap().headers()["x-cache"], "HIT");
    // The org user carries the user's tag and no write recaches it: only the invalidation
    // can make it stale (the recache of /users/1 stores the new data whatever happened).
    let org = || client.get(format!("{base}/orgs/5/users/1")).send();
    assert_eq!(org().await.unwrap().headers()["x-cache"], "MISS");
    assert_eq!(org().await.unwrap().headers()["x-cache"], "HIT");
    // A write and a read, both slow at the upstream, in flight when the signal comes.
    up.delay_next("/users/1", Duration::from_millis(600));
    let put = tokio::spawn(client.put(format!("{base}/users/1")).body("new").send());
    up.delay_next("/users/2", Duration::from_millis(600));
    let slow_get = tokio::spawn(client.get(format!("{base}/users/2")).send());
    tokio::time::sleep(Duration::from_millis(150)).await;
    stop.send(()).unwrap();
    assert_eq!(put.await.unwrap().unwrap().status(), 200);
    let r = slow_get.await.unwrap().unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().starts_with("/users/2 v0"));
    server.await.unwrap().unwrap();
    // Stopped: no new connection is accepted.
    assert!(get().await.is_err());
    let after = front_with(settings, "seed-rust", &up.url, |b| b).await;
    let got = after.get("/users/1").await;
    assert!(got.body.contains(" new "), "{got:?}");
    let org = after.get("/orgs/5/users/1").await;
    assert_eq!(
        org.cache, "MISS",
        "the write's invalidation reached Redis: {org:?}"
    );
}

/// HTTP/2 from a client (cleartext, prior knowledge) gets the same cache.
pub async fn http2_clients_share_the_cache(t: &Target) {
    let up = Upstream::start().await;
    let p = front(t, "seed-rust", &up).await;
    assert_eq!(p.get("/users/4").await.cache, "MISS");
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = h2.get(format!("{}/users/4", p.base)).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.headers()["x-cache"], "HIT");
    // The forwarding headers reach the upstream; hop-by-hop ones do not.
    p.send(
        Method::GET,
        "/users/9",
        &[("connection", "x-hop"), ("x-hop", "1")],
        "",
    )
    .await;
    let seen = up.seen("/users/9");
    assert!(seen.contains_key("x-forwarded-for"), "{seen:?}");
    assert!(seen.contains_key("via"), "{seen:?}");
    assert!(!seen.contains_key("x-hop"), "{seen:?}");
}

suite!(
    memory,
    Target::memory(),
    [
        the_guides_endpoints_miss_hit_invalidate_and_recache,
        a_slow_read_racing_a_write_leaves_nothing_stale,
        concurrent_misses_coalesce_and_uncacheable_answers_do_not_queue,
        errors_and_private_answers_are_not_stored,
        a_stale_answer_stands_in_for_a_failing_upstream,
        http_semantics,
        a_purge_by_an_upstream_tag_invalidates_exactly_its_answers,
        the_admin_api_needs_the_token,
        bad_input_gets_a_clear_answer_and_never_a_shared_key,
        a_reload_while_serving_fails_no_request,
        http2_clients_share_the_cache,
    ]
);

suite!(
    redis,
    Target::redis(),
    [
        the_guides_endpoints_miss_hit_invalidate_and_recache,
        a_slow_read_racing_a_write_leaves_nothing_stale,
        concurrent_misses_coalesce_and_uncacheable_answers_do_not_queue,
        errors_and_private_answers_are_not_stored,
        a_stale_answer_stands_in_for_a_failing_upstream,
        http_semantics,
        a_purge_by_an_upstream_tag_invalidates_exactly_its_answers,
        the_admin_api_needs_the_token,
        a_shutdown_finishes_requests_in_flight_and_loses_no_invalidation,
    ]
);
