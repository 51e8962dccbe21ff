"""Training engine for unsupervised person re-identification on HuggingFace Accelerate.

Baseline, PPLR, PPLR with the camera loss, and DCLS, driven by typed configs. The engine
arrives with the reid-train issue; this release holds the installable skeleton.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
