"""Ranked-list pictures: a query and its top-k gallery matches, with an HTML index."""

from __future__ import annotations

import html
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .datasets.base import ImageRecord
from .features import load_image

__all__ = ["write_ranked_lists"]

_GREEN, _RED, _GREY = (40, 170, 60), (215, 40, 40), (120, 120, 120)


def write_ranked_lists(
    query: Sequence[ImageRecord],
    gallery: Sequence[ImageRecord],
    distmat: np.ndarray | Callable[[np.ndarray], np.ndarray],
    out_dir: str | os.PathLike[str],
    num_queries: int = 20,
    top_k: int = 10,
    *,
    seed: int = 0,
    cell: tuple[int, int] = (128, 64),
    title: str = "ranked lists",
) -> Path:
    """Write one PNG per query (query, then its top ``top_k``) and ``index.html`` listing them.

    The ranking follows the evaluation protocol: gallery images of the query's identity taken by
    the query's camera are left out; borders are green for a true match, red otherwise
    (distractors included). Queries are drawn at random (``seed``) among all queries.

    Args:
        query, gallery: the records, aligned with the rows / columns of ``distmat``.
        distmat: ``[Q, G]`` distances, or a function that returns the rows of the given query
            indices (``[k, G]``), so that the whole matrix need not exist (e.g.
            ``functools.partial(reid_eval.distance.distance_rows, query_feats, gallery_feats)``).
        out_dir: created if needed.
        num_queries: how many queries to draw.
        top_k: gallery images per row.
        cell: ``(height, width)`` of each thumbnail.

    Returns:
        The path of ``index.html``.
    """
    if not callable(distmat):
        distmat = np.asarray(distmat)
        if distmat.shape != (len(query), len(gallery)):
            raise ValueError(
                f"distmat has shape {distmat.shape}, expected ({len(query)}, {len(gallery)})"
            )
    if num_queries < 1 or top_k < 1:
        raise ValueError("num_queries and top_k must be positive")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(query), size=min(num_queries, len(query)), replace=False))
    if callable(distmat):
        chosen_rows = np.asarray(_to_numpy(distmat(chosen)))
        if chosen_rows.shape != (len(chosen), len(gallery)):
            raise ValueError(
                f"distmat({len(chosen)} query indices) returned shape {chosen_rows.shape}, "
                f"expected ({len(chosen)}, {len(gallery)})"
            )
    else:
        chosen_rows = distmat[chosen]
    g_pids = np.array([r.pid for r in gallery])
    g_cams = np.array([r.camid for r in gallery])
    rows = []
    for qi, dist in zip(chosen, chosen_rows, strict=True):
        q = query[qi]
        order = np.argsort(dist, kind="stable")
        keep = ~((g_pids[order] == q.pid) & (g_cams[order] == q.camid))
        ranked = order[keep][:top_k]
        hits = g_pids[ranked] == q.pid
        name = f"query_{qi:05d}.png"
        _draw_row(q, [gallery[i] for i in ranked], hits, out / name, cell)
        rows.append((name, q, int(hits.sum()), bool(hits[0]) if len(hits) else False))
    index = out / "index.html"
    index.write_text(_html(rows, title, top_k), encoding="utf-8")
    return index


def _to_numpy(x: object) -> object:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else x


def _draw_row(
    query: ImageRecord,
    ranked: Sequence[ImageRecord],
    hits: np.ndarray,
    path: Path,
    cell: tuple[int, int],
) -> None:
    h, w = cell
    pad, gap, label = 4, 12, 16
    canvas = Image.new(
        "RGB", ((len(ranked) + 1) * (w + 2 * pad) + gap, h + 2 * pad + label), "white"
    )
    draw = ImageDraw.Draw(canvas)
    x = 0
    for k, (record, colour) in enumerate(
        [(query, _GREY)]
        + [(r, _GREEN if hit else _RED) for r, hit in zip(ranked, hits, strict=True)]
    ):
        draw.rectangle([x, 0, x + w + 2 * pad - 1, h + 2 * pad - 1], fill=colour)
        canvas.paste(load_image(record.path).resize((w, h)), (x + pad, pad))
        text = "query" if k == 0 else f"{k}: id {record.pid}"
        draw.text((x + pad, h + 2 * pad + 2), text, fill="black")
        x += w + 2 * pad + (gap if k == 0 else 0)
    canvas.save(path)


def _html(rows: list[tuple[str, ImageRecord, int, bool]], title: str, top_k: int) -> str:
    items = "\n".join(
        f"<h3>query {html.escape(Path(q.path).name)} (id {q.pid}, camera {q.camid}): "
        f"{'rank-1 correct' if first else 'rank-1 wrong'}, {n} true matches in the top {top_k}</h3>"
        f'\n<img src="{html.escape(name)}" alt="ranked list of {html.escape(Path(q.path).name)}">'
        for name, q, n, first in rows
    )
    return (
        f"<!doctype html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        "</head><body>\n"
        f"<h1>{html.escape(title)}</h1>\n<p>Each row: the query (grey), then its top {top_k} "
        "gallery images by distance (same identity and camera as the query left out, as in the "
        "evaluation). Green: same identity. Red: another identity or a distractor.</p>\n"
        f"{items}\n</body></html>\n"
    )
