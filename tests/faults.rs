//! A guest that traps, loops forever, grabs memory, sleeps or reaches for files, sockets and the
//! environment is stopped within its limits; the caller still gets the loader's value, and the
//! next calls work. Components that are not policies are refused with a message that names why.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cachelet::{Cache, Error, PolicyLimits, PolicySource, Settings};
use cachelet_tests::component;
use serde_json::json;

async fn faulty_cache() -> Cache {
    Cache::builder()
        .settings(Settings::default())
        .policy_limits(
            PolicyLimits::default()
                .with_deadline(Duration::from_millis(50))
                .with_memory(32 << 20),
        )
        .policy_file(component("faulty"))
        .build()
        .await
        .expect("the faulty policy loads: it only misbehaves when called")
}

async fn read_counting(cache: &Cache, op: &str, id: i64, loads: &Arc<AtomicU32>) -> String {
    let loads = loads.clone();
    cache
        .read(op, &json!({ "id": id }), move || async move {
            loads.fetch_add(1, Ordering::SeqCst);
            Ok::<_, std::io::Error>(format!("loaded {id}"))
        })
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_are_contained_and_the_caller_gets_the_loaders_value() {
    let cache = faulty_cache().await;
    let loads = Arc::new(AtomicU32::new(0));

    // A healthy op caches.
    assert_eq!(read_counting(&cache, "ok", 1, &loads).await, "loaded 1");
    assert_eq!(read_counting(&cache, "ok", 1, &loads).await, "loaded 1");
    assert_eq!(loads.load(Ordering::SeqCst), 1, "second read is a hit");

    for (op, want) in [
        ("trap", "wasm trap: wasm `unreachable`"),
        ("spin", "deadline"),
        ("hog", "memory"),
        ("sleep", "would wait: a policy cannot block"),
    ] {
        let before = cache.stats().guest_faults;
        let t0 = Instant::now();
        assert_eq!(
            read_counting(&cache, op, 2, &loads).await,
            "loaded 2",
            "{op}"
        );
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{op} took {:?}",
            t0.elapsed()
        );
        assert_eq!(
            cache.stats().guest_faults,
            before + 1,
            "{op} counted as a fault"
        );
        // The rule itself reports the fault by name.
        let err = cache
            .read_rule(op, &json!({"id": 2}), false)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Guest { .. }), "{op}: {err}");
        assert!(err.to_string().contains(want), "{op}: {err}");
        // And the policy keeps serving: a fresh instance answers, the cached entry is there.
        let n = loads.load(Ordering::SeqCst);
        assert_eq!(read_counting(&cache, "ok", 1, &loads).await, "loaded 1");
        assert_eq!(
            loads.load(Ordering::SeqCst),
            n,
            "ok:1 is still a hit after {op}"
        );
    }
}

#[tokio::test]
async fn a_spinning_guest_is_stopped_near_its_deadline() {
    let cache = faulty_cache().await;
    let t0 = Instant::now();
    let err = cache
        .read_rule("spin", &json!({}), false)
        .await
        .unwrap_err();
    let took = t0.elapsed();
    assert!(err.to_string().contains("deadline"), "{err}");
    assert!(
        took >= Duration::from_millis(45),
        "stopped too early: {took:?}"
    );
    assert!(
        took < Duration::from_millis(1000),
        "stopped too late: {took:?}"
    );
}

#[tokio::test]
async fn a_guest_reaches_no_file_socket_or_environment() {
    std::env::set_var("CACHELET_SECRET_FOR_TEST", "x");
    let cache = faulty_cache().await;
    for (op, want) in [
        ("probe_file", "file:denied"),
        ("probe_socket", "socket:denied"),
        ("probe_env", "env:denied"),
    ] {
        let rule = cache
            .read_rule(op, &json!({}), false)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rule.key, want, "{op}");
    }
}

#[tokio::test]
async fn a_write_whose_rule_faults_still_invalidates() {
    let cache = faulty_cache().await;
    let loads = Arc::new(AtomicU32::new(0));
    read_counting(&cache, "ok", 7, &loads).await;
    read_counting(&cache, "ok", 7, &loads).await;
    assert_eq!(loads.load(Ordering::SeqCst), 1);

    for op in ["trap_write", "refuse_write"] {
        let out = cache
            .write(op, &json!({"id": 7}), || async {
                Ok::<_, std::io::Error>("saved")
            })
            .await
            .unwrap();
        assert_eq!(out, "saved", "the action's result is returned");
        let before = loads.load(Ordering::SeqCst);
        read_counting(&cache, "ok", 7, &loads).await;
        assert_eq!(
            loads.load(Ordering::SeqCst),
            before + 1,
            "{op}: the cached entry must not survive a write whose rule failed"
        );
    }
    assert_eq!(cache.stats().namespace_flushes, 2);
}

#[tokio::test]
async fn an_unknown_op_is_not_cached() {
    let cache = faulty_cache().await;
    let loads = Arc::new(AtomicU32::new(0));
    read_counting(&cache, "nobody_declares_this", 1, &loads).await;
    read_counting(&cache, "nobody_declares_this", 1, &loads).await;
    assert_eq!(loads.load(Ordering::SeqCst), 2);
    assert_eq!(cache.stats().uncached, 2);
}

async fn load_err(source: PolicySource) -> String {
    match Cache::builder()
        .settings(Settings::default())
        .policy(source)
        .build()
        .await
    {
        Ok(_) => panic!("loaded"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn components_that_are_not_policies_are_refused_by_name() {
    let bytes = |name: &str, bytes: &[u8]| PolicySource::Bytes {
        name: name.into(),
        bytes: bytes.to_vec(),
    };
    let e = load_err(bytes("notes.txt", b"hello, world")).await;
    assert!(e.contains("notes.txt") && e.contains("\\0asm"), "{e}");
    let e = load_err(bytes("core.wasm", b"\0asm\x01\0\0\0")).await;
    assert!(
        e.contains("core WebAssembly module, not a component"),
        "{e}"
    );
    let e = load_err(bytes("cut.wasm", b"\0asm\x0d\0\x01\0\x07")).await;
    assert!(e.contains("not a valid WebAssembly component"), "{e}");
    let e = load_err(PolicySource::file("/nonexistent/policy.wasm")).await;
    assert!(e.contains("/nonexistent/policy.wasm"), "{e}");

    let e = load_err(PolicySource::file(component("future-world"))).await;
    assert!(
        e.contains("cachelet:policy@0.3.0") && e.contains("implements cachelet:policy@0.2.0"),
        "{e}"
    );
}

#[tokio::test]
async fn two_policies_declaring_one_op_is_a_load_error() {
    let e = Cache::builder()
        .settings(Settings::default())
        .policy_file(component("faulty"))
        .policy_file(component("faulty"))
        .build()
        .await
        .err()
        .expect("duplicate ops must not load")
        .to_string();
    assert!(
        e.contains("declared by both policy \"faulty\" and policy \"faulty\""),
        "{e}"
    );
}
