"""DCLS, dual-branch cross label smoothing (Eq. 3-11 of the DCLS paper), with its ablations.

Local regions are indexed 0..N_l-1 from top to bottom (the paper's 1, 2, 3). Shapes: global
``[N, D]``, locals ``[N, N_l, D]`` / ``[N, N_l, K]`` (locals before channels or classes).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Literal

import torch
from torch import nn

from reid_refine._checks import (
    check_float_tensor,
    check_nonempty_batch,
    check_targets,
    check_unit_interval,
)
from reid_refine._normalize import l2_normalize
from reid_refine.smoothing import (
    one_hot_targets,
    smoothed_targets,
    soft_cross_entropy_unchecked,
)

__all__ = [
    "DCLSLoss",
    "DCLSOptions",
    "DCLSLossOutput",
    "dcls_loss",
    "dcls_smoothing_factors",
    "dcls_targets",
]

Metric = Literal["euclidean", "cosine"]
LocalMode = Literal["dcls", "initial", "constant", "none"]
GlobalMode = Literal["dcls", "constant", "none"]
Guidance = Literal["cross", "non_cross"]

_METRICS = ("euclidean", "cosine")
_LOCAL_MODES = ("dcls", "initial", "constant", "none")
_GLOBAL_MODES = ("dcls", "constant", "none")
_GUIDANCE = ("cross", "non_cross")


def _choice(value: str, name: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    return value


@dataclass(frozen=True)
class DCLSOptions:
    """The settings of DCLS's refined labels (Eq. 4-8) and their ablations, checked once.

    One object instead of the same seven keyword arguments on :func:`dcls_targets`,
    :func:`dcls_loss` and :class:`DCLSLoss`; the defaults are the paper's.

    Attributes:
        w_l: W_l ∈ [0, 1] of Eq. 7 (paper 0.7); 0 keeps the middle label at y'_1.
        w_g: W_g ∈ [0, 1] of Eq. 8 (paper 0.5); 0 gives the one-hot global label.
        metric: ``"euclidean"`` (squared, Eq. 4) or ``"cosine"`` (Table 6).
        local_smoothing: ``"dcls"`` (Eq. 6 + 7, LS''_l), ``"initial"`` (Eq. 6 only, LS'_l, any
            N_l), ``"constant"`` (CLS_l: ``(1 − ε)·y + ε/K``) or ``"none"`` (one-hot).
        global_smoothing: ``"dcls"`` (Eq. 8, LS_g), ``"constant"`` (CLS_g) or ``"none"``.
        guidance: ``"cross"`` (Eq. 7) or ``"non_cross"`` (Table 4 ablation; our reading, N_l = 3
            only: each outer region is guided by the opposite, non-overlapping outer region with
            the outer rule and β_{0,2}; the middle region, which overlaps both, keeps y'_1).
        epsilon: ε of the constant smoothing modes, in [0, 1] (paper 0.1).

    Raises:
        ValueError: a value out of range or an unknown mode, naming the field.
    """

    w_l: float = 0.7
    w_g: float = 0.5
    metric: Metric = "euclidean"
    local_smoothing: LocalMode = "dcls"
    global_smoothing: GlobalMode = "dcls"
    guidance: Guidance = "cross"
    epsilon: float = 0.1

    def __post_init__(self) -> None:
        for name in ("w_l", "w_g", "epsilon"):
            object.__setattr__(self, name, check_unit_interval(getattr(self, name), name))
        _choice(self.metric, "metric", _METRICS)
        _choice(self.local_smoothing, "local_smoothing", _LOCAL_MODES)
        _choice(self.global_smoothing, "global_smoothing", _GLOBAL_MODES)
        _choice(self.guidance, "guidance", _GUIDANCE)


_OPTION_NAMES = tuple(f.name for f in fields(DCLSOptions))


def _options(options: DCLSOptions | None, changes: dict[str, Any], caller: str) -> DCLSOptions:
    """``options`` (default: the paper's) with ``changes`` (keyword arguments naming fields)."""
    unknown = sorted(set(changes) - set(_OPTION_NAMES))
    if unknown:
        raise TypeError(
            f"{caller} got unknown option(s) {unknown}; the DCLSOptions fields are "
            f"{', '.join(_OPTION_NAMES)}"
        )
    if options is not None and not isinstance(options, DCLSOptions):
        raise TypeError(f"{caller}: options must be a DCLSOptions, got {type(options).__name__}")
    base = options if options is not None else DCLSOptions()
    return replace(base, **changes) if changes else base


@torch.no_grad()
def dcls_smoothing_factors(
    global_feats: torch.Tensor, local_feats: torch.Tensor, metric: Metric = "euclidean"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Smoothing factors β = exp(−d) of DCLS Eq. 4-5, between features of the same sample.

    Features are L2-normalised first, at any finite magnitude (features scaled by 1e19 or
    1e-19 give the same β; zero features stay zero). ``metric="euclidean"``: d = ‖x − y‖²
    (squared Euclidean, Eq. 4, so β ∈ [e⁻⁴, 1]); ``metric="cosine"``: d = 1 − cos(x, y)
    (Eq. 12 / Table 6, β ∈ [e⁻², 1]). β is in (0, 1] and detached.

    Args:
        global_feats: ``[N, D]`` float.
        local_feats: ``[N, N_l, D]`` float.

    Returns:
        ``(beta_lg [N, N_l], beta_ll [N, N_l, N_l])``: β between local i and the global feature,
        and β between locals i and j (symmetric, diagonal 1).
    """
    global_feats = check_float_tensor(global_feats, "global_feats", 2)
    local_feats = check_float_tensor(local_feats, "local_feats", 3)
    _choice(metric, "metric", _METRICS)
    n, d = global_feats.shape
    if local_feats.shape[0] != n or local_feats.shape[2] != d:
        raise ValueError(
            f"local_feats must have shape [N, N_l, D] = [{n}, N_l, {d}] to match global_feats, "
            f"got {tuple(local_feats.shape)}"
        )
    g = l2_normalize(global_feats.detach(), dim=-1)  # any finite scale, 1e19 or 1e-19 too
    loc = l2_normalize(local_feats.detach(), dim=-1)
    cos_lg = (loc * g[:, None, :]).sum(-1)  # [N, N_l]
    cos_ll = loc @ loc.transpose(1, 2)  # [N, N_l, N_l]
    if metric == "euclidean":
        # For unit vectors ‖x − y‖² = ‖x‖² + ‖y‖² − 2⟨x, y⟩ (zero vectors keep norm 0).
        sq_g = (g * g).sum(-1)[:, None]
        sq_l = (loc * loc).sum(-1)
        d_lg = (sq_l + sq_g - 2 * cos_lg).clamp_min(0)
        d_ll = (sq_l[:, :, None] + sq_l[:, None, :] - 2 * cos_ll).clamp_min(0)
    else:
        d_lg = (1 - cos_lg).clamp_min(0)
        d_ll = (1 - cos_ll).clamp_min(0)
    beta_ll = torch.exp(-d_ll)
    eye = torch.eye(loc.shape[1], dtype=torch.bool, device=loc.device)
    beta_ll = beta_ll.masked_fill(eye, 1.0)
    return torch.exp(-d_lg), beta_ll


def _eq7_further_smoothing(
    y1: torch.Tensor, beta_ll: torch.Tensor, w_l: float, guidance: str
) -> torch.Tensor:
    """DCLS Eq. 7 applied to the Eq. 6 labels ``y1`` ``[N, N_l, K]`` (N_l ∈ {2, 3})."""
    n_l = y1.shape[1]

    def outer(i: int, j: int) -> torch.Tensor:
        b = beta_ll[:, i, j, None]
        return (1 - b) * y1[:, i] + b * y1[:, j]

    if n_l == 2:
        if guidance != "cross":
            raise ValueError(
                "guidance='non_cross' needs N_l = 3 local regions, but local_feats/local_logits "
                "have N_l = 2; use guidance='cross'"
            )
        return torch.stack([outer(0, 1), outer(1, 0)], dim=1)
    if n_l != 3:
        raise ValueError(
            f"local_feats/local_logits must have N_l in {{2, 3}} for Eq. 7 (LS''_l), got {n_l}; "
            "use local_smoothing='initial', 'constant' or 'none' for other N_l"
        )
    if guidance == "non_cross":
        # Outer regions guided by the opposite (non-overlapping) outer region; the middle
        # region overlaps both, has no non-neighbouring region and keeps its Eq. 6 label.
        return torch.stack([outer(0, 2), y1[:, 1], outer(2, 0)], dim=1)
    b10, b12 = beta_ll[:, 1, 0, None], beta_ll[:, 1, 2, None]
    guide = (b10 * y1[:, 0] + b12 * y1[:, 2]) / (b10 + b12)
    middle = (1 - w_l) * y1[:, 1] + w_l * guide
    return torch.stack([outer(0, 1), middle, outer(2, 1)], dim=1)


@torch.no_grad()
def dcls_targets(
    global_feats: torch.Tensor,
    local_feats: torch.Tensor,
    local_logits: torch.Tensor,
    targets: torch.Tensor,
    options: DCLSOptions | None = None,
    **changes: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """DCLS refined labels (Eq. 4-8), detached: ``(local_targets [N, N_l, K], global [N, K])``.

    With β from :func:`dcls_smoothing_factors` (L2-normalised features, Eq. 4-5):

    * Eq. 6 (LS'_l): ``y'_i = (1 − β_{i,g})·y + β_{i,g}/K`` for every local i.
    * Eq. 7 (LS''_l), N_l = 3 (top 0, middle 1, bottom 2): outer i ∈ {0, 2}:
      ``y''_i = (1 − β_{i,1})·y'_i + β_{i,1}·y'_1``; middle:
      ``y''_1 = (1 − W_l)·y'_1 + W_l·Σ_{n∈{0,2}} β_{1,n}·y'_n / Σ_{n∈{0,2}} β_{1,n}``.
      N_l = 2 (our definition; the paper gives no formula): the two regions guide each other
      with the outer rule, ``y''_0 = (1 − β_{0,1})·y'_0 + β_{0,1}·y'_1`` and symmetrically;
      ``w_l`` is unused.
    * Eq. 8 (LS_g): ``y'_g = (1 − W_g)·y + W_g·Σ_i β_{i,g}·softmax(ŷ_i) / Σ_j β_{j,g}`` with the
      local predictions detached.

    Args:
        global_feats: ``[N, D]`` float (the global branch feature of each sample).
        local_feats: ``[N, N_l, D]`` float.
        local_logits: ``[N, N_l, K]`` float (only their detached softmax enters Eq. 8).
        targets: ``[N]`` integer pseudo-labels in ``[0, K)``.
        options: the settings (:class:`DCLSOptions`; default: the paper's).
        **changes: fields of :class:`DCLSOptions` to change, e.g. ``local_smoothing="initial"``.

    Returns:
        ``(local_targets, global_targets)``; every row a probability distribution; no grad.
    """
    opts = _options(options, changes, "dcls_targets")
    wl, wg, eps = opts.w_l, opts.w_g, opts.epsilon
    local_smoothing, global_smoothing = opts.local_smoothing, opts.global_smoothing
    beta_lg, beta_ll = dcls_smoothing_factors(global_feats, local_feats, opts.metric)
    local_logits = check_float_tensor(local_logits, "local_logits", 3)
    n, n_l, _ = local_feats.shape
    if local_logits.shape[:2] != (n, n_l):
        raise ValueError(
            f"local_logits must have shape [N, N_l, K] with N = {n}, N_l = {n_l}, "
            f"got {tuple(local_logits.shape)}"
        )
    if n_l < 1:
        raise ValueError("local_feats must hold at least one local region (N_l >= 1)")
    k = local_logits.shape[2]
    if k < 1:
        raise ValueError("local_logits must have K >= 1 classes")
    targets = check_targets(targets, n, k)
    dtype = local_logits.dtype
    beta_lg, beta_ll = beta_lg.to(dtype), beta_ll.to(dtype)
    y = one_hot_targets(targets, k, dtype)  # [N, K]

    if local_smoothing == "none":
        local_t = y[:, None, :].expand(n, n_l, k).clone()
    elif local_smoothing == "constant":
        local_t = smoothed_targets(targets, k, eps, dtype)[:, None, :].expand(n, n_l, k).clone()
    else:
        local_t = (1 - beta_lg[:, :, None]) * y[:, None, :] + beta_lg[:, :, None] / k  # Eq. 6
        if local_smoothing == "dcls":
            local_t = _eq7_further_smoothing(local_t, beta_ll, wl, opts.guidance)

    if global_smoothing == "none":
        global_t = y
    elif global_smoothing == "constant":
        global_t = smoothed_targets(targets, k, eps, dtype)
    else:
        weights = beta_lg / beta_lg.sum(dim=1, keepdim=True)  # [N, N_l]
        local_pred = torch.softmax(local_logits.detach(), dim=-1)
        guide = (weights[:, :, None] * local_pred).sum(dim=1)
        global_t = (1 - wg) * y + wg * guide  # Eq. 8
    return local_t, global_t


@dataclass(frozen=True)
class DCLSLossOutput:
    """Result of :func:`dcls_loss`: ``total = local_loss + global_loss`` and the targets used."""

    total: torch.Tensor
    local_loss: torch.Tensor
    global_loss: torch.Tensor
    local_targets: torch.Tensor
    global_targets: torch.Tensor


def dcls_loss(
    global_logits: torch.Tensor,
    local_logits: torch.Tensor,
    global_feats: torch.Tensor,
    local_feats: torch.Tensor,
    targets: torch.Tensor,
    options: DCLSOptions | None = None,
    **changes: Any,
) -> DCLSLossOutput:
    """DCLS classification losses, Eq. 9-11 (the triplet loss on global features is separate).

    ``local_loss``: mean over locals of the batch-mean soft cross-entropy of ``local_logits[:, i]``
    against y''_i (Eq. 10); ``global_loss``: the same for ``global_logits`` against y'_g
    (Eq. 11). Targets come from :func:`dcls_targets` (same options) and are detached, so
    gradients reach only the logits, never the features.

    Args:
        global_logits: ``[N, K]`` float.
        local_logits: ``[N, N_l, K]`` float.
        global_feats: ``[N, D]``; local_feats: ``[N, N_l, D]``; targets: ``[N]`` in ``[0, K)``.
        options: the settings (:class:`DCLSOptions`; default: the paper's).
        **changes: fields of :class:`DCLSOptions` to change.

    Returns:
        :class:`DCLSLossOutput` (use ``.total`` for backward).

    Raises:
        ValueError: on invalid inputs, or on an empty batch (N = 0; the means would be NaN).
    """
    global_logits = check_float_tensor(global_logits, "global_logits", 2)
    check_nonempty_batch(global_logits, "global_logits", "dcls_loss")
    opts = _options(options, changes, "dcls_loss")
    local_t, global_t = dcls_targets(global_feats, local_feats, local_logits, targets, opts)
    if global_logits.shape != global_t.shape:
        raise ValueError(
            f"global_logits must have shape [N, K] = {list(global_t.shape)}, "
            f"got {tuple(global_logits.shape)}"
        )
    local_loss = soft_cross_entropy_unchecked(local_logits, local_t)  # mean over N and N_l
    global_loss = soft_cross_entropy_unchecked(global_logits, global_t)
    return DCLSLossOutput(local_loss + global_loss, local_loss, global_loss, local_t, global_t)


class DCLSLoss(nn.Module):
    """Module form of :func:`dcls_loss` holding its :class:`DCLSOptions` (``self.options``).

    ``DCLSLoss()`` uses the paper's settings; ``DCLSLoss(options)`` or
    ``DCLSLoss(local_smoothing="initial")`` others. Raises ValueError on an empty batch (N = 0),
    like :func:`dcls_loss`.
    """

    def __init__(self, options: DCLSOptions | None = None, **changes: Any) -> None:
        super().__init__()
        self.options = _options(options, changes, "DCLSLoss")

    def forward(
        self,
        global_logits: torch.Tensor,
        local_logits: torch.Tensor,
        global_feats: torch.Tensor,
        local_feats: torch.Tensor,
        targets: torch.Tensor,
    ) -> DCLSLossOutput:
        return dcls_loss(
            global_logits, local_logits, global_feats, local_feats, targets, self.options
        )
