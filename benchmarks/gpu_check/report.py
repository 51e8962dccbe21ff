"""The GPU check's report: the docs section (``gpu-check``, or ``gpu-check-cpu`` for the
rehearsal), the summary printed at the end and the versions it names."""

from __future__ import annotations

import importlib
from typing import Any

from benchmarks.gpu_check.context import StepResult


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value != value:
            return "nan"
        if value != 0 and abs(value) < 1e-2:
            return f"{value:.3g}"
        return f"{value:,.3f}".rstrip("0").rstrip(".")
    if isinstance(value, dict):
        return ", ".join(f"{k} {_fmt(v)}" for k, v in value.items())
    return str(value)


def environment() -> dict[str, str]:
    """Versions and the device, for the report."""
    info = {}
    for module in ("torch", "torchvision", "accelerate", "numpy", "scipy", "sklearn"):
        try:
            info[module] = importlib.import_module(module).__version__
        except Exception:  # noqa: BLE001
            info[module] = "missing"
    try:
        import torch

        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            info["gpu"] = (
                f"{props.name}, {props.total_memory / 2**30:.0f} GiB, capability "
                f"{props.major}.{props.minor}, CUDA {torch.version.cuda}, cuDNN "
                f"{torch.backends.cudnn.version()}, bf16 {torch.cuda.is_bf16_supported()}"
            )
    except Exception as e:  # noqa: BLE001
        info["gpu"] = f"error: {e}"
    return info


def summary_table(results: list[StepResult]) -> str:
    rows = [("step", "status", "s", "summary")]
    rows += [(r.name, r.status, f"{r.seconds:.1f}", r.summary) for r in results]
    width = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["  ".join(row[i].ljust(width[i]) for i in range(3)) + "  " + row[3] for row in rows]
    lines.insert(1, "-" * (sum(width) + 6 + 7))
    return "\n".join(lines)


def render_report(
    results: list[StepResult], *, device: str, machine_line: str, env: dict[str, str],
    total_s: float, budget: float, commit: str, when: str,
) -> str:  # fmt: skip
    mode = "GPU" if device == "cuda" else "`--cpu` rehearsal at reduced sizes (no GPU figures)"
    lines = [
        "## GPU check (`python -m benchmarks.gpu_check`)",
        "",
        f"Machine: {machine_line}.",
        "",
        f"Run {when}, commit {commit}; mode: {mode}; {total_s:.0f} s in all (budget "
        f"{budget:.0f} s). Versions: "
        + ", ".join(f"{k} {v}" for k, v in env.items() if k != "gpu")
        + (f". GPU: {env['gpu']}." if "gpu" in env else "."),
        "",
        "| step | status | s | summary |",
        "|---|---|---:|---|",
    ]
    for r in results:
        lines.append(f"| {r.name} | {r.status} | {r.seconds:.1f} | {r.summary} |")
    lines.append("")
    for r in results:
        if not r.figures and not r.notes:
            continue
        figures = "; ".join(f"{k}: {_fmt(v)}" for k, v in r.figures.items())
        lines.append(f"- **{r.name}**: {figures}" if figures else f"- **{r.name}**")
        lines += [f"  - {note}" for note in r.notes]
    return "\n".join(lines)
