#!/usr/bin/env bash
# The main job end to end on the embedded defaults (README's first command runs this
# after building). Outputs go to out/demo/.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BIN="$ROOT/target/release/embtune"
OUT="$ROOT/out/demo"
mkdir -p "$OUT"
step() { printf '\n== %s\n' "$*"; }

step "embtune doctor"
"$BIN" doctor --strict
step "embtune list"
"$BIN" list
