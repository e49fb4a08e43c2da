#!/usr/bin/env bash
# The third-party plugin example works from the outside: its binary lists the sampler,
# resolves it by name, and `gen --sampler lexical-overlap` writes negatives with it.
set -euo pipefail
BIN="$1"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
fail() { echo "check-example: $*" >&2; exit 1; }
"$BIN" list samplers | grep -q '^  lexical-overlap ' || fail "lexical-overlap not listed by $BIN"
"$BIN" list samplers | grep -q '^  same-category ' || fail "built-ins missing from $BIN"
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
"$BIN" gen --quiet --strategy fusion-multineg --sampler lexical-overlap --sampler-opt max_candidates=16 \
  --data "$ROOT/data/demo/products.csv" --output-dir "$OUT" --num-negatives 2 --seed 7
rows=$(($(wc -l < "$OUT/all_supervised.csv") - 1))
[ "$rows" -gt 0 ] || fail "gen --sampler lexical-overlap wrote no supervised rows"
grep -q '"sampler": *"lexical-overlap"' "$OUT/manifest.json" || fail "manifest does not name the sampler"
if "$BIN" gen --quiet --sampler no-such-sampler --data "$ROOT/data/demo/products.csv" --output-dir "$OUT/x" 2>"$OUT/err"; then
  fail "an unknown sampler was accepted"
fi
grep -q "lexical-overlap" "$OUT/err" || fail "the unknown-sampler error does not list lexical-overlap"
echo "check-example: lexical-overlap is listed by $BIN, selected by --sampler ($rows rows), and offered for unknown names"
