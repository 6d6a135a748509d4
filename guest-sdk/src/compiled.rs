//! A declared policy, checked and compiled into what answers the host's `describe`, `read` and
//! `write`.

use cachelet_template::{is_param_name, literal as escape, placeholders, Template};

use crate::policy::{Op, ReadFn, ReadOp, RecacheFn, Resource, TagsFn, WriteFn, WriteOp};
use crate::{
    Args, OpInfo, OpKind, Policy, PolicyInfo, ReadRule, RecacheTemplate, Ttl, Value, WriteRule,
    WriteTemplate,
};

/// A policy, compiled from its declaration: what [`export_policy!`](crate::export_policy)
/// exports to the host. Build one in native tests to check a policy's rules.
///
/// ```
/// use cachelet_guest::prelude::*;
///
/// fn define(p: &mut Policy) {
///     p.read("get_user").key("user:{user_id}").ttl(300);
/// }
///
/// let policy = Compiled::new(define);
/// let call = [("user_id".to_string(), Value::Integer(42))];
/// let rule = policy.read("get_user", &call).unwrap().unwrap();
/// assert_eq!(rule.key, "user:42");
/// assert_eq!(rule.tags, ["user:42"]);
/// assert_eq!(rule.ttl, Ttl::Seconds(300));
///
/// // The host renders the same rule itself from the template that `describe` reports.
/// let template = policy.describe().unwrap().ops[0].read_template.clone().unwrap();
/// assert_eq!(template.key, "user:{user_id}");
///
/// assert_eq!(
///     policy.read("get_user", &[]).unwrap_err(),
///     "get_user: no argument `user_id` for the placeholder `{user_id}` of `user:{user_id}`"
/// );
/// ```
pub struct Compiled {
    info: PolicyInfo,
    /// `ops[i]` answers for `info.ops[i]`: the host calls op `i` (its position in `describe`).
    ops: Vec<OpImpl>,
}

enum OpImpl {
    Read(ReadImpl),
    Write(WriteImpl),
    /// A declaration error: `describe` refuses the policy, and every call of the op returns it.
    Broken(String),
}

enum ReadImpl {
    Template {
        key: Template,
        tags: Vec<Template>,
        /// The rule with everything but `key` and `tags`.
        rest: ReadRule,
    },
    Dynamic(Box<ReadFn>),
}

enum WriteImpl {
    Parts {
        invalidate: Vec<Template>,
        recache: Vec<RecacheTemplate>,
        concurrency: Option<u32>,
        tags_fn: Option<Box<TagsFn>>,
        recache_fn: Option<Box<RecacheFn>>,
    },
    Dynamic(Box<WriteFn>),
}

impl Compiled {
    /// Runs `define` on an empty [`Policy`] and compiles the declaration. Never panics: the
    /// mistakes are listed by [`Compiled::errors`], and [`Compiled::describe`] returns them.
    pub fn new(define: impl FnOnce(&mut Policy)) -> Compiled {
        let mut policy = Policy::default();
        define(&mut policy);
        Compiled::compile(policy, "policy", "0.0.0")
    }

    /// Compiles `policy`, with the name and version to report if it sets none.
    pub(crate) fn compile(policy: Policy, name: &str, version: &str) -> Compiled {
        // Every declared name, and whether it is a read.
        let declared: Vec<(String, bool)> = policy
            .ops
            .iter()
            .map(|op| (op.name().to_owned(), matches!(op, Op::Read(_))))
            .collect();
        let mut info_ops = Vec::new();
        let mut ops = Vec::new();
        for op in policy.ops {
            let name = op.name().to_owned();
            if info_ops.iter().any(|o: &OpInfo| o.name == name) {
                continue;
            }
            let (kind, route) = match &op {
                Op::Read(r) => (OpKind::Read, r.route.clone()),
                Op::Write(w) => (OpKind::Write, w.route.clone()),
            };
            let mut info = OpInfo {
                name: name.clone(),
                kind,
                params: None,
                route,
                read_template: None,
                write_template: None,
            };
            let count = declared.iter().filter(|(n, _)| *n == name).count();
            let compiled = if count > 1 {
                Err("declared more than once".to_owned())
            } else if name.is_empty() {
                Err("an op name must not be empty".to_owned())
            } else {
                match op {
                    Op::Read(r) => compile_read(r, &mut info).map(OpImpl::Read),
                    Op::Write(w) => compile_write(w, &declared, &mut info).map(OpImpl::Write),
                }
            };
            let compiled = compiled.unwrap_or_else(|e| {
                info.params = None;
                info.read_template = None;
                info.write_template = None;
                OpImpl::Broken(format!("{name}: {e}"))
            });
            info_ops.push(info);
            ops.push(compiled);
        }
        Compiled {
            info: PolicyInfo {
                name: policy.name.unwrap_or_else(|| name.to_owned()),
                version: policy.version.unwrap_or_else(|| version.to_owned()),
                ops: info_ops,
            },
            ops,
        }
    }

    /// What the policy is and which operations it handles; static ops come with their
    /// templates. `Err` when a declaration is wrong: every mistake, as `{op}: {mistake}`
    /// joined by `; ` (what the host's load error shows).
    ///
    /// ```
    /// use cachelet_guest::prelude::*;
    ///
    /// let policy = Compiled::new(|p| {
    ///     p.read("get_user").key("user:{user_id");
    ///     p.write("update_user").tags(["user:{org_id}{user_id}"]);
    /// });
    /// assert_eq!(
    ///     policy.describe().unwrap_err(),
    ///     "get_user: template `user:{user_id`: unclosed `{` at byte 5 (write `{{` for a literal \
    ///      brace); update_user: template `user:{org_id}{user_id}`: placeholders `{org_id}` and \
    ///      `{user_id}` have no `:` between them (distinct arguments could render to the same text)"
    /// );
    /// ```
    pub fn describe(&self) -> Result<PolicyInfo, String> {
        let errors = self.errors();
        if errors.is_empty() {
            Ok(self.info.clone())
        } else {
            Err(errors.join("; "))
        }
    }

    /// The declaration errors, one message per faulty op (empty when the policy is sound).
    pub fn errors(&self) -> Vec<&str> {
        self.ops
            .iter()
            .filter_map(|op| match op {
                OpImpl::Broken(e) => Some(e.as_str()),
                _ => None,
            })
            .collect()
    }

    /// How to cache one call of the read `op`, exactly as the host renders a static op's
    /// template. `Ok(None)`: do not cache this call.
    pub fn read(&self, op: &str, args: &[(String, Value)]) -> Result<Option<ReadRule>, String> {
        self.read_at(self.position(op)?, args)
    }

    /// [`read`](Self::read) of the op at `index` in [`describe`](Self::describe)'s list: how
    /// the host calls.
    pub fn read_at(
        &self,
        index: u32,
        args: &[(String, Value)],
    ) -> Result<Option<ReadRule>, String> {
        let (op, found) = self.at(index)?;
        match found {
            OpImpl::Read(ReadImpl::Template { key, tags, rest }) => {
                let args = Args::new(args, None);
                let render =
                    |t: &Template| args.render_template(t).map_err(|e| format!("{op}: {e}"));
                Ok(Some(ReadRule {
                    key: render(key)?,
                    tags: tags.iter().map(render).collect::<Result<_, _>>()?,
                    ..rest.clone()
                }))
            }
            OpImpl::Read(ReadImpl::Dynamic(rule)) => {
                rule(&Args::new(args, None)).map_err(|e| format!("{op}: {e}"))
            }
            OpImpl::Write(_) => Err(format!("{op}: a write, not a read")),
            OpImpl::Broken(e) => Err(e.clone()),
        }
    }

    /// What a successful call of the write `op` does to the cache; `result` is the write
    /// action's return value, if any. For a static op, exactly what the host renders.
    pub fn write(
        &self,
        op: &str,
        args: &[(String, Value)],
        result: Option<&Value>,
    ) -> Result<Option<WriteRule>, String> {
        self.write_at(self.position(op)?, args, result)
    }

    /// [`write`](Self::write) of the op at `index` in [`describe`](Self::describe)'s list: how
    /// the host calls.
    pub fn write_at(
        &self,
        index: u32,
        args: &[(String, Value)],
        result: Option<&Value>,
    ) -> Result<Option<WriteRule>, String> {
        let (op, found) = self.at(index)?;
        let call = Args::new(args, result);
        let fail = |e: String| format!("{op}: {e}");
        match found {
            OpImpl::Write(WriteImpl::Parts {
                invalidate,
                recache,
                concurrency,
                tags_fn,
                recache_fn,
            }) => {
                let mut rule = WriteRule {
                    invalidate: Vec::with_capacity(invalidate.len()),
                    recache: Vec::with_capacity(recache.len()),
                    recache_concurrency: *concurrency,
                };
                for t in invalidate {
                    let tag = call.render_template(t).map_err(fail)?;
                    rule.invalidate.push(tag);
                }
                // A recache the call lacks an argument for is skipped, as the host skips it.
                rule.recache
                    .extend(recache.iter().filter_map(|r| r.apply(args)));
                if let Some(tags) = tags_fn {
                    rule.invalidate.extend(tags(&call).map_err(fail)?);
                }
                if let Some(more) = recache_fn {
                    rule.recache.extend(more(&call).map_err(fail)?);
                }
                Ok(Some(rule))
            }
            OpImpl::Write(WriteImpl::Dynamic(rule)) => rule(&call).map_err(fail),
            OpImpl::Read(_) => Err(format!("{op}: a read, not a write")),
            OpImpl::Broken(e) => Err(e.clone()),
        }
    }

    /// The position of the op named `op`.
    fn position(&self, op: &str) -> Result<u32, String> {
        let i = self.info.ops.iter().position(|o| o.name == op);
        i.map(|i| i as u32)
            .ok_or_else(|| format!("unknown op `{op}`"))
    }

    /// The name and implementation of the op at `index`.
    fn at(&self, index: u32) -> Result<(&str, &OpImpl), String> {
        let i = index as usize;
        match (self.info.ops.get(i), self.ops.get(i)) {
            (Some(info), Some(op)) => Ok((&info.name, op)),
            _ => Err(format!(
                "no operation #{index} (this policy declares {})",
                self.ops.len()
            )),
        }
    }
}

fn parse(text: &str) -> Result<Template, String> {
    Template::parse(text).map_err(|e| e.to_string())
}

/// `{entity}:{id_param}`, the tag every entry of the resource carries.
fn entity_tag(r: &Resource) -> Result<Template, String> {
    if !is_param_name(&r.id_param) {
        return Err(format!(
            "resource id `{}` is not a parameter name (ASCII letters, digits, `_`)",
            r.id_param
        ));
    }
    parse(&format!("{}:{{{}}}", escape(&r.entity), r.id_param))
}

/// Adds each placeholder of `templates` to `params`, once.
fn collect_params<'t>(params: &mut Vec<String>, names: impl IntoIterator<Item = &'t str>) {
    for name in names {
        if !params.iter().any(|p| p == name) {
            params.push(name.to_owned());
        }
    }
}

/// The placeholders of a route, if its braces parse (a route is no key: `/` separates).
fn route_params(route: Option<&String>) -> Vec<String> {
    let mut params = Vec::new();
    if let Some(names) = route.and_then(|r| placeholders(r).ok()) {
        collect_params(&mut params, names);
    }
    params
}

/// The params to report: the declared ones, after checking that `used` is a subset; none when
/// the op declares none (the host's `cachelet check` then warns that nothing could be checked).
fn check_params(
    declared: Option<&Vec<String>>,
    used: Vec<String>,
) -> Result<Option<Vec<String>>, String> {
    let Some(declared) = declared else {
        return Ok(None);
    };
    if let Some(bad) = declared.iter().find(|p| !is_param_name(p)) {
        return Err(format!("`{bad}` is not a parameter name"));
    }
    if let Some(unknown) = used.iter().find(|u| !declared.contains(u)) {
        return Err(format!(
            "uses `{unknown}`, which is not among its params ({})",
            declared.join(", ")
        ));
    }
    Ok(Some(declared.clone()))
}

fn compile_read(r: ReadOp, info: &mut OpInfo) -> Result<ReadImpl, String> {
    if let Some(rule) = r.rule_fn {
        let others = [
            ("key", r.key.is_some()),
            ("tags", r.tags.is_some()),
            ("suffix", r.suffix.is_some()),
            ("ttl", r.ttl.is_some()),
            ("early_ttl", r.early_ttl.is_some()),
            ("refresh", r.refresh.is_some()),
            ("lock", r.lock.is_some()),
            ("a resource", r.resource.is_some()),
        ];
        if let Some((what, _)) = others.iter().find(|(_, set)| *set) {
            return Err(format!("a computed rule cannot also declare {what}"));
        }
        info.params = check_params(r.params.as_ref(), route_params(r.route.as_ref()))?;
        return Ok(ReadImpl::Dynamic(rule));
    }

    let entity = r.resource.as_ref().map(entity_tag).transpose()?;
    let key = match (&r.key, &r.resource, &r.suffix) {
        (Some(key), _, _) => parse(key)?,
        (None, Some(res), Some(suffix)) => parse(&format!(
            "{}:{}:{{{}}}",
            escape(&res.entity),
            escape(suffix),
            res.id_param
        ))?,
        (None, Some(_), None) => return Err("a resource read needs a suffix or a key".into()),
        (None, None, _) => return Err("a read needs a key".into()),
    };
    if r.suffix.is_some() && r.resource.is_none() {
        return Err("suffix is only for a resource read".into());
    }
    let mut tags = match &r.tags {
        Some(tags) => tags
            .iter()
            .map(|t| parse(t))
            .collect::<Result<Vec<_>, _>>()?,
        None if entity.is_some() => Vec::new(),
        None => vec![key.clone()],
    };
    if let Some(entity) = entity {
        if r.tags.as_ref().is_some_and(Vec::is_empty) {
            return Err(
                "a resource read always carries its entity tag; it cannot be untagged".into(),
            );
        }
        if !tags.contains(&entity) {
            tags.push(entity);
        }
    }
    let ttl = r.ttl.unwrap_or(Ttl::DEFAULT);
    if let (Some(early), Ttl::Seconds(ttl)) = (r.early_ttl, ttl) {
        if early >= ttl {
            return Err(format!(
                "early_ttl ({early} s) must be less than the ttl ({ttl} s)"
            ));
        }
    }

    let mut used = Vec::new();
    collect_params(&mut used, key.params());
    for t in &tags {
        collect_params(&mut used, t.params());
    }
    collect_params(
        &mut used,
        route_params(r.route.as_ref()).iter().map(String::as_str),
    );
    info.params = check_params(r.params.as_ref(), used)?;

    let rest = ReadRule {
        key: String::new(),
        ttl,
        tags: Vec::new(),
        early_ttl: r.early_ttl,
        refresh: r.refresh.unwrap_or(false),
        lock: r.lock.unwrap_or(false),
    };
    info.read_template = Some(ReadRule {
        key: key.text().to_owned(),
        tags: tags.iter().map(|t| t.text().to_owned()).collect(),
        ..rest.clone()
    });
    Ok(ReadImpl::Template { key, tags, rest })
}

fn compile_write(
    w: WriteOp,
    declared: &[(String, bool)],
    info: &mut OpInfo,
) -> Result<WriteImpl, String> {
    if let Some(rule) = w.rule_fn {
        let others = [
            ("tags", !w.tags.is_empty()),
            ("tags_with", w.tags_fn.is_some()),
            ("recache", !w.recache.is_empty()),
            ("recache_with", w.recache_fn.is_some()),
            ("recache_max_concurrency", w.concurrency.is_some()),
            ("a resource", w.resource.is_some()),
        ];
        if let Some((what, _)) = others.iter().find(|(_, set)| *set) {
            return Err(format!("a computed rule cannot also declare {what}"));
        }
        info.params = check_params(w.params.as_ref(), route_params(w.route.as_ref()))?;
        return Ok(WriteImpl::Dynamic(rule));
    }

    let mut invalidate = Vec::new();
    if let Some(r) = &w.resource {
        invalidate.push(entity_tag(r)?);
    }
    for t in &w.tags {
        let t = parse(t)?;
        if !invalidate.contains(&t) {
            invalidate.push(t);
        }
    }
    if invalidate.is_empty()
        && w.tags_fn.is_none()
        && w.recache.is_empty()
        && w.recache_fn.is_none()
    {
        return Err("a write needs tags to invalidate or reads to recache".into());
    }
    for r in &w.recache {
        match declared
            .iter()
            .find(|(n, _)| *n == r.op)
            .map(|(_, read)| read)
        {
            Some(true) => {}
            Some(false) => return Err(format!("recache of `{}`, which is a write", r.op)),
            // A read of another policy loaded beside this one.
            None => {}
        }
        let names = r
            .include
            .iter()
            .flatten()
            .chain(r.rename.iter().map(|(from, _)| from));
        let renamed = r.rename.iter().map(|(_, to)| to);
        let extra = r.extra.iter().map(|(name, _)| name);
        if let Some(bad) = names
            .chain(renamed)
            .chain(extra)
            .find(|n| !is_param_name(n))
        {
            return Err(format!(
                "recache of `{}`: `{bad}` is not a parameter name",
                r.op
            ));
        }
    }
    if w.concurrency == Some(0) {
        return Err("recache_max_concurrency must be at least 1".into());
    }

    let mut used = Vec::new();
    for t in &invalidate {
        collect_params(&mut used, t.params());
    }
    for r in &w.recache {
        let names = r
            .include
            .iter()
            .flatten()
            .chain(r.rename.iter().map(|(from, _)| from));
        collect_params(&mut used, names.map(String::as_str));
    }
    collect_params(
        &mut used,
        route_params(w.route.as_ref()).iter().map(String::as_str),
    );
    info.params = check_params(w.params.as_ref(), used)?;

    let dynamic = w.tags_fn.is_some() || w.recache_fn.is_some();
    if !dynamic {
        info.write_template = Some(WriteTemplate {
            invalidate: invalidate.iter().map(|t| t.text().to_owned()).collect(),
            recache: w.recache.clone(),
            recache_concurrency: w.concurrency,
        });
    }
    Ok(WriteImpl::Parts {
        invalidate,
        recache: w.recache,
        concurrency: w.concurrency,
        tags_fn: w.tags_fn,
        recache_fn: w.recache_fn,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{recache, resource, Recache};

    fn call(pairs: &[(&str, Value)]) -> Vec<(String, Value)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.clone()))
            .collect()
    }

    fn op<'p>(info: &'p PolicyInfo, name: &str) -> &'p OpInfo {
        info.ops.iter().find(|o| o.name == name).unwrap()
    }

    /// The host's side, written independently: replace `{name}` by the value's text (text
    /// escaped), then resolve the brace escapes.
    fn host_render(template: &str, args: &[(String, Value)]) -> String {
        let mut s = template.replace("{{", "\u{1}").replace("}}", "\u{2}");
        for (name, value) in args {
            let text = match value {
                Value::Null => "null".to_string(),
                Value::Boolean(b) => b.to_string(),
                Value::Integer(i) => i.to_string(),
                Value::Float(f) => f.to_string(),
                Value::Text(t) | Value::Json(t) => t.replace('%', "%25").replace(':', "%3A"),
            };
            s = s.replace(&format!("{{{name}}}"), &text);
        }
        s.replace('\u{1}', "{").replace('\u{2}', "}")
    }

    #[test]
    fn static_read_matches_its_template() {
        let policy = Compiled::new(|p| {
            p.read("get_org_user")
                .key("org:{org_id}:user:{user_id}")
                .tags(["user:{user_id}", "org:{org_id}:users"])
                .ttl(600)
                .early_ttl(30)
                .refresh(true)
                .lock(true);
        });
        assert!(policy.errors().is_empty());
        let info = policy.describe().unwrap();
        let o = op(&info, "get_org_user");
        assert_eq!(o.kind, OpKind::Read);
        // Undeclared: reported as none (nothing could be checked).
        assert_eq!(o.params, None);
        let t = o.read_template.clone().unwrap();
        assert_eq!(
            t,
            ReadRule {
                key: "org:{org_id}:user:{user_id}".into(),
                ttl: Ttl::Seconds(600),
                tags: vec!["user:{user_id}".into(), "org:{org_id}:users".into()],
                early_ttl: Some(30),
                refresh: true,
                lock: true,
            }
        );
        let args = call(&[
            ("user_id", Value::Integer(7)),
            ("org_id", Value::from("acme")),
        ]);
        let rule = policy.read("get_org_user", &args).unwrap().unwrap();
        assert_eq!(rule.key, "org:acme:user:7");
        assert_eq!(rule.tags, ["user:7", "org:acme:users"]);
        assert_eq!(rule.key, host_render(&t.key, &args));
        assert_eq!(
            rule.tags,
            t.tags
                .iter()
                .map(|x| host_render(x, &args))
                .collect::<Vec<_>>()
        );
        assert_eq!(
            (rule.ttl, rule.early_ttl, rule.refresh, rule.lock),
            (t.ttl, t.early_ttl, true, true)
        );
    }

    #[test]
    fn read_defaults() {
        let policy = Compiled::new(|p| {
            p.read("a").key(("user", "card", "{user_id}"));
            p.read("b").key(["x", "{y}"]).untagged();
            p.read("c").key(vec!["{{lit}}", "{z}"].as_slice());
        });
        let info = policy.describe().unwrap();
        let a = op(&info, "a").read_template.clone().unwrap();
        assert_eq!(a.key, "user:card:{user_id}");
        assert_eq!(a.tags, ["user:card:{user_id}"]);
        assert_eq!(a.ttl, Ttl::DEFAULT);
        assert_eq!((a.early_ttl, a.refresh, a.lock), (None, false, false));
        assert!(op(&info, "b")
            .read_template
            .as_ref()
            .unwrap()
            .tags
            .is_empty());
        let c = policy
            .read("c", &call(&[("z", Value::Float(1.5))]))
            .unwrap()
            .unwrap();
        assert_eq!(c.key, "{lit}:1.5");
    }

    #[test]
    fn resource_reads_carry_the_entity_tag() {
        let policy = Compiled::new(|p| {
            let user = resource("user", "user_id");
            p.read_resource(&user, "profile").suffix("profile").ttl(300);
            p.read_resource(&user, "v2")
                .suffix("profile")
                .key("v2:user:{user_id}:profile")
                .tags(["profiles"]);
            p.read_resource(&user, "v3")
                .key("v3:{user_id}")
                .tags(["user:{user_id}", "profiles"]);
            p.write_resource(&user, "update")
                .tags(["users"])
                .recache(recache("profile").include(["user_id"]))
                .recache_max_concurrency(3);
        });
        assert!(policy.errors().is_empty(), "{:?}", policy.errors());
        let info = policy.describe().unwrap();
        let t = |name| op(&info, name).read_template.clone().unwrap();
        assert_eq!(t("profile").key, "user:profile:{user_id}");
        assert_eq!(t("profile").tags, ["user:{user_id}"]);
        assert_eq!(t("v2").key, "v2:user:{user_id}:profile");
        assert_eq!(t("v2").tags, ["profiles", "user:{user_id}"]);
        assert_eq!(t("v3").tags, ["user:{user_id}", "profiles"]);
        let w = op(&info, "update").write_template.clone().unwrap();
        assert_eq!(w.invalidate, ["user:{user_id}", "users"]);
        assert_eq!(w.recache_concurrency, Some(3));
        assert_eq!(op(&info, "update").params, None);

        let args = call(&[
            ("user_id", Value::Integer(1)),
            ("data", Value::Json("{}".into())),
        ]);
        let rule = policy.write("update", &args, None).unwrap().unwrap();
        assert_eq!(rule.invalidate, ["user:1", "users"]);
        assert_eq!(rule.recache, [Recache::new("profile").arg("user_id", 1)]);
        assert_eq!(rule.recache_concurrency, Some(3));
    }

    #[test]
    fn entity_and_suffix_are_escaped() {
        let policy = Compiled::new(|p| {
            let odd = resource("a{b}", "id");
            p.read_resource(&odd, "r").suffix("s}");
        });
        let rule = policy
            .read("r", &call(&[("id", Value::Integer(1))]))
            .unwrap()
            .unwrap();
        assert_eq!(rule.key, "a{b}:s}:1");
        assert_eq!(rule.tags, ["a{b}:1"]);
    }

    #[test]
    fn static_write_matches_its_template() {
        let policy = Compiled::new(|p| {
            p.read("get_org_user").key("org:{org_id}:user:{user_id}");
            p.write("move_org_user")
                .tags(["user:{id}"])
                .recache(recache("get_org_user").rename([("id", "user_id")]));
        });
        let info = policy.describe().unwrap();
        let o = op(&info, "move_org_user");
        assert_eq!(o.kind, OpKind::Write);
        assert_eq!(o.params, None);
        assert!(o.read_template.is_none());
        let t = o.write_template.clone().unwrap();
        assert_eq!(t.invalidate, ["user:{id}"]);
        assert_eq!(
            t.recache,
            [recache("get_org_user").rename([("id", "user_id")])]
        );
        assert_eq!(t.recache_concurrency, None);

        let args = call(&[("org_id", Value::Integer(3)), ("id", Value::Integer(9))]);
        let rule = policy
            .write("move_org_user", &args, Some(&Value::Null))
            .unwrap()
            .unwrap();
        assert_eq!(rule.invalidate, [host_render(&t.invalidate[0], &args)]);
        assert_eq!(
            rule.recache,
            [Recache::new("get_org_user")
                .arg("org_id", 3)
                .arg("user_id", 9)]
        );
        // The recached read renders from the renamed arguments.
        let read = policy
            .read("get_org_user", &rule.recache[0].args)
            .unwrap()
            .unwrap();
        assert_eq!(read.key, "org:3:user:9");
    }

    #[test]
    fn dynamic_ops_have_no_template() {
        let policy = Compiled::new(|p| {
            p.read("get_user").key("user:{user_id}");
            p.read("search").params(["q"]).rule_with(|a| {
                let q = a.text("q")?;
                Ok((!q.is_empty()).then(|| ReadRule::new(format!("search:{q}")).tags(["search"])))
            });
            p.write("w")
                .tags(["user:{user_id}"])
                .tags_with(|a| Ok(vec![a.render("user:{user_id}:profile")?]))
                .recache_with(|a| {
                    Ok(vec![
                        Recache::new("get_user").arg("user_id", a.value("user_id")?.clone())
                    ])
                });
            p.write("by_result").rule_with(|a| {
                let Some(result) = a.result() else {
                    return Ok(None);
                };
                let tag = a.render("r:{x}")?;
                let op = format!("{result:?}");
                Ok(Some(
                    WriteRule::new().invalidate([tag]).recache(Recache::new(op)),
                ))
            });
        });
        assert!(policy.errors().is_empty(), "{:?}", policy.errors());
        let info = policy.describe().unwrap();
        assert!(op(&info, "search").read_template.is_none());
        assert_eq!(op(&info, "search").params, Some(vec!["q".to_string()]));
        assert!(op(&info, "w").write_template.is_none());
        assert_eq!(op(&info, "w").params, None);
        assert_eq!(op(&info, "by_result").params, None);

        let q = |s: &str| policy.read("search", &call(&[("q", Value::from(s))]));
        assert_eq!(q("").unwrap(), None);
        assert_eq!(q("x").unwrap().unwrap().key, "search:x");
        assert_eq!(
            policy
                .read("search", &call(&[("q", Value::Integer(1))]))
                .unwrap_err(),
            "search: argument `q` is integer, not text"
        );

        let args = call(&[("user_id", Value::Integer(5))]);
        let rule = policy.write("w", &args, None).unwrap().unwrap();
        assert_eq!(rule.invalidate, ["user:5", "user:5:profile"]);
        assert_eq!(rule.recache, [Recache::new("get_user").arg("user_id", 5)]);

        let x = call(&[("x", Value::Boolean(true))]);
        assert_eq!(policy.write("by_result", &x, None).unwrap(), None);
        let rule = policy
            .write("by_result", &x, Some(&Value::Integer(2)))
            .unwrap()
            .unwrap();
        assert_eq!(rule.invalidate, ["r:true"]);
    }

    #[test]
    fn call_errors() {
        let policy = Compiled::new(|p| {
            p.read("r").key("user:{user_id}");
            p.write("w").tags(["org:{org_id}"]);
        });
        assert_eq!(policy.read("nope", &[]).unwrap_err(), "unknown op `nope`");
        assert_eq!(
            policy.write("r", &[], None).unwrap_err(),
            "r: a read, not a write"
        );
        assert_eq!(policy.read("w", &[]).unwrap_err(), "w: a write, not a read");
        // The host calls by position in `describe`.
        let args = call(&[("user_id", Value::Integer(7))]);
        assert_eq!(policy.read_at(0, &args).unwrap().unwrap().key, "user:7");
        assert_eq!(
            policy.read_at(2, &args).unwrap_err(),
            "no operation #2 (this policy declares 2)"
        );
        assert_eq!(
            policy.read_at(1, &[]).unwrap_err(),
            "w: a write, not a read"
        );
        assert_eq!(
            policy
                .write("w", &call(&[("user_id", Value::Null)]), None)
                .unwrap_err(),
            "w: no argument `org_id` for the placeholder `{org_id}` of `org:{org_id}`"
        );
    }

    #[test]
    fn declaration_errors_break_only_their_op() {
        let policy = Compiled::new(|p| {
            let user = resource("user", "user_id");
            p.read("ok").key("ok:{id}");
            p.read("twice").key("a");
            p.write("twice").tags(["a"]);
            p.read("brace").key("user:{user_id");
            p.read("nokey").ttl(3);
            p.read("suffix").key("k").suffix("s");
            p.read_resource(&user, "nosuffix");
            p.read_resource(&user, "untagged").suffix("s").untagged();
            p.read("early").key("k").ttl(30).early_ttl(30);
            p.read("mixed").key("k").rule_with(|_| Ok(None));
            p.read("params").key("k:{a}:{b}").params(["a"]);
            p.write("empty");
            // A read of another policy: not a mistake.
            p.write("elsewhere").tags(["t"]).recache(recache("nope"));
            p.read("joined").key("k:{a}{b}");
            p.write("joinedw").tags(["t:{a}-{b}"]);
            p.write("ofwrite").tags(["t"]).recache(recache("empty"));
            p.write("conc").tags(["t"]).recache_max_concurrency(0);
            p.write("badtag").tags(["}"]);
            p.write("mixedw").tags(["t"]).rule_with(|_| Ok(None));
            p.write("badinclude")
                .tags(["t"])
                .recache(recache("ok").include(["a-b"]));
            p.write("wparams")
                .tags(["t:{x}"])
                .recache(recache("ok").include(["id"]))
                .params(["x"]);
            p.read_resource(&resource("user", "user id"), "badid")
                .suffix("s");
        });
        let errors = policy.errors();
        let expect = [
            "twice: declared more than once",
            "brace: template `user:{user_id`: unclosed `{` at byte 5 (write `{{` for a literal brace)",
            "nokey: a read needs a key",
            "suffix: suffix is only for a resource read",
            "nosuffix: a resource read needs a suffix or a key",
            "untagged: a resource read always carries its entity tag; it cannot be untagged",
            "early: early_ttl (30 s) must be less than the ttl (30 s)",
            "mixed: a computed rule cannot also declare key",
            "params: uses `b`, which is not among its params (a)",
            "empty: a write needs tags to invalidate or reads to recache",
            "joined: template `k:{a}{b}`: placeholders `{a}` and `{b}` have no `:` between them \
             (distinct arguments could render to the same text)",
            "joinedw: template `t:{a}-{b}`: placeholders `{a}` and `{b}` have no `:` between \
             them (distinct arguments could render to the same text)",
            "ofwrite: recache of `empty`, which is a write",
            "conc: recache_max_concurrency must be at least 1",
            "badtag: template `}`: unmatched `}` at byte 0 (write `}}` for a literal brace)",
            "mixedw: a computed rule cannot also declare tags",
            "badinclude: recache of `ok`: `a-b` is not a parameter name",
            "wparams: uses `id`, which is not among its params (x)",
            "badid: resource id `user id` is not a parameter name (ASCII letters, digits, `_`)",
        ];
        assert_eq!(errors, expect);

        // `describe` refuses the policy with every mistake; the host loads none of it.
        assert_eq!(policy.describe().unwrap_err(), expect.join("; "));
        assert_eq!(policy.read("brace", &[]).unwrap_err(), expect[1]);
        assert_eq!(policy.write("twice", &[], None).unwrap_err(), expect[0]);
        assert!(policy
            .read("ok", &call(&[("id", Value::Integer(1))]))
            .is_ok());
    }

    #[test]
    fn name_and_version() {
        let unnamed = Compiled::new(|_| {});
        assert_eq!(
            (
                unnamed.describe().unwrap().name,
                unnamed.describe().unwrap().version
            ),
            ("policy".into(), "0.0.0".into())
        );
        let mut p = Policy::default();
        p.name("n").version("1.2.3");
        let named = Compiled::compile(p, "crate", "9.9.9");
        assert_eq!(
            (
                named.describe().unwrap().name,
                named.describe().unwrap().version
            ),
            ("n".into(), "1.2.3".into())
        );
        let by_crate = Compiled::compile(Policy::default(), "crate", "9.9.9");
        assert_eq!(by_crate.describe().unwrap().name, "crate");
    }

    #[test]
    fn route_placeholders_are_params_too() {
        let policy = Compiled::new(|p| {
            p.read("r")
                .key("user:{user_id}")
                .route("GET /orgs/{org_id}/users/{user_id}");
            p.read("declared")
                .key("user:{user_id}")
                .params(["user_id", "org_id"])
                .route("GET /orgs/{org_id}/users/{user_id}");
            p.read("short")
                .key("user:{user_id}")
                .params(["user_id"])
                .route("GET /orgs/{org_id}/users/{user_id}");
        });
        assert_eq!(
            policy.errors(),
            ["short: uses `org_id`, which is not among its params (user_id)"]
        );
        let policy = Compiled::new(|p| {
            p.read("r")
                .key("user:{user_id}")
                .params(["user_id", "org_id"])
                .route("GET /orgs/{org_id}/users/{user_id}");
        });
        let info = policy.describe().unwrap();
        assert_eq!(
            info.ops[0].params,
            Some(vec!["user_id".to_string(), "org_id".to_string()])
        );
        assert_eq!(
            info.ops[0].route.as_deref(),
            Some("GET /orgs/{org_id}/users/{user_id}")
        );
    }
}
