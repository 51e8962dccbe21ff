"""The files of configs/: short files over shared bases (configs/_base/), and what they resolve to.

Each runnable config (``configs/*.yaml``) names a ``base:`` (a file of ``configs/_base/`` or a
sibling) and holds only what differs from it; the table below pins a few resolved values of each
file, so that a change to a base shows up as the files it changes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from reid_train.config import load_config

ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = ROOT / "configs"
RUNNABLE = sorted(CONFIG_DIR.glob("*.yaml"))  # configs/_base/ is not among them
BASES = sorted((CONFIG_DIR / "_base").glob("*.yaml"))
#: The most lines (neither blank nor comments) a runnable config may hold.
MAX_LINES = 32

#: A file's key values: "method.name/model.arch data.dataset HEIGHTxWIDTH BATCHxINSTANCES
#: bn<model.bn_groups> eps<cluster.eps>[ debias] EPOCHSxITERS optim.milestones" (debias:
#: cluster.camera_debias). Every file also has optim.lr 3.5e-4, runtime.output_dir runs/<name>,
#: data.data_root data/<dataset> (unless EXTRA says otherwise) and a ResNet-50 (ResNet-18 on the
#: synthetic data).
EXPECTED = {
    "baseline_market1501": "baseline/baseline market1501 384x128 64x4 bn4 eps0.5 50x400 [20, 40]",
    "baseline_msmt17": "baseline/baseline msmt17 384x128 64x4 bn4 eps0.5 50x400 [20, 40]",
    "dcls_market1501": "dcls/dcls market1501 256x128 32x4 bn1 eps0.5 80x400 [40, 70]",
    "dcls_msmt17": "dcls/dcls msmt17 256x128 32x4 bn1 eps0.5 80x400 [40, 70]",
    "pplr_market1501": "pplr/pplr market1501 384x128 64x4 bn4 eps0.5 50x400 [20, 40]",
    "pplr_msmt17": "pplr/pplr msmt17 384x128 64x4 bn4 eps0.5 50x400 [20, 40]",
    "pplr_veri776": "pplr/pplr veri776 256x256 64x8 bn4 eps0.7 50x400 [20, 40]",
    "pplr_cam_market1501": "pplr_cam/pplr market1501 384x128 64x4 bn4 eps0.4 50x400 [20, 40]",
    "pplr_cam_msmt17": "pplr_cam/pplr msmt17 384x128 64x4 bn4 eps0.6 50x400 [20, 40]",
    "synthetic_baseline": "baseline/baseline synthetic 96x48 32x4 bn1 eps0.25 debias 10x60 [4, 8]",
    "synthetic_dcls": "dcls/dcls synthetic 96x48 32x4 bn1 eps0.25 debias 10x60 [4, 8]",
    "synthetic_pplr": "pplr/pplr synthetic 96x48 32x4 bn1 eps0.25 debias 10x60 [4, 8]",
    "synthetic_pplr_cam": "pplr_cam/pplr synthetic 96x48 32x4 bn1 eps0.25 debias 10x60 [4, 8]",
    "synthetic_source": "baseline/baseline synthetic 64x32 32x4 bn1 eps0.5 20x150 [8, 16]",
    "synthetic_tiny": "pplr/pplr synthetic 64x32 8x4 bn1 eps0.4 2x2 [1]",
    "cluster_contrast_market1501": (
        "cluster_contrast/baseline market1501 256x128 256x16 bn4 eps0.6 50x200 [20, 40]"
    ),
    "cluster_contrast_msmt17": (
        "cluster_contrast/baseline msmt17 256x128 256x16 bn4 eps0.7 50x200 [20, 40]"
    ),
    "synthetic_cluster_contrast": (
        "cluster_contrast/baseline synthetic 96x48 32x4 bn1 eps0.25 debias 10x60 [4, 8]"
    ),
}

#: Further values of the files that have a distinctive one (dotted keys).
EXTRA = {
    "pplr_cam_market1501": {"method.lambda_cam": 0.5},
    "pplr_cam_msmt17": {"method.lambda_cam": 1.0},
    "synthetic_pplr_cam": {"method.lambda_cam": 0.5},
    "cluster_contrast_market1501": {
        "method.temperature": 0.05,
        "method.momentum": 0.1,
        "method.update": "all",
        "method.triplet_weight": 0.0,
        "data.interpolation": "bicubic",
    },
    "synthetic_cluster_contrast": {
        "method.temperature": 0.05,
        "method.momentum": 0.1,
        "method.update": "all",
        "method.triplet_weight": 0.0,
    },
    "synthetic_source": {
        "cluster.labels": "ground_truth",
        "data.data_root": "data/synthetic_source",
        "data.synthetic_seed": 100,
        "data.synthetic_options": {
            "num_train_ids": 800,
            "family_size": 2,
            "family_frac": 1.0,
            "images_per_camera": [2, 4],
            "occlusion_prob": 0.15,
            "noise_std": 2.0,
            "blur_prob": 0.15,
        },
        "runtime.eval_every": 0,
    },
}


def _chain(path: Path) -> list[Path]:
    """``path`` and the files it extends, nearest first."""
    files = [path.resolve()]
    while (base := (yaml.safe_load(files[-1].read_text()) or {}).get("base")) is not None:
        files.append((files[-1].parent / base).resolve())
    return files


def _value(cfg: object, dotted: str) -> object:
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def test_the_table_names_every_config_file() -> None:
    assert set(EXPECTED) == {p.stem for p in RUNNABLE}
    assert set(EXTRA) <= set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_file_resolves_to_its_key_values(name: str) -> None:
    cfg = load_config(CONFIG_DIR / f"{name}.yaml")  # loads and validates
    d, m, c, o = cfg.data, cfg.model, cfg.cluster, cfg.optim
    debias = " debias" if c.camera_debias else ""
    got = (
        f"{cfg.method.name}/{m.arch} {d.dataset} {d.height}x{d.width} "
        f"{d.batch_size}x{d.num_instances} bn{m.bn_groups} eps{c.eps:g}{debias} "
        f"{o.epochs}x{o.iters} {o.milestones}"
    )
    assert got == EXPECTED[name]
    assert o.lr == 3.5e-4
    assert m.backbone == ("resnet18" if d.dataset == "synthetic" else "resnet50")
    assert cfg.runtime.output_dir == f"runs/{name}"  # each file names its own run folder
    for key, value in EXTRA.get(name, {}).items():
        assert _value(cfg, key) == value, key
    if "data.data_root" not in EXTRA.get(name, {}):
        assert d.data_root == f"data/{d.dataset}"


@pytest.mark.parametrize("path", RUNNABLE, ids=[p.name for p in RUNNABLE])
def test_config_file_is_short_and_names_a_base(path: Path) -> None:
    text = path.read_text()
    raw = yaml.safe_load(text)
    assert isinstance(raw.get("base"), str), f"{path.name} names no base"
    assert (path.parent / raw["base"]).is_file(), raw["base"]
    lines = [s for s in text.splitlines() if s.strip() and not s.lstrip().startswith("#")]
    assert len(lines) <= MAX_LINES, f"{path.name}: {len(lines)} lines; move shared keys to a base"
    assert text.startswith("#"), f"{path.name} has no header saying what it is"
    assert f"configs/{path.name}" in text, f"{path.name}: its header does not say how to run it"


def test_every_base_is_extended_and_no_base_names_a_run_folder() -> None:
    assert BASES, "configs/_base/ holds the shared settings"
    used = {f for path in RUNNABLE for f in _chain(path)[1:]}
    for base in BASES:
        assert base.resolve() in used, f"{base.name} is extended by no config"
        raw = yaml.safe_load(base.read_text())
        assert "output_dir" not in (raw.get("runtime") or {}), base.name  # each run names its own


def test_the_synthetic_configs_share_one_base() -> None:
    synthetic = CONFIG_DIR / "_base" / "synthetic.yaml"
    for path in RUNNABLE:
        chain = _chain(path)
        assert chain[-1].parent == (CONFIG_DIR / "_base").resolve(), path.name
        assert (chain[-1] == synthetic.resolve()) == path.stem.startswith("synthetic"), path.name
