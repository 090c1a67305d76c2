#!/usr/bin/env bash
# The `reliable-ad` command on a fresh clone: sets up .venv first when needed (scripts/setup.sh is
# idempotent and stamp-checked: later calls only compare the stamp), then runs the command with the given
# arguments, from the current folder (relative paths are yours):
#   bash scripts/run.sh run --model synthad examples/synthad-products/products.csv --out runs/demo
# Offline by default, as the tests (the shipped SynthAd models need no download); real models that must
# be downloaded first: HF_HUB_OFFLINE=0 TRANSFORMERS_OFFLINE=0 bash scripts/run.sh ...
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" TRANSFORMERS_OFFLINE="${TRANSFORMERS_OFFLINE:-1}" \
  HF_DATASETS_OFFLINE="${HF_DATASETS_OFFLINE:-1}" TOKENIZERS_PARALLELISM="${TOKENIZERS_PARALLELISM:-false}"
VENV="${RELIABLE_AD_VENV:-.venv}"
[[ "$VENV" = /* ]] || VENV="$ROOT/$VENV"
exec "$VENV/bin/reliable-ad" "$@"
