"""The proxy's configs and rows: what each row of the evidence modules trains (a library module
of :mod:`benchmarks.proxy`, not a command).

A row is a ``configs/synthetic_*.yaml`` with overrides; :data:`ABLATION_ROWS` are the rows of
``python -m benchmarks.proxy.ablation``, which ``benchmarks.proxy.official_pplr`` shares run
folders with.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

SOURCE_CONFIG = "configs/synthetic_source.yaml"
BASELINE = "configs/synthetic_baseline.yaml"
PPLR = "configs/synthetic_pplr.yaml"
DCLS = "configs/synthetic_dcls.yaml"
CLUSTER_CONTRAST = "configs/synthetic_cluster_contrast.yaml"


@dataclass(frozen=True)
class Row:
    name: str
    config: str
    overrides: tuple[str, ...] = field(default=())
    core: bool = False


class Named(Protocol):
    name: str


R = TypeVar("R", bound=Named)


def add_rows_argument(parser: argparse.ArgumentParser, rows: Sequence[Named]) -> None:
    """``--rows NAME ...``: a subset of ``rows`` (default: all of them)."""
    names = [r.name for r in rows]
    parser.add_argument("--rows", nargs="+", help=f"row names (default: all): {names}")


def chosen_rows(
    parser: argparse.ArgumentParser, wanted: list[str] | None, rows: Sequence[R]
) -> list[R]:
    """The rows ``--rows`` names, in the order of ``rows`` (all when ``wanted`` is None); an
    unknown name is a usage error listing the known ones."""
    names = [r.name for r in rows]
    unknown = set(wanted or ()) - set(names)
    if unknown:
        parser.error(f"unknown rows {sorted(unknown)}; choose from {names}")
    return [r for r in rows if not wanted or r.name in wanted]


NO_PART_REFINEMENT = ("method.use_aals=false", "method.use_pglr=false", "method.part_epsilon=0.0")
ABLATION_ROWS = [
    Row("supervised", BASELINE, ("cluster.labels=ground_truth",), core=True),
    Row("baseline", BASELINE, ("method.global_epsilon=0.0",), core=True),
    Row("baseline (part model)", PPLR, NO_PART_REFINEMENT, core=True),
    Row("baseline + constant LS", BASELINE, ("method.global_epsilon=0.1",)),
    Row("PPLR: AALS only", PPLR, ("method.use_pglr=false",), core=True),
    Row("PPLR: PGLR only", PPLR, ("method.use_aals=false", "method.part_epsilon=0.0"), core=True),
    Row("PPLR: AALS + PGLR", PPLR, core=True),
    Row("PPLR + camera", "configs/synthetic_pplr_cam.yaml"),
    Row(
        "DCLS: LS'_l only", DCLS, ("method.local_smoothing=initial", "method.global_smoothing=none")
    ),  # fmt: skip
    Row("DCLS: LS''_l only", DCLS, ("method.local_smoothing=dcls", "method.global_smoothing=none")),
    Row(
        "DCLS: LS_g only",
        DCLS,
        ("method.local_smoothing=none", "method.global_smoothing=dcls"),
        core=True,
    ),  # fmt: skip
    Row("DCLS: full", DCLS, core=True),
    Row("DCLS: non-cross", DCLS, ("method.guidance=non_cross",)),
    Row("DCLS: CBAM attention", DCLS, ("model.attention=cbam",)),
    Row("DCLS: ECA attention", DCLS, ("model.attention=eca",)),
    Row("DCLS: no attention", DCLS, ("model.attention=none",)),
    Row("Cluster Contrast", CLUSTER_CONTRAST),
]


def slug(text: str) -> str:
    """A row's folder name."""
    return "".join(c if c.isalnum() else "_" for c in text.lower()).strip("_")
