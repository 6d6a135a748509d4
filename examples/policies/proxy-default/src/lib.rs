//! The policy `cachelet serve` uses when it is given none (what Varnish's default VCL gives):
//! every `GET` cached by its URL, for as long as the upstream's headers allow (the default TTL
//! bucket when they say nothing), tagged by its path and by each prefix of it; a `POST`, `PUT`,
//! `PATCH` or `DELETE` that succeeds invalidates the cached `GET`s of its own path (its target
//! URI, as RFC 9111 §4.4 says), whatever their query, and nothing else.
//!
//! `GET /users/42?expand=1` is stored under `url:/users/42?expand=1` with the tags `=/users/42`
//! (its path), `/`, `/users` and `/users/42` (its prefixes): `PUT /users/42` makes it stale,
//! but not `GET /users/42/settings` nor anything else; a purge of the tag `/users` invalidates
//! everything under `/users`, of `/` everything. Prefix invalidation on writes is a choice a
//! policy of your own can make (invalidate the prefix tag instead). Concurrent misses of one
//! URL make one upstream request across hosts sharing Redis (`lock`).
//!
//! Copy it as the start of a policy of your own: `cachelet check` shows what it declares.

use cachelet_guest::prelude::*;

/// The tag of exactly one path, whatever the query: what a write to that path invalidates.
fn exact(path: &str) -> String {
    let mut tag = String::from("=/");
    tag.push_str(path.trim_start_matches('/'));
    tag
}

/// Tags a path carries for purges: `/`, then each of its prefixes (at most 16 levels; deeper
/// paths carry the first 15 and themselves).
fn prefixes(path: &str) -> Vec<String> {
    let mut tags = vec!["/".to_string()];
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let mut at = String::new();
    for (i, part) in parts.iter().enumerate() {
        at.push('/');
        at.push_str(part);
        if i < 15 || i + 1 == parts.len() {
            tags.push(at.clone());
        }
    }
    tags
}

/// `text` with the bytes that delimit the key's parts written as `%XX`, so that distinct
/// URLs never make one key.
fn escape(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '%' => out.push_str("%25"),
            '?' => out.push_str("%3F"),
            '&' => out.push_str("%26"),
            '=' => out.push_str("%3D"),
            '~' => out.push_str("%7E"),
            c => out.push(c),
        }
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::Boolean(b) => b.to_string(),
        Value::Integer(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Text(t) | Value::Json(t) => t.clone(),
    }
}

/// The key of a URL: its path, then every query parameter in order (`=` before a value, `~`
/// before a list of the values of a repeated name, nothing for a name without a value).
fn key(a: &Args) -> Result<String, String> {
    let mut key = String::from("url:/");
    escape(&text(a.value("path")?), &mut key);
    let mut sep = '?';
    for (name, value) in a.iter().filter(|(n, _)| *n != "path") {
        key.push(sep);
        sep = '&';
        escape(name, &mut key);
        match value {
            Value::Null => {}
            Value::Json(j) => {
                key.push('~');
                escape(j, &mut key);
            }
            v => {
                key.push('=');
                escape(&text(v), &mut key);
            }
        }
    }
    Ok(key)
}

fn define(p: &mut Policy) {
    p.name("proxy-default").version("0.1.0");
    p.read("proxy_get")
        .params(["path"])
        .route("GET /{*path}")
        .rule_with(|a| {
            let path = text(a.value("path")?);
            let mut tags = vec![exact(&path)];
            tags.extend(prefixes(&path));
            Ok(Some(ReadRule::new(key(a)?).tags(tags).ttl(Ttl::DEFAULT).lock(true)))
        });
    for method in ["POST", "PUT", "PATCH", "DELETE"] {
        p.write(format!("proxy_{}", method.to_lowercase()))
            .params(["path"])
            .route(format!("{method} /{{*path}}"))
            .tags_with(|a| Ok(vec![exact(&text(a.value("path")?))]));
    }
}

cachelet_guest::export_policy!(define);

#[cfg(test)]
mod tests {
    use super::*;

    fn args(pairs: &[(&str, Value)]) -> Vec<(String, Value)> {
        pairs.iter().map(|(n, v)| (n.to_string(), v.clone())).collect()
    }

    #[test]
    fn urls_make_keys_tagged_by_their_prefixes() {
        let p = Compiled::new(define);
        assert!(p.errors().is_empty(), "{:?}", p.errors());
        let r = p
            .read(
                "proxy_get",
                &args(&[("path", "users/42".into()), ("expand", "1".into())]),
            )
            .unwrap()
            .unwrap();
        assert_eq!(r.key, "url:/users/42?expand=1");
        assert_eq!(r.tags, ["=/users/42", "/", "/users", "/users/42"]);
        let w = p
            .write("proxy_put", &args(&[("path", "users/42".into())]), None)
            .unwrap()
            .unwrap();
        assert_eq!(w.invalidate, ["=/users/42"], "its own path only");
        let w = p
            .write("proxy_post", &args(&[("path", "".into())]), None)
            .unwrap()
            .unwrap();
        assert_eq!(w.invalidate, ["=/"], "a POST / is not a flush of the site");
        let under = p
            .read("proxy_get", &args(&[("path", "users/42/settings".into())]))
            .unwrap()
            .unwrap();
        assert!(!under.tags.contains(&"=/users/42".to_string()));
    }

    #[test]
    fn distinct_urls_never_share_a_key() {
        let p = Compiled::new(define);
        let urls: Vec<Vec<(String, Value)>> = vec![
            args(&[("path", "a".into())]),
            args(&[("path", "a?b".into())]),
            args(&[("path", "a".into()), ("b", Value::Null)]),
            args(&[("path", "a".into()), ("b", "".into())]),
            args(&[("path", "a".into()), ("b", "1&c=2".into())]),
            args(&[("path", "a".into()), ("b", "1".into()), ("c", "2".into())]),
            args(&[("path", "a".into()), ("b", Value::Json("[\"1\",\"2\"]".into()))]),
            args(&[("path", "a".into()), ("b", "[\"1\",\"2\"]".into())]),
            args(&[("path", "a%2Fb".into())]),
            args(&[("path", "a/b".into())]),
        ];
        let keys: std::collections::HashSet<String> = urls
            .iter()
            .map(|a| p.read("proxy_get", a).unwrap().unwrap().key)
            .collect();
        assert_eq!(keys.len(), urls.len());
        let deep = "a/".repeat(40);
        assert_eq!(prefixes(&deep).len(), 17);
    }
}
