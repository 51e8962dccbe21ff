"""The plain, loop-based k-reciprocal Jaccard distance, for the benchmarks (a library module,
not a command).

A thin wrapper: the definition lives in ``reid_clustering._reference`` (:func:`plain_knn`,
:func:`reciprocal_neighbours`, :func:`plain_jaccard_distance`), the documented specification that
``reid_clustering.compute_jaccard_distance`` must match (the test suite checks that it does).
``python -m benchmarks.speed.clustering_scale`` times it as its ``plain`` baseline. The plain
re-ranking, the specification of ``reid_eval.re_ranking``, is
``reid_eval._reference.plain_re_ranking``.
"""

from __future__ import annotations

from reid_clustering._reference import plain_jaccard_distance, plain_knn, reciprocal_neighbours

__all__ = ["plain_jaccard_distance", "plain_knn", "reciprocal_neighbours"]
