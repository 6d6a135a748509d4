//! Test harness: builds the guest components the tests load (real components, compiled from
//! the sources in this repository) and hands out their paths.
//!
//! Components are built once per test run with the workspace's Rust toolchain for
//! `wasm32-wasip2` into `build/`, and rebuilt when their sources are newer.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::SystemTime;

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repository")
        .to_path_buf()
}

/// Guest crates by component name.
fn crate_dir(name: &str) -> PathBuf {
    let r = repo();
    match name {
        "seed-rust" => r.join("examples/policies/seed-rust"),
        "faulty" => r.join("tests/guests/faulty"),
        "future-world" => r.join("tests/guests/future-world"),
        other => panic!("no guest crate named {other}"),
    }
}

fn newest(dir: &Path) -> SystemTime {
    let mut t = SystemTime::UNIX_EPOCH;
    let Ok(rd) = std::fs::read_dir(dir) else {
        return t;
    };
    for e in rd.flatten() {
        let p = e.path();
        let name = e.file_name();
        if name == "target" {
            continue;
        }
        let m = if p.is_dir() {
            newest(&p)
        } else {
            e.metadata()
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH)
        };
        t = t.max(m);
    }
    t
}

/// The path of a compiled guest component, building it first if needed.
pub fn component(name: &str) -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _g = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let out_dir = repo().join("build/policies");
    let out = out_dir.join(format!("{name}.wasm"));
    let src = crate_dir(name);
    let stale = match std::fs::metadata(&out).and_then(|m| m.modified()) {
        Ok(built) => {
            newest(&src) > built
                || newest(&repo().join("wit")) > built
                || (name == "seed-rust" && newest(&repo().join("guest-sdk")) > built)
        }
        Err(_) => true,
    };
    if stale {
        let target = repo().join("build/guest-target");
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args([
                "build",
                "--release",
                "--target",
                "wasm32-wasip2",
                "--manifest-path",
            ])
            .arg(src.join("Cargo.toml"))
            .env("CARGO_TARGET_DIR", &target)
            .status()
            .expect("run cargo to build a guest");
        assert!(status.success(), "building guest {name} failed");
        std::fs::create_dir_all(&out_dir).unwrap();
        let artifact = target
            .join("wasm32-wasip2/release")
            .join(format!("{}.wasm", name.replace('-', "_")));
        std::fs::copy(&artifact, &out)
            .unwrap_or_else(|e| panic!("copy {}: {e}", artifact.display()));
    }
    out
}
