"""PPLR (Cho et al., CVPR 2022): part-based pseudo label refinement, and its camera variant.

Per epoch (main process): the cross agreement of every image's global and part features,
``reid_refine.cross_agreement`` (Eq. 6), with every top-k search by
``reid_clustering.knn_search`` (:func:`_knn`); the global search reuses the clustering's ranked
list where it ranked the same features (:func:`_reusable_ranking`).

Per batch (docs/design.md, "PPLR"):

* ``global_ce``: PGLR (Eq. 9-10, ``use_pglr``; weights = the agreement, or uniform with
  ``pglr_uniform_weights``), otherwise CE with ``global_epsilon``;
* ``part_ce``: AALS (Eq. 7-8) from epoch ``aals_epoch`` (``use_aals``), before it or without
  AALS CE with ``part_epsilon``, averaged over the parts;
* the shared soft triplet (Eq. 3, :meth:`Method.triplet`);
* ``pplr_cam`` only, ``camera``: ``lambda_cam`` × the inter-camera proxy loss (Eq. 4-5) on the
  post-BNNeck global feature, plus the parts' mean when ``cam_on_parts``, against per-camera
  proxies of the clusters built each epoch from the extracted features
  (:meth:`PPLRCam.setup_epoch`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from reid_clustering import DBSCANResult, knn_search
from reid_refine import aals_loss, cross_agreement, label_smoothing_loss, pglr_loss

from ..losses import camera_proxies, camera_proxy_loss
from ..registry import register
from . import base
from .base import Figure, Method

if TYPE_CHECKING:
    from ..epoch import EpochRecord

__all__ = ["PPLR", "PPLRCam", "PPLRCamOptions", "PPLROptions"]


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


@dataclass
class PPLROptions:
    """The own keys of ``pplr`` (``method.agreement_k``, ...); the defaults are the paper's.

    Attributes:
        agreement_k: k of the top-k ranked lists of the cross agreement (Eq. 6), >= 1.
        beta: β of PGLR (Eq. 9), the weight of the one-hot label, in (0, 1].
        aals_epoch: first epoch (0-based) that trains the parts with AALS; before it, CE with
            ``part_epsilon``.
        part_epsilon: constant label smoothing ε of the part classifiers before
            ``aals_epoch`` or without AALS, in [0, 1].
        use_aals: AALS on the parts (Eq. 7-8); off: CE with ``part_epsilon``.
        use_pglr: PGLR on the global classifier (Eq. 9-10); off: CE with
            ``method.global_epsilon``.
        pglr_uniform_weights: the "w/o cross agreement" ablation: equal part weights 1/P.
    """

    agreement_k: int = 20
    beta: float = 0.5
    aals_epoch: int = 5
    part_epsilon: float = 0.1
    use_aals: bool = True
    use_pglr: bool = True
    pglr_uniform_weights: bool = False

    def __post_init__(self) -> None:
        _check(self.agreement_k >= 1, f"agreement_k must be >= 1, got {self.agreement_k}")
        _check(0 < self.beta <= 1, f"beta must be in (0, 1], got {self.beta}")
        _check(self.aals_epoch >= 0, f"aals_epoch must be >= 0, got {self.aals_epoch}")
        _check(
            0 <= self.part_epsilon <= 1, f"part_epsilon must be in [0, 1], got {self.part_epsilon}"
        )


@dataclass
class PPLRCamOptions(PPLROptions):
    """The own keys of ``pplr_cam``: those of ``pplr`` and the camera-aware proxy loss's.

    Attributes:
        lambda_cam: weight of the inter-camera proxy loss (Eq. 4-5), >= 0.
        cam_temperature: its temperature, > 0.
        num_hard_negatives: the hardest negative proxies it contrasts against, >= 1.
        cam_on_parts: also apply it to each part feature (the official code does; averaged).
    """

    lambda_cam: float = 0.5
    cam_temperature: float = 0.07
    num_hard_negatives: int = 50
    cam_on_parts: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.lambda_cam >= 0, f"lambda_cam must be >= 0, got {self.lambda_cam}")
        _check(self.cam_temperature > 0, f"cam_temperature must be > 0, got {self.cam_temperature}")
        _check(
            self.num_hard_negatives >= 1,
            f"num_hard_negatives must be >= 1, got {self.num_hard_negatives}",
        )


@register
class PPLR(Method):
    name = "pplr"
    arch = "pplr"
    loss_terms = ("global_ce", "part_ce")
    Options = PPLROptions
    options: PPLROptions

    @classmethod
    def figures(cls) -> dict[str, Figure]:
        return {"agreement": Figure("PPLR: mean cross agreement", "part", "agreement (0 – 1)")}

    def needs_parts(self, num_parts: int) -> bool:
        return True

    def training_set_problems(self, num_images: int) -> list[str]:
        k = self.options.agreement_k
        if num_images > k:
            return []
        return [
            f"method.agreement_k {k}: the cross agreement ranks {k} neighbours of every training "
            f"image, but the training split has {num_images} images; lower method.agreement_k "
            f"below {num_images} (or train on more images)"
        ]

    def on_epoch_start(self, record: EpochRecord) -> dict[str, torch.Tensor]:
        """The cross agreement ``[N, P]`` (Eq. 6); its mean over the clustered images is the
        epoch's ``agreement`` figure."""
        feats, parts = record.feats, record.parts
        assert feats is not None and parts is not None, "PPLR extracts part features"
        k = self.options.agreement_k
        reuse = _reusable_ranking(
            record.clustering,
            feats,
            clustered_all_rows=record.keep.numel() == feats.shape[0],
            camera_debias=self.config.cluster.camera_debias,
            k=k,
        )
        if reuse is None:
            global_feats, global_ranked = feats, None
        else:
            global_feats, global_ranked = reuse.features, reuse.ranked
        agreement = cross_agreement(global_feats, parts, k=k, knn=_knn, global_ranked=global_ranked)
        assert record.labels is not None
        clustered = record.labels >= 0
        if bool(clustered.any()):
            record.figures["agreement"] = (
                agreement[clustered.to(agreement.device)].mean(dim=0).tolist()
            )
        return {"agreement": agreement}

    def training_step(
        self, out: Any, targets: torch.Tensor, batch: dict[str, torch.Tensor], record: EpochRecord
    ) -> dict[str, torch.Tensor]:
        m, k, epoch = self.options, record.num_clusters, record.epoch
        g_logits = out.global_logits[:, :k].float()
        p_logits = out.part_logits[:, :, :k].float()
        agreement = record.tensors["agreement"]
        ca = agreement[batch["index"].to(agreement.device)]
        terms: dict[str, torch.Tensor] = {}
        if m.use_pglr:
            weights = torch.ones_like(ca) if m.pglr_uniform_weights else ca
            terms["global_ce"] = pglr_loss(g_logits, p_logits, targets, weights, m.beta)
        else:
            epsilon = self.config.method.global_epsilon
            terms["global_ce"] = label_smoothing_loss(g_logits, targets, epsilon)
        if m.use_aals and epoch >= m.aals_epoch:
            terms["part_ce"] = aals_loss(p_logits, targets, ca)
        else:
            terms["part_ce"] = torch.stack(
                [
                    label_smoothing_loss(p_logits[:, i], targets, m.part_epsilon)
                    for i in range(p_logits.shape[1])
                ]
            ).mean()
        terms.update(self.triplet(out, targets))
        return terms


@register
class PPLRCam(PPLR):
    """PPLR + the camera-aware proxy loss (the official code's ``PPLRTrainerCAM``)."""

    name = "pplr_cam"
    loss_terms = ("global_ce", "part_ce", "camera")
    Options = PPLRCamOptions
    options: PPLRCamOptions

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.proxies: dict[str, Any] | None = None

    def setup_epoch(self, record: EpochRecord) -> None:
        """The epoch's camera proxies (every process, from the gathered features on the
        training device): per (cluster, camera) means of the clustered images' global features
        and, with ``cam_on_parts``, of each part's."""
        feats, parts, labels = record.feats, record.parts, record.labels
        assert feats is not None and labels is not None and record.camids is not None
        clustered = labels >= 0
        cams = torch.from_numpy(record.camids)[clustered].to(feats.device)
        lab, rows = labels[clustered].to(feats.device), clustered.to(feats.device)
        to_dev = lambda t: tuple(x.to(record.device) for x in t)  # noqa: E731
        proxies: dict[str, Any] = {"global": to_dev(camera_proxies(feats[rows], lab, cams))}
        proxies["parts"] = []
        if parts is not None and self.options.cam_on_parts:
            clustered_parts = parts[rows]  # one copy for all parts
            proxies["parts"] = [
                to_dev(camera_proxies(clustered_parts[:, i], lab, cams))
                for i in range(parts.shape[1])
            ]
        self.proxies = proxies

    def training_step(
        self, out: Any, targets: torch.Tensor, batch: dict[str, torch.Tensor], record: EpochRecord
    ) -> dict[str, torch.Tensor]:
        terms = super().training_step(out, targets, batch, record)
        # The proxies are means of the extracted (post-BNNeck) features, so the batch's
        # features are the post-BNNeck ones too, whatever method.triplet_features says.
        m, proxies = self.options, self.proxies
        assert proxies is not None, "setup_epoch builds the camera proxies of pplr_cam"
        cams = batch["camid"].to(targets.device)
        cam = self._loss(out.global_bn_features.float(), targets, cams, proxies["global"])
        if m.cam_on_parts and proxies["parts"]:
            part_feats = out.part_features.float()
            cam = (
                cam
                + torch.stack(
                    [
                        self._loss(part_feats[:, i], targets, cams, p)
                        for i, p in enumerate(proxies["parts"])
                    ]
                ).mean()
            )
        terms["camera"] = m.lambda_cam * cam
        return terms

    def _loss(self, feats, targets, cams, proxy):  # noqa: ANN001, ANN202
        m = self.options
        return camera_proxy_loss(
            feats, targets, cams, *proxy, temperature=m.cam_temperature,
            num_hard_negatives=m.num_hard_negatives,
        )  # fmt: skip


def _knn(features: torch.Tensor, m: int) -> torch.Tensor:
    """The ``knn`` of ``reid_refine.cross_agreement``: ``reid_clustering.knn_search`` on the
    features' device, the ranking (machine-independent ``pair_dot`` values, ties to the lower
    index) that the clustering's torch backend uses too."""
    return knn_search(features, k=m, similarities=False).indices


#: Largest difference allowed between an extracted (L2-normalised) feature and the clustering's
#: re-normalised copy of it for the two to count as the same features (a few float32 ulps apart;
#: features that were not unit vectors differ by far more).
_RENORMALISED_ATOL = 1e-5


def _reusable_ranking(
    clustering: DBSCANResult | None,
    feats: torch.Tensor,
    *,
    clustered_all_rows: bool,
    camera_debias: bool,
    k: int,
) -> DBSCANResult | None:
    """The clustering when its ranked list may serve as the cross agreement's global one.

    ``clustering.ranked`` is ``knn_search(clustering.features, k=k1).indices``: the torch
    ranking depends only on those features and its first ``k + 1`` columns are the top-(k+1)
    search the cross agreement would run, so reusing it changes nothing, provided the cross
    agreement's global features are ``clustering.features`` themselves. Those are the
    clustering's input after its own L2 normalisation; the extracted ``feats`` are unit vectors
    already, but re-normalising them moves some entries by an ulp (about half the rows of 2048-d
    features), so bit-equality with ``feats`` cannot be the test. The cross agreement is then
    given ``clustering.features`` as its global features, and this checks that they are
    ``feats`` normalised the same way:

    * there was a clustering (not ``cluster.labels: [noisy_]ground_truth``), with the torch kNN
      backend (:mod:`reid_train.pseudo_labels` clusters with ``backend="torch"``: the ranking
      of :func:`_knn`);
    * it saw every row, in order (no unreadable image was left out of it);
    * it saw ``feats`` themselves, not camera-debiased features (``cluster.camera_debias``);
    * its features are ``feats`` up to re-normalisation (within ``_RENORMALISED_ATOL``: the
      extracted features were unit vectors) and its list has ``k1 >= k + 1`` columns.

    Returns None otherwise: the cross agreement then searches ``feats`` (with :func:`_knn`).
    """
    if clustering is None or not clustered_all_rows or camera_debias:
        return None
    ranked, features = clustering.ranked, clustering.features
    if ranked.dim() != 2 or ranked.shape[0] != feats.shape[0] or ranked.shape[1] < k + 1:
        return None
    if features.shape != feats.shape or features.device != feats.device:
        return None
    step = base.ROW_BLOCK  # blocks of rows: the comparison's temporaries stay small on a GPU
    for start in range(0, feats.shape[0], step):
        a, b = features[start : start + step], feats[start : start + step]
        if not torch.allclose(a, b, rtol=0.0, atol=_RENORMALISED_ATOL):
            return None
    return clustering
