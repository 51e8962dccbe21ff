#!/usr/bin/env bash
# The main job on the built-in synthetic dataset. Expects the reid-* commands on PATH
# (./dev demo and `hatch run demo` arrange that).
#   1. generate two synthetic re-ID datasets (Market-1501 layout): the unlabelled target
#      (data/synthetic) and a disjoint labelled source (data/synthetic_source);
#   2. train a ResNet-18 supervised on the source (configs/synthetic_source.yaml): ImageNet
#      weights cannot be downloaded here, and this is their stand-in (reused when present);
#   3. train PPLR on the target without its labels, from that backbone
#      (configs/synthetic_pplr.yaml), evaluating the initial model first, so the run prints
#      mAP / Rank-1 before and after training;
#   4. evaluate the best checkpoint with reid-eval and write runs/demo/metrics.json.
# Options (environment): DATA_DIR (default data/synthetic), RUN_DIR (default runs/demo), SEED.
# Extra arguments are config overrides for the PPLR run, e.g. ./dev demo optim.epochs=2
set -euo pipefail
DATA_DIR="${DATA_DIR:-data/synthetic}"
RUN_DIR="${RUN_DIR:-runs/demo}"
SEED="${SEED:-0}"
SOURCE_DIR="${DATA_DIR}_source"
SOURCE_RUN="${RUN_DIR}_source"

set -x
reid-eval make-synthetic "$DATA_DIR" --seed "$SEED" --reuse
reid-eval make-synthetic "$SOURCE_DIR" --seed "$((SEED + 100))" --reuse
if [[ ! -f "$SOURCE_RUN/last/model.safetensors" ]]; then
    reid-train --config configs/synthetic_source.yaml --output-dir "$SOURCE_RUN" --overwrite \
        "data.data_root=$SOURCE_DIR"
fi
reid-train --config configs/synthetic_pplr.yaml --output-dir "$RUN_DIR" --overwrite \
    "data.data_root=$DATA_DIR" "model.pretrained=$SOURCE_RUN/last" \
    runtime.eval_before_training=true "$@"
reid-eval --checkpoint "$RUN_DIR/best" --dataset synthetic --data-root "$DATA_DIR" \
    --output "$RUN_DIR/metrics.json" --quiet
