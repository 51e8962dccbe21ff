"""Label refinement for unsupervised person re-identification.

Pure-torch implementations of the label-refinement methods of PPLR (Cho et al., CVPR 2022:
cross agreement, AALS, PGLR) and DCLS (dual-branch cross label smoothing), plus constant
label smoothing. The algorithms arrive with the reid-refine issue; this release holds the
installable skeleton.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
