"""The prepared check for a short GPU loan: five timed steps, within 5 minutes on one GPU.

Steps (each in a fresh subprocess with its own timeout; a failing, crashing or hanging step is
recorded as FAIL and the next one runs; no step starts once ``--budget`` seconds are spent):

1. ``cuda-tests``: pytest on every test that is skipped without CUDA (found by reading tests/
   for ``skipif(not torch.cuda.is_available() ...)``), by node id.
2. ``pseudo-labels``: ``knn_search`` and ``dbscan_pseudo_labels(eps=0.5)`` on clustered
   synthetic 2048-d unit features (``benchmarks.speed.clustering_scale``'s generator) at
   N = 12,936 and 32,621 on the GPU and on the CPU: times, and whether the labels and the kNN
   indices/similarities are identical (the kNN is designed to give the same bits on every
   device). The CPU reference at 32,621 is skipped (and said so) when the 12,936 timing
   predicts it would not fit the step's time.
3. ``evaluation``: ``reid_eval.evaluate_features`` at MSMT17 size (11,659 queries × 82,161
   gallery, 2048-d; ``benchmarks.speed.eval``'s generator, seed 0, so the mAP is comparable
   with that script's MSMT17 row): time and peak GPU memory, and the first 1,024 queries
   evaluated on the GPU and on the CPU compared.
4. ``train-throughput``: ResNet-50 PPLR model at 256×128, batch 64, forward + cross-entropy on
   every classifier + backward + Adam step, fp32 vs bf16 autocast + channels_last: images/s and
   peak memory.
5. ``accelerate-run``: ``accelerate launch --mixed_precision bf16 -m reid_train --config
   configs/synthetic_tiny.yaml`` for two epochs (the synthetic dataset is generated into a
   temporary folder): exit status, time, epochs, final mAP.

Nothing needs installing: the five packages are imported from ``packages/*/src`` of this
working tree (the command runs itself again at once with those folders first on ``PYTHONPATH``,
which its subprocesses inherit). Third-party modules are checked first; a step whose modules are
missing is reported FAIL at once and the others still run. Needs torch, torchvision, numpy,
scipy, scikit-learn, pillow, tqdm (all steps), pytest (step 1), accelerate and pyyaml (step 5);
matplotlib is optional (without it the tiny run is told ``runtime.plots=false``); faiss and
internet access are not used.

On the GPU machine (from the repository root; the device tool's command line, with a timeout of
about 330 s: the steps stop starting at 270 s and the last one is cut at 290 s)::

    python3 -m benchmarks.gpu_check --json "$OUT/gpu_check.json"

(``--json`` defaults to ``$OUT/gpu_check.json`` when ``$OUT`` is a folder.) docs/benchmarks.md
edited there does not come back: bring ``gpu_check.json`` home and write the section
(``gpu-check``) here with::

    python -m benchmarks.gpu_check --from-json PATH/gpu_check.json

The same with explicit paths, should the command's own path set-up be in doubt::

    P=packages
    export PYTHONPATH=$P/reid-refine/src:$P/reid-clustering/src:$P/reid-backbones/src
    export PYTHONPATH=$PYTHONPATH:$P/reid-eval/src:$P/reid-train/src
    python3 -m benchmarks.gpu_check --no-write

Rehearsal without a GPU (reduced sizes: N = 2,000, a 1,000 × 5,000 evaluation, ResNet-18 at
64×32; step 1 only checks that its node ids are valid and reports SKIP)::

    OMP_NUM_THREADS=1 python -m benchmarks.gpu_check --cpu --no-write

Options: ``--steps 2 3`` (names or numbers), ``--budget SECONDS`` (default 270),
``--no-write``, ``--json PATH``, ``--in-process`` (no subprocesses; for debugging),
``--cluster-sizes N ...``. Exit status 0 when no step failed, 1 otherwise, 2 when torch sees no
GPU without ``--cpu``. ``--cpu`` writes (unless ``--no-write``) the section ``gpu-check-cpu``,
never the GPU figures'.

Modules: ``__main__`` (the command line), ``runner`` (each step in its own process, with its
time limit and the budget), ``process`` (a subprocess in its own process group, its output
echoed, killed at its timeout), ``steps`` (the five steps; steps 2-4 call the measurements of
``benchmarks.speed``), ``scan`` (the CUDA-only tests, found by reading tests/), ``deps`` (the
modules each step needs, and the working tree's packages on ``PYTHONPATH``), ``context`` (sizes,
a step's context and result), ``report`` (the docs section and the summary).
"""

from __future__ import annotations

import time

T0 = time.time()  # the budget counts from here (the package's import, the command's start)
