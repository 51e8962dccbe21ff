"""``reid_eval.tsne`` and ``reid-eval --tsne N_IDS``."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from reid_eval.cli import main
from reid_eval.tsne import select_identities, write_tsne


def _toy(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """5 identities with 2 query + 4 gallery images each, plus rows that must never be drawn:
    distractors (pid 0), junk (-1), an identity only in the gallery (9) and only in the query (8).
    """
    rng = np.random.default_rng(seed)
    pids = np.repeat([1, 2, 3, 4, 5], 6).tolist() + [0, 0, -1, 9, 9, 8]
    is_query = [True, True, False, False, False, False] * 5 + [False, False, False, False, False]
    is_query += [True]
    centers = rng.normal(size=(10, 32)) * 4
    feats = centers[np.array(pids) % 10] + rng.normal(size=(len(pids), 32))
    camids = np.arange(len(pids)) % 3
    return feats.astype(np.float32), np.array(pids), camids, np.array(is_query)


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_five_identities_png_and_coordinates(tmp_path: Path) -> None:
    feats, pids, camids, is_query = _toy()
    paths = [f"img_{i}.jpg" for i in range(len(pids))]
    result = write_tsne(
        torch.from_numpy(feats), pids, camids, is_query, tmp_path / "vis" / "tsne.png",
        n_ids=5, paths=paths,
    )  # fmt: skip
    assert result.identities.tolist() == [1, 2, 3, 4, 5]
    assert result.coords.shape == (30, 2) and np.isfinite(result.coords).all()
    with Image.open(result.png) as im:
        assert im.format == "PNG" and im.size[0] > 500 and im.size[1] > 400
    rows = _read_csv(tmp_path / "vis" / "tsne.csv")
    assert result.table == tmp_path / "vis" / "tsne.csv"
    assert len(rows) == 30
    assert list(rows[0]) == ["x", "y", "pid", "camid", "split", "index", "path"]
    assert {int(r["pid"]) for r in rows} == {1, 2, 3, 4, 5}
    assert sum(r["split"] == "query" for r in rows) == 10
    for r in rows:
        i = int(r["index"])
        assert r["path"] == paths[i] and int(r["pid"]) == pids[i] and int(r["camid"]) == camids[i]


def test_identity_draw_is_deterministic_and_eligible_only() -> None:
    _, pids, _, is_query = _toy()
    a = select_identities(pids, is_query, 3, seed=7)
    assert a.tolist() == select_identities(pids, is_query, 3, seed=7).tolist()
    assert len(a) == 3 and set(a.tolist()) <= {1, 2, 3, 4, 5}
    draws = {tuple(select_identities(pids, is_query, 3, seed=s).tolist()) for s in range(10)}
    assert len(draws) > 1


def test_too_many_identities_are_clamped_with_a_warning(tmp_path: Path) -> None:
    feats, pids, camids, is_query = _toy()
    with pytest.warns(RuntimeWarning, match="50 identities asked for but only 5"):
        result = write_tsne(feats, pids, camids, is_query, tmp_path / "t.png", n_ids=50)
    assert result.identities.tolist() == [1, 2, 3, 4, 5]
    assert len(_read_csv(tmp_path / "t.csv")) == 30


def test_bad_requests_are_clear_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    feats, pids, camids, is_query = _toy()
    with pytest.raises(ValueError, match="must be positive"):
        select_identities(pids, is_query, 0)
    with pytest.raises(ValueError, match="no identity"):
        select_identities(pids, np.zeros(len(pids), dtype=bool), 3)
    with pytest.raises(ValueError, match="expected"):
        write_tsne(feats[:-1], pids, camids, is_query, tmp_path / "t.png")
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r'pip install "reid-eval\[plot\]"'):
        write_tsne(feats, pids, camids, is_query, tmp_path / "t.png", n_ids=2)


def test_cli_tsne_end_to_end(
    tiny_checkpoint: Path, synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    code = main([
        "--checkpoint", str(tiny_checkpoint), "--dataset", "synthetic",
        "--data-root", str(synthetic_root), "--batch-size", "32", "--quiet",
        "--output", str(tmp_path / "run" / "metrics.json"), "--tsne", "4",
    ])  # fmt: skip
    assert code == 0
    assert "t-SNE of 4 identities" in capsys.readouterr().out
    rows = _read_csv(tmp_path / "run" / "tsne.csv")
    assert (tmp_path / "run" / "tsne.png").is_file()
    assert len({r["pid"] for r in rows}) == 4 and {r["split"] for r in rows} == {"query", "gallery"}
    assert all(Path(r["path"]).is_file() for r in rows)


def test_cli_tsne_without_matplotlib_fails_before_extracting(
    tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    code = main([
        "--checkpoint", str(tiny_checkpoint), "--dataset", "synthetic",
        "--data-root", str(tmp_path / "no-dataset-here"), "--tsne", "4",
    ])  # fmt: skip
    assert code == 2
    assert 'pip install "reid-eval[plot]"' in capsys.readouterr().err
