//! The `cachelet` binary's lifecycle items on real components: `check` says whether a
//! precompiled copy was there and checks a component beside a directory's policies
//! (`--with`); `call` takes structured arguments as JSON (`--args`); the CLI keeps compiled
//! components in its own compile cache by default.

use std::path::Path;
use std::process::{Command, Output};

use cachelet_tests::component;

fn cachelet(env: &[(&str, &Path)], args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cachelet"));
    cmd.env_remove("CACHELET_COMPILE_CACHE")
        .env_remove("XDG_CACHE_HOME");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.args(args).output().expect("run cachelet")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn fresh(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("cachelet-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn check_compiles_once_into_the_users_cache_and_says_so() {
    let home = fresh("home");
    let policy = component("lifecycle-a");
    let p = policy.to_str().unwrap();
    let first = cachelet(&[("HOME", &home)], &["check", p]);
    assert!(first.status.success(), "{}", text(&first));
    let compiled = home.join(".cache/cachelet/compiled");
    assert!(
        text(&first).contains("precompiled copy: none before this check; kept now")
            && text(&first).contains(compiled.to_str().unwrap()),
        "{}",
        text(&first)
    );
    assert_eq!(
        std::fs::read_dir(&compiled).unwrap().count(),
        1,
        "one entry kept"
    );
    let second = cachelet(&[("HOME", &home)], &["check", p]);
    assert!(
        text(&second).contains("loaded precompiled")
            && text(&second).contains("precompiled copy: found"),
        "{}",
        text(&second)
    );
    // The variable wins over the default.
    let elsewhere = fresh("elsewhere");
    let out = cachelet(
        &[("HOME", &home), ("CACHELET_COMPILE_CACHE", &elsewhere)],
        &["check", p],
    );
    assert!(
        text(&out).contains("none before this check"),
        "{}",
        text(&out)
    );
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 1);
    let _ = std::fs::remove_dir_all(&home);
    let _ = std::fs::remove_dir_all(&elsewhere);
}

#[test]
fn check_with_a_directory_refuses_a_component_whose_ops_collide() {
    let home = fresh("with-home");
    let dir = fresh("with-dir");
    std::fs::copy(component("lifecycle-a"), dir.join("lc.wasm")).unwrap();
    let d = dir.to_str().unwrap();
    let ok = cachelet(
        &[("HOME", &home)],
        &["check", component("faulty").to_str().unwrap(), "--with", d],
    );
    assert!(ok.status.success(), "{}", text(&ok));
    assert!(
        text(&ok).contains("accepted beside the 1 policies of"),
        "{}",
        text(&ok)
    );
    let clash = cachelet(
        &[("HOME", &home)],
        &[
            "check",
            component("lifecycle-b").to_str().unwrap(),
            "--with",
            d,
        ],
    );
    assert!(!clash.status.success());
    assert!(
        text(&clash).contains("would not be accepted beside")
            && text(&clash).contains("\"lc_get\" is declared by both"),
        "{}",
        text(&clash)
    );
    let _ = std::fs::remove_dir_all(&home);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn call_takes_structured_arguments_as_json() {
    let home = fresh("call-home");
    let seed = component("seed-rust");
    let out = cachelet(
        &[("HOME", &home)],
        &[
            "call",
            seed.to_str().unwrap(),
            "read",
            "get_org_user",
            "--args",
            r#"{"org_id": 7, "user_id": "a:b"}"#,
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let rule: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rule["key"], "org:7:user:a%3Ab");
    // name=value arguments are added to (and win over) the JSON ones.
    let out = cachelet(
        &[("HOME", &home)],
        &[
            "call",
            seed.to_str().unwrap(),
            "read",
            "get_org_user",
            "--args",
            r#"{"org_id": 7, "user_id": 1}"#,
            "user_id=2",
        ],
    );
    let rule: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rule["key"], "org:7:user:2", "{}", text(&out));
    let bad = cachelet(
        &[("HOME", &home)],
        &[
            "call",
            seed.to_str().unwrap(),
            "read",
            "get_org_user",
            "--args",
            "[1]",
        ],
    );
    assert!(!bad.status.success());
    assert!(
        text(&bad).contains("--args must be a JSON object"),
        "{}",
        text(&bad)
    );
    let _ = std::fs::remove_dir_all(&home);
}

/// A load that takes a while (a JavaScript component compiles for seconds) shows on a terminal
/// what compiles and for how long, then clears its line; when stderr is not a terminal,
/// nothing of it. `check` prints no warning meant for a serving cache. (`script` gives the
/// command a terminal.)
#[test]
fn a_long_compile_shows_progress_on_a_terminal_only() {
    let policy = component("seed-js");
    let p = policy.to_str().unwrap();
    let piped = fresh("progress-piped");
    let out = cachelet(&[("CACHELET_COMPILE_CACHE", &piped)], &["check", p]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("none before this check"),
        "a compile, not a precompiled load: {}",
        text(&out)
    );
    assert!(!text(&out).contains("compiling"), "{}", text(&out));
    assert!(!text(&out).contains("WARN"), "{}", text(&out));

    let terminal = fresh("progress-terminal");
    let out = Command::new("script")
        .args([
            "-qec",
            &format!("'{}' check '{p}'", env!("CARGO_BIN_EXE_cachelet")),
            "/dev/null",
        ])
        .env("CACHELET_COMPILE_CACHE", &terminal)
        .env_remove("XDG_CACHE_HOME")
        .output()
        .expect("script (util-linux) runs");
    let seen = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{seen}");
    assert!(
        seen.contains(&format!("compiling {p} (")) && seen.contains(" MB, kept compiled"),
        "{seen}"
    );
    assert!(seen.contains("\r\x1b[2K"), "the line is cleared: {seen}");
    assert!(seen.contains("none before this check"), "{seen}");
    let _ = std::fs::remove_dir_all(&piped);
    let _ = std::fs::remove_dir_all(&terminal);
}
