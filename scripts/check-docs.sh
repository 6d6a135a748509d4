#!/usr/bin/env bash
# Checks that every shell command of each language page (docs/policies/*.md) is one the test
# command runs, so that the pages cannot drift from what works:
#   - the commands `cachelet new` prints (cli/tests/new.rs runs each of them, in every
#     language) and the scaffold's build.sh / test.sh it runs them through;
#   - the toolchain installs of scripts/guest-toolchains.sh, which scripts/test.sh runs;
#   - system packages: every Debian package a page installs is one those scripts install.
# Commands are compared after joining `\` continuations and dropping what only quiets them
# (--quiet, >/dev/null, ...) and the toolchain folder before a tool's name (the page puts it
# on the PATH). Needs the `cachelet` binary (CACHELET, default $CARGO_TARGET_DIR or target, /release/cachelet).
#   scripts/check-docs.sh            # every page
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bin=${CACHELET:-${CARGO_TARGET_DIR:-$root/target}/release/cachelet}
[ -x "$bin" ] || cargo build --quiet --release --bin cachelet
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for lang in rust python js c; do
  (cd "$out" && "$bin" new --lang "$lang" my-policy --dir "$lang/my-policy" >"$lang.said")
done
python3 - "$root" "$out" <<'EOF'
import os, re, shlex, sys

root, out = sys.argv[1], sys.argv[2]
pages = {"rust": "rust.md", "python": "python.md", "js": "javascript.md", "c": "c.md"}
QUIET = {"--quiet", "-q", "--disable-pip-version-check", "--no-audit", "--no-fund",
         "--loglevel=error", ">/dev/null", "2>&1", "2>/dev/null"}


def versions(script):
    """NAME=value assignments of a script, to expand "$NAME"."""
    return dict(re.findall(r"^([A-Z_]+)=([^\s]+)$", script, re.M))


def commands(text, env=None):
    """Each simple command of a shell text, normalised."""
    text = re.sub(r"\\\n\s*", " ", text)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        line = re.split(r"\s+#\s", line)[0]
        for part in re.split(r"\s*(?:\|\||&&|\||;)\s*", line):
            out.append(normal(part, env or {}))
    return [c for c in out if c]


def normal(cmd, env):
    for name, value in env.items():
        cmd = cmd.replace("$" + name, value)
    cmd = re.sub(r'"?\$tc/[^"\s]*/\.?bin/([\w.-]+)"?', r"\1", cmd)  # a tool on the PATH
    cmd = cmd.replace('"', "")
    cmd = cmd.strip("{}() ").strip()
    words = [w for w in cmd.split() if w not in QUIET]
    return " ".join(words)


def apt_packages(text):
    pkgs = set()
    for m in re.finditer(r"missing\+=\(([^)]*)\)", text):
        pkgs.update(m.group(1).split())
    for m in re.finditer(r"apt_install ([^\n|]*)", text):
        pkgs.update(w for w in m.group(1).split() if not w.startswith("-") and "$" not in w
                    and w != "||")
    return pkgs


toolchains = open(f"{root}/scripts/guest-toolchains.sh").read()
known_apt = apt_packages(toolchains) | apt_packages(open(f"{root}/scripts/test.sh").read())
failures = []
for lang, page in pages.items():
    doc = open(f"{root}/docs/policies/{page}").read()
    tdir = f"{root}/cli/src/templates/{lang}"
    runs = set(commands(toolchains, versions(toolchains)))
    for f in os.listdir(tdir):
        if f.endswith(".sh"):
            runs.update(commands(open(f"{tdir}/{f}").read().replace("{{name}}", "my-policy")))
    said = open(f"{out}/{lang}.said").read()
    runs.update(commands("\n".join(l for l in said.splitlines() if l.startswith("  "))
                         .replace(f"{lang}/my-policy", "my-policy")))
    runs.add(f"cachelet new --lang {lang} my-policy")  # what printed the lines above
    for block in re.findall(r"```sh\n(.*?)```", doc, re.S):
        for cmd in commands(block):
            words = cmd.split()
            if words[:3] == ["sudo", "apt-get", "install"] or words[:2] == ["apt-get", "install"]:
                unknown = {w for w in words if not w.startswith("-")} - {"sudo", "apt-get",
                                                                        "install"} - known_apt
                if unknown:
                    failures.append(f"{page}: installs {sorted(unknown)}, which no script does")
                continue
            if cmd.startswith("export PATH=") or cmd.startswith("tc="):
                continue  # where the page's own installs go
            if cmd not in runs:
                failures.append(f"{page}: `{cmd}` is not a command the tests run")
if failures:
    print("\n".join(failures))
    sys.exit(1)
print("docs: every command of docs/policies/*.md is one the tests run")
EOF
