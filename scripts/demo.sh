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
#   4. evaluate the last checkpoint with reid-eval and write runs/demo/metrics.json (the
#      last, not the best: "best" is picked on the test split, which would flatter the demo).
# Options (environment): DATA_DIR (default data/synthetic), RUN_DIR (default runs/demo), SEED.
# Extra arguments are config overrides for the PPLR run, e.g. ./dev demo optim.epochs=2
set -euo pipefail
DATA_DIR="${DATA_DIR:-data/synthetic}"
RUN_DIR="${RUN_DIR:-runs/demo}"
SEED="${SEED:-0}"
SOURCE_DIR="${DATA_DIR}_source"
SOURCE_RUN="${RUN_DIR}_source"

set -x
# The target: the generator's defaults (a folder left by another version is regenerated).
reid-eval make-synthetic "$DATA_DIR" --seed "$SEED" --reuse --overwrite
# The source: configs/synthetic_source.yaml's generator options. A source folder or source run
# that another configuration left behind is replaced, so that it is never silently reused.
python - "$SOURCE_DIR" "$((SEED + 100))" "$SOURCE_RUN" <<'PY'
import shutil, sys
from pathlib import Path
from reid_eval.datasets import SyntheticConfig, make_synthetic_dataset, synthetic_mismatch
from reid_train.config import load_config
root, seed, run = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
wanted = load_config("configs/synthetic_source.yaml", [f"data.synthetic_seed={seed}"])
options = SyntheticConfig(**wanted.data.synthetic_options)
if synthetic_mismatch(root, seed, options) is not None:
    print(f"generating the source dataset in {root} (seed {seed})", flush=True)
    make_synthetic_dataset(root, seed=seed, config=options, overwrite=True)
    shutil.rmtree(run, ignore_errors=True)
elif (run / "config.yaml").is_file():
    saved = load_config(run / "config.yaml")
    if (saved.model, saved.optim, saved.data.height, saved.data.width) != (
        wanted.model, wanted.optim, wanted.data.height, wanted.data.width
    ):
        print(f"{run} was trained with another configuration: training it again", flush=True)
        shutil.rmtree(run)
PY
if [[ ! -f "$SOURCE_RUN/last/model.safetensors" ]]; then
    reid-train --config configs/synthetic_source.yaml --output-dir "$SOURCE_RUN" --overwrite \
        "data.data_root=$SOURCE_DIR" "data.synthetic_seed=$((SEED + 100))"
fi
reid-train --config configs/synthetic_pplr.yaml --output-dir "$RUN_DIR" --overwrite \
    "data.data_root=$DATA_DIR" "model.pretrained=$SOURCE_RUN/last" \
    runtime.eval_before_training=true "$@"
reid-eval --checkpoint "$RUN_DIR/last" --dataset synthetic --data-root "$DATA_DIR" \
    --output "$RUN_DIR/metrics.json" --quiet
