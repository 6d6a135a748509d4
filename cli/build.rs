//! Builds the policies `cachelet serve` uses when it is given none and embeds them in the
//! binary: `examples/policies/proxy-default` (every GET cached by URL) and, for
//! `--demo-upstream`, the seed policy `examples/policies/seed-rust` (the guide's endpoints).

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    // Read when the script runs, not when it was compiled: a build script compiled for a
    // checkout at another path (a shared target directory) must build this checkout's.
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let root = Path::new(&manifest).join("..");
    for watched in [
        root.join("guest-sdk/src"),
        root.join("guest-sdk/Cargo.toml"),
        root.join("template/src"),
        root.join("wit"),
    ] {
        println!("cargo:rerun-if-changed={}", watched.display());
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    for name in ["proxy-default", "seed-rust"] {
        build(&root.join("examples/policies").join(name), name, &out);
    }
}

/// Builds the guest crate at `policy` into `out/NAME.wasm`.
fn build(policy: &Path, name: &str, out: &Path) {
    for watched in ["src", "Cargo.toml", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", policy.join(watched).display());
    }
    let target = out.join("guest-target");
    // A cargo of its own, for another target: none of this build's settings (a wrapper such
    // as clippy's, flags, its target directory) apply to it.
    let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if (k.starts_with("CARGO") && k != "CARGO_HOME" && k != "CARGO_NET_OFFLINE")
            || k.starts_with("RUSTC")
            || k == "RUSTFLAGS"
            || k == "RUSTDOC"
        {
            cargo.env_remove(&k);
        }
    }
    let status = cargo
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
        ])
        .arg(policy.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .expect("cargo runs");
    assert!(
        status.success(),
        "building the built-in policy {name} (examples/policies/{name}) failed; it needs the \
         wasm32-wasip2 target: rustup target add wasm32-wasip2"
    );
    let artifact = format!("wasm32-wasip2/release/{}.wasm", name.replace('-', "_"));
    std::fs::copy(target.join(artifact), out.join(format!("{name}.wasm")))
        .expect("the built-in policy was built");
}
