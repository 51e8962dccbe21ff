"""The run folder is never overwritten or shared by accident; resumes survive kill -9 anywhere;
bad settings are refused before anything is written."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import reid_train.build as build_module
from reid_backbones import load_safetensors
from reid_train.cli import main
from reid_train.config import ConfigError, load_config
from reid_train.run_folder import (
    FAULT_ENV,
    LOCK_FILE,
    RunDirError,
    RunLock,
    claim_run_dir,
    recover_state,
    truncate_logs,
)
from reid_train.trainer import Trainer

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "synthetic_tiny.yaml"


def tiny(synthetic_root: Path, *overrides: str):  # noqa: ANN201
    return load_config(TINY, [f"data.data_root={synthetic_root}", *overrides])


def _epochs(path: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in path.read_text().splitlines()]


def _cli(out: Path, synthetic_root: Path, *extra: str) -> int:
    return main([
        "--config", str(TINY), "--output-dir", str(out), f"data.data_root={synthetic_root}",
        "optim.epochs=1", "runtime.plots=false", *extra,
    ])  # fmt: skip


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# --- no accidental overwrite, one live owner -----------------------------------------------------


def test_a_second_run_into_a_finished_run_is_refused(
    synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert _cli(tmp_path, synthetic_root) == 0
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    assert _cli(tmp_path, synthetic_root) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--resume" in err and "--overwrite" in err
    after = {p.name: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before  # nothing of the first run was touched
    assert _epochs(tmp_path / "metrics.jsonl") == [0]
    # --overwrite replaces it, and says so; --resume and --overwrite exclude each other.
    assert _cli(tmp_path, synthetic_root, "--overwrite") == 0
    assert "--overwrite: removed the previous run" in capsys.readouterr().out
    assert _epochs(tmp_path / "metrics.jsonl") == [0]
    with pytest.raises(SystemExit):
        _cli(tmp_path, synthetic_root, "--overwrite", "--resume")


def test_a_live_lock_refuses_and_a_stale_one_is_taken_over(
    synthetic_root: Path, tmp_path: Path
) -> None:
    host = socket.gethostname()
    lock = tmp_path / LOCK_FILE
    lock.write_text(json.dumps({"pid": os.getpid(), "host": host, "started": 0}))
    with pytest.raises(RunDirError, match=f"in use by a live run \\(process {os.getpid()}"):
        Trainer(tiny(synthetic_root, "optim.epochs=1"), tmp_path)
    assert lock.exists() and not (tmp_path / "config.yaml").exists()
    lock.write_text(json.dumps({"pid": 123, "host": "elsewhere", "started": 0}))
    with pytest.raises(RunDirError, match="another machine.*delete"):
        Trainer(tiny(synthetic_root, "optim.epochs=1"), tmp_path)
    lock.write_text(json.dumps({"pid": _dead_pid(), "host": host, "started": 0}))
    trainer = Trainer(tiny(synthetic_root, "optim.epochs=1", "runtime.plots=false"), tmp_path)
    assert trainer._lock is not None and "stale lock" in str(trainer._lock.note)
    assert json.loads(lock.read_text())["pid"] == os.getpid()
    trainer.fit()
    assert not lock.exists()  # released when the run ends


def test_lock_is_exclusive_between_two_holders(tmp_path: Path) -> None:
    first = RunLock(tmp_path).acquire()
    with pytest.raises(RunDirError, match="live run"):
        RunLock(tmp_path).acquire()
    first.release()
    RunLock(tmp_path).acquire().release()


def test_the_lock_records_every_node_and_the_messages_name_them(tmp_path: Path) -> None:
    """A run over several nodes records all their hosts (it used to record rank 0's only)."""
    here = socket.gethostname()
    lock = RunLock(tmp_path, hosts=["nodeB", here, "nodeB", "nodeC"]).acquire()
    content = json.loads((tmp_path / LOCK_FILE).read_text())
    assert content["pid"] == os.getpid() and content["host"] == here
    assert content["hosts"] == [here, "nodeB", "nodeC"]  # this (main) host first, each once
    spans = f"the run spans 3 nodes: {re.escape(here)} \\(this machine\\), nodeB, nodeC"
    with pytest.raises(
        RunDirError, match=f"in use by a live run \\(process {os.getpid()}.*{spans}"
    ):
        RunLock(tmp_path).acquire()
    lock.release()
    assert json.loads(_locked(tmp_path))["hosts"] == [here]  # a single-node run: this host
    # a run whose main process is on another node: every node named, this one marked
    path = tmp_path / LOCK_FILE
    path.write_text(json.dumps({"pid": 7, "host": "nodeA", "hosts": ["nodeA", here], "started": 0}))
    spans = f"the run spans 2 nodes: nodeA, {re.escape(here)} \\(this machine\\)"
    with pytest.raises(
        RunDirError, match=f"another machine \\(process 7 on nodeA.*{spans}.*delete"
    ):
        RunLock(tmp_path).acquire()
    # a lock written before hosts were recorded: the main host alone, as before
    path.write_text(json.dumps({"pid": 7, "host": "nodeA", "started": 0}))
    with pytest.raises(RunDirError, match="another machine") as refused:
        RunLock(tmp_path).acquire()
    assert "spans" not in str(refused.value)
    with pytest.raises(TypeError, match="sequence of host names"):
        RunLock(tmp_path, hosts="nodeA")  # a string is not a list of hosts


def _locked(folder: Path) -> str:
    """The lock a fresh single-node RunLock writes into ``folder`` (released again)."""
    lock = RunLock(folder).acquire()
    try:
        return (folder / LOCK_FILE).read_text()
    finally:
        lock.release()


def test_a_stale_lock_of_a_multi_node_run_names_its_other_nodes(tmp_path: Path) -> None:
    here = socket.gethostname()
    path = tmp_path / LOCK_FILE
    dead = {"pid": _dead_pid(), "host": here, "started": 0}
    path.write_text(json.dumps({**dead, "hosts": [here, "nodeB", "nodeC"]}))
    lock = RunLock(tmp_path, hosts=[here, "nodeD"]).acquire()
    assert f"process {dead['pid']} on {here} is gone; that run also ran on nodeB, nodeC" in str(
        lock.note
    )
    assert "make sure none of its processes are left there" in str(lock.note)
    assert json.loads(path.read_text())["hosts"] == [here, "nodeD"]
    lock.release()
    path.write_text(json.dumps(dead))  # single node: the message as before
    lock = RunLock(tmp_path).acquire()
    assert lock.note == f"took over a stale lock '{path}' (process {dead['pid']} on {here} is gone)"
    lock.release()


def test_claim_run_dir_records_the_hosts_it_is_given(tmp_path: Path) -> None:
    cfg = load_config(TINY, [f"data.data_root={tmp_path / 'data'}"])
    said: list[str] = []
    out = tmp_path / "run"
    lock = claim_run_dir(out, cfg, resume=False, overwrite=False, say=said.append, hosts=["n2"])
    try:
        assert json.loads((out / LOCK_FILE).read_text())["hosts"] == [socket.gethostname(), "n2"]
    finally:
        lock.release()


_TWO_RANKS = """
import json, socket, sys
from pathlib import Path
from accelerate import Accelerator, debug_launcher

def job():
    from reid_train.run_folder import process_hosts
    acc = Accelerator(cpu=True)
    socket.gethostname = lambda: f"node{acc.process_index}"  # one node per rank
    hosts = process_hosts(acc)
    Path(sys.argv[1], f"rank{acc.process_index}.json").write_text(json.dumps(hosts))

debug_launcher(job, num_processes=2)
"""


def test_process_hosts_gathers_every_rank_in_rank_order(tmp_path: Path) -> None:
    """Two real CPU ranks (gloo), each posing as its own node: both get both hosts."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-c", _TWO_RANKS, str(tmp_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    for rank in (0, 1):
        assert json.loads((tmp_path / f"rank{rank}.json").read_text()) == ["node0", "node1"]


def test_two_concurrent_cli_runs_one_is_refused(synthetic_root: Path, tmp_path: Path) -> None:
    """Two real processes started together into one folder: exactly one trains."""
    cmd = [
        sys.executable, "-m", "reid_train", "--config", str(TINY), "--output-dir", str(tmp_path),
        f"data.data_root={synthetic_root}", "optim.epochs=1", "runtime.plots=false",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]  # type: ignore[union-attr]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    refused = next(err for code, err in results if code == 2)
    assert "already holds a run" in refused or "in use by a live run" in refused
    assert _epochs(tmp_path / "metrics.jsonl") == [0]


# --- resume: whatever the moment of the kill ------------------------------------------------------


@pytest.fixture(scope="module")
def uninterrupted(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("whole")
    Trainer(tiny(synthetic_root, "optim.epochs=3", "runtime.plots=false"), out).fit()
    return out


@pytest.mark.parametrize("fault", ["logged:1", "state_written:1", "state_moved:1"])
def test_kill_9_anywhere_then_resume_equals_an_uninterrupted_run(
    fault: str, synthetic_root: Path, tmp_path: Path, uninterrupted: Path
) -> None:
    cmd = [
        sys.executable, "-m", "reid_train", "--config", str(TINY), "--output-dir", str(tmp_path),
        f"data.data_root={synthetic_root}", "optim.epochs=3", "runtime.plots=false",
    ]  # fmt: skip
    killed = subprocess.run(cmd, env={**os.environ, FAULT_ENV: fault}, capture_output=True)
    assert killed.returncode == -9, killed.stderr[-2000:]
    if fault == "state_moved:1":  # killed with state/ renamed away and the new copy not yet in
        assert not (tmp_path / "state").exists() and (tmp_path / ".state.tmp").exists()
    if fault == "logged:1":  # epoch 1 is logged but its state was never saved
        assert _epochs(tmp_path / "metrics.jsonl") == [0, 1]
    Trainer(
        tiny(synthetic_root, "optim.epochs=3", "runtime.plots=false"), tmp_path, resume=True
    ).fit()
    for name in ("metrics.jsonl", "history.jsonl"):
        assert _epochs(tmp_path / name) == [0, 1, 2], name
    whole = [json.loads(x) for x in (uninterrupted / "metrics.jsonl").read_text().splitlines()]
    split = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["mAP"] for r in split] == [r["mAP"] for r in whole]
    a, _ = load_safetensors(uninterrupted / "last" / "model.safetensors")
    b, _ = load_safetensors(tmp_path / "last" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ"
    assert not (tmp_path / LOCK_FILE).exists()


def test_recover_state_prefers_the_complete_newer_copy(tmp_path: Path) -> None:
    for name, epoch in ((".state.tmp", 4), (".state.old", 3)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "trainer.json").write_text(json.dumps({"epoch": epoch}))
    state, note = recover_state(tmp_path)
    assert json.loads((state / "trainer.json").read_text())["epoch"] == 4
    assert "newer complete copy '.state.tmp' (after epoch 4)" in str(note)
    assert recover_state(tmp_path) == (state, None)  # in place now
    (state / "trainer.json").unlink()  # incomplete: the previous copy is taken instead
    _, note = recover_state(tmp_path)
    assert "previous complete copy '.state.old' (after epoch 3)" in str(note)
    (tmp_path / "state" / "trainer.json").unlink()
    with pytest.raises(RunDirError, match="holds no saved training state.*it holds: state"):
        recover_state(tmp_path)


def test_truncate_logs_drops_lines_past_the_epoch_and_partial_lines(tmp_path: Path) -> None:
    log = tmp_path / "metrics.jsonl"
    log.write_text('{"epoch": -1}\n{"epoch": 0}\n{"epoch": 1}\n{"epoch": 2}\n{"epo')
    assert truncate_logs(tmp_path, 0, ["metrics.jsonl", "absent.jsonl"]) == 3
    assert _epochs(log) == [-1, 0]
    assert truncate_logs(tmp_path, 0, ["metrics.jsonl"]) == 0


@pytest.mark.parametrize(
    ("override", "key"),
    [("model.num_parts=2", "model.num_parts"), ("method.name=dcls", "method.name")],
)
def test_resume_with_another_model_names_the_keys(
    override: str, key: str, synthetic_root: Path, tmp_path: Path
) -> None:
    Trainer(tiny(synthetic_root, "optim.epochs=1", "runtime.plots=false"), tmp_path).fit()
    cfg = tiny(synthetic_root, "optim.epochs=2", override)
    with pytest.raises(RunDirError, match=f"another model or method \\(.*{key}"):
        Trainer(cfg, tmp_path, resume=True)
    assert not (tmp_path / LOCK_FILE).exists()


def test_resume_with_changed_settings_says_so(
    synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    Trainer(tiny(synthetic_root, "optim.epochs=1", "runtime.plots=false"), tmp_path).fit()
    capsys.readouterr()
    cfg = tiny(synthetic_root, "optim.epochs=2", "runtime.plots=false")
    Trainer(cfg, tmp_path, resume=True).fit()
    assert "continuing with changed settings (optim.epochs: 1 -> 2)" in capsys.readouterr().out
    assert load_config(tmp_path / "config.yaml").optim.epochs == 2


# --- validate before anything is written ----------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("method.name=dcls data.height=7", "too short for num_regions=3"),
        ("optim.lr=inf", "optim.lr must be a finite number"),
        ("method.beta=nan", "method.beta must hold finite numbers"),
    ],
)
def test_bad_settings_exit_2_and_create_no_run_folder(
    override: str, message: str, synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "run"
    assert _cli(out, synthetic_root, *override.split()) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_input_size_check_follows_the_backbone_stride() -> None:
    from reid_backbones import check_input_size, feature_map_size

    assert feature_map_size((256, 128), 1) == (16, 8)
    assert feature_map_size((256, 128), 2) == (8, 4)
    assert feature_map_size((7, 7), 1) == (1, 1)
    check_input_size("pplr", (33, 16), 1, num_parts=3, part_bins="disjoint")  # 3 rows: enough
    with pytest.raises(ValueError, match="at least 33 pixels tall"):
        check_input_size("pplr", (32, 16), 1, num_parts=3, part_bins="disjoint")
    check_input_size("pplr", (7, 7), 1, num_parts=3)  # adaptive bins fit any map height
    check_input_size("dcls", (49, 16), 1, num_regions=3)  # 4 bands of overlapping regions
    with pytest.raises(ValueError, match="4 rows"):
        check_input_size("dcls", (48, 16), 1, num_regions=3)
    check_input_size("baseline", (1, 1), 2)
    with pytest.raises(ConfigError, match="data.height/width: images 7x32"):
        load_config(TINY, ["data.height=7", "method.name=dcls"])


def test_config_folder_is_named_as_a_folder(capsys: pytest.CaptureFixture) -> None:
    assert main(["--config", str(ROOT / "configs")]) == 2
    err = capsys.readouterr().err
    assert "is a folder; give a YAML file in it" in err and "baseline_market1501.yaml" in err


# --- the built-in synthetic dataset appears by itself ---------------------------------------------


def test_missing_synthetic_root_is_generated(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    calls = []

    def fake_generate(root: Path, seed: int, config: object) -> Path:  # the session dataset
        calls.append((Path(root).name, seed, getattr(config, "num_train_ids", None)))
        return Path(shutil.copytree(synthetic_root, root))

    monkeypatch.setattr(build_module, "make_synthetic_dataset", fake_generate)
    data = tmp_path / "fresh" / "synthetic"
    cfg = tiny(
        data, "optim.epochs=1", "data.synthetic_seed=7", "data.synthetic_options.num_train_ids=9"
    )
    Trainer(cfg, tmp_path / "run").close()
    assert calls == [(".synthetic.tmp", 7, 9)] and (data / "query").is_dir()
    with pytest.raises(ConfigError, match="data.synthetic_options"):
        tiny(data, "data.synthetic_options.num_cameras=99")
    # present now: not generated again. It is the session dataset (seed 3, other options), not
    # what the config describes: a warning names the differences, and training uses it.
    with pytest.warns(RuntimeWarning, match=r"seed: 3 -> 7; num_train_ids: 12 -> 9") as record:
        Trainer(cfg, tmp_path / "run2").close()
    assert "remove the folder" in str(record[0].message)
    assert len(calls) == 1
    other = load_config(TINY, [f"data.data_root={tmp_path / 'none'}", "data.dataset=market1501"])
    with pytest.raises(Exception, match="does not exist"):  # no other dataset is ever made
        Trainer(other, tmp_path / "run3")
    assert len(calls) == 1 and not (tmp_path / "none").exists()


def test_accelerate_launch_no_python_form_on_a_clean_checkout(tmp_path: Path) -> None:
    """``accelerate launch --multi_gpu --num_processes 2 --no_python reid-train``, two real CPU
    ranks (gloo), into a data root that does not exist: the main process generates the default
    synthetic dataset once, the other waits for it, and both train."""
    import shutil

    bin_dir = str(Path(sys.executable).parent)
    launcher = shutil.which("accelerate", path=bin_dir)
    script = shutil.which("reid-train", path=bin_dir)
    if launcher is None or script is None:
        pytest.skip("the accelerate launcher / reid-train script are not installed beside Python")
    data, out = tmp_path / "data" / "synthetic", tmp_path / "run"
    cmd = [
        launcher, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--no_python", script,
        "--config", str(TINY), "--output-dir", str(out), f"data.data_root={data}",
        "optim.epochs=1", "optim.iters=1", "runtime.plots=false",
    ]  # fmt: skip
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    said = done.stdout + done.stderr
    assert said.count("generating the synthetic dataset there (seed 0") == 1
    assert (data / "synthetic.json").is_file()
    (epoch,) = [json.loads(x) for x in (out / "history.jsonl").read_text().splitlines()]
    assert len(epoch["batch_digests"]) == 2
