//! The guest contract, in every language (the contract-* guests, real components): no SDK
//! depends on `describe` having run on the instance that answers (calls after a trap and under
//! concurrency land on fresh instances, which the host creates without `describe`, and get the
//! same rules), a recache whose call lacks an argument is skipped by the host and every guest
//! alike, and computed write rules, computed recache lists and constants of every kind answer
//! the same in every language.
//!
//! Apart from the conformance suite: its spinning calls hold both cores for a deadline each,
//! which must not starve other tests' guest calls of theirs.

use std::sync::{Arc, Mutex};

use cachelet::{Args, Cache, Error};
use cachelet_tests::{compile_cache, component, rule, Target};
use serde_json::{json, Value as Json};

/// The contract guests: the same ops in every language.
const CONTRACT: [&str; 4] = [
    "contract-rust",
    "contract-python",
    "contract-js",
    "contract-c",
];

async fn contract_cache(lang: &str, limits: cachelet::PolicyLimits) -> Cache {
    // The first load of each compiles it into the compile cache; cache_on's lock is for seeds.
    Cache::builder()
        .settings(Target::memory().settings())
        .compile_cache(compile_cache())
        .policy_limits(limits)
        .policy_file(component(lang))
        .build()
        .await
        .expect("the contract policy loads")
}

/// The computed rules every instance must answer alike, and what they are.
fn contract_rules() -> Vec<(&'static str, bool, Json, Json)> {
    let rule = |key: &str| {
        json!({"key": key, "ttl": {"seconds": 60}, "tags": ["computed"], "early_ttl": null,
               "refresh": false, "lock": false})
    };
    vec![
        ("get_computed", true, json!({"id": 7}), rule("computed:7")),
        (
            "get_computed",
            true,
            json!({"id": "a:b"}),
            rule("computed:a%3Ab"),
        ),
        (
            "update_dynamic",
            false,
            json!({"item_id": 1, "id": 2}),
            json!({"invalidate": ["item:1", "items"], "recache": [
                {"op": "get_item", "args": {"item_id": 1}},
                {"op": "get_computed", "args": {"id": 2}}], "recache_concurrency": null}),
        ),
        // The call lacks `id`: that recache is skipped, the rest applies.
        (
            "update_dynamic",
            false,
            json!({"item_id": 1}),
            json!({"invalidate": ["item:1", "items"], "recache": [
                {"op": "get_item", "args": {"item_id": 1}}], "recache_concurrency": null}),
        ),
        (
            "update_computed",
            false,
            json!({"item_id": 5}),
            json!({"invalidate": ["item:5"], "recache": [
                {"op": "get_item", "args": {"item_id": 5}}], "recache_concurrency": null}),
        ),
        ("update_computed", false, json!({}), Json::Null),
        (
            "update_recache_with",
            false,
            json!({"item_id": 5}),
            json!({"invalidate": ["items"], "recache": [
                {"op": "get_item", "args": {"item_id": 5}}], "recache_concurrency": null}),
        ),
    ]
}

async fn answers_every_contract_rule(lang: &str, c: &Cache) {
    for (op, read, args, want) in contract_rules() {
        let args = Args::from_serialize(&args).unwrap();
        assert_eq!(
            rule(c, op, read, &args, true).await,
            want,
            "{lang} {op} {args:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_on_fresh_instances_get_the_same_rules_in_every_language() {
    let limits = cachelet::PolicyLimits::default()
        .with_idle_instances(1)
        .with_max_instances(4);
    for lang in CONTRACT {
        let c = contract_cache(lang, limits).await;
        // The only instance so far is the one `describe` ran on.
        assert_eq!(c.stats().guest_instances, 1, "{lang}");
        answers_every_contract_rule(lang, &c).await;
        for round in 0..3 {
            // A trap (here: the deadline) drops the instance; the next call gets a new one,
            // which never saw `describe`.
            let spin = Args::new().with("id", 1);
            let e = c.read_rule("spin", &spin, true).await.unwrap_err();
            assert!(matches!(e, Error::Guest { .. }), "{lang}: {e}");
            assert_eq!(c.stats().guest_instances, 0, "{lang} round {round}");
            answers_every_contract_rule(lang, &c).await;
            assert_eq!(c.stats().guest_faults, round + 1, "{lang}");
        }
        // Under concurrency: while one call spins on its instance, the others get another.
        let spinning = {
            let c = c.clone();
            tokio::spawn(async move {
                let spin = Args::new().with("id", 1);
                c.read_rule("spin", &spin, true).await.unwrap_err()
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        answers_every_contract_rule(lang, &c).await;
        assert!(matches!(spinning.await.unwrap(), Error::Guest { .. }));
        assert!(
            c.stats().guest_instances_peak >= 2,
            "{lang}: {:?}",
            c.stats()
        );
        answers_every_contract_rule(lang, &c).await;
    }
}

#[tokio::test]
async fn a_recache_lacking_an_argument_is_skipped_by_the_host_and_every_guest() {
    for lang in CONTRACT {
        let c = contract_cache(lang, Default::default()).await;
        for args in [json!({"item_id": 1, "id": 2}), json!({"item_id": 1})] {
            let args = Args::from_serialize(&args).unwrap();
            // The same write, rendered by the host and computed by the guest.
            let host = rule(&c, "update_static", false, &args, false).await;
            let guest = rule(&c, "update_static", false, &args, true).await;
            let dynamic = rule(&c, "update_dynamic", false, &args, false).await;
            assert_eq!(guest, host, "{lang} {args:?}");
            assert_eq!(dynamic["recache"], host["recache"], "{lang} {args:?}");
            assert_eq!(host["invalidate"], json!(["item:1"]));
        }
        // Constants of every kind (C's CL_FLOAT, CL_NULL, CL_TEXT of a `char *`, CL_JSON),
        // as the host derives them from the template and as the guest does.
        let args = Args::new().with("item_id", 3);
        let host = rule(&c, "update_extras", false, &args, false).await;
        assert_eq!(
            host["recache"],
            json!([{"op": "get_item", "args": {"item_id": 3, "f": 0.5, "n": null, "t": "a:b:c",
                    "j": {"a": 1}}}]),
            "{lang}"
        );
        assert_eq!(
            rule(&c, "update_extras", false, &args, true).await,
            host,
            "{lang}"
        );
        // End to end: the write warms what it can, and never flushes the namespace.
        let warmed = Arc::new(Mutex::new(Vec::new()));
        for op in ["get_item", "get_computed"] {
            let w = warmed.clone();
            c.register_loader(op, move |args: Json| {
                let w = w.clone();
                async move {
                    w.lock().unwrap().push(format!("{op} {args}"));
                    Ok::<_, std::io::Error>(1u64)
                }
            });
        }
        c.write("update_dynamic", &json!({"item_id": 1}), || async {
            Ok::<_, std::io::Error>(())
        })
        .await
        .unwrap();
        assert_eq!(
            *warmed.lock().unwrap(),
            ["get_item {\"item_id\":1}"],
            "{lang}"
        );
        assert_eq!(c.stats().namespace_flushes, 0, "{lang}");
    }
}
