#!/usr/bin/env bash
# Retrain the SynthAd models shipped in src/reliable_ad/synthad/weights/ (what `--model synthad` and
# `--rfnet synthad` load), exactly as the shipped ones were made. Times on 2 CPU cores: docs/synthad.md.
#   bash scripts/train_synthad.sh [OUT_DIR]      (default runs/synthad-train)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-runs/synthad-train}"
PY=.venv/bin/python
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# generator, stage 1: VAE (500 steps) and UNet + ControlNet (2,500 steps) from scratch (~40 min)
$PY -m experiments.synthad.train_generator --out "$OUT/generator-stage1" --scenes 6000 --vae-steps 500 --steps 2500
# generator, stage 2: 2,000 more UNet + ControlNet steps at a lower peak rate, VAE kept (~19 min); installs
$PY -m experiments.synthad.train_generator --out "$OUT/generator" --init-from "$OUT/generator-stage1" \
    --vae-steps 0 --scenes 6000 --steps 2000 --lr 5e-4 --install
cp "$OUT/generator-stage1/training.json" src/reliable_ad/synthad/weights/generator/training-stage1.json
# RFNet data from the generator's own distribution: 1,200 generations labelled by the oracle (~4 min)
$PY -m reliable_ad.cli.main synthad generated --out "$OUT/labelled" --products 300 --per-product 4
# depth and salience estimators, and RFNet on rendered scenes + those generations (~18 min; installs)
$PY -m experiments.synthad.train_rfnet --out "$OUT/rfnet" --extra-data "$OUT/labelled" --install
