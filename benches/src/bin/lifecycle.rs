//! The policy lifecycle's benchmarks (scripts/bench.sh, `BENCH_ONLY=lifecycle`):
//! - from a file landing in the watched directory (an atomic rename) to its rule served: a
//!   small Rust policy compiled cold, the same precompiled, and a precompiled Python one;
//! - from a push returning to two hosts serving its rule (Redis; each host its own cache and
//!   connection, following pushes as a host process does);
//! - `read` throughput (hits) during 20 swaps of the policy against steady state, one run:
//!   windows with a swap and steady windows alternate, so that machine noise weighs on both.
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

/// What the reads did during the swaps, against steady state.
struct Throughput {
    /// Hits per second in the windows without a swap.
    steady: f64,
    /// Hits per second in the windows that began with a swap.
    swapping: f64,
    /// Swaps made (one per swapping window).
    swaps: usize,
}

/// CPU time (all threads) and wall time of one swap with nothing else running, in ms
/// (medians of `swaps`): what a swap takes from the readers on a busy machine.
async fn swap_cost(policies: &Path, swaps: usize) -> Result<(f64, f64)> {
    let dir = temp("swap-cost");
    let cc = temp("swap-cost-cc");
    land(&policies.join("lifecycle-a.wasm"), &dir, "lc.wasm");
    let cache = Cache::builder()
        .settings(Settings::default())
        .compile_cache(&cc)
        .policy_dir(&dir)
        .build()
        .await?;
    let (mut cpu, mut wall) = (Vec::new(), Vec::new());
    for s in 0..swaps + 2 {
        let (name, suffix) = if s % 2 == 0 {
            ("lifecycle-b", ":B")
        } else {
            ("lifecycle-a", ":A")
        };
        let (c0, g0) = (cpu_time(), cache.policy_status().generation);
        let t0 = land(&policies.join(format!("{name}.wasm")), &dir, "lc.wasm");
        // Polled sparingly: the polling's own CPU stays out of the figure. The generation
        // tells this swap's load from an earlier one's.
        while cache.policy_status().generation == g0
            || !cache
                .read_rule("lc_get", &json!({"id": 0}), false)
                .await?
                .is_some_and(|r| r.key.ends_with(suffix))
        {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let took = t0.elapsed();
        // Whatever else the swap set off (a scan, a late event) is counted too.
        tokio::time::sleep(Duration::from_millis(50)).await;
        // The first two compile each version into the compile cache.
        if s >= 2 {
            wall.push(took.as_secs_f64() * 1e3);
            cpu.push(cpu_time().saturating_sub(c0).as_secs_f64() * 1e3);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&cc);
    Ok((median(cpu), median(wall)))
}

/// CPU time of this process's threads so far (the scheduler's count, in nanoseconds).
fn cpu_time() -> Duration {
    let ns: u64 = std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(ns)
}

/// Hits per second from 4 tasks, in `2 * swaps` windows of `window`: every other window
/// begins with the policy file replaced by the other version, the ones between are steady.
/// Steady and swapping windows alternate in one run, so that what else the machine does
/// weighs on both alike. A swap is checked done at the end of its window (a swap not served
/// by then is an error): nothing polls for it meanwhile.
async fn throughput(policies: &Path, window: Duration, swaps: usize) -> Result<Throughput> {
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
    // Both versions' entries cached before the windows count.
    for (name, suffix) in [("lifecycle-a", ":A"), ("lifecycle-b", ":B")] {
        land(&policies.join(format!("{name}.wasm")), &dir, "lc.wasm");
        served(&cache, "lc_get", &json!({"id": 0}), suffix).await;
        tokio::time::sleep(window).await;
    }
    let (mut steady, mut swapping) = ((0u64, Duration::ZERO), (0u64, Duration::ZERO));
    let mut done = 0;
    for w in 0..2 * swaps {
        let swap = w % 2 == 1;
        let (h0, t0) = (hits.load(Ordering::Relaxed), Instant::now());
        let suffix = if swap {
            let (name, suffix) = if done % 2 == 0 {
                ("lifecycle-a", ":A")
            } else {
                ("lifecycle-b", ":B")
            };
            land(&policies.join(format!("{name}.wasm")), &dir, "lc.wasm");
            Some(suffix)
        } else {
            None
        };
        tokio::time::sleep_until((t0 + window).into()).await;
        let (n, took) = (hits.load(Ordering::Relaxed) - h0, t0.elapsed());
        if let Some(suffix) = suffix {
            let rule = cache.read_rule("lc_get", &json!({"id": 0}), false).await?;
            anyhow::ensure!(
                rule.is_some_and(|r| r.key.ends_with(suffix)),
                "swap {done} not served within its window of {window:?}"
            );
            done += 1;
            swapping = (swapping.0 + n, swapping.1 + took);
        } else {
            steady = (steady.0 + n, steady.1 + took);
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&cc);
    Ok(Throughput {
        steady: steady.0 as f64 / steady.1.as_secs_f64(),
        swapping: swapping.0 as f64 / swapping.1.as_secs_f64(),
        swaps: done,
    })
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
        let window = Duration::from_millis(200);
        let t = throughput(&policies, window, 20).await?;
        println!(
            "read hits/s, 4 tasks, windows of {window:?} alternating: steady {:.0}, in the {} \
             windows that began with a swap {:.0} ({:+.1}%)",
            t.steady,
            t.swaps,
            t.swapping,
            (t.swapping / t.steady - 1.0) * 100.0,
        );
        let (cpu, wall) = swap_cost(&policies, 20).await?;
        println!(
            "one swap alone (precompiled, median of 20): {wall:.2} ms from the rename to the new \
             rule served, {cpu:.2} ms of CPU (all threads)"
        );
        if let Some(url) = &redis {
            let ms = push_to_hosts(&policies, url, 10).await?;
            println!("push returned -> both hosts serving its rule (median of 10): {ms:.0} ms");
        }
        anyhow::Ok(())
    })
}
