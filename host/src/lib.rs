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
#[cfg(feature = "axum")]
pub mod axum;
mod backend;
mod builder;
mod cache;
mod config;
mod digest;
mod embed;
mod error;
mod flight;
#[cfg(feature = "axum")]
mod http;
mod loader;
pub mod metrics;
mod policy;
mod read;
mod route;
mod rules;
mod store;
mod tags;
mod write;

pub use args::{Args, ToArgs, Value};
pub use backend::Invalidation;
pub use builder::CacheBuilder;
pub use cache::{Cache, Stats};
/// Caches an `async fn` through a read op of the policies (the modelled library's
/// `@cache_read`).
///
/// The function's parameters become the op's arguments, by name (any `Serialize` value); its
/// body is the loader. A parameter marked `#[cachelet(skip)]` is not an argument (a database
/// pool, a client); `#[cachelet(rename = "name")]` gives the argument another name;
/// `#[cachelet(cache)]` marks a `Cache` (or `&Cache`) parameter as the cache to use, else the
/// one [`install`]ed is used.
///
/// The function returns its own `Result<T, E>`: `T: Serialize + DeserializeOwned`, and
/// `E: From<LoadError>` for the callers that waited for another caller's failed load (`lock`).
/// A cache problem never turns a successful body into an error: no cache installed, arguments
/// that do not convert, a policy that faults, a backend that does not answer all run the body
/// uncached (logged and counted).
///
/// The function is also registered, at link time, as the loader of its op: a write whose
/// policy recaches the op calls it with the recache's arguments, and the skipped parameters
/// get the value of their type given to [`Cache::provide`] (so their type, or the type they
/// reference, is `Clone + Send + Sync + 'static`; a function with a `&mut` parameter is not
/// registered, use [`Cache::register_loader`]).
///
/// A body whose parameters all own their values runs through [`Cache::read`]: an `early_ttl`
/// refresh happens in the background. One that borrows (a `&Db`, a `&str`) runs through
/// [`Cache::read_scoped`]: the caller that claims an early refresh runs it in line.
///
/// ```
/// use cachelet::Cache;
///
/// #[derive(Clone)]
/// struct Db;
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct User {
///     id: u64,
///     name: String,
/// }
///
/// #[cachelet::read("get_user")]
/// async fn get_user(#[cachelet(skip)] db: &Db, user_id: u64) -> Result<User, anyhow::Error> {
///     Ok(User { id: user_id, name: "ann".into() })
/// }
///
/// // The same, with the cache passed explicitly.
/// #[cachelet::read("get_org_user")]
/// async fn get_org_user(
///     #[cachelet(cache)] cache: &Cache,
///     org_id: u64,
///     user_id: u64,
/// ) -> Result<User, anyhow::Error> {
///     Ok(User { id: user_id, name: format!("ann of {org_id}") })
/// }
///
/// # let rt = tokio::runtime::Runtime::new().unwrap();
/// # rt.block_on(async {
/// let cache = Cache::builder().url("mem://").build().await.unwrap();
/// cache.provide(Db); // for recache
/// cachelet::install(cache.clone());
/// assert_eq!(get_user(&Db, 42).await.unwrap().id, 42);
/// assert_eq!(get_org_user(&cache, 7, 42).await.unwrap().name, "ann of 7");
/// # });
/// ```
pub use cachelet_macros::read;
/// Runs an `async fn` as the action of a write op of the policies, then applies its write
/// rule (the modelled library's `@cache_write`): tags invalidated, reads recached.
///
/// Parameters are as for [`read`](macro@read). The rule sees the arguments and the function's
/// result (`R: Serialize`). Once the body has succeeded the invalidation happens, even if the
/// caller's future is dropped (see [`Cache::write`]); an error of the body is returned as is
/// and invalidates nothing.
///
/// ```
/// #[derive(Clone)]
/// struct Db;
///
/// #[cachelet::write("update_user")]
/// async fn update_user(
///     #[cachelet(skip)] db: &Db,
///     user_id: u64,
///     name: String,
/// ) -> Result<(), std::io::Error> {
///     Ok(())
/// }
/// # let rt = tokio::runtime::Runtime::new().unwrap();
/// # rt.block_on(async {
/// # cachelet::install(cachelet::Cache::builder().url("mem://").build().await.unwrap());
/// update_user(&Db, 42, "ann".into()).await.unwrap();
/// # });
/// ```
pub use cachelet_macros::write;
pub use config::{BackendUrl, GuestLimits, RedisOptions, RedisUrl, Settings, TtlBuckets};
#[doc(hidden)]
pub use embed::__private;
pub use embed::{install, installed};
pub use error::{Blame, Cause, Error, LoadError};
#[cfg(feature = "proxy")]
pub use http::proxy;
pub use policy::fleet::{Push, PushOptions, PushedPolicy};
pub use policy::lifecycle::{PolicyFailure, PolicyOrigin, PolicyState, PolicyStatus, Serving};
pub use policy::signature::{policy_keypair, sign_policy};
pub use policy::{
    OpInfo, OpKind, PolicyLimits, PolicyReport, PolicySource, RequestedLimits, WORLD,
};
/// The environment variable naming the precompiled-policy folder (see
/// [`CacheBuilder::compile_cache`]).
pub const COMPILE_CACHE_ENV: &str = policy::precompiled::ENV;
pub use rules::{parse_arg, ReadRule, Recache, Template, Ttl, TtlBucket, WriteRule};
pub use write::Written;
