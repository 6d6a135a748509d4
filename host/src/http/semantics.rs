//! HTTP caching rules (RFC 9111, as a shared cache), decided once when a response arrives:
//! whether it may be stored, how long it is fresh, how long it may be served stale, by which
//! request headers it varies, which tags it names. Hits only compare clocks.
//!
//! Storability and freshness come from `http-cache-semantics` (`no-store`, `private`,
//! `Authorization`, status codes, `s-maxage` / `max-age` / `Expires`, `Age`, `Date`); the
//! route's options and the policy's TTL decide what the upstream does not say.

use std::time::{Duration, SystemTime};

use axum::http::{header, request, response, HeaderMap, HeaderName, HeaderValue};
use http_cache_semantics::{CacheOptions, CachePolicy};

use super::entry::Freshness;
use crate::route::RouteOptions;

/// Headers that describe one connection, not the message: never forwarded, never stored.
pub(crate) const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes the hop-by-hop headers, and those the `Connection` header names.
pub(crate) fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named.iter().chain(HOP_BY_HOP.iter()) {
        h.remove(n);
    }
    h.remove("proxy-connection");
}

/// The request's conditional headers: removed from a request the cache forwards to fill an
/// entry (it wants the whole response), and answered by the cache itself.
pub(crate) const CONDITIONAL: [HeaderName; 5] = [
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_MATCH,
    header::IF_UNMODIFIED_SINCE,
    header::IF_RANGE,
];

/// A request whose own `Cache-Control` says `no-store`: its answer is fetched for it alone and
/// kept by no one (the directive binds this request, not the next client's).
pub(crate) fn request_no_store(h: &HeaderMap) -> bool {
    has(h, "no-store")
}

/// What a request's `Range` asks of a stored body of `len` bytes (RFC 9110 §14): `None` to
/// answer whole (no range, a unit other than bytes, several ranges, or an `If-Range` that the
/// stored validators do not match), `Some(Ok((first, last)))` for a `206` of those bytes
/// (inclusive), `Some(Err(()))` for a `416` (nothing of the body is in the range).
pub(crate) fn byte_range(
    req: &HeaderMap,
    len: u64,
    etag: Option<&[u8]>,
    last_modified: Option<&[u8]>,
) -> Option<Result<(u64, u64), ()>> {
    let range = req.get(header::RANGE)?.to_str().ok()?.trim();
    if let Some(cond) = req.get(header::IF_RANGE) {
        // A strong entity tag, or the exact date: anything else asks for the whole body.
        let cond = cond.as_bytes();
        let matches = if cond.starts_with(b"\"") {
            etag == Some(cond)
        } else {
            last_modified == Some(cond)
        };
        if !matches {
            return None;
        }
    }
    let spec = range.strip_prefix("bytes=")?.trim();
    if spec.contains(',') {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    let (first, last) = (first.trim(), last.trim());
    let number = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    if first.is_empty() {
        // The last N bytes.
        let n = number(last)?;
        if n == 0 || len == 0 {
            return Some(Err(()));
        }
        return Some(Ok((len.saturating_sub(n), len - 1)));
    }
    let first = number(first)?;
    let last = if last.is_empty() {
        u64::MAX
    } else {
        let l = number(last)?;
        if l < first {
            return None;
        }
        l
    };
    if first >= len {
        return Some(Err(()));
    }
    Some(Ok((first, last.min(len - 1))))
}

/// Whether an answer to a request with `Authorization` may be stored by a shared cache (RFC
/// 9111 §3.5: `public`, `s-maxage` or `must-revalidate`); true for a request without it.
pub(crate) fn shared_despite_authorization(req: &HeaderMap, res: &HeaderMap) -> bool {
    !req.contains_key(header::AUTHORIZATION)
        || has(res, "public")
        || has(res, "s-maxage")
        || has(res, "must-revalidate")
}

/// Whether a request's own directives (RFC 9111 §5.2.1) accept a stored response of this
/// freshness now: `no-cache` never (it asks the origin), `max-age=N` while its age is at most
/// N, `min-fresh=N` while it stays fresh N seconds more, and a stale one only within
/// `max-stale` (any staleness without a value). `must-revalidate`, `proxy-revalidate` and
/// `s-maxage` answers are never served stale on a client's say.
pub(crate) fn request_accepts(
    req: &HeaderMap,
    f: &Freshness,
    stored: &HeaderMap,
    now_ms: u64,
) -> bool {
    if has(req, "no-cache")
        || (!req.contains_key(header::CACHE_CONTROL)
            && req
                .get_all(header::PRAGMA)
                .iter()
                .any(|v| v.as_bytes().eq_ignore_ascii_case(b"no-cache")))
    {
        return false;
    }
    if seconds(req, "max-age").is_some_and(|max| f.age(now_ms) > u64::from(max)) {
        return false;
    }
    if seconds(req, "min-fresh").is_some_and(|min| f.ttl(now_ms) < i64::from(min)) {
        return false;
    }
    if !f.fresh(now_ms) {
        let strict = has(stored, "must-revalidate")
            || has(stored, "proxy-revalidate")
            || has(stored, "s-maxage");
        let stale_for = now_ms.saturating_sub(f.fresh_ms) / 1000;
        let allowed = directives(req)
            .find(|(k, _)| k == "max-stale")
            .map(|(_, v)| {
                v.and_then(|v| v.parse::<u64>().ok())
                    .is_none_or(|max| stale_for <= max)
            });
        return (!strict && allowed == Some(true)) || (f.servable(now_ms) && allowed.is_none());
    }
    true
}

/// `only-if-cached` (RFC 9111 §5.2.1.7): answer from the cache or `504`, never the origin.
pub(crate) fn only_if_cached(req: &HeaderMap) -> bool {
    has(req, "only-if-cached")
}

/// A request that carries credentials: its answer belongs to one user.
pub(crate) fn personal(h: &HeaderMap) -> bool {
    h.contains_key(header::AUTHORIZATION) || h.contains_key(header::COOKIE)
}

/// The directives of every `Cache-Control` header, lowercase, with their values.
fn directives(h: &HeaderMap) -> impl Iterator<Item = (String, Option<String>)> + '_ {
    directives_of(h, header::CACHE_CONTROL)
}

/// `Surrogate-Control` (Edge Architecture 1.0): what an upstream tells the caches in front of
/// it, over what its `Cache-Control` tells every cache. Never passed on to clients.
pub(crate) const SURROGATE_CONTROL: HeaderName = HeaderName::from_static("surrogate-control");

fn directives_of(
    h: &HeaderMap,
    name: HeaderName,
) -> impl Iterator<Item = (String, Option<String>)> + '_ {
    h.get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|d| {
            let d = d.trim();
            match d.split_once('=') {
                Some((k, v)) => (
                    k.trim().to_ascii_lowercase(),
                    Some(v.trim().trim_matches('"').to_string()),
                ),
                None => (d.to_ascii_lowercase(), None),
            }
        })
}

fn seconds(h: &HeaderMap, name: &str) -> Option<u32> {
    directives(h)
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| v?.parse::<u64>().ok())
        .map(|s| s.min(u64::from(u32::MAX)) as u32)
}

fn has(h: &HeaderMap, name: &str) -> bool {
    directives(h).any(|(k, _)| k == name)
}

/// Why a response is not stored.
pub(crate) type NotStorable = &'static str;

/// What the cache does with a response it received.
#[derive(Debug)]
pub(crate) struct Keep {
    pub freshness: Freshness,
    /// How long the entry lives: fresh, then as long as it may still serve (stale windows,
    /// revalidation with its validators).
    pub ttl: Duration,
    /// When the engine starts a background refresh: at the end of freshness
    /// (`stale-while-revalidate`), or at the op's `early_ttl` if that comes first.
    pub early: Option<Duration>,
    /// The request headers it varies by (lowercase), if any.
    pub vary: Vec<String>,
}

/// How long an entry with validators is kept past its freshness, at least, to be revalidated
/// with them (a `304` refreshes it without a body).
const REVALIDATE_AT_LEAST: Duration = Duration::from_secs(60);

/// What the op's rule says of time: its TTL, used when the upstream says nothing of
/// freshness (or the route says `ttl=policy`), and its early refresh.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RuleTime {
    pub ttl: Duration,
    /// The op's `early_ttl`: a fresh entry this old is refreshed in the background.
    pub early: Option<Duration>,
}

/// Decides whether and how to keep a response to `req`.
pub(crate) fn assess(
    req: &request::Parts,
    res: &response::Parts,
    options: RouteOptions,
    rule: RuleTime,
    now: SystemTime,
) -> Result<Keep, NotStorable> {
    let policy_ttl = rule.ttl;
    let h = &res.headers;
    if res.status.is_server_error() {
        return Err("an error of the upstream");
    }
    if h.contains_key(header::SET_COOKIE) {
        return Err("it sets a cookie");
    }
    let vary = vary(h)?;
    if has(h, "no-store") {
        return Err("no-store");
    }
    if has(h, "private") {
        return Err("private");
    }
    // Surrogate-Control is addressed to this cache: its `no-store` keeps the answer out, its
    // `max-age` is the freshness, whatever Cache-Control says of it to other caches.
    let mut surrogate_max_age = None;
    for (k, v) in directives_of(h, SURROGATE_CONTROL) {
        match k.as_str() {
            "no-store" => return Err("Surrogate-Control: no-store"),
            "max-age" => surrogate_max_age = v.and_then(|v| v.parse::<u64>().ok()),
            _ => {}
        }
    }
    // The route opted in to credentials: judge the response as if the request had none. The
    // request's own directives (`no-store`, `max-age`, ...) and its range bind that request
    // only: they never decide what is stored for the next client.
    let mut asked = req.clone();
    asked.headers.remove(header::CACHE_CONTROL);
    asked.headers.remove(header::PRAGMA);
    asked.headers.remove(header::RANGE);
    if options.credentials {
        asked.headers.remove(header::AUTHORIZATION);
    }
    let dated = imf_dates(res);
    let policy = CachePolicy::new_options(
        &asked,
        dated.as_ref().unwrap_or(res),
        now,
        CacheOptions {
            shared: true,
            ..CacheOptions::default()
        },
    );
    if !policy.is_storable() {
        return Err("not storable by a shared cache (its status, or Authorization)");
    }
    let explicit = seconds(h, "s-maxage").is_some()
        || seconds(h, "max-age").is_some()
        || h.contains_key(header::EXPIRES);
    let age = policy.age(now);
    let fresh_left = if let (Some(secs), false) = (surrogate_max_age, options.policy_ttl) {
        Duration::from_secs(secs).saturating_sub(age)
    } else if has(h, "no-cache") {
        Duration::ZERO
    } else if explicit && !options.policy_ttl {
        policy.time_to_live(now)
    } else {
        policy_ttl.saturating_sub(age)
    };
    let must_revalidate = has(h, "must-revalidate") || has(h, "proxy-revalidate");
    let (swr, sie) = if must_revalidate {
        (0, 0)
    } else {
        (
            seconds(h, "stale-while-revalidate").unwrap_or(0),
            seconds(h, "stale-if-error").unwrap_or(0).max(options.grace),
        )
    };
    let validators = h.contains_key(header::ETAG) || h.contains_key(header::LAST_MODIFIED);
    let mut keep = Duration::from_secs(u64::from(swr.max(sie)));
    if validators {
        keep = keep.max(fresh_left.max(REVALIDATE_AT_LEAST));
    }
    let ttl = fresh_left + keep;
    if ttl.is_zero() {
        return Err("already stale, with nothing to revalidate it with");
    }
    let now_ms = super::ms_of(now);
    Ok(Keep {
        freshness: Freshness {
            stored_ms: now_ms,
            fresh_ms: now_ms + fresh_left.as_millis() as u64,
            age0: age.as_secs().min(u64::from(u32::MAX)) as u32,
            swr,
            sie,
        },
        ttl,
        // A background refresh at the end of freshness (stale-while-revalidate), or earlier
        // when the op's early_ttl says so.
        early: [
            (swr > 0 && !fresh_left.is_zero()).then_some(fresh_left),
            rule.early.filter(|e| !e.is_zero() && *e < fresh_left),
        ]
        .into_iter()
        .flatten()
        .min(),
        vary,
    })
}

/// The response with its `Expires` and `Date` in IMF-fixdate, the one form the freshness
/// computation reads, when they came in another: RFC 850 and asctime dates are dates too
/// (RFC 9110 §5.6.7), and an `Expires` that is no date means already expired (RFC 9111 §5.3).
/// `None`: they are in that form already (or absent).
fn imf_dates(res: &response::Parts) -> Option<response::Parts> {
    let mut rewritten: Vec<(HeaderName, Option<HeaderValue>)> = Vec::new();
    for name in [header::EXPIRES, header::DATE] {
        let Some(v) = res.headers.get(&name) else {
            continue;
        };
        let parsed = v
            .to_str()
            .ok()
            .and_then(|t| httpdate::parse_http_date(t.trim()).ok());
        let imf = match parsed {
            Some(t) => Some(httpdate::fmt_http_date(t)),
            None if name == header::EXPIRES => Some("Thu, 01 Jan 1970 00:00:00 GMT".into()),
            None => None,
        };
        if imf.as_deref().map(str::as_bytes) != Some(v.as_bytes()) {
            rewritten.push((name, imf.and_then(|t| HeaderValue::from_str(&t).ok())));
        }
    }
    if rewritten.is_empty() {
        return None;
    }
    let mut out = axum::http::Response::new(());
    *out.status_mut() = res.status;
    *out.version_mut() = res.version;
    *out.headers_mut() = res.headers.clone();
    for (name, value) in rewritten {
        match value {
            Some(v) => {
                out.headers_mut().insert(name, v);
            }
            None => {
                out.headers_mut().remove(name);
            }
        }
    }
    Some(out.into_parts().0)
}

/// The request headers a response varies by (lowercase, sorted); `Vary: *` is not storable.
fn vary(h: &HeaderMap) -> Result<Vec<String>, NotStorable> {
    let mut names: Vec<String> = Vec::new();
    for v in h.get_all(header::VARY) {
        for n in v.to_str().map_err(|_| "an unreadable Vary")?.split(',') {
            let n = n.trim().to_ascii_lowercase();
            if n == "*" {
                return Err("it varies on *");
            }
            if !n.is_empty() && !names.contains(&n) {
                names.push(n);
            }
        }
    }
    names.sort();
    Ok(names)
}

/// What a request's values of the `vary` headers add to the key: a digest of each name with
/// its values (absent, or present and empty, are told apart), so that every combination has
/// a key of its own. A header's lines are one comma-separated list (RFC 9110 §5.3), so its
/// values are taken as the list of its members with the spaces around them trimmed: `fr, en`
/// and `fr,en`, or two lines `fr` and `en`, are one variant. Nothing else is folded (a value's
/// case may matter to the upstream).
pub(crate) fn vary_suffix(names: &[String], req: &HeaderMap) -> String {
    use sha2::Digest;
    let mut d = sha2::Sha256::new();
    for n in names {
        d.update(n.as_bytes());
        d.update([0]);
        let mut present = false;
        for v in req.get_all(n.as_str()) {
            for member in v.as_bytes().split(|b| *b == b',') {
                if present {
                    d.update([b',']);
                } else {
                    d.update([1]);
                    present = true;
                }
                d.update(member.trim_ascii());
            }
        }
        d.update([2]);
    }
    let hash = d.finalize();
    let mut out = String::from("|vary|");
    for b in &hash[..16] {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The tags a response names in `headers` (`Surrogate-Key: a b`, `Cache-Tag: a,b`): split on
/// spaces and commas.
pub(crate) fn surrogate_keys(h: &HeaderMap, names: &[HeaderName]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for name in names {
        for v in h.get_all(name) {
            let Ok(v) = v.to_str() else { continue };
            for t in v.split([',', ' ', '\t']).filter(|t| !t.is_empty()) {
                if !out.iter().any(|o| o == t) {
                    out.push(t.to_string());
                }
            }
        }
    }
    out
}

/// Whether a request's conditions (`If-None-Match`, else `If-Modified-Since`) hold for a
/// response with these headers: then it is answered `304 Not Modified`.
pub(crate) fn not_modified(req: &HeaderMap, etag: Option<&[u8]>, modified: Option<&[u8]>) -> bool {
    if let Some(inm) = req.get(header::IF_NONE_MATCH) {
        let Some(etag) = etag else { return false };
        let weak = |t: &[u8]| t.strip_prefix(b"W/").unwrap_or(t).to_vec();
        let etag = weak(etag);
        return inm.as_bytes().split(|b| *b == b',').any(|t| {
            let t = t.trim_ascii();
            t == b"*" || weak(t) == etag
        });
    }
    let (Some(ims), Some(modified)) = (req.get(header::IF_MODIFIED_SINCE), modified) else {
        return false;
    };
    let date = |v: &[u8]| httpdate::parse_http_date(std::str::from_utf8(v).ok()?).ok();
    matches!((date(ims.as_bytes()), date(modified)), (Some(since), Some(m)) if m <= since)
}

/// The headers of a stored response refreshed by a `304`: the new ones replace the old of the
/// same name (RFC 9111, 4.3.4), but for those that describe the stored body, which a `304`
/// does not carry (`Content-Length`, `Content-Encoding`, `Content-Range`, `Transfer-Encoding`:
/// 3.2), and the connection's own.
pub(crate) fn refreshed(stored: &HeaderMap, fresh: &HeaderMap) -> HeaderMap {
    const THE_BODYS: [HeaderName; 4] = [
        header::CONTENT_LENGTH,
        header::CONTENT_ENCODING,
        header::CONTENT_RANGE,
        header::TRANSFER_ENCODING,
    ];
    let mut fresh = fresh.clone();
    strip_hop_by_hop(&mut fresh);
    let mut out = stored.clone();
    for name in fresh.keys() {
        if THE_BODYS.contains(name) {
            continue;
        }
        out.remove(name);
        for v in fresh.get_all(name) {
            out.append(name.clone(), v.clone());
        }
    }
    out
}

/// `Cache-Status` (RFC 9211) as this cache writes it.
pub(crate) fn cache_status(detail: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("cachelet; {detail}"))
        .unwrap_or(HeaderValue::from_static("cachelet"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{Request, Response, StatusCode};

    #[test]
    fn a_304_refreshes_the_headers_but_never_those_of_the_body() {
        let mut stored = HeaderMap::new();
        for (k, v) in [
            ("content-length", "5"),
            ("content-encoding", "gzip"),
            ("etag", "\"v1\""),
            ("x-version", "1"),
        ] {
            stored.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        let mut fresh = HeaderMap::new();
        for (k, v) in [
            ("content-length", "0"),
            ("content-encoding", "br"),
            ("x-version", "2"),
            ("connection", "x-hop"),
            ("x-hop", "1"),
        ] {
            fresh.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        let out = refreshed(&stored, &fresh);
        assert_eq!(out["content-length"], "5");
        assert_eq!(out["content-encoding"], "gzip");
        assert_eq!(out["x-version"], "2");
        assert_eq!(out["etag"], "\"v1\"");
        assert!(!out.contains_key("x-hop") && !out.contains_key("connection"));
    }

    #[test]
    fn varied_lists_are_one_variant_however_they_are_spaced_or_split() {
        let names = vec!["accept-language".to_string()];
        let with = |lines: &[&str]| {
            let mut h = HeaderMap::new();
            for l in lines {
                h.append("accept-language", HeaderValue::from_str(l).unwrap());
            }
            vary_suffix(&names, &h)
        };
        let one = with(&["fr,en"]);
        assert_eq!(with(&["fr, en"]), one);
        assert_eq!(with(&[" fr ,  en "]), one);
        assert_eq!(with(&["fr", "en"]), one);
        assert_ne!(
            with(&["en,fr"]),
            one,
            "the order is the client's preference"
        );
        assert_ne!(with(&["FR,en"]), one, "a value's case is not folded");
        assert_ne!(with(&[""]), with(&[]), "present and empty is not absent");
        assert_ne!(with(&["fr"]), one);
    }

    #[test]
    fn byte_ranges_are_read_as_rfc_9110_says() {
        let h = |range: &str, if_range: Option<&str>| {
            let mut h = HeaderMap::new();
            h.insert(header::RANGE, HeaderValue::from_str(range).unwrap());
            if let Some(v) = if_range {
                h.insert(header::IF_RANGE, HeaderValue::from_str(v).unwrap());
            }
            h
        };
        let r = |range: &str| byte_range(&h(range, None), 10, None, None);
        assert_eq!(r("bytes=0-3"), Some(Ok((0, 3))));
        assert_eq!(r("bytes=5-"), Some(Ok((5, 9))));
        assert_eq!(r("bytes=-3"), Some(Ok((7, 9))));
        assert_eq!(r("bytes=-30"), Some(Ok((0, 9))));
        assert_eq!(r("bytes=8-100"), Some(Ok((8, 9))));
        assert_eq!(r("bytes=10-"), Some(Err(())));
        assert_eq!(r("bytes=-0"), Some(Err(())));
        assert_eq!(r("bytes=4-2"), None, "invalid: ignored");
        assert_eq!(r("bytes=0-1,4-5"), None, "several: the whole");
        assert_eq!(r("items=0-1"), None);
        assert_eq!(r("bytes=x-1"), None);
        let etag = Some(&b"\"v1\""[..]);
        assert_eq!(
            byte_range(&h("bytes=0-1", Some("\"v1\"")), 10, etag, None),
            Some(Ok((0, 1)))
        );
        assert_eq!(
            byte_range(&h("bytes=0-1", Some("\"v2\"")), 10, etag, None),
            None
        );
        assert_eq!(
            byte_range(
                &h("bytes=0-1", Some("W/\"v1\"")),
                10,
                Some(&b"W/\"v1\""[..]),
                None
            ),
            None,
            "a weak tag never matches If-Range"
        );
    }

    fn parts(headers: &[(&str, &str)]) -> (request::Parts, response::Parts) {
        let req = Request::get("/users/1").body(()).unwrap().into_parts().0;
        let mut res = Response::builder().status(StatusCode::OK);
        for (k, v) in headers {
            res = res.header(*k, *v);
        }
        (req, res.body(()).unwrap().into_parts().0)
    }

    fn keep(headers: &[(&str, &str)]) -> Result<Keep, NotStorable> {
        let (req, res) = parts(headers);
        assess(
            &req,
            &res,
            RouteOptions::default(),
            RuleTime {
                ttl: Duration::from_secs(300),
                early: None,
            },
            SystemTime::now(),
        )
    }

    #[test]
    fn what_is_not_stored_says_why() {
        for (h, why) in [
            (&[("cache-control", "no-store")][..], "no-store"),
            (&[("cache-control", "private, max-age=60")], "private"),
            (&[("set-cookie", "a=1")], "cookie"),
            (&[("vary", "accept, *")], "*"),
            (&[("cache-control", "max-age=0")], "already stale"),
        ] {
            assert!(keep(h).unwrap_err().contains(why), "{h:?}");
        }
    }

    #[test]
    fn freshness_comes_from_the_upstream_else_from_the_policy() {
        let k = keep(&[]).unwrap();
        let f = k.freshness;
        assert_eq!((f.fresh_ms - f.stored_ms) / 1000, 300, "the policy's TTL");
        let k = keep(&[("cache-control", "max-age=60"), ("age", "10")]).unwrap();
        assert_eq!((k.freshness.fresh_ms - k.freshness.stored_ms) / 1000, 50);
        assert_eq!(k.freshness.age0, 10);
        let k = keep(&[("cache-control", "max-age=60, s-maxage=20")]).unwrap();
        assert_eq!((k.freshness.fresh_ms - k.freshness.stored_ms) / 1000, 20);
        let k = keep(&[("cache-control", "max-age=60, stale-while-revalidate=30")]).unwrap();
        assert_eq!(
            (k.ttl.as_secs(), k.early),
            (90, Some(Duration::from_secs(60)))
        );
        let k = keep(&[(
            "cache-control",
            "max-age=5, stale-if-error=100, must-revalidate",
        )])
        .unwrap();
        assert_eq!((k.freshness.sie, k.ttl.as_secs()), (0, 5));
        // No freshness, but validators: kept to be revalidated.
        let k = keep(&[("cache-control", "no-cache"), ("etag", "\"v1\"")]).unwrap();
        assert_eq!(
            (k.freshness.fresh_ms, k.ttl),
            (k.freshness.stored_ms, REVALIDATE_AT_LEAST)
        );
        // The route's ttl=policy wins over the upstream.
        let (req, res) = parts(&[("cache-control", "max-age=5")]);
        let options = RouteOptions {
            policy_ttl: true,
            ..RouteOptions::default()
        };
        let k = assess(
            &req,
            &res,
            options,
            RuleTime {
                ttl: Duration::from_secs(300),
                early: Some(Duration::from_secs(45)),
            },
            SystemTime::now(),
        )
        .unwrap();
        assert_eq!((k.freshness.fresh_ms - k.freshness.stored_ms) / 1000, 300);
        assert_eq!(k.early, Some(Duration::from_secs(45)), "the op's early_ttl");
    }

    #[test]
    fn vary_names_are_normalized_and_their_values_make_distinct_keys() {
        let k = keep(&[("vary", "Accept-Language, accept"), ("vary", "accept")]).unwrap();
        assert_eq!(k.vary, ["accept", "accept-language"]);
        let mut a = HeaderMap::new();
        a.insert("accept-language", "en".parse().unwrap());
        let mut b = HeaderMap::new();
        b.insert("accept-language", "fr".parse().unwrap());
        let mut empty = HeaderMap::new();
        empty.insert("accept-language", "".parse().unwrap());
        let none = HeaderMap::new();
        let names = vec!["accept-language".to_string()];
        let keys: std::collections::HashSet<String> = [&a, &b, &empty, &none]
            .into_iter()
            .map(|h| vary_suffix(&names, h))
            .collect();
        assert_eq!(keys.len(), 4);
    }

    #[test]
    fn conditions_and_surrogate_keys() {
        let mut req = HeaderMap::new();
        req.insert("if-none-match", "\"a\", W/\"b\"".parse().unwrap());
        assert!(not_modified(&req, Some(b"\"b\""), None));
        assert!(!not_modified(&req, Some(b"\"c\""), None));
        let mut req = HeaderMap::new();
        req.insert(
            "if-modified-since",
            "Tue, 01 Dec 2026 10:00:00 GMT".parse().unwrap(),
        );
        assert!(not_modified(
            &req,
            None,
            Some(b"Mon, 30 Nov 2026 10:00:00 GMT")
        ));
        assert!(!not_modified(
            &req,
            None,
            Some(b"Wed, 02 Dec 2026 10:00:00 GMT")
        ));
        let mut h = HeaderMap::new();
        h.insert("surrogate-key", "user:1  users".parse().unwrap());
        h.insert("cache-tag", "users,org:7".parse().unwrap());
        let names = [
            HeaderName::from_static("surrogate-key"),
            HeaderName::from_static("cache-tag"),
        ];
        assert_eq!(surrogate_keys(&h, &names), ["user:1", "users", "org:7"]);
    }
}
