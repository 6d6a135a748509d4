//! The engine's behaviour, end to end through the seed policy (a real compiled component):
//! every example of the modelled library's guide, freshness, the read/write race, stampede
//! control, early and sliding refresh, TTL 0, isolation, direct operations and bad input.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cachelet::{Args, Cache, Error, Settings, Ttl, TtlBucket, Value};
use cachelet_tests::{component, suite, Target};
use serde_json::{json, Value as Json};

/// A cache on the suite's backend with the seed policy, in a namespace of its own.
async fn seed_with(t: &Target, adjust: impl FnOnce(&mut Settings)) -> Cache {
    let mut settings = t.settings();
    adjust(&mut settings);
    Cache::builder()
        .settings(settings)
        .policy_file(component("seed-rust"))
        .build()
        .await
        .expect("the seed policy loads")
}

async fn seed(t: &Target) -> Cache {
    seed_with(t, |_| {}).await
}

/// A stand-in database: a version per record, and a count of loads per op.
#[derive(Clone, Default)]
struct Db {
    rows: Arc<Mutex<HashMap<String, u64>>>,
    loads: Arc<Mutex<HashMap<String, u64>>>,
}

impl Db {
    fn get(&self, row: &str) -> u64 {
        *self.rows.lock().unwrap().get(row).unwrap_or(&0)
    }
    fn bump(&self, row: &str) -> u64 {
        let mut rows = self.rows.lock().unwrap();
        let v = rows.entry(row.to_string()).or_insert(0);
        *v += 1;
        *v
    }
    fn loads(&self, op: &str) -> u64 {
        *self.loads.lock().unwrap().get(op).unwrap_or(&0)
    }
    /// Reads `row` through the cache as `op`.
    async fn read(&self, cache: &Cache, op: &str, args: Json, row: &str) -> u64 {
        let db = self.clone();
        let (op_name, row) = (op.to_string(), row.to_string());
        cache
            .read(op, &args, move || async move {
                *db.loads.lock().unwrap().entry(op_name).or_insert(0) += 1;
                Ok::<_, std::io::Error>(db.get(&row))
            })
            .await
            .unwrap()
    }
    /// Bumps `row` through the cache as write `op`.
    async fn write(&self, cache: &Cache, op: &str, args: Json, row: &str) -> u64 {
        let db = self.clone();
        cache
            .write(op, &args, || async move {
                Ok::<_, std::io::Error>(db.bump(row))
            })
            .await
            .unwrap()
    }
}

async fn rule(cache: &Cache, op: &str, args: Json) -> cachelet::ReadRule {
    cache.read_rule(op, &args, false).await.unwrap().unwrap()
}

async fn wrule(cache: &Cache, op: &str, args: Json) -> cachelet::WriteRule {
    cache
        .write_rule(op, &args, None, false)
        .await
        .unwrap()
        .unwrap()
}

pub async fn guide_read_examples_render_keys_tags_and_ttls(t: &Target) {
    let c = seed(t).await;
    let secs = Ttl::Seconds;
    let bucket = Ttl::Bucket;
    let cases: Vec<(&str, Json, &str, Vec<&str>, Ttl)> = vec![
        (
            "get_user",
            json!({"user_id": 42}),
            "user:42",
            vec!["user:42"],
            secs(300),
        ),
        (
            "get_org_user",
            json!({"org_id": 7, "user_id": 42}),
            "org:7:user:42",
            vec!["user:42", "org:7:users"],
            secs(600),
        ),
        (
            "get_user_card",
            json!({"user_id": 42}),
            "user:card:42",
            vec!["user:card:42"],
            bucket(TtlBucket::Default),
        ),
        (
            "get_rate_limit",
            json!({"ip": "10.0.0.1"}),
            "rate:10.0.0.1",
            vec!["rate:10.0.0.1"],
            bucket(TtlBucket::Short),
        ),
        (
            "get_config",
            json!({"key": "theme"}),
            "config:theme",
            vec!["config:theme"],
            bucket(TtlBucket::Long),
        ),
        (
            "get_user_profile",
            json!({"user_id": 42}),
            "user:profile:42",
            vec!["user:42"],
            secs(300),
        ),
        (
            "get_user_settings",
            json!({"user_id": 42}),
            "user:settings:42",
            vec!["user:42"],
            secs(600),
        ),
        (
            "get_user_profile_v2",
            json!({"user_id": 42}),
            "v2:user:42:profile",
            vec!["user:42", "profiles"],
            secs(300),
        ),
        (
            "get_search",
            json!({"q": "rust"}),
            "search:rust",
            vec!["search"],
            secs(120),
        ),
    ];
    for (op, args, key, tags, ttl) in cases {
        let host = rule(&c, op, args.clone()).await;
        assert_eq!(host.key, key, "{op} key");
        let mut got: Vec<&str> = host.tags.iter().map(String::as_str).collect();
        let mut want = tags.clone();
        got.sort();
        want.sort();
        assert_eq!(got, want, "{op} tags");
        assert_eq!(host.ttl, ttl, "{op} ttl");
        // The guest's own render agrees with the host's native one.
        let guest = c.read_rule(op, &args, true).await.unwrap().unwrap();
        assert_eq!(guest, host, "{op}: guest and host renders differ");
    }
    let p = rule(&c, "get_user_profile", json!({"user_id": 1})).await;
    assert!(p.lock, "the guide's stampede example locks");
    // Several params and a non-string argument.
    let k = rule(
        &c,
        "get_user_with_options",
        json!({"user_id": 1, "include_deleted": false}),
    )
    .await;
    assert_eq!(k.key, "user:1:opts:false");
}

pub async fn guide_write_examples_name_their_tags(t: &Target) {
    let c = seed(t).await;
    let cases: Vec<(&str, Json, Vec<&str>)> = vec![
        (
            "update_user",
            json!({"user_id": 1, "data": {"a": 1}}),
            vec!["user:1"],
        ),
        (
            "update_user_org",
            json!({"user_id": 1, "org_id": 2}),
            vec!["user:1", "org:2:users"],
        ),
        (
            "remove_user_from_org",
            json!({"user_id": 1, "org_id": 2}),
            vec!["user:1", "org:2:members"],
        ),
        (
            "update_user_dynamic",
            json!({"user_id": 1}),
            vec!["user:1", "user:1:profile"],
        ),
        ("update_user_entity", json!({"user_id": 1}), vec!["user:1"]),
    ];
    for (op, args, tags) in cases {
        let w = wrule(&c, op, args.clone()).await;
        assert_eq!(w.invalidate, tags, "{op}");
        let g = c.write_rule(op, &args, None, true).await.unwrap().unwrap();
        assert_eq!(g, w, "{op}: guest and host renders differ");
    }
    let w = wrule(&c, "update_user_entity", json!({"user_id": 3})).await;
    assert_eq!(w.recache_concurrency, Some(3));
    let ops: Vec<&str> = w.recache.iter().map(|r| r.op.as_str()).collect();
    assert_eq!(ops, ["get_user_profile", "get_user_settings"]);
}

pub async fn a_read_misses_then_hits_and_a_write_makes_it_fresh(t: &Target) {
    let c = seed(t).await;
    let db = Db::default();
    for (read, rargs, write, wargs) in [
        (
            "get_user",
            json!({"user_id": 1}),
            "update_user",
            json!({"user_id": 1}),
        ),
        (
            "get_org_user",
            json!({"org_id": 2, "user_id": 1}),
            "update_user_org",
            json!({"org_id": 2, "user_id": 1}),
        ),
        (
            "get_org_user",
            json!({"org_id": 2, "user_id": 1}),
            "update_user_dynamic",
            json!({"user_id": 1}),
        ),
        ("get_user_card", json!({"user_id": 1}), "none", json!({})),
        (
            "get_user_profile",
            json!({"user_id": 1}),
            "update_user_entity",
            json!({"user_id": 1}),
        ),
        (
            "get_user_settings",
            json!({"user_id": 1}),
            "update_user",
            json!({"user_id": 1}),
        ),
        (
            "get_user_profile_v2",
            json!({"user_id": 1}),
            "update_user_entity",
            json!({"user_id": 1}),
        ),
        ("get_search", json!({"q": "x"}), "update_search", json!({})),
    ] {
        let v1 = db.read(&c, read, rargs.clone(), "row").await;
        let loads = db.loads(read);
        let v2 = db.read(&c, read, rargs.clone(), "row").await;
        assert_eq!(v1, v2);
        assert_eq!(db.loads(read), loads, "{read}: the second read is a hit");
        if write == "none" {
            continue;
        }
        let written = db.write(&c, write, wargs, "row").await;
        let v3 = db.read(&c, read, rargs.clone(), "row").await;
        assert_eq!(v3, written, "{read} after {write}: must be fresh");
    }
}

pub async fn a_resource_write_invalidates_every_entry_of_the_entity_only(t: &Target) {
    let c = seed(t).await;
    let db = Db::default();
    let reads = [
        "get_user_profile",
        "get_user_settings",
        "get_user_profile_v2",
    ];
    for uid in [1, 12] {
        for op in reads {
            db.read(&c, op, json!({"user_id": uid}), &format!("u{uid}"))
                .await;
        }
    }
    let v = db
        .write(&c, "update_user_entity", json!({"user_id": 1}), "u1")
        .await;
    for op in reads {
        assert_eq!(
            db.read(&c, op, json!({"user_id": 1}), "u1").await,
            v,
            "{op} user 1"
        );
        let loads = db.loads(op);
        db.read(&c, op, json!({"user_id": 12}), "u12").await;
        assert_eq!(db.loads(op), loads, "{op}: user 12 must stay cached");
    }
}

pub async fn recache_warms_reads_with_include_rename_and_extra(t: &Target) {
    let c = seed(t).await;
    let seen: Arc<Mutex<Vec<(String, Json)>>> = Arc::default();
    for op in cachelet_tests::RECACHED_READS {
        let seen = seen.clone();
        c.register_loader(op, move |args: Json| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push((op.to_string(), args.clone()));
                Ok::<_, std::io::Error>(json!({"warm": op, "args": args}))
            }
        });
    }
    type Warmed = Vec<(&'static str, Json)>;
    let cases: Vec<(&str, Json, Warmed)> = vec![
        (
            "update_user",
            json!({"user_id": 5, "data": "x"}),
            vec![("get_user", json!({"user_id": 5}))],
        ),
        (
            "move_org_user",
            json!({"org_id": 2, "id": 5}),
            vec![("get_org_user", json!({"org_id": 2, "user_id": 5}))],
        ),
        (
            "update_user_options",
            json!({"user_id": 5, "data": "x"}),
            vec![(
                "get_user_with_options",
                json!({"user_id": 5, "include_deleted": false}),
            )],
        ),
        (
            "update_user_details",
            json!({"user_id": 5, "data": "x"}),
            vec![("get_user_details", json!({"user_id": 5, "expand": true}))],
        ),
        (
            "update_user_entity",
            json!({"user_id": 5}),
            vec![
                ("get_user_profile", json!({"user_id": 5})),
                ("get_user_settings", json!({"user_id": 5})),
            ],
        ),
    ];
    for (write, args, mut want) in cases {
        seen.lock().unwrap().clear();
        c.write(write, &args, || async { Ok::<_, std::io::Error>(()) })
            .await
            .unwrap();
        let mut got = seen.lock().unwrap().clone();
        got.sort_by(|a, b| a.0.cmp(&b.0));
        want.sort_by(|a, b| a.0.cmp(b.0));
        let got: Vec<(&str, Json)> = got.iter().map(|(o, a)| (o.as_str(), a.clone())).collect();
        assert_eq!(got, want, "{write}");
        // The warmed reads are hits now: a loader that must not run.
        for (op, rargs) in want {
            let v: Json = c
                .read(op, &rargs, || async {
                    Err::<Json, _>(String::from("the recache should have warmed this"))
                })
                .await
                .unwrap();
            assert_eq!(v["warm"], op);
        }
    }
}

pub async fn no_stale_read_after_a_write_returns_under_10000_interleavings(t: &Target) {
    let c = seed(t).await;
    let db = Db::default();
    let stale = Arc::new(AtomicU64::new(0));
    let rounds = 10_000u64;
    let keys = 50u64;
    let mut tasks = Vec::new();
    for k in 0..keys {
        let (c, db, stale) = (c.clone(), db.clone(), stale.clone());
        tasks.push(tokio::spawn(async move {
            let row = format!("race{k}");
            for i in 0..rounds / keys {
                // A slow reader: reads the row, then takes a while before its value lands.
                let reader = {
                    let (c, db, row) = (c.clone(), db.clone(), row.clone());
                    tokio::spawn(async move {
                        let db2 = db.clone();
                        c.read("get_user", &json!({"user_id": k}), move || async move {
                            let v = db2.get(&row);
                            for _ in 0..(i % 4) {
                                tokio::task::yield_now().await;
                            }
                            Ok::<_, std::io::Error>(v)
                        })
                        .await
                        .unwrap()
                    })
                };
                if i % 3 == 0 {
                    tokio::task::yield_now().await;
                }
                let written = db
                    .write(&c, "update_user", json!({"user_id": k}), &row)
                    .await;
                // After the write returned, no read may return an older value.
                let v = db.read(&c, "get_user", json!({"user_id": k}), &row).await;
                if v < written {
                    stale.fetch_add(1, Ordering::Relaxed);
                }
                reader.await.unwrap();
                let v = db.read(&c, "get_user", json!({"user_id": k}), &row).await;
                if v < written {
                    stale.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        stale.load(Ordering::Relaxed),
        0,
        "stale reads after a write returned"
    );
    assert_eq!(db.get("race0"), rounds / keys);
}

pub async fn a_hundred_concurrent_cold_reads_with_lock_load_once(t: &Target) {
    let c = seed(t).await;
    let loads = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let (c, loads) = (c.clone(), loads.clone());
        tasks.push(tokio::spawn(async move {
            c.read(
                "get_user_profile",
                &json!({"user_id": 99}),
                move || async move {
                    loads.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok::<_, std::io::Error>("profile 99".to_string())
                },
            )
            .await
            .unwrap()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), "profile 99");
    }
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    assert_eq!(c.stats().coalesced, 99);
}

pub async fn a_lock_waiter_never_takes_a_load_that_a_write_invalidated(t: &Target) {
    let c = seed(t).await;
    let db = Db::default();
    // The leader loads the old row slowly; a write lands meanwhile; a reader arriving after
    // the write must not be handed the leader's old value.
    let (loaded, has_loaded) = tokio::sync::oneshot::channel();
    let leader = {
        let (c, db) = (c.clone(), db.clone());
        tokio::spawn(async move {
            c.read(
                "get_user_profile",
                &json!({"user_id": 5}),
                move || async move {
                    let v = db.get("p5");
                    let _ = loaded.send(());
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Ok::<_, std::io::Error>(v)
                },
            )
            .await
            .unwrap()
        })
    };
    has_loaded.await.unwrap();
    let written = db
        .write(&c, "update_user_entity", json!({"user_id": 5}), "p5")
        .await;
    let after = db
        .read(&c, "get_user_profile", json!({"user_id": 5}), "p5")
        .await;
    assert_eq!(after, written);
    assert_eq!(
        leader.await.unwrap(),
        0,
        "the leader's caller gets what it loaded"
    );
    assert_eq!(
        db.read(&c, "get_user_profile", json!({"user_id": 5}), "p5")
            .await,
        written
    );
}

pub async fn early_ttl_refreshes_once_in_the_background(t: &Target) {
    let c = seed(t).await;
    let r = rule(&c, "get_ticker", json!({"symbol": "ACME"})).await;
    let early = Duration::from_secs(r.early_ttl.expect("get_ticker has an early ttl").into());
    let db = Db::default();
    db.read(&c, "get_ticker", json!({"symbol": "ACME"}), "acme")
        .await;
    db.bump("acme");
    tokio::time::sleep(early + Duration::from_millis(200)).await;
    // Inside the early window: a hit returns the cached value at once and starts one refresh;
    // the hits around it return the cached value or, once the refresh landed, the new one.
    assert_eq!(
        db.read(&c, "get_ticker", json!({"symbol": "ACME"}), "acme")
            .await,
        0
    );
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (c, db) = (c.clone(), db.clone());
        tasks.push(tokio::spawn(async move {
            db.read(&c, "get_ticker", json!({"symbol": "ACME"}), "acme")
                .await
        }));
    }
    for t in tasks {
        assert!(t.await.unwrap() <= 1);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(db.loads("get_ticker"), 2, "exactly one background refresh");
    assert_eq!(c.stats().early_refreshes, 1);
    assert_eq!(
        db.read(&c, "get_ticker", json!({"symbol": "ACME"}), "acme")
            .await,
        1
    );
}

pub async fn refresh_slides_the_ttl_and_buckets_follow_the_settings(t: &Target) {
    let env = Settings::from_lookup(|k| (k == "CACHE_TTL_SHORT").then(|| "2".to_string())).unwrap();
    let c = seed_with(t, |s| s.ttl = env.ttl).await;
    let db = Db::default();
    // get_session: short bucket (2 s here), sliding.
    db.read(&c, "get_session", json!({"sid": "s1"}), "s").await;
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(900)).await;
        db.read(&c, "get_session", json!({"sid": "s1"}), "s").await;
    }
    assert_eq!(
        db.loads("get_session"),
        1,
        "hits kept the session alive past its 2 s TTL"
    );
    // get_rate_limit: short bucket, not sliding: gone after 2 s whatever the hits.
    db.read(&c, "get_rate_limit", json!({"ip": "1.2.3.4"}), "r")
        .await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    db.read(&c, "get_rate_limit", json!({"ip": "1.2.3.4"}), "r")
        .await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    db.read(&c, "get_rate_limit", json!({"ip": "1.2.3.4"}), "r")
        .await;
    assert_eq!(
        db.loads("get_rate_limit"),
        2,
        "the short bucket expired after 2 s"
    );
}

pub async fn ttl_zero_and_a_none_rule_do_not_cache(t: &Target) {
    let c = seed(t).await;
    let db = Db::default();
    db.read(&c, "get_uncached", json!({"id": 1}), "x").await;
    db.read(&c, "get_uncached", json!({"id": 1}), "x").await;
    assert_eq!(db.loads("get_uncached"), 2);
    assert!(c
        .read_rule("get_search", &json!({"q": ""}), false)
        .await
        .unwrap()
        .is_none());
    db.read(&c, "get_search", json!({"q": ""}), "x").await;
    db.read(&c, "get_search", json!({"q": ""}), "x").await;
    assert_eq!(db.loads("get_search"), 2);
}

pub async fn caches_with_another_prefix_or_version_never_share_entries(t: &Target) {
    let base = seed(t).await;
    let prefix = base.settings().prefix.clone();
    let other_prefix = seed_with(t, |s| s.prefix = format!("{prefix}x")).await;
    let other_version = seed_with(t, |s| {
        s.prefix = prefix.clone();
        s.version = "v2".into();
    })
    .await;
    let db = Db::default();
    db.read(&base, "get_user", json!({"user_id": 1}), "a").await;
    base.set("k", &"base", None).await.unwrap();
    for c in [&other_prefix, &other_version] {
        let before = db.loads("get_user");
        db.read(c, "get_user", json!({"user_id": 1}), "a").await;
        assert_eq!(db.loads("get_user"), before + 1);
        assert_eq!(c.get::<String>("k").await.unwrap(), None);
        assert_eq!(
            c.delete_match("*").await.unwrap(),
            1,
            "only its own get_user entry"
        );
    }
    assert_eq!(
        base.get::<String>("k").await.unwrap().as_deref(),
        Some("base")
    );
}

pub async fn direct_operations(t: &Target) {
    let c = seed(t).await;
    c.set("key", &"value", Some(Ttl::Seconds(300)))
        .await
        .unwrap();
    assert_eq!(
        c.get::<String>("key").await.unwrap().as_deref(),
        Some("value")
    );
    assert!(c.exists("key").await.unwrap());
    assert!(!c.set_if_absent("key", &"other", None).await.unwrap());
    assert!(c.set_if_absent("fresh", &"first", None).await.unwrap());
    assert_eq!(
        c.get_delete::<String>("key").await.unwrap().as_deref(),
        Some("value")
    );
    assert!(!c.exists("key").await.unwrap());
    assert!(!c.delete("key").await.unwrap());
    assert!(c.delete("fresh").await.unwrap());
    assert_eq!(c.incr("counter", 1).await.unwrap(), 1);
    assert_eq!(c.incr("counter", 5).await.unwrap(), 6);
    assert_eq!(c.incr("counter", -2).await.unwrap(), 4);
    c.set("text", &"abc", None).await.unwrap();
    assert!(c
        .incr("text", 1)
        .await
        .unwrap_err()
        .to_string()
        .contains("not an integer"));
    for k in [
        "user:1:profile",
        "user:2:profile",
        "user:1:settings",
        "user:12:profile",
    ] {
        c.set(k, &k, None).await.unwrap();
    }
    assert_eq!(c.delete_match("user:1:*").await.unwrap(), 2);
    assert_eq!(c.delete_match("user:*:profile").await.unwrap(), 2);
    assert!(!c.exists("user:12:profile").await.unwrap());
    c.set("zero", &1, Some(Ttl::Seconds(0))).await.unwrap();
    assert!(!c.exists("zero").await.unwrap(), "TTL 0 stores nothing");
    // Tags invalidate cached reads directly too.
    let db = Db::default();
    db.read(&c, "get_user", json!({"user_id": 3}), "u3").await;
    c.invalidate(&["user:3"]).await.unwrap();
    db.read(&c, "get_user", json!({"user_id": 3}), "u3").await;
    assert_eq!(db.loads("get_user"), 2);
    c.ping().await.unwrap();
}

pub async fn bad_input_is_named(t: &Target) {
    let c = seed(t).await;
    let e = c
        .read_rule("get_user", &json!({"usr_id": 1}), false)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::MissingArg { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("{user_id}") && msg.contains("usr_id"), "{msg}");
    // The guest's render of the same call names it too.
    let e = c
        .read_rule("get_user", &json!({"usr_id": 1}), true)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("user_id"), "{e}");

    let e = Cache::builder()
        .settings(Settings::default())
        .url("memcached://h:11211")
        .build()
        .await
        .err()
        .unwrap();
    assert!(
        e.to_string().contains("unsupported scheme \"memcached\""),
        "{e}"
    );
    let e = Settings::from_lookup(|k| (k == "CACHE_TTL_DEFAULT").then(|| "5m".to_string()))
        .unwrap_err();
    assert!(
        e.to_string().contains("CACHE_TTL_DEFAULT") && e.to_string().contains("5m"),
        "{e}"
    );
    let e = c
        .read_rule("update_user", &json!({"user_id": 1}), false)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("is a write, not a read"), "{e}");
    let e = c.read_rule("get_user", &5, false).await.unwrap_err();
    assert!(e.to_string().contains("struct or a map"), "{e}");
}

pub async fn policies_are_swapped_while_serving_and_a_bad_swap_changes_nothing(t: &Target) {
    let c = seed(t).await;
    let db = Db::default();
    db.read(&c, "get_user", json!({"user_id": 1}), "u").await;
    let bad = c
        .replace_policies([cachelet::PolicySource::Bytes {
            name: "junk".into(),
            bytes: vec![1, 2, 3],
        }])
        .await;
    assert!(bad.is_err());
    db.read(&c, "get_user", json!({"user_id": 1}), "u").await;
    assert_eq!(
        db.loads("get_user"),
        1,
        "still the old policy, still cached"
    );
    c.replace_policies([cachelet::PolicySource::file(component("faulty"))])
        .await
        .unwrap();
    db.read(&c, "get_user", json!({"user_id": 1}), "u").await;
    assert_eq!(
        db.loads("get_user"),
        2,
        "the new policy does not declare get_user: uncached"
    );
    assert_eq!(c.policies()[0].name, "faulty");
}

#[test]
fn args_from_structs_and_pairs_agree() {
    #[derive(serde::Serialize)]
    struct GetOrgUser {
        org_id: u32,
        user_id: u64,
    }
    let a = Args::from_serialize(&GetOrgUser {
        org_id: 1,
        user_id: 2,
    })
    .unwrap();
    assert_eq!(a, Args::new().with("org_id", 1).with("user_id", 2));
    assert_eq!(a.get("user_id"), Some(&Value::Int(2)));
}

/// Every test of the suite, handed to `suite!`.
macro_rules! on_every_backend {
    ($module:ident, $target:expr) => {
        suite!(
            $module,
            $target,
            [
                guide_read_examples_render_keys_tags_and_ttls,
                guide_write_examples_name_their_tags,
                a_read_misses_then_hits_and_a_write_makes_it_fresh,
                a_resource_write_invalidates_every_entry_of_the_entity_only,
                recache_warms_reads_with_include_rename_and_extra,
                no_stale_read_after_a_write_returns_under_10000_interleavings,
                a_hundred_concurrent_cold_reads_with_lock_load_once,
                a_lock_waiter_never_takes_a_load_that_a_write_invalidated,
                early_ttl_refreshes_once_in_the_background,
                refresh_slides_the_ttl_and_buckets_follow_the_settings,
                ttl_zero_and_a_none_rule_do_not_cache,
                caches_with_another_prefix_or_version_never_share_entries,
                direct_operations,
                bad_input_is_named,
                policies_are_swapped_while_serving_and_a_bad_swap_changes_nothing
            ]
        );
    };
}

on_every_backend!(memory, Target::memory());
on_every_backend!(redis, Target::redis());
on_every_backend!(redis_acl, Target::redis_acl());
on_every_backend!(redis_tls, Target::redis_tls());
on_every_backend!(redis_cluster, Target::redis_cluster());
