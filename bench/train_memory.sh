#!/usr/bin/env bash
# Peak memory and step time of `embtune train` on CPU with and without
# --gradient-checkpointing: a random-weight bert-base-shaped model (12 layers, hidden 768;
# bench/reference/make_random_models.py --which bert-base), MNRL on (anchor, positive) pairs
# whose texts all fill --max-seq-length. Each run is its own process; peak RSS is its
# maximum resident set size (getrusage via /usr/bin/time), step time is the report's
# train_seconds / steps.
#
#   bench/train_memory.sh                      # defaults below
#   BIN=target/release/embtune-torch BATCH=32 SEQ=128 STEPS=2 bench/train_memory.sh
#
# Environment: BIN (the embtune-torch binary; default $CARGO_TARGET_DIR or target, debug),
# MODEL (default /tmp/embtune-random/bert-base-random, made when missing with PY, default
# .venv-ref/bin/python), BATCH (pairs per step, 8), SEQ (tokens per text, 128), STEPS (2).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/debug/embtune-torch}
MODEL=${MODEL:-/tmp/embtune-random/bert-base-random}
PY=${PY:-.venv-ref/bin/python}
BATCH=${BATCH:-8}
SEQ=${SEQ:-128}
STEPS=${STEPS:-2}

[ -x "$BIN" ] || { echo "no binary at $BIN: cargo build -p embtune-torch (or set BIN)" >&2; exit 1; }
if [ ! -f "$MODEL/model.safetensors" ]; then
  "$PY" bench/reference/make_random_models.py --out "$(dirname "$MODEL")" --which bert-base
fi

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
# BATCH * STEPS rows of distinct texts, each longer than SEQ tokens (truncated to SEQ).
python3 - "$WORK/train.csv" $((BATCH * STEPS)) <<'EOF'
import random, sys
words = ("model embedding vector search query document table column category product price "
         "customer order shipping river mountain data science learning network token sentence").split()
rng = random.Random(7)
with open(sys.argv[1], "w") as f:
    f.write("anchor,positive\n")
    for i in range(int(sys.argv[2])):
        text = lambda: f"row {i} " + " ".join(rng.choice(words) for _ in range(200))
        f.write(f"{text()},{text()}\n")
EOF

printf "%-22s %14s %14s\n" "bert-base, $BATCH pairs x $SEQ tokens" "peak RSS (MiB)" "s / step"
for mode in plain checkpointed; do
  flag=()
  [ "$mode" = checkpointed ] && flag=(--gradient-checkpointing)
  /usr/bin/time -f "%M" -o "$WORK/rss.$mode" "$BIN" train --model "$MODEL" --data "$WORK/train.csv" \
    --output "$WORK/out.$mode" --device cpu --batch-size "$BATCH" --max-steps "$STEPS" \
    --max-seq-length "$SEQ" --log-every 1 "${flag[@]}" >"$WORK/report.$mode.json" 2>"$WORK/log.$mode" ||
    { cat "$WORK/log.$mode" >&2; exit 1; }
  rss_kib=$(tail -n 1 "$WORK/rss.$mode")
  per_step=$(python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(f\"{r['train_seconds']/r['steps']:.1f}\")" "$WORK/report.$mode.json")
  printf "%-22s %14d %14s\n" "$mode" $((rss_kib / 1024)) "$per_step"
done
