"""DCLS: dynamic label smoothing guided by the similarity of local and global features.

Per batch (docs/design.md, "DCLS"): ``reid_refine.dcls_loss`` with ``w_l``, ``w_g``,
``metric``, ``local_smoothing`` (LS''_l Eq. 6+7, LS'_l Eq. 6, constant or none),
``global_smoothing`` (LS_g Eq. 8, constant or none), ``guidance`` and ``epsilon``: the terms
``local_ce`` and ``global_ce``; with no local regions (``model.num_regions: 0``) only
``global_ce``, CE smoothed by ``epsilon``; then the shared soft triplet on the global feature.
Per epoch the main process records the mean smoothing factor β per region (Eq. 4-5), the
``beta`` figure.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from reid_refine import DCLSOptions, dcls_loss, dcls_smoothing_factors, label_smoothing_loss

from ..registry import register
from . import base
from .base import Figure, Method

if TYPE_CHECKING:
    from ..config import TrainConfig
    from ..epoch import EpochRecord

__all__ = ["DCLS"]


@register
class DCLS(Method):
    name = "dcls"
    arch = "dcls"
    loss_terms = ("local_ce", "global_ce")
    #: DCLS's own keys are reid_refine's options of its refined labels, field for field.
    Options = DCLSOptions
    options: DCLSOptions

    @classmethod
    def validate(cls, config: TrainConfig) -> list[str]:
        me, n_l = cls.options_of(config), config.model.num_regions
        problems = []
        if n_l == 0:
            if me.global_smoothing == "dcls":
                problems.append(
                    "method.global_smoothing 'dcls' (Eq. 8) needs local regions; with "
                    "model.num_regions 0 use 'constant' or 'none'"
                )
        elif me.local_smoothing == "dcls" and n_l not in (2, 3):
            problems.append(
                f"method.local_smoothing 'dcls' (Eq. 7) needs model.num_regions 2 or 3, got "
                f"{n_l}; use 'initial', 'constant' or 'none'"
            )
        if me.guidance == "non_cross" and me.local_smoothing == "dcls" and n_l != 3:
            problems.append(f"method.guidance 'non_cross' needs model.num_regions 3, got {n_l}")
        return problems

    @classmethod
    def figures(cls) -> dict[str, Figure]:
        return {"beta": Figure("DCLS: mean β", "region", "β")}

    def needs_parts(self, num_parts: int) -> bool:
        return num_parts > 0

    def on_epoch_start(self, record: EpochRecord) -> dict[str, torch.Tensor]:
        """The mean β per region over the readable images, the ``beta`` figure (the losses
        recompute β per batch); no per-image tensor."""
        if record.parts is not None:
            assert record.feats is not None and record.valid is not None
            record.figures["beta"] = _mean_beta(
                record.feats, record.parts, record.valid, self.options.metric
            )
        return {}

    def training_step(
        self, out: Any, targets: torch.Tensor, batch: dict[str, torch.Tensor], record: EpochRecord
    ) -> dict[str, torch.Tensor]:
        m, k = self.options, record.num_clusters
        g_logits = out.global_logits[:, :k].float()
        if out.part_logits is None:  # N_l = 0: the global branch alone
            terms = {"global_ce": label_smoothing_loss(g_logits, targets, m.epsilon)}
        else:
            result = dcls_loss(
                g_logits, out.part_logits[:, :, :k].float(), out.global_bn_features.float(),
                out.part_features.float(), targets, self.options,
            )  # fmt: skip
            terms = {"local_ce": result.local_loss, "global_ce": result.global_loss}
        terms.update(self.triplet(out, targets))
        return terms


def _mean_beta(
    feats: torch.Tensor,
    parts: torch.Tensor,
    valid: torch.Tensor,
    metric: Any,
    rows: int | None = None,
) -> list[float]:
    """DCLS: the mean smoothing factor β per region over the readable images (the epoch's
    ``beta``), from ``dcls_smoothing_factors`` on the features' device, ``rows`` rows at a
    time. By default on the CPU in one call and on an accelerator in blocks of
    :data:`ROW_BLOCK` rows, which bounds its ``N × P × D`` temporaries (β is per row; the mean
    is still taken over all rows at once).
    """
    n = feats.shape[0]
    step = rows or (n if feats.device.type == "cpu" else base.ROW_BLOCK)
    beta = torch.cat(
        [
            dcls_smoothing_factors(feats[s : s + step], parts[s : s + step], metric)[0]
            for s in range(0, n, max(step, 1))
        ]
    )
    return beta[valid].mean(dim=0).tolist()
