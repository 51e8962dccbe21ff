"""The ``reid-train`` command; also ``python -m reid_train``, ``accelerate launch -m reid_train``.

::

    reid-train --config configs/pplr_market1501.yaml [--output-dir DIR] [--resume] [key=value ...]

``key=value`` overrides use dotted keys (``optim.lr=1e-4 method.use_aals=false``); unknown keys
are an error that names the key. The resolved config is saved as ``config.yaml`` in the run folder.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reid-train",
        description="Unsupervised re-ID training (baseline, PPLR, PPLR+camera, DCLS).",
        epilog="Multi-GPU / multi-process: accelerate launch [--multi_gpu --num_processes N] "
        "-m reid_train --config FILE ...",
    )
    parser.add_argument("--version", action="version", version=f"reid-train {__version__}")
    parser.add_argument("--config", required=True, help="YAML file (see configs/)")
    parser.add_argument("--output-dir", help="run folder (default: runtime.output_dir)")
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in the output folder"
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="config overrides, e.g. optim.lr=1e-4"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (2 for bad input, 1 for a diverged run)."""
    args = build_parser().parse_args(argv)
    from reid_backbones import PretrainedWeightsError
    from reid_eval import DatasetError, ImageReadError

    from .config import ConfigError, load_config
    from .data import BadImagesError
    from .engine import TrainingDivergedError, train

    try:
        config = load_config(args.config, args.overrides)
        if args.output_dir:
            config.runtime.output_dir = args.output_dir
        evaluations = train(config, config.runtime.output_dir, resume=args.resume)
    except (ConfigError, DatasetError, ImageReadError, BadImagesError, PretrainedWeightsError,
            FileNotFoundError) as e:  # fmt: skip
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
