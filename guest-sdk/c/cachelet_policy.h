/* Write cachelet cache policies in C (clang + wasi-libc + `wit-bindgen c`).
 *
 * A policy is a table of operations. Static operations are templates: `describe()` reports
 * them and the host renders them itself, without calling into the component. Dynamic ones
 * (`read_fn`, `tags_fn`, `recache_fn`, `write_fn`) are called on every call. This file
 * implements the world's `policy` export from the table, so a policy is one C file:
 *
 *     #include "cachelet_policy.h"
 *
 *     static const cl_resource USER = CL_RESOURCE("user", "user_id");
 *     static bool get_search(const cl_args *args, cl_rule *rule, cl_string *err) { ... }
 *
 *     const cl_op CL_OPS[] = {
 *         CL_READ("get_user", .key = "user:{user_id}", .params = CL_LIST("user_id"),
 *                 .ttl = CL_SECONDS(300)),
 *         CL_READ("get_user_profile", .resource = &USER, .suffix = "profile",
 *                 .params = CL_LIST("user_id")),
 *         CL_WRITE("update_user", .invalidate = CL_LIST("user:{user_id}"),
 *                  .params = CL_LIST("user_id"),
 *                  .recache = CL_RECACHES(CL_RECACHE("get_user", .include = CL_LIST("user_id")))),
 *         CL_READ("get_search", .params = CL_LIST("q"), .read_fn = get_search),
 *         CL_END,
 *     };
 *     CL_POLICY("users", "0.1.0");
 *
 * A read's TTL is the default bucket unless `.ttl` says otherwise (`CL_SECONDS(0)`: not
 * cached), as in every SDK. `read`/`write` answer for static operations too, exactly as the
 * host renders them (the rules of the WIT `read-rule` comment: text and JSON arguments with
 * `%` written `%25` and `:` written `%3A`; two placeholders always with a `:` between them).
 *
 * Mistakes: the compiler refuses an option that does not exist, a string where a list
 * belongs (build with `-Werror=incompatible-pointer-types`) and a constant TTL out of range. A
 * declaration mistake (an unbalanced brace, placeholders without a `:` between them, a
 * placeholder not among the declared `.params`, a recache of a write, an `early_ttl` not below
 * the TTL, an op declared twice, a computed rule combined with a declared one) makes
 * `describe` fail with every mistake, each naming its op: the host refuses to load the policy.
 * Declare `.params` on every op: without them a misspelled placeholder is found only when a
 * call fails, and `cachelet check` warns.
 *
 * Memory: everything handed back to the host is malloc'd (the bindings free it after the
 * call); the arguments the host hands in are freed here after the call, so a dynamic function
 * may borrow from them but not keep them. A dynamic function fills `rule` / `tags` / `calls`
 * with strings from `cl_render`, `cl_strdup` or `cl_push`.
 *
 * The world's imports (`cache_policy.h`) follow the bindings' rule: the caller owns every
 * argument (pass borrowed strings: `cl_string key = CL_STR("config:theme")`; nothing is freed
 * by the call), and owns what comes back, to free with the bindings' `_free` function:
 *
 *     cl_string key = CL_STR("config:banner"), value;
 *     if (cachelet_policy_store_get(&key, &value)) {   // value: malloc'd, yours
 *       ...
 *       cache_policy_string_free(&value);
 *     }
 *     int64_t n;
 *     cl_string failed;
 *     if (!cachelet_policy_store_incr(&key, 1, &n, &failed)) cache_policy_string_free(&failed);
 *
 * A component that calls `store` imports it, and is then called on a fiber (~0.1-0.2 us per
 * call); one that does not imports nothing at all.
 */
#ifndef CACHELET_POLICY_H
#define CACHELET_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "cache_policy.h"

typedef cache_policy_string_t cl_string;
typedef cachelet_policy_types_value_t cl_value;
typedef cachelet_policy_types_args_t cl_args;
typedef cachelet_policy_types_ttl_t cl_ttl;
typedef cachelet_policy_types_read_rule_t cl_rule;
typedef cache_policy_list_string_t cl_strings;

/* 0 when `s` is a constant in 0 ..= 2^32-1; a compile error when it is a constant outside. */
#define CL_CHECK_U32(s) \
  (0 * sizeof(struct { int seconds_out_of_range : ((s) >= 0 && (s) <= 4294967295LL) ? 1 : -1; }))
/* A TTL of `s` seconds (a constant; `cl_seconds(n)` for one computed at run time). */
#define CL_SECONDS(s) {.tag = CACHELET_POLICY_TYPES_TTL_SECONDS, .val.seconds = (uint32_t)(s) + CL_CHECK_U32(s)}
#define CL_TTL_SHORT {.tag = CACHELET_POLICY_TYPES_TTL_BUCKET, .val.bucket = CACHELET_POLICY_TYPES_TTL_BUCKET_SHORT}
#define CL_TTL_DEFAULT {.tag = CACHELET_POLICY_TYPES_TTL_BUCKET, .val.bucket = CACHELET_POLICY_TYPES_TTL_BUCKET_DEFAULT}
#define CL_TTL_LONG {.tag = CACHELET_POLICY_TYPES_TTL_BUCKET, .val.bucket = CACHELET_POLICY_TYPES_TTL_BUCKET_LONG}

/* A NULL-terminated list of strings (templates, parameter names). */
#define CL_LIST(...) ((const char *const[]){__VA_ARGS__, NULL})
/* An empty list (`.params = CL_EMPTY`: an op without parameters); as tags: the entry is
 * untagged. */
#define CL_EMPTY ((const char *const[]){NULL})
#define CL_UNTAGGED CL_EMPTY
#define CL_EARLY_TTL(s) .has_early_ttl = true, .early_ttl = (uint32_t)(s) + CL_CHECK_U32(s)
/* A borrowed string of a literal or a `char *` (for the imports' arguments). */
#define CL_STR(s) ((cl_string){(uint8_t *)(s), strlen(s)})

/* A constant argument of a recache (`extra`). Text and JSON are NUL-terminated strings, a
 * literal or any `const char *` (their length is taken when the constant is used). */
typedef struct {
  const char *name;
  cl_value value;
  const char *text; /* CL_TEXT / CL_JSON: the value's text */
} cl_const;
#define CL_BOOL(n, b) {.name = (n), .value = {.tag = CACHELET_POLICY_TYPES_VALUE_BOOLEAN, .val.boolean = (b)}}
#define CL_INT(n, i) {.name = (n), .value = {.tag = CACHELET_POLICY_TYPES_VALUE_INTEGER, .val.integer = (i)}}
#define CL_FLOAT(n, f) {.name = (n), .value = {.tag = CACHELET_POLICY_TYPES_VALUE_FLOAT, .val.float_ = (f)}}
#define CL_NULL(n) {.name = (n), .value = {.tag = CACHELET_POLICY_TYPES_VALUE_NULL}}
#define CL_TEXT(n, s) {.name = (n), .value = {.tag = CACHELET_POLICY_TYPES_VALUE_TEXT}, .text = (s)}
#define CL_JSON(n, s) {.name = (n), .value = {.tag = CACHELET_POLICY_TYPES_VALUE_JSON}, .text = (s)}
#define CL_CONSTS(...) ((const cl_const[]){__VA_ARGS__, {.name = NULL}})

/* An entity whose reads are invalidated together: `CL_RESOURCE("user", "user_id")`. A read
 * with `.resource = &USER, .suffix = "profile"` is keyed `user:profile:{user_id}` and always
 * carries the entity tag `user:{user_id}`; a write with `.resource = &USER` invalidates it. */
typedef struct {
  const char *entity;
  const char *id_param;
} cl_resource;
#define CL_RESOURCE(e, id) {.entity = (e), .id_param = (id)}

/* A read to warm again after a write: `op` with the write's arguments (all, or `include`),
 * renamed by `rename` (pairs: write name, read name), plus the `extra` constants. */
typedef struct {
  const char *op;
  const char *const *include; /* NULL: every argument */
  const char *const *rename;  /* from, to, from, to, ..., NULL */
  const cl_const *extra;
} cl_recache;
#define CL_RECACHE(name, ...) {.op = (name), __VA_ARGS__}
#define CL_RECACHES(...) ((const cl_recache[]){__VA_ARGS__, {.op = NULL}})

typedef cachelet_policy_types_write_rule_t cl_write_rule;
typedef cachelet_policy_types_recache_t cl_recache_call;
typedef cachelet_policy_types_list_recache_t cl_recache_calls;

/* A dynamic read: fill `rule` and return true, or return false with `err` left empty (do not
 * cache this call) or set (an error). */
typedef bool (*cl_read_fn)(const cl_args *args, cl_rule *rule, cl_string *err);
/* Tags a write invalidates, computed per call: append to `tags`; false with `err` set fails. */
typedef bool (*cl_tags_fn)(const cl_args *args, const cl_value *result, cl_strings *tags,
                           cl_string *err);
/* Reads a write warms again, computed per call: append with `cl_recache_push`; false with
 * `err` set fails. */
typedef bool (*cl_recache_fn)(const cl_args *args, const cl_value *result, cl_recache_calls *calls,
                              cl_string *err);
/* A whole write rule computed per call: fill `rule` (`cl_push` to `rule->invalidate`,
 * `cl_recache_push` to `rule->recache`) and return true, or false with `err` empty (the write
 * touches no cached data) or set (an error). */
typedef bool (*cl_write_fn)(const cl_args *args, const cl_value *result, cl_write_rule *rule,
                            cl_string *err);

typedef struct {
  const char *name;
  cachelet_policy_types_op_kind_t kind;
  const char *const *params; /* NULL: undeclared (nothing checked; `cachelet check` warns) */
  const char *route;
  const cl_resource *resource;
  /* Reads. Tags NULL: tagged with the key (a resource read: with its entity tag). */
  const char *key;
  const char *suffix; /* a resource read: the key is {entity}:{suffix}:{id} */
  const char *const *tags;
  cl_ttl ttl; /* CL_READ: the default bucket unless given */
  bool has_early_ttl;
  uint32_t early_ttl;
  bool refresh;
  bool lock;
  cl_read_fn read_fn;
  /* Writes. */
  const char *const *invalidate;
  const cl_recache *recache;
  uint32_t recache_max_concurrency; /* 0: the host's default */
  cl_tags_fn tags_fn;
  cl_recache_fn recache_fn;
  cl_write_fn write_fn;
} cl_op;

/* The TTL first, so that a `.ttl` given overrides it (the pragma: that is on purpose). */
#define CL_READ(op_name, ...)                                                                 \
  _Pragma("clang diagnostic push")                                                            \
  _Pragma("clang diagnostic ignored \"-Winitializer-overrides\"")                             \
  {.name = (op_name), .kind = CACHELET_POLICY_TYPES_OP_KIND_READ, .ttl = CL_TTL_DEFAULT,       \
   __VA_ARGS__} _Pragma("clang diagnostic pop")
#define CL_WRITE(op_name, ...) {.name = (op_name), .kind = CACHELET_POLICY_TYPES_OP_KIND_WRITE, __VA_ARGS__}
#define CL_END {.name = NULL}

/* The policy: its table (ending with CL_END), name and version. */
extern const cl_op CL_OPS[];
extern const char *const CL_NAME;
extern const char *const CL_VERSION;
#define CL_POLICY(n, v) const char *const CL_NAME = (n); const char *const CL_VERSION = (v)

/* The argument `name`, or NULL. */
const cl_value *cl_arg(const cl_args *args, const char *name);
/* Typed arguments: true with `*out` set, or false with `err` set (malloc'd) naming the argument
 * ("no argument `id`", "argument `id` is text, not integer"). `cl_arg_float` takes an integer
 * too; `cl_arg_text`'s `out` borrows the argument's bytes (not NUL-terminated; do not free). */
bool cl_arg_int(const cl_args *args, const char *name, int64_t *out, cl_string *err);
bool cl_arg_float(const cl_args *args, const char *name, double *out, cl_string *err);
bool cl_arg_bool(const cl_args *args, const char *name, bool *out, cl_string *err);
bool cl_arg_text(const cl_args *args, const char *name, cl_string *out, cl_string *err);
/* A TTL of `seconds`, computed at run time. */
cl_ttl cl_seconds(uint32_t seconds);
/* Whether `v` is the text `s`. */
bool cl_is_text(const cl_value *v, const char *s);
/* Renders `template` with `args` into a malloc'd `out`, as the host does; false with `err`
 * set when a placeholder has no argument or the template is not one. */
bool cl_render(const cl_args *args, const char *template_, cl_string *out, cl_string *err);
/* A malloc'd copy of `s`. */
cl_string cl_strdup(const char *s);
/* Appends a malloc'd string to a list. */
void cl_push(cl_strings *list, cl_string s);
/* A rule for a dynamic read: `key` (taken), tagged with the key, default TTL. */
void cl_rule_init(cl_rule *rule, cl_string key);
/* Replaces the rule's tags with copies of `tags` (NULL-terminated). */
void cl_rule_tags(cl_rule *rule, const char *const *tags);
/* Appends a call of the read `op` (copied) to `calls`, with no arguments yet. */
cl_recache_call *cl_recache_push(cl_recache_calls *calls, const char *op);
/* Adds an argument to a recache call: `name` and `value` are copied. */
void cl_recache_arg(cl_recache_call *call, const char *name, const cl_value *value);

#endif
