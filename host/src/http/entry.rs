//! What the HTTP layer keeps under a read's key: a whole response (status, the headers worth
//! replaying, the body, and when it stops being fresh), a marker that the response varies by
//! request headers (the response itself is under the key plus their values), or a marker that
//! the answer is not cacheable (requests pass straight through while it lives: hit-for-miss).
//!
//! Binary, so that a hit serves the body without a copy: the body is a slice of the bytes the
//! backend returned.
//!
//! ```text
//! "CLH1"  kind u8 (0 response, 1 variants, 2 pass)
//! response: stored_ms u64, fresh_ms u64 (unix ms), age0 u32, swr u32, sie u32 (seconds),
//!           status u16, headers u16, per header: name u16 + bytes, value u32 + bytes; body
//! variants: names u16, per name: u16 + bytes
//! ```

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use bytes::Bytes;

use crate::read::{Codec, Storage};

const MAGIC: &[u8; 4] = b"CLH1";
const FIXED: usize = 4 + 1 + 8 + 8 + 4 + 4 + 4 + 2 + 2;

/// One entry of the HTTP layer.
pub(crate) struct HttpEntry {
    pub kind: Kind,
    /// How a value just loaded is to be kept; `None` for one read from the backend.
    pub storage: Option<Storage>,
}

pub(crate) enum Kind {
    Response(Stored),
    /// The response varies by these request headers (lowercase names).
    Variants(Vec<String>),
    /// Not cacheable: requests go straight to the origin while this lives.
    Pass,
}

/// How long a response may be served, decided when it was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Freshness {
    /// When it was stored (unix ms, this host's clock).
    pub stored_ms: u64,
    /// Fresh until then (unix ms).
    pub fresh_ms: u64,
    /// Its age when stored, in seconds (the origin's `Age`, and time in transit).
    pub age0: u32,
    /// `stale-while-revalidate`: seconds past freshness it is served while one request
    /// refreshes it in the background.
    pub swr: u32,
    /// `stale-if-error` (or the route's grace): seconds past freshness it is served while the
    /// origin fails.
    pub sie: u32,
}

impl Freshness {
    /// Whether it may be served now without asking the origin (fresh, or within its
    /// `stale-while-revalidate` window, whose refresh the engine starts).
    pub fn servable(&self, now_ms: u64) -> bool {
        now_ms < self.fresh_ms + u64::from(self.swr) * 1000
    }

    pub fn fresh(&self, now_ms: u64) -> bool {
        now_ms < self.fresh_ms
    }

    /// Whether it may stand in for an origin that fails.
    pub fn within_stale_if_error(&self, now_ms: u64) -> bool {
        now_ms < self.fresh_ms + u64::from(self.sie) * 1000
    }

    /// Its `Age` now, in seconds.
    pub fn age(&self, now_ms: u64) -> u64 {
        u64::from(self.age0) + now_ms.saturating_sub(self.stored_ms) / 1000
    }

    /// Seconds of freshness left.
    pub fn ttl(&self, now_ms: u64) -> i64 {
        (self.fresh_ms as i64 - now_ms as i64) / 1000
    }
}

/// A stored response, decoded in place: its headers and body are read from the entry's bytes.
#[derive(Clone)]
pub(crate) struct Stored {
    bytes: Bytes,
    pub freshness: Freshness,
    pub status: u16,
    headers: u16,
    body_at: usize,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

impl Stored {
    /// The entry's bytes for a response.
    pub fn encode(status: StatusCode, headers: &HeaderMap, body: &[u8], f: Freshness) -> Vec<u8> {
        let mut out = Stored::head(status, headers, f, body.len());
        out.extend_from_slice(body);
        out
    }

    /// The encoding of a stored response up to its body, with room for `body` more bytes: the
    /// body is appended to it as it arrives, so that it is never copied on its way to the
    /// backend ([`Bytes::from`] the whole takes no copy).
    pub fn head(status: StatusCode, headers: &HeaderMap, f: Freshness, body: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(FIXED + 32 * headers.len() + body);
        out.extend_from_slice(MAGIC);
        out.push(0);
        out.extend_from_slice(&f.stored_ms.to_le_bytes());
        out.extend_from_slice(&f.fresh_ms.to_le_bytes());
        out.extend_from_slice(&f.age0.to_le_bytes());
        out.extend_from_slice(&f.swr.to_le_bytes());
        out.extend_from_slice(&f.sie.to_le_bytes());
        out.extend_from_slice(&status.as_u16().to_le_bytes());
        let count_at = out.len();
        out.extend_from_slice(&0u16.to_le_bytes());
        let mut n: u16 = 0;
        for (name, value) in headers {
            let (name, value) = (name.as_str().as_bytes(), value.as_bytes());
            if n == u16::MAX || name.len() > usize::from(u16::MAX) {
                continue;
            }
            out.extend_from_slice(&(name.len() as u16).to_le_bytes());
            out.extend_from_slice(name);
            out.extend_from_slice(&(value.len() as u32).to_le_bytes());
            out.extend_from_slice(value);
            n += 1;
        }
        out[count_at..count_at + 2].copy_from_slice(&n.to_le_bytes());
        out
    }

    fn decode(bytes: Bytes) -> Option<Stored> {
        let b = &bytes[..];
        let freshness = Freshness {
            stored_ms: u64_at(b, 5)?,
            fresh_ms: u64_at(b, 13)?,
            age0: u32_at(b, 21)?,
            swr: u32_at(b, 25)?,
            sie: u32_at(b, 29)?,
        };
        let status = u16_at(b, 33)?;
        let headers = u16_at(b, 35)?;
        let mut at = FIXED;
        for _ in 0..headers {
            at += 2 + usize::from(u16_at(b, at)?);
            at += 4 + u32_at(b, at)? as usize;
        }
        (at <= b.len()).then_some(Stored {
            bytes,
            freshness,
            status,
            headers,
            body_at: at,
        })
    }

    /// The stored headers, in order.
    pub fn headers(&self) -> impl Iterator<Item = (&[u8], Bytes)> + '_ {
        let b = &self.bytes[..];
        let mut at = FIXED;
        (0..self.headers).map(move |_| {
            let n = usize::from(u16_at(b, at).unwrap_or(0));
            let name = &b[at + 2..at + 2 + n];
            at += 2 + n;
            let v = u32_at(b, at).unwrap_or(0) as usize;
            let value = self.bytes.slice(at + 4..at + 4 + v);
            at += 4 + v;
            (name, value)
        })
    }

    /// The value of a stored header.
    pub fn header(&self, name: &str) -> Option<Bytes> {
        self.headers()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    pub fn body(&self) -> Bytes {
        self.bytes.slice(self.body_at..)
    }

    /// The headers as a map.
    pub fn header_map(&self) -> HeaderMap {
        let mut map = HeaderMap::with_capacity(usize::from(self.headers) + 4);
        for (n, v) in self.headers() {
            if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(n), HeaderValue::from_maybe_shared(v)) {
                map.append(n, v);
            }
        }
        map
    }

    /// The response it replays: status, headers, `Age`, and the body (none for `HEAD`).
    pub fn response(&self, now_ms: u64, head: bool) -> Response<Body> {
        let body = if head {
            Body::empty()
        } else {
            Body::from(self.body())
        };
        let mut r = Response::new(body);
        *r.status_mut() = StatusCode::from_u16(self.status).unwrap_or(StatusCode::OK);
        *r.headers_mut() = self.header_map();
        r.headers_mut()
            .insert(axum::http::header::AGE, self.freshness.age(now_ms).into());
        r
    }
}

impl HttpEntry {
    pub fn loaded(kind: Kind, storage: Storage) -> HttpEntry {
        HttpEntry {
            kind,
            storage: Some(storage),
        }
    }

    /// A value served as it is and not stored (a stale response standing in for a failing
    /// origin).
    pub fn unstored(kind: Kind) -> HttpEntry {
        HttpEntry::loaded(
            kind,
            Storage {
                ttl: Duration::ZERO,
                early: None,
                tags: Vec::new(),
                since: None,
            },
        )
    }
}

impl Codec for HttpEntry {
    fn encode(&self) -> Result<Bytes, String> {
        Ok(match &self.kind {
            Kind::Response(s) => s.bytes.clone(),
            Kind::Variants(names) => {
                let mut out = MAGIC.to_vec();
                out.push(1);
                out.extend_from_slice(&(names.len() as u16).to_le_bytes());
                for n in names {
                    out.extend_from_slice(&(n.len() as u16).to_le_bytes());
                    out.extend_from_slice(n.as_bytes());
                }
                Bytes::from(out)
            }
            Kind::Pass => {
                let mut out = MAGIC.to_vec();
                out.push(2);
                Bytes::from(out)
            }
        })
    }

    fn decode(bytes: &bytes::Bytes) -> Result<Self, String> {
        let bad = || "not an HTTP entry".to_string();
        if bytes.get(..4) != Some(&MAGIC[..]) {
            return Err(bad());
        }
        let kind = match bytes.get(4) {
            Some(0) => Kind::Response(Stored::decode(bytes.clone()).ok_or_else(bad)?),
            Some(1) => {
                let n = u16_at(bytes, 5).ok_or_else(bad)?;
                let mut at = 7;
                let mut names = Vec::with_capacity(usize::from(n));
                for _ in 0..n {
                    let len = usize::from(u16_at(bytes, at).ok_or_else(bad)?);
                    let name = bytes.get(at + 2..at + 2 + len).ok_or_else(bad)?;
                    names.push(String::from_utf8_lossy(name).into_owned());
                    at += 2 + len;
                }
                Kind::Variants(names)
            }
            Some(2) => Kind::Pass,
            _ => return Err(bad()),
        };
        Ok(HttpEntry {
            kind,
            storage: None,
        })
    }

    fn usable(&self) -> bool {
        match &self.kind {
            Kind::Response(s) => s.freshness.servable(super::now_ms()),
            Kind::Variants(_) | Kind::Pass => true,
        }
    }

    fn storage(&self) -> Option<Storage> {
        self.storage.as_ref().map(|s| Storage {
            ttl: s.ttl,
            early: s.early,
            tags: s.tags.clone(),
            since: s.since,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_round_trips_and_its_body_is_not_copied() {
        let mut h = HeaderMap::new();
        h.insert("content-type", "application/json".parse().unwrap());
        h.append("x-two", "a".parse().unwrap());
        h.append("x-two", "b".parse().unwrap());
        let f = Freshness {
            stored_ms: 1_000,
            fresh_ms: 61_000,
            age0: 3,
            swr: 10,
            sie: 20,
        };
        let bytes: bytes::Bytes =
            Stored::encode(StatusCode::NOT_FOUND, &h, b"{\"id\":1}", f).into();
        let e = HttpEntry::decode(&bytes).unwrap();
        let Kind::Response(s) = &e.kind else {
            panic!("not a response")
        };
        assert_eq!((s.status, s.freshness), (404, f));
        assert_eq!(&s.body()[..], b"{\"id\":1}");
        assert_eq!(
            s.body().as_ptr(),
            bytes[bytes.len() - 8..].as_ptr(),
            "a slice"
        );
        let map = s.header_map();
        assert_eq!(map.get_all("x-two").iter().count(), 2);
        assert_eq!(s.header("Content-Type").unwrap(), "application/json");
        assert_eq!(e.encode().unwrap(), bytes.to_vec());
        let r = s.response(11_500, false);
        assert_eq!(r.headers()["age"], "13");
    }

    #[test]
    fn markers_round_trip_and_garbage_is_refused() {
        for kind in [Kind::Variants(vec!["accept-language".into()]), Kind::Pass] {
            let e = HttpEntry {
                kind,
                storage: None,
            };
            let bytes = e.encode().unwrap();
            let back = HttpEntry::decode(&bytes).unwrap();
            assert_eq!(back.encode().unwrap(), bytes.to_vec());
        }
        for junk in [
            &b""[..],
            b"CLH1",
            b"CLH1\x00\x01",
            b"{\"a\":1}",
            b"CLH1\x07",
        ] {
            assert!(
                HttpEntry::decode(&Bytes::copy_from_slice(junk)).is_err(),
                "{junk:?}"
            );
        }
        // A header count that runs past the end.
        let mut b = Stored::encode(
            StatusCode::OK,
            &HeaderMap::new(),
            b"",
            Freshness {
                stored_ms: 0,
                fresh_ms: 0,
                age0: 0,
                swr: 0,
                sie: 0,
            },
        );
        b[35] = 9;
        assert!(HttpEntry::decode(&Bytes::from(b)).is_err());
    }
}
