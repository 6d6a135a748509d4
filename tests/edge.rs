//! The proxy on the edge (a module of the proxy tests, over the same scripted upstream): what a
//! client sends can neither poison the cache for the next client, nor switch caching off for
//! others, nor desynchronise the upstream's connections, nor hold the proxy's.

use super::*;
use cachelet::proxy::HostHeader;

/// Requests of distinct paths, one after the other on the proxy's pooled upstream connections:
/// each answer is its own path's.
async fn each_answer_is_its_own(p: &Front, paths: &[&str]) {
    for path in paths {
        let got = p.get(path).await;
        assert_eq!(got.status, 200, "{path}: {got:?}");
        assert!(got.body.starts_with(path), "{path}: {got:?}");
    }
}

/// A GET with a body is read without it: the upstream is told of no body (an upstream that
/// honours `Content-Length` would otherwise take the next pooled request for the body, and
/// answer the wrong client), and the body changes nothing of the key.
pub async fn a_get_with_a_body_never_desynchronises_the_upstream(t: &Target) {
    let up = Upstream::start().await;
    let p = front(t, "seed-rust", &up).await;
    let got = p.send(Method::GET, "/users/1", &[], "hello").await;
    assert_eq!((got.status, got.cache.as_str()), (200, "MISS"), "{got:?}");
    // A miss does not claim to be stored before its fill was tried.
    assert_eq!(got.headers["cache-status"], "cachelet; fwd=uri-miss");
    let seen = up.seen("/users/1");
    assert!(!seen.contains_key("content-length"), "{seen:?}");
    assert!(!seen.contains_key("transfer-encoding"), "{seen:?}");
    each_answer_is_its_own(
        &p,
        &[
            "/users/2", "/users/3", "/users/4", "/users/5", "/users/6", "/users/7",
        ],
    )
    .await;
    // The same on a hit, and with another body: the key holds no body.
    let again = p.send(Method::GET, "/users/1", &[], "other").await;
    assert_eq!(
        (again.cache.as_str(), again.body.as_str()),
        ("HIT", got.body.as_str())
    );
    assert_eq!(up.asked("/users/1"), 1);
}

/// The upstream is asked for its own authority whatever `Host` the client sends, and never
/// sees a client's `X-Forwarded-Host` (or the like) nor its forwarding chain: an answer built
/// from them would be stored for everyone. A trusted peer's chain is kept and extended.
pub async fn what_a_client_says_of_host_and_forwarding_never_reaches_the_upstream(t: &Target) {
    let up = Upstream::start().await;
    let p = front(t, "seed-rust", &up).await;
    let authority = up.url.trim_start_matches("http://").to_string();
    let forged = [
        ("host", "evil.example"),
        ("x-forwarded-host", "evil.example"),
        ("x-forwarded-for", "6.6.6.6"),
        ("x-forwarded-proto", "https"),
        ("forwarded", "for=6.6.6.6;host=evil.example"),
        ("x-original-url", "/admin"),
        ("x-host", "evil.example"),
    ];
    assert_eq!(
        p.send(Method::GET, "/users/11", &forged, "").await.cache,
        "MISS"
    );
    let seen = up.seen("/users/11");
    assert_eq!(seen["host"], authority.as_str(), "{seen:?}");
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1", "{seen:?}");
    assert_eq!(seen["x-forwarded-proto"], "http", "{seen:?}");
    assert_eq!(seen["forwarded"], "for=127.0.0.1;proto=http", "{seen:?}");
    for name in ["x-forwarded-host", "x-original-url", "x-host"] {
        assert!(!seen.contains_key(name), "{name}: {seen:?}");
    }
    // A pass too (no route): the same headers, written by the proxy.
    let _ = p.send(Method::POST, "/unrouted", &forged, "x").await;
    let seen = up.seen("/unrouted");
    assert_eq!(seen["host"], authority.as_str(), "{seen:?}");
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1", "{seen:?}");
    assert!(!seen.contains_key("x-forwarded-host"), "{seen:?}");

    // From a trusted peer, the chain goes on.
    let trusted = front_with(t.settings(), "seed-rust", &up.url, |b| {
        b.trusted_proxies(vec![cachelet::proxy::IpRange::parse("127.0.0.0/8").unwrap()])
    })
    .await;
    let _ = trusted.send(Method::GET, "/users/12", &forged, "").await;
    let seen = up.seen("/users/12");
    assert_eq!(seen["x-forwarded-for"], "6.6.6.6, 127.0.0.1", "{seen:?}");
    assert_eq!(seen["x-forwarded-proto"], "https", "{seen:?}");
    assert_eq!(
        seen["forwarded"], "for=6.6.6.6;host=evil.example, for=127.0.0.1;proto=http",
        "{seen:?}"
    );
    assert_eq!(seen["host"], authority.as_str(), "{seen:?}");
    assert!(!seen.contains_key("x-forwarded-host"), "{seen:?}");
}

/// A query parameter the op's key does not render passes (forwarded, not stored, not served
/// from the entry), as does one named like a path parameter; parameters the key renders are
/// keyed; the built-in policy keys every parameter.
pub async fn a_query_parameter_the_key_does_not_hold_passes(t: &Target) {
    let up = Upstream::start().await;
    let p = front(t, "seed-rust", &up).await;
    // get_user's key is user:{user_id}: `anything` is not in it.
    let odd = p.get("/users/21?anything=evil").await;
    assert_eq!(odd.cache, "PASS", "{odd:?}");
    let plain = p.get("/users/21").await;
    assert_eq!(
        (plain.cache.as_str(), plain.body.as_str()),
        ("MISS", "/users/21 v0 #2")
    );
    assert_eq!(p.get("/users/21").await.cache, "HIT");
    let odd = p.get("/users/21?anything=evil").await;
    assert_eq!(
        (odd.cache.as_str(), odd.body.as_str()),
        ("PASS", "/users/21 v0 #3")
    );
    // Named like the path's parameter: the path's value is the argument, so the query's may
    // not reach the upstream from a cached read.
    assert_eq!(p.get("/users/21?user_id=22").await.cache, "PASS");
    assert_eq!(p.get("/users/21").await.body, "/users/21 v0 #2");

    // The built-in policy keys the whole query: each query its own entry.
    let all = front(t, "proxy-default", &up).await;
    assert_eq!(all.get("/q?a=1").await.cache, "MISS");
    assert_eq!(all.get("/q?a=1").await.cache, "HIT");
    assert_eq!(all.get("/q?a=2").await.cache, "MISS");
    assert_eq!(all.get("/q?a=1&b").await.cache, "MISS");
}

/// Hop-by-hop headers, and the ones `Connection` names, are removed before the answer's
/// variant is chosen: a request that hides its `Accept-Language` from the upstream cannot
/// store the default language's answer under its language.
pub async fn hop_by_hop_headers_are_gone_before_the_variant_is_chosen(t: &Target) {
    let up = Upstream::start().await;
    let p = front(t, "http-routes", &up).await;
    up.script(
        "/lang",
        Script::new(
            200,
            &[("cache-control", "max-age=60"), ("vary", "accept-language")],
        ),
    );
    let hidden = p
        .send(
            Method::GET,
            "/lang",
            &[("connection", "accept-language"), ("accept-language", "fr")],
            "",
        )
        .await;
    assert_eq!(hidden.cache, "MISS");
    assert!(!up.seen("/lang").contains_key("accept-language"));
    // French is its own variant, asked of the upstream in French.
    let fr = p
        .send(Method::GET, "/lang", &[("accept-language", "fr")], "")
        .await;
    assert_eq!(
        (fr.cache.as_str(), fr.body.as_str()),
        ("MISS", "/lang v0 #2")
    );
    assert_eq!(up.seen("/lang")["accept-language"], "fr");
    // The one without a language is what the hidden request stored.
    assert_eq!(p.get("/lang").await.body, "/lang v0 #1");
}

/// A `Range` request is served from the stored complete answer (the fill asks for all of
/// it), so it neither reaches the upstream again nor keeps the URL from being cached.
pub async fn a_range_request_is_served_from_the_whole_answer(t: &Target) {
    let up = Upstream::start().await;
    let p = front(t, "http-routes", &up).await;
    let first = p
        .send(Method::GET, "/ranged", &[("range", "bytes=0-3")], "")
        .await;
    assert!(matches!(first.status, 200 | 206), "{first:?}");
    assert!(!up.seen("/ranged").contains_key("range"));
    p.hit_soon("/ranged").await;
    let whole = p.get("/ranged").await;
    assert_eq!(
        (whole.cache.as_str(), whole.body.as_str()),
        ("HIT", "/ranged v0 #1")
    );
    let part = p
        .send(Method::GET, "/ranged", &[("range", "bytes=1-4")], "")
        .await;
    assert_eq!((part.status, part.body.as_str()), (206, "rang"), "{part:?}");
    assert_eq!(part.headers["content-range"], "bytes 1-4/13");
    let tail = p
        .send(Method::GET, "/ranged", &[("range", "bytes=-2")], "")
        .await;
    assert_eq!((tail.status, tail.body.as_str()), (206, "#1"));
    let open = p
        .send(Method::GET, "/ranged", &[("range", "bytes=10-")], "")
        .await;
    assert_eq!((open.status, open.body.as_str()), (206, " #1"));
    let past = p
        .send(Method::GET, "/ranged", &[("range", "bytes=99-")], "")
        .await;
    assert_eq!(past.status, 416);
    assert_eq!(past.headers["content-range"], "bytes */13");
    // An If-Range that does not match the stored validators: the whole answer.
    let changed = p
        .send(
            Method::GET,
            "/ranged",
            &[("range", "bytes=1-4"), ("if-range", "\"other\"")],
            "",
        )
        .await;
    assert_eq!(
        (changed.status, changed.body.as_str()),
        (200, "/ranged v0 #1")
    );
    assert_eq!(up.asked("/ranged"), 1, "one fill served every range");
}

/// A request's own `Cache-Control: no-store` binds that request: it passes, and the next
/// client's request is cached as ever (no hit-for-miss for the URL).
pub async fn a_request_directive_binds_only_its_request(t: &Target) {
    let up = Upstream::start().await;
    let p = front(t, "http-routes", &up).await;
    let own = p
        .send(
            Method::GET,
            "/nostore",
            &[("cache-control", "no-store")],
            "",
        )
        .await;
    assert_eq!(own.cache, "PASS");
    assert_eq!(p.get("/nostore").await.cache, "MISS");
    p.hit_soon("/nostore").await;
    assert_eq!(up.asked("/nostore"), 2);
    // Once stored, another no-store request passes and leaves the entry in place.
    let again = p
        .send(
            Method::GET,
            "/nostore",
            &[("cache-control", "no-store")],
            "",
        )
        .await;
    assert_eq!(again.cache, "PASS");
    assert_eq!(p.get("/nostore").await.cache, "HIT");
    assert_eq!(up.asked("/nostore"), 3);
}

/// A connection that sends nothing, or nothing more after an answer, is cut after the
/// header timeout; and no more connections than the limit are served at once.
pub async fn idle_connections_are_cut_and_connections_bounded(t: &Target) {
    let up = Upstream::start().await;
    let p = front_with(t.settings(), "http-routes", &up.url, |b| {
        b.header_read_timeout(Duration::from_millis(300))
    })
    .await;
    let addr = p.base.trim_start_matches("http://").to_string();
    let closed_within = |secs: u64| {
        let addr = addr.clone();
        async move {
            let mut c = tokio::net::TcpStream::connect(&addr).await.unwrap();
            let mut buf = Vec::new();
            let read = tokio::time::timeout(Duration::from_secs(secs), c.read_to_end(&mut buf));
            read.await.is_ok()
        }
    };
    assert!(closed_within(3).await, "a silent connection was not cut");

    // One request, then silence: cut too.
    let mut c = tokio::net::TcpStream::connect(&addr).await.unwrap();
    c.write_all(b"GET /idle HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(3), c.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "an idle keep-alive connection was not cut");
    assert!(String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 200"));

    // The limit: while one connection is open, a second is not served.
    let p = front_with(t.settings(), "http-routes", &up.url, |b| {
        b.header_read_timeout(Duration::from_secs(5))
            .max_connections(1)
    })
    .await;
    let addr = p.base.trim_start_matches("http://").to_string();
    let mut first = tokio::net::TcpStream::connect(&addr).await.unwrap();
    first
        .write_all(b"GET /held HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 12];
    first.read_exact(&mut head).await.unwrap();
    let mut second = tokio::net::TcpStream::connect(&addr).await.unwrap();
    second
        .write_all(b"GET /next HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = [0u8; 12];
    let early = tokio::time::timeout(Duration::from_millis(150), second.read_exact(&mut answer));
    assert!(
        early.await.is_err(),
        "a second connection was served past the limit"
    );
    drop(first);
    tokio::time::timeout(Duration::from_secs(3), second.read_exact(&mut answer))
        .await
        .expect("served once the first connection closed")
        .unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200");
}

/// Identical misses reach the origin once, without the op asking for `lock`, on every
/// backend (a caching proxy's waiting list).
pub async fn identical_misses_reach_the_origin_once(t: &Target) {
    let up = Upstream::start().await;
    let p = front(t, "http-routes", &up).await;
    up.delay_next("/cold/1", Duration::from_millis(300));
    let answers = join_all((0..100).map(|_| p.get("/cold/1"))).await;
    assert!(
        answers.iter().all(|g| g.body == "/cold/1 v0 #1"),
        "one load served all"
    );
    assert_eq!(up.asked("/cold/1"), 1);
}

/// Requests waiting for another's request of the same URL wait as long as the upstream may take
/// to answer (its timeout), not the cache's shorter lock wait: a slow origin is asked once.
pub async fn waiters_wait_as_long_as_the_upstream_may_take(t: &Target) {
    let up = Upstream::start().await;
    let mut settings = t.settings();
    settings.lock_wait = Duration::from_millis(200);
    let p = front_with(settings, "http-routes", &up.url, |b| b).await;
    up.delay_next("/slow-origin", Duration::from_millis(1000));
    let answers = join_all((0..20).map(|_| p.get("/slow-origin"))).await;
    assert!(answers.iter().all(|g| g.status == 200), "{:?}", answers[0]);
    assert_eq!(
        up.asked("/slow-origin"),
        1,
        "the waiters gave up on the slow origin"
    );
}

/// A failing origin (an error, a timeout, a refused connection) is asked once by the requests
/// that arrive together, and not again while its answer is remembered (the negative TTL, 1 s).
pub async fn a_failing_origin_is_asked_once_per_wave(t: &Target) {
    let up = Upstream::start().await;
    let p = front(t, "http-routes", &up).await;
    up.script("/failing", Script::new(500, &[]));
    for _ in 0..200 {
        up.delay_next("/failing", Duration::from_millis(500));
    }
    let wave = || join_all((0..50).map(|_| p.get("/failing")));
    let first = wave().await;
    assert!(first.iter().all(|g| g.status == 500), "{:?}", first[0]);
    assert_eq!(
        up.asked("/failing"),
        1,
        "the waiting requests shared the failure"
    );
    let second = wave().await;
    assert!(second.iter().all(|g| g.status == 500));
    assert!(second.iter().all(|g| g.cache == "HIT"), "{:?}", second[0]);
    assert_eq!(up.asked("/failing"), 1, "remembered for the negative TTL");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let _ = wave().await;
    assert_eq!(
        up.asked("/failing"),
        2,
        "asked again once the negative TTL is over"
    );
    // The origin recovers: the next request after the negative TTL gets its answer.
    up.script(
        "/failing",
        Script::new(200, &[("cache-control", "max-age=60")]),
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(p.get("/failing").await.status, 200);

    // A refused connection: one request for the wave too.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let gone = front_with(t.settings(), "http-routes", &closed, |b| b).await;
    let answers = join_all((0..20).map(|_| gone.get("/users/1"))).await;
    assert!(answers.iter().all(|g| g.status == 502));
    assert_eq!(
        gone.get("/users/1").await.cache,
        "HIT",
        "the 502 is remembered"
    );
}

/// A chunked request body past the limit is a `413` (its length was not declared, so only
/// reading it tells), as a declared one is; the proxy says `Via` on its answers.
pub async fn a_chunked_body_past_the_limit_is_a_413(t: &Target) {
    let up = Upstream::start().await;
    let p = front_with(t.settings(), "http-routes", &up.url, |b| {
        b.max_request_body(1024)
    })
    .await;
    let addr = p.base.trim_start_matches("http://").to_string();
    let mut c = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let chunk = "x".repeat(4096);
    let req = format!(
        "POST /upload HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        chunk.len()
    );
    c.write_all(req.as_bytes()).await.unwrap();
    let mut head = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut head))
        .await
        .expect("an answer")
        .unwrap();
    assert_eq!(&head, b"HTTP/1.1 413");
    let declared = p
        .send(Method::POST, "/upload", &[], &"y".repeat(2048))
        .await;
    assert_eq!(declared.status, 413);
    let miss = p.get("/via").await;
    assert!(
        miss.headers["via"].to_str().unwrap().contains("cachelet"),
        "{miss:?}"
    );
    p.hit_soon("/via").await;
    let hit = p.get("/via").await;
    assert!(
        hit.headers["via"].to_str().unwrap().contains("cachelet"),
        "{hit:?}"
    );
}

/// On a `credentials` route each user's answer is its own (the credentials are a digested
/// variant of the key), an anonymous request gets the anonymous answer, and an answer to a
/// request with `Authorization` is stored only where RFC 9111 §3.5 allows it, without
/// switching the route off for its other users.
pub async fn a_credentials_route_serves_each_user_their_own_answer(t: &Target) {
    let up = Upstream::start().await;
    let p = front(t, "http-routes", &up).await;
    up.script(
        "/mine/7",
        Script::new(200, &[("cache-control", "public, max-age=60")]),
    );
    let ann = [("authorization", "Bearer ann")];
    let bob = [("authorization", "Bearer bob")];
    let cookie = [("cookie", "session=carol")];
    let a = p.send(Method::GET, "/mine/7", &ann, "").await;
    let b = p.send(Method::GET, "/mine/7", &bob, "").await;
    let c = p.send(Method::GET, "/mine/7", &cookie, "").await;
    let anon = p.get("/mine/7").await;
    let bodies = [&a.body, &b.body, &c.body, &anon.body];
    for (i, x) in bodies.iter().enumerate() {
        for y in &bodies[i + 1..] {
            assert_ne!(x, y, "two users shared an answer");
        }
    }
    for (who, first) in [
        (&ann[..], &a),
        (&bob[..], &b),
        (&cookie[..], &c),
        (&[][..], &anon),
    ] {
        let again = p.send(Method::GET, "/mine/7", who, "").await;
        assert_eq!(
            (again.cache.as_str(), &again.body),
            ("HIT", &first.body),
            "{who:?}"
        );
    }
    assert_eq!(up.asked("/mine/7"), 4);

    // Without public / s-maxage / must-revalidate: not stored for the user with Authorization,
    // and the others are cached as ever.
    let got = p.send(Method::GET, "/mine/8", &ann, "").await;
    assert_eq!(got.cache, "MISS");
    assert_eq!(p.send(Method::GET, "/mine/8", &ann, "").await.cache, "MISS");
    assert_eq!(p.get("/mine/8").await.cache, "MISS");
    assert_eq!(p.get("/mine/8").await.cache, "HIT");
    assert_eq!(up.asked("/mine/8"), 3);
}

/// The built-in policy's writes invalidate their target URI (RFC 9111 §4.4): the GETs of that
/// path, whatever their query, and nothing under it or beside it; a `POST /` the upstream
/// accepts does not flush the cache.
pub async fn a_write_of_the_built_in_policy_invalidates_its_own_path_only(t: &Target) {
    let up = Upstream::start().await;
    let p = front(t, "proxy-default", &up).await;
    for path in ["/a", "/a?x=1", "/a/b", "/c"] {
        assert_eq!(p.get(path).await.cache, "MISS", "{path}");
        p.hit_soon(path).await;
    }
    assert_eq!(p.send(Method::POST, "/", &[], "x").await.status, 200);
    for path in ["/a", "/a?x=1", "/a/b", "/c"] {
        assert_eq!(p.get(path).await.cache, "HIT", "{path} after POST /");
    }
    assert_eq!(p.put("/a", "new").await.status, 200);
    assert_eq!(p.get("/a").await.cache, "MISS");
    assert_eq!(
        p.get("/a?x=1").await.cache,
        "MISS",
        "the same path, another query"
    );
    assert_eq!(
        p.get("/a/b").await.cache,
        "HIT",
        "under it: another resource"
    );
    assert_eq!(p.get("/c").await.cache, "HIT");
    // A purge by prefix still reaches everything under it.
    assert_eq!(
        p.admin("purge", Some(TOKEN), r#"{"tags": ["/a"]}"#).await,
        200
    );
    assert_eq!(p.get("/a/b").await.cache, "MISS");
    assert_eq!(p.get("/c").await.cache, "HIT");
}

/// Surrogate keys are held to the limits of a policy's tags (CACHE_MAX_TAG_BYTES, 1,024;
/// CACHE_MAX_TAGS, 254): an answer past them is not stored (a key cut short would name another
/// tag, and its purge would miss the answer).
pub async fn surrogate_keys_past_the_tag_limits_are_not_stored(t: &Target) {
    let up = Upstream::start().await;
    let p = front(t, "http-routes", &up).await;
    let long = "k".repeat(2000);
    let many: Vec<String> = (0..300).map(|i| format!("k{i}")).collect();
    let many = many.join(" ");
    for (path, keys) in [("/long-key", long.as_str()), ("/many-keys", many.as_str())] {
        up.script(
            path,
            Script::new(
                200,
                &[("cache-control", "max-age=60"), ("surrogate-key", keys)],
            ),
        );
        assert_eq!(p.get(path).await.cache, "MISS");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_ne!(p.get(path).await.cache, "HIT", "{path}");
        assert_eq!(up.asked(path), 2, "{path}");
    }
    up.script(
        "/fine-keys",
        Script::new(
            200,
            &[("cache-control", "max-age=60"), ("surrogate-key", "a b")],
        ),
    );
    assert_eq!(p.get("/fine-keys").await.cache, "MISS");
    p.hit_soon("/fine-keys").await;
}

/// A request's own freshness directives (RFC 9111 §5.2.1) are answered for it alone: `no-cache`
/// and a `max-age` the stored answer is older than ask the origin (conditionally, with the
/// stored validators) without replacing the entry; `only-if-cached` never reaches the origin
/// (a `504` when nothing is stored).
pub async fn request_freshness_directives_are_answered_for_that_request(t: &Target) {
    let up = Upstream::start().await;
    let p = front(t, "http-routes", &up).await;
    up.script(
        "/fresh",
        Script::new(200, &[("cache-control", "max-age=60"), ("etag", "\"e1\"")]),
    );
    let only = p
        .send(
            Method::GET,
            "/fresh",
            &[("cache-control", "only-if-cached")],
            "",
        )
        .await;
    assert_eq!(only.status, 504, "{only:?}");
    assert_eq!(
        up.asked("/fresh"),
        0,
        "only-if-cached never asks the origin"
    );
    assert_eq!(p.get("/fresh").await.cache, "MISS");
    p.hit_soon("/fresh").await;
    let only = p
        .send(
            Method::GET,
            "/fresh",
            &[("cache-control", "only-if-cached")],
            "",
        )
        .await;
    assert_eq!((only.status, only.cache.as_str()), (200, "HIT"));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // no-cache: asked again, with the stored validator; the upstream's 304 serves the entry.
    let nc = p
        .send(Method::GET, "/fresh", &[("cache-control", "no-cache")], "")
        .await;
    assert_eq!(up.asked("/fresh"), 2, "no-cache asked the origin");
    assert_eq!(up.seen("/fresh")["if-none-match"], "\"e1\"");
    assert_eq!((nc.status, nc.body.as_str()), (200, "/fresh v0 #1"));
    let pragma = p
        .send(Method::GET, "/fresh", &[("pragma", "no-cache")], "")
        .await;
    assert_eq!(pragma.status, 200);
    assert_eq!(up.asked("/fresh"), 3, "Pragma: no-cache too");
    // max-age=0 on an answer a second old: asked; max-age=3600: served.
    let _ = p
        .send(Method::GET, "/fresh", &[("cache-control", "max-age=0")], "")
        .await;
    assert_eq!(up.asked("/fresh"), 4);
    let ok = p
        .send(
            Method::GET,
            "/fresh",
            &[("cache-control", "max-age=3600")],
            "",
        )
        .await;
    assert_eq!(ok.cache, "HIT");
    // min-fresh past what is left of its 60 s: asked.
    let _ = p
        .send(
            Method::GET,
            "/fresh",
            &[("cache-control", "min-fresh=120")],
            "",
        )
        .await;
    assert_eq!(up.asked("/fresh"), 5);
    // None of them replaced the entry others get.
    assert_eq!(p.get("/fresh").await.cache, "HIT");
    assert_eq!(up.asked("/fresh"), 5);
}

/// A client that stops reading a miss holds neither the fill nor the requests waiting for it:
/// the fill reads the upstream at its pace, and a second reader of the same URL gets the whole
/// answer while the first has read nothing.
pub async fn a_slow_reader_never_holds_another_reader_of_the_same_miss(t: &Target) {
    let up = Upstream::start().await;
    // More than the sockets between the proxy and a client hold (a few MiB on loopback).
    let p = front_with(t.settings(), "http-routes", &up.url, |b| {
        b.layer(|l| l.max_body(64 << 20))
    })
    .await;
    let mut big = Script::new(200, &[("cache-control", "max-age=60")]);
    big.stream = Some((512, 64 << 10)); // 32 MiB in 512 pieces
    up.script("/big", big);
    let addr = p.base.trim_start_matches("http://").to_string();
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /big HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 12];
    slow.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    // The slow client reads nothing more. Another asks for the same URL.
    let other = tokio::time::timeout(Duration::from_secs(5), p.get("/big"))
        .await
        .expect("the second reader was held by the first");
    assert_eq!((other.status, other.body.len()), (200, 32 << 20));
    assert_eq!(up.asked("/big"), 1, "one request to the upstream");
    p.hit_soon("/big").await;
    drop(slow);
}

/// An upstream that sends its answer's head and part of its body, then nothing more: past the
/// upstream timeout the body breaks off, for its client and for the fill (nothing is stored),
/// and the next request asks the upstream afresh.
pub async fn a_stalled_upstream_body_times_out_and_stores_nothing(t: &Target) {
    let up = Upstream::start().await;
    let p = front_with(t.settings(), "seed-rust", &up.url, |b| {
        b.upstream_timeout(Duration::from_millis(500))
    })
    .await;
    let mut stalled = Script::new(200, &[("cache-control", "max-age=300")]);
    stalled.stream = Some((4, 1024));
    stalled.stall_after = Some(2);
    up.script("/users/31", stalled);
    let started = std::time::Instant::now();
    let answer = p
        .client
        .get(format!("{}/users/31", p.base))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let body = tokio::time::timeout(Duration::from_secs(5), answer.bytes())
        .await
        .expect("a stalled upstream body holds its client");
    assert!(
        body.is_err(),
        "a body that broke off ends as an error: {body:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(500));
    up.script(
        "/users/31",
        Script::new(200, &[("cache-control", "max-age=300")]),
    );
    let next = p.get("/users/31").await;
    assert_eq!(
        (next.cache.as_str(), next.status),
        ("MISS", 200),
        "{next:?}"
    );
    assert_eq!(up.asked("/users/31"), 2);
    p.hit_soon("/users/31").await;
}

/// An answer that may not be stored (`no-store`, `private`) arriving while a stale answer may
/// still stand in for a failing upstream (`stale-if-error`, the route's grace) passes on
/// without evicting it: the upstream's next failure is still answered by the stale answer.
pub async fn an_answer_that_may_not_be_stored_keeps_the_stale_stand_in(t: &Target) {
    let up = Upstream::start().await;
    let p = front(t, "http-routes", &up).await;
    up.script(
        "/sie",
        Script::new(200, &[("cache-control", "max-age=1, stale-if-error=60")]),
    );
    up.script(
        "/graced/2",
        Script::new(200, &[("cache-control", "max-age=1")]),
    );
    let sie = p.get("/sie").await.body;
    let graced = p.get("/graced/2").await.body;
    p.hit_soon("/sie").await;
    p.hit_soon("/graced/2").await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    for (path, refusal) in [("/sie", "no-store"), ("/graced/2", "private")] {
        up.script(path, Script::new(200, &[("cache-control", refusal)]));
        let got = p.get(path).await;
        assert_eq!(
            (got.status, got.cache.as_str()),
            (200, "MISS"),
            "{path}: {got:?}"
        );
        assert_ne!(got.body, sie);
        up.script(path, Script::new(503, &[]));
    }
    let got = p.get("/sie").await;
    assert_eq!(
        (got.status, got.body),
        (200, sie),
        "the stale answer stood in"
    );
    let got = p.get("/graced/2").await;
    assert_eq!(
        (got.status, got.body),
        (200, graced),
        "the graced answer stood in"
    );
}

/// A write that succeeds invalidates, beside what its rule names, the `GET` of its target URI
/// and of the `Location` and `Content-Location` its answer names on the same origin (RFC 9111
/// §4.4), so does an unsafe request no route names; another origin's are left alone.
pub async fn a_write_invalidates_its_target_and_the_locations_its_answer_names(t: &Target) {
    let up = Upstream::start().await;
    let p = front(t, "http-routes", &up).await;
    let authority = p.base.trim_start_matches("http://").to_string();
    let paths = [
        "/users/3",
        "/page/new",
        "/page/moved",
        "/page/far",
        "/page/here",
        "/page/form",
        "/page/done",
    ];
    for path in paths {
        p.get(path).await;
        p.hit_soon(path).await;
    }
    // A routed write whose rule names no tag of the read (`update_user` invalidates
    // `user:{user_id}`, which `get_user` does not carry): its target URI's entry goes.
    up.script_write(
        "/users/3",
        200,
        &[
            ("location", "/page/new"),
            ("content-location", "/page/moved"),
        ],
    );
    assert_eq!(p.put("/users/3", "v1").await.status, 200);
    // Unrouted unsafe requests: a 303 to another page, another origin's Location, a
    // same-origin absolute URI.
    up.script_write("/page/form", 303, &[("location", "/page/done")]);
    up.script_write(
        "/page/elsewhere",
        201,
        &[("location", "http://evil.example/page/far")],
    );
    let here = format!("http://{authority}/page/here");
    up.script_write("/page/other", 201, &[("content-location", here.as_str())]);
    for path in ["/page/form", "/page/elsewhere", "/page/other"] {
        let got = p.send(Method::POST, path, &[], "x").await;
        assert_eq!(got.cache, "PASS", "{path}: {got:?}");
    }
    for (path, then) in [
        ("/users/3", "MISS"),
        ("/page/new", "MISS"),
        ("/page/moved", "MISS"),
        ("/page/form", "MISS"),
        ("/page/done", "MISS"),
        ("/page/here", "MISS"),
        ("/page/far", "HIT"),
    ] {
        assert_eq!(p.get(path).await.cache, then, "{path}");
    }
    // An error answer invalidates nothing.
    p.hit_soon("/page/done").await;
    up.script_write("/page/broken", 500, &[("location", "/page/done")]);
    p.send(Method::POST, "/page/broken", &[], "x").await;
    assert_eq!(p.get("/page/done").await.cache, "HIT");
}

/// A purge by URL (or key) reaches every variant of its entry and is fenced: a fill that was
/// in flight when the purge landed does not put the purged answer back.
pub async fn a_purge_by_url_reaches_every_variant_and_is_fenced(t: &Target) {
    let up = Upstream::start().await;
    let p = front(t, "seed-rust", &up).await;
    up.script(
        "/users/51",
        Script::new(
            200,
            &[
                ("cache-control", "max-age=300"),
                ("vary", "accept-language"),
            ],
        ),
    );
    for lang in ["fr", "en"] {
        p.send(Method::GET, "/users/51", &[("accept-language", lang)], "")
            .await;
    }
    for lang in ["fr", "en"] {
        let got = p
            .send(Method::GET, "/users/51", &[("accept-language", lang)], "")
            .await;
        assert_eq!(got.cache, "HIT", "{lang}");
    }
    let purge = r#"{"urls": ["/users/51"]}"#;
    assert_eq!(p.admin("purge", Some(TOKEN), purge).await, 200);
    for lang in ["fr", "en"] {
        let got = p
            .send(Method::GET, "/users/51", &[("accept-language", lang)], "")
            .await;
        assert_eq!(got.cache, "MISS", "{lang}: the variant was purged");
    }
    // A slow fill, the purge while it is in flight: nothing of it is stored.
    up.delay_next("/users/52", Duration::from_millis(600));
    let slow = {
        let (client, url) = (p.client.clone(), format!("{}/users/52", p.base));
        tokio::spawn(async move { client.get(url).send().await.unwrap().text().await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let purge = r#"{"keys": ["user:52"]}"#;
    assert_eq!(p.admin("purge", Some(TOKEN), purge).await, 200);
    slow.await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        p.get("/users/52").await.cache,
        "MISS",
        "the purged fill was stored"
    );
}

/// With the client's `Host` (`HostHeader::Client`, Varnish's way), each host has its own
/// entries, the upstream is told the host as it is keyed (lowercased, without the default
/// port), and a request without a usable host is refused.
pub async fn a_keyed_host_is_the_one_the_upstream_is_told(t: &Target) {
    let upstream = echo_upstream().await;
    let p = front_with(t.settings(), "seed-rust", &upstream, |b| {
        b.host(HostHeader::Client)
    })
    .await;
    let host = |h: &str| vec![("host".to_string(), h.to_string())];
    let (_, first, a) = raw_get(&p.base, "/users/1", &host("a.example")).await;
    assert_eq!(first, "MISS");
    assert!(a.contains("\nhost=a.example\n"), "{a}");
    let (_, cache, b) = raw_get(&p.base, "/users/1", &host("b.example:8080")).await;
    assert_eq!(cache, "MISS", "another host, another entry");
    assert!(b.contains("\nhost=b.example:8080\n"), "{b}");
    for spelling in ["a.example", "A.Example:80", "a.example."] {
        let (_, cache, again) = raw_get(&p.base, "/users/1", &host(spelling)).await;
        assert_eq!(
            (cache.as_str(), again.as_str()),
            ("HIT", a.as_str()),
            "{spelling}"
        );
    }
    for bad in ["a b", "u@a.example", ""] {
        let (status, _, body) = raw_get(&p.base, "/users/1", &host(bad)).await;
        assert_eq!(status, 400, "{bad:?}: {body}");
    }
    let (status, _, _) = raw_get(&p.base, "/users/1", &[]).await;
    assert_eq!(status, 400, "no Host");
    // A purge by URL reaches every host's entry of it.
    assert_eq!(
        p.admin("purge", Some(TOKEN), r#"{"urls": ["/users/1"]}"#)
            .await,
        200
    );
    for h in ["a.example", "b.example:8080"] {
        assert_eq!(
            raw_get(&p.base, "/users/1", &host(h)).await.1,
            "MISS",
            "{h}"
        );
    }
}

/// Bodies being read for fills are held against a budget: past it, an answer streams whole
/// to its client without being stored, and leaves no hit-for-miss marker; once the budget is
/// free again, answers are stored.
pub async fn fills_past_the_budget_stream_through_unstored(t: &Target) {
    let up = Upstream::start().await;
    let p = front_with(t.settings(), "seed-rust", &up.url, |b| {
        b.layer(|l| l.fill_budget(16 << 10))
    })
    .await;
    let mut declared = Script::new(200, &[("cache-control", "max-age=300")]);
    declared.body = Some("d".repeat(32 << 10));
    up.script("/users/61", declared);
    let mut chunked = Script::new(200, &[("cache-control", "max-age=300")]);
    chunked.stream = Some((8, 4 << 10));
    up.script("/users/62", chunked);
    for path in ["/users/61", "/users/62"] {
        for _ in 0..2 {
            let got = p.get(path).await;
            assert_eq!((got.status, got.cache.as_str()), (200, "MISS"), "{path}");
            assert_eq!(got.body.len(), 32 << 10, "{path}: the whole body");
        }
        assert_eq!(
            up.asked(path),
            2,
            "{path}: not stored, no hit-for-miss either"
        );
    }
    // Within the budget: stored.
    let mut small = Script::new(200, &[("cache-control", "max-age=300")]);
    small.stream = Some((2, 4 << 10));
    up.script("/users/63", small);
    p.get("/users/63").await;
    p.hit_soon("/users/63").await;
}

/// An answer whose tags are learned from it (a surrogate key, a variant) is stored even when
/// invalidations of other tags land while it is loaded; one of its own tags landing meanwhile
/// keeps it out.
pub async fn learned_tags_are_fenced_each_by_their_own_invalidations(t: &Target) {
    let up = Upstream::start().await;
    let p = front(t, "seed-rust", &up).await;
    up.script(
        "/users/71",
        Script::new(
            200,
            &[
                ("cache-control", "max-age=300"),
                ("surrogate-key", "item-71"),
            ],
        ),
    );
    up.script(
        "/users/72",
        Script::new(
            200,
            &[
                ("cache-control", "max-age=300"),
                ("vary", "accept-language"),
            ],
        ),
    );
    up.script(
        "/users/73",
        Script::new(
            200,
            &[
                ("cache-control", "max-age=300"),
                ("surrogate-key", "item-73"),
            ],
        ),
    );
    let slow = |path: &'static str| {
        up.delay_next(path, Duration::from_millis(500));
        let (client, url) = (p.client.clone(), format!("{}{path}", p.base));
        tokio::spawn(async move {
            client
                .get(url)
                .header("accept-language", "fr")
                .send()
                .await
                .unwrap()
                .text()
                .await
        })
    };
    let loads = [slow("/users/71"), slow("/users/72"), slow("/users/73")];
    tokio::time::sleep(Duration::from_millis(150)).await;
    // Other tags: a purge, a write of another user.
    assert_eq!(
        p.admin("purge", Some(TOKEN), r#"{"tags": ["item-999"]}"#)
            .await,
        200
    );
    assert_eq!(p.put("/users/98", "x").await.status, 200);
    // One of its own.
    assert_eq!(
        p.admin("purge", Some(TOKEN), r#"{"tags": ["item-73"]}"#)
            .await,
        200
    );
    for l in loads {
        l.await.unwrap().unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let got = |path: &'static str| p.send(Method::GET, path, &[("accept-language", "fr")], "");
    assert_eq!(
        got("/users/71").await.cache,
        "HIT",
        "a surrogate key's answer"
    );
    assert_eq!(got("/users/72").await.cache, "HIT", "a variant");
    assert_eq!(
        got("/users/73").await.cache,
        "MISS",
        "its own tag was purged while loading"
    );
}

/// With the admin API on a listener of its own, the public listener answers `/_cachelet/`
/// with `404` (its health says only up or down, token or not), and the admin listener serves
/// the admin API behind the token.
pub async fn the_admin_api_can_be_served_on_its_own_listener(t: &Target) {
    let up = Upstream::start().await;
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_base = format!("http://{}", admin.local_addr().unwrap());
    let p = front_with(t.settings(), "seed-rust", &up.url, |b| {
        b.admin_listener(admin)
    })
    .await;
    p.get("/users/81").await;
    p.hit_soon("/users/81").await;
    let purge = r#"{"urls": ["/users/81"]}"#;
    assert_eq!(p.admin("purge", Some(TOKEN), purge).await, 404);
    assert_eq!(
        p.get("/users/81").await.cache,
        "HIT",
        "the public listener purged nothing"
    );
    let health = |base: String| {
        let client = p.client.clone();
        async move {
            let r = client
                .get(format!("{base}/_cachelet/health"))
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    assert_eq!(
        health(p.base.clone()).await,
        (200, r#"{"status":"up"}"#.to_string())
    );
    let (status, details) = health(admin_base.clone()).await;
    assert_eq!(status, 200);
    assert!(details.contains("\"policies\""), "{details}");
    let send = |token: Option<&'static str>| {
        let (client, url) = (p.client.clone(), format!("{admin_base}/_cachelet/purge"));
        async move {
            let mut r = client.post(url).body(purge);
            if let Some(t) = token {
                r = r.bearer_auth(t);
            }
            r.send().await.unwrap().status().as_u16()
        }
    };
    assert_eq!(send(None).await, 401);
    assert_eq!(send(Some(TOKEN)).await, 200);
    assert_eq!(
        p.get("/users/81").await.cache,
        "MISS",
        "purged through the admin listener"
    );
}

/// An HTTP/2 connection without a request in flight for the idle timeout is closed, though its
/// peer answers every keep-alive ping.
pub async fn an_idle_http2_connection_is_closed(t: &Target) {
    let up = Upstream::start().await;
    let p = front_with(t.settings(), "seed-rust", &up.url, |b| {
        b.idle_timeout(Duration::from_millis(600))
    })
    .await;
    let stream = tokio::net::TcpStream::connect(p.base.trim_start_matches("http://"))
        .await
        .unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    let open = tokio::spawn(conn);
    let req = Request::get(format!("{}/users/91", p.base))
        .body(Body::empty())
        .unwrap();
    let answer = send.send_request(req).await.unwrap();
    assert_eq!(answer.status(), 200);
    axum::body::to_bytes(Body::new(answer.into_body()), 1 << 20)
        .await
        .unwrap();
    let idle = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(5), open)
        .await
        .expect("an idle HTTP/2 connection stays open")
        .unwrap()
        .unwrap();
    assert!(
        idle.elapsed() >= Duration::from_millis(400),
        "{:?}",
        idle.elapsed()
    );
}

/// `Surrogate-Control` is addressed to this cache: its `max-age` is the freshness whatever
/// `Cache-Control` tells other caches, its `no-store` keeps the answer out, and no client sees
/// it (a miss, a hit, a pass, a remembered error).
pub async fn surrogate_control_speaks_to_this_cache_alone(t: &Target) {
    let up = Upstream::start().await;
    let p = front(t, "http-routes", &up).await;
    let script = |cc: &str, sc: &str, status: u16| {
        Script::new(status, &[("cache-control", cc), ("surrogate-control", sc)])
    };
    up.script("/page/sc-long", script("max-age=0", "max-age=300", 200));
    up.script("/page/sc-out", script("max-age=300", "no-store", 200));
    up.script("/page/sc-error", script("max-age=300", "max-age=300", 503));
    let first = p.get("/page/sc-long").await;
    assert_eq!(first.cache, "MISS");
    p.hit_soon("/page/sc-long").await;
    for path in [
        "/page/sc-long",
        "/page/sc-out",
        "/page/sc-out",
        "/page/sc-error",
        "/page/sc-error",
    ] {
        let got = p.get(path).await;
        assert!(
            !got.headers.contains_key("surrogate-control"),
            "{path}: {got:?}"
        );
        assert_eq!(
            got.headers
                .get("cache-control")
                .map(|v| v.to_str().unwrap()),
            Some(if path == "/page/sc-long" {
                "max-age=0"
            } else {
                "max-age=300"
            }),
            "{path}: Cache-Control reaches the client as the upstream wrote it"
        );
    }
    assert!(!first.headers.contains_key("surrogate-control"));
    assert_eq!(up.asked("/page/sc-long"), 1);
    assert_eq!(
        up.asked("/page/sc-out"),
        2,
        "Surrogate-Control: no-store is not stored"
    );
}

/// `Expires` in each date format RFC 9110 §5.6.7 makes recipients accept is freshness; one that
/// is not a date means already expired. Statuses cacheable by default (`404`) take the
/// policy's TTL when the upstream says nothing; others (`302`) are stored only when the upstream
/// says how long.
pub async fn expires_in_every_date_format_and_default_cacheable_statuses(t: &Target) {
    let up = Upstream::start().await;
    let p = front(t, "http-routes", &up).await;
    let later = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(3600));
    // "Tue, 08 Dec 2026 04:31:35 GMT" in its two obsolete forms as well.
    let parts: Vec<&str> = later.split([' ', ',']).filter(|p| !p.is_empty()).collect();
    let (weekday, day, month, year, time) = (parts[0], parts[1], parts[2], parts[3], parts[4]);
    let long = [
        ("Mon", "Monday"),
        ("Tue", "Tuesday"),
        ("Wed", "Wednesday"),
        ("Thu", "Thursday"),
        ("Fri", "Friday"),
        ("Sat", "Saturday"),
        ("Sun", "Sunday"),
    ]
    .iter()
    .find(|(s, _)| *s == weekday)
    .unwrap()
    .1;
    let rfc850 = format!("{long}, {day}-{month}-{} {time} GMT", &year[2..]);
    let asctime = format!(
        "{weekday} {month} {:>2} {time} {year}",
        day.trim_start_matches('0')
    );
    for (path, expires) in [
        ("/page/exp-imf", later.as_str()),
        ("/page/exp-850", rfc850.as_str()),
        ("/page/exp-asctime", asctime.as_str()),
    ] {
        up.script(path, Script::new(200, &[("expires", expires)]));
        p.get(path).await;
        p.hit_soon(path).await;
        let ttl = p.get(path).await.headers["cache-status"]
            .to_str()
            .unwrap()
            .to_string();
        // Fresh for about the hour Expires says, not the policy's 60 s.
        let secs: u64 = ttl.rsplit("ttl=").next().unwrap().parse().unwrap();
        assert!(secs > 3000, "{path} ({expires}): {ttl}");
    }
    for bad in ["0", "tomorrow", "-1"] {
        let path = format!("/page/exp-bad-{bad}");
        up.script(&path, Script::new(200, &[("expires", bad)]));
        for _ in 0..2 {
            assert_ne!(p.get(&path).await.cache, "HIT", "{path}");
        }
        assert_eq!(up.asked(&path), 2, "Expires: {bad} is already expired");
    }
    up.script("/page/s404", Script::new(404, &[]));
    p.get("/page/s404").await;
    p.hit_soon("/page/s404").await;
    up.script(
        "/page/s302",
        Script::new(302, &[("location", "/page/elsewhere")]),
    );
    p.get("/page/s302").await;
    p.get("/page/s302").await;
    assert_eq!(
        up.asked("/page/s302"),
        2,
        "a 302 is not stored without freshness"
    );
    up.script(
        "/page/s302-fresh",
        Script::new(
            302,
            &[
                ("location", "/page/elsewhere"),
                ("cache-control", "max-age=60"),
            ],
        ),
    );
    p.get("/page/s302-fresh").await;
    p.hit_soon("/page/s302-fresh").await;
}

/// An upstream that answers with what it was asked, as a framework does: from the URI as it
/// came, from `Host` and the forwarding headers (which a framework builds absolute links and
/// redirects from, without saying so in `Vary`), and from `Accept-Language`, the one header it
/// declares in `Vary` (read as the list of its members).
async fn echo_upstream() -> String {
    let app = Router::new().fallback(|req: Request<Body>| async move {
        let h = req.headers();
        let all = |n: &str| {
            h.get_all(n)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect::<Vec<_>>()
                .join("|")
        };
        let languages: Vec<String> = h
            .get_all("accept-language")
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b',').map(<[u8]>::trim_ascii))
            .map(|m| String::from_utf8_lossy(m).into_owned())
            .collect();
        let mut body = format!("{} {}\n", req.method(), req.uri());
        for name in [
            "host",
            "x-forwarded-host",
            "x-forwarded-proto",
            "x-forwarded-for",
            "x-forwarded-prefix",
            "forwarded",
            "x-original-url",
            "x-host",
        ] {
            body.push_str(&format!("{name}={}\n", all(name)));
        }
        body.push_str(&format!(
            "language={}\n",
            if h.contains_key("accept-language") {
                languages.join(",")
            } else {
                "-".into()
            }
        ));
        Response::builder()
            .header("cache-control", "max-age=300")
            .header("vary", "accept-language")
            .body(Body::from(body))
            .unwrap()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// One request as written, on a connection of its own: the request target is sent as it is
/// (no client library normalising dot segments or percent-encodings on the way).
async fn raw_get(base: &str, target: &str, headers: &[(String, String)]) -> (u16, String, String) {
    let stream = tokio::net::TcpStream::connect(base.trim_start_matches("http://"))
        .await
        .unwrap();
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut req = Request::builder().uri(target);
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let answer = send
        .send_request(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = answer.status().as_u16();
    let cache = answer
        .headers()
        .get("x-cache")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = axum::body::to_bytes(Body::new(answer.into_body()), 1 << 20)
        .await
        .unwrap();
    (status, cache, String::from_utf8_lossy(&body).into_owned())
}

/// A small deterministic generator (xorshift), so that a failing case is found again by its
/// seed.
struct Gen(u64);

impl Gen {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len())]
    }
    fn maybe(&mut self) -> bool {
        self.below(2) == 0
    }
}

/// A request an attacker might write: dot segments, encoded separators and spellings of one
/// character, repeated and unknown query parameters, forged `Host` and forwarding headers,
/// `Accept-Language` spelled several ways, `Connection` naming headers to drop.
fn generated(g: &mut Gen, paths: &[&str], authority: &str) -> (String, Vec<(String, String)>) {
    const SEGMENTS: [&str; 16] = [
        "1", "01", "%31", "1%2F2", "1%2f2", "..", "%2e%2e", ".", "%2E", "a%20b", "a+b", "%C3%A9",
        "%c3%a9", "1;x", "~1", "%7E1",
    ];
    const QUERY: [&str; 10] = [
        "a=1",
        "a=%31",
        "a=",
        "a",
        "b=x+y",
        "b=x%20y",
        "A=1",
        "expand=true",
        "user_id=9",
        "a=2",
    ];
    let mut target = g.pick(paths).to_string();
    while let Some(at) = target.find('#') {
        let seg = g.pick(&SEGMENTS);
        target.replace_range(at..at + 1, seg);
    }
    if g.below(3) == 0 {
        for i in 0..1 + g.below(3) {
            target.push(if i == 0 { '?' } else { '&' });
            target.push_str(g.pick(&QUERY));
        }
    }
    let mut headers = vec![(
        "host".to_string(),
        g.pick(&[authority, authority, "evil.example", "EVIL.example:80"])
            .to_string(),
    )];
    let mut add = |g: &mut Gen, name: &str, values: &[&str]| {
        if g.maybe() {
            headers.push((name.to_string(), g.pick(values).to_string()));
        }
    };
    add(g, "x-forwarded-host", &["evil.example"]);
    add(g, "x-forwarded-proto", &["https"]);
    add(g, "x-forwarded-prefix", &["/evil"]);
    add(
        g,
        "forwarded",
        &["host=evil.example;proto=https", "for=6.6.6.6"],
    );
    add(g, "x-original-url", &["/admin"]);
    add(g, "x-forwarded-for", &["6.6.6.6"]);
    add(
        g,
        "accept-language",
        &["fr", "en", "fr, en", "fr,en", "en,fr", "FR", ""],
    );
    add(
        g,
        "connection",
        &["accept-language", "x-forwarded-host", "keep-alive", "host"],
    );
    (target, headers)
}

/// Generated requests through the proxy: every answer served from the cache is what the
/// upstream answers that very request (asked again with `Cache-Control: no-store`, which
/// passes). Two requests the upstream answers differently never share an entry, and nothing
/// one client sends changes what another receives.
async fn generated_requests_never_share_an_entry_the_upstream_tells_apart(
    t: &Target,
    policy: &str,
    paths: &[&str],
) {
    let upstream = echo_upstream().await;
    for (seed, host) in [
        (0x9e37_79b9_7f4a_7c15_u64, HostHeader::Upstream),
        (7, HostHeader::Upstream),
        (1_000_003, HostHeader::Client),
        (31, HostHeader::Client),
    ] {
        let p = front_with(t.settings(), policy, &upstream, |b| b.host(host)).await;
        let authority = p.base.trim_start_matches("http://").to_string();
        let mut g = Gen(seed);
        let mut hits = 0;
        for i in 0..400 {
            let (target, headers) = generated(&mut g, paths, &authority);
            let (status, cache, body) = raw_get(&p.base, &target, &headers).await;
            assert_eq!(
                status, 200,
                "seed {seed}, request {i}: {target} {headers:?}"
            );
            if cache != "HIT" {
                continue;
            }
            hits += 1;
            let mut asked = headers.clone();
            asked.push(("cache-control".into(), "no-store".into()));
            let (_, how, now) = raw_get(&p.base, &target, &asked).await;
            assert_eq!(how, "PASS");
            assert_eq!(
                body, now,
                "seed {seed}, request {i}: GET {target} {headers:?} was answered from an entry \
                 the upstream answered for another request"
            );
        }
        assert!(
            hits > 30,
            "seed {seed}: only {hits} hits: the requests share too little"
        );
        p.cache.shutdown().await;
    }
}

pub async fn generated_requests_never_share_an_entry_the_upstream_tells_apart_seed(t: &Target) {
    generated_requests_never_share_an_entry_the_upstream_tells_apart(
        t,
        "seed-rust",
        &[
            "/users/#",
            "/users/#/profile",
            "/orgs/#/users/#",
            "/users/#/settings",
        ],
    )
    .await;
}

pub async fn generated_requests_never_share_an_entry_the_upstream_tells_apart_default(t: &Target) {
    generated_requests_never_share_an_entry_the_upstream_tells_apart(
        t,
        "proxy-default",
        &[
            "/a/#", "/#", "/a/./#", "/a/../#", "/a%2F#", "//a/#", "/a/#/", "/#/#",
        ],
    )
    .await;
}

suite!(
    memory,
    Target::memory(),
    [
        a_get_with_a_body_never_desynchronises_the_upstream,
        what_a_client_says_of_host_and_forwarding_never_reaches_the_upstream,
        a_query_parameter_the_key_does_not_hold_passes,
        hop_by_hop_headers_are_gone_before_the_variant_is_chosen,
        a_range_request_is_served_from_the_whole_answer,
        a_request_directive_binds_only_its_request,
        idle_connections_are_cut_and_connections_bounded,
        a_chunked_body_past_the_limit_is_a_413,
        identical_misses_reach_the_origin_once,
        waiters_wait_as_long_as_the_upstream_may_take,
        a_failing_origin_is_asked_once_per_wave,
        a_credentials_route_serves_each_user_their_own_answer,
        a_write_of_the_built_in_policy_invalidates_its_own_path_only,
        surrogate_keys_past_the_tag_limits_are_not_stored,
        request_freshness_directives_are_answered_for_that_request,
        a_slow_reader_never_holds_another_reader_of_the_same_miss,
        generated_requests_never_share_an_entry_the_upstream_tells_apart_seed,
        generated_requests_never_share_an_entry_the_upstream_tells_apart_default,
        a_stalled_upstream_body_times_out_and_stores_nothing,
        an_answer_that_may_not_be_stored_keeps_the_stale_stand_in,
        a_write_invalidates_its_target_and_the_locations_its_answer_names,
        a_purge_by_url_reaches_every_variant_and_is_fenced,
        a_keyed_host_is_the_one_the_upstream_is_told,
        fills_past_the_budget_stream_through_unstored,
        learned_tags_are_fenced_each_by_their_own_invalidations,
        the_admin_api_can_be_served_on_its_own_listener,
        an_idle_http2_connection_is_closed,
        surrogate_control_speaks_to_this_cache_alone,
        expires_in_every_date_format_and_default_cacheable_statuses,
    ]
);

suite!(
    redis,
    Target::redis(),
    [
        a_get_with_a_body_never_desynchronises_the_upstream,
        a_query_parameter_the_key_does_not_hold_passes,
        hop_by_hop_headers_are_gone_before_the_variant_is_chosen,
        a_range_request_is_served_from_the_whole_answer,
        a_request_directive_binds_only_its_request,
        identical_misses_reach_the_origin_once,
        waiters_wait_as_long_as_the_upstream_may_take,
        a_failing_origin_is_asked_once_per_wave,
        a_credentials_route_serves_each_user_their_own_answer,
        a_write_of_the_built_in_policy_invalidates_its_own_path_only,
        surrogate_keys_past_the_tag_limits_are_not_stored,
        request_freshness_directives_are_answered_for_that_request,
        a_slow_reader_never_holds_another_reader_of_the_same_miss,
        generated_requests_never_share_an_entry_the_upstream_tells_apart_seed,
        generated_requests_never_share_an_entry_the_upstream_tells_apart_default,
        a_stalled_upstream_body_times_out_and_stores_nothing,
        an_answer_that_may_not_be_stored_keeps_the_stale_stand_in,
        a_write_invalidates_its_target_and_the_locations_its_answer_names,
        a_purge_by_url_reaches_every_variant_and_is_fenced,
        a_keyed_host_is_the_one_the_upstream_is_told,
        fills_past_the_budget_stream_through_unstored,
        learned_tags_are_fenced_each_by_their_own_invalidations,
    ]
);
