//! `cachelet new` for every language, then the build command it prints: the component that
//! comes out is one `cachelet check` accepts and `cachelet call` answers. The toolchains are
//! the ones scripts/guest-toolchains.sh installs (`cachelet_tests::toolchains`: reused, not
//! installed again per project).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cachelet_tests::{compile_cache, guest_target, repo, toolchains};

fn cachelet(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cachelet"))
        .current_dir(dir)
        .env("CACHELET_COMPILE_CACHE", compile_cache())
        .args(args)
        .output()
        .expect("run cachelet")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A fresh folder for one language's project.
fn workdir(lang: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cachelet-new-{lang}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn new_build_check_call(lang: &str) {
    let status = Command::new(repo().join("scripts/guest-toolchains.sh"))
        .arg(lang)
        .status()
        .unwrap();
    assert!(status.success(), "toolchain for {lang}");
    let dir = workdir(lang);
    let name = format!("my-{lang}-policy");

    // 1. cachelet new
    let out = cachelet(&dir, &["new", "--lang", lang, &name]);
    let said = text(&out.stdout);
    assert!(out.status.success(), "{said}{}", text(&out.stderr));
    assert!(dir.join(&name).join("wit/policy.wit").is_file());

    // 2. the build command it prints (the line after "build it:", without its comment)
    let build = said
        .lines()
        .skip_while(|l| !l.starts_with("build it:"))
        .nth(1)
        .and_then(|l| l.split('#').next())
        .map(str::trim)
        .unwrap_or_else(|| panic!("no build command in:\n{said}"))
        .to_string();
    let out = Command::new("sh")
        .arg("-c")
        .arg(&build)
        .current_dir(&dir)
        .env("CACHELET_TOOLCHAINS", toolchains())
        // Rust: reuse the guest builds' dependencies.
        .env("CARGO_TARGET_DIR", guest_target())
        // Everything the project needs is in it or in the toolchains: no registry is asked.
        .env("CARGO_NET_OFFLINE", "true")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{build}: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let wasm = format!("{name}/{name}.wasm");

    // 3. check accepts it, without a warning (every op declares its params); call answers.
    let out = cachelet(&dir, &["check", &wasm]);
    let report = text(&out.stdout);
    assert!(out.status.success(), "{report}{}", text(&out.stderr));
    assert!(
        !text(&out.stderr).contains("warning"),
        "{}",
        text(&out.stderr)
    );
    assert!(report.contains(&format!("policy {name} 0.1.0")), "{report}");
    assert!(report.contains("read  get_item"), "{report}");
    for guest in [false, true] {
        let mut args = vec!["call", &wasm, "read", "get_item", "item_id=42"];
        if guest {
            args.insert(1, "--guest");
        }
        let out = cachelet(&dir, &args);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let rule: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(rule["key"], "item:42", "guest: {guest}");
        assert_eq!(rule["ttl"]["seconds"], 300);
        // The vendored SDK renders text as the host does: escaped.
        args.pop();
        args.push("item_id:=a:b%");
        let out = cachelet(&dir, &args);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let rule: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(rule["key"], "item:a%3Ab%25", "guest: {guest}");
    }
    let out = cachelet(
        &dir,
        &[
            "call",
            "--guest",
            &wasm,
            "write",
            "update_item",
            "item_id=42",
        ],
    );
    let rule: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rule["invalidate"], serde_json::json!(["item:42"]));
    assert_eq!(rule["recache"][0]["op"], "get_item");

    // 4. The rules' own tests, as `new` prints them (Python, JavaScript: no component).
    if let Some(line) = said.lines().find(|l| l.contains("# the rules")) {
        let cmd = line.split('#').next().unwrap().trim();
        let out = Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .current_dir(&dir)
            .env("CACHELET_TOOLCHAINS", toolchains())
            .env("CARGO_TARGET_DIR", guest_target())
            .env("CARGO_NET_OFFLINE", "true")
            .output()
            .unwrap();
        let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(out.status.success(), "{cmd}: {said}");
        assert!(
            said.contains("OK") || said.contains("# fail 0") || said.contains("test result: ok"),
            "{cmd}: {said}"
        );
    } else {
        assert_eq!(lang, "c", "no test command printed:\n{said}");
    }

    // A second `new` of the same name refuses to overwrite.
    let out = cachelet(&dir, &["new", "--lang", lang, &name]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("exists already"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn new_rust_builds_a_policy_check_accepts() {
    new_build_check_call("rust");
}

#[test]
fn new_python_builds_a_policy_check_accepts() {
    new_build_check_call("python");
}

#[test]
fn new_js_builds_a_policy_check_accepts() {
    new_build_check_call("js");
}

#[test]
fn new_c_builds_a_policy_check_accepts() {
    new_build_check_call("c");
}

#[test]
fn new_refuses_a_bad_name() {
    let dir = workdir("bad-name");
    let out = cachelet(&dir, &["new", "--lang", "python", "My Policy"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("lowercase"),
        "{}",
        text(&out.stderr)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
