//! The policy lifecycle on real files: a watched directory (`CacheBuilder::policy_dir`) whose
//! components are swapped under load, broken, written slowly, removed and brought back;
//! quarantine of a policy that keeps faulting; limits on what a guest returns.
//!
//! The `lifecycle-*` guests declare the same ops (`lc_get`, `lc_put`) computed by the guest,
//! and name the version that answered in every rule (key `lc:{id}:A`, tag `ver:A`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cachelet::{Cache, Error, PolicyLimits, PushOptions, RequestedLimits};
use cachelet_tests::{compile_cache, component, Captured, Target};
use serde_json::json;

/// A fresh, empty directory for one test.
fn fresh_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cachelet-lc-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Puts `guest` at `dir/name` the way deployment tools do: a hidden temporary file, then an
/// atomic rename.
fn install(guest: &str, dir: &Path, name: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::copy(component(guest), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

async fn watching(dir: &Path) -> Cache {
    Cache::builder()
        .settings(Target::memory().settings())
        .compile_cache(compile_cache())
        .policy_dir(dir)
        .build()
        .await
        .expect("the cache builds")
}

/// Waits (up to `within`) until `ok` holds of the status; panics with the last status.
async fn until(
    cache: &Cache,
    within: Duration,
    what: &str,
    ok: impl Fn(&cachelet::PolicyStatus) -> bool,
) {
    let t0 = Instant::now();
    loop {
        let s = cache.policy_status();
        if ok(&s) {
            return;
        }
        assert!(
            t0.elapsed() < within,
            "{what}: not within {within:?}: {s:#?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The version serving `dir/name`, if one does.
fn version(s: &cachelet::PolicyStatus, path: &Path) -> Option<String> {
    s.file(path)?.serving.as_ref().map(|v| v.version.clone())
}

/// The version that computed the read rule of `lc_get` (from its key), checking that its tag
/// names the same one.
async fn read_version(cache: &Cache, id: u64) -> Result<String, Error> {
    let rule = cache
        .read_rule("lc_get", &json!({ "id": id }), false)
        .await?
        .expect("lc_get is cached");
    let v = rule.key.rsplit(':').next().unwrap().to_string();
    assert_eq!(rule.key, format!("lc:{id}:{v}"));
    assert_eq!(
        rule.tags,
        [format!("ver:{v}"), format!("lc:{id}")],
        "one version's rule"
    );
    Ok(v)
}

async fn write_version(cache: &Cache, id: u64) -> Result<String, Error> {
    let rule = cache
        .write_rule("lc_put", &json!({ "id": id }), None, false)
        .await?
        .expect("lc_put invalidates");
    let v = rule.invalidate[1].strip_prefix("ver:").unwrap().to_string();
    assert_eq!(rule.invalidate, [format!("lc:{id}"), format!("ver:{v}")]);
    Ok(v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_swap_under_load_fails_no_call_and_each_rule_comes_from_one_version() {
    let dir = fresh_dir("swap");
    let file = dir.join("lc.wasm");
    // Both versions compiled once into the compile cache: the swaps below load them from it.
    component("lifecycle-b");
    install("lifecycle-a", &dir, "lc.wasm");
    let cache = watching(&dir).await;
    assert_eq!(version(&cache.policy_status(), &file).as_deref(), Some("A"));

    let stop = Arc::new(AtomicBool::new(false));
    let (calls, a_seen, b_seen) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let mut tasks = Vec::new();
    for t in 0..6u64 {
        let (cache, stop, calls, a_seen, b_seen) = (
            cache.clone(),
            stop.clone(),
            calls.clone(),
            a_seen.clone(),
            b_seen.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let id = t * 1_000_000 + i % 50;
                let versions = [
                    read_version(&cache, id).await.expect("no read rule fails"),
                    write_version(&cache, id)
                        .await
                        .expect("no write rule fails"),
                ];
                for v in versions {
                    match v.as_str() {
                        "A" => a_seen.fetch_add(1, Ordering::Relaxed),
                        "B" => b_seen.fetch_add(1, Ordering::Relaxed),
                        other => panic!("a rule of no version: {other}"),
                    };
                }
                let value: u64 = cache
                    .read("lc_get", &json!({ "id": id }), move || async move {
                        Ok::<_, std::io::Error>(id)
                    })
                    .await
                    .expect("no read fails");
                assert_eq!(value, id);
                cache
                    .write("lc_put", &json!({ "id": id }), || async {
                        Ok::<_, std::io::Error>(())
                    })
                    .await
                    .expect("no write fails");
                calls.fetch_add(4, Ordering::Relaxed);
                // On the memory backend nothing here waits: give the watcher its turn, as a
                // server's I/O would.
                tokio::task::yield_now().await;
            }
        }));
    }
    for swap in 0..20u32 {
        let next = if swap.is_multiple_of(2) { "B" } else { "A" };
        install(
            &format!("lifecycle-{}", next.to_lowercase()),
            &dir,
            "lc.wasm",
        );
        until(&cache, Duration::from_secs(10), "the swap", |s| {
            version(s, &file).as_deref() == Some(next)
        })
        .await;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("no caller failed");
    }
    let stats = cache.stats();
    let (a, b) = (
        a_seen.load(Ordering::Relaxed),
        b_seen.load(Ordering::Relaxed),
    );
    eprintln!(
        "{} calls during 20 swaps; rules of A: {a}, of B: {b}; {stats:?}",
        calls.load(Ordering::Relaxed)
    );
    assert!(a > 0 && b > 0, "both versions served");
    assert_eq!(
        (
            stats.policy_errors,
            stats.guest_faults,
            stats.guest_busy,
            stats.namespace_flushes
        ),
        (0, 0, 0, 0),
        "no call failed: {stats:?}"
    );
    let status = cache.policy_status();
    assert!(status.file(&file).unwrap().failure.is_none(), "{status:#?}");
    // The replaced versions are released once their last calls are done.
    until(
        &cache,
        Duration::from_secs(5),
        "old versions released",
        |s| s.retired_alive == 0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_components_leave_the_serving_version_and_a_slow_copy_loads_when_whole() {
    let dir = fresh_dir("broken");
    let file = dir.join("lc.wasm");
    install("lifecycle-a", &dir, "lc.wasm");
    let cache = watching(&dir).await;
    let serving_a = cache
        .policy_status()
        .file(&file)
        .unwrap()
        .serving
        .clone()
        .unwrap();
    assert_eq!(serving_a.version, "A");

    let good_b = std::fs::read(component("lifecycle-b")).unwrap();
    let future = std::fs::read(component("future-world")).unwrap();
    for (what, bytes, names) in [
        (
            "garbage bytes",
            b"\x7fELF garbage, not a component".to_vec(),
            "no `\\0asm` header",
        ),
        ("another world's version", future, "rebuild the policy"),
        (
            "a truncated copy",
            good_b[..good_b.len() / 2].to_vec(),
            "not a valid WebAssembly component",
        ),
    ] {
        let before = cache.policy_status().generation;
        std::fs::write(&file, &bytes).unwrap();
        until(&cache, Duration::from_secs(10), what, |s| {
            s.generation > before
        })
        .await;
        let status = cache.policy_status();
        let state = status.file(&file).unwrap();
        let failure = state
            .failure
            .as_ref()
            .unwrap_or_else(|| panic!("{what}: {status:#?}"));
        assert!(
            failure.message.contains("lc.wasm") && failure.message.contains(names),
            "{what}: the error names the file and the problem: {}",
            failure.message
        );
        let serving = state.serving.as_ref().unwrap();
        assert_eq!(
            serving.hash, serving_a.hash,
            "{what}: the previous version serves"
        );
        assert_eq!(read_version(&cache, 1).await.unwrap(), "A", "{what}");
    }

    // Editors' and tools' temporary files are never looked at.
    let before = cache.policy_status().generation;
    for name in [
        ".lc.wasm.swp",
        "lc.wasm~",
        "4913",
        "#lc.wasm#",
        "lc.wasm.part",
        ".lc.wasm.tmp",
    ] {
        std::fs::write(dir.join(name), b"half a file").unwrap();
    }
    // A good component written slowly, in ten chunks 150 ms apart: never taken halfway.
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&file).unwrap();
        for chunk in good_b.chunks(good_b.len().div_ceil(10)) {
            f.write_all(chunk).unwrap();
            f.flush().unwrap();
            tokio::time::sleep(Duration::from_millis(150)).await;
            let s = cache.policy_status();
            assert_eq!(
                s.generation, before,
                "nothing taken while the copy is written: {s:#?}"
            );
        }
    }
    until(&cache, Duration::from_secs(10), "the whole copy", |s| {
        version(s, &file).as_deref() == Some("B")
    })
    .await;
    let status = cache.policy_status();
    assert!(status.file(&file).unwrap().failure.is_none(), "{status:#?}");
    assert_eq!(
        status.policies.len(),
        1,
        "temporary files are no policies: {status:#?}"
    );
    assert_eq!(read_version(&cache, 1).await.unwrap(), "B");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_policy_file_leaves_its_ops_uncached_until_it_returns() {
    let dir = fresh_dir("removal");
    let file = dir.join("lc.wasm");
    install("lifecycle-a", &dir, "lc.wasm");
    let cache = watching(&dir).await;
    let loads = Arc::new(AtomicU64::new(0));
    let read = |cache: Cache, loads: Arc<AtomicU64>| async move {
        let v: String = cache
            .read("lc_get", &json!({"id": 1}), move || async move {
                loads.fetch_add(1, Ordering::SeqCst);
                Ok::<_, std::io::Error>("value".to_string())
            })
            .await
            .expect("reads never fail");
        assert_eq!(v, "value");
    };
    read(cache.clone(), loads.clone()).await;
    read(cache.clone(), loads.clone()).await;
    assert_eq!(
        loads.load(Ordering::SeqCst),
        1,
        "cached while the policy is there"
    );

    std::fs::remove_file(&file).unwrap();
    until(&cache, Duration::from_secs(5), "the removal", |s| {
        s.file(&file).is_none()
    })
    .await;
    assert!(matches!(
        cache.read_rule("lc_get", &json!({"id": 1}), false).await,
        Err(Error::UnknownOp(_))
    ));
    let before = cache.stats();
    read(cache.clone(), loads.clone()).await;
    read(cache.clone(), loads.clone()).await;
    cache
        .write("lc_put", &json!({"id": 1}), || async {
            Ok::<_, std::io::Error>(())
        })
        .await
        .expect("a write of an unknown op still runs");
    assert_eq!(loads.load(Ordering::SeqCst), 3, "uncached while it is gone");
    let after = cache.stats();
    assert_eq!(
        (after.policy_errors, after.namespace_flushes),
        (before.policy_errors, before.namespace_flushes),
        "cleanly: no errors, no flush"
    );

    install("lifecycle-a", &dir, "lc.wasm");
    until(&cache, Duration::from_secs(5), "the return", |s| {
        version(s, &file).as_deref() == Some("A")
    })
    .await;
    read(cache.clone(), loads.clone()).await;
    assert_eq!(
        loads.load(Ordering::SeqCst),
        3,
        "cached again: the entry filled before the removal is still fresh"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_whose_ops_collide_with_another_is_refused_naming_both() {
    let dir = fresh_dir("collide");
    install("lifecycle-a", &dir, "lc.wasm");
    let cache = watching(&dir).await;
    install("lifecycle-b", &dir, "other.wasm");
    let other = dir.join("other.wasm");
    until(&cache, Duration::from_secs(5), "the refusal", |s| {
        s.file(&other).is_some_and(|p| p.failure.is_some())
    })
    .await;
    let status = cache.policy_status();
    let failure = &status
        .file(&other)
        .unwrap()
        .failure
        .as_ref()
        .unwrap()
        .message;
    assert!(
        failure.contains("\"lc_get\"") && failure.contains("lifecycle"),
        "{failure}"
    );
    assert!(status.file(&other).unwrap().serving.is_none());
    assert_eq!(read_version(&cache, 1).await.unwrap(), "A");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_that_keeps_faulting_is_quarantined_until_a_good_version_lifts_it() {
    let dir = fresh_dir("quarantine");
    let file = dir.join("lc.wasm");
    install("lifecycle-trap", &dir, "lc.wasm");
    let cache = watching(&dir).await;
    // What this test's calls log at INFO and above (they run on this thread).
    let (logs, _logging) = Captured::install(tracing::Level::INFO);
    let loads = Arc::new(AtomicU64::new(0));
    for i in 0..60u64 {
        let l = loads.clone();
        let v: u64 = cache
            .read("lc_get", &json!({"id": i}), move || async move {
                l.fetch_add(1, Ordering::SeqCst);
                Ok::<_, std::io::Error>(i)
            })
            .await
            .unwrap();
        assert_eq!(v, i);
        cache
            .write("lc_put", &json!({"id": i}), || async {
                Ok::<_, std::io::Error>(())
            })
            .await
            .expect("writes keep working");
    }
    assert_eq!(
        loads.load(Ordering::SeqCst),
        60,
        "every read served by its loader"
    );
    let stats = cache.stats();
    let status = cache.policy_status();
    let serving = status.file(&file).unwrap().serving.clone().unwrap();
    let reason = serving
        .quarantined
        .as_deref()
        .unwrap_or_else(|| panic!("{status:#?}"));
    assert!(reason.contains("faults within"), "{reason}");
    // The bound, then no call at all: 120 calls made, 20 reached the guest.
    assert_eq!(stats.guest_faults, 20, "no further guest calls: {stats:?}");
    assert_eq!(serving.faults, 20);
    // The other 100 are counted as quarantined, not as policy errors, and are not logged one
    // by one: one line says the quarantine began. Every write still invalidated the namespace
    // (its rule could not be computed): 10 that faulted, 50 that were not made.
    assert_eq!(
        (
            stats.quarantined,
            stats.policy_errors,
            stats.namespace_flushes
        ),
        (100, 0, 60),
        "{stats:?}"
    );
    let text = logs.text();
    assert_eq!(
        text.matches("policy quarantined").count(),
        1,
        "the quarantine's start is logged once:\n{text}"
    );
    assert_eq!(
        text.lines()
            .filter(|l| l.contains("is quarantined"))
            .count(),
        0,
        "quarantined calls are logged one by one:\n{text}"
    );
    assert!(matches!(
        cache.read_rule("lc_get", &json!({"id": 1}), false).await,
        Err(Error::Quarantined { .. })
    ));

    install("lifecycle-a", &dir, "lc.wasm");
    until(&cache, Duration::from_secs(5), "a good version", |s| {
        version(s, &file).as_deref() == Some("A")
    })
    .await;
    let status = cache.policy_status();
    assert_eq!(
        status
            .file(&file)
            .unwrap()
            .serving
            .as_ref()
            .unwrap()
            .quarantined,
        None
    );
    assert_eq!(read_version(&cache, 1).await.unwrap(), "A");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_past_the_limits_are_refused_naming_the_limit_and_do_not_slow_other_policies() {
    let dir = fresh_dir("limits");
    install("lifecycle-a", &dir, "lc.wasm");
    install("greedy", &dir, "greedy.wasm");
    let cache = watching(&dir).await;
    let args = json!({"id": 1});
    for (op, limit) in [
        ("big_key", "CACHE_MAX_KEY_BYTES"),
        ("many_tags", "CACHE_MAX_TAGS"),
    ] {
        let e = cache.read_rule(op, &args, false).await.unwrap_err();
        assert!(
            matches!(&e, Error::Rule { .. }) && e.to_string().contains(limit),
            "{op}: {e}"
        );
    }
    let e = cache
        .write_rule("many_recache", &args, None, false)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("CACHE_MAX_RECACHE"), "{e}");
    let t0 = Instant::now();
    let e = cache
        .read_rule("store_loop", &args, false)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::Guest { .. }) && e.to_string().contains("deadline"),
        "{e}"
    );
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());

    // Served uncached: the loader's value goes back.
    for op in ["big_key", "many_tags", "store_loop"] {
        let v: u32 = cache
            .read(op, &args, || async { Ok::<_, std::io::Error>(7) })
            .await
            .unwrap();
        assert_eq!(v, 7);
    }

    // While a task keeps the greedy policy's answers coming (each refused), the other
    // policy's calls stay fast. (One task: a synchronous guest call holds its worker thread,
    // and the test runtime has two.)
    let quiet = time_calls(&cache, 200).await;
    let stop = Arc::new(AtomicBool::new(false));
    let greedy = {
        let (cache, stop) = (cache.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let op = if n.is_multiple_of(2) {
                    "big_key"
                } else {
                    "many_tags"
                };
                let e = cache.read_rule(op, &json!({"id": 1}), false).await;
                assert!(matches!(e, Err(Error::Rule { .. })), "{op}: {e:?}");
                n += 1;
                tokio::task::yield_now().await;
            }
            n
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let busy = time_calls(&cache, 200).await;
    stop.store(true, Ordering::Relaxed);
    let refused = greedy.await.unwrap();
    eprintln!("lc_get median {quiet:?} alone, {busy:?} beside {refused} refused greedy calls");
    assert!(refused > 0);
    assert!(
        busy < quiet * 10 + Duration::from_millis(1),
        "another policy's calls slowed down: {quiet:?} -> {busy:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_runs_under_the_limits_it_asks_for_within_the_host_maxima() {
    let dir = fresh_dir("own-limits");
    let greedy = dir.join("greedy.wasm");
    let limits = dir.join("greedy.limits.json");
    std::fs::write(&limits, r#"{"deadline_ms": 30}"#).unwrap();
    install("greedy", &dir, "greedy.wasm");
    let host = PolicyLimits::default().with_deadline(Duration::from_millis(400));
    let cache = Cache::builder()
        .settings(Target::memory().settings())
        .compile_cache(compile_cache())
        .policy_limits(host)
        .policy_dir(&dir)
        .build()
        .await
        .unwrap();
    let applied = |c: &Cache, origin: &cachelet::PolicyOrigin| {
        let s = c.policy_status();
        let v = s.get(origin)?.serving.as_ref()?;
        Some((v.deadline, v.memory))
    };
    let file = cachelet::PolicyOrigin::File(std::fs::canonicalize(&greedy).unwrap());
    assert_eq!(
        applied(&cache, &file),
        Some((Duration::from_millis(30), host.memory))
    );
    // A guest looping inside host calls is stopped at its own deadline, not the host's.
    let t0 = Instant::now();
    let e = cache
        .read_rule("store_loop", &json!({"id": 1}), false)
        .await
        .unwrap_err();
    let took = t0.elapsed();
    assert!(e.to_string().contains("deadline of 30ms"), "{e}");
    assert!(took < Duration::from_millis(300), "stopped after {took:?}");

    // Asking for more than the host allows gets the host's maxima.
    std::fs::write(
        &limits,
        r#"{"deadline_ms": 60000, "memory_bytes": 1099511627776}"#,
    )
    .unwrap();
    until(&cache, Duration::from_secs(5), "the new limits", |_| {
        applied(&cache, &file) == Some((host.deadline, host.memory))
    })
    .await;
    // A limits file that does not parse is refused, naming it and the problem; what serves
    // stays.
    std::fs::write(&limits, r#"{"deadline": 5}"#).unwrap();
    until(&cache, Duration::from_secs(5), "the refusal", |s| {
        s.get(&file)
            .and_then(|p| p.failure.as_ref())
            .is_some_and(|f| {
                f.message.contains("greedy.limits.json") && f.message.contains("unknown field")
            })
    })
    .await;
    assert_eq!(applied(&cache, &file), Some((host.deadline, host.memory)));

    // A push carries its limits; the same component pushed without them runs under the
    // host's.
    let pushed = cachelet::PolicyOrigin::Pushed("lifecycle".into());
    let a = std::fs::read(component("lifecycle-a")).unwrap();
    let asked = RequestedLimits::default()
        .with_deadline(Duration::from_millis(20))
        .with_memory(16 << 20);
    let push = cache
        .push_policy(a.clone(), PushOptions::default().limits(asked))
        .await
        .unwrap();
    assert_eq!(push.limits, asked);
    assert_eq!(
        applied(&cache, &pushed),
        Some((Duration::from_millis(20), 16 << 20))
    );
    assert_eq!(read_version(&cache, 1).await.unwrap(), "A");
    cache.push_policy(a, PushOptions::default()).await.unwrap();
    assert_eq!(applied(&cache, &pushed), Some((host.deadline, host.memory)));
    // Limits no call could run under are refused before anything is stored.
    let e = cache
        .push_policy(
            std::fs::read(component("lifecycle-b")).unwrap(),
            PushOptions::default().limits(RequestedLimits::default().with_memory(1024)),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("memory_bytes"), "{e}");
    assert_eq!(read_version(&cache, 1).await.unwrap(), "A");
}

/// A host that follows pushes and checks for changes only once a minute: what it picks up
/// sooner, it was told.
async fn told_host(s: &cachelet::Settings) -> Cache {
    let mut s = s.clone();
    s.policy_check = Duration::from_secs(60);
    Cache::builder()
        .settings(s)
        .compile_cache(compile_cache())
        .fleet(true)
        .build()
        .await
        .unwrap()
}

/// Waits up to 2 s for `op` to answer as `want` says; the time it took.
async fn within_2s(
    cache: &Cache,
    what: &str,
    want: impl Fn(Result<String, Error>) -> bool,
) -> Duration {
    let t0 = Instant::now();
    while !want(read_version(cache, 1).await) {
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "{what}: not within 2 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    t0.elapsed()
}

async fn pushes_rollbacks_and_removals_are_announced(target: Target) {
    let s = target.settings();
    let (one, two) = (told_host(&s).await, told_host(&s).await);
    let mut p = s.clone();
    p.fleet = false;
    let pusher = Cache::builder()
        .settings(p)
        .compile_cache(compile_cache())
        .build()
        .await
        .unwrap();
    // Their subscriptions are made in the background: give them a moment, as a host that
    // has been serving for a while has had.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut took = Vec::new();
    for (guest, version) in [("lifecycle-a", "A"), ("lifecycle-b", "B")] {
        pusher
            .push_policy(
                std::fs::read(component(guest)).unwrap(),
                PushOptions::default(),
            )
            .await
            .unwrap();
        for host in [&one, &two] {
            took.push(within_2s(host, version, |v| v.ok().as_deref() == Some(version)).await);
        }
    }
    pusher.rollback_policy("lifecycle").await.unwrap();
    for host in [&one, &two] {
        took.push(within_2s(host, "the rollback", |v| v.ok().as_deref() == Some("A")).await);
    }
    pusher.remove_policy("lifecycle").await.unwrap();
    for host in [&one, &two] {
        took.push(
            within_2s(host, "the removal", |v| {
                matches!(v, Err(Error::UnknownOp(_)))
            })
            .await,
        );
    }
    eprintln!("announced changes served after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_are_announced_to_following_hosts_on_a_redis_server() {
    pushes_rollbacks_and_removals_are_announced(Target::redis()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_are_announced_to_following_hosts_on_a_redis_cluster() {
    pushes_rollbacks_and_removals_are_announced(Target::redis_cluster()).await;
}

/// The median time of `n` calls of `lc_get`.
async fn time_calls(cache: &Cache, n: usize) -> Duration {
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let t0 = Instant::now();
        read_version(cache, i as u64).await.unwrap();
        times.push(t0.elapsed());
    }
    times.sort();
    times[n / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_backend_pushes_rolls_back_and_removes_through_the_library() {
    let (secret, public) = cachelet::policy_keypair().unwrap();
    let cache = Cache::builder()
        .settings(Target::memory().settings())
        .compile_cache(compile_cache())
        .policy_pubkey(&public)
        .build()
        .await
        .unwrap();
    let a = std::fs::read(component("lifecycle-a")).unwrap();
    let b = std::fs::read(component("lifecycle-b")).unwrap();
    let origin = cachelet::PolicyOrigin::Pushed("lifecycle".into());

    // Unsigned: stored, refused by this host (it has a key); nothing serves.
    let push = cache
        .push_policy(a.clone(), PushOptions::default())
        .await
        .unwrap();
    assert_eq!(
        (push.name.as_str(), push.version.as_str()),
        ("lifecycle", "A")
    );
    let failure = cache
        .policy_status()
        .get(&origin)
        .unwrap()
        .failure
        .clone()
        .unwrap();
    assert!(failure.message.contains("unsigned"), "{}", failure.message);
    assert!(cache
        .read_rule("lc_get", &json!({"id": 1}), false)
        .await
        .is_err());

    let sign = |bytes: &[u8]| {
        PushOptions::default().signature(cachelet::sign_policy(&secret, bytes).unwrap())
    };
    cache.push_policy(a.clone(), sign(&a)).await.unwrap();
    assert_eq!(
        read_version(&cache, 1).await.unwrap(),
        "A",
        "serving when the push returns"
    );
    cache.push_policy(b.clone(), sign(&b)).await.unwrap();
    assert_eq!(read_version(&cache, 1).await.unwrap(), "B");
    let list = cache.pushed_policies().await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].current.version, "B");
    assert_eq!(list[0].history.len(), 3);
    assert_eq!(
        list[0].hosts.get(cache.host_id()),
        Some(&list[0].current.hash)
    );

    assert_eq!(
        cache.rollback_policy("lifecycle").await.unwrap().version,
        "A"
    );
    assert_eq!(read_version(&cache, 1).await.unwrap(), "A");
    cache.remove_policy("lifecycle").await.unwrap();
    assert!(matches!(
        cache.read_rule("lc_get", &json!({"id": 1}), false).await,
        Err(Error::UnknownOp(_))
    ));
    let e = cache.remove_policy("lifecycle").await.unwrap_err();
    assert!(e.to_string().contains("no pushed policy"), "{e}");
    // A component that does not load is not pushed.
    let e = cache
        .push_policy(b"garbage".to_vec(), PushOptions::default())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no `\\0asm` header"), "{e}");
}

/// `bytes` (a component) with a custom section that makes it a component of its own hash.
fn variant(bytes: &[u8], n: u32) -> Vec<u8> {
    let name = b"variant";
    let mut section = vec![name.len() as u8];
    section.extend_from_slice(name);
    section.extend_from_slice(&n.to_le_bytes());
    let mut out = bytes.to_vec();
    out.push(0); // a custom section
    out.push(section.len() as u8);
    out.extend(section);
    out
}

/// Pushes do not pile up in Redis: a component that no push of its policy's history names any
/// more (fallen off the end of the last 20, or rolled back) is deleted; every one the history
/// or the current version names stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_components_no_rollback_can_reach_are_deleted() {
    let redis = cachelet_tests::redis::RedisServer::plain();
    let mut s = cachelet::Settings::default();
    s.url = cachelet::BackendUrl::parse(&redis.url()).unwrap();
    s.prefix = "pile".into();
    let cache = Cache::builder()
        .settings(s)
        .compile_cache(compile_cache())
        .build()
        .await
        .unwrap();
    let a = std::fs::read(component("lifecycle-a")).unwrap();
    let stored = || {
        let mut hashes: Vec<String> = redis
            .cli(&["KEYS", "*policy:*"])
            .lines()
            .filter_map(|k| Some(k.rsplit_once("policy:")?.1.to_string()))
            .collect();
        hashes.sort();
        hashes
    };
    let named = |list: &[cachelet::PushedPolicy]| {
        let mut hashes: Vec<String> = list[0].history.iter().map(|p| p.hash.clone()).collect();
        hashes.push(list[0].current.hash.clone());
        hashes.sort();
        hashes.dedup();
        hashes
    };
    for n in 0..22 {
        cache
            .push_policy(variant(&a, n), PushOptions::default())
            .await
            .unwrap();
    }
    let list = cache.pushed_policies().await.unwrap();
    assert_eq!(list[0].history.len(), 20);
    assert_eq!(stored().len(), 20, "the two oldest components are deleted");
    assert_eq!(stored(), named(&list));

    cache.rollback_policy("lifecycle").await.unwrap();
    let list = cache.pushed_policies().await.unwrap();
    assert_eq!(stored().len(), 19, "the component rolled back is deleted");
    assert_eq!(stored(), named(&list));
}
