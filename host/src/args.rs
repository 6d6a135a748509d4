//! Operation arguments: any `Serialize` value turned into named [`Value`]s.

use std::borrow::Cow;
use std::fmt;

use cachelet_template::Arg;
use serde::ser::{self, Impossible, Serialize};

use crate::error::Error;

/// One argument value, as a policy sees it (the WIT `value` variant).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum Value {
    /// No value (`None`, `()`, JSON `null`).
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer (every integer type up to `i64`; larger unsigned ones travel as [`Value::Json`]).
    Int(i64),
    /// A floating-point number.
    Float(f64),
    /// A string or a char.
    Text(String),
    /// Anything else (a sequence, a map, a nested struct), as JSON text.
    Json(String),
}

impl Value {
    /// The value of one `Serialize` argument.
    pub(crate) fn of<T: Serialize + ?Sized>(value: &T) -> Result<Value, Error> {
        to_value(value).map_err(|e| Error::Args(e.0))
    }

    /// The value as a template sees it.
    pub(crate) fn as_arg(&self) -> Arg<'_> {
        match self {
            Value::Null => Arg::Null,
            Value::Bool(b) => Arg::Boolean(*b),
            Value::Int(i) => Arg::Integer(*i),
            Value::Float(f) => Arg::Float(*f),
            Value::Text(s) => Arg::Text(s),
            Value::Json(s) => Arg::Json(s),
        }
    }

    /// The value as JSON.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => (*b).into(),
            Value::Int(i) => (*i).into(),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            Value::Text(s) => s.clone().into(),
            Value::Json(s) => serde_json::from_str(s).unwrap_or_else(|_| s.clone().into()),
        }
    }

    /// The value of a JSON document, scalars mapped to their own variant.
    pub(crate) fn from_json(v: &serde_json::Value) -> Value {
        match v {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i),
                None => match n.as_f64() {
                    Some(f) if n.is_f64() => Value::Float(f),
                    _ => Value::Json(n.to_string()),
                },
            },
            serde_json::Value::String(s) => Value::Text(s.clone()),
            other => Value::Json(other.to_string()),
        }
    }
}

/// The value as a template placeholder renders it (text and JSON escaped).
///
/// ```
/// use cachelet::Value;
/// assert_eq!(Value::Float(2.0).to_string(), "2");
/// assert_eq!(Value::Text("a:b".into()).to_string(), "a%3Ab");
/// ```
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::new();
        self.as_arg().render_into(&mut s);
        f.write_str(&s)
    }
}

/// The named arguments of one call of an operation.
///
/// Built from any `Serialize` struct or map whose keys are strings:
///
/// ```
/// use cachelet::{Args, Value};
///
/// #[derive(serde::Serialize)]
/// struct GetOrgUser { org_id: u32, user_id: u64 }
///
/// let args = Args::from_serialize(&GetOrgUser { org_id: 7, user_id: 42 }).unwrap();
/// assert_eq!(args.get("user_id"), Some(&Value::Int(42)));
///
/// let same = Args::new().with("org_id", 7).with("user_id", 42);
/// assert_eq!(args, same);
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Args {
    items: Vec<(Cow<'static, str>, Value)>,
}

impl Args {
    /// No arguments.
    pub fn new() -> Args {
        Args::default()
    }

    /// Adds (or replaces) an argument.
    pub fn with(mut self, name: impl Into<Cow<'static, str>>, value: impl Into<Value>) -> Args {
        self.set(name, value);
        self
    }

    /// Sets an argument, replacing one of the same name.
    pub fn set(&mut self, name: impl Into<Cow<'static, str>>, value: impl Into<Value>) {
        let name = name.into();
        let value = value.into();
        match self.items.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.items.push((name, value)),
        }
    }

    /// The argument `name`.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.items.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// The arguments in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.items.iter().map(|(n, v)| (n.as_ref(), v))
    }

    /// Number of arguments.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The arguments of a `Serialize` value: a struct's fields or a map's entries. A unit value
    /// (`()`) gives no arguments.
    pub fn from_serialize<A: Serialize + ?Sized>(args: &A) -> Result<Args, Error> {
        let mut out = Args::default();
        args.serialize(TopSerializer { out: &mut out })
            .map_err(|e| Error::Args(e.0))?;
        Ok(out)
    }

    /// The arguments as a JSON object (for loaders registered with typed arguments).
    pub(crate) fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Object(
            self.items
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_json()))
                .collect(),
        )
    }
}

/// Templates find their arguments here.
impl cachelet_template::Args for Args {
    fn arg(&self, name: &str) -> Option<Arg<'_>> {
        self.get(name).map(Value::as_arg)
    }
}

/// What the cache's operations take as arguments: any `Serialize` value (a struct's fields or a
/// map's entries, converted on each call), or [`Args`] themselves (used as they are).
///
/// ```
/// use cachelet::{Args, ToArgs, Value};
///
/// #[derive(serde::Serialize)]
/// struct GetUser {
///     user_id: u64,
/// }
///
/// let built = Args::new().with("user_id", 42);
/// assert_eq!(*GetUser { user_id: 42 }.to_args().unwrap(), built);
/// assert_eq!(*serde_json::json!({"user_id": 42}).to_args().unwrap(), built);
/// assert_eq!(built.to_args().unwrap().get("user_id"), Some(&Value::Int(42)));
/// ```
pub trait ToArgs {
    /// The arguments, borrowed when they already are [`Args`].
    fn to_args(&self) -> Result<Cow<'_, Args>, Error>;
}

impl<T: Serialize + ?Sized> ToArgs for T {
    fn to_args(&self) -> Result<Cow<'_, Args>, Error> {
        Args::from_serialize(self).map(Cow::Owned)
    }
}

impl ToArgs for Args {
    fn to_args(&self) -> Result<Cow<'_, Args>, Error> {
        Ok(Cow::Borrowed(self))
    }
}

impl<N: Into<Cow<'static, str>>, V: Into<Value>> FromIterator<(N, V)> for Args {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        let mut a = Args::new();
        for (n, v) in iter {
            a.set(n, v);
        }
        a
    }
}

macro_rules! value_from_int {
    ($($t:ty),*) => {$(
        impl From<$t> for Value {
            fn from(v: $t) -> Value { Value::Int(v as i64) }
        }
    )*};
}
value_from_int!(i8, i16, i32, i64, u8, u16, u32);

impl From<u64> for Value {
    fn from(v: u64) -> Value {
        i64::try_from(v).map_or_else(|_| Value::Json(v.to_string()), Value::Int)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Value {
        Value::Bool(v)
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Value {
        Value::Float(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::Text(v.to_string())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Value {
        Value::Text(v)
    }
}

/// Why a value could not become arguments.
#[derive(Debug)]
struct ArgError(String);

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for ArgError {}
impl ser::Error for ArgError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        ArgError(msg.to_string())
    }
}

fn not_named(what: &str) -> ArgError {
    ArgError(format!(
        "arguments must be a struct or a map with string keys, got {what}"
    ))
}

/// Serializes the top level: a struct or a map, whose fields become arguments.
struct TopSerializer<'a> {
    out: &'a mut Args,
}

struct FieldsSerializer<'a> {
    out: &'a mut Args,
    pending_key: Option<String>,
}

impl<'a> ser::SerializeStruct for FieldsSerializer<'a> {
    type Ok = ();
    type Error = ArgError;
    fn serialize_field<T: ?Sized + Serialize>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), ArgError> {
        let v = to_value(value)?;
        self.out.items.push((Cow::Borrowed(key), v));
        Ok(())
    }
    fn end(self) -> Result<(), ArgError> {
        Ok(())
    }
}

impl<'a> ser::SerializeMap for FieldsSerializer<'a> {
    type Ok = ();
    type Error = ArgError;
    fn serialize_key<T: ?Sized + Serialize>(&mut self, key: &T) -> Result<(), ArgError> {
        match to_value(key)? {
            Value::Text(s) => {
                self.pending_key = Some(s);
                Ok(())
            }
            Value::Int(i) => {
                self.pending_key = Some(i.to_string());
                Ok(())
            }
            _ => Err(not_named("a map with non-string keys")),
        }
    }
    fn serialize_value<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), ArgError> {
        let key = self.pending_key.take().ok_or_else(|| not_named("a map"))?;
        let v = to_value(value)?;
        self.out.set(key, v);
        Ok(())
    }
    fn end(self) -> Result<(), ArgError> {
        Ok(())
    }
}

fn to_value<T: ?Sized + Serialize>(value: &T) -> Result<Value, ArgError> {
    let json = serde_json::to_value(value).map_err(|e| ArgError(e.to_string()))?;
    Ok(Value::from_json(&json))
}

macro_rules! reject {
    ($($name:ident($($arg:ty),*) => $what:expr;)*) => {$(
        fn $name(self, $(_: $arg),*) -> Result<(), ArgError> { Err(not_named($what)) }
    )*};
}

impl<'a> ser::Serializer for TopSerializer<'a> {
    type Ok = ();
    type Error = ArgError;
    type SerializeSeq = Impossible<(), ArgError>;
    type SerializeTuple = Impossible<(), ArgError>;
    type SerializeTupleStruct = Impossible<(), ArgError>;
    type SerializeTupleVariant = Impossible<(), ArgError>;
    type SerializeMap = FieldsSerializer<'a>;
    type SerializeStruct = FieldsSerializer<'a>;
    type SerializeStructVariant = Impossible<(), ArgError>;

    reject! {
        serialize_bool(bool) => "a boolean";
        serialize_i8(i8) => "an integer";
        serialize_i16(i16) => "an integer";
        serialize_i32(i32) => "an integer";
        serialize_i64(i64) => "an integer";
        serialize_u8(u8) => "an integer";
        serialize_u16(u16) => "an integer";
        serialize_u32(u32) => "an integer";
        serialize_u64(u64) => "an integer";
        serialize_f32(f32) => "a number";
        serialize_f64(f64) => "a number";
        serialize_char(char) => "a character";
        serialize_str(&str) => "a string";
        serialize_bytes(&[u8]) => "bytes";
        serialize_unit_variant(&'static str, u32, &'static str) => "an enum";
    }

    fn serialize_none(self) -> Result<(), ArgError> {
        Ok(())
    }
    fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> Result<(), ArgError> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), ArgError> {
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), ArgError> {
        Ok(())
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), ArgError> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), ArgError> {
        Err(not_named("an enum"))
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, ArgError> {
        Err(not_named("a sequence"))
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, ArgError> {
        Err(not_named("a tuple"))
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, ArgError> {
        Err(not_named("a tuple struct"))
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, ArgError> {
        Err(not_named("an enum"))
    }
    fn serialize_map(self, len: Option<usize>) -> Result<Self::SerializeMap, ArgError> {
        self.out.items.reserve(len.unwrap_or(0));
        Ok(FieldsSerializer {
            out: self.out,
            pending_key: None,
        })
    }
    fn serialize_struct(
        self,
        _: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStruct, ArgError> {
        self.out.items.reserve(len);
        Ok(FieldsSerializer {
            out: self.out,
            pending_key: None,
        })
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, ArgError> {
        Err(not_named("an enum"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[derive(serde::Serialize)]
    struct S {
        user_id: u64,
        name: &'static str,
        tags: Vec<u8>,
        missing: Option<u8>,
        on: bool,
    }

    #[test]
    fn struct_fields_become_arguments() {
        let a = Args::from_serialize(&S {
            user_id: 42,
            name: "ann",
            tags: vec![1, 2],
            missing: None,
            on: true,
        })
        .unwrap();
        assert_eq!(a.get("user_id"), Some(&Value::Int(42)));
        assert_eq!(a.get("name"), Some(&Value::Text("ann".into())));
        assert_eq!(a.get("tags"), Some(&Value::Json("[1,2]".into())));
        assert_eq!(a.get("missing"), Some(&Value::Null));
        assert_eq!(a.get("on"), Some(&Value::Bool(true)));
    }

    #[test]
    fn maps_and_json_objects_become_arguments() {
        let mut m = BTreeMap::new();
        m.insert("user_id", 7);
        assert_eq!(
            Args::from_serialize(&m).unwrap(),
            Args::new().with("user_id", 7)
        );
        let j = serde_json::json!({"user_id": 7});
        assert_eq!(
            Args::from_serialize(&j).unwrap(),
            Args::new().with("user_id", 7)
        );
        assert!(Args::from_serialize(&()).unwrap().is_empty());
    }

    #[test]
    fn non_records_are_rejected_with_what_they_are() {
        let e = Args::from_serialize(&5).unwrap_err().to_string();
        assert!(e.contains("got an integer"), "{e}");
        let e = Args::from_serialize(&vec![1]).unwrap_err().to_string();
        assert!(e.contains("got a sequence"), "{e}");
    }

    #[test]
    fn rendering_matches_the_wit_rules() {
        let s: Vec<String> = [
            Value::Int(-3),
            Value::Float(0.5),
            Value::Bool(false),
            Value::Null,
            Value::Text("x:%".into()),
            Value::Json("{\"a\":1}".into()),
        ]
        .iter()
        .map(Value::to_string)
        .collect();
        assert_eq!(s, ["-3", "0.5", "false", "null", "x%3A%25", "{\"a\"%3A1}"]);
    }
}
