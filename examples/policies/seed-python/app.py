"""The seed policy in Python: one operation for each example of the svc-infra cache guide
(``@cache_read``, ``@cache_write``, ``recache``, ``resource``, TTL buckets). The same policy as
examples/policies/seed-rust, op for op; see README.md."""

from cachelet_policy import CachePolicy, recache, resource, TTL_SHORT, TTL_DEFAULT, TTL_LONG

policy = CachePolicy("seed-python", "0.1.0")

# @cache_read: key templates, several params, the tuple form, TTL buckets.
policy.read("get_user", params=["user_id"], route="GET /users/{user_id}", key="user:{user_id}", ttl=300)
policy.read("get_org_user", params=["org_id", "user_id"], route="GET /orgs/{org_id}/users/{user_id}", key="org:{org_id}:user:{user_id}",
            tags=["user:{user_id}", "org:{org_id}:users"], ttl=600)
policy.read("get_user_card", params=["user_id"], key=":".join(("user", "card", "{user_id}")), ttl=TTL_DEFAULT)
policy.read("get_rate_limit", params=["ip"], key="rate:{ip}", ttl=TTL_SHORT)
policy.read("get_config", params=["key"], key="config:{key}", ttl=TTL_LONG)
policy.read("get_user_with_options", params=["user_id", "include_deleted"], key="user:{user_id}:opts:{include_deleted}",
            tags=["user:{user_id}"], ttl=300)
policy.read("get_user_details", params=["user_id", "expand"], key="user:{user_id}:details:{expand}",
            tags=["user:{user_id}"], ttl=300)

# resource("user", "user_id"): keys user:{suffix}:{user_id}, all tagged user:{user_id}.
user = resource("user", "user_id")
policy.read("get_user_profile", params=["user_id"], route="GET /users/{user_id}/profile", resource=user, suffix="profile", ttl=300, lock=True)
policy.read("get_user_settings", params=["user_id"], route="GET /users/{user_id}/settings", resource=user, suffix="settings", ttl=600)
policy.read("get_user_profile_v2", params=["user_id"], resource=user, suffix="profile",
            key="v2:user:{user_id}:profile", tags=["user:{user_id}", "profiles"], ttl=300)

# Early refresh, sliding expiry, computed rules, "do not cache".
policy.read("get_leaderboard", params=["board"], key="leaderboard:{board}", ttl=60, early_ttl=45)
# A short early window, for tests that wait for the background refresh.
policy.read("get_ticker", params=["symbol"], key="ticker:{symbol}", ttl=10, early_ttl=1)
policy.read("get_session", params=["sid"], key="session:{sid}", ttl=TTL_SHORT, refresh=True)


@policy.read_rule("get_search", params=["q"])
def get_search(args):
    if args["q"] == "":
        return None  # an empty query is not cached
    return policy.rule(args.render("search:{q}"), tags=["search"], ttl=120)


policy.read("get_uncached", params=["id"], key="uncached:{id}", ttl=0)

# @cache_write: tags, dynamic tags, recache with include / rename / extra.
policy.write("update_user", params=["user_id", "data"], route="PUT /users/{user_id}", tags=["user:{user_id}"],
             recache=[recache("get_user", include=["user_id"])])
policy.write("update_user_org", params=["user_id", "org_id"], route="PUT /orgs/{org_id}/users/{user_id}", tags=["user:{user_id}", "org:{org_id}:users"])
policy.write("remove_user_from_org", params=["user_id", "org_id"], tags=["user:{user_id}", "org:{org_id}:members"])


def user_and_profile(args):
    return [args.render("user:{user_id}"), args.render("user:{user_id}:profile")]


policy.write("update_user_dynamic", params=["user_id"], tags_with=user_and_profile)


policy.write("move_org_user", params=["org_id", "id"], tags=["user:{id}"],
             recache=[recache("get_org_user", rename={"id": "user_id"})])
policy.write("update_user_options", params=["user_id", "data"], tags=["user:{user_id}"],
             recache=[recache("get_user_with_options", include=["user_id"],
                              extra={"include_deleted": False})])
policy.write("update_user_details", params=["user_id"], tags=["user:{user_id}"],
             recache=[recache("get_user_details", include=["user_id"], extra={"expand": True})])
policy.write("update_user_entity", params=["user_id", "data"], route="PUT /users/{user_id}/profile", resource=user,
             recache=[recache("get_user_profile", include=["user_id"]),
                      recache("get_user_settings", include=["user_id"])],
             recache_max_concurrency=3)
policy.write("update_search", params=[], tags=["search"])

# The class componentize-py binds to the world's `policy` export.
Policy = policy.export()
