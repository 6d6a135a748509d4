//! Write cachelet cache policies in Rust.
//!
//! A policy is a WebAssembly component that tells the cachelet host how to cache each operation
//! of a service: the key, TTL and tags of a read; the tags a write invalidates and the reads it
//! warms again. With this crate, a policy is one function that declares its operations, in the
//! terms of Python's `svc_infra.cache` (`cache_read`, `cache_write`, `recache`, `resource`):
//!
//! ```
//! use cachelet_guest::prelude::*;
//!
//! fn define(p: &mut Policy) {
//!     p.name("users").version("0.1.0");
//!
//!     // @cache_read(key="user:{user_id}", ttl=300); tagged with its key.
//!     p.read("get_user").key("user:{user_id}").ttl(300);
//!     p.read("get_user_card").key(("user", "card", "{user_id}")).ttl(Ttl::DEFAULT);
//!
//!     // @cache_write(tags=["user:{user_id}"], recache=[recache(get_user, include=["user_id"])])
//!     p.write("update_user")
//!         .tags(["user:{user_id}"])
//!         .recache(recache("get_user").include(["user_id"]));
//!
//!     // user = resource("user", "user_id")
//!     let user = resource("user", "user_id");
//!     p.read_resource(&user, "get_user_profile").suffix("profile").ttl(300).lock(true);
//!     p.write_resource(&user, "update_user_entity")
//!         .recache(recache("get_user_profile").include(["user_id"]))
//!         .recache_max_concurrency(3);
//!
//!     // Computed per call: the host calls the policy.
//!     // `render` renders (and escapes) exactly as a declared key does.
//!     p.read("get_search").rule_with(|a| {
//!         if a.text("q")?.is_empty() {
//!             return Ok(None);
//!         }
//!         Ok(Some(ReadRule::new(a.render("search:{q}")?).tags(["search"])))
//!     });
//! }
//!
//! cachelet_guest::export_policy!(define);
//! # fn main() {
//! #     let policy = Compiled::new(define);
//! #     assert!(policy.describe().is_ok(), "{:?}", policy.errors());
//! # }
//! ```
//!
//! A policy crate is a `cdylib` that depends on this crate; `cargo build --release --target
//! wasm32-wasip2` outputs the component (see `examples/policies/seed-rust`, which declares every
//! example of the svc-infra guide):
//!
//! ```toml
//! [lib]
//! crate-type = ["cdylib"]
//!
//! [dependencies]
//! cachelet-guest = { path = "../../../guest-sdk" }
//!
//! [profile.release]
//! opt-level = 3
//! lto = true
//! strip = true
//! panic = "abort"
//! codegen-units = 1
//! ```
//!
//! Test the rules natively with [`Compiled`]: `Compiled::new(define).read("get_user", &args)`.
//!
//! # Static and dynamic operations
//!
//! An operation declared with templates only is *static*: `describe()` reports its templates
//! and the host renders them natively on every call, without entering the component (the hit
//! path costs no Wasm call). An operation with a closure (`rule_with`, `tags_with`,
//! `recache_with`) is *dynamic*: the host calls the policy's `read` / `write` for each call. The
//! policy's `read` / `write` also answer for static operations, with exactly what the host
//! renders.
//!
//! # Templates
//!
//! `{name}` (ASCII letters, digits, `_`) is replaced by the argument `name`: an integer in
//! decimal, a float as its shortest round-trip decimal (`0.5`, `2` for `2.0`, no exponent), a
//! boolean as `true`/`false`, null as `null`, text and JSON as their text with `%` written `%25`
//! and `:` written `%3A`. `{{` and `}}` are literal braces. Two placeholders need a `:` between
//! them (`{a}:{b}`, not `{a}{b}` or `{a}-{b}`), so that distinct arguments never render to one
//! key. The host renders static ops with the very same code (crate `cachelet-template`). A
//! placeholder without an argument is an error, which the host logs before serving the call
//! uncached.
//!
//! ```
//! use cachelet_guest::prelude::*;
//!
//! let policy = Compiled::new(|p| {
//!     p.read("get_org_user").key("org:{org_id}:user:{user_id}");
//! });
//! let call = [
//!     ("org_id".to_string(), Value::from("1:user:2")),
//!     ("user_id".to_string(), Value::Integer(3)),
//! ];
//! let rule = policy.read("get_org_user", &call).unwrap().unwrap();
//! assert_eq!(rule.key, "org:1%3Auser%3A2:user:3");
//! ```
//!
//! # Declaration errors
//!
//! Declaring never panics. Mistakes (an unbalanced brace, placeholders without a `:` between
//! them, a placeholder not among the declared [`params`](ReadOp::params), a recache of a
//! write, an `early_ttl` not below the TTL, two ops of one name, a computed rule combined with
//! a declared one, ...) are found when the host loads the component: `describe` returns them
//! all, each naming its op, and the host refuses to load the policy. [`Compiled::errors`]
//! lists them in a native test. A recache may name a read that no op of this policy declares:
//! another policy loaded beside it may. Declare `params` on every op: without them a
//! misspelled placeholder is found only when a call fails (a failing write invalidates the
//! whole namespace), and `cachelet check` warns.
//!
//! ```
//! use cachelet_guest::prelude::*;
//!
//! let policy = Compiled::new(|p| {
//!     p.read("get_search").key("search:{q}").rule_with(|_| Ok(None));
//!     p.write("update_item").tags(["item:{item_idd}"]).params(["item_id"]);
//! });
//! assert_eq!(
//!     policy.describe().unwrap_err(),
//!     "get_search: a computed rule cannot also declare key; \
//!      update_item: uses `item_idd`, which is not among its params (item_id)"
//! );
//! ```
//!
//! What the other SDKs refuse at load, Rust's types refuse at build time: a string where a
//! list belongs,
//!
//! ```compile_fail,E0277
//! use cachelet_guest::prelude::*;
//! let _ = Compiled::new(|p| {
//!     p.read("get_search").key("search:{q}").tags("search");
//! });
//! ```
//!
//! an option that does not exist,
//!
//! ```compile_fail,E0599
//! use cachelet_guest::prelude::*;
//! let _ = Compiled::new(|p| {
//!     p.read("get_user").key("user:{user_id}").tag(["users"]);
//! });
//! ```
//!
//! and a TTL or an `early_ttl` outside 0 ..= 2^32 - 1 seconds:
//!
//! ```compile_fail,E0277
//! use cachelet_guest::prelude::*;
//! let _ = Compiled::new(|p| {
//!     p.read("get_user").key("user:{user_id}").ttl(-1);
//! });
//! ```
//!
//! ```compile_fail,E0600
//! use cachelet_guest::prelude::*;
//! let _ = Compiled::new(|p| {
//!     p.read("get_user").key("user:{user_id}").ttl(60).early_ttl(-1);
//! });
//! ```
#![deny(missing_docs)]

mod args;
mod compiled;
mod policy;
mod region;
mod rules;

/// With the feature `region-alloc` (on by default), a component's allocations go through
/// [`Regions`]. The host's timings in BENCHMARKS.md are with it.
#[cfg(all(
    feature = "region-alloc",
    target_family = "wasm",
    not(target_feature = "atomics")
))]
#[global_allocator]
static REGIONS: Regions = Regions::new();

/// The bindings `wit-bindgen` generates for the `cachelet:policy/cache-policy` world.
///
/// The WIT's types are re-exported at the crate root; the import interfaces as [`store`] and
/// [`log`].
#[doc(hidden)]
#[allow(missing_docs)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "cache-policy",
        pub_export_macro: true,
        export_macro_name: "__export_cache_policy",
        default_bindings_module: "cachelet_guest::bindings",
        additional_derives: [PartialEq],
    });
}

pub use args::Args;
pub use bindings::cachelet::policy::types::{
    OpInfo, OpKind, PolicyInfo, ReadRule, Recache, RecacheTemplate, Ttl, TtlBucket, Value,
    WriteRule, WriteTemplate,
};
pub use compiled::Compiled;
pub use policy::{resource, IntoKey, Policy, ReadOp, Resource, WriteOp};
pub use region::Regions;
pub use rules::recache;

/// Direct access to the cache, confined to the cache's namespace; values are JSON text.
/// Only available inside a component (the host provides it).
///
/// ```no_run
/// use cachelet_guest::store;
///
/// let hits = store::incr("stats:hits", 1).unwrap_or(0);
/// if store::get("config:banner").is_none() {
///     store::set("config:banner", "\"hello\"", None, true);
/// }
/// store::invalidate(&["user:42".to_string()]);
/// # let _ = hits;
/// ```
pub mod store {
    pub use crate::bindings::cachelet::policy::store::{
        delete, exists, get, incr, invalidate, set,
    };
}

/// Logging into the host's log, tagged with the policy's name. Only available inside a
/// component (the host provides it).
pub mod log {
    pub use crate::bindings::cachelet::policy::log::{log, Level};

    /// Logs `message` at level `warn`.
    pub fn warn(message: &str) {
        log(Level::Warn, message);
    }

    /// Logs `message` at level `error`.
    pub fn error(message: &str) {
        log(Level::Error, message);
    }

    /// Logs `message` at level `info`.
    pub fn info(message: &str) {
        log(Level::Info, message);
    }

    /// Logs `message` at level `debug`.
    pub fn debug(message: &str) {
        log(Level::Debug, message);
    }
}

/// What a policy needs in scope: `use cachelet_guest::prelude::*;`.
pub mod prelude {
    pub use crate::{
        recache, resource, Args, Compiled, Policy, ReadRule, Recache, Ttl, Value, WriteRule,
    };
}

/// Exports the policy declared by `define` (a `fn(&mut Policy)`) as the component's
/// `cachelet:policy/policy` interface. Use it once, in the policy's `cdylib` crate.
///
/// The declaration runs once, on the first call from the host (`describe`, at load time); its
/// errors are what `describe` returns, and the host refuses to load the policy. The policy's
/// name and version default to the crate's.
///
/// ```
/// use cachelet_guest::prelude::*;
///
/// fn define(p: &mut Policy) {
///     p.read("get_user").key("user:{user_id}").ttl(300);
/// }
///
/// cachelet_guest::export_policy!(define);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! export_policy {
    ($define:path) => {
        const _: () = {
            struct CacheletPolicy;

            impl $crate::bindings::exports::cachelet::policy::policy::Guest for CacheletPolicy {
                fn describe() -> ::std::result::Result<$crate::PolicyInfo, ::std::string::String> {
                    $crate::__private::with(
                        $define,
                        env!("CARGO_PKG_NAME"),
                        env!("CARGO_PKG_VERSION"),
                        |p| p.describe(),
                    )
                }

                fn read(
                    op: u32,
                    args: ::std::vec::Vec<(::std::string::String, $crate::Value)>,
                ) -> ::std::result::Result<
                    ::std::option::Option<$crate::ReadRule>,
                    ::std::string::String,
                > {
                    $crate::__private::with(
                        $define,
                        env!("CARGO_PKG_NAME"),
                        env!("CARGO_PKG_VERSION"),
                        |p| p.read_at(op, &args),
                    )
                }

                fn write(
                    op: u32,
                    args: ::std::vec::Vec<(::std::string::String, $crate::Value)>,
                    result: ::std::option::Option<$crate::Value>,
                ) -> ::std::result::Result<
                    ::std::option::Option<$crate::WriteRule>,
                    ::std::string::String,
                > {
                    $crate::__private::with(
                        $define,
                        env!("CARGO_PKG_NAME"),
                        env!("CARGO_PKG_VERSION"),
                        |p| p.write_at(op, &args, result.as_ref()),
                    )
                }
            }

    $crate::bindings::__export_cache_policy!(CacheletPolicy with_types_in $crate::bindings);
        };
    };
}

#[doc(hidden)]
pub mod __private {
    use std::cell::OnceCell;

    use crate::{Compiled, Policy};

    thread_local! {
        static POLICY: OnceCell<Compiled> = const { OnceCell::new() };
    }

    /// Runs `f` on the policy, compiling it from `define` on the first call.
    pub fn with<R>(
        define: fn(&mut Policy),
        name: &str,
        version: &str,
        f: impl FnOnce(&Compiled) -> R,
    ) -> R {
        POLICY.with(|cell| {
            let policy = cell.get_or_init(|| {
                let mut declared = Policy::default();
                define(&mut declared);
                Compiled::compile(declared, name, version)
            });
            f(policy)
        })
    }
}
