//! The seed policy in every guest language, side by side: component size, build time (from
//! build/policies/build-times.tsv), first load (compiled) and precompiled load, the smallest
//! memory cap it runs under, and the latency of one policy call for the same op.
//!
//!   cargo run --release -p cachelet-bench --bin languages -- [--json FILE] [POLICY_DIR]
//!
//! scripts/bench.sh runs it after rebuilding the components from source.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[path = "../native.rs"]
mod native;

use anyhow::{Context, Result};
use cachelet::{Args, Cache, PolicyLimits, Settings};
use serde_json::json;

const LANGS: [&str; 4] = ["seed-rust", "seed-python", "seed-js", "seed-c"];

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mut json_out = None;
    let mut dir = PathBuf::from("build/policies");
    while let Some(a) = args.next() {
        match a.as_str() {
            "--json" => json_out = Some(PathBuf::from(args.next().context("--json FILE")?)),
            other => dir = PathBuf::from(other),
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let builds = build_times(&dir.join("build-times.tsv"));
    let mut rows = Vec::new();
    for lang in LANGS {
        let path = dir.join(format!("{lang}.wasm"));
        let row = rt.block_on(measure(lang, &path, builds.get(lang).copied()))?;
        rows.push(row);
    }
    let native = native_call();

    println!("### Guest languages: the seed policy in each (mem://)\n");
    println!(
        "| | size | build | first load (compile) | precompiled load | smallest memory cap | \
         dynamic call (`get_search`) | template op forced through the guest (`get_org_user`) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} ns | {} ns |",
            r["lang"].as_str().unwrap(),
            bytes(r["size"].as_u64().unwrap()),
            r["build_ms"]
                .as_u64()
                .map(|ms| format!("{:.1} s", ms as f64 / 1e3))
                .unwrap_or_else(|| "-".into()),
            ms(r["first_load_ms"].as_f64().unwrap()),
            ms(r["precompiled_load_ms"].as_f64().unwrap()),
            r["min_memory_mib"]
                .as_u64()
                .map(|m| format!("{m} MiB"))
                .unwrap_or_else(|| "> 256 MiB".into()),
            r["dynamic_call_ns"].as_u64().unwrap(),
            r["guest_template_call_ns"].as_u64().unwrap(),
        );
    }
    println!(
        "| native Rust function (same rule as `get_search`) | | | | | | {} ns | |",
        native
    );
    if let Some(out) = json_out {
        let doc = json!({"languages": rows, "native_call_ns": native});
        std::fs::write(&out, serde_json::to_string_pretty(&doc)?)?;
    }
    Ok(())
}

/// The last build time recorded for each component.
fn build_times(tsv: &Path) -> HashMap<String, u64> {
    let mut out = HashMap::new();
    for line in std::fs::read_to_string(tsv).unwrap_or_default().lines() {
        let cols: Vec<&str> = line.split('\t').collect();
        if let [_, name, time, ..] = cols[..] {
            if let Some(ms) = time.strip_suffix(" ms").and_then(|t| t.parse().ok()) {
                out.insert(name.to_string(), ms);
            }
        }
    }
    out
}

async fn cache(path: &Path, compile_cache: Option<&Path>, limits: PolicyLimits) -> Result<Cache> {
    let mut b = Cache::builder()
        .settings(Settings::default())
        .policy_limits(limits)
        .policy_file(path);
    if let Some(dir) = compile_cache {
        b = b.compile_cache(dir);
    }
    Ok(b.build().await?)
}

async fn measure(lang: &str, path: &Path, build_ms: Option<u64>) -> Result<serde_json::Value> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("{}: build it first", path.display()))?
        .len();
    let cc = std::env::temp_dir().join(format!("cachelet-bench-cc-{}-{lang}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cc);
    let limits = PolicyLimits::default();

    // First load: compiles (and fills the cache); second: precompiled. Best of three each.
    let mut first = Duration::MAX;
    let mut pre = Duration::MAX;
    for _ in 0..3 {
        let _ = std::fs::remove_dir_all(&cc);
        let t = Instant::now();
        let c = cache(path, Some(&cc), limits).await?;
        first = first.min(t.elapsed());
        assert!(!c.policies()[0].precompiled);
        let t = Instant::now();
        let c = cache(path, Some(&cc), limits).await?;
        pre = pre.min(t.elapsed());
        assert!(c.policies()[0].precompiled);
    }

    // The smallest memory cap (in MiB steps) under which it loads and answers a dynamic call.
    let mut min_memory = None;
    for mib in [1usize, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 256] {
        let limits = PolicyLimits::default().with_memory(mib << 20);
        let Ok(c) = cache(path, Some(&cc), limits).await else {
            continue;
        };
        if c.read_rule("get_search", &search_args(), false)
            .await
            .is_ok()
        {
            min_memory = Some(mib);
            break;
        }
    }

    let c = cache(path, Some(&cc), limits).await?;
    let search = search_args();
    let org = Args::new().with("org_id", 7).with("user_id", 42);
    let dynamic = per_call(|| async {
        c.read_rule("get_search", &search, false).await.unwrap();
    })
    .await;
    let forced = per_call(|| async {
        c.read_rule("get_org_user", &org, true).await.unwrap();
    })
    .await;
    let _ = std::fs::remove_dir_all(&cc);
    Ok(json!({
        "lang": lang,
        "size": size,
        "build_ms": build_ms,
        "first_load_ms": first.as_secs_f64() * 1e3,
        "precompiled_load_ms": pre.as_secs_f64() * 1e3,
        "min_memory_mib": min_memory,
        "dynamic_call_ns": dynamic,
        "guest_template_call_ns": forced,
    }))
}

fn search_args() -> Args {
    Args::new().with("q", "rust")
}

/// Median nanoseconds per call over 15 batches of 200 calls, after a warm-up.
async fn per_call<F, Fut>(f: F) -> u64
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for _ in 0..500 {
        f().await;
    }
    let mut batches = Vec::new();
    for _ in 0..15 {
        let t = Instant::now();
        for _ in 0..200 {
            f().await;
        }
        batches.push(t.elapsed().as_nanos() as u64 / 200);
    }
    batches.sort_unstable();
    batches[batches.len() / 2]
}

/// The same rule as `get_search`, from a native function given the same arguments.
fn native_call() -> u64 {
    let args = search_args();
    let mut batches = Vec::new();
    for _ in 0..15 {
        let t = Instant::now();
        for _ in 0..20_000 {
            std::hint::black_box(native::search_rule(std::hint::black_box(&args)));
        }
        batches.push(t.elapsed().as_nanos() as u64 / 20_000);
    }
    batches.sort_unstable();
    batches[batches.len() / 2]
}

fn bytes(n: u64) -> String {
    if n >= 1 << 20 {
        format!("{:.1} MB", n as f64 / 1e6)
    } else {
        format!("{:.1} KB", n as f64 / 1e3)
    }
}

fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{:.2} s", v / 1e3)
    } else {
        format!("{v:.1} ms")
    }
}
