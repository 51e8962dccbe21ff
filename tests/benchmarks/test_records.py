"""The record files of the evidence modules, on hand-made records and run folders: ``--json``
merges instead of overwriting, every run record names the commit of the code that trained it
(null when unknown), and ``--from-json`` builds official_pplr's table from records alone. Nothing
is trained."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from benchmarks import common
from benchmarks.proxy import official_pplr, runs

ROW = "PPLR: AALS + PGLR"
AALS = "PPLR: AALS only"


def _rec(trainer: str, row: str, seed: int, m_ap: float, **extra: object) -> dict:
    return {"row": row, "seed": seed, "trainer": trainer, "mAP": m_ap, "compute_s": 60.0, **extra}


# --- merging record files ---------------------------------------------------------------------


def test_run_key_is_probe_trainer_row_noise_seed() -> None:
    assert runs.run_key(_rec("ours", ROW, 2, 1.0)) == (None, "ours", ROW, None, 2)
    assert runs.run_key({**_rec("official", ROW, 1, 1.0), "probe": "P4"}) == (
        "P4", "official", ROW, None, 1,
    )  # fmt: skip
    assert runs.run_key({"row": "baseline", "seed": 3}) == (None, None, "baseline", None, 3)
    # the label-noise records: one run per (row, noise, seed), none replacing another level's
    assert runs.run_key({"row": "CE", "noise": 0.2, "seed": 1}) == (None, None, "CE", 0.2, 1)


def test_write_runs_merges_into_the_existing_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sub" / "records.json"
    old = [
        _rec("official", ROW, 1, 40.0),  # no commit: an old record, kept as it is
        _rec("ours", ROW, 1, 41.0, commit="aaa1111"),
        {**_rec("official", ROW, 1, 42.0), "probe": "P4"},  # another key: the probe's
    ]
    assert runs.write_runs(out, old) == old  # a new file: written as given
    assert "wrote" in capsys.readouterr().out
    new = [
        _rec("ours", ROW, 1, 45.0, commit="bbb2222"),  # same key: replaces in place
        _rec("ours", ROW, 2, 46.0, commit=None),  # a new key: appended, commit unknown
    ]
    merged = runs.write_runs(out, new)
    assert merged == [old[0], new[0], old[2], new[1]]
    assert json.loads(out.read_text()) == {"runs": merged}
    assert "commit" not in merged[0] and merged[3]["commit"] is None
    # merge=False (the ablation's and label noise's --json): the file holds this invocation only
    assert runs.write_runs(out, new[:1], merge=False) == new[:1]
    assert json.loads(out.read_text()) == {"runs": new[:1]}


def test_read_runs_merges_files_in_order(tmp_path: Path) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps({"runs": [_rec("ours", ROW, 1, 1.0), _rec("ours", ROW, 2, 2.0)]}))
    b.write_text(json.dumps({"runs": [_rec("ours", ROW, 2, 20.0), _rec("ours", AALS, 1, 3.0)]}))
    assert [r["mAP"] for r in runs.read_runs([a, b])] == [1.0, 20.0, 3.0]
    assert [r["mAP"] for r in runs.read_runs([b, a])] == [2.0, 3.0, 1.0]


# --- the commit of the code that trained a run --------------------------------------------------


def test_commit_helper_and_the_run_folders_note(tmp_path: Path) -> None:
    sha = common.commit()
    assert sha is None or (sha and " " not in sha)
    dirty = common.commit(dirty=True)
    assert dirty is None or dirty.split(" + ")[0] == sha
    runs.record_commit(tmp_path, "abc1234 + local changes")
    assert runs.trained_by(tmp_path) == "abc1234 + local changes"
    runs.record_commit(tmp_path, None)  # unknown: no note, not a stale one
    assert runs.trained_by(tmp_path) is None


def _finished_ours(out: Path, epochs: int) -> None:
    out.mkdir(parents=True)
    (out / "metrics.jsonl").write_text(
        json.dumps({"epoch": epochs - 1, "mAP": 0.5, "rank1": 0.6}) + "\n"
    )
    history = [
        {"epoch": e, "clusters": 10, "times": {"train": 1.0}, "quality": {"pairwise_f1": 0.5}}
        for e in range(epochs)
    ]
    (out / "history.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))


def _args(**changes: object) -> SimpleNamespace:
    return SimpleNamespace(
        **{"only_finished": True, "extra": [], "target_extra": [], "target_seed": 0, **changes}
    )


def test_our_reused_run_records_the_commit_noted_in_its_folder(tmp_path: Path) -> None:
    [row] = [r for r in official_pplr.SIDE_ROWS if r.name == ROW]
    work = tmp_path / "work"
    epochs = runs.epochs_of(official_pplr.PPLR)
    out = official_pplr.ours_folder(work, row) / "seed1"
    _finished_ours(out, epochs)
    done = official_pplr.run_ours(_args(), row, 1, tmp_path, tmp_path, work)
    assert done is not None and done["commit"] is None and done["mAP"] == 50.0
    runs.record_commit(out, "abc1234")
    done = official_pplr.run_ours(_args(), row, 1, tmp_path, tmp_path, work)
    assert done["commit"] == "abc1234"
    # an unfinished run with --only-finished: no record at all
    assert official_pplr.run_ours(_args(), row, 2, tmp_path, tmp_path, work) is None


def test_an_official_reused_run_records_its_commit(tmp_path: Path) -> None:
    epochs, n = 2, 6
    out = tmp_path / "official"
    out.mkdir()
    evals = [{"mAP": 0.3}, {"mAP": 0.4, "rank1": 0.5}]
    (out / "evaluations.jsonl").write_text("".join(json.dumps(e) + "\n" for e in evals))
    clusterings = [{"epoch": e, "clusters": 3, "pairwise_f1": 0.5} for e in range(epochs)]
    (out / "clusterings.jsonl").write_text("".join(json.dumps(c) + "\n" for c in clusterings))
    np.save(out / "scores.npy", np.full((epochs, n, 3), 0.5))
    np.save(out / "labels.npy", np.zeros((epochs, n), dtype=int))
    (out / "log.txt").write_text("")
    (out / "wall_s.txt").write_text("12.5\n")
    runs.record_commit(out, "def5678")
    cfg = SimpleNamespace(optim=SimpleNamespace(epochs=epochs))
    row = official_pplr.SIDE_ROWS[0]
    done = official_pplr.run_official(_args(), cfg, row, 1, tmp_path, tmp_path, out)
    assert done["commit"] == "def5678" and done["mAP"] == 40.0 and done["compute_s"] == 12.5
    assert [e["agreement"] for e in done["epochs"]] == [[0.5] * 3] * epochs


# --- official_pplr --from-json -------------------------------------------------------------------


def test_from_json_builds_the_table_from_records_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    first.write_text(json.dumps({"runs": [
        _rec("official", ROW, 1, 40.0), _rec("ours", ROW, 1, 41.0),  # no commit (older runs)
        _rec("official", ROW, 2, 10.0, commit="old0000"),  # replaced by the second file
        {**_rec("official", ROW, 3, 0.0), "probe": "P4"},  # the regime search's: left out
    ]}))  # fmt: skip
    second.write_text(json.dumps({"runs": [
        _rec("official", ROW, 2, 42.0, commit="abc1234"),
        _rec("ours", ROW, 2, 44.0, commit="abc1234"),
    ]}))  # fmt: skip
    written: dict[str, str] = {}
    monkeypatch.setattr(
        official_pplr, "write_section", lambda name, body: written.update({name: body})
    )
    assert official_pplr.main(["--from-json", str(first), str(second)]) == 0
    expected = [
        _rec("official", ROW, 1, 40.0), _rec("ours", ROW, 1, 41.0),
        _rec("official", ROW, 2, 42.0, commit="abc1234"),
        _rec("ours", ROW, 2, 44.0, commit="abc1234"),
    ]  # fmt: skip
    table = official_pplr.side_by_side_table(expected, official_pplr.SIDE_ROWS)
    assert f"| {ROW} | 1, 2 | 41.0 ± 1.4 | 42.5 ± 2.1 |" in table
    assert capsys.readouterr().out.startswith(table)
    body = written["official-pplr-t0-s100"]
    assert f"`python -m benchmarks.proxy.official_pplr --from-json {first} {second}`:" in body
    assert "by commit: unknown (2 runs), abc1234 (2 runs)." in body
    assert "Runs took\n4 min of compute" in body and table in body
    # the rows and seeds asked for only; --no-write leaves the docs alone
    written.clear()
    official_pplr.main(["--from-json", str(first), str(second), "--seeds", "2", "--no-write"])
    assert written == {}
    assert f"| {ROW} | 2 | 42.0 | 44.0 | +2.0 | yes |" in capsys.readouterr().out


def test_training_needs_the_official_repo() -> None:
    with pytest.raises(SystemExit) as exc:
        official_pplr.main(["--no-write"])
    assert exc.value.code == 2


# --- shared helpers ---------------------------------------------------------------------------


def test_read_jsonl_skips_blank_lines_and_may_allow_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2}\n')
    assert common.read_jsonl(path) == [{"a": 1}, {"a": 2}]
    assert common.read_jsonl(tmp_path / "missing.jsonl", missing_ok=True) == []
    with pytest.raises(FileNotFoundError):
        common.read_jsonl(tmp_path / "missing.jsonl")


def test_write_section_replaces_only_its_section(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    common.write_section("a", "first", path=doc)
    common.write_section("b", "other", path=doc)
    common.write_section("a", "second", path=doc)
    text = doc.read_text()
    assert "<!-- BEGIN a -->\nsecond\n<!-- END a -->" in text and "first" not in text
    assert "<!-- BEGIN b -->\nother\n<!-- END b -->" in text
