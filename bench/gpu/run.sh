#!/usr/bin/env bash
# The GPU check, run on the device machine from the repository root (bench/gpu/prepare.sh
# made .dev/ here first; it travels with `carry`). One call, about 6-8 minutes on an H100:
#   1. `embtune doctor` (CUDA, cuDNN, devices as embtune sees them);
#   2. random-weight sentence-transformers folders in the all-MiniLM-L6-v2 and the full
#      EmbeddingGemma-300m shapes (bench/reference/make_random_models.py);
#   3. encoding throughput, bf16, batch 64, both sides (encode-bench), for both models;
#   4. training throughput and peak GPU memory, bf16, MNRL + 1 hard negative, max length 128
#      (bench/train_bench.py): MiniLM batch 128, EmbeddingGemma batch 64.
# Everything lands in $OUT (summary.txt is the short form). SMOKE=1 runs a tiny version on
# CPU (no GPU needed) to check the script itself.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
S="$OUT/summary.txt"
: > "$S"
say() { echo "$*" | tee -a "$S"; }
PY=${PYTHON:-python3}
TORCH_LIB=$($PY -c 'import torch,os;print(os.path.dirname(torch.__file__))')/lib
export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
BIN=.dev/bin
if [ "${SMOKE:-0}" = 1 ]; then
  DEV=cpu; PREC=fp32; TEXTS=64; STEPS=2; WARM=1; WHICH=minilm; B_MINI=4; B_GEMMA=4
else
  DEV=cuda; PREC=bf16; TEXTS=4000; STEPS=40; WARM=10; WHICH=both; B_MINI=128; B_GEMMA=64
fi

say "== device"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee -a "$S"
$PY -c 'import torch,transformers,sentence_transformers as st;print("torch",torch.__version__,"transformers",transformers.__version__,"sentence-transformers",st.__version__)' 2>&1 | tee -a "$S"
say "== embtune doctor"
$BIN/embtune doctor 2>&1 | tee -a "$S"

say "== wheels for the reference trainer"
WH=/tmp/pywheels
mkdir -p "$WH"
$PY -m pip install --quiet --no-deps --no-index --find-links .dev/wheels --target "$WH" \
  datasets dill multiprocess xxhash 2>&1 | tail -2 | tee -a "$S"
export PYTHONPATH="$WH${PYTHONPATH:+:$PYTHONPATH}"
$PY -c 'import datasets, pyarrow, pandas; print("datasets", datasets.__version__, "pyarrow", pyarrow.__version__, "pandas", pandas.__version__)' 2>&1 | tee -a "$S"

say "== random-weight models ($WHICH)"
$PY bench/reference/make_random_models.py --out /tmp/rm --which "$WHICH" --tokenizer-dir .dev/tokenizer 2>&1 | tail -3 | tee -a "$S"

for m in minilm-random embeddinggemma-random; do
  [ -d "/tmp/rm/$m" ] || continue
  say "== encode $m ($DEV/$PREC, batch 64, $TEXTS texts)"
  timeout 240 $BIN/encode-bench --model "/tmp/rm/$m" --device $DEV --precision $PREC \
    --texts $TEXTS --batch-size 64 --repeats 3 --python "$PY" 2>&1 | tail -4 | tee -a "$S"
done

train() { # model batch name
  [ -d "/tmp/rm/$1" ] || return 0
  say "== train $1 batch $2 ($DEV/$PREC, MNRL + 1 hard negative, max length 128)"
  timeout 420 $PY bench/train_bench.py --model "/tmp/rm/$1" --batch-size "$2" --steps $STEPS \
    --warmup-steps $WARM --repeats 2 --device $DEV --precision $PREC --embtune $BIN/embtune \
    --python "$PY" --out "$OUT/train_$3.json" 2>&1 | tail -8 | tee -a "$S"
  # A timeout stops the bench, not the training process it started.
  pkill -f "$BIN/embtune train" 2>/dev/null || true
  pkill -f "bench/reference/st_train.py" 2>/dev/null || true
}
train minilm-random $B_MINI minilm
train embeddinggemma-random $B_GEMMA gemma
say "== done"
