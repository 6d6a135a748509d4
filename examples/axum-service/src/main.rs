//! `axum-service POLICY.wasm [ADDR]`: the guide's examples, served with the cache (settings
//! from CACHE_URL etc.), Prometheus metrics at /metrics, and a graceful shutdown on Ctrl-C that
//! delivers held invalidations.

use anyhow::Context as _;
use axum_service::{app, AppState, Db};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let mut args = std::env::args().skip(1);
    let policy = args
        .next()
        .context("usage: axum-service POLICY.wasm [ADDR]")?;
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:3000".into());
    // The recorder first: the cache registers its metrics when its policies load.
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
    // Histogram samples pile up until the upkeep drains them, whether or not /metrics is
    // scraped.
    let upkeep = metrics.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    let cache = cachelet::Cache::builder()
        .policy_file(&policy)
        .build()
        .await?;
    let db = Db::with(&[(1, "ann"), (2, "bob")]);
    let router = app(AppState {
        cache: cache.clone(),
        db,
        metrics: Some(metrics),
    });
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("serving on http://{addr}");
    cachelet::axum::serve(listener, router, cache, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
