//! `cachelet serve` as people run it: the binary, in processes of its own, in front of the demo
//! upstream, on a real Redis server shared by two of them. Lives beside the binary (in the cli
//! package) so that cargo builds `cachelet` for it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cachelet_tests::redis::RedisServer;
use cachelet_tests::{compile_cache, component};

/// A `cachelet serve` process; killed when dropped.
struct Serve {
    child: Child,
    /// `http://127.0.0.1:PORT`
    base: String,
    /// The upstream it reported.
    upstream: String,
    /// What it printed on stdout (the demo's commands).
    stdout: String,
}

impl Serve {
    fn start(args: &[&str], env: &[(&str, &str)]) -> Serve {
        Serve::start_with(args, env, true)
    }

    /// [`Serve::start`]; without `keep_output`, its stdout and stderr are closed once it said
    /// where it serves, as a pipe whose reader went away would.
    fn start_with(args: &[&str], env: &[(&str, &str)], keep_output: bool) -> Serve {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let listen = format!("127.0.0.1:{port}");
        let mut child = Command::new(env!("CARGO_BIN_EXE_cachelet"))
            .arg("serve")
            .args(["--listen", &listen])
            .args(args)
            .env_remove("CACHE_URL")
            .env_remove("CACHELET_ADMIN_TOKEN")
            .env("CACHELET_COMPILE_CACHE", compile_cache())
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // A line on stderr says where it serves and what it caches; nothing is logged before
        // it (no warning with the seed policy in front of its routes).
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        err.read_line(&mut line).unwrap();
        assert!(line.starts_with("cachelet serve: http://"), "{line}");
        let upstream = line
            .split(" in front of ")
            .nth(1)
            .and_then(|r| r.split([' ', ';']).next())
            .unwrap()
            .to_string();
        if !keep_output {
            drop(err);
            drop(child.stdout.take());
            return Serve {
                child,
                base: format!("http://{listen}"),
                upstream,
                stdout: String::new(),
            };
        }
        // The rest of its log, shown with a failing test's output.
        let at = listen.clone();
        std::thread::spawn(move || {
            for l in err.lines().map_while(Result::ok) {
                eprintln!("[{at}] {l}");
            }
        });
        let mut stdout = String::new();
        // The demo's commands are read up to the last one; then its output is closed, as
        // `| head` would: the process must go on serving.
        if args.contains(&"--demo-upstream") {
            let mut out = BufReader::new(child.stdout.take().unwrap());
            while !stdout.contains("_cachelet/health") {
                let mut l = String::new();
                assert!(out.read_line(&mut l).unwrap() > 0, "{stdout}");
                stdout.push_str(&l);
            }
        }
        Serve {
            child,
            base: format!("http://{listen}"),
            upstream,
            stdout,
        }
    }

    fn request(
        &self,
        method: &str,
        path: &str,
        body: &str,
        token: Option<&str>,
    ) -> (u16, String, String) {
        self.request_to(&self.base, method, path, body, token)
    }

    /// [`Serve::request`] to another of its listeners.
    fn request_to(
        &self,
        base: &str,
        method: &str,
        path: &str,
        body: &str,
        token: Option<&str>,
    ) -> (u16, String, String) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut req = reqwest::Client::new()
                .request(method.parse().unwrap(), format!("{base}{path}"))
                .body(body.to_string());
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            let r = req.send().await.unwrap();
            let cache = r
                .headers()
                .get("x-cache")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default();
            (r.status().as_u16(), cache, r.text().await.unwrap())
        })
    }

    fn get(&self, path: &str) -> (String, String) {
        let (status, cache, body) = self.request("GET", path, "", None);
        assert_eq!(status, 200, "{path}: {body}");
        (cache, body)
    }

    /// SIGTERM; the exit status.
    fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let t0 = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(t0.elapsed() < Duration::from_secs(20), "still running");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The demo of the README: every command it prints, run as printed (`sh -c`, with curl), does
/// what its comment says.
#[test]
fn the_demo_does_what_it_prints() {
    let s = Serve::start(&["--demo-upstream"], &[]);
    let commands: Vec<(String, String)> = s
        .stdout
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("curl ").map(|_| l.trim()))
        .map(|l| match l.split_once("  #") {
            Some((cmd, says)) => (cmd.trim().to_string(), says.trim().to_string()),
            None => (l.to_string(), String::new()),
        })
        .collect();
    assert_eq!(commands.len(), 7, "{}", s.stdout);
    let mut outputs = Vec::new();
    for (cmd, says) in &commands {
        let out = Command::new("sh")
            .args(["-c", cmd])
            .output()
            .expect("sh runs");
        let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
        let cache = |v: &str| text.contains(&format!("x-cache: {v}"));
        match says.split(':').next().unwrap_or("") {
            "" => {}
            s if s.starts_with("MISS") => assert!(cache("miss"), "{cmd}: {text}"),
            s if s.starts_with("HIT with the new name") => {
                assert!(cache("hit") && text.contains("\"ann\""), "{cmd}: {text}")
            }
            s if s.starts_with("HIT") => assert!(cache("hit"), "{cmd}: {text}"),
            s if s.starts_with("the write") => assert!(text.starts_with("http/1.1 200"), "{text}"),
            other => panic!("a comment the test does not know: {other:?}"),
        }
        outputs.push(text);
    }
    // The purge (its token is the demo's) and the health check, uncommented.
    assert!(
        commands[4].0.contains("/_cachelet/purge"),
        "{:?}",
        commands[4]
    );
    assert!(
        outputs[4].contains("\"tags\""),
        "the purge was accepted: {}",
        outputs[4]
    );
    assert_eq!(outputs[6], r#"{"status":"up"}"#);
    let token = commands[4]
        .0
        .split("Bearer ")
        .nth(1)
        .and_then(|r| r.split('\'').next())
        .expect("the purge command carries the demo's token")
        .to_string();
    let purge = r#"{"tags": ["user:42"]}"#;
    assert_eq!(s.request("POST", "/_cachelet/purge", purge, None).0, 401);
    let (status, _, health) = s.request("GET", "/_cachelet/health", "", Some(&token));
    assert_eq!(status, 200);
    assert!(
        health.contains("seed-rust"),
        "the details with the token: {health}"
    );
    // The metrics after that traffic: the proxy's and the engine's, by outcome.
    let (status, _, metrics) = s.request("GET", "/_cachelet/metrics", "", Some(&token));
    assert_eq!(status, 200);
    for line in [
        "cachelet_http_requests_total{outcome=\"hit\"}",
        "cachelet_http_requests_total{outcome=\"miss\"}",
        "cachelet_upstream_responses_total{status=\"2xx\"}",
        "cachelet_reads_total{policy=\"seed-rust\",op=\"get_user\",outcome=\"hit\"}",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
    assert_eq!(s.request("GET", "/_cachelet/metrics", "", None).0, 401);
    // The policies, their ops and routes.
    let (status, _, policies) = s.request("GET", "/_cachelet/policies", "", Some(&token));
    assert_eq!(status, 200);
    let policies: serde_json::Value = serde_json::from_str(&policies).unwrap();
    let ops = &policies["policies"][0]["ops"];
    let get_user = ops
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "get_user")
        .expect("get_user is listed");
    assert_eq!(get_user["route"], "GET /users/{user_id}");
    assert_eq!(get_user["kind"], "read");
    // A purge by URL: the entry its GET reads.
    assert_eq!(s.get("/users/43").0, "MISS");
    assert_eq!(s.get("/users/43").0, "HIT");
    let purge = r#"{"urls": ["/users/43"]}"#;
    assert_eq!(
        s.request("POST", "/_cachelet/purge", purge, Some(&token)).0,
        200
    );
    assert_eq!(s.get("/users/43").0, "MISS", "purged by its URL");
    assert!(s.stop().success(), "a clean exit on SIGTERM");
}

/// Without policies, the built-in one: every GET cached by its URL; a write invalidates the
/// GETs of its own path (RFC 9111 §4.4), not those under it nor the site.
#[test]
fn without_policies_every_get_is_cached_by_url() {
    let demo = Serve::start(&["--demo-upstream"], &[]);
    let s = Serve::start(&["--upstream", &demo.upstream], &[]);
    for path in ["/users/1/settings", "/users/1", "/users/2"] {
        assert_eq!(s.get(path).0, "MISS");
        assert_eq!(s.get(path).0, "HIT");
    }
    assert_eq!(
        s.get("/users/1/settings?x=1").0,
        "MISS",
        "the query is part of the URL"
    );
    assert_eq!(s.request("PUT", "/users/1", "bob", None).0, 200);
    let (c, body) = s.get("/users/1");
    assert_eq!(c, "MISS");
    assert!(body.contains("bob"), "{body}");
    assert_eq!(
        s.get("/users/1/settings?x=1").0,
        "HIT",
        "under the written path: another resource"
    );
    assert_eq!(s.get("/users/2").0, "HIT", "beside it");
}

/// Two `cachelet serve` processes sharing a Redis: a PUT through one invalidates for the other.
#[test]
fn two_proxies_on_one_redis_share_entries_and_invalidations() {
    let redis = RedisServer::plain();
    let url = redis.url();
    let env = [("CACHE_URL", url.as_str()), ("CACHE_PREFIX", "shared")];
    let seed = component("seed-rust");
    let a = Serve::start(&["--demo-upstream"], &env);
    let b = Serve::start(
        &[
            "--upstream",
            &a.upstream,
            "--policy",
            seed.to_str().unwrap(),
        ],
        &env,
    );
    let (c, first) = a.get("/users/5");
    assert_eq!(c, "MISS");
    assert_eq!(
        b.get("/users/5"),
        ("HIT".to_string(), first.clone()),
        "stored by a, served by b"
    );
    assert_eq!(
        a.request("PUT", "/users/5", r#"{"name": "eve"}"#, None).0,
        200
    );
    let (_, after) = b.get("/users/5");
    assert!(after.contains("\"eve\""), "b after a's write: {after}");
    // What a's write invalidates and nothing recaches: only the invalidation makes it fresh.
    assert_eq!(a.get("/orgs/3/users/5").0, "MISS");
    assert_eq!(b.get("/orgs/3/users/5").0, "HIT");
    assert_eq!(
        a.request("PUT", "/users/5", r#"{"name": "ivy"}"#, None).0,
        200
    );
    let (c, org) = b.get("/orgs/3/users/5");
    assert_eq!(c, "MISS", "a's invalidation reached b");
    assert!(org.contains("\"ivy\""), "{org}");
    assert_eq!(
        b.request("PUT", "/users/5", r#"{"name": "mal"}"#, None).0,
        200
    );
    let (_, after) = a.get("/users/5");
    assert!(after.contains("\"mal\""), "a after b's write: {after}");
    assert!(b.stop().success());
    assert!(a.stop().success());
}

/// A bad setting is refused with a message that names it, and the process exits non-zero.
#[test]
fn a_bad_upstream_is_refused_naming_it() {
    for (upstream, says) in [
        ("ftp://example.com", "ftp://example.com"),
        ("http://user:hunter2@", "upstream"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_cachelet"))
            .args(["serve", "--listen", "127.0.0.1:0", "--upstream", upstream])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{err}");
        assert!(err.contains(says), "{err}");
        assert!(
            !err.contains("hunter2"),
            "credentials stay out of errors: {err}"
        );
    }
    let out = Command::new(env!("CARGO_BIN_EXE_cachelet"))
        .args([
            "serve",
            "--upstream",
            "http://127.0.0.1:9",
            "--host",
            "site",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("\"site\": expected upstream or client"),
        "{err}"
    );
}

/// The proxy's own failures are told apart from the upstream's answers in the metrics: an
/// upstream that cannot be reached is `unreachable` (the client's 502), an upstream's own 502
/// is a `5xx`.
#[test]
fn the_proxys_own_502_is_told_apart_from_the_upstreams() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let token = "metrics-token";
    let s = Serve::start(&["--upstream", &closed], &[("CACHELET_ADMIN_TOKEN", token)]);
    assert_eq!(s.request("GET", "/a", "", None).0, 502);
    let (_, _, metrics) = s.request("GET", "/_cachelet/metrics", "", Some(token));
    assert!(
        metrics.contains("cachelet_upstream_responses_total{status=\"unreachable\"} 1"),
        "{metrics}"
    );
    assert!(!metrics.contains("status=\"5xx\""), "{metrics}");
    assert!(s.stop().success());
}

/// Closed outputs do not stop the server: with its stdout and stderr closed (their reader gone),
/// each request to an unreachable upstream logs a warning into the closed stderr, and the
/// server answers every one and exits cleanly.
#[test]
fn a_closed_output_does_not_stop_the_server() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let s = Serve::start_with(&["--upstream", &closed, "--negative-ttl", "0"], &[], false);
    for _ in 0..5 {
        assert_eq!(s.request("GET", "/a", "", None).0, 502);
    }
    assert!(s.stop().success(), "a clean exit on SIGTERM");
}

/// The surrogate-key headers are settings: `--surrogate-key-header` names the header whose
/// values tag a response (the default names then tag nothing), `--forward-surrogate-keys`
/// lets clients see it; a name that is not a header name is refused, naming it.
#[test]
fn surrogate_key_headers_are_settings() {
    // An upstream that tags every answer two ways and counts what it is asked.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for (n, conn) in listener.incoming().enumerate() {
            let Ok(mut conn) = conn else { continue };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            let body = format!("answer {n}");
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nCache-Control: max-age=300\r\nX-Tags: red\r\n\
                 Surrogate-Key: blue\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let s = Serve::start(
        &[
            "--upstream",
            &upstream,
            "--surrogate-key-header",
            "x-tags",
            "--forward-surrogate-keys",
        ],
        &[("CACHELET_ADMIN_TOKEN", "t0ken")],
    );
    let tags_seen = || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let r = reqwest::get(format!("{}/a", s.base)).await.unwrap();
            r.headers()
                .get("x-tags")
                .map(|v| v.to_str().unwrap().to_string())
        })
    };
    let (c, first) = s.get("/a");
    assert_eq!(c, "MISS");
    assert_eq!(tags_seen().as_deref(), Some("red"), "forwarded");
    let purge = |tag: &str| {
        let (status, _, body) = s.request(
            "POST",
            "/_cachelet/purge",
            &format!(r#"{{"tags": ["{tag}"]}}"#),
            Some("t0ken"),
        );
        assert_eq!(status, 200, "{body}");
    };
    purge("blue");
    assert_eq!(
        s.get("/a"),
        ("HIT".to_string(), first.clone()),
        "Surrogate-Key is no longer a tag header"
    );
    purge("red");
    let (c, second) = s.get("/a");
    assert_eq!(c, "MISS", "purged by the tag X-Tags gave it");
    assert_ne!(second, first);

    let out = Command::new(env!("CARGO_BIN_EXE_cachelet"))
        .args(["serve", "--listen", "127.0.0.1:0", "--upstream", &upstream])
        .args(["--surrogate-key-header", "x tags"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("\"x tags\" is not an HTTP header name"),
        "{err}"
    );
}

/// `--admin-listen`: the admin API answers there, behind the token; the public listener keeps
/// only the health check (up or down).
#[test]
fn the_admin_api_listens_where_it_is_told() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let admin = format!("127.0.0.1:{port}");
    let token = "admin-apart";
    let s = Serve::start(
        &["--demo-upstream", "--admin-listen", &admin],
        &[("CACHELET_ADMIN_TOKEN", token)],
    );
    let base = format!("http://{admin}");
    let (status, _, body) = s.request("GET", "/_cachelet/policies", "", Some(token));
    assert_eq!(status, 404, "{body}");
    let (status, _, body) = s.request("GET", "/_cachelet/health", "", Some(token));
    assert_eq!((status, body.as_str()), (200, r#"{"status":"up"}"#));
    let (status, _, body) = s.request_to(&base, "GET", "/_cachelet/policies", "", Some(token));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("get_user"), "{body}");
    assert_eq!(
        s.request_to(&base, "GET", "/_cachelet/policies", "", None)
            .0,
        401
    );
}
