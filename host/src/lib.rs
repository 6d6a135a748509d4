//! cachelet: a cache host whose policies are WebAssembly components.
//!
//! A policy (a component targeting the `cachelet:policy/cache-policy@0.2.0` WIT world, written
//! in any language) decides, for each operation, the key, TTL and tags of a read and the tags a
//! write invalidates. The host owns the rest: the backend, namespaces, TTL buckets, versioned
//! tags, fenced fills, stampede control, early and sliding refresh, recache.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use cachelet::Cache;
//!
//! #[derive(serde::Serialize)]
//! struct UserId { user_id: u64 }
//!
//! // Settings come from CACHE_URL, CACHE_PREFIX, ... unless given here.
//! let cache = Cache::builder().policy_file("policy.wasm").build().await?;
//!
//! // A miss runs the loader and caches its value under the policy's key and tags.
//! let name: String = cache
//!     .read("get_user", &UserId { user_id: 42 }, || async { Ok::<_, std::io::Error>("ann".into()) })
//!     .await?;
//!
//! // A write runs its action, then invalidates what the policy names.
//! cache
//!     .write("update_user", &UserId { user_id: 42 }, || async { Ok::<_, std::io::Error>(()) })
//!     .await?;
//! # let _ = name; Ok(()) }
//! ```
#![deny(missing_docs)]

mod args;
mod backend;
mod cache;
mod config;
mod error;
mod flight;
mod policy;
mod read;
mod rules;
mod store;
mod tags;
mod write;

pub use args::{Args, ToArgs, Value};
pub use backend::Invalidation;
pub use cache::{Cache, CacheBuilder, Stats};
pub use config::{BackendUrl, RedisOptions, RedisUrl, Settings, TtlBuckets};
pub use error::{Error, LoadError};
pub use policy::{OpInfo, OpKind, PolicyLimits, PolicyReport, PolicySource, WORLD};
/// The environment variable naming the precompiled-policy folder (see
/// [`CacheBuilder::compile_cache`]).
pub const COMPILE_CACHE_ENV: &str = policy::precompiled::ENV;
pub use rules::{parse_arg, ReadRule, Recache, Template, Ttl, TtlBucket, WriteRule};
pub use write::Written;
