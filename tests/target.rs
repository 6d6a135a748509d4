//! Where a behavioural suite runs: the memory backend, or a real Redis server (plain, TLS,
//! ACL-protected) or cluster that the harness starts once per test process.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use cachelet::{BackendUrl, Settings};

use crate::redis::{RedisCluster, RedisOptions, RedisServer};

/// A backend for the suite. Every cache built from it gets a namespace of its own, so tests
/// sharing one server never see each other's entries.
#[derive(Clone)]
pub struct Target {
    base: Settings,
}

fn unique_prefix() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "t{}n{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn redis_settings(url: &str) -> Settings {
    let mut s = Settings::default();
    s.url = BackendUrl::parse(url).expect("the harness gives valid URLs");
    // The suite runs many tests at once on two cores: give Redis time to answer, so that a
    // slow moment is not mistaken for an outage (the outage tests set their own bounds).
    s.redis.timeout = Duration::from_secs(3);
    s
}

impl Target {
    /// The in-process memory backend.
    pub fn memory() -> Target {
        Target {
            base: Settings::default(),
        }
    }

    /// One plain Redis server.
    pub fn redis() -> Target {
        static SERVER: OnceLock<RedisServer> = OnceLock::new();
        let s = SERVER.get_or_init(RedisServer::plain);
        Target {
            base: redis_settings(&s.url()),
        }
    }

    /// One Redis server that requires an ACL user with a password.
    pub fn redis_acl() -> Target {
        static SERVER: OnceLock<RedisServer> = OnceLock::new();
        let s = SERVER.get_or_init(|| {
            RedisServer::start(RedisOptions::default().acl_user("cachelet", "s3cret-pass"))
        });
        Target {
            base: redis_settings(&s.url()),
        }
    }

    /// One Redis server serving TLS only, with a CA the harness generated.
    pub fn redis_tls() -> Target {
        static SERVER: OnceLock<RedisServer> = OnceLock::new();
        let s = SERVER.get_or_init(|| RedisServer::start(RedisOptions::default().tls()));
        let mut base = redis_settings(&s.url());
        base.redis.tls_ca_file = Some(s.ca_cert().to_path_buf());
        Target { base }
    }

    /// A Redis Cluster of three masters.
    pub fn redis_cluster() -> Target {
        static CLUSTER: OnceLock<RedisCluster> = OnceLock::new();
        let c = CLUSTER.get_or_init(|| RedisCluster::start(3));
        Target {
            base: redis_settings(&c.url()),
        }
    }

    /// Settings for one cache, in a namespace no other cache of the run uses.
    pub fn settings(&self) -> Settings {
        let mut s = self.base.clone();
        s.prefix = unique_prefix();
        s
    }
}
