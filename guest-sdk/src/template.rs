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

/// One piece of a template's text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Piece<'t> {
    /// Literal text (an escape yields the one brace it stands for).
    Text(&'t str),
    /// A placeholder's name.
    Param(&'t str),
}

/// Where the next brace is in `text` from byte `from` (`text.len()` if none).
fn next_brace(text: &str, from: usize) -> usize {
    text.as_bytes()[from..]
        .iter()
        .position(|&b| b == b'{' || b == b'}')
        .map_or(text.len(), |n| from + n)
}

/// What the brace at byte `at` of `text` starts: an escaped brace or a placeholder, with the
/// byte after it; or the problem. The one reading of the template syntax, shared by
/// [`Template::parse`] (through [`Pieces`]) and [`render_text`].
fn brace(text: &str, at: usize) -> Result<(Piece<'_>, usize), String> {
    let rest = &text[at..];
    let bytes = rest.as_bytes();
    if bytes.get(1) == Some(&bytes[0]) {
        return Ok((Piece::Text(&rest[..1]), at + 2));
    }
    if bytes[0] == b'}' {
        return Err(format!(
            "unmatched `}}` at byte {at} (write `}}}}` for a literal brace)"
        ));
    }
    let Some(len) = bytes[1..].iter().position(|&b| b == b'}') else {
        return Err(format!(
            "unclosed `{{` at byte {at} (write `{{{{` for a literal brace)"
        ));
    };
    let name = &rest[1..1 + len];
    if name.is_empty() {
        return Err(format!("empty placeholder `{{}}` at byte {at}"));
    }
    if !is_param_name(name) {
        return Err(format!(
            "invalid placeholder `{{{name}}}`: a name has only ASCII letters, digits and `_`"
        ));
    }
    Ok((Piece::Param(name), at + len + 2))
}

/// The pieces of a template, in order, or the problem that stops them.
struct Pieces<'t> {
    text: &'t str,
    at: usize,
}

impl<'t> Iterator for Pieces<'t> {
    type Item = Result<Piece<'t>, String>;

    fn next(&mut self) -> Option<Self::Item> {
        let at = self.at;
        if at == self.text.len() {
            return None;
        }
        let end = next_brace(self.text, at);
        if end > at {
            self.at = end;
            return Some(Ok(Piece::Text(&self.text[at..end])));
        }
        match brace(self.text, at) {
            Ok((piece, next)) => {
                self.at = next;
                Some(Ok(piece))
            }
            Err(problem) => {
                self.at = self.text.len();
                Some(Err(problem))
            }
        }
    }
}

fn pieces(text: &str) -> Pieces<'_> {
    Pieces { text, at: 0 }
}

/// Why rendering a template's text failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RenderError<'t> {
    /// The text is not a template.
    Invalid(TemplateError),
    /// A placeholder has no argument.
    Missing(Missing<'t>),
}

/// Renders `text` without keeping a parsed [`Template`]: what a closure's `render` does on
/// every call. `append` is as for [`Template::render`].
pub(crate) fn render_text<'t>(
    text: &'t str,
    mut append: impl FnMut(&str, &mut String) -> bool,
) -> Result<String, RenderError<'t>> {
    let invalid = |problem| {
        RenderError::Invalid(TemplateError {
            template: text.to_owned(),
            problem,
        })
    };
    let mut out = String::with_capacity(text.len() + 8);
    let mut at = 0;
    while at < text.len() {
        let end = next_brace(text, at);
        out.push_str(&text[at..end]);
        if end == text.len() {
            break;
        }
        let (piece, next) = brace(text, end).map_err(invalid)?;
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Param(name) => {
                if !append(name, &mut out) {
                    return Err(RenderError::Missing(Missing {
                        param: name,
                        template: text,
                    }));
                }
            }
        }
        at = next;
    }
    Ok(out)
}

impl Template {
    /// Parses `text`.
    pub(crate) fn parse(text: &str) -> Result<Template, TemplateError> {
        let mut segments = Vec::new();
        for piece in pieces(text) {
            match piece.map_err(|problem| TemplateError {
                template: text.to_owned(),
                problem,
            })? {
                Piece::Text(t) => match segments.last_mut() {
                    Some(Segment::Literal(l)) => l.push_str(t),
                    _ => segments.push(Segment::Literal(t.to_owned())),
                },
                Piece::Param(name) => segments.push(Segment::Param(name.to_owned())),
            }
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

    /// Renders through a parsed template and straight from the text; both must agree.
    fn render(template: &str, args: &[(&str, &str)]) -> Result<String, String> {
        let append = |name: &str, out: &mut String| match args.iter().find(|(n, _)| *n == name) {
            Some((_, v)) => {
                out.push_str(v);
                true
            }
            None => false,
        };
        let missing = |m: Missing| format!("missing {} in {}", m.param, m.template);
        let parsed = Template::parse(template)
            .map_err(|e| e.to_string())
            .and_then(|t| t.render(append).map_err(missing));
        let direct = render_text(template, append).map_err(|e| match e {
            RenderError::Invalid(e) => e.to_string(),
            RenderError::Missing(m) => missing(m),
        });
        assert_eq!(parsed, direct, "{template}");
        parsed
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
            let e = render(bad, &[]).unwrap_err();
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
