//! The declaration of a policy: [`Policy`] and the builders of its operations.

use crate::{Args, ReadRule, Recache, RecacheTemplate, Ttl, WriteRule};

pub(crate) type ReadFn = dyn Fn(&Args) -> Result<Option<ReadRule>, String>;
pub(crate) type TagsFn = dyn Fn(&Args) -> Result<Vec<String>, String>;
pub(crate) type RecacheFn = dyn Fn(&Args) -> Result<Vec<Recache>, String>;
pub(crate) type WriteFn = dyn Fn(&Args) -> Result<Option<WriteRule>, String>;

/// The declaration of a policy: its name, version and operations. Filled by the function given
/// to [`export_policy!`](crate::export_policy), once, when the host loads the component.
///
/// Declaring never panics: a mistake (a template with an unbalanced brace or placeholders
/// without a `:` between them, a recache of a write, ...) is found when the declaration is
/// compiled, and `describe` returns it, naming the operation: the host refuses to load the
/// policy, so a typo never reaches a call.
///
/// ```
/// use cachelet_guest::prelude::*;
///
/// fn define(p: &mut Policy) {
///     p.name("users").version("1.0.0");
///     p.read("get_user").key("user:{user_id}").ttl(300);
///     p.write("update_user")
///         .tags(["user:{user_id}"])
///         .recache(recache("get_user").include(["user_id"]));
/// }
/// # let policy = Compiled::new(define);
/// # assert_eq!(policy.describe().unwrap().ops.len(), 2);
/// ```
#[derive(Default)]
pub struct Policy {
    pub(crate) name: Option<String>,
    pub(crate) version: Option<String>,
    pub(crate) ops: Vec<Op>,
}

pub(crate) enum Op {
    Read(ReadOp),
    Write(WriteOp),
}

impl Op {
    pub(crate) fn name(&self) -> &str {
        match self {
            Op::Read(r) => &r.name,
            Op::Write(w) => &w.name,
        }
    }
}

impl Policy {
    /// Sets the policy's name (default: the name of the crate that exports it).
    pub fn name(&mut self, name: impl Into<String>) -> &mut Policy {
        self.name = Some(name.into());
        self
    }

    /// Sets the policy's version (default: the version of the crate that exports it).
    pub fn version(&mut self, version: impl Into<String>) -> &mut Policy {
        self.version = Some(version.into());
        self
    }

    /// Declares a read operation (what `@cache_read` decorates). Give it a
    /// [`key`](ReadOp::key) (or a [`rule_with`](ReadOp::rule_with) closure).
    pub fn read(&mut self, op: impl Into<String>) -> &mut ReadOp {
        self.push_read(ReadOp::new(op.into(), None))
    }

    /// Declares a write operation (what `@cache_write` decorates): the [`tags`](WriteOp::tags)
    /// it invalidates and the reads it [`recache`](WriteOp::recache)s.
    pub fn write(&mut self, op: impl Into<String>) -> &mut WriteOp {
        self.push_write(WriteOp::new(op.into(), None))
    }

    /// Declares a read of `resource` (Python's `resource.cache_read`): with a
    /// [`suffix`](ReadOp::suffix), the key is `{entity}:{suffix}:{id}`; the entry always carries
    /// the entity tag `{entity}:{id}`, so that every write of the resource invalidates it.
    pub fn read_resource(&mut self, resource: &Resource, op: impl Into<String>) -> &mut ReadOp {
        self.push_read(ReadOp::new(op.into(), Some(resource.clone())))
    }

    /// Declares a write of `resource` (Python's `resource.cache_write`): it invalidates the
    /// entity tag `{entity}:{id}`, hence every read of the same entity, plus any
    /// [`tags`](WriteOp::tags) given.
    pub fn write_resource(&mut self, resource: &Resource, op: impl Into<String>) -> &mut WriteOp {
        self.push_write(WriteOp::new(op.into(), Some(resource.clone())))
    }

    fn push_read(&mut self, op: ReadOp) -> &mut ReadOp {
        self.ops.push(Op::Read(op));
        match self.ops.last_mut() {
            Some(Op::Read(r)) => r,
            _ => unreachable!("just pushed a read"),
        }
    }

    fn push_write(&mut self, op: WriteOp) -> &mut WriteOp {
        self.ops.push(Op::Write(op));
        match self.ops.last_mut() {
            Some(Op::Write(w)) => w,
            _ => unreachable!("just pushed a write"),
        }
    }
}

/// An entity whose cached reads are invalidated together: `resource("user", "user_id")`.
///
/// Its reads (declared with [`Policy::read_resource`]) carry the tag `user:{user_id}`; its
/// writes (declared with [`Policy::write_resource`]) invalidate that tag.
///
/// ```
/// use cachelet_guest::prelude::*;
///
/// fn define(p: &mut Policy) {
///     let user = resource("user", "user_id");
///     // key user:profile:{user_id}, tags [user:{user_id}]
///     p.read_resource(&user, "get_user_profile").suffix("profile").ttl(300).lock(true);
///     // invalidates user:{user_id}
///     p.write_resource(&user, "update_user");
/// }
/// # let policy = Compiled::new(define);
/// # let rule = policy.describe().unwrap().ops[0].read_template.clone().unwrap();
/// # assert_eq!(rule.key, "user:profile:{user_id}");
/// # assert_eq!(rule.tags, ["user:{user_id}"]);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resource {
    pub(crate) entity: String,
    pub(crate) id_param: String,
}

/// An entity named `entity` (the first part of its keys and tags), identified by the argument
/// `id_param`. See [`Resource`].
pub fn resource(entity: impl Into<String>, id_param: impl Into<String>) -> Resource {
    Resource {
        entity: entity.into(),
        id_param: id_param.into(),
    }
}

/// A key template: a string such as `"user:{user_id}"`, or its parts, joined with `:` —
/// a tuple of 2 to 6 `&str` (`("user", "profile", "{user_id}")`), an array or a slice.
pub trait IntoKey {
    /// The template as one string.
    fn into_key(self) -> String;
}

impl IntoKey for &str {
    fn into_key(self) -> String {
        self.to_owned()
    }
}

impl IntoKey for String {
    fn into_key(self) -> String {
        self
    }
}

impl IntoKey for &String {
    fn into_key(self) -> String {
        self.clone()
    }
}

impl<S: AsRef<str>> IntoKey for &[S] {
    fn into_key(self) -> String {
        let parts: Vec<&str> = self.iter().map(AsRef::as_ref).collect();
        parts.join(":")
    }
}

impl<S: AsRef<str>, const N: usize> IntoKey for [S; N] {
    fn into_key(self) -> String {
        self.as_slice().into_key()
    }
}

impl<S: AsRef<str>> IntoKey for Vec<S> {
    fn into_key(self) -> String {
        self.as_slice().into_key()
    }
}

macro_rules! tuple_into_key {
    ($($name:ident)+) => {
        impl IntoKey for ($(tuple_into_key!(@str $name),)+) {
            fn into_key(self) -> String {
                #[allow(non_snake_case)]
                let ($($name,)+) = self;
                [$($name),+].join(":")
            }
        }
    };
    (@str $name:ident) => { &str };
}
tuple_into_key!(A B);
tuple_into_key!(A B C);
tuple_into_key!(A B C D);
tuple_into_key!(A B C D E);
tuple_into_key!(A B C D E F);

/// A read operation, declared with [`Policy::read`] or [`Policy::read_resource`].
///
/// A read declared with templates only is *static*: `describe()` hands its templates to the
/// host, which renders them itself on every call, without calling the policy. A read with a
/// [`rule_with`](ReadOp::rule_with) closure is *dynamic*: the host calls the policy each time.
pub struct ReadOp {
    pub(crate) name: String,
    pub(crate) resource: Option<Resource>,
    pub(crate) suffix: Option<String>,
    pub(crate) key: Option<String>,
    pub(crate) tags: Option<Vec<String>>,
    pub(crate) ttl: Option<Ttl>,
    pub(crate) early_ttl: Option<u32>,
    pub(crate) refresh: Option<bool>,
    pub(crate) lock: Option<bool>,
    pub(crate) params: Option<Vec<String>>,
    pub(crate) route: Option<String>,
    pub(crate) rule_fn: Option<Box<ReadFn>>,
}

impl ReadOp {
    fn new(name: String, resource: Option<Resource>) -> ReadOp {
        ReadOp {
            name,
            resource,
            suffix: None,
            key: None,
            tags: None,
            ttl: None,
            early_ttl: None,
            refresh: None,
            lock: None,
            params: None,
            route: None,
            rule_fn: None,
        }
    }

    /// The key template: `"org:{org_id}:user:{user_id}"`, or its parts joined with `:`,
    /// `("user", "card", "{user_id}")`. For a resource read, replaces the key made from the
    /// [`suffix`](ReadOp::suffix) (Python's `key_template`).
    pub fn key(&mut self, key: impl IntoKey) -> &mut ReadOp {
        self.key = Some(key.into_key());
        self
    }

    /// The tag templates of the entry. Without it, the entry is tagged with its key (a resource
    /// read: with its entity tag). A resource read keeps its entity tag in any case (Python's
    /// `tags_template`).
    pub fn tags<S: Into<String>>(&mut self, tags: impl IntoIterator<Item = S>) -> &mut ReadOp {
        self.tags = Some(tags.into_iter().map(Into::into).collect());
        self
    }

    /// Leaves the entry untagged: only its TTL or a direct delete removes it.
    pub fn untagged(&mut self) -> &mut ReadOp {
        self.tags = Some(Vec::new());
        self
    }

    /// For a resource read, the middle part of the key: `{entity}:{suffix}:{id}`.
    pub fn suffix(&mut self, suffix: impl Into<String>) -> &mut ReadOp {
        self.suffix = Some(suffix.into());
        self
    }

    /// How long the entry lives: seconds (`0`: do not cache) or a bucket, [`Ttl::SHORT`],
    /// [`Ttl::DEFAULT`] (the default) or [`Ttl::LONG`].
    pub fn ttl(&mut self, ttl: impl Into<Ttl>) -> &mut ReadOp {
        self.ttl = Some(ttl.into());
        self
    }

    /// Age in seconds after which a hit still returns the entry but reloads it in the
    /// background. Must be less than the TTL.
    pub fn early_ttl(&mut self, seconds: u32) -> &mut ReadOp {
        self.early_ttl = Some(seconds);
        self
    }

    /// Sliding expiry: every hit gives the entry its full TTL again.
    pub fn refresh(&mut self, refresh: bool) -> &mut ReadOp {
        self.refresh = Some(refresh);
        self
    }

    /// Stampede control: concurrent misses of a key run the loader once; the others wait.
    pub fn lock(&mut self, lock: bool) -> &mut ReadOp {
        self.lock = Some(lock);
        self
    }

    /// Declares the operation's parameters. Every placeholder must then be one of them, so a
    /// misspelled one is refused at load. Without it nothing can be checked, and
    /// `cachelet check` warns about the op.
    ///
    /// ```
    /// use cachelet_guest::prelude::*;
    ///
    /// let policy = Compiled::new(|p| {
    ///     p.read("get_item").key("item:{item_idd}").params(["item_id"]);
    /// });
    /// assert_eq!(
    ///     policy.errors(),
    ///     ["get_item: uses `item_idd`, which is not among its params (item_id)"]
    /// );
    /// ```
    pub fn params<S: Into<String>>(&mut self, params: impl IntoIterator<Item = S>) -> &mut ReadOp {
        self.params = Some(params.into_iter().map(Into::into).collect());
        self
    }

    /// The HTTP route that maps to this operation in the host's proxy: `GET /users/{user_id}`.
    pub fn route(&mut self, route: impl Into<String>) -> &mut ReadOp {
        self.route = Some(route.into());
        self
    }

    /// Computes the whole rule in the policy on each call; `Ok(None)` leaves the call
    /// uncached. Replaces every other setting of the read (combining them is an error).
    ///
    /// ```
    /// use cachelet_guest::prelude::*;
    ///
    /// fn define(p: &mut Policy) {
    ///     p.read("get_search").rule_with(|a| {
    ///         let q = a.text("q")?;
    ///         Ok((!q.is_empty()).then(|| ReadRule::new(format!("search:{q}")).tags(["search"]).ttl(120)))
    ///     });
    /// }
    /// # let policy = Compiled::new(define);
    /// # let call = [("q".to_string(), Value::from("rust"))];
    /// # assert_eq!(policy.read("get_search", &call).unwrap().unwrap().key, "search:rust");
    /// ```
    pub fn rule_with<F>(&mut self, rule: F) -> &mut ReadOp
    where
        F: Fn(&Args) -> Result<Option<ReadRule>, String> + 'static,
    {
        self.rule_fn = Some(Box::new(rule));
        self
    }
}

/// A write operation, declared with [`Policy::write`] or [`Policy::write_resource`].
///
/// A write declared with templates only is *static*: the host renders its rule itself. Any
/// closure (`*_with`) makes it *dynamic*: the host calls the policy after each write.
pub struct WriteOp {
    pub(crate) name: String,
    pub(crate) resource: Option<Resource>,
    pub(crate) tags: Vec<String>,
    pub(crate) tags_fn: Option<Box<TagsFn>>,
    pub(crate) recache: Vec<RecacheTemplate>,
    pub(crate) recache_fn: Option<Box<RecacheFn>>,
    pub(crate) concurrency: Option<u32>,
    pub(crate) params: Option<Vec<String>>,
    pub(crate) route: Option<String>,
    pub(crate) rule_fn: Option<Box<WriteFn>>,
}

impl WriteOp {
    fn new(name: String, resource: Option<Resource>) -> WriteOp {
        WriteOp {
            name,
            resource,
            tags: Vec::new(),
            tags_fn: None,
            recache: Vec::new(),
            recache_fn: None,
            concurrency: None,
            params: None,
            route: None,
            rule_fn: None,
        }
    }

    /// Tag templates to invalidate: `["user:{user_id}", "org:{org_id}:users"]`.
    pub fn tags<S: Into<String>>(&mut self, tags: impl IntoIterator<Item = S>) -> &mut WriteOp {
        self.tags.extend(tags.into_iter().map(Into::into));
        self
    }

    /// Computes tags to invalidate on each call (added to the [`tags`](WriteOp::tags)).
    /// [`Args::result`] gives the write's result.
    ///
    /// ```
    /// use cachelet_guest::prelude::*;
    ///
    /// fn define(p: &mut Policy) {
    ///     p.write("update_user").tags_with(|a| {
    ///         Ok(vec![a.render("user:{user_id}")?, a.render("user:{user_id}:profile")?])
    ///     });
    /// }
    /// # let policy = Compiled::new(define);
    /// # let call = [("user_id".to_string(), Value::from(7))];
    /// # let rule = policy.write("update_user", &call, None).unwrap().unwrap();
    /// # assert_eq!(rule.invalidate, ["user:7", "user:7:profile"]);
    /// ```
    pub fn tags_with<F>(&mut self, tags: F) -> &mut WriteOp
    where
        F: Fn(&Args) -> Result<Vec<String>, String> + 'static,
    {
        self.tags_fn = Some(Box::new(tags));
        self
    }

    /// Warms a read again once the tags are invalidated; see [`recache`](crate::recache).
    pub fn recache(&mut self, recache: RecacheTemplate) -> &mut WriteOp {
        self.recache.push(recache);
        self
    }

    /// Computes reads to warm again on each call (added to the [`recache`](WriteOp::recache)
    /// list).
    pub fn recache_with<F>(&mut self, recache: F) -> &mut WriteOp
    where
        F: Fn(&Args) -> Result<Vec<Recache>, String> + 'static,
    {
        self.recache_fn = Some(Box::new(recache));
        self
    }

    /// How many recache reads may run at once (at least 1; default: the host's).
    pub fn recache_max_concurrency(&mut self, max: u32) -> &mut WriteOp {
        self.concurrency = Some(max);
        self
    }

    /// Declares the operation's parameters. Every placeholder and every argument name in
    /// `include` and `rename` must then be one of them. Without it nothing can be checked, and
    /// `cachelet check` warns about the op.
    pub fn params<S: Into<String>>(&mut self, params: impl IntoIterator<Item = S>) -> &mut WriteOp {
        self.params = Some(params.into_iter().map(Into::into).collect());
        self
    }

    /// The HTTP route that maps to this operation in the host's proxy: `PUT /users/{user_id}`.
    pub fn route(&mut self, route: impl Into<String>) -> &mut WriteOp {
        self.route = Some(route.into());
        self
    }

    /// Computes the whole rule in the policy on each call; `Ok(None)`: the write touches no
    /// cached data. Replaces every other setting of the write (combining them is an error).
    pub fn rule_with<F>(&mut self, rule: F) -> &mut WriteOp
    where
        F: Fn(&Args) -> Result<Option<WriteRule>, String> + 'static,
    {
        self.rule_fn = Some(Box::new(rule));
        self
    }
}
