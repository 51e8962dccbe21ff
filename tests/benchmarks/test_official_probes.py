"""The regime search's table (benchmarks/official_probes.py) on hand-made records: the official
rows' means, the paired differences of PPLR's Table 1 ordering and the protocol's screening
rule. Nothing is trained."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
spec = importlib.util.spec_from_file_location("official_probes", BENCHMARKS / "official_probes.py")
assert spec is not None and spec.loader is not None
probes = importlib.util.module_from_spec(spec)
sys.modules["official_probes"] = probes  # its dataclasses look their module up
spec.loader.exec_module(probes)


def _run(probe: str, row: str, seed: int, m_ap: float, f1: tuple[float, float] = (0.5, 0.8)):  # noqa: ANN202
    epochs = [
        {"pairwise_f1": f1[0], "clusters": 100, "true_identities": 200},
        {"pairwise_f1": f1[1], "clusters": 190, "true_identities": 200},
    ]
    return {"probe": probe, "row": row, "seed": seed, "mAP": m_ap, "epochs": epochs}


def test_table_ordering_and_screening_rule() -> None:
    base, aals, full = probes.ROWS
    runs = [
        _run("P0", base, 1, 60.0), _run("P0", aals, 1, 50.0), _run("P0", full, 1, 48.0),
        # P1: the full gap -2 against P0's -12 (+10 >= 6) and AALS better: promising
        _run("P1", base, 1, 55.0), _run("P1", aals, 1, 54.0), _run("P1", full, 1, 53.0),
        # P3: +4 only: not promising
        _run("P3", base, 1, 60.0), _run("P3", aals, 1, 51.0), _run("P3", full, 1, 52.0),
        _run("P4", base, 1, 60.0),  # unfinished probe: not shown
    ]  # fmt: skip
    lines = probes.table(runs, [1]).splitlines()
    assert len(lines) == 2 + 3
    p0, p1, p3 = lines[2:]
    assert "| P0 |" in p0 and "| 60.0 | 50.0 | 48.0 | -10.0 | -2.0 | -12.0 |" in p0
    assert p0.endswith("| – |")
    assert "0.50 → 0.80 | 0.95 |" in p0  # F1 first → last, clusters per identity
    assert "| -1.0 | -1.0 | -2.0 |" in p1 and p1.endswith("| yes (+10.0 vs P0) |")
    assert p3.endswith("| no (+4.0 vs P0) |")


def test_probe_changes_are_the_protocols() -> None:
    by_id = probes.BY_ID
    assert by_id["P0"].change == "none (the proxy)"
    assert by_id["P1"].target == ("data.synthetic_options.images_per_camera=[6, 10]",)
    assert by_id["P6"].source and not by_id["P6"].target
    protocol = (BENCHMARKS / "protocols" / "official_regime_search.md").read_text()
    for probe in probes.PROBES[1:]:
        assert f"| {probe.id} |" in protocol
        for change in (*probe.target, *probe.source):
            assert change.split("=")[0] in protocol, (probe.id, change)
