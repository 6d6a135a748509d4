//! The modelled library's FastAPI examples (users, org users, the user resource's profile and
//! settings, recache after an update) as an axum service, cached through the seed policy with
//! the attribute macros. `main.rs` serves it; `tests/http.rs` drives it over real HTTP.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use cachelet::Cache;
use serde::{Deserialize, Serialize};

/// A user, as the service stores it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// The user's id.
    pub id: u64,
    /// The user's name.
    pub name: String,
}

/// The service's "database": users in memory, and how many times it was read.
#[derive(Clone, Default)]
pub struct Db {
    users: Arc<Mutex<HashMap<u64, String>>>,
    reads: Arc<AtomicU64>,
    /// How long an update takes (to test a write in flight at shutdown).
    pub write_delay: Arc<Mutex<Duration>>,
}

impl Db {
    /// A database holding `users`.
    pub fn with(users: &[(u64, &str)]) -> Db {
        let db = Db::default();
        for (id, name) in users {
            db.users.lock().unwrap().insert(*id, name.to_string());
        }
        db
    }

    /// Reads so far.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::SeqCst)
    }

    fn fetch(&self, id: u64) -> Result<User, AppError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        let name = self.users.lock().unwrap().get(&id).cloned();
        name.map(|name| User { id, name }).ok_or(AppError::NotFound)
    }

    async fn save(&self, id: u64, name: &str) {
        let delay = *self.write_delay.lock().unwrap();
        tokio::time::sleep(delay).await;
        self.users.lock().unwrap().insert(id, name.to_string());
    }
}

/// The service's errors, as HTTP answers.
#[derive(Debug)]
pub enum AppError {
    /// No such user.
    NotFound,
    /// The load another request made for the same key failed.
    Load(cachelet::LoadError),
}

impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AppError::NotFound => write!(f, "not found"),
            AppError::Load(e) => write!(f, "{e}"),
        }
    }
}

impl From<cachelet::LoadError> for AppError {
    fn from(e: cachelet::LoadError) -> Self {
        AppError::Load(e)
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        match self {
            AppError::NotFound => (StatusCode::NOT_FOUND, "not found").into_response(),
            AppError::Load(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
        }
    }
}

// ---- cached functions: @cache_read / @cache_write of the guide ----

/// `@cache_read(key="user:{user_id}", ttl=300)`
#[cachelet::read("get_user")]
pub async fn get_user(
    #[cachelet(cache)] cache: &Cache,
    #[cachelet(skip)] db: &Db,
    user_id: u64,
) -> Result<User, AppError> {
    db.fetch(user_id)
}

/// `@cache_read(key="org:{org_id}:user:{user_id}", ttl=600)`, tagged by user and org.
#[cachelet::read("get_org_user")]
pub async fn get_org_user(
    #[cachelet(cache)] cache: &Cache,
    #[cachelet(skip)] db: &Db,
    org_id: u64,
    user_id: u64,
) -> Result<User, AppError> {
    let mut u = db.fetch(user_id)?;
    u.name = format!("{} (org {org_id})", u.name);
    Ok(u)
}

/// `@cache_write(tags=["user:{user_id}"], recache=[recache(get_user, include=["user_id"])])`
#[cachelet::write("update_user")]
pub async fn update_user(
    #[cachelet(cache)] cache: &Cache,
    #[cachelet(skip)] db: &Db,
    user_id: u64,
    data: String,
) -> Result<(), AppError> {
    db.save(user_id, &data).await;
    Ok(())
}

/// `user = resource("user", "user_id")`; `@user.cache_read(suffix="profile")`
#[cachelet::read("get_user_profile")]
pub async fn get_user_profile(
    #[cachelet(cache)] cache: &Cache,
    #[cachelet(skip)] db: &Db,
    user_id: u64,
) -> Result<String, AppError> {
    Ok(format!("profile of {}", db.fetch(user_id)?.name))
}

/// `@user.cache_read(suffix="settings")`
#[cachelet::read("get_user_settings")]
pub async fn get_user_settings(
    #[cachelet(cache)] cache: &Cache,
    #[cachelet(skip)] db: &Db,
    user_id: u64,
) -> Result<String, AppError> {
    Ok(format!("settings of {}", db.fetch(user_id)?.name))
}

/// `@user.cache_write(recache=[profile, settings])`: every entry of the user, warmed again.
#[cachelet::write("update_user_entity")]
pub async fn update_user_entity(
    #[cachelet(cache)] cache: &Cache,
    #[cachelet(skip)] db: &Db,
    user_id: u64,
    data: String,
) -> Result<(), AppError> {
    db.save(user_id, &data).await;
    Ok(())
}

// ---- the HTTP service ----

/// The app's state: the cache, the database, the metrics to render.
#[derive(Clone)]
pub struct AppState {
    /// The cache (its policy: the seed).
    pub cache: Cache,
    /// The database.
    pub db: Db,
    /// Renders the Prometheus metrics, if a recorder was installed.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

/// A request body: the new name.
#[derive(Deserialize)]
pub struct Update {
    /// The new name.
    pub name: String,
}

/// The routes of the guide's examples, and `/metrics`.
pub fn app(state: AppState) -> Router {
    // Recache calls the cached functions with the database the cache was given.
    state.cache.provide(state.db.clone());
    Router::new()
        .route(
            "/users/{user_id}",
            get(
                |State(s): State<AppState>, Path(id): Path<u64>| async move {
                    get_user(&s.cache, &s.db, id).await.map(Json)
                },
            )
            .put(
                |State(s): State<AppState>, Path(id): Path<u64>, Json(u): Json<Update>| async move {
                    update_user(&s.cache, &s.db, id, u.name).await
                },
            ),
        )
        .route(
            "/orgs/{org_id}/users/{user_id}",
            get(
                |State(s): State<AppState>, Path((org, id)): Path<(u64, u64)>| async move {
                    get_org_user(&s.cache, &s.db, org, id).await.map(Json)
                },
            ),
        )
        .route(
            "/users/{user_id}/profile",
            get(
                |State(s): State<AppState>, Path(id): Path<u64>| async move {
                    get_user_profile(&s.cache, &s.db, id).await
                },
            ),
        )
        .route(
            "/users/{user_id}/settings",
            get(
                |State(s): State<AppState>, Path(id): Path<u64>| async move {
                    get_user_settings(&s.cache, &s.db, id).await
                },
            ),
        )
        .route(
            "/users/{user_id}/entity",
            axum::routing::put(
                |State(s): State<AppState>, Path(id): Path<u64>, Json(u): Json<Update>| async move {
                    update_user_entity(&s.cache, &s.db, id, u.name).await
                },
            ),
        )
        .route(
            "/metrics",
            get(|State(s): State<AppState>| async move {
                s.metrics.map(|m| m.render()).unwrap_or_default()
            }),
        )
        .with_state(state)
}
