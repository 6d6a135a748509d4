//! Fleet rollout through a real Redis: host processes that follow pushes, and pushes,
//! rollbacks and removals made by a third process, the `cachelet` binary. Signed pushes.
//!
//! Lives beside the binary (in the cli package) so that cargo builds `cachelet` for it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cachelet_tests::redis::RedisServer;
use cachelet_tests::{compile_cache, component, ChildHost};

/// A host in a process of its own (see [`ChildHost`]), following pushes: `rule ID` answers the
/// version that computes `lc_get` (`A`, `B`) or `none`; `failure` the last refusal of the
/// lifecycle policy.
struct Host(ChildHost);

impl Host {
    fn start(url: &str, prefix: &str, pubkey: Option<&str>) -> Host {
        let mut env = vec![
            ("CACHELET_FLEET_CHILD_URL", url),
            ("CACHELET_FLEET_CHILD_PREFIX", prefix),
        ];
        if let Some(k) = pubkey {
            env.push(("CACHELET_FLEET_CHILD_PUBKEY", k));
        }
        Host(ChildHost::start("fleet_host_child", env))
    }

    fn ask(&mut self, what: &str) -> String {
        self.0.ask(what)
    }

    fn version(&mut self) -> String {
        self.0.ask("rule 1")
    }

    /// Waits until the host serves `want`; how long it took.
    fn until(&mut self, want: &str, within: Duration) -> Duration {
        let t0 = Instant::now();
        loop {
            let v = self.version();
            if v == want {
                return t0.elapsed();
            }
            assert!(
                t0.elapsed() < within,
                "still {v}, not {want}, after {within:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// The child side of [`Host`] (runs only when a parent sets its variables).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_host_child() {
    let Ok(url) = std::env::var("CACHELET_FLEET_CHILD_URL") else {
        return;
    };
    let mut b = cachelet::Cache::builder()
        .settings(cachelet::Settings::default())
        .url(url)
        .prefix(std::env::var("CACHELET_FLEET_CHILD_PREFIX").unwrap())
        .compile_cache(compile_cache())
        .fleet(true);
    if let Ok(k) = std::env::var("CACHELET_FLEET_CHILD_PUBKEY") {
        b = b.policy_pubkey(k);
    }
    let cache = b.build().await.unwrap();
    println!("FLEETHOST ready");
    let mut lines = BufReader::new(std::io::stdin()).lines();
    while let Some(Ok(line)) = lines.next() {
        let answer = match line.split_whitespace().next() {
            Some("rule") => {
                match cache
                    .read_rule("lc_get", &serde_json::json!({"id": 1}), false)
                    .await
                {
                    Ok(Some(r)) => r.key.rsplit(':').next().unwrap().to_string(),
                    Ok(None) => "uncached".into(),
                    Err(cachelet::Error::UnknownOp(_)) => "none".into(),
                    Err(e) => format!("error {e}"),
                }
            }
            Some("failure") => cache
                .policy_status()
                .get(&cachelet::PolicyOrigin::Pushed("lifecycle".into()))
                .and_then(|p| p.failure.clone())
                .map(|f| f.message)
                .unwrap_or_else(|| "none".into()),
            _ => break,
        };
        println!("FLEETHOST {answer}");
    }
}

fn cachelet(url: &str, prefix: &str, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_cachelet"))
        .env("CACHE_URL", url)
        .env("CACHE_PREFIX", prefix)
        .env("CACHELET_COMPILE_CACHE", compile_cache())
        .args(args)
        .output()
        .expect("run cachelet");
    out
}

fn ok(out: Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    text
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A TCP relay to Redis that can be cut (every connection dropped, new ones refused) and
/// restored: one host's network, without touching the others'.
struct Relay {
    port: u16,
    cut: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Relay {
    fn to(target: String) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let open = Arc::new(Mutex::new(Vec::new()));
        let (c, o) = (cut.clone(), open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if c.load(Ordering::SeqCst) {
                    continue; // dropped: refused
                }
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                o.lock()
                    .unwrap()
                    .extend([client.try_clone().unwrap(), server.try_clone().unwrap()]);
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16 << 10];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 || to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Relay { port, cut, open }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

#[test]
fn a_push_reaches_every_host_within_a_second_and_rollback_and_removal_follow() {
    let server = RedisServer::plain();
    let url = server.url();
    let prefix = "fleet";
    let (a, b) = (component("lifecycle-a"), component("lifecycle-b"));
    let relay = Relay::to(server.addr());

    let mut one = Host::start(&url, prefix, None);
    let mut two = Host::start(&relay.url(), prefix, None);
    assert_eq!(
        (one.version(), two.version()),
        ("none".into(), "none".into())
    );

    ok(cachelet(&url, prefix, &["policy", "push", path(&a)]));
    let pushed = Instant::now();
    one.until("A", Duration::from_secs(1));
    two.until("A", Duration::from_secs(1));
    let out = ok(cachelet(&url, prefix, &["policy", "push", path(&b)]));
    assert!(out.contains("pushed lifecycle B"), "{out}");
    let t0 = Instant::now();
    let (d1, d2) = (
        one.until("B", Duration::from_secs(1)),
        two.until("B", Duration::from_secs(1)),
    );
    eprintln!(
        "push to both hosts serving: {:?} (first push {:?} ago); {d1:?} / {d2:?}",
        t0.elapsed(),
        pushed.elapsed()
    );

    // A host started afterwards serves the current version before it answers.
    let mut three = Host::start(&url, prefix, None);
    assert_eq!(three.version(), "B");

    // The list: hash, name/version, ops, when, and who runs it (each host reports after it
    // loads a version).
    let t0 = Instant::now();
    let list = loop {
        let list = ok(cachelet(&url, prefix, &["policy", "list"]));
        if list.matches("(current)").count() == 3 || t0.elapsed() > Duration::from_secs(3) {
            break list;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let json: serde_json::Value =
        serde_json::from_str(&ok(cachelet(&url, prefix, &["policy", "list", "--json"]))).unwrap();
    assert_eq!(json[0]["history"].as_array().unwrap().len(), 2);
    let hash_b = json[0]["current"]["hash"].as_str().unwrap().to_string();
    assert!(
        list.contains(&format!("lifecycle B  {}", &hash_b[..12])),
        "{list}"
    );
    assert!(list.contains("ops: lc_get, lc_put"), "{list}");
    assert!(list.contains("pushed 20"), "{list}");
    assert_eq!(
        list.matches("(current)").count(),
        3,
        "three hosts run it: {list}"
    );

    ok(cachelet(&url, prefix, &["policy", "rollback", "lifecycle"]));
    for h in [&mut one, &mut two, &mut three] {
        h.until("A", Duration::from_secs(1));
    }

    // A host cut off during a push catches up when it reconnects.
    relay.cut();
    ok(cachelet(&url, prefix, &["policy", "push", path(&b)]));
    one.until("B", Duration::from_secs(1));
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(two.version(), "A", "cut off: still the version it had");
    relay.restore();
    let caught_up = two.until("B", Duration::from_secs(10));
    eprintln!("the cut-off host caught up {caught_up:?} after it could reconnect");

    ok(cachelet(&url, prefix, &["policy", "remove", "lifecycle"]));
    for h in [&mut one, &mut two, &mut three] {
        h.until("none", Duration::from_secs(2));
    }
    let out = cachelet(&url, prefix, &["policy", "rollback", "nothing"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no policy of this name"));
}

#[test]
fn hosts_with_a_key_refuse_unsigned_wrongly_signed_and_altered_pushes() {
    let server = RedisServer::plain();
    let url = server.url();
    let prefix = "signed";
    let dir = std::env::temp_dir().join(format!("cachelet-fleet-keys-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (key, other) = (dir.join("key"), dir.join("other"));
    ok(cachelet(&url, prefix, &["policy", "keygen", path(&key)]));
    ok(cachelet(&url, prefix, &["policy", "keygen", path(&other)]));
    let public = std::fs::read_to_string(dir.join("key.pub")).unwrap();
    let (a, b) = (component("lifecycle-a"), component("lifecycle-b"));

    let mut host = Host::start(&url, prefix, Some(public.trim()));
    let current = || -> String {
        let json: serde_json::Value =
            serde_json::from_str(&ok(cachelet(&url, prefix, &["policy", "list", "--json"])))
                .unwrap();
        json[0]["current"]["hash"].as_str().unwrap()[..12].to_string()
    };
    let refused = |host: &mut Host, why: &str| {
        let hash = current();
        let t0 = Instant::now();
        loop {
            let f = host.ask("failure");
            if f.contains(why) && f.contains(&hash) {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(2),
                "{hash} not refused for {why:?}: {f}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(host.version(), "none", "nothing of it serves");
    };

    ok(cachelet(&url, prefix, &["policy", "push", path(&a)]));
    refused(&mut host, "unsigned");
    ok(cachelet(
        &url,
        prefix,
        &["policy", "push", "--key", path(&other), path(&a)],
    ));
    refused(&mut host, "does not verify");
    // A's signature on B's bytes: a component changed after signing.
    let b_copy = dir.join("b.wasm");
    std::fs::copy(&b, &b_copy).unwrap();
    let a_copy = dir.join("a.wasm");
    std::fs::copy(&a, &a_copy).unwrap();
    ok(cachelet(
        &url,
        prefix,
        &["policy", "sign", "--key", path(&key), path(&a_copy)],
    ));
    let a_sig = dir.join("a.wasm.sig");
    ok(cachelet(
        &url,
        prefix,
        &["policy", "push", "--signature", path(&a_sig), path(&b_copy)],
    ));
    refused(&mut host, "does not verify");
    // One bit flipped in A after signing (a letter of an op's name: still a valid
    // component), pushed with A's signature.
    let mut flipped = std::fs::read(&a).unwrap();
    let at = flipped
        .windows(6)
        .position(|w| w == b"lc_get")
        .expect("the op's name is in the component");
    flipped[at] ^= 0x20;
    let flipped_file = dir.join("flipped.wasm");
    std::fs::write(&flipped_file, &flipped).unwrap();
    ok(cachelet(
        &url,
        prefix,
        &[
            "policy",
            "push",
            "--signature",
            path(&a_sig),
            path(&flipped_file),
        ],
    ));
    refused(&mut host, "does not verify");

    // Signed: accepted.
    ok(cachelet(
        &url,
        prefix,
        &["policy", "push", "--signature", path(&a_sig), path(&a_copy)],
    ));
    host.until("A", Duration::from_secs(1));

    // A bit flipped in the stored component of a signed push: a host that loads it (one
    // started afterwards) refuses it.
    ok(cachelet(
        &url,
        prefix,
        &["policy", "push", "--key", path(&key), path(&b)],
    ));
    host.until("B", Duration::from_secs(1));
    let json: serde_json::Value =
        serde_json::from_str(&ok(cachelet(&url, prefix, &["policy", "list", "--json"]))).unwrap();
    let blob = format!(
        "{prefix}:v1~policy:{}",
        json[0]["current"]["hash"].as_str().unwrap()
    );
    server.cli(&["SETRANGE", &blob, "100", "changed in Redis"]);
    let mut later = Host::start(&url, prefix, Some(public.trim()));
    refused(&mut later, "does not match its hash");
    assert_eq!(
        host.version(),
        "B",
        "the host that loaded it before keeps it"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
