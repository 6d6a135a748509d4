//! Metrics, through the [`metrics`](https://docs.rs/metrics) facade: the embedding program
//! installs the recorder (Prometheus, StatsD, ...) it wants, before it builds the cache.
//!
//! Labels are bounded: `policy`, `op` (names the policies declare) and `outcome`; never a key
//! or an argument. The per-op handles of the read path are registered when the policies load,
//! so a hit pays one counter increment, not a lookup in the recorder.
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `cachelet_reads_total` | counter | `policy`, `op`, `outcome` = `hit`, `miss`, `stale`, `uncached`, `error` |
//! | `cachelet_loader_seconds` | histogram | `policy`, `op` |
//! | `cachelet_policy_call_seconds` | histogram | `policy` (guest calls; template ops are rendered by the host) |
//! | `cachelet_backend_seconds` | histogram | `backend` = `redis` (a lookup; the memory backend's is the hit itself) |
//! | `cachelet_writes_total` | counter | `op`, `outcome` = `delivered`, `held`, `nothing`, `flushed` |
//! | `cachelet_invalidations_total` | counter | (tags invalidated) |
//! | `cachelet_recaches_total` | counter | `op`, `outcome` = `ok`, `error`, `no_loader` |
//! | `cachelet_lock_waits_total` | counter | `op` (a read waited for another's load) |
//! | `cachelet_lock_timeouts_total` | counter | `op` (the wait ran past `lock_wait`) |
//! | `cachelet_guest_faults_total` | counter | `policy` |
//! | `cachelet_breaker_open` | gauge | (1 while Redis is considered down) |
//! | `cachelet_held_invalidations` | gauge | |
//! | `cachelet_entries` | gauge | (memory backend) |
//! | `cachelet_bytes` | gauge | (memory backend, weighted size) |
//! | `cachelet_http_requests_total` | counter | `outcome` = `hit`, `miss`, `pass` (the proxy) |
//! | `cachelet_http_seconds` | histogram | `outcome` (the proxy: until the answer's headers) |
//! | `cachelet_http_bytes_total` | counter | (the proxy: bytes of bodies whose length was known) |
//! | `cachelet_upstream_seconds` | histogram | (the proxy: until the upstream's headers) |
//! | `cachelet_upstream_responses_total` | counter | `status` = `2xx` ... `5xx` (the upstream's answers), `unreachable`, `timeout`, `body_too_large` (the proxy's own `502`, `504`, `413`) |
//!
//! Tracing spans, at `DEBUG` (so that at the usual `INFO` level the hit path pays one level
//! check): `cachelet.read` and `cachelet.write` (fields `op`, `outcome`), `cachelet.loader`,
//! `cachelet.policy` (`policy`, `op`), `cachelet.backend` (`backend`, Redis lookups) and
//! `cachelet.recache` (`op`). Keys and argument values appear only in `DEBUG` events.
//!
//! A `read` "stale" is a hit served while this caller triggered its early refresh. The gauges
//! are sampled every second by a task of the cache (stopped when the cache is dropped).

use std::sync::Arc;

use ::metrics::{counter, gauge, histogram, Counter, Histogram};

/// A read's outcome, as counted.
#[derive(Clone, Copy)]
pub(crate) enum Outcome {
    Hit,
    Miss,
    Stale,
    Uncached,
    Error,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::Miss => "miss",
            Outcome::Stale => "stale",
            Outcome::Uncached => "uncached",
            Outcome::Error => "error",
        }
    }
}

/// The handles of one read op, registered when its policy loads.
pub(crate) struct ReadMetrics {
    hit: Counter,
    miss: Counter,
    stale: Counter,
    uncached: Counter,
    error: Counter,
    pub loader: Histogram,
}

impl ReadMetrics {
    pub fn new(policy: &str, op: &str) -> ReadMetrics {
        let c = |outcome: Outcome| counter!("cachelet_reads_total", "policy" => policy.to_string(), "op" => op.to_string(), "outcome" => outcome.name());
        ReadMetrics {
            hit: c(Outcome::Hit),
            miss: c(Outcome::Miss),
            stale: c(Outcome::Stale),
            uncached: c(Outcome::Uncached),
            error: c(Outcome::Error),
            loader: histogram!("cachelet_loader_seconds", "policy" => policy.to_string(), "op" => op.to_string()),
        }
    }

    /// For calls of an op no policy declares (one label value for all of them).
    pub fn undeclared() -> Arc<ReadMetrics> {
        Arc::new(ReadMetrics::new("", "undeclared"))
    }

    /// Counts a read's outcome, and records it on the read's span when spans are on.
    #[inline]
    pub fn count(&self, outcome: Outcome) {
        if tracing::enabled!(tracing::Level::DEBUG) {
            tracing::Span::current().record("outcome", outcome.name());
        }
        match outcome {
            Outcome::Hit => &self.hit,
            Outcome::Miss => &self.miss,
            Outcome::Stale => &self.stale,
            Outcome::Uncached => &self.uncached,
            Outcome::Error => &self.error,
        }
        .increment(1);
    }
}

/// The handles of one policy.
pub(crate) struct PolicyMetrics {
    pub call: Histogram,
    pub faults: Counter,
}

impl PolicyMetrics {
    pub fn new(policy: &str) -> PolicyMetrics {
        PolicyMetrics {
            call: histogram!("cachelet_policy_call_seconds", "policy" => policy.to_string()),
            faults: counter!("cachelet_guest_faults_total", "policy" => policy.to_string()),
        }
    }
}

pub(crate) fn backend_seconds() -> Histogram {
    histogram!("cachelet_backend_seconds", "backend" => "redis")
}

pub(crate) fn write(op: &str, outcome: &'static str) {
    counter!("cachelet_writes_total", "op" => op.to_string(), "outcome" => outcome).increment(1);
}

pub(crate) fn invalidations(n: u64) {
    counter!("cachelet_invalidations_total").increment(n);
}

pub(crate) fn recache(op: &str, outcome: &'static str) {
    counter!("cachelet_recaches_total", "op" => op.to_string(), "outcome" => outcome).increment(1);
}

pub(crate) fn lock_wait(op: &str) {
    counter!("cachelet_lock_waits_total", "op" => op.to_string()).increment(1);
}

pub(crate) fn lock_timeout(op: &str) {
    counter!("cachelet_lock_timeouts_total", "op" => op.to_string()).increment(1);
}

/// The proxy's per-request handles, registered once (the recorder is installed before).
#[cfg(feature = "proxy")]
struct HttpMetrics {
    requests: [Counter; 3],
    seconds: [Histogram; 3],
    bytes: Counter,
    upstream: Histogram,
}

#[cfg(feature = "proxy")]
fn http_metrics() -> &'static HttpMetrics {
    static M: std::sync::OnceLock<HttpMetrics> = std::sync::OnceLock::new();
    M.get_or_init(|| {
        let names = ["hit", "miss", "pass"];
        HttpMetrics {
            requests: names.map(|o| counter!("cachelet_http_requests_total", "outcome" => o)),
            seconds: names.map(|o| histogram!("cachelet_http_seconds", "outcome" => o)),
            bytes: counter!("cachelet_http_bytes_total"),
            upstream: histogram!("cachelet_upstream_seconds"),
        }
    })
}

/// A request the proxy answered.
#[cfg(feature = "proxy")]
pub(crate) fn http_request(outcome: &'static str, took: std::time::Duration, bytes: u64) {
    let m = http_metrics();
    let i = match outcome {
        "hit" => 0,
        "miss" => 1,
        _ => 2,
    };
    m.requests[i].increment(1);
    m.seconds[i].record(took);
    m.bytes.increment(bytes);
}

/// What came of a request to the proxy's upstream: its answer's status class, or the proxy's
/// own failure (no answer).
#[cfg(feature = "proxy")]
#[derive(Clone, Copy)]
pub(crate) enum Upstream {
    /// The upstream answered with this status.
    Answered(u16),
    /// It could not be reached (the client's `502`).
    Unreachable,
    /// It did not answer in time (the client's `504`).
    Timeout,
    /// The client's body went past the limit on its way (the client's `413`).
    TooLarge,
}

/// A request to the proxy's upstream.
#[cfg(feature = "proxy")]
pub(crate) fn upstream(what: Upstream, took: std::time::Duration) {
    http_metrics().upstream.record(took);
    let label = match what {
        Upstream::Answered(200..=299) => "2xx",
        Upstream::Answered(300..=399) => "3xx",
        Upstream::Answered(400..=499) => "4xx",
        Upstream::Answered(_) => "5xx",
        Upstream::Unreachable => "unreachable",
        Upstream::Timeout => "timeout",
        Upstream::TooLarge => "body_too_large",
    };
    counter!("cachelet_upstream_responses_total", "status" => label).increment(1);
}

/// The store's gauges, as sampled (see `Store::sample`).
pub(crate) fn store_gauges(held: usize, breaker_open: bool, memory: Option<(u64, u64)>) {
    gauge!("cachelet_held_invalidations").set(held as f64);
    gauge!("cachelet_breaker_open").set(if breaker_open { 1.0 } else { 0.0 });
    if let Some((entries, bytes)) = memory {
        gauge!("cachelet_entries").set(entries as f64);
        gauge!("cachelet_bytes").set(bytes as f64);
    }
}
