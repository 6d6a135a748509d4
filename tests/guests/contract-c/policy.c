/* The guest contract, the same ops as contract-rust (see its src/lib.rs). */
#include "cachelet_policy.h"

static bool get_computed(const cl_args *args, cl_rule *rule, cl_string *err) {
  cl_string key;
  if (!cl_render(args, "computed:{id}", &key, err)) return false;
  cl_rule_init(rule, key);
  cl_rule_tags(rule, CL_LIST("computed"));
  rule->ttl = (cl_ttl)CL_SECONDS(60);
  return true;
}

static bool spin(const cl_args *args, cl_rule *rule, cl_string *err) {
  volatile uint64_t x = 0;
  for (;;) x = x + 1;
  return false;
}

static bool items(const cl_args *args, const cl_value *result, cl_strings *tags, cl_string *err) {
  cl_push(tags, cl_strdup("items"));
  return true;
}

static bool update_computed(const cl_args *args, const cl_value *result, cl_write_rule *rule,
                            cl_string *err) {
  if (!cl_arg(args, "item_id")) return false; /* none: touches no cached data */
  int64_t id;
  if (!cl_arg_int(args, "item_id", &id, err)) return false;
  cl_string tag;
  if (!cl_render(args, "item:{item_id}", &tag, err)) return false;
  cl_push(&rule->invalidate, tag);
  cl_value v = {.tag = CACHELET_POLICY_TYPES_VALUE_INTEGER, .val.integer = id};
  cl_recache_arg(cl_recache_push(&rule->recache, "get_item"), "item_id", &v);
  return true;
}

static bool warm_item(const cl_args *args, const cl_value *result, cl_recache_calls *calls,
                      cl_string *err) {
  const cl_value *id = cl_arg(args, "item_id");
  if (!id) {
    *err = cl_strdup("no argument `item_id`");
    return false;
  }
  cl_recache_arg(cl_recache_push(calls, "get_item"), "item_id", id);
  return true;
}

const cl_op CL_OPS[] = {
    CL_READ("get_item", .params = CL_LIST("item_id"), .key = "item:{item_id}",
            .ttl = CL_SECONDS(60)),
    CL_READ("get_computed", .params = CL_LIST("id"), .read_fn = get_computed),
    CL_READ("spin", .params = CL_LIST("id"), .read_fn = spin),
    CL_WRITE("update_static", .params = CL_LIST("item_id", "id"),
             .invalidate = CL_LIST("item:{item_id}"),
             .recache = CL_RECACHES(CL_RECACHE("get_item", .include = CL_LIST("item_id")),
                                    CL_RECACHE("get_computed", .include = CL_LIST("id")))),
    CL_WRITE("update_dynamic", .params = CL_LIST("item_id", "id"),
             .invalidate = CL_LIST("item:{item_id}"), .tags_fn = items,
             .recache = CL_RECACHES(CL_RECACHE("get_item", .include = CL_LIST("item_id")),
                                    CL_RECACHE("get_computed", .include = CL_LIST("id")))),
    CL_WRITE("update_computed", .params = CL_LIST("item_id"), .write_fn = update_computed),
    CL_WRITE("update_recache_with", .params = CL_LIST("item_id"), .invalidate = CL_LIST("items"),
             .recache_fn = warm_item),
    /* Constants of every kind, added to a recache (the text through a `char *`). */
    CL_WRITE("update_extras", .params = CL_LIST("item_id"), .invalidate = CL_LIST("items"),
             .recache = CL_RECACHES(CL_RECACHE(
                 "get_item", .include = CL_LIST("item_id"),
                 .extra = CL_CONSTS(CL_FLOAT("f", 0.5), CL_NULL("n"),
                                    CL_TEXT("t", (const char *)"a:b:c"),
                                    CL_JSON("j", "{\"a\":1}"))))),
    /* No params: the host cannot check `{id}`; `cachelet check` warns. */
    CL_READ("undeclared", .key = "undeclared:{id}"),
    CL_END,
};
CL_POLICY("contract", "0.1.0");
