#!/usr/bin/env bash
# Provision the project's libtorch (a git-ignored venv with torch==2.11.0 from PyPI) and
# export what the tch build needs. Idempotent and quick when the venv is already right.
# Usage: source scripts/env.sh   (or: scripts/env.sh to only provision)
set -u
EMBTUNE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
EMBTUNE_VENV="${EMBTUNE_VENV:-$EMBTUNE_ROOT/.venv}"
EMBTUNE_TORCH_VERSION="2.11.0"

embtune_torch_ok() {
  [ -x "$EMBTUNE_VENV/bin/python" ] &&
    [ -f "$EMBTUNE_VENV/.torch-$EMBTUNE_TORCH_VERSION" ] &&
    "$EMBTUNE_VENV/bin/python" -c "import torch,sys; sys.exit(0 if torch.__version__.split('+')[0]=='$EMBTUNE_TORCH_VERSION' else 1)" 2>/dev/null
}

if ! embtune_torch_ok; then
  echo "embtune: provisioning torch==$EMBTUNE_TORCH_VERSION in $EMBTUNE_VENV (about a minute, 2.6 GB) ..." >&2
  if [ ! -x "$EMBTUNE_VENV/bin/python" ]; then
    python3 -m venv "$EMBTUNE_VENV" || { echo "embtune: error: cannot create venv at $EMBTUNE_VENV; install python3-venv and rerun scripts/env.sh" >&2; return 1 2>/dev/null || exit 1; }
  fi
  "$EMBTUNE_VENV/bin/python" -m pip install -q --disable-pip-version-check "torch==$EMBTUNE_TORCH_VERSION" ||
    { echo "embtune: error: pip could not install torch==$EMBTUNE_TORCH_VERSION (is PyPI reachable?); rerun scripts/env.sh" >&2; return 1 2>/dev/null || exit 1; }
  touch "$EMBTUNE_VENV/.torch-$EMBTUNE_TORCH_VERSION"
fi

export LIBTORCH_USE_PYTORCH=1
export PATH="$EMBTUNE_VENV/bin:$PATH"
export EMBTUNE_VENV
