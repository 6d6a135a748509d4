//! What only Redis can show about the failure paths: application errors that are not
//! outages, held invalidations delivered by the host itself (and the window before they are),
//! the journal across a SIGKILL, the circuit breaker's timing, the commands the engine sends,
//! TLS that requires a client certificate, and secrets kept out of errors and logs.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cachelet::{BackendUrl, Blame, Cache, Error, Invalidation, Settings};
use cachelet_tests::redis::{RedisOptions, RedisServer};
use cachelet_tests::{component, Captured, ChildHost};
use serde_json::{json, Value as Json};

fn settings(url: &str, prefix: &str) -> Settings {
    let mut s = Settings::default();
    s.url = BackendUrl::parse(url).unwrap();
    s.prefix = prefix.into();
    s.redis.timeout = Duration::from_millis(200);
    s.redis.cooldown = Duration::from_millis(400);
    s
}

async fn rules(s: Settings) -> Cache {
    let policy = std::env::var("CACHELET_CHILD_POLICY")
        .map(PathBuf::from)
        .unwrap_or_else(|_| component("engine-rules"));
    Cache::builder()
        .settings(s)
        .policy_file(policy)
        .build()
        .await
        .expect("a cache on Redis with the engine-rules policy")
}

/// Reads `op` for `id`; the loader returns `value` and counts.
async fn read(c: &Cache, op: &str, id: u64, value: Json, loads: &AtomicU64) -> Json {
    loads.fetch_add(0, Ordering::SeqCst);
    let counted = Arc::new(AtomicU64::new(0));
    let inner = counted.clone();
    let v = c
        .read(op, &json!({ "id": id }), move || async move {
            inner.fetch_add(1, Ordering::SeqCst);
            Ok::<_, std::io::Error>(value)
        })
        .await
        .unwrap();
    loads.fetch_add(counted.load(Ordering::SeqCst), Ordering::SeqCst);
    v
}

async fn touch(c: &Cache, id: u64) -> Invalidation {
    c.write_outcome("touch_user", &json!({ "id": id }), || async {
        Ok::<_, std::io::Error>(())
    })
    .await
    .unwrap()
    .invalidation
}

// ---- 8. only outages open the circuit ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_errors_from_redis_do_not_open_the_circuit() {
    let server = RedisServer::plain();
    let c = rules(settings(&server.url(), "apperr")).await;
    let loads = AtomicU64::new(0);
    read(&c, "get_user", 1, json!("u1"), &loads).await;

    // A counter that is not an integer: the caller's error, every time.
    c.set("n", &"abc", None).await.unwrap();
    for _ in 0..3 {
        let e = c.incr("n", 1).await.unwrap_err().to_string();
        assert!(e.contains("not an integer"), "{e}");
    }
    // A sliding entry's key holding a list: WRONGTYPE on the read, served uncached.
    server.cli(&["RPUSH", "apperr:v1:slide:9", "x"]);
    for _ in 0..3 {
        assert_eq!(read(&c, "get_slide", 9, json!("s"), &loads).await, "s");
    }
    // The circuit stayed closed: the cached entry is still served from Redis.
    let before = loads.load(Ordering::SeqCst);
    assert_eq!(read(&c, "get_user", 1, json!("x"), &loads).await, "u1");
    assert_eq!(
        loads.load(Ordering::SeqCst),
        before,
        "the read went to its loader"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_errors_chain_the_clients_error_as_their_source() {
    use std::error::Error as _;
    let server = RedisServer::plain();
    let c = rules(settings(&server.url(), "sources")).await;
    // A command Redis refuses: the server's answer is the source, not part of the message.
    server.cli(&["RPUSH", "sources:v1:list", "x"]);
    let e = c.get::<Json>("list").await.unwrap_err();
    assert!(matches!(e, Error::Refused { .. }), "{e:?}");
    assert_eq!(e.blame(), Blame::Backend);
    let cause = e.source().expect("a refusal without its source");
    assert!(cause.to_string().contains("WRONGTYPE"), "{cause}");
    assert!(!e.to_string().contains("WRONGTYPE"), "{e}");
    // No answer: the client's timeout is the source.
    server.freeze();
    let e = c.get::<Json>("k").await.unwrap_err();
    assert!(matches!(e, Error::Unavailable { .. }), "{e:?}");
    assert_eq!(e.blame(), Blame::Backend);
    let cause = e.source().expect("an outage without its source");
    assert!(!cause.to_string().is_empty(), "{e:?}");
    // The circuit open after two outages: nothing was sent, so nothing to chain.
    let _ = c.get::<Json>("k").await;
    let e = c.get::<Json>("k").await.unwrap_err();
    assert!(
        matches!(e, Error::Unavailable { source: None, .. })
            && e.to_string().contains("circuit open"),
        "{e:?}"
    );
    server.resume();
    // Connecting: the server's refusal of the credentials is the source.
    let acl = RedisServer::start(RedisOptions::default().acl_user("app", "right-pass"));
    let e = Cache::builder()
        .settings(settings(
            &format!("redis://app:wrong-pass@127.0.0.1:{}/0", acl.port()),
            "x",
        ))
        .build()
        .await
        .err()
        .unwrap();
    assert!(matches!(e, Error::Backend { .. }), "{e:?}");
    assert_eq!(e.blame(), Blame::Backend);
    let cause = e.source().expect("a refused connection without its source");
    assert!(
        cause
            .to_string()
            .to_lowercase()
            .contains("authentication failed"),
        "{cause}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_server_under_noeviction_refuses_fills_and_keeps_serving_hits() {
    let server = RedisServer::start(RedisOptions::default().maxmemory("2mb", "noeviction"));
    let c = rules(settings(&server.url(), "full")).await;
    let loads = AtomicU64::new(0);
    read(&c, "get_user", 1, json!("u1"), &loads).await;
    // Fill the server until it refuses writes (OOM).
    let big = "x".repeat(20_000);
    let mut refused = 0;
    for i in 0..400 {
        if c.set(&format!("big:{i}"), &big, None).await.is_err() {
            refused += 1;
        }
    }
    assert!(refused > 0, "the server never filled up");
    // Fills are refused (served uncached), many times over...
    for id in 100..110 {
        read(&c, "get_user", id, json!("v"), &loads).await;
    }
    // ...and the cache still serves what it has.
    let before = loads.load(Ordering::SeqCst);
    assert_eq!(read(&c, "get_user", 1, json!("x"), &loads).await, "u1");
    assert_eq!(
        loads.load(Ordering::SeqCst),
        before,
        "OOM answers opened the circuit"
    );
}

// ---- the breaker: 2 outages, cooldown, one prober; every operation bounded ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_opens_after_two_outages_and_one_caller_probes() {
    let server = RedisServer::plain();
    let mut s = settings(&server.url(), "breaker");
    s.redis.timeout = Duration::from_millis(150);
    s.redis.cooldown = Duration::from_millis(1000);
    let c = rules(s).await;
    let loads = AtomicU64::new(0);
    for id in 0..10 {
        read(&c, "get_user", id, json!(id), &loads).await;
    }
    server.freeze();
    let mut took = Vec::new();
    for id in 0..10 {
        let t0 = Instant::now();
        assert_eq!(read(&c, "get_user", id, json!(id), &loads).await, id);
        took.push(t0.elapsed());
    }
    println!("reads while frozen: {took:?}");
    // The first two wait for the timeout; then the circuit is open: no waiting at all.
    for (i, t) in took.iter().enumerate() {
        assert!(*t < Duration::from_millis(300), "read {i} took {t:?}");
        if i < 2 {
            assert!(*t >= Duration::from_millis(140), "read {i} took only {t:?}");
        } else {
            assert!(
                *t < Duration::from_millis(20),
                "read {i} waited {t:?}: circuit closed"
            );
        }
    }
    // After the cooldown, exactly one of many concurrent reads probes (and waits).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut tasks = Vec::new();
    for id in 0..10 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let t0 = Instant::now();
            let loads = AtomicU64::new(0);
            read(&c, "get_user", id, json!(id), &loads).await;
            t0.elapsed()
        }));
    }
    let mut waited = 0;
    for t in tasks {
        if t.await.unwrap() >= Duration::from_millis(100) {
            waited += 1;
        }
    }
    assert_eq!(
        waited, 1,
        "one prober, the others straight to their loaders"
    );
    server.resume();
}

// ---- 2. held invalidations ----

/// The key of tag `tag` in namespace `prefix` (the engine's layout).
fn tag_key(prefix: &str, tag: &str) -> String {
    format!("{prefix}:v1~tag:{tag}")
}

/// Opens `c`'s circuit on a frozen server (two reads that time out), so that the write that
/// follows is held without being sent. (A command sent to a frozen server runs when it
/// resumes: an invalidation that timed out is usually delivered by the server itself.)
async fn open_circuit(c: &Cache) {
    let loads = AtomicU64::new(0);
    for id in 1000..1002 {
        read(c, "get_user", id, json!(0), &loads).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_invalidations_are_delivered_by_the_host_without_a_request() {
    let server = RedisServer::plain();
    let a = rules(settings(&server.url(), "held")).await;
    let b = rules(settings(&server.url(), "held")).await;
    let loads = AtomicU64::new(0);
    read(&a, "get_user", 1, json!("old"), &loads).await;
    assert_eq!(read(&b, "get_user", 1, json!("x"), &loads).await, "old");
    assert_eq!(server.cli(&["EXISTS", &tag_key("held", "user:1")]), "1");

    server.freeze();
    open_circuit(&a).await;
    assert_eq!(touch(&a, 1).await, Invalidation::Held { journaled: false });
    assert_eq!(a.held_invalidations(), 1);
    assert_eq!(a.stats().held_invalidations, 1);
    server.resume();
    let resumed = Instant::now();
    // Nobody uses `a` from here on: it delivers by itself.
    let delivered = loop {
        if a.held_invalidations() == 0 {
            break resumed.elapsed();
        }
        assert!(
            resumed.elapsed() < Duration::from_secs(5),
            "never delivered"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    println!("held invalidation delivered {delivered:?} after Redis resumed");
    assert!(delivered < Duration::from_millis(1500), "{delivered:?}");
    assert_eq!(server.cli(&["EXISTS", &tag_key("held", "user:1")]), "0");
    assert_eq!(read(&b, "get_user", 1, json!("new"), &loads).await, "new");
    // And `a` is back in service, caching again.
    assert_eq!(read(&a, "get_user", 1, json!("x"), &loads).await, "new");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_delivers_or_keeps_in_the_journal() {
    let server = RedisServer::plain();
    let dir = tempdir("shutdown");
    let journal = dir.join("held.journal");
    let mut s = settings(&server.url(), "shut");
    s.redis.journal = Some(journal.clone());
    let a = rules(s.clone()).await;
    let loads = AtomicU64::new(0);
    read(&a, "get_user", 1, json!("old"), &loads).await;
    server.freeze();
    open_circuit(&a).await;
    assert_eq!(touch(&a, 1).await, Invalidation::Held { journaled: true });
    assert!(std::fs::read_to_string(&journal)
        .unwrap()
        .contains("user:1"));
    // Still frozen at shutdown: kept in the journal.
    assert_eq!(a.shutdown().await, Invalidation::Held { journaled: true });
    drop(a);
    server.resume();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.cli(&["EXISTS", &tag_key("shut", "user:1")]), "1");
    // The next start delivers it before serving.
    let a = rules(s).await;
    assert_eq!(server.cli(&["EXISTS", &tag_key("shut", "user:1")]), "0");
    assert_eq!(a.held_invalidations(), 0);
    assert_eq!(std::fs::metadata(&journal).unwrap().len(), 0);
    assert_eq!(a.shutdown().await, Invalidation::Nothing);
    std::fs::remove_dir_all(dir).unwrap();
}

fn tempdir(what: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cachelet-{what}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A host in a process of its own (see [`ChildHost`]), driven line by line: `read ID`,
/// `write ID` (answers its value, or the write's outcome), `quit`.
fn host(url: &str, prefix: &str, journal: Option<&PathBuf>) -> ChildHost {
    let policy = component("engine-rules");
    let mut env = vec![
        ("CACHELET_CHILD_URL", PathBuf::from(url)),
        ("CACHELET_CHILD_PREFIX", PathBuf::from(prefix)),
        ("CACHELET_CHILD_POLICY", policy),
    ];
    if let Some(j) = journal {
        env.push(("CACHELET_CHILD_JOURNAL", j.clone()));
    }
    ChildHost::start("host_child", env)
}

/// The child side of [`host`] (runs only when a parent sets its variables).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_child() {
    let Ok(url) = std::env::var("CACHELET_CHILD_URL") else {
        return;
    };
    let mut s = settings(&url, &std::env::var("CACHELET_CHILD_PREFIX").unwrap());
    s.redis.journal = std::env::var("CACHELET_CHILD_JOURNAL")
        .ok()
        .map(PathBuf::from);
    let c = rules(s).await;
    println!("HOST ready");
    let mut lines = BufReader::new(std::io::stdin()).lines();
    let loads = AtomicU64::new(0);
    while let Some(Ok(line)) = lines.next() {
        let mut words = line.split_whitespace();
        let answer = match (
            words.next(),
            words.next().map(|w| w.parse::<u64>().unwrap()),
        ) {
            (Some("read"), Some(id)) => read(&c, "get_user", id, json!(-1), &loads)
                .await
                .to_string(),
            (Some("write"), Some(id)) => format!("{:?}", touch(&c, id).await),
            (Some("open"), _) => {
                open_circuit(&c).await;
                "open".to_string()
            }
            (Some("held"), _) => c.held_invalidations().to_string(),
            _ => {
                println!("HOST bye");
                break;
            }
        };
        println!("HOST {answer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_killed_while_holding_delivers_from_its_journal_at_restart() {
    let server = RedisServer::plain();
    let dir = tempdir("killed");
    let journal = dir.join("held.journal");
    let b = rules(settings(&server.url(), "killed")).await;
    let loads = AtomicU64::new(0);
    read(&b, "get_user", 1, json!("old"), &loads).await;

    let mut a = host(&server.url(), "killed", Some(&journal));
    assert_eq!(a.ask("read 1"), "\"old\"");
    server.freeze();
    a.ask("open");
    assert_eq!(a.ask("write 1"), "Held { journaled: true }");
    a.kill();
    server.resume();
    // The host that held it is gone: the other still serves what it invalidated.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(read(&b, "get_user", 1, json!("new"), &loads).await, "old");
    // Restarted with its journal, it delivers before it serves.
    let mut a = host(&server.url(), "killed", Some(&journal));
    assert_eq!(read(&b, "get_user", 1, json!("new"), &loads).await, "new");
    assert_eq!(a.ask("read 1"), "\"new\"");
    a.ask("quit");
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_window_after_an_outage_is_measured_across_two_processes() {
    let server = RedisServer::plain();
    let b = rules(settings(&server.url(), "window")).await;
    let loads = AtomicU64::new(0);
    let mut windows = Vec::new();
    let mut a = host(&server.url(), "window", None);
    for round in 0..5u64 {
        let id = 10 + round;
        read(&b, "get_user", id, json!("old"), &loads).await;
        while a.ask("held") != "0" {
            std::thread::sleep(Duration::from_millis(20));
        }
        server.freeze();
        a.ask("open");
        assert_eq!(a.ask(&format!("write {id}")), "Held { journaled: false }");
        server.resume();
        let resumed = Instant::now();
        // How long the other host still serves the value the held write invalidated.
        while read(&b, "get_user", id, json!("new"), &loads).await == "old" {
            assert!(
                resumed.elapsed() < Duration::from_secs(5),
                "never delivered"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        windows.push(resumed.elapsed());
    }
    a.ask("quit");
    windows.sort();
    println!(
        "window after Redis resumed, during which another host served a held-invalidated value \
         (cooldown 400 ms, timeout 200 ms): min {:?}, median {:?}, max {:?}",
        windows[0], windows[2], windows[4]
    );
    assert!(windows[4] < Duration::from_millis(1500), "{windows:?}");
}

// ---- the commands the engine sends ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hit_is_one_mget_and_scans_never_use_keys() {
    let server = RedisServer::plain();
    let mut s = settings(&server.url(), "shape");
    s.redis.timeout = Duration::from_secs(2);
    let c = rules(s).await;
    let loads = AtomicU64::new(0);
    read(&c, "get_user", 1, json!("u1"), &loads).await;
    server.cli(&["CONFIG", "RESETSTAT"]);
    let before = c.stats().redis_commands;
    for _ in 0..100 {
        read(&c, "get_user", 1, json!("x"), &loads).await;
    }
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    assert_eq!(c.stats().redis_commands - before, 100);
    assert_eq!(server.command_calls("mget"), 100);
    assert_eq!(server.command_calls("get"), 0);
    for i in 0..50 {
        c.set(&format!("user:1:k{i}"), &i, None).await.unwrap();
    }
    assert_eq!(c.delete_match("user:1:*").await.unwrap(), 50);
    c.write("touch_short", &json!({}), || async {
        Ok::<_, std::io::Error>(())
    })
    .await
    .unwrap();
    assert_eq!(server.command_calls("keys"), 0);
    assert!(server.command_calls("scan") >= 1);
    assert!(server.command_calls("unlink") >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_host_backs_off_and_a_dead_holders_lock_expires() {
    let server = RedisServer::plain();
    let mut s = settings(&server.url(), "lockshape");
    s.redis.timeout = Duration::from_secs(2);
    s.redis.lock_ttl = Duration::from_millis(600);
    let a = rules(s.clone()).await;
    let b = rules(s).await;
    // `a` loads for 1 s (its lock is kept alive past its 600 ms TTL); `b` waits for it.
    let slow = tokio::spawn({
        let a = a.clone();
        async move {
            a.read("get_locked", &json!({"id": 1}), || async {
                tokio::time::sleep(Duration::from_millis(1000)).await;
                Ok::<_, std::io::Error>(json!("from a"))
            })
            .await
            .unwrap()
        }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let before = b.stats().redis_commands;
    let b_loads = Arc::new(AtomicU64::new(0));
    let counted = b_loads.clone();
    let v = b
        .read("get_locked", &json!({"id": 1}), move || async move {
            counted.fetch_add(1, Ordering::SeqCst);
            Ok::<_, std::io::Error>(json!("from b"))
        })
        .await
        .unwrap();
    let commands = b.stats().redis_commands - before;
    assert_eq!(slow.await.unwrap(), "from a");
    assert_eq!(v, "from a", "b loaded although a held the lock");
    assert_eq!(b_loads.load(Ordering::SeqCst), 0);
    println!("waiting ~950 ms for another host's load: {commands} commands");
    // Looks 5, 10, 20, ... 200 ms apart: ~10 looks of 2 commands. A 5 ms poll would be ~400.
    assert!(commands <= 40, "{commands} commands: a busy poll");

    // A holder that died: its lock expires by itself and the next reader loads.
    server.cli(&["SET", "lockshape:v1~lock:locked:2", "dead", "PX", "500"]);
    let t0 = Instant::now();
    let v = b
        .read("get_locked", &json!({"id": 2}), || async {
            Ok::<_, std::io::Error>(json!("b2"))
        })
        .await
        .unwrap();
    assert_eq!(v, "b2");
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_millis(1500),
        "{waited:?}"
    );
}

// ---- TLS and secrets ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_with_a_server_that_requires_a_client_certificate() {
    let server = RedisServer::start(RedisOptions::default().tls().require_client_cert());
    let mut s = settings(&server.url(), "mtls");
    s.redis.timeout = Duration::from_secs(2);
    s.redis.tls_ca_file = Some(server.ca_cert().to_path_buf());
    let e = Cache::builder()
        .settings(s.clone())
        .build()
        .await
        .err()
        .expect("a client without a certificate is refused")
        .to_string();
    assert!(
        e.contains("TLS handshake failed") || e.contains("cannot connect"),
        "{e}"
    );
    s.redis.tls_client_cert = Some((
        server.client_cert().to_path_buf(),
        server.client_key().to_path_buf(),
    ));
    let c = rules(s).await;
    let loads = AtomicU64::new(0);
    read(&c, "get_user", 1, json!("u1"), &loads).await;
    assert_eq!(read(&c, "get_user", 1, json!("x"), &loads).await, "u1");
}

#[tokio::test(flavor = "current_thread")]
async fn credentials_never_appear_in_errors_or_logs() {
    let (logs, _guard) = Captured::install(tracing::Level::TRACE);

    // Malformed URLs, with a password in them.
    for url in [
        "app:hunter2@127.0.0.1:6379",
        "redis//app:hunter2@127.0.0.1:6379",
        "redis://app:hunter2@127.0.0.1:notaport/0",
        "redis://app:hunter2@127.0.0.1:6379/x",
        "memcached://app:hunter2@127.0.0.1",
        "redis://:hunter2@,/0",
    ] {
        let e = BackendUrl::parse(url).expect_err(url).to_string();
        assert!(!e.contains("hunter2"), "{url}: {e}");
    }
    // A wrong password, then an outage with the right one.
    let server = RedisServer::start(RedisOptions::default().acl_user("app", "hunter2"));
    let wrong = server.url().replace("hunter2", "hunter3");
    let e = Cache::builder()
        .settings(settings(&wrong, "secret"))
        .build()
        .await
        .err()
        .unwrap();
    // The error and every source it chains, as text and as Debug.
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    let mut depth = 0;
    while let Some(err) = next {
        let (text, debug) = (err.to_string(), format!("{err:?}"));
        assert!(
            !text.contains("hunter3") && !debug.contains("hunter3"),
            "{text} / {debug}"
        );
        next = err.source();
        depth += 1;
    }
    assert!(depth >= 2, "the client's error is not chained: {e:?}");
    let c = rules(settings(&server.url(), "secret")).await;
    let loads = AtomicU64::new(0);
    read(&c, "get_user", 1, json!("u1"), &loads).await;
    server.freeze();
    for id in 0..4 {
        read(&c, "get_user", id, json!("x"), &loads).await;
    }
    touch(&c, 1).await;
    server.resume();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    read(&c, "get_user", 1, json!("u1"), &loads).await;
    let text = logs.text();
    assert!(
        text.contains("Redis failing"),
        "the outage was not logged:\n{text}"
    );
    assert!(
        text.contains("held"),
        "the held invalidation was not logged:\n{text}"
    );
    assert!(
        !text.contains("hunter2") && !text.contains("hunter3"),
        "{text}"
    );
    assert!(!format!("{:?}", c.settings()).contains("hunter2"));
}

// ---- 10. single flight with Redis down ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_flight_holds_while_redis_is_down() {
    let server = RedisServer::plain();
    let c = rules(settings(&server.url(), "flightdown")).await;
    server.freeze();
    open_circuit(&c).await;
    let calls = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (c, calls) = (c.clone(), calls.clone());
        tasks.push(tokio::spawn(async move {
            c.read("get_locked", &json!({"id": 1}), move || async move {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(200)).await;
                Ok::<_, std::io::Error>(json!("from the database"))
            })
            .await
            .unwrap()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), "from the database");
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "an outage became a stampede on the database"
    );
    server.resume();
}

// ---- 12. guest instances are bounded ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_calls_use_at_most_the_instance_bound() {
    let server = RedisServer::plain();
    let mut s = settings(&server.url(), "bounded");
    s.redis.timeout = Duration::from_secs(3);
    // `probe_store` awaits Redis four times inside the guest: each call holds its instance
    // across those round trips.
    let c = Cache::builder()
        .settings(s)
        .policy_limits(
            cachelet::PolicyLimits::default()
                .with_max_instances(4)
                .with_instance_wait(Duration::from_millis(50)),
        )
        .policy_file(component("engine-rules"))
        .build()
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..1000 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            c.read("probe_store", &json!({ "k": format!("k{i}") }), || async {
                Ok::<_, std::io::Error>(1)
            })
            .await
            .unwrap()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 1);
    }
    let st = c.stats();
    println!(
        "1000 concurrent calls: peak {} instances, {} served uncached as busy",
        st.guest_instances_peak, st.guest_busy
    );
    assert!(st.guest_instances_peak <= 4, "{st:?}");
    assert!(st.guest_instances <= 4, "{st:?}");
    assert_eq!(st.guest_faults, 0);
    // Calls past the bound waited for an instance (most) or were counted as busy.
    let computed = c.stats().uncached - st.guest_busy;
    assert!(computed > 100, "{st:?}");
}

// ---- 13. atomic commands ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incr_sets_its_ttl_in_the_same_command() {
    let server = RedisServer::plain();
    let c = rules(settings(&server.url(), "incr")).await;
    server.cli(&["CONFIG", "RESETSTAT"]);
    let before = c.stats().redis_commands;
    for n in 1..=3 {
        assert_eq!(c.incr("visits", 1).await.unwrap(), n);
    }
    // One command per incr, the TTL set by the same script that counts.
    assert_eq!(c.stats().redis_commands - before, 3);
    assert_eq!(server.command_calls("evalsha"), 3);
    let pttl: i64 = server.cli(&["PTTL", "incr:v1:visits"]).parse().unwrap();
    assert!(pttl > 290_000 && pttl <= 300_000, "{pttl}");
}

// ---- the whole story: two processes, 10,000 interleavings, outages, a crash ----

/// One host of the stress test, in a process of its own (runs only when the parent sets its
/// variables). It writes its own users and reads everybody's; a "database" (another Redis
/// server, never frozen) holds each user's version and, once a write has returned and its
/// invalidation is delivered, `done:{id}`: no read through the cache may return less.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stress_child() {
    let Ok(url) = std::env::var("CACHELET_STRESS_URL") else {
        return;
    };
    let env = |k: &str| std::env::var(k).unwrap();
    let num = |k: &str| env(k).parse::<u64>().unwrap();
    let (first, count, others, iterations) = (
        num("CACHELET_STRESS_FIRST"),
        num("CACHELET_STRESS_COUNT"),
        num("CACHELET_STRESS_OTHERS"),
        num("CACHELET_STRESS_ITERATIONS"),
    );
    let mut s = settings(&url, "stress");
    s.redis.journal = std::env::var("CACHELET_STRESS_JOURNAL")
        .ok()
        .map(PathBuf::from);
    let c = rules(s).await;
    let db = Cache::builder()
        .settings(settings(&env("CACHELET_STRESS_DB"), "db"))
        .build()
        .await
        .unwrap();
    println!("STRESS ready");
    let mut go = String::new();
    std::io::stdin().read_line(&mut go).unwrap();
    async fn read(c: &Cache, db: &Cache, id: u64, slow: u64) -> i64 {
        let db = db.clone();
        c.read("get_user", &json!({ "id": id }), move || async move {
            let v = db
                .get::<i64>(&format!("u:{id}"))
                .await
                .map_err(|e| e.to_string())?;
            for _ in 0..slow {
                tokio::task::yield_now().await;
            }
            Ok::<_, String>(v.unwrap_or(0))
        })
        .await
        .unwrap()
    }
    let (mut stale, mut held, mut writes) = (0u64, 0u64, 0u64);
    let mut unpublished: Vec<(u64, i64)> = Vec::new();
    for i in 0..iterations {
        let id = first + i % count;
        // A slow reader of the same user, racing the write.
        let racer = {
            let (c, db) = (c.clone(), db.clone());
            tokio::spawn(async move { read(&c, &db, id, i % 3).await })
        };
        let w = c
            .write_outcome("touch_user", &json!({ "id": id }), || async {
                db.incr(&format!("u:{id}"), 1)
                    .await
                    .map_err(|e| e.to_string())
            })
            .await
            .unwrap();
        writes += 1;
        match w.invalidation {
            Invalidation::Held { .. } => {
                held += 1;
                println!("STRESS held {id} {}", w.value);
                unpublished.push((id, w.value));
            }
            _ => db.set(&format!("done:{id}"), &w.value, None).await.unwrap(),
        }
        if !unpublished.is_empty() && c.held_invalidations() == 0 {
            for (id, v) in unpublished.drain(..) {
                db.set(&format!("done:{id}"), &v, None).await.unwrap();
            }
            println!("STRESS delivered");
        }
        // This host's own read after its write: never stale, held or not.
        if read(&c, &db, id, 0).await < w.value {
            stale += 1;
            println!("STRESS stale own {id}");
        }
        racer.await.unwrap();
        // Anybody's user: no older than its last write that returned delivered.
        let other = (i * 7) % others;
        let done = db
            .get::<i64>(&format!("done:{other}"))
            .await
            .unwrap()
            .unwrap_or(0);
        let v = read(&c, &db, other, 0).await;
        if v < done {
            stale += 1;
            println!("STRESS stale {other}: {v} < {done}");
        }
    }
    // Wait for what is still held to be delivered, then publish it.
    let t0 = Instant::now();
    while c.held_invalidations() > 0 && t0.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        c.held_invalidations(),
        0,
        "a held invalidation was never delivered"
    );
    for (id, v) in unpublished.drain(..) {
        db.set(&format!("done:{id}"), &v, None).await.unwrap();
    }
    println!("STRESS done stale={stale} held={held} writes={writes}");
}

struct Stressed {
    child: Child,
    stdin: ChildStdin,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Stressed {
    fn start(
        cache: &str,
        db: &str,
        first: u64,
        iterations: u64,
        journal: Option<&PathBuf>,
    ) -> Stressed {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "--exact",
            "stress_child",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("CACHELET_STRESS_URL", cache)
        .env("CACHELET_STRESS_DB", db)
        .env("CACHELET_STRESS_FIRST", first.to_string())
        .env("CACHELET_STRESS_COUNT", "25")
        .env("CACHELET_STRESS_OTHERS", "50")
        .env("CACHELET_STRESS_ITERATIONS", iterations.to_string())
        .env("CACHELET_CHILD_POLICY", component("engine-rules"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
        if let Some(j) = journal {
            cmd.env("CACHELET_STRESS_JOURNAL", j);
        }
        let mut child = cmd.spawn().unwrap();
        let stdin = child.stdin.take().unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                if let Some((_, l)) = line.split_once("STRESS ") {
                    if tx.send(l.to_string()).is_err() {
                        return;
                    }
                }
            }
        });
        let s = Stressed {
            child,
            stdin,
            lines,
        };
        assert_eq!(s.next(Duration::from_secs(60)).as_deref(), Some("ready"));
        s
    }

    /// Starts the host's work.
    fn go(&mut self) {
        writeln!(self.stdin, "go").unwrap();
    }

    fn next(&self, within: Duration) -> Option<String> {
        self.lines.recv_timeout(within).ok()
    }
}

#[test]
fn two_processes_ten_thousand_interleavings_an_outage_and_a_crash_no_stale_read() {
    let cache = RedisServer::plain();
    let db = RedisServer::plain();
    let dir = tempdir("stress");
    let journal = dir.join("a.journal");
    let mut a = Stressed::start(&cache.url(), &db.url(), 0, 5000, Some(&journal));
    let mut b = Stressed::start(&cache.url(), &db.url(), 25, 5000, None);
    a.go();
    b.go();
    let mut seen = Vec::new();
    // A host may finish while the other is handled: its result is kept, not lost among the
    // lines seen.
    let mut finished_early: Option<String> = None;
    let drain = |s: &Stressed, seen: &mut Vec<String>, done: &mut Option<String>| {
        while let Some(l) = s.next(Duration::from_millis(1)) {
            match l.strip_prefix("done ") {
                Some(r) => *done = Some(r.to_string()),
                None => seen.push(l),
            }
        }
    };
    // An outage both hosts live through.
    std::thread::sleep(Duration::from_millis(1500));
    cache.freeze();
    std::thread::sleep(Duration::from_millis(1000));
    cache.resume();
    std::thread::sleep(Duration::from_millis(1000));
    // Another, during which host A is killed while it holds invalidations.
    cache.freeze();
    // Let A hold for a while: after its circuit opened, its writes are held without being
    // sent (a command sent to a frozen server would run when it resumes).
    let t0 = Instant::now();
    let mut held_by_a: std::collections::BTreeMap<u64, i64> = Default::default();
    while t0.elapsed() < Duration::from_millis(700) {
        if let Some(rest) = a
            .next(Duration::from_millis(50))
            .as_deref()
            .and_then(|l| l.strip_prefix("held "))
        {
            let (id, v) = rest.split_once(' ').unwrap();
            let v: i64 = v.parse().unwrap();
            let e = held_by_a.entry(id.parse().unwrap()).or_insert(v);
            *e = (*e).max(v);
        }
    }
    assert!(!held_by_a.is_empty(), "host A never held");
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    drain(&b, &mut seen, &mut finished_early);
    cache.resume();
    // Restarted with its journal: it delivers what it held before it serves (checked by a
    // third host before the restarted one writes anything); then what the killed host never
    // got to publish is published.
    a = Stressed::start(&cache.url(), &db.url(), 0, 3000, Some(&journal));
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let db = Cache::builder()
            .settings(settings(&db.url(), "db"))
            .build()
            .await
            .unwrap();
        let c = rules(settings(&cache.url(), "stress")).await;
        for (id, v) in held_by_a.iter() {
            let db2 = db.clone();
            let id = *id;
            let now: i64 = c
                .read("get_user", &json!({ "id": id }), move || async move {
                    let v = db2
                        .get::<i64>(&format!("u:{id}"))
                        .await
                        .map_err(|e| e.to_string())?;
                    Ok::<_, String>(v.unwrap_or(0))
                })
                .await
                .unwrap();
            assert!(
                now >= *v,
                "user {id}: the killed host's held invalidation was lost"
            );
            db.set(&format!("done:{id}"), v, None).await.unwrap();
        }
    });
    a.go();
    let mut results = Vec::new();
    for (s, early) in [(&a, None), (&b, finished_early)] {
        if let Some(r) = early {
            results.push(r);
            continue;
        }
        loop {
            let line = s
                .next(Duration::from_secs(240))
                .expect("a host did not finish");
            if let Some(r) = line.strip_prefix("done ") {
                results.push(r.to_string());
                break;
            }
            seen.push(line);
        }
    }
    a.child.wait().unwrap();
    b.child.wait().unwrap();
    println!(
        "stress: {results:?}; {} held lines",
        seen.iter().filter(|l| l.starts_with("held")).count()
    );
    let field = |r: &str, name: &str| -> u64 {
        r.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .unwrap()
            .parse()
            .unwrap()
    };
    let stale: u64 = results.iter().map(|r| field(r, "stale=")).sum();
    let writes: u64 = results.iter().map(|r| field(r, "writes=")).sum();
    let held: u64 = results.iter().map(|r| field(r, "held=")).sum();
    assert_eq!(stale, 0, "stale reads: {results:?} {seen:?}");
    // The killed host's first run wrote too (not counted): 10,000 interleavings and more.
    assert!(writes >= 8000, "{results:?}");
    assert!(held > 0, "the outages held nothing: {results:?}");
    std::fs::remove_dir_all(dir).unwrap();
}

// ---- 9. early refresh does not depend on the hosts' clocks ----

/// A host whose clock is an hour behind (run under libfaketime by the parent): it only reads
/// `get_early` for a few seconds and reports its misses and refreshes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skewed_clock_child() {
    let Ok(url) = std::env::var("CACHELET_SKEWED_URL") else {
        return;
    };
    let c = rules(settings(&url, "skew")).await;
    let loads = AtomicU64::new(0);
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(6000) {
        read(&c, "get_early", 1, json!("b"), &loads).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let st = c.stats();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    println!(
        "SKEWED now={now} misses={} refreshes={}",
        st.misses, st.early_refreshes
    );
}

#[test]
fn early_refresh_on_a_host_whose_clock_is_an_hour_behind() {
    assert!(
        Command::new("faketime").arg("-h").output().is_ok(),
        "faketime is needed (Debian package faketime; scripts/test.sh installs it)"
    );
    let server = RedisServer::plain();
    // Host A fills the entry (early refresh after 1 s of its 4 s).
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let a = rules(settings(&server.url(), "skew")).await;
        let loads = AtomicU64::new(0);
        read(&a, "get_early", 1, json!("a"), &loads).await;
    });
    // Host B, an hour behind, reads it from then on: the entry's age comes from the server's
    // clock, so B refreshes it about once a second and never misses.
    let out = Command::new("faketime")
        .args(["-m", "-f", "-1h"])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "skewed_clock_child",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .env("CACHELET_SKEWED_URL", server.url())
        .env("CACHELET_CHILD_POLICY", component("engine-rules"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    let line = text
        .lines()
        .find_map(|l| l.split_once("SKEWED ").map(|(_, r)| r.to_string()))
        .unwrap_or_else(|| panic!("no report: {text}"));
    println!("host an hour behind: {line}");
    let field = |name: &str| -> u64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .unwrap()
            .parse()
            .unwrap()
    };
    // The child's clock was an hour behind (libfaketime preloaded), or nothing was shown.
    let ours = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let behind = ours.saturating_sub(field("now="));
    assert!(
        (3500..=3700).contains(&behind),
        "the child's clock was {behind} s behind, not an hour: {line}"
    );
    assert_eq!(field("misses="), 0, "{line}");
    assert!((3..=8).contains(&field("refreshes=")), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_invalidations_are_delivered_on_a_cluster_too() {
    use cachelet_tests::redis::RedisCluster;
    let cluster = RedisCluster::start(3);
    let mut s = settings(&cluster.url(), "cheld");
    s.redis.timeout = Duration::from_millis(300);
    let a = rules(s.clone()).await;
    let b = rules(s).await;
    let loads = AtomicU64::new(0);
    // Users whose tags sit on different masters.
    let ids: Vec<u64> = (1..=6).collect();
    for &id in &ids {
        read(&a, "get_user", id, json!("old"), &loads).await;
        assert_eq!(read(&b, "get_user", id, json!("x"), &loads).await, "old");
    }
    for n in cluster.nodes() {
        n.freeze();
    }
    open_circuit(&a).await;
    for &id in &ids {
        assert_eq!(touch(&a, id).await, Invalidation::Held { journaled: false });
    }
    assert_eq!(a.held_invalidations(), ids.len());
    for n in cluster.nodes() {
        n.resume();
    }
    let resumed = Instant::now();
    while a.held_invalidations() > 0 {
        assert!(
            resumed.elapsed() < Duration::from_secs(10),
            "never delivered"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "cluster: held invalidations delivered {:?} after resuming",
        resumed.elapsed()
    );
    for &id in &ids {
        let tag = tag_key("cheld", &format!("user:{id}"));
        assert_eq!(
            cluster.node_for_key(&tag).cli(&["EXISTS", &tag]),
            "0",
            "{tag}"
        );
        assert_eq!(read(&b, "get_user", id, json!("new"), &loads).await, "new");
    }
}
