//! The `cachelet` binary: `check` and `call` on real components.

use std::process::{Command, Output};

use cachelet_tests::component;

fn cachelet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cachelet"))
        // Python and JavaScript components load precompiled, as the suite builds them.
        .env("CACHELET_COMPILE_CACHE", cachelet_tests::compile_cache())
        .args(args)
        .output()
        .expect("run cachelet")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn check_lists_ops_imports_size_and_compile_time() {
    let seed = component("seed-rust");
    let out = cachelet(&["check", seed.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    for want in [
        "policy seed-rust 0.1.0",
        "compiled in",
        "calls: synchronous",
        "cachelet:policy/types@0.2.0",
        "read  get_user ",
        "rule rendered by the host",
        "read  get_search",
        "rule computed by the guest per call",
        "write update_user_entity",
    ] {
        assert!(stdout.contains(want), "missing {want:?} in:\n{stdout}");
    }
    let json = cachelet(&["check", "--json", seed.to_str().unwrap()]);
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["ops"].as_array().unwrap().len(), 24);
    assert_eq!(report["synchronous"], true);
    assert!(report["size"].as_u64().unwrap() > 1000);
}

#[test]
fn check_rejects_what_is_not_a_policy_with_exit_1() {
    let dir = std::env::temp_dir().join(format!("cachelet-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let junk = dir.join("junk.wasm");
    std::fs::write(&junk, b"not wasm at all").unwrap();
    for (path, want) in [
        (junk.clone(), "no `\\0asm` header"),
        (component("future-world"), "cachelet:policy@0.3.0"),
        (component("past-world"), "built for cachelet:policy@0.1.0"),
        // A declaration its SDK refuses: the load error names each op and its mistake.
        (
            component("broken-rust"),
            "declaration refused: brace_key: template `user:{user_id`",
        ),
        (dir.join("missing.wasm"), "No such file"),
    ] {
        let out = cachelet(&["check", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{}", path.display());
        let err = text(&out.stderr);
        assert!(err.contains(want) && err.contains("error:"), "{err}");
    }
}

#[test]
fn call_prints_the_rule_as_json() {
    let seed = component("seed-rust");
    let seed = seed.to_str().unwrap();
    let out = cachelet(&[
        "call",
        seed,
        "read",
        "get_org_user",
        "org_id=7",
        "user_id=42",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rule: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rule["key"], "org:7:user:42");
    assert_eq!(rule["ttl"]["seconds"], 600);
    assert_eq!(rule["tags"], serde_json::json!(["user:42", "org:7:users"]));

    let out = cachelet(&["call", seed, "write", "move_org_user", "org_id=7", "id=42"]);
    let rule: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rule["invalidate"], serde_json::json!(["user:42"]));
    assert_eq!(
        rule["recache"][0]["args"],
        serde_json::json!({"org_id": 7, "user_id": 42})
    );

    // The guest's own render, and a dynamic op.
    let out = cachelet(&["call", "--guest", seed, "read", "get_user", "user_id=1"]);
    let rule: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rule["key"], "user:1");
    let out = cachelet(&["call", seed, "read", "get_search", "q="]);
    assert_eq!(
        text(&out.stdout).trim(),
        "null",
        "an empty query is not cached"
    );

    let out = cachelet(&["call", seed, "read", "get_user", "usr_id=1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("{user_id}"),
        "{}",
        text(&out.stderr)
    );
    let out = cachelet(&["call", seed, "read", "get_user", "user_id"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("name=value"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn check_warns_naming_each_op_whose_params_are_undeclared_in_every_language() {
    for lang in ["rust", "python", "js", "c"] {
        let guest = component(&format!("contract-{lang}"));
        let out = cachelet(&["check", guest.to_str().unwrap()]);
        let err = text(&out.stderr);
        assert!(out.status.success(), "{lang}: {err}");
        let warnings: Vec<&str> = err.lines().filter(|l| l.starts_with("warning:")).collect();
        assert_eq!(
            warnings,
            ["warning: undeclared: no params declared, so its placeholders cannot be checked at \
              load (a misspelled one fails every call)"],
            "{lang}"
        );
        // The JSON report carries them too.
        let json = cachelet(&["check", "--json", guest.to_str().unwrap()]);
        let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
        assert_eq!(report["warnings"].as_array().unwrap().len(), 1, "{lang}");
    }
    // The seeds declare every op's params: no warning.
    for lang in ["rust", "python", "js", "c"] {
        let seed = component(&format!("seed-{lang}"));
        let out = cachelet(&["check", seed.to_str().unwrap()]);
        assert!(
            !text(&out.stderr).contains("warning"),
            "{lang}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn check_exits_non_zero_on_a_declaration_error_in_every_language() {
    for lang in ["rust", "python", "js", "c"] {
        let broken = component(&format!("broken-{lang}"));
        let out = cachelet(&["check", broken.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{lang}");
        let err = text(&out.stderr);
        assert!(
            err.contains("declaration refused: brace_key: template `user:{user_id`")
                && err.contains("computed_write: a computed rule cannot also declare recache"),
            "{lang}: {err}"
        );
        // Never reported as a deliberately dynamic op.
        assert!(
            !text(&out.stdout).contains("computed by the guest"),
            "{lang}"
        );
    }
}
