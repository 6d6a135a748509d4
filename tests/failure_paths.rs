//! The engine's promises on the failure paths, on every backend: a write cancelled after its
//! action, a namespace flush of untagged entries, engine keys out of reach of callers and
//! guests, application errors that are not outages, early refresh on Redis, single flight with
//! the backend down, bounded locks, oversized rules. Redis-only behaviour (outages, held
//! invalidations, journal, two processes) is in `held.rs`.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use cachelet::{Cache, Settings};
use cachelet_tests::{component, suite, Target};
use serde_json::{json, Value as Json};

async fn rules_with(t: &Target, adjust: impl FnOnce(&mut Settings)) -> Cache {
    let mut settings = t.settings();
    adjust(&mut settings);
    Cache::builder()
        .settings(settings)
        .policy_file(component("engine-rules"))
        .build()
        .await
        .expect("the engine-rules policy loads")
}

async fn rules(t: &Target) -> Cache {
    rules_with(t, |_| {}).await
}

/// A loader that counts its calls and returns `value`.
fn counted(
    loads: &Arc<AtomicU64>,
    value: Json,
) -> impl FnOnce() -> std::future::Ready<Result<Json, std::io::Error>> + Send + 'static {
    let loads = loads.clone();
    move || {
        loads.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok(value))
    }
}

async fn read(c: &Cache, op: &str, args: Json, loads: &Arc<AtomicU64>, value: Json) -> Json {
    c.read(op, &args, counted(loads, value)).await.unwrap()
}

/// Polls `fut` until it finishes or, once `committed` is set, until it next waits: then drops
/// it there, as a timeout or a client disconnect would. Returns whether it was dropped.
async fn drop_once_committed<F: Future>(fut: F, committed: &AtomicBool) -> bool {
    let mut fut = pin!(fut);
    loop {
        let polled = std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await;
        match polled {
            Poll::Ready(_) => return false,
            Poll::Pending if committed.load(Ordering::SeqCst) => return true,
            Poll::Pending => tokio::time::sleep(Duration::from_millis(1)).await,
        }
    }
}

// ---- 1. a write whose action succeeded always invalidates ----

pub async fn a_write_dropped_after_its_action_still_invalidates(t: &Target) {
    let c = rules(t).await;
    let loads = Arc::new(AtomicU64::new(0));
    let mut dropped = 0;
    let detached_before = c.stats().detached_writes;
    for round in 0..20u64 {
        let args = json!({ "id": round });
        assert_eq!(
            read(&c, "get_user", args.clone(), &loads, json!(0)).await,
            0
        );
        assert_eq!(
            read(&c, "get_user", args.clone(), &loads, json!(9)).await,
            0,
            "a hit"
        );
        let committed = AtomicBool::new(false);
        let write = c.write("touch_user", &args, || async {
            committed.store(true, Ordering::SeqCst);
            Ok::<_, String>(())
        });
        if drop_once_committed(write, &committed).await {
            dropped += 1;
        }
        // The caller gave up after the action committed: the next read is fresh all the same.
        assert_eq!(
            read(&c, "get_user", args, &loads, json!(round + 1)).await,
            round + 1,
            "round {round}: the dropped write's invalidation was lost"
        );
    }
    println!("{dropped} of 20 writes were dropped while invalidating");
    assert_eq!(
        c.stats().detached_writes - detached_before,
        dropped,
        "each write dropped after its action finished in the background"
    );
    // On Redis an invalidation waits for the server, so writes are dropped there; the memory
    // backend invalidates without waiting, and nothing can be dropped after the action.
    if !matches!(t.settings().url, cachelet::BackendUrl::Memory) {
        assert!(
            dropped > 0,
            "no write was dropped after its action: nothing was shown"
        );
    }
}

// ---- 3. a namespace flush covers untagged entries ----

pub async fn a_namespace_flush_covers_untagged_entries(t: &Target) {
    let c = rules(t).await;
    let loads = Arc::new(AtomicU64::new(0));
    let args = json!({ "id": 1 });
    read(&c, "get_untagged", args.clone(), &loads, json!("old")).await;
    assert_eq!(
        read(&c, "get_untagged", args.clone(), &loads, json!("x")).await,
        "old"
    );
    // A write whose rule cannot be computed (its tag needs `id`) flushes the namespace.
    c.write("touch_user", &json!({ "other": 1 }), || async {
        Ok::<_, String>(())
    })
    .await
    .unwrap();
    assert_eq!(c.stats().namespace_flushes, 1);
    assert_eq!(
        read(&c, "get_untagged", args, &loads, json!("new")).await,
        "new",
        "an untagged entry survived the flush"
    );
}

// ---- 7. the engine's own keys are out of reach ----

/// Names a caller or a guest might use to reach the engine's bookkeeping (each once).
fn engine_names(key: &str) -> Vec<String> {
    let mut names: Vec<String> = ["~tag:", "~lock:", "~early:", "~epoch", "~", ":~tag:"]
        .iter()
        .map(|p| format!("{p}{key}"))
        .chain(["~tag:user:1", "~epoch", "~lock:", "/../~tag:user:1"].map(String::from))
        .collect();
    names.sort();
    names.dedup();
    names
}

pub async fn direct_operations_cannot_reach_engine_keys(t: &Target) {
    let c = rules(t).await;
    let loads = Arc::new(AtomicU64::new(0));
    read(&c, "get_user", json!({"id": 1}), &loads, json!("u1")).await;
    read(&c, "get_locked", json!({"id": 1}), &loads, json!("l1")).await;
    for name in engine_names("user:1") {
        assert_eq!(
            c.get::<Json>(&name).await.unwrap(),
            None,
            "{name}: a direct get read engine state"
        );
        assert!(!c.exists(&name).await.unwrap(), "{name}");
    }
    // A caller cannot hold a key's lock: a locked read of a cold key loads at once.
    for name in engine_names("locked:2") {
        c.set(&name, &"held", None).await.unwrap();
    }
    let t0 = Instant::now();
    read(&c, "get_locked", json!({"id": 2}), &loads, json!("l2")).await;
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "a direct set held the read's lock for {:?}",
        t0.elapsed()
    );
    // Deleting what looks like a tag does not invalidate, and writing one does not forge.
    for name in engine_names("user:1") {
        c.delete(&name).await.unwrap();
    }
    assert_eq!(
        read(&c, "get_user", json!({"id": 1}), &loads, json!("x")).await,
        "u1"
    );
}

pub async fn a_direct_set_never_becomes_a_fresh_read_entry(t: &Target) {
    let c = rules(t).await;
    let loads = Arc::new(AtomicU64::new(0));
    c.set("user:5", &"forged", None).await.unwrap();
    assert_eq!(
        read(&c, "get_user", json!({"id": 5}), &loads, json!("db")).await,
        "db",
        "the read path served a directly set value"
    );
    // Filled by the read path, then overwritten directly: the read path loads again.
    assert_eq!(
        read(&c, "get_user", json!({"id": 5}), &loads, json!("x")).await,
        "db"
    );
    c.set("user:5", &"forged", None).await.unwrap();
    assert_eq!(
        read(&c, "get_user", json!({"id": 5}), &loads, json!("db2")).await,
        "db2"
    );
}

pub async fn a_direct_get_of_a_read_entry_answers_alike_on_every_backend(t: &Target) {
    let c = rules(t).await;
    let loads = Arc::new(AtomicU64::new(0));
    read(&c, "get_user", json!({"id": 6}), &loads, json!("six")).await;
    assert_eq!(c.get::<Json>("user:6").await.unwrap(), Some(json!("six")));
    assert!(c.exists("user:6").await.unwrap());
    // Once invalidated, it is gone for direct reads too.
    c.write("touch_user", &json!({"id": 6}), || async {
        Ok::<_, String>(())
    })
    .await
    .unwrap();
    assert_eq!(c.get::<Json>("user:6").await.unwrap(), None);
    assert!(!c.exists("user:6").await.unwrap());
}

pub async fn a_rendered_read_key_cannot_reach_engine_keys(t: &Target) {
    let c = rules(t).await;
    let loads = Arc::new(AtomicU64::new(0));
    read(&c, "get_user", json!({"id": 1}), &loads, json!("u1")).await;
    // `get_key`'s key is its argument as given: with engine-looking names, its entries must
    // never clobber a tag (which would turn `get_user` into a miss or, worse, validate).
    for name in engine_names("user:1") {
        read(&c, "get_key", json!({ "k": name }), &loads, json!("k")).await;
    }
    let before = loads.load(Ordering::SeqCst);
    assert_eq!(
        read(&c, "get_user", json!({"id": 1}), &loads, json!("x")).await,
        "u1"
    );
    assert_eq!(loads.load(Ordering::SeqCst), before, "get_user missed");
}

pub async fn a_guest_store_reaches_only_its_namespace(t: &Target) {
    let c = rules(t).await;
    let loads = Arc::new(AtomicU64::new(0));
    read(&c, "get_user", json!({"id": 1}), &loads, json!("u1")).await;
    c.set("shared:k", &"direct", None).await.unwrap();
    // A guest sees what direct operations wrote, under the same relative key...
    let rule = c
        .read_rule("probe_store", &json!({"k": "shared:k"}), false)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rule.key, "probe:get=\"direct\":exists=true:set=true:incr=1");
    assert_eq!(
        c.get::<String>("shared:k").await.unwrap().unwrap(),
        "from-guest"
    );
    assert_eq!(c.get::<i64>("shared:k:n").await.unwrap(), Some(1));
    // ...and nothing of the engine's.
    for name in engine_names("user:1") {
        let rule = c
            .read_rule("probe_store", &json!({ "k": name }), false)
            .await
            .unwrap()
            .unwrap();
        assert!(
            rule.key.starts_with("probe:get=-:exists=false:"),
            "{name}: {}",
            rule.key
        );
    }
    assert_eq!(
        read(&c, "get_user", json!({"id": 1}), &loads, json!("x")).await,
        "u1",
        "the guest's writes disturbed an entry"
    );
    // A guest's invalidation is an invalidation.
    c.read_rule("guest_invalidate", &json!({"tag": "user:1"}), false)
        .await
        .unwrap();
    assert_eq!(
        read(&c, "get_user", json!({"id": 1}), &loads, json!("u1b")).await,
        "u1b"
    );
    // A guest with another prefix sees nothing of this one.
    let other = rules(t).await;
    let rule = other
        .read_rule("probe_store", &json!({"k": "shared:k"}), false)
        .await
        .unwrap()
        .unwrap();
    assert!(rule.key.starts_with("probe:get=-:"), "{}", rule.key);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_can_look_up_no_name_and_read_no_input() {
    let c = rules(&Target::memory()).await;
    let lookup = c
        .read_rule("probe_wasi", &json!({"what": "lookup"}), false)
        .await;
    match lookup {
        Ok(Some(r)) => assert!(r.key.starts_with("lookup:denied"), "{}", r.key),
        other => panic!("{other:?}"),
    }
    // Nothing to read on stdin: the guest gets end of input or a trap, never host data.
    match c
        .read_rule("probe_wasi", &json!({"what": "stdin"}), false)
        .await
    {
        Ok(Some(r)) => assert!(
            r.key == "stdin:empty" || r.key.starts_with("stdin:denied"),
            "{}",
            r.key
        ),
        Err(cachelet::Error::Guest { message, .. }) => {
            assert!(message.contains("would wait"), "{message}")
        }
        other => panic!("{other:?}"),
    }
}

// ---- 10, 11. single flight and bounded locks ----

pub async fn a_loader_slower_than_the_wait_bound_does_not_hold_waiters(t: &Target) {
    let c = rules_with(t, |s| s.lock_wait = Duration::from_millis(300)).await;
    let slow = tokio::spawn({
        let c = c.clone();
        async move {
            c.read("get_locked", &json!({"id": 9}), || async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok::<_, String>(json!("slow"))
            })
            .await
            .unwrap()
        }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let t0 = Instant::now();
    let loads = Arc::new(AtomicU64::new(0));
    let v = read(&c, "get_locked", json!({"id": 9}), &loads, json!("own")).await;
    assert_eq!(v, "own");
    assert!(
        t0.elapsed() < Duration::from_millis(1500),
        "the waiter waited {:?} for a stuck loader",
        t0.elapsed()
    );
    slow.abort();
}

pub async fn a_failed_load_is_shared_with_its_waiters(t: &Target) {
    let c = rules(t).await;
    let calls = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (c, calls) = (c.clone(), calls.clone());
        tasks.push(tokio::spawn(async move {
            c.read("get_locked", &json!({"id": 10}), move || async move {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(200)).await;
                Err::<Json, _>(std::io::Error::other("database down"))
            })
            .await
        }));
    }
    let t0 = Instant::now();
    for task in tasks {
        let e = task.await.unwrap().unwrap_err();
        assert!(e.to_string().contains("database down"), "{e}");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the waiters loaded again");
    assert!(
        t0.elapsed() < Duration::from_millis(1000),
        "{:?}",
        t0.elapsed()
    );
}

// ---- 13. a rule the envelope cannot record is refused ----

pub async fn a_read_with_more_tags_than_recordable_is_refused(t: &Target) {
    let c = rules(t).await;
    let loads = Arc::new(AtomicU64::new(0));
    for _ in 0..2 {
        read(
            &c,
            "get_tagged",
            json!({"id": 1, "n": 300}),
            &loads,
            json!(1),
        )
        .await;
    }
    assert_eq!(c.stats().policy_errors, 2, "{:?}", c.stats());
    // Within the bound (254 tags), it caches.
    for _ in 0..2 {
        read(
            &c,
            "get_tagged",
            json!({"id": 2, "n": 254}),
            &loads,
            json!(1),
        )
        .await;
    }
    assert_eq!(c.stats().hits, 1, "{:?}", c.stats());
}

// ---- 4. a tag key outlives every entry it fences ----

pub async fn a_tag_key_outlives_every_fill_and_every_slide(t: &Target) {
    let c = rules_with(t, |s| s.redis.tag_margin = Duration::from_millis(800)).await;
    let loads = Arc::new(AtomicU64::new(0));
    let (a, b) = (json!({"id": 1}), json!({"id": 2}));
    // get_short lives 3 s; its tags (`short:{id}` and the shared `shorts`) 0.8 s more.
    read(&c, "get_short", a.clone(), &loads, json!("a1")).await;
    tokio::time::sleep(Duration::from_millis(3200)).await;
    // The entry expired; the tag keys still live: the second fill finds them...
    read(&c, "get_short", a.clone(), &loads, json!("a2")).await;
    read(&c, "get_short", b.clone(), &loads, json!("b1")).await;
    assert_eq!(loads.load(Ordering::SeqCst), 3);
    // ...and must extend them: past the first fill's margin, the second fill still hits.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(read(&c, "get_short", a, &loads, json!("x")).await, "a2");
    assert_eq!(read(&c, "get_short", b, &loads, json!("x")).await, "b1");
    assert_eq!(
        loads.load(Ordering::SeqCst),
        3,
        "a fill missed before its TTL"
    );

    // A sliding entry: every hit gives it 3 s again, and its tag its margin past that.
    let s = json!({"id": 3});
    read(&c, "get_slide", s.clone(), &loads, json!("s1")).await;
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert_eq!(
            read(&c, "get_slide", s.clone(), &loads, json!("x")).await,
            "s1",
            "a sliding entry missed while it was being read"
        );
    }
    assert_eq!(loads.load(Ordering::SeqCst), 4);
}

// ---- 9. early refresh once per fill ----

pub async fn early_refresh_happens_once_per_fill_and_never_misses(t: &Target) {
    let c = rules(t).await;
    let loads = Arc::new(AtomicU64::new(0));
    let args = json!({"id": 1});
    // get_early lives 4 s and is refreshed in the background once it is 1 s old.
    let t0 = Instant::now();
    let mut last = 0;
    while t0.elapsed() < Duration::from_millis(7000) {
        let n = loads.load(Ordering::SeqCst);
        let v = read(&c, "get_early", args.clone(), &loads, json!(n)).await;
        assert!(v.as_u64().unwrap() >= last, "went back to {v} after {last}");
        last = v.as_u64().unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let st = c.stats();
    assert_eq!(
        st.misses, 1,
        "a read waited for a load after the first: {st:?}"
    );
    // About one refresh a second: once per fill, not once per lock TTL (10 s).
    assert!(
        (4..=9).contains(&st.early_refreshes),
        "refreshes: {}",
        st.early_refreshes
    );
}

macro_rules! on_every_backend {
    ($module:ident, $target:expr) => {
        suite!(
            $module,
            $target,
            [
                a_write_dropped_after_its_action_still_invalidates,
                a_namespace_flush_covers_untagged_entries,
                direct_operations_cannot_reach_engine_keys,
                a_direct_set_never_becomes_a_fresh_read_entry,
                a_direct_get_of_a_read_entry_answers_alike_on_every_backend,
                a_rendered_read_key_cannot_reach_engine_keys,
                a_guest_store_reaches_only_its_namespace,
                a_loader_slower_than_the_wait_bound_does_not_hold_waiters,
                a_failed_load_is_shared_with_its_waiters,
                a_read_with_more_tags_than_recordable_is_refused,
                a_tag_key_outlives_every_fill_and_every_slide,
                early_refresh_happens_once_per_fill_and_never_misses,
            ]
        );
    };
}

on_every_backend!(memory, Target::memory());
on_every_backend!(redis, Target::redis());
on_every_backend!(redis_cluster, Target::redis_cluster());
