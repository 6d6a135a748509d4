//! The policy lifecycle's benchmarks (scripts/bench.sh, `BENCH_ONLY=lifecycle`):
//! - from a file landing in the watched directory (an atomic rename) to its rule served: a
//!   small Rust policy compiled cold, the same precompiled, and a precompiled Python one;
//! - from a push returning to two hosts serving its rule (Redis; each host its own cache and
//!   connection, following pushes as a host process does);
//! - `read` throughput (hits) during 20 swaps of the policy against steady state, one run.
//!
//! usage: lifecycle POLICIES_DIR [--redis URL]   (POLICIES_DIR: build/policies)

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use cachelet::{Cache, Settings};
use serde_json::json;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cachelet-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Lands `component` as `dir/name` by an atomic rename; returns when it was renamed.
fn land(component: &Path, dir: &Path, name: &str) -> Instant {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::copy(component, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
    Instant::now()
}

/// Waits until `op` answers a rule whose key ends with `suffix` (or any rule when empty).
async fn served(cache: &Cache, op: &str, args: &serde_json::Value, suffix: &str) {
    let t0 = Instant::now();
    loop {
        if let Ok(Some(r)) = cache.read_rule(op, args, false).await {
            if r.key.ends_with(suffix) {
                return;
            }
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "{op} never served");
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

/// Milliseconds from a file landing to its rule served, `rounds` times (median).
async fn landing(
    component: &Path,
    op: &str,
    args: serde_json::Value,
    compile_cache: Option<&Path>,
    rounds: usize,
) -> Result<f64> {
    let dir = temp("landing");
    let mut b = Cache::builder()
        .settings(Settings::default())
        .policy_dir(&dir);
    if let Some(cc) = compile_cache {
        b = b.compile_cache(cc);
    }
    let cache = b.build().await?;
    let mut times = Vec::new();
    for _ in 0..rounds {
        let t0 = land(component, &dir, "p.wasm");
        served(&cache, op, &args, "").await;
        times.push(t0.elapsed().as_secs_f64() * 1e3);
        std::fs::remove_file(dir.join("p.wasm"))?;
        while cache.read_rule(op, &args, false).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(median(times))
}

/// Hits per second from 4 tasks for `span`; with `swaps`, the policy file is replaced by
/// alternating versions that many times meanwhile.
async fn throughput(policies: &Path, span: Duration, swaps: usize) -> Result<(f64, usize)> {
    let dir = temp("throughput");
    land(&policies.join("lifecycle-a.wasm"), &dir, "lc.wasm");
    let cc = temp("throughput-cc");
    let cache = Cache::builder()
        .settings(Settings::default())
        .compile_cache(&cc)
        .policy_dir(&dir)
        .build()
        .await?;
    // Both versions compiled once: the swaps load them precompiled.
    land(&policies.join("lifecycle-b.wasm"), &dir, "lc.wasm");
    served(&cache, "lc_get", &json!({"id": 0}), ":B").await;
    let stop = Arc::new(AtomicBool::new(false));
    let hits = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for t in 0..4u64 {
        let (cache, stop, hits) = (cache.clone(), stop.clone(), hits.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let id = t * 100 + i % 100;
                let _: u64 = cache
                    .read("lc_get", &json!({ "id": id }), move || async move {
                        Ok::<_, std::io::Error>(id)
                    })
                    .await
                    .unwrap();
                hits.fetch_add(1, Ordering::Relaxed);
                // A memory-backend hit never waits: yield as a server's I/O would, so that
                // the watcher (and this bench's clock) get their turn.
                tokio::task::yield_now().await;
            }
        }));
    }
    let t0 = Instant::now();
    let mut done = 0;
    if swaps > 0 {
        let every = span / swaps as u32;
        for s in 0..swaps {
            let (name, suffix) = if s.is_multiple_of(2) {
                ("lifecycle-a", ":A")
            } else {
                ("lifecycle-b", ":B")
            };
            land(&policies.join(format!("{name}.wasm")), &dir, "lc.wasm");
            served(&cache, "lc_get", &json!({"id": 0}), suffix).await;
            done += 1;
            let next = every * (s as u32 + 1);
            if let Some(wait) = next.checked_sub(t0.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
    }
    if let Some(wait) = span.checked_sub(t0.elapsed()) {
        tokio::time::sleep(wait).await;
    }
    stop.store(true, Ordering::Relaxed);
    let elapsed = t0.elapsed();
    for t in tasks {
        t.await?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&cc);
    Ok((
        hits.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64(),
        done,
    ))
}

/// Milliseconds from `push_policy` returning to both hosts serving the pushed rule (median).
async fn push_to_hosts(policies: &Path, url: &str, rounds: usize) -> Result<f64> {
    let cc = temp("push-cc");
    let host = |follow: bool| {
        Cache::builder()
            .settings(Settings::default())
            .url(url)
            .prefix("benchfleet")
            .compile_cache(&cc)
            .fleet(follow)
            .build()
    };
    let (one, two, pusher) = (host(true).await?, host(true).await?, host(false).await?);
    let args = json!({"id": 1});
    let mut times = Vec::new();
    for round in 0..rounds {
        let (name, suffix) = if round.is_multiple_of(2) {
            ("lifecycle-b", ":B")
        } else {
            ("lifecycle-a", ":A")
        };
        let bytes = std::fs::read(policies.join(format!("{name}.wasm")))?;
        pusher.push_policy(bytes, Default::default()).await?;
        let t0 = Instant::now();
        served(&one, "lc_get", &args, suffix).await;
        served(&two, "lc_get", &args, suffix).await;
        times.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    let _ = std::fs::remove_dir_all(&cc);
    Ok(median(times))
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let policies = PathBuf::from(
        args.next()
            .context("usage: lifecycle POLICIES_DIR [--redis URL]")?,
    );
    let redis = match args.next().as_deref() {
        Some("--redis") => Some(args.next().context("--redis URL")?),
        _ => None,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let rust = policies.join("lifecycle-a.wasm");
        let cold = landing(&rust, "lc_get", json!({"id": 1}), None, 5).await?;
        let cc = temp("landing-cc");
        landing(&rust, "lc_get", json!({"id": 1}), Some(&cc), 1).await?;
        let warm = landing(&rust, "lc_get", json!({"id": 1}), Some(&cc), 9).await?;
        let python = policies.join("seed-python.wasm");
        landing(&python, "get_user", json!({"user_id": 1}), Some(&cc), 1).await?;
        let py = landing(&python, "get_user", json!({"user_id": 1}), Some(&cc), 9).await?;
        let _ = std::fs::remove_dir_all(&cc);
        println!(
            "file landed -> new rule served (median): Rust {} KB compiled {cold:.1} ms, \
             precompiled {warm:.1} ms; Python {:.1} MB precompiled {py:.1} ms",
            std::fs::metadata(&rust)?.len() / 1000,
            std::fs::metadata(&python)?.len() as f64 / 1e6
        );
        let span = Duration::from_secs(4);
        let (steady, _) = throughput(&policies, span, 0).await?;
        let (swapping, n) = throughput(&policies, span, 20).await?;
        println!(
            "read hits/s, 4 tasks, {span:?}: steady {steady:.0}, during {n} swaps {swapping:.0} \
             ({:+.1}%)",
            (swapping / steady - 1.0) * 100.0
        );
        if let Some(url) = &redis {
            let ms = push_to_hosts(&policies, url, 10).await?;
            println!("push returned -> both hosts serving its rule (median of 10): {ms:.0} ms");
        }
        anyhow::Ok(())
    })
}
