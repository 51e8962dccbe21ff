"""The baseline recipe: the global classifier on the pseudo labels, with no refinement.

Loss per batch: label-smoothed cross-entropy on the global logits (``method.global_epsilon``;
0 = plain CE, PPLR Table 1's baseline; 0.1 = the "+ constant label smoothing" row) plus the
shared soft triplet (:meth:`Method.triplet`). The part-model baseline of PPLR Table 1 (parts
trained with CE, no refinement) is ``pplr`` with ``use_aals``/``use_pglr`` off and
``part_epsilon`` 0.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from reid_refine import label_smoothing_loss

from ..registry import register
from .base import Method

if TYPE_CHECKING:
    from ..epoch import EpochRecord


@register
class Baseline(Method):
    name = "baseline"
    arch = "baseline"
    loss_terms = ("global_ce",)

    def training_step(
        self, out: Any, targets: torch.Tensor, batch: dict[str, torch.Tensor], record: EpochRecord
    ) -> dict[str, torch.Tensor]:
        logits = out.global_logits[:, : record.num_clusters].float()
        ce = label_smoothing_loss(logits, targets, self.config.method.global_epsilon)
        return {"global_ce": ce, **self.triplet(out, targets)}
