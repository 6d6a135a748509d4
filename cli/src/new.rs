//! `cachelet new --lang rust|python|js|c NAME`: scaffolds a policy project — the WIT, the
//! language's guest helper, one read and one write, a build script — that builds into a
//! component `cachelet check` accepts. The files are embedded from `templates/` and from the
//! repository's `wit/`, `guest-sdk/` and `template/`, so the binary carries everything it writes.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::ValueEnum;

/// A language `cachelet new` scaffolds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    /// Rust, with cachelet's guest SDK (a copy, in `cachelet-guest/` and `cachelet-template/`).
    Rust,
    /// Python, with componentize-py.
    Python,
    /// JavaScript, with componentize-js.
    Js,
    /// C, with clang, wasi-libc, `wit-bindgen c` and `wasm-tools`.
    C,
}

/// One file of a project: its path, its text, and whether `{{name}}`-style placeholders in
/// it are filled (the guest helpers are copied verbatim: their own docs use braces).
struct File {
    path: &'static str,
    text: &'static str,
    fill: bool,
    executable: bool,
}

const fn filled(path: &'static str, text: &'static str) -> File {
    File {
        path,
        text,
        fill: true,
        executable: false,
    }
}

const fn verbatim(path: &'static str, text: &'static str) -> File {
    File {
        path,
        text,
        fill: false,
        executable: false,
    }
}

const fn script(path: &'static str, text: &'static str) -> File {
    File {
        path,
        text,
        fill: true,
        executable: true,
    }
}

const WIT: &str = include_str!("../../wit/policy.wit");
const README: &str = include_str!("templates/README.md");

fn files(lang: Lang) -> Vec<File> {
    let mut files = vec![verbatim("wit/policy.wit", WIT), filled("README.md", README)];
    files.extend(match lang {
        Lang::Rust => vec![
            filled("Cargo.toml", include_str!("templates/rust/Cargo.toml")),
            filled("src/lib.rs", include_str!("templates/rust/lib.rs")),
            script("build.sh", include_str!("templates/rust/build.sh")),
            filled(
                "cachelet-guest/Cargo.toml",
                include_str!("templates/rust/sdk-Cargo.toml"),
            ),
            verbatim(
                "cachelet-guest/src/lib.rs",
                include_str!("../../guest-sdk/src/lib.rs"),
            ),
            verbatim(
                "cachelet-guest/src/args.rs",
                include_str!("../../guest-sdk/src/args.rs"),
            ),
            verbatim(
                "cachelet-guest/src/compiled.rs",
                include_str!("../../guest-sdk/src/compiled.rs"),
            ),
            verbatim(
                "cachelet-guest/src/policy.rs",
                include_str!("../../guest-sdk/src/policy.rs"),
            ),
            verbatim(
                "cachelet-guest/src/region.rs",
                include_str!("../../guest-sdk/src/region.rs"),
            ),
            verbatim(
                "cachelet-guest/src/rules.rs",
                include_str!("../../guest-sdk/src/rules.rs"),
            ),
            // The template grammar and renderer the SDK shares with the host.
            filled(
                "cachelet-template/Cargo.toml",
                include_str!("templates/rust/template-Cargo.toml"),
            ),
            verbatim(
                "cachelet-template/src/lib.rs",
                include_str!("../../template/src/lib.rs"),
            ),
            verbatim(
                "cachelet-template/src/tests.rs",
                include_str!("../../template/src/tests.rs"),
            ),
        ],
        Lang::Python => vec![
            filled("app.py", include_str!("templates/python/app.py")),
            filled("test_app.py", include_str!("templates/python/test_app.py")),
            script("build.sh", include_str!("templates/python/build.sh")),
            script("test.sh", include_str!("templates/python/test.sh")),
            verbatim(
                "cachelet_policy/__init__.py",
                include_str!("../../guest-sdk/python/cachelet_policy/__init__.py"),
            ),
            // PEP 561: editors and type checkers read the SDK's type hints.
            verbatim("cachelet_policy/py.typed", ""),
            verbatim(
                ".gitignore",
                ".toolchain/\n.bindings/\n__pycache__/\n*.wasm\n",
            ),
        ],
        Lang::Js => vec![
            filled("policy.js", include_str!("templates/js/policy.js")),
            filled(
                "policy.test.js",
                include_str!("templates/js/policy.test.js"),
            ),
            script("build.sh", include_str!("templates/js/build.sh")),
            script("test.sh", include_str!("templates/js/test.sh")),
            verbatim(
                "cachelet-policy.js",
                include_str!("../../guest-sdk/js/cachelet-policy.js"),
            ),
            // Types for the editor (TypeScript's language service reads them for .js too).
            verbatim(
                "cachelet-policy.d.ts",
                include_str!("../../guest-sdk/js/cachelet-policy.d.ts"),
            ),
            // ES modules in Node, for the tests.
            verbatim(
                "package.json",
                include_str!("../../guest-sdk/js/package.json"),
            ),
            verbatim(".gitignore", ".toolchain/\n*.wasm\n"),
        ],
        Lang::C => vec![
            filled("policy.c", include_str!("templates/c/policy.c")),
            script("build.sh", include_str!("templates/c/build.sh")),
            verbatim(
                "cachelet_policy.h",
                include_str!("../../guest-sdk/c/cachelet_policy.h"),
            ),
            verbatim(
                "cachelet_policy.c",
                include_str!("../../guest-sdk/c/cachelet_policy.c"),
            ),
            verbatim(".gitignore", ".toolchain/\ngen/\n*.wasm\n"),
        ],
    });
    if lang == Lang::Rust {
        files.push(verbatim(".gitignore", "target/\n*.wasm\n"));
    }
    files
}

/// What the README and the build script say about the language.
fn words(lang: Lang) -> [(&'static str, &'static str); 5] {
    match lang {
        Lang::Rust => [
            ("{{lang}}", "rust"),
            ("{{language}}", "Rust"),
            (
                "{{sdk}}",
                "`cachelet-guest/` (with `cachelet-template/`), a copy of cachelet's guest SDK",
            ),
            ("{{source}}", "src/lib.rs"),
            ("{{doc}}", "rust.md"),
        ],
        Lang::Python => [
            ("{{lang}}", "python"),
            ("{{language}}", "Python"),
            ("{{sdk}}", "`cachelet_policy.py`"),
            ("{{source}}", "app.py"),
            ("{{doc}}", "python.md"),
        ],
        Lang::Js => [
            ("{{lang}}", "js"),
            ("{{language}}", "JavaScript"),
            ("{{sdk}}", "`cachelet-policy.js`"),
            ("{{source}}", "policy.js"),
            ("{{doc}}", "javascript.md"),
        ],
        Lang::C => [
            ("{{lang}}", "c"),
            ("{{language}}", "C"),
            ("{{sdk}}", "`cachelet_policy.h` / `cachelet_policy.c`"),
            ("{{source}}", "policy.c"),
            ("{{doc}}", "c.md"),
        ],
    }
}

/// Writes the project for `name` into `dir` (default: `./name`), which must not exist yet.
/// Returns the directory and the lines to print.
pub fn scaffold(lang: Lang, name: &str, dir: Option<PathBuf>) -> Result<(PathBuf, String)> {
    let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_';
    if name.is_empty()
        || !name.chars().all(ok)
        || !name.starts_with(|c: char| c.is_ascii_lowercase())
    {
        bail!(
            "policy name {name:?}: use lowercase ASCII letters, digits, `-` and `_`, starting \
             with a letter (it names the component, the crate or module, and the file)"
        );
    }
    let dir = dir.unwrap_or_else(|| PathBuf::from(name));
    if dir.exists() {
        bail!(
            "{} exists already: choose another name or --dir",
            dir.display()
        );
    }
    let crate_name = name.replace('-', "_");
    for f in files(lang) {
        let path = dir.join(f.path);
        let mut text = f.text.to_string();
        if f.fill {
            text = text
                .replace("{{name}}", name)
                .replace("{{crate}}", &crate_name);
            for (from, to) in words(lang) {
                text = text.replace(from, to);
            }
        }
        write(&path, &text, f.executable)?;
    }
    let shown = dir.display();
    let toolchain = match lang {
        Lang::Rust => "needs Rust; adds the wasm32-wasip2 target if missing",
        Lang::Python => "installs componentize-py into .toolchain/ on first run",
        Lang::Js => "installs componentize-js into .toolchain/ on first run",
        Lang::C => "needs clang, lld, wasi-libc; installs wasm-tools, wit-bindgen into .toolchain/",
    };
    let test = match lang {
        Lang::Rust => format!("  (cd {shown} && cargo test)    # the rules, natively\n"),
        Lang::Python => format!("  {shown}/test.sh    # the rules, in CPython\n"),
        Lang::Js => format!("  {shown}/test.sh    # the rules, in Node\n"),
        Lang::C => String::new(),
    };
    let next = format!(
        "created {shown}/ ({lang} policy {name})\n\
         build it:\n  {shown}/build.sh    # {toolchain}\n\
         then:\n  cachelet check {shown}/{name}.wasm\n  \
         cachelet call {shown}/{name}.wasm read get_item item_id=42\n{test}",
        lang = words(lang)[1].1,
    );
    Ok((dir, next))
}

fn write(path: &Path, text: &str, executable: bool) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    #[cfg(unix)]
    if executable {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    }
    #[cfg(not(unix))]
    let _ = executable;
    Ok(())
}
