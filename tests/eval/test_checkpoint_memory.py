"""``evaluate_checkpoint`` ranks chunk by chunk: bounded memory, the dense computation's numbers."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

import reid_eval.checkpoint_eval as checkpoint_eval
import reid_eval.evaluator as evaluator
from reid_backbones import read_checkpoint_config
from reid_eval import (
    ImageRecord,
    ReIDDataset,
    distance_rows,
    evaluate_checkpoint,
    evaluate_rank,
    pairwise_distance,
)
from reid_eval.cli import main

Q, G, D, CHUNK = 1024, 6000, 64, 256


def _clustered(rng: np.random.Generator, pids: np.ndarray, centres: np.ndarray) -> torch.Tensor:
    noisy = centres[pids] + 1.5 * rng.normal(size=(len(pids), centres.shape[1]))
    return torch.nn.functional.normalize(torch.from_numpy(noisy.astype(np.float32)), dim=1)


@pytest.fixture(scope="module")
def case() -> dict:
    """Random query/gallery features of 300 identities (distractors: pid 0) and 6 cameras."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(300, D))
    q_pids, g_pids = rng.integers(1, 300, Q), rng.integers(0, 300, G)
    q_cams, g_cams = rng.integers(0, 6, Q), rng.integers(0, 6, G)
    return {
        "qf": _clustered(rng, q_pids, centres),
        "gf": _clustered(rng, g_pids, centres),
        "query": _records("q", q_pids, q_cams),
        "gallery": _records("g", g_pids, g_cams),
    }


def _records(prefix: str, pids: np.ndarray, camids: np.ndarray) -> list[ImageRecord]:
    return [
        ImageRecord(f"{prefix}{i}.jpg", int(p), int(c))
        for i, (p, c) in enumerate(zip(pids, camids, strict=True))
    ]


class _Features:
    """Stands in for FeatureExtractor: the case's features instead of a model's (the test is
    about what happens after extraction)."""

    features: dict[int, torch.Tensor] = {}

    def __init__(self, checkpoint: Path, *args: object, **kwargs: object) -> None:
        self.config = read_checkpoint_config(checkpoint)

    def __call__(self, paths: list[str], progress: object = False) -> torch.Tensor:
        return self.features[len(paths)]


def test_checkpoint_evaluation_is_chunked_and_exact(
    case: dict, tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dataset = ReIDDataset("random", tmp_path, case["query"][:1], case["query"], case["gallery"])
    _Features.features = {Q: case["qf"], G: case["gf"]}
    monkeypatch.setattr(checkpoint_eval, "FeatureExtractor", _Features)

    def no_dense(*args: object, **kwargs: object) -> None:
        raise AssertionError("the dense [Q, G] matrix was computed")

    monkeypatch.setattr(checkpoint_eval, "pairwise_distance", no_dense)
    chunks: list[tuple[int, int]] = []
    real_chunks = evaluator.iter_distance_chunks

    def recorded(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        for start, dist in real_chunks(*args, **kwargs):
            chunks.append(tuple(dist.shape))
            yield start, dist

    monkeypatch.setattr(evaluator, "iter_distance_chunks", recorded)

    tracemalloc.start()
    try:
        evaluation = evaluate_checkpoint(
            tiny_checkpoint, dataset, device="cpu", progress=False, chunk_size=CHUNK
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    # Distances came in Q / CHUNK blocks of CHUNK x G, never the whole matrix ...
    assert chunks == [(CHUNK, G)] * (Q // CHUNK)
    assert "plain" not in evaluation.distances
    # ... and the ranking's numpy memory stayed O(CHUNK x G): under three float32 chunks
    # (a dense evaluation of this case peaks at ~53 MiB, over twice the [Q, G] float32 matrix).
    chunk_bytes = CHUNK * G * 4
    assert peak < 3 * chunk_bytes < Q * G * 4, f"peak {peak / 2**20:.1f} MiB"

    dense = evaluate_rank(
        pairwise_distance(case["qf"], case["gf"]).numpy(),
        [r.pid for r in case["query"]],
        [r.pid for r in case["gallery"]],
        [r.camid for r in case["query"]],
        [r.camid for r in case["gallery"]],
    )
    result = evaluation.results["plain"]
    assert result == dense  # every field, bit for bit
    assert 0.05 < result.mAP < 0.95 and result.num_valid_queries > 0.9 * Q


def test_default_chunk_is_bounded_at_msmt17_size() -> None:
    """The automatic chunk of an MSMT17-size gallery (82,161 images) is a fraction of the
    11,659 x 82,161 matrix (3.8 GB in float32): 768 rows, 252 MB."""
    rows = max(256, evaluator.AUTO_CHUNK_ELEMENTS // 82_161 // 256 * 256)
    assert rows == 768 and rows * 82_161 * 4 < 0.07 * 11_659 * 82_161 * 4


def test_distance_rows_equal_the_matrix_rows(case: dict) -> None:
    qf, gf = case["qf"][:600], case["gf"][:700]
    full = pairwise_distance(qf, gf)
    rows = [599, 3, 300, 3, -1, 256, 255]
    assert torch.equal(distance_rows(qf, gf, rows), full[rows])
    assert distance_rows(qf, gf, []).shape == (0, 700)
    cosine = pairwise_distance(qf, gf, "cosine")
    assert torch.equal(distance_rows(qf, gf, np.array([5, 598]), "cosine"), cosine[[5, 598]])
    with pytest.raises(ValueError, match=r"query indices in \[0, 600\)"):
        distance_rows(qf, gf, [600])


def test_cli_visualises_without_the_dense_matrix(
    tiny_checkpoint: Path,
    synthetic_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_dense(*args: object, **kwargs: object) -> None:
        raise AssertionError("the dense [Q, G] matrix was computed")

    monkeypatch.setattr(checkpoint_eval, "pairwise_distance", no_dense)
    code = main([
        "--checkpoint", str(tiny_checkpoint), "--dataset", "synthetic", "--data-root",
        str(synthetic_root), "--visualize", "2", "--visualize-dir", str(tmp_path), "--quiet",
        "--device", "cpu",
    ])  # fmt: skip
    assert code == 0
    assert len(list((tmp_path / "ranked_lists").glob("query_*.png"))) == 2
