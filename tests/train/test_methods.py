"""The recipe registry: every built-in method is one module of reid_train/methods, the trainer
and the config name none, and a new recipe is one class plus one config."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from reid_refine import label_smoothing_loss
from reid_train import methods
from reid_train.config import METHOD_ARCH, ConfigError, load_config
from reid_train.epoch import EpochRecord
from reid_train.methods import Method
from reid_train.trainer import Trainer

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "synthetic_tiny.yaml"
SRC = ROOT / "packages" / "reid-train" / "src" / "reid_train"
#: the modules every method goes through: none of them may name one
SHARED = ["trainer.py", "build.py", "hooks.py", "pseudo_labels.py", "epoch.py", "reporting.py"]


def test_built_in_recipes() -> None:
    assert methods.names() == ["baseline", "dcls", "pplr", "pplr_cam", "cluster_contrast"]
    assert {name: methods.get(name).arch for name in methods.names()} == METHOD_ARCH
    assert not methods.get("cluster_contrast").uses_classifiers
    assert methods.get("pplr").uses_classifiers
    with pytest.raises(KeyError, match="unknown method 'spcl'; known: baseline"):
        methods.get("spcl")


def test_the_trainer_names_no_method() -> None:
    for module in SHARED:
        source = (SRC / module).read_text()
        for name in methods.names():
            assert f'"{name}"' not in source, f"{module} names the method {name!r}"


def test_register_checks_the_class() -> None:
    class Nameless(Method):
        arch = "baseline"

    with pytest.raises(TypeError, match="class attribute 'name'"):
        methods.register(Nameless)

    class Taken(Method):
        name, arch = "pplr", "pplr"

    with pytest.raises(ValueError, match="'pplr' is taken"):
        methods.register(Taken)


class StrongSmoothing(Method):
    """The worked example of docs/design.md: constant label smoothing with its own ε."""

    name = "test_strong_ls"
    arch = "baseline"
    loss_terms = ("global_ce",)

    @classmethod
    def validate(cls, config: Any) -> list[str]:
        eps = config.method.global_epsilon
        return [] if eps > 0 else [f"method.global_epsilon must be > 0 here, got {eps}"]

    def training_step(
        self, out: Any, targets: torch.Tensor, batch: Any, record: EpochRecord
    ) -> dict[str, torch.Tensor]:
        logits = out.global_logits[:, : record.num_clusters].float()
        ce = label_smoothing_loss(logits, targets, self.config.method.global_epsilon)
        return {"global_ce": ce, **self.triplet(out, targets)}


@pytest.fixture
def registered() -> Iterator[type[Method]]:
    methods.register(StrongSmoothing)
    yield StrongSmoothing
    methods.unregister(StrongSmoothing.name)


def test_a_new_recipe_is_one_class(
    registered: type[Method], synthetic_root: Path, tmp_path: Path
) -> None:
    base = [f"data.data_root={synthetic_root}", "optim.epochs=1", "runtime.plots=false"]
    with pytest.raises(ConfigError, match="method.global_epsilon must be > 0 here"):
        load_config(TINY, [*base, f"method.name={registered.name}"])
    cfg = load_config(TINY, [*base, f"method.name={registered.name}", "method.global_epsilon=0.3"])
    assert cfg.model.arch == "baseline"  # model.arch null follows the recipe
    trainer = Trainer(cfg, tmp_path)
    try:
        assert isinstance(trainer.method, StrongSmoothing)
        summary = trainer.run_epoch(0)
    finally:
        trainer.close()
    assert summary.trained, summary.note
    assert set(summary.losses) == {"global_ce", "triplet"}  # the shared triplet helper
    assert not summary.figures
