#!/usr/bin/env bash
# The pinned Python reference environment that made the fixtures under tests/fixtures/
# (sentence-transformers and transformers over the project's torch==2.11.0). Only needed
# to regenerate fixtures or run the side-by-side benchmarks; CI reads the committed
# fixtures and never runs this. Idempotent.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/env.sh"
REF="$ROOT/.venv-ref"
# peft: LoRA parity (tests/fixtures/lora/); 0.21.2 is the newest on the index although
# transformers 5.24.0's PEFT integration asks for 0.22.0 (the scripts there lower the check).
PINS="sentence-transformers==6.0.1 transformers==5.24.0 datasets==5.2.0 accelerate==1.15.0 peft==0.21.2"
if [ ! -f "$REF/.pins" ] || [ "$(cat "$REF/.pins")" != "$PINS" ]; then
  python3 -m venv "$REF"
  # Reuse the project's torch instead of a second 2.6 GB copy.
  site_ref="$("$REF/bin/python" -c 'import sysconfig;print(sysconfig.get_paths()["purelib"])')"
  site_main="$("$EMBTUNE_VENV/bin/python" -c 'import sysconfig;print(sysconfig.get_paths()["purelib"])')"
  echo "$site_main" > "$site_ref/embtune-torch.pth"
  "$REF/bin/python" -m pip install -q --disable-pip-version-check $PINS
  echo "$PINS" > "$REF/.pins"
fi
echo "$REF/bin/python"
