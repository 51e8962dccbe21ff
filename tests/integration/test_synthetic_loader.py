"""The generated dataset is read by the real Market-1501 loader with the right counts."""

from __future__ import annotations

import json
from pathlib import Path

from reid_eval.datasets import load_dataset


def test_synthetic_tree_reads_as_market1501(synthetic_root: Path) -> None:
    meta = json.loads((synthetic_root / "synthetic.json").read_text())
    cfg, counts = meta["config"], meta["counts"]
    for name in ("synthetic", "market1501"):
        ds = load_dataset(name, synthetic_root)
        assert len(ds.train) == counts["bounding_box_train"]
        assert len(ds.query) == counts["query"]
        # junk (pid -1) is dropped by the loader, distractors (pid 0) stay
        assert len(ds.gallery) == counts["bounding_box_test"] - cfg["num_junk"]
        assert sum(r.pid == 0 for r in ds.gallery) == cfg["num_distractors"]
        assert ds.num_train_pids == cfg["num_train_ids"]
        assert {r.camid for r in ds.train + ds.query + ds.gallery} <= set(range(cfg["num_cameras"]))
        assert not {r.pid for r in ds.train} & {r.pid for r in ds.query}
