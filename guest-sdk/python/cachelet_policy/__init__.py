"""Write cachelet cache policies in Python (componentize-py).

A policy declares its operations in the terms of Python's ``svc_infra.cache``
(``cache_read``, ``cache_write``, ``recache``, ``resource``)::

    from cachelet_policy import CachePolicy, recache, resource, TTL_DEFAULT

    policy = CachePolicy("users", "0.1.0")
    policy.read("get_user", key="user:{user_id}", ttl=300)     # tagged with its key
    policy.write("update_user", tags=["user:{user_id}"],
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

Declaration mistakes (an unbalanced brace, placeholders without a ``:`` between them, a recache
of a write, an ``early_ttl`` not below the TTL) do not raise: ``describe`` returns them all, each
naming its op, and the host refuses to load the policy; ``policy.errors()`` lists them.
"""

from decimal import Decimal
import json
import math

from componentize_py_types import Err
from wit_world.imports import types as wit

__all__ = [
    "CachePolicy", "Args", "recache", "resource", "render_value",
    "TTL_SHORT", "TTL_DEFAULT", "TTL_LONG",
]

#: TTL buckets the host resolves from its settings (30 s, 300 s and 3600 s by default).
TTL_SHORT = wit.TtlBucket.SHORT
TTL_DEFAULT = wit.TtlBucket.DEFAULT
TTL_LONG = wit.TtlBucket.LONG


def _ttl(ttl):
    if isinstance(ttl, wit.TtlBucket):
        return wit.Ttl_Bucket(ttl)
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not 0 <= ttl < 2**32:
        raise ValueError(f"ttl {ttl!r} is neither seconds (0 .. 2^32-1) nor a TTL bucket")
    return wit.Ttl_Seconds(ttl)


# ---- values ------------------------------------------------------------------------------


def to_value(v):
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
    return wit.Value_Json(json.dumps(v, separators=(",", ":")))


def from_value(v):
    """A WIT ``value`` as a Python value (JSON text parsed)."""
    if isinstance(v, wit.Value_Null):
        return None
    if isinstance(v, wit.Value_Json):
        return json.loads(v.value)
    return v.value


def _render_float(f):
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


def _escape_text(text):
    # `%` first, so that the `%` of `%3A` is not escaped again.
    if "%" in text:
        text = text.replace("%", "%25")
    if ":" in text:
        text = text.replace(":", "%3A")
    return text


def render_value(v):
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


def _is_param(name):
    return name != "" and all(c == "_" or (c.isascii() and c.isalnum()) for c in name)


def _escape(text):
    return text.replace("{", "{{").replace("}", "}}")


class _Template:
    """A key or tag template: literal text and ``{param}`` placeholders, with a ``:`` in the
    literal text between any two placeholders (``separated=False``: the braces only, for a
    route)."""

    def __init__(self, text, separated=True):
        self.text = text
        self.parts = []  # str: literal; tuple (name,): placeholder
        literal, i = [], 0
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
                raise ValueError(f"template `{text}`: unmatched `}}` at byte {_byte(text, i)} "
                                 "(write `}}` for a literal brace)")
            if c == "{":
                end = text.find("}", i + 1)
                if end < 0:
                    raise ValueError(f"template `{text}`: unclosed `{{` at byte {_byte(text, i)} "
                                     "(write `{{` for a literal brace)")
                name = text[i + 1:end]
                if name == "":
                    raise ValueError(f"template `{text}`: empty placeholder `{{}}` at byte "
                                     f"{_byte(text, i)}")
                if not _is_param(name):
                    raise ValueError(f"template `{text}`: invalid placeholder `{{{name}}}`: "
                                     "a name has only ASCII letters, digits and `_`")
                if separated and last is not None and not colon:
                    raise ValueError(f"template `{text}`: placeholders `{{{last}}}` and "
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

    def params(self):
        return [p[0] for p in self.parts if isinstance(p, tuple)]

    def render(self, args):
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


def _byte(text, i):
    return len(text[:i].encode())


class _Missing(Exception):
    def __init__(self, param, template):
        super().__init__(f"no argument `{param}` for the placeholder `{{{param}}}` of `{template}`")


# ---- the arguments of one call -----------------------------------------------------------


class Args:
    """The named arguments of one call (and, for a write, its result).

    ``args["user_id"]`` is the argument as a Python value (JSON parsed); ``args.render(t)``
    renders a template exactly as the host does.
    """

    def __init__(self, pairs, result=None):
        self.pairs = pairs
        self.result = None if result is None else from_value(result)

    def value(self, name):
        """The WIT value of argument ``name``, or None when the call has none."""
        for n, v in self.pairs:
            if n == name:
                return v
        return None

    def __contains__(self, name):
        return self.value(name) is not None

    def __getitem__(self, name):
        v = self.value(name)
        if v is None:
            raise KeyError(f"no argument `{name}`")
        return from_value(v)

    def get(self, name, default=None):
        v = self.value(name)
        return default if v is None else from_value(v)

    def render(self, template):
        """Renders ``template`` (e.g. ``"user:{user_id}"``) with these arguments."""
        parsed = _PARSED.get(template)
        if parsed is None:
            parsed = _Template(template)
            if len(_PARSED) < 1024:
                _PARSED[template] = parsed
        return parsed.render(self)


# Templates rendered by dynamic ops, parsed once.
_PARSED = {}


# ---- declarations ------------------------------------------------------------------------


class resource:
    """``resource("user", "user_id")``: reads keyed ``user:{suffix}:{user_id}``, all tagged
    ``user:{user_id}``; a resource write invalidates that tag."""

    def __init__(self, entity, id_param):
        self.entity, self.id_param = entity, id_param

    def tag(self):
        if not _is_param(self.id_param):
            raise ValueError(f"resource id `{self.id_param}` is not a parameter name "
                             "(ASCII letters, digits, `_`)")
        return f"{_escape(self.entity)}:{{{self.id_param}}}"


class recache:
    """A read to warm again after a write: ``op`` called with the write's arguments (all of
    them, or those in ``include``), renamed by ``rename`` ({write name: read name}), plus
    ``extra`` constants."""

    def __init__(self, op, include=None, rename=None, extra=None):
        self.op = op
        self.include = None if include is None else list(include)
        self.rename = list((rename or {}).items())
        self.extra = [(n, to_value(v)) for n, v in (extra or {}).items()]

    def _wit(self):
        return wit.RecacheTemplate(self.op, self.include, self.rename, self.extra)

    def _apply(self, pairs):
        passed = []
        if self.include is None:
            for n, v in pairs:
                _set(passed, n, v)
        else:
            for name in self.include:
                v = Args(pairs).value(name)
                if v is None:
                    raise ValueError(f"recache of `{self.op}`: no argument `{name}` to include")
                _set(passed, name, v)
        out = []
        renames = dict(self.rename)
        for n, v in passed:
            _set(out, renames.get(n, n), v)
        for n, v in self.extra:
            _set(out, n, v)
        return wit.Recache(self.op, out)


def _set(pairs, name, value):
    for i, (n, _) in enumerate(pairs):
        if n == name:
            pairs[i] = (name, value)
            return
    pairs.append((name, value))


def _collect(params, names):
    for n in names:
        if n not in params:
            params.append(n)


def _check_params(declared, used):
    if declared is None:
        return used
    for p in declared:
        if not _is_param(p):
            raise ValueError(f"`{p}` is not a parameter name")
    for u in used:
        if u not in declared:
            raise ValueError(f"uses `{u}`, which is not among its params ({', '.join(declared)})")
    return list(declared)


def _route_params(route):
    try:
        return _Template(route, separated=False).params() if route else []
    except ValueError:
        return []


class _Op:
    def __init__(self, name, kind, route):
        self.info = wit.OpInfo(name, kind, [], route, None, None)
        self.error = None
        self.call = None  # (args_pairs, result) -> rule


class CachePolicy:
    """A policy's declaration: call ``read``/``write`` (or their decorator forms) once per
    operation, at import time."""

    def __init__(self, name, version="0.1.0"):
        self.name, self.version = name, version
        self._ops = []
        self._reads = {}  # declared reads, for recache checks: name -> is_read
        self._pending = []  # writes whose recache targets are checked on first use
        self._settled = False
        self._listed = None  # the ops as ``describe`` lists them, once computed

    # -- reads --

    def read(self, name, *, key=None, tags=None, ttl=TTL_DEFAULT, early_ttl=None,
             refresh=False, lock=False, resource=None, suffix=None, params=None, route=None):
        """``@cache_read``: an op rendered from templates. Tags default to the key; a
        ``resource`` read is keyed ``{entity}:{suffix}:{id}`` and always carries the entity
        tag."""
        op = self._add(name, wit.OpKind.READ, route)
        try:
            entity = _Template(resource.tag()) if resource else None
            if key is not None:
                k = _Template(key)
            elif resource is not None and suffix is not None:
                k = _Template(f"{_escape(resource.entity)}:{_escape(suffix)}:{{{resource.id_param}}}")
            elif resource is not None:
                raise ValueError("a resource read needs a suffix or a key")
            else:
                raise ValueError("a read needs a key")
            if suffix is not None and resource is None:
                raise ValueError("suffix is only for a resource read")
            if tags is not None:
                ts = [_Template(t) for t in tags]
            else:
                ts = [] if entity else [k]
            if entity:
                if tags is not None and not tags:
                    raise ValueError("a resource read always carries its entity tag; "
                                     "it cannot be untagged")
                if entity.text not in [t.text for t in ts]:
                    ts.append(entity)
            t = _ttl(ttl)
            if early_ttl is not None and isinstance(t, wit.Ttl_Seconds) and early_ttl >= t.value:
                raise ValueError(f"early_ttl ({early_ttl} s) must be less than the ttl "
                                 f"({t.value} s)")
            used = []
            _collect(used, k.params())
            for tt in ts:
                _collect(used, tt.params())
            _collect(used, _route_params(route))
            op.info.params = _check_params(params, used)
            template = wit.ReadRule(k.text, t, [tt.text for tt in ts], early_ttl, refresh, lock)
            op.info.read_template = template

            def call(pairs, _result):
                return wit.ReadRule(k.render(Args(pairs)), t, [tt.render(Args(pairs)) for tt in ts],
                                    early_ttl, refresh, lock)
            op.call = call
        except ValueError as e:
            op.error = str(e)

    def read_rule(self, name, *, params=None, route=None):
        """Decorator: ``fn(args) -> rule | None``, computed per call (``policy.rule(...)``
        builds the rule; None: do not cache this call)."""
        def decorate(fn):
            op = self._add(name, wit.OpKind.READ, route)
            try:
                op.info.params = _check_params(params, _route_params(route))
                op.call = lambda pairs, _result: fn(Args(pairs))
            except ValueError as e:
                op.error = str(e)
            return fn
        return decorate

    @staticmethod
    def rule(key, *, tags=None, ttl=TTL_DEFAULT, early_ttl=None, refresh=False, lock=False):
        """A rendered read rule, for a dynamic op. Tags default to the key."""
        return wit.ReadRule(key, _ttl(ttl), [key] if tags is None else list(tags),
                            early_ttl, refresh, lock)

    # -- writes --

    def write(self, name, *, tags=(), recache=(), recache_max_concurrency=None, resource=None,
              params=None, route=None):
        """``@cache_write``: invalidates ``tags`` (templates; a ``resource`` write adds the
        entity tag) and warms the ``recache`` reads."""
        self._write(name, tags, recache, recache_max_concurrency, resource, params, route, None)

    def write_tags(self, name, *, tags=(), recache=(), recache_max_concurrency=None,
                   resource=None, params=None, route=None):
        """Decorator: ``fn(args) -> [tag, ...]``, tags computed per call (``tags=`` of
        ``@cache_write`` given a function), added to any declared ones."""
        def decorate(fn):
            self._write(name, tags, recache, recache_max_concurrency, resource, params, route, fn)
            return fn
        return decorate

    def _write(self, name, tags, recaches, concurrency, resource, params, route, tags_fn):
        op = self._add(name, wit.OpKind.WRITE, route)
        try:
            inv = [_Template(resource.tag())] if resource else []
            for t in tags:
                t = _Template(t)
                if t.text not in [i.text for i in inv]:
                    inv.append(t)
            recaches = list(recaches)
            if not inv and tags_fn is None and not recaches:
                raise ValueError("a write needs tags to invalidate or reads to recache")
            for r in recaches:
                names = (r.include or []) + [f for f, _ in r.rename] + [t for _, t in r.rename] \
                    + [n for n, _ in r.extra]
                bad = [n for n in names if not _is_param(n)]
                if bad:
                    raise ValueError(f"recache of `{r.op}`: `{bad[0]}` is not a parameter name")
            if concurrency == 0:
                raise ValueError("recache_max_concurrency must be at least 1")
            used = []
            for t in inv:
                _collect(used, t.params())
            for r in recaches:
                _collect(used, (r.include or []) + [f for f, _ in r.rename])
            _collect(used, _route_params(route))
            op.info.params = _check_params(params, used)
            if tags_fn is None:
                op.info.write_template = wit.WriteTemplate(
                    [t.text for t in inv], [r._wit() for r in recaches], concurrency)
            self._pending.append((op, recaches))

            def call(pairs, result):
                rule = wit.WriteRule([t.render(Args(pairs)) for t in inv],
                                     [r._apply(pairs) for r in recaches], concurrency)
                if tags_fn is not None:
                    rule.invalidate.extend(tags_fn(Args(pairs, result)))
                return rule
            op.call = call
        except ValueError as e:
            op.error = str(e)

    # -- what the component exports --

    def _add(self, name, kind, route):
        op = _Op(name, kind, route)
        if any(o.info.name == name for o in self._ops):
            for o in self._ops:
                if o.info.name == name:
                    o.error = "declared more than once"
            op.error = "declared more than once"
        elif name == "":
            op.error = "an op name must not be empty"
        self._ops.append(op)
        self._listed = None
        return op

    def _checked(self):
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
                op.info.params = []
                op.info.read_template = op.info.write_template = None
        return self

    def errors(self):
        """The declaration errors, one message per faulty op (``describe`` returns them)."""
        return [f"{o.info.name}: {o.error}" for o in self._listing() if o.error]

    def _listing(self):
        """The ops as ``describe`` lists them, one per name: the host calls op ``i`` of it."""
        self._checked()
        if self._listed is None:
            seen, self._listed = set(), []
            for o in self._ops:
                if o.info.name not in seen:
                    seen.add(o.info.name)
                    self._listed.append(o)
        return self._listed

    def describe(self):
        """What ``describe`` exports; raises ``Err`` with every declaration error."""
        errors = self.errors()
        if errors:
            raise Err("; ".join(errors))
        return wit.PolicyInfo(self.name, self.version, [o.info for o in self._listing()])

    def _call(self, index, kind, pairs, result):
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

    def export(self):
        """The class implementing the world's ``policy`` export; bind it to the name ``Policy``
        in the app module."""
        policy = self

        class Exports:
            def describe(self):
                return policy.describe()

            def read(self, op, args):
                return policy._call(op, wit.OpKind.READ, args, None)

            def write(self, op, args, result):
                return policy._call(op, wit.OpKind.WRITE, args, result)

        return Exports
