"""``--config NAME``: the configs shipped in the wheel (hatch_build.py) and find_config."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tomllib
import types
import zipfile
from pathlib import Path

import pytest

import reid_train.config.lookup as config_module
from reid_train.cli import main
from reid_train.config import ConfigError, available_configs, find_config, load_config

ROOT = Path(__file__).resolve().parents[2]
PROJECT = ROOT / "packages" / "reid-train"


def test_a_name_is_found_in_configs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # an editable install has no package copy: the checkout's configs/ is read, from any folder
    monkeypatch.setattr(config_module, "PACKAGE_CONFIGS", ROOT / "no-package-configs")
    monkeypatch.chdir(tmp_path)
    for name in ("pplr_market1501", "pplr_market1501.yaml"):
        assert find_config(name) == ROOT / "configs" / "pplr_market1501.yaml"
    monkeypatch.setattr(config_module, "_checkout_configs", lambda: None)  # not a checkout:
    with pytest.raises(ConfigError, match="Available names: none"):  # ./configs only
        find_config("pplr_market1501")
    monkeypatch.chdir(ROOT)
    for name in ("pplr_market1501", "pplr_market1501.yaml"):
        assert find_config(name) == Path("configs/pplr_market1501.yaml")
    assert load_config(find_config("pplr_market1501")).method.name == "pplr"
    names = available_configs()  # the bases (_base/market1501.yaml) are not runs
    assert "market1501" not in names and {"synthetic_tiny", "pplr_veri776"} <= set(names)


def test_the_package_copy_comes_first_and_its_bases_resolve(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    shipped = tmp_path / "site-packages" / "reid_train" / "configs"
    shutil.copytree(ROOT / "configs", shipped)
    monkeypatch.setattr(config_module, "PACKAGE_CONFIGS", shipped)
    monkeypatch.chdir(ROOT)
    assert find_config("dcls_market1501") == shipped / "dcls_market1501.yaml"
    cfg = load_config(find_config("dcls_market1501"))  # base: _base/market1501.yaml, beside it
    assert cfg == load_config(ROOT / "configs" / "dcls_market1501.yaml")
    # an existing path wins over a name
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dcls_market1501").write_text("base: site-packages/reid_train/configs/x.yaml\n")
    assert find_config("dcls_market1501") == Path("dcls_market1501")


def test_unknown_names_and_missing_paths(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(ROOT)
    with pytest.raises(ConfigError, match=r"did you mean pplr_market1501.*Available names: ") as e:
        find_config("pplr_market")
    assert "dcls_msmt17, pplr_cam_market1501" in str(e.value)
    with pytest.raises(FileNotFoundError, match="config file 'configs/nope.yaml' does not exist"):
        find_config("configs/nope.yaml")
    monkeypatch.chdir(tmp_path)  # nothing anywhere
    monkeypatch.setattr(config_module, "PACKAGE_CONFIGS", tmp_path / "none")
    monkeypatch.setattr(config_module, "_checkout_configs", lambda: None)
    with pytest.raises(ConfigError, match=r"Available names: none \(no configs folder found\)"):
        find_config("pplr_market1501")


def test_cli_reports_an_unknown_name(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(ROOT)
    assert main(["--config", "pplr_markt1501"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("reid-train: error: --config 'pplr_markt1501' is neither a file")
    assert "did you mean pplr_market1501" in err


# ---------------------------------------------------------------- packaging
def _hatch_build(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """hatch_build.py, with a stand-in for hatchling's hook base class (not a test dependency)."""
    interface = types.ModuleType("hatchling.builders.hooks.plugin.interface")
    interface.BuildHookInterface = object  # type: ignore[attr-defined]
    for name in ("hatchling", "hatchling.builders", "hatchling.builders.hooks",
                 "hatchling.builders.hooks.plugin"):  # fmt: skip
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, interface.__name__, interface)
    spec = importlib.util.spec_from_file_location("hatch_build", PROJECT / "hatch_build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_build_hook_ships_the_configs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    build = tomllib.loads((PROJECT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]
    assert build["targets"]["wheel"]["packages"] == ["src/reid_train"]
    for target in ("wheel", "sdist"):  # hatch_build.py (the default path) runs for both
        assert build["targets"][target]["hooks"]["custom"] == {}
    include = _hatch_build(monkeypatch).configs_include
    configs = str((ROOT / "configs").resolve())
    assert include(PROJECT, "wheel", "standard") == {configs: "reid_train/configs"}
    assert include(PROJECT, "sdist", "standard") == {configs: "configs"}
    assert include(PROJECT, "wheel", "editable") == {}
    sdist = tmp_path / "a" / "b" / "reid_train-0.4.0"  # an unpacked sdist: its own copy
    shutil.copytree(ROOT / "configs", sdist / "configs")
    shipped = str((sdist / "configs").resolve())
    assert include(sdist, "wheel", "standard") == {shipped: "reid_train/configs"}
    shutil.rmtree(sdist / "configs")
    with pytest.raises(FileNotFoundError, match="the training configs were not found"):
        include(sdist, "wheel", "standard")


def test_the_wheel_holds_the_configs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real build, where hatchling is installed (not a dev requirement: skipped otherwise)."""
    hatchling_build = pytest.importorskip("hatchling.build")
    monkeypatch.chdir(PROJECT)
    wheel = tmp_path / hatchling_build.build_wheel(os.fspath(tmp_path))
    names = zipfile.ZipFile(wheel).namelist()
    assert "reid_train/configs/pplr_market1501.yaml" in names
    assert "reid_train/configs/_base/market1501.yaml" in names
