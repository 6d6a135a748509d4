#!/usr/bin/env bash
# Checks that every test the README names in its guarantee tables exists: each backticked
# name in a table row's last column that looks like a test (snake_case, three words or more)
# must be a `fn` somewhere in the repository's Rust sources. A renamed or removed test makes
# this fail, so that no guarantee points at nothing.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
python3 - <<'PY'
import pathlib, re, sys
readme = pathlib.Path("README.md").read_text()
names = set()
for line in readme.splitlines():
    if not line.startswith("|") or line.startswith("|---"):
        continue
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if len(cells) < 2:
        continue
    for name in re.findall(r"`([a-z0-9_]+)`", cells[-1]):
        # `_on_redis` after a name stands for that name with another ending.
        if name.count("_") >= 2 and not name.startswith("_"):
            names.add(name)
sources = "\n".join(
    p.read_text(errors="replace")
    for p in pathlib.Path(".").rglob("*.rs")
    if not any(part in ("target", "build", "node_modules") for part in p.parts)
)
defined = set(re.findall(r"\bfn\s+([a-z0-9_]+)", sources))
missing = sorted(n for n in names if n not in defined)
if missing:
    print("README names tests that do not exist:\n  " + "\n  ".join(missing))
    sys.exit(1)
print(f"README: all {len(names)} tests its guarantee tables name exist")
PY
