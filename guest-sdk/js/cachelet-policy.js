// Write cachelet cache policies in JavaScript (componentize-js).
//
// A policy declares its operations in the terms of Python's `svc_infra.cache` (`cache_read`,
// `cache_write`, `recache`, `resource`), then exports them as the world's `policy` interface:
//
//   import { CachePolicy, recache, resource, TTL } from './cachelet-policy.js';
//
//   const policy = new CachePolicy('users', '0.1.0');
//   policy.read('get_user', { key: 'user:{user_id}', ttl: 300 });     // tagged with its key
//   policy.write('update_user', {
//     tags: ['user:{user_id}'],
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
// Declaration mistakes (an unbalanced brace, placeholders without a `:` between them, a recache of
// a write, an `early_ttl` not below the TTL) do not throw: `describe` returns them all, each
// naming its op, and the host refuses to load the policy; `errors()` lists them.
//
// WIT values in JavaScript (componentize-js): a `value` is `{ tag: 'integer', val: 42n }` (s64 is
// a BigInt), an enum is its name as a string, an `option` is the value or `undefined`, a record
// is an object with camelCase fields.

/** TTL buckets the host resolves from its settings (30 s, 300 s and 3600 s by default). */
export const TTL = Object.freeze({ SHORT: 'short', DEFAULT: 'default', LONG: 'long' });

function ttlOf(ttl) {
  if (ttl === TTL.SHORT || ttl === TTL.DEFAULT || ttl === TTL.LONG) {
    return { tag: 'bucket', val: ttl };
  }
  if (Number.isInteger(ttl) && ttl >= 0 && ttl < 2 ** 32) return { tag: 'seconds', val: ttl };
  throw new Error(`ttl ${ttl} is neither seconds (0 .. 2^32-1) nor a TTL bucket`);
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

/** A read to warm again after a write: `op` called with the write's arguments (all of them, or
 * those in `include`), renamed by `rename` ({ writeName: readName }), plus `extra` constants. */
export function recache(op, { include, rename = {}, extra = {} } = {}) {
  const renames = Object.entries(rename);
  const extras = Object.entries(extra).map(([n, v]) => [n, toValue(v)]);
  return {
    op,
    include,
    renames,
    extras,
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
          if (v === undefined) throw new Error(`recache of \`${op}\`: no argument \`${name}\` to include`);
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

function collect(params, names) {
  for (const n of names) if (!params.includes(n)) params.push(n);
}

function checkParams(declared, used) {
  if (declared === undefined) return used;
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
  read(name, { key, tags, ttl = TTL.DEFAULT, earlyTtl, refresh = false, lock = false,
    resource: res, suffix, params, route } = {}) {
    const op = this.#add(name, 'read', route);
    try {
      const entity = res ? new Template(res.tag()) : undefined;
      let k;
      if (key !== undefined) k = new Template(key);
      else if (res && suffix !== undefined) {
        k = new Template(`${escape(res.entity)}:${escape(suffix)}:{${res.idParam}}`);
      } else if (res) throw new Error('a resource read needs a suffix or a key');
      else throw new Error('a read needs a key');
      if (suffix !== undefined && !res) throw new Error('suffix is only for a resource read');
      const ts = tags !== undefined ? tags.map((t) => new Template(t)) : entity ? [] : [k];
      if (entity) {
        if (tags !== undefined && tags.length === 0) {
          throw new Error('a resource read always carries its entity tag; it cannot be untagged');
        }
        if (!ts.some((t) => t.text === entity.text)) ts.push(entity);
      }
      const t = ttlOf(ttl);
      if (earlyTtl !== undefined && t.tag === 'seconds' && earlyTtl >= t.val) {
        throw new Error(`early_ttl (${earlyTtl} s) must be less than the ttl (${t.val} s)`);
      }
      const used = [];
      collect(used, k.params());
      for (const tt of ts) collect(used, tt.params());
      collect(used, routeParams(route));
      op.info.params = checkParams(params, used);
      const rule = (key, tags) => ({ key, ttl: t, tags, earlyTtl, refresh, lock });
      op.info.readTemplate = rule(k.text, ts.map((tt) => tt.text));
      op.call = (args) => rule(k.render(args), ts.map((tt) => tt.render(args)));
    } catch (e) {
      op.error = e.message;
    }
  }

  /** A read computed per call: `fn(args)` returns a rule (`CachePolicy.rule(...)`) or null
   * (do not cache this call). */
  readRule(name, { params, route } = {}, fn) {
    const op = this.#add(name, 'read', route);
    try {
      op.info.params = checkParams(params, routeParams(route));
      op.call = (args) => fn(args) ?? undefined;
    } catch (e) {
      op.error = e.message;
    }
  }

  /** A rendered read rule, for a dynamic op. Tags default to the key. */
  static rule(key, { tags, ttl = TTL.DEFAULT, earlyTtl, refresh = false, lock = false } = {}) {
    return { key, ttl: ttlOf(ttl), tags: tags ?? [key], earlyTtl, refresh, lock };
  }

  /** `@cache_write`: invalidates `tags` (templates; a `resource` write adds the entity tag) and
   * warms the `recache` reads. `tagsWith(args)` adds tags computed per call (the op is then
   * dynamic). */
  write(name, { tags = [], recache: recaches = [], recacheMaxConcurrency, resource: res,
    tagsWith, params, route } = {}) {
    const op = this.#add(name, 'write', route);
    try {
      const inv = res ? [new Template(res.tag())] : [];
      for (const text of tags) {
        const t = new Template(text);
        if (!inv.some((i) => i.text === t.text)) inv.push(t);
      }
      if (!inv.length && !tagsWith && !recaches.length) {
        throw new Error('a write needs tags to invalidate or reads to recache');
      }
      for (const r of recaches) {
        const names = [...(r.include ?? []), ...r.renames.flat(), ...r.extras.map(([n]) => n)];
        const bad = names.find((n) => !PARAM.test(n));
        if (bad !== undefined) throw new Error(`recache of \`${r.op}\`: \`${bad}\` is not a parameter name`);
      }
      if (recacheMaxConcurrency === 0) throw new Error('recache_max_concurrency must be at least 1');
      const used = [];
      for (const t of inv) collect(used, t.params());
      for (const r of recaches) collect(used, [...(r.include ?? []), ...r.renames.map(([f]) => f)]);
      collect(used, routeParams(route));
      op.info.params = checkParams(params, used);
      if (!tagsWith) {
        op.info.writeTemplate = {
          invalidate: inv.map((t) => t.text),
          recache: recaches.map((r) => r.wit()),
          recacheConcurrency: recacheMaxConcurrency,
        };
      }
      this.pending.push([op, recaches]);
      op.call = (args) => {
        const rule = {
          invalidate: inv.map((t) => t.render(args)),
          recache: recaches.map((r) => r.apply(args)),
          recacheConcurrency: recacheMaxConcurrency,
        };
        if (tagsWith) rule.invalidate.push(...tagsWith(args));
        return rule;
      };
    } catch (e) {
      op.error = e.message;
    }
  }

  #add(name, kind, route) {
    const op = { info: { name, kind, params: [], route }, error: undefined, call: undefined };
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
        op.info.params = [];
        delete op.info.readTemplate;
        delete op.info.writeTemplate;
      }
    }
  }

  /** The declaration errors, one message per faulty op (`describe` returns them). */
  errors() {
    return this.#listing().filter((o) => o.error).map((o) => `${o.info.name}: ${o.error}`);
  }

  /** The ops as `describe` lists them, one per name: the host calls op `i` of it. */
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
    };
  }
}
