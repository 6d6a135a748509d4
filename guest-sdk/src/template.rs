//! Key and tag templates: parsing once, rendering per call.
//!
//! The rules are the ones of the WIT `read-rule` doc comment, shared by the host and every SDK:
//! `{name}` (ASCII letters, digits, `_`) becomes the argument `name`; `{{` and `}}` stand for
//! literal braces; anything else with a brace is an error. This module knows nothing of the
//! generated bindings (values are appended by a callback), so it can be shared with the host.

use std::fmt;

/// A parsed template: literal text and `{param}` placeholders, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Template {
    /// The template as written (escapes included): what `describe()` hands to the host.
    text: String,
    segments: Vec<Segment>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    /// Literal text, escapes already resolved. Adjacent literals are merged.
    Literal(String),
    /// A placeholder's name.
    Param(String),
}

/// Why a template does not parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TemplateError {
    template: String,
    problem: String,
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "template `{}`: {}", self.template, self.problem)
    }
}

/// A placeholder with no argument of its name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Missing<'t> {
    /// The placeholder's name.
    pub(crate) param: &'t str,
    /// The whole template, for the message.
    pub(crate) template: &'t str,
}

impl Template {
    /// Parses `text`.
    pub(crate) fn parse(text: &str) -> Result<Template, TemplateError> {
        let err = |problem: String| TemplateError {
            template: text.to_owned(),
            problem,
        };
        let mut segments = Vec::new();
        let mut literal = String::new();
        let mut chars = text.char_indices().peekable();
        while let Some((at, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|&(_, c)| c) == Some('{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek().map(|&(_, c)| c) == Some('}') => {
                    chars.next();
                    literal.push('}');
                }
                '}' => {
                    return Err(err(format!(
                        "unmatched `}}` at byte {at} (write `}}}}` for a literal brace)"
                    )))
                }
                '{' => {
                    let rest = &text[at + 1..];
                    let Some(len) = rest.find('}') else {
                        return Err(err(format!(
                            "unclosed `{{` at byte {at} (write `{{{{` for a literal brace)"
                        )));
                    };
                    let name = &rest[..len];
                    if name.is_empty() {
                        return Err(err(format!("empty placeholder `{{}}` at byte {at}")));
                    }
                    if !is_param_name(name) {
                        return Err(err(format!(
                            "invalid placeholder `{{{name}}}`: a name has only ASCII letters, \
                             digits and `_`"
                        )));
                    }
                    if !literal.is_empty() {
                        segments.push(Segment::Literal(std::mem::take(&mut literal)));
                    }
                    segments.push(Segment::Param(name.to_owned()));
                    // Skip the name and the closing brace (all ASCII: one char per byte).
                    for _ in 0..=len {
                        chars.next();
                    }
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            segments.push(Segment::Literal(literal));
        }
        Ok(Template {
            text: text.to_owned(),
            segments,
        })
    }

    /// The template as written.
    pub(crate) fn text(&self) -> &str {
        &self.text
    }

    /// The placeholders' names, in order of appearance (repeats included).
    pub(crate) fn params(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Param(name) => Some(name.as_str()),
            Segment::Literal(_) => None,
        })
    }

    /// Renders the template. `append(name, out)` appends the argument `name` to `out` and
    /// returns `false` when there is no such argument.
    pub(crate) fn render(
        &self,
        mut append: impl FnMut(&str, &mut String) -> bool,
    ) -> Result<String, Missing<'_>> {
        let mut out = String::with_capacity(self.text.len() + 8);
        for segment in &self.segments {
            match segment {
                Segment::Literal(text) => out.push_str(text),
                Segment::Param(name) => {
                    if !append(name, &mut out) {
                        return Err(Missing {
                            param: name,
                            template: &self.text,
                        });
                    }
                }
            }
        }
        Ok(out)
    }
}

/// Whether `name` can be a placeholder's name.
pub(crate) fn is_param_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// `text` with its braces doubled, so that it renders as itself.
pub(crate) fn escape(text: &str) -> String {
    text.replace('{', "{{").replace('}', "}}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(template: &str, args: &[(&str, &str)]) -> Result<String, String> {
        let t = Template::parse(template).map_err(|e| e.to_string())?;
        t.render(|name, out| match args.iter().find(|(n, _)| *n == name) {
            Some((_, v)) => {
                out.push_str(v);
                true
            }
            None => false,
        })
        .map_err(|m| format!("missing {} in {}", m.param, m.template))
    }

    #[test]
    fn renders_placeholders() {
        assert_eq!(
            render("user:{user_id}", &[("user_id", "42")]).unwrap(),
            "user:42"
        );
        assert_eq!(
            render(
                "org:{org_id}:user:{user_id}",
                &[("user_id", "7"), ("org_id", "3")]
            )
            .unwrap(),
            "org:3:user:7"
        );
        assert_eq!(
            render("{a}{a}{b}", &[("a", "x"), ("b", "y")]).unwrap(),
            "xxy"
        );
        assert_eq!(render("static", &[]).unwrap(), "static");
        assert_eq!(render("", &[]).unwrap(), "");
        assert_eq!(render("é:{x}:ü", &[("x", "1")]).unwrap(), "é:1:ü");
    }

    #[test]
    fn escapes_are_literal_braces() {
        assert_eq!(render("{{x}}", &[]).unwrap(), "{x}");
        assert_eq!(render("{{{x}}}", &[("x", "1")]).unwrap(), "{1}");
        assert_eq!(render("a{{b", &[]).unwrap(), "a{b");
        // A value is never parsed as a template.
        assert_eq!(render("k:{x}", &[("x", "{y}")]).unwrap(), "k:{y}");
    }

    #[test]
    fn missing_argument_names_the_placeholder() {
        assert_eq!(
            render("user:{user_id}", &[("id", "1")]).unwrap_err(),
            "missing user_id in user:{user_id}"
        );
    }

    #[test]
    fn rejects_bad_templates() {
        for (bad, why) in [
            ("user:{user_id", "unclosed `{` at byte 5"),
            ("user:}", "unmatched `}` at byte 5"),
            ("a{}b", "empty placeholder"),
            ("{user-id}", "invalid placeholder `{user-id}`"),
            ("{a {b}", "invalid placeholder `{a {b}`"),
            ("{é}", "invalid placeholder"),
        ] {
            let e = Template::parse(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
            assert!(e.contains(bad), "{bad}: {e}");
        }
    }

    #[test]
    fn params_in_order() {
        let t = Template::parse("{b}:{{c}}:{a}:{b}").unwrap();
        assert_eq!(t.params().collect::<Vec<_>>(), ["b", "a", "b"]);
        assert_eq!(t.text(), "{b}:{{c}}:{a}:{b}");
    }

    #[test]
    fn escape_renders_as_itself() {
        let text = escape("a{b}c");
        assert_eq!(text, "a{{b}}c");
        assert_eq!(render(&text, &[]).unwrap(), "a{b}c");
    }

    #[test]
    fn equal_templates_compare_equal() {
        assert_eq!(
            Template::parse("user:{id}").unwrap(),
            Template::parse("user:{id}").unwrap()
        );
        // Adjacent literals merge, so an escape does not split a literal.
        let t = Template::parse("a{{b").unwrap();
        assert_eq!(t.segments, vec![Segment::Literal("a{b".into())]);
    }
}
