"""Heads: BNNeck + classifier, horizontal regions, and the part (PPLR) / local (DCLS) branch."""

from __future__ import annotations

import numbers

import torch
from torch import nn

from ._normalize import l2_normalize
from .attention import build_attention

__all__ = ["BNNeck", "PartBranch", "region_rows"]


def _round_half_up(x: float) -> int:
    return int(x + 0.5)


def region_rows(
    height: int, num_regions: int, overlap: bool, *, adaptive: bool = False
) -> list[tuple[int, int]]:
    """Row ranges ``[start, end)`` of ``num_regions`` horizontal regions of a map ``height`` tall.

    * ``adaptive=True`` — the bins of ``nn.AdaptiveAvgPool2d((N, 1))``, which the official PPLR
      code pools its parts with: region i covers rows ``⌊i·H/N⌋`` to ``⌈(i+1)·H/N⌉``, so
      neighbouring regions share a row when N does not divide H (H = 16, N = 3: ``[0, 6),
      [5, 11), [10, 16)``; H = 4: ``[0, 2), [1, 3), [2, 4)``). Works for any H >= 1.
    * ``overlap=False`` — uniform disjoint stripes (the PPLR text, Sec. 3.1; DCLS's "non-cross"
      ablation): edges ``round(i·H/N)``, so the stripes tile the map and their heights differ by
      at most one row (H = 24, N = 3: ``[0, 8), [8, 16), [16, 24)``).
    * ``overlap=True`` — DCLS regions (Sec. 3.2: neighbouring regions overlap): the map is cut
      into N + 1 bands with edges ``e_k = round(k·H/(N+1))`` and region i covers bands i and
      i + 1, ``[e_i, e_{i+2})``. Each region is twice the stride, so neighbours share half a
      region. N = 3 gives ``[0, H/2), [H/4, 3H/4), [H/2, H)`` (H = 16: ``[0, 8), [4, 12),
      [8, 16)``); N = 2 gives ``[0, 2H/3), [H/3, H)`` (H = 16: ``[0, 11), [5, 16)``, the
      middle third shared); N = 1 is the whole map.

    Edges are rounded half up. A map shorter than the number of bands raises a ValueError, as
    do a ``height`` or ``num_regions`` that is not a positive integer and an ``overlap`` or
    ``adaptive`` that is not a bool.
    """
    for label, value in (("height", height), ("num_regions", num_regions)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{label} must be an integer >= 1, got {value!r}")
    for label, value in (("overlap", overlap), ("adaptive", adaptive)):
        if not isinstance(value, bool):
            raise ValueError(f"{label} must be True or False, got {value!r}")
    if adaptive:
        if overlap:
            raise ValueError("adaptive bins are their own layout: pass overlap=False with them")
        return [(i * height // num_regions, -(-(i + 1) * height // num_regions))
                for i in range(num_regions)]  # fmt: skip
    bands = num_regions + 1 if overlap else num_regions
    if height < bands:
        raise ValueError(
            f"a feature map {height} rows tall cannot hold {num_regions} "
            f"{'overlapping' if overlap else 'disjoint'} regions (needs height >= {bands} "
            "rows); use larger images or fewer regions"
        )
    edges = [_round_half_up(k * height / bands) for k in range(bands + 1)]
    step = 2 if overlap else 1
    return [(edges[i], edges[i + step]) for i in range(num_regions)]


class BNNeck(nn.BatchNorm1d):
    """The BNNeck of Luo et al. ("Bag of tricks", CVPRW 2019, Fig. 5): a BatchNorm1d whose bias
    is frozen at zero (``requires_grad=False``), between the pooled feature (triplet loss) and
    the bias-free classifier (ID loss); weights start at 1.
    """

    def __init__(self, num_features: int) -> None:
        super().__init__(num_features)
        nn.init.ones_(self.weight)
        nn.init.zeros_(self.bias)
        self.bias.requires_grad_(False)


def make_classifier(in_features: int, num_classes: int, like: torch.Tensor) -> nn.Linear | None:
    """Bias-free linear classifier (weights ~ N(0, 0.001²)) on ``like``'s device and dtype."""
    if num_classes <= 0:
        return None
    fc = nn.Linear(in_features, num_classes, bias=False, device=like.device, dtype=like.dtype)
    nn.init.normal_(fc.weight, std=0.001)
    return fc


class PartBranch(nn.Module):
    """Attention → horizontal regions → average pooling → per-region BNNeck and classifier.

    PPLR (Sec. 3.1): no attention, P stripes (by default the official code's adaptive-pooling
    bins, ``adaptive=True``; disjoint stripes otherwise). DCLS (Sec. 3.2, Fig. 1-2): an attention
    block (``soft`` by default) and N_l overlapping regions. Region ranges come from
    :func:`region_rows` applied to the map height at run time.

    ``forward`` returns ``(features [N, P, D], bn_features [N, P, D], logits [N, P, K] | None)``.
    """

    def __init__(
        self,
        channels: int,
        num_regions: int,
        *,
        overlap: bool,
        adaptive: bool = False,
        attention: str = "none",
        num_classes: int = 0,
    ) -> None:
        super().__init__()
        if num_regions < 1:
            raise ValueError(f"a part branch needs at least one region, got {num_regions}")
        self.num_regions = num_regions
        self.overlap = overlap
        self.adaptive = adaptive
        self.attention = build_attention(attention, channels)
        self.necks = nn.ModuleList(BNNeck(channels) for _ in range(num_regions))
        like = self.necks[0].weight
        classifiers = [make_classifier(channels, num_classes, like) for _ in range(num_regions)]
        self.classifiers = nn.ModuleList(classifiers) if num_classes > 0 else None

    def rows(self, height: int) -> list[tuple[int, int]]:
        """Region row ranges for a feature map ``height`` rows tall."""
        return region_rows(height, self.num_regions, self.overlap, adaptive=self.adaptive)

    def pool(self, fmap: torch.Tensor) -> torch.Tensor:
        """Average-pool each region of the (attended) map: ``[N, C, H, W]`` → ``[N, P, C]``."""
        rows = fmap.mean(dim=3)  # [N, C, H]: every row has W columns, so region mean = row mean
        return torch.stack([rows[:, :, a:b].mean(dim=2) for a, b in self.rows(fmap.shape[2])], 1)

    def forward(self, fmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        feats = self.pool(self.attention(fmap))
        bn = torch.stack([neck(feats[:, i]) for i, neck in enumerate(self.necks)], dim=1)
        logits = None
        if self.classifiers is not None:
            logits = torch.stack([fc(bn[:, i]) for i, fc in enumerate(self.classifiers)], dim=1)
        return feats, bn, logits

    def bn_features(self, fmap: torch.Tensor) -> torch.Tensor:
        """Post-BNNeck region features ``[N, P, D]`` (no classifier)."""
        feats = self.pool(self.attention(fmap))
        return torch.stack([neck(feats[:, i]) for i, neck in enumerate(self.necks)], dim=1)

    def reset_classifiers(self, centroids: torch.Tensor) -> None:
        """New classifiers from centroids ``[K, P, D]`` (L2-normalised here)."""
        like = self.necks[0].weight
        fcs = []
        for i in range(self.num_regions):
            fc = make_classifier(centroids.shape[2], centroids.shape[0], like)
            assert fc is not None
            with torch.no_grad():
                fc.weight.copy_(l2_normalize(centroids[:, i].to(like), dim=1))
            fcs.append(fc)
        self.classifiers = nn.ModuleList(fcs)
