"""Cluster Contrast: known answers of its loss, memory and both momentum updates; its options;
an epoch on the tiny config; two CPU ranks keep one memory."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from reid_backbones import load_checkpoint
from reid_train.config import ConfigError, load_config
from reid_train.methods.cluster_contrast import (
    cluster_memory,
    cluster_nce_loss,
    momentum_update,
)
from reid_train.trainer import Trainer

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "synthetic_tiny.yaml"
R = 1 / math.sqrt(2)


def test_cluster_nce_loss_known_value() -> None:
    memory = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    feats = torch.tensor([[3.0, 0.0]])  # normalised to [1, 0]: logits [1, 0] / 0.5 = [2, 0]
    loss = cluster_nce_loss(feats, torch.tensor([0]), memory, temperature=0.5)
    assert float(loss) == pytest.approx(math.log(1 + math.exp(-2.0)))
    # the other target: -log(e^0 / (e^2 + 1))
    loss = cluster_nce_loss(feats, torch.tensor([1]), memory, temperature=0.5)
    assert float(loss) == pytest.approx(math.log(math.exp(2.0) + 1))


def test_cluster_nce_loss_gives_no_gradient_to_the_memory() -> None:
    memory = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    feats = torch.tensor([[1.0, 1.0]], requires_grad=True)
    cluster_nce_loss(feats, torch.tensor([0]), memory, 0.05).backward()
    assert memory.grad is None and feats.grad is not None


def test_cluster_nce_loss_refuses_bad_shapes() -> None:
    with pytest.raises(ValueError, match="share D"):
        cluster_nce_loss(torch.ones(2, 3), torch.tensor([0, 0]), torch.ones(1, 2), 0.05)
    with pytest.raises(ValueError, match="non-empty"):
        cluster_nce_loss(torch.ones(0, 2), torch.tensor([], dtype=torch.long), torch.ones(1, 2), 1)


def test_cluster_memory_is_unit_centroids_without_outliers() -> None:
    feats = torch.tensor([[2.0, 0.0], [0.0, 2.0], [4.0, 4.0], [9.0, -9.0]])
    memory = cluster_memory(feats, torch.tensor([0, 0, 1, -1]), 2)
    torch.testing.assert_close(memory, torch.tensor([[R, R], [R, R]]))


def test_momentum_update_every_instance_in_order() -> None:
    memory = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    momentum_update(memory, torch.tensor([[0.0, 5.0]]), torch.tensor([0]), 0.5)
    torch.testing.assert_close(memory, torch.tensor([[R, R], [0.0, 1.0]]))
    # A cluster seen twice is updated twice, in batch order: [R, R] -> towards [1, 0] ...
    memory = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    momentum_update(memory, torch.tensor([[0.0, 1.0], [1.0, 0.0]]), torch.tensor([0, 0]), 0.5)
    first = torch.tensor([R, R])
    second = 0.5 * first + 0.5 * torch.tensor([1.0, 0.0])
    torch.testing.assert_close(memory[0], second / second.norm())
    torch.testing.assert_close(memory.norm(dim=1), torch.ones(2))


def test_momentum_update_hard_takes_the_least_similar_instance_once() -> None:
    memory = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    feats = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # cluster 0: sims 1, 0
    momentum_update(memory, feats, torch.tensor([0, 0, 1]), 0.5, update="hard")
    torch.testing.assert_close(memory[0], torch.tensor([R, R]))  # the hardest, [0, 1], once
    expected = 0.5 * torch.tensor([0.0, 1.0]) + 0.5 * torch.tensor([R, R])
    torch.testing.assert_close(memory[1], expected / expected.norm())
    torch.testing.assert_close(memory.norm(dim=1), torch.ones(2))


def _tiny(root: Path, *overrides: str):  # noqa: ANN202
    return load_config(TINY, [f"data.data_root={root}", "method.name=cluster_contrast", *overrides])


def test_options_are_typed_completed_and_checked(synthetic_root: Path) -> None:
    cfg = _tiny(synthetic_root, "method.momentum=0.2")
    assert cfg.method.options == {"temperature": 0.05, "momentum": 0.2, "update": "all"}
    assert (cfg.method.momentum, cfg.method.update) == (0.2, "all")
    assert cfg.model.arch == "baseline"
    with pytest.raises(ConfigError, match=r"method.temperature must be > 0"):
        _tiny(synthetic_root, "method.temperature=0")
    with pytest.raises(ConfigError, match=r"key 'method.momentun'.*'method.momentum'"):
        _tiny(synthetic_root, "method.momentun=0.2")
    with pytest.raises(ConfigError, match=r"method.update must be 'all' \| 'hard'"):
        _tiny(synthetic_root, "method.update=soft")
    with pytest.raises(ConfigError, match=r"method.momentum \(a key of cluster_contrast\) is not "
                       "a key of method 'pplr'"):  # fmt: skip
        load_config(TINY, [f"data.data_root={synthetic_root}", "method.momentum=0.2"])


@pytest.mark.parametrize("update", ["all", "hard"])
def test_an_epoch_trains_against_the_memory(
    update: str, synthetic_root: Path, tmp_path: Path
) -> None:
    cfg = _tiny(synthetic_root, "optim.epochs=1", "runtime.plots=false",
                f"method.update={update}")  # fmt: skip
    trainer = Trainer(cfg, tmp_path)
    try:
        assert trainer.net.classifier is None  # no classifier: the memory classifies
        record = trainer.run_epoch(0)
        memory = trainer.method.memory
    finally:
        trainer.close()
    assert record.trained, record.note
    assert set(record.losses) == {"contrast", "triplet"}
    assert memory is not None and memory.shape == (record.num_clusters, trainer.net.feature_dim)
    torch.testing.assert_close(memory.norm(dim=1), torch.ones(record.num_clusters))
    Trainer(cfg, tmp_path / "run").fit()
    assert load_checkpoint(tmp_path / "run" / "last").arch == "baseline"


SCRIPT = """
import sys, torch
from reid_train.config import load_config
from reid_train.trainer import Trainer
cfg = load_config(sys.argv[1], sys.argv[3:])
trainer = Trainer(cfg, sys.argv[2])
trainer.fit()
rank = trainer.acc.process_index
torch.save(trainer.method.memory.cpu(), f"{sys.argv[2]}/memory{rank}.pt")
"""


def test_two_cpu_ranks_hold_the_same_memory(synthetic_root: Path, tmp_path: Path) -> None:
    """``accelerate launch --multi_gpu --num_processes 2`` on the CPU (gloo): after training on
    different batches, both ranks end with the same memory (updates from the gathered batch)."""
    launcher = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    if launcher is None:
        pytest.skip("the accelerate launcher is not installed next to this Python")
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    out = tmp_path / "run"
    cmd = [
        launcher, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", str(script), str(TINY), str(out),
        f"data.data_root={synthetic_root}", "method.name=cluster_contrast", "optim.epochs=1",
        "runtime.plots=false", "method.update=hard",
    ]  # fmt: skip
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    (epoch,) = [json.loads(x) for x in (out / "history.jsonl").read_text().splitlines()]
    assert epoch["trained"] and epoch["batch_digests"][0] != epoch["batch_digests"][1]
    m0, m1 = torch.load(out / "memory0.pt"), torch.load(out / "memory1.pt")
    assert torch.equal(m0, m1)


def test_a_resumed_run_equals_an_uninterrupted_one(synthetic_root: Path, tmp_path: Path) -> None:
    """The memory is rebuilt from the centroids at every epoch start, so a run resumed after
    epoch 0 ends with the weights and metrics of one that never stopped."""
    from reid_backbones import load_safetensors

    whole, split = tmp_path / "whole", tmp_path / "split"
    common = ("runtime.plots=false", "method.update=hard")
    Trainer(_tiny(synthetic_root, "optim.epochs=2", *common), whole).fit()
    Trainer(_tiny(synthetic_root, "optim.epochs=1", *common), split).fit()
    Trainer(_tiny(synthetic_root, "optim.epochs=2", *common), split, resume=True).fit()
    a, _ = load_safetensors(whole / "last" / "model.safetensors")
    b, _ = load_safetensors(split / "last" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    lines = [(p / "metrics.jsonl").read_text().splitlines() for p in (whole, split)]
    assert [json.loads(x) for x in lines[0]] == [json.loads(x) for x in lines[1]]
