"""The ``reid-train`` command; also ``python -m reid_train``, ``accelerate launch -m reid_train``
and ``accelerate launch --no_python reid-train`` (``accelerate launch reid-train`` alone makes
accelerate run ``python reid-train``, a file that does not exist).

::

    reid-train --config configs/pplr_market1501.yaml [--output-dir DIR] [--overwrite]
               [key=value ...]
    reid-train --config pplr_market1501 ...        # a shipped config, by name
    reid-train --resume RUN_DIR [key=value ...]     # the run's own config.yaml
    reid-train plot RUN_DIR [--out DIR] [--dpi 120]

``key=value`` overrides use dotted keys (``optim.lr=1e-4 method.use_aals=false``) and may come
before or after the options; unknown keys are an error that names the key. The resolved config is
saved as ``config.yaml`` in the run folder. ``--resume RUN_DIR`` continues that run with its own
``config.yaml`` (overrides the resume allows still apply, e.g. ``optim.epochs=80`` to train
longer); ``--config FILE --output-dir DIR --resume`` (the older form) still works. ``plot``
draws the figures of a run folder (:func:`reid_train.plots.plot_run`) into ``RUN_DIR/plots`` (or
``--out``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__

__all__ = ["build_parser", "build_plot_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of a training run (``reid-train --config FILE ...``)."""
    parser = argparse.ArgumentParser(
        prog="reid-train",
        usage="%(prog)s [-h] [--version] --config CONFIG [--output-dir OUTPUT_DIR] "
        "[--overwrite] [key=value ...]\n       %(prog)s --resume RUN_DIR [key=value ...]\n"
        "       %(prog)s plot RUN_DIR [--out DIR] [--dpi DPI]",
        description="Unsupervised re-ID training (baseline, PPLR, PPLR+camera, DCLS). "
        "'reid-train plot RUN_DIR' draws the figures of a run (see 'reid-train plot -h').",
        epilog="Multi-GPU / multi-process: accelerate launch [--multi_gpu --num_processes N] "
        "-m reid_train --config FILE ... (or: accelerate launch ... --no_python reid-train "
        "--config FILE ...)",
    )
    parser.add_argument("--version", action="version", version=f"reid-train {__version__}")
    parser.add_argument(
        "--config",
        help="YAML file, or the name of a shipped config (e.g. pplr_market1501; see configs/); "
        "with --resume RUN_DIR: the run's config.yaml",
    )
    parser.add_argument("--output-dir", help="run folder (default: runtime.output_dir)")
    runs = parser.add_mutually_exclusive_group()
    runs.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=False,
        metavar="RUN_DIR",
        help="continue a run: RUN_DIR (its config.yaml, overrides applied), or the --output-dir "
        "of --config",
    )
    runs.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run already in the output folder (a new run refuses one otherwise)",
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="config overrides, e.g. optim.lr=1e-4"
    )
    return parser


def build_plot_parser() -> argparse.ArgumentParser:
    """The argument parser of ``reid-train plot``."""
    from .plots import FIGURES, PLOTS_DIR

    parser = argparse.ArgumentParser(
        prog="reid-train plot",
        description="Draw the figures of a training run from its history.jsonl and "
        f"metrics.jsonl: {', '.join(FIGURES)} (each only when the run has its data).",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="folder written by reid-train")
    parser.add_argument(
        "--out", metavar="DIR", help=f"where the PNGs go (default RUN_DIR/{PLOTS_DIR})"
    )
    parser.add_argument("--dpi", type=int, default=120, help="resolution (default 120)")
    return parser


def _plot(argv: Sequence[str]) -> int:
    parser = build_plot_parser()
    args = parser.parse_args(argv)
    if args.dpi < 10:
        parser.error(f"--dpi must be at least 10, got {args.dpi}")
    from .plots import plot_run

    try:
        written = plot_run(args.run_dir, args.out, dpi=args.dpi)
    except (OSError, ImportError) as e:  # no run folder / history.jsonl, no matplotlib
        print(f"reid-train plot: error: {e}", file=sys.stderr)
        return 2
    if not written:
        print(f"reid-train plot: error: '{args.run_dir}' has nothing to plot yet", file=sys.stderr)
        return 2
    names = ", ".join(p.name for p in written)
    print(f"{len(written)} figure(s) written to '{written[0].parent}': {names}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (2 for bad input, 1 for a diverged run)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "plot":
        return _plot(argv[1:])
    # intermixed: 'key=value' overrides may also follow --output-dir / --resume
    parser = build_parser()
    args = parser.parse_intermixed_args(argv)
    if isinstance(args.resume, str) and "=" in args.resume:  # "--resume key=value": an override
        args.overrides.insert(0, args.resume)
        args.resume = True
    if isinstance(args.resume, str):
        if args.output_dir and args.output_dir != args.resume:
            parser.error(f"--resume {args.resume} and --output-dir {args.output_dir} differ")
        args.output_dir = args.resume
        if args.config is None:
            args.config = str(Path(args.resume) / "config.yaml")
            if not Path(args.config).is_file():
                print(
                    f"reid-train: error: --resume {args.resume}: no config.yaml there (not a run "
                    "folder of reid-train?); give --config FILE too",
                    file=sys.stderr,
                )
                return 2
    if args.config is None:
        parser.error("--config is required (or --resume RUN_DIR to continue a run)")
    from reid_backbones import PretrainedWeightsError
    from reid_eval import DatasetError, ImageReadError

    from .config import ConfigError, find_config, load_config
    from .data import BadImagesError
    from .run_folder import RunDirError
    from .trainer import TrainingDivergedError, train

    try:
        config = load_config(find_config(args.config), args.overrides)
        if args.output_dir:
            config.runtime.output_dir = args.output_dir
        evaluations = train(
            config, config.runtime.output_dir, resume=bool(args.resume), overwrite=args.overwrite
        )
    except (ConfigError, DatasetError, ImageReadError, BadImagesError, PretrainedWeightsError,
            RunDirError, FileNotFoundError) as e:  # fmt: skip
        print(f"reid-train: error: {e}", file=sys.stderr)
        return 2
    except TrainingDivergedError as e:
        print(f"reid-train: {e}", file=sys.stderr)
        return 1
    if evaluations and "mAP" in evaluations[-1]:
        last, first = evaluations[-1], evaluations[0]
        if first["epoch"] == -1 and last is not first:
            print(
                f"before training: mAP {100 * first['mAP']:.1f}, Rank-1 {100 * first['rank1']:.1f}"
                f"  ->  after {last['epoch'] + 1} epochs: mAP {100 * last['mAP']:.1f}, "
                f"Rank-1 {100 * last['rank1']:.1f}"
            )
        print(
            f"done: final mAP {100 * last['mAP']:.1f}, Rank-1 {100 * last['rank1']:.1f}; best mAP "
            f"{100 * last['best_mAP']:.1f} (epoch {last['best_epoch']}); run folder "
            f"'{config.runtime.output_dir}'"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
