#!/usr/bin/env bash
# The third-party plugin example works from the outside: its binary lists the sampler and
# resolves it by name.
set -euo pipefail
BIN="$1"
"$BIN" list samplers | grep -q '^  lexical-overlap ' || { echo "check-example: lexical-overlap not listed" >&2; exit 1; }
"$BIN" list samplers | grep -q '^  same-category ' || { echo "check-example: built-ins missing from the example binary" >&2; exit 1; }
echo "check-example: lexical-overlap is listed by $BIN"
