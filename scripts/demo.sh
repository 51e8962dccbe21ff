#!/usr/bin/env bash
# The main job on the built-in synthetic dataset. Expects the reid-* commands on PATH
# (./dev demo and `hatch run demo` arrange that).
#   1. generate the synthetic re-ID dataset (Market-1501 layout) into data/synthetic;
#   2. evaluate models that need no training on it (raw pixels, a randomly initialised
#      ResNet-18) and write runs/demo/metrics.json.
# Training + evaluation of a trained model join here when reid-train lands.
# Options (environment): DATA_DIR (default data/synthetic), RUN_DIR (default runs/demo), SEED.
set -euo pipefail
DATA_DIR="${DATA_DIR:-data/synthetic}"
RUN_DIR="${RUN_DIR:-runs/demo}"
SEED="${SEED:-0}"

set -x
reid-eval make-synthetic "$DATA_DIR" --seed "$SEED" --reuse "$@"
reid-eval baseline --dataset synthetic --data-root "$DATA_DIR" \
    --model pixels random-resnet18 --output "$RUN_DIR/metrics.json"
