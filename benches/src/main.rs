//! cachelet's benchmarks, side by side with their baselines in one run.
//!
//! `scripts/bench.sh` runs this with the seed policy and passes the modelled library's figures
//! (from its own benchmark, run just before on the same machine) as `--anchor FILE`.
//!
//! Sections:
//! - policy: one rule through Wasm (a dynamic op), a host-rendered template, a native function
//! - hit: warm reads on mem:// at 1 and 64 tasks, beside a bare moka get + deserialize
//! - invalidation: one tag over 1 ... 100,000 entries
//! - memory: RSS per cached 1 KB entry at 100,000 entries

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod native;

use anyhow::{Context, Result};
use cachelet::{Args, Cache, Settings};
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Row {
    id: u64,
    name: String,
}

#[derive(Serialize)]
struct UserId {
    user_id: u64,
}

struct Report {
    lines: Vec<String>,
    json: serde_json::Map<String, serde_json::Value>,
}

impl Report {
    fn line(&mut self, s: String) {
        println!("{s}");
        self.lines.push(s);
    }
    fn figure(&mut self, key: &str, value: f64) {
        self.json.insert(key.into(), json!(value));
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

async fn cache(policy: &PathBuf, settings: Settings) -> Result<Cache> {
    Cache::builder()
        .settings(settings)
        .policy_file(policy)
        .build()
        .await
        .context("load the seed policy")
}

/// Median ns of `f`, timed in batches of 100 calls (timer overhead amortised).
async fn per_call<F, Fut>(rounds: usize, mut f: F) -> f64
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut samples = Vec::with_capacity(rounds);
    let mut i = 0u64;
    for _ in 0..rounds {
        let t0 = Instant::now();
        for _ in 0..100 {
            f(i).await;
            i += 1;
        }
        samples.push(t0.elapsed().as_nanos() as f64 / 100.0);
    }
    median(samples)
}

async fn bench_policy(r: &mut Report, policy: &PathBuf) -> Result<()> {
    let c = cache(policy, Settings::default()).await?;
    // The arguments as the host holds them on every path (the native function takes the same).
    let json = json!({"q": "rust wasm"});
    let args = Args::from_serialize(&json)?;
    // Warm the instance pool.
    for _ in 0..1000 {
        c.read_rule("get_search", &args, false).await?;
    }
    let wasm = per_call(2000, |_| async {
        std::hint::black_box(c.read_rule("get_search", &args, false).await.unwrap());
    })
    .await;
    let empty = Args::new().with("q", "");
    let none = per_call(2000, |_| async {
        std::hint::black_box(c.read_rule("get_search", &empty, false).await.unwrap());
    })
    .await;
    let user = Args::new().with("user_id", 42);
    let template = per_call(2000, |_| async {
        std::hint::black_box(c.read_rule("get_user", &user, false).await.unwrap());
    })
    .await;
    let conv = per_call(2000, |_| async {
        std::hint::black_box(Args::from_serialize(std::hint::black_box(&json)).unwrap());
    })
    .await;
    let native = per_call(2000, |_| async {
        std::hint::black_box(native::search_rule(std::hint::black_box(&args)));
    })
    .await;
    r.line("## Policy call (median per call, 1 task)".into());
    r.line(format!(
        "dynamic rule through Wasm (get_search)      {wasm:>8.0} ns   (target <= 700 ns)"
    ));
    r.line(format!(
        "template rule rendered by the host (get_user){template:>7.0} ns"
    ));
    r.line(format!(
        "native Rust function, same rule as get_search {native:>6.0} ns"
    ));
    r.line(format!(
        "(arguments from a JSON map, before any rule {conv:>6.0} ns)"
    ));
    r.line(format!(
        "same Wasm call answering `none` (no rule to lift) {none:>4.0} ns"
    ));
    r.figure("policy_wasm_ns", wasm);
    r.figure("policy_template_ns", template);
    r.figure("policy_native_ns", native);
    Ok(())
}

/// Fills `get_user` for users 0..64 with the anchor's value, `{"id": n, "name": <32 chars>}`.
async fn warm_hot_keys(c: &Cache) -> Result<()> {
    for t in 0..64u64 {
        let _: Row = c
            .read("get_user", &UserId { user_id: t }, move || async move {
                Ok::<_, std::io::Error>(Row {
                    id: t,
                    name: "x".repeat(32),
                })
            })
            .await?;
    }
    Ok(())
}

async fn hits_per_sec(c: &Cache, tasks: u64, per_task: u64) -> f64 {
    let t0 = Instant::now();
    let mut handles = Vec::new();
    for t in 0..tasks {
        let c = c.clone();
        handles.push(tokio::spawn(async move {
            let key = UserId { user_id: t };
            for _ in 0..per_task {
                let row: Row = c
                    .read("get_user", &key, || async {
                        Err::<Row, _>(String::from("benchmark hits must not load"))
                    })
                    .await
                    .unwrap();
                std::hint::black_box(row);
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    (tasks * per_task) as f64 / t0.elapsed().as_secs_f64()
}

fn bare_moka_per_sec(tasks: u64, per_task: u64) -> f64 {
    let m: Arc<moka::sync::Cache<String, Arc<[u8]>>> = Arc::new(moka::sync::Cache::new(10_000));
    for t in 0..tasks.max(1) {
        let v = serde_json::to_vec(&Row {
            id: t,
            name: "x".repeat(32),
        })
        .unwrap();
        m.insert(format!("svc:v1:user:{t}"), v.into());
    }
    let t0 = Instant::now();
    let threads: Vec<_> = (0..tasks.min(2))
        .map(|w| {
            let m = m.clone();
            let per_worker = per_task * tasks / tasks.min(2);
            std::thread::spawn(move || {
                for i in 0..per_worker {
                    let k = (w + i) % tasks;
                    let v = m.get(&format!("svc:v1:user:{k}")).unwrap();
                    let row: Row = serde_json::from_slice(&v).unwrap();
                    std::hint::black_box(row);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    (tasks * per_task) as f64 / t0.elapsed().as_secs_f64()
}

async fn bench_hits(r: &mut Report, policy: &PathBuf, anchor: &serde_json::Value) -> Result<()> {
    let c = cache(policy, Settings::default()).await?;
    warm_hot_keys(&c).await?;
    hits_per_sec(&c, 1, 100_000).await; // warm-up
                                        // Each figure is the median of three runs, interleaved so that noise from the shared
                                        // machine falls on both sides alike.
    let (mut one, mut many, mut moka_one, mut moka_many) = (vec![], vec![], vec![], vec![]);
    for _ in 0..3 {
        one.push(hits_per_sec(&c, 1, 1_000_000).await);
        moka_one.push(bare_moka_per_sec(1, 1_000_000));
        many.push(hits_per_sec(&c, 64, 20_000).await);
        moka_many.push(bare_moka_per_sec(64, 20_000));
    }
    let (one, many, moka_one, moka_many) = (
        median(one),
        median(many),
        median(moka_one),
        median(moka_many),
    );
    let (a_one, a_many) = anchor_hits(anchor);
    r.line("\n## Hit path on mem:// (read of a warm key, policy included)".into());
    r.line("| | 1 task | 64 tasks |".into());
    r.line("|---|---|---|".into());
    r.line(format!(
        "| cachelet read | {one:.0}/s ({:.0} ns) | {many:.0}/s |",
        1e9 / one
    ));
    r.line(format!(
        "| bare moka get + serde_json::from_slice | {moka_one:.0}/s ({:.0} ns) | {moka_many:.0}/s (2 threads) |",
        1e9 / moka_one
    ));
    if let (Some(a1), Some(am)) = (a_one, a_many) {
        r.line(format!(
            "| svc-infra cache_read (anchor) | {a1:.0}/s | {am:.0}/s |"
        ));
        r.line(format!(
            "| cachelet / anchor | {:.1}x | {:.1}x | (target >= 30x)",
            one / a1,
            many / am
        ));
        r.figure("hit_vs_anchor_1", one / a1);
        r.figure("hit_vs_anchor_64", many / am);
    } else {
        r.line("| svc-infra cache_read (anchor) | not run | not run |".into());
    }
    r.line(format!(
        "| bare moka / cachelet | {:.2}x | {:.2}x | (target <= 3x)",
        moka_one / one,
        moka_many / many
    ));
    r.figure("hit_1_per_s", one);
    r.figure("hit_64_per_s", many);
    r.figure("moka_1_per_s", moka_one);
    r.figure("moka_64_per_s", moka_many);
    Ok(())
}

/// The anchor's hit rates (`cache_read` with static tags) at 1 and 64 tasks.
fn anchor_hits(anchor: &serde_json::Value) -> (Option<f64>, Option<f64>) {
    (
        anchor_figure(anchor, "a", "svc cache_read(static tags): 1 task"),
        anchor_figure(
            anchor,
            "a",
            "svc cache_read(static tags): 64 tasks, 64 distinct hot keys",
        ),
    )
}

fn anchor_figure(anchor: &serde_json::Value, section: &str, name: &str) -> Option<f64> {
    anchor["results"][section]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)?["value"]
        .as_f64()
}

async fn bench_invalidation(
    r: &mut Report,
    policy: &PathBuf,
    anchor: &serde_json::Value,
) -> Result<()> {
    r.line("\n## Invalidation of one tag (write returning after the bump)".into());
    r.line("| entries carrying the tag | cachelet | svc-infra (anchor) |".into());
    r.line("|---|---|---|".into());
    for n in [1u64, 100, 10_000, 100_000] {
        let c = cache(policy, Settings::default()).await?;
        // get_org_user carries org:{org_id}:users; fill n entries of one org.
        for u in 0..n {
            let _: u64 = c
                .read(
                    "get_org_user",
                    &json!({"org_id": 1, "user_id": u}),
                    move || async move { Ok::<_, std::io::Error>(u) },
                )
                .await?;
        }
        let times = invalidation_times(&c).await?;
        // Check it really invalidated every entry.
        let mut reloaded = 0;
        for u in (0..n).step_by((n as usize / 100).max(1)) {
            let _: u64 = c
                .read(
                    "get_org_user",
                    &json!({"org_id": 1, "user_id": u}),
                    move || async move { Ok::<_, std::io::Error>(u + 1) },
                )
                .await?;
            reloaded += 1;
        }
        anyhow::ensure!(
            c.stats().loads >= n + reloaded,
            "invalidation missed entries"
        );
        let med = median(times);
        let anchor_ms = anchor_figure(
            anchor,
            "c",
            &format!("cache_write(tags=[one tag]) covering N={n}"),
        );
        r.line(format!(
            "| {n} | {med:.1} us | {} |",
            anchor_ms.map_or("—".to_string(), |ms| format!("{ms:.2} ms"))
        ));
        r.figure(&format!("invalidate_{n}_us"), med);
    }
    Ok(())
}

/// Microseconds of five writes that invalidate `org:1:users` (the tag of every `get_org_user`
/// entry of org 1).
async fn invalidation_times(c: &Cache) -> Result<Vec<f64>> {
    let mut times = Vec::new();
    for _ in 0..5 {
        let t0 = Instant::now();
        c.write(
            "update_user_org",
            &json!({"org_id": 1, "user_id": 0}),
            || async { Ok::<_, std::io::Error>(()) },
        )
        .await?;
        times.push(t0.elapsed().as_secs_f64() * 1e6);
    }
    Ok(times)
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

async fn bench_memory(r: &mut Report, policy: &PathBuf) -> Result<()> {
    let mut s = Settings::default();
    s.mem_max_bytes = 4 << 30;
    let c = cache(policy, s).await?;
    let value = "x".repeat(1000);
    let before = rss_bytes();
    let n = 100_000u64;
    for u in 0..n {
        let v = value.clone();
        let _: String = c
            .read("get_user", &UserId { user_id: u }, move || async move {
                Ok::<_, std::io::Error>(v)
            })
            .await?;
    }
    let after = rss_bytes();
    let per = (after.saturating_sub(before)) as f64 / n as f64;
    r.line("\n## Memory".into());
    r.line(format!(
        "RSS per cached 1 KB entry at {n} entries: {per:.0} bytes ({} entries held)",
        c.entry_count().unwrap_or(0)
    ));
    r.figure("rss_per_1kb_entry", per);
    Ok(())
}

/// Figures of `redis-benchmark -t get` at 1 and 64 clients, measured by the script.
struct RedisBenchmark {
    c1: Option<f64>,
    c64: Option<f64>,
}

fn redis_settings(url: &str, prefix: &str) -> Result<Settings> {
    let mut s = Settings::default();
    s.url = cachelet::BackendUrl::parse(url)?;
    s.prefix = prefix.into();
    Ok(s)
}

async fn bare_redis_gets_per_sec(
    conn: &redis::aio::ConnectionManager,
    tasks: u64,
    per_task: u64,
) -> f64 {
    let t0 = Instant::now();
    let mut handles = Vec::new();
    for t in 0..tasks {
        let mut c = conn.clone();
        handles.push(tokio::spawn(async move {
            let key = format!("bare:{t}");
            for _ in 0..per_task {
                let v: Vec<u8> = redis::cmd("GET")
                    .arg(&key)
                    .query_async(&mut c)
                    .await
                    .unwrap();
                let row: Row = serde_json::from_slice(&v).unwrap();
                std::hint::black_box(row);
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    (tasks * per_task) as f64 / t0.elapsed().as_secs_f64()
}

async fn bench_redis(
    r: &mut Report,
    policy: &PathBuf,
    url: &str,
    anchor: &serde_json::Value,
    rb: &RedisBenchmark,
) -> Result<()> {
    let prefix = format!("bench{}", std::process::id());
    let c = cache(policy, redis_settings(url, &prefix)?).await?;
    warm_hot_keys(&c).await?;
    let client = redis::Client::open(url)?;
    let conn = redis::aio::ConnectionManager::new(client).await?;
    for t in 0..64u64 {
        let v = serde_json::to_vec(&Row {
            id: t,
            name: "x".repeat(32),
        })?;
        let _: () = redis::cmd("SET")
            .arg(format!("bare:{t}"))
            .arg(v)
            .query_async(&mut conn.clone())
            .await?;
    }
    hits_per_sec(&c, 1, 2000).await;
    let (mut one, mut many, mut bare_one, mut bare_many) = (vec![], vec![], vec![], vec![]);
    for _ in 0..3 {
        one.push(hits_per_sec(&c, 1, 20_000).await);
        bare_one.push(bare_redis_gets_per_sec(&conn, 1, 20_000).await);
        many.push(hits_per_sec(&c, 64, 2_000).await);
        bare_many.push(bare_redis_gets_per_sec(&conn, 64, 2_000).await);
    }
    let (one, many, bare_one, bare_many) = (
        median(one),
        median(many),
        median(bare_one),
        median(bare_many),
    );
    let (a_one, a_many) = anchor_hits(anchor);
    let fmt = |v: Option<f64>| v.map_or("not run".to_string(), |v| format!("{v:.0}/s"));
    r.line("\n## Hit path on Redis (read of a warm key, policy included; loopback Redis)".into());
    r.line("| | 1 task | 64 tasks |".into());
    r.line("|---|---|---|".into());
    r.line(format!("| cachelet read | {one:.0}/s | {many:.0}/s |"));
    r.line(format!("| bare redis-rs GET + deserialize, same connection kind | {bare_one:.0}/s | {bare_many:.0}/s |"));
    r.line(format!(
        "| redis-benchmark -t get (-c 1 / -c 64) | {} | {} |",
        fmt(rb.c1),
        fmt(rb.c64)
    ));
    r.line(format!(
        "| svc-infra cache_read on Redis (anchor) | {} | {} |",
        fmt(a_one),
        fmt(a_many)
    ));
    r.line(format!(
        "| cachelet / bare GET | {:.0}% (target >= 90%) | {:.0}% (target >= 50%) |",
        100.0 * one / bare_one,
        100.0 * many / bare_many
    ));
    if let (Some(a1), Some(am)) = (a_one, a_many) {
        r.line(format!(
            "| cachelet / anchor | {:.1}x | {:.1}x (target >= 30x) |",
            one / a1,
            many / am
        ));
    }
    r.figure("redis_hit_1_per_s", one);
    r.figure("redis_hit_64_per_s", many);
    r.figure("redis_bare_1_per_s", bare_one);
    r.figure("redis_bare_64_per_s", bare_many);

    // Commands per hit, miss and write.
    let cmds = |c: &Cache| c.stats().redis_commands;
    let n0 = cmds(&c);
    for _ in 0..100 {
        let _: Row = c
            .read("get_user", &UserId { user_id: 1 }, || async {
                Err::<Row, _>(String::from("hit"))
            })
            .await
            .unwrap();
    }
    let per_hit = (cmds(&c) - n0) as f64 / 100.0;
    let n0 = cmds(&c);
    let t0 = Instant::now();
    let misses = 2000u64;
    for u in 0..misses {
        let _: Row = c
            .read(
                "get_user",
                &UserId {
                    user_id: 1_000_000 + u,
                },
                move || async move {
                    Ok::<_, std::io::Error>(Row {
                        id: u,
                        name: "x".repeat(32),
                    })
                },
            )
            .await?;
    }
    let miss_us = t0.elapsed().as_secs_f64() * 1e6 / misses as f64;
    let per_miss = (cmds(&c) - n0) as f64 / misses as f64;
    let n0 = cmds(&c);
    for u in 0..100u64 {
        c.write(
            "update_user_org",
            &json!({"org_id": 9, "user_id": u}),
            || async { Ok::<_, std::io::Error>(()) },
        )
        .await?;
    }
    let per_write = (cmds(&c) - n0) as f64 / 100.0;
    r.line(format!(
        "\nRedis commands: {per_hit:.1} per hit, {per_miss:.1} per miss+fill, {per_write:.1} per write \
         (two tags). Miss+fill: {miss_us:.0} us per read, 1 task{}.",
        anchor_figure(anchor, "b", "svc cache_read(static tags): miss+fill, 1 task")
            .map_or(String::new(), |a| format!(" (anchor: {a:.0} us)"))
    ));
    r.figure("redis_commands_per_hit", per_hit);
    r.figure("redis_commands_per_miss", per_miss);
    r.figure("redis_commands_per_write", per_write);
    r.figure("redis_miss_fill_us", miss_us);

    // Invalidation of one tag over 10,000 entries.
    let n = 10_000u64;
    let mut fills = Vec::new();
    for u in 0..n {
        let c = c.clone();
        fills.push(tokio::spawn(async move {
            let _: u64 = c
                .read(
                    "get_org_user",
                    &json!({"org_id": 1, "user_id": u}),
                    move || async move { Ok::<_, std::io::Error>(u) },
                )
                .await
                .unwrap();
        }));
    }
    for f in fills {
        f.await?;
    }
    let times = invalidation_times(&c).await?;
    let med = median(times);
    r.line(format!(
        "Invalidation of one tag over {n} entries on Redis: {med:.0} us (target < 1 ms){}",
        anchor_figure(anchor, "c", "cache_write(tags=[one tag]) covering N=10000")
            .map_or(String::new(), |a| format!("; anchor: {a:.1} ms"))
    ));
    r.figure("redis_invalidate_10000_us", med);
    Ok(())
}

/// Sends a signal to the Redis server (`STOP` freezes it, `CONT` resumes it).
fn signal(pid: u32, sig: &str) -> Result<()> {
    let ok = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()?
        .success();
    anyhow::ensure!(ok, "kill -{sig} {pid} failed");
    Ok(())
}

/// Writes while Redis is frozen (held, with and without a journal) beside writes it takes,
/// and how long after Redis resumes the host has delivered what it held.
async fn bench_held(r: &mut Report, policy: &PathBuf, url: &str, pid: u32) -> Result<()> {
    r.line("\n## Held invalidations on Redis (Redis frozen with SIGSTOP, then resumed)".into());
    r.line("| | write (2 tags), median | delivered after Redis resumed |".into());
    r.line("|---|---|---|".into());
    let dir = std::env::temp_dir().join(format!("cachelet-bench-held-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let write = |c: Cache, u: u64| async move {
        let t0 = Instant::now();
        c.write_outcome(
            "update_user_org",
            &json!({"org_id": 9, "user_id": u}),
            || async { Ok::<_, std::io::Error>(()) },
        )
        .await
        .map(|w| (w.invalidation, t0.elapsed().as_secs_f64() * 1e6))
    };
    for journaled in [false, true] {
        let mut s = redis_settings(url, &format!("held{}{journaled}", std::process::id()))?;
        s.redis.timeout = Duration::from_millis(50);
        s.redis.cooldown = Duration::from_millis(200);
        if journaled {
            s.redis.journal = Some(dir.join("held.journal"));
        }
        let c = cache(policy, s).await?;
        let mut delivered = Vec::new();
        for u in 0..200 {
            delivered.push(write(c.clone(), u).await?.1);
        }
        let mut windows = Vec::new();
        let mut held = Vec::new();
        for round in 0..5u64 {
            signal(pid, "STOP")?;
            // Two reads that time out open the circuit: the writes that follow are held at
            // once, without waiting for Redis.
            for u in 0..2 {
                let _: u64 = c
                    .read("get_user", &UserId { user_id: 900 + u }, || async {
                        Ok::<_, std::io::Error>(0)
                    })
                    .await?;
            }
            for u in 0..40 {
                let (outcome, us) = write(c.clone(), round * 100 + u).await?;
                anyhow::ensure!(
                    matches!(outcome, cachelet::Invalidation::Held { .. }),
                    "{outcome:?}"
                );
                held.push(us);
            }
            signal(pid, "CONT")?;
            let t0 = Instant::now();
            while c.held_invalidations() > 0 && t0.elapsed() < Duration::from_secs(10) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            windows.push(t0.elapsed().as_secs_f64() * 1e3);
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let (d, h, w) = (median(delivered), median(held), median(windows));
        let name = if journaled { "journaled" } else { "in memory" };
        r.line(format!(
            "| delivered (Redis up) | {d:.0} us | |\n| held, {name} | {h:.0} us | {w:.0} ms (median of 5) |"
        ));
        r.figure(
            &format!(
                "held_{}_write_us",
                if journaled { "journal" } else { "memory" }
            ),
            h,
        );
        r.figure(
            &format!(
                "held_{}_window_ms",
                if journaled { "journal" } else { "memory" }
            ),
            w,
        );
        r.figure("delivered_write_us", d);
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn main() -> Result<()> {
    let mut policy = None;
    let mut anchor = serde_json::Value::Null;
    let mut out = None;
    let mut redis_url = None;
    let mut redis_pid = None;
    let mut rb = RedisBenchmark {
        c1: None,
        c64: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--anchor" => {
                let f = args.next().context("--anchor FILE")?;
                anchor = serde_json::from_str(&std::fs::read_to_string(&f)?)?;
            }
            "--json" => out = Some(args.next().context("--json FILE")?),
            "--redis" => redis_url = Some(args.next().context("--redis URL")?),
            "--redis-pid" => redis_pid = args.next().and_then(|v| v.parse::<u32>().ok()),
            "--redis-benchmark-c1" => rb.c1 = args.next().and_then(|v| v.parse().ok()),
            "--redis-benchmark-c64" => rb.c64 = args.next().and_then(|v| v.parse().ok()),
            p => policy = Some(PathBuf::from(p)),
        }
    }
    let policy =
        policy.context("usage: cachelet-bench POLICY.wasm [--anchor FILE] [--json FILE]")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut r = Report {
        lines: vec![],
        json: serde_json::Map::new(),
    };
    // Sections to run (all by default): memory first, before other sections' freed memory
    // can hide its growth.
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let run = |s: &str| only.is_empty() || only.split(',').any(|o| o == s || o == "mem");
    rt.block_on(async {
        if let Some(url) = &redis_url {
            bench_redis(&mut r, &policy, url, &anchor, &rb).await?;
            if let Some(pid) = redis_pid {
                bench_held(&mut r, &policy, url, pid).await?;
            }
            return Ok(());
        }
        if run("memory") {
            bench_memory(&mut r, &policy).await?;
        }
        if run("policy") {
            bench_policy(&mut r, &policy).await?;
        }
        if run("hit") {
            bench_hits(&mut r, &policy, &anchor).await?;
        }
        if run("invalidation") {
            bench_invalidation(&mut r, &policy, &anchor).await?;
        }
        anyhow::Ok(())
    })?;
    std::thread::sleep(Duration::from_millis(10));
    if let Some(out) = out {
        std::fs::write(out, serde_json::to_string_pretty(&r.json)?)?;
    }
    Ok(())
}
