// Write cachelet cache policies in JavaScript (componentize-js).
//
// A policy declares its operations in the terms of Python's `svc_infra.cache` (`cache_read`,
// `cache_write`, `recache`, `resource`), then exports them as the world's `policy` interface:
//
//   import { CachePolicy, recache, resource, TTL } from './cachelet-policy.js';
//
//   const policy = new CachePolicy('users', '0.1.0');
//   policy.read('get_user', { key: 'user:{user_id}', ttl: 300, params: ['user_id'] });
//   policy.write('update_user', {
//     tags: ['user:{user_id}'],
//     params: ['user_id'],
//     recache: [recache('get_user', { include: ['user_id'] })],
//   });
//   policy.readRule('get_search', { params: ['q'] }, (args) =>       // computed per call
//     args.get('q') === '' ? null
//       : CachePolicy.rule(args.render('search:{q}'), { tags: ['search'], ttl: 120 }));
//
//   export const policy_ = ...;   // see below
//
// The entry module handed to componentize-js must export the world's `policy` interface as an
// object named `policy`:  `export const policy = declared.exports();`.
//
// Operations declared with templates only are *static*: `describe()` reports their templates and
// the host renders them itself, without calling into JavaScript. Operations with a function are
// *dynamic*: the host calls the component on every call. `read`/`write` also answer for static
// operations, exactly as the host renders them (the rules of the WIT `read-rule` comment).
//
// Keys and tags render by the rules of the WIT `read-rule` comment: text and JSON arguments with
// `%` written `%25` and `:` written `%3A`, and two placeholders always with a `:` between them, so
// that distinct arguments never render to one key.
//
// Declaration mistakes (an unbalanced brace, placeholders without a `:` between them, a
// placeholder not among the declared `params`, a recache of a write, an `earlyTtl` not below the
// TTL, a TTL out of range, a string where a list belongs, an unknown option, a computed rule
// combined with a declared one, an op declared twice) do not throw: `describe` returns them all,
// each naming its op, and the host refuses to load the policy; `errors()` lists them. Declare
// `params` on every op: without them a misspelled placeholder is found only when a call fails,
// and `cachelet check` warns.
//
// Test a policy in Node, without building a component, with `Compiled` (this file imports
// nothing): `new Compiled(policy).read('get_user', { user_id: 42n }).key === 'user:42'`.
// Types for editors: cachelet-policy.d.ts, beside this file.
//
// WIT values in JavaScript (componentize-js): a `value` is `{ tag: 'integer', val: 42n }` (s64 is
// a BigInt), an enum is its name as a string, an `option` is the value or `undefined`, a record
// is an object with camelCase fields.

/** TTL buckets the host resolves from its settings (30 s, 300 s and 3600 s by default). */
export const TTL = Object.freeze({ SHORT: 'short', DEFAULT: 'default', LONG: 'long' });

const show = (v) => (typeof v === 'string' ? `'${v}'` : typeof v === 'bigint' ? `${v}n` : String(v));

function ttlOf(ttl) {
  if (ttl === TTL.SHORT || ttl === TTL.DEFAULT || ttl === TTL.LONG) {
    return { tag: 'bucket', val: ttl };
  }
  if (Number.isInteger(ttl) && ttl >= 0 && ttl < 2 ** 32) return { tag: 'seconds', val: ttl };
  throw new Error(`ttl ${show(ttl)} is neither seconds (0 .. 2^32-1) nor a TTL bucket`);
}

function earlyTtlOf(early, ttl) {
  if (early === undefined) return undefined;
  if (!Number.isInteger(early) || early < 0 || early >= 2 ** 32) {
    throw new Error(`early_ttl ${show(early)} is not seconds (0 .. 2^32-1)`);
  }
  if (ttl.tag === 'seconds' && early >= ttl.val) {
    throw new Error(`early_ttl (${early} s) must be less than the ttl (${ttl.val} s)`);
  }
  return early;
}

// A list of strings, refusing a lone string (it would be taken letter by letter).
function strings(value, what) {
  if (typeof value === 'string') {
    throw new Error(`${what} must be a list of strings, not the string ${show(value)}`);
  }
  if (!Array.isArray(value)) throw new Error(`${what} must be a list of strings, not ${show(value)}`);
  const bad = value.find((v) => typeof v !== 'string');
  if (bad !== undefined) throw new Error(`${what} must be a list of strings, not a list holding ${show(bad)}`);
  return value;
}

// Refuses option names the form does not take; `computed`: those of the declared form.
function refuseUnknown(options, known, computed = []) {
  if (options === null || typeof options !== 'object' || Array.isArray(options)) {
    throw new Error(`options must be an object, not ${show(options)}`);
  }
  for (const name of Object.keys(options)) {
    if (known.includes(name)) continue;
    if (computed.includes(name)) throw new Error(`a computed rule cannot also declare ${name}`);
    throw new Error(`unknown option \`${name}\` (options: ${known.join(', ')})`);
  }
}

function fn(f, what) {
  if (f !== undefined && typeof f !== 'function') throw new Error(`${what} must be a function, not ${show(f)}`);
  return f;
}

// ---- values -------------------------------------------------------------------------------

/** A JavaScript value as a WIT `value`: null, boolean, integer (a BigInt or an integral
 * number), float, string; anything else as JSON. */
export function toValue(v) {
  if (v === null || v === undefined) return { tag: 'null' };
  if (typeof v === 'boolean') return { tag: 'boolean', val: v };
  if (typeof v === 'bigint') return { tag: 'integer', val: v };
  if (typeof v === 'number') {
    return Number.isSafeInteger(v) ? { tag: 'integer', val: BigInt(v) } : { tag: 'float', val: v };
  }
  if (typeof v === 'string') return { tag: 'text', val: v };
  return { tag: 'json', val: JSON.stringify(v) };
}

/** A WIT `value` as a JavaScript value (integers as BigInt, JSON parsed). */
export function fromValue(v) {
  switch (v.tag) {
    case 'null': return null;
    case 'json': return JSON.parse(v.val);
    default: return v.val;
  }
}

// The shortest decimal that reads back as the same number, never with an exponent, and without
// a fractional part when it has none: what the host (Rust's Display) writes.
function renderFloat(f) {
  if (Number.isNaN(f)) return 'NaN';
  if (f === Infinity) return 'inf';
  if (f === -Infinity) return '-inf';
  if (Object.is(f, -0)) return '-0';
  const text = String(f); // shortest round-trip digits, maybe with an exponent
  const m = /^(-?)(\d+)(?:\.(\d+))?e([+-]\d+)$/.exec(text);
  if (!m) return text;
  const [, sign, int, frac = '', exp] = m;
  const digits = int + frac;
  const point = int.length + Number(exp); // where the decimal point goes in `digits`
  let out;
  if (point <= 0) out = '0.' + '0'.repeat(-point) + digits;
  else if (point >= digits.length) out = digits + '0'.repeat(point - digits.length);
  else out = digits.slice(0, point) + '.' + digits.slice(point);
  if (out.includes('.')) out = out.replace(/0+$/, '').replace(/\.$/, '');
  return sign + out;
}

// `%` first, so that the `%` of `%3A` is not escaped again.
const escapeText = (text) =>
  /[%:]/.test(text) ? text.replace(/%/g, '%25').replace(/:/g, '%3A') : text;

/** How a template renders a WIT `value`: text and JSON with `%` as `%25` and `:` as `%3A`. */
export function renderValue(v) {
  switch (v.tag) {
    case 'null': return 'null';
    case 'boolean': return v.val ? 'true' : 'false';
    case 'integer': return v.val.toString();
    case 'float': return renderFloat(v.val);
    default: return escapeText(v.val); // text and json
  }
}

// ---- templates ----------------------------------------------------------------------------

const PARAM = /^[A-Za-z0-9_]+$/;
const escape = (text) => text.replace(/[{}]/g, (c) => c + c);
const byteAt = (text, i) => new TextEncoder().encode(text.slice(0, i)).length;

class Missing extends Error {}

// A key or tag template: literal text and `{param}` placeholders, with a `:` in the literal text
// between any two placeholders (`separated = false`: the braces only, for a route).
class Template {
  constructor(text, separated = true) {
    this.text = text;
    this.parts = []; // string: literal; { param }: placeholder
    let literal = '';
    let last; // the previous placeholder
    let colon = false; // whether a `:` came since
    for (let i = 0; i < text.length; i++) {
      const c = text[i];
      if (c === ':') colon = true;
      if ((c === '{' || c === '}') && text[i + 1] === c) {
        literal += c;
        i++;
      } else if (c === '}') {
        throw new Error(`template \`${text}\`: unmatched \`}\` at byte ${byteAt(text, i)} (write \`}}\` for a literal brace)`);
      } else if (c === '{') {
        const end = text.indexOf('}', i + 1);
        if (end < 0) {
          throw new Error(`template \`${text}\`: unclosed \`{\` at byte ${byteAt(text, i)} (write \`{{\` for a literal brace)`);
        }
        const name = text.slice(i + 1, end);
        if (name === '') {
          throw new Error(`template \`${text}\`: empty placeholder \`{}\` at byte ${byteAt(text, i)}`);
        }
        if (!PARAM.test(name)) {
          throw new Error(`template \`${text}\`: invalid placeholder \`{${name}}\`: a name has only ASCII letters, digits and \`_\``);
        }
        if (separated && last !== undefined && !colon) {
          throw new Error(`template \`${text}\`: placeholders \`{${last}}\` and \`{${name}}\` have no \`:\` between them (distinct arguments could render to the same text)`);
        }
        last = name;
        colon = false;
        if (literal) this.parts.push(literal);
        literal = '';
        this.parts.push({ param: name });
        i = end;
      } else {
        literal += c;
      }
    }
    if (literal) this.parts.push(literal);
  }

  params() {
    return this.parts.filter((p) => typeof p !== 'string').map((p) => p.param);
  }

  render(args) {
    let out = '';
    for (const p of this.parts) {
      if (typeof p === 'string') {
        out += p;
        continue;
      }
      const v = args.value(p.param);
      if (v === undefined) {
        throw new Missing(`no argument \`${p.param}\` for the placeholder \`{${p.param}}\` of \`${this.text}\``);
      }
      out += renderValue(v);
    }
    return out;
  }
}

// Templates rendered by dynamic ops, parsed once (the engine interprets JavaScript: a parse
// per call is measurable).
const PARSED = new Map();

// ---- the arguments of one call ------------------------------------------------------------

/** The named arguments of one call (and, for a write, its result). */
export class Args {
  constructor(pairs, result) {
    this.pairs = pairs;
    this.result = result === undefined ? undefined : fromValue(result);
  }

  /** The WIT value of argument `name`, or undefined. */
  value(name) {
    const pair = this.pairs.find(([n]) => n === name);
    return pair ? pair[1] : undefined;
  }

  has(name) {
    return this.value(name) !== undefined;
  }

  /** The argument as a JavaScript value (integers as BigInt, JSON parsed); throws if absent. */
  get(name) {
    const v = this.value(name);
    if (v === undefined) throw new Error(`no argument \`${name}\``);
    return fromValue(v);
  }

  /** Renders `template` (e.g. `'user:{user_id}'`) with these arguments, as the host does. */
  render(template) {
    let parsed = PARSED.get(template);
    if (!parsed) {
      parsed = new Template(template);
      if (PARSED.size < 1024) PARSED.set(template, parsed);
    }
    return parsed.render(this);
  }
}

// ---- declarations -------------------------------------------------------------------------

/** `resource('user', 'user_id')`: reads keyed `user:{suffix}:{user_id}`, all tagged
 * `user:{user_id}`; a resource write invalidates that tag. */
export function resource(entity, idParam) {
  return {
    entity,
    idParam,
    tag() {
      if (!PARAM.test(idParam)) {
        throw new Error(`resource id \`${idParam}\` is not a parameter name (ASCII letters, digits, \`_\`)`);
      }
      return `${escape(entity)}:{${idParam}}`;
    },
  };
}

function setArg(pairs, name, value) {
  const slot = pairs.find(([n]) => n === name);
  if (slot) slot[1] = value;
  else pairs.push([name, value]);
}

const RECACHE_OPTIONS = ['include', 'rename', 'extra'];

/** A read to warm again after a write: `op` called with the write's arguments (all of them, or
 * those in `include`), renamed by `rename` ({ writeName: readName }), plus `extra` constants. A
 * write whose call lacks an included argument skips this recache. */
export function recache(op, options = {}) {
  let mistake;
  let { include, rename = {}, extra = {} } = options ?? {};
  try {
    refuseUnknown(options, RECACHE_OPTIONS);
    if (include !== undefined) include = strings(include, 'include');
    if (rename === null || typeof rename !== 'object' || Array.isArray(rename)) {
      throw new Error('rename must be an object { nameInTheWrite: nameInTheRead }');
    }
    if (extra === null || typeof extra !== 'object' || Array.isArray(extra)) {
      throw new Error('extra must be an object { name: constant }');
    }
  } catch (e) {
    mistake = `recache of \`${op}\`: ${e.message}`;
    include = undefined;
    rename = {};
    extra = {};
  }
  const renames = Object.entries(rename);
  const extras = Object.entries(extra).map(([n, v]) => [n, toValue(v)]);
  return {
    [RECACHE]: true,
    op,
    include,
    renames,
    extras,
    mistake,
    wit() {
      return { op, include, rename: renames, extra: extras };
    },
    apply(args) {
      const passed = [];
      if (include === undefined) {
        for (const [n, v] of args.pairs) setArg(passed, n, v);
      } else {
        for (const name of include) {
          const v = args.value(name);
          if (v === undefined) return undefined; // skipped, as the host skips it
          setArg(passed, name, v);
        }
      }
      const out = [];
      for (const [n, v] of passed) {
        const to = renames.find(([from]) => from === n);
        setArg(out, to ? to[1] : n, v);
      }
      for (const [n, v] of extras) setArg(out, n, v);
      return { op, args: out };
    },
  };
}

const RECACHE = Symbol('recache');

/** One read to warm again, for a computed write rule or `recacheWith`:
 * `recacheCall('get_user', { user_id: 42n })`. */
export function recacheCall(op, args = {}) {
  return { op, args: Object.entries(args).map(([n, v]) => [n, toValue(v)]) };
}

function recaches(value) {
  if (value && value[RECACHE]) throw new Error('recache must be a list of recache(...), not a single one');
  if (!Array.isArray(value)) throw new Error(`recache must be a list of recache(...), not ${show(value)}`);
  for (const r of value) {
    if (!r || !r[RECACHE]) throw new Error(`recache must be a list of recache(...), not a list holding ${show(r)}`);
    if (r.mistake) throw new Error(r.mistake);
  }
  return value;
}

function calls(value) {
  if (!Array.isArray(value)) throw new Error('reads to recache must be a list of recacheCall(...)');
  return value;
}

function collect(params, names) {
  for (const n of names) if (!params.includes(n)) params.push(n);
}

// The declared params, after checking that every name used is one; undefined: undeclared.
function checkParams(declared, used) {
  if (declared === undefined) return undefined;
  strings(declared, 'params');
  const bad = declared.find((p) => !PARAM.test(p));
  if (bad !== undefined) throw new Error(`\`${bad}\` is not a parameter name`);
  const unknown = used.find((u) => !declared.includes(u));
  if (unknown !== undefined) {
    throw new Error(`uses \`${unknown}\`, which is not among its params (${declared.join(', ')})`);
  }
  return [...declared];
}

function routeParams(route) {
  try {
    return route ? new Template(route, false).params() : [];
  } catch {
    return [];
  }
}

/** A policy's declaration: call `read` / `write` (or their function forms) once per operation,
 * at module load. */
export class CachePolicy {
  constructor(name, version = '0.1.0') {
    this.name = name;
    this.version = version;
    this.ops = [];
    this.pending = []; // writes whose recache targets are checked once every op is declared
    this.listed = undefined; // the ops as `describe` lists them, once computed
  }

  /** `@cache_read`: an op rendered from templates. Tags default to the key; a `resource` read
   * is keyed `{entity}:{suffix}:{id}` and always carries the entity tag. */
  read(name, options = {}) {
    const { key, tags, ttl = TTL.DEFAULT, earlyTtl, refresh = false, lock = false,
      resource: res, suffix, params, route } = options ?? {};
    const op = this.#add(name, 'read', route);
    try {
      refuseUnknown(options, READ_OPTIONS);
      const entity = res ? new Template(res.tag()) : undefined;
      let k;
      if (key !== undefined) k = new Template(key);
      else if (res && suffix !== undefined) {
        k = new Template(`${escape(res.entity)}:${escape(suffix)}:{${res.idParam}}`);
      } else if (res) throw new Error('a resource read needs a suffix or a key');
      else throw new Error('a read needs a key');
      if (suffix !== undefined && !res) throw new Error('suffix is only for a resource read');
      const ts = tags !== undefined ? strings(tags, 'tags').map((t) => new Template(t)) : entity ? [] : [k];
      if (entity) {
        if (tags !== undefined && tags.length === 0) {
          throw new Error('a resource read always carries its entity tag; it cannot be untagged');
        }
        if (!ts.some((t) => t.text === entity.text)) ts.push(entity);
      }
      const t = ttlOf(ttl);
      const early = earlyTtlOf(earlyTtl, t);
      const used = [];
      collect(used, k.params());
      for (const tt of ts) collect(used, tt.params());
      collect(used, routeParams(route));
      op.info.params = checkParams(params, used);
      const rule = (key, tags) => ({ key, ttl: t, tags, earlyTtl: early, refresh: !!refresh, lock: !!lock });
      op.info.readTemplate = rule(k.text, ts.map((tt) => tt.text));
      op.call = (args) => rule(k.render(args), ts.map((tt) => tt.render(args)));
    } catch (e) {
      op.error = e.message;
    }
  }

  /** A read computed per call: `fn(args)` returns a rule (`CachePolicy.rule(...)`) or null
   * (do not cache this call). */
  readRule(name, options, rule) {
    const { params, route } = options ?? {};
    const op = this.#add(name, 'read', route);
    try {
      refuseUnknown(options ?? {}, ['params', 'route'], READ_OPTIONS);
      if (typeof rule !== 'function') throw new Error('readRule needs a function: readRule(name, options, (args) => rule)');
      op.info.params = checkParams(params, routeParams(route));
      op.call = (args) => rule(args) ?? undefined;
    } catch (e) {
      op.error = e.message;
    }
  }

  /** A rendered read rule, for a computed read. Tags default to the key. */
  static rule(key, { tags, ttl = TTL.DEFAULT, earlyTtl, refresh = false, lock = false } = {}) {
    const t = ttlOf(ttl);
    return { key, ttl: t, tags: tags === undefined ? [key] : strings(tags, 'tags'), earlyTtl: earlyTtlOf(earlyTtl, t), refresh, lock };
  }

  /** `@cache_write`: invalidates `tags` (templates; a `resource` write adds the entity tag) and
   * warms the `recache` reads. `tagsWith(args)` adds tags computed per call, `recacheWith(args)`
   * reads to warm computed per call (`recacheCall`); either makes the op dynamic. */
  write(name, options = {}) {
    const { tags = [], recache: declared = [], recacheMaxConcurrency, resource: res,
      tagsWith, recacheWith, params, route } = options ?? {};
    const op = this.#add(name, 'write', route);
    try {
      refuseUnknown(options, WRITE_OPTIONS);
      fn(tagsWith, 'tagsWith');
      fn(recacheWith, 'recacheWith');
      const inv = res ? [new Template(res.tag())] : [];
      for (const text of strings(tags, 'tags')) {
        const t = new Template(text);
        if (!inv.some((i) => i.text === t.text)) inv.push(t);
      }
      const warm = recaches(declared);
      if (!inv.length && !tagsWith && !warm.length && !recacheWith) {
        throw new Error('a write needs tags to invalidate or reads to recache');
      }
      for (const r of warm) {
        const names = [...(r.include ?? []), ...r.renames.flat(), ...r.extras.map(([n]) => n)];
        const bad = names.find((n) => !PARAM.test(n));
        if (bad !== undefined) throw new Error(`recache of \`${r.op}\`: \`${bad}\` is not a parameter name`);
      }
      const c = recacheMaxConcurrency;
      if (c !== undefined && !(Number.isInteger(c) && c >= 1 && c < 2 ** 32)) {
        throw new Error('recache_max_concurrency must be at least 1');
      }
      const used = [];
      for (const t of inv) collect(used, t.params());
      for (const r of warm) collect(used, [...(r.include ?? []), ...r.renames.map(([f]) => f)]);
      collect(used, routeParams(route));
      op.info.params = checkParams(params, used);
      if (!tagsWith && !recacheWith) {
        op.info.writeTemplate = {
          invalidate: inv.map((t) => t.text),
          recache: warm.map((r) => r.wit()),
          recacheConcurrency: c,
        };
      }
      this.pending.push([op, warm]);
      op.call = (args) => {
        const rule = {
          invalidate: inv.map((t) => t.render(args)),
          recache: warm.map((r) => r.apply(args)).filter((r) => r !== undefined),
          recacheConcurrency: c,
        };
        if (tagsWith) rule.invalidate.push(...strings(tagsWith(args), "tagsWith's result"));
        if (recacheWith) rule.recache.push(...calls(recacheWith(args)));
        return rule;
      };
    } catch (e) {
      op.error = e.message;
    }
  }

  /** A write computed per call: `fn(args)` returns a rule (`CachePolicy.invalidate(...)`) or
   * null (the write touches no cached data). */
  writeRule(name, options, rule) {
    const { params, route } = options ?? {};
    const op = this.#add(name, 'write', route);
    try {
      refuseUnknown(options ?? {}, ['params', 'route'], WRITE_OPTIONS);
      if (typeof rule !== 'function') throw new Error('writeRule needs a function: writeRule(name, options, (args) => rule)');
      op.info.params = checkParams(params, routeParams(route));
      op.call = (args) => rule(args) ?? undefined;
    } catch (e) {
      op.error = e.message;
    }
  }

  /** A rendered write rule, for a computed write: the tags to invalidate and the reads to warm
   * again (`recacheCall(...)`). */
  static invalidate(tags = [], { recache: warm = [], recacheMaxConcurrency } = {}) {
    return { invalidate: [...strings(tags, 'tags')], recache: calls(warm), recacheConcurrency: recacheMaxConcurrency };
  }

  #add(name, kind, route) {
    const op = { info: { name, kind, params: undefined, route }, error: undefined, call: undefined };
    const twin = this.ops.find((o) => o.info.name === name);
    if (twin) op.error = twin.error = 'declared more than once';
    else if (name === '') op.error = 'an op name must not be empty';
    this.ops.push(op);
    this.listed = undefined;
    return op;
  }

  #checked() {
    if (!this.pending.length && this.settled) return;
    this.settled = true;
    for (const [op, recaches] of this.pending) {
      for (const r of recaches) {
        const target = this.ops.find((o) => o.info.name === r.op);
        // No target: a read of another policy loaded beside this one.
        if (target && target.info.kind !== 'read') op.error ??= `recache of \`${r.op}\`, which is a write`;
      }
    }
    this.pending = [];
    for (const op of this.ops) {
      if (op.error) {
        op.info.params = undefined;
        delete op.info.readTemplate;
        delete op.info.writeTemplate;
      }
    }
  }

  /** The op names, in the order `describe` lists them (the host calls by position). */
  names() {
    return this.#listing().map((o) => o.info.name);
  }

  /** The declaration errors, one message per faulty op (`describe` returns them). */
  errors() {
    return this.#listing().filter((o) => o.error).map((o) => `${o.info.name}: ${o.error}`);
  }

  /** The ops as `describe` lists them, one per name: the host calls op `i` of it. Built on
   * the first call of any export: an instance the host never asked to `describe` answers the
   * same. */
  #listing() {
    this.#checked();
    if (!this.listed) {
      const seen = new Set();
      this.listed = this.ops.filter((o) => !seen.has(o.info.name) && seen.add(o.info.name));
    }
    return this.listed;
  }

  /** What `describe` exports; throws (the WIT error) every declaration error. */
  describe() {
    const errors = this.errors();
    if (errors.length) throw errors.join('; ');
    return { name: this.name, version: this.version, ops: this.#listing().map((o) => o.info) };
  }

  #call(index, kind, pairs, result) {
    const listed = this.#listing();
    const op = listed[index];
    if (!op) throw `no operation #${index} (this policy declares ${listed.length})`;
    const name = op.info.name;
    if (op.error) throw `${name}: ${op.error}`;
    if (op.info.kind !== kind) {
      throw `${name}: ${kind === 'read' ? 'a write, not a read' : 'a read, not a write'}`;
    }
    try {
      return op.call(new Args(pairs, result));
    } catch (e) {
      throw `${name}: ${e instanceof Error ? e.message : e}`;
    }
  }

  /** The object implementing the world's `policy` export: `export const policy = p.exports();` */
  exports() {
    return {
      describe: () => this.describe(),
      read: (op, args) => this.#call(op, 'read', args, undefined),
      write: (op, args, result) => this.#call(op, 'write', args, result),
      [DECLARED]: this,
    };
  }
}

// Leads from the export object back to its declaration (for `Compiled`).
const DECLARED = Symbol('declared');

const READ_OPTIONS = ['key', 'tags', 'ttl', 'earlyTtl', 'refresh', 'lock', 'resource', 'suffix', 'params', 'route'];
const WRITE_OPTIONS = ['tags', 'recache', 'recacheMaxConcurrency', 'resource', 'tagsWith', 'recacheWith', 'params', 'route'];

// ---- testing in Node ----------------------------------------------------------------------

/** A policy as the host sees it, for tests in Node (no component is built): the world's
 * exports, called by op name with JavaScript values.
 *
 *   const c = new Compiled(policy);            // the module's `policy` export
 *   c.errors();                                // []
 *   c.read('get_user', { user_id: 42n }).key;  // 'user:42'
 *
 * `read`/`write` throw the message the host would log where the component would answer an
 * error; `describe` throws every declaration error. Arguments are converted as `toValue` does. */
export class Compiled {
  constructor(policy) {
    this.declared = policy instanceof CachePolicy ? policy : policy[DECLARED];
    if (!(this.declared instanceof CachePolicy)) {
      throw new Error('Compiled needs a CachePolicy or its exports() (the module\'s `policy`)');
    }
    this.exports = this.declared.exports();
  }

  /** `describe`'s answer; throws every declaration error. */
  describe() {
    return this.exports.describe();
  }

  /** The declaration errors, one per faulty op. */
  errors() {
    return this.declared.errors();
  }

  #index(op) {
    const i = this.declared.names().indexOf(op);
    if (i < 0) throw `unknown op \`${op}\``;
    return i;
  }

  /** The rule of one call of the read `op`, as the component answers it (undefined: none). */
  read(op, args = {}) {
    return this.exports.read(this.#index(op), pairs(args));
  }

  /** The rule of one call of the write `op`; `result` is the action's return value. */
  write(op, args = {}, result = undefined) {
    return this.exports.write(this.#index(op), pairs(args), result === undefined ? undefined : toValue(result));
  }
}

const pairs = (args) => Object.entries(args).map(([n, v]) => [n, toValue(v)]);
