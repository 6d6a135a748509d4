//! The HTTP routes policies declare for their ops (`op-info.route`, e.g. `GET /users/{user_id}`),
//! parsed and checked when a policy loads, and matched natively (no Wasm call) by the HTTP layer.
//!
//! A route is a method (`GET`, `HEAD`, `POST`, `PUT`, `PATCH`, `DELETE`), one space, and a path
//! of `/`-separated segments: literal text, `{name}` (one segment, the op's argument `name`), or,
//! last, `{*name}` (the rest of the path). A literal segment is more specific than a parameter,
//! and a parameter than the rest: `GET /users/me` wins over `GET /users/{user_id}`, which wins
//! over `GET /{*path}`.
//!
//! After the path, options may follow, separated by spaces, for the HTTP caching layer:
//! `credentials` (requests that carry `Authorization` or `Cookie` are cached too: the op's key
//! must tell their users apart, or the answer must be the same for all of them),
//! `ttl=policy` (the policy's TTL decides how long a response is fresh, whatever the upstream's
//! `Cache-Control` / `Expires` say; `no-store`, `private` and `Set-Cookie` still keep a response
//! out), `grace=SECONDS` (a stored response is served this long past its freshness while the
//! upstream fails, as `stale-if-error` does). E.g. `GET /users/{user_id} grace=60`.

use crate::args::{Args, Value};

/// One parsed route.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    pub method: String,
    segments: Vec<Segment>,
    pub options: RouteOptions,
}

/// What a route says beyond its path (see the [module](self)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RouteOptions {
    /// Requests with credentials are cached too.
    pub credentials: bool,
    /// The policy's TTL decides freshness, not the upstream's headers.
    pub policy_ttl: bool,
    /// Seconds a stored response is served past its freshness while the upstream fails.
    pub grace: u32,
}

#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Literal(String),
    Param(String),
    Rest(String),
}

const METHODS: [&str; 6] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"];

impl Route {
    /// Parses a route; the error says what is wrong with it.
    pub fn parse(route: &str) -> Result<Route, String> {
        let mut words = route.split(' ').filter(|w| !w.is_empty());
        let (Some(method), Some(path)) = (words.next(), words.next()) else {
            return Err(format!("route {route:?}: expected \"METHOD /path\""));
        };
        let mut options = RouteOptions::default();
        for word in words {
            if word.contains(['{', '}']) {
                return Err(format!(
                    "route {route:?}: a parameter holds no space, so this is not a parameter \
                     (letters, digits and _)"
                ));
            }
            match word.split_once('=') {
                None if word == "credentials" => options.credentials = true,
                Some(("ttl", "policy")) => options.policy_ttl = true,
                Some(("grace", secs)) => {
                    options.grace = secs.parse().map_err(|_| {
                        format!("route {route:?}: grace={secs:?} is not a number of seconds")
                    })?
                }
                _ => {
                    return Err(format!(
                        "route {route:?}: unknown option {word:?} (options: credentials, \
                         ttl=policy, grace=SECONDS)"
                    ))
                }
            }
        }
        if !METHODS.contains(&method) {
            return Err(format!(
                "route {route:?}: method {method:?} is not one of {}",
                METHODS.join(", ")
            ));
        }
        let Some(rest) = path.strip_prefix('/') else {
            return Err(format!("route {route:?}: the path must start with /"));
        };
        let mut segments = Vec::new();
        let parts: Vec<&str> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('/').collect()
        };
        for (i, part) in parts.iter().enumerate() {
            let seg = if let Some(inner) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}'))
            {
                let (rest, name) = match inner.strip_prefix('*') {
                    Some(name) => (true, name),
                    None => (false, inner),
                };
                if name.is_empty()
                    || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    || name.starts_with(|c: char| c.is_ascii_digit())
                {
                    return Err(format!(
                        "route {route:?}: {part:?} is not a parameter (letters, digits and _)"
                    ));
                }
                if rest && i + 1 != parts.len() {
                    return Err(format!(
                        "route {route:?}: {part:?} takes the rest of the path, so it comes last"
                    ));
                }
                if segments
                    .iter()
                    .any(|s| matches!(s, Segment::Param(n) | Segment::Rest(n) if n == name))
                {
                    return Err(format!("route {route:?}: parameter {name:?} appears twice"));
                }
                if rest {
                    Segment::Rest(name.to_string())
                } else {
                    Segment::Param(name.to_string())
                }
            } else if part.matches('{').count() != part.matches('}').count() {
                return Err(format!("route {route:?}: {part:?} has an unclosed brace"));
            } else if part.contains(['{', '}']) {
                return Err(format!(
                    "route {route:?}: {part:?} mixes text and a parameter; a parameter is a whole \
                     segment"
                ));
            } else if part.is_empty() && i + 1 != parts.len() {
                return Err(format!("route {route:?}: empty segment (//)"));
            } else {
                Segment::Literal(part.to_string())
            };
            segments.push(seg);
        }
        Ok(Route {
            method: method.to_string(),
            segments,
            options,
        })
    }

    /// The path (and query) a request to this route has for `args`: the route's parameters
    /// filled in, percent-encoded, and every other argument in the query, in order. `None`
    /// when a parameter has no argument. The inverse of matching: a request to the path
    /// matches this route with the same arguments.
    pub fn path_for(&self, args: &Args) -> Option<String> {
        use percent_encoding::utf8_percent_encode;
        let mut out = String::new();
        for seg in &self.segments {
            out.push('/');
            match seg {
                Segment::Literal(l) => out.push_str(l),
                Segment::Param(n) => {
                    let v = plain(args.get(n)?);
                    out.extend(utf8_percent_encode(&v, SEGMENT));
                }
                Segment::Rest(n) => {
                    // Segments as they were, each one's own text encoded (a `%2F` that was
                    // inside a segment stays encoded: see `matches`).
                    let v = plain(args.get(n)?);
                    for (i, part) in v.split('/').enumerate() {
                        if i > 0 {
                            out.push('/');
                        }
                        let part = percent_encoding::percent_decode_str(part).decode_utf8_lossy();
                        out.extend(utf8_percent_encode(&part, SEGMENT));
                    }
                }
            }
        }
        if out.is_empty() {
            out.push('/');
        }
        let mut sep = '?';
        for (name, value) in args.iter() {
            if self.params().any(|p| p == name) {
                continue;
            }
            // The inverse of `find_route`: null is a name without `=`, a list (as JSON) of
            // texts the name repeated.
            let values: Vec<Option<String>> = match value {
                Value::Null => vec![None],
                Value::Json(j) => serde_json::from_str::<Vec<Option<String>>>(j)
                    .unwrap_or_else(|_| vec![Some(j.clone())]),
                v => vec![Some(plain(v))],
            };
            for v in values {
                out.push(sep);
                sep = '&';
                out.extend(utf8_percent_encode(name, QUERY));
                if let Some(v) = v {
                    out.push('=');
                    out.extend(utf8_percent_encode(&v, QUERY));
                }
            }
        }
        Some(out)
    }

    /// The names of the route's parameters.
    pub fn params(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Param(n) | Segment::Rest(n) => Some(n.as_str()),
            Segment::Literal(_) => None,
        })
    }

    /// Sorts more specific routes first: per segment, literal < parameter < rest.
    fn rank(&self) -> Vec<u8> {
        self.segments
            .iter()
            .map(|s| match s {
                Segment::Literal(_) => 0,
                Segment::Param(_) => 1,
                Segment::Rest(_) => 2,
            })
            .collect()
    }

    /// The arguments a request path gives, if it matches (segments percent-decoded).
    fn matches(&self, path: &str) -> Option<Args> {
        let path = path.strip_prefix('/')?;
        let parts = if path.is_empty() {
            Vec::new()
        } else {
            path.split('/').collect::<Vec<_>>()
        };
        let mut args = Args::new();
        for (i, seg) in self.segments.iter().enumerate() {
            match seg {
                Segment::Literal(l) => {
                    if parts.get(i) != Some(&l.as_str()) {
                        return None;
                    }
                }
                Segment::Param(n) => {
                    let part = parts.get(i).filter(|p| !p.is_empty())?;
                    args.set(n.clone(), decode(part)?);
                }
                Segment::Rest(n) => {
                    // Each segment decoded, but a `/` or `%` it encodes stays encoded: `a%2Fb`
                    // and `a/b` are two paths, and must be two arguments (two keys).
                    let mut rest = String::new();
                    for (j, part) in parts[i.min(parts.len())..].iter().enumerate() {
                        if j > 0 {
                            rest.push('/');
                        }
                        for c in decode(part)?.chars() {
                            match c {
                                '%' => rest.push_str("%25"),
                                '/' => rest.push_str("%2F"),
                                c => rest.push(c),
                            }
                        }
                    }
                    args.set(n.clone(), rest);
                    return Some(args);
                }
            }
        }
        (parts.len() == self.segments.len()).then_some(args)
    }
}

/// What must be encoded in a path segment: everything but unreserved characters and the
/// sub-delimiters a path keeps as they are.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'!')
    .remove(b'$')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'*')
    .remove(b',')
    .remove(b';')
    .remove(b'@');

/// What must be encoded in a query name or value.
const QUERY: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// An argument as the text of a path segment or query value.
fn plain(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Text(t) | Value::Json(t) => t.clone(),
    }
}

/// A percent-decoded path segment; `None` if it is not UTF-8.
fn decode(part: &str) -> Option<String> {
    percent_encoding::percent_decode_str(part)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

/// The routes of the loaded policies, most specific first.
#[derive(Debug, Default)]
pub(crate) struct Routes {
    routes: Vec<(Route, String)>,
}

impl Routes {
    pub fn add(&mut self, route: Route, op: String) {
        self.routes.push((route, op));
        self.routes.sort_by_key(|r| r.0.rank());
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The GET route of a read op.
    pub fn of_op(&self, op: &str) -> Option<&Route> {
        self.routes
            .iter()
            .find(|(r, o)| o == op && r.method == "GET")
            .map(|(r, _)| r)
    }

    /// The op whose route matches, and the arguments of the path and the query (a path
    /// parameter wins over a query parameter of the same name). `HEAD` matches a `GET` route.
    #[cfg(test)]
    pub fn find(&self, method: &str, path: &str, query: Option<&str>) -> Option<(&str, Args)> {
        self.find_route(method, path, query)
            .map(|(_, op, args, _)| (op, args))
    }

    /// [`Routes::find`], with the route that matched and what the query named.
    pub fn find_route(
        &self,
        method: &str,
        path: &str,
        query: Option<&str>,
    ) -> Option<(&Route, &str, Args, QueryNames)> {
        let mut names = QueryNames::default();
        let (route, op, mut args) = self.routes.iter().find_map(|(r, op)| {
            let method_ok = r.method == method || (method == "HEAD" && r.method == "GET");
            if !method_ok {
                return None;
            }
            r.matches(path).map(|a| (r, op, a))
        })?;
        if let Some(q) = query {
            // Every query parameter is an argument, so that two queries that differ are two
            // argument sets: a name given twice is the list of its values (as JSON), a name
            // without `=` is null. A query that is not UTF-8 matches no route (it passes).
            let mut given: Vec<(String, Vec<Option<String>>)> = Vec::new();
            for (k, v) in form_pairs(q)? {
                if route.params().any(|p| p == k) {
                    names.shadowing.get_or_insert(k);
                    continue;
                }
                match given.iter_mut().find(|(n, _)| *n == k) {
                    Some((_, vs)) => vs.push(v),
                    None => given.push((k, vec![v])),
                }
            }
            for (k, mut vs) in given {
                names.names.push(k.clone());
                let value = if vs.len() == 1 {
                    vs.pop().flatten().map_or(Value::Null, Value::Text)
                } else {
                    Value::Json(serde_json::to_string(&vs).unwrap_or_default())
                };
                args.set(k, value);
            }
        }
        Some((route, op.as_str(), args, names))
    }
}

/// The parameter names a request's query gave (see [`Routes::find_route`]).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct QueryNames {
    /// The names that became arguments, each once, in the order they came.
    pub names: Vec<String>,
    /// A query parameter named like one of the path's, which the path's value wins over.
    pub shadowing: Option<String>,
}

/// `a=1&b=x%20y&c` as decoded pairs (`+` is a space, as in forms; `c` has no value);
/// `None` if one is not UTF-8.
fn form_pairs(q: &str) -> Option<Vec<(String, Option<String>)>> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = match p.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (p, None),
            };
            let k = decode(&k.replace('+', " "))?;
            let v = match v {
                Some(v) => Some(decode(&v.replace('+', " "))?),
                None => None,
            };
            Some((k, v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::Value;

    fn routes(list: &[(&str, &str)]) -> Routes {
        let mut r = Routes::default();
        for (route, op) in list {
            r.add(Route::parse(route).unwrap(), op.to_string());
        }
        r
    }

    #[test]
    fn malformed_routes_are_refused_with_what_is_wrong() {
        for (route, says) in [
            ("/users/{id}", "expected \"METHOD /path\""),
            ("FETCH /users", "is not one of"),
            ("GET users", "must start with /"),
            ("GET /users/{}", "is not a parameter"),
            ("GET /users/{user id}", "is not a parameter"),
            ("GET /users/{*rest}/x", "comes last"),
            ("GET /users/{id}/{id}", "appears twice"),
            ("GET /users/u{id}", "mixes text and a parameter"),
            ("GET /users/{id", "unclosed brace"),
            ("GET /users/id}", "unclosed brace"),
            ("GET /users//x", "empty segment"),
            ("GET /users/{id} fast", "unknown option \"fast\""),
            (
                "GET /users/{id} grace=soon",
                "grace=\"soon\" is not a number",
            ),
        ] {
            let e = Route::parse(route).unwrap_err();
            assert!(e.contains(says), "{route}: {e}");
        }
    }

    #[test]
    fn the_most_specific_route_wins_and_arguments_are_decoded() {
        let r = routes(&[
            ("GET /{*path}", "any"),
            ("GET /users/{user_id}", "get_user"),
            ("GET /users/me", "me"),
            ("PUT /users/{user_id}", "update_user"),
            ("GET /orgs/{org_id}/users/{user_id}", "get_org_user"),
        ]);
        let (op, a) = r.find("GET", "/users/42", None).unwrap();
        assert_eq!(
            (op, a.get("user_id")),
            ("get_user", Some(&Value::Text("42".into())))
        );
        assert_eq!(r.find("GET", "/users/me", None).unwrap().0, "me");
        assert_eq!(r.find("HEAD", "/users/7", None).unwrap().0, "get_user");
        assert_eq!(r.find("PUT", "/users/7", None).unwrap().0, "update_user");
        assert!(r.find("DELETE", "/users/7", None).is_none());
        let (op, a) = r.find("GET", "/users/a%3Ab%2Fc", None).unwrap();
        assert_eq!(
            (op, a.get("user_id")),
            ("get_user", Some(&Value::Text("a:b/c".into())))
        );
        let (op, a) = r
            .find("GET", "/orgs/1/users/2", Some("expand=true&user_id=9"))
            .unwrap();
        assert_eq!(op, "get_org_user");
        assert_eq!(
            a.get("user_id"),
            Some(&Value::Text("2".into())),
            "the path wins"
        );
        assert_eq!(a.get("expand"), Some(&Value::Text("true".into())));
        let (op, a) = r.find("GET", "/static/css/site.css", None).unwrap();
        assert_eq!(
            (op, a.get("path")),
            ("any", Some(&Value::Text("static/css/site.css".into())))
        );
        // An empty segment is no parameter value.
        assert_eq!(r.find("GET", "/users/", None).unwrap().0, "any");
    }

    #[test]
    fn options_follow_the_path() {
        let r = Route::parse("GET /users/{id} credentials grace=60 ttl=policy").unwrap();
        assert_eq!(
            r.options,
            RouteOptions {
                credentials: true,
                policy_ttl: true,
                grace: 60
            }
        );
        assert_eq!(
            Route::parse("GET /users/{id}").unwrap().options,
            RouteOptions::default()
        );
    }

    #[test]
    fn distinct_requests_are_distinct_arguments_and_paths_render_back() {
        let r = routes(&[
            ("GET /{*path}", "any"),
            ("GET /users/{user_id}", "get_user"),
        ]);
        let args_of = |path: &str, q: Option<&str>| r.find("GET", path, q).unwrap().1;
        // An encoded separator inside a segment is not a separator.
        assert_ne!(args_of("/a%2Fb", None), args_of("/a/b", None));
        assert_ne!(args_of("/a%252Fb", None), args_of("/a%2Fb", None));
        // Queries: a repeated name, a name without a value, order.
        let distinct = [
            Some("x=1"),
            Some("x=1&x=2"),
            Some("x"),
            Some("x="),
            None,
            Some("x=1&y=2"),
            Some("x=1%262"),
        ];
        for (i, a) in distinct.iter().enumerate() {
            for b in &distinct[i + 1..] {
                assert_ne!(args_of("/p", *a), args_of("/p", *b), "{a:?} vs {b:?}");
            }
        }
        // A query that is not UTF-8 matches no route.
        assert!(r.find("GET", "/p", Some("x=%FF")).is_none());
        // path_for is the inverse of matching.
        for (path, q) in [
            ("/users/a%3Ab%2Fc", Some("x=1&x=2&y")),
            ("/users/42", None),
            ("/static/a%2Fb/c d/%25", Some("q=a+b")),
        ] {
            let (op, args) = r.find("GET", path, q).unwrap();
            let route = r.of_op(op).unwrap();
            let back = route.path_for(&args).unwrap();
            let (p2, q2) = back
                .split_once('?')
                .map_or((back.as_str(), None), |(p, q)| (p, Some(q)));
            assert_eq!(r.find("GET", p2, q2).unwrap(), (op, args), "{back}");
        }
    }
}
