"""The regime search of benchmarks/protocols/official_regime_search.md: probes judged by the
official PPLR trainer, one factor at a time, and their table.

Each probe changes one thing of the proxy (``--target-extra`` of ``official_pplr.py``, or the
source model) and runs the official trainer's part-model baseline, AALS only and AALS + PGLR on
pair 0/100 with the seeds given (screen: seed 1). P0 is the proxy itself: its official rows are
the side-by-side's (``runs/ablation``). For every probe the table gives the official mAP of the
three rows (mean over the seeds run), the paired differences of PPLR's Table 1 ordering, the
part baseline's pseudo-label F1 (first → last epoch) and last-epoch clusters per true identity,
and whether it is *promising* by the protocol's rule (AALS + PGLR − baseline at least 6 mAP
better than P0's on the same seeds, and AALS only − baseline better than P0's).

    python benchmarks/official_probes.py --official-repo PPLR --probes P1 P2 --seeds 1   # run
    python benchmarks/official_probes.py --only-finished \\
        --json benchmarks/results/official_probes.json

Runs live in ``--workdir/<probe>/`` (P0: ``--p0-workdir``), finished ones are reused.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from _report import write_section  # noqa: E402
from official_pplr import SIDE_ROWS, run_all  # noqa: E402
from synthetic_ablation import paired_ci  # noqa: E402

ROWS = ["baseline (part model)", "PPLR: AALS only", "PPLR: AALS + PGLR"]
#: The protocol's screening rule: the full method's gap to the baseline improves this much.
PROMISING_GAIN = 6.0


@dataclass(frozen=True)
class Probe:
    id: str
    hypothesis: str
    target: tuple[str, ...] = ()
    source: tuple[str, ...] = ()  # a probe of the start trains its own source model

    @property
    def change(self) -> str:
        parts = [*self.target, *(f"source: {x}" for x in self.source)]
        return " ".join(parts) or "none (the proxy)"


PROBES = [
    Probe("P0", "the current proxy"),
    Probe("P1", "(c) images per identity vs k = 20",
          ("data.synthetic_options.images_per_camera=[6, 10]",)),
    Probe("P2", "(c) k matched to the images per identity", ("method.agreement_k=10",)),
    Probe("P3", "(d) parts with different evidence",
          ("data.synthetic_options.occlusion_prob=0.4",)),
    Probe("P4", "(b) more clustering noise", ("data.synthetic_options.family_frac=0.8",)),
    Probe("P5", "(a) length, with P1's data",
          ("data.synthetic_options.images_per_camera=[6, 10]", "optim.epochs=20",
           "optim.milestones=[8, 16]")),
    Probe("P6", "(b) a weaker start", (), ("optim.epochs=5", "optim.milestones=[2, 4]")),
]  # fmt: skip
BY_ID = {p.id: p for p in PROBES}


def _workdir(args: argparse.Namespace, probe: Probe) -> Path:
    return args.p0_workdir if probe.id == "P0" else args.workdir / probe.id


def _args(args: argparse.Namespace, probe: Probe, only_finished: bool) -> SimpleNamespace:
    """official_pplr's options for one probe."""
    source = None if probe.source else args.p0_workdir / "t0_s100" / "source_model"
    return SimpleNamespace(
        official_repo=args.official_repo, target_seed=0, source_seed=100, seeds=args.seeds,
        workdir=_workdir(args, probe), source_model=source, official_only=True, ours_only=False,
        only_finished=only_finished, extra=[], target_extra=list(probe.target),
        source_extra=list(probe.source),
    )  # fmt: skip


def run_probe(args: argparse.Namespace, probe: Probe) -> None:
    """Train the probe's missing official runs (a fresh ``official_pplr.py`` process)."""
    a = _args(args, probe, only_finished=False)
    cmd = [sys.executable, str(HERE / "official_pplr.py"), "--official-repo", str(a.official_repo),
           "--official-only", "--no-write", "--seeds", *map(str, a.seeds), "--rows", *ROWS,
           "--workdir", str(a.workdir)]  # fmt: skip
    if a.source_model is not None:
        cmd += ["--source-model", str(a.source_model)]
    if a.target_extra:
        cmd += ["--target-extra", *a.target_extra]
    if a.source_extra:
        cmd += ["--source-extra", *a.source_extra]
    subprocess.run(cmd, cwd=ROOT, check=True)


def collect(args: argparse.Namespace, probe: Probe) -> list[dict]:
    """The probe's finished official runs (none when its folder does not exist yet)."""
    if not (_workdir(args, probe) / "t0_s100" / "data_target").exists():
        return []
    rows = [r for r in SIDE_ROWS if r.name in ROWS]
    return [{**r, "probe": probe.id} for r in run_all(_args(args, probe, True), rows)]


def _maps(runs: list[dict], row: str) -> dict[int, float]:
    return {r["seed"]: r["mAP"] for r in runs if r["row"] == row}


def _diff(a: dict[int, float], b: dict[int, float], seeds: list[int]) -> tuple[float, str]:
    both = [s for s in seeds if s in a and s in b]
    if not both:
        return float("nan"), "–"
    d, lo, hi = paired_ci([a[s] for s in both], [b[s] for s in both])
    return d, (f"{d:+.1f} ({lo:+.1f}, {hi:+.1f})" if len(both) > 1 else f"{d:+.1f}")


def table(runs: list[dict], seeds: list[int]) -> str:
    lines = [
        "| probe | hypothesis | change | seeds | part baseline | AALS only | AALS + PGLR "
        "| AALS − base | full − AALS | full − base | base F1 first → last | clusters / ids "
        "| promising |",
        "|" + "---|" * 13,
    ]
    p0 = [r for r in runs if r["probe"] == "P0"]
    p0_base, p0_aals, p0_full = (_maps(p0, row) for row in ROWS)
    for probe in PROBES:
        mine = [r for r in runs if r["probe"] == probe.id]
        base, aals, full = (_maps(mine, row) for row in ROWS)
        done = sorted(set(base) & set(aals) & set(full) & set(seeds))
        if not done:
            continue
        cells = [f"{statistics.fmean(m[s] for s in done):.1f}" for m in (base, aals, full)]
        d1, t1 = _diff(aals, base, done)
        _, t2 = _diff(full, aals, done)
        d3, t3 = _diff(full, base, done)
        first = statistics.fmean(r["epochs"][0]["pairwise_f1"] for r in mine
                                 if r["row"] == ROWS[0] and r["seed"] in done)  # fmt: skip
        last_runs = [r["epochs"][-1] for r in mine if r["row"] == ROWS[0] and r["seed"] in done]
        last = statistics.fmean(e["pairwise_f1"] for e in last_runs)
        ratio = statistics.fmean(e["clusters"] / e["true_identities"] for e in last_runs)
        verdict = "–"
        if probe.id != "P0":
            ref1, _ = _diff(p0_aals, p0_base, done)
            ref3, _ = _diff(p0_full, p0_base, done)
            if ref3 == ref3:  # P0 has these seeds
                good = d3 - ref3 >= PROMISING_GAIN and d1 > ref1
                verdict = f"{'yes' if good else 'no'} ({d3 - ref3:+.1f} vs P0)"
        lines.append(
            f"| {probe.id} | {probe.hypothesis} | `{probe.change}` | "
            f"{', '.join(map(str, done))} | {' | '.join(cells)} | {t1} | {t2} | {t3} | "
            f"{first:.2f} → {last:.2f} | {ratio:.2f} | {verdict} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--official-repo", type=Path, help="a yoonkicho/PPLR checkout (to run)")
    parser.add_argument("--probes", nargs="+", default=[p.id for p in PROBES], choices=list(BY_ID))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--workdir", type=Path, default=ROOT / "runs" / "probes")
    parser.add_argument("--p0-workdir", type=Path, default=ROOT / "runs" / "ablation")
    parser.add_argument("--only-finished", action="store_true", help="train nothing")
    parser.add_argument("--json", type=Path, help="write every probe run's figures here")
    parser.add_argument("--no-write", dest="write", action="store_false")
    args = parser.parse_args()
    if not args.only_finished:
        if args.official_repo is None:
            parser.error("--official-repo is needed to run probes (or --only-finished)")
        for pid in args.probes:
            run_probe(args, BY_ID[pid])
    runs = [r for pid in args.probes for r in collect(args, BY_ID[pid])]
    if "P0" not in args.probes:
        runs += collect(args, BY_ID["P0"])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"runs": runs}, indent=1) + "\n")
        print(f"wrote {args.json}")
    text = table(runs, args.seeds)
    print(text)
    if args.write:
        write_section(
            "official-regime-search",
            "## The regime search: probes judged by the official PPLR trainer\n\n"
            "Setting and rules: `benchmarks/protocols/official_regime_search.md`, fixed before "
            "the probes ran. Regenerate with `python benchmarks/official_probes.py "
            f"--only-finished --seeds {' '.join(map(str, args.seeds))}`. mAP of the official "
            "trainer (mean over the seeds); differences paired by seed (95 % t interval with "
            "more than one seed); F1 and clusters: the part baseline's pseudo labels.\n\n" + text,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
