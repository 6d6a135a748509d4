//! The attribute macros, through the seed policy (compiled from its Rust source) on the memory
//! backend and a real Redis server: a read with several parameters (one skipped), a write with
//! tags and recache, a resource read and write, a recache that warms a function nobody
//! registered by hand, the installed cache, and the two expansions of a read (a body that owns
//! its parameters refreshes early in the background, one that borrows refreshes in line).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cachelet::Cache;
use cachelet_tests::{component, suite, Target};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
}

/// The service's error: the macros return it as it is.
#[derive(Debug, PartialEq)]
enum AppError {
    NotFound(u64),
    Cache(String),
}

impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AppError::NotFound(id) => write!(f, "user {id} not found"),
            AppError::Cache(m) => write!(f, "{m}"),
        }
    }
}

impl From<cachelet::LoadError> for AppError {
    fn from(e: cachelet::LoadError) -> Self {
        AppError::Cache(e.to_string())
    }
}

/// The service's database: users, and how many times it was read.
#[derive(Clone, Default)]
struct Db {
    users: Arc<Mutex<HashMap<u64, String>>>,
    reads: Arc<AtomicU64>,
}

impl Db {
    fn with(users: &[(u64, &str)]) -> Db {
        let db = Db::default();
        for (id, name) in users {
            db.put(*id, name);
        }
        db
    }

    fn put(&self, id: u64, name: &str) {
        self.users.lock().unwrap().insert(id, name.to_string());
    }

    fn get(&self, id: u64) -> Result<User, AppError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        let users = self.users.lock().unwrap();
        let name = users.get(&id).ok_or(AppError::NotFound(id))?;
        Ok(User {
            id,
            name: name.clone(),
        })
    }

    fn reads(&self) -> u64 {
        self.reads.load(Ordering::SeqCst)
    }
}

// ---- the service's functions, as a user writes them ----

#[cachelet::read("get_user")]
async fn get_user(
    #[cachelet(cache)] cache: &Cache,
    #[cachelet(skip)] db: &Db,
    user_id: u64,
) -> Result<User, AppError> {
    db.get(user_id)
}

#[cachelet::read("get_org_user")]
async fn get_org_user(
    #[cachelet(cache)] cache: &Cache,
    org_id: u64,
    #[cachelet(skip)] db: &Db,
    user_id: u64,
) -> Result<User, AppError> {
    let mut u = db.get(user_id)?;
    u.name = format!("{} (org {org_id})", u.name);
    Ok(u)
}

#[cachelet::write("update_user")]
async fn update_user(
    #[cachelet(cache)] cache: &Cache,
    #[cachelet(skip)] db: &Db,
    user_id: u64,
    data: String,
) -> Result<(), AppError> {
    db.put(user_id, &data);
    Ok(())
}

// resource("user", "user_id"): profile and settings, both warmed again by the entity's write.
#[cachelet::read("get_user_profile")]
async fn get_user_profile(
    #[cachelet(cache)] cache: &Cache,
    #[cachelet(skip)] db: &Db,
    user_id: u64,
) -> Result<String, AppError> {
    Ok(format!("profile of {}", db.get(user_id)?.name))
}

#[cachelet::read("get_user_settings")]
async fn get_user_settings(
    #[cachelet(cache)] cache: &Cache,
    #[cachelet(skip)] db: &Db,
    user_id: u64,
) -> Result<String, AppError> {
    Ok(format!("settings of {}", db.get(user_id)?.name))
}

#[cachelet::write("update_user_entity")]
async fn update_user_entity(
    #[cachelet(cache)] cache: &Cache,
    #[cachelet(skip)] db: &Db,
    user_id: u64,
    data: String,
) -> Result<u64, AppError> {
    db.put(user_id, &data);
    Ok(user_id)
}

/// Owns its parameters (the cache is the one passed, a clone): an early refresh runs in the
/// background.
#[cachelet::read("get_ticker")]
async fn get_ticker(
    #[cachelet(cache)] cache: Cache,
    #[cachelet(skip)] db: Db,
    symbol: String,
) -> Result<String, AppError> {
    Ok(format!("{symbol}={}", db.get(1)?.name))
}

/// Borrows (`&str`, `&Db`): an early refresh runs in the call that claims it.
#[cachelet::read("get_early")]
async fn get_early(
    #[cachelet(cache)] cache: &Cache,
    #[cachelet(skip)] db: &Db,
    #[cachelet(rename = "id")] symbol: &str,
) -> Result<String, AppError> {
    Ok(format!("{symbol}={}", db.get(1)?.name))
}

/// Uses the installed cache.
#[cachelet::read("get_config")]
async fn get_config(
    key: String,
    #[cachelet(skip)] calls: Arc<AtomicU64>,
) -> Result<String, AppError> {
    calls.fetch_add(1, Ordering::SeqCst);
    Ok(format!("value of {key}"))
}

/// An argument that does not convert (a map with non-text keys): served uncached.
#[cachelet::read("get_rate_limit")]
async fn get_rate_limit(
    #[cachelet(cache)] cache: &Cache,
    #[cachelet(skip)] db: &Db,
    ip: HashMap<(u8, u8), u8>,
) -> Result<u64, AppError> {
    Ok(db.get(1)?.id + ip.len() as u64)
}

async fn seed(t: &Target, db: &Db) -> Cache {
    let cache = Cache::builder()
        .settings(t.settings())
        .policy_file(component("seed-rust"))
        .build()
        .await
        .expect("the seed policy loads");
    cache.provide(db.clone());
    cache
}

pub async fn a_read_caches_by_its_arguments_and_skips_the_skipped(t: &Target) {
    let db = Db::with(&[(1, "ann"), (2, "bob")]);
    let c = seed(t, &db).await;
    let ann = get_org_user(&c, 7, &db, 1).await.unwrap();
    assert_eq!(ann.name, "ann (org 7)");
    assert_eq!(db.reads(), 1);
    // A hit: the body does not run (the skipped `db` is not part of the key).
    assert_eq!(get_org_user(&c, 7, &Db::default(), 1).await.unwrap(), ann);
    assert_eq!(db.reads(), 1);
    // Other arguments, another key.
    assert_eq!(
        get_org_user(&c, 8, &db, 1).await.unwrap().name,
        "ann (org 8)"
    );
    assert_eq!(
        get_org_user(&c, 7, &db, 2).await.unwrap().name,
        "bob (org 7)"
    );
    assert_eq!(db.reads(), 3);
    let s = c.stats();
    assert_eq!((s.hits, s.misses), (1, 3));
}

pub async fn the_functions_error_is_its_own_and_not_cached(t: &Target) {
    let db = Db::with(&[]);
    let c = seed(t, &db).await;
    assert_eq!(get_user(&c, &db, 9).await, Err(AppError::NotFound(9)));
    db.put(9, "zoe");
    assert_eq!(get_user(&c, &db, 9).await.unwrap().name, "zoe");
    assert_eq!(db.reads(), 2);
}

pub async fn a_write_invalidates_and_recaches_a_function_nobody_registered(t: &Target) {
    let db = Db::with(&[(1, "ann")]);
    let c = seed(t, &db).await;
    assert_eq!(get_user(&c, &db, 1).await.unwrap().name, "ann");
    assert_eq!(db.reads(), 1);
    // update_user invalidates user:{user_id} and recaches get_user with the user_id: the
    // recache calls get_user's body, found by its op, with the Db the cache was given.
    update_user(&c, &db, 1, "ann v2".into()).await.unwrap();
    assert_eq!(db.reads(), 2, "the recache loaded once");
    assert_eq!(c.stats().recaches, 1);
    let after = get_user(&c, &Db::default(), 1).await.unwrap();
    assert_eq!(after.name, "ann v2", "the recached value is the new one");
    assert_eq!(db.reads(), 2, "and it is a hit");
}

pub async fn recaches_without_a_loader_are_listed(t: &Target) {
    let c = seed(t, &Db::default()).await;
    // get_user_with_options and get_user_details have no function in this program.
    assert_eq!(
        c.recaches_without_loader(),
        ["get_user_details", "get_user_with_options"]
    );
    c.register_loader("get_user_details", |_: serde_json::Value| async {
        Ok::<_, String>(0)
    });
    assert_eq!(c.recaches_without_loader(), ["get_user_with_options"]);
}

pub async fn a_resource_write_recaches_its_reads(t: &Target) {
    let db = Db::with(&[(5, "eve")]);
    let c = seed(t, &db).await;
    assert_eq!(
        get_user_profile(&c, &db, 5).await.unwrap(),
        "profile of eve"
    );
    assert_eq!(
        get_user_settings(&c, &db, 5).await.unwrap(),
        "settings of eve"
    );
    assert_eq!(db.reads(), 2);
    assert_eq!(
        get_user_profile(&c, &db, 5).await.unwrap(),
        "profile of eve"
    );
    assert_eq!(db.reads(), 2);
    assert_eq!(update_user_entity(&c, &db, 5, "eve v2".into()).await, Ok(5));
    assert_eq!(db.reads(), 4, "both reads of the resource were recached");
    let none = Db::default();
    assert_eq!(
        get_user_profile(&c, &none, 5).await.unwrap(),
        "profile of eve v2"
    );
    assert_eq!(
        get_user_settings(&c, &none, 5).await.unwrap(),
        "settings of eve v2"
    );
    assert_eq!(none.reads(), 0);
}

pub async fn an_argument_that_does_not_convert_is_served_uncached(t: &Target) {
    let db = Db::with(&[(1, "ann")]);
    let c = seed(t, &db).await;
    let ip = HashMap::from([((10, 0), 1)]);
    assert_eq!(get_rate_limit(&c, &db, ip.clone()).await, Ok(2));
    assert_eq!(get_rate_limit(&c, &db, ip).await, Ok(2));
    assert_eq!(db.reads(), 2, "never cached");
    assert_eq!(c.stats().uncached, 2);
}

pub async fn an_owning_body_refreshes_early_in_the_background(t: &Target) {
    let db = Db::with(&[(1, "v1")]);
    let c = seed(t, &db).await;
    assert_eq!(
        get_ticker(c.clone(), db.clone(), "ACME".into())
            .await
            .unwrap(),
        "ACME=v1"
    );
    db.put(1, "v2");
    // get_ticker: ttl 10 s, early_ttl 1 s.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // The hit that claims the refresh is served the cached value at once...
    assert_eq!(
        get_ticker(c.clone(), db.clone(), "ACME".into())
            .await
            .unwrap(),
        "ACME=v1"
    );
    // ...and the refresh lands in the background.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if get_ticker(c.clone(), Db::default(), "ACME".into())
            .await
            .unwrap()
            == "ACME=v2"
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no background refresh"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(db.reads(), 2);
}

pub async fn a_borrowing_body_refreshes_early_in_line(t: &Target) {
    let db = Db::with(&[(1, "v1")]);
    let c = Cache::builder()
        .settings(t.settings())
        .policy_file(component("engine-rules"))
        .build()
        .await
        .unwrap();
    assert_eq!(get_early(&c, &db, "x").await.unwrap(), "x=v1");
    db.put(1, "v2");
    // get_early: ttl 4 s, early_ttl 1 s.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // The caller that claims the refresh runs the loader itself and gets the new value.
    assert_eq!(get_early(&c, &db, "x").await.unwrap(), "x=v2");
    assert_eq!(db.reads(), 2);
    assert_eq!(c.stats().early_refreshes, 1);
    // Stored: the next call is a hit.
    assert_eq!(get_early(&c, &Db::default(), "x").await.unwrap(), "x=v2");
    assert_eq!(db.reads(), 2);
}

suite!(
    memory,
    Target::memory(),
    [
        a_read_caches_by_its_arguments_and_skips_the_skipped,
        the_functions_error_is_its_own_and_not_cached,
        a_write_invalidates_and_recaches_a_function_nobody_registered,
        a_resource_write_recaches_its_reads,
        recaches_without_a_loader_are_listed,
        an_argument_that_does_not_convert_is_served_uncached,
        an_owning_body_refreshes_early_in_the_background,
        a_borrowing_body_refreshes_early_in_line,
    ]
);

suite!(
    redis,
    Target::redis(),
    [
        a_read_caches_by_its_arguments_and_skips_the_skipped,
        the_functions_error_is_its_own_and_not_cached,
        a_write_invalidates_and_recaches_a_function_nobody_registered,
        a_resource_write_recaches_its_reads,
        recaches_without_a_loader_are_listed,
        an_argument_that_does_not_convert_is_served_uncached,
        an_owning_body_refreshes_early_in_the_background,
        a_borrowing_body_refreshes_early_in_line,
    ]
);

/// The one test of this process that uses the installed cache (it is global).
#[tokio::test]
async fn functions_without_a_cache_parameter_use_the_installed_one() {
    let calls = Arc::new(AtomicU64::new(0));
    // Before anything is installed, the body runs, uncached.
    assert_eq!(
        get_config("a".into(), calls.clone()).await.unwrap(),
        "value of a"
    );
    assert_eq!(
        get_config("a".into(), calls.clone()).await.unwrap(),
        "value of a"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let cache = Cache::builder()
        .settings(Target::memory().settings())
        .policy_file(component("seed-rust"))
        .build()
        .await
        .unwrap();
    assert!(cachelet::install(cache.clone()).is_none());
    get_config("a".into(), calls.clone()).await.unwrap();
    get_config("a".into(), calls.clone()).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 3, "cached once installed");
    assert_eq!(cache.stats().hits, 1);
}
