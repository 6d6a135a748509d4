//! Instructions per hit, counted (valgrind --tool=callgrind):
//! `hitcount cachelet|observed|macro|moka|redis N POLICY [REDIS_URL]`. Run it with N and with 0
//! and subtract: the setup cancels out. `observed` is `cachelet` with a Prometheus recorder
//! installed and a `fmt` subscriber at INFO; `macro` reads through a `#[cachelet::read]`
//! function on the installed cache instead of calling `Cache::read`. For those three it also
//! prints the wall-clock time per hit (`NS ns/hit`): scripts/bench.sh runs them in turn, many
//! times, and compares each round's figures (the `wallclock` part).
use std::sync::Arc;

#[derive(serde::Serialize, serde::Deserialize)]
struct Row {
    id: u64,
    name: String,
}

#[derive(serde::Serialize)]
struct UserId {
    user_id: u64,
}

#[cachelet::read("get_user")]
async fn get_user(user_id: u64) -> Result<Row, std::io::Error> {
    Err(std::io::Error::other(format!("hit expected for {user_id}")))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (what, n, policy) = (&args[1], args[2].parse::<u64>().unwrap(), &args[3]);
    let url = args.get(4).cloned().unwrap_or_else(|| "mem://".into());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    if what == "observed" {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        metrics::set_global_recorder(recorder).unwrap();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_writer(std::io::sink)
            .init();
    }
    match what.as_str() {
        "cachelet" | "observed" | "macro" => rt.block_on(async {
            let c = cachelet::Cache::builder()
                .url(&url)
                .prefix(format!("hc{}", std::process::id()))
                .policy_file(policy)
                .build()
                .await
                .unwrap();
            let key = UserId { user_id: 1 };
            let _: Row = c
                .read("get_user", &key, || async {
                    Ok::<_, std::io::Error>(Row {
                        id: 1,
                        name: "x".repeat(32),
                    })
                })
                .await
                .unwrap();
            let t0 = std::time::Instant::now();
            let per_hit = |t0: std::time::Instant| {
                if n > 0 {
                    println!("{:.1} ns/hit", t0.elapsed().as_nanos() as f64 / n as f64);
                }
            };
            if what == "macro" {
                cachelet::install(c);
                let t0 = std::time::Instant::now();
                for _ in 0..n {
                    std::hint::black_box(get_user(1).await.unwrap());
                }
                per_hit(t0);
                return;
            }
            for _ in 0..n {
                let row: Row = c
                    .read("get_user", &key, || async {
                        Err::<Row, _>(std::io::Error::other("hit"))
                    })
                    .await
                    .unwrap();
                std::hint::black_box(row);
            }
            per_hit(t0);
        }),
        "moka" => {
            let m: Arc<moka::sync::Cache<String, Arc<[u8]>>> =
                Arc::new(moka::sync::Cache::new(10_000));
            let v = serde_json::to_vec(&Row {
                id: 1,
                name: "x".repeat(32),
            })
            .unwrap();
            m.insert("svc:v1:user:1".to_string(), v.into());
            for _ in 0..n {
                let v = m.get(&"svc:v1:user:1".to_string()).unwrap();
                let row: Row = serde_json::from_slice(&v).unwrap();
                std::hint::black_box(row);
            }
        }
        "redis" => rt.block_on(async {
            let client = redis::Client::open(url.as_str()).unwrap();
            let mut conn = redis::aio::ConnectionManager::new(client).await.unwrap();
            let v = serde_json::to_vec(&Row {
                id: 1,
                name: "x".repeat(32),
            })
            .unwrap();
            let _: () = redis::cmd("SET")
                .arg("bare:1")
                .arg(v)
                .query_async(&mut conn)
                .await
                .unwrap();
            for _ in 0..n {
                let v: Vec<u8> = redis::cmd("GET")
                    .arg("bare:1")
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                let row: Row = serde_json::from_slice(&v).unwrap();
                std::hint::black_box(row);
            }
        }),
        _ => panic!("cachelet|observed|macro|moka|redis"),
    }
}
