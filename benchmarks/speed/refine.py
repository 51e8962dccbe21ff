"""Speed of reid-refine: cross agreement (once per epoch) and the per-batch PPLR / DCLS losses.

Times ``cross_agreement`` on random L2-normalised features (N × 2048 global, N × 3 × 2048 parts,
k = 20) for each N in ``--sizes``, and one forward + backward of AALS + PGLR and of DCLS on a
training batch (64 × 3 parts, K clusters). Prints a markdown table and writes it to
docs/benchmarks.md (section ``refine-speed``) unless ``--no-write`` is given.

    python -m benchmarks.speed.refine [--sizes 2000,10000] [--dim 2048] [--device cpu|cuda]
                                      [--chunk-size R] [--repeats 3] [--no-write]

:func:`measure` times ``cross_agreement`` at one size, :func:`measure_batch_losses` the losses.
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.common import (
    best_of,
    current_memory_gib,
    machine,
    peak_memory_gib,
    write_section,
)
from reid_refine import aals_loss, cross_agreement, dcls_loss, pglr_loss


def measure(
    n: int, dim: int, parts: int, k: int, chunk: int | None, repeats: int, device: torch.device
) -> tuple[float, float]:
    """Seconds of ``cross_agreement`` and the memory it needed above its inputs (GiB)."""
    gen = torch.Generator(device=device).manual_seed(0)
    # Built and normalised in place so that making the inputs never holds two copies.
    g = torch.randn(n, dim, generator=gen, device=device)
    g /= g.norm(dim=1, keepdim=True)
    p = torch.randn(n, parts, dim, generator=gen, device=device)
    p /= p.norm(dim=2, keepdim=True)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    before = current_memory_gib(device)
    sec = best_of(lambda: cross_agreement(g, p, k=k, chunk_size=chunk), repeats, device)
    return sec, max(0.0, peak_memory_gib(device) - before)


def measure_batch_losses(
    batch: int, classes: int, dim: int, repeats: int, device: torch.device
) -> tuple[float, float]:
    gen = torch.Generator(device=device).manual_seed(1)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, device=device, requires_grad=True)

    gl, pl = rand(batch, classes), rand(batch, 3, classes)
    gf, lf = rand(batch, dim), rand(batch, 3, dim)
    y = torch.randint(0, classes, (batch,), generator=gen, device=device)
    c = torch.rand(batch, 3, generator=gen, device=device)

    def pplr() -> None:
        (aals_loss(pl, y, c) + pglr_loss(gl, pl, y, c)).backward()

    def dcls() -> None:
        dcls_loss(gl, pl, gf, lf, y).total.backward()

    # Milliseconds each: take the best of more runs so a busy machine does not dominate.
    reps = max(repeats, 10)
    return best_of(pplr, reps, device), best_of(dcls, reps, device)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", default="12936,100000", help="comma-separated N values (run in ascending order)"
    )
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--parts", type=int, default=3)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--chunk-size", type=int, default=None)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--classes", type=int, default=700)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    sizes = sorted(int(s) for s in args.sizes.split(",") if s.strip())
    device = torch.device(args.device)

    lines = [
        f"Measured on: {machine()}; device `{device}`; best of {args.repeats}.",
        "",
        f"`cross_agreement` (global {args.dim}-d + {args.parts} parts, k = {args.k}, "
        f"chunk size {args.chunk_size or 'auto'}):",
        "",
        "Inputs: N × (1 + parts) × dim float32. Peak memory: the process's peak resident set "
        "(CPU) or peak allocated memory (GPU) once that size ran (sizes run in ascending "
        "order). Working memory: that peak minus the memory in use just before the call, "
        "i.e. what `cross_agreement` itself needs beyond its inputs.",
        "",
        "| N | seconds | N² pairs per second | inputs GiB | peak memory GiB | working GiB |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for n in sizes:
        sec, working = measure(
            n, args.dim, args.parts, args.k, args.chunk_size, args.repeats, device
        )
        rate = (1 + args.parts) * n * n / sec
        inputs = n * (1 + args.parts) * args.dim * 4 / 2**30
        peak = peak_memory_gib(device)
        lines.append(
            f"| {n} | {sec:.3f} | {rate:.3g} | {inputs:.2f} | {peak:.2f} | {working:.2f} |"
        )
        print(lines[-1], flush=True)
    pplr_s, dcls_s = measure_batch_losses(args.batch, args.classes, args.dim, args.repeats, device)
    lines += [
        "",
        f"Per batch ({args.batch} images, 3 parts/locals, K = {args.classes}), forward + backward:"
        f" AALS + PGLR {pplr_s * 1e3:.2f} ms; DCLS {dcls_s * 1e3:.2f} ms.",
    ]
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        write_section("refine-speed", "## reid-refine speed\n\n" + body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
