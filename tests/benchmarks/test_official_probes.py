"""The regime search's table (benchmarks.proxy.official_probes) on hand-made records: the official
rows' means, the paired differences of PPLR's Table 1 ordering, the protocol's screening rule,
the supervised column, P0 from the side-by-side's records and ``--from-json``. Nothing is
trained."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.common import ROOT
from benchmarks.proxy import official_probes as probes


def _run(
    probe: str | None,
    row: str,
    seed: int,
    m_ap: float,
    f1: tuple[float, float] = (0.5, 0.8),
    trainer: str | None = None,
) -> dict:
    epochs = [
        {"pairwise_f1": f1[0], "clusters": 100, "true_identities": 200},
        {"pairwise_f1": f1[1], "clusters": 190, "true_identities": 200},
    ]
    run = {"row": row, "seed": seed, "mAP": m_ap, "epochs": epochs, "compute_s": 1.0}
    if probe is not None:
        run["probe"] = probe
    if trainer is not None:
        run["trainer"] = trainer
    return run


BASE, AALS, FULL = probes.ROWS
RUNS = [
    _run("P0", BASE, 1, 60.0), _run("P0", AALS, 1, 50.0), _run("P0", FULL, 1, 48.0),
    # P1: the full gap -2 against P0's -12 (+10 >= 6) and AALS better: promising
    _run("P1", BASE, 1, 55.0), _run("P1", AALS, 1, 54.0), _run("P1", FULL, 1, 53.0),
    # P3: +4 only: not promising
    _run("P3", BASE, 1, 60.0), _run("P3", AALS, 1, 51.0), _run("P3", FULL, 1, 52.0),
    _run("P4", BASE, 1, 60.0),  # unfinished probe: not shown
]  # fmt: skip


def test_table_ordering_and_screening_rule() -> None:
    lines = probes.table(RUNS, [1]).splitlines()
    assert len(lines) == 2 + 3
    assert lines[0].endswith("| promising | supervised (ours) |")
    p0, p1, p3 = lines[2:]
    assert "| P0 |" in p0 and "| 60.0 | 50.0 | 48.0 | -10.0 | -2.0 | -12.0 |" in p0
    assert p0.endswith("| – | – |")  # no verdict for P0, no supervised record
    assert "0.50 → 0.80 | 0.95 |" in p0  # F1 first → last, clusters per identity
    assert "| -1.0 | -1.0 | -2.0 |" in p1 and p1.endswith("| yes (+10.0 vs P0) | – |")
    assert p3.endswith("| no (+4.0 vs P0) | – |")


def test_supervised_column_from_our_supervised_records() -> None:
    runs = [
        *RUNS,
        _run("P1", probes.SUPERVISED, 1, 71.04, trainer="ours"),
        _run("P1", probes.SUPERVISED, 2, 99.0, trainer="ours"),  # a seed the table lacks
        _run("P3", probes.SUPERVISED, 1, 10.0, trainer="official"),  # not ours: not shown
        _run("P1", BASE, 1, 0.0, trainer="ours"),  # our trainer's row: not the official's
    ]
    lines = probes.table(runs, [1]).splitlines()
    p0, p1, p3 = lines[2:]
    assert p1.endswith("| yes (+10.0 vs P0) | 71.0 |") and "| 55.0 | 54.0 | 53.0 |" in p1
    assert p0.endswith("| – | – |") and p3.endswith("| – |")
    # over two seeds, one of them with a supervised record: the seed is named
    two = [{**r, "seed": 2} for r in RUNS if r["probe"] in ("P0", "P1")] + runs
    p1_two = probes.table(two, [1, 2]).splitlines()[3]
    # seeds 1 and 2 both have one: (71.04 + 99) / 2
    assert "| P1 |" in p1_two and p1_two.endswith("| 85.0 |")
    only_one = [r for r in two if not (r["row"] == probes.SUPERVISED and r["seed"] == 2)]
    assert probes.table(only_one, [1, 2]).splitlines()[3].endswith("| 71.0 (seed 1) |")


def _side_by_side_records() -> list[dict]:
    """Records of official_pplr (no probe): both trainers, the four rows."""
    runs = []
    for trainer, shift in (("official", 0.0), ("ours", 5.0)):
        for row, m in ((BASE, 60.0), (AALS, 50.0), (FULL, 48.0), ("PPLR: PGLR only", 55.0)):
            runs.append(_run(None, row, 1, m + shift, trainer=trainer))
    return runs


def test_p0_comes_from_the_side_by_side_records_when_no_probe_record_has_it(
    tmp_path: Path,
) -> None:
    side = tmp_path / "official_pplr.json"
    side.write_text(json.dumps({"runs": _side_by_side_records()}))
    without_p0 = [r for r in RUNS if r["probe"] != "P0"]
    runs = probes.with_p0(without_p0, side)
    p0 = [r for r in runs if r["probe"] == "P0"]
    assert sorted(r["row"] for r in p0) == sorted(probes.ROWS)  # the official trainer's three
    assert all(r["trainer"] == "official" for r in p0)
    assert probes.table(runs, [1]) == probes.table(RUNS, [1])
    # P0's own records win; a missing file is no P0
    assert probes.with_p0(RUNS, side) == RUNS
    assert probes.with_p0(without_p0, tmp_path / "missing.json") == without_p0


def test_from_json_needs_no_run_folder_and_writes_the_section(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    records = tmp_path / "probes.json"
    without_p0 = [r for r in RUNS if r["probe"] != "P0"]
    records.write_text(json.dumps({"runs": without_p0}))
    side = tmp_path / "official_pplr.json"
    side.write_text(json.dumps({"runs": _side_by_side_records()}))
    written: dict[str, str] = {}
    monkeypatch.setattr(probes, "write_section", lambda name, body: written.update({name: body}))
    assert probes.main(["--from-json", str(records), "--p0-json", str(side), "--seeds", "1"]) == 0
    out = capsys.readouterr().out
    assert out.strip() == probes.table(RUNS, [1])
    body = written["official-regime-search"]
    assert f"`python -m benchmarks.proxy.official_probes --from-json {records} --seeds 1`" in body
    assert body.endswith(probes.table(RUNS, [1]))
    # the side-by-side's records may also come among the files themselves
    written.clear()
    probes.main(["--from-json", str(records), str(side), "--p0-json", str(tmp_path / "x.json")])
    assert written["official-regime-search"].endswith(probes.table(RUNS, [1]))


def test_probe_changes_are_the_protocols() -> None:
    by_id = probes.BY_ID
    assert by_id["P0"].change == "none (the proxy)"
    assert by_id["P1"].target == ("data.synthetic_options.images_per_camera=[6, 10]",)
    assert by_id["P6"].source and not by_id["P6"].target
    protocol = (ROOT / "benchmarks" / "protocols" / "official_regime_search.md").read_text()
    for probe in probes.PROBES[1:]:
        assert f"| {probe.id} |" in protocol
        for change in (*probe.target, *probe.source):
            assert change.split("=")[0] in protocol, (probe.id, change)


def test_from_json_reads_an_official_pplr_record_file_as_a_probes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # official_pplr --json of a probe's runs: records without a probe; "P1=FILE" tags them
    p1 = tmp_path / "official_probe_P1.json"
    p1.write_text(json.dumps({"runs": [{k: v for k, v in r.items() if k != "probe"}
                                       for r in RUNS if r["probe"] == "P1"]}))  # fmt: skip
    others = tmp_path / "probes.json"
    others.write_text(json.dumps({"runs": [r for r in RUNS if r["probe"] != "P1"]}))
    monkeypatch.setattr(probes, "write_section", lambda name, body: None)
    probes.main(["--from-json", str(others), f"P1={p1}", "--p0-json", str(tmp_path / "x.json")])
    assert capsys.readouterr().out.strip() == probes.table(RUNS, [1])
    assert probes.from_records([f"P1={p1}"]) == [r for r in RUNS if r["probe"] == "P1"]


def test_from_json_with_json_merges_the_probe_records_into_one_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "official_probes.json"
    out.write_text(json.dumps({"runs": [r for r in RUNS if r["probe"] != "P1"]}))
    p1 = tmp_path / "official_probe_P1.json"  # a probe's own record file, no probe field
    p1.write_text(json.dumps({"runs": [{k: v for k, v in r.items() if k != "probe"}
                                       for r in RUNS if r["probe"] == "P1"]}))  # fmt: skip
    monkeypatch.setattr(probes, "write_section", lambda name, body: None)
    probes.main(["--from-json", str(out), f"P1={p1}", "--json", str(out), "--no-write"])
    merged = json.loads(out.read_text())["runs"]
    assert sorted(map(json.dumps, merged)) == sorted(map(json.dumps, RUNS))
