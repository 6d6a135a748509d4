//! The library's errors.

/// What went wrong, and where the blame lies (the guest, the input, or the host).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A cache URL that cannot be used. The URL is shown with its password hidden.
    #[error("invalid cache URL {url}: {problem}")]
    Url {
        /// The URL, password hidden.
        url: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A setting (environment variable or builder value) that cannot be used.
    #[error("invalid setting {name}: {problem}")]
    Setting {
        /// The setting's name.
        name: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A backend that cannot be used: unreachable, refusing the credentials, failing TLS.
    /// The URL is shown with its password hidden.
    #[error("cache backend {url}: {problem}")]
    Backend {
        /// The URL, password hidden.
        url: String,
        /// What went wrong, in the cache's terms.
        problem: String,
        /// The client's error, when there is one (also [`std::error::Error::source`]).
        source: Option<Cause>,
    },
    /// The backend did not answer an operation (down, hung, or the circuit is open).
    #[error("cache backend unavailable: {problem}")]
    Unavailable {
        /// What happened, in the cache's terms.
        problem: String,
        /// The client's error: none when the circuit is open and nothing was sent (also
        /// [`std::error::Error::source`]).
        source: Option<Cause>,
    },
    /// The backend answered an operation with an error about it (a key holding another type,
    /// a server full under `noeviction`, a missing permission): the request, not the
    /// connection. It does not count as an outage.
    #[error("cache backend refused the command")]
    Refused {
        /// The server's answer (also [`std::error::Error::source`]).
        source: Cause,
    },
    /// A key or tag template that does not parse.
    #[error("invalid template {template:?}: {problem}")]
    Template {
        /// The template as written.
        template: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A template names a parameter the call did not pass.
    #[error("template {template:?} needs {{{param}}}, but the call passed no argument {param:?} (arguments: {})", given.join(", "))]
    MissingArg {
        /// The template as written.
        template: String,
        /// The missing placeholder.
        param: String,
        /// The arguments the call did pass.
        given: Vec<String>,
    },
    /// Arguments that cannot be turned into named values.
    #[error("invalid arguments: {0}")]
    Args(String),
    /// A component that cannot be loaded: not a component, another world, a bad description.
    #[error("cannot load policy {source_name}: {problem}")]
    Load {
        /// The file name or label of the component.
        source_name: String,
        /// What is wrong with it.
        problem: String,
    },
    /// Two loaded policies both declare an operation.
    #[error("operation {op:?} is declared by both policy {first:?} and policy {second:?}")]
    DuplicateOp {
        /// The operation.
        op: String,
        /// The policy that declared it first.
        first: String,
        /// The policy that declared it again.
        second: String,
    },
    /// A rule the guest returned that the engine cannot apply (more tags than an entry
    /// records, a tag too long). The call is served uncached.
    #[error("the rule for {op:?} cannot be applied: {problem}")]
    Rule {
        /// The operation.
        op: String,
        /// What is wrong with the rule.
        problem: String,
    },
    /// The guest returned an error for a call (its own `Err`).
    #[error("policy {policy:?} refused {op:?}: {message}")]
    Policy {
        /// The policy.
        policy: String,
        /// The operation.
        op: String,
        /// The guest's message.
        message: String,
    },
    /// The guest trapped, ran past its deadline or its memory cap. Its instance was discarded.
    #[error("policy {policy:?} faulted in {op:?}: {message}")]
    Guest {
        /// The policy.
        policy: String,
        /// The operation.
        op: String,
        /// The trap.
        message: String,
    },
    /// Every instance of the policy was busy (its bound, `PolicyLimits::max_instances`, was
    /// reached and none came back in time). The call is served uncached.
    #[error("policy {policy:?} is busy: all {instances} instances in use, {op:?} served uncached")]
    Busy {
        /// The policy.
        policy: String,
        /// The operation.
        op: String,
        /// Its bound.
        instances: usize,
    },
    /// The policy faulted too often and is no longer called until a new version of it is
    /// loaded (see [`Cache::policy_status`](crate::cache::Cache::policy_status)). The call is served
    /// uncached.
    #[error("policy {policy:?} is quarantined ({reason}): {op:?} served uncached")]
    Quarantined {
        /// The policy.
        policy: String,
        /// The operation.
        op: String,
        /// Why: its faults in the window.
        reason: String,
    },
    /// A push, rollback or removal of a fleet policy that cannot be done.
    #[error("pushed policy {name:?}: {problem}")]
    Push {
        /// The policy's name.
        name: String,
        /// What is wrong.
        problem: String,
    },
    /// No loaded policy declares the operation.
    #[error("no loaded policy declares operation {0:?}")]
    UnknownOp(String),
    /// The operation is of the other kind (a write called as a read, or the reverse).
    #[error("operation {op:?} is a {kind}, not a {wanted}")]
    WrongKind {
        /// The operation.
        op: String,
        /// What it is.
        kind: &'static str,
        /// What the call wanted.
        wanted: &'static str,
    },
    /// A value that could not be (de)serialized.
    #[error("value of {key:?}: {problem}")]
    Value {
        /// The key.
        key: String,
        /// The serde error.
        problem: String,
    },
    /// An I/O error reading a component file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error (also [`std::error::Error::source`]).
        source: std::io::Error,
    },
}

/// The error a backend's client reported, carried as the [`source`](std::error::Error::source)
/// of an [`Error`]: its own message and its own sources. It never holds a password (the
/// client is given credentials apart from every address it names).
///
/// ```
/// use std::error::Error as _;
/// let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
/// let e = cachelet::Error::Unavailable {
///     problem: "no answer".into(),
///     source: Some(cachelet::Cause::new(io)),
/// };
/// assert_eq!(e.to_string(), "cache backend unavailable: no answer");
/// assert_eq!(e.source().unwrap().to_string(), "refused");
/// ```
pub struct Cause(Box<dyn std::error::Error + Send + Sync + 'static>);

impl Cause {
    /// Wraps a client's error.
    pub fn new(e: impl std::error::Error + Send + Sync + 'static) -> Cause {
        Cause(Box::new(e))
    }

    /// The client's error itself, e.g. to downcast it to the client's type.
    pub fn get(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.0
    }
}

impl std::fmt::Debug for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.0, f)
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// An error and its sources, `: `-separated, for the host's log lines (an [`Error`]'s own
/// message does not repeat its source's).
pub(crate) fn chain<'a>(e: &'a (dyn std::error::Error + 'static)) -> impl std::fmt::Display + 'a {
    struct Chain<'a>(&'a (dyn std::error::Error + 'static));
    impl std::fmt::Display for Chain<'_> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            let mut last = self.0.to_string();
            f.write_str(&last)?;
            let mut next = self.0.source();
            while let Some(e) = next {
                // A client's error often repeats the text of the error it wraps.
                let text = e.to_string();
                if text != last {
                    write!(f, ": {text}")?;
                }
                last = text;
                next = e.source();
            }
            Ok(())
        }
    }
    Chain(e)
}

/// Who is to blame for an [`Error`]: what to fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Blame {
    /// The calling program: a setting, a URL, arguments, an op called as the wrong kind.
    Caller,
    /// The policy: a component that does not load, a rule it cannot make, its own refusal, a
    /// fault, all its instances busy.
    Guest,
    /// The backend: unreachable, or refusing a command.
    Backend,
}

impl Error {
    /// Who is to blame.
    ///
    /// ```
    /// use cachelet::{Blame, Error};
    /// assert_eq!(Error::UnknownOp("get_user".into()).blame(), Blame::Caller);
    /// let down = Error::Unavailable { problem: "no answer".into(), source: None };
    /// assert_eq!(down.blame(), Blame::Backend);
    /// ```
    pub fn blame(&self) -> Blame {
        match self {
            Error::Url { .. }
            | Error::Setting { .. }
            | Error::Args(_)
            | Error::MissingArg { .. }
            | Error::UnknownOp(_)
            | Error::WrongKind { .. }
            | Error::Value { .. }
            | Error::Io { .. }
            | Error::Push { .. } => Blame::Caller,
            Error::Template { .. }
            | Error::Load { .. }
            | Error::DuplicateOp { .. }
            | Error::Rule { .. }
            | Error::Policy { .. }
            | Error::Guest { .. }
            | Error::Busy { .. }
            | Error::Quarantined { .. } => Blame::Guest,
            Error::Backend { .. } | Error::Unavailable { .. } | Error::Refused { .. } => {
                Blame::Backend
            }
        }
    }
}

/// What a `lock` read gets when the load it waited for (another caller's, of the same key)
/// failed: that load's error, shared instead of every waiter loading again. A loader's error
/// type converts from it (`E: From<LoadError>`): `anyhow::Error`, `Box<dyn Error>`, `String`
/// and `std::io::Error` do already; give an error enum of your own a variant for it.
///
/// ```
/// let e: std::io::Error = cachelet::LoadError::new("database down").into();
/// assert!(e.to_string().contains("database down"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    message: std::sync::Arc<str>,
}

impl LoadError {
    /// A shared failure with the failed load's message.
    pub fn new(message: impl Into<std::sync::Arc<str>>) -> LoadError {
        LoadError {
            message: message.into(),
        }
    }

    /// The failed load's own message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the load this read waited for failed: {}", self.message)
    }
}

impl std::error::Error for LoadError {}

impl From<LoadError> for String {
    fn from(e: LoadError) -> String {
        e.to_string()
    }
}

impl From<LoadError> for std::io::Error {
    fn from(e: LoadError) -> std::io::Error {
        std::io::Error::other(e)
    }
}
