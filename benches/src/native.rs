//! The seed's `get_search` rule as a native Rust function: the baseline the Wasm policy calls
//! are measured against (shared by `cachelet-bench` and `languages`).

use cachelet::{Args, ReadRule, Ttl, Value};

/// `search:{q}` tagged `search` for 120 s; an empty query is not cached.
pub fn search_rule(args: &Args) -> Option<ReadRule> {
    let q = match args.get("q")? {
        Value::Text(s) => s.clone(),
        other => other.to_string(),
    };
    if q.is_empty() {
        return None;
    }
    Some(ReadRule {
        key: format!("search:{q}"),
        ttl: Ttl::Seconds(120),
        tags: vec!["search".into()],
        early_ttl: None,
        refresh: false,
        lock: false,
    })
}
