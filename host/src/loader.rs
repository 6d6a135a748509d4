//! The loaders a recache warms reads with: closures registered for an op
//! ([`Cache::register_loader`](crate::cache::Cache::register_loader)) and the values handed to
//! the parameters annotated reads skip. The `#[cachelet::read]` functions registered at link
//! time live with the macros' support (`embed`), which looks here first.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use futures_util::future::BoxFuture;

use crate::args::Args;

/// A loader registered for an operation, used to warm reads again after a write (`recache`).
pub(crate) type LoaderFn =
    Arc<dyn Fn(Args) -> BoxFuture<'static, Result<serde_json::Value, String>> + Send + Sync>;

/// A cache's registered loaders and provided values.
#[derive(Default)]
pub(crate) struct Loaders {
    closures: RwLock<HashMap<String, LoaderFn>>,
    /// Values for the parameters annotated reads skip (`#[cachelet(skip)]`, e.g. a database
    /// pool), by type: a recache calls the function with the one of that type.
    values: RwLock<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>,
}

impl Loaders {
    /// Registers `op`'s loader, replacing the one it had.
    pub fn register(&self, op: &str, f: LoaderFn) {
        self.closures
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(op.to_string(), f);
    }

    /// The loader registered for `op`.
    pub fn registered(&self, op: &str) -> Option<LoaderFn> {
        self.closures
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(op)
            .cloned()
    }

    /// Keeps `value` for the skipped parameters of type `T`; replaces the one it had.
    pub fn provide<T: Clone + Send + Sync + 'static>(&self, value: T) {
        self.values
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(TypeId::of::<T>(), Arc::new(value));
    }

    /// The value provided for type `T`.
    pub fn provided<T: Clone + Send + Sync + 'static>(&self) -> Option<T> {
        let values = self.values.read().unwrap_or_else(|p| p.into_inner());
        values
            .get(&TypeId::of::<T>())
            .and_then(|v| v.downcast_ref::<T>())
            .cloned()
    }
}
