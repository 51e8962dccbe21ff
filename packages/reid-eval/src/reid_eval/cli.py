"""The ``reid-eval`` command.

Evaluate a checkpoint (``evaluate`` is the default sub-command, so it may be left out)::

    reid-eval --checkpoint DIR --dataset market1501 --data-root PATH [--rerank] [--flip]
              [--batch-size 64] [--device auto] [--workers N] [--output metrics.json]
              [--visualize N --visualize-dir DIR] [--tsne N_IDS --tsne-out PATH]

Other sub-commands::

    reid-eval extract --checkpoint DIR --images GLOB_OR_DIR --output feats.npz  # features
    reid-eval convert OFFICIAL.pth OUT_DIR [--input-size 384 128]       # official PPLR weights
    reid-eval make-synthetic OUT_DIR [--seed S] [--num-train-ids N] ...  # write the dataset
    reid-eval summary --dataset NAME --data-root PATH                    # images/ids/cameras
    reid-eval baseline --dataset NAME --data-root PATH [--model pixels]  # no-training models
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from reid_backbones import read_checkpoint_config

from . import __version__
from .datasets import (
    SyntheticConfig,
    dataset_names,
    load_dataset,
    make_synthetic_dataset,
    synthetic_mismatch,
)
from .datasets.base import DatasetError, ReIDDataset
from .devices import resolve_device
from .extractor import FeatureFileError
from .features import ImageReadError, Preprocessing
from .metrics import RankResult

if TYPE_CHECKING:
    from .checkpoint_eval import CheckpointEvaluation

__all__ = ["format_metrics", "main"]


def format_metrics(results: dict[str, RankResult]) -> str:
    """A text table: one row per named result, columns mAP, Rank-1/5/10, mINP (percent)."""
    width = max(12, *(len(k) for k in results))
    head = f"{'model':<{width}} {'mAP':>6} {'R-1':>6} {'R-5':>6} {'R-10':>6} {'mINP':>6}"
    rows = [head, "-" * len(head)]
    for name, r in results.items():
        ranks = [r.cmc[k - 1] * 100 if k <= len(r.cmc) else float("nan") for k in (1, 5, 10)]
        rows.append(
            f"{name:<{width}} {r.mAP * 100:6.1f} {ranks[0]:6.1f} {ranks[1]:6.1f} {ranks[2]:6.1f}"
            f" {r.mINP * 100:6.1f}"
        )
    return "\n".join(rows)


def _add_synthetic_options(parser: argparse.ArgumentParser) -> None:
    for f in dataclasses.fields(SyntheticConfig):
        default = f.default
        flag = "--" + f.name.replace("_", "-")
        if isinstance(default, bool):
            parser.add_argument(
                flag,
                type=lambda s: s.lower() in ("1", "true", "yes"),
                default=None,
                metavar="BOOL",
                help=f"default {default}",
            )
        elif isinstance(default, tuple):
            parser.add_argument(
                flag,
                type=type(default[0]),
                nargs=len(default),
                default=None,
                metavar=f.name.upper()[:6],
                help=f"default {' '.join(map(str, default))}",
            )
        elif isinstance(default, (int, float)):
            parser.add_argument(flag, type=type(default), default=None, help=f"default {default}")


def _synthetic_config(args: argparse.Namespace) -> SyntheticConfig:
    given = {}
    for f in dataclasses.fields(SyntheticConfig):
        value = getattr(args, f.name, None)
        if value is not None:
            given[f.name] = tuple(value) if isinstance(f.default, tuple) else value
    return SyntheticConfig(**given)


def _cmd_make_synthetic(args: argparse.Namespace) -> int:
    config = _synthetic_config(args)
    out = Path(args.out_dir)
    if args.reuse and synthetic_mismatch(out, args.seed, config) is None:
        print(f"'{out}' already holds the synthetic dataset for seed {args.seed}; kept as is")
    else:
        start = time.perf_counter()
        make_synthetic_dataset(out, seed=args.seed, config=config, overwrite=args.overwrite)
        print(
            f"wrote the synthetic dataset (seed {args.seed}) to '{out}' "
            f"in {time.perf_counter() - start:.1f} s"
        )
    load_dataset("synthetic", out).summary()
    return 0


def _cmd_summary(args: argparse.Namespace) -> int:
    load_dataset(args.dataset, args.data_root).summary()
    return 0


def _cmd_baseline(args: argparse.Namespace) -> int:
    from .baselines import evaluate_baseline

    device = resolve_device(args.device, name="--device")  # before the dataset scan
    dataset = load_dataset(args.dataset, args.data_root)
    dataset.summary()
    results = {}
    for name in args.model:
        start = time.perf_counter()
        results[name] = evaluate_baseline(
            dataset,
            name,
            seed=args.seed,
            size=(args.height, args.width),
            batch_size=args.batch_size,
            device=device,
        )
        print(f"{name}: evaluated in {time.perf_counter() - start:.1f} s")
    print(format_metrics(results))
    if args.output:
        payload = {
            "dataset": dataset.name,
            "data_root": str(dataset.root),
            "results": {k: v.to_dict() for k, v in results.items()},
        }
        _write_json(args.output, payload)
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .checkpoint_eval import check_checkpoint, evaluate_checkpoint

    # Cheap checks first, so that a typo fails in milliseconds rather than after the dataset scan.
    device = resolve_device(args.device, name="--device")
    checkpoint = check_checkpoint(args.checkpoint)
    if args.tsne:
        from .tsne import check_tsne_dependencies

        if args.tsne < 1:
            raise ValueError(f"--tsne needs a positive number of identities, got {args.tsne}")
        try:
            check_tsne_dependencies()  # before the extraction: a missing package is named at once
        except ImportError as e:
            print(f"reid-eval: error: {e}", file=sys.stderr)
            return 2
    dataset = load_dataset(args.dataset, args.data_root)
    dataset.summary()
    config = read_checkpoint_config(checkpoint)
    print(
        f"checkpoint: {config['architecture']} {config['backbone']}, input "
        f"{Preprocessing.from_checkpoint_config(config).describe()}; on {device}"
    )
    start = time.perf_counter()
    evaluation = evaluate_checkpoint(
        checkpoint,
        dataset,
        rerank=args.rerank,
        flip=args.flip,
        batch_size=args.batch_size,
        device=device,
        num_workers=args.workers,
        progress=not args.quiet,
    )
    print(f"evaluated '{args.checkpoint}' in {time.perf_counter() - start:.1f} s")
    labels = {"plain": "checkpoint", "rerank": "+ re-ranking"}
    print(format_metrics({labels[k]: v for k, v in evaluation.results.items()}))
    if args.output:
        payload = {
            "checkpoint": str(args.checkpoint),
            "dataset": dataset.name,
            "data_root": str(dataset.root),
            "flip": args.flip,
            "architecture": evaluation.checkpoint_config.get("architecture"),
            "backbone": evaluation.checkpoint_config.get("backbone"),
            "results": {k: v.to_dict() for k, v in evaluation.results.items()},
        }
        _write_json(args.output, payload)
    if args.visualize:
        from .visualize import write_ranked_lists

        key = "rerank" if args.rerank else "plain"
        out_dir = args.visualize_dir or (Path(args.output).parent if args.output else Path("."))
        index = write_ranked_lists(
            dataset.query,
            dataset.gallery,
            evaluation.distances["rerank"] if args.rerank else evaluation.plain_distance_rows,
            Path(out_dir) / "ranked_lists",
            num_queries=args.visualize,
            title=f"{args.checkpoint} on {dataset.name} ({key})",
        )
        print(f"ranked lists written to '{index}'")
    if args.tsne:
        _write_tsne(args, dataset, evaluation)
    return 0


def _cmd_extract(args: argparse.Namespace) -> int:
    from .checkpoint_eval import check_checkpoint
    from .extractor import FeatureExtractor, check_output_path, find_images, save_features

    # Cheap checks first: the device, the checkpoint, the output, then the images.
    device = resolve_device(args.device, name="--device")
    check_checkpoint(args.checkpoint)
    if args.force_size and args.size is None:
        raise ValueError("--force-size needs --size H W (the size to force)")
    out = check_output_path(args.output)
    paths = find_images(args.images)
    extractor = FeatureExtractor(
        args.checkpoint,
        device,
        batch_size=args.batch_size,
        workers=args.workers,
        size=args.size,
        force_size=args.force_size,
        flip=args.flip,
    )
    print(
        f"{len(paths)} images; input {extractor.preprocessing.describe()}; on {device} "
        f"({extractor.workers} loading workers)"
    )
    start = time.perf_counter()
    feats = extractor(paths, progress=False if args.quiet else "features")
    save_features(out, feats, paths)
    print(
        f"features [{feats.shape[0]}, {feats.shape[1]}] of {len(paths)} images written to "
        f"'{out}' in {time.perf_counter() - start:.1f} s"
    )
    return 0


def _write_tsne(
    args: argparse.Namespace, dataset: ReIDDataset, evaluation: CheckpointEvaluation
) -> None:
    """The t-SNE figure of ``--tsne N_IDS`` from the features the evaluation extracted."""
    import numpy as np
    import torch

    from .tsne import write_tsne

    out = args.tsne_out or (Path(args.output).parent / "tsne.png" if args.output else "tsne.png")
    records = list(dataset.query) + list(dataset.gallery)
    nq = len(dataset.query)
    result = write_tsne(
        torch.cat([evaluation.query_features, evaluation.gallery_features]),
        [r.pid for r in records],
        [r.camid for r in records],
        np.arange(len(records)) < nq,
        out,
        n_ids=args.tsne,
        seed=args.tsne_seed,
        paths=[str(r.path) for r in records],
        title=f"{args.checkpoint} on {dataset.name}",
    )
    print(
        f"t-SNE of {len(result.identities)} identities ({len(result.indices)} images) written to "
        f"'{result.png}', coordinates to '{result.table}'"
    )


def _write_json(path: str, payload: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(payload, indent=2) + "\n")
    print(f"metrics written to '{path}'")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``reid-eval``."""
    from .baselines import BASELINES

    parser = argparse.ArgumentParser(
        prog="reid-eval",
        description="Re-ID evaluation: datasets, metrics, baselines, checkpoint features.",
    )
    parser.add_argument("--version", action="version", version=f"reid-eval {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("make-synthetic", help="write the synthetic dataset (Market-1501 layout)")
    p.add_argument("out_dir", metavar="OUT_DIR")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset there")
    p.add_argument(
        "--reuse",
        action="store_true",
        help="keep OUT_DIR when it already holds this seed and configuration",
    )
    _add_synthetic_options(p)
    p.set_defaults(func=_cmd_make_synthetic)

    names = ", ".join(dataset_names())
    p = sub.add_parser("summary", help="print images / identities / cameras per split")
    p.add_argument("--dataset", required=True, help=f"layout: {names}")
    p.add_argument("--data-root", required=True)
    p.set_defaults(func=_cmd_summary)

    p = sub.add_parser("baseline", help="evaluate models that need no training")
    p.add_argument("--dataset", required=True, help=f"layout: {names}")
    p.add_argument("--data-root", required=True)
    p.add_argument(
        "--model",
        nargs="+",
        default=["pixels", "random-resnet18"],
        choices=list(BASELINES),
        help="one or more baselines",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random initialisation")
    p.add_argument("--height", type=int, default=128)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto", help=_DEVICE_HELP)
    p.add_argument("--output", help="write the metrics to this JSON file")
    p.set_defaults(func=_cmd_baseline)

    p = sub.add_parser(
        "evaluate",
        help="evaluate a checkpoint (the default: 'reid-eval --checkpoint DIR ...')",
    )
    p.add_argument(
        "--checkpoint",
        required=True,
        help="folder written by save_checkpoint (or the model.safetensors in it)",
    )
    p.add_argument("--dataset", required=True, help=f"layout: {names}")
    p.add_argument("--data-root", required=True)
    p.add_argument("--rerank", action="store_true", help="also report k-reciprocal re-ranking")
    p.add_argument("--flip", action="store_true", help="average with horizontally flipped images")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=non_negative_int, default=None, help=_WORKERS_HELP)
    p.add_argument("--device", default="auto", help=_DEVICE_HELP)
    p.add_argument("--output", help="write the metrics to this JSON file")
    p.add_argument(
        "--visualize",
        type=int,
        default=0,
        metavar="N",
        help="draw the ranked lists of N random queries",
    )
    p.add_argument("--visualize-dir", help="where to put them (default: next to --output)")
    p.add_argument(
        "--tsne",
        type=int,
        default=0,
        metavar="N_IDS",
        help="draw a t-SNE of the query and gallery features of N_IDS random identities that "
        'have both (needs matplotlib: pip install "reid-eval[plot]"); fewer are drawn, with a '
        "warning, when fewer exist",
    )
    p.add_argument(
        "--tsne-out",
        metavar="PATH",
        help="the t-SNE PNG; its coordinates go to the same name with .csv (default: tsne.png "
        "next to --output, else in the current folder)",
    )
    p.add_argument("--tsne-seed", type=int, default=0, help="seed of the identity draw and t-SNE")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser(
        "extract",
        help="write a checkpoint's features of a folder or glob of images to a .npz file",
        description="Write the L2-normalised features of a checkpoint for a folder or glob of "
        "images to a .npz file: 'features' [N, D] float32, 'paths' [N] (sorted), 'pids' and "
        "'camids' [N] int64 read from Market-1501-style names such as 0002_c1s1_000451_03.jpg "
        "(pid 2, camid 0; -1 where a name carries none). The images are resized and normalised "
        "as the checkpoint's config.json says (input size, mean, std, interpolation).",
    )
    p.add_argument(
        "--checkpoint",
        required=True,
        help="folder written by save_checkpoint (or the model.safetensors in it)",
    )
    p.add_argument(
        "--images",
        required=True,
        metavar="GLOB_OR_DIR",
        help="a folder (its images, not its sub-folders'), a quoted glob pattern "
        "('data/**/*.jpg' recurses) or one image file",
    )
    p.add_argument("--output", required=True, help="the .npz file to write (replaced if present)")
    p.add_argument("--device", default="auto", help=_DEVICE_HELP)
    p.add_argument(
        "--batch-size", type=positive_int, default=64, help="images per forward pass (default 64)"
    )
    p.add_argument("--workers", type=non_negative_int, default=None, help=_WORKERS_HELP)
    p.add_argument(
        "--size",
        type=positive_int,
        nargs=2,
        metavar=("H", "W"),
        help="input height and width; must equal the checkpoint's unless --force-size",
    )
    p.add_argument(
        "--force-size",
        action="store_true",
        help="use --size even though the checkpoint was trained on another size",
    )
    p.add_argument("--flip", action="store_true", help="average with horizontally flipped images")
    p.add_argument("--quiet", action="store_true", help="no progress bar (shown on a terminal)")
    p.set_defaults(func=_cmd_extract)

    p = sub.add_parser(
        "convert",
        help="convert the official PPLR code's weights to a checkpoint folder",
        description="Convert a checkpoint of the official PPLR code (github.com/yoonkicho/PPLR: "
        "ResNetPart saved from DataParallel, keys module.base.*, bnneck*, classifier*) into a "
        "checkpoint folder that 'reid-eval --checkpoint' and reid_backbones.load_checkpoint "
        "read. The backbone, the number of parts and of classes are inferred from the weights "
        "and every key is checked (reid_backbones.convert_official_pplr).",
    )
    p.add_argument("weights", help="the official .pth file (read with weights_only=True)")
    p.add_argument("out_dir", help="the checkpoint folder to write")
    p.add_argument(
        "--input-size",
        type=positive_int,
        nargs=2,
        default=(384, 128),
        metavar=("H", "W"),
        help="the input size the weights were trained at (default 384 128: Market-1501 and "
        "MSMT17; VeRi-776: 256 256)",
    )
    p.add_argument(
        "--interpolation",
        choices=("bicubic", "bilinear", "nearest"),
        default="bicubic",
        help="the resize of the official code (default bicubic)",
    )
    p.set_defaults(func=_cmd_convert)
    return parser


def _cmd_convert(args: argparse.Namespace) -> int:
    from reid_backbones import convert_official_pplr, read_checkpoint_config

    out = convert_official_pplr(
        args.weights, args.out_dir, tuple(args.input_size), interpolation=args.interpolation
    )
    cfg = read_checkpoint_config(out)
    print(
        f"wrote '{out}': {cfg.get('name')} model, "
        f"{cfg.get('options', {}).get('num_parts', '?')} parts, {cfg.get('num_classes')} classes,"
        f" input {args.input_size[0]}x{args.input_size[1]}, {args.interpolation}; evaluate it "
        f"with: reid-eval --checkpoint {out} --dataset market1501 --data-root PATH"
    )
    return 0


_DEVICE_HELP = "auto (default: CUDA when available, else the CPU), cpu, cuda, cuda:1, mps, ..."
_WORKERS_HELP = (
    "data-loading worker processes (default: min(8, CPUs - 1) on a GPU, min(4, CPUs // 4) "
    "on the CPU)"
)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {value}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``reid-eval``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version"):
        argv.insert(0, "evaluate")  # 'reid-eval --checkpoint DIR ...' means 'evaluate'
    args = build_parser().parse_args(argv)
    from reid_backbones import CheckpointError

    try:
        return args.func(args)
    except (
        CheckpointError,
        DatasetError,
        ImageReadError,
        FeatureFileError,
        FileExistsError,
        NotADirectoryError,
        IsADirectoryError,
        ValueError,
    ) as e:
        print(f"reid-eval: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
