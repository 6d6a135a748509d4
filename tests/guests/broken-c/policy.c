/* Every declaration mistake the SDKs refuse, one op each (the same ops as broken-rust):
 * `describe` must return them all and the host must not load it. */
#include "cachelet_policy.h"

static bool nothing(const cl_args *args, cl_rule *rule, cl_string *err) { return false; }
static bool no_write(const cl_args *args, const cl_value *result, cl_write_rule *rule,
                     cl_string *err) {
  return false;
}

const cl_op CL_OPS[] = {
    CL_READ("ok_read", .key = "ok:{id}", ),
    CL_READ("brace_key", .key = "user:{user_id", ),
    CL_READ("joined_key", .key = "org:{org_id}{user_id}", ),
    CL_READ("joined_tag", .key = "user:{user_id}",
            .tags = CL_LIST("user:{user_id}", "org:{org_id}-{user_id}"), ),
    CL_READ("no_key", .ttl = CL_SECONDS(3)),
    CL_READ("early", .key = "k", .ttl = CL_SECONDS(30), CL_EARLY_TTL(30)),
    CL_READ("undeclared_param", .key = "k:{a}:{b}", .params = CL_LIST("a"), ),
    CL_READ("bad_param", .key = "k:{a}", .params = CL_LIST("a-b"), ),
    CL_READ("twice", .key = "a", ),
    /* The mistake that used to flush the namespace on every write. */
    CL_WRITE("broken_tag_write", .invalidate = CL_LIST("user:{user_id")),
    CL_WRITE("joined_write", .invalidate = CL_LIST("t:{a}-{b}")),
    CL_WRITE("empty_write", .route = NULL),
    CL_WRITE("recache_write", .invalidate = CL_LIST("t"),
             .recache = CL_RECACHES(CL_RECACHE("broken_tag_write", .include = NULL))),
    CL_WRITE("bad_include", .invalidate = CL_LIST("t"),
             .recache = CL_RECACHES(CL_RECACHE("ok_read", .include = CL_LIST("a-b")))),
    CL_WRITE("twice", .invalidate = CL_LIST("a")),
    /* A read of another policy: not a mistake. */
    CL_WRITE("elsewhere", .invalidate = CL_LIST("t"),
             .recache = CL_RECACHES(CL_RECACHE("get_user", .include = NULL))),
    /* A misspelled placeholder, caught by the declared params. */
    CL_WRITE("misspelled", .params = CL_LIST("item_id"), .invalidate = CL_LIST("item:{item_idd}")),
    /* A computed rule combined with a declared one. */
    CL_READ("computed_read", .key = "k", .read_fn = nothing),
    CL_WRITE("computed_write", .recache = CL_RECACHES(CL_RECACHE("ok_read", .include = NULL)),
             .write_fn = no_write),
    /* C's compiler refuses the other mistakes at build time (tests/conformance.rs). */
    CL_END,
};
CL_POLICY("broken", "0.1.0");
