"""t-SNE picture of query and gallery features, coloured by identity (as in the PPLR/DCLS papers).

::

    from reid_eval.tsne import write_tsne
    result = write_tsne(features, pids, camids, is_query, "vis/tsne.png", n_ids=10)
    # vis/tsne.png (the scatter) and vis/tsne.csv (x, y, pid, camid, split, index[, path])

``reid-eval --checkpoint DIR ... --tsne 10`` does the same with the features the evaluation
extracted. scikit-learn (brought by reid-clustering) computes the embedding; matplotlib, an
optional dependency (``pip install "reid-eval[plot]"``), draws it. Both are imported only here.
"""

from __future__ import annotations

import csv
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["TSNEResult", "check_tsne_dependencies", "select_identities", "write_tsne"]

#: Up to this many identities the figure has a colour legend (one entry per identity).
MAX_LEGEND_IDS = 20


@dataclass
class TSNEResult:
    """What :func:`write_tsne` drew.

    Attributes:
        coords: ``[M, 2]`` t-SNE coordinates of the drawn samples.
        indices: ``[M]`` their rows in the input arrays.
        pids, camids, is_query: ``[M]`` their identity, camera and split.
        identities: the chosen identities, sorted.
        png, table: the figure and the CSV file of the coordinates.
    """

    coords: np.ndarray
    indices: np.ndarray
    pids: np.ndarray
    camids: np.ndarray
    is_query: np.ndarray
    identities: np.ndarray
    png: Path
    table: Path


def check_tsne_dependencies() -> None:
    """Import scikit-learn's TSNE and matplotlib, or raise :class:`ImportError` naming the fix.

    Call it before a long feature extraction so that a missing package is reported at once.
    """
    _tsne_class()
    _matplotlib()


def select_identities(
    pids: np.ndarray, is_query: np.ndarray, n_ids: int, *, seed: int = 0
) -> np.ndarray:
    """``n_ids`` identities drawn at random (``seed``) among those with a query and a gallery
    image and ``pid > 0`` (distractors, 0, and junk, −1, excluded); sorted.

    When fewer identities qualify, all of them are returned with a :class:`RuntimeWarning`.

    Raises:
        ValueError: ``n_ids < 1`` or no identity qualifies.
    """
    if n_ids < 1:
        raise ValueError(f"the number of t-SNE identities must be positive, got {n_ids}")
    pids, is_query = np.asarray(pids), np.asarray(is_query, dtype=bool)
    eligible = np.intersect1d(pids[is_query & (pids > 0)], pids[~is_query & (pids > 0)])
    if eligible.size == 0:
        raise ValueError(
            "t-SNE: no identity (pid > 0) has both a query and a gallery image to draw"
        )
    if n_ids > eligible.size:
        warnings.warn(
            f"t-SNE: {n_ids} identities asked for but only {eligible.size} have both a query and "
            f"a gallery image; drawing all {eligible.size}",
            RuntimeWarning,
            stacklevel=2,
        )
        return eligible
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(eligible, size=n_ids, replace=False))


def write_tsne(
    features: torch.Tensor | np.ndarray,
    pids: Sequence[int] | np.ndarray,
    camids: Sequence[int] | np.ndarray,
    is_query: Sequence[bool] | np.ndarray,
    out_path: str | os.PathLike[str],
    n_ids: int = 10,
    *,
    seed: int = 0,
    perplexity: float = 30.0,
    paths: Sequence[str] | None = None,
    title: str | None = None,
    dpi: int = 130,
) -> TSNEResult:
    """Embed the samples of ``n_ids`` identities in 2-D with t-SNE and draw them.

    Identities are chosen by :func:`select_identities` (deterministic for a ``seed``; clamped,
    with a warning, to the identities available). Every query and gallery image of a chosen
    identity is embedded (``sklearn.manifold.TSNE``, PCA initialisation, ``random_state=seed``;
    ``perplexity`` is lowered for small sets, as t-SNE needs it below the number of samples).
    The scatter is coloured by identity; queries are triangles, gallery images circles; a colour
    legend is added for at most :data:`MAX_LEGEND_IDS` identities.

    Args:
        features: ``[N, D]`` features (query and gallery rows, in any order).
        pids, camids, is_query: ``[N]`` identity, camera and split (True for a query) per row.
        out_path: the PNG; the coordinates go to the same name with ``.csv`` (columns ``x, y,
            pid, camid, split, index`` and ``path`` when ``paths`` is given). Folders are created.
        n_ids: number of identities to draw.
        paths: optional image path per row, copied into the CSV.
        title: a caption under the figure's title ("t-SNE of N identities ..."), e.g. the model.

    Raises:
        ValueError: mismatched lengths, ``n_ids < 1``, no identity to draw, too few samples.
        ImportError: scikit-learn or matplotlib is missing (the message says what to install).
    """
    feats = features.detach().cpu().float().numpy() if torch.is_tensor(features) else features
    feats = np.asarray(feats, dtype=np.float32)
    pids_a = np.asarray(pids).astype(np.int64)
    cams_a = np.asarray(camids).astype(np.int64)
    query_a = np.asarray(is_query, dtype=bool)
    if feats.ndim != 2 or not (len(feats) == len(pids_a) == len(cams_a) == len(query_a)):
        raise ValueError(
            f"features {feats.shape}, pids {pids_a.shape}, camids {cams_a.shape} and is_query "
            f"{query_a.shape}: expected [N, D] features and N of each"
        )
    if paths is not None and len(paths) != len(feats):
        raise ValueError(f"{len(paths)} paths for {len(feats)} features")
    TSNE = _tsne_class()
    mpl = _matplotlib()
    identities = select_identities(pids_a, query_a, n_ids, seed=seed)
    indices = np.flatnonzero(np.isin(pids_a, identities))
    if len(indices) < 4:
        raise ValueError(
            f"t-SNE needs at least 4 samples, the chosen identities have {len(indices)}"
        )
    perplexity = float(min(perplexity, max(1.0, (len(indices) - 1) / 3)))
    coords = TSNE(
        n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=seed
    ).fit_transform(feats[indices])
    result = TSNEResult(
        coords=np.asarray(coords, dtype=np.float64),
        indices=indices,
        pids=pids_a[indices],
        camids=cams_a[indices],
        is_query=query_a[indices],
        identities=identities,
        png=Path(out_path),
        table=Path(out_path).with_suffix(".csv"),
    )
    result.png.parent.mkdir(parents=True, exist_ok=True)
    _draw(mpl, result, title, dpi)
    _write_table(result, None if paths is None else [paths[i] for i in indices])
    return result


# ---------------------------------------------------------------------------------- helpers
def _tsne_class() -> Any:
    try:
        from sklearn.manifold import TSNE
    except ImportError as e:
        raise ImportError(
            "the t-SNE figure needs scikit-learn, which is not installed: pip install scikit-learn"
        ) from e
    return TSNE


def _matplotlib() -> dict[str, Any]:
    try:
        import matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.lines import Line2D
    except ImportError as e:
        raise ImportError(
            "the t-SNE figure needs matplotlib, which is not installed: "
            'pip install "reid-eval[plot]"'
        ) from e
    return {
        "colormaps": matplotlib.colormaps,
        "Figure": Figure,
        "FigureCanvasAgg": FigureCanvasAgg,
        "Line2D": Line2D,
    }


def _colors(mpl: dict[str, Any], n: int) -> list[Any]:
    if n <= 10:
        cmap = mpl["colormaps"]["tab10"]
        return [cmap(i) for i in range(n)]
    if n <= 20:
        cmap = mpl["colormaps"]["tab20"]
        return [cmap(i) for i in range(n)]
    cmap = mpl["colormaps"]["turbo"]
    return [cmap(0.05 + 0.9 * i / (n - 1)) for i in range(n)]


def _draw(mpl: dict[str, Any], r: TSNEResult, caption: str | None, dpi: int) -> None:
    n = len(r.identities)
    legend_ids = n <= MAX_LEGEND_IDS
    fig = mpl["Figure"](figsize=(8.6 if legend_ids else 7.0, 6.6), layout="constrained")
    mpl["FigureCanvasAgg"](fig)
    ax = fig.add_subplot()
    colors = _colors(mpl, n)
    id_handles = []
    for color, pid in zip(colors, r.identities, strict=True):
        gallery = (r.pids == pid) & ~r.is_query
        query = (r.pids == pid) & r.is_query
        ax.scatter(*r.coords[gallery].T, s=22, marker="o", color=color, alpha=0.75, linewidths=0)
        ax.scatter(
            *r.coords[query].T, s=70, marker="^", color=color, edgecolors="black", linewidths=0.7
        )
        id_handles.append(
            mpl["Line2D"]([], [], marker="o", linestyle="none", color=color, label=f"ID {pid}")
        )
    kind_handles = [
        mpl["Line2D"](
            [],
            [],
            marker="^",
            linestyle="none",
            markersize=9,
            color="white",
            markeredgecolor="black",
            label="query",
        ),
        mpl["Line2D"](
            [], [], marker="o", linestyle="none", markersize=6, color="black", label="gallery"
        ),
    ]
    fig.legend(handles=kind_handles, loc="outside lower center", ncol=2, fontsize=9)
    if legend_ids:
        fig.legend(
            handles=id_handles,
            loc="outside right upper",
            fontsize=8,
            title="identity",
            ncol=1 if n <= 12 else 2,
        )
    ax.set_xlabel("t-SNE dimension 1 (arbitrary units)")
    ax.set_ylabel("t-SNE dimension 2 (arbitrary units)")
    n_q, n_g = int(r.is_query.sum()), int((~r.is_query).sum())
    ax.set_title(
        f"t-SNE of {n} identities ({n_q} query, {n_g} gallery images)"
        + (f"\n{caption}" if caption else ""),
        fontsize=11,
    )
    ax.grid(True, alpha=0.2)
    tmp = r.png.with_name(f".{r.png.stem}.{os.getpid()}.tmp.png")
    try:
        fig.savefig(tmp, format="png", dpi=dpi, facecolor="white")
        os.replace(tmp, r.png)
    finally:
        tmp.unlink(missing_ok=True)


def _write_table(r: TSNEResult, paths: list[str] | None) -> None:
    header = ["x", "y", "pid", "camid", "split", "index"] + (["path"] if paths else [])
    with open(r.table, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for i in range(len(r.indices)):
            row = [
                f"{r.coords[i, 0]:.5f}",
                f"{r.coords[i, 1]:.5f}",
                int(r.pids[i]),
                int(r.camids[i]),
                "query" if r.is_query[i] else "gallery",
                int(r.indices[i]),
            ]
            writer.writerow(row + ([str(paths[i])] if paths else []))
