/* Write cachelet cache policies in C (clang + wasi-libc + `wit-bindgen c`).
 *
 * A policy is a table of operations. Static operations are templates: `describe()` reports
 * them and the host renders them itself, without calling into the component. Dynamic ones
 * (`read_fn`, `tags_fn`) are called on every call. This file implements the world's `policy`
 * export from the table, so a policy is one C file:
 *
 *     #include "cachelet_policy.h"
 *
 *     static bool get_search(const cl_args *args, cl_rule *rule, cl_string *err) { ... }
 *
 *     const cl_op CL_OPS[] = {
 *         CL_READ("get_user", .key = "user:{user_id}", .ttl = CL_SECONDS(300)),
 *         CL_WRITE("update_user", .invalidate = CL_LIST("user:{user_id}"),
 *                  .recache = CL_RECACHES(CL_RECACHE("get_user", .include = CL_LIST("user_id")))),
 *         CL_READ("get_search", .params = CL_LIST("q"), .read_fn = get_search),
 *         CL_END,
 *     };
 *     CL_POLICY("users", "0.1.0");
 *
 * `read`/`write` answer for static operations too, exactly as the host renders them (the
 * rules of the WIT `read-rule` comment: text and JSON arguments with `%` written `%25` and `:`
 * written `%3A`; two placeholders always with a `:` between them). A declaration mistake (an
 * unbalanced brace, placeholders without a `:` between them, a recache of a write, an
 * `early_ttl` not below the TTL) makes `describe` fail with every mistake, each naming its op:
 * the host refuses to load the policy.
 *
 * Memory: everything handed back to the host is malloc'd (the bindings free it after the
 * call); the arguments the host hands in are freed here. A dynamic function fills `rule` /
 * `tags` with strings from `cl_render` or `cl_strdup`.
 */
#ifndef CACHELET_POLICY_H
#define CACHELET_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cache_policy.h"

typedef cache_policy_string_t cl_string;
typedef cachelet_policy_types_value_t cl_value;
typedef cachelet_policy_types_args_t cl_args;
typedef cachelet_policy_types_ttl_t cl_ttl;
typedef cachelet_policy_types_read_rule_t cl_rule;
typedef cache_policy_list_string_t cl_strings;

#define CL_SECONDS(s) {.tag = CACHELET_POLICY_TYPES_TTL_SECONDS, .val.seconds = (s)}
#define CL_TTL_SHORT {.tag = CACHELET_POLICY_TYPES_TTL_BUCKET, .val.bucket = CACHELET_POLICY_TYPES_TTL_BUCKET_SHORT}
#define CL_TTL_DEFAULT {.tag = CACHELET_POLICY_TYPES_TTL_BUCKET, .val.bucket = CACHELET_POLICY_TYPES_TTL_BUCKET_DEFAULT}
#define CL_TTL_LONG {.tag = CACHELET_POLICY_TYPES_TTL_BUCKET, .val.bucket = CACHELET_POLICY_TYPES_TTL_BUCKET_LONG}

/* A NULL-terminated list of strings (templates, parameter names). */
#define CL_LIST(...) ((const char *const[]){__VA_ARGS__, NULL})
/* An explicitly empty tag list: the entry is untagged. */
#define CL_UNTAGGED ((const char *const[]){NULL})
#define CL_EARLY_TTL(s) .has_early_ttl = true, .early_ttl = (s)

/* A constant argument of a recache (`extra`). */
typedef struct {
  const char *name;
  cl_value value;
} cl_const;
#define CL_BOOL(n, b) {.name = (n), .value = {.tag = CACHELET_POLICY_TYPES_VALUE_BOOLEAN, .val.boolean = (b)}}
#define CL_INT(n, i) {.name = (n), .value = {.tag = CACHELET_POLICY_TYPES_VALUE_INTEGER, .val.integer = (i)}}
#define CL_TEXT(n, s) {.name = (n), .value = {.tag = CACHELET_POLICY_TYPES_VALUE_TEXT, .val.text = {(uint8_t *)(s), sizeof(s) - 1}}}
#define CL_CONSTS(...) ((const cl_const[]){__VA_ARGS__, {.name = NULL}})

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

/* A dynamic read: fill `rule` and return true, or return false with `err` left empty (do not
 * cache this call) or set (an error). */
typedef bool (*cl_read_fn)(const cl_args *args, cl_rule *rule, cl_string *err);
/* Tags a write invalidates, computed per call: append to `tags`; false with `err` set fails. */
typedef bool (*cl_tags_fn)(const cl_args *args, const cl_value *result, cl_strings *tags,
                           cl_string *err);

typedef struct {
  const char *name;
  cachelet_policy_types_op_kind_t kind;
  const char *const *params; /* NULL: the placeholders of the templates */
  const char *route;
  /* Reads. Tags NULL: tagged with the key. */
  const char *key;
  const char *const *tags;
  cl_ttl ttl; /* zero-initialised: 0 s, so always give one */
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
} cl_op;

#define CL_READ(op_name, ...) {.name = (op_name), .kind = CACHELET_POLICY_TYPES_OP_KIND_READ, __VA_ARGS__}
#define CL_WRITE(op_name, ...) {.name = (op_name), .kind = CACHELET_POLICY_TYPES_OP_KIND_WRITE, __VA_ARGS__}
#define CL_END {.name = NULL}

/* The policy: its table (ending with CL_END), name and version. */
extern const cl_op CL_OPS[];
extern const char *const CL_NAME;
extern const char *const CL_VERSION;
#define CL_POLICY(n, v) const char *const CL_NAME = (n); const char *const CL_VERSION = (v)

/* The argument `name`, or NULL. */
const cl_value *cl_arg(const cl_args *args, const char *name);
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

#endif
