"""Controlled label noise (reid_train.label_noise), its config keys, the engine hook and the
synthetic dataset's families."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest

from reid_eval import load_dataset
from reid_eval.datasets import synthetic_families
from reid_train.config import ConfigError, load_config
from reid_train.label_noise import LabelNoiseWarning, NoisyLabels, noisy_labels, relabel
from reid_train.pseudo_labels import ground_truth_labels
from reid_train.trainer import Trainer

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "synthetic_tiny.yaml"


def _random_split(
    seed: int, ids: int = 200, cameras: int = 6
) -> tuple[np.ndarray, np.ndarray, dict[int, int]]:
    """Identities with 2-4 cameras of 2-5 images each, families of 4, a few junk images."""
    rng = np.random.default_rng(seed)
    pids, camids = [], []
    for pid in range(1, ids + 1):
        for cam in rng.choice(cameras, int(rng.integers(2, 5)), replace=False):
            n = int(rng.integers(2, 6))
            pids += [pid] * n
            camids += [int(cam)] * n
    pids += [-1] * 5
    camids += [0] * 5
    order = rng.permutation(len(pids))  # images in no particular order
    families = {pid: (pid - 1) // 4 for pid in range(1, ids + 1)}
    return np.array(pids)[order], np.array(camids)[order], families


def _pids_per_label(result: NoisyLabels, pids: np.ndarray) -> dict[int, set[int]]:
    out: dict[int, set[int]] = {}
    for label, pid in zip(result.labels.tolist(), pids.tolist(), strict=True):
        if label >= 0:
            out.setdefault(label, set()).add(pid)
    return out


def test_rate_zero_is_the_ground_truth_relabelling() -> None:
    pids, camids, families = _random_split(0)
    result = noisy_labels(pids, camids, 0.0, seed=5, families=families)
    np.testing.assert_array_equal(result.labels, ground_truth_labels(pids))
    assert result.labels.dtype == np.int64
    assert (result.merged, result.split, result.outliers, result.rate) == (0, 0, 0, 0.0)
    assert result.images == int((pids >= 0).sum())
    small = noisy_labels(np.array([7, 3, 7, -1, 12]), np.array([0, 1, 0, 0, 2]), 0.0)
    assert small.labels.tolist() == [1, 0, 1, -1, 2]


def test_relabel_known_answer() -> None:
    """The one relabelling helper: values >= 0 to 0..K-1 in sorted order, the others -1."""
    out = relabel(np.array([7, 3, 7, -1, 12, -5]))
    assert out.tolist() == [1, 0, 1, -1, 2, -1] and out.dtype == np.int64
    assert relabel(np.array([-1, -1])).tolist() == [-1, -1]
    assert relabel(np.array([], dtype=np.int64)).tolist() == []


def test_forced_choices_known_answer() -> None:
    """One look-alike pair (pids 1, 2), one identity with two cameras (pid 3): the merge and the
    split are forced; the single outlier is one of the images neither corrupted."""
    pids = np.array([1, 1, 1, 1, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 4, 4, -1])
    cams = np.array([0, 0, 0, 0, 1, 1, 0, 0, 0, 1, 2, 2, 2, 2, 2, 2, 0])
    families = {1: 0, 2: 0, 3: 1, 4: 2}
    # N = 16, rate 4/16: B = 4, a merge and a split budget of one image each. Pid 2 (2 images,
    # fewer than pid 1's 4) joins pid 1 (an overshoot by one); pid 3's camera 1 (1 image, its
    # smallest camera) is split off; the outliers take the rest of B, 4 - 2 - 1 = 1.
    # Labels: pid 1+2 -> 0, pid 3 -> 1, pid 4 -> 2, split -> 3.
    expected = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 3, 2, 2, 2, 2, 2, 2, -1])
    corrupted = np.zeros(len(pids), dtype=bool)
    corrupted[[4, 5, 9]] = True
    outliers_seen = set()
    for seed in range(6):
        result = noisy_labels(pids, cams, 4 / 16, seed=seed, families=families)
        assert (result.merged, result.split, result.outliers) == (2, 1, 1)
        assert (result.merges, result.lookalike_merges, result.splits) == (1, 1, 1)
        assert result.rate == 4 / 16 and result.requested == 4 / 16
        (out,) = np.flatnonzero((result.labels == -1) & (pids >= 0))
        assert not corrupted[out]  # an outlier is never an image corrupted otherwise
        outliers_seen.add(int(out))
        want = expected.copy()
        want[out] = -1
        np.testing.assert_array_equal(result.labels, want)
    assert len(outliers_seen) > 1  # the outlier is drawn by the seed
    # B = 3: the merge's overshoot leaves no outlier; the realised rate is still exactly B / N
    result = noisy_labels(pids, cams, 3 / 16, seed=0, families=families)
    assert (result.merged, result.split, result.outliers, result.rate) == (2, 1, 0, 3 / 16)


def test_the_smaller_identity_joins_and_camera_ties_are_seeded() -> None:
    pids = np.array([5, 5, 5, 9, 9, 9, 9, 9, 9, 7, 7])
    cams = np.array([0, 0, 1, 2, 2, 2, 2, 2, 2, 0, 1])
    # N = 11, B = round(6.6) = 7, budgets of 2 merged and 2 split. Pid 5 (3 images) joins pid 9
    # (6 images); pid 7 has one image per camera, so only 1 is split (no other candidate); the
    # outliers take the rest, 7 - 3 - 1 = 3.
    result = noisy_labels(pids, cams, 0.6, seed=0, families={5: 0, 9: 0, 7: 1})
    assert result.merges == result.lookalike_merges == 1 and result.merged == 3
    assert (result.split, result.outliers) == (1, 3)
    (joined,) = set(result.labels[pids == 5].tolist())  # corrupted: never an outlier too
    assert joined >= 0 and set(result.labels[pids == 9].tolist()) <= {joined, -1}
    # pid 7 has two cameras of one image each: the tie goes either way, by the seed
    moved = set()
    for seed in range(12):
        r = noisy_labels(pids, cams, 0.6, seed=seed, families={5: 0, 9: 0, 7: 1})
        assert r.splits == 1 and r.split == 1
        # the split image is corrupted, never an outlier; if both remain, its label is the
        # newer (larger) one
        moved.add(int(cams[9 + int(np.argmax(r.labels[9:]))]))
    assert moved == {0, 1}


@pytest.mark.parametrize("rate", [0.05, 0.2, 0.4])
def test_realised_rate_is_the_budget(rate: float) -> None:
    pids, camids, families = _random_split(1)
    n = int((pids >= 0).sum())
    with warnings.catch_warnings():
        warnings.simplefilter("error", LabelNoiseWarning)
        result = noisy_labels(pids, camids, rate, seed=3, families=families)
    budget = math.floor(rate * n + 0.5)  # halves up, as the definition says
    third = budget // 3
    largest_identity = int(np.bincount(pids[pids >= 0]).max())
    assert third <= result.merged < third + largest_identity
    assert third <= result.split < third + 5  # at most 5 images per (identity, camera)
    assert result.outliers == budget - result.merged - result.split  # absorbs the overshoots
    assert result.rate == (result.merged + result.split + result.outliers) / n == budget / n
    # labels are 0..K'-1, junk stays -1, and a label holds at most the two merged identities
    kept = result.labels[result.labels >= 0]
    assert set(kept.tolist()) == set(range(int(kept.max()) + 1))
    assert (result.labels[pids < 0] == -1).all()
    groups = _pids_per_label(result, pids)
    assert all(len(g) <= 2 for g in groups.values())
    mixed = [g for g in groups.values() if len(g) == 2]
    assert len(mixed) == result.merges
    # the look-alike pairs do not run out here: every merge is within a family
    assert result.lookalike_merges == result.merges
    assert all(len({families[p] for p in g}) == 1 for g in mixed)


def test_deterministic_per_seed_and_seeds_differ() -> None:
    pids, camids, families = _random_split(2)
    a = noisy_labels(pids, camids, 0.3, seed=4, families=families)
    b = noisy_labels(pids, camids, 0.3, seed=4, families=families)
    c = noisy_labels(pids, camids, 0.3, seed=5, families=families)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.summary() == b.summary()
    assert not np.array_equal(a.labels, c.labels)


def test_without_families_merges_random_pairs() -> None:
    pids, camids, families = _random_split(3)
    result = noisy_labels(pids, camids, 0.3, seed=0, families=None)
    assert result.merges > 0 and result.lookalike_merges == 0
    mixed = [g for g in _pids_per_label(result, pids).values() if len(g) == 2]
    assert len(mixed) == result.merges
    # 200 identities in 50 families: random pairs are rarely look-alikes
    assert sum(len({families[p] for p in g}) == 1 for g in mixed) < len(mixed)


def test_lookalike_pairs_running_out_are_not_topped_up_with_random_pairs() -> None:
    # one family of 4 (pids missing from the mapping are families of one): 2 merges at most; the
    # splits take over what the merges fell short of, and the total is still the budget
    pids, camids, _ = _random_split(3)
    n = int((pids >= 0).sum())
    budget = math.floor(0.3 * n + 0.5)
    family = {1: 0, 2: 0, 3: 0, 4: 0}
    result = noisy_labels(pids, camids, 0.3, seed=0, families=family)
    assert result.merges == result.lookalike_merges == 2
    mixed = [g for g in _pids_per_label(result, pids).values() if len(g) == 2]
    assert len(mixed) == 2 and all(g <= set(family) for g in mixed)
    assert result.merged < budget // 3
    assert budget // 3 + (budget // 3 - result.merged) <= result.split
    assert result.rate == budget / n


@pytest.mark.parametrize(
    ("args", "kwargs", "words"),
    [
        (([1, 2], [0, 1], 1.0), {}, ["rate must be a number in [0, 1)", "0.2 for 20 %"]),
        (([1, 2], [0, 1], -0.1), {}, ["rate must be"]),
        (([1, 2], [0, 1], float("nan")), {}, ["rate must be"]),
        (([1, 2], [0, 1], True), {}, ["rate must be"]),
        (([1, 2, 3], [0, 1], 0.1), {}, ["one entry per image", "(3,)", "(2,)"]),
        (([1.5, 2.0], [0, 1], 0.1), {}, ["pids must be integers"]),
        (([-1, -1], [0, 1], 0.1), {}, ["no image has an identity"]),
        (([1, 2], [0, 1], 0.1), {"seed": -1}, ["seed must be a non-negative integer"]),
    ],
)
def test_validation_errors(args: tuple, kwargs: dict, words: list[str]) -> None:
    pids, cams, rate = args
    with pytest.raises(ValueError) as info:
        noisy_labels(np.array(pids), np.array(cams), rate, **kwargs)
    for word in words:
        assert word in str(info.value)


def test_missing_splits_are_made_up_by_outliers_and_an_overshoot_warns() -> None:
    # every identity in one camera: nothing to split; the outliers take the split budget too
    pids = np.repeat(np.arange(1, 31), 4)
    cams = np.repeat(np.arange(30) % 3, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error", LabelNoiseWarning)
        result = noisy_labels(pids, cams, 0.3, seed=0)
    assert result.split == result.splits == 0
    assert result.merged == 12 and result.outliers == 24
    assert result.rate == 0.3 and result.requested == 0.3
    assert "30.0 % of 120 images corrupted (requested 30.0 %)" in result.describe()
    # a budget of 3 images against identities of 10: the one merge overshoots the whole budget
    pids = np.repeat([1, 2], 10)
    cams = np.tile([0, 1], 10)
    with pytest.warns(LabelNoiseWarning, match=r"15\.0 % requested but 50\.0 % realised"):
        result = noisy_labels(pids, cams, 0.15, seed=0, families={1: 0, 2: 0})
    assert (result.merged, result.split, result.outliers) == (10, 0, 0)


# ---------------------------------------------------------------------------- config keys


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (["cluster.labels=noisy_ground_truth", "cluster.label_noise=1.0"], ["[0, 1)"]),
        (["cluster.label_noise=0.2"], ["cluster.labels=noisy_ground_truth", "'dbscan'"]),
        (["cluster.labels=ground_truth", "cluster.label_noise=0.2"], ["'ground_truth'"]),
        (["cluster.labels=noisy_ground_truth", "cluster.label_noise_seed=-1"], ["seed"]),
    ],
)
def test_config_validation(overrides: list[str], words: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(TINY, overrides)
    for word in words:
        assert word in str(info.value)


def test_config_accepts_noisy_ground_truth() -> None:
    cfg = load_config(
        TINY,
        [
            "cluster.labels=noisy_ground_truth",
            "cluster.label_noise=0.2",
            "cluster.label_noise_seed=3",
        ],
    )
    assert (cfg.cluster.labels, cfg.cluster.label_noise, cfg.cluster.label_noise_seed) == (
        "noisy_ground_truth",
        0.2,
        3,
    )
    # rate 0 is allowed in noisy_ground_truth mode (the ground truth itself)
    load_config(TINY, ["cluster.labels=noisy_ground_truth"])


# ---------------------------------------------------------------------------- synthetic families


def test_synthetic_families(synthetic_root: Path, tmp_path: Path) -> None:
    families = synthetic_families(synthetic_root)
    meta = json.loads((synthetic_root / "synthetic.json").read_text())
    assert families == {i["pid"]: i["family"] for i in meta["identities"]}
    assert sorted(families) == list(range(1, 25))  # 12 train + 12 test identities
    sizes = np.bincount(list(families.values()))
    assert sizes.max() == meta["config"]["family_size"] and sizes.min() >= 1
    with pytest.raises(FileNotFoundError, match="reid-eval make-synthetic"):
        synthetic_families(tmp_path)
    (tmp_path / "synthetic.json").write_text('{"identities": [{"pid": 1}]}')
    with pytest.raises(ValueError, match="family"):
        synthetic_families(tmp_path)


# ---------------------------------------------------------------------------- the engine


def _tiny(synthetic_root: Path, *overrides: str):  # noqa: ANN202
    return load_config(TINY, [f"data.data_root={synthetic_root}", "runtime.plots=false",
                              "runtime.tensorboard=false", *overrides])  # fmt: skip


def test_noise_zero_trains_on_the_ground_truth(synthetic_root: Path, tmp_path: Path) -> None:
    trainer = Trainer(_tiny(synthetic_root, "cluster.labels=noisy_ground_truth"), tmp_path)
    try:
        noisy = trainer.labeler.noisy()
        np.testing.assert_array_equal(noisy.labels, ground_truth_labels(trainer.train_pids))
        assert trainer.labeler.noisy() is noisy  # computed once
    finally:
        trainer.close()


def test_a_noisy_run_trains_pplr_on_the_corrupted_labels(
    synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _tiny(synthetic_root, "method.name=pplr", "optim.epochs=1",
                "cluster.labels=noisy_ground_truth", "cluster.label_noise=0.4",
                "cluster.label_noise_seed=2")  # fmt: skip
    records = Trainer(cfg, tmp_path).fit()
    assert len(records) == 1 and 0.0 <= records[0]["mAP"] <= 1.0
    (epoch,) = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert epoch["trained"], epoch["note"]
    q = epoch["quality"]
    # the labels the epoch trained on are those of noisy_labels, with the same seed and families
    train = load_dataset("synthetic", synthetic_root).train
    expected = noisy_labels(
        np.array([r.pid for r in train]), np.array([r.camid for r in train]), 0.4, seed=2,
        families=synthetic_families(synthetic_root),
    )  # fmt: skip
    assert q["label_noise"] == pytest.approx(expected.rate) and expected.rate > 0.3
    assert q["pairwise_precision"] < 1.0 and q["pairwise_recall"] < 1.0  # merges and splits
    assert epoch["outliers"] == expected.outliers
    assert epoch["clusters"] == int(expected.labels.max()) + 1
    assert len(epoch["agreement"]) == cfg.model.num_parts  # PPLR's cross agreement ran
    assert records[0]["pseudo_labels"]["label_noise"] == q["label_noise"]
    out = capsys.readouterr().out
    assert out.count("cluster.labels=noisy_ground_truth:") == 1 and "look-alike" in out
