//! Every read op misbehaves in its own way; `probe_*` ops report what the guest could reach in
//! the key of the rule they return (`file:denied` or `file:READ ...`).

wit_bindgen::generate!({ path: "../../../wit", world: "cache-policy" });

use cachelet::policy::types::{OpInfo, OpKind, PolicyInfo, ReadRule, Ttl, Value, WriteRule};
use exports::cachelet::policy::policy::Guest;

struct Faulty;

/// The ops, in the order `describe` lists them (the host calls by position).
const READS: [&str; 8] = [
    "trap", "spin", "hog", "sleep", "ok", "probe_file", "probe_socket", "probe_env",
];
const WRITES: [&str; 2] = ["trap_write", "refuse_write"];

/// The name of the op at `index`.
fn name(index: u32) -> &'static str {
    READS.iter().chain(&WRITES).nth(index as usize).copied().unwrap_or("?")
}

fn op(name: &str, kind: OpKind) -> OpInfo {
    OpInfo {
        name: name.into(),
        kind,
        params: None,
        route: None,
        read_template: None,
        write_template: None,
    }
}

fn rule(key: String) -> Option<ReadRule> {
    Some(ReadRule {
        key,
        ttl: Ttl::Seconds(60),
        tags: vec![],
        early_ttl: None,
        refresh: false,
        lock: false,
    })
}

fn outcome<T, E: std::fmt::Debug>(what: &str, r: Result<T, E>) -> String {
    match r {
        Ok(_) => format!("{what}:REACHED"),
        Err(_) => format!("{what}:denied"),
    }
}

impl Guest for Faulty {
    fn describe() -> Result<PolicyInfo, String> {
        Ok(PolicyInfo {
            name: "faulty".into(),
            version: "0.1.0".into(),
            ops: READS
                .iter()
                .map(|n| op(n, OpKind::Read))
                .chain(WRITES.iter().map(|n| op(n, OpKind::Write)))
                .collect(),
        })
    }

    fn read(op: u32, args: Vec<(String, Value)>) -> Result<Option<ReadRule>, String> {
        let id = args
            .iter()
            .find(|(n, _)| n == "id")
            .map(|(_, v)| match v {
                Value::Integer(i) => i.to_string(),
                _ => "?".into(),
            })
            .unwrap_or_default();
        match name(op) {
            "trap" => panic!("policy bug"),
            "spin" => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "hog" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 16 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "sleep" => {
                std::thread::sleep(std::time::Duration::from_secs(30));
                Ok(rule("slept".into()))
            }
            "ok" => Ok(rule(format!("ok:{id}"))),
            "probe_file" => Ok(rule(outcome("file", std::fs::read("/etc/hostname")))),
            "probe_socket" => Ok(rule(outcome(
                "socket",
                std::net::TcpStream::connect("127.0.0.1:22"),
            ))),
            "probe_env" => Ok(rule(match std::env::vars().next() {
                Some(_) => "env:REACHED".into(),
                None => "env:denied".into(),
            })),
            other => Err(format!("unknown op {other}")),
        }
    }

    fn write(op: u32, _: Vec<(String, Value)>, _: Option<Value>) -> Result<Option<WriteRule>, String> {
        match name(op) {
            "trap_write" => panic!("policy bug in a write"),
            _ => Err("this policy refuses every write".into()),
        }
    }
}

export!(Faulty);
