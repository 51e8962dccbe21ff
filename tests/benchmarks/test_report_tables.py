"""The evidence modules' arithmetic (benchmarks.proxy): the paired 95 % interval, the proxy's
property checks, the ablation and diagnostics tables, the label-noise benchmark's shared-noise
check and the comparison of two records. Pure functions on hand-made records; nothing is
trained."""

from __future__ import annotations

import math

import pytest

from benchmarks.proxy import ablation, compare_runs, label_noise, stats


def _run(
    seed: int,
    m_ap: float,
    f1: tuple[float, float] = (0.2, 0.7),
    clusters: int = 180,
    agreement: tuple[list[float], list[float]] = ([], []),
    beta: list[float] | None = None,
    losses: dict[str, float] | None = None,
) -> dict:
    first, last = agreement
    return {
        "seed": seed, "mAP": m_ap, "rank1": m_ap + 1, "compute_s": 1.0,
        "epochs": [
            {"epoch": 0, "clusters": 90, "true_identities": 200, "pairwise_f1": f1[0],
             "agreement": first, "beta": [], "losses": {}},
            {"epoch": 1, "clusters": clusters, "true_identities": 200, "pairwise_f1": f1[1],
             "agreement": last, "beta": beta or [], "losses": losses or {}},
        ],
    }  # fmt: skip


def test_paired_ci_known_answer() -> None:
    # differences 1, 2, 3: mean 2, sd 1, t(0.975, 2) = 4.302653 -> half width 4.302653 / sqrt(3)
    mean, lo, hi = stats.paired_ci([1.0, 3.0, 6.0], [0.0, 1.0, 3.0])
    half = 4.302652729911275 / math.sqrt(3)
    assert mean == pytest.approx(2.0)
    assert (lo, hi) == pytest.approx((2.0 - half, 2.0 + half), rel=1e-9)
    one = stats.paired_ci([5.0], [2.0])
    assert one[0] == 3.0 and math.isnan(one[1]) and math.isnan(one[2])
    with pytest.raises(ValueError):  # pairs by position: unequal lengths are a bug
        stats.paired_ci([1.0, 2.0], [1.0])


def test_mean_std() -> None:
    assert stats.mean_std([1.0, 2.0, 3.0]) == "2.0 ± 1.0"
    assert stats.mean_std([0.5], 2) == "0.50"  # one value has no spread


def _results(**changes: object) -> dict[str, list[dict]]:
    sup = changes.get("supervised", [70.0, 72.0])
    base = changes.get("baseline", [_run(1, 60.0), _run(2, 62.0)])
    return {
        "supervised": [_run(i + 1, m, (1.0, 1.0), 200) for i, m in enumerate(sup)],
        "baseline": base,
    }


def test_regime_properties_all_hold() -> None:
    lines, ok = ablation.regime_properties(_results())
    assert ok and len(lines) == 5 and all(line.startswith("- PASS") for line in lines)
    assert "supervised mAP 71.0 >= 60" in lines[0]
    assert "(35.5)" in lines[1]  # half of the supervised mean
    assert "0.20 → 0.70, 0.20 → 0.70" in lines[2]
    assert "0.90, 0.90" in lines[4]


@pytest.mark.parametrize(
    ("changes", "failing"),
    [
        ({"supervised": [58.0, 61.0]}, 0),  # mean 59.5 < 60
        ({"baseline": [_run(1, 30.0), _run(2, 40.0)]}, 1),  # 35 < half of 71
        ({"baseline": [_run(1, 60.0), _run(2, 60.0, f1=(0.7, 0.6))]}, 2),  # F1 falls
        ({"baseline": [_run(1, 60.0), _run(2, 60.0, f1=(0.2, 0.45))]}, 3),  # ends < 0.5
        ({"baseline": [_run(1, 60.0), _run(2, 60.0, clusters=139)]}, 4),  # 0.695 < 0.7
        ({"baseline": [_run(1, 60.0), _run(2, 60.0, clusters=261)]}, 4),  # 1.305 > 1.3
    ],
)
def test_regime_properties_each_failure(changes: dict, failing: int) -> None:
    lines, ok = ablation.regime_properties(_results(**changes))
    assert not ok
    assert [line.startswith("- FAIL") for line in lines] == [i == failing for i in range(5)]


def test_regime_properties_need_both_rows() -> None:
    lines, ok = ablation.regime_properties({"baseline": [_run(1, 60.0)]})
    assert not ok and "needs the supervised and baseline rows" in lines[0]


def test_ablation_table_pairs_by_seed() -> None:
    results = {
        "baseline": [_run(1, 60.0), _run(2, 62.0), _run(3, 61.0)],
        # seed 3 missing, seed 4 has no baseline: only seeds 1 and 2 pair (+2, +4)
        "method": [_run(1, 62.0), _run(2, 66.0), _run(4, 99.0)],
    }
    table = ablation.ablation_table(results)
    row = next(line for line in table.splitlines() if line.startswith("| method"))
    half = 12.706204736174698 * math.sqrt(2) / math.sqrt(2)  # t(0.975, 1) * sd / sqrt(n)
    assert f"+3.0 ({3 - half:+.1f}, {3 + half:+.1f})" in row
    assert row.startswith("| method | 3 | 75.7 ± 20.3 |")
    base = next(line for line in table.splitlines() if line.startswith("| baseline"))
    assert "| – |" in base


def test_diagnostics_table_means_per_part_and_skips_rows_without_parts() -> None:
    results = {
        "baseline": [_run(1, 60.0)],
        "PPLR": [
            _run(1, 50.0, agreement=([0.2, 0.3], [0.4, 0.6]), losses={"part_ce": 3.0}),
            _run(2, 52.0, agreement=([0.4, 0.5], [0.2, 0.8]), losses={"part_ce": 2.0}),
        ],
        "DCLS": [_run(1, 55.0, beta=[0.5, 0.25], losses={"local_ce": 1.0})],
    }
    lines = ablation.diagnostics_table(results).splitlines()
    assert len(lines) == 4 and not any(line.startswith("| baseline") for line in lines)
    assert lines[2] == "| PPLR | 2 | 0.30 / 0.40 | 0.30 / 0.70 | – | part_ce 2.50 |"
    assert lines[3] == "| DCLS | 1 | – | – | 0.50 / 0.25 | local_ce 1.00 |"
    assert ablation.diagnostics_table({"baseline": [_run(1, 60.0)]}) == ""


def test_label_noise_delta_pairs_by_seed_and_checks_shared_noise() -> None:
    ce = [{"seed": 1, "mAP": 50.0}, {"seed": 2, "mAP": 52.0}]
    pplr = [{"seed": 2, "mAP": 55.0}, {"seed": 3, "mAP": 90.0}]
    assert label_noise._delta(pplr, ce) == "+3.0"  # only seed 2 pairs
    assert label_noise._delta([], ce) == "–"
    runs = [
        {"row": "CE", "noise": 0.2, "seed": 1, "realised_noise": 0.2,
         "noise_counts": {"rate": 0.2}},
        {"row": "PPLR", "noise": 0.2, "seed": 1, "realised_noise": 0.19,
         "noise_counts": {"rate": 0.2}},
        {"row": "DCLS", "noise": 0.2, "seed": 1, "realised_noise": None,
         "noise_counts": {"rate": 0.2}},
    ]  # fmt: skip
    runs.append(
        {"row": "CE", "noise": 0.2, "seed": 2, "realised_noise": 0.2,
         "noise_counts": {"rate": 0.2, "describe": "20.0 % of ..."}, "noise_logged": False}
    )  # fmt: skip
    problems = label_noise.check_shared_noise(runs)
    assert len(problems) == 3
    assert "CE noise 0.2 seed 2: its stdout.log lacks the counts" in problems[2]
    assert "PPLR noise 0.2 seed 1: realised noise 0.1900, expected 0.2000" in problems[0]
    assert "DCLS" in problems[1] and "no label_noise" in problems[1]


def _noise_run(row: str, noise: float, seed: int, m_ap: float) -> dict:
    return {"row": row, "noise": noise, "seed": seed, "mAP": m_ap, "rank1": m_ap + 20.0}


def test_label_noise_tables_known_answer() -> None:
    runs = [
        _noise_run("CE", 0.0, 1, 60.0), _noise_run("CE", 0.0, 2, 62.0),
        _noise_run("CE", 0.4, 1, 50.0), _noise_run("CE", 0.4, 2, 56.0),
        _noise_run("constant LS", 0.0, 1, 61.0), _noise_run("constant LS", 0.0, 2, 64.0),
        _noise_run("constant LS", 0.4, 1, 52.0),  # seed 2 not finished
    ]  # fmt: skip
    zero = {"rate": 0.0, "merged": 0, "split": 0, "outliers": 0, "lookalike_merges": 0,
            "merges": 0, "splits": 0}  # fmt: skip
    realised = {
        0.0: [zero, zero],
        0.4: [
            {"rate": 0.40, "merged": 100, "split": 200, "outliers": 100,
             "lookalike_merges": 10, "merges": 12, "splits": 30},
            {"rate": 0.41, "merged": 110, "split": 190, "outliers": 110,
             "lookalike_merges": 12, "merges": 14, "splits": 32},
        ],
    }  # fmt: skip
    lines = label_noise.tables(runs, ["CE", "constant LS"], [0.0, 0.4], realised).splitlines()
    t1 = 12.706204736174707  # t(0.975, 1)
    # mAP cells: mean ± sample std; one seed has no spread and shows its value alone
    assert "| CE | 61.0 ± 1.4 | 53.0 ± 4.2 |" in lines
    assert "| constant LS | 62.5 ± 2.1 | 52.0 |" in lines
    assert "| CE | 81.0 ± 1.4 | 73.0 ± 4.2 |" in lines  # Rank-1
    # constant LS − CE at 0 %: differences 1 and 2 -> mean 1.5, sd 0.7071, half width t1 * 0.5
    half = t1 * 0.5
    # gap closed from 0 % to 40 %, seed 1 only (seed 2 lacks its 40 % run): (52-50) - (61-60)
    assert (
        f"| constant LS | CE | +1.5 ({1.5 - half:+.1f}, {1.5 + half:+.1f}) | +2.0 | +1.0 |"
    ) in lines
    assert "* constant LS: seed 1 +1.0" in lines  # the gap closed per seed
    # drop from 0 % to 40 %: CE -10 and -6 -> -8 ± t1 * 2; constant LS only seed 1 pairs: -9
    # relative: CE -10/60 and -6/62 -> -16.67 % and -9.68 %; constant LS -9/61 -> -14.75 %
    rel = [-1000 / 60, -600 / 62]
    mean, sd = sum(rel) / 2, abs(rel[0] - rel[1]) / 2**0.5
    half = t1 * sd / 2**0.5
    assert (
        f"| CE | -8.0 ({-8 - 2 * t1:+.1f}, {-8 + 2 * t1:+.1f}) "
        f"| {mean:+.0f} % ({mean - half:+.0f}, {mean + half:+.0f}) |"
    ) in lines
    assert "| constant LS | -9.0 | -15 % |" in lines
    # realised noise: means over seeds, min–max of the rate
    assert "| 0 % | 0.0 % (0.0–0.0) | 0 / 0 / 0 | 0 / 0 | 0 |" in lines
    assert "| 40 % | 40.5 % (40.0–41.0) | 105 / 195 / 105 | 11 / 13 | 31 |" in lines
    # rows without a reference row of their own get no Δ-vs-CE line
    assert not any(line.startswith("| CE | CE |") for line in lines)


def test_label_noise_relative_drop_is_undefined_from_zero() -> None:
    clean = [_noise_run("CE", 0.0, 1, 0.0), _noise_run("CE", 0.0, 2, 10.0)]
    noisy = [_noise_run("CE", 0.4, 1, 0.0), _noise_run("CE", 0.4, 2, 5.0)]
    assert label_noise._relative(noisy, clean).startswith("undefined")
    assert label_noise._relative(noisy[1:], clean) == "-50 %"


def test_label_noise_gap_closed_pairs_all_four_runs_by_seed() -> None:
    ref_lo = [_noise_run("CE", 0.0, s, v) for s, v in ((1, 60.0), (2, 62.0), (3, 64.0))]
    ref_hi = [_noise_run("CE", 0.4, s, v) for s, v in ((1, 50.0), (2, 52.0))]
    row_lo = [_noise_run("PPLR", 0.0, s, v) for s, v in ((1, 50.0), (2, 48.0), (3, 40.0))]
    row_hi = [_noise_run("PPLR", 0.4, s, v) for s, v in ((2, 46.0), (1, 45.0))]
    # seed 1: (45-50) - (50-60) = +5; seed 2: (46-52) - (48-62) = +8; seed 3 has no 40 % runs
    t1 = 12.706204736174707
    half = t1 * (3 / 2**0.5) / 2**0.5
    changes = label_noise._gap_changes(row_lo, ref_lo, row_hi, ref_hi)
    assert changes == pytest.approx({1: 5.0, 2: 8.0})
    got = label_noise._gap_change(row_lo, ref_lo, row_hi, ref_hi)
    assert got == f"+6.5 ({6.5 - half:+.1f}, {6.5 + half:+.1f})"
    assert label_noise._gap_change(row_lo, ref_lo, [], ref_hi) == "–"


def _probe_run(row: str, seed: int, m_ap: float, agreement: list[float]) -> dict:
    return {"row": row, "seed": seed, "mAP": m_ap, "epochs": [{"agreement": agreement}]}


def test_compare_runs_gap_and_its_change_known_answer() -> None:
    ref, row = "baseline (part model)", "PPLR"
    first = [
        _probe_run(ref, 1, 60.0, [0.4, 0.6]), _probe_run(ref, 2, 62.0, [0.2, 0.4]),
        _probe_run(row, 1, 50.0, [0.2, 0.3]), _probe_run(row, 2, 50.0, [0.2, 0.5]),
        _probe_run(row, 3, 10.0, [0.0, 0.0]),  # a seed not asked for is ignored
    ]  # fmt: skip
    second = [
        _probe_run(ref, 1, 61.0, [0.5, 0.5]), _probe_run(ref, 2, 63.0, [0.5, 0.5]),
        _probe_run(row, 1, 55.0, [0.3, 0.3]), _probe_run(row, 2, 52.0, [0.3, 0.3]),
    ]  # fmt: skip
    lines = compare_runs.compare([first, second], ["a", "b"], row, ref, [1, 2]).splitlines()
    t1 = 12.706204736174707
    # gaps: first -10, -12 (mean -11, sd sqrt 2); second -6, -11 (mean -8.5, sd 5/sqrt 2)
    h1, h2 = t1 * 1.0, t1 * 2.5
    assert (
        f"| a | 61.0 ± 1.4 | 50.0 ± 0.0 | -11.0 ({-11 - h1:+.1f}, {-11 + h1:+.1f}) "
        "| 0.30 / 0.50 | 0.20 / 0.40 |" in lines
    )
    assert (
        f"| b | 62.0 ± 1.4 | 53.5 ± 2.1 | -8.5 ({-8.5 - h2:+.1f}, {-8.5 + h2:+.1f}) "
        "| 0.50 / 0.50 | 0.30 / 0.30 |" in lines
    )
    # change of the gap: +4 and +1 -> +2.5, sd 3/sqrt 2, half width t1 * 1.5
    h3 = t1 * 1.5
    assert lines[-1].endswith(f": +2.5 ({2.5 - h3:+.1f}, {2.5 + h3:+.1f})")
    with pytest.raises(SystemExit, match="no run of seed"):
        compare_runs.compare([first, second], ["a", "b"], row, ref, [1, 2, 3])
