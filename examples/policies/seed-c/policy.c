/* The seed policy in C: one operation for each example of the svc-infra cache guide
 * (`@cache_read`, `@cache_write`, `recache`, `resource`, TTL buckets). The same policy as
 * examples/policies/seed-rust, op for op; see README.md. */
#include "cachelet_policy.h"

/* resource("user", "user_id"): reads keyed user:{suffix}:{user_id}, all tagged with the
 * entity tag user:{user_id}; a resource write invalidates it. */
static const cl_resource USER = CL_RESOURCE("user", "user_id");

/* search:{q}, tagged `search`, for 120 s; an empty query is not cached. */
static bool get_search(const cl_args *args, cl_rule *rule, cl_string *err) {
  if (!cl_arg(args, "q")) {
    *err = cl_strdup("no argument `q`");
    return false;
  }
  if (cl_is_text(cl_arg(args, "q"), "")) return false; /* none: not cached */
  cl_string key;
  if (!cl_render(args, "search:{q}", &key, err)) return false;
  cl_rule_init(rule, key);
  cl_rule_tags(rule, CL_LIST("search"));
  rule->ttl = (cl_ttl)CL_SECONDS(120);
  return true;
}

/* Tags computed per call: the user and the user's profile. */
static bool update_user_dynamic(const cl_args *args, const cl_value *result, cl_strings *tags,
                                cl_string *err) {
  (void)result;
  cl_string user, profile;
  if (!cl_render(args, "user:{user_id}", &user, err)) return false;
  cl_push(tags, user);
  if (!cl_render(args, "user:{user_id}:profile", &profile, err)) return false;
  cl_push(tags, profile);
  return true;
}

const cl_op CL_OPS[] = {
    /* @cache_read: key templates, several params, the tuple form, TTL buckets. */
    CL_READ("get_user", .params = CL_LIST("user_id"), .route = "GET /users/{user_id}", .key = "user:{user_id}", .ttl = CL_SECONDS(300)),
    CL_READ("get_org_user", .params = CL_LIST("org_id", "user_id"), .route = "GET /orgs/{org_id}/users/{user_id}", .key = "org:{org_id}:user:{user_id}",
            .tags = CL_LIST("user:{user_id}", "org:{org_id}:users"), .ttl = CL_SECONDS(600)),
    CL_READ("get_user_card", .params = CL_LIST("user_id"), .key = "user" ":" "card" ":" "{user_id}", .ttl = CL_TTL_DEFAULT),
    CL_READ("get_rate_limit", .params = CL_LIST("ip"), .key = "rate:{ip}", .ttl = CL_TTL_SHORT),
    CL_READ("get_config", .params = CL_LIST("key"), .key = "config:{key}", .ttl = CL_TTL_LONG),
    CL_READ("get_user_with_options", .params = CL_LIST("user_id", "include_deleted"), .key = "user:{user_id}:opts:{include_deleted}",
            .tags = CL_LIST("user:{user_id}"), .ttl = CL_SECONDS(300)),
    CL_READ("get_user_details", .params = CL_LIST("user_id", "expand"), .key = "user:{user_id}:details:{expand}",
            .tags = CL_LIST("user:{user_id}"), .ttl = CL_SECONDS(300)),

    /* The user resource's reads. */
    CL_READ("get_user_profile", .params = CL_LIST("user_id"), .route = "GET /users/{user_id}/profile", .resource = &USER,
            .suffix = "profile", .ttl = CL_SECONDS(300), .lock = true),
    CL_READ("get_user_settings", .params = CL_LIST("user_id"), .route = "GET /users/{user_id}/settings", .resource = &USER,
            .suffix = "settings", .ttl = CL_SECONDS(600)),
    CL_READ("get_user_profile_v2", .params = CL_LIST("user_id"), .resource = &USER,
            .key = "v2:user:{user_id}:profile", .tags = CL_LIST("user:{user_id}", "profiles"),
            .ttl = CL_SECONDS(300)),

    /* Early refresh, sliding expiry, computed rules, "do not cache". */
    CL_READ("get_leaderboard", .params = CL_LIST("board"), .key = "leaderboard:{board}", .ttl = CL_SECONDS(60),
            CL_EARLY_TTL(45)),
    /* A short early window, for tests that wait for the background refresh. */
    CL_READ("get_ticker", .params = CL_LIST("symbol"), .key = "ticker:{symbol}", .ttl = CL_SECONDS(10), CL_EARLY_TTL(1)),
    CL_READ("get_session", .params = CL_LIST("sid"), .key = "session:{sid}", .ttl = CL_TTL_SHORT, .refresh = true),
    CL_READ("get_search", .params = CL_LIST("q"), .read_fn = get_search),
    CL_READ("get_uncached", .params = CL_LIST("id"), .key = "uncached:{id}", .ttl = CL_SECONDS(0)),

    /* @cache_write: tags, dynamic tags, recache with include / rename / extra. */
    CL_WRITE("update_user", .params = CL_LIST("user_id", "data"), .route = "PUT /users/{user_id}", .invalidate = CL_LIST("user:{user_id}"),
             .recache = CL_RECACHES(CL_RECACHE("get_user", .include = CL_LIST("user_id")))),
    CL_WRITE("update_user_org", .params = CL_LIST("user_id", "org_id"), .route = "PUT /orgs/{org_id}/users/{user_id}", .invalidate = CL_LIST("user:{user_id}", "org:{org_id}:users")),
    CL_WRITE("remove_user_from_org", .params = CL_LIST("user_id", "org_id"),
             .invalidate = CL_LIST("user:{user_id}", "org:{org_id}:members")),
    CL_WRITE("update_user_dynamic", .params = CL_LIST("user_id"), .tags_fn = update_user_dynamic),
    CL_WRITE("move_org_user", .params = CL_LIST("org_id", "id"), .invalidate = CL_LIST("user:{id}"),
             .recache = CL_RECACHES(CL_RECACHE("get_org_user", .rename = CL_LIST("id", "user_id")))),
    CL_WRITE("update_user_options", .params = CL_LIST("user_id", "data"), .invalidate = CL_LIST("user:{user_id}"),
             .recache = CL_RECACHES(CL_RECACHE("get_user_with_options",
                                               .include = CL_LIST("user_id"),
                                               .extra = CL_CONSTS(CL_BOOL("include_deleted", false))))),
    CL_WRITE("update_user_details", .params = CL_LIST("user_id"), .invalidate = CL_LIST("user:{user_id}"),
             .recache = CL_RECACHES(CL_RECACHE("get_user_details", .include = CL_LIST("user_id"),
                                               .extra = CL_CONSTS(CL_BOOL("expand", true))))),
    /* The user resource's write: invalidates every entry of the entity, warms two reads. */
    CL_WRITE("update_user_entity", .params = CL_LIST("user_id", "data"), .route = "PUT /users/{user_id}/profile", .resource = &USER,
             .recache = CL_RECACHES(CL_RECACHE("get_user_profile", .include = CL_LIST("user_id")),
                                    CL_RECACHE("get_user_settings", .include = CL_LIST("user_id"))),
             .recache_max_concurrency = 3),
    CL_WRITE("update_search", .params = CL_EMPTY, .invalidate = CL_LIST("search")),
    CL_END,
};

CL_POLICY("seed-c", "0.1.0");
