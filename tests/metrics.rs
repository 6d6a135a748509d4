//! The metrics a real recorder receives after a scripted sequence, counted exactly: hits,
//! misses, uncached reads, loader errors, writes, invalidations, recaches, guest faults.
//! One test: the recorder is global to the process.

use std::collections::HashMap;
use std::time::Duration;

use cachelet::{Cache, PolicyLimits, Settings};
use cachelet_tests::component;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use metrics_util::MetricKind;
use serde_json::json;

type Key = (MetricKind, String, Vec<(String, String)>);

fn snapshot(s: &metrics_util::debugging::Snapshotter) -> HashMap<Key, DebugValue> {
    s.snapshot()
        .into_vec()
        .into_iter()
        .map(|(k, _, _, v)| {
            let (kind, key) = k.into_parts();
            let mut labels: Vec<(String, String)> = key
                .labels()
                .map(|l| (l.key().to_string(), l.value().to_string()))
                .collect();
            labels.sort();
            ((kind, key.name().to_string(), labels), v)
        })
        .collect()
}

fn counter(m: &HashMap<Key, DebugValue>, name: &str, labels: &[(&str, &str)]) -> u64 {
    let mut labels: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    labels.sort();
    match m.get(&(MetricKind::Counter, name.to_string(), labels.clone())) {
        Some(DebugValue::Counter(n)) => *n,
        None => 0,
        Some(other) => panic!("{name} {labels:?} is {other:?}"),
    }
}

fn histogram_len(m: &HashMap<Key, DebugValue>, name: &str, labels: &[(&str, &str)]) -> usize {
    let mut labels: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    labels.sort();
    match m.get(&(MetricKind::Histogram, name.to_string(), labels)) {
        Some(DebugValue::Histogram(v)) => v.len(),
        _ => 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripted_sequence_records_exact_counts() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder of this process");

    let cache = Cache::builder()
        .settings(Settings::default())
        .policy_file(component("seed-rust"))
        .build()
        .await
        .unwrap();
    cache.register_loader("get_user", |a: serde_json::Value| async move {
        Ok::<_, String>(json!({"id": a["user_id"], "name": "ann v2"}))
    });
    let user = |id: u64| json!({ "user_id": id });
    let ok = || async { Ok::<_, std::io::Error>(json!({"id": 1, "name": "ann"})) };

    // get_user(1): a miss, then two hits.
    for _ in 0..3 {
        let _: serde_json::Value = cache.read("get_user", &user(1), ok).await.unwrap();
    }
    // A loader error: a miss and an error.
    let failed: Result<serde_json::Value, std::io::Error> = cache
        .read("get_user", &user(2), || async {
            Err(std::io::Error::other("database down"))
        })
        .await;
    assert!(failed.is_err());
    // TTL 0: uncached.
    let _: u64 = cache
        .read("get_uncached", &json!({"id": 1}), || async {
            Ok::<_, std::io::Error>(1)
        })
        .await
        .unwrap();
    // A write: one tag, and a recache of get_user(1) (a miss of its own), then a hit.
    cache
        .write(
            "update_user",
            &json!({"user_id": 1, "data": "x"}),
            || async { Ok::<_, std::io::Error>(()) },
        )
        .await
        .unwrap();
    let after: serde_json::Value = cache.read("get_user", &user(1), ok).await.unwrap();
    assert_eq!(after["name"], "ann v2");
    // An op no policy declares.
    let _: u64 = cache
        .read("nobody_declares_this", &(), || async {
            Ok::<_, std::io::Error>(1)
        })
        .await
        .unwrap();

    // Two guest faults.
    let faulty = Cache::builder()
        .settings(Settings::default())
        .policy_limits(PolicyLimits::default().with_deadline(Duration::from_millis(50)))
        .policy_file(component("faulty"))
        .build()
        .await
        .unwrap();
    for id in [1, 2] {
        let _: String = faulty
            .read("trap", &json!({ "id": id }), || async {
                Ok::<_, std::io::Error>("v".into())
            })
            .await
            .unwrap();
    }

    let m = snapshot(&snapshotter);
    let reads = |op: &str, outcome: &str| {
        counter(
            &m,
            "cachelet_reads_total",
            &[("policy", "seed-rust"), ("op", op), ("outcome", outcome)],
        )
    };
    assert_eq!(reads("get_user", "hit"), 3);
    assert_eq!(
        reads("get_user", "miss"),
        3,
        "first read, failed load, recache"
    );
    assert_eq!(reads("get_user", "error"), 1);
    assert_eq!(reads("get_user", "uncached"), 0);
    assert_eq!(reads("get_uncached", "uncached"), 1);
    assert_eq!(
        counter(
            &m,
            "cachelet_reads_total",
            &[
                ("policy", ""),
                ("op", "undeclared"),
                ("outcome", "uncached")
            ]
        ),
        1
    );
    assert_eq!(
        histogram_len(
            &m,
            "cachelet_loader_seconds",
            &[("policy", "seed-rust"), ("op", "get_user")]
        ),
        3,
        "one per load"
    );
    assert_eq!(
        counter(
            &m,
            "cachelet_writes_total",
            &[("op", "update_user"), ("outcome", "delivered")]
        ),
        1
    );
    assert_eq!(counter(&m, "cachelet_invalidations_total", &[]), 1);
    assert_eq!(
        counter(
            &m,
            "cachelet_recaches_total",
            &[("op", "get_user"), ("outcome", "ok")]
        ),
        1
    );
    let faulty_name = faulty.policies()[0].name.clone();
    assert_eq!(
        counter(
            &m,
            "cachelet_guest_faults_total",
            &[("policy", faulty_name.as_str())]
        ),
        2
    );
    assert_eq!(
        histogram_len(
            &m,
            "cachelet_policy_call_seconds",
            &[("policy", faulty_name.as_str())]
        ),
        2,
        "the faulty policy's rules are computed: one call per read"
    );
    // No label carries a key or an argument's value.
    for (_, _, labels) in m.keys() {
        for (k, _) in labels {
            assert!(
                ["policy", "op", "outcome", "backend"].contains(&k.as_str()),
                "{k}"
            );
        }
    }
}
