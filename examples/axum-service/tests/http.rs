//! The service over real HTTP, with a real client, on the seed policy compiled from its source,
//! on the memory backend and a real Redis server: miss, hit, a PUT invalidates, the next GET is
//! fresh, the recache made it a hit with the new data; the resource's reads; the metrics; and a
//! graceful shutdown with a write in flight loses no invalidation.

use std::sync::OnceLock;
use std::time::Duration;

use axum_service::{app, AppState, Db};
use cachelet::Cache;
use cachelet_tests::{component, suite, Target};
use metrics_exporter_prometheus::PrometheusHandle;

fn metrics() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            metrics_exporter_prometheus::PrometheusBuilder::new()
                .install_recorder()
                .unwrap()
        })
        .clone()
}

struct Service {
    base: String,
    db: Db,
    cache: Cache,
    client: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start(t: &Target) -> Service {
    let metrics = metrics();
    let cache = Cache::builder()
        .settings(t.settings())
        .policy_file(component("seed-rust"))
        .build()
        .await
        .expect("the seed policy loads");
    let db = Db::with(&[(1, "ann"), (2, "bob")]);
    let router = app(AppState {
        cache: cache.clone(),
        db: db.clone(),
        metrics: Some(metrics),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(cachelet::axum::serve(
        listener,
        router,
        cache.clone(),
        async move {
            let _ = stopped.await;
        },
    ));
    Service {
        base,
        db,
        cache,
        client: reqwest::Client::new(),
        stop: Some(stop),
        served,
    }
}

impl Service {
    async fn get(&self, path: &str) -> String {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "GET {path}");
        r.text().await.unwrap()
    }

    async fn put(&self, path: &str, name: &str) -> u16 {
        let r = self
            .client
            .put(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(format!("{{\"name\": \"{name}\"}}"))
            .send()
            .await
            .unwrap();
        r.status().as_u16()
    }
}

pub async fn miss_hit_invalidate_and_recache(t: &Target) {
    let s = start(t).await;
    assert_eq!(s.get("/users/1").await, r#"{"id":1,"name":"ann"}"#);
    assert_eq!(s.db.reads(), 1, "a miss");
    assert_eq!(s.get("/users/1").await, r#"{"id":1,"name":"ann"}"#);
    assert_eq!(s.db.reads(), 1, "a hit");
    assert_eq!(s.put("/users/1", "ann v2").await, 200);
    // The write invalidated user:1, and its recache loaded get_user(1) again.
    assert_eq!(s.db.reads(), 2);
    assert_eq!(s.get("/users/1").await, r#"{"id":1,"name":"ann v2"}"#);
    assert_eq!(s.db.reads(), 2, "fresh, and a hit");
    // The org user is tagged user:1 too: invalidated, not recached.
    assert_eq!(
        s.get("/orgs/7/users/1").await,
        r#"{"id":1,"name":"ann v2 (org 7)"}"#
    );
    assert_eq!(s.db.reads(), 3);
}

pub async fn the_resource_write_recaches_profile_and_settings(t: &Target) {
    let s = start(t).await;
    assert_eq!(s.get("/users/2/profile").await, "profile of bob");
    assert_eq!(s.get("/users/2/settings").await, "settings of bob");
    assert_eq!(s.db.reads(), 2);
    assert_eq!(s.put("/users/2/entity", "bob v2").await, 200);
    assert_eq!(s.db.reads(), 4, "both recached");
    assert_eq!(s.get("/users/2/profile").await, "profile of bob v2");
    assert_eq!(s.get("/users/2/settings").await, "settings of bob v2");
    assert_eq!(s.db.reads(), 4);
    let m = s.get("/metrics").await;
    assert!(
        m.contains(
            r#"cachelet_reads_total{policy="seed-rust",op="get_user_profile",outcome="hit"}"#
        ),
        "{m}"
    );
}

pub async fn a_write_in_flight_at_shutdown_loses_no_invalidation(t: &Target) {
    let mut s = start(t).await;
    assert_eq!(s.get("/users/1").await, r#"{"id":1,"name":"ann"}"#);
    // Cached and carrying the user's tag, but warmed by no recache: only the write's
    // invalidation makes it fresh (get_user is recached with the new data either way).
    let org = axum_service::get_org_user(&s.cache, &s.db, 4, 1)
        .await
        .unwrap();
    assert_eq!(org.name, "ann (org 4)");
    *s.db.write_delay.lock().unwrap() = Duration::from_millis(300);
    let put = {
        let client = s.client.clone();
        let url = format!("{}/users/1", s.base);
        tokio::spawn(async move {
            client
                .put(url)
                .header("content-type", "application/json")
                .body(r#"{"name": "ann v3"}"#)
                .send()
                .await
                .map(|r| r.status().as_u16())
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    s.stop.take().unwrap().send(()).unwrap();
    // The server stops accepting, lets the write finish, then shuts the cache down.
    s.served.await.unwrap().unwrap();
    assert_eq!(
        put.await.unwrap().unwrap(),
        200,
        "the write in flight was answered"
    );
    // Nothing cached before the write is served after it.
    let fresh = axum_service::get_user(&s.cache, &s.db, 1).await.unwrap();
    assert_eq!(fresh.name, "ann v3");
    let org = axum_service::get_org_user(&s.cache, &s.db, 4, 1)
        .await
        .unwrap();
    assert_eq!(org.name, "ann v3 (org 4)", "the invalidation was not lost");
}

suite!(
    memory,
    Target::memory(),
    [
        miss_hit_invalidate_and_recache,
        the_resource_write_recaches_profile_and_settings,
        a_write_in_flight_at_shutdown_loses_no_invalidation,
    ]
);

suite!(
    redis,
    Target::redis(),
    [
        miss_hit_invalidate_and_recache,
        the_resource_write_recaches_profile_and_settings,
        a_write_in_flight_at_shutdown_loses_no_invalidation,
    ]
);
