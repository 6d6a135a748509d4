//! Rules for the engine's failure-path tests (tests/failure_paths.rs): short TTLs so that the
//! tests run in seconds, untagged and many-tagged entries, keys that are an argument as given,
//! and a dynamic op that uses the `store` and `log` imports.

use cachelet_guest::prelude::*;
use cachelet_guest::{log, store};

fn define(p: &mut Policy) {
    p.name("engine-rules").version("0.1.0");

    p.read("get_user").key("user:{id}").ttl(300);
    p.read("get_untagged").key("plain:{id}").untagged().ttl(300);
    // Short-lived, with a tag shared by every id: its tag key must outlive every fill.
    p.read("get_short")
        .key("short:{id}")
        .tags(["short:{id}", "shorts"])
        .ttl(3);
    p.read("get_slide")
        .key("slide:{id}")
        .tags(["slide:{id}"])
        .ttl(3)
        .refresh(true);
    p.read("get_early").key("early:{id}").ttl(4).early_ttl(1);
    p.read("get_locked").key("locked:{id}").ttl(300).lock(true);
    // The key is the argument as the caller gave it.
    p.read("get_key").key("{k}").tags(["keys"]).ttl(300);
    // `n` tags, computed per call.
    p.read("get_tagged").params(["id", "n"]).rule_with(|a| {
        let n = match a.value("n")? {
            Value::Integer(n) => *n,
            _ => return Err("n must be an integer".into()),
        };
        let key = a.render("tagged:{id}")?;
        let tags: Vec<String> = (0..n).map(|i| format!("t:{i}")).collect();
        Ok(Some(ReadRule::new(key).tags(tags).ttl(300)))
    });
    // Reports what the guest's `store` can reach, in the key of the rule: each probe's answer.
    p.read("probe_store").params(["k"]).rule_with(|a| {
        let k = a.text("k")?;
        log::log(log::Level::Info, &format!("probing {k}"));
        let got = store::get(k);
        let exists = store::exists(k);
        let set = store::set(k, "\"from-guest\"", None, false);
        let incr = store::incr(&format!("{k}:n"), 1);
        let key = format!(
            "probe:get={}:exists={exists}:set={set}:incr={}",
            got.as_deref().unwrap_or("-"),
            incr.map_or_else(|e| format!("err({e})"), |n| n.to_string()),
        );
        Ok(Some(ReadRule::new(key).ttl(0)))
    });
    // What the guest gets from WASI: a name lookup, and a read of its (empty) stdin.
    p.read("probe_wasi").params(["what"]).rule_with(|a| {
        let outcome = match a.text("what")? {
            "lookup" => {
                use std::net::ToSocketAddrs;
                match ("localhost", 80).to_socket_addrs() {
                    Ok(mut addrs) => format!("lookup:REACHED:{:?}", addrs.next()),
                    Err(e) => format!("lookup:denied:{}", e.kind()),
                }
            }
            "stdin" => {
                use std::io::Read;
                let mut buf = [0u8; 16];
                match std::io::stdin().read(&mut buf) {
                    Ok(0) => "stdin:empty".to_string(),
                    Ok(n) => format!("stdin:REACHED:{n}"),
                    Err(e) => format!("stdin:denied:{}", e.kind()),
                }
            }
            other => return Err(format!("no probe {other}")),
        };
        Ok(Some(ReadRule::new(outcome).ttl(0)))
    });
    // Invalidates from inside the guest.
    p.read("guest_invalidate").params(["tag"]).rule_with(|a| {
        store::invalidate(&[a.text("tag")?.to_string()]);
        Ok(None)
    });

    p.write("touch_user").tags(["user:{id}"]);
    p.write("touch_short").tags(["shorts"]);
    p.write("touch_keys").tags(["keys"]);
}

cachelet_guest::export_policy!(define);
