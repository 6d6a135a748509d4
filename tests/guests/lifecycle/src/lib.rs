//! The lifecycle tests' policy. `lc_get` and `lc_put` are computed by the guest (a Wasm call
//! per request); every rule names the version that answered (`A`, `B`), in the key and in a
//! tag, so a test can tell which version served each call. `greedy` declares other ops instead.

wit_bindgen::generate!({ path: "../../../wit", world: "cache-policy" });

use cachelet::policy::types::{OpInfo, OpKind, PolicyInfo, ReadRule, Recache, Ttl, Value, WriteRule};
use exports::cachelet::policy::policy::Guest;

struct Lifecycle;

#[cfg(feature = "b")]
const VERSION: &str = "B";
#[cfg(not(feature = "b"))]
const VERSION: &str = "A";

#[cfg(not(feature = "greedy"))]
const OPS: [(&str, OpKind); 2] = [("lc_get", OpKind::Read), ("lc_put", OpKind::Write)];
#[cfg(feature = "greedy")]
const OPS: [(&str, OpKind); 5] = [
    ("big_key", OpKind::Read),
    ("many_tags", OpKind::Read),
    ("store_loop", OpKind::Read),
    ("greedy_ok", OpKind::Read),
    ("many_recache", OpKind::Write),
];

fn id(args: &[(String, Value)]) -> String {
    args.iter()
        .find(|(n, _)| n == "id")
        .map(|(_, v)| match v {
            Value::Integer(i) => i.to_string(),
            Value::Text(s) => s.clone(),
            _ => "?".into(),
        })
        .unwrap_or_default()
}

fn read_rule(key: String, tags: Vec<String>) -> Option<ReadRule> {
    Some(ReadRule {
        key,
        ttl: Ttl::Seconds(60),
        tags,
        early_ttl: None,
        refresh: false,
        lock: false,
    })
}

impl Guest for Lifecycle {
    fn describe() -> Result<PolicyInfo, String> {
        Ok(PolicyInfo {
            name: if cfg!(feature = "greedy") { "greedy" } else { "lifecycle" }.into(),
            version: if cfg!(feature = "trap") { "trap" } else { VERSION }.into(),
            ops: OPS
                .iter()
                .map(|(name, kind)| OpInfo {
                    name: (*name).into(),
                    kind: *kind,
                    params: Some(vec!["id".into()]),
                    route: None,
                    read_template: None,
                    write_template: None,
                })
                .collect(),
        })
    }

    fn read(op: u32, args: Vec<(String, Value)>) -> Result<Option<ReadRule>, String> {
        if cfg!(feature = "trap") {
            panic!("lifecycle-trap traps on every call");
        }
        let id = id(&args);
        match OPS.get(op as usize).map(|o| o.0) {
            Some("lc_get") => Ok(read_rule(
                format!("lc:{id}:{VERSION}"),
                vec![format!("ver:{VERSION}"), format!("lc:{id}")],
            )),
            Some("big_key") => Ok(read_rule("k".repeat(10 << 20), vec![])),
            Some("many_tags") => Ok(read_rule(
                format!("tags:{id}"),
                (0..100_000).map(|i| format!("t{i}")).collect(),
            )),
            Some("store_loop") => loop {
                // Each call awaits the backend: the guest spends its time in the host.
                std::hint::black_box(cachelet::policy::store::get("loop"));
            },
            Some("greedy_ok") => Ok(read_rule(format!("ok:{id}"), vec![])),
            _ => Err(format!("no read op {op}")),
        }
    }

    fn write(op: u32, args: Vec<(String, Value)>, _: Option<Value>) -> Result<Option<WriteRule>, String> {
        if cfg!(feature = "trap") {
            panic!("lifecycle-trap traps on every call");
        }
        let id = id(&args);
        match OPS.get(op as usize).map(|o| o.0) {
            Some("lc_put") => Ok(Some(WriteRule {
                invalidate: vec![format!("lc:{id}"), format!("ver:{VERSION}")],
                recache: vec![],
                recache_concurrency: None,
            })),
            Some("many_recache") => Ok(Some(WriteRule {
                invalidate: vec![format!("x:{id}")],
                recache: (0..10_000)
                    .map(|i| Recache {
                        op: "greedy_ok".into(),
                        args: vec![("id".into(), Value::Integer(i))],
                    })
                    .collect(),
                recache_concurrency: None,
            })),
            _ => Err(format!("no write op {op}")),
        }
    }
}

export!(Lifecycle);
