"""Clustering for unsupervised person re-identification.

kNN (torch, faiss-cpu, faiss-gpu), the k-reciprocal Jaccard distance of SpCL/PPLR (dense and
sparse) and DBSCAN pseudo labels. The algorithms arrive with the reid-clustering issue; this
release holds the installable skeleton.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
