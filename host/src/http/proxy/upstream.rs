//! The upstream side of the proxy: the request as it goes upstream (its `Host`, the
//! forwarding headers the proxy writes, the ones it never forwards), a pooled client with its
//! timeouts, and the answer as it comes back.

use std::convert::Infallible;
use std::future::Future;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::uri::{Authority, Scheme};
use axum::http::{header, HeaderValue, Request, Response, StatusCode, Uri, Version};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower::Service;

use super::{text, ClientAddr};
use crate::error::Error;
use crate::http::semantics::strip_hop_by_hop;

/// What the upstream is told in `Host` ([`ProxyBuilder::host`](super::ProxyBuilder::host)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HostHeader {
    /// The upstream's own authority, whatever the client says (as nginx sends it): one site.
    #[default]
    Upstream,
    /// The client's (HTTP/2: the `:authority`), lowercased and without the default port; it
    /// is part of every entry's key (as Varnish keys it), so each host has its own entries. A
    /// request without one, or with one that is not an authority, is a `400`. Purges and
    /// invalidations by URL reach every host's entry of that URL; a recache warms the
    /// upstream authority's.
    Client,
}

impl std::str::FromStr for HostHeader {
    type Err = Error;
    fn from_str(s: &str) -> Result<HostHeader, Error> {
        match s.trim() {
            "upstream" => Ok(HostHeader::Upstream),
            "client" => Ok(HostHeader::Client),
            other => Err(Error::Setting {
                name: "host".into(),
                problem: format!("{other:?}: expected upstream or client"),
            }),
        }
    }
}

/// A request's host, normalised: lowercase, no default port (`:80`), no trailing dot.
pub(super) fn client_host(req: &Request<Body>) -> Result<HeaderValue, &'static str> {
    let given = match req.uri().authority() {
        Some(a) => a.as_str().to_string(),
        None => req
            .headers()
            .get(header::HOST)
            .ok_or("the request names no host (Host)")?
            .to_str()
            .map_err(|_| "the request's Host is not text")?
            .to_string(),
    };
    let authority: Authority = given
        .parse()
        .map_err(|_| "the request's Host is not a host[:port]")?;
    if authority.as_str().contains('@') {
        return Err("the request's Host is not a host[:port]");
    }
    let name = authority.host().trim_end_matches('.').to_ascii_lowercase();
    if name.is_empty() {
        return Err("the request's Host is not a host[:port]");
    }
    let host = match authority.port_u16() {
        Some(80) | None => name,
        Some(port) => format!("{name}:{port}"),
    };
    HeaderValue::from_str(&host).map_err(|_| "the request's Host is not a host[:port]")
}

/// The upstream: a pooled HTTP client that forwards a request as a proxy does.
#[derive(Clone)]
pub(super) struct Upstream {
    client: Client<HttpConnector, Body>,
    scheme: Scheme,
    authority: Authority,
    /// A path prefix, without its trailing `/`.
    prefix: String,
    pub(super) timeout: Duration,
    /// Peers whose forwarding headers are kept.
    pub(super) trusted: Vec<IpRange>,
    /// The client's `Host` is forwarded (normalised), not the upstream's authority.
    pub(super) client_host: bool,
}

impl Upstream {
    pub(super) fn new(url: &str) -> Result<Upstream, Error> {
        // Never echo credentials: `user:password@` is shown as `***@`.
        let shown = match url.split_once("://") {
            Some((scheme, rest)) => match rest.split('/').next().and_then(|a| a.rsplit_once('@')) {
                Some((_, host)) => format!("{scheme}://***@{host}"),
                None => url.to_string(),
            },
            None => url.to_string(),
        };
        let bad = |problem: &str| Error::Setting {
            name: "upstream".into(),
            problem: format!("{shown:?}: {problem}"),
        };
        let uri: Uri = url.parse().map_err(|_| bad("not a URL"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(bad(
                    "https upstreams are not supported: the proxy speaks http to its upstream",
                ))
            }
            _ => return Err(bad("expected http://host:port")),
        }
        let authority = uri.authority().ok_or_else(|| bad("no host"))?.clone();
        if authority.as_str().contains('@') {
            return Err(bad("credentials in the upstream URL are not supported"));
        }
        if uri.query().is_some() {
            return Err(bad("a query in the upstream URL is not supported"));
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .timer(TokioTimer::new())
            .build(connector);
        Ok(Upstream {
            client,
            scheme: Scheme::HTTP,
            authority,
            prefix: uri.path().trim_end_matches('/').to_string(),
            timeout: Duration::from_secs(30),
            trusted: Vec::new(),
            client_host: false,
        })
    }

    /// The request as it goes upstream: to the upstream's authority (its `Host`), with the
    /// forwarding headers this proxy writes. What a client sends of them is dropped (a client
    /// could make the upstream build an answer for another host, scheme or path that would then
    /// be stored under this URL) but from the peers [`ProxyBuilder::trusted_proxies`] names,
    /// whose `X-Forwarded-For`, `X-Forwarded-Proto` and `Forwarded` are kept and extended.
    fn forward(&self, req: Request<Body>) -> Request<Body> {
        let (mut parts, body) = req.into_parts();
        let client = parts.extensions.get::<ClientAddr>().map(|a| a.0.ip());
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let uri = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(format!("{}{path}", self.prefix))
            .build()
            .unwrap_or_else(|_| parts.uri.clone());
        strip_hop_by_hop(&mut parts.headers);
        let h = &mut parts.headers;
        let trusted = client.is_some_and(|ip| self.trusted.iter().any(|n| n.contains(ip)));
        if !trusted {
            for name in FORWARDING {
                h.remove(name);
            }
        }
        for name in REWRITING {
            h.remove(name);
        }
        if !(self.client_host && h.contains_key(header::HOST)) {
            h.insert(
                header::HOST,
                HeaderValue::from_str(self.authority.as_str()).expect("an authority is a header"),
            );
        }
        if let Some(ip) = client {
            let xff = match h.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
                Some(prior) => format!("{prior}, {ip}"),
                None => ip.to_string(),
            };
            if let Ok(v) = HeaderValue::from_str(&xff) {
                h.insert("x-forwarded-for", v);
            }
            let node = match ip {
                std::net::IpAddr::V4(ip) => ip.to_string(),
                std::net::IpAddr::V6(ip) => format!("\"[{ip}]\""),
            };
            let this = format!("for={node};proto=http");
            let forwarded = match h.get(header::FORWARDED).and_then(|v| v.to_str().ok()) {
                Some(prior) => format!("{prior}, {this}"),
                None => this,
            };
            if let Ok(v) = HeaderValue::from_str(&forwarded) {
                h.insert(header::FORWARDED, v);
            }
            if !h.contains_key("x-forwarded-proto") {
                h.insert("x-forwarded-proto", HeaderValue::from_static("http"));
            }
        }
        h.append(header::VIA, HeaderValue::from_static("1.1 cachelet"));
        parts.uri = uri;
        parts.version = Version::HTTP_11;
        Request::from_parts(parts, body)
    }
}

/// The forwarding headers a client may not set (kept only from a trusted proxy).
const FORWARDING: [&str; 3] = ["x-forwarded-for", "x-forwarded-proto", "forwarded"];

/// Headers that tell an upstream another host, port, scheme or path than the request's:
/// never forwarded, from anyone, since the cache does not key on them.
const REWRITING: [&str; 10] = [
    "x-forwarded-host",
    "x-forwarded-server",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-scheme",
    "x-forwarded-ssl",
    "x-host",
    "x-original-url",
    "x-rewrite-url",
    "x-original-host",
];

/// An address range (`10.0.0.0/8`, `::1/128`, or one address) of peers whose forwarding
/// headers are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpRange {
    base: std::net::IpAddr,
    bits: u8,
}

impl IpRange {
    /// Parses `ADDRESS` or `ADDRESS/BITS`; the error names what is wrong.
    pub fn parse(s: &str) -> Result<IpRange, Error> {
        let bad = |problem: &str| Error::Setting {
            name: "trusted proxies".into(),
            problem: format!("{s:?}: {problem}"),
        };
        let (addr, bits) = match s.trim().split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (s.trim(), None),
        };
        let base: std::net::IpAddr = addr.parse().map_err(|_| bad("not an IP address"))?;
        let max = if base.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            Some(b) => b
                .parse::<u8>()
                .ok()
                .filter(|b| *b <= max)
                .ok_or_else(|| bad(&format!("the prefix length must be 0 to {max}")))?,
            None => max,
        };
        Ok(IpRange { base, bits })
    }

    /// Whether `ip` is in the range.
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        let prefix = |a: u128, width: u32| -> u128 {
            let keep = u32::from(self.bits);
            if keep == 0 {
                0
            } else {
                a >> (width - keep)
            }
        };
        match (self.base, ip) {
            (std::net::IpAddr::V4(b), std::net::IpAddr::V4(i)) => {
                prefix(u32::from(b).into(), 32) == prefix(u32::from(i).into(), 32)
            }
            (std::net::IpAddr::V6(b), std::net::IpAddr::V6(i)) => {
                prefix(u128::from(b), 128) == prefix(u128::from(i), 128)
            }
            _ => false,
        }
    }
}

impl Service<Request<Body>> for Upstream {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future =
        std::pin::Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let req = self.forward(req);
        let (client, timeout) = (self.client.clone(), self.timeout);
        Box::pin(async move {
            let started = Instant::now();
            use crate::metrics::Upstream as Came;
            let (came, answer) = match tokio::time::timeout(timeout, client.request(req)).await {
                Ok(Ok(r)) => {
                    let (mut parts, body) = r.into_parts();
                    strip_hop_by_hop(&mut parts.headers);
                    parts
                        .headers
                        .append(header::VIA, HeaderValue::from_static("1.1 cachelet"));
                    (
                        Came::Answered(parts.status.as_u16()),
                        Response::from_parts(parts, Body::new(Stalls::new(body, timeout))),
                    )
                }
                Ok(Err(e)) if past_the_limit(&e) => (
                    Came::TooLarge,
                    text(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "request body larger than the limit\n".into(),
                    ),
                ),
                Ok(Err(e)) => {
                    tracing::warn!("upstream: {e}");
                    let mut detail = e.to_string();
                    let mut source = std::error::Error::source(&e);
                    while let Some(s) = source {
                        detail = format!("{detail}: {s}");
                        source = s.source();
                    }
                    (
                        Came::Unreachable,
                        text(
                            StatusCode::BAD_GATEWAY,
                            format!("upstream unreachable: {detail}\n"),
                        ),
                    )
                }
                Err(_) => (
                    Came::Timeout,
                    text(
                        StatusCode::GATEWAY_TIMEOUT,
                        format!("upstream did not answer within {timeout:?}\n"),
                    ),
                ),
            };
            crate::metrics::upstream(came, started.elapsed());
            Ok(answer)
        })
    }
}

/// An upstream's body that fails once no piece of it has come for the upstream timeout: a
/// stalled upstream holds neither its client nor the requests waiting for the fill (which
/// stores nothing of a body that broke off).
struct Stalls {
    body: hyper::body::Incoming,
    timeout: Duration,
    quiet: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl Stalls {
    fn new(body: hyper::body::Incoming, timeout: Duration) -> Stalls {
        Stalls {
            body,
            timeout,
            quiet: Box::pin(tokio::time::sleep(timeout)),
        }
    }
}

impl http_body::Body for Stalls {
    type Data = bytes::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        use std::task::Poll;
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(frame) => {
                let next = tokio::time::Instant::now() + this.timeout;
                this.quiet.as_mut().reset(next);
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => match this.quiet.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(format!(
                    "the upstream sent nothing more of its body for {:?}",
                    this.timeout
                )
                .into()))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Whether an upstream request failed because the client's body went past the limit (a
/// chunked body, whose length was not declared).
fn past_the_limit(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = s.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_urls_are_checked() {
        for (url, says) in [
            ("https://a:1", "https"),
            ("ftp://a", "expected http"),
            ("http://u:p@a:1", "credentials"),
            ("not a url", "not a URL"),
            ("http://a:1/?x=1", "query"),
        ] {
            let e = Upstream::new(url).err().unwrap().to_string();
            assert!(e.contains(says), "{url}: {e}");
            assert!(!e.contains("u:p"), "{e}");
        }
        let u = Upstream::new("http://127.0.0.1:9/api/").unwrap();
        let req = Request::get("/users/1?x=2").body(Body::empty()).unwrap();
        let f = u.forward(req);
        assert_eq!(f.uri(), "http://127.0.0.1:9/api/users/1?x=2");
        assert_eq!(f.headers()["host"], "127.0.0.1:9");
    }

    #[test]
    fn hop_by_hop_and_forwarding_headers() {
        let mut u = Upstream::new("http://127.0.0.1:9").unwrap();
        let req = || {
            Request::get("/x")
                .header("host", "example.com")
                .header("connection", "keep-alive, x-private")
                .header("x-private", "1")
                .header("te", "trailers")
                .header("x-forwarded-for", "10.0.0.1")
                .header("x-forwarded-host", "evil.example")
                .header("forwarded", "for=10.0.0.1")
                .extension(ClientAddr("192.0.2.7:5555".parse().unwrap()))
                .body(Body::empty())
                .unwrap()
        };
        let f = u.forward(req());
        let h = f.headers();
        assert!(
            !h.contains_key("connection") && !h.contains_key("x-private") && !h.contains_key("te")
        );
        assert_eq!(h["host"], "127.0.0.1:9");
        assert_eq!(h["x-forwarded-for"], "192.0.2.7");
        assert!(!h.contains_key("x-forwarded-host"));
        assert_eq!(h["forwarded"], "for=192.0.2.7;proto=http");
        // From a trusted peer the chain goes on; X-Forwarded-Host still never does.
        u.trusted = vec![IpRange::parse("192.0.2.0/24").unwrap()];
        let f = u.forward(req());
        let h = f.headers();
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 192.0.2.7");
        assert_eq!(h["forwarded"], "for=10.0.0.1, for=192.0.2.7;proto=http");
        assert!(!h.contains_key("x-forwarded-host"));
        assert_eq!(f.version(), Version::HTTP_11);
    }

    #[test]
    fn address_ranges_parse_and_match() {
        let r = IpRange::parse("10.0.0.0/8").unwrap();
        assert!(r.contains("10.1.2.3".parse().unwrap()));
        assert!(!r.contains("11.0.0.1".parse().unwrap()));
        assert!(!r.contains("::1".parse().unwrap()));
        let one = IpRange::parse("::1").unwrap();
        assert!(one.contains("::1".parse().unwrap()));
        assert!(!one.contains("::2".parse().unwrap()));
        assert!(IpRange::parse("0.0.0.0/0")
            .unwrap()
            .contains("203.0.113.9".parse().unwrap()));
        for bad in ["10.0.0.0/33", "nonsense", "10.0.0.0/x"] {
            let e = IpRange::parse(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
    }
}
