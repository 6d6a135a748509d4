//! The Python and JavaScript SDKs' native harnesses (`Compiled`, as the Rust SDK's): a policy's
//! rules tested in CPython and in Node without building a component. The seeds' own tests run
//! here as an author runs them.

use std::path::{Path, PathBuf};
use std::process::Command;

use cachelet_tests::{repo, toolchains};

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run the test command");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

/// A fresh folder under build/.
fn scratch(name: &str) -> PathBuf {
    let dir = repo()
        .join("build/harness")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

#[test]
fn the_python_seed_is_tested_in_cpython_without_a_component() {
    let status = Command::new(repo().join("scripts/guest-toolchains.sh"))
        .arg("python")
        .status()
        .unwrap();
    assert!(status.success());
    // The bindings componentize-py generates from the WIT: plain Python.
    let bindings = scratch("py-bindings");
    run(Command::new(toolchains().join("venv/bin/componentize-py"))
        .args(["-d", "wit", "-w", "cache-policy", "bindings"])
        .arg(&bindings)
        .current_dir(repo()));
    let path = format!(
        "{}:{}",
        bindings.display(),
        repo().join("guest-sdk/python").display()
    );
    let out = run(Command::new("python3")
        .args(["-m", "unittest", "-v"])
        .current_dir(repo().join("examples/policies/seed-python"))
        .env("PYTHONPATH", path)
        .env("PYTHONDONTWRITEBYTECODE", "1"));
    assert!(out.contains("Ran 4 tests") && out.contains("OK"), "{out}");
    std::fs::remove_dir_all(&bindings).unwrap();
}

#[test]
fn the_javascript_seed_is_tested_in_node_without_a_component() {
    // As in a project: the policy and the SDK side by side (with its package.json).
    let dir = scratch("js");
    copy_dir(&repo().join("examples/policies/seed-js"), &dir);
    copy_dir(&repo().join("guest-sdk/js"), &dir);
    let out = run(Command::new("node").arg("--test").current_dir(&dir));
    assert!(
        out.contains("# pass 4") && out.contains("# fail 0"),
        "{out}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
