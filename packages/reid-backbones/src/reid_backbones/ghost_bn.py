"""Split ("ghost") BatchNorm: batch statistics over groups of the batch, as on several GPUs.

The official PPLR results were trained with ``nn.DataParallel`` on 4 GPUs, so every BatchNorm
normalised over a quarter of the 64-image batch (16 images = 4 pseudo identities × 4 images);
users training on one GPU report a lower mAP (docs/design.md, "Ghost BatchNorm"). With
``groups=G`` a ghost BatchNorm splits the batch into G consecutive chunks and normalises each
with its own mean and variance (Hoffer et al., "Train longer, generalize better", NeurIPS 2017,
call this ghost batch normalisation), which reproduces G-way DataParallel statistics on one
device. Evaluation uses the running statistics, exactly like :class:`torch.nn.BatchNorm2d`.

Running statistics. Under DataParallel every replica updates its own copy of the running
mean/variance and only replica 0's copy survives the step, so the official runs estimate them from
the first quarter of each batch. A ghost BatchNorm updates them, by default
(``running_stats="mean"``), with the **average of the G groups' statistics**: because the moving
average is linear, that equals the average of what G independent replicas would hold. It has the
same expectation as replica 0's estimate (the groups are exchangeable under P×K sampling) and a
lower variance, since it uses every image of the batch. ``running_stats="first"`` keeps replica
0's behaviour bit for bit, for exact reproduction of a DataParallel run.

The converted modules keep the parameter and buffer names of BatchNorm, so state dicts and
checkpoints move freely between ``groups=1`` and ``groups=G`` models.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "GhostBatchNorm1d",
    "GhostBatchNorm2d",
    "convert_to_ghost_bn",
    "set_bn_groups",
]

_RUNNING_STATS = ("mean", "first")


def _ghost_forward(bn: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """Training-mode batch norm with statistics per group of ``bn.groups`` consecutive samples."""
    g = bn.groups
    n, c = x.shape[0], x.shape[1]
    if n % g:
        raise ValueError(
            f"ghost BatchNorm with {g} groups (bn_groups={g}) needs a batch size divisible by "
            f"{g}, got {n}; change the batch size (or drop_last=True in the DataLoader) or "
            "bn_groups"
        )
    m = n // g
    spatial = x.shape[2:]
    if m == 1 and not spatial.numel() > 1:
        raise ValueError(
            f"ghost BatchNorm with {g} groups (bn_groups={g}) on a batch of {n} leaves 1 sample "
            "per group: a variance needs at least 2 values; use a larger batch or fewer groups"
        )
    channels_last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
    # [G*m, C, *S] -> [m, G*C, *S]: one BatchNorm call whose channels are (group, channel) pairs.
    xg = x.reshape(g, m, c, *spatial).transpose(0, 1).reshape(m, g * c, *spatial)
    weight = bn.weight.repeat(g) if bn.weight is not None else None
    bias = bn.bias.repeat(g) if bn.bias is not None else None
    running_mean = running_var = None
    factor = 0.0
    if bn.track_running_stats and bn.running_mean is not None:
        bn.num_batches_tracked.add_(1)
        factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else float(bn.momentum)
        running_mean = bn.running_mean.repeat(g)  # one copy per "replica"
        running_var = bn.running_var.repeat(g)
    y = F.batch_norm(xg, running_mean, running_var, weight, bias, True, factor, bn.eps)
    if running_mean is not None:
        with torch.no_grad():
            for own, replicas in ((bn.running_mean, running_mean), (bn.running_var, running_var)):
                replicas = replicas.view(g, c)
                own.copy_(replicas.mean(0) if bn.running_stats == "mean" else replicas[0])
    y = y.reshape(m, g, c, *spatial).transpose(0, 1).reshape(n, c, *spatial)
    return y.contiguous(memory_format=torch.channels_last) if channels_last else y


class _GhostMixin:
    """``__init__`` and ``forward`` shared by the ghost BatchNorms (put before the torch base)."""

    groups: int
    running_stats: str

    def __init__(
        self, num_features: int, groups: int = 1, running_stats: str = "mean", **kwargs: object
    ) -> None:
        super().__init__(num_features, **kwargs)  # type: ignore[call-arg]
        _check(groups, running_stats)
        self.groups = groups
        self.running_stats = running_stats

    def extra_repr(self) -> str:
        return super().extra_repr() + f", groups={self.groups}, running_stats={self.running_stats}"  # type: ignore[misc]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.groups > 1:  # type: ignore[attr-defined]
            return _ghost_forward(self, x)  # type: ignore[arg-type]
        return super().forward(x)  # type: ignore[misc]


class GhostBatchNorm1d(_GhostMixin, nn.BatchNorm1d):
    """:class:`torch.nn.BatchNorm1d` that normalises over ``batch / groups`` samples in training."""


class GhostBatchNorm2d(_GhostMixin, nn.BatchNorm2d):
    """:class:`torch.nn.BatchNorm2d` that normalises over ``batch / groups`` samples in training."""


def check_bn_groups(groups: object) -> None:
    """Raise a ValueError naming ``bn_groups`` unless ``groups`` is a positive int (not a bool)."""
    if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
        raise ValueError(
            f"bn_groups must be a positive integer (the number of groups the batch is split "
            f"into), got {groups!r}"
        )


def _check(groups: int, running_stats: str) -> None:
    check_bn_groups(groups)
    if running_stats not in _RUNNING_STATS:
        raise ValueError(
            f"running_stats must be one of {', '.join(_RUNNING_STATS)}, got {running_stats!r}"
        )


def _ghost_copy(bn: nn.BatchNorm1d | nn.BatchNorm2d, groups: int, running_stats: str) -> nn.Module:
    cls = GhostBatchNorm1d if isinstance(bn, nn.BatchNorm1d) else GhostBatchNorm2d
    new = cls(
        bn.num_features,
        groups=groups,
        running_stats=running_stats,
        eps=bn.eps,
        momentum=bn.momentum,
        affine=bn.affine,
        track_running_stats=bn.track_running_stats,
    )
    # Share the very same parameters and buffers (requires_grad flags, devices and dtypes kept).
    for name, param in bn.named_parameters(recurse=False):
        setattr(new, name, param)
    for name, buf in bn.named_buffers(recurse=False):
        setattr(new, name, buf)
    new.train(bn.training)
    return new


def convert_to_ghost_bn(module: nn.Module, groups: int, running_stats: str = "mean") -> nn.Module:
    """Replace every BatchNorm1d/2d inside ``module`` by its ghost version, in place.

    Modules already converted get the new ``groups``. Returns ``module`` (or the replacement, when
    ``module`` itself is a BatchNorm). ``groups=1`` behaves exactly like BatchNorm.

    Args:
        module: a model; its parameters and buffers are shared, not copied.
        groups: number of groups G the batch is split into during training (the batch size must
            be a multiple of G).
        running_stats: ``"mean"`` (average of the groups' statistics, default) or ``"first"``
            (the first group's only, as DataParallel's replica 0); see the module docstring.
    """
    _check(groups, running_stats)
    if isinstance(module, (GhostBatchNorm1d, GhostBatchNorm2d)):
        module.groups, module.running_stats = groups, running_stats
        return module
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):  # BNNeck included
        return _ghost_copy(module, groups, running_stats)
    for name, child in module.named_children():
        new = convert_to_ghost_bn(child, groups, running_stats)
        if new is not child:
            setattr(module, name, new)
    return module


def set_bn_groups(module: nn.Module, groups: int, running_stats: str = "mean") -> nn.Module:
    """Set the number of ghost BatchNorm groups of a model (converting plain BatchNorms)."""
    model = convert_to_ghost_bn(module, groups, running_stats)
    if hasattr(model, "bn_groups"):
        model.bn_groups = groups
    return model
