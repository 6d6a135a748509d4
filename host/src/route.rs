//! The HTTP routes policies declare for their ops (`op-info.route`, e.g. `GET /users/{user_id}`),
//! parsed and checked when a policy loads, and matched natively (no Wasm call) by the HTTP layer.
//!
//! A route is a method (`GET`, `HEAD`, `POST`, `PUT`, `PATCH`, `DELETE`), one space, and a path
//! of `/`-separated segments: literal text, `{name}` (one segment, the op's argument `name`), or,
//! last, `{*name}` (the rest of the path). A literal segment is more specific than a parameter,
//! and a parameter than the rest: `GET /users/me` wins over `GET /users/{user_id}`, which wins
//! over `GET /{*path}`.

use crate::args::Args;

/// One parsed route.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    pub method: String,
    segments: Vec<Segment>,
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
        let (method, path) = route
            .split_once(' ')
            .ok_or_else(|| format!("route {route:?}: expected \"METHOD /path\""))?;
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
        })
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
        let mut parts = if path.is_empty() {
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
                    let rest = parts.split_off(i.min(parts.len())).join("/");
                    args.set(n.clone(), decode(&rest)?);
                    return Some(args);
                }
            }
        }
        (parts.len() == self.segments.len()).then_some(args)
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

    /// The op whose route matches, and the arguments of the path and the query (a path
    /// parameter wins over a query parameter of the same name). `HEAD` matches a `GET` route.
    pub fn find(&self, method: &str, path: &str, query: Option<&str>) -> Option<(&str, Args)> {
        let (route, op, mut args) = self.routes.iter().find_map(|(r, op)| {
            let method_ok = r.method == method || (method == "HEAD" && r.method == "GET");
            if !method_ok {
                return None;
            }
            r.matches(path).map(|a| (r, op, a))
        })?;
        if let Some(q) = query {
            for (k, v) in form_pairs(q) {
                if route.params().all(|p| p != k) && args.get(&k).is_none() {
                    args.set(k, v);
                }
            }
        }
        Some((op.as_str(), args))
    }
}

/// `a=1&b=x%20y` as decoded pairs (`+` is a space, as in forms).
fn form_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let k = decode(&k.replace('+', " "))?;
            let v = decode(&v.replace('+', " "))?;
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
            ("GET /users//x", "empty segment"),
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
}
