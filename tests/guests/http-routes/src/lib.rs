//! Routes for the HTTP layer's tests (tests/http_layer.rs): reads and writes matched by path,
//! a query parameter in a key, and a catch-all that caches anything else by its path.

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
    p.read("get_page")
        .params(["path"])
        .route("GET /{*path}")
        .key("page:{path}")
        .tags(["pages"])
        .ttl(60);
}

cachelet_guest::export_policy!(define);
