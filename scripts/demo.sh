#!/usr/bin/env bash
# The main job on the built-in synthetic dataset. Expects the reid-* commands on PATH
# (./dev demo and `hatch run demo` arrange that).
#   1. generate the synthetic re-ID dataset (Market-1501 layout) into data/synthetic;
#   2. train PPLR on it from scratch on the CPU (configs/synthetic_pplr.yaml), evaluating the
#      initial model first, so the run prints mAP / Rank-1 before and after training;
#   3. evaluate the best checkpoint with reid-eval and write runs/demo/metrics.json.
# Options (environment): DATA_DIR (default data/synthetic), RUN_DIR (default runs/demo), SEED.
# Extra arguments are config overrides for reid-train, e.g. ./dev demo optim.epochs=2
set -euo pipefail
DATA_DIR="${DATA_DIR:-data/synthetic}"
RUN_DIR="${RUN_DIR:-runs/demo}"
SEED="${SEED:-0}"

set -x
reid-eval make-synthetic "$DATA_DIR" --seed "$SEED" --reuse
reid-train --config configs/synthetic_pplr.yaml --output-dir "$RUN_DIR" \
    "data.data_root=$DATA_DIR" runtime.eval_before_training=true "$@"
reid-eval --checkpoint "$RUN_DIR/best" --dataset synthetic --data-root "$DATA_DIR" \
    --output "$RUN_DIR/metrics.json" --quiet
