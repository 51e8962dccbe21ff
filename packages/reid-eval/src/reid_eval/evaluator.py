"""Features in, metrics out: :func:`evaluate_features`, and :class:`ReIDEvaluator` for training.

:func:`evaluate_features` ranks a query set against a gallery from their features without the
full distance matrix: distances are computed one chunk of query rows at a time on the features'
device (GPU when the tensors are on CUDA) and each chunk is ranked by the same core as
:func:`reid_eval.evaluate_rank`, so the numbers are identical to
``evaluate_rank(pairwise_distance(q, g), ...)`` while memory stays ``O(chunk × gallery)``.

:class:`ReIDEvaluator` has fast-reid's ``reset / process / evaluate`` shape: a training loop feeds
it batch by batch and asks for the metrics at the end.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np
import torch

from . import distance
from ._checks import as_feature_tensor, check_metric, check_pair, normalize_rows, positive_int
from .distance import iter_distance_chunks
from .metrics import ArrayLike, RankAccumulator, RankResult, evaluate_rank

__all__ = ["QueryGallerySplit", "ReIDEvaluator", "evaluate_features"]

AUTO_CHUNK_ELEMENTS = 2**26
"""With ``chunk_size=None``, a chunk holds about this many distances (256 MiB of float32)."""

Features = torch.Tensor | np.ndarray
"""A real ``[N, D]`` feature matrix: a torch tensor (any device) or a numpy array (CPU)."""


def evaluate_features(
    query_feats: Features,
    gallery_feats: Features,
    query_pids: ArrayLike,
    gallery_pids: ArrayLike,
    query_camids: ArrayLike,
    gallery_camids: ArrayLike,
    max_rank: int = 50,
    *,
    metric: str = "euclidean",
    normalize: bool = False,
    chunk_size: int | None = None,
) -> RankResult:
    """Evaluate query features against gallery features with the Market-1501 protocol.

    Distances (as :func:`reid_eval.pairwise_distance`: squared Euclidean or ``1 − cos``, float32)
    are computed for one chunk of query rows at a time on the features' device and ranked on the
    CPU by the core of :func:`reid_eval.evaluate_rank`; the protocol (same pid + same camera
    removed, invalid queries skipped and counted, ties kept in gallery order, distractors ranked
    as non-matches, first-match CMC, mAP, mINP) is the one documented there. The result equals
    ``evaluate_rank(pairwise_distance(q, g, metric), ...)`` exactly, for any ``chunk_size``.

    Memory besides the features: one chunk of ``rows × num_gallery`` float32 distances on the
    features' device (reused from chunk to chunk) and about twice that on the CPU while it is
    ranked. MSMT17-size evaluation (11,659 × 82,161, 2048-d) on CPU with the default chunk peaked
    at 1.9 GB for the whole process, features included.

    Args:
        query_feats (torch.Tensor or numpy.ndarray): real features of shape [num_query, D].
        gallery_feats (torch.Tensor or numpy.ndarray): real features of shape
            [num_gallery, D], on the same device as ``query_feats`` (a numpy array counts as
            CPU).
        query_pids (numpy.ndarray, torch.Tensor or list): 1-D integer array of shape
            [num_query].
        gallery_pids (numpy.ndarray, torch.Tensor or list): 1-D integer array of shape
            [num_gallery].
        query_camids (numpy.ndarray, torch.Tensor or list): 1-D integer array of shape
            [num_query].
        gallery_camids (numpy.ndarray, torch.Tensor or list): 1-D integer array of shape
            [num_gallery].
        max_rank (int, optional): length of the CMC curve. Default is 50 (shrunk to
            ``num_gallery``, with a warning, when the gallery is smaller).
        metric (str, optional): ``"euclidean"`` (squared Euclidean, default) or ``"cosine"``.
        normalize (bool, optional): L2-normalise both feature sets first (torchreid's
            ``normalize_feature``, fast-reid's ``feat_norm``). Default is False. The result then
            equals ``evaluate_rank(pairwise_distance(F.normalize(q), F.normalize(g)), ...)``.
        chunk_size (int, optional): query rows per chunk, rounded up to a multiple of
            :data:`reid_eval.distance.ROW_BLOCK` (256). Default None: about
            :data:`AUTO_CHUNK_ELEMENTS` distances per chunk (all of Market-1501's 3,368
            queries at once; 768 rows for an MSMT17-size gallery). Does not change the result.

    Returns:
        RankResult: as :func:`reid_eval.evaluate_rank`.

    Raises:
        TypeError: if a feature matrix is neither a torch tensor nor a numpy array.
        ValueError: if a feature matrix is not 2-D, is empty, is not real or holds NaN/inf
            (after conversion to float32); if the feature dimensions differ; if the features
            are on different devices; if an id array's length does not match its features; if
            the metric is unknown; if ``max_rank`` or ``chunk_size`` is smaller than 1; or if
            no query has a true match in the gallery.
    """
    q = as_feature_tensor(query_feats, "query_feats")
    g = as_feature_tensor(gallery_feats, "gallery_feats")
    for name, feats in (("query_feats", q), ("gallery_feats", g)):
        if feats.dim() != 2:
            raise ValueError(
                f"{name} must be 2-D with shape [num_samples, D], got shape {tuple(feats.shape)}"
                "; stack one feature vector per row"
            )
        if feats.shape[0] == 0:
            kind = "query" if name == "query_feats" else "gallery"
            raise ValueError(
                f"{name} is empty (shape {tuple(feats.shape)}): the {kind} set must contain at "
                "least one sample"
            )
    if q.shape[1] != g.shape[1]:
        raise ValueError(
            f"query_feats and gallery_feats have different feature dimensions: {q.shape[1]} "
            f"(shape {tuple(q.shape)}) vs {g.shape[1]} (shape {tuple(g.shape)}); extract both "
            "with the same model and head"
        )
    check_pair(q, g, "query_feats", "gallery_feats")
    check_metric(metric)
    num_q, num_g = int(q.shape[0]), int(g.shape[0])
    accumulator = RankAccumulator(
        query_pids,
        gallery_pids,
        query_camids,
        gallery_camids,
        num_q,
        num_g,
        max_rank,
        source="query_feats",
        gallery_source="gallery_feats",
        stacklevel=3,
    )
    if chunk_size is None:
        block = distance.ROW_BLOCK
        rows = max(block, AUTO_CHUNK_ELEMENTS // num_g // block * block)
    else:
        rows = positive_int(chunk_size, "chunk_size")

    q, g = q.detach().float(), g.detach().float()
    _check_finite(q, "query_feats")
    _check_finite(g, "gallery_feats")
    if normalize:
        q, g = normalize_rows(q), normalize_rows(g)

    # One reused chunk buffer (and one on the host for GPU chunks), ranked in place: its values
    # are not needed afterwards.
    host: torch.Tensor | None = None
    for start, dist in iter_distance_chunks(q, g, metric, rows, reuse_buffer=True):
        if dist.device.type != "cpu":
            if host is None:  # the first chunk is the largest
                host = torch.empty(dist.shape, dtype=dist.dtype)
            dist = host[: dist.shape[0]].copy_(dist)
        accumulator.add(start, dist.numpy(), overwrite=True)
    return accumulator.result()


class QueryGallerySplit(NamedTuple):
    """What a :class:`ReIDEvaluator` collected, split into query and gallery.

    Features keep the device and dtype they were processed with; ids are int64 numpy arrays.
    """

    query_feats: torch.Tensor
    gallery_feats: torch.Tensor
    query_pids: np.ndarray
    gallery_pids: np.ndarray
    query_camids: np.ndarray
    gallery_camids: np.ndarray


class ReIDEvaluator:
    """Collects features batch by batch and evaluates the query set against the gallery.

    The ``reset / process / evaluate`` shape of fast-reid's ``ReidEvaluator``, for training loops.
    Which samples are queries is decided in one of two ways, chosen at construction:

    - ``ReIDEvaluator(num_query=Q)`` (fast-reid's convention): the first ``Q`` samples processed
      are the queries, everything after them the gallery; feed a loader over
      ``dataset.query + dataset.gallery`` in that order and call ``process`` without
      ``is_query``.
    - ``ReIDEvaluator()``: every ``process`` call says which samples are queries with
      ``is_query`` (one bool for the batch, or a bool per sample), so query and gallery batches
      may come in any order or be mixed.

    Features stay on the device they arrive on (evaluation then computes distances there: on GPU
    for CUDA features) and keep their dtype; they are copied, so the caller may reuse its
    buffers. The evaluator does no distributed gathering: in a multi-process run gather the
    features, pids and camids first (e.g. ``accelerator.gather_for_metrics``) and feed the
    gathered batches on one process, or on every process.

    :meth:`evaluate` returns a :class:`RankResult`: ``mAP``, ``mINP`` and the CMC as fractions in
    [0, 1] (``result.rank(1)``, ``result.to_dict()`` for ``rank1/5/10``; multiply by 100 for
    percent).

    Example::

        evaluator = ReIDEvaluator(num_query=len(dataset.query))
        for images, pids, camids in loader:          # query images first, then the gallery
            evaluator.process(model(images.to(device)), pids, camids)
        result = evaluator.evaluate()
        print(result.mAP, result.rank(1))
        evaluator.reset()

    Args:
        num_query (int, optional): number of query samples, processed first. Default None:
            ``process`` takes ``is_query`` instead.
        metric (str, optional): ``"euclidean"`` (squared Euclidean, default) or ``"cosine"``.
        normalize (bool, optional): L2-normalise features before computing distances.
            Default is False.
        max_rank (int, optional): length of the CMC curve. Default is 50.
        chunk_size (int, optional): query rows per distance chunk (see
            :func:`evaluate_features`). Default None (automatic).

    Raises:
        ValueError: if ``num_query`` is given and smaller than 1, or ``metric`` is unknown.
    """

    def __init__(
        self,
        num_query: int | None = None,
        *,
        metric: str = "euclidean",
        normalize: bool = False,
        max_rank: int = 50,
        chunk_size: int | None = None,
    ) -> None:
        if num_query is not None:
            num_query = positive_int(num_query, "num_query")
        check_metric(metric)
        self.num_query = num_query
        self.metric = metric
        self.normalize = normalize
        self.max_rank = positive_int(max_rank, "max_rank")
        self.chunk_size = None if chunk_size is None else positive_int(chunk_size, "chunk_size")
        self.reset()

    def reset(self) -> None:
        """Forget every processed sample (call before each evaluation round)."""
        # Per side ("query", "gallery"): lists of feature batches, pids and camids.
        self._feats: dict[str, list[torch.Tensor]] = {"query": [], "gallery": []}
        self._pids: dict[str, list[np.ndarray]] = {"query": [], "gallery": []}
        self._camids: dict[str, list[np.ndarray]] = {"query": [], "gallery": []}
        self._num_processed = 0
        self._dim: int | None = None
        self._device: torch.device | None = None

    def __len__(self) -> int:
        """Number of samples processed since the last :meth:`reset`."""
        return self._num_processed

    def process(
        self,
        features: Features,
        pids: ArrayLike,
        camids: ArrayLike,
        is_query: bool | ArrayLike | None = None,
    ) -> None:
        """Add one batch.

        Args:
            features (torch.Tensor or numpy.ndarray): real features of shape [B, D]; the same D
                and device for every batch. Detached and copied.
            pids (numpy.ndarray, torch.Tensor or list): 1-D integer array of shape [B].
            camids (numpy.ndarray, torch.Tensor or list): 1-D integer array of shape [B].
            is_query (bool or 1-D bool array of shape [B], optional): which samples are
                queries. Required without ``num_query``; must be omitted with it.

        Raises:
            ValueError: on a shape, dimension or device that does not match, non-integer ids,
                or ``is_query`` given/omitted against the mode chosen at construction.
        """
        feats = as_feature_tensor(features, "features")
        if feats.dim() != 2:
            raise ValueError(
                f"features must be 2-D with shape [batch, D], got shape {tuple(feats.shape)}; "
                "flatten each sample's embedding to one row"
            )
        batch = int(feats.shape[0])
        pid_arr = _int_batch(pids, "pids", batch)
        camid_arr = _int_batch(camids, "camids", batch)
        if self._dim is not None and feats.shape[1] != self._dim:
            raise ValueError(
                f"features have dimension {feats.shape[1]} but earlier batches had {self._dim}; "
                "every batch must come from the same model and head"
            )
        if self._device is not None and feats.device != self._device:
            raise ValueError(
                f"features are on {feats.device} but earlier batches were on {self._device}; "
                "keep every batch on one device (e.g. .to(device)) or reset()"
            )
        query_mask = self._query_mask(is_query, batch)
        if batch == 0:
            return
        self._dim, self._device = int(feats.shape[1]), feats.device
        feats = feats.detach().clone()
        for side, mask in (("query", query_mask), ("gallery", ~query_mask)):
            if mask.all():
                self._append(side, feats, pid_arr, camid_arr)
            elif mask.any():
                index = torch.from_numpy(np.flatnonzero(mask)).to(feats.device)
                self._append(side, feats[index], pid_arr[mask], camid_arr[mask])
        self._num_processed += batch

    def split(self) -> QueryGallerySplit:
        """Everything processed so far, concatenated and split into query and gallery.

        Raises:
            ValueError: if nothing was processed, or the query or the gallery set is empty.
        """
        if self._num_processed == 0:
            raise ValueError(
                "ReIDEvaluator has no samples: call process(features, pids, camids, ...) for the "
                "query and gallery batches before evaluate()"
            )
        for side in ("query", "gallery"):
            if not self._feats[side]:
                if self.num_query is not None:
                    raise ValueError(
                        f"ReIDEvaluator processed {self._num_processed} samples but num_query is "
                        f"{self.num_query}: the gallery is empty; process the query samples "
                        "first, then the gallery"
                    )
                raise ValueError(
                    f"ReIDEvaluator has no {side} samples: every batch so far was passed with "
                    f"is_query={side == 'gallery'}; process the {side} batches too"
                )
            # Concatenate once and keep the result, so that evaluating again does not copy.
            if len(self._feats[side]) > 1:
                self._feats[side] = [torch.cat(self._feats[side])]
                self._pids[side] = [np.concatenate(self._pids[side])]
                self._camids[side] = [np.concatenate(self._camids[side])]
        return QueryGallerySplit(
            self._feats["query"][0],
            self._feats["gallery"][0],
            self._pids["query"][0],
            self._pids["gallery"][0],
            self._camids["query"][0],
            self._camids["gallery"][0],
        )

    def evaluate(
        self,
        *,
        metric: str | None = None,
        normalize: bool | None = None,
        rerank: bool = False,
        k1: int = 20,
        k2: int = 6,
        lambda_value: float = 0.3,
    ) -> RankResult:
        """Rank the processed queries against the processed gallery.

        Args:
            metric (str, optional): overrides the constructor's metric for this call.
            normalize (bool, optional): overrides the constructor's ``normalize``.
            rerank (bool): rank by k-reciprocal re-ranked distances
                (:func:`reid_eval.re_ranking_features`, the reference pipeline: squared
                Euclidean distances fed to the classic function). With ``metric="cosine"`` the
                features are L2-normalised first, which makes the two metrics agree.
            k1, k2, lambda_value: re-ranking parameters (Zhong et al.'s defaults).

        Returns:
            RankResult: CMC, mAP and mINP as fractions in [0, 1] (see :func:`evaluate_features`).

        Raises:
            ValueError: see :meth:`split` and :func:`evaluate_features`.
        """
        split = self.split()
        max_rank = self.max_rank
        num_gallery = int(split.gallery_feats.shape[0])
        if num_gallery < max_rank:  # warned here, so that the warning points at the caller
            warnings.warn(
                f"Number of gallery samples ({num_gallery}) is smaller than max_rank ({max_rank}); "
                f"using max_rank={num_gallery}",
                UserWarning,
                stacklevel=2,
            )
            max_rank = num_gallery
        metric = self.metric if metric is None else metric
        normalize = self.normalize if normalize is None else normalize
        if rerank:
            from .rerank import re_ranking_features

            qf, gf = split.query_feats, split.gallery_feats
            if normalize or metric == "cosine":
                qf, gf = _l2_normalize(qf), _l2_normalize(gf)
            distmat = re_ranking_features(qf, gf, k1=k1, k2=k2, lambda_value=lambda_value)
            return evaluate_rank(
                distmat,
                split.query_pids,
                split.gallery_pids,
                split.query_camids,
                split.gallery_camids,
                max_rank,
            )
        return evaluate_features(
            split.query_feats,
            split.gallery_feats,
            split.query_pids,
            split.gallery_pids,
            split.query_camids,
            split.gallery_camids,
            max_rank,
            metric=metric,
            normalize=normalize,
            chunk_size=self.chunk_size,
        )

    def _query_mask(self, is_query: bool | ArrayLike | None, batch: int) -> np.ndarray:
        if self.num_query is not None:
            if is_query is not None:
                raise ValueError(
                    "this ReIDEvaluator was built with num_query (the first num_query samples "
                    "are queries), so process() takes no is_query; build it without num_query "
                    "to mark queries per batch"
                )
            index = np.arange(self._num_processed, self._num_processed + batch)
            return index < self.num_query
        if is_query is None:
            raise ValueError(
                "process() needs is_query (True for a query batch, False for a gallery batch, "
                "or a bool per sample) because this ReIDEvaluator was built without num_query"
            )
        if isinstance(is_query, bool | np.bool_):
            return np.full(batch, bool(is_query))
        if isinstance(is_query, torch.Tensor):
            mask = is_query.detach().cpu().numpy()
        else:
            mask = np.asarray(is_query)
        if mask.shape != (batch,) or mask.dtype != np.bool_:
            raise ValueError(
                f"is_query must be a bool or a 1-D bool array with one entry per sample "
                f"(shape ({batch},)), got dtype {mask.dtype} and shape {mask.shape}"
            )
        return mask

    def _append(self, side: str, feats: torch.Tensor, pids: np.ndarray, camids: np.ndarray) -> None:
        self._feats[side].append(feats)
        self._pids[side].append(pids)
        self._camids[side].append(camids)


def _check_finite(feats: torch.Tensor, name: str) -> None:
    """Raise ValueError naming the first row of ``feats`` (float32) with NaN or inf."""
    # A row with NaN/inf has a non-finite sum; rows whose sum merely overflowed are rechecked.
    suspects = torch.nonzero(~torch.isfinite(feats.sum(dim=1))).flatten()
    if suspects.numel() == 0:
        return
    bad = suspects[~torch.isfinite(feats[suspects]).all(dim=1)]
    if bad.numel():
        row = int(bad[0])
        raise ValueError(
            f"{name} contains NaN or inf (first in row {row}, after conversion to float32); "
            "check the model's output (e.g. a diverged training run or fp16 overflow) or "
            "replace them, e.g. with torch.nan_to_num"
        )


def _int_batch(values: ArrayLike, name: str, batch: int) -> np.ndarray:
    """``values`` as a 1-D int64 numpy array of length ``batch``."""
    if isinstance(values, torch.Tensor):
        arr = values.detach().cpu().numpy()
    else:
        arr = np.asarray(values)
    if arr.ndim != 1 or arr.shape[0] != batch:
        raise ValueError(
            f"{name} must be a 1-D array with one id per feature row ({batch}), got shape "
            f"{arr.shape}"
        )
    if arr.dtype.kind not in "iu" and not (batch == 0 and arr.dtype.kind == "f"):
        raise ValueError(
            f"{name} must hold integers, got dtype {arr.dtype}; convert it, e.g. with "
            ".astype(np.int64) or .long()"
        )
    return arr.astype(np.int64)


def _l2_normalize(feats: torch.Tensor) -> torch.Tensor:
    return normalize_rows(feats.to(torch.float32))
