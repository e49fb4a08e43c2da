#!/usr/bin/env bash
# Sum the per-binary "test result:" lines of a cargo test log into one closing line.
set -euo pipefail
log="$1"
read -r passed failed ignored < <(awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1); if ($(i) ~ /^ignored;?$/) g += $(i-1) } } END { print p+0, f+0, g+0 }' "$log")
echo "embtune tests: $passed passed, $failed failed, $ignored skipped"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
