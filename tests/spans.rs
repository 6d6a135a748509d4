//! Tracing spans: `cachelet.read` / `cachelet.write` with their op and outcome, the loader
//! and recache inside them, and nothing of a key or a value at `INFO`.

use cachelet::{Cache, Settings};
use cachelet_tests::{component, Captured};
use serde_json::json;

#[tokio::test]
async fn spans_carry_op_and_outcome_and_no_key_at_info() {
    use tracing_subscriber::fmt::format::FmtSpan;
    let run = |level: tracing::Level| {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(level)
            .with_span_events(FmtSpan::CLOSE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        (out, tracing::subscriber::set_default(subscriber))
    };
    let cache = Cache::builder()
        .settings(Settings::default())
        .policy_file(component("seed-rust"))
        .build()
        .await
        .unwrap();
    let args = json!({ "user_id": 4242 });
    let ok = || async { Ok::<_, std::io::Error>(json!({"secret": "s3cr3t-value"})) };

    let (out, guard) = run(tracing::Level::DEBUG);
    let _: serde_json::Value = cache.read("get_user", &args, ok).await.unwrap();
    let _: serde_json::Value = cache.read("get_user", &args, ok).await.unwrap();
    cache
        .write(
            "update_user",
            &json!({"user_id": 4242, "data": "x"}),
            || async { Ok::<_, std::io::Error>(()) },
        )
        .await
        .unwrap();
    drop(guard);
    let text = out.text();
    for want in [
        "cachelet.read{op=\"get_user\" outcome=\"miss\"}",
        "cachelet.read{op=\"get_user\" outcome=\"hit\"}",
        "cachelet.loader",
        "cachelet.write{op=\"update_user\" outcome=\"delivered\"}",
        "cachelet.recache{op=\"get_user\"}",
    ] {
        assert!(text.contains(want), "no {want} in:\n{text}");
    }
    assert!(
        !text.contains("s3cr3t-value"),
        "a value was logged:\n{text}"
    );

    // At INFO, a hit and a miss write nothing: no key, no argument.
    let (out, guard) = run(tracing::Level::INFO);
    let _: serde_json::Value = cache
        .read("get_user", &json!({ "user_id": 777 }), ok)
        .await
        .unwrap();
    let _: serde_json::Value = cache
        .read("get_user", &json!({ "user_id": 777 }), ok)
        .await
        .unwrap();
    drop(guard);
    let text = out.text();
    assert!(!text.contains("777"), "{text}");
}
