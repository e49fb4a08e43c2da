#!/usr/bin/env bash
# The main job end to end on the embedded defaults (README's first command runs this after
# building): generate training data with an eval split from the demo table, evaluate the
# default model, fine-tune it with MNRL on CPU, evaluate again, and score a query.
# Outputs go to out/demo/.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BIN="$ROOT/target/release/embtune"
OUT="$ROOT/out/demo"
rm -rf "$OUT"
mkdir -p "$OUT"
step() { printf '\n== %s\n' "$*"; }
start=$(date +%s)

step "embtune doctor"
"$BIN" doctor --strict

step "embtune list"
"$BIN" list

step "embtune gen: fusion-multineg strategy, same-category negatives, 20% of anchors held out"
"$BIN" gen --strategy fusion-multineg --sampler same-category --num-negatives 1 \
  --data data/demo/products.csv --output-dir "$OUT/data" --eval-ratio 0.2 --seed 42
SUP=$(ls "$OUT"/data/*supervised.csv | grep -v unsupervised | head -n 1)
head -n 3 "$SUP"

step "embtune eval: the default model before fine-tuning"
"$BIN" eval --device cpu --eval-dir "$OUT/data" > "$OUT/before.json"
cat "$OUT/before.json"

step "embtune train: MNRL, 2 epochs, batch 16, max 128 tokens, CPU"
"$BIN" train --device cpu --data "$SUP" --loss mnrl --output "$OUT/model" \
  --epochs 2 --batch-size 16 --lr 5e-5 --warmup-ratio 0.1 --max-seq-length 128 \
  --eval-dir "$OUT/data" --log-every 5 > "$OUT/train.json"

step "embtune eval: the fine-tuned model"
"$BIN" eval --device cpu --model "$OUT/model/final" --eval-dir "$OUT/data" > "$OUT/after.json"
python3 - "$OUT/before.json" "$OUT/after.json" <<'PY'
import json, sys
b, a = (json.load(open(p)) for p in sys.argv[1:3])
print(f"{'metric':24} {'before':>8} {'after':>8}")
for k in ["cosine_ndcg@10", "cosine_mrr@10", "cosine_accuracy@1", "cosine_accuracy@5", "cosine_recall@10", "cosine_map@100"]:
    print(f"{k:24} {b[k]:8.4f} {a[k]:8.4f}")
PY

QUERY="해외에서 카드 결제할 때 수수료가 적은 카드가 있나요?"
step "embtune score: before / after for one query"
DOCS=("해외 결제 수수료 면제 체크카드" "자동차보험 긴급출동 서비스" "정기예금 중도해지 이율" "Overseas payment fee-free check card")
echo "-- default model"
"$BIN" score --device cpu --query "$QUERY" --documents "${DOCS[@]}"
echo "-- fine-tuned model"
"$BIN" score --device cpu --model "$OUT/model/final" --query "$QUERY" --documents "${DOCS[@]}"

echo
echo "demo finished in $(( $(date +%s) - start )) s; outputs in $OUT (model: $OUT/model/final, chart: $OUT/model/training.png)"
