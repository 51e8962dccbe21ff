"""The regime search of benchmarks/protocols/official_regime_search.md: probes judged by the
official PPLR trainer, one factor at a time, and their table.

Each probe changes one thing of the proxy (``--target-extra`` of
``benchmarks.proxy.official_pplr``, or the source model) and runs the official trainer's
part-model baseline, AALS only and AALS + PGLR on pair 0/100 with the seeds given (screen: seed
1). P0 is the proxy itself: its official rows are the side-by-side's (``runs/ablation``). For
every probe the table gives the official mAP of the three rows (mean over the seeds run), the
paired differences of PPLR's Table 1 ordering, the part baseline's pseudo-label F1 (first →
last epoch) and last-epoch clusters per true identity, whether it is *promising* by the
protocol's rule (AALS + PGLR − baseline at least 6 mAP better than P0's on the same seeds, and
AALS only − baseline better than P0's), and the probe's supervised mAP by our trainer when a
record holds one (row ``supervised``, trainer ``ours``, the probe's id; '–' otherwise). From the
repository root:

    python -m benchmarks.proxy.official_probes --official-repo PPLR --probes P1 P2 --seeds 1
    python -m benchmarks.proxy.official_probes --only-finished \\
        --json benchmarks/results/official_probes.json
    python -m benchmarks.proxy.official_probes --seeds 1 \\
        --from-json benchmarks/results/official_probes.json \\
        P4=benchmarks/results/official_probe_P4.json

Runs live in ``--workdir/<probe>/`` (P0: ``--p0-workdir``), finished ones are reused.
``--json OUT`` merges the runs collected into ``OUT`` (a run replaces the record of the same
(probe, trainer, row, seed); the others stay), each with the ``commit`` of the code that trained
it (null when unknown). ``--from-json FILE [FILE ...]`` trains nothing and needs no run folder:
the table comes from the records (merged in order); ``P4=FILE`` reads a record file of
``official_pplr --json`` (records without a ``probe``) as probe P4's. When no P0 record of a
probe exists, the P0 rows are the official trainer's records of the side-by-side (``--p0-json``,
by default ``benchmarks/results/official_pplr_t0_s100.json``; with ``--from-json``, also the
records without a ``probe`` of a file given without ``ID=``).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from benchmarks.common import RESULTS, ROOT, shown, write_section
from benchmarks.proxy.official_pplr import SIDE_ROWS, run_all
from benchmarks.proxy.runs import merge_runs, read_runs, write_runs
from benchmarks.proxy.stats import paired_ci

ROWS = ["baseline (part model)", "PPLR: AALS only", "PPLR: AALS + PGLR"]
#: The protocol's screening rule: the full method's gap to the baseline improves this much.
PROMISING_GAIN = 6.0
#: The side-by-side's records: P0's official rows when no probe record of P0 exists.
P0_RECORDS = RESULTS / "official_pplr_t0_s100.json"
#: The record of a probe's supervised run by our trainer (its own column).
SUPERVISED = "supervised"


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
    """Train the probe's missing official runs (a fresh ``official_pplr`` process)."""
    a = _args(args, probe, only_finished=False)
    cmd = [sys.executable, "-m", "benchmarks.proxy.official_pplr",
           "--official-repo", str(a.official_repo), "--official-only", "--no-write",
           "--seeds", *map(str, a.seeds), "--rows", *ROWS, "--workdir", str(a.workdir)]  # fmt: skip
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


def side_by_side_p0(runs: list[dict]) -> list[dict]:
    """P0's runs from records of the side-by-side (no ``probe``): the official trainer's three
    rows, as probe P0."""
    return [
        {**r, "probe": "P0"} for r in runs
        if "probe" not in r and r.get("trainer") == "official" and r["row"] in ROWS
    ]  # fmt: skip


def with_p0(runs: list[dict], p0_records: Path | None) -> list[dict]:
    """``runs`` (probe records) with P0's rows: their own when some record of P0 exists, else
    the official rows of the side-by-side's record file ``p0_records`` (when it exists)."""
    if any(r["probe"] == "P0" for r in runs) or p0_records is None or not p0_records.exists():
        return runs
    return runs + side_by_side_p0(read_runs([p0_records]))


def _official(runs: list[dict]) -> list[dict]:
    """The official trainer's runs (a record without a trainer is one)."""
    return [r for r in runs if r.get("trainer", "official") == "official"]


def _maps(runs: list[dict], row: str) -> dict[int, float]:
    return {r["seed"]: r["mAP"] for r in _official(runs) if r["row"] == row}


def _diff(a: dict[int, float], b: dict[int, float], seeds: list[int]) -> tuple[float, str]:
    both = [s for s in seeds if s in a and s in b]
    if not both:
        return float("nan"), "–"
    d, lo, hi = paired_ci([a[s] for s in both], [b[s] for s in both])
    return d, (f"{d:+.1f} ({lo:+.1f}, {hi:+.1f})" if len(both) > 1 else f"{d:+.1f}")


def _supervised(runs: list[dict], seeds: list[int]) -> str:
    """The probe's supervised mAP by our trainer, mean over ``seeds`` (the seeds it has of them
    named when not all); '–' without a record."""
    maps = {
        r["seed"]: r["mAP"] for r in runs
        if r["row"] == SUPERVISED and r.get("trainer") == "ours" and r["seed"] in seeds
    }  # fmt: skip
    if not maps:
        return "–"
    text = f"{statistics.fmean(maps.values()):.1f}"
    if sorted(maps) != sorted(seeds):
        text += f" (seed{'s' if len(maps) > 1 else ''} {', '.join(map(str, sorted(maps)))})"
    return text


def table(runs: list[dict], seeds: list[int]) -> str:
    lines = [
        "| probe | hypothesis | change | seeds | part baseline | AALS only | AALS + PGLR "
        "| AALS − base | full − AALS | full − base | base F1 first → last | clusters / ids "
        "| promising | supervised (ours) |",
        "|" + "---|" * 14,
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
        base_runs = [r for r in _official(mine) if r["row"] == ROWS[0] and r["seed"] in done]
        first = statistics.fmean(r["epochs"][0]["pairwise_f1"] for r in base_runs)
        last_runs = [r["epochs"][-1] for r in base_runs]
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
            f"{first:.2f} → {last:.2f} | {ratio:.2f} | {verdict} | {_supervised(mine, done)} |"
        )
    return "\n".join(lines)


def _record_file(spec: str) -> tuple[str | None, Path]:
    """``ID=FILE`` (the records without a probe are probe ID's) or ``FILE``."""
    probe, sep, path = spec.partition("=")
    if sep and probe in BY_ID:
        return probe, Path(path)
    return None, Path(spec)


def from_records(specs: list[str]) -> list[dict]:
    """The records of ``--from-json``'s files, merged in order; a file given as ``ID=FILE``
    tags its records without a probe as probe ID's."""
    records: list[dict] = []
    for probe, path in map(_record_file, specs):
        runs = read_runs([path])
        if probe is not None:
            runs = [r if "probe" in r else {**r, "probe": probe} for r in runs]
        records = merge_runs(records, runs)
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--official-repo", type=Path, help="a yoonkicho/PPLR checkout (to run)")
    parser.add_argument("--probes", nargs="+", default=[p.id for p in PROBES], choices=list(BY_ID))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--workdir", type=Path, default=ROOT / "runs" / "probes")
    parser.add_argument("--p0-workdir", type=Path, default=ROOT / "runs" / "ablation")
    parser.add_argument("--only-finished", action="store_true", help="train nothing")
    parser.add_argument(
        "--json",
        type=Path,
        help="merge every probe run's figures (with --from-json: the probe records read) into "
        "this record file",
    )
    parser.add_argument(
        "--from-json",
        nargs="+",
        metavar="[ID=]FILE",
        help="train nothing: the table from these record files only (no run folders needed); "
        "ID=FILE: FILE's records without a probe are probe ID's",
    )
    parser.add_argument(
        "--p0-json",
        type=Path,
        default=P0_RECORDS,
        help="the side-by-side's records, P0's rows when no probe record of P0 exists",
    )
    parser.add_argument("--no-write", dest="write", action="store_false")
    args = parser.parse_args(argv)
    wanted = {*args.probes, "P0"}  # P0: the reference of every verdict
    if args.from_json:
        records = from_records(args.from_json)
        if args.json:  # the probes' records of the files given, merged into one record file
            write_runs(args.json, [r for r in records if r.get("probe")])
        runs = [r for r in records if r.get("probe") in wanted]
        if not any(r["probe"] == "P0" for r in runs):
            runs += side_by_side_p0(records)
        files = " ".join(
            f"{probe}={shown(path)}" if probe else shown(path)
            for probe, path in map(_record_file, args.from_json)
        )
        command = f"python -m benchmarks.proxy.official_probes --from-json {files}"
    else:
        if not args.only_finished:
            if args.official_repo is None:
                parser.error(
                    "--official-repo is needed to run probes (or --only-finished, --from-json)"
                )
            for pid in args.probes:
                run_probe(args, BY_ID[pid])
        runs = [r for pid in args.probes for r in collect(args, BY_ID[pid])]
        if "P0" not in args.probes:
            runs += collect(args, BY_ID["P0"])
        if args.json:
            write_runs(args.json, runs)
        command = "python -m benchmarks.proxy.official_probes --only-finished"
    runs = with_p0(runs, args.p0_json)
    text = table(runs, args.seeds)
    print(text)
    if args.write:
        write_section(
            "official-regime-search",
            "## The regime search: probes judged by the official PPLR trainer\n\n"
            "Setting and rules: `benchmarks/protocols/official_regime_search.md`, fixed before "
            f"the probes ran. Regenerate with `{command} "
            f"--seeds {' '.join(map(str, args.seeds))}`. mAP of the official "
            "trainer (mean over the seeds); differences paired by seed (95 % t interval with "
            "more than one seed); F1 and clusters: the part baseline's pseudo labels.\n\n" + text,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
