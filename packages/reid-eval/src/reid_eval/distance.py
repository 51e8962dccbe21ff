"""Query–gallery distance matrices."""

from __future__ import annotations

import torch

__all__ = ["pairwise_distance"]


def pairwise_distance(
    query: torch.Tensor, gallery: torch.Tensor, metric: str = "euclidean"
) -> torch.Tensor:
    """Distances between the rows of ``query`` ``[Q, D]`` and ``gallery`` ``[G, D]``: ``[Q, G]``.

    ``"euclidean"``: squared Euclidean distance ``‖q‖² + ‖g‖² − 2⟨q, g⟩`` (clamped at 0), the
    matrix torchreid/fast-reid/PPLR rank with. ``"cosine"``: ``1 − cos(q, g)``. Computed in
    float32 on the tensors' device.
    """
    if query.dim() != 2 or gallery.dim() != 2 or query.shape[1] != gallery.shape[1]:
        raise ValueError(
            f"query and gallery must be [Q, D] and [G, D] with the same D, got "
            f"{tuple(query.shape)} and {tuple(gallery.shape)}"
        )
    if query.device != gallery.device:
        raise ValueError(f"query is on {query.device} but gallery on {gallery.device}")
    q, g = query.float(), gallery.float()
    if metric == "euclidean":
        d = q.pow(2).sum(1, keepdim=True) + g.pow(2).sum(1)[None] - 2 * q @ g.T
        return d.clamp_min_(0)
    if metric == "cosine":
        q = torch.nn.functional.normalize(q, dim=1)
        g = torch.nn.functional.normalize(g, dim=1)
        return 1 - q @ g.T
    raise ValueError(f"metric must be 'euclidean' or 'cosine', got {metric!r}")
