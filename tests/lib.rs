//! Test harness: the guest components the tests load are real components, compiled from the
//! sources in this repository by `scripts/build-policies.sh` (once per name and test process;
//! cargo rebuilds only what changed).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repository")
        .to_path_buf()
}

/// Where compiled components are kept between runs: `CACHELET_COMPILE_CACHE` (the test command
/// keeps it under the user's cache directory), else `build/compile-cache`.
pub fn compile_cache() -> PathBuf {
    std::env::var_os("CACHELET_COMPILE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("build/compile-cache"))
}

/// The guest toolchains: where the test command keeps them (`TOOLCHAINS_DIR`), else where
/// scripts/guest-toolchains.sh puts them by default.
pub fn toolchains() -> PathBuf {
    std::env::var_os("TOOLCHAINS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("build/toolchains"))
}

/// The target directory guest Rust builds share (`GUEST_TARGET_DIR`), else
/// `build/guest-target`.
pub fn guest_target() -> PathBuf {
    std::env::var_os("GUEST_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("build/guest-target"))
}

/// The path of a compiled guest component, building it first.
pub fn component(name: &str) -> PathBuf {
    static BUILT: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    let built = built.get_or_insert_with(HashSet::new);
    let out = repo().join("build/policies").join(format!("{name}.wasm"));
    if !built.contains(name) {
        let status = Command::new(repo().join("scripts/build-policies.sh"))
            .arg(name)
            .status()
            .expect("run scripts/build-policies.sh");
        assert!(status.success(), "building guest {name} failed");
        built.insert(name.to_string());
    }
    out
}

/// The seed policy's reads that one of its writes recaches (in every language): the tests
/// register a loader for each.
pub const RECACHED_READS: [&str; 6] = [
    "get_user",
    "get_org_user",
    "get_user_with_options",
    "get_user_details",
    "get_user_profile",
    "get_user_settings",
];

/// The rule of one call of `op` as JSON, `{"refused": message}` for the policy's error, or
/// `{"host error": ...}` for a placeholder without an argument; `guest` forces the guest's
/// render of a static op.
pub async fn rule(
    c: &cachelet::Cache,
    op: &str,
    read: bool,
    args: &cachelet::Args,
    guest: bool,
) -> serde_json::Value {
    let r = if read {
        c.read_rule(op, args, guest)
            .await
            .map(|r| serde_json::to_value(r).unwrap())
    } else {
        c.write_rule(op, args, None, guest)
            .await
            .map(|r| serde_json::to_value(r).unwrap())
    };
    match r {
        Ok(rule) => rule,
        Err(cachelet::Error::Policy { message, .. }) => serde_json::json!({ "refused": message }),
        Err(e @ cachelet::Error::MissingArg { .. }) => {
            serde_json::json!({ "host error": e.to_string() })
        }
        Err(e) => panic!("{op}: unexpected error {e}"),
    }
}

/// What a `fmt` subscriber writes, collected (its writer: `move || captured.clone()`).
#[derive(Clone, Default)]
pub struct Captured(std::sync::Arc<Mutex<Vec<u8>>>);

impl Captured {
    /// Collects what this thread logs at `level` and above (a `fmt` subscriber, no colours),
    /// until the guard is dropped.
    ///
    /// tracing caches each log site's interest when the site is first reached. While a single
    /// dispatcher is registered, it asks only the thread that reaches the site first: a test
    /// running beside this one, with no subscriber, would switch the site off for this one
    /// too. A second dispatcher, registered for the whole process, makes it ask them all.
    pub fn install(level: tracing::Level) -> (Captured, tracing::subscriber::DefaultGuard) {
        static SECOND: std::sync::OnceLock<tracing::Dispatch> = std::sync::OnceLock::new();
        SECOND.get_or_init(|| tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default()));
        let logs = Captured::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(level)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

mod child;
pub mod redis;
mod target;

pub use child::ChildHost;

pub use target::Target;

/// Instantiates a behavioural suite on one backend: a module of `#[tokio::test]`s, each
/// calling the suite's `async fn NAME(&Target)` of the same name in the enclosing module.
#[macro_export]
macro_rules! suite {
    ($module:ident, $target:expr, [$($test:ident),* $(,)?]) => {
        mod $module {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(&$target).await
                }
            )*
        }
    };
}
