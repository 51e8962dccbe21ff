"""Controlled label noise: true identities corrupted the way a clustering corrupts them.

PPLR (Cho et al., "Part-based Pseudo Label Refinement for Unsupervised Person
Re-identification", CVPR 2022: AALS and PGLR, weighted by the cross agreement of part and global
features) and DCLS (dynamic label smoothing guided by the similarity of local and global
features) both claim that refining the labels makes training robust to *noisy pseudo labels*.
In unsupervised training that noise comes from DBSCAN and cannot be told apart from the
clustering's other effects. :func:`noisy_labels` makes it a controlled input instead: the
training split's ground-truth identities, with a chosen fraction of the images corrupted by the
three errors a clustering makes:

* **false merges of look-alikes** — clustering joins two people that differ in one part (same
  clothes colours, another bag or hat): one identity takes the label of another of its family;
* **false splits by camera** — clustering separates one person's cameras (background, colour
  cast, viewpoint): one camera's images of an identity get a label of their own;
* **outliers** — DBSCAN leaves images unclustered (label -1); the training drops them.

Definition of ``noisy_labels(pids, camids, rate, seed=S, families=F)``:

1. Images with ``pid < 0`` (junk) get -1 and never count. N = the images with ``pid >= 0``; their
   identities are relabelled 0..K-1 in sorted pid order. ``rate = 0`` returns exactly this (the
   engine's ``cluster.labels: ground_truth``).
2. Budget: ``B = round(rate * N)`` corrupted images (halves rounded up), aimed at a third
   each: ``B // 3`` for merges, ``B // 3`` for splits, the rest for outliers.
3. **Merges.** With families ``F`` (pid -> family; a pid missing from ``F`` is a family of
   one), the candidates are the unordered pairs of distinct identities of one family (look-alike
   pairs only); with ``F = None``, the identities shuffled and paired consecutively (random
   pairs). The candidates are visited in a seeded random order; a pair is skipped when either
   identity already took part in a merge (each identity takes part in at most one). Of a pair,
   the identity with fewer images (ties: a seeded coin) joins the other: its images get the
   other's label and are the corrupted ones. Merging stops as soon as the merged images reach
   the merge budget, or when the candidates run out. Look-alike pairs are never topped up with
   random pairs: a clustering merges people who look alike, and the kind of noise must not
   change with the rate. ``lookalike_merges`` counts the look-alike pairs among the ``merges``.
4. **Splits.** Budget ``B // 3`` plus what the merges fell short of their budget. The
   identities are visited in a seeded random order; those that took part in a merge, or have
   images from fewer than 2 cameras, are skipped. Of each other identity, the images of its
   camera with the fewest images (ties: a seeded random ranking of the cameras) get a new
   label and are the corrupted ones, until the split images reach the split budget.
5. **Outliers.** The rest of the budget, ``max(0, B - merged - split)``: the images not
   corrupted by steps 3-4 are visited in a seeded random order and that many of them get -1.
   They absorb the overshoot of steps 3-4 and any shortfall of the splits.
6. The labels >= 0 are relabelled 0..K'-1 in sorted order (the identities keep their order,
   the split-off labels follow).

So the realised fraction ``rate = (merged + split + outliers) / N`` is exactly ``B / N`` unless
the last merge and split together overshoot the whole budget (a tiny budget: fewer images than
one identity's); a :class:`LabelNoiseWarning` is issued when it differs from the request by more
than 2 percentage points. When the candidates of a kind run out (few look-alike pairs, few
identities in two cameras) the mix of the three kinds shifts; the counts say by how much. Each
kind draws from its own random stream (``numpy.random.SeedSequence(seed).spawn(3)``), so the
result is deterministic for a seed and, for one seed, the merges of a lower rate are mostly
those of a higher one.
"""

from __future__ import annotations

import itertools
import math
import numbers
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["LabelNoiseWarning", "NoisyLabels", "noisy_labels", "relabel"]

#: A realised rate this far from the requested one is reported with a warning.
TOLERANCE = 0.02


class LabelNoiseWarning(UserWarning):
    """The realised label noise differs from the request (a budget below one identity's
    images)."""


@dataclass(frozen=True, eq=False)
class NoisyLabels:
    """Result of :func:`noisy_labels`.

    Attributes:
        labels: int64 labels per image, 0..K'-1, -1 = outlier or junk (``pid < 0``).
        merged: images that took another identity's label (false merges).
        split: images moved to a label of their own (false splits by camera).
        outliers: images set to -1 (junk images with ``pid < 0`` not counted).
        rate: realised fraction of corrupted images, ``(merged + split + outliers) / images``.
        requested: the requested rate.
        images: N, the images with ``pid >= 0``.
        merges: merged identity pairs; ``lookalike_merges`` of them within a family.
        lookalike_merges: merges of two identities of the same family.
        splits: identities split by camera.
    """

    labels: np.ndarray
    merged: int
    split: int
    outliers: int
    rate: float
    requested: float
    images: int
    merges: int
    lookalike_merges: int
    splits: int

    def summary(self) -> dict[str, Any]:
        """The counts without the labels (for logs and JSON)."""
        return {
            "rate": self.rate,
            "requested": self.requested,
            "images": self.images,
            "merged": self.merged,
            "split": self.split,
            "outliers": self.outliers,
            "merges": self.merges,
            "lookalike_merges": self.lookalike_merges,
            "splits": self.splits,
        }

    def describe(self) -> str:
        """One line: the realised rate and what each kind corrupted."""
        return (
            f"{100 * self.rate:.1f} % of {self.images} images corrupted (requested "
            f"{100 * self.requested:.1f} %): {self.merged} merged ({self.merges} identity pairs, "
            f"{self.lookalike_merges} look-alike), {self.split} split ({self.splits} identities "
            f"by camera), {self.outliers} outliers"
        )


def noisy_labels(
    pids: np.ndarray,
    camids: np.ndarray,
    rate: float,
    *,
    seed: int = 0,
    families: Mapping[int, int] | None = None,
) -> NoisyLabels:
    """Ground-truth identities with ``rate`` of the images corrupted (module docstring).

    Args:
        pids: identity per image (integers; ``< 0`` = junk, labelled -1 and not counted).
        camids: camera per image, same length.
        rate: fraction of the images with ``pid >= 0`` to corrupt, in [0, 1).
        seed: seed of the random choices (non-negative integer).
        families: pid -> family id (``reid_eval.datasets.synthetic_families``); merges pick
            two identities of one family, and only those. None = random pairs.

    Returns:
        :class:`NoisyLabels`: the labels and the realised counts.

    Raises:
        ValueError: ``rate`` outside [0, 1), arrays of different lengths or not 1-D, non-integer
            pids, no image with ``pid >= 0``, a negative seed.

    Warns:
        LabelNoiseWarning: the realised rate differs from ``rate`` by more than 2 percentage
            points.
    """
    pids, camids = np.asarray(pids), np.asarray(camids)
    if pids.ndim != 1 or camids.ndim != 1 or len(pids) != len(camids):
        raise ValueError(
            "pids and camids must be 1-D arrays with one entry per image, got shapes "
            f"{pids.shape} and {camids.shape}"
        )
    if len(pids) and not np.issubdtype(pids.dtype, np.integer):
        raise ValueError(f"pids must be integers, got dtype {pids.dtype}")
    if (
        isinstance(rate, bool)
        or not isinstance(rate, numbers.Real)
        or not math.isfinite(rate)
        or not 0 <= rate < 1
    ):
        raise ValueError(
            f"rate must be a number in [0, 1) (the fraction of images whose label is corrupted, "
            f"e.g. 0.2 for 20 % noise), got {rate!r}"
        )
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    known = pids >= 0
    n = int(known.sum())
    if n == 0:
        raise ValueError("no image has an identity (every pid < 0): there are no labels to corrupt")
    labels = relabel(pids)
    ids = np.unique(pids[known])  # the identity of each label
    k = len(ids)
    known_idx = np.flatnonzero(known)
    sizes = np.bincount(labels[known_idx], minlength=k)
    members = np.split(
        known_idx[np.argsort(labels[known_idx], kind="stable")], np.cumsum(sizes)[:-1]
    )

    budget = math.floor(float(rate) * n + 0.5)
    merge_budget = budget // 3
    merge_rng, split_rng, outlier_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(3)
    )
    corrupted = np.zeros(len(pids), dtype=bool)
    in_merge = np.zeros(k, dtype=bool)

    def merge(i: int, j: int, coin: bool) -> int:
        """Identity with fewer images (a tie: ``coin`` picks ``i``) joins the other."""
        joins_i = sizes[i] < sizes[j] or (sizes[i] == sizes[j] and coin)
        a, b = (j, i) if joins_i else (i, j)
        labels[members[b]] = a
        corrupted[members[b]] = True
        in_merge[a] = in_merge[b] = True
        return int(sizes[b])

    # 3. merges: look-alike pairs with families, random pairs without; never a mix.
    if families is not None:
        pairs = _lookalike_pairs(ids, families)
    else:
        pairs = merge_rng.permutation(k)[: 2 * (k // 2)].reshape(-1, 2)
    merged = merges = 0
    order = merge_rng.permutation(len(pairs))
    coins = merge_rng.random(len(pairs)) < 0.5
    for p in order:
        if merged >= merge_budget:
            break
        i, j = int(pairs[p, 0]), int(pairs[p, 1])
        if in_merge[i] or in_merge[j]:
            continue
        merged += merge(i, j, bool(coins[p]))
        merges += 1
    lookalike = merges if families is not None else 0
    split_budget = budget // 3 + max(0, merge_budget - merged)

    # 4. splits: one camera (the one with the fewest images) of an identity gets a new label.
    cameras = np.unique(camids[known_idx])
    cam_rank = dict(
        zip(cameras.tolist(), split_rng.permutation(len(cameras)).tolist(), strict=True)
    )
    split = splits = 0
    new_label = k
    for i in split_rng.permutation(k):
        if split >= split_budget:
            break
        if in_merge[i]:
            continue
        rows = members[i]
        cams, counts = np.unique(camids[rows], return_counts=True)
        if len(cams) < 2:
            continue
        pick = min(range(len(cams)), key=lambda t: (counts[t], cam_rank[cams[t].item()]))
        moved = rows[camids[rows] == cams[pick]]
        labels[moved] = new_label
        corrupted[moved] = True
        new_label += 1
        split += len(moved)
        splits += 1

    # 5. outliers: images not corrupted yet, in a random order.
    visit = outlier_rng.permutation(known_idx)
    dropped = visit[~corrupted[visit]][: max(0, budget - merged - split)]
    labels[dropped] = -1
    outliers = len(dropped)

    # 6. compact labels 0..K'-1
    labels = relabel(labels)
    realised = (merged + split + outliers) / n
    if abs(budget / n - realised) > TOLERANCE:  # B / N: the request, rounded to whole images
        warnings.warn(
            f"label noise: {100 * float(rate):.1f} % requested but {100 * realised:.1f} % "
            f"realised ({merged} merged, {split} split, {outliers} outliers of {n} images): the "
            "last merge or split overshot a budget smaller than one identity's images",
            LabelNoiseWarning,
            stacklevel=2,
        )
    return NoisyLabels(
        labels=labels,
        merged=merged,
        split=split,
        outliers=outliers,
        rate=realised,
        requested=float(rate),
        images=n,
        merges=merges,
        lookalike_merges=lookalike,
        splits=splits,
    )


def relabel(ids: np.ndarray) -> np.ndarray:
    """Identities (or labels) >= 0 renumbered 0..K-1 in sorted order, the others -1: ground-truth
    pids to training labels, or labels that lost some values (noise, unreadable images) made
    contiguous again. int64, a new array."""
    out = np.full(len(ids), -1, dtype=np.int64)
    known = ids >= 0
    out[known] = np.unique(ids[known], return_inverse=True)[1].reshape(-1)
    return out


def _lookalike_pairs(ids: np.ndarray, families: Mapping[int, int]) -> np.ndarray:
    """Pairs ``(i, j)``, ``i < j``, of label indices whose pids share a family, shape [M, 2]."""
    groups: dict[Any, list[int]] = {}
    for i, pid in enumerate(ids.tolist()):
        if pid in families:
            groups.setdefault(families[pid], []).append(i)
    pairs = [p for g in groups.values() for p in itertools.combinations(g, 2)]
    return np.array(sorted(pairs), dtype=np.int64).reshape(-1, 2)
