"""``reid_train.plots`` and ``reid-train plot`` on hand-written run folders (no training)."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import pytest
from PIL import Image

from reid_train.cli import main
from reid_train.plots import FIGURES, plot_run

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "synthetic_tiny.yaml"


def _epoch(epoch: int, **extra: object) -> dict:
    record = {
        "epoch": epoch,
        "clusters": 30 + 5 * epoch,
        "outliers": 500 - 20 * epoch,
        "trained": True,
        "losses": {"global_ce": 3.5 - 0.4 * epoch, "part_ce": 3.4 - 0.6 * epoch, "triplet": 4.0},
        "times": {"extract": 14.0, "cluster": 2.0, "train": 8.0, "eval": 10.0},
        "quality": {
            "nmi": 0.7, "ari": 0.05, "pairwise_precision": 0.08, "pairwise_recall": 0.06,
            "pairwise_f1": 0.07, "true_identities": 100,
        },
        "agreement": [0.42, 0.64, 0.44],
        "lr": 3.5e-4,
        "note": "",
        "batch_digests": [6321],
    }  # fmt: skip
    record.update(extra)
    return record


def _metric(epoch: int, m: float) -> dict:
    return {
        "epoch": epoch, "mAP": m, "rank1": m + 0.1, "rank5": m + 0.2, "rank10": m + 0.25,
        "mINP": m / 2, "best_mAP": m, "best_epoch": epoch,
    }  # fmt: skip


def _write_run(folder: Path, history: list[dict], metrics: list[dict] | None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "history.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
    if metrics is not None:
        (folder / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    return folder


def _assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        width, height = im.size
    assert 500 <= width <= 2500 and 300 <= height <= 2000, (path.name, im.size)


def test_every_figure_of_a_full_run(tmp_path: Path) -> None:
    history = [_epoch(0), _epoch(1, beta=[0.93, 0.97, 0.94]), _epoch(2, beta=[0.8, 0.9, 0.85])]
    metrics = [_metric(-1, 0.05), _metric(0, 0.1), _metric(1, 0.2), _metric(2, 0.3)]
    run = _write_run(tmp_path / "run", history, metrics)
    written = plot_run(run)
    assert [p.name for p in written] == list(FIGURES)
    assert all(p.parent == run / "plots" for p in written)
    for path in written:
        _assert_png(path)
    assert sorted(p.name for p in (run / "plots").iterdir()) == sorted(FIGURES)  # no temp file


def test_absent_data_skips_its_figure_and_one_epoch_still_plots(tmp_path: Path) -> None:
    """One epoch, no ground truth (no quality), no refinement data, no evaluation yet."""
    history = [_epoch(0, quality={}, agreement=[], trained=False, losses={})]
    del history[0]["times"]["eval"]
    run = _write_run(tmp_path / "run", history, metrics=None)
    out = tmp_path / "figures"
    written = plot_run(run, out, dpi=100)
    assert [p.name for p in written] == ["clusters.png", "times.png"]
    for path in written:
        _assert_png(path)
    assert not (run / "plots").exists()


def test_resumed_duplicates_and_a_truncated_line(tmp_path: Path) -> None:
    run = _write_run(tmp_path / "run", [_epoch(0), _epoch(1), _epoch(1)], [_metric(1, 0.2)])
    with open(run / "history.jsonl", "a") as f:
        f.write('{"epoch": 2, "clust')  # a line being written
    with pytest.warns(RuntimeWarning, match="history.jsonl:4: not JSON"):
        written = plot_run(run)
    assert "metrics.png" in {p.name for p in written}


def test_missing_run_folder_or_history(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        plot_run(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="no history.jsonl"):
        plot_run(tmp_path)


def test_missing_matplotlib_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = _write_run(tmp_path / "run", [_epoch(0)], None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match="pip install matplotlib"):
        plot_run(run)


def test_cli_plot_subcommand(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = _write_run(tmp_path / "run", [_epoch(0), _epoch(1)], [_metric(-1, 0.05)])
    assert main(["plot", str(run), "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "metrics.png" in printed and "refinement.png" in printed
    assert (tmp_path / "out" / "losses.png").is_file()

    assert main(["plot", str(tmp_path / "missing")]) == 2
    assert "reid-train plot: error:" in capsys.readouterr().err
    assert main(["plot", str(tmp_path / "out")]) == 2
    assert "no history.jsonl" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "history.jsonl").write_text("")
    assert main(["plot", str(tmp_path / "empty")]) == 2
    assert "nothing to plot" in capsys.readouterr().err


def test_training_overrides_may_follow_the_options(capsys: pytest.CaptureFixture) -> None:
    """``reid-train --config F --output-dir D key=value ...``: the overrides are still read."""
    code = main(["--config", str(TINY), "--output-dir", "unused", "optim.epochs=1", "optim.lrr=1"])
    assert code == 2
    assert "optim.lrr" in capsys.readouterr().err


def test_no_pyplot_and_a_lazy_import(tmp_path: Path) -> None:
    """matplotlib is imported inside the functions only, and never its pyplot state machine."""
    import reid_train.plots

    tree = ast.parse(Path(reid_train.plots.__file__).read_text())
    top_level = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = [a.name for n in top_level for a in n.names] + [
        n.module or "" for n in top_level if isinstance(n, ast.ImportFrom)
    ]
    assert not any(name.startswith("matplotlib") for name in names)
    pyplot_before = "matplotlib.pyplot" in sys.modules
    plot_run(_write_run(tmp_path / "run", [_epoch(0)], [_metric(0, 0.1)]))
    assert pyplot_before or "matplotlib.pyplot" not in sys.modules
