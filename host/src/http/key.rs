//! The key phase: what of a request its entry's key holds. A part of a request that reaches the
//! upstream and can change its answer is in the key, is rewritten by the proxy (the forwarding
//! headers, `Host`), or makes the request pass: here, the query parameters that the op's key
//! does not render.

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
