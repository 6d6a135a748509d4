//! The Redis test harness itself: the servers it starts are what they claim to be (auth, TLS,
//! mutual TLS, maxmemory, cluster), and stop / restart / freeze / resume do what the outage tests
//! will rely on.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use cachelet_tests::redis::{RedisCluster, RedisOptions, RedisServer};

const SHORT: Duration = Duration::from_millis(400);

fn answers_ping(server: &RedisServer) -> bool {
    server.cli_cmd().timeout(SHORT).run(&["PING"]).stdout.trim() == "PONG"
}

#[test]
fn plain_server_answers_and_is_gone_after_drop() {
    let server = RedisServer::plain();
    let port = server.port();
    assert_ne!(port, 0);
    assert_eq!(server.url(), format!("redis://127.0.0.1:{port}/0"));
    assert_eq!(server.cli(&["PING"]), "PONG");
    assert_eq!(server.cli(&["SET", "k", "v"]), "OK");
    assert_eq!(server.cli(&["GET", "k"]), "v");
    assert_eq!(server.cli(&["CONFIG", "GET", "bind"]), "bind\n127.0.0.1");
    assert_eq!(server.cli(&["CONFIG", "GET", "save"]), "save");
    assert_eq!(
        server.cli(&["CONFIG", "GET", "appendonly"]),
        "appendonly\nno"
    );

    let dir = server.dir().to_path_buf();
    assert!(dir.join("redis.conf").exists());
    drop(server);
    assert!(!dir.exists(), "the temp dir is removed on drop");
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the server is killed on drop"
    );
}

#[test]
fn password_server_refuses_a_wrong_password() {
    let server = RedisServer::start(RedisOptions::default().password("s3cret:/@"));
    assert_eq!(
        server.url(),
        format!("redis://:s3cret%3A%2F%40@127.0.0.1:{}/0", server.port())
    );
    assert_eq!(server.cli(&["PING"]), "PONG");
    let none = server.cli_cmd().no_auth().run(&["PING"]);
    assert!(none.stdout.contains("NOAUTH"), "{none:?}");
    let wrong = server.cli_cmd().password("wrong").run(&["PING"]);
    assert!(wrong.text().contains("WRONGPASS"), "{wrong:?}");
    assert!(!wrong.stdout.contains("PONG"), "{wrong:?}");
}

#[test]
fn acl_user_server_refuses_the_default_user_and_a_wrong_password() {
    let server = RedisServer::start(RedisOptions::default().acl_user("app", "pw"));
    assert_eq!(
        server.url(),
        format!("redis://app:pw@127.0.0.1:{}/0", server.port())
    );
    assert_eq!(server.cli(&["ACL", "WHOAMI"]), "app");
    assert_eq!(server.cli(&["SET", "k", "v"]), "OK");
    let none = server.cli_cmd().no_auth().run(&["PING"]);
    assert!(none.stdout.contains("NOAUTH"), "{none:?}");
    let default = server.cli_cmd().password("pw").run(&["PING"]);
    assert!(
        default.text().contains("WRONGPASS"),
        "the default user is off: {default:?}"
    );
    let wrong = server.cli_cmd().user("app", "nope").run(&["PING"]);
    assert!(wrong.text().contains("WRONGPASS"), "{wrong:?}");

    // With a password too, the default user keeps it and the ACL user is the one clients use.
    let both = RedisServer::start(
        RedisOptions::default()
            .password("dpw")
            .acl_user("app", "pw"),
    );
    assert_eq!(both.cli(&["ACL", "WHOAMI"]), "app");
    let default = both.cli_cmd().password("dpw").run(&["ACL", "WHOAMI"]);
    assert_eq!(default.stdout.trim(), "default", "{default:?}");
}

#[test]
fn tls_server_answers_over_tls_with_the_generated_ca() {
    let server = RedisServer::start(RedisOptions::default().tls());
    let port = server.port();
    assert_eq!(server.url(), format!("rediss://127.0.0.1:{port}/0"));
    for file in [server.ca_cert(), server.client_cert(), server.client_key()] {
        let pem = std::fs::read_to_string(file).unwrap();
        assert!(pem.starts_with("-----BEGIN "), "{}: {pem}", file.display());
    }
    assert_eq!(server.cli(&["PING"]), "PONG", "with the client certificate");
    assert_eq!(
        server.cli(&["CONFIG", "GET", "port"]),
        "port\n0",
        "TLS only"
    );
    let no_cert = server.cli_cmd().without_client_cert().run(&["PING"]);
    assert_eq!(
        no_cert.stdout.trim(),
        "PONG",
        "client certs are optional: {no_cert:?}"
    );
    let plain = server.cli_cmd().without_tls().timeout(SHORT).run(&["PING"]);
    assert!(!plain.stdout.contains("PONG"), "{plain:?}");

    // Another server has another CA: trusting only that one, the handshake fails.
    let other = RedisServer::start(RedisOptions::default().tls());
    let wrong_ca = server
        .cli_cmd()
        .ca_from(&other)
        .timeout(SHORT)
        .run(&["PING"]);
    assert!(!wrong_ca.stdout.contains("PONG"), "{wrong_ca:?}");
    assert!(
        wrong_ca.text().to_lowercase().contains("ssl"),
        "{wrong_ca:?}"
    );
    assert!(std::fs::read(other.ca_cert()).unwrap() != std::fs::read(server.ca_cert()).unwrap());
}

#[test]
fn mutual_tls_server_requires_the_client_certificate() {
    let server = RedisServer::start(RedisOptions::default().require_client_cert().password("pw"));
    assert_eq!(
        server.url(),
        format!("rediss://:pw@127.0.0.1:{}/0", server.port())
    );
    assert_eq!(server.cli(&["PING"]), "PONG");
    let no_cert = server
        .cli_cmd()
        .without_client_cert()
        .timeout(SHORT)
        .run(&["PING"]);
    assert!(!no_cert.stdout.contains("PONG"), "{no_cert:?}");
}

#[test]
fn stop_and_restart_keep_the_port_and_lose_the_data() {
    let server = RedisServer::plain();
    let port = server.port();
    server.cli(&["SET", "k", "v"]);

    server.stop();
    assert!(!server.is_running());
    assert!(!answers_ping(&server));
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());

    server.restart();
    assert_eq!(server.port(), port);
    assert_eq!(server.cli(&["PING"]), "PONG");
    assert_eq!(server.cli(&["GET", "k"]), "", "no persistence");

    server.cli(&["SET", "k", "v"]);
    server.kill();
    assert!(!answers_ping(&server));
    server.restart();
    assert_eq!(server.cli(&["GET", "k"]), "");

    // restart() of a running server stops it first.
    let pid = server.pid();
    server.restart();
    assert_ne!(server.pid(), pid);
    assert_eq!(server.cli(&["PING"]), "PONG");
}

#[test]
fn freeze_hangs_clients_and_resume_brings_the_server_back() {
    let server = RedisServer::start(RedisOptions::default().password("pw"));
    let pid = server.pid();
    server.freeze();
    assert!(server.is_frozen());
    // The kernel still accepts connections: only an answer's timeout notices.
    assert!(TcpStream::connect(("127.0.0.1", server.port())).is_ok());
    let started = Instant::now();
    let hung = server.cli_cmd().timeout(SHORT).run(&["PING"]);
    assert!(hung.timed_out(), "{hung:?}");
    assert!(started.elapsed() < SHORT * 3);

    server.resume();
    assert!(!server.is_frozen());
    assert_eq!(server.cli(&["PING"]), "PONG");
    assert_eq!(server.pid(), pid, "the same process");

    // A frozen server can still be stopped (and restarted).
    server.freeze();
    server.stop();
    server.restart();
    assert_eq!(server.cli(&["PING"]), "PONG");
}

#[test]
fn maxmemory_and_policy_are_applied() {
    let server = RedisServer::start(RedisOptions::default().maxmemory("2mb", "allkeys-lru"));
    assert_eq!(
        server.cli(&["CONFIG", "GET", "maxmemory"]),
        "maxmemory\n2097152"
    );
    assert_eq!(
        server.cli(&["CONFIG", "GET", "maxmemory-policy"]),
        "maxmemory-policy\nallkeys-lru"
    );
    let plain = RedisServer::plain();
    assert_eq!(plain.cli(&["CONFIG", "GET", "maxmemory"]), "maxmemory\n0");
}

#[test]
fn command_counters_count_what_clients_send() {
    let server = RedisServer::start(RedisOptions::default().password("pw"));
    // Each harness call adds its own AUTH + command: measure it, then subtract it.
    let a = server.info_stat("total_commands_processed");
    let b = server.info_stat("total_commands_processed");
    let own = b - a;
    assert_eq!(own, 2, "AUTH + INFO");
    for i in 0..5 {
        server.cli(&["SET", &format!("k{i}"), "v"]);
    }
    let c = server.info_stat("total_commands_processed");
    assert_eq!(c - b, 5 * 2 + own);
    assert_eq!(server.command_calls("set"), 5);
    assert_eq!(server.command_calls("GET"), 0);
    server.cli(&["CONFIG", "RESETSTAT"]);
    assert_eq!(server.command_calls("set"), 0);
}

#[test]
fn three_master_cluster_serves_keys_in_every_slot_range() {
    let started = Instant::now();
    let cluster = RedisCluster::start(3);
    let setup = started.elapsed();
    assert_eq!(cluster.nodes().len(), 3);
    assert_eq!(
        cluster.url(),
        format!("redis://{}", cluster.addrs().join(","))
    );
    for node in cluster.nodes() {
        let info = node.cli(&["CLUSTER", "INFO"]);
        assert!(info.contains("cluster_state:ok"), "{info}");
        assert!(info.contains("cluster_known_nodes:3"), "{info}");
        assert!(info.contains("cluster_size:3"), "{info}");
        let timeout = node.cli(&["CONFIG", "GET", "cluster-node-timeout"]);
        assert_eq!(
            timeout, "cluster-node-timeout\n5000",
            "the default, after forming"
        );
    }

    // Keys on each of the three masters, written and read through -c from one entry node.
    let mut owners = std::collections::HashMap::new();
    for i in 0.. {
        let key = format!("key:{i}");
        let owner = cluster.node_for_key(&key).port();
        owners.entry(owner).or_insert(key);
        if owners.len() == 3 {
            break;
        }
    }
    for (port, key) in &owners {
        assert_eq!(cluster.cli(&["SET", key, &format!("at {port}")]), "OK");
    }
    for node in cluster.nodes() {
        for (port, key) in &owners {
            let got = node.cli_cmd().cluster_mode().run(&["GET", key]);
            assert_eq!(got.stdout.trim(), format!("at {port}"), "{got:?}");
            // Without -c, only the owner answers; the others redirect.
            let direct = node.cli(&["GET", key]);
            if node.port() == *port {
                assert_eq!(direct, format!("at {port}"));
            } else {
                assert!(direct.starts_with("MOVED"), "{direct}");
            }
        }
    }
    eprintln!("3-master cluster up in {setup:?}");
}

#[test]
fn cluster_node_stop_and_restart_rejoins() {
    let cluster = RedisCluster::start_with(
        3,
        RedisOptions::default()
            .acl_user("app", "pw")
            .tls()
            .config("cluster-node-timeout", "2000"),
    );
    let url = cluster.url();
    assert!(url.starts_with("rediss://app:pw@127.0.0.1:"), "{url}");
    assert_eq!(url.matches(',').count(), 2, "{url}");
    assert_eq!(
        cluster
            .node(1)
            .cli(&["CONFIG", "GET", "cluster-node-timeout"]),
        "cluster-node-timeout\n2000"
    );
    let node = cluster.node(1);
    let port = node.port();
    let key_on = |port: u16| {
        (0..)
            .map(|i| format!("key:{i}"))
            .find(|k| cluster.node_for_key(k).port() == port)
            .unwrap()
    };
    let (here, there) = (key_on(port), key_on(cluster.node(0).port()));
    cluster.cli(&["SET", &here, "1"]);
    cluster.cli(&["SET", &there, "0"]);

    node.stop();
    assert!(!answers_ping(node));
    // The stopped node's slots are unreachable; the others still answer.
    assert_eq!(cluster.cli(&["GET", &there]), "0");
    let stranded = cluster.cli_cmd().timeout(SHORT).run(&["GET", &here]);
    assert_ne!(stranded.stdout.trim(), "1", "{stranded:?}");

    node.restart();
    assert_eq!(node.port(), port);
    cluster.wait_ok(Duration::from_secs(10));
    assert_eq!(
        cluster.cli(&["GET", &here]),
        "",
        "the restarted node lost its data"
    );
    assert_eq!(cluster.cli(&["SET", &here, "again"]), "OK");
    assert_eq!(node.cli(&["GET", &here]), "again");
}
