"""The trainer on the tiny synthetic config (CPU): every method, resume, failures."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from reid_backbones import load_checkpoint, load_safetensors
from reid_train.cli import main
from reid_train.config import ConfigError, load_config
from reid_train.trainer import Trainer, TrainingDivergedError, train

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "synthetic_tiny.yaml"


def tiny(synthetic_root: Path, *overrides: str):  # noqa: ANN201
    return load_config(TINY, [f"data.data_root={synthetic_root}", *overrides])


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("method", ["baseline", "pplr", "pplr_cam", "dcls", "cluster_contrast"])
def test_one_epoch_of_each_method(method: str, synthetic_root: Path, tmp_path: Path) -> None:
    cfg = tiny(synthetic_root, f"method.name={method}", "optim.epochs=1")
    records = Trainer(cfg, tmp_path).fit()
    assert len(records) == 1 and records[0]["epoch"] == 0
    assert 0.0 <= records[0]["mAP"] <= 1.0 and 0.0 <= records[0]["rank1"] <= 1.0
    (epoch,) = _lines(tmp_path / "history.jsonl")
    assert epoch["trained"], epoch["note"]
    expected = {
        "baseline": {"global_ce", "triplet"},
        "pplr": {"global_ce", "part_ce", "triplet"},
        "pplr_cam": {"global_ce", "part_ce", "triplet", "camera"},
        "dcls": {"global_ce", "local_ce", "triplet"},
        "cluster_contrast": {"contrast", "triplet"},
    }[method]
    assert set(epoch["losses"]) == expected
    assert all(v == v for v in epoch["losses"].values())  # finite numbers, not NaN
    assert set(epoch["times"]) == {"extract", "cluster", "train", "eval"}
    assert 0.0 <= epoch["quality"]["nmi"] <= 1.0
    metrics = _lines(tmp_path / "metrics.jsonl")
    assert {"epoch", "mAP", "rank1"} <= set(metrics[0])
    # The pseudo-label quality of the epoch is in its evaluation line too (issue: plots).
    labels = metrics[0]["pseudo_labels"]
    assert labels["clusters"] == epoch["clusters"] and labels["nmi"] == epoch["quality"]["nmi"]
    if method in ("pplr", "pplr_cam"):
        assert len(epoch["agreement"]) == cfg.model.num_parts and labels["agreement"]
        assert all(0.0 <= a <= 1.0 for a in epoch["agreement"]) and "beta" not in epoch
    if method == "dcls":  # mean beta per region (Eq. 4-5), in (0, 1]
        assert len(epoch["beta"]) == cfg.model.num_regions and labels["beta"] == epoch["beta"]
        assert all(0.0 < b <= 1.0 for b in epoch["beta"]) and "agreement" not in epoch
    # The run leaves its plots (one PNG per concern).
    plots = {p.name for p in (tmp_path / "plots").glob("*.png")}
    assert {"metrics.png", "clusters.png", "quality.png", "losses.png", "times.png"} <= plots
    assert ("refinement.png" in plots) == (method not in ("baseline", "cluster_contrast"))
    # reid-eval can read both checkpoints; the resolved config is in the run folder.
    for name in ("best", "last"):
        assert load_checkpoint(tmp_path / name).arch == cfg.model.arch
    assert load_config(tmp_path / "config.yaml").method.name == method


def test_resumed_run_equals_an_uninterrupted_one(synthetic_root: Path, tmp_path: Path) -> None:
    whole, split = tmp_path / "whole", tmp_path / "split"
    Trainer(tiny(synthetic_root, "optim.epochs=2"), whole).fit()
    Trainer(tiny(synthetic_root, "optim.epochs=1"), split).fit()
    Trainer(tiny(synthetic_root, "optim.epochs=2"), split, resume=True).fit()
    a, _ = load_safetensors(whole / "last" / "model.safetensors")
    b, _ = load_safetensors(split / "last" / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ"
    assert _lines(whole / "metrics.jsonl") == _lines(split / "metrics.jsonl")


def test_all_outliers_epoch_is_skipped_with_a_warning(synthetic_root: Path, tmp_path: Path) -> None:
    cfg = tiny(synthetic_root, "cluster.eps=0.001", "cluster.min_samples=50", "optim.epochs=1")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Trainer(cfg, tmp_path).fit()
    messages = [str(w.message) for w in caught if w.category is RuntimeWarning]
    assert any("every sample is an outlier" in m for m in messages)
    assert any("no epoch trained" in m for m in messages)
    (epoch,) = _lines(tmp_path / "history.jsonl")
    assert not epoch["trained"] and epoch["clusters"] == 0


def test_too_few_clusters_for_the_batch_skips_the_epoch(
    synthetic_root: Path, tmp_path: Path
) -> None:
    cfg = tiny(synthetic_root, "data.batch_size=400", "data.num_instances=4", "optim.epochs=1")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Trainer(cfg, tmp_path).fit()
    messages = [str(w.message) for w in caught]
    assert any("identities per batch: epoch skipped" in m for m in messages)
    assert any("no epoch trained" in m for m in messages)


def test_nan_loss_stops_with_a_message_and_keeps_the_checkpoint(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import reid_train.methods.base as base_module

    trainer = Trainer(tiny(synthetic_root, "optim.epochs=2"), tmp_path)
    real = base_module.soft_triplet_loss

    def nan_in_epoch_one(features, targets, margin=0.0):  # noqa: ANN001, ANN202
        loss = real(features, targets, margin)
        return loss * float("nan") if trainer_epoch[0] == 1 else loss

    trainer_epoch = [0]
    original_run = trainer.run_epoch

    def run_epoch(epoch: int):  # noqa: ANN202
        trainer_epoch[0] = epoch
        return original_run(epoch)

    monkeypatch.setattr(base_module, "soft_triplet_loss", nan_in_epoch_one)
    monkeypatch.setattr(trainer, "run_epoch", run_epoch)
    with pytest.raises(TrainingDivergedError, match="NaN/inf at epoch 1"):
        trainer.fit()
    state = json.loads((tmp_path / "state" / "trainer.json").read_text())
    assert state["epoch"] == 0
    assert load_checkpoint(tmp_path / "last").arch == "pplr"


def test_cli_unknown_key_and_missing_resume(
    synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    code = main(["--config", str(TINY), f"data.data_root={synthetic_root}", "optim.lrr=1"])
    assert code == 2
    err = capsys.readouterr().err
    assert "optim.lrr" in err and "optim.lr" in err
    code = main(["--config", str(TINY), "--output-dir", str(tmp_path / "none"), "--resume",
                 f"data.data_root={synthetic_root}"])  # fmt: skip
    assert code == 2
    assert "no saved training state" in capsys.readouterr().err


def test_two_cpu_processes_train_on_different_batches(synthetic_root: Path, tmp_path: Path) -> None:
    """``accelerate launch --multi_gpu --num_processes 2`` on the CPU (gloo): two real ranks."""
    import os
    import shutil
    import subprocess
    import sys

    launcher = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    if launcher is None:
        pytest.skip("the accelerate launcher is not installed next to this Python")
    cmd = [
        launcher, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "reid_train",
        "--config", str(TINY), "--output-dir", str(tmp_path), f"data.data_root={synthetic_root}",
        "optim.epochs=1", "data.global_batch_size=16",
    ]  # fmt: skip
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    # The global batch is printed at start: 16 = 2 processes x 8 (data.global_batch_size).
    assert "global batch 16 = 2 process(es) x 8 images" in done.stdout + done.stderr
    assert load_config(tmp_path / "config.yaml").data.batch_size == 8
    (epoch,) = _lines(tmp_path / "history.jsonl")
    assert epoch["trained"]
    digests = epoch["batch_digests"]
    assert len(digests) == 2 and digests[0] != digests[1]
    assert _lines(tmp_path / "metrics.jsonl")[0]["epoch"] == 0


def test_learning_rate_schedule_known_values() -> None:
    """Linear warm-up from warmup_factor, then x gamma at each milestone (per epoch)."""
    from reid_train.build import build_scheduler
    from reid_train.config import config_from_dict

    cfg = config_from_dict(
        {
            "method": {"name": "baseline"},
            "optim": {
                "lr": 1.0, "milestones": [3, 5], "gamma": 0.1, "warmup_epochs": 2,
                "warmup_factor": 0.2, "epochs": 6,
            },
        }
    )  # fmt: skip
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = build_scheduler(optimizer, cfg)
    seen = []
    for _ in range(6):
        seen.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    # epoch 0: 0.2; epoch 1: halfway from 0.2 to 1 = 0.6; 2: 1; 3-4: 0.1; 5: 0.01
    assert seen == pytest.approx([0.2, 0.6, 1.0, 0.1, 0.1, 0.01])


def test_the_former_engine_module_still_imports() -> None:
    """reid_train.engine was the trainer's module until 0.4; it re-exports what it held
    (camera_debiased moved to reid_clustering, tests/clustering/test_centroids.py)."""
    import reid_clustering
    import reid_train.engine as engine_module
    import reid_train.trainer as trainer_module

    assert engine_module.camera_debiased is reid_clustering.camera_debiased
    assert engine_module.Trainer is trainer_module.Trainer
    assert engine_module.train is trainer_module.train
    assert engine_module.TrainingDivergedError is trainer_module.TrainingDivergedError


def test_supervised_pretraining_then_init_from_its_checkpoint(
    synthetic_root: Path, tmp_path: Path
) -> None:
    """cluster.labels=ground_truth trains on the true identities; model.pretrained then takes
    that run's checkpoint folder (its backbone), the source-pretraining workflow."""
    source = tmp_path / "source"
    Trainer(tiny(synthetic_root, "method.name=baseline", "optim.epochs=2",
                 "cluster.labels=ground_truth", "runtime.eval_every=0",
                 "runtime.save_every=0"), source).fit()  # fmt: skip
    # eval_every=0 / save_every=0: evaluated and saved after the last epoch only
    assert [m["epoch"] for m in _lines(source / "metrics.jsonl")] == [1]
    _, epoch = _lines(source / "history.jsonl")
    assert epoch["quality"]["ari"] == 1.0 and epoch["outliers"] == 0
    assert epoch["clusters"] == epoch["quality"]["true_identities"]
    target = Trainer(
        tiny(synthetic_root, f"model.pretrained={source / 'last'}", "runtime.tensorboard=false"),
        tmp_path / "target",
    )
    saved = load_safetensors(source / "last" / "model.safetensors")[0]
    for key, value in target.net.backbone.state_dict().items():
        torch.testing.assert_close(value, saved[f"backbone.{key}"])


def test_tensorboard_events_when_asked(synthetic_root: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason="the dev environment installs tensorboard")
    cfg = tiny(synthetic_root, "optim.epochs=1", "runtime.tensorboard=true", "runtime.plots=false")
    Trainer(cfg, tmp_path).fit()
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def test_ground_truth_labels_relabel_and_reject_unlabelled_splits() -> None:
    from reid_train.pseudo_labels import ground_truth_labels

    labels = ground_truth_labels(np.array([7, 3, 7, -1, 12]))
    assert labels.tolist() == [1, 0, 1, -1, 2]  # sorted ids -> 0..K-1, junk -> outlier
    with pytest.raises(ConfigError, match="no identity labels"):
        ground_truth_labels(np.array([-1, -1]))


def test_camera_loss_uses_the_post_bnneck_features_of_its_proxies(
    synthetic_root: Path, tmp_path: Path
) -> None:
    """The camera proxies are means of the extracted (post-BNNeck) features, so the camera loss
    compares the batch's post-BNNeck features with them even when the triplet takes the pooled
    ones (``method.triplet_features=pooled``)."""
    from types import SimpleNamespace

    from reid_train.epoch import EpochRecord

    cfg = tiny(synthetic_root, "method.name=pplr_cam", "method.triplet_features=pooled")
    trainer = Trainer(cfg, tmp_path)
    try:
        n, p, d, k = 4, cfg.model.num_parts, 8, 2
        out = SimpleNamespace(
            global_logits=torch.zeros(n, k), part_logits=torch.zeros(n, p, k),
            global_bn_features=torch.full((n, d), 1.0), global_features=torch.full((n, d), 2.0),
            part_features=torch.full((n, p, d), 3.0),
            part_pooled_features=torch.full((n, p, d), 4.0),
        )  # fmt: skip
        seen: list[float] = []
        trainer.method._loss = lambda feats, *rest: (
            seen.append(float(feats[0, 0])) or feats.sum() * 0
        )
        batch = {"index": torch.arange(n), "camid": torch.tensor([0, 1, 0, 1])}
        record = EpochRecord(epoch=0, num_clusters=k, tensors={"agreement": torch.ones(n, p)})
        trainer.method.proxies = {"global": None, "parts": [None] * p}
        terms = trainer.method.training_step(out, torch.tensor([0, 0, 1, 1]), batch, record)
        assert "camera" in terms
        assert seen == [1.0] + [3.0] * p  # post-BNNeck global, then post-BNNeck parts
    finally:
        trainer.close()


def test_resume_reads_the_runs_own_config(
    synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """``reid-train --resume RUN_DIR [key=value ...]``: no --config; the run's config.yaml with
    the overrides a resume allows (train longer); the initial weights may be dropped."""
    source, run = tmp_path / "source", tmp_path / "run"
    Trainer(tiny(synthetic_root, "method.name=baseline", "optim.epochs=1",
                 "cluster.labels=ground_truth", "runtime.plots=false"), source).fit()  # fmt: skip
    first = ["--config", str(TINY), "--output-dir", str(run), f"data.data_root={synthetic_root}",
             "optim.epochs=1", "runtime.plots=false",
             f"model.pretrained={source / 'last'}"]  # fmt: skip
    assert main(first) == 0
    capsys.readouterr()
    # model.pretrained=null: the trained weights come from state/, so the resume is allowed.
    assert main(["--resume", str(run), "optim.epochs=2", "model.pretrained=null"]) == 0
    out = capsys.readouterr()
    assert "resumed from" in out.out + out.err
    assert [h["epoch"] for h in _lines(run / "history.jsonl")] == [0, 1]
    assert load_config(run / "config.yaml").optim.epochs == 2
    # "--resume key=value" is an override, not a folder; a folder without config.yaml is refused.
    assert main(["--resume", str(tmp_path / "nothing")]) == 2
    assert "no config.yaml there" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--resume", "optim.epochs=3"])  # neither --config nor a run folder
    assert "--config is required" in capsys.readouterr().err


def test_train_log_holds_every_line_of_a_batch_job(
    synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """RUN_DIR/train.log: the run's summary, its global batch, one line per log_every
    iterations (losses, lr, throughput), the epoch and evaluation lines and the warnings; with
    no terminal the iteration lines reach the console too."""
    cfg = tiny(synthetic_root, "optim.epochs=1", "runtime.log_every=1", "runtime.plots=false",
               "cluster.eps=0.001", "cluster.min_samples=50")  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Trainer(cfg, tmp_path / "skipped").fit()  # an epoch skipped: its warning is logged
    log = (tmp_path / "skipped" / "train.log").read_text()
    assert "WARNING epoch 0: every sample is an outlier" in log
    Trainer(tiny(synthetic_root, "optim.epochs=1", "runtime.log_every=1", "runtime.plots=false"),
            tmp_path / "run").fit()  # fmt: skip
    lines = (tmp_path / "run" / "train.log").read_text().splitlines()
    assert "reid-train: method pplr (pplr, resnet18) on synthetic" in lines[0]
    assert "global batch 8 = 1 process(es) x 8 images" in lines[1]
    iterations = [x for x in lines if " iter " in x]
    assert len(iterations) == cfg.optim.iters  # log_every=1
    assert "epoch 0 iter 1/2: global_ce " in iterations[0] and "images/s" in iterations[0]
    assert any("clusters" in x and "outliers" in x for x in lines)  # the epoch line
    assert any("mAP" in x and "Rank-1" in x for x in lines)  # the evaluation line
    assert "epoch 0 iter 2/2" in capsys.readouterr().out  # no terminal: printed too


def test_trackers_are_checked_before_the_run_folder_and_get_every_scalar(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """runtime.log_with opens Accelerate's tracker classes: a missing package is refused before
    anything is written; an installed one gets the config once and the epoch's scalars."""
    import accelerate.tracking as tracking

    with pytest.raises(ConfigError, match="not a tracker of Accelerate"):
        tiny(synthetic_root, "runtime.log_with=[tensorbored]")
    monkeypatch.setattr(tracking, "get_available_trackers", lambda: [])
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"log_with names 'wandb' .* pip install wandb"):
        Trainer(tiny(synthetic_root, "runtime.log_with=[wandb]"), out)
    with pytest.raises(ConfigError, match=r"tensorboard=true .* \"reid-train\[tensorboard\]\""):
        Trainer(tiny(synthetic_root, "runtime.tensorboard=true"), out)
    assert not out.exists()

    calls: list[tuple] = []

    class FakeTracker(tracking.GeneralTracker):
        name, requires_logging_directory = "wandb", False

        def __init__(self, run_name: str, **kwargs: object) -> None:
            super().__init__()
            calls.append(("init", run_name, kwargs))

        @property
        def tracker(self) -> None:
            return None

        def start(self) -> None:
            calls.append(("start",))

        def store_init_configuration(self, values: dict) -> None:
            calls.append(("config", values))

        def log(self, values: dict, step: int | None = None, **kwargs: object) -> None:
            calls.append(("log", step, values))

        def finish(self) -> None:
            calls.append(("finish",))

    monkeypatch.setattr(tracking, "get_available_trackers", lambda: ["wandb"])
    monkeypatch.setitem(tracking.LOGGER_TYPE_TO_CLASS, "wandb", FakeTracker)
    cfg = tiny(synthetic_root, "optim.epochs=1", "runtime.log_with=[wandb]", "runtime.plots=false",
               "runtime.tensorboard=false")  # fmt: skip
    train(cfg, out)
    assert calls[0] == ("init", "reid-train", {"name": "run"}) and calls[1] == ("start",)
    assert calls[2][0] == "config" and calls[2][1]["method.name"] == "pplr"
    logged = [c for c in calls if c[0] == "log"]
    assert any({"loss/global_ce", "pseudo_labels/clusters", "lr"} <= set(c[2]) for c in logged)
    assert any("eval/mAP" in c[2] for c in logged) and calls[-1] == ("finish",)
    assert {c[1] for c in logged} == {0}  # the epoch is the step
