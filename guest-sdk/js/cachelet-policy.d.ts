// Types of cachelet-policy.js, for editors and `tsc --checkJs`: the SDK's declarations and the
// WIT values as componentize-js hands them over.

/** An integer argument: WIT `s64` is a BigInt in JavaScript (`42n`), never a number. */
export type Integer = bigint;

/** One argument value of an operation, as the WIT `value` variant. */
export type Value =
  | { tag: 'null' }
  | { tag: 'boolean'; val: boolean }
  | { tag: 'integer'; val: Integer }
  | { tag: 'float'; val: number }
  | { tag: 'text'; val: string }
  | { tag: 'json'; val: string };

/** The named arguments of one call, in the caller's order. */
export type WitArgs = Array<[string, Value]>;

export type TtlBucket = 'short' | 'default' | 'long';
/** Seconds (0: do not cache; an integral number in 0 ..= 2^32-1) or a bucket. */
export type Ttl = number | TtlBucket;
export type WitTtl = { tag: 'seconds'; val: number } | { tag: 'bucket'; val: TtlBucket };

/** TTL buckets the host resolves from its settings (30 s, 300 s and 3600 s by default). */
export const TTL: Readonly<{ SHORT: 'short'; DEFAULT: 'default'; LONG: 'long' }>;

/** A JavaScript value as an argument: null/undefined, boolean, BigInt or integral number
 * (integer), number (float), string; anything else as JSON. */
export type ArgValue = null | undefined | boolean | bigint | number | string | object;

/** A rendered read rule (WIT `read-rule`). */
export interface ReadRule {
  key: string;
  ttl: WitTtl;
  tags: string[];
  earlyTtl?: number;
  refresh: boolean;
  lock: boolean;
}

/** One read to warm again after a write (WIT `recache`). */
export interface RecacheCall {
  op: string;
  args: WitArgs;
}

/** A rendered write rule (WIT `write-rule`). */
export interface WriteRule {
  invalidate: string[];
  recache: RecacheCall[];
  recacheConcurrency?: number;
}

/** What `describe` returns (WIT `policy-info`). */
export interface PolicyInfo {
  name: string;
  version: string;
  ops: Array<{
    name: string;
    kind: 'read' | 'write';
    /** As declared; undefined: undeclared (`cachelet check` warns). */
    params?: string[];
    route?: string;
    readTemplate?: ReadRule;
    writeTemplate?: {
      invalidate: string[];
      recache: Array<{ op: string; include?: string[]; rename: Array<[string, string]>; extra: WitArgs }>;
      recacheConcurrency?: number;
    };
  }>;
}

export function toValue(v: ArgValue): Value;
/** A WIT value as JavaScript: integers as BigInt, JSON parsed. */
export function fromValue(v: Value): ArgValue;
/** How a template renders a value: text and JSON with `%` as `%25` and `:` as `%3A`. */
export function renderValue(v: Value): string;

/** The named arguments of one call (and, for a write, its result). */
export class Args {
  constructor(pairs: WitArgs, result?: Value);
  readonly pairs: WitArgs;
  /** For a write, the action's result as JavaScript (undefined: none). */
  readonly result: ArgValue;
  /** The WIT value of argument `name`, or undefined. */
  value(name: string): Value | undefined;
  has(name: string): boolean;
  /** The argument as JavaScript (integers as BigInt, JSON parsed); throws if absent. */
  get(name: string): ArgValue;
  /** Renders `template` (e.g. `'user:{user_id}'`) exactly as the host does. */
  render(template: string): string;
}

/** An entity whose reads are invalidated together. */
export interface Resource {
  readonly entity: string;
  readonly idParam: string;
  tag(): string;
}
/** `resource('user', 'user_id')`: reads keyed `user:{suffix}:{user_id}`, tagged `user:{user_id}`. */
export function resource(entity: string, idParam: string): Resource;

export interface RecacheOptions {
  /** The write's arguments to pass on (default: all); a call lacking one skips this recache. */
  include?: string[];
  /** { nameInTheWrite: nameInTheRead } */
  rename?: Record<string, string>;
  /** Constant arguments added to every call. */
  extra?: Record<string, ArgValue>;
}
export interface Recache {
  readonly op: string;
}
/** A read to warm again after a write. */
export function recache(op: string, options?: RecacheOptions): Recache;
/** One read to warm again, for a computed write rule or `recacheWith`. */
export function recacheCall(op: string, args?: Record<string, ArgValue>): RecacheCall;

interface Common {
  /** The op's parameters: every placeholder must be one of them (a misspelled one is refused
   * at load). Declare them on every op. */
  params?: string[];
  /** The HTTP route of the op, e.g. `GET /users/{user_id}`. */
  route?: string;
}

export interface ReadOptions extends Common {
  key?: string;
  /** Tag templates (default: the key; `[]`: untagged). A list, never a string. */
  tags?: string[];
  ttl?: Ttl;
  /** Seconds after which a hit reloads in the background; less than the TTL. */
  earlyTtl?: number;
  refresh?: boolean;
  lock?: boolean;
  resource?: Resource;
  suffix?: string;
}

export interface WriteOptions extends Common {
  tags?: string[];
  recache?: Recache[];
  recacheMaxConcurrency?: number;
  resource?: Resource;
  /** Tags computed per call, added to `tags`. */
  tagsWith?: (args: Args) => string[];
  /** Reads to warm computed per call (`recacheCall`), added to `recache`. */
  recacheWith?: (args: Args) => RecacheCall[];
}

export interface RuleOptions {
  tags?: string[];
  ttl?: Ttl;
  earlyTtl?: number;
  refresh?: boolean;
  lock?: boolean;
}

/** The world's `policy` export. */
export interface PolicyExports {
  describe(): PolicyInfo;
  read(op: number, args: WitArgs): ReadRule | undefined;
  write(op: number, args: WitArgs, result?: Value): WriteRule | undefined;
}

/** A policy's declaration: `read` / `write` (or their computed forms) once per op. */
export class CachePolicy {
  constructor(name: string, version?: string);
  read(name: string, options: ReadOptions): void;
  /** The whole rule computed per call; null: do not cache this call. */
  readRule(name: string, options: Common, rule: (args: Args) => ReadRule | null | undefined): void;
  write(name: string, options: WriteOptions): void;
  /** The whole write rule computed per call; null: the write touches no cached data. */
  writeRule(name: string, options: Common, rule: (args: Args) => WriteRule | null | undefined): void;
  /** A rendered read rule, for a computed read. Tags default to the key. */
  static rule(key: string, options?: RuleOptions): ReadRule;
  /** A rendered write rule, for a computed write. */
  static invalidate(tags?: string[], options?: { recache?: RecacheCall[]; recacheMaxConcurrency?: number }): WriteRule;
  /** The op names, in the order `describe` lists them. */
  names(): string[];
  /** The declaration errors, one per faulty op (`{op}: {mistake}`). */
  errors(): string[];
  /** Throws every declaration error (joined by `; `). */
  describe(): PolicyInfo;
  /** The world's `policy` export: `export const policy = declared.exports();` */
  exports(): PolicyExports;
}

/** A policy as the host sees it, for tests in Node: calls by op name with JavaScript values. */
export class Compiled {
  constructor(policy: CachePolicy | PolicyExports);
  describe(): PolicyInfo;
  errors(): string[];
  read(op: string, args?: Record<string, ArgValue>): ReadRule | undefined;
  write(op: string, args?: Record<string, ArgValue>, result?: ArgValue): WriteRule | undefined;
}
