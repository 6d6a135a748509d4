//! Routes for the HTTP layer's and the proxy's tests (tests/http_layer.rs, tests/proxy.rs):
//! reads and writes matched by path, a query parameter in a key, routes with options (a lock,
//! a grace period, credentials, the policy's TTL over the upstream's), and a catch-all that
//! caches anything else by its path.

use cachelet_guest::prelude::*;

fn define(p: &mut Policy) {
    p.name("http-routes").version("0.1.0");

    p.read("get_user")
        .params(["user_id"])
        .route("GET /users/{user_id}")
        .key("user:{user_id}")
        .ttl(300);
    p.read("get_org_user")
        .params(["org_id", "user_id", "expand"])
        .route("GET /orgs/{org_id}/users/{user_id}")
        .key("org:{org_id}:user:{user_id}:{expand}")
        .tags(["user:{user_id}", "org:{org_id}:users"])
        .ttl(300);
    p.write("update_user")
        .params(["user_id"])
        .route("PUT /users/{user_id}")
        .tags(["user:{user_id}"]);
    p.read("get_locked")
        .params(["id"])
        .route("GET /locked/{id}")
        .key("locked:{id}")
        .ttl(60)
        .lock(true);
    p.read("get_graced")
        .params(["id"])
        .route("GET /graced/{id} grace=30")
        .key("graced:{id}")
        .ttl(60);
    p.read("get_mine")
        .params(["id"])
        .route("GET /mine/{id} credentials")
        .key("mine:{id}")
        .ttl(60);
    p.read("get_fixed")
        .params(["id"])
        .route("GET /fixed/{id} ttl=policy")
        .key("fixed:{id}")
        .ttl(60);
    p.read("get_early")
        .params(["id"])
        .route("GET /early/{id}")
        .key("early:{id}")
        .ttl(60)
        .early_ttl(1);
    p.read("get_page")
        .params(["path"])
        .route("GET /{*path}")
        .key("page:{path}")
        .tags(["pages"])
        .ttl(60);
}

cachelet_guest::export_policy!(define);
