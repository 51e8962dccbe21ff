"""The label-noise module's ``--from-json`` (its tables from record files alone, e.g. the table's
runs plus a later sweep's rows) and the ``--rows`` handling the evidence modules share. Nothing
is trained."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from benchmarks import common
from benchmarks.proxy import label_noise, rows


def _counts(rate: float, seed: int) -> dict:
    images = 100
    return {
        "rate": rate, "requested": rate, "images": images, "merged": int(rate * 40) + seed,
        "split": int(rate * 30), "outliers": int(rate * 30), "merges": 2, "lookalike_merges": 2,
        "splits": 3, "describe": f"{100 * rate:g} % of {images} images corrupted",
    }  # fmt: skip


def _run(row: str, rate: float, seed: int, m_ap: float, **extra: object) -> dict:
    return {
        "row": row, "noise": rate, "seed": seed, "mAP": m_ap, "rank1": m_ap + 1,
        "realised_noise": rate, "noise_counts": _counts(rate, seed), "noise_logged": True,
        "compute_s": 100.0, "epochs": [], **extra,
    }  # fmt: skip


def _main(monkeypatch: pytest.MonkeyPatch, *argv: str) -> int:
    monkeypatch.setattr(sys, "argv", ["label_noise", *argv])
    return label_noise.main()


def test_from_json_merges_record_files_and_tabulates_without_run_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    table, later = tmp_path / "table.json", tmp_path / "later.json"
    table.write_text(json.dumps({"runs": [
        _run(row, rate, seed, base - 20 * rate + seed)
        for row, base in (("CE", 60.0), ("constant LS", 58.0))
        for rate in (0.0, 0.4) for seed in (1, 2)
    ]}))  # fmt: skip
    later.write_text(json.dumps({"runs": [
        *(_run("CE", rate, seed, 60.5 - 20 * rate + seed, commit="abc1234")  # CE again, +0.5
          for rate in (0.0, 0.4) for seed in (1, 2)),
        *(_run("Cluster Contrast", rate, seed, 55.0 - 10 * rate + seed, commit="abc1234")
          for rate in (0.0, 0.4) for seed in (1, 2)),
    ]}))  # fmt: skip
    section: dict[str, str] = {}
    monkeypatch.setattr(
        label_noise, "write_section", lambda name, body: section.update({name: body})
    )
    merged = tmp_path / "merged.json"
    code = _main(
        monkeypatch, "--from-json", str(table), str(later), "--seeds", "1", "2",
        "--noise", "0", "0.4", "--rows", "CE", "constant LS", "Cluster Contrast",
        "--no-plot", "--json", str(merged),
    )  # fmt: skip
    assert code == 0
    body = section[label_noise.SECTION]
    assert f"--from-json {table} {later}" in body  # outside the repository: shown as given
    assert "training nothing" in body and "abc1234 (8 runs), unknown (4 runs)" in body
    assert "| CE | 62.0 ± 0.7 | 54.0 ± 0.7 |" in body  # the later CE replaced the earlier
    assert "| Cluster Contrast | 56.5 ± 0.7 | 52.5 ± 0.7 |" in body
    # paired by seed against CE: -5.5 at 0 %, -1.5 at 40 %: gap closed +4.0 on both seeds
    assert "| Cluster Contrast | CE | -5.5 (-5.5, -5.5) | -1.5 (-1.5, -1.5) | +4.0" in body
    assert "* Cluster Contrast: seed 1 +4.0, seed 2 +4.0" in body
    assert "| 40 % | 40.0 % (40.0–40.0) | 18 / 12 / 12 |" in body  # the records' counts
    assert "Partial sweep" not in body
    records = json.loads(merged.read_text())["runs"]
    assert len(records) == 12 and {r["row"] for r in records} == {
        "CE",
        "constant LS",
        "Cluster Contrast",
    }
    capsys.readouterr()


def test_from_json_with_a_missing_run_says_partial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = tmp_path / "table.json"
    table.write_text(json.dumps({"runs": [_run("CE", 0.0, 1, 60.0), _run("CE", 0.4, 1, 50.0)]}))
    section: dict[str, str] = {}
    monkeypatch.setattr(
        label_noise, "write_section", lambda name, body: section.update({name: body})
    )
    _main(monkeypatch, "--from-json", str(table), "--seeds", "1", "2", "--noise", "0", "0.4",
          "--rows", "CE", "--no-plot")  # fmt: skip
    assert "**Partial sweep**: 2 of its 4 runs" in section[label_noise.SECTION]


def test_from_json_refuses_records_of_other_noisy_labels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = _run("CE", 0.4, 1, 50.0, realised_noise=0.3)
    table = tmp_path / "table.json"
    table.write_text(json.dumps({"runs": [_run("CE", 0.0, 1, 60.0), bad]}))
    monkeypatch.setattr(label_noise, "write_section", lambda *_: pytest.fail("wrote docs"))
    code = _main(monkeypatch, "--from-json", str(table), "--seeds", "1", "--noise", "0", "0.4",
                 "--rows", "CE", "--no-plot")  # fmt: skip
    assert code == 1
    assert "realised noise 0.3000, expected 0.4000" in capsys.readouterr().err


def test_recorded_counts_are_one_per_rate_and_seed() -> None:
    runs = [_run("CE", 0.2, 1, 1.0), _run("PPLR", 0.2, 1, 2.0), _run("CE", 0.2, 2, 3.0)]
    assert label_noise.recorded_counts(runs, [0.0, 0.2], [1, 2, 3]) == {
        0.0: [], 0.2: [_counts(0.2, 1), _counts(0.2, 2)],
    }  # fmt: skip


def test_chosen_rows_keep_the_modules_order_and_refuse_unknown_names(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="x")
    rows.add_rows_argument(parser, label_noise.ROWS)
    args = parser.parse_args(["--rows", "PPLR", "CE"])
    assert [r.name for r in rows.chosen_rows(parser, args.rows, label_noise.ROWS)] == ["CE", "PPLR"]
    assert rows.chosen_rows(parser, None, label_noise.ROWS) == label_noise.ROWS
    with pytest.raises(SystemExit):
        rows.chosen_rows(parser, ["CE", "SpCL"], label_noise.ROWS)
    assert "unknown rows ['SpCL']; choose from ['CE'," in capsys.readouterr().err


def test_shown_paths_are_relative_to_the_repository_root(tmp_path: Path) -> None:
    assert common.shown(common.RESULTS / "x.json") == "benchmarks/results/x.json"
    assert common.shown(tmp_path / "x.json") == str(tmp_path / "x.json")


def test_a_part_gets_its_own_section_heading_and_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = tmp_path / "cc.json"
    table.write_text(json.dumps({"runs": [
        _run(row, rate, 1, 50.0) for row in ("CE", "Cluster Contrast") for rate in (0.0, 0.4)
    ]}))  # fmt: skip
    section: dict[str, str] = {}
    monkeypatch.setattr(
        label_noise, "write_section", lambda name, body: section.update({name: body})
    )
    plot = tmp_path / "cc.png"
    _main(monkeypatch, "--from-json", str(table), "--seeds", "1", "--noise", "0", "0.4",
          "--rows", "CE", "Cluster Contrast", "--part", "Cluster Contrast", "--plot", str(plot),
          "--no-plot")  # fmt: skip
    [(name, body)] = section.items()
    assert name == "label-noise-cluster_contrast"
    assert body.startswith("## Label refinement under controlled label noise (target seed 0, "
                           "source seed 100): Cluster Contrast\n")  # fmt: skip
    assert f'--rows CE "Cluster Contrast" --part "Cluster Contrast" --plot {plot}`' in body


def test_against_gives_each_shared_rows_differences_per_run() -> None:
    ours = [
        _run("CE", 0.0, 1, 61.0),
        _run("CE", 0.4, 1, 50.5),
        _run("Cluster Contrast", 0.0, 1, 9.0),
    ]
    theirs = [_run("CE", 0.0, 1, 60.0), _run("CE", 0.4, 1, 51.0), _run("CE", 0.4, 2, 1.0)]
    assert label_noise.against_lines(ours, theirs, ["CE", "Cluster Contrast"]) == [
        "* CE: -0.50 to +1.00 mAP over 2 runs (0 % seed 1 +1.00, 40 % seed 1 -0.50)"
    ]
    assert label_noise.against_lines(ours, [], ["CE"]) == []


def test_a_missing_or_foreign_record_file_is_a_clear_error(tmp_path: Path) -> None:
    from benchmarks.proxy import runs

    with pytest.raises(SystemExit, match="no such record file"):
        runs.read_runs([tmp_path / "absent.json"])
    for text in ("not json", json.dumps({"rows": []}), json.dumps([1, 2])):
        (tmp_path / "x.json").write_text(text)
        with pytest.raises(SystemExit, match="not a record file of the evidence modules"):
            runs.read_runs([tmp_path / "x.json"])
