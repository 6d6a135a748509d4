use std::collections::HashMap;

use super::*;

/// Renders through a parsed template and straight from the text; both must agree.
fn render_both(template: &str, args: &[(&str, Arg<'_>)]) -> Result<String, String> {
    let parsed = Template::parse(template)
        .map_err(|e| e.to_string())
        .and_then(|t| t.render(args).map_err(|m| m.to_string()));
    let direct = render(template, args).map_err(|e| e.to_string());
    assert_eq!(parsed, direct, "{template}");
    parsed
}

fn text<'a>(pairs: &[(&'a str, &'a str)]) -> Vec<(&'a str, Arg<'a>)> {
    pairs.iter().map(|&(n, v)| (n, Arg::Text(v))).collect()
}

#[test]
fn renders_placeholders() {
    let r = |t, a: &[(&str, &str)]| render_both(t, &text(a));
    assert_eq!(
        r("user:{user_id}", &[("user_id", "42")]).unwrap(),
        "user:42"
    );
    assert_eq!(
        r(
            "org:{org_id}:user:{user_id}",
            &[("user_id", "7"), ("org_id", "3")]
        )
        .unwrap(),
        "org:3:user:7"
    );
    assert_eq!(
        r("{a}:{a}:{b}", &[("a", "x"), ("b", "y")]).unwrap(),
        "x:x:y"
    );
    assert_eq!(r("static", &[]).unwrap(), "static");
    assert_eq!(r("", &[]).unwrap(), "");
    assert_eq!(r("é:{x}:ü", &[("x", "1")]).unwrap(), "é:1:ü");
    // A separator only needs a `:` somewhere in the literal between two placeholders.
    assert_eq!(
        r("{a}-x:y-{b}", &[("a", "1"), ("b", "2")]).unwrap(),
        "1-x:y-2"
    );
    assert_eq!(
        r("pre{a}:{b}post", &[("a", "1"), ("b", "2")]).unwrap(),
        "pre1:2post"
    );
}

#[test]
fn braces_escape_and_values_are_never_templates() {
    let r = |t, a: &[(&str, &str)]| render_both(t, &text(a));
    assert_eq!(r("{{x}}", &[]).unwrap(), "{x}");
    assert_eq!(r("{{{x}}}", &[("x", "1")]).unwrap(), "{1}");
    assert_eq!(r("a{{b", &[]).unwrap(), "a{b");
    assert_eq!(r("k:{x}", &[("x", "{y}")]).unwrap(), "k:{y}");
    // An escaped brace is literal text, and `{:}` holds a separator.
    assert_eq!(
        r("{a}{{:}}{b}", &[("a", "1"), ("b", "2")]).unwrap(),
        "1{:}2"
    );
    let l = literal("a{b}c");
    assert_eq!(l, "a{{b}}c");
    assert_eq!(r(&l, &[]).unwrap(), "a{b}c");
}

#[test]
fn values_render_as_the_wit_says() {
    let cases: [(Arg, &str); 16] = [
        (Arg::Integer(-3), "-3"),
        (Arg::Integer(i64::MIN), "-9223372036854775808"),
        (Arg::Float(1.0), "1"),
        (Arg::Float(0.5), "0.5"),
        (Arg::Float(1e16), "10000000000000000"),
        (Arg::Float(1e-7), "0.0000001"),
        (Arg::Float(0.1 + 0.2), "0.30000000000000004"),
        (Arg::Float(-0.0), "-0"),
        (Arg::Boolean(false), "false"),
        (Arg::Null, "null"),
        (Arg::Text(""), ""),
        (Arg::Text("a:b"), "a%3Ab"),
        (Arg::Text("100%"), "100%25"),
        (Arg::Text("%3A"), "%253A"),
        (Arg::Text("ü:✓{}/%"), "ü%3A✓{}/%25"),
        (Arg::Json(r#"{"a":"%"}"#), r#"{"a"%3A"%25"}"#),
    ];
    for (v, want) in cases {
        let mut out = String::from("=");
        v.render_into(&mut out);
        assert_eq!(out, format!("={want}"), "{v:?}");
    }
    // Literal text is never escaped.
    let args = [("x", Arg::Text(":"))];
    assert_eq!(render_both("%:{x}:%", &args).unwrap(), "%:%3A:%");
}

#[test]
fn missing_argument_names_the_placeholder() {
    assert_eq!(
        render_both("user:{user_id}", &text(&[("id", "1")])).unwrap_err(),
        "no argument `user_id` for the placeholder `{user_id}` of `user:{user_id}`"
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
        (
            "{a}{b}",
            "placeholders `{a}` and `{b}` have no `:` between them",
        ),
        (
            "{a}-{b}",
            "placeholders `{a}` and `{b}` have no `:` between them",
        ),
        ("{a}{a}", "placeholders `{a}` and `{a}` have no `:`"),
        ("x:{a}{{}}{b}:y", "placeholders `{a}` and `{b}`"),
        ("{a}:{b}.{c}", "placeholders `{b}` and `{c}`"),
    ] {
        let e = render_both(bad, &text(&[("a", "1"), ("b", "2"), ("c", "3")])).unwrap_err();
        assert!(e.contains(why), "{bad}: {e}");
        assert!(e.starts_with(&format!("template `{bad}`: ")), "{bad}: {e}");
    }
    // The first problem in reading order is the one told.
    let e = Template::parse("{a}{b}:{").unwrap_err();
    assert!(
        e.problem().starts_with("placeholders `{a}` and `{b}`"),
        "{e}"
    );
    assert_eq!(e.template(), "{a}{b}:{");
    let e = Template::parse("{a}:{:{b}{c}").unwrap_err();
    assert!(
        e.problem().starts_with("invalid placeholder `{:{b}`"),
        "{e}"
    );
}

#[test]
fn placeholders_check_only_the_syntax() {
    assert_eq!(
        placeholders("GET /orgs/{org_id}/users/{user_id}").unwrap(),
        ["org_id", "user_id"]
    );
    assert_eq!(placeholders("{a}{b}").unwrap(), ["a", "b"]);
    assert!(placeholders("GET /users/{id").is_err());
}

#[test]
fn params_in_order_and_equal_templates_compare_equal() {
    let t = Template::parse("{b}:{{c}}:{a}:{b}").unwrap();
    assert_eq!(t.params().collect::<Vec<_>>(), ["b", "a", "b"]);
    assert_eq!(t.text(), "{b}:{{c}}:{a}:{b}");
    assert_eq!(t.to_string(), t.text());
    assert_eq!(
        Template::parse("user:{id}").unwrap(),
        Template::parse("user:{id}").unwrap()
    );
    // Adjacent literals merge, so an escape does not split a literal.
    let t = Template::parse("a{{b").unwrap();
    assert_eq!(t.segments, vec![Segment::Literal("a{b".into())]);
}

/// Values a renderer without escaping (or with a wrong one) turns into collisions.
const ADVERSARIAL: [&str; 24] = [
    "",
    ":",
    "::",
    "%",
    "%%",
    "%3A",
    "%3a",
    "%25",
    "%253A",
    "%:",
    ":%",
    "a:b",
    "a%3Ab",
    "1:user:2",
    "2:user:3",
    "user",
    ":user:",
    "ü",
    "ü:ö",
    "日本:語",
    "✓%✓",
    "{x}",
    "}",
    " :",
];

/// A small xorshift generator: the same values on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A short string over an alphabet heavy in separators and escapes.
    fn text(&mut self) -> String {
        const ALPHABET: [&str; 10] = [":", "%", "3", "A", "a", "2", "5", "u", "ü", "語"];
        let len = self.next() % 7;
        (0..len)
            .map(|_| ALPHABET[(self.next() % ALPHABET.len() as u64) as usize])
            .collect()
    }

    fn arg(&mut self, text: &str) -> OwnedArg {
        match self.next() % 8 {
            0 => OwnedArg::Integer(self.next() as i64 % 1000),
            1 => OwnedArg::Float((self.next() % 10_000) as f64 / 8.0),
            2 => OwnedArg::Boolean(self.next().is_multiple_of(2)),
            3 => OwnedArg::Null,
            4 => OwnedArg::Json(text.to_owned()),
            _ => OwnedArg::Text(text.to_owned()),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
enum OwnedArg {
    Null,
    Boolean(bool),
    Integer(i64),
    Float(f64),
    Text(String),
    Json(String),
}

impl OwnedArg {
    fn borrow(&self) -> Arg<'_> {
        match self {
            OwnedArg::Null => Arg::Null,
            OwnedArg::Boolean(b) => Arg::Boolean(*b),
            OwnedArg::Integer(i) => Arg::Integer(*i),
            OwnedArg::Float(f) => Arg::Float(*f),
            OwnedArg::Text(s) => Arg::Text(s),
            OwnedArg::Json(s) => Arg::Json(s),
        }
    }

    /// What the argument "is" for the cache: values of the same text are one argument by
    /// design (`Integer(42)` and `Text("42")` render alike), so compare by rendered text.
    fn identity(&self) -> String {
        let mut out = String::new();
        self.borrow().render_into(&mut out);
        out
    }
}

/// Templates of every shape the separator rule allows.
const TEMPLATES: [&str; 7] = [
    "org:{org}:user:{user}",
    "{org}:{user}",
    "a{org}b:c{user}d",
    "{org}::{user}",
    "{{x}}{org}%:%{user}:{org}",
    "k:{org}",
    "{org}:{{:}}:{user}",
];

fn render_pair(t: &Template, org: &OwnedArg, user: &OwnedArg) -> String {
    t.render(&[("org", org.borrow()), ("user", user.borrow())][..])
        .unwrap()
}

#[test]
fn distinct_arguments_never_render_alike() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut values: Vec<OwnedArg> = ADVERSARIAL
        .iter()
        .flat_map(|t| [OwnedArg::Text(t.to_string()), OwnedArg::Json(t.to_string())])
        .collect();
    values.extend([
        OwnedArg::Integer(42),
        OwnedArg::Float(42.0),
        OwnedArg::Float(0.5),
        OwnedArg::Boolean(true),
        OwnedArg::Null,
    ]);
    while values.len() < 160 {
        let t = rng.text();
        let v = rng.arg(&t);
        values.push(v);
    }
    for text in TEMPLATES {
        let t = Template::parse(text).unwrap();
        // Every pair of values for (org, user): a rendered key names one pair of identities.
        let mut seen: HashMap<String, (String, String)> = HashMap::new();
        for org in &values {
            for user in &values {
                let key = render_pair(&t, org, user);
                let uses_user = t.params().any(|p| p == "user");
                let who = (
                    org.identity(),
                    if uses_user {
                        user.identity()
                    } else {
                        String::new()
                    },
                );
                if let Some(before) = seen.insert(key.clone(), who.clone()) {
                    assert_eq!(before, who, "{text}: {key:?} renders two argument sets");
                }
            }
        }
    }
}

#[test]
fn the_wit_example_no_longer_collides() {
    let t = Template::parse("org:{org}:user:{user}").unwrap();
    let a = render_pair(
        &t,
        &OwnedArg::Text("1:user:2".into()),
        &OwnedArg::Text("3".into()),
    );
    let b = render_pair(
        &t,
        &OwnedArg::Text("1".into()),
        &OwnedArg::Text("2:user:3".into()),
    );
    assert_ne!(a, b);
    assert_eq!(a, "org:1%3Auser%3A2:user:3");
    assert_eq!(b, "org:1:user:2%3Auser%3A3");
}

/// The arguments' rendered texts back from a rendered key: the first `:` after each value ends
/// it, since no rendered value holds one. Proves the rendering injective by construction.
fn unrender(template: &Template, rendered: &str) -> Vec<String> {
    let mut values = Vec::new();
    let mut rest = rendered;
    let segments = &template.segments;
    for (i, segment) in segments.iter().enumerate() {
        match segment {
            Segment::Literal(l) => {
                rest = rest.strip_prefix(l.as_str()).expect("the literal is there");
            }
            Segment::Param(_) => {
                let end = match segments.get(i + 1) {
                    // The value ends where the literal's first `:`, less what precedes it, is.
                    // The last literal: the value is all before it.
                    Some(Segment::Literal(l)) if i + 2 == segments.len() => rest.len() - l.len(),
                    Some(Segment::Literal(l)) => {
                        let colon = l.find(':').expect("separated");
                        rest.find(':').expect("the separator is there") - colon
                    }
                    None => rest.len(),
                    Some(Segment::Param(_)) => unreachable!("separated"),
                };
                values.push(rest[..end].to_owned());
                rest = &rest[end..];
            }
        }
    }
    assert!(rest.is_empty());
    values
}

/// Undoes the escaping of a text value.
fn unescape(s: &str) -> String {
    s.replace("%3A", ":").replace("%25", "%")
}

#[test]
fn rendered_keys_round_trip_to_their_arguments() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for text in TEMPLATES {
        let t = Template::parse(text).unwrap();
        for i in 0..2000 {
            let (a, b) = (rng.text(), rng.text());
            let (org, user) = if i < ADVERSARIAL.len() * ADVERSARIAL.len() {
                let n = ADVERSARIAL.len();
                (ADVERSARIAL[i / n].to_owned(), ADVERSARIAL[i % n].to_owned())
            } else {
                (a, b)
            };
            let rendered = render_pair(
                &t,
                &OwnedArg::Text(org.clone()),
                &OwnedArg::Text(user.clone()),
            );
            let back = unrender(&t, &rendered);
            let names: Vec<&str> = t.params().collect();
            for (name, value) in names.iter().zip(&back) {
                let want = if *name == "org" { &org } else { &user };
                assert!(!value.contains(':'), "{text}: {value:?}");
                assert_eq!(&unescape(value), want, "{text}: {rendered:?}");
            }
        }
    }
}

#[test]
fn escaping_round_trips() {
    let mut rng = Rng(7);
    let mut samples: Vec<String> = ADVERSARIAL.iter().map(|s| s.to_string()).collect();
    samples.extend((0..5000).map(|_| rng.text()));
    for s in samples {
        let mut out = String::new();
        escape_into(&s, &mut out);
        assert!(!out.contains(':'), "{s:?} -> {out:?}");
        assert_eq!(unescape(&out), s, "{out:?}");
        // Only `%` and `:` change.
        assert_eq!(
            out.len(),
            s.len() + 2 * s.bytes().filter(|&b| b == b'%' || b == b':').count()
        );
    }
}
