//! Conveniences on the WIT types: constructors for the rules a closure returns, conversions into
//! [`Value`] and [`Ttl`], and the rendering of a value into a key.

use crate::{ReadRule, Recache, RecacheTemplate, Ttl, TtlBucket, Value, WriteRule};

impl Ttl {
    /// The host's short bucket (`CACHE_TTL_SHORT`, 30 s by default): rate limits, sessions.
    pub const SHORT: Ttl = Ttl::Bucket(TtlBucket::Short);
    /// The host's default bucket (`CACHE_TTL_DEFAULT`, 300 s by default): most data. This is the
    /// TTL of a read that sets none.
    pub const DEFAULT: Ttl = Ttl::Bucket(TtlBucket::Default);
    /// The host's long bucket (`CACHE_TTL_LONG`, 3600 s by default): configuration, static
    /// content.
    pub const LONG: Ttl = Ttl::Bucket(TtlBucket::Long);
}

/// Seconds; `0` means "do not cache".
impl From<u32> for Ttl {
    fn from(seconds: u32) -> Ttl {
        Ttl::Seconds(seconds)
    }
}

impl From<TtlBucket> for Ttl {
    fn from(bucket: TtlBucket) -> Ttl {
        Ttl::Bucket(bucket)
    }
}

impl From<()> for Value {
    fn from((): ()) -> Value {
        Value::Null
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Value {
        Value::Boolean(b)
    }
}

macro_rules! integer_into_value {
    ($($t:ty),*) => {$(
        impl From<$t> for Value {
            fn from(i: $t) -> Value {
                Value::Integer(i.into())
            }
        }
    )*};
}
integer_into_value!(i8, i16, i32, i64, u8, u16, u32);

impl From<f64> for Value {
    fn from(f: f64) -> Value {
        Value::Float(f)
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::Text(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::Text(s)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Value {
        v.map_or(Value::Null, Into::into)
    }
}

impl Value {
    /// The name of the value's case, for messages: `null`, `boolean`, `integer`, `float`,
    /// `text` or `json`.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Boolean(_) => "boolean",
            Value::Integer(_) => "integer",
            Value::Float(_) => "float",
            Value::Text(_) => "text",
            Value::Json(_) => "json",
        }
    }

    /// The value as a template sees it.
    pub(crate) fn as_arg(&self) -> cachelet_template::Arg<'_> {
        use cachelet_template::Arg;
        match self {
            Value::Null => Arg::Null,
            Value::Boolean(b) => Arg::Boolean(*b),
            Value::Integer(i) => Arg::Integer(*i),
            Value::Float(f) => Arg::Float(*f),
            Value::Text(s) => Arg::Text(s),
            Value::Json(s) => Arg::Json(s),
        }
    }
}

impl ReadRule {
    /// A rule for `key` with the defaults of a declared read: tagged with its key, the default
    /// TTL bucket, no early refresh, no sliding expiry, no lock. For
    /// [`ReadOp::rule_with`](crate::ReadOp::rule_with) closures.
    ///
    /// ```
    /// use cachelet_guest::prelude::*;
    ///
    /// let rule = ReadRule::new("search:rust").tags(["search"]).ttl(120);
    /// assert_eq!(rule.key, "search:rust");
    /// assert_eq!(rule.tags, ["search"]);
    /// assert_eq!(rule.ttl, Ttl::Seconds(120));
    /// ```
    pub fn new(key: impl Into<String>) -> ReadRule {
        let key = key.into();
        ReadRule {
            tags: vec![key.clone()],
            key,
            ttl: Ttl::DEFAULT,
            early_ttl: None,
            refresh: false,
            lock: false,
        }
    }

    /// Replaces the tags (rendered strings, not templates). An empty list leaves the entry
    /// untagged.
    pub fn tags<S: Into<String>>(mut self, tags: impl IntoIterator<Item = S>) -> ReadRule {
        // Reuses the default list's allocation.
        self.tags.clear();
        self.tags.extend(tags.into_iter().map(Into::into));
        self
    }

    /// Sets the TTL: seconds (`0`: do not cache) or a bucket such as [`Ttl::SHORT`].
    pub fn ttl(mut self, ttl: impl Into<Ttl>) -> ReadRule {
        self.ttl = ttl.into();
        self
    }

    /// Age in seconds after which a hit reloads the entry in the background.
    pub fn early_ttl(mut self, seconds: u32) -> ReadRule {
        self.early_ttl = Some(seconds);
        self
    }

    /// Sliding expiry: every hit gives the entry its full TTL again.
    pub fn refresh(mut self, refresh: bool) -> ReadRule {
        self.refresh = refresh;
        self
    }

    /// Stampede control: concurrent misses run the loader once.
    pub fn lock(mut self, lock: bool) -> ReadRule {
        self.lock = lock;
        self
    }
}

impl WriteRule {
    /// A rule that invalidates nothing and warms nothing yet. For
    /// [`WriteOp::rule_with`](crate::WriteOp::rule_with) closures.
    ///
    /// ```
    /// use cachelet_guest::prelude::*;
    ///
    /// let rule = WriteRule::new()
    ///     .invalidate(["user:42"])
    ///     .recache(Recache::new("get_user").arg("user_id", 42));
    /// assert_eq!(rule.invalidate, ["user:42"]);
    /// assert_eq!(rule.recache[0].args, [("user_id".to_string(), Value::Integer(42))]);
    /// ```
    pub fn new() -> WriteRule {
        WriteRule {
            invalidate: Vec::new(),
            recache: Vec::new(),
            recache_concurrency: None,
        }
    }

    /// Adds tags to invalidate (rendered strings, not templates).
    pub fn invalidate<S: Into<String>>(mut self, tags: impl IntoIterator<Item = S>) -> WriteRule {
        self.invalidate.extend(tags.into_iter().map(Into::into));
        self
    }

    /// Adds a read to warm again.
    pub fn recache(mut self, recache: Recache) -> WriteRule {
        self.recache.push(recache);
        self
    }

    /// How many recache reads may run at once.
    pub fn recache_max_concurrency(mut self, max: u32) -> WriteRule {
        self.recache_concurrency = Some(max);
        self
    }
}

impl Default for WriteRule {
    fn default() -> WriteRule {
        WriteRule::new()
    }
}

impl Recache {
    /// A call of the read `op`, with no arguments yet.
    pub fn new(op: impl Into<String>) -> Recache {
        Recache {
            op: op.into(),
            args: Vec::new(),
        }
    }

    /// Adds an argument.
    pub fn arg(mut self, name: impl Into<String>, value: impl Into<Value>) -> Recache {
        self.args.push((name.into(), value.into()));
        self
    }
}

/// Declares a read to warm again after a write: the read `op`, called with the write's
/// arguments. Refine which arguments with [`include`](RecacheTemplate::include),
/// [`rename`](RecacheTemplate::rename) and [`extra`](RecacheTemplate::extra).
///
/// The arguments of the recache call are derived from the write's, in this order (the host's
/// native rendering of a static write does exactly the same):
/// 1. `include`: the listed arguments, in the listed order; if the call lacks a listed one, this
///    recache is skipped (the rest of the write's rule still applies: warming never costs a
///    write its invalidation). Without `include`, every argument, in the caller's order.
/// 2. `rename`: an argument named like the first of a pair takes the second name; if an earlier
///    argument already has that name, its value is replaced.
/// 3. `extra`: each constant replaces the value of the argument of its name, or is appended.
///
/// ```
/// use cachelet_guest::prelude::*;
///
/// let r = recache("get_org_user").include(["org_id", "id"]).rename([("id", "user_id")]);
/// assert_eq!(r.op, "get_org_user");
/// let r = recache("get_user_details").include(["user_id"]).extra([("expand", true)]);
/// assert_eq!(r.extra, [("expand".to_string(), Value::Boolean(true))]);
/// ```
pub fn recache(op: impl Into<String>) -> RecacheTemplate {
    RecacheTemplate {
        op: op.into(),
        include: None,
        rename: Vec::new(),
        extra: Vec::new(),
    }
}

impl RecacheTemplate {
    /// Passes on only these arguments of the write (by their name in the write).
    pub fn include<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.include
            .get_or_insert_with(Vec::new)
            .extend(names.into_iter().map(Into::into));
        self
    }

    /// Renames passed arguments: `(name in the write, name in the read)`.
    pub fn rename<A: Into<String>, B: Into<String>>(
        mut self,
        pairs: impl IntoIterator<Item = (A, B)>,
    ) -> Self {
        self.rename
            .extend(pairs.into_iter().map(|(a, b)| (a.into(), b.into())));
        self
    }

    /// Adds constant arguments to every recache call. For values of different types, convert
    /// them first: `[("expand", Value::from(true)), ("depth", Value::from(2))]`.
    pub fn extra<K: Into<String>, V: Into<Value>>(
        mut self,
        args: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.extra
            .extend(args.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// The recache call for one write's arguments, following the steps documented on
    /// [`recache`] (the host's native rendering does the same); `None` when the call lacks an
    /// included argument.
    pub(crate) fn apply(&self, args: &[(String, Value)]) -> Option<Recache> {
        let mut passed = Vec::with_capacity(args.len());
        match &self.include {
            Some(names) => {
                for name in names {
                    let (_, value) = args.iter().find(|(n, _)| n == name)?;
                    set(&mut passed, name, value);
                }
            }
            None => {
                for (name, value) in args {
                    set(&mut passed, name, value);
                }
            }
        }
        let mut out = Vec::with_capacity(passed.len() + self.extra.len());
        for (name, value) in &passed {
            let to = self
                .rename
                .iter()
                .find(|(from, _)| from == name)
                .map_or(name, |(_, to)| to);
            set(&mut out, to, value);
        }
        for (name, value) in &self.extra {
            set(&mut out, name, value);
        }
        Some(Recache {
            op: self.op.clone(),
            args: out,
        })
    }
}

/// Sets the argument `name`, replacing the value of one of that name.
fn set(args: &mut Vec<(String, Value)>, name: &str, value: &Value) {
    match args.iter_mut().find(|(n, _)| n == name) {
        Some(slot) => slot.1 = value.clone(),
        None => args.push((name.to_owned(), value.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(v: Value) -> String {
        let mut s = String::new();
        v.as_arg().render_into(&mut s);
        s
    }

    fn args(pairs: &[(&str, Value)]) -> Vec<(String, Value)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn values_render_as_the_wit_says() {
        assert_eq!(render(Value::Integer(-42)), "-42");
        assert_eq!(render(Value::Integer(i64::MAX)), "9223372036854775807");
        assert_eq!(render(Value::Float(0.1)), "0.1");
        assert_eq!(render(Value::Float(1.0)), "1");
        assert_eq!(render(Value::Float(-2.5)), "-2.5");
        assert_eq!(render(Value::Float(1.0 / 3.0)), "0.3333333333333333");
        assert_eq!(render(Value::Text("a b:{c}".into())), "a b%3A{c}");
        assert_eq!(render(Value::Boolean(true)), "true");
        assert_eq!(render(Value::Boolean(false)), "false");
        assert_eq!(render(Value::Null), "null");
        assert_eq!(render(Value::Json("[1,2]".into())), "[1,2]");
    }

    #[test]
    fn conversions() {
        assert_eq!(Value::from(3u32), Value::Integer(3));
        assert_eq!(Value::from("x"), Value::Text("x".into()));
        assert_eq!(Value::from(None::<i64>), Value::Null);
        assert_eq!(Value::from(()), Value::Null);
        assert_eq!(Ttl::from(300), Ttl::Seconds(300));
        assert_eq!(Ttl::from(TtlBucket::Long), Ttl::LONG);
    }

    #[test]
    fn recache_include_rename_extra() {
        let write = args(&[
            ("org_id", Value::Integer(1)),
            ("id", Value::Integer(2)),
            ("data", Value::Json("{}".into())),
        ]);
        let all = recache("get_org_user")
            .rename([("id", "user_id")])
            .apply(&write)
            .unwrap();
        assert_eq!(
            all.args,
            args(&[
                ("org_id", Value::Integer(1)),
                ("user_id", Value::Integer(2)),
                ("data", Value::Json("{}".into())),
            ])
        );
        let some = recache("r")
            .include(["id", "org_id"])
            .extra([("expand", true)])
            .apply(&write)
            .unwrap();
        assert_eq!(
            some.args,
            args(&[
                ("id", Value::Integer(2)),
                ("org_id", Value::Integer(1)),
                ("expand", Value::Boolean(true)),
            ])
        );
        let replaced = recache("r")
            .include(["id"])
            .extra([("id", 9)])
            .apply(&write)
            .unwrap();
        assert_eq!(replaced.args, args(&[("id", Value::Integer(9))]));
        assert_eq!(recache("r").include(["id", "nope"]).apply(&write), None);
    }

    #[test]
    fn rename_onto_a_taken_name_replaces_its_value() {
        let write = args(&[("user_id", Value::Integer(1)), ("id", Value::Integer(2))]);
        let r = recache("r")
            .rename([("id", "user_id")])
            .apply(&write)
            .unwrap();
        assert_eq!(r.args, args(&[("user_id", Value::Integer(2))]));
        let write = args(&[("id", Value::Integer(2)), ("user_id", Value::Integer(1))]);
        let r = recache("r")
            .rename([("id", "user_id")])
            .apply(&write)
            .unwrap();
        assert_eq!(r.args, args(&[("user_id", Value::Integer(1))]));
        let none = recache("r").rename([("nope", "x")]).apply(&write).unwrap();
        assert_eq!(none.args, write);
    }
}
