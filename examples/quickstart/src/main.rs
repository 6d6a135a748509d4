//! cachelet quick start: a service embeds the cache host with the seed policy and shows, step
//! by step, a miss, a hit, a write, the invalidation it caused, and the fresh read after it.
//!
//! Run it with `scripts/quickstart.sh` (it builds the seed policy first). Settings come from the
//! environment (`CACHE_URL`, `CACHE_PREFIX`, ...; `mem://` by default).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, Result};
use cachelet::Cache;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
}

#[derive(Serialize)]
struct UserId {
    user_id: u64,
}

/// The "database" of this example.
type Db = Arc<Mutex<HashMap<u64, User>>>;

/// The loader: what the service runs against its database on a miss.
async fn load_user(db: Db, user_id: u64) -> Result<User> {
    println!("    loader runs: SELECT * FROM users WHERE id = {user_id}");
    db.lock()
        .unwrap()
        .get(&user_id)
        .cloned()
        .context("no such user")
}

async fn get_user(cache: &Cache, db: &Db, user_id: u64) -> Result<User> {
    let db = db.clone();
    let t0 = Instant::now();
    let user = cache
        .read("get_user", &UserId { user_id }, move || {
            load_user(db, user_id)
        })
        .await?;
    println!(
        "    -> {user:?} in {:.1} us",
        t0.elapsed().as_secs_f64() * 1e6
    );
    Ok(user)
}

#[tokio::main]
async fn main() -> Result<()> {
    let policy = std::env::args().nth(1).unwrap_or_else(|| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../build/policies/seed-rust.wasm"
        )
        .to_string()
    });
    let cache = Cache::builder()
        .policy_file(&policy)
        .build()
        .await
        .with_context(|| format!("loading {policy} (build it with scripts/build-policies.sh)"))?;
    let s = cache.settings();
    println!(
        "cachelet quick start on {} (namespace {}:{})",
        s.url, s.prefix, s.version
    );
    for p in cache.policies() {
        println!(
            "policy {} {}: {} operations",
            p.name,
            p.version,
            p.ops.len()
        );
    }
    let rule = cache
        .read_rule("get_user", &UserId { user_id: 42 }, false)
        .await?;
    println!(
        "rule for get_user(user_id=42): {}",
        serde_json::to_string(&rule)?
    );

    let db: Db = Arc::default();
    db.lock().unwrap().insert(
        42,
        User {
            id: 42,
            name: "Ada".into(),
        },
    );
    // update_user's rule recaches get_user: the cache warms it with this loader after a write.
    let loader_db = db.clone();
    cache.register_loader("get_user", move |a: serde_json::Value| {
        load_user(loader_db.clone(), a["user_id"].as_u64().unwrap_or_default())
    });

    println!("\n1. first read of user 42: a miss");
    get_user(&cache, &db, 42).await?;
    println!("\n2. second read: a hit, the loader does not run");
    get_user(&cache, &db, 42).await?;

    println!("\n3. write: update_user(user_id=42) renames Ada to Grace");
    let wrule = cache
        .write_rule("update_user", &UserId { user_id: 42 }, None, false)
        .await?;
    println!("    rule: {}", serde_json::to_string(&wrule)?);
    let db2 = db.clone();
    cache
        .write("update_user", &UserId { user_id: 42 }, move || async move {
            db2.lock().unwrap().insert(
                42,
                User {
                    id: 42,
                    name: "Grace".into(),
                },
            );
            Ok::<_, anyhow::Error>(())
        })
        .await?;

    println!("\n4. the write invalidated tag user:42 (O(1), whatever the number of entries)");
    let st = cache.stats();
    println!("    invalidations so far: {}", st.invalidations);

    println!("\n5. next read: the fresh value (recache already loaded it, so it is a hit)");
    let fresh = get_user(&cache, &db, 42).await?;
    anyhow::ensure!(fresh.name == "Grace", "stale read after a write");

    let st = cache.stats();
    println!(
        "\nstats: {} hits, {} misses, {} loads ({} by recache), {} invalidated tags",
        st.hits, st.misses, st.loads, st.recaches, st.invalidations
    );
    Ok(())
}
