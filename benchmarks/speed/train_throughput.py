"""Training throughput of the engine: fp32 vs channels_last vs bf16, and the per-epoch time split.

Runs ``reid_train`` for ``--epochs`` epochs of ``--iters`` iterations on the generated synthetic
dataset (``configs/synthetic_<method>.yaml``), once per setting, each in a fresh process, and
reports training images/s (``iters × batch / train time``) and the extract / cluster / train /
eval split of the last epoch from the run's ``history.jsonl``. Run from the repository root:

    python -m benchmarks.speed.train_throughput              # CPU, writes docs/benchmarks.md
    python -m benchmarks.speed.train_throughput --iters 2 --no-write   # quick check (default: 40)
    python -m benchmarks.speed.train_throughput --method dcls          # another method

:func:`measure` is one setting's run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import ROOT, machine, read_jsonl, write_section

SETTINGS = {
    "fp32": [],
    "channels_last": ["runtime.channels_last=true"],
    "bf16": ["runtime.mixed_precision=bf16"],
    "bf16 + channels_last": ["runtime.mixed_precision=bf16", "runtime.channels_last=true"],
}


def measure(setting: str, args: argparse.Namespace, out: Path) -> dict:
    """One ``reid_train`` run of ``setting`` into ``out``: its last epoch's throughput and times."""
    config = ROOT / "configs" / f"synthetic_{args.method}.yaml"
    cmd = [
        sys.executable, "-m", "reid_train", "--config", str(config), "--output-dir", str(out),
        "--overwrite",
        f"data.data_root={args.data_root}", f"optim.epochs={args.epochs}",
        f"optim.iters={args.iters}", "runtime.eval_every=1000", *SETTINGS[setting],
    ]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    history = read_jsonl(out / "history.jsonl")
    config_text = (out / "config.yaml").read_text()
    batch = int(next(ln for ln in config_text.splitlines() if "batch_size:" in ln).split(":")[1])
    last = history[-1]
    return {
        "setting": setting,
        "trained": last["trained"],
        "images_per_s": args.iters * batch / last["times"]["train"] if last["trained"] else 0.0,
        "times": last["times"],
        "batch": batch,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--method", default="pplr", choices=["baseline", "pplr", "pplr_cam", "dcls"]
    )
    parser.add_argument("--data-root", default=str(ROOT / "data" / "synthetic"))
    parser.add_argument("--epochs", type=int, default=2, help="the last epoch is reported")
    parser.add_argument("--iters", type=int, default=40)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--no-write", dest="write", action="store_false")
    args = parser.parse_args()
    if not Path(args.data_root).is_dir():
        subprocess.run(
            [sys.executable, "-m", "reid_eval", "make-synthetic", args.data_root, "--reuse"],
            check=True,
        )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for setting in args.settings:
            rows.append(measure(setting, args, Path(tmp) / setting.replace(" ", "_")))
            print(json.dumps(rows[-1]), flush=True)
    lines = [
        "## Training throughput (`python -m benchmarks.speed.train_throughput`)",
        "",
        f"Machine: {machine()}.",
        "",
        f"`configs/synthetic_{args.method}.yaml` on the default synthetic dataset, "
        f"{args.iters} iterations per epoch, epoch {args.epochs - 1} reported (the first epochs "
        "warm caches up). images/s = iterations × batch / training time of the epoch. The time "
        "split is that epoch's (extract = features of all training images, cluster = Jaccard + "
        "DBSCAN + cross agreement, train = the iterations; the evaluation at the end of the run is "
        "not counted). One run per setting: on this 2-core machine, treat differences under "
        "~10 % as noise.",
        "",
        "| setting | batch | train images/s | extract s | cluster s | train s |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        t = r["times"]
        lines.append(
            f"| {r['setting']} | {r['batch']} | {r['images_per_s']:.1f} | {t['extract']:.1f} | "
            f"{t['cluster']:.1f} | {t['train']:.1f} |"
        )
    body = "\n".join(lines)
    print(body)
    if args.write:
        write_section(f"train-throughput-{args.method}", body)


if __name__ == "__main__":
    main()
