"""Write cachelet cache policies in Python (componentize-py).

A policy declares its operations in the terms of Python's ``svc_infra.cache``
(``cache_read``, ``cache_write``, ``recache``, ``resource``)::

    from cachelet_policy import CachePolicy, recache, resource, TTL_DEFAULT

    policy = CachePolicy("users", "0.1.0")
    policy.read("get_user", key="user:{user_id}", ttl=300, params=["user_id"])
    policy.write("update_user", tags=["user:{user_id}"], params=["user_id"],
                 recache=[recache("get_user", include=["user_id"])])

    @policy.read_rule("get_search", params=["q"])               # computed per call
    def get_search(args):
        if args["q"] == "":
            return None                                        # not cached
        return policy.rule(args.render("search:{q}"), tags=["search"], ttl=120)

    # The app module handed to `componentize-py componentize` must define the class that
    # implements the world's `policy` export, named `Policy`:
    Policy = policy.export()

Operations declared with templates only are *static*: ``describe()`` reports their templates
and the host renders them itself, without calling into Python. Operations with a function are
*dynamic*: the host calls the component on every call. ``read``/``write`` also answer for static
operations, exactly as the host renders them (the rules of the WIT ``read-rule`` comment).

Keys and tags render by the rules of the WIT ``read-rule`` comment: text and JSON arguments with
``%`` written ``%25`` and ``:`` written ``%3A``, and two placeholders always with a ``:`` between
them, so that distinct arguments never render to one key.

Declaration mistakes (an unbalanced brace, placeholders without a ``:`` between them, a
placeholder not among the declared ``params``, a recache of a write, an ``early_ttl`` not below
the TTL, a TTL out of range, a string where a list belongs, an unknown option, a computed rule
combined with a declared one, an op declared twice) do not raise: ``describe`` returns them
all, each naming its op, and the host refuses to load the policy; ``policy.errors()`` lists
them. Declare ``params`` on every op: without them a misspelled placeholder is found only when
a call fails, and ``cachelet check`` warns.

Test a policy in CPython, without building a component, with :class:`Compiled` (it needs the
bindings ``componentize-py -d wit -w cache-policy bindings DIR`` writes, on ``sys.path``)::

    from cachelet_policy import Compiled
    from app import policy

    rule = Compiled(policy).read("get_user", {"user_id": 42})
    assert rule.key == "user:42"
"""

from __future__ import annotations

from decimal import Decimal
import json
import math
from typing import Any, Callable, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from componentize_py_types import Err
from wit_world.imports import types as wit

__all__ = [
    "CachePolicy", "Args", "Compiled", "recache", "recache_call", "resource", "render_value",
    "to_value", "from_value", "TTL_SHORT", "TTL_DEFAULT", "TTL_LONG",
]

#: TTL buckets the host resolves from its settings (30 s, 300 s and 3600 s by default).
TTL_SHORT = wit.TtlBucket.SHORT
TTL_DEFAULT = wit.TtlBucket.DEFAULT
TTL_LONG = wit.TtlBucket.LONG

#: A TTL: seconds (0: do not cache) or a bucket.
Ttl = Union[int, wit.TtlBucket]
#: A read's rule, or None (do not cache this call).
ReadFn = Callable[["Args"], Optional[wit.ReadRule]]
#: A write's rule, or None (the write touches no cached data).
WriteFn = Callable[["Args"], Optional[wit.WriteRule]]
TagsFn = Callable[["Args"], Sequence[str]]
RecacheFn = Callable[["Args"], Sequence[wit.Recache]]

_U32 = 2**32


class _Mistake(ValueError):
    """A declaration the host could not serve: its op is refused at load."""


def _ttl(ttl: Any) -> wit.Ttl:
    if isinstance(ttl, wit.TtlBucket):
        return wit.Ttl_Bucket(ttl)
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not 0 <= ttl < _U32:
        raise _Mistake(f"ttl {ttl!r} is neither seconds (0 .. 2^32-1) nor a TTL bucket")
    return wit.Ttl_Seconds(ttl)


def _early_ttl(early: Any, ttl: wit.Ttl) -> Optional[int]:
    if early is None:
        return None
    if isinstance(early, bool) or not isinstance(early, int) or not 0 <= early < _U32:
        raise _Mistake(f"early_ttl {early!r} is not seconds (0 .. 2^32-1)")
    if isinstance(ttl, wit.Ttl_Seconds) and early >= ttl.value:
        raise _Mistake(f"early_ttl ({early} s) must be less than the ttl ({ttl.value} s)")
    return early


def _strings(value: Any, what: str) -> List[str]:
    """A list of strings, refusing a lone string (it would be iterated letter by letter)."""
    if isinstance(value, str):
        raise _Mistake(f"{what} must be a list of strings, not the string {value!r}")
    try:
        items = list(value)
    except TypeError:
        raise _Mistake(f"{what} must be a list of strings, not {type(value).__name__}") from None
    for item in items:
        if not isinstance(item, str):
            raise _Mistake(f"{what} must be a list of strings, not a list holding {item!r}")
    return items


def _refuse_unknown(unknown: Mapping[str, Any], known: Iterable[str], computed: Iterable[str] = ()):
    computed = list(computed)
    for name in unknown:
        if name in computed:
            raise _Mistake(f"a computed rule cannot also declare {name}")
        raise _Mistake(f"unknown option `{name}` (options: {', '.join(known)})")


# ---- values ------------------------------------------------------------------------------


def to_value(v: Any) -> wit.Value:
    """A Python value as a WIT ``value``: None, bool, int, float, str; anything else as JSON."""
    if v is None:
        return wit.Value_Null()
    if isinstance(v, bool):
        return wit.Value_Boolean(v)
    if isinstance(v, int):
        return wit.Value_Integer(v)
    if isinstance(v, float):
        return wit.Value_Float(v)
    if isinstance(v, str):
        return wit.Value_Text(v)
    if isinstance(v, (wit.Value_Null, wit.Value_Boolean, wit.Value_Integer, wit.Value_Float,
                      wit.Value_Text, wit.Value_Json)):
        return v
    return wit.Value_Json(json.dumps(v, separators=(",", ":")))


def from_value(v: wit.Value) -> Any:
    """A WIT ``value`` as a Python value (JSON text parsed)."""
    if isinstance(v, wit.Value_Null):
        return None
    if isinstance(v, wit.Value_Json):
        return json.loads(v.value)
    return v.value


def _render_float(f: float) -> str:
    # The shortest decimal that reads back as the same number, never with an exponent, and
    # without a fractional part when it has none: what the host (Rust's Display) writes.
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "inf" if f > 0 else "-inf"
    text = format(Decimal(repr(f)), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def _escape_text(text: str) -> str:
    # `%` first, so that the `%` of `%3A` is not escaped again.
    if "%" in text:
        text = text.replace("%", "%25")
    if ":" in text:
        text = text.replace(":", "%3A")
    return text


def render_value(v: wit.Value) -> str:
    """How a template renders a WIT ``value``: text and JSON with ``%`` as ``%25`` and ``:`` as
    ``%3A``."""
    if isinstance(v, wit.Value_Null):
        return "null"
    if isinstance(v, wit.Value_Boolean):
        return "true" if v.value else "false"
    if isinstance(v, wit.Value_Float):
        return _render_float(v.value)
    if isinstance(v, wit.Value_Integer):
        return str(v.value)
    return _escape_text(v.value)  # text and json


# ---- templates ---------------------------------------------------------------------------


def _is_param(name: Any) -> bool:
    return isinstance(name, str) and name != "" and all(
        c == "_" or (c.isascii() and c.isalnum()) for c in name)


def _escape(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


class _Template:
    """A key or tag template: literal text and ``{param}`` placeholders, with a ``:`` in the
    literal text between any two placeholders (``separated=False``: the braces only, for a
    route)."""

    def __init__(self, text: Any, separated: bool = True):
        if not isinstance(text, str):
            raise _Mistake(f"template {text!r} is not a string")
        self.text = text
        self.parts: List[Union[str, Tuple[str]]] = []  # str: literal; (name,): placeholder
        literal: List[str] = []
        i = 0
        last, colon = None, False  # the previous placeholder; whether a `:` came since
        while i < len(text):
            c = text[i]
            if c in "{}" and text[i + 1:i + 2] == c:
                literal.append(c)
                i += 2
                continue
            if c == ":":
                colon = True
            if c == "}":
                raise _Mistake(f"template `{text}`: unmatched `}}` at byte {_byte(text, i)} "
                               "(write `}}` for a literal brace)")
            if c == "{":
                end = text.find("}", i + 1)
                if end < 0:
                    raise _Mistake(f"template `{text}`: unclosed `{{` at byte {_byte(text, i)} "
                                   "(write `{{` for a literal brace)")
                name = text[i + 1:end]
                if name == "":
                    raise _Mistake(f"template `{text}`: empty placeholder `{{}}` at byte "
                                   f"{_byte(text, i)}")
                if not _is_param(name):
                    raise _Mistake(f"template `{text}`: invalid placeholder `{{{name}}}`: "
                                   "a name has only ASCII letters, digits and `_`")
                if separated and last is not None and not colon:
                    raise _Mistake(f"template `{text}`: placeholders `{{{last}}}` and "
                                   f"`{{{name}}}` have no `:` between them (distinct "
                                   "arguments could render to the same text)")
                last, colon = name, False
                if literal:
                    self.parts.append("".join(literal))
                    literal = []
                self.parts.append((name,))
                i = end + 1
                continue
            literal.append(c)
            i += 1
        if literal:
            self.parts.append("".join(literal))

    def params(self) -> List[str]:
        return [p[0] for p in self.parts if isinstance(p, tuple)]

    def render(self, args: "Args") -> str:
        out = []
        for p in self.parts:
            if isinstance(p, str):
                out.append(p)
                continue
            v = args.value(p[0])
            if v is None:
                raise _Missing(p[0], self.text)
            out.append(render_value(v))
        return "".join(out)


def _byte(text: str, i: int) -> int:
    return len(text[:i].encode())


class _Missing(Exception):
    def __init__(self, param: str, template: str):
        super().__init__(f"no argument `{param}` for the placeholder `{{{param}}}` of `{template}`")


# ---- the arguments of one call -----------------------------------------------------------


class Args:
    """The named arguments of one call (and, for a write, its result).

    ``args["user_id"]`` is the argument as a Python value (JSON parsed); ``args.render(t)``
    renders a template exactly as the host does.
    """

    def __init__(self, pairs: Sequence[Tuple[str, wit.Value]], result: Optional[wit.Value] = None):
        self.pairs = pairs
        #: For a write, the write action's result as a Python value (None: none).
        self.result: Any = None if result is None else from_value(result)

    def value(self, name: str) -> Optional[wit.Value]:
        """The WIT value of argument ``name``, or None when the call has none."""
        for n, v in self.pairs:
            if n == name:
                return v
        return None

    def __contains__(self, name: str) -> bool:
        return self.value(name) is not None

    def __getitem__(self, name: str) -> Any:
        v = self.value(name)
        if v is None:
            raise KeyError(f"no argument `{name}`")
        return from_value(v)

    def get(self, name: str, default: Any = None) -> Any:
        v = self.value(name)
        return default if v is None else from_value(v)

    def render(self, template: str) -> str:
        """Renders ``template`` (e.g. ``"user:{user_id}"``) with these arguments."""
        parsed = _PARSED.get(template)
        if parsed is None:
            parsed = _Template(template)
            if len(_PARSED) < 1024:
                _PARSED[template] = parsed
        return parsed.render(self)


# Templates rendered by dynamic ops, parsed once.
_PARSED: dict = {}


# ---- declarations ------------------------------------------------------------------------


class resource:
    """``resource("user", "user_id")``: reads keyed ``user:{suffix}:{user_id}``, all tagged
    ``user:{user_id}``; a resource write invalidates that tag."""

    def __init__(self, entity: str, id_param: str):
        self.entity, self.id_param = entity, id_param

    def tag(self) -> str:
        if not _is_param(self.id_param):
            raise _Mistake(f"resource id `{self.id_param}` is not a parameter name "
                           "(ASCII letters, digits, `_`)")
        return f"{_escape(self.entity)}:{{{self.id_param}}}"


class recache:
    """A read to warm again after a write: ``op`` called with the write's arguments (all of
    them, or those in ``include``), renamed by ``rename`` ({write name: read name}), plus
    ``extra`` constants. A write whose call lacks an included argument skips this recache."""

    OPTIONS = ("include", "rename", "extra")

    def __init__(self, op: str, *, include: Optional[Sequence[str]] = None,
                 rename: Optional[Mapping[str, str]] = None,
                 extra: Optional[Mapping[str, Any]] = None, **unknown: Any):
        self.op = op
        self.mistake: Optional[str] = None
        self.include: Optional[List[str]] = None
        self.rename: List[Tuple[str, str]] = []
        self.extra: List[Tuple[str, wit.Value]] = []
        try:
            _refuse_unknown(unknown, self.OPTIONS)
            if include is not None:
                self.include = _strings(include, "include")
            if rename is not None and not isinstance(rename, Mapping):
                raise _Mistake("rename must be a dict {name in the write: name in the read}")
            if extra is not None and not isinstance(extra, Mapping):
                raise _Mistake("extra must be a dict {name: constant}")
            self.rename = list((rename or {}).items())
            self.extra = [(n, to_value(v)) for n, v in (extra or {}).items()]
        except _Mistake as e:
            self.mistake = f"recache of `{op}`: {e}"

    def _wit(self) -> wit.RecacheTemplate:
        return wit.RecacheTemplate(self.op, self.include, self.rename, self.extra)

    def _apply(self, pairs: Sequence[Tuple[str, wit.Value]]) -> Optional[wit.Recache]:
        passed: List[Tuple[str, wit.Value]] = []
        if self.include is None:
            for n, v in pairs:
                _set(passed, n, v)
        else:
            call = Args(pairs)
            for name in self.include:
                v = call.value(name)
                if v is None:
                    return None  # skipped, as the host skips it
                _set(passed, name, v)
        out: List[Tuple[str, wit.Value]] = []
        renames = dict(self.rename)
        for n, v in passed:
            _set(out, renames.get(n, n), v)
        for n, v in self.extra:
            _set(out, n, v)
        return wit.Recache(self.op, out)


def recache_call(op: str, args: Optional[Mapping[str, Any]] = None) -> wit.Recache:
    """One read to warm again, for a computed write rule or ``recache_with``:
    ``recache_call("get_user", {"user_id": 42})``."""
    return wit.Recache(op, [(n, to_value(v)) for n, v in (args or {}).items()])


def _set(pairs: List[Tuple[str, wit.Value]], name: str, value: wit.Value) -> None:
    for i, (n, _) in enumerate(pairs):
        if n == name:
            pairs[i] = (name, value)
            return
    pairs.append((name, value))


def _collect(params: List[str], names: Iterable[str]) -> None:
    for n in names:
        if n not in params:
            params.append(n)


def _check_params(declared: Any, used: List[str]) -> Optional[List[str]]:
    """The declared params, after checking that every name used is one; None: undeclared."""
    if declared is None:
        return None
    declared = _strings(declared, "params")
    for p in declared:
        if not _is_param(p):
            raise _Mistake(f"`{p}` is not a parameter name")
    for u in used:
        if u not in declared:
            raise _Mistake(f"uses `{u}`, which is not among its params ({', '.join(declared)})")
    return declared


def _route_params(route: Optional[str]) -> List[str]:
    try:
        return _Template(route, separated=False).params() if route else []
    except _Mistake:
        return []


def _recaches(value: Any) -> List[recache]:
    if isinstance(value, recache):
        raise _Mistake("recache must be a list of recache(...), not a single one")
    if isinstance(value, str):
        raise _Mistake(f"recache must be a list of recache(...), not the string {value!r}")
    items = list(value)
    for r in items:
        if not isinstance(r, recache):
            raise _Mistake(f"recache must be a list of recache(...), not a list holding {r!r}")
        if r.mistake:
            raise _Mistake(r.mistake)
    return items


def _function(fn: Any, what: str) -> Any:
    if fn is not None and not callable(fn):
        raise _Mistake(f"{what} must be a function, not {fn!r}")
    return fn


class _Op:
    def __init__(self, name: str, kind: wit.OpKind, route: Optional[str]):
        self.info = wit.OpInfo(name, kind, None, route, None, None)
        self.error: Optional[str] = None
        self.call: Optional[Callable[[Sequence[Tuple[str, wit.Value]], Optional[wit.Value]], Any]] = None


_READ_OPTIONS = ("key", "tags", "ttl", "early_ttl", "refresh", "lock", "resource", "suffix",
                 "params", "route")
_WRITE_OPTIONS = ("tags", "recache", "recache_max_concurrency", "resource", "tags_with",
                  "recache_with", "params", "route")


class CachePolicy:
    """A policy's declaration: call ``read``/``write`` (or their decorator forms) once per
    operation, at import time."""

    def __init__(self, name: str, version: str = "0.1.0"):
        self.name, self.version = name, version
        self._ops: List[_Op] = []
        self._pending: List[Tuple[_Op, List[recache]]] = []  # recache targets, checked later
        self._settled = False
        self._listed: Optional[List[_Op]] = None  # the ops as ``describe`` lists them

    # -- reads --

    def read(self, name: str, *, key: Optional[str] = None, tags: Optional[Sequence[str]] = None,
             ttl: Ttl = TTL_DEFAULT, early_ttl: Optional[int] = None, refresh: bool = False,
             lock: bool = False, resource: Optional[resource] = None,
             suffix: Optional[str] = None, params: Optional[Sequence[str]] = None,
             route: Optional[str] = None, **unknown: Any) -> None:
        """``@cache_read``: an op rendered from templates. Tags default to the key; a
        ``resource`` read is keyed ``{entity}:{suffix}:{id}`` and always carries the entity
        tag."""
        op = self._add(name, wit.OpKind.READ, route)
        try:
            _refuse_unknown(unknown, _READ_OPTIONS)
            entity = _Template(resource.tag()) if resource else None
            if key is not None:
                k = _Template(key)
            elif resource is not None and suffix is not None:
                k = _Template(f"{_escape(resource.entity)}:{_escape(suffix)}:{{{resource.id_param}}}")
            elif resource is not None:
                raise _Mistake("a resource read needs a suffix or a key")
            else:
                raise _Mistake("a read needs a key")
            if suffix is not None and resource is None:
                raise _Mistake("suffix is only for a resource read")
            if tags is not None:
                ts = [_Template(t) for t in _strings(tags, "tags")]
            else:
                ts = [] if entity else [k]
            if entity:
                if tags is not None and not tags:
                    raise _Mistake("a resource read always carries its entity tag; "
                                   "it cannot be untagged")
                if entity.text not in [t.text for t in ts]:
                    ts.append(entity)
            t = _ttl(ttl)
            early = _early_ttl(early_ttl, t)
            used: List[str] = []
            _collect(used, k.params())
            for tt in ts:
                _collect(used, tt.params())
            _collect(used, _route_params(route))
            op.info.params = _check_params(params, used)
            op.info.read_template = wit.ReadRule(k.text, t, [tt.text for tt in ts], early,
                                                 bool(refresh), bool(lock))

            def call(pairs, _result):
                a = Args(pairs)
                return wit.ReadRule(k.render(a), t, [tt.render(a) for tt in ts], early,
                                    bool(refresh), bool(lock))
            op.call = call
        except _Mistake as e:
            op.error = str(e)

    def read_rule(self, name: str, *, params: Optional[Sequence[str]] = None,
                  route: Optional[str] = None, **others: Any) -> Callable[[ReadFn], ReadFn]:
        """Decorator: ``fn(args) -> rule | None``, the whole rule computed per call
        (``policy.rule(...)`` builds it; None: do not cache this call)."""
        def decorate(fn: ReadFn) -> ReadFn:
            op = self._add(name, wit.OpKind.READ, route)
            try:
                _refuse_unknown(others, ("params", "route"), _READ_OPTIONS)
                _function(fn, "the rule")
                op.info.params = _check_params(params, _route_params(route))

                def call(pairs, _result):
                    rule = fn(Args(pairs))
                    if rule is not None and not isinstance(rule, wit.ReadRule):
                        raise TypeError(f"the rule function returned {rule!r}, not "
                                        "policy.rule(...) or None")
                    return rule
                op.call = call
            except _Mistake as e:
                op.error = str(e)
            return fn
        return decorate

    @staticmethod
    def rule(key: str, *, tags: Optional[Sequence[str]] = None, ttl: Ttl = TTL_DEFAULT,
             early_ttl: Optional[int] = None, refresh: bool = False,
             lock: bool = False) -> wit.ReadRule:
        """A rendered read rule, for a computed read. Tags default to the key."""
        t = _ttl(ttl)
        return wit.ReadRule(key, t, [key] if tags is None else _strings(tags, "tags"),
                            _early_ttl(early_ttl, t), refresh, lock)

    # -- writes --

    def write(self, name: str, *, tags: Sequence[str] = (), recache: Sequence[recache] = (),
              recache_max_concurrency: Optional[int] = None,
              resource: Optional[resource] = None, tags_with: Optional[TagsFn] = None,
              recache_with: Optional[RecacheFn] = None, params: Optional[Sequence[str]] = None,
              route: Optional[str] = None, **unknown: Any) -> None:
        """``@cache_write``: invalidates ``tags`` (templates; a ``resource`` write adds the
        entity tag) and warms the ``recache`` reads. ``tags_with(args)`` adds tags computed
        per call, ``recache_with(args)`` reads to warm computed per call (``recache_call``);
        either makes the op dynamic."""
        op = self._add(name, wit.OpKind.WRITE, route)
        try:
            _refuse_unknown(unknown, _WRITE_OPTIONS)
            _function(tags_with, "tags_with")
            _function(recache_with, "recache_with")
            inv = [_Template(resource.tag())] if resource else []
            for t in _strings(tags, "tags"):
                tt = _Template(t)
                if tt.text not in [i.text for i in inv]:
                    inv.append(tt)
            recaches = _recaches(recache)
            if not inv and tags_with is None and not recaches and recache_with is None:
                raise _Mistake("a write needs tags to invalidate or reads to recache")
            for r in recaches:
                names = (r.include or []) + [f for f, _ in r.rename] + [t for _, t in r.rename] \
                    + [n for n, _ in r.extra]
                bad = [n for n in names if not _is_param(n)]
                if bad:
                    raise _Mistake(f"recache of `{r.op}`: `{bad[0]}` is not a parameter name")
            concurrency = recache_max_concurrency
            if concurrency is not None and (isinstance(concurrency, bool)
                                            or not isinstance(concurrency, int)
                                            or not 1 <= concurrency < _U32):
                raise _Mistake("recache_max_concurrency must be at least 1")
            used: List[str] = []
            for t in inv:
                _collect(used, t.params())
            for r in recaches:
                _collect(used, (r.include or []) + [f for f, _ in r.rename])
            _collect(used, _route_params(route))
            op.info.params = _check_params(params, used)
            if tags_with is None and recache_with is None:
                op.info.write_template = wit.WriteTemplate(
                    [t.text for t in inv], [r._wit() for r in recaches], concurrency)
            self._pending.append((op, recaches))

            def call(pairs, result):
                a = Args(pairs, result)
                warm = [w for w in (r._apply(pairs) for r in recaches) if w is not None]
                rule = wit.WriteRule([t.render(a) for t in inv], warm, concurrency)
                if tags_with is not None:
                    rule.invalidate.extend(_strings(tags_with(a), "tags_with's result"))
                if recache_with is not None:
                    rule.recache.extend(_calls(recache_with(a)))
                return rule
            op.call = call
        except _Mistake as e:
            op.error = str(e)

    def write_rule(self, name: str, *, params: Optional[Sequence[str]] = None,
                   route: Optional[str] = None, **others: Any) -> Callable[[WriteFn], WriteFn]:
        """Decorator: ``fn(args) -> rule | None``, the whole write rule computed per call
        (``policy.invalidate(...)`` builds it; None: the write touches no cached data)."""
        def decorate(fn: WriteFn) -> WriteFn:
            op = self._add(name, wit.OpKind.WRITE, route)
            try:
                _refuse_unknown(others, ("params", "route"), _WRITE_OPTIONS)
                _function(fn, "the rule")
                op.info.params = _check_params(params, _route_params(route))

                def call(pairs, result):
                    rule = fn(Args(pairs, result))
                    if rule is not None and not isinstance(rule, wit.WriteRule):
                        raise TypeError(f"the rule function returned {rule!r}, not "
                                        "policy.invalidate(...) or None")
                    return rule
                op.call = call
            except _Mistake as e:
                op.error = str(e)
            return fn
        return decorate

    @staticmethod
    def invalidate(tags: Sequence[str] = (), *, recache: Sequence[wit.Recache] = (),
                   recache_max_concurrency: Optional[int] = None) -> wit.WriteRule:
        """A rendered write rule, for a computed write: the tags to invalidate and the reads
        to warm again (``recache_call(...)``)."""
        return wit.WriteRule(_strings(tags, "tags"), _calls(recache), recache_max_concurrency)

    # -- what the component exports --

    def _add(self, name: str, kind: wit.OpKind, route: Optional[str]) -> _Op:
        op = _Op(name, kind, route)
        if any(o.info.name == name for o in self._ops):
            for o in self._ops:
                if o.info.name == name:
                    o.error = "declared more than once"
            op.error = "declared more than once"
        elif not isinstance(name, str) or name == "":
            op.error = "an op name must not be empty"
        self._ops.append(op)
        self._listed = None
        return op

    def _checked(self) -> "CachePolicy":
        if not self._pending and self._settled:
            return self
        self._settled = True
        # Recache targets are known once every op is declared.
        for op, recaches in self._pending:
            for r in recaches:
                target = next((o for o in self._ops if o.info.name == r.op), None)
                # None: a read of another policy loaded beside this one.
                if target is not None and target.info.kind != wit.OpKind.READ:
                    op.error = op.error or f"recache of `{r.op}`, which is a write"
        self._pending = []
        for op in self._ops:
            if op.error:
                op.info.params = None
                op.info.read_template = op.info.write_template = None
        return self

    def errors(self) -> List[str]:
        """The declaration errors, one message per faulty op (``describe`` returns them)."""
        return [f"{o.info.name}: {o.error}" for o in self._listing() if o.error]

    def _listing(self) -> List[_Op]:
        """The ops as ``describe`` lists them, one per name: the host calls op ``i`` of it.
        Built on the first call of any export: an instance the host never asked to
        ``describe`` answers the same."""
        self._checked()
        if self._listed is None:
            seen, self._listed = set(), []
            for o in self._ops:
                if o.info.name not in seen:
                    seen.add(o.info.name)
                    self._listed.append(o)
        return self._listed

    def describe(self) -> wit.PolicyInfo:
        """What ``describe`` exports; raises ``Err`` with every declaration error."""
        errors = self.errors()
        if errors:
            raise Err("; ".join(errors))
        return wit.PolicyInfo(self.name, self.version, [o.info for o in self._listing()])

    def _call(self, index: int, kind: wit.OpKind, pairs, result):
        listed = self._listing()
        if not 0 <= index < len(listed):
            raise Err(f"no operation #{index} (this policy declares {len(listed)})")
        op = listed[index]
        op_name = op.info.name
        if op.error:
            raise Err(f"{op_name}: {op.error}")
        if op.info.kind != kind:
            what = "a write, not a read" if kind == wit.OpKind.READ else "a read, not a write"
            raise Err(f"{op_name}: {what}")
        try:
            return op.call(pairs, result)
        except _Missing as e:
            raise Err(f"{op_name}: {e}")
        except (KeyError, ValueError, TypeError) as e:
            message = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
            raise Err(f"{op_name}: {message}")

    def export(self) -> type:
        """The class implementing the world's ``policy`` export; bind it to the name ``Policy``
        in the app module."""
        policy = self

        class Exports:
            def describe(self) -> wit.PolicyInfo:
                return policy.describe()

            def read(self, op: int, args) -> Optional[wit.ReadRule]:
                return policy._call(op, wit.OpKind.READ, args, None)

            def write(self, op: int, args, result) -> Optional[wit.WriteRule]:
                return policy._call(op, wit.OpKind.WRITE, args, result)

        Exports.declared = policy
        return Exports


def _calls(value: Any) -> List[wit.Recache]:
    if isinstance(value, (str, wit.Recache)):
        raise ValueError("reads to recache must be a list of recache_call(...)")
    items = list(value)
    for r in items:
        if not isinstance(r, wit.Recache):
            raise ValueError(f"reads to recache must be recache_call(...), not {r!r}")
    return items


# ---- testing in CPython ------------------------------------------------------------------


class Compiled:
    """A policy as the host sees it, for tests in CPython (no component is built): the world's
    exports, called by op name with Python values.

    ::

        c = Compiled(policy)
        assert c.errors() == []
        assert c.read("get_user", {"user_id": 42}).key == "user:42"
        assert c.write("update_user", {"user_id": 42}).invalidate == ["user:42"]

    ``read``/``write`` raise ``Err`` (its ``value`` is the message the host would log) where
    the component would answer an error. Args are converted as the host converts a
    service's: None, bool, int, float and str as such, anything else as JSON.
    """

    def __init__(self, policy: Union[CachePolicy, type]):
        self.policy = policy if isinstance(policy, CachePolicy) else policy.declared
        self.exports = self.policy.export()()

    def describe(self) -> wit.PolicyInfo:
        """``describe``'s answer; raises ``Err`` with every declaration error."""
        return self.exports.describe()

    def errors(self) -> List[str]:
        """The declaration errors, one per faulty op."""
        return self.policy.errors()

    def _index(self, op: str) -> int:
        for i, o in enumerate(self.policy._listing()):
            if o.info.name == op:
                return i
        raise Err(f"unknown op `{op}`")

    def read(self, op: str, args: Optional[Mapping[str, Any]] = None) -> Optional[wit.ReadRule]:
        """The rule of one call of the read ``op``, as the component answers it."""
        return self.exports.read(self._index(op), _pairs(args))

    def write(self, op: str, args: Optional[Mapping[str, Any]] = None,
              result: Any = None) -> Optional[wit.WriteRule]:
        """The rule of one call of the write ``op``; ``result`` is the action's return value."""
        value = None if result is None else to_value(result)
        return self.exports.write(self._index(op), _pairs(args), value)


def _pairs(args: Optional[Mapping[str, Any]]) -> List[Tuple[str, wit.Value]]:
    return [(n, to_value(v)) for n, v in (args or {}).items()]
