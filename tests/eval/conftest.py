"""Fixtures shared by the reid-eval tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from reid_backbones import build_model, save_checkpoint


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised PPLR ResNet-18 checkpoint (64x32 input) that reid-eval can read."""
    torch.manual_seed(0)
    model = build_model("pplr", backbone="resnet18", num_classes=5, input_size=(64, 32))
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "best")
