//! What only Redis can show: guarantees between hosts that share one server, eviction,
//! outages, and connection errors. (The whole behavioural suite also runs on Redis: see
//! `engine.rs`.)

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cachelet::{BackendUrl, Cache, Settings};
use cachelet_tests::component;
use cachelet_tests::redis::{RedisOptions, RedisServer};
use serde_json::json;

async fn cache(settings: Settings) -> Cache {
    // Child processes load the component their parent built (building it from several
    // processes at once would race on the file).
    let policy = std::env::var("CACHELET_STAMPEDE_POLICY")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| component("seed-rust"));
    Cache::builder()
        .settings(settings)
        .policy_file(policy)
        .build()
        .await
        .expect("cache on Redis")
}

fn settings(url: &str, prefix: &str) -> Settings {
    let mut s = Settings::default();
    s.url = BackendUrl::parse(url).unwrap();
    s.prefix = prefix.into();
    s.redis.timeout = Duration::from_secs(3);
    s
}

/// A record store shared by the hosts of a test (the service's database).
#[derive(Clone, Default)]
struct Db(Arc<Mutex<HashMap<String, u64>>>);

impl Db {
    fn get(&self, k: &str) -> u64 {
        *self.0.lock().unwrap().get(k).unwrap_or(&0)
    }
    fn bump(&self, k: &str) -> u64 {
        let mut m = self.0.lock().unwrap();
        let v = m.entry(k.to_string()).or_insert(0);
        *v += 1;
        *v
    }
}

async fn read_user(c: &Cache, db: &Db, id: u64, loads: &Arc<AtomicU64>) -> u64 {
    let (db, loads) = (db.clone(), loads.clone());
    c.read("get_user", &json!({ "user_id": id }), move || async move {
        loads.fetch_add(1, Ordering::Relaxed);
        Ok::<_, std::io::Error>(db.get(&format!("u{id}")))
    })
    .await
    .unwrap()
}

async fn write_user(c: &Cache, db: &Db, id: u64) -> u64 {
    let db = db.clone();
    c.write("update_user", &json!({ "user_id": id }), || async move {
        Ok::<_, std::io::Error>(db.bump(&format!("u{id}")))
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_sharing_redis_never_read_stale_after_a_write() {
    let server = RedisServer::plain();
    // Two hosts: separate caches, separate connections, one namespace.
    let a = cache(settings(&server.url(), "shared")).await;
    let b = cache(settings(&server.url(), "shared")).await;
    let db = Db::default();
    let loads = Arc::new(AtomicU64::new(0));
    let stale = Arc::new(AtomicU64::new(0));
    let keys = 50u64;
    let rounds = 10_000u64;
    let mut tasks = Vec::new();
    for k in 0..keys {
        let (a, b, db, loads, stale) = (
            a.clone(),
            b.clone(),
            db.clone(),
            loads.clone(),
            stale.clone(),
        );
        tasks.push(tokio::spawn(async move {
            for i in 0..rounds / keys {
                // A slow reader on host B loads the old record while host A writes.
                let reader = {
                    let (b, db) = (b.clone(), db.clone());
                    tokio::spawn(async move {
                        let db2 = db.clone();
                        b.read("get_user", &json!({ "user_id": k }), move || async move {
                            let v = db2.get(&format!("u{k}"));
                            for _ in 0..(i % 3) {
                                tokio::task::yield_now().await;
                            }
                            Ok::<_, std::io::Error>(v)
                        })
                        .await
                        .unwrap()
                    })
                };
                let written = write_user(&a, &db, k).await;
                for host in [&b, &a] {
                    if read_user(host, &db, k, &loads).await < written {
                        stale.fetch_add(1, Ordering::Relaxed);
                    }
                }
                reader.await.unwrap();
                if read_user(&b, &db, k, &loads).await < written {
                    stale.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(stale.load(Ordering::Relaxed), 0, "stale reads across hosts");
    assert_eq!(db.get("u0"), rounds / keys);
    // And the cache did cache: far fewer loads than reads.
    assert!(loads.load(Ordering::Relaxed) < rounds * 3, "{loads:?}");
}

/// One child of the cross-process stampede (runs only when the parent sets its variables).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stampede_child() {
    let Ok(url) = std::env::var("CACHELET_STAMPEDE_URL") else {
        return;
    };
    let start: u64 = std::env::var("CACHELET_STAMPEDE_START")
        .unwrap()
        .parse()
        .unwrap();
    let c = cache(settings(&url, "stampede")).await;
    let loads = Arc::new(AtomicU64::new(0));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    tokio::time::sleep(Duration::from_millis(start.saturating_sub(now))).await;
    let before = c.stats().redis_commands;
    let mut tasks = Vec::new();
    for _ in 0..25 {
        let (c, loads) = (c.clone(), loads.clone());
        tasks.push(tokio::spawn(async move {
            c.read(
                "get_user_profile",
                &json!({"user_id": 7}),
                move || async move {
                    loads.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok::<_, std::io::Error>("profile 7".to_string())
                },
            )
            .await
            .unwrap()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), "profile 7");
    }
    println!(
        "STAMPEDE loads={} commands={}",
        loads.load(Ordering::SeqCst),
        c.stats().redis_commands - before
    );
}

#[test]
fn a_stampede_across_four_processes_loads_once_with_few_commands() {
    let server = RedisServer::plain();
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        + 3000;
    let before = server.info_stat("total_commands_processed");
    let children: Vec<_> = (0..4)
        .map(|_| {
            std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "stampede_child",
                    "--nocapture",
                    "--test-threads",
                    "1",
                ])
                .env("CACHELET_STAMPEDE_URL", server.url())
                .env("CACHELET_STAMPEDE_POLICY", component("seed-rust"))
                .env("CACHELET_STAMPEDE_START", start.to_string())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let (mut loads, mut commands) = (0u64, Vec::new());
    for child in children {
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{text}");
        let line = text
            .lines()
            .find_map(|l| l.split_once("STAMPEDE ").map(|(_, r)| r))
            .unwrap_or_else(|| panic!("no report in {text}"));
        let field = |name: &str| -> u64 {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .unwrap()
                .parse()
                .unwrap()
        };
        loads += field("loads=");
        commands.push(field("commands="));
    }
    let total = server.info_stat("total_commands_processed") - before;
    println!(
        "4 processes x 25 readers: {loads} loader call(s); Redis commands per process {commands:?}, \
         {total} at the server in all (INFO included), {:.1} per reader",
        commands.iter().sum::<u64>() as f64 / 100.0
    );
    assert_eq!(loads, 1, "exactly one loader call among all hosts");
    // Each reader looks the key up once; each host's one local waiter backs off between
    // looks (5, 10, 20, ... ms), and its 24 local followers look once more when it lands.
    assert!(
        commands.iter().sum::<u64>() <= 300,
        "waiters must back off, not hammer Redis: {commands:?}"
    );
}

/// How many of users `0..n` have an entry `{op_key}:{id}` in Redis whose tag key
/// `user:{id}` is gone: the situation the eviction test must create.
fn entries_without_their_tag(server: &RedisServer, prefix: &str, suffix: &str, n: u64) -> u64 {
    (0..n)
        .filter(|id| {
            let entry = format!("{prefix}:v1:user:{suffix}:{id}");
            let tag = format!("{prefix}:v1~tag:user:{id}");
            server.cli(&["EXISTS", &entry]) == "1" && server.cli(&["EXISTS", &tag]) == "0"
        })
        .count() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evicted_tag_metadata_never_resurrects_invalidated_entries() {
    // Random eviction: tag keys go while entries that carry them stay.
    let server = RedisServer::start(RedisOptions::default().maxmemory("2mb", "allkeys-random"));
    let c = cache(settings(&server.url(), "evict")).await;
    let db = Db::default();
    let n = 300;
    let read = |op: &'static str, id: u64| {
        let (c, db) = (c.clone(), db.clone());
        async move {
            c.read(op, &json!({ "user_id": id }), move || async move {
                Ok::<_, std::io::Error>(db.get(&format!("u{id}")))
            })
            .await
            .unwrap()
        }
    };
    // Two entries per user share the tag `user:{id}`: profile and settings.
    for id in 0..n {
        read("get_user_profile", id).await;
        read("get_user_settings", id).await;
    }
    // Invalidate every user; then the profile reads make the tags again (new tokens), while
    // the settings entries, invalidated, stay in Redis.
    for id in 0..n {
        write_user(&c, &db, id).await;
        assert_eq!(read("get_user_profile", id).await, 1);
    }
    // Push the server past maxmemory so that it evicts keys, tag keys among them.
    // Just past it: enough evictions to lose tag keys, few enough to keep entries.
    let filler = "x".repeat(2000);
    for i in 0..1000 {
        c.set(&format!("filler:{i}"), &filler, None).await.unwrap();
    }
    assert!(server.info_stat("evicted_keys") > 0, "no evictions");
    let orphans = entries_without_their_tag(&server, "evict", "settings", n);
    println!("{orphans} invalidated settings entries outlived their tag key");
    assert!(
        orphans > 0,
        "the test must evict tag keys while entries survive"
    );
    // A tag made again (by any read) never validates an entry invalidated before.
    for id in 0..n {
        read("get_user_profile", id).await;
        assert_eq!(
            read("get_user_settings", id).await,
            1,
            "user {id} came back stale"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outages_fall_through_in_bounded_time_and_lose_no_invalidation() {
    let server = RedisServer::plain();
    let mut s = settings(&server.url(), "outage");
    s.redis.timeout = Duration::from_millis(100);
    s.redis.cooldown = Duration::from_millis(300);
    let c = cache(s).await;
    let db = Db::default();
    let loads = Arc::new(AtomicU64::new(0));
    for id in 0..20 {
        read_user(&c, &db, id, &loads).await;
    }

    // Under load, for a while: every read answers within the bound, with the loader's value.
    async fn load_for(c: &Cache, db: &Db, loads: &Arc<AtomicU64>, d: Duration) -> Duration {
        let mut worst = Duration::ZERO;
        let t_end = Instant::now() + d;
        let mut i = 0;
        while Instant::now() < t_end {
            let t0 = Instant::now();
            read_user(c, db, i % 20, loads).await;
            worst = worst.max(t0.elapsed());
            i += 1;
        }
        worst
    }

    for (what, down, up) in [
        (
            "frozen (SIGSTOP)",
            RedisServer::freeze as fn(&RedisServer),
            RedisServer::resume as fn(&RedisServer),
        ),
        ("stopped", RedisServer::stop, RedisServer::restart),
    ] {
        // Warm the cache, then take Redis away.
        for id in 0..20 {
            read_user(&c, &db, id, &loads).await;
        }
        down(&server);
        let worst = load_for(&c, &db, &loads, Duration::from_millis(800)).await;
        assert!(
            worst < Duration::from_millis(600),
            "{what}: a read took {worst:?}"
        );
        // Writes while Redis is away: the action runs, the invalidation is held.
        let mut written = Vec::new();
        for id in 0..5 {
            written.push(write_user(&c, &db, id).await);
        }
        load_for(&c, &db, &loads, Duration::from_millis(200)).await;
        up(&server);
        // After Redis returns, no read serves what those writes invalidated.
        let t_end = Instant::now() + Duration::from_secs(2);
        while Instant::now() < t_end {
            for (id, w) in written.iter().enumerate() {
                let v = read_user(&c, &db, id as u64, &loads).await;
                assert!(v >= *w, "{what}: user {id} read {v} after write {w}");
            }
        }
        // And the cache is back in service: hits again.
        let before = loads.load(Ordering::Relaxed);
        read_user(&c, &db, 7, &loads).await;
        read_user(&c, &db, 7, &loads).await;
        assert!(
            loads.load(Ordering::Relaxed) - before <= 1,
            "{what}: not caching again"
        );
    }
}

#[tokio::test]
async fn bad_connections_are_named_without_secrets() {
    async fn err(s: Settings) -> String {
        match Cache::builder().settings(s).build().await {
            Ok(_) => panic!("connected"),
            Err(e) => e.to_string(),
        }
    }
    // Nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let e = err(settings(&format!("redis://127.0.0.1:{port}/0"), "x")).await;
    assert!(
        e.contains("cannot connect") && e.contains(&port.to_string()),
        "{e}"
    );

    let acl = RedisServer::start(RedisOptions::default().acl_user("app", "right-pass"));
    let e = err(settings(
        &format!("redis://app:wrong-pass@127.0.0.1:{}/0", acl.port()),
        "x",
    ))
    .await;
    assert!(e.contains("authentication failed"), "{e}");
    assert!(!e.contains("wrong-pass") && e.contains("app:***@"), "{e}");

    let tls = RedisServer::start(RedisOptions::default().tls());
    // Without the CA that signed the server's certificate.
    let e = err(settings(
        &format!("rediss://127.0.0.1:{}/0", tls.port()),
        "x",
    ))
    .await;
    assert!(e.contains("TLS handshake failed"), "{e}");
    // With it, it works; and mutual TLS with a client certificate too.
    let mut s = settings(&format!("rediss://127.0.0.1:{}/0", tls.port()), "x");
    s.redis.tls_ca_file = Some(tls.ca_cert().to_path_buf());
    s.redis.tls_client_cert = Some((
        tls.client_cert().to_path_buf(),
        tls.client_key().to_path_buf(),
    ));
    Cache::builder()
        .settings(s)
        .build()
        .await
        .unwrap()
        .ping()
        .await
        .unwrap();

    for (url, want) in [
        ("redis://a:1,,b:2", "empty host"),
        ("redis://a:1,b:x", "not a port number"),
        ("redis://127.0.0.1:7000,127.0.0.1:7001/2", "single database"),
    ] {
        let e = Cache::builder()
            .url(url)
            .settings(Settings::default())
            .build()
            .await
            .err()
            .unwrap();
        assert!(e.to_string().contains(want), "{url}: {e}");
    }
    let s = settings("redis://app:hunter2@127.0.0.1:1/0", "x");
    assert!(!format!("{s:?}").contains("hunter2"));
}
