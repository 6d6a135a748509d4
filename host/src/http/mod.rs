//! HTTP: the response-caching layer the axum integration and `cachelet serve` share, the
//! stored form of a response, the HTTP caching rules, and (feature `proxy`) the reverse proxy.

pub(crate) mod entry;
mod key;
pub(crate) mod layer;
#[cfg(feature = "proxy")]
pub mod proxy;
pub(crate) mod semantics;

use std::time::SystemTime;

/// Milliseconds since the epoch of `t`.
pub(crate) fn ms_of(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Milliseconds since the epoch, now (this host's clock: HTTP freshness is wall-clock time).
pub(crate) fn now_ms() -> u64 {
    ms_of(SystemTime::now())
}
