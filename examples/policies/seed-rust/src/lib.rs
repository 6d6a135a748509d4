//! The seed policy: one operation for each example of the svc-infra cache guide
//! (`@cache_read`, `@cache_write`, `recache`, `resource`, TTL buckets). See README.md.

use cachelet_guest::prelude::*;

fn define(p: &mut Policy) {
    p.name("seed-rust").version("0.1.0");

    // @cache_read: key templates, several params, the tuple form, TTL buckets.
    p.read("get_user")
        .params(["user_id"])
        .route("GET /users/{user_id}")
        .key("user:{user_id}")
        .ttl(300);
    p.read("get_org_user")
        .params(["org_id", "user_id"])
        .route("GET /orgs/{org_id}/users/{user_id}")
        .key("org:{org_id}:user:{user_id}")
        .tags(["user:{user_id}", "org:{org_id}:users"])
        .ttl(600);
    p.read("get_user_card")
        .params(["user_id"])
        .key(("user", "card", "{user_id}"))
        .ttl(Ttl::DEFAULT);
    p.read("get_rate_limit")
        .params(["ip"])
        .key("rate:{ip}")
        .ttl(Ttl::SHORT);
    p.read("get_config")
        .params(["key"])
        .key("config:{key}")
        .ttl(Ttl::LONG);
    p.read("get_user_with_options")
        .params(["user_id", "include_deleted"])
        .key("user:{user_id}:opts:{include_deleted}")
        .tags(["user:{user_id}"])
        .ttl(300);
    p.read("get_user_details")
        .params(["user_id", "expand"])
        .key("user:{user_id}:details:{expand}")
        .tags(["user:{user_id}"])
        .ttl(300);

    // resource("user", "user_id"): keys user:{suffix}:{user_id}, all tagged user:{user_id}.
    let user = resource("user", "user_id");
    p.read_resource(&user, "get_user_profile")
        .params(["user_id"])
        .route("GET /users/{user_id}/profile")
        .suffix("profile")
        .ttl(300)
        .lock(true);
    p.read_resource(&user, "get_user_settings")
        .params(["user_id"])
        .route("GET /users/{user_id}/settings")
        .suffix("settings")
        .ttl(600);
    p.read_resource(&user, "get_user_profile_v2")
        .params(["user_id"])
        .suffix("profile")
        .key("v2:user:{user_id}:profile")
        .tags(["user:{user_id}", "profiles"])
        .ttl(300);

    // Early refresh, sliding expiry, computed rules, "do not cache".
    p.read("get_leaderboard")
        .params(["board"])
        .key("leaderboard:{board}")
        .ttl(60)
        .early_ttl(45);
    // A short early window, for tests that wait for the background refresh.
    p.read("get_ticker")
        .params(["symbol"])
        .key("ticker:{symbol}")
        .ttl(10)
        .early_ttl(1);
    p.read("get_session")
        .params(["sid"])
        .key("session:{sid}")
        .ttl(Ttl::SHORT)
        .refresh(true);
    p.read("get_search").params(["q"]).rule_with(|a| {
        if matches!(a.value("q")?, Value::Text(q) if q.is_empty()) {
            return Ok(None);
        }
        let key = a.render("search:{q}")?;
        Ok(Some(ReadRule::new(key).tags(["search"]).ttl(120)))
    });
    p.read("get_uncached")
        .params(["id"])
        .key("uncached:{id}")
        .ttl(0);

    // @cache_write: tags, dynamic tags, recache with include / rename / extra.
    p.write("update_user")
        .params(["user_id", "data"])
        .route("PUT /users/{user_id}")
        .tags(["user:{user_id}"])
        .recache(recache("get_user").include(["user_id"]));
    p.write("update_user_org")
        .params(["user_id", "org_id"])
        .route("PUT /orgs/{org_id}/users/{user_id}")
        .tags(["user:{user_id}", "org:{org_id}:users"]);
    p.write("remove_user_from_org")
        .params(["user_id", "org_id"])
        .tags(["user:{user_id}", "org:{org_id}:members"]);
    p.write("update_user_dynamic")
        .params(["user_id"])
        .tags_with(|a| {
            Ok(vec![
                a.render("user:{user_id}")?,
                a.render("user:{user_id}:profile")?,
            ])
        });
    p.write("move_org_user")
        .params(["org_id", "id"])
        .tags(["user:{id}"])
        .recache(recache("get_org_user").rename([("id", "user_id")]));
    p.write("update_user_options")
        .params(["user_id", "data"])
        .tags(["user:{user_id}"])
        .recache(
            recache("get_user_with_options")
                .include(["user_id"])
                .extra([("include_deleted", false)]),
        );
    p.write("update_user_details")
        .params(["user_id"])
        .tags(["user:{user_id}"])
        .recache(
            recache("get_user_details")
                .include(["user_id"])
                .extra([("expand", true)]),
        );
    p.write_resource(&user, "update_user_entity")
        .params(["user_id", "data"])
        .route("PUT /users/{user_id}/profile")
        .recache(recache("get_user_profile").include(["user_id"]))
        .recache(recache("get_user_settings").include(["user_id"]))
        .recache_max_concurrency(3);
    p.write("update_search").params::<&str>([]).tags(["search"]);
}

cachelet_guest::export_policy!(define);

#[cfg(test)]
mod tests {
    use super::*;

    fn args(pairs: &[(&str, Value)]) -> Vec<(String, Value)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.clone()))
            .collect()
    }

    fn read(policy: &Compiled, op: &str, pairs: &[(&str, Value)]) -> ReadRule {
        policy.read(op, &args(pairs)).unwrap().unwrap()
    }

    fn write(policy: &Compiled, op: &str, pairs: &[(&str, Value)]) -> WriteRule {
        policy.write(op, &args(pairs), None).unwrap().unwrap()
    }

    #[test]
    fn declares_every_op_without_errors() {
        let policy = Compiled::new(define);
        assert!(policy.errors().is_empty(), "{:?}", policy.errors());
        let info = policy.describe().unwrap();
        assert_eq!(
            (info.name.as_str(), info.version.as_str()),
            ("seed-rust", "0.1.0")
        );
        let dynamic: Vec<_> = info
            .ops
            .iter()
            .filter(|o| o.read_template.is_none() && o.write_template.is_none())
            .map(|o| o.name.as_str())
            .collect();
        assert_eq!(dynamic, ["get_search", "update_user_dynamic"]);
        assert_eq!(info.ops.len(), 24);
        // The guide's endpoints, for `cachelet serve` and the axum layer.
        let routes: Vec<_> = info
            .ops
            .iter()
            .filter_map(|o| Some((o.name.as_str(), o.route.as_deref()?)))
            .collect();
        assert_eq!(
            routes,
            [
                ("get_user", "GET /users/{user_id}"),
                ("get_org_user", "GET /orgs/{org_id}/users/{user_id}"),
                ("get_user_profile", "GET /users/{user_id}/profile"),
                ("get_user_settings", "GET /users/{user_id}/settings"),
                ("update_user", "PUT /users/{user_id}"),
                ("update_user_org", "PUT /orgs/{org_id}/users/{user_id}"),
                ("update_user_entity", "PUT /users/{user_id}/profile"),
            ]
        );
    }

    #[test]
    fn reads() {
        let p = Compiled::new(define);
        let id = || ("user_id", Value::Integer(42));

        let r = read(&p, "get_user", &[id()]);
        assert_eq!(
            (r.key.as_str(), r.tags.clone(), r.ttl),
            ("user:42", vec!["user:42".to_string()], Ttl::Seconds(300))
        );

        let r = read(&p, "get_org_user", &[("org_id", Value::Integer(7)), id()]);
        assert_eq!(r.key, "org:7:user:42");
        assert_eq!(r.tags, ["user:42", "org:7:users"]);
        assert_eq!(r.ttl, Ttl::Seconds(600));

        let r = read(&p, "get_user_card", &[id()]);
        assert_eq!((r.key.as_str(), r.ttl), ("user:card:42", Ttl::DEFAULT));
        assert_eq!(r.tags, ["user:card:42"]);

        let r = read(&p, "get_rate_limit", &[("ip", Value::from("10.0.0.1"))]);
        assert_eq!((r.key.as_str(), r.ttl), ("rate:10.0.0.1", Ttl::SHORT));
        let r = read(&p, "get_config", &[("key", Value::from("theme"))]);
        assert_eq!((r.key.as_str(), r.ttl), ("config:theme", Ttl::LONG));

        let r = read(
            &p,
            "get_user_with_options",
            &[id(), ("include_deleted", Value::Boolean(false))],
        );
        assert_eq!(r.key, "user:42:opts:false");
        assert_eq!(r.tags, ["user:42"]);
        let r = read(
            &p,
            "get_user_details",
            &[id(), ("expand", Value::Boolean(true))],
        );
        assert_eq!(r.key, "user:42:details:true");
        assert_eq!(r.tags, ["user:42"]);

        let r = read(&p, "get_user_profile", &[id()]);
        assert_eq!(
            (r.key.as_str(), r.ttl, r.lock),
            ("user:profile:42", Ttl::Seconds(300), true)
        );
        assert_eq!(r.tags, ["user:42"]);
        let r = read(&p, "get_user_settings", &[id()]);
        assert_eq!(
            (r.key.as_str(), r.ttl),
            ("user:settings:42", Ttl::Seconds(600))
        );
        assert_eq!(r.tags, ["user:42"]);
        let r = read(&p, "get_user_profile_v2", &[id()]);
        assert_eq!(r.key, "v2:user:42:profile");
        assert_eq!(r.tags, ["user:42", "profiles"]);

        let r = read(&p, "get_leaderboard", &[("board", Value::from("global"))]);
        assert_eq!(
            (r.key.as_str(), r.ttl, r.early_ttl),
            ("leaderboard:global", Ttl::Seconds(60), Some(45))
        );
        let r = read(&p, "get_ticker", &[("symbol", Value::from("ACME"))]);
        assert_eq!(
            (r.key.as_str(), r.ttl, r.early_ttl),
            ("ticker:ACME", Ttl::Seconds(10), Some(1))
        );
        let r = read(&p, "get_session", &[("sid", Value::from("s1"))]);
        assert_eq!(
            (r.key.as_str(), r.ttl, r.refresh),
            ("session:s1", Ttl::SHORT, true)
        );
        let r = read(&p, "get_uncached", &[("id", Value::Integer(1))]);
        assert_eq!((r.key.as_str(), r.ttl), ("uncached:1", Ttl::Seconds(0)));
    }

    #[test]
    fn search_is_computed() {
        let p = Compiled::new(define);
        let r = read(&p, "get_search", &[("q", Value::from("rust"))]);
        assert_eq!((r.key.as_str(), r.ttl), ("search:rust", Ttl::Seconds(120)));
        assert_eq!(r.tags, ["search"]);
        assert_eq!(
            p.read("get_search", &args(&[("q", Value::from(""))]))
                .unwrap(),
            None
        );
        assert!(p.read("get_search", &[]).unwrap_err().contains("`q`"));
    }

    #[test]
    fn writes() {
        let p = Compiled::new(define);
        let id = || ("user_id", Value::Integer(42));
        let data = || ("data", Value::Json("{\"name\":\"x\"}".into()));

        let w = write(&p, "update_user", &[id(), data()]);
        assert_eq!(w.invalidate, ["user:42"]);
        assert_eq!(w.recache, [Recache::new("get_user").arg("user_id", 42)]);

        let w = write(
            &p,
            "update_user_org",
            &[id(), ("org_id", Value::Integer(7)), data()],
        );
        assert_eq!(w.invalidate, ["user:42", "org:7:users"]);
        assert!(w.recache.is_empty());
        let w = write(
            &p,
            "remove_user_from_org",
            &[id(), ("org_id", Value::Integer(7))],
        );
        assert_eq!(w.invalidate, ["user:42", "org:7:members"]);

        let w = write(&p, "update_user_dynamic", &[id(), data()]);
        assert_eq!(w.invalidate, ["user:42", "user:42:profile"]);

        let w = write(
            &p,
            "move_org_user",
            &[("org_id", Value::Integer(7)), ("id", Value::Integer(42))],
        );
        assert_eq!(w.invalidate, ["user:42"]);
        assert_eq!(
            w.recache,
            [Recache::new("get_org_user")
                .arg("org_id", 7)
                .arg("user_id", 42)]
        );
        // The recache call renders the read's key.
        assert_eq!(
            read(
                &p,
                "get_org_user",
                &w.recache[0]
                    .args
                    .iter()
                    .map(|(n, v)| (n.as_str(), v.clone()))
                    .collect::<Vec<_>>()
            )
            .key,
            "org:7:user:42"
        );

        let w = write(&p, "update_user_options", &[id(), data()]);
        assert_eq!(
            w.recache,
            [Recache::new("get_user_with_options")
                .arg("user_id", 42)
                .arg("include_deleted", false)]
        );
        let w = write(&p, "update_user_details", &[id(), data()]);
        assert_eq!(
            w.recache,
            [Recache::new("get_user_details")
                .arg("user_id", 42)
                .arg("expand", true)]
        );

        let w = write(&p, "update_user_entity", &[id(), data()]);
        assert_eq!(w.invalidate, ["user:42"]);
        assert_eq!(
            w.recache,
            [
                Recache::new("get_user_profile").arg("user_id", 42),
                Recache::new("get_user_settings").arg("user_id", 42),
            ]
        );
        assert_eq!(w.recache_concurrency, Some(3));

        let w = write(&p, "update_search", &[]);
        assert_eq!(w.invalidate, ["search"]);
    }

    #[test]
    fn resource_write_invalidates_every_resource_read() {
        let p = Compiled::new(define);
        let id = [("user_id", Value::Integer(42))];
        let invalidated = write(&p, "update_user_entity", &id).invalidate;
        for op in [
            "get_user_profile",
            "get_user_settings",
            "get_user_profile_v2",
        ] {
            let tags = read(&p, op, &id).tags;
            assert!(
                tags.iter().any(|t| invalidated.contains(t)),
                "{op}: {tags:?}"
            );
        }
    }
}
