//! A guest gets nothing from the host but the world's imports: Python and JavaScript guests
//! built with their languages' default WASI imports try to read files, list directories, read
//! environment variables and open sockets; every attempt comes back empty or refused, nothing
//! reaches a listening socket, a sleep traps at once, and the host keeps serving.

use std::net::TcpListener;

use cachelet::{Cache, Error, Settings};
use cachelet_tests::{compile_cache, component, repo};
use serde_json::json;

async fn cache(name: &str) -> Cache {
    Cache::builder()
        .settings(Settings::default())
        .compile_cache(compile_cache())
        .policy_file(component(name))
        .build()
        .await
        .expect("the sandbox guest loads")
}

/// The key of a probe's rule: what the guest got.
async fn probe(c: &Cache, op: &str, args: serde_json::Value) -> Result<String, Error> {
    Ok(c.read_rule(op, &args, false).await?.expect("a rule").key)
}

/// A listener on loopback; after the probes, it must have seen no connection.
fn listener() -> (TcpListener, u16) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

fn assert_untouched(l: &TcpListener) {
    match l.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("a guest reached the listener: {other:?}"),
    }
}

/// The host still serves: a miss runs the loader, a hit does not.
async fn still_serves(c: &Cache) {
    for want_loads in [1, 1] {
        let v: String = c
            .read("get_user", &json!({"user_id": 1}), || async {
                Ok::<_, std::io::Error>("ann".to_string())
            })
            .await
            .unwrap();
        assert_eq!(v, "ann");
        assert_eq!(c.stats().loads, want_loads);
    }
}

#[tokio::test]
async fn a_python_guest_reads_no_file_no_environment_and_opens_no_socket() {
    let c = cache("sandbox-python").await;
    let report = c.policies().remove(0);
    assert!(
        report
            .imports
            .iter()
            .any(|i| i.starts_with("wasi:sockets/tcp"))
            && report
                .imports
                .iter()
                .any(|i| i.starts_with("wasi:filesystem/")),
        "built with the default WASI imports: {:?}",
        report.imports
    );
    let here = repo().join("Cargo.toml");
    for path in ["/etc/passwd", "/etc/hostname", here.to_str().unwrap(), "."] {
        assert_eq!(
            probe(&c, "probe_file", json!({ "path": path }))
                .await
                .unwrap(),
            "probe:denied:FileNotFoundError",
            "{path}"
        );
    }
    for path in ["/", ".", "/tmp"] {
        assert_eq!(
            probe(&c, "probe_dir", json!({ "path": path }))
                .await
                .unwrap(),
            "probe:denied:FileNotFoundError",
            "{path}"
        );
    }
    assert!(std::env::var("PATH").is_ok());
    assert_eq!(
        probe(&c, "probe_env", json!({"name": "PATH"}))
            .await
            .unwrap(),
        "probe:env:0:none",
        "no environment variable at all"
    );
    let (l, port) = listener();
    assert_eq!(
        probe(&c, "probe_socket", json!({ "port": port }))
            .await
            .unwrap(),
        "probe:denied:PermissionError"
    );
    assert_untouched(&l);
    assert_eq!(c.stats().guest_faults, 0);
    // A sleep would hold the request: the call traps at once and is served uncached.
    let t0 = std::time::Instant::now();
    let err = probe(&c, "probe_sleep", json!({"seconds": 30}))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("would wait"), "{err}");
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(c.stats().guest_faults, 1);
    still_serves(&c).await;
}

#[tokio::test]
async fn a_javascript_guest_reads_no_file_no_environment_and_opens_no_socket() {
    let c = cache("sandbox-js").await;
    let report = c.policies().remove(0);
    assert!(
        report
            .imports
            .iter()
            .any(|i| i.starts_with("wasi:filesystem/preopens"))
            && report
                .imports
                .iter()
                .any(|i| i.starts_with("wasi:cli/environment")),
        "{:?}",
        report.imports
    );
    // WASI's own calls, imported directly: no variable, no directory.
    assert_eq!(
        probe(&c, "probe_env", json!({})).await.unwrap(),
        "probe:env:none"
    );
    assert_eq!(
        probe(&c, "probe_file", json!({})).await.unwrap(),
        "probe:dirs:none"
    );
    // No Node.js or Deno API in the engine; `fetch` exists but has no wasi:http behind it.
    assert_eq!(
        probe(&c, "probe_globals", json!({})).await.unwrap(),
        "probe:process=undefined,require=undefined,Deno=undefined,fetch=function"
    );
    let (l, port) = listener();
    let e = probe(&c, "probe_socket", json!({ "port": port }))
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::Guest { .. }),
        "fetch without wasi:http traps, and the host discards that instance: {e}"
    );
    assert_untouched(&l);
    assert_eq!(c.stats().guest_faults, 1);
    still_serves(&c).await;
    // A fresh instance answers again.
    assert_eq!(
        probe(&c, "probe_env", json!({})).await.unwrap(),
        "probe:env:none"
    );
}

#[tokio::test]
async fn a_javascript_guest_built_with_http_is_refused_and_the_policy_in_force_keeps_serving() {
    let c = cache("sandbox-js").await;
    let e = c
        .replace_policies([cachelet::PolicySource::file(component("sandbox-js-http"))])
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("wasi:http") && msg.contains("-d http fetch-event"),
        "{msg}"
    );
    assert_eq!(c.policies()[0].name, "sandbox-js");
    still_serves(&c).await;
}
