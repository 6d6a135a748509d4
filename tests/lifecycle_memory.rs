//! Old versions are released: 100 reloads of a watched policy file leave no replaced version
//! alive and the process's memory back at its steady state (measured; alone in its binary,
//! so that no other test's allocations enter the figure).

use std::path::Path;
use std::time::{Duration, Instant};

use cachelet::Cache;
use cachelet_tests::{compile_cache, component, Target};

/// Resident set size of this process, in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

fn install(guest: &str, dir: &Path) {
    let tmp = dir.join(".lc.wasm.tmp");
    std::fs::copy(component(guest), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("lc.wasm")).unwrap();
}

async fn reload(cache: &Cache, dir: &Path, n: usize) {
    let file = dir.join("lc.wasm");
    for i in 0..n {
        let next = if i.is_multiple_of(2) { "B" } else { "A" };
        let before = cache.policy_status().generation;
        install(&format!("lifecycle-{}", next.to_lowercase()), dir);
        let t0 = Instant::now();
        loop {
            let s = cache.policy_status();
            let v = s
                .file(&file)
                .and_then(|p| p.serving.as_ref())
                .map(|v| v.version.clone());
            if s.generation > before && v.as_deref() == Some(next) {
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(10), "reload {i}: {s:#?}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // A call on each version, so that each has instances to release.
        let key = cache
            .read_rule("lc_get", &serde_json::json!({"id": i}), false)
            .await
            .unwrap()
            .unwrap()
            .key;
        assert!(key.ends_with(next), "{key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_reloads_release_every_old_version() {
    let dir = std::env::temp_dir().join(format!("cachelet-lc-memory-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    component("lifecycle-b");
    install("lifecycle-a", &dir);
    let cache = Cache::builder()
        .settings(Target::memory().settings())
        .compile_cache(compile_cache())
        .policy_dir(&dir)
        .build()
        .await
        .unwrap();
    // Warm up: both versions compiled, cached, instantiated; allocator pools settled.
    reload(&cache, &dir, 10).await;
    let steady = rss();
    reload(&cache, &dir, 100).await;
    let t0 = Instant::now();
    while cache.policy_status().retired_alive > 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{:#?}",
            cache.policy_status()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let after = rss();
    let growth = after as i64 - steady as i64;
    eprintln!(
        "RSS after 10 reloads {} KiB, after 110 {} KiB ({:+} KiB)",
        steady / 1024,
        after / 1024,
        growth / 1024
    );
    // A version that stayed alive would hold its compiled code and instances: ~1 MiB each,
    // 100 MiB for 100 reloads.
    assert!(
        growth < 16 << 20,
        "memory grew by {} KiB over 100 reloads",
        growth / 1024
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
