"""Speed of the reid-backbones models: images/s in inference and in training (forward + backward).

Times the ResNet-50 ``baseline``, ``pplr`` (3 stripes) and ``dcls`` (soft attention, 3 overlapping
regions) models at 256×128 in three settings:

* ``fp32`` — float32, NCHW (contiguous) tensors;
* ``channels_last`` — float32, model and input in channels_last memory format;
* ``bf16`` — channels_last under ``torch.autocast`` with bfloat16.

Inference: ``model.eval()`` forward under ``torch.no_grad()``. Training: ``model.train()``
forward + cross-entropy on every classifier + backward (no optimizer step). Best of ``--iters``
timed batches after ``--warmup`` untimed ones. Prints a markdown table and writes it to
docs/benchmarks.md (section ``backbone-speed``) unless ``--no-write`` is given.

    python benchmarks/backbone_speed.py [--device cpu|cuda] [--batch 8] [--iters 3] [--warmup 1]
                                        [--size 256x128] [--backbone resnet50]
                                        [--models baseline,pplr,dcls]
                                        [--modes fp32,channels_last,bf16] [--no-write]
                                        [--output FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import BENCHMARKS_MD, machine, write_section  # noqa: E402

from reid_backbones import build_model  # noqa: E402

MODES = ("fp32", "channels_last", "bf16")
NUM_CLASSES = 500


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _best_of(fn: Callable[[], object], warmup: int, iters: int, device: torch.device) -> float:
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(iters):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def measure(
    name: str,
    mode: str,
    *,
    backbone: str,
    size: tuple[int, int],
    batch: int,
    warmup: int,
    iters: int,
    device: torch.device,
) -> tuple[float, float]:
    """Images per second of ``name`` in ``mode``: (inference, training step)."""
    torch.manual_seed(0)
    model = build_model(name, backbone, num_classes=NUM_CLASSES, input_size=size).to(device)
    images = torch.randn(batch, 3, *size, device=device)
    targets = torch.randint(0, NUM_CLASSES, (batch,), device=device)
    if mode in ("channels_last", "bf16"):
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)

    def autocast() -> contextlib.AbstractContextManager:
        if mode == "bf16":
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def infer() -> None:
        with torch.no_grad(), autocast():
            model(images)

    def train_step() -> None:
        with autocast():
            out = model(images)
            loss = F.cross_entropy(out.global_logits.float(), targets)
            if out.part_logits is not None:
                logits = out.part_logits.float().flatten(0, 1)
                loss = loss + F.cross_entropy(logits, targets.repeat_interleave(model.num_parts))
        loss.backward()
        model.zero_grad(set_to_none=True)

    model.eval()
    infer_s = _best_of(infer, warmup, iters, device)
    model.train()
    train_s = _best_of(train_step, warmup, iters, device)
    return batch / infer_s, batch / train_s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--iters", type=int, default=3, help="timed batches (best is kept)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--size", default="256x128", help="HxW of the input images")
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--models", default="baseline,pplr,dcls")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--output", type=Path, default=BENCHMARKS_MD, help="markdown file")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda asked for, but torch sees no GPU")
    h, w = (int(v) for v in args.size.lower().split("x"))
    names = [m for m in args.models.split(",") if m]
    modes = [m for m in args.modes.split(",") if m]
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        parser.error(f"unknown mode(s) {', '.join(unknown)}; choose from {', '.join(MODES)}")

    lines = [
        f"Measured on: {machine()}; device `{device}`.",
        "",
        f"{args.backbone} (last stride 1) at {h}×{w}, batch {args.batch}, {NUM_CLASSES} classes; "
        f"images/s, best of {args.iters} batches after {args.warmup} warm-up. Inference: eval "
        "forward, no grad. Training: forward + cross-entropy on every classifier + backward. "
        "`channels_last`: fp32 in channels_last format; `bf16`: channels_last + bf16 autocast. "
        "Models: `pplr` = 3 stripes, `dcls` = soft attention + 3 overlapping regions.",
        "",
        "| model | mode | inference img/s | training img/s |",
        "|---|---|---:|---:|",
    ]
    print("\n".join(lines), flush=True)
    for name in names:
        for mode in modes:
            infer, train = measure(
                name,
                mode,
                backbone=args.backbone,
                size=(h, w),
                batch=args.batch,
                warmup=args.warmup,
                iters=args.iters,
                device=device,
            )
            lines.append(f"| {name} | {mode} | {infer:.1f} | {train:.1f} |")
            print(lines[-1], flush=True)
    body = "\n".join(lines)
    if not args.no_write:
        write_section("backbone-speed", "## reid-backbones speed\n\n" + body, path=args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
