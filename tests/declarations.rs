//! A declaration a policy cannot serve is a load error, never a per-call error: a refused
//! policy never reaches the serving set (every SDK's refusals, one per mistake and language,
//! are the conformance suite's "mistakes" part), the host refuses native templates it cannot
//! render injectively, and a component built for another version of the world is refused by
//! name.

use cachelet::{Cache, Error, PolicySource, Settings};
use cachelet_tests::{compile_cache, component};
use serde_json::json;

fn builder() -> cachelet::CacheBuilder {
    Cache::builder()
        .settings(Settings::default())
        .compile_cache(compile_cache())
}

async fn load_err(source: PolicySource) -> Error {
    match builder().policy(source).build().await {
        Ok(_) => panic!("loaded"),
        Err(e) => e,
    }
}

#[tokio::test]
async fn a_broken_write_no_longer_empties_the_cache_on_every_write() {
    // Before: broken-rust loaded, its `broken_tag_write` answered every call with an error,
    // and the host invalidated the whole namespace for each such write.
    let c = builder()
        .policy_file(component("seed-rust"))
        .build()
        .await
        .unwrap();
    let load = |v: u32| move || async move { Ok::<_, std::io::Error>(v) };
    let user = json!({"user_id": 1});
    assert_eq!(c.read("get_user", &user, load(1)).await.unwrap(), 1);
    let e = c
        .replace_policies([
            PolicySource::file(component("seed-rust")),
            PolicySource::file(component("broken-rust")),
        ])
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("broken_tag_write: template `user:{user_id`"),
        "{e}"
    );
    // The serving set is untouched: the seed still serves, and the broken op is unknown.
    assert_eq!(c.policies().len(), 1);
    for _ in 0..3 {
        c.write("broken_tag_write", &user, || async {
            Ok::<_, std::io::Error>(())
        })
        .await
        .unwrap();
    }
    assert_eq!(
        c.read("get_user", &user, load(2)).await.unwrap(),
        1,
        "still a hit"
    );
    assert_eq!(c.stats().namespace_flushes, 0);
}

#[tokio::test]
async fn the_host_refuses_a_native_template_whose_placeholders_touch() {
    let e = load_err(PolicySource::file(component("unchecked")))
        .await
        .to_string();
    assert!(
        e.contains("operation \"joined\"")
            && e.contains("member:{org_id}-{user_id}")
            && e.contains("placeholders `{org_id}` and `{user_id}` have no `:` between them"),
        "{e}"
    );
}

#[tokio::test]
async fn the_host_refuses_a_route_that_does_not_parse_naming_the_op() {
    let e = load_err(PolicySource::file(component("unchecked-route")))
        .await
        .to_string();
    assert!(
        e.contains("operation \"unclosed\"")
            && e.contains("GET /users/{user_id")
            && e.contains("unclosed brace"),
        "{e}"
    );
}

#[tokio::test]
async fn a_component_built_for_the_previous_world_is_refused_naming_both_versions() {
    let e = load_err(PolicySource::file(component("past-world")))
        .await
        .to_string();
    assert!(
        e.contains("built for cachelet:policy@0.1.0")
            && e.contains("this host implements cachelet:policy@0.2.0"),
        "{e}"
    );
}
