"""Label refinement for unsupervised person re-identification, in pure torch.

* PPLR (Cho et al., CVPR 2022): :func:`cross_agreement` (Eq. 6), :func:`aals_loss` (Eq. 7-8),
  :func:`pglr_loss` (Eq. 9-10).
* DCLS (dual-branch cross label smoothing): :func:`dcls_targets` (Eq. 4-8),
  :func:`dcls_loss` (Eq. 9-11), with the ablations of its Tables 4, 5, 6 and 8.
* Constant label smoothing :func:`label_smoothing_loss` and the soft-target cross-entropy
  :func:`soft_cross_entropy` that every loss here reuses.

nn.Module wrappers: :class:`AALSLoss`, :class:`PGLRLoss`, :class:`LabelSmoothingLoss`,
:class:`SoftCrossEntropyLoss`, :class:`DCLSLoss`.
"""

from reid_refine.dcls import (
    DCLSLoss,
    DCLSLossOutput,
    DCLSOptions,
    dcls_loss,
    dcls_smoothing_factors,
    dcls_targets,
)
from reid_refine.pplr import (
    AALSLoss,
    KNNFunction,
    PGLRLoss,
    aals_loss,
    aals_targets,
    cross_agreement,
    pglr_loss,
    pglr_targets,
    ranked_lists,
)
from reid_refine.smoothing import (
    LabelSmoothingLoss,
    SoftCrossEntropyLoss,
    label_smoothing_loss,
    soft_cross_entropy,
)

__version__ = "0.3.0"

__all__ = [
    "AALSLoss",
    "DCLSLoss",
    "DCLSLossOutput",
    "DCLSOptions",
    "KNNFunction",
    "LabelSmoothingLoss",
    "PGLRLoss",
    "SoftCrossEntropyLoss",
    "__version__",
    "aals_loss",
    "aals_targets",
    "cross_agreement",
    "dcls_loss",
    "dcls_smoothing_factors",
    "dcls_targets",
    "label_smoothing_loss",
    "pglr_loss",
    "pglr_targets",
    "ranked_lists",
    "soft_cross_entropy",
]
