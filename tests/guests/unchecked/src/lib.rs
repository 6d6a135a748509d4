//! Declares, without any SDK to refuse it, a native read template whose placeholders have no
//! `:` between them: the host must refuse it at load, naming the op and both placeholders.
//! With the feature `bad-route` (component `unchecked-route`), a read whose HTTP route does not
//! parse instead: the host must refuse it at load, naming the op and what is wrong.

wit_bindgen::generate!({ path: "../../../wit", world: "cache-policy" });

use cachelet::policy::types::{OpInfo, OpKind, PolicyInfo, ReadRule, Ttl, Value, WriteRule};
use exports::cachelet::policy::policy::Guest;

struct Unchecked;

fn read(name: &str, key: &str, tags: &[&str]) -> OpInfo {
    OpInfo {
        name: name.into(),
        kind: OpKind::Read,
        params: None,
        route: None,
        read_template: Some(ReadRule {
            key: key.into(),
            ttl: Ttl::Seconds(60),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            early_ttl: None,
            refresh: false,
            lock: false,
        }),
        write_template: None,
    }
}

#[cfg(feature = "bad-route")]
fn routed(name: &str, route: &str) -> OpInfo {
    OpInfo {
        route: Some(route.into()),
        ..read(name, "user:{user_id}", &[])
    }
}

impl Guest for Unchecked {
    fn describe() -> Result<PolicyInfo, String> {
        Ok(PolicyInfo {
            name: "unchecked".into(),
            version: "0.1.0".into(),
            #[cfg(not(feature = "bad-route"))]
            ops: vec![
                read("fine", "org:{org_id}:user:{user_id}", &["org:{org_id}"]),
                read("joined", "org:{org_id}:user:{user_id}", &["member:{org_id}-{user_id}"]),
            ],
            #[cfg(feature = "bad-route")]
            ops: vec![
                routed("fine", "GET /users/{user_id}"),
                routed("unclosed", "GET /users/{user_id"),
            ],
        })
    }

    fn read(_: u32, _: Vec<(String, Value)>) -> Result<Option<ReadRule>, String> {
        Err("never called".into())
    }

    fn write(_: u32, _: Vec<(String, Value)>, _: Option<Value>) -> Result<Option<WriteRule>, String> {
        Err("never called".into())
    }
}

export!(Unchecked);
