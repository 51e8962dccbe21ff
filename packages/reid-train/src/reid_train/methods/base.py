"""What a training recipe is: the interface between the engine and one method.

The engine (:mod:`reid_train.engine`) runs the same epoch for every method (docs/design.md, "One
training epoch"): extract features, cluster them, initialise the classifiers, train P×K batches,
evaluate. A :class:`Method` supplies the three things that differ:

* **which model outputs it needs**: its model architecture (:attr:`Method.arch`), whether the
  epoch extracts part features (:meth:`Method.needs_parts`) and whether the classifiers get
  camera proxies (:attr:`Method.camera_proxies`);
* **its per-epoch preparation** (:meth:`Method.prepare`, main process): per-image tensors such
  as PPLR's cross agreement, which the engine broadcasts to every process, and the figures the
  epoch logs (the mean cross agreement, DCLS's mean β);
* **its batch losses** (:meth:`Method.losses`), a dict of named terms. The engine adds the soft
  triplet, which every method shares, and then :meth:`Method.auxiliary_losses` (PPLR's camera
  term), and sums them in that order.

A method also checks its own settings (:meth:`Method.validate`), so the config names no method.
A new recipe is one module with a subclass decorated by :func:`reid_train.methods.register`,
plus one YAML config: docs/design.md, "Adding a method", has a worked example.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch

if TYPE_CHECKING:
    from reid_clustering import DBSCANResult

    from ..config import TrainConfig

__all__ = ["ROW_BLOCK", "EpochInputs", "EpochState", "Method"]

#: Rows per block of the recipes' row-wise passes over the features on an accelerator (their
#: temporaries stay small at MSMT17 size).
ROW_BLOCK = 4096


@dataclass
class EpochInputs:
    """What :meth:`Method.prepare` gets (main process, after the clustering).

    Attributes:
        feats: ``[N, D]`` extracted global features (L2-normalised, post-BNNeck), every training
            image in dataset order, on the training device.
        parts: ``[N, P, D]`` part features (post-BNNeck, L2-normalised), or None when the
            method does not need them (:meth:`Method.needs_parts`) or the model has none.
        valid: ``[N]`` bool, the images that were readable.
        keep: indices of the readable images (the rows the clustering saw, in order).
        labels: ``[N]`` int64 CPU labels of the epoch (-1 = outlier or unreadable).
        clustering: the clustering's result (labels, ranked kNN list, its normalised features),
            or None when the labels did not come from DBSCAN (``cluster.labels``).
    """

    feats: torch.Tensor
    parts: torch.Tensor | None
    valid: torch.Tensor
    keep: torch.Tensor
    labels: torch.Tensor
    clustering: DBSCANResult | None


@dataclass
class EpochState:
    """What a method prepared for an epoch.

    Attributes:
        tensors: per-image tensors (first dimension N, dataset order) computed by the main
            process and broadcast to every process by the engine; :meth:`Method.losses` reads
            them by ``batch["index"]``.
        summary: figures the epoch records (``EpochSummary`` fields, e.g. ``agreement``,
            ``beta``); main process only.
        proxies: camera proxies of the epoch (set by the engine when
            :attr:`Method.camera_proxies`), else None.
    """

    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    proxies: dict[str, Any] | None = None


class Method:
    """One training recipe (subclass it and register it with ``reid_train.methods.register``).

    Attributes:
        name: the ``method.name`` that selects it.
        arch: the ``reid_backbones.build_model`` architecture it trains (``model.arch``).
        camera_proxies: whether the engine builds per-camera proxies of the clusters each epoch
            (PPLR's camera-aware variant); they arrive as ``state.proxies``.
        loss_terms: the names of the terms :meth:`losses` and :meth:`auxiliary_losses` return
            (for documentation and tests; the engine adds ``triplet`` when
            ``method.triplet_weight > 0``).
    """

    name: ClassVar[str]
    arch: ClassVar[str]
    camera_proxies: ClassVar[bool] = False
    loss_terms: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.options = config.method

    @classmethod
    def validate(cls, config: TrainConfig) -> list[str]:
        """Problems with the method's settings in ``config``, each a message naming the key and
        the fix (the config's checks of the shared keys have run already)."""
        return []

    def needs_parts(self, num_parts: int) -> bool:
        """Whether the epoch extracts part features (``num_parts``: the model's)."""
        return False

    def broadcast_shapes(self, num_images: int, num_parts: int) -> dict[str, tuple[int, ...]]:
        """Shapes of the :attr:`EpochState.tensors` that :meth:`prepare` will return (every
        process allocates them to receive the broadcast)."""
        return {}

    def prepare(self, inputs: EpochInputs) -> EpochState:
        """The epoch's per-image tensors and logged figures (main process only)."""
        return EpochState()

    def losses(
        self,
        out: Any,
        targets: torch.Tensor,
        batch: dict[str, torch.Tensor],
        epoch: int,
        num_clusters: int,
        state: EpochState,
    ) -> dict[str, torch.Tensor]:
        """The batch's classification terms, in summation order.

        Args:
            out: the model's training output (``reid_backbones`` ``ModelOutput``: logits and
                features, global and per part).
            targets: ``[B]`` pseudo labels of the batch, in ``[0, num_clusters)``.
            batch: the loader's batch (``index``: dataset indices, ``camid``, ...).
            epoch: 0-based epoch.
            num_clusters: K, the classifiers' rows in use this epoch.
            state: this epoch's :class:`EpochState`.
        """
        raise NotImplementedError

    def auxiliary_losses(
        self,
        out: Any,
        targets: torch.Tensor,
        batch: dict[str, torch.Tensor],
        state: EpochState,
    ) -> dict[str, torch.Tensor]:
        """Terms added after the shared soft triplet (PPLR's camera loss); none by default."""
        return {}
