"""reid_train.config: schema, YAML files, overrides, unknown keys, validation, round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from reid_train.config import (
    METHOD_ARCH,
    ConfigError,
    ConfigWarning,
    TrainConfig,
    apply_overrides,
    config_from_dict,
    config_keys,
    config_to_dict,
    load_config,
    save_config,
)

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
TINY = ROOT / "configs" / "synthetic_tiny.yaml"


def _write(tmp_path: Path, data: object, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def test_default_config_is_valid_and_resolves_the_architecture() -> None:
    cfg = TrainConfig().validate()
    assert cfg.model.arch == "pplr" and cfg.method.name == "pplr"
    assert cfg.data.num_identities == 16
    assert cfg.optim.lr == pytest.approx(3.5e-4)


def test_a_default_config_saves_resolved(tmp_path: Path) -> None:
    cfg = TrainConfig()
    assert cfg.model.arch is None
    again = load_config(save_config(cfg, tmp_path / "config.yaml"))
    assert again == cfg and again.model.arch == "pplr"


def test_the_expected_config_files_exist() -> None:
    names = {p.stem for p in CONFIGS}
    for method in ("baseline", "pplr", "pplr_cam", "dcls"):
        for dataset in ("market1501", "msmt17"):
            assert f"{method}_{dataset}" in names
        assert f"synthetic_{method}" in names
    assert {"pplr_veri776", "synthetic_tiny"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_config_file_loads_and_round_trips(path: Path, tmp_path: Path) -> None:
    cfg = load_config(path)
    assert cfg.model.arch == METHOD_ARCH[cfg.method.name]
    if not path.stem.startswith("synthetic"):
        method, dataset = path.stem.rsplit("_", 1)
        assert (cfg.method.name, cfg.data.dataset) == (method, dataset)
    else:
        assert cfg.data.dataset == "synthetic" and cfg.model.backbone == "resnet18"
    saved = save_config(cfg, tmp_path / "run" / "config.yaml")
    again = load_config(saved)
    assert again == cfg
    assert config_to_dict(again) == config_to_dict(cfg)
    assert [p.name for p in saved.parent.iterdir()] == ["config.yaml"]  # no temporary left


def test_paper_hyper_parameters() -> None:
    pplr = load_config(ROOT / "configs" / "pplr_market1501.yaml")
    assert (pplr.optim.epochs, pplr.optim.iters, pplr.optim.milestones) == (50, 400, [20, 40])
    assert (pplr.data.batch_size, pplr.data.num_instances) == (64, 4)
    assert (pplr.data.height, pplr.data.width, pplr.cluster.eps) == (384, 128, 0.5)
    cam = load_config(ROOT / "configs" / "pplr_cam_msmt17.yaml")
    assert (cam.cluster.eps, cam.method.lambda_cam) == (0.6, 1.0)
    assert load_config(ROOT / "configs" / "pplr_cam_market1501.yaml").cluster.eps == 0.4
    veri = load_config(ROOT / "configs" / "pplr_veri776.yaml")
    assert (veri.data.height, veri.data.width, veri.cluster.eps) == (256, 256, 0.7)
    dcls = load_config(ROOT / "configs" / "dcls_market1501.yaml")
    assert (dcls.optim.epochs, dcls.optim.milestones, dcls.data.batch_size) == (80, [40, 70], 32)
    assert (dcls.method.w_l, dcls.method.w_g, dcls.model.num_regions) == (0.7, 0.5, 3)


def test_overrides_are_dotted_and_typed() -> None:
    cfg = load_config(
        TINY,
        [
            "optim.lr=1e-4",  # PyYAML reads 1e-4 as a string: still a float here
            "method.use_aals=false",
            "model.pretrained=null",
            "optim.milestones=[10, 30]",
            "optim.grad_clip=5",
            "runtime.mixed_precision=no",  # YAML 1.1 would read a bool
            "runtime.output_dir=2024",  # a string field keeps the text
            "cluster.sparse=true",
            "data.dataset_options.include_val=false",
            "data.batch_size=32",
        ],
    )
    assert cfg.optim.lr == 1e-4 and isinstance(cfg.optim.lr, float)
    assert cfg.method.use_aals is False
    assert cfg.model.pretrained is None
    assert cfg.optim.milestones == [10, 30]
    assert cfg.optim.grad_clip == 5.0 and isinstance(cfg.optim.grad_clip, float)
    assert cfg.runtime.mixed_precision == "no"
    assert cfg.runtime.output_dir == "2024"
    assert cfg.cluster.sparse is True
    assert cfg.data.dataset_options == {"include_val": False}
    assert cfg.data.batch_size == 32
    assert load_config(TINY, ["cluster.sparse=null"]).cluster.sparse is None
    assert load_config(TINY, ["optim.grad_clip=none"]).optim.grad_clip is None


def test_null_arch_follows_the_method() -> None:
    for method, arch in METHOD_ARCH.items():
        cfg = load_config(TINY, [f"method.name={method}"])
        assert cfg.model.arch == arch
        assert cfg.model_kwargs()["name"] == arch


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("optim.lr=fast", ["optim.lr", "float", "fast"]),
        ("method.use_aals=maybe", ["method.use_aals", "bool"]),
        ("data.batch_size=3.5", ["data.batch_size", "int"]),
        ("method.name=spcl", ["method.name", "'pplr'"]),
        ("optim.milestones=20", ["optim.milestones", "list"]),
        ("optim.lr", ["key=value"]),
    ],
)
def test_override_type_errors(override: str, words: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(TINY, [override])
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize(
    ("override", "suggestion"),
    [
        ("optim.lrr=0.1", "optim.lr"),
        ("method.use_alas=false", "method.use_aals"),
        ("lr=0.1", "optim.lr"),
        ("optimiser.lr=0.1", "optim.lr"),
        ("model.num_part=4", "model.num_parts"),
    ],
)
def test_unknown_override_key_names_the_key_and_the_closest(override: str, suggestion: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(TINY, [override])
    message = str(info.value)
    assert override.split("=")[0] in message and f"'{suggestion}'" in message
    assert "command line" in message


def test_unknown_key_in_a_file_names_the_file_and_the_closest(tmp_path: Path) -> None:
    path = _write(tmp_path, {"optim": {"lrr": 0.1}})
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "optim.lrr" in str(info.value) and "'optim.lr'" in str(info.value)
    assert str(path) in str(info.value)
    # the file's mistake is reported even when overrides are given
    with pytest.raises(ConfigError, match="optim.lrr"):
        load_config(path, ["optim.lr=0.1"])
    with pytest.raises(ConfigError, match="did you mean 'cluster'"):
        load_config(_write(tmp_path, {"clustr": {"eps": 0.5}}, "d.yaml"))


def test_file_type_errors_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="data.height .* must be int"):
        load_config(_write(tmp_path, {"data": {"height": "tall"}}))
    with pytest.raises(ConfigError, match="cannot parse the YAML"):
        load_config(_write(tmp_path, "data: [unclosed", "bad.yaml"))
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(_write(tmp_path, "- a\n- b\n", "list.yaml"))
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "missing.yaml")
    # an empty file is the default configuration
    assert load_config(_write(tmp_path, "", "empty.yaml")) == TrainConfig().validate()


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (["data.batch_size=30"], ["multiple of data.num_instances"]),
        (["data.batch_size=4"], ["at least 2"]),
        (["method.name=pplr_cam", "model.arch=dcls"], ["trains model.arch 'pplr'"]),
        (["method.name=dcls", "model.num_regions=4"], ["num_regions 2 or 3"]),
        (["method.name=dcls", "model.num_regions=0"], ["global_smoothing 'dcls'"]),
        (["method.name=dcls", "method.guidance=non_cross", "model.num_regions=2"], ["non_cross"]),
        (["method.beta=0"], ["method.beta"]),
        (["cluster.eps=1.5"], ["cluster.eps"]),
        (["optim.milestones=[30, 10]"], ["increasing"]),
        (["model.bn_groups=3"], ["bn_groups"]),
        (["data.dataset=duke_ish"], ["data.dataset"]),
        (["model.attention=cbma"], ["model.attention 'cbma' is unknown", "cbam"]),
        (["cluster.labels=truth"], ["cluster.labels"]),
    ],
)
def test_validation_errors(overrides: list[str], words: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(TINY, overrides)
    for word in words:
        assert word in str(info.value)


def test_validation_lists_every_problem() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict({"optim": {"lr": -1.0, "epochs": 0}, "runtime": {"log_every": 0}})
    message = str(info.value)
    assert "optim.lr" in message and "optim.epochs" in message and "runtime.log_every" in message


def test_directly_built_configs_are_type_checked() -> None:
    cfg = TrainConfig()
    cfg.optim.lr = "fast"  # type: ignore[assignment]
    with pytest.raises(ConfigError, match="optim.lr must be float"):
        cfg.validate()


def test_apply_overrides_on_a_dict_and_keys() -> None:
    data = apply_overrides({}, ["optim.lr=0.1", "data.dataset_options={include_val: true}"])
    assert data == {"optim": {"lr": 0.1}, "data": {"dataset_options": {"include_val": True}}}
    keys = config_keys()
    assert "optim.lr" in keys and "method.use_aals" in keys and len(keys) == len(set(keys))


@pytest.mark.parametrize("method", ["baseline", "pplr", "dcls"])
def test_model_kwargs_build_the_model(method: str) -> None:
    from reid_backbones import build_model

    cfg = load_config(TINY, [f"method.name={method}"])
    model = build_model(**cfg.model_kwargs(), num_classes=5)
    assert model.num_parts == {"baseline": 0, "pplr": 3, "dcls": 3}[method]


def test_mixed_precision_defaults_to_the_launcher() -> None:
    """null: Accelerate's own setting (accelerate launch --mixed_precision) applies."""
    assert TrainConfig().runtime.mixed_precision is None
    assert load_config(TINY, ["runtime.mixed_precision=bf16"]).runtime.mixed_precision == "bf16"


# --- configs that extend another (base: other.yaml) -----------------------------------------


def _write_text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_base_config_is_read_first_and_overridden(tmp_path: Path) -> None:
    _write_text(
        tmp_path / "root.yaml",
        "data:\n  height: 64\n  width: 32\n  synthetic_options:\n    num_train_ids: 7\n"
        "    noise_std: 2.0\noptim:\n  milestones: [5, 8]\n  lr: 0.1\n",
    )
    (tmp_path / "sub").mkdir()
    _write_text(tmp_path / "sub" / "mid.yaml", "base: ../root.yaml\noptim:\n  lr: 0.2\n")
    leaf = _write_text(
        tmp_path / "leaf.yaml",
        "base: sub/mid.yaml\ndata:\n  width: 48\n  synthetic_options:\n    noise_std: 1.0\n"
        "optim:\n  milestones: [3]\n",
    )
    cfg = load_config(leaf)
    assert (cfg.data.height, cfg.data.width) == (64, 48)
    assert cfg.data.synthetic_options == {"num_train_ids": 7, "noise_std": 1.0}  # merged
    assert cfg.optim.milestones == [3] and cfg.optim.lr == 0.2  # lists replace; chain of bases
    saved = save_config(cfg, tmp_path / "run" / "config.yaml")
    assert "base" not in yaml.safe_load(saved.read_text())  # the run keeps the resolved config
    assert load_config(saved) == cfg


def test_base_config_errors_name_the_file(tmp_path: Path) -> None:
    _write_text(tmp_path / "a.yaml", "base: b.yaml\n")
    _write_text(tmp_path / "b.yaml", "base: a.yaml\n")
    with pytest.raises(ConfigError, match="config bases form a cycle"):
        load_config(tmp_path / "a.yaml")
    _write_text(tmp_path / "c.yaml", "base: missing.yaml\n")
    with pytest.raises(ConfigError, match="has base: .*missing.yaml', which does not exist"):
        load_config(tmp_path / "c.yaml")
    _write_text(tmp_path / "bad.yaml", "optim:\n  lrr: 0.1\n")
    _write_text(tmp_path / "d.yaml", "base: bad.yaml\n")
    with pytest.raises(ConfigError, match=r"optim.lrr.*bad.yaml"):
        load_config(tmp_path / "d.yaml")
    _write_text(tmp_path / "e.yaml", "base: [x]\n")
    with pytest.raises(ConfigError, match="base must be the path of another YAML config"):
        load_config(tmp_path / "e.yaml")


def test_dataset_variants_extend_the_market_configs() -> None:
    """The MSMT17 / VeRi-776 recipes are a few lines over the Market-1501 ones."""
    for variant in sorted((ROOT / "configs").glob("*_msmt17.yaml")) + [
        ROOT / "configs" / "pplr_veri776.yaml"
    ]:
        raw = yaml.safe_load(variant.read_text())
        assert raw["base"].endswith("_market1501.yaml"), variant.name
        assert len(variant.read_text().splitlines()) <= 20, variant.name
        assert load_config(variant).data.dataset in ("msmt17", "veri776")


# --- the table of ranges --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("cluster.eps=1.0", "cluster.eps must be in (0, 1) (a Jaccard distance), got 1.0"),
        ("optim.momentum=1", "optim.momentum must be in [0, 1), got 1.0"),
        ("optim.grad_clip=0", "optim.grad_clip must be > 0, got 0.0"),
        ("runtime.log_every=0", "runtime.log_every must be >= 1, got 0"),
        ("method.beta=0", "method.beta must be in (0, 1], got 0.0"),
        ("data.flip_prob=1.5", "data.flip_prob must be in [0, 1], got 1.5"),
    ],
)
def test_range_table_messages(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(TINY, [override])
    assert message in str(info.value)


def test_range_table_names_real_keys_and_null_passes() -> None:
    from reid_train.config import _RANGES

    assert set(_RANGES) <= set(config_keys())
    assert load_config(TINY, ["optim.grad_clip=null"]).optim.grad_clip is None


def test_split_batch_keeps_the_global_batch_and_its_bn_groups() -> None:
    """data.global_batch_size: each process takes G / N images and the ghost BatchNorm groups
    keep their size; without it the global batch grows with the processes (and the line says
    how to keep it)."""
    from reid_train.config import config_from_dict, split_batch

    def cfg(**data):  # noqa: ANN003, ANN202
        return config_from_dict({"data": {"num_instances": 4, **data}, "model": {"bn_groups": 4}})

    one = cfg(batch_size=64, global_batch_size=64)
    line = split_batch(one, 1)
    assert (one.data.batch_size, one.model.bn_groups) == (64, 4)
    assert line.startswith("global batch 64 = 1 process(es) x 64 images") and "groups of 16" in line
    four = cfg(batch_size=64, global_batch_size=64)
    line = split_batch(four, 4)
    assert (four.data.batch_size, four.model.bn_groups) == (16, 1)
    assert "global batch 64 = 4 process(es) x 16 images" in line
    assert "16 identities per step" in line
    two = cfg(batch_size=64, global_batch_size=64)
    split_batch(two, 2)
    assert (two.data.batch_size, two.model.bn_groups) == (32, 2)  # groups of 16 still
    plain = cfg(batch_size=64)
    line = split_batch(plain, 4)
    assert plain.data.batch_size == 64 and "global batch 256" in line
    assert "set data.global_batch_size=64" in line
    with pytest.raises(ConfigError, match="does not split into 3 processes"):
        split_batch(cfg(batch_size=64, global_batch_size=64), 3)
    with pytest.raises(ConfigError, match="does not split into 16 processes"):
        split_batch(cfg(batch_size=64, global_batch_size=64), 16)  # 4 images: P = 1
    with pytest.raises(ConfigError, match="multiple of data.num_instances"):
        cfg(batch_size=64, global_batch_size=66)


def test_a_recipes_own_keys_are_flat_typed_by_its_options_and_saved_flat(tmp_path: Path) -> None:
    from reid_refine import DCLSOptions
    from reid_train.methods.pplr import PPLRCamOptions, PPLROptions

    pplr = load_config(TINY, ["method.beta=0.25", "method.use_aals=false"])
    tiny = {"agreement_k": 10, "aals_epoch": 1}  # synthetic_tiny.yaml's
    assert pplr.method.options == {**vars(PPLROptions()), **tiny, "beta": 0.25, "use_aals": False}
    assert (pplr.method.beta, pplr.method.use_aals, pplr.method.agreement_k) == (0.25, False, 10)
    cam = load_config(TINY, ["method.name=pplr_cam", "method.lambda_cam=2"])
    assert cam.method.options == {**vars(PPLRCamOptions()), **tiny, "lambda_cam": 2.0}
    with pytest.warns(ConfigWarning, match="method.agreement_k, method.aals_epoch do not apply"):
        dcls = load_config(TINY, ["method.name=dcls", "method.metric=cosine"])
    assert dcls.method.options == {**vars(DCLSOptions()), "metric": "cosine"}
    # saved flat (no 'options' key) and read back equal
    saved = yaml.safe_load(save_config(dcls, tmp_path / "c.yaml").read_text())["method"]
    assert "options" not in saved and saved["metric"] == "cosine" and saved["w_l"] == 0.7
    assert load_config(tmp_path / "c.yaml") == dcls
    # set as attributes before validation: the own keys go to options, defaults read through
    cfg = TrainConfig()
    assert cfg.method.beta == 0.5 and cfg.method.options == {}
    cfg.method.beta = 0.75
    assert cfg.validate().method.options["beta"] == 0.75
    with pytest.raises(AttributeError, match="method 'pplr' has no key 'temperature'"):
        _ = cfg.method.temperature


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["method.beta=0"], "method.beta must be in (0, 1], got 0.0"),
        (["method.agreement_k=0"], "method.agreement_k must be >= 1, got 0"),
        (["method.name=pplr_cam", "method.cam_temperature=0"], "method.cam_temperature must be"),
        (["method.name=dcls", "method.w_l=2"], "method.w_l"),
        (["method.part_epsilon=.inf"], "method.part_epsilon must hold finite numbers"),
        (["method.w_l=0.5"], "method.w_l (a key of dcls) is not a key of method 'pplr'"),
        (["method.name=baseline", "method.beta=0.5"],
         "method.beta is not a key of method 'baseline', which has no keys of its own"),
    ],
)  # fmt: skip
def test_a_recipes_own_keys_are_checked_by_its_options(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(TINY, overrides)
    assert message in str(info.value)


def test_the_own_keys_of_a_file_belong_to_its_method(tmp_path: Path) -> None:
    from reid_refine import DCLSOptions

    path = _write(tmp_path, {"method": {"name": "dcls", "agreement_k": 10}})
    with pytest.raises(ConfigError, match=r"method.agreement_k \(a key of pplr, pplr_cam\)"):
        load_config(path)
    # a recipe switched on the command line: the file's keys of the old one are left out (with
    # a warning); a key of the old recipe given on the command line too is refused
    path = _write(tmp_path, {"method": {"name": "pplr", "beta": 0.3}})
    with pytest.warns(ConfigWarning, match=r"method.name=dcls replaces 'pplr'.*method.beta"):
        assert load_config(path, ["method.name=dcls"]).method.options == vars(DCLSOptions())
    with pytest.raises(ConfigError, match="method.beta .* is not a key of method 'dcls'"):
        load_config(path, ["method.name=dcls", "method.beta=0.3"])
    path = _write(tmp_path, {"method": {"name": "dcls", "options": {"w_l": 0.1}}})
    with pytest.raises(ConfigError, match="unknown config key 'method.options'"):
        load_config(path)
