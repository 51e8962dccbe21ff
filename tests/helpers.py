"""Helpers shared by the tests."""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image


def _jpeg_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 16), (120, 60, 30)).save(buf, format="JPEG")
    return buf.getvalue()


_JPEG = _jpeg_bytes()


def write_images(folder: Path, names: Iterable[str]) -> list[Path]:
    """Create ``folder`` and a small valid JPEG for each relative name in it."""
    paths = []
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_JPEG)
        paths.append(path)
    return paths


# --- float rounding: error bounds and well-separated test data ---------------------------------

#: float32 unit roundoff.
U32 = 2.0**-24


def gamma32(n: int) -> float:
    """``γ_n = n·u / (1 − n·u)`` with the float32 unit roundoff ``u = 2⁻²⁴``.

    A float32 sum of ``n`` terms evaluated in *any* order (any BLAS or GPU kernel, any blocking
    or chunking, ``pair_dot``'s tree) is within ``γ_n·Σ|terms|`` of the exact sum (Higham,
    *Accuracy and Stability of Numerical Algorithms*, 2nd ed., eq. 3.5). So a float32 inner
    product of D-vectors is within ``γ_D·‖x‖‖y‖`` of the exact one, whichever kernel computed it.
    """
    return n * U32 / (1 - n * U32)


def assert_rank_gaps(
    scores: np.ndarray,
    cuts: Iterable[int],
    margin: float,
    *,
    descending: bool = True,
    features: np.ndarray | None = None,
) -> None:
    """Fail unless every row of ``scores`` is well separated at each cut of its ranked list.

    ``scores`` are accurate (float64) values of what the compared computations rank by, e.g.
    similarities or distances. Row ``i`` is ranked (``descending`` or ascending, ties by column
    index) and, for each cut ``c``, the values at positions ``c - 1`` and ``c`` must differ by more
    than ``margin``. Two float32 computations whose values each lie within ``margin / 2`` of
    ``scores`` (different BLAS kernels, matrix shapes, chunk sizes, devices) then put the same
    set of columns before every cut: a last-bit difference cannot change a top-c set.

    ``features``: columns whose feature rows are identical tie exactly in every computation
    (the same bits in, the same bits out) and may sit on either side of a cut; they are broken
    by index everywhere.
    """
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-scores if descending else scores, axis=1, kind="stable")
    ranked = np.take_along_axis(scores, order, axis=1)
    for c in cuts:
        assert 0 < c < scores.shape[1], f"cut {c} outside the ranked list"
        gap = np.abs(ranked[:, c - 1] - ranked[:, c])
        ok = gap > margin
        if features is not None:
            ok |= (features[order[:, c - 1]] == features[order[:, c]]).all(axis=1)
        bad = np.flatnonzero(~ok)
        assert bad.size == 0, (
            f"test data not separated: row {bad[0]}, positions {c - 1}/{c} differ by "
            f"{gap[bad[0]]:.3g} <= {margin:.3g}, so rounding could reorder them; pick other data"
        )
