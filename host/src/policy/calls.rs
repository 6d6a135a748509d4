//! Calling a policy's exports: `describe`, `read` and `write` of `cachelet:policy/policy`.
//!
//! The arguments are lowered straight from the caller's [`Args`] (borrowed, no copy on the
//! host side); the rules are lifted into the generated WIT types. An instance whose imports all
//! answer at once is called synchronously (no fiber); one that imports `store` (which awaits the
//! backend) or WASI's file and socket calls is called on a fiber.

use smallvec::SmallVec;
use wasmtime::component::{
    Component, ComponentExportIndex, ComponentNamedList, ComponentType, Func, Instance, Lift,
    Lower, TypedFunc,
};
use wasmtime::Store;

use super::bindings::cachelet::policy::types as wit;
use super::runtime::HostState;
use crate::args::{Args, Value};

/// An argument value as the guest receives it (the WIT `value` variant), borrowed.
#[derive(ComponentType, Lower, Clone, Copy)]
#[component(variant)]
pub(crate) enum WireValue<'a> {
    #[component(name = "null")]
    Null,
    #[component(name = "boolean")]
    Boolean(bool),
    #[component(name = "integer")]
    Integer(i64),
    #[component(name = "float")]
    Float(f64),
    #[component(name = "text")]
    Text(&'a str),
    #[component(name = "json")]
    Json(&'a str),
}

impl<'a> From<&'a Value> for WireValue<'a> {
    fn from(v: &'a Value) -> Self {
        match v {
            Value::Null => WireValue::Null,
            Value::Bool(b) => WireValue::Boolean(*b),
            Value::Int(i) => WireValue::Integer(*i),
            Value::Float(f) => WireValue::Float(*f),
            Value::Text(s) => WireValue::Text(s),
            Value::Json(s) => WireValue::Json(s),
        }
    }
}

/// The WIT `args`, borrowed from `args` (on the stack for up to 8 arguments).
pub(crate) fn wire_args(args: &Args) -> SmallVec<[(&str, WireValue<'_>); 8]> {
    args.iter().map(|(n, v)| (n, WireValue::from(v))).collect()
}

type Arg<'a> = (&'a str, WireValue<'a>);
pub(crate) type ReadParams<'a> = (u32, &'a [Arg<'a>]);
pub(crate) type ReadResults = (Result<Option<wit::ReadRule>, String>,);
pub(crate) type WriteParams<'a> = (u32, &'a [Arg<'a>], Option<WireValue<'a>>);
pub(crate) type WriteResults = (Result<Option<wit::WriteRule>, String>,);
pub(crate) type DescribeResults = (Result<wit::PolicyInfo, String>,);

/// Where the three exports are in a component.
pub(crate) struct Exports {
    describe: ComponentExportIndex,
    read: ComponentExportIndex,
    write: ComponentExportIndex,
}

/// The exports of one instance.
pub(crate) struct Funcs {
    describe: Func,
    read: Func,
    write: Func,
}

impl Exports {
    /// Finds the exports of the interface `interface` in `component`.
    pub fn find(component: &Component, interface: &str) -> Result<Exports, String> {
        let (_, iface) = component
            .get_export(None, interface)
            .ok_or_else(|| format!("does not export {interface}"))?;
        let func = |name: &str| {
            component
                .get_export_index(Some(&iface), name)
                .ok_or_else(|| format!("{interface} has no function `{name}`"))
        };
        Ok(Exports {
            describe: func("describe")?,
            read: func("read")?,
            write: func("write")?,
        })
    }

    /// The exports of `instance`.
    pub fn funcs(&self, store: &mut Store<HostState>, instance: &Instance) -> Option<Funcs> {
        Some(Funcs {
            describe: instance.get_func(&mut *store, self.describe)?,
            read: instance.get_func(&mut *store, self.read)?,
            write: instance.get_func(&mut *store, self.write)?,
        })
    }
}

impl Funcs {
    /// Checks the exports' types against the world (once per component: every instance of it
    /// has the same types, which the typed accessors below rely on).
    pub fn typecheck(&self, store: &Store<HostState>) -> Result<(), String> {
        fn check<P, R>(f: &Func, store: &Store<HostState>, name: &str) -> Result<(), String>
        where
            P: ComponentNamedList + Lower,
            R: ComponentNamedList + Lift,
        {
            f.typed::<P, R>(store)
                .map(drop)
                .map_err(|e| format!("its `{name}` has another type than the world's: {e:#}"))
        }
        check::<(), DescribeResults>(&self.describe, store, "describe")?;
        check::<ReadParams<'_>, ReadResults>(&self.read, store, "read")?;
        check::<WriteParams<'_>, WriteResults>(&self.write, store, "write")
    }

    // SAFETY (the three accessors): every instance of a policy's component has the export types
    // that `typecheck` checked, with these very types, when the policy was loaded.

    /// `describe`, typed.
    pub fn describe(&self) -> TypedFunc<(), DescribeResults> {
        unsafe { TypedFunc::new_unchecked(self.describe) }
    }

    /// `read`, typed.
    pub fn read<'a>(&self) -> TypedFunc<ReadParams<'a>, ReadResults> {
        unsafe { TypedFunc::new_unchecked(self.read) }
    }

    /// `write`, typed.
    pub fn write<'a>(&self) -> TypedFunc<WriteParams<'a>, WriteResults> {
        unsafe { TypedFunc::new_unchecked(self.write) }
    }
}
