#!/usr/bin/env bash
# Same-category negatives vs model-mined hard negatives on the demo table (docs/GUIDE.md,
# "Mining hard negatives"): one eval split, three training sets, the same MNRL run on each,
# NDCG@10 of each fine-tuned model on the held-out split.
#   1. `gen --sampler same-category` (the original behaviour),
#   2. `embtune mine` over that file's (anchor, positive) pairs (n-tuple, relative margin),
#   3. `gen --sampler model-mined` (the same filters inside gen).
# Usage: bench/mined_negatives.sh   (after `make build`; OUT=out/mined, EPOCHS=2)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BIN="${BIN:-$ROOT/target/release/embtune}"
OUT="${OUT:-$ROOT/out/mined}"
EPOCHS="${EPOCHS:-2}"
rm -rf "$OUT"
mkdir -p "$OUT"
GEN=(--strategy fusion-multineg --num-negatives 1 --data data/demo/products.csv --eval-ratio 0.2 --seed 42 --quiet)

"$BIN" gen "${GEN[@]}" --sampler same-category --output-dir "$OUT/same"
# In gen the margin's positive is the first positive column (here 대분류, the group's own
# label), so margins say little; the window is the group's nearest texts below max_score.
"$BIN" gen "${GEN[@]}" --sampler model-mined --sampler-opt device=cpu \
  --sampler-opt scope=group --sampler-opt max_score=0.9 --output-dir "$OUT/gen-mined"
for f in eval_queries.csv eval_corpus.csv eval_qrels.csv; do
  cmp -s "$OUT/same/$f" "$OUT/gen-mined/$f" || { echo "the two gen runs held out different splits ($f)" >&2; exit 1; }
done
"$BIN" mine --device cpu --quiet --data "$OUT/same/all_supervised.csv" --output "$OUT/mined.csv" \
  --relative-margin 0.05 --num-negatives 1 --output-format triplet

train() { # name data
  "$BIN" train --device cpu --data "$2" --loss mnrl --output "$OUT/model-$1" --epochs "$EPOCHS" \
    --batch-size 16 --lr 5e-5 --warmup-ratio 0.1 --max-seq-length 128 --seed 42 > "$OUT/train-$1.json"
  "$BIN" eval --device cpu --model "$OUT/model-$1/final" --eval-dir "$OUT/same" > "$OUT/eval-$1.json"
}
"$BIN" eval --device cpu --eval-dir "$OUT/same" > "$OUT/eval-base.json"
train same "$OUT/same/all_supervised.csv"
train mine "$OUT/mined.csv"
train gen-mined "$OUT/gen-mined/all_supervised.csv"

python3 - "$OUT" <<'PY'
import csv, json, sys
out = sys.argv[1]
rows = {"base": None, "same": "same/all_supervised.csv", "mine": "mined.csv", "gen-mined": "gen-mined/all_supervised.csv"}
print(f"{'negatives':26} {'rows':>6} {'ndcg@10':>8} {'mrr@10':>8} {'acc@1':>8}")
for name, data in rows.items():
    m = json.load(open(f"{out}/eval-{name}.json"))
    n = sum(1 for _ in open(f"{out}/{data}", encoding="utf-8")) - 1 if data else 0
    label = {"base": "none (default model)", "same": "same-category (gen)", "mine": "embtune mine", "gen-mined": "model-mined (gen)"}[name]
    print(f"{label:26} {n:6d} {m['cosine_ndcg@10']:8.4f} {m['cosine_mrr@10']:8.4f} {m['cosine_accuracy@1']:8.4f}")
PY
