#!/usr/bin/env bash
# Tests {{name}}'s rules in Node (policy.test.js), no component built.
set -euo pipefail
cd "$(dirname "$0")"
node --test "$@"
