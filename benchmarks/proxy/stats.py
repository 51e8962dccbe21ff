"""The evidence modules' statistics: mean ± standard deviation over seeds and the paired 95 % t
interval (a library module of :mod:`benchmarks.proxy`, not a command)."""

from __future__ import annotations

import math
import statistics


def mean_std(values: list[float], digits: int = 1) -> str:
    """mean ± sample standard deviation; one value has no spread and is shown alone."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.fmean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def paired_ci(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """Mean of a − b and its 95 % t interval (pairs by position)."""
    from scipy import stats

    diffs = [x - y for x, y in zip(a, b, strict=True)]
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return mean, math.nan, math.nan
    half = stats.t.ppf(0.975, len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return mean, mean - half, mean + half
