"""Figures of a training run, from the run folder's ``history.jsonl`` and ``metrics.jsonl``.

::

    from reid_train.plots import plot_run
    plot_run("runs/pplr_market1501")          # -> [.../plots/metrics.png, ...]

or ``reid-train plot RUN_DIR [--out DIR]``. One figure per concern, each skipped when the run
has no data for it:

============== ==============================================================================
file           what
============== ==============================================================================
metrics.png    mAP and Rank-1 (%) per evaluation; the initial model (epoch −1) when evaluated
clusters.png   clusters and outliers per epoch; the true number of identities when known
quality.png    pseudo-label quality: NMI, ARI, pairwise precision / recall / F1
losses.png     one small panel per loss term
times.png      seconds per epoch: extract / cluster / train / eval, stacked
refinement.png the method's per-epoch figures (PPLR: mean cross agreement per part; DCLS: mean β
               per region; any registered method's ``figures()``)
============== ==============================================================================

matplotlib is imported only when a figure is drawn, through its object-oriented API (no
``pyplot``, no interactive backend), so plotting works on headless machines and inside the
training process.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["FIGURES", "PLOTS_DIR", "plot_run", "read_jsonl"]

#: Default sub-folder of the run folder the figures go to.
PLOTS_DIR = "plots"
#: The figures :func:`plot_run` may write, in order.
FIGURES = (
    "metrics.png",
    "clusters.png",
    "quality.png",
    "losses.png",
    "times.png",
    "refinement.png",
)

_HISTORY, _METRICS = "history.jsonl", "metrics.jsonl"
_BEFORE = "before\ntraining"
_QUALITY = (
    ("nmi", "NMI"),
    ("ari", "ARI"),
    ("pairwise_precision", "pairwise precision"),
    ("pairwise_recall", "pairwise recall"),
    ("pairwise_f1", "pairwise F1"),
)
_TIMES = ("extract", "cluster", "train", "eval")
_TIME_COLORS = {"extract": "#4c72b0", "cluster": "#dd8452", "train": "#55a868", "eval": "#c44e52"}


def plot_run(
    run_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    *,
    dpi: int = 120,
) -> list[Path]:
    """Draw the figures of the run in ``run_dir`` and return the paths written.

    Each figure is written to a temporary file in ``out_dir`` and renamed, so a reader never
    sees a half-written PNG. A figure whose data the run lacks (no evaluation yet, no ground
    truth in the training split, no loss because every epoch was skipped, not a PPLR/DCLS run)
    is not drawn. When an epoch appears twice (a resumed run re-ran it), its last line wins.

    Args:
        run_dir: folder written by ``reid-train`` (holds ``history.jsonl``).
        out_dir: where the PNGs go (default ``run_dir/plots``); created if needed.
        dpi: resolution of the PNGs.

    Returns:
        The PNGs written, in the order of :data:`FIGURES`.

    Raises:
        FileNotFoundError: ``run_dir`` is not a folder or holds no ``history.jsonl``.
        ImportError: matplotlib is not installed.
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise FileNotFoundError(f"run folder '{run}' does not exist")
    if not (run / _HISTORY).is_file():
        raise FileNotFoundError(
            f"'{run}' holds no {_HISTORY}: not a reid-train run folder, or no epoch finished yet"
        )
    history = _by_epoch(read_jsonl(run / _HISTORY))
    metrics = _by_epoch(read_jsonl(run / _METRICS)) if (run / _METRICS).is_file() else []
    mpl = _Matplotlib()
    out = Path(out_dir) if out_dir is not None else run / PLOTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    name = run.resolve().name
    drawers: list[tuple[str, Callable[[], Any]]] = [
        ("metrics.png", lambda: _metrics_figure(mpl, metrics, name)),
        ("clusters.png", lambda: _clusters_figure(mpl, history, name)),
        ("quality.png", lambda: _quality_figure(mpl, history, name)),
        ("losses.png", lambda: _losses_figure(mpl, history, name)),
        ("times.png", lambda: _times_figure(mpl, history, name)),
        ("refinement.png", lambda: _refinement_figure(mpl, history, name)),
    ]
    written = []
    for filename, draw in drawers:
        fig = draw()
        if fig is not None:
            written.append(_save(fig, out / filename, dpi))
    return written


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The JSON objects of a JSON-lines file; blank lines are ignored.

    A line that does not parse (typically the last one of a file being written) is skipped with
    a :class:`RuntimeWarning` naming it.
    """
    records = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                warnings.warn(f"{path}:{number}: not JSON, skipped", RuntimeWarning, stacklevel=2)
                continue
            if isinstance(record, dict):
                records.append(record)
    return records


# ---------------------------------------------------------------------------------- helpers
def _by_epoch(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per integer ``epoch`` (the last one wins), sorted by epoch."""
    kept: dict[int, dict[str, Any]] = {}
    for r in records:
        epoch = r.get("epoch")
        if isinstance(epoch, (int, float)) and not isinstance(epoch, bool):
            kept[int(epoch)] = r
    return [kept[e] for e in sorted(kept)]


def _number(value: Any) -> float:
    """``value`` as a float, NaN when it is missing or not a number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)


def _has(values: Iterable[float]) -> bool:
    return any(not math.isnan(v) for v in values)


def _markers(marker: str, n: int) -> dict[str, Any]:
    """Line-plot marker options: full size for a few epochs (one epoch is then still a visible
    point), smaller for long runs, none beyond 100 points."""
    if n > 100:
        return {"marker": None}
    return {"marker": marker, "markersize": 6 if n <= 20 else 3.5}


def _legend_outside(ax: Any, **kwargs: Any) -> None:
    """A legend to the right of the axes (constrained layout makes room for it)."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, fontsize=9, **kwargs)


def _headroom(values: Iterable[float], factor: float = 1.18) -> float:
    """An upper axis limit leaving room above the largest value (and the legend)."""
    known = [v for v in values if not math.isnan(v)]
    return max(known) * factor if known and max(known) > 0 else 1.0


class _Matplotlib:
    """The few matplotlib names the figures need, imported on first use."""

    def __init__(self) -> None:
        try:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
            from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator
        except ImportError as e:
            raise ImportError(
                "plotting a run needs matplotlib, which is not installed: pip install matplotlib"
            ) from e
        self.Figure = Figure
        self.FigureCanvasAgg = FigureCanvasAgg
        self.FixedLocator = FixedLocator
        self.FuncFormatter = FuncFormatter
        self.MaxNLocator = MaxNLocator

    def figure(self, width: float = 7.0, height: float = 4.2) -> Any:
        fig = self.Figure(figsize=(width, height), layout="constrained")
        self.FigureCanvasAgg(fig)
        return fig


def _save(fig: Any, path: Path, dpi: int) -> Path:
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
    try:
        fig.savefig(tmp, format="png", dpi=dpi, facecolor="white")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _epoch_axis(mpl: _Matplotlib, ax: Any, epochs: Sequence[int], *, label: bool = True) -> None:
    """Integer epoch ticks, margins of half an epoch (a single epoch stays readable), and the
    tick at −1 named "before training"."""
    lo, hi = min(epochs), max(epochs)
    ax.set_xlim(lo - 0.6, hi + 0.6)
    if hi - lo <= 15:
        ticks = list(range(lo, hi + 1))
    else:
        auto = mpl.MaxNLocator(nbins=10, integer=True).tick_values(max(lo, 0), hi)
        ticks = [round(t) for t in auto if max(lo, 0) <= t <= hi]
        if lo == -1:  # "before training" takes the place of the tick at 0
            ticks = [-1] + [t for t in ticks if t > 0]
    ax.xaxis.set_major_locator(mpl.FixedLocator(ticks))
    ax.xaxis.set_major_formatter(
        mpl.FuncFormatter(lambda x, _pos: _BEFORE if round(x) == -1 else f"{round(x)}")
    )
    if label:
        ax.set_xlabel("epoch")
    ax.grid(True, alpha=0.3)


def _title(fig: Any, text: str, run_name: str) -> None:
    fig.suptitle(f"{text}  —  {run_name}", fontsize=12)


# ---------------------------------------------------------------------------------- figures
def _metrics_figure(mpl: _Matplotlib, metrics: list[dict[str, Any]], run_name: str) -> Any:
    rows = [m for m in metrics if not math.isnan(_number(m.get("mAP")))]
    if not rows:
        return None
    epochs = [int(m["epoch"]) for m in rows]
    n = len(epochs)
    fig = mpl.figure()
    ax = fig.add_subplot()
    series = [("mAP", "mAP", "o", "-"), ("rank1", "Rank-1", "s", "-")]
    rerank = [m.get("rerank") if isinstance(m.get("rerank"), dict) else {} for m in rows]
    for key, label, marker, style in series:
        ys = [100 * _number(m.get(key)) for m in rows]
        line = ax.plot(epochs, ys, linestyle=style, label=label, **_markers(marker, n))[0]
        ys_rr = [100 * _number(r.get(key)) for r in rerank]
        if _has(ys_rr):
            ax.plot(
                epochs,
                ys_rr,
                linestyle="--",
                color=line.get_color(),
                markerfacecolor="none",
                label=f"{label} (re-ranked)",
                **_markers(marker, n),
            )
    best_i = max(range(len(rows)), key=lambda i: _number(rows[i].get("mAP")))
    best_y = 100 * _number(rows[best_i]["mAP"])
    when = "before training" if epochs[best_i] == -1 else f"epoch {epochs[best_i]}"
    ax.plot(
        [epochs[best_i]],
        [best_y],
        marker="*",
        markersize=15,
        linestyle="none",
        color="gold",
        markeredgecolor="black",
        label=f"best mAP {best_y:.1f} ({when})",
    )
    if -1 in epochs:
        ax.axvline(-0.5, color="grey", linewidth=0.8, linestyle=":")
    _epoch_axis(mpl, ax, epochs)
    ax.set_xlabel("epoch (evaluated at its end)")
    ax.set_ylabel("score (%)")
    top = max(_number(m.get("rank1")) for m in rows)
    ax.set_ylim(0, min(100, max(10, 100 * top * 1.15 if not math.isnan(top) else 100)))
    ax.legend(loc="best", fontsize=9)
    _title(fig, "Evaluation: mAP and Rank-1", run_name)
    return fig


def _clusters_figure(mpl: _Matplotlib, history: list[dict[str, Any]], run_name: str) -> Any:
    if not history:
        return None
    epochs = [int(h["epoch"]) for h in history]
    clusters = [_number(h.get("clusters")) for h in history]
    outliers = [_number(h.get("outliers")) for h in history]
    truth = [_number((h.get("quality") or {}).get("true_identities")) for h in history]
    fig = mpl.figure(7.0, 5.2)
    top, bottom = fig.subplots(2, 1, sharex=True)
    n = len(epochs)
    top.plot(epochs, clusters, label="clusters (pseudo identities)", **_markers("o", n))
    if _has(truth):
        known = [t for t in truth if not math.isnan(t)]
        top.axhline(
            known[-1],
            color="black",
            linestyle="--",
            linewidth=1.2,
            label=f"true identities ({known[-1]:.0f})",
        )
    bottom.plot(
        epochs, outliers, color="#c44e52", label="outliers (un-clustered)", **_markers("s", n)
    )
    skipped = [e for e, h in zip(epochs, history, strict=True) if not h.get("trained", True)]
    for ax in (top, bottom):
        for i, e in enumerate(skipped):
            ax.axvspan(
                e - 0.4,
                e + 0.4,
                color="grey",
                alpha=0.15,
                label="epoch skipped (not trained)" if i == 0 and ax is top else None,
            )
        ax.yaxis.set_major_locator(mpl.MaxNLocator(integer=True))
        _epoch_axis(mpl, ax, epochs, label=ax is bottom)
        ax.legend(loc="best", fontsize=9)
    top.set_ylim(0, _headroom([*clusters, *truth]))
    bottom.set_ylim(0, _headroom(outliers))
    top.set_ylabel("clusters (count)")
    bottom.set_ylabel("outliers (images)")
    _title(fig, "Clustering: clusters and outliers", run_name)
    return fig


def _quality_figure(mpl: _Matplotlib, history: list[dict[str, Any]], run_name: str) -> Any:
    rows = [h for h in history if isinstance(h.get("quality"), dict) and h["quality"]]
    if not rows:
        return None
    epochs = [int(h["epoch"]) for h in rows]
    fig = mpl.figure()
    ax = fig.add_subplot()
    markers = "oDs^v"
    drawn = False
    for (key, label), marker in zip(_QUALITY, markers, strict=True):
        ys = [_number(h["quality"].get(key)) for h in rows]
        if _has(ys):
            style = "--" if key.startswith("pairwise") else "-"
            ax.plot(epochs, ys, linestyle=style, label=label, **_markers(marker, len(epochs)))
            drawn = True
    if not drawn:
        return None
    _epoch_axis(mpl, ax, epochs)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("score (0 – 1)")
    _legend_outside(ax)  # five curves span the whole 0-1 range: no free corner inside
    _title(fig, "Pseudo-label quality vs ground truth", run_name)
    return fig


def _losses_figure(mpl: _Matplotlib, history: list[dict[str, Any]], run_name: str) -> Any:
    terms: list[str] = []
    for h in history:
        for k in h.get("losses") or {}:
            if k not in terms:
                terms.append(k)
    if not terms:
        return None
    epochs = [int(h["epoch"]) for h in history]
    ncols = min(3, len(terms))
    nrows = math.ceil(len(terms) / ncols)
    fig = mpl.figure(3.2 * ncols + 0.6, 2.6 * nrows + 0.8)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True)
    for i, term in enumerate(terms):
        ax = axes[i // ncols][i % ncols]
        ys = [_number((h.get("losses") or {}).get(term)) for h in history]
        ax.plot(epochs, ys, color=f"C{i % 10}", **_markers("o", len(epochs)))
        ax.set_title(term, fontsize=10)
        _epoch_axis(mpl, ax, epochs, label=i // ncols == nrows - 1 or i + ncols >= len(terms))
        if i % ncols == 0:
            ax.set_ylabel("loss (epoch mean)")
    for j in range(len(terms), nrows * ncols):
        axes[j // ncols][j % ncols].set_visible(False)
    _title(fig, "Training losses", run_name)
    return fig


def _times_figure(mpl: _Matplotlib, history: list[dict[str, Any]], run_name: str) -> Any:
    keys = [k for k in _TIMES if any(k in (h.get("times") or {}) for h in history)]
    extra = sorted({k for h in history for k in (h.get("times") or {})} - set(_TIMES))
    keys += extra
    if not keys:
        return None
    epochs = [int(h["epoch"]) for h in history]
    fig = mpl.figure()
    ax = fig.add_subplot()
    bottom = [0.0] * len(history)
    for i, key in enumerate(keys):
        values = [_number((h.get("times") or {}).get(key)) for h in history]
        values = [0.0 if math.isnan(v) else v for v in values]
        color = _TIME_COLORS.get(key, f"C{(4 + i) % 10}")
        ax.bar(epochs, values, width=0.6, bottom=bottom, label=key, color=color)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    for e, total in zip(epochs, bottom, strict=True) if len(epochs) <= 15 else ():
        ax.annotate(
            f"{total:.1f} s",
            (e, total),
            xytext=(0, 3),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=8,
        )
    _epoch_axis(mpl, ax, epochs)
    ax.grid(False, axis="x")
    ax.set_ylim(0, max(bottom) * 1.15 if max(bottom) > 0 else 1)
    ax.set_ylabel("time (seconds)")
    _legend_outside(ax, title="phase", title_fontsize=9)
    _title(fig, "Time per epoch", run_name)
    return fig


def _series(history: list[dict[str, Any]], key: str) -> tuple[list[int], list[list[float]]]:
    """Epochs and, per list index (part / region), its values (NaN where an epoch lacks it)."""
    rows = [h for h in history if isinstance(h.get(key), list) and h[key]]
    if not rows:
        return [], []
    width = max(len(h[key]) for h in rows)
    epochs = [int(h["epoch"]) for h in history]
    values = []
    for j in range(width):
        values.append(
            [
                _number(h[key][j]) if isinstance(h.get(key), list) and j < len(h[key]) else math.nan
                for h in history
            ]
        )
    if not any(_has(v) for v in values):
        return [], []
    return epochs, values


def _refinement_figure(mpl: _Matplotlib, history: list[dict[str, Any]], run_name: str) -> Any:
    from .registry import figures  # the registered methods' figures

    panels = [(k, f.title, f.unit, f.ylabel) for k, f in figures().items()]
    present = [(p, _series(history, p[0])) for p in panels]
    present = [(p, s) for p, s in present if s[0]]
    if not present:
        return None
    fig = mpl.figure(7.0, 3.6 * len(present) + 0.4)
    axes = fig.subplots(len(present), 1, squeeze=False, sharex=True)[:, 0]
    markers = "os^Dv<>p"
    for ax, ((_key, title, unit, ylabel), (epochs, values)) in zip(axes, present, strict=True):
        for j, ys in enumerate(values):
            style = _markers(markers[j % len(markers)], len(epochs))
            ax.plot(epochs, ys, label=f"{unit} {j + 1}", **style)
        _epoch_axis(mpl, ax, epochs, label=ax is axes[-1])
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(ylabel)
        _legend_outside(ax)
    _title(fig, "Refinement", run_name)
    return fig
