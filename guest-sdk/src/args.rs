//! The arguments of one call, as a closure sees them.

use cachelet_template::{Arg, Template};

use crate::Value;

/// The named arguments of one call of an operation (and, for a write, its result), handed to
/// the closures of [`ReadOp::rule_with`](crate::ReadOp::rule_with),
/// [`WriteOp::tags_with`](crate::WriteOp::tags_with) and friends.
///
/// Accessors return `Err` with a message naming the argument, ready for `?` in a closure that
/// returns `Result<_, String>`.
///
/// ```
/// use cachelet_guest::prelude::*;
///
/// let call = [("user_id".to_string(), Value::Integer(42)), ("q".to_string(), Value::from("rust"))];
/// let args = Args::new(&call, None);
/// assert_eq!(args.integer("user_id"), Ok(42));
/// assert_eq!(args.text("q"), Ok("rust"));
/// assert_eq!(args.render("user:{user_id}:q:{q}"), Ok("user:42:q:rust".to_string()));
/// let odd = [("q".to_string(), Value::from("a:b"))];
/// assert_eq!(Args::new(&odd, None).render("search:{q}"), Ok("search:a%3Ab".to_string()));
/// assert_eq!(args.text("user_id"), Err("argument `user_id` is integer, not text".to_string()));
/// assert_eq!(args.value("nope"), Err("no argument `nope`".to_string()));
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Args<'a> {
    args: &'a [(String, Value)],
    result: Option<&'a Value>,
}

impl<'a> Args<'a> {
    /// Wraps a call's arguments and, for a write, its result.
    pub fn new(args: &'a [(String, Value)], result: Option<&'a Value>) -> Args<'a> {
        Args { args, result }
    }

    /// The argument `name`, if the call has it.
    pub fn get(&self, name: &str) -> Option<&'a Value> {
        self.args.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// The argument `name`, or an error if the call lacks it.
    pub fn value(&self, name: &str) -> Result<&'a Value, String> {
        self.get(name)
            .ok_or_else(|| format!("no argument `{name}`"))
    }

    /// The argument `name`, which must be text.
    pub fn text(&self, name: &str) -> Result<&'a str, String> {
        match self.value(name)? {
            Value::Text(s) => Ok(s),
            other => Err(wrong_kind(name, other, "text")),
        }
    }

    /// The argument `name`, which must be an integer.
    pub fn integer(&self, name: &str) -> Result<i64, String> {
        match self.value(name)? {
            Value::Integer(i) => Ok(*i),
            other => Err(wrong_kind(name, other, "integer")),
        }
    }

    /// The argument `name`, which must be a float or an integer.
    pub fn float(&self, name: &str) -> Result<f64, String> {
        match self.value(name)? {
            Value::Float(f) => Ok(*f),
            Value::Integer(i) => Ok(*i as f64),
            other => Err(wrong_kind(name, other, "float")),
        }
    }

    /// The argument `name`, which must be a boolean.
    pub fn boolean(&self, name: &str) -> Result<bool, String> {
        match self.value(name)? {
            Value::Boolean(b) => Ok(*b),
            other => Err(wrong_kind(name, other, "boolean")),
        }
    }

    /// Renders a template such as `"user:{user_id}"` with these arguments, exactly as a
    /// declared key or tag renders and as the host renders it (any kind of value; text and JSON
    /// with `%` as `%25` and `:` as `%3A`; see the crate docs).
    pub fn render(&self, template: &str) -> Result<String, String> {
        cachelet_template::render(template, self).map_err(|e| e.to_string())
    }

    /// For a write, the write action's return value, if any; `None` for a read.
    pub fn result(&self) -> Option<&'a Value> {
        self.result
    }

    /// The arguments in the caller's order.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a Value)> {
        self.args.iter().map(|(n, v)| (n.as_str(), v))
    }

    /// The arguments as the call passed them.
    pub fn as_slice(&self) -> &'a [(String, Value)] {
        self.args
    }

    /// Renders a parsed template; the message names a missing argument.
    pub(crate) fn render_template(&self, template: &Template) -> Result<String, String> {
        template.render(self).map_err(|m| m.to_string())
    }
}

/// Templates find their arguments here.
impl cachelet_template::Args for Args<'_> {
    fn arg(&self, name: &str) -> Option<Arg<'_>> {
        self.get(name).map(Value::as_arg)
    }
}

fn wrong_kind(name: &str, value: &Value, want: &str) -> String {
    format!("argument `{name}` is {}, not {want}", value.kind())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accessors() {
        let call = vec![
            ("i".to_string(), Value::Integer(3)),
            ("f".to_string(), Value::Float(0.5)),
            ("b".to_string(), Value::Boolean(true)),
            ("n".to_string(), Value::Null),
            ("j".to_string(), Value::Json("{\"a\":1}".into())),
        ];
        let result = Value::Integer(7);
        let a = Args::new(&call, Some(&result));
        assert_eq!(a.integer("i"), Ok(3));
        assert_eq!(a.float("i"), Ok(3.0));
        assert_eq!(a.float("f"), Ok(0.5));
        assert_eq!(a.boolean("b"), Ok(true));
        assert_eq!(
            a.boolean("n"),
            Err("argument `n` is null, not boolean".into())
        );
        assert_eq!(
            a.integer("j"),
            Err("argument `j` is json, not integer".into())
        );
        assert_eq!(a.result(), Some(&Value::Integer(7)));
        assert_eq!(
            a.render("{i}:{f}:{b}:{n}:{j}"),
            Ok("3:0.5:true:null:{\"a\"%3A1}".into())
        );
        assert_eq!(
            a.render("x:{zz}"),
            Err("no argument `zz` for the placeholder `{zz}` of `x:{zz}`".into())
        );
        assert!(a.render("x:{").unwrap_err().contains("unclosed"));
        assert!(a
            .render("x:{i}{f}")
            .unwrap_err()
            .contains("placeholders `{i}` and `{f}` have no `:` between them"));
        assert_eq!(a.iter().map(|(n, _)| n).collect::<String>(), "ifbnj");
        assert_eq!(a.as_slice().len(), 5);
    }
}
