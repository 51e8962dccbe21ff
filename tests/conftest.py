"""Shared fixtures: tiny image trees in every supported layout, and the synthetic dataset."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import write_images


@pytest.fixture
def market_tree(tmp_path: Path) -> Path:
    """A Market-1501 tree: 2 train ids, 2 test ids, distractors (0000) and junk (-1)."""
    root = tmp_path / "market"
    write_images(
        root / "bounding_box_train",
        [
            "0002_c1s1_000451_03.jpg",
            "0002_c2s1_000551_01.jpg",
            "0007_c3s3_076477_03.jpg",
            "0007_c6s3_076602_01.jpg",
            "-1_c1s1_000401_03.jpg",
        ],
    )
    write_images(root / "query", ["0001_c1s1_001051_00.jpg", "0003_c5s1_002351_00.jpg"])
    write_images(
        root / "bounding_box_test",
        [
            "0001_c2s1_000301_01.jpg",
            "0001_c1s1_001101_02.jpg",
            "0003_c4s1_002301_01.jpg",
            "0000_c1s1_000151_01.jpg",
            "0000_c6s2_000771_04.jpg",
            "-1_c1s1_000401_03.jpg",
            "-1_c3s1_000501_01.jpg",
        ],
    )
    (root / "bounding_box_test" / "Thumbs.db").write_bytes(b"not an image")
    return root


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic dataset generated once per test session."""
    from reid_eval.datasets import SyntheticConfig, make_synthetic_dataset

    root = tmp_path_factory.mktemp("synthetic")
    # The generator's defaults before the synthetic proxy (families of 4 for every identity,
    # 2-4 images per camera, heavier occlusion and noise): the fixture the tests were written on.
    config = SyntheticConfig(
        num_train_ids=12, num_test_ids=12, num_cameras=4, num_distractors=10, num_junk=4,
        family_size=4, family_frac=1.0, images_per_camera=(2, 4), occlusion_prob=0.3,
        noise_std=3.0, blur_prob=0.25,
    )  # fmt: skip
    return make_synthetic_dataset(root / "data", seed=3, config=config)
