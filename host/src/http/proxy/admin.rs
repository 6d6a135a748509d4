//! The admin API under `/_cachelet/`: behind a bearer token (compared by digest, in constant
//! time), health, metrics, policies, purge and reload.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;

use super::{json, text, MetricsRender};
use crate::cache::Cache;

/// The SHA-256 of a token: tokens are compared by their digests, in constant time, so that
/// neither their bytes nor their length leak through timing.
pub(super) fn digest(token: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(token).into()
}

fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The admin API, under `/_cachelet/`.
pub(super) struct Admin {
    pub(super) cache: Cache,
    /// The digest of the token.
    pub(super) token: Option<[u8; 32]>,
    pub(super) metrics: Option<MetricsRender>,
    /// The last ping of the backend, and its answer.
    pub(super) pinged: std::sync::Mutex<Option<(Instant, Result<(), String>)>>,
    /// Served on a listener of its own ([`super::ProxyBuilder::admin_listener`]).
    pub(super) apart: bool,
}

/// What `POST /_cachelet/purge` takes (any of the fields).
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Purge {
    #[serde(default)]
    tags: Vec<String>,
    /// Entry keys as the policies render them (`user:42`).
    #[serde(default)]
    keys: Vec<String>,
    /// Globs over the namespace's keys (`user:*`).
    #[serde(default)]
    patterns: Vec<String>,
    /// Request paths (`/users/42?expand=true`): the entries their GET reads.
    #[serde(default)]
    urls: Vec<String>,
}

impl Admin {
    pub(super) async fn handle(&self, req: Request<Body>) -> Response<Body> {
        let path = req.uri().path().to_string();
        let method = req.method().clone();
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| digest(t.trim().as_bytes()));
        let authorized = match (&self.token, &given) {
            (Some(token), Some(g)) => same(g, token),
            _ => false,
        };
        if path == "/_cachelet/health" && method == Method::GET {
            return self.health(authorized).await;
        }
        let Some(token) = &self.token else {
            return text(
                StatusCode::FORBIDDEN,
                "the admin API is off: the proxy has no admin token (CACHELET_ADMIN_TOKEN)\n"
                    .into(),
            );
        };
        if !given.is_some_and(|g| same(&g, token)) {
            let mut r = text(
                StatusCode::UNAUTHORIZED,
                "the admin API needs Authorization: Bearer <token>\n".into(),
            );
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"cachelet\""),
            );
            return r;
        }
        match (method, path.as_str()) {
            (Method::POST, "/_cachelet/purge") => self.purge(req).await,
            (Method::POST, "/_cachelet/reload") => {
                let status = self.cache.reload_policies().await;
                json(
                    StatusCode::OK,
                    &serde_json::to_value(&status).unwrap_or_default(),
                )
            }
            (Method::GET, "/_cachelet/metrics") => match &self.metrics {
                Some(render) => {
                    let mut r = text(StatusCode::OK, render());
                    r.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("text/plain; version=0.0.4"),
                    );
                    r
                }
                None => text(StatusCode::NOT_FOUND, "no metrics recorder\n".into()),
            },
            (Method::GET, "/_cachelet/policies") => self.policies(),
            _ => text(
                StatusCode::NOT_FOUND,
                format!(
                    "no admin endpoint {path}: GET health, metrics, policies; POST purge, reload\n"
                ),
            ),
        }
    }

    /// Up (`200`) or down (`503`: the backend does not answer); the details (policies,
    /// quarantines, the backend's error, held invalidations) only with the token. The
    /// backend is pinged at most once a second, however often health is asked.
    pub(super) async fn health(&self, authorized: bool) -> Response<Body> {
        let backend = {
            let recent = self
                .pinged
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
                .filter(|(at, _)| at.elapsed() < Duration::from_secs(1));
            match recent {
                Some((_, answer)) => answer,
                None => {
                    let answer = self.cache.ping().await.map_err(|e| e.to_string());
                    *self.pinged.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some((Instant::now(), answer.clone()));
                    answer
                }
            }
        };
        let code = if backend.is_ok() {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        if !authorized {
            let up = if backend.is_ok() { "up" } else { "down" };
            return json(code, &serde_json::json!({ "status": up }));
        }
        let status = self.cache.policy_status();
        let quarantined: Vec<_> = status
            .policies
            .iter()
            .filter_map(|p| {
                let s = p.serving.as_ref()?;
                Some((s.name.clone(), s.quarantined.clone()?))
            })
            .collect();
        let body = serde_json::json!({
            "status": if backend.is_ok() { "up" } else { "down" },
            "backend": match &backend { Ok(()) => "ok".to_string(), Err(e) => e.clone() },
            "policies": self.cache.policies().iter().map(|p| &p.name).collect::<Vec<_>>(),
            "quarantined": quarantined.iter().map(|(n, why)| serde_json::json!({"policy": n, "why": why})).collect::<Vec<_>>(),
            "held_invalidations": self.cache.held_invalidations(),
        });
        json(code, &body)
    }

    fn policies(&self) -> Response<Body> {
        let status = self.cache.policy_status();
        let body = serde_json::json!({
            "policies": self.cache.policies().iter().map(|p| serde_json::json!({
                "name": p.name,
                "version": p.version,
                "ops": p.ops.iter().map(|o| serde_json::json!({
                    "name": o.name,
                    "kind": match o.kind { crate::policy::OpKind::Read => "read", crate::policy::OpKind::Write => "write" },
                    "route": o.route,
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "status": serde_json::to_value(&status).unwrap_or_default(),
        });
        json(StatusCode::OK, &body)
    }

    /// Invalidates `tags`: whether it was delivered, held (the backend could not take it now;
    /// this host delivers it as soon as it can) or had nothing to do.
    async fn invalidate(&self, tags: &[String]) -> Result<&'static str, Response<Body>> {
        match self.cache.invalidate(tags).await {
            Ok(crate::backend::Invalidation::Held { .. }) => Ok("held"),
            Ok(crate::backend::Invalidation::Nothing) => Ok("nothing"),
            Ok(_) => Ok("delivered"),
            Err(e) => Err(text(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n"))),
        }
    }

    async fn purge(&self, req: Request<Body>) -> Response<Body> {
        let bytes = match http_body_util::Limited::new(req.into_body(), 1 << 20)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(e) => return text(StatusCode::BAD_REQUEST, format!("purge body: {e}\n")),
        };
        let purge: Purge = match serde_json::from_slice(&bytes) {
            Ok(p) => p,
            Err(e) => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "purge body: {e} (expected JSON: {{\"tags\": [...], \"keys\": [...], \
                         \"patterns\": [...], \"urls\": [...]}})\n"
                    ),
                )
            }
        };
        let mut out = serde_json::Map::new();
        if !purge.tags.is_empty() {
            match self.invalidate(&purge.tags).await {
                Ok(how) => out.insert("tags".into(), how.into()),
                Err(e) => return e,
            };
        }
        let mut keys = purge.keys;
        let mut unrouted = Vec::new();
        for url in &purge.urls {
            let uri: Uri = match url.parse() {
                Ok(u) => u,
                Err(_) => return text(StatusCode::BAD_REQUEST, format!("{url:?} is not a path\n")),
            };
            let key = match self.cache.route("GET", uri.path(), uri.query()) {
                Some(r) => match self.cache.plan(&r.op, &r.args).await {
                    Ok(plan) => Some(self.cache.relative_key(&plan.key).to_string()),
                    Err(_) => None,
                },
                None => None,
            };
            match key {
                Some(k) => keys.push(k),
                None => unrouted.push(url.clone()),
            }
        }
        let mut deleted = 0u64;
        if !keys.is_empty() {
            // Each entry and its variants carry their key as a tag: one invalidation, fenced
            // (a fill in flight does not put a purged answer back), no scan of the namespace.
            let tags: Vec<String> = keys.iter().map(|k| crate::tags::of_key(k)).collect();
            match self.invalidate(&tags).await {
                Ok(how) => out.insert("keys".into(), how.into()),
                Err(e) => return e,
            };
        }
        for key in &keys {
            // The entry itself too, whoever stored it (a direct write carries no such tag).
            match self.cache.delete(key).await {
                Ok(d) => deleted += u64::from(d),
                Err(e) => return text(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
            }
        }
        for pattern in &purge.patterns {
            match self.cache.delete_match(pattern).await {
                Ok(n) => deleted += n,
                Err(e) => return text(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
            }
        }
        if !keys.is_empty() || !purge.patterns.is_empty() {
            out.insert("deleted".into(), deleted.into());
        }
        if !unrouted.is_empty() {
            out.insert("not_cached_urls".into(), unrouted.into());
        }
        json(StatusCode::OK, &serde_json::Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_by_digest() {
        assert!(same(&digest(b"s3cret"), &digest(b"s3cret")));
        assert!(!same(&digest(b"s3cret"), &digest(b"s3cre")));
        assert!(!same(&digest(b"s3cret"), &digest(b"")));
    }
}
