"""The benchmarks of the reid-* packages: each module measures something and writes its section
of docs/benchmarks.md (between ``<!-- BEGIN name -->`` / ``<!-- END name -->``), unless told
``--no-write``. A package, not scripts: run a module from the repository root with
``python -m benchmarks.<module>``; nothing here changes ``sys.path``.

``benchmarks.common``
    The shared helpers: machine description, git commit, CUDA sync and timing, memory figures,
    JSON lines, docs sections.

``benchmarks.proxy`` — the synthetic proxy's evidence (training runs; hours on 2 cores):
    ``ablation``        paired-seed ablation of PPLR and DCLS
                        (``python -m benchmarks.proxy.ablation``)
    ``label_noise``     label refinement under controlled label noise
                        (``python -m benchmarks.proxy.label_noise``)
    ``difficulty``      how hard the synthetic dataset is, without deep training
                        (``python -m benchmarks.proxy.difficulty``)
    ``compare_runs``    one row's gap to a reference between two records
                        (``python -m benchmarks.proxy.compare_runs A.json B.json ...``)
    ``official_pplr``   the official PPLR trainer side by side with ours
                        (``python -m benchmarks.proxy.official_pplr --official-repo DIR``)
    ``official_shims``  its child process: the official trainer on a CPU
                        (``python -m benchmarks.proxy.official_shims ...``)
    ``official_probes`` the regime search's probes and their table
                        (``python -m benchmarks.proxy.official_probes ...``)
    Library modules: ``rows`` (configs and rows), ``runs`` (training runs, their reuse, the
    record files), ``stats`` (mean ± std, paired 95 % t interval).

``benchmarks.speed`` — speed and memory; each module has a ``measure()``:
    ``backbone``          images/s of the models (``python -m benchmarks.speed.backbone``)
    ``clustering_scale``  kNN → Jaccard → DBSCAN at scale
                          (``python -m benchmarks.speed.clustering_scale``)
    ``eval``              the evaluation at Market-1501 / MSMT17 size
                          (``python -m benchmarks.speed.eval``)
    ``knn``               ``knn_search`` against a plain matmul + topk
                          (``python -m benchmarks.speed.knn``)
    ``refine``            ``cross_agreement`` and the per-batch losses
                          (``python -m benchmarks.speed.refine``)
    ``train_throughput``  the engine's training images/s
                          (``python -m benchmarks.speed.train_throughput``)
    ``epoch_overhead``    PPLR's per-epoch clustering + cross agreement
                          (``python -m benchmarks.speed.epoch_overhead``)
    ``plain_jaccard``     the loop-based Jaccard distance ``clustering_scale`` times (library)

``benchmarks.gpu_check`` — the prepared check for a short GPU loan
    (``python -m benchmarks.gpu_check``; modules ``runner``, ``steps``, ``report``, ...).

Data: ``benchmarks/results/`` (the JSON records the docs' figures come from) and
``benchmarks/protocols/`` (protocols fixed before their runs).
"""
