#!/usr/bin/env bash
# The test command: set up (if needed), check the import contracts, and run the default, offline test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# the architecture first (docs/architecture.md): a wrong-way import or an import cycle fails here
.venv/bin/lint-imports --no-cache >&2
exec .venv/bin/python -m pytest "$@"
