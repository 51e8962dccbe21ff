"""load_checkpoint takes the folder or the model.safetensors in it; other files name the folder."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from reid_backbones import (
    CheckpointError,
    build_model,
    load_checkpoint,
    read_checkpoint_config,
    save_checkpoint,
)
from reid_backbones.checkpoint import CONFIG_NAME, WEIGHTS_NAME


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(0)
    model = build_model("baseline", "resnet18", num_classes=3, input_size=(64, 32)).eval()
    folder = tmp_path_factory.mktemp("ckpt") / "run" / "best"
    save_checkpoint(model, folder, extra={"epoch": 2})
    return model, folder


def test_the_weights_file_loads_the_same_model_as_its_folder(saved) -> None:  # noqa: ANN001
    model, folder = saved
    from_file = load_checkpoint(folder / WEIGHTS_NAME)
    from_folder = load_checkpoint(folder)
    assert not from_file.training and from_file.config() == model.config()
    for key, value in model.state_dict().items():
        assert torch.equal(from_file.state_dict()[key], value), key
        assert torch.equal(from_folder.state_dict()[key], value), key
    assert read_checkpoint_config(folder / WEIGHTS_NAME)["extra"] == {"epoch": 2}
    assert load_checkpoint(str(folder / WEIGHTS_NAME)).config() == model.config()


@pytest.mark.parametrize("name", [CONFIG_NAME, "notes.txt"])
def test_another_file_in_the_folder_names_the_folder(saved, name: str) -> None:  # noqa: ANN001
    _, folder = saved
    path = folder / name
    if not path.exists():
        path.write_text("not a checkpoint")
    for call in (load_checkpoint, read_checkpoint_config):
        with pytest.raises(CheckpointError) as info:
            call(path)
        message = str(info.value)
        assert "does not exist" not in message
        assert f"'{path}' is a file, not a checkpoint folder" in message
        match = re.search(r"give its folder '([^']+)'", message)
        assert match and Path(match.group(1)) == folder
        # Following the advice works.
        assert call(Path(match.group(1))) is not None


def test_a_file_outside_any_checkpoint_is_refused_without_sending_to_its_folder(
    tmp_path: Path,
) -> None:
    path = tmp_path / "model.pth"
    path.write_bytes(b"\x80\x04pickle")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert f"'{path}' is a file, not a checkpoint folder" in message
    assert f"'{tmp_path}', where this file is, holds neither" in message
    assert "give its folder" not in message


def test_a_missing_weights_file_is_reported_in_its_folder(tmp_path: Path) -> None:
    model = build_model("baseline", "resnet18", num_classes=2)
    save_checkpoint(model, tmp_path / "a")
    (tmp_path / "a" / WEIGHTS_NAME).unlink()
    with pytest.raises(CheckpointError, match=f"'{re.escape(str(tmp_path / 'a'))}' has "):
        load_checkpoint(tmp_path / "a" / WEIGHTS_NAME)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope" / WEIGHTS_NAME)
