//! One conformance suite for every guest language: the seed policy written in Rust, Python,
//! JavaScript and C (real components, built from source by `scripts/build-policies.sh`) must
//! be indistinguishable through the host. The Rust seed is the reference:
//!
//! - `describe()`: the same ops, kinds, params and routes, static and dynamic alike;
//! - every op's rule: the host's render of each template equals each guest's own render, for
//!   arguments of every kind (floats included), and equals the Rust seed's; dynamic ops and
//!   errors are answered alike;
//! - end to end: the same scripted service (misses, hits, writes, invalidation, resource
//!   writes, recache, TTL 0, uncached calls) gives the same trace on every language.
//!
//! - keys and tags never collide: adversarial text (`:`, `%`, `%3A`, ...) renders escaped, byte
//!   for byte alike in every language's dynamic rules and in the host's native rendering, and
//!   two argument sets that used to render to one key land on different entries.
//!
//! Rules do not depend on the backend: they are compared on memory. The end-to-end scenario
//! runs on every backend of the harness (memory, and a real Redis server); each cache has a
//! namespace of its own.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use cachelet::{Args, Cache, Error, Value};
use cachelet_tests::{compile_cache, component, repo, rule, toolchains, Target};
use serde_json::{json, Value as Json};

/// The reference first.
const LANGS: [&str; 4] = ["seed-rust", "seed-python", "seed-js", "seed-c"];

/// A fresh cache on `target` (a namespace of its own) holding the seed policy of `lang`. The
/// first load of each language compiles it into build/compile-cache, once per test process;
/// the others load the precompiled code.
async fn cache_on(target: &Target, lang: &str) -> Cache {
    // Held across the first load (an await): tokio's mutex, which may be.
    static WARM: tokio::sync::Mutex<Option<HashSet<String>>> = tokio::sync::Mutex::const_new(None);
    let path = component(lang);
    let build = || {
        Cache::builder()
            .settings(target.settings())
            .compile_cache(compile_cache())
            .policy_file(&path)
            .build()
    };
    let mut warm = WARM.lock().await;
    if warm.get_or_insert_with(HashSet::new).contains(lang) {
        drop(warm);
        return build().await.expect("the seed policy loads");
    }
    let c = build().await.expect("the seed policy loads");
    warm.as_mut().unwrap().insert(lang.to_string());
    c
}

async fn cache(lang: &str) -> Cache {
    cache_on(&Target::memory(), lang).await
}

#[tokio::test]
async fn every_language_declares_the_same_ops() {
    let reference = cache(LANGS[0]).await.policies().remove(0);
    assert_eq!(reference.ops.len(), 24);
    for lang in LANGS {
        let report = cache(lang).await.policies().remove(0);
        assert_eq!(
            (report.name.as_str(), report.version.as_str()),
            (lang, "0.1.0")
        );
        assert_eq!(report.ops.len(), reference.ops.len(), "{lang}");
        for (got, want) in report.ops.iter().zip(&reference.ops) {
            assert_eq!(
                serde_json::to_value(got).unwrap(),
                serde_json::to_value(want).unwrap(),
                "{lang}: op {}",
                want.name
            );
        }
        let dynamic: Vec<&str> = report
            .ops
            .iter()
            .filter(|o| !o.native)
            .map(|o| o.name.as_str())
            .collect();
        assert_eq!(dynamic, ["get_search", "update_user_dynamic"], "{lang}");
        // Rust and C components import nothing that waits and are called without a fiber;
        // componentize-py and componentize-js import every interface of the world, `store`
        // (which awaits the backend) included.
        let importer = report
            .imports
            .iter()
            .any(|i| i.starts_with("cachelet:policy/store"));
        assert_eq!(
            report.synchronous, !importer,
            "{lang}: {:?}",
            report.imports
        );
        assert_eq!(
            report.synchronous,
            ["seed-rust", "seed-c"].contains(&lang),
            "{lang}"
        );
    }
}

/// Arguments of every kind a template renders, floats included.
fn odd_values() -> Vec<Value> {
    vec![
        Value::Int(42),
        Value::Int(-7),
        Value::Int(i64::MAX),
        Value::Int(i64::MIN),
        Value::Float(1.0),
        Value::Float(0.5),
        Value::Float(-2.25),
        Value::Float(1e16),
        Value::Float(1e21),
        Value::Float(1.5e300),
        Value::Float(1e-7),
        Value::Float(5e-324),
        Value::Float(0.1 + 0.2),
        Value::Float(123456.789),
        Value::Float(-0.0),
        Value::Float(f64::MAX),
        Value::Bool(true),
        Value::Bool(false),
        Value::Null,
        Value::Text(String::new()),
        Value::Text("ünïcode ✓ {braces}".into()),
        Value::Json(r#"{"a":[1,2.5,"x"]}"#.into()),
        Value::Text(":".into()),
        Value::Text("%".into()),
        Value::Text("a:b%c".into()),
    ]
}

/// Text that a renderer without escaping turns into colliding keys, or that a wrong escaper
/// gets wrong: separators, escape characters, text that looks escaped already, unicode.
fn adversarial_texts() -> Vec<&'static str> {
    vec![
        ":",
        "::",
        "%",
        "%%",
        "%3A",
        "%3a",
        "%25",
        "%253A",
        "a:b",
        "1:user:2",
        "2:user:3",
        "x%",
        ":%:",
        "ünï:cøde✓",
        "日本:語",
        "{q}",
        "{{",
        "}",
        "",
        " ",
        "a\u{0}b",
        "\\:",
    ]
}

/// Every adversarial text as `text` and as `json`, and one value of every other kind.
fn adversarial_values() -> Vec<Value> {
    // JSON text is JSON (the guests may parse it): each text also as a JSON string, but for
    // the empty one (Python and JavaScript read `""` as an empty query).
    let mut out: Vec<Value> = adversarial_texts()
        .into_iter()
        .flat_map(|t| {
            let json = Value::Json(Json::from(t).to_string());
            [Value::Text(t.into())]
                .into_iter()
                .chain((!t.is_empty()).then_some(json))
        })
        .collect();
    out.push(Value::Json(r#"{"a:b":"%3A"}"#.into()));
    out.extend([
        Value::Int(-1),
        Value::Float(0.25),
        Value::Bool(true),
        Value::Null,
    ]);
    out
}

/// The rendering the WIT specifies, written independently of every renderer: `text` and
/// `json` with `%` as `%25` and `:` as `%3A`, nothing else escaped.
fn spec(v: &Value) -> String {
    match v {
        Value::Text(s) | Value::Json(s) => s.replace('%', "%25").replace(':', "%3A"),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".into(),
    }
}

/// What the host renders natively for `template` (the same renderer as a static op's).
fn host_render(template: &str, args: &Args) -> String {
    cachelet::Template::parse(template)
        .unwrap()
        .render(args)
        .unwrap()
}

#[tokio::test]
async fn dynamic_rules_render_adversarial_values_like_the_host() {
    let caches = in_order(LANGS.iter().map(|l| cache(l))).await;
    for v in adversarial_values() {
        let q = Args::new().with("q", v.clone());
        let user = Args::new().with("user_id", v.clone());
        let search = host_render("search:{q}", &q);
        let tags = [
            host_render("user:{user_id}", &user),
            host_render("user:{user_id}:profile", &user),
        ];
        assert_eq!(search, format!("search:{}", spec(&v)), "{v:?}");
        assert_eq!(tags[1], format!("user:{}:profile", spec(&v)), "{v:?}");
        for (lang, c) in LANGS.iter().zip(&caches) {
            // get_search and update_user_dynamic are computed by the guest on every call.
            let got = rule(c, "get_search", true, &q, false).await;
            if v == Value::Text(String::new()) {
                assert_eq!(got, Json::Null, "{lang}: an empty query is not cached");
            } else {
                assert_eq!(got["key"], json!(search), "{lang} get_search {v:?}");
            }
            let got = rule(c, "update_user_dynamic", false, &user, false).await;
            assert_eq!(
                got["invalidate"],
                json!(tags),
                "{lang} update_user_dynamic {v:?}"
            );
            // A static op: the host's render and the guest's own agree with the spec too.
            let pair = Args::new()
                .with("org_id", v.clone())
                .with("user_id", v.clone());
            let want = format!("org:{0}:user:{0}", spec(&v));
            for guest in [false, true] {
                let got = rule(c, "get_org_user", true, &pair, guest).await;
                assert_eq!(
                    got["key"],
                    json!(want),
                    "{lang} get_org_user {v:?} (guest: {guest})"
                );
                assert_eq!(
                    got["tags"],
                    json!([
                        format!("user:{}", spec(&v)),
                        format!("org:{}:users", spec(&v))
                    ]),
                    "{lang} get_org_user {v:?} (guest: {guest})"
                );
            }
        }
    }
}

/// The argument sets of the WIT's example, which render to one key without escaping.
fn colliding_pair() -> [Json; 2] {
    [
        json!({"org_id": "1:user:2", "user_id": "3"}),
        json!({"org_id": "1", "user_id": "2:user:3"}),
    ]
}

#[tokio::test]
async fn distinct_arguments_land_on_distinct_entries_on_memory() {
    distinct_arguments_land_on_distinct_entries(&Target::memory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distinct_arguments_land_on_distinct_entries_on_redis() {
    distinct_arguments_land_on_distinct_entries(&Target::redis()).await;
}

async fn distinct_arguments_land_on_distinct_entries(target: &Target) {
    for lang in LANGS {
        let c = cache_on(target, lang).await;
        let [a, b] = colliding_pair();
        let load =
            |value: &'static str| move || async move { Ok::<_, std::io::Error>(value.to_string()) };
        let got: String = c
            .read("get_org_user", &a, load("user 3 of org 1:user:2"))
            .await
            .unwrap();
        assert_eq!(got, "user 3 of org 1:user:2", "{lang}");
        // The other user's read misses, and is never served the first one's value.
        let got: String = c
            .read("get_org_user", &b, load("user 2:user:3 of org 1"))
            .await
            .unwrap();
        assert_eq!(
            got, "user 2:user:3 of org 1",
            "{lang}: served another user's entry"
        );
        for (args, want) in [
            (&a, "user 3 of org 1:user:2"),
            (&b, "user 2:user:3 of org 1"),
        ] {
            let got: String = c
                .read("get_org_user", args, load("reloaded"))
                .await
                .unwrap();
            assert_eq!(got, want, "{lang}: both entries are hits");
        }
        let key = |args: &Json| {
            let args = Args::from_serialize(args).unwrap();
            let c = &c;
            async move { rule(c, "get_org_user", true, &args, false).await["key"].clone() }
        };
        let (ka, kb) = (key(&a).await, key(&b).await);
        assert_ne!(ka, kb, "{lang}: one key for two users");
        // The dynamic op too: two queries that differ only by escaping are two entries.
        for (q, value) in [("a:b", "first"), ("a%3Ab", "second")] {
            let got: String = c
                .read("get_search", &json!({ "q": q }), load(value))
                .await
                .unwrap();
            assert_eq!(got, value, "{lang}: search {q}");
        }
        assert_eq!(c.stats().hits, 2, "{lang}");
    }
}

/// Floats from random bit patterns (every magnitude, subnormals included) and short decimals,
/// from a fixed seed: the shortest round-trip rendering must agree in every language.
fn random_floats(n: usize) -> Vec<f64> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let bits = next();
        let f = if out.len() % 2 == 0 {
            f64::from_bits(bits)
        } else {
            (bits % 1_000_000) as f64 / 10f64.powi((bits >> 32) as i32 % 12)
        };
        if f.is_finite() {
            out.push(f);
        }
    }
    out
}

#[tokio::test]
async fn floats_render_the_same_in_every_language() {
    let caches = in_order(LANGS.iter().map(|l| cache(l))).await;
    for f in random_floats(1000) {
        let args = Args::new().with("user_id", f);
        let want = rule(&caches[0], "get_user", true, &args, false).await;
        for (lang, c) in LANGS.iter().zip(&caches) {
            let got = rule(c, "get_user", true, &args, true).await;
            assert_eq!(
                got["key"],
                want["key"],
                "{lang}: {f:e} ({:#x})",
                f.to_bits()
            );
        }
    }
}

/// One call of every op, with the reference's params filled from `v`.
fn calls(v: &Value) -> Vec<(&'static str, bool, Args)> {
    let a = |pairs: &[&'static str]| -> Args {
        pairs.iter().map(|&n| (n, v.clone())).collect::<Args>()
    };
    let reads: [(&str, &[&str]); 15] = [
        ("get_user", &["user_id"]),
        ("get_org_user", &["org_id", "user_id"]),
        ("get_user_card", &["user_id"]),
        ("get_rate_limit", &["ip"]),
        ("get_config", &["key"]),
        ("get_user_with_options", &["user_id", "include_deleted"]),
        ("get_user_details", &["user_id", "expand"]),
        ("get_user_profile", &["user_id"]),
        ("get_user_settings", &["user_id"]),
        ("get_user_profile_v2", &["user_id"]),
        ("get_leaderboard", &["board"]),
        ("get_ticker", &["symbol"]),
        ("get_session", &["sid"]),
        ("get_search", &["q"]),
        ("get_uncached", &["id"]),
    ];
    let writes: [(&str, &[&str]); 9] = [
        ("update_user", &["user_id", "data"]),
        ("update_user_org", &["user_id", "org_id"]),
        ("remove_user_from_org", &["user_id", "org_id"]),
        ("update_user_dynamic", &["user_id"]),
        ("move_org_user", &["org_id", "id"]),
        ("update_user_options", &["user_id", "data"]),
        ("update_user_details", &["user_id"]),
        ("update_user_entity", &["user_id", "data"]),
        ("update_search", &[]),
    ];
    let mut out = Vec::new();
    for (op, params) in reads {
        out.push((op, true, a(params)));
    }
    for (op, params) in writes {
        out.push((op, false, a(params)));
    }
    out
}

#[tokio::test]
async fn every_rule_is_the_same_in_every_language_and_in_the_host() {
    let caches = in_order(LANGS.iter().map(|l| cache(l))).await;
    let mut checked = 0;
    for v in odd_values() {
        for (op, read, args) in calls(&v) {
            let reference = rule(&caches[0], op, read, &args, false).await;
            for (lang, c) in LANGS.iter().zip(&caches) {
                let host = rule(c, op, read, &args, false).await;
                let guest = rule(c, op, read, &args, true).await;
                assert_eq!(
                    host, reference,
                    "{lang} {op} {v:?}: differs from the Rust seed"
                );
                assert_eq!(guest, host, "{lang} {op} {v:?}: the guest's render differs");
                checked += 1;
            }
        }
    }
    assert_eq!(checked, odd_values().len() * 24 * LANGS.len());

    // The cases where an op answers something else than a rule.
    let cases: Vec<(&str, bool, Json)> = vec![
        // An empty query is not cached; a missing one is an error.
        ("get_search", true, json!({"q": ""})),
        ("get_search", true, json!({})),
        ("update_user_dynamic", false, json!({})),
        // A template without its argument: the host and every guest name it.
        ("get_user", true, json!({"usr_id": 1})),
        ("get_org_user", true, json!({"user_id": 1})),
        ("update_user_org", false, json!({"user_id": 1})),
        // recache include names an argument the call lacks: the host and every guest skip
        // that recache (warming must not cost the write its invalidation); see the contract
        // guests below for a rule that still renders.
        ("update_user", false, json!({"id": 1})),
        // Renames and extras replace arguments of the same name.
        (
            "update_user_options",
            false,
            json!({"user_id": 1, "include_deleted": true}),
        ),
        (
            "move_org_user",
            false,
            json!({"org_id": 2, "id": 3, "user_id": 4}),
        ),
    ];
    for (op, read, args) in cases {
        let args = Args::from_serialize(&args).unwrap();
        for guest in [false, true] {
            let reference = rule(&caches[0], op, read, &args, guest).await;
            for (lang, c) in LANGS.iter().zip(&caches) {
                let got = rule(c, op, read, &args, guest).await;
                assert_eq!(got, reference, "{lang} {op} {args:?} (guest: {guest})");
            }
        }
    }
}

// ---- mistakes: the same bad declarations, refused in every language ----------------------

/// The guests declaring every mistake, one op each.
const BROKEN: [&str; 4] = ["broken-rust", "broken-python", "broken-js", "broken-c"];

/// What every SDK's `describe` answers for the broken guests' common ops, in their order.
const MISTAKES: [(&str, &str); 16] = [
    (
        "brace_key",
        "template `user:{user_id`: unclosed `{` at byte 5 (write `{{` for a literal brace)",
    ),
    (
        "joined_key",
        "template `org:{org_id}{user_id}`: placeholders `{org_id}` and `{user_id}` have no `:` \
         between them (distinct arguments could render to the same text)",
    ),
    (
        "joined_tag",
        "template `org:{org_id}-{user_id}`: placeholders `{org_id}` and `{user_id}` have no \
         `:` between them (distinct arguments could render to the same text)",
    ),
    ("no_key", "a read needs a key"),
    ("early", "early_ttl (30 s) must be less than the ttl (30 s)"),
    (
        "undeclared_param",
        "uses `b`, which is not among its params (a)",
    ),
    ("bad_param", "`a-b` is not a parameter name"),
    ("twice", "declared more than once"),
    (
        "broken_tag_write",
        "template `user:{user_id`: unclosed `{` at byte 5 (write `{{` for a literal brace)",
    ),
    (
        "joined_write",
        "template `t:{a}-{b}`: placeholders `{a}` and `{b}` have no `:` between them \
         (distinct arguments could render to the same text)",
    ),
    (
        "empty_write",
        "a write needs tags to invalidate or reads to recache",
    ),
    (
        "recache_write",
        "recache of `broken_tag_write`, which is a write",
    ),
    (
        "bad_include",
        "recache of `ok_read`: `a-b` is not a parameter name",
    ),
    (
        "misspelled",
        "uses `item_idd`, which is not among its params (item_id)",
    ),
    ("computed_read", "a computed rule cannot also declare key"),
    (
        "computed_write",
        "a computed rule cannot also declare recache",
    ),
];

/// The mistakes Rust's types and C's compiler refuse at build time, which Python and
/// JavaScript refuse at load: (op, Python's message, JavaScript's).
fn load_time_in_python_and_js() -> Vec<(&'static str, String, String)> {
    let unknown = |early: &str| {
        format!(
            "unknown option `tag` (options: key, tags, ttl, {early}, refresh, lock, resource, \
             suffix, params, route)"
        )
    };
    let same = |op: &'static str, m: &str| (op, m.to_string(), m.to_string());
    vec![
        same(
            "string_tags",
            "tags must be a list of strings, not the string 'search'",
        ),
        ("unknown_option", unknown("early_ttl"), unknown("earlyTtl")),
        same(
            "ttl_range",
            "ttl -1 is neither seconds (0 .. 2^32-1) nor a TTL bucket",
        ),
        same("early_range", "early_ttl -1 is not seconds (0 .. 2^32-1)"),
        same(
            "single_recache",
            "recache must be a list of recache(...), not a single one",
        ),
    ]
}

#[tokio::test]
async fn every_language_refuses_the_same_mistakes_at_load_naming_each_op() {
    for lang in BROKEN {
        let path = component(lang);
        let e = match Cache::builder()
            .settings(cachelet::Settings::default())
            .compile_cache(compile_cache())
            .policy_file(&path)
            .build()
            .await
        {
            Ok(_) => panic!("{lang}: loaded"),
            Err(e) => e,
        };
        let Error::Load { problem, .. } = &e else {
            panic!("{lang}: not a load error: {e}");
        };
        let mut want: Vec<String> = MISTAKES
            .iter()
            .map(|(op, m)| format!("{op}: {m}"))
            .collect();
        if lang == "broken-python" || lang == "broken-js" {
            for (op, python, js) in load_time_in_python_and_js() {
                let m = if lang == "broken-python" { python } else { js };
                want.push(format!("{op}: {m}"));
            }
        }
        assert_eq!(
            problem,
            &format!("declaration refused: {}", want.join("; ")),
            "{lang}"
        );
        // The sound ops are not blamed; a recache of another policy's read is no mistake.
        for sound in ["ok_read", "elsewhere"] {
            assert!(!problem.contains(&format!("{sound}:")), "{lang}: {problem}");
        }
    }
}

#[test]
fn rust_and_c_refuse_at_build_time_what_python_and_js_refuse_at_load() {
    // Rust: compile_fail doctests of the SDK (run with the workspace's doc tests), one per
    // mistake, each with the compiler's error code.
    let sdk = std::fs::read_to_string(repo().join("guest-sdk/src/lib.rs")).unwrap();
    for (code, mistake) in [
        ("compile_fail,E0277", ".tags(\"search\")"),
        ("compile_fail,E0599", ".tag([\"users\"])"),
        ("compile_fail,E0277", ".ttl(-1)"),
        ("compile_fail,E0600", ".early_ttl(-1)"),
    ] {
        let found = sdk
            .split("//! ```")
            .any(|b| b.starts_with(code) && b.contains(mistake));
        assert!(found, "no {code} doctest for {mistake}");
    }

    // C: each mistake beside its correct spelling, compiled as a policy is.
    let status = std::process::Command::new(repo().join("scripts/guest-toolchains.sh"))
        .arg("c")
        .status()
        .unwrap();
    assert!(status.success());
    let dir = repo()
        .join("build/harness")
        .join(format!("c-mistakes-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let out = std::process::Command::new(toolchains().join("cargo/bin/wit-bindgen"))
        .args(["c", "wit", "-w", "cache-policy", "--out-dir"])
        .arg(&dir)
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(out.status.success());
    let compile = |op: &str| {
        std::fs::write(
            dir.join("policy.c"),
            format!(
                "#include \"cachelet_policy.h\"\nconst cl_op CL_OPS[] = {{ {op}, CL_END }};\n\
                 CL_POLICY(\"c\", \"0.1.0\");\n"
            ),
        )
        .unwrap();
        let out = std::process::Command::new("clang")
            .args(["--target=wasm32-wasi", "--sysroot=/usr", "-fsyntax-only"])
            .args(["-Wall", "-Wextra", "-Werror=incompatible-pointer-types"])
            .args(["-Wno-unused-parameter", "-Wno-missing-field-initializers"])
            .arg(format!("-I{}", dir.display()))
            .arg(format!("-I{}", repo().join("guest-sdk/c").display()))
            .arg(dir.join("policy.c"))
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for (mistake, fixed, error) in [
        (
            r#"CL_READ("string_tags", .key = "search:{q}", .tags = "search")"#,
            r#"CL_READ("string_tags", .key = "search:{q}", .tags = CL_LIST("search"))"#,
            "incompatible pointer types",
        ),
        (
            r#"CL_READ("unknown_option", .key = "k", .tag = CL_LIST("t"))"#,
            r#"CL_READ("unknown_option", .key = "k", .tags = CL_LIST("t"))"#,
            "field designator 'tag' does not refer to any field",
        ),
        (
            r#"CL_READ("ttl_range", .key = "k", .ttl = CL_SECONDS(-1))"#,
            r#"CL_READ("ttl_range", .key = "k", .ttl = CL_SECONDS(1))"#,
            "seconds_out_of_range",
        ),
        (
            r#"CL_READ("early_range", .key = "k", .ttl = CL_SECONDS(60), CL_EARLY_TTL(-1))"#,
            r#"CL_READ("early_range", .key = "k", .ttl = CL_SECONDS(60), CL_EARLY_TTL(1))"#,
            "seconds_out_of_range",
        ),
        (
            r#"CL_WRITE("single_recache", .invalidate = CL_LIST("t"), .recache = CL_RECACHE("ok_read"))"#,
            r#"CL_WRITE("single_recache", .invalidate = CL_LIST("t"), .recache = CL_RECACHES(CL_RECACHE("ok_read")))"#,
            "error:",
        ),
    ] {
        let (ok, said) = compile(fixed);
        assert!(ok, "{fixed}: {said}");
        let (ok, said) = compile(mistake);
        assert!(!ok && said.contains(error), "{mistake} compiled: {said}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Awaits the futures one after the other (the caches are built in order, so the first load
/// of each language compiles it once).
async fn in_order<F: std::future::Future<Output = Cache>>(
    futures: impl Iterator<Item = F>,
) -> Vec<Cache> {
    let mut out = Vec::new();
    for f in futures {
        out.push(f.await);
    }
    out
}

/// A stand-in service: a version per row, and every load recorded.
#[derive(Clone, Default)]
struct Service {
    rows: Arc<Mutex<HashMap<String, u64>>>,
    trace: Arc<Mutex<Vec<String>>>,
}

impl Service {
    fn row(&self, row: &str) -> u64 {
        *self.rows.lock().unwrap().get(row).unwrap_or(&0)
    }

    fn note(&self, line: String) {
        self.trace.lock().unwrap().push(line);
    }

    async fn read(&self, c: &Cache, op: &str, args: Json, row: &str) {
        let s = self.clone();
        let (what, row2) = (format!("{op} {args}"), row.to_string());
        let v: u64 = c
            .read(op, &args, move || async move {
                s.note(format!("  load {what}"));
                Ok::<_, std::io::Error>(s.row(&row2))
            })
            .await
            .unwrap();
        self.note(format!("read {op} {args} = {v}"));
    }

    async fn write(&self, c: &Cache, op: &str, args: Json, row: &str) {
        let s = self.clone();
        let row2 = row.to_string();
        c.write(op, &args, || async move {
            *s.rows.lock().unwrap().entry(row2).or_insert(0) += 1;
            Ok::<_, std::io::Error>(())
        })
        .await
        .unwrap();
        self.note(format!("write {op} {args}"));
    }
}

/// The same service on a cache with `lang`'s policy; its trace.
async fn scenario(target: &Target, lang: &str) -> Vec<String> {
    let c = cache_on(target, lang).await;
    let s = Service::default();
    // Loaders for recache: every warmed read shows in the trace with its arguments.
    for op in cachelet_tests::RECACHED_READS {
        let s2 = s.clone();
        c.register_loader(op, move |args: Json| {
            let s = s2.clone();
            async move {
                s.note(format!("  recache {op} {args}"));
                Ok::<_, std::io::Error>(1000u64)
            }
        });
    }
    let u = |id: u64| json!({"user_id": id});

    // Misses, hits, and freshness after each kind of write.
    for (read, rargs, write, wargs) in [
        ("get_user", u(1), "update_user", u(1)),
        (
            "get_org_user",
            json!({"org_id": 2, "user_id": 1}),
            "update_user_org",
            json!({"org_id": 2, "user_id": 1}),
        ),
        (
            "get_org_user",
            json!({"org_id": 2, "user_id": 1}),
            "update_user_dynamic",
            u(1),
        ),
        (
            "get_org_user",
            json!({"org_id": 3, "user_id": 1}),
            "remove_user_from_org",
            json!({"org_id": 3, "user_id": 1}),
        ),
        ("get_user_card", u(1), "update_user", u(1)),
        ("get_user_profile", u(1), "update_user_entity", u(1)),
        ("get_user_settings", u(1), "update_user", u(1)),
        ("get_user_profile_v2", u(1), "update_user_entity", u(1)),
        ("get_search", json!({"q": "x"}), "update_search", json!({})),
        (
            "get_user_with_options",
            json!({"user_id": 1, "include_deleted": true}),
            "update_user_options",
            u(1),
        ),
        (
            "get_user_details",
            json!({"user_id": 1, "expand": false}),
            "update_user_details",
            u(1),
        ),
        (
            "get_org_user",
            json!({"org_id": 5, "user_id": 6}),
            "move_org_user",
            json!({"org_id": 5, "id": 6}),
        ),
    ] {
        s.read(&c, read, rargs.clone(), "row").await;
        s.read(&c, read, rargs.clone(), "row").await;
        s.write(&c, write, wargs, "row").await;
        s.read(&c, read, rargs.clone(), "row").await;
        s.read(&c, read, rargs, "row").await;
    }

    // A resource write: every entry of the entity, and only of that entity.
    for id in [7, 8] {
        for op in [
            "get_user_profile",
            "get_user_settings",
            "get_user_profile_v2",
        ] {
            s.read(&c, op, u(id), &format!("u{id}")).await;
        }
    }
    s.write(&c, "update_user_entity", u(7), "u7").await;
    for id in [7, 8] {
        for op in [
            "get_user_profile",
            "get_user_settings",
            "get_user_profile_v2",
        ] {
            s.read(&c, op, u(id), &format!("u{id}")).await;
        }
    }

    // Not cached: TTL 0, an empty query, an unknown op.
    for (op, args) in [
        ("get_uncached", json!({"id": 1})),
        ("get_search", json!({"q": ""})),
        ("get_nothing", json!({"id": 1})),
    ] {
        s.read(&c, op, args.clone(), "x").await;
        s.read(&c, op, args, "x").await;
    }

    // Buckets and options reach the host alike: hits within the TTL.
    for (op, args) in [
        ("get_rate_limit", json!({"ip": "10.0.0.1"})),
        ("get_config", json!({"key": "theme"})),
        ("get_session", json!({"sid": "s1"})),
        ("get_leaderboard", json!({"board": "global"})),
        ("get_ticker", json!({"symbol": "ACME"})),
    ] {
        s.read(&c, op, args.clone(), "y").await;
        s.read(&c, op, args, "y").await;
    }

    let stats = c.stats();
    s.note(format!(
        "hits {} misses {} invalidated {} loads {} uncached {} policy_errors {} faults {} \
         invalidations {} recaches {} flushes {}",
        stats.hits,
        stats.misses,
        stats.invalidated,
        stats.loads,
        stats.uncached,
        stats.policy_errors,
        stats.guest_faults,
        stats.invalidations,
        stats.recaches,
        stats.namespace_flushes
    ));
    // Recache reads run concurrently: their order within one write is not part of the contract.
    let mut trace = s.trace.lock().unwrap().clone();
    let mut i = 0;
    while i < trace.len() {
        let run = trace[i..]
            .iter()
            .take_while(|l| l.starts_with("  recache"))
            .count();
        trace[i..i + run].sort();
        i += run.max(1);
    }
    trace
}

#[tokio::test]
async fn the_same_service_behaves_the_same_on_every_language_on_memory() {
    the_same_service_behaves_the_same_on_every_language(&Target::memory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_service_behaves_the_same_on_every_language_on_redis() {
    the_same_service_behaves_the_same_on_every_language(&Target::redis()).await;
}

async fn the_same_service_behaves_the_same_on_every_language(target: &Target) {
    let reference = scenario(target, LANGS[0]).await;
    // Sanity of the reference itself: hits, fresh reads after writes, warmed reads.
    let text = reference.join("\n");
    assert!(
        text.contains("recache get_org_user {\"org_id\":5,\"user_id\":6}"),
        "{text}"
    );
    assert!(
        text.contains("recache get_user_with_options {\"include_deleted\":false,\"user_id\":1}"),
        "{text}"
    );
    assert!(text.contains("faults 0"), "{text}");
    for lang in &LANGS[1..] {
        let trace = scenario(target, lang).await;
        for (i, (got, want)) in trace.iter().zip(&reference).enumerate() {
            assert_eq!(got, want, "{lang}: step {i} differs from the Rust seed");
        }
        assert_eq!(trace.len(), reference.len(), "{lang}");
    }
}
