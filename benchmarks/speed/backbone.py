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

    python -m benchmarks.speed.backbone [--device cpu|cuda] [--batch 8] [--iters 3] [--warmup 1]
                                        [--size 256x128] [--backbone resnet50]
                                        [--models baseline,pplr,dcls]
                                        [--modes fp32,channels_last,bf16] [--no-write]
                                        [--output FILE]

:func:`measure_train_step` is the training-step throughput of ``python -m benchmarks.gpu_check``
(step 4: an Adam step too, mean rate over the timed iterations, the losses and peak GPU memory);
both build the model and batch with :func:`prepare` and the loss with :func:`classifier_loss`.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path

import torch
from torch.nn import functional as F

from benchmarks.common import BENCHMARKS_MD, best_of, machine, sync, write_section
from reid_backbones import build_model

MODES = ("fp32", "channels_last", "bf16")
NUM_CLASSES = 500


def _best_of(fn, warmup: int, iters: int, device: torch.device) -> float:  # noqa: ANN001
    for _ in range(warmup):
        fn()
    return best_of(fn, iters, device)


def prepare(
    name: str,
    *,
    backbone: str,
    size: tuple[int, int],
    batch: int,
    num_classes: int,
    channels_last: bool,
    device: torch.device | str,
) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """Model ``name`` (seed 0), a random batch of images and random targets, on ``device``;
    model and images in channels_last memory format with ``channels_last``."""
    torch.manual_seed(0)
    model = build_model(name, backbone, num_classes=num_classes, input_size=size).to(device)
    images = torch.randn(batch, 3, *size, device=device)
    targets = torch.randint(0, num_classes, (batch,), device=device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    return model, images, targets


def autocast(bf16: bool, device: torch.device | str) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device``'s type, or nothing."""
    if bf16:
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def classifier_loss(
    model: torch.nn.Module, images: torch.Tensor, targets: torch.Tensor, *, bf16: bool
) -> torch.Tensor:
    """Forward + cross-entropy on every classifier (global, and each part's when the model has
    parts), under bf16 autocast with ``bf16``."""
    with autocast(bf16, images.device):
        out = model(images)
        loss = F.cross_entropy(out.global_logits.float(), targets)
        if out.part_logits is not None:
            logits = out.part_logits.float().flatten(0, 1)
            loss = loss + F.cross_entropy(
                logits, targets.repeat_interleave(out.part_logits.shape[1])
            )
    return loss


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
    bf16 = mode == "bf16"
    model, images, targets = prepare(
        name, backbone=backbone, size=size, batch=batch, num_classes=NUM_CLASSES,
        channels_last=mode in ("channels_last", "bf16"), device=device,
    )  # fmt: skip

    def infer() -> None:
        with torch.no_grad(), autocast(bf16, device):
            model(images)

    def train_step() -> None:
        classifier_loss(model, images, targets, bf16=bf16).backward()
        model.zero_grad(set_to_none=True)

    model.eval()
    infer_s = _best_of(infer, warmup, iters, device)
    model.train()
    train_s = _best_of(train_step, warmup, iters, device)
    return batch / infer_s, batch / train_s


def measure_train_step(
    name: str,
    *,
    bf16_channels_last: bool,
    backbone: str,
    size: tuple[int, int],
    batch: int,
    num_classes: int,
    warmup: int,
    iters: int,
    device: str,
) -> tuple[float, list[float], float | None]:
    """Training throughput with an Adam step, fp32 or bf16 autocast + channels_last: (images/s
    over ``iters`` timed iterations after ``warmup``, their losses, peak GPU GiB (None on the
    CPU))."""
    model, images, targets = prepare(
        name, backbone=backbone, size=size, batch=batch, num_classes=num_classes,
        channels_last=bf16_channels_last, device=device,
    )  # fmt: skip
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3.5e-4)

    def step() -> torch.Tensor:
        loss = classifier_loss(model, images, targets, bf16=bf16_channels_last)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    for _ in range(warmup):
        step()
    sync(device)
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    losses = [step() for _ in range(iters)]
    sync(device)
    seconds = time.perf_counter() - t
    peak = round(torch.cuda.max_memory_allocated() / 2**30, 3) if cuda else None
    return batch * iters / seconds, [float(v) for v in losses], peak


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
