/* The world's `policy` export, answered from the policy's table `CL_OPS` (see
 * cachelet_policy.h). No I/O: the component imports nothing but the world. */
#include "cachelet_policy.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* ---- strings --------------------------------------------------------------------------- */

typedef struct {
  char *p;
  size_t len, cap;
} sb;

static void sb_putn(sb *b, const char *s, size_t n) {
  if (b->len + n + 1 > b->cap) {
    b->cap = (b->len + n + 1) * 2;
    b->p = realloc(b->p, b->cap);
    if (!b->p) abort();
  }
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = 0;
}

static void sb_puts(sb *b, const char *s) { sb_putn(b, s, strlen(s)); }

static cl_string sb_take(sb *b) {
  cl_string s = {(uint8_t *)b->p, b->len};
  if (!b->p) s.ptr = malloc(1); /* a valid pointer for an empty string */
  b->p = NULL;
  b->len = b->cap = 0;
  return s;
}

/* A message, malloc'd: the concatenation of the NULL-terminated parts. */
static cl_string msg(const char *first, ...) {
  sb b = {0};
  va_list ap;
  va_start(ap, first);
  for (const char *s = first; s; s = va_arg(ap, const char *)) sb_puts(&b, s);
  va_end(ap);
  return sb_take(&b);
}

cl_string cl_strdup(const char *s) {
  sb b = {0};
  sb_puts(&b, s);
  return sb_take(&b);
}

static cl_string dup_n(const uint8_t *s, size_t n) {
  sb b = {0};
  sb_putn(&b, (const char *)s, n);
  return sb_take(&b);
}

static bool eq(const cl_string *s, const char *c) {
  size_t n = strlen(c);
  return s->len == n && memcmp(s->ptr, c, n) == 0;
}

void cl_push(cl_strings *list, cl_string s) {
  list->ptr = realloc(list->ptr, (list->len + 1) * sizeof(cl_string));
  if (!list->ptr) abort();
  list->ptr[list->len++] = s;
}

static size_t count(const char *const *list) {
  size_t n = 0;
  while (list && list[n]) n++;
  return n;
}

static bool contains(const cl_strings *list, const char *s, size_t n) {
  for (size_t i = 0; i < list->len; i++)
    if (list->ptr[i].len == n && memcmp(list->ptr[i].ptr, s, n) == 0) return true;
  return false;
}

/* ---- values ---------------------------------------------------------------------------- */

const cl_value *cl_arg(const cl_args *args, const char *name) {
  for (size_t i = 0; i < args->len; i++)
    if (eq(&args->ptr[i].f0, name)) return &args->ptr[i].f1;
  return NULL;
}

bool cl_is_text(const cl_value *v, const char *s) {
  return v && v->tag == CACHELET_POLICY_TYPES_VALUE_TEXT && eq(&v->val.text, s);
}

/* Decimal text of an unsigned integer. */
static void put_u64(sb *b, uint64_t v) {
  char buf[24];
  size_t i = sizeof buf;
  do buf[--i] = (char)('0' + v % 10); while ((v /= 10) != 0);
  sb_putn(b, buf + i, sizeof buf - i);
}

static void put_i64(sb *b, int64_t v) {
  if (v < 0) {
    sb_putn(b, "-", 1);
    put_u64(b, (uint64_t)0 - (uint64_t)v);
  } else {
    put_u64(b, (uint64_t)v);
  }
}

/* Every decimal digit of a finite positive double (exact: a double is m * 2^e), and the power
 * of ten of the first one. A bignum in base 1e9; no stdio, so no WASI import. */
static size_t exact_digits(double f, char *out, int *exp10) {
  uint64_t bits;
  memcpy(&bits, &f, sizeof bits);
  int e = (int)((bits >> 52) & 0x7ff);
  uint64_t m = bits & ((1ull << 52) - 1);
  if (e) m |= 1ull << 52;
  else e = 1;
  e -= 1075; /* f = m * 2^e */
  static uint32_t limb[130];
  size_t n = 0;
  for (uint64_t v = m; v; v /= 1000000000) limb[n++] = (uint32_t)(v % 1000000000);
  int shift = e < 0 ? -e : 0; /* f = N / 10^shift */
  for (int left = e < 0 ? -e : e; left > 0;) {
    /* times 2^k (e >= 0) or 5^k (e < 0), k <= 12 */
    int k = left < 12 ? left : 12;
    uint64_t mul = 1;
    for (int i = 0; i < k; i++) mul *= e < 0 ? 5 : 2;
    uint64_t carry = 0;
    for (size_t i = 0; i < n; i++) {
      uint64_t x = limb[i] * mul + carry;
      limb[i] = (uint32_t)(x % 1000000000);
      carry = x / 1000000000;
    }
    while (carry) {
      limb[n++] = (uint32_t)(carry % 1000000000);
      carry /= 1000000000;
    }
    left -= k;
  }
  size_t len = 0;
  for (size_t i = n; i-- > 0;) {
    char nine[9];
    uint32_t v = limb[i];
    for (int d = 8; d >= 0; d--, v /= 10) nine[d] = (char)('0' + v % 10);
    size_t from = 0;
    if (i == n - 1)
      while (from < 8 && nine[from] == '0') from++;
    memcpy(out + len, nine + from, 9 - from);
    len += 9 - from;
  }
  *exp10 = (int)len - 1 - shift;
  return len;
}

/* The shortest decimal that reads back as the same number, never with an exponent, and
 * without a fractional part when it has none: what the host (Rust's Display) writes. */
static void put_float(sb *b, double f) {
  if (f != f) return sb_puts(b, "NaN");
  if (f > 1.7976931348623157e308) return sb_puts(b, "inf");
  if (f < -1.7976931348623157e308) return sb_puts(b, "-inf");
  if (f < 0 || (f == 0 && 1 / f < 0)) {
    sb_putn(b, "-", 1);
    f = -f;
  }
  if (f == 0) return sb_putn(b, "0", 1);
  static char all[1200];
  int exp;
  size_t len = exact_digits(f, all, &exp);
  char digits[24];
  size_t nd = 0;
  for (size_t p = 1; p <= 17; p++) { /* the fewest significant digits that round-trip */
    nd = p < len ? p : len;
    memcpy(digits, all, nd);
    int e = exp;
    if (p < len) { /* round half to even on the exact remainder */
      bool up = all[p] > '5';
      if (all[p] == '5') {
        bool rest = false;
        for (size_t i = p + 1; i < len; i++) rest |= all[i] != '0';
        up = rest || ((digits[p - 1] - '0') & 1);
      }
      size_t i = nd;
      while (up && i > 0) {
        if (digits[i - 1] == '9') digits[--i] = '0';
        else {
          digits[i - 1]++;
          up = false;
        }
      }
      if (up) { /* 99.. rounded to 100..: one more digit before the point */
        memmove(digits + 1, digits, nd - 1);
        digits[0] = '1';
        e++;
      }
    }
    sb t = {0};
    sb_putn(&t, digits, nd);
    sb_putn(&t, "e", 1);
    put_i64(&t, (int64_t)e - (int64_t)nd + 1);
    double back = strtod(t.p, NULL);
    free(t.p);
    if (back == f) {
      exp = e;
      break;
    }
  }
  while (nd > 1 && digits[nd - 1] == '0') nd--; /* trailing zeros are not significant */
  int point = exp + 1;                          /* digits before the decimal point */
  if (point <= 0) {
    sb_puts(b, "0.");
    for (int i = 0; i < -point; i++) sb_putn(b, "0", 1);
    sb_putn(b, digits, nd);
  } else if ((size_t)point >= nd) {
    sb_putn(b, digits, nd);
    for (size_t i = nd; i < (size_t)point; i++) sb_putn(b, "0", 1);
  } else {
    sb_putn(b, digits, point);
    sb_putn(b, ".", 1);
    sb_putn(b, digits + point, nd - point);
  }
}

static void put_value(sb *b, const cl_value *v) {
  switch (v->tag) {
  case CACHELET_POLICY_TYPES_VALUE_NULL: sb_puts(b, "null"); break;
  case CACHELET_POLICY_TYPES_VALUE_BOOLEAN: sb_puts(b, v->val.boolean ? "true" : "false"); break;
  case CACHELET_POLICY_TYPES_VALUE_INTEGER:
    put_i64(b, v->val.integer);
    break;
  case CACHELET_POLICY_TYPES_VALUE_FLOAT: put_float(b, v->val.float_); break;
  default: { /* text and json: `%` as `%25`, `:` as `%3A`, the rest as is */
    const char *t = (const char *)v->val.text.ptr;
    size_t from = 0, n = v->val.text.len;
    for (size_t i = 0; i < n; i++) {
      if (t[i] != '%' && t[i] != ':') continue;
      sb_putn(b, t + from, i - from);
      sb_puts(b, t[i] == '%' ? "%25" : "%3A");
      from = i + 1;
    }
    sb_putn(b, t + from, n - from);
  }
  }
}

static cl_value copy_value(const cl_value *v) {
  cl_value c = *v;
  if (v->tag == CACHELET_POLICY_TYPES_VALUE_TEXT || v->tag == CACHELET_POLICY_TYPES_VALUE_JSON)
    c.val.text = dup_n(v->val.text.ptr, v->val.text.len);
  return c;
}

/* The value of a constant, malloc'd: text and JSON from their NUL-terminated `text`. */
static cl_value const_value(const cl_const *k) {
  if (k->value.tag != CACHELET_POLICY_TYPES_VALUE_TEXT &&
      k->value.tag != CACHELET_POLICY_TYPES_VALUE_JSON)
    return k->value;
  cl_value v = k->value;
  v.val.text = cl_strdup(k->text ? k->text : "");
  return v;
}

static const char *kind_name(const cl_value *v) {
  switch (v->tag) {
  case CACHELET_POLICY_TYPES_VALUE_NULL: return "null";
  case CACHELET_POLICY_TYPES_VALUE_BOOLEAN: return "boolean";
  case CACHELET_POLICY_TYPES_VALUE_INTEGER: return "integer";
  case CACHELET_POLICY_TYPES_VALUE_FLOAT: return "float";
  case CACHELET_POLICY_TYPES_VALUE_TEXT: return "text";
  default: return "json";
  }
}

/* The argument `name` of kind `tag` (or NULL, `err` set). */
static const cl_value *typed(const cl_args *args, const char *name, uint8_t tag, uint8_t also,
                             const char *want, cl_string *err) {
  const cl_value *v = cl_arg(args, name);
  if (!v) {
    *err = msg("no argument `", name, "`", NULL);
    return NULL;
  }
  if (v->tag != tag && v->tag != also) {
    *err = msg("argument `", name, "` is ", kind_name(v), ", not ", want, NULL);
    return NULL;
  }
  return v;
}

bool cl_arg_int(const cl_args *args, const char *name, int64_t *out, cl_string *err) {
  const cl_value *v = typed(args, name, CACHELET_POLICY_TYPES_VALUE_INTEGER,
                            CACHELET_POLICY_TYPES_VALUE_INTEGER, "integer", err);
  if (v) *out = v->val.integer;
  return v != NULL;
}

bool cl_arg_float(const cl_args *args, const char *name, double *out, cl_string *err) {
  const cl_value *v = typed(args, name, CACHELET_POLICY_TYPES_VALUE_FLOAT,
                            CACHELET_POLICY_TYPES_VALUE_INTEGER, "float", err);
  if (v)
    *out = v->tag == CACHELET_POLICY_TYPES_VALUE_FLOAT ? v->val.float_ : (double)v->val.integer;
  return v != NULL;
}

bool cl_arg_bool(const cl_args *args, const char *name, bool *out, cl_string *err) {
  const cl_value *v = typed(args, name, CACHELET_POLICY_TYPES_VALUE_BOOLEAN,
                            CACHELET_POLICY_TYPES_VALUE_BOOLEAN, "boolean", err);
  if (v) *out = v->val.boolean;
  return v != NULL;
}

bool cl_arg_text(const cl_args *args, const char *name, cl_string *out, cl_string *err) {
  const cl_value *v = typed(args, name, CACHELET_POLICY_TYPES_VALUE_TEXT,
                            CACHELET_POLICY_TYPES_VALUE_TEXT, "text", err);
  if (v) *out = v->val.text;
  return v != NULL;
}

cl_ttl cl_seconds(uint32_t seconds) {
  return (cl_ttl){.tag = CACHELET_POLICY_TYPES_TTL_SECONDS, .val.seconds = seconds};
}

cl_recache_call *cl_recache_push(cl_recache_calls *calls, const char *op) {
  calls->ptr = realloc(calls->ptr, (calls->len + 1) * sizeof *calls->ptr);
  if (!calls->ptr) abort();
  cl_recache_call *c = &calls->ptr[calls->len++];
  memset(c, 0, sizeof *c);
  c->op = cl_strdup(op);
  return c;
}

void cl_recache_arg(cl_recache_call *call, const char *name, const cl_value *value) {
  call->args.ptr = realloc(call->args.ptr, (call->args.len + 1) * sizeof *call->args.ptr);
  if (!call->args.ptr) abort();
  call->args.ptr[call->args.len].f0 = cl_strdup(name);
  call->args.ptr[call->args.len].f1 = copy_value(value);
  call->args.len++;
}

/* `v` in decimal, in `buf`. */
static const char *utoa(uint64_t v, char buf[24]) {
  char *p = buf + 23;
  *p = 0;
  do *--p = (char)('0' + v % 10); while ((v /= 10) != 0);
  return p;
}

/* ---- templates ------------------------------------------------------------------------- */

static bool is_param_char(char c) {
  return c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static bool is_param_name(const char *s) {
  if (!*s) return false;
  for (; *s; s++)
    if (!is_param_char(*s)) return false;
  return true;
}

/* Walks template `t`: literal text goes to `out` (when given); each placeholder is rendered
 * from `args` (when given) or added to `params` (when given). False with `err` set on a
 * malformed template, two placeholders without a `:` between them (when `separated`: keys and
 * tags, not routes) or a placeholder without an argument: the first problem in reading order. */
static bool walk(const char *t, bool separated, const cl_args *args, sb *out, cl_strings *params,
                 cl_string *err) {
  char num[24];
  char last[128] = {0}; /* the previous placeholder, empty before the first */
  bool colon = false;   /* whether a `:` came since */
  for (size_t i = 0; t[i]; i++) {
    char c = t[i];
    if (c == ':') colon = true;
    if ((c == '{' || c == '}') && t[i + 1] == c) {
      if (out) sb_putn(out, &c, 1);
      i++;
    } else if (c == '}') {
      *err = msg("template `", t, "`: unmatched `}` at byte ", utoa(i, num),
                 " (write `}}` for a literal brace)", NULL);
      return false;
    } else if (c == '{') {
      const char *end = strchr(t + i + 1, '}');
      const char *at = utoa(i, num);
      if (!end) {
        *err = msg("template `", t, "`: unclosed `{` at byte ", at,
                   " (write `{{` for a literal brace)", NULL);
        return false;
      }
      const char *name = t + i + 1;
      size_t n = (size_t)(end - name);
      char nm[128];
      size_t nn = n < sizeof nm - 1 ? n : sizeof nm - 1;
      memcpy(nm, name, nn);
      nm[nn] = 0;
      if (n == 0) {
        *err = msg("template `", t, "`: empty placeholder `{}` at byte ", at, NULL);
        return false;
      }
      for (size_t k = 0; k < n; k++)
        if (!is_param_char(name[k])) {
          *err = msg("template `", t, "`: invalid placeholder `{", nm,
                     "}`: a name has only ASCII letters, digits and `_`", NULL);
          return false;
        }
      if (separated && last[0] && !colon) {
        *err = msg("template `", t, "`: placeholders `{", last, "}` and `{", nm,
                   "}` have no `:` between them (distinct arguments could render to the same text)",
                   NULL);
        return false;
      }
      memcpy(last, nm, nn + 1);
      colon = false;
      if (params && !contains(params, name, n)) cl_push(params, dup_n((const uint8_t *)name, n));
      if (args) {
        const cl_value *v = cl_arg(args, nm);
        if (!v) {
          *err = msg("no argument `", nm, "` for the placeholder `{", nm, "}` of `", t, "`", NULL);
          return false;
        }
        put_value(out, v);
      }
      i += n + 1;
    } else if (out) {
      sb_putn(out, &c, 1);
    }
  }
  return true;
}

bool cl_render(const cl_args *args, const char *t, cl_string *out, cl_string *err) {
  sb b = {0};
  if (!walk(t, true, args, &b, NULL, err)) {
    free(b.p);
    return false;
  }
  *out = sb_take(&b);
  return true;
}

static bool render_list(const cl_args *args, const char *const *ts, cl_strings *out, cl_string *err) {
  for (size_t i = 0; ts && ts[i]; i++) {
    cl_string s;
    if (!cl_render(args, ts[i], &s, err)) return false;
    cl_push(out, s);
  }
  return true;
}

void cl_rule_init(cl_rule *rule, cl_string key) {
  memset(rule, 0, sizeof *rule);
  rule->key = key;
  rule->ttl = (cl_ttl)CL_TTL_DEFAULT;
  cl_push(&rule->tags, dup_n(key.ptr, key.len));
}

void cl_rule_tags(cl_rule *rule, const char *const *tags) {
  cache_policy_list_string_free(&rule->tags);
  memset(&rule->tags, 0, sizeof rule->tags);
  for (size_t i = 0; tags && tags[i]; i++) cl_push(&rule->tags, cl_strdup(tags[i]));
}

/* ---- checking the table ---------------------------------------------------------------- */

static size_t n_ops(void) {
  size_t n = 0;
  while (CL_OPS[n].name) n++;
  return n;
}

static const cl_op *find(const char *name, size_t n) {
  for (const cl_op *op = CL_OPS; op->name; op++)
    if (strlen(op->name) == n && memcmp(op->name, name, n) == 0) return op;
  return NULL;
}

/* An op's templates once its resource is spelled out: the key, the tags of a read (its entity
 * tag included), the tags a write invalidates (its entity tag first). */
typedef struct {
  const char *key;
  const char *const *tags;
  const char *const *invalidate;
  const char *mistake; /* a resource declaration that cannot be served */
} resolved;

static resolved *resolved_ops; /* by position in CL_OPS, built once */

/* `text` with `{` and `}` doubled: literal text in a template. */
static void put_literal(sb *b, const char *text) {
  for (; *text; text++) {
    sb_putn(b, text, 1);
    if (*text == '{' || *text == '}') sb_putn(b, text, 1);
  }
}

static char *owned(sb *b) {
  cl_string s = sb_take(b);
  return (char *)s.ptr;
}

/* A NULL-terminated copy of `list` (NULL stays NULL) with `extra` added when it is missing,
 * first (`front`) or last. */
static const char *const *with_tag(const char *const *list, const char *extra, bool front) {
  size_t n = count(list);
  const char **out = calloc(n + 2, sizeof *out);
  size_t k = 0;
  bool there = false;
  for (size_t i = 0; i < n; i++) there |= strcmp(list[i], extra) == 0;
  if (front && !there) out[k++] = extra;
  for (size_t i = 0; i < n; i++)
    if (!(front && strcmp(list[i], extra) == 0)) out[k++] = list[i];
  if (!front && !there) out[k++] = extra;
  return out;
}

static void resolve(const cl_op *op, resolved *r) {
  r->key = op->key;
  r->tags = op->tags;
  r->invalidate = op->invalidate;
  const cl_resource *res = op->resource;
  if (!res) {
    if (op->kind == CACHELET_POLICY_TYPES_OP_KIND_READ && op->suffix && !op->read_fn)
      r->mistake = "suffix is only for a resource read";
    return;
  }
  if (!res->id_param || !is_param_name(res->id_param)) {
    sb b = {0};
    sb_puts(&b, "resource id `");
    sb_puts(&b, res->id_param ? res->id_param : "");
    sb_puts(&b, "` is not a parameter name (ASCII letters, digits, `_`)");
    r->mistake = owned(&b);
    return;
  }
  sb e = {0};
  put_literal(&e, res->entity ? res->entity : "");
  sb_puts(&e, ":{");
  sb_puts(&e, res->id_param);
  sb_puts(&e, "}");
  const char *entity = owned(&e);
  if (op->kind == CACHELET_POLICY_TYPES_OP_KIND_WRITE) {
    r->invalidate = with_tag(op->invalidate, entity, true);
    return;
  }
  if (op->read_fn) return; /* refused below: a computed rule with a resource */
  if (!op->key && op->suffix) {
    sb k = {0};
    put_literal(&k, res->entity ? res->entity : "");
    sb_puts(&k, ":");
    put_literal(&k, op->suffix);
    sb_puts(&k, ":{");
    sb_puts(&k, res->id_param);
    sb_puts(&k, "}");
    r->key = owned(&k);
  } else if (!op->key) {
    r->mistake = "a resource read needs a suffix or a key";
    return;
  }
  if (op->tags && !op->tags[0]) {
    r->mistake = "a resource read always carries its entity tag; it cannot be untagged";
    return;
  }
  r->tags = with_tag(op->tags, entity, false);
}

static const resolved *resolved_of(const cl_op *op) {
  if (!resolved_ops) {
    resolved_ops = calloc(n_ops() + 1, sizeof *resolved_ops);
    for (size_t i = 0; CL_OPS[i].name; i++) resolve(&CL_OPS[i], &resolved_ops[i]);
  }
  return &resolved_ops[op - CL_OPS];
}

/* The tags of a static read: declared, or its key. */
static const char *const *read_tags(const cl_op *op, const char *const *key_only) {
  const resolved *r = resolved_of(op);
  return r->tags ? r->tags : key_only;
}

static bool is_dynamic(const cl_op *op) {
  return op->read_fn || op->tags_fn || op->recache_fn || op->write_fn;
}

/* What a computed rule is declared together with, or NULL (the order of every SDK). */
static const char *combined(const cl_op *op) {
  if (op->kind == CACHELET_POLICY_TYPES_OP_KIND_READ) {
    if (!op->read_fn) return NULL;
    if (op->key) return "key";
    if (op->tags) return "tags";
    if (op->suffix) return "suffix";
    if (op->has_early_ttl) return "early_ttl";
    if (op->refresh) return "refresh";
    if (op->lock) return "lock";
    if (op->resource) return "a resource";
    return NULL;
  }
  if (!op->write_fn) return NULL;
  if (op->invalidate) return "invalidate";
  if (op->tags_fn) return "tags_fn";
  if (op->recache) return "recache";
  if (op->recache_fn) return "recache_fn";
  if (op->recache_max_concurrency) return "recache_max_concurrency";
  if (op->resource) return "a resource";
  return NULL;
}

/* The parameters an op reports (`is_some`: declared); false with `err` set when the
 * declaration is wrong. */
static bool check(const cl_op *op, cache_policy_option_list_string_t *params, cl_string *err) {
  cl_strings used = {0};
  bool ok = true;
  const resolved *r = resolved_of(op);
  size_t twins = 0; /* the name first, as in every SDK */
  for (const cl_op *o = CL_OPS; o->name; o++) twins += strcmp(o->name, op->name) == 0;
  if (twins > 1) {
    *err = cl_strdup("declared more than once");
    ok = false;
  } else if (!op->name[0]) {
    *err = cl_strdup("an op name must not be empty");
    ok = false;
  } else if (combined(op)) {
    *err = msg("a computed rule cannot also declare ", combined(op), NULL);
    ok = false;
  } else if (r->mistake) {
    *err = cl_strdup(r->mistake);
    ok = false;
  } else if (op->kind == CACHELET_POLICY_TYPES_OP_KIND_READ && !op->read_fn) {
    if (!r->key) {
      *err = cl_strdup("a read needs a key");
      ok = false;
    } else {
      ok = walk(r->key, true, NULL, NULL, &used, err);
      const char *const *tags = r->tags;
      for (size_t i = 0; ok && tags && tags[i]; i++)
        ok = walk(tags[i], true, NULL, NULL, &used, err);
      if (ok && op->has_early_ttl && op->ttl.tag == CACHELET_POLICY_TYPES_TTL_SECONDS &&
          op->early_ttl >= op->ttl.val.seconds) {
        char a[24], b[24];
        *err = msg("early_ttl (", utoa(op->early_ttl, a), " s) must be less than the ttl (",
                   utoa(op->ttl.val.seconds, b), " s)", NULL);
        ok = false;
      }
    }
  } else if (op->kind == CACHELET_POLICY_TYPES_OP_KIND_WRITE && !op->write_fn) {
    if (!count(r->invalidate) && !op->tags_fn && !op->recache_fn &&
        !(op->recache && op->recache[0].op)) {
      *err = cl_strdup("a write needs tags to invalidate or reads to recache");
      ok = false;
    }
    for (size_t i = 0; ok && r->invalidate && r->invalidate[i]; i++)
      ok = walk(r->invalidate[i], true, NULL, NULL, &used, err);
    for (const cl_recache *rc = op->recache; ok && rc && rc->op; rc++) {
      /* No target: a read of another policy loaded beside this one. */
      const cl_op *target = find(rc->op, strlen(rc->op));
      if (target && target->kind != CACHELET_POLICY_TYPES_OP_KIND_READ) {
        *err = msg("recache of `", rc->op, "`, which is a write", NULL);
        ok = false;
      }
      const char *bad = NULL;
      for (size_t i = 0; ok && !bad && rc->include && rc->include[i]; i++)
        if (!is_param_name(rc->include[i])) bad = rc->include[i];
      for (size_t i = 0; ok && !bad && rc->rename && rc->rename[i]; i++)
        if (!is_param_name(rc->rename[i])) bad = rc->rename[i];
      for (size_t i = 0; ok && !bad && rc->extra && rc->extra[i].name; i++)
        if (!is_param_name(rc->extra[i].name)) bad = rc->extra[i].name;
      if (bad) {
        *err = msg("recache of `", rc->op, "`: `", bad, "` is not a parameter name", NULL);
        ok = false;
      }
      for (size_t i = 0; ok && rc->include && rc->include[i]; i++)
        if (!contains(&used, rc->include[i], strlen(rc->include[i])))
          cl_push(&used, cl_strdup(rc->include[i]));
      for (size_t i = 0; ok && rc->rename && rc->rename[i]; i += 2)
        if (!contains(&used, rc->rename[i], strlen(rc->rename[i])))
          cl_push(&used, cl_strdup(rc->rename[i]));
    }
  }
  if (ok && op->route) {
    cl_string ignored = {0};
    if (!walk(op->route, false, NULL, NULL, &used, &ignored)) cache_policy_string_free(&ignored);
  }
  for (size_t k = 0; ok && op->params && op->params[k]; k++)
    if (!is_param_name(op->params[k])) {
      *err = msg("`", op->params[k], "` is not a parameter name", NULL);
      ok = false;
    }
  for (size_t i = 0; ok && op->params && i < used.len; i++) {
    bool found = false;
    for (size_t k = 0; op->params[k]; k++) found |= eq(&used.ptr[i], op->params[k]);
    if (!found) {
      sb b = {0};
      sb_puts(&b, "uses `");
      sb_putn(&b, (const char *)used.ptr[i].ptr, used.ptr[i].len);
      sb_puts(&b, "`, which is not among its params (");
      for (size_t k = 0; op->params[k]; k++) {
        if (k) sb_puts(&b, ", ");
        sb_puts(&b, op->params[k]);
      }
      sb_puts(&b, ")");
      *err = sb_take(&b);
      ok = false;
    }
  }
  cache_policy_list_string_free(&used);
  memset(params, 0, sizeof *params);
  if (ok && op->params) {
    params->is_some = true;
    for (size_t k = 0; op->params[k]; k++) cl_push(&params->val, cl_strdup(op->params[k]));
  }
  return ok;
}

/* ---- the export ------------------------------------------------------------------------ */

static void copy_list(cl_strings *out, const char *const *list) {
  memset(out, 0, sizeof *out);
  for (size_t i = 0; list && list[i]; i++) cl_push(out, cl_strdup(list[i]));
}

/* The ops as `describe` lists them (the first op of each name), built on the first call of
   any export: the host calls op `i` of this list, on instances it never asked to describe. */
static const cl_op **listed;
static size_t n_listed;

static void list_ops(void) {
  if (listed) return;
  listed = calloc(n_ops() + 1, sizeof *listed);
  for (const cl_op *op = CL_OPS; op->name; op++)
    if (find(op->name, strlen(op->name)) == op) listed[n_listed++] = op;
}

/* Every declaration error, as `{op}: {mistake}` joined by `; `; false when there is none. */
static bool mistakes(cl_string *err) {
  sb b = {0};
  for (size_t i = 0; i < n_listed; i++) {
    cache_policy_option_list_string_t params;
    cl_string problem = {0};
    bool ok = check(listed[i], &params, &problem);
    cache_policy_option_list_string_free(&params);
    if (ok) continue;
    if (b.len) sb_puts(&b, "; ");
    sb_puts(&b, listed[i]->name);
    sb_puts(&b, ": ");
    sb_putn(&b, (const char *)problem.ptr, problem.len);
    cache_policy_string_free(&problem);
  }
  if (!b.len) return false;
  *err = sb_take(&b);
  return true;
}

bool exports_cachelet_policy_policy_describe(cachelet_policy_types_policy_info_t *ret,
                                             cl_string *err) {
  list_ops();
  memset(ret, 0, sizeof *ret);
  if (mistakes(err)) return false;
  ret->name = cl_strdup(CL_NAME);
  ret->version = cl_strdup(CL_VERSION);
  ret->ops.len = 0;
  ret->ops.ptr = calloc(n_listed ? n_listed : 1, sizeof(cachelet_policy_types_op_info_t));
  for (size_t i = 0; i < n_listed; i++) {
    const cl_op *op = listed[i];
    const resolved *r = resolved_of(op);
    cachelet_policy_types_op_info_t *info = &ret->ops.ptr[ret->ops.len++];
    info->name = cl_strdup(op->name);
    info->kind = op->kind;
    cl_string problem = {0};
    check(op, &info->params, &problem);
    if (op->route) {
      info->route.is_some = true;
      info->route.val = cl_strdup(op->route);
    }
    if (is_dynamic(op)) continue;
    if (op->kind == CACHELET_POLICY_TYPES_OP_KIND_READ) {
      cl_rule *t = &info->read_template.val;
      info->read_template.is_some = true;
      t->key = cl_strdup(r->key);
      t->ttl = op->ttl;
      copy_list(&t->tags, read_tags(op, CL_LIST(r->key)));
      t->early_ttl.is_some = op->has_early_ttl;
      t->early_ttl.val = op->early_ttl;
      t->refresh = op->refresh;
      t->lock = op->lock;
    } else {
      cachelet_policy_types_write_template_t *t = &info->write_template.val;
      info->write_template.is_some = true;
      copy_list(&t->invalidate, r->invalidate);
      size_t nr = 0;
      while (op->recache && op->recache[nr].op) nr++;
      t->recache.len = nr;
      t->recache.ptr = calloc(nr ? nr : 1, sizeof *t->recache.ptr);
      for (size_t k = 0; k < nr; k++) {
        const cl_recache *rc = &op->recache[k];
        cachelet_policy_types_recache_template_t *rt = &t->recache.ptr[k];
        rt->op = cl_strdup(rc->op);
        rt->include.is_some = rc->include != NULL;
        copy_list(&rt->include.val, rc->include);
        size_t np = count(rc->rename) / 2;
        rt->rename.len = np;
        rt->rename.ptr = calloc(np ? np : 1, sizeof *rt->rename.ptr);
        for (size_t j = 0; j < np; j++) {
          rt->rename.ptr[j].f0 = cl_strdup(rc->rename[2 * j]);
          rt->rename.ptr[j].f1 = cl_strdup(rc->rename[2 * j + 1]);
        }
        size_t ne = 0;
        while (rc->extra && rc->extra[ne].name) ne++;
        rt->extra.len = ne;
        rt->extra.ptr = calloc(ne ? ne : 1, sizeof *rt->extra.ptr);
        for (size_t j = 0; j < ne; j++) {
          rt->extra.ptr[j].f0 = cl_strdup(rc->extra[j].name);
          rt->extra.ptr[j].f1 = const_value(&rc->extra[j]);
        }
      }
      t->recache_concurrency.is_some = op->recache_max_concurrency != 0;
      t->recache_concurrency.val = op->recache_max_concurrency;
    }
  }
  return true;
}

/* The op at `index`, checked; NULL with `err` set ("{op}: ...") otherwise. */
static const cl_op *lookup(uint32_t index, cachelet_policy_types_op_kind_t kind, cl_string *err) {
  sb b = {0};
  list_ops();
  if (index >= n_listed) {
    char i[24], n[24];
    *err = msg("no operation #", utoa(index, i), " (this policy declares ", utoa(n_listed, n), ")",
               NULL);
    return NULL;
  }
  const cl_op *op = listed[index];
  cache_policy_option_list_string_t params;
  cl_string problem = {0};
  bool ok = check(op, &params, &problem);
  cache_policy_option_list_string_free(&params);
  if (ok && op->kind != kind) {
    problem = cl_strdup(kind == CACHELET_POLICY_TYPES_OP_KIND_READ ? "a write, not a read"
                                                                  : "a read, not a write");
    ok = false;
  }
  if (ok) return op;
  sb_puts(&b, op->name);
  sb_puts(&b, ": ");
  sb_putn(&b, (const char *)problem.ptr, problem.len);
  cache_policy_string_free(&problem);
  *err = sb_take(&b);
  return NULL;
}

/* Prefixes `err` with "{op}: ". */
static void blame(const cl_op *op, cl_string *err) {
  sb b = {0};
  sb_puts(&b, op->name);
  sb_puts(&b, ": ");
  sb_putn(&b, (const char *)err->ptr, err->len);
  cache_policy_string_free(err);
  *err = sb_take(&b);
}

bool exports_cachelet_policy_policy_read(uint32_t index, cl_args *args,
                                         exports_cachelet_policy_policy_option_read_rule_t *ret,
                                         cl_string *err) {
  bool ok = false;
  memset(ret, 0, sizeof *ret);
  const cl_op *op = lookup(index, CACHELET_POLICY_TYPES_OP_KIND_READ, err);
  if (op && op->read_fn) {
    *err = (cl_string){0};
    ret->is_some = op->read_fn(args, &ret->val, err);
    ok = ret->is_some || err->ptr == NULL;
    if (!ok) {
      cachelet_policy_types_read_rule_free(&ret->val);
      blame(op, err);
    }
  } else if (op) {
    const resolved *rs = resolved_of(op);
    cl_rule *r = &ret->val;
    r->ttl = op->ttl;
    r->early_ttl.is_some = op->has_early_ttl;
    r->early_ttl.val = op->early_ttl;
    r->refresh = op->refresh;
    r->lock = op->lock;
    ok = cl_render(args, rs->key, &r->key, err) &&
         render_list(args, read_tags(op, CL_LIST(rs->key)), &r->tags, err);
    if (ok) ret->is_some = true;
    else {
      cachelet_policy_types_read_rule_free(r);
      blame(op, err);
    }
  }
  cachelet_policy_types_args_free(args);
  return ok;
}

/* The recache call of `r` for a write with `args`: false (nothing appended) when the call
 * lacks an included argument, which skips it, as the host skips it. */
static bool apply(const cl_recache *r, const cl_args *args, cl_recache_calls *calls) {
  for (size_t i = 0; r->include && r->include[i]; i++)
    if (!cl_arg(args, r->include[i])) return false;
  cl_recache_call *out = cl_recache_push(calls, r->op);
  /* set(): replaces the value of an argument of the same name, else appends. */
#define SET(nm, nlen, val)                                                                   \
  do {                                                                                     \
    size_t k = 0;                                                                          \
    while (k < out->args.len && !(out->args.ptr[k].f0.len == (nlen) &&                     \
                                  memcmp(out->args.ptr[k].f0.ptr, (nm), (nlen)) == 0))     \
      k++;                                                                                 \
    if (k == out->args.len) {                                                              \
      out->args.ptr = realloc(out->args.ptr, (k + 1) * sizeof *out->args.ptr);             \
      if (!out->args.ptr) abort();                                                         \
      out->args.len++;                                                                     \
      out->args.ptr[k].f0 = dup_n((const uint8_t *)(nm), (nlen));                          \
    } else {                                                                               \
      cachelet_policy_types_value_free(&out->args.ptr[k].f1);                              \
    }                                                                                      \
    out->args.ptr[k].f1 = (val);                                                           \
  } while (0)
  /* 1. include (or every argument), 2. rename, 3. extra. */
  cl_args passed = {0};
  passed.ptr = calloc(args->len + 1, sizeof *passed.ptr);
  if (r->include) {
    for (size_t i = 0; r->include[i]; i++)
      if (!cl_arg(&passed, r->include[i]))
        passed.ptr[passed.len++] = (cachelet_policy_types_tuple2_string_value_t){
            {(uint8_t *)r->include[i], strlen(r->include[i])}, *cl_arg(args, r->include[i])};
  } else {
    for (size_t i = 0; i < args->len; i++) passed.ptr[passed.len++] = args->ptr[i];
  }
  for (size_t i = 0; i < passed.len; i++) {
    const cl_string *n = &passed.ptr[i].f0;
    const char *to = NULL;
    for (size_t k = 0; r->rename && r->rename[k]; k += 2)
      if (eq(n, r->rename[k])) {
        to = r->rename[k + 1];
        break;
      }
    if (to) SET(to, strlen(to), copy_value(&passed.ptr[i].f1));
    else SET(n->ptr, n->len, copy_value(&passed.ptr[i].f1));
  }
  for (size_t i = 0; r->extra && r->extra[i].name; i++)
    SET(r->extra[i].name, strlen(r->extra[i].name), const_value(&r->extra[i]));
#undef SET
  free(passed.ptr);
  return true;
}

bool exports_cachelet_policy_policy_write(uint32_t index, cl_args *args, cl_value *result,
                                          exports_cachelet_policy_policy_option_write_rule_t *ret,
                                          cl_string *err) {
  bool ok = false;
  memset(ret, 0, sizeof *ret);
  const cl_op *op = lookup(index, CACHELET_POLICY_TYPES_OP_KIND_WRITE, err);
  cl_write_rule *w = &ret->val;
  if (op && op->write_fn) {
    *err = (cl_string){0};
    ret->is_some = op->write_fn(args, result, w, err);
    ok = ret->is_some || err->ptr == NULL;
    if (!ok) {
      cachelet_policy_types_write_rule_free(w);
      blame(op, err);
    }
  } else if (op) {
    ok = render_list(args, resolved_of(op)->invalidate, &w->invalidate, err);
    for (const cl_recache *r = op->recache; ok && r && r->op; r++) apply(r, args, &w->recache);
    w->recache_concurrency.is_some = op->recache_max_concurrency != 0;
    w->recache_concurrency.val = op->recache_max_concurrency;
    if (ok && op->tags_fn) {
      *err = (cl_string){0};
      ok = op->tags_fn(args, result, &w->invalidate, err);
    }
    if (ok && op->recache_fn) {
      *err = (cl_string){0};
      ok = op->recache_fn(args, result, &w->recache, err);
    }
    if (ok) ret->is_some = true;
    else {
      cachelet_policy_types_write_rule_free(w);
      blame(op, err);
    }
  }
  cachelet_policy_types_args_free(args);
  if (result) cachelet_policy_types_value_free(result);
  return ok;
}
