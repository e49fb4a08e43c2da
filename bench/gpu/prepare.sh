#!/usr/bin/env bash
# Prepares the one device call that the GPU figures of the encoder and training issues need
# (bench/gpu/run.sh): builds the release binaries here against the torch 2.11.0 wheel and
# puts them, the tokenizer of the default model and the wheels the reference trainer lacks
# on the device (datasets, dill, multiprocess, xxhash) into the git-ignored folder .dev/.
# Then, with the `device` tool:
#   run(command="bash bench/gpu/run.sh", carry=[".dev"], timeout_s=560)
# Results come back under $OUT (summary.txt and the JSON reports).
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/env.sh
scripts/fetch-model.sh
cargo build --release -p embtune -p embtune-bench
rm -rf .dev && mkdir -p .dev/bin .dev/tokenizer .dev/wheels
strip -o .dev/bin/embtune target/release/embtune
strip -o .dev/bin/encode-bench target/release/encode-bench
for f in tokenizer.json tokenizer_config.json special_tokens_map.json vocab.txt; do
  cp "models/all-MiniLM-L6-v2/$f" .dev/tokenizer/ 2>/dev/null || true
done
PY=.venv/bin/python
# The device's Python version is not known here: wheels for the usual ones (pip picks).
for v in 3.10 3.11 3.12 3.13; do
  $PY -m pip download --quiet --no-deps --only-binary=:all: --python-version $v \
    --dest .dev/wheels datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 xxhash==3.6.0 \
    || echo "(no wheels for Python $v)"
done
du -sh .dev
echo "prepared: now run(command=\"bash bench/gpu/run.sh\", carry=[\".dev\"], timeout_s=560)"
