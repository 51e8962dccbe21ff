"""What a training recipe is: the interface between the trainer and one method.

The trainer (:mod:`reid_train.trainer`) runs the same epoch for every method (docs/design.md,
"One training epoch"): extract features, make pseudo labels, initialise the classifiers, train
P×K batches, evaluate. A :class:`Method` supplies what differs, each through one hook that gets
the epoch's :class:`~reid_train.epoch.EpochRecord`:

* **what it trains**: its model architecture (:attr:`Method.arch`), whether the epoch extracts
  part features (:meth:`Method.needs_parts`), whether the model has centroid classifiers
  (:attr:`Method.uses_classifiers`);
* **its per-epoch preparation**: :meth:`Method.on_epoch_start` (main process) returns per-image
  tensors such as PPLR's cross agreement, which the trainer broadcasts to every process by what
  it returns, and records the epoch's figures (named by :meth:`Method.figures`, which reporting
  and plots show without knowing them); :meth:`Method.setup_epoch` (every process, features
  still at hand) builds per-process state such as PPLR's camera proxies or Cluster Contrast's
  memory;
* **its batch**: :meth:`Method.training_step` returns every loss term in summation order (the
  shared soft triplet through :meth:`Method.triplet`); :meth:`Method.after_step` runs after the
  optimiser step (a memory's momentum update);
* **its settings**: its own keys are the fields of its :attr:`Method.Options` dataclass, written
  flat in the config's ``method:`` section (``method.beta=0.5``) and given to the method as
  :attr:`Method.options`; :meth:`Method.validate` checks the rules that tie them to other keys.

A new recipe is one module with a subclass decorated by :func:`reid_train.methods.register`,
plus one YAML config: docs/design.md, "Adding a method".
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from ..losses import soft_triplet_loss

if TYPE_CHECKING:
    from ..config import TrainConfig
    from ..epoch import EpochRecord

__all__ = ["ROW_BLOCK", "Figure", "Method"]

#: Rows per block of the recipes' row-wise passes over the features on an accelerator (their
#: temporaries stay small at MSMT17 size).
ROW_BLOCK = 4096


@dataclass(frozen=True)
class Figure:
    """A per-epoch figure a method records (a list of numbers per epoch, one per part or
    region): how the console, TensorBoard and ``plots/refinement.png`` name it."""

    title: str  # the plot panel's title, e.g. "PPLR: mean cross agreement"
    unit: str  # what one value belongs to, e.g. "part" (TensorBoard tags "<name>/<unit>_<i>")
    ylabel: str  # the plot's y axis


class Method:
    """One training recipe (subclass it and register it with ``reid_train.methods.register``).

    Attributes:
        name: the ``method.name`` that selects it.
        arch: the ``reid_backbones.build_model`` architecture it trains (``model.arch``).
        uses_classifiers: whether the model has classifiers that the trainer initialises with
            the cluster centroids each epoch (False: a model without classifiers, e.g. a
            method that classifies against a memory of its own).
        loss_terms: the names of the terms :meth:`training_step` returns (for documentation
            and tests; ``triplet`` comes from :meth:`triplet` when ``method.triplet_weight``
            is above 0).
        Options: the dataclass of the method's own keys (written flat in the config's
            ``method:`` section; typed, checked by its ``__post_init__`` and completed with its
            defaults when the config is validated), or None.
    """

    name: ClassVar[str]
    arch: ClassVar[str]
    uses_classifiers: ClassVar[bool] = True
    loss_terms: ClassVar[tuple[str, ...]] = ()
    Options: ClassVar[type | None] = None

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        #: The method's own keys (an instance of :attr:`Options`), or None without Options.
        self.options: Any = self.options_of(config)

    @classmethod
    def options_of(cls, config: TrainConfig) -> Any:
        """The config's own keys of this method as an :attr:`Options` instance (None without
        Options)."""
        return None if cls.Options is None else cls.Options(**config.method.options)

    @classmethod
    def default_options(cls) -> dict[str, Any]:
        """Every key of :attr:`Options` with its default (an empty dict without Options)."""
        return {} if cls.Options is None else dataclasses.asdict(cls.Options())

    @classmethod
    def validate(cls, config: TrainConfig) -> list[str]:
        """Problems with the method's settings in ``config``, each a message naming the key and
        the fix (the config's checks of the shared keys and of :attr:`Options` have run
        already: :meth:`options_of` gives the checked keys)."""
        return []

    def training_set_problems(self, num_images: int) -> list[str]:
        """What in the method's settings the training split of ``num_images`` images cannot
        satisfy (checked on every process before the run folder is created), each a message
        naming the key and the fix. None by default."""
        return []

    @classmethod
    def figures(cls) -> dict[str, Figure]:
        """The per-epoch figures :meth:`on_epoch_start` records in ``record.figures``."""
        return {}

    def needs_parts(self, num_parts: int) -> bool:
        """Whether the epoch extracts part features (``num_parts``: the model's)."""
        return False

    def on_epoch_start(self, record: EpochRecord) -> dict[str, torch.Tensor]:
        """Main process, after the pseudo labels: per-image tensors (``[N, ...]``, dataset
        order) that the trainer broadcasts to every process into ``record.tensors``; figures
        to log go into ``record.figures``. None by default."""
        return {}

    def setup_epoch(self, record: EpochRecord) -> None:
        """Every process, after the classifiers were initialised and ``record.tensors``
        arrived, with the gathered features still in ``record``: per-process state of the
        epoch (camera proxies, a memory). Nothing by default."""

    def training_step(
        self, out: Any, targets: torch.Tensor, batch: dict[str, torch.Tensor], record: EpochRecord
    ) -> dict[str, torch.Tensor]:
        """The batch's loss terms, in summation order.

        Args:
            out: the model's training output (``reid_backbones.ReIDOutput``: features and
                logits, global and per part).
            targets: ``[B]`` pseudo labels of the batch on the training device, in
                ``[0, record.num_clusters)``.
            batch: the loader's batch (``index``: dataset indices, ``camid``, ...).
            record: this epoch (``record.epoch``, ``record.num_clusters``, ``record.tensors``).
        """
        raise NotImplementedError

    def after_step(
        self, out: Any, targets: torch.Tensor, batch: dict[str, torch.Tensor], record: EpochRecord
    ) -> None:
        """After the optimiser step of the batch (every process). Nothing by default."""

    def triplet(self, out: Any, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """The soft triplet every method shares (PPLR Eq. 3) on ``method.triplet_features``,
        weighted by ``method.triplet_weight``: ``{"triplet": ...}``, or nothing at weight 0."""
        m = self.config.method
        if m.triplet_weight <= 0:
            return {}
        embedding = out.global_bn_features if m.triplet_features == "bn" else out.global_features
        return {
            "triplet": m.triplet_weight
            * soft_triplet_loss(embedding.float(), targets, m.triplet_margin)
        }
