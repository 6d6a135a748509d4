//! The key phase: what of a request its entry's key holds. A part of a request that reaches the
//! upstream and can change its answer is in the key, is rewritten by the proxy (the forwarding
//! headers, `Host`), or makes the request pass: here, the URI a routed read asks the upstream
//! for, and the query parameters that the op's key does not render.

use axum::http::uri::{PathAndQuery, Uri};

use crate::args::Args;
use crate::cache::Cache;
use crate::policy::Routed;

/// Most query parameters a cached request may carry: past them, it passes (each one is checked
/// with a rule of its own).
const MAX_QUERY_PARAMS: usize = 32;

/// Why a routed read with this query may not be served from, or stored under, `key` (its
/// entry's full key): a query parameter that the key does not render (two requests that differ
/// only by it would share an entry the upstream answered for one of them), one named like a
/// path parameter (the path's value is the argument, the query's still reaches the upstream), or
/// too many of them. `None`: every parameter is keyed.
pub(super) async fn unkeyed_query(cache: &Cache, routed: &Routed, key: &str) -> Option<String> {
    let q = &routed.query;
    if let Some(name) = &q.shadowing {
        return Some(format!("query parameter {name:?} shadowed by the path's"));
    }
    if q.names.len() > MAX_QUERY_PARAMS {
        return Some(format!("more than {MAX_QUERY_PARAMS} query parameters"));
    }
    let set = cache.inner.policies.load();
    for name in &q.names {
        let mut without = Args::new();
        for (n, v) in routed.args.iter().filter(|(n, _)| n != name) {
            without.set(n.to_string(), v.clone());
        }
        // The same key without it: the parameter is not keyed. A rule that cannot be made
        // without it (a template that needs it, no caching) says the key depends on it.
        if let Ok(Some(rule)) = set.read_rule(&routed.op, &without).await {
            if cache.inner.store.key(&rule.key) == key {
                return Some(format!("query parameter {name:?} not in the key"));
            }
        }
    }
    None
}

/// The URI a routed read asks the upstream for: rebuilt from its arguments (the route's
/// parameters percent-encoded one way, every query parameter after them), so that spellings
/// of one request the key does not tell apart (`/users/%31`, `/users/1`; `?q=a+b`, `?q=a%20b`)
/// reach the upstream as one URI, the one whose answer the entry holds. `None`: the request's
/// own URI is that one already. Made only for a request that leaves for the upstream: a hit
/// never pays for it.
pub(super) fn upstream_uri(cache: &Cache, op: &str, args: &Args, uri: &Uri) -> Option<Uri> {
    let path = cache.route_path(op, args)?;
    if uri.path_and_query().map(PathAndQuery::as_str) == Some(path.as_str()) {
        return None;
    }
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(path).ok()?);
    Uri::from_parts(parts).ok()
}

/// Adds the request's `Host` to an entry's key (a layer that keys hosts): as it is when short,
/// by its digest past 255 bytes; a request without one is keyed apart from every host.
pub(super) fn push_host(key: &mut String, host: Option<&axum::http::HeaderValue>) {
    let Some(host) = host else {
        key.push_str("|nohost");
        return;
    };
    key.push_str("|host=");
    let bytes = host.as_bytes();
    if bytes.len() <= 255 && bytes.iter().all(|b| b.is_ascii_graphic() && *b != b'|') {
        key.push_str(std::str::from_utf8(bytes).expect("ASCII"));
    } else {
        key.push_str(&crate::digest::hex_sha256(bytes));
    }
}
