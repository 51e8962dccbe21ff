"""Candidates for the exact kNN self-search from a bfloat16 GEMM, with a certificate.

On CPUs with native bf16 dot products (AVX512-BF16, AMX) a bf16 GEMM is ~4× faster than a
float32 one. :func:`certified_candidates` runs the blocked symmetric bf16 GEMM of the features
and keeps, per row, every pair that may still belong to the row's top k as the search defines it
(:mod:`reid_clustering.knn`: ranked by ``pair_dot``, whose error is at most ``e_c`` per row).
The search then ranks the candidates exactly as the float32 path does, so the answer is the same
by construction; only the candidate set differs.

The certificate. Notation for one pair of rows x = x_i, y = x_j (float32, D features):
``x̂, ŷ`` are x and y rounded to bfloat16 (round to nearest even), ``r_x = x − x̂`` (exact in
float32), ``out`` the pair's element of the bf16 GEMM ``x̂ ŷᵀ`` (float32 accumulation, bf16 output)
and v = xᵀy the exact inner product. Then ``|out − v| <= 2⁻⁸·|out| + ρᵢ`` with the per-row

    ρᵢ = ‖rᵢ‖·max‖x̂‖ + ‖xᵢ‖·max‖r‖ + γ_D·(‖x̂ᵢ‖·max‖x̂‖ + ‖xᵢ‖·max‖x‖) + η

(actual row norms, no unit-norm assumption; Cauchy–Schwarz on ``xᵀy − x̂ᵀŷ = rₓᵀŷ + xᵀr_y``;
Higham's any-order dot-product bound ``γ_n Σ|xₜyₜ|``, *Accuracy and Stability of Numerical
Algorithms*, 2nd ed., eq. 3.5; 2⁻⁸ for the bf16 output rounding; η for flushed denormals; the γ_D
term counted twice is spare). Adding ``e_c`` to ρᵢ covers the ranking values: let ``kth`` be the
k-th largest of the maxima of disjoint column groups of ``out`` on row i. k distinct columns reach
it, so they have ``v >= lb = kth − 2⁻⁸|kth| − ρᵢ − e_c`` and ``pair_dot >= lb``: the row's k-th
``pair_dot`` is >= lb. A column among the top k therefore has ``v >= lb − e_c``, and a pair is
dropped only when ``out + 2⁻⁸|out| + ρᵢ + e_c < lb``. A row whose certified candidate set grows
too large (near-duplicates, all-equal similarities) is handed back for a whole float32 row (the
search's own route); so is any row whose ranked k-th value falls below lb, a self-check that can
only fire if the bf16 GEMM broke the error model.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["Candidates", "certified_candidates"]

# Rows (and columns) per block of the bf16 candidate pass.
_BF16_BLOCK = 2048
# Candidate pairs held before those below their row's current threshold are dropped (18 bytes
# each: about 36 MiB).
_HELD_PAIRS = 1 << 21


class Candidates(NamedTuple):
    """Certified candidate pairs of a self-search (see the module docstring)."""

    rows: torch.Tensor  # int64 [P]
    cols: torch.Tensor  # int64 [P]
    redo: torch.Tensor  # bool [N]: rows to recompute as whole float32 rows (pairs left out)
    kth_lower_bound: torch.Tensor  # float64 [N]: lb of each row
    stats: dict  # counts for tests and benchmarks


def certified_candidates(x: torch.Tensor, k: int, ranking_error: torch.Tensor) -> Candidates | None:
    """Candidate pairs of the self-search of ``x`` that contain every row's top k.

    Args:
        x: float32 ``[N, D]`` CPU features (finite).
        k: neighbours per row.
        ranking_error: float64 ``[N]``, ``e_c`` of each row (a bound of the ranking value's
            error against the exact inner product, over all columns).

    Returns:
        :class:`Candidates`, or None when no bound can be given (norms so large that a bf16
        product could overflow); the caller then searches in float32.
    """
    n = x.shape[0]
    # Round to nearest even. x itself may be a strided view (a part of [N, P, D] features): it
    # is only read row block by row block, so no float32 copy of it is made.
    xb = x.to(torch.bfloat16).contiguous()
    rho = _bf16_error_bound(x, xb)
    if rho is None:
        return None
    rho = rho + ranking_error
    rows, cols, vals, kth = _bf16_candidates(xb, k, rho)
    keep = vals.float() >= _candidate_threshold(kth, rho)[rows]
    rows, cols = rows[keep], cols[keep]
    counts = torch.bincount(rows, minlength=n)
    redo = counts > _fallback_cap(n, k)
    stats = {
        "candidates": int(counts[~redo].sum()),
        "max_candidates": int(counts[~redo].max()) if bool((~redo).any()) else 0,
    }
    return Candidates(rows, cols, redo, _kth_lower_bound(kth, rho), stats)


def _fallback_cap(n: int, k: int) -> int:
    """Certified candidates per row above which the row is recomputed in full instead.

    A whole float32 row is one GEMM row of n columns (no gather); a re-scored candidate costs
    about as much as 16 of those columns (an 8 KiB gather at D = 2048).
    """
    return max(2 * k + 64, n // 16)


def _bf16_error_bound(x: torch.Tensor, xb: torch.Tensor) -> torch.Tensor | None:
    """Per-row ρ_i (float64) with |out − e| <= 2⁻⁸·|out| + ρ_i for every column j.

    Derivation (Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., §2.2 and
    §3.1, eq. 3.5: a dot product of n terms evaluated in floating point in *any* order has
    absolute error <= γ_n Σ|x_t y_t|):

    * e − xᵀy: the exact path's sgemm element, <= γ_D ‖x‖‖y‖ (Cauchy–Schwarz on Σ|x_t y_t|).
    * xᵀy − x̂ᵀŷ = r_xᵀŷ + xᵀr_y exactly, <= ‖r_x‖‖ŷ‖ + ‖x‖‖r_y‖ (Cauchy–Schwarz; ‖r‖ is the
      measured rounding residual, about 2⁻⁹·‖x‖, not the worst case 2⁻⁸·‖x‖).
    * acc − x̂ᵀŷ: bf16 × bf16 products are exact in float32 and are summed in float32 in some
      order, <= γ_D ‖x̂‖‖ŷ‖.
    * out − acc: rounding the float32 accumulator to bf16 (nearest even), <= 2⁻⁸·|out|.
    * η: denormal inputs, products, sums and outputs flushed to zero (the bf16 dot-product
      instructions do), each <= 2⁻¹²⁶ per term: (4D + 1 + 2√D·max‖x̂‖)·2⁻¹²⁶.

    The column factors are bounded by their maxima over all rows, which makes ρ a per-row
    number. Returns None for norms so large that a product could overflow.
    """
    n, d = x.shape
    u = 2.0**-24
    if (d + 2) * u >= 0.5:
        return None
    gamma = d * u / (1 - d * u)
    norms = x.new_empty(3, n)
    for start in range(0, n, 256):  # cache-sized chunks: no full-size float temporaries
        rows = slice(start, start + 256)
        rounded = xb[rows].float()
        torch.linalg.vector_norm(x[rows], dim=1, out=norms[0, rows])
        torch.linalg.vector_norm(rounded, dim=1, out=norms[1, rows])
        torch.linalg.vector_norm(rounded.sub_(x[rows]), dim=1, out=norms[2, rows])
    # float32 norms are within a factor 1 + γ_{D+2} of the true ones (the same bound for the sum
    # of squares, plus the square root); √D·2⁻⁶² covers squares that underflow.
    norms = norms.double() * (1 + (d + 2) * u / (1 - (d + 2) * u)) + d**0.5 * 2.0**-62
    nx, nxb, nr = norms
    if not bool(torch.isfinite(norms).all()) or float(norms[:2].max()) > 2.0**60:
        return None
    eta = (4 * d + 1 + 2 * d**0.5 * float(nxb.max())) * 2.0**-126
    rho = nr * nxb.max() + nx * nr.max() + gamma * (nxb * nxb.max() + nx * nx.max()) + eta
    # ρ is computed in float64: a relative slack far above its rounding error.
    return rho * (1 + 2.0**-20)


def _kth_lower_bound(kth: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
    """float64 lower bound on each row's k-th largest exact similarity.

    ``kth`` (bf16) is a lower bound on the k-th largest ``out`` of the row: it is the k-th
    largest of maxima of disjoint column groups, so k distinct columns reach it. Each of those
    columns has e >= out − 2⁻⁸|out| − ρ_i >= kth − 2⁻⁸|kth| − ρ_i (the map is increasing).
    """
    g = kth.double()
    return g - g.abs() * 2.0**-8 - rho


def _candidate_threshold(kth: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
    """float32 τ_i such that out < τ_i proves the pair is not among row i's k nearest.

    With lb the lower bound of :func:`_kth_lower_bound`, a pair with out + 2⁻⁸|out| + ρ_i < lb
    has e < lb <= the k-th largest e of the row: it lies strictly below the k-th neighbour, so
    it can neither be a neighbour nor tie with one. Solving that inequality for out gives τ_i
    (the left side increases with out); τ_i is rounded down, which only keeps more pairs.
    """
    g = kth.double()
    t = _kth_lower_bound(kth, rho) - rho
    tau = torch.where(t >= 0, t / (1 + 2.0**-8), t / (1 - 2.0**-8))
    tau = tau - (g.abs() + rho) * 2.0**-30  # far above the float64 rounding of these lines
    tau32 = tau.float()
    above = tau32.double() > tau
    return torch.where(above, torch.nextafter(tau32, tau32.new_tensor(-torch.inf)), tau32)


def _bf16_candidates(
    xb: torch.Tensor, k: int, rho: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Blocked symmetric bf16 GEMM keeping, per row, every pair that can pass the certificate.

    Each block ``(a, b)`` (diagonal blocks first, each block once for both of its sides)
    updates, per row, the running k largest maxima of disjoint column groups (a cheap lower
    bound on the row's k-th largest ``out``), and keeps the pairs at or above the row's current
    threshold τ (which only rises). Returns rows, cols, bf16 values of the kept pairs, and the
    final per-row bound (the k-th group maximum).
    """
    n = xb.shape[0]
    block = min(_BF16_BLOCK, n)
    # Columns per group. Groups are strided (columns q, q + m, q + 2m, ...: neighbours adjacent
    # in index fall in different groups); >= 4k groups per block keep the bound near the k-th.
    group = max(1, min(16, block // (4 * k)))
    best = xb.new_full((n, k), -torch.inf)
    buffer = xb.new_empty(block * block)
    found: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    held, limit = 0, _HELD_PAIRS  # pairs in found; compact above the limit
    starts = range(0, n, block)
    pairs = [(a, a) for a in starts] + [(a, b) for a in starts for b in starts if b > a]
    for a, b in pairs:
        if held > limit:
            found = [_compact(found, best, rho)]
            held = found[0][0].numel()
            limit = max(_HELD_PAIRS, 2 * held)  # amortised: at most twice what must be kept
        xa, xc = xb[a : a + block], xb[b : b + block]
        sims = buffer[: xa.shape[0] * xc.shape[0]].view(xa.shape[0], xc.shape[0])
        torch.mm(xa, xc.t(), out=sims)
        maxima = _group_max(sims, group, 1)
        tau = _raise_bound(best, a, maxima, rho)
        r, c, v = _group_hits(sims, maxima, tau, group)
        found.append((r + a, c + b, v))
        held += r.numel()
        if b != a:  # the same block, seen from its columns' rows
            maxima = _group_max(sims, group, 0)
            tau = _raise_bound(best, b, maxima, rho)
            c, r, v = _group_hits(sims.t(), maxima, tau, group)
            found.append((c + b, r + a, v))
            held += c.numel()
    rows, cols, vals = (torch.cat(parts) for parts in zip(*found, strict=True))
    return rows, cols, vals, best.amin(dim=1)


def _compact(
    found: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    best: torch.Tensor,
    rho: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The pairs found so far that still reach their row's current threshold.

    A row's threshold only rises as blocks are seen, and the final selection keeps the pairs at
    or above the final one, so a pair below the current threshold can never be kept: dropping
    it now changes nothing but the memory held (bounded by about :data:`_HELD_PAIRS`).
    """
    rows, cols, vals = (torch.cat(parts) for parts in zip(*found, strict=True))
    keep = vals.float() >= _candidate_threshold(best.amin(dim=1), rho)[rows]
    return rows[keep], cols[keep], vals[keep]


def _group_max(sims: torch.Tensor, group: int, dim: int) -> torch.Tensor:
    """Maxima of strided groups along ``dim`` ({q, q + m, q + 2m, ...}, m = size // group).

    Returns ``[other, groups]``: per row of ``sims`` (``dim=1``) or per column (``dim=0``).
    Strided groups put neighbours that are adjacent in index into different groups.
    """
    size = sims.shape[dim]
    m = size // group
    if group == 1 or m == 0:
        maxima = sims
    else:
        main = sims.narrow(dim, 0, m * group).unflatten(dim, (group, m)).amax(dim=dim)
        rest = sims.narrow(dim, m * group, size - m * group)
        maxima = torch.cat([main, rest], dim=dim) if rest.shape[dim] else main
    return (maxima if dim == 1 else maxima.t()).contiguous()


def _group_hits(
    sims: torch.Tensor, maxima: torch.Tensor, tau: torch.Tensor, group: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Entries ``sims[r, c] >= tau[r]``, looked for only in the groups whose maximum reaches
    ``tau`` (``maxima`` from :func:`_group_max`): rows, columns, values."""
    cols = sims.shape[1]
    m = cols // group
    hit = maxima >= tau[:, None]
    if group == 1 or m == 0 or 8 * group * int(hit.sum()) > sims.numel():
        # Many groups to open (a block holding the rows' neighbours): one dense pass is cheaper.
        rows, cols = (sims >= tau[:, None]).nonzero().unbind(1)
        return rows, cols, sims[rows, cols]
    hit_rows, hit_groups = hit[:, :m].nonzero().unbind(1)
    members = sims.narrow(1, 0, m * group).unflatten(1, (group, m))[hit_rows, :, hit_groups]
    which, step = (members >= tau[hit_rows, None]).nonzero().unbind(1)
    found = [(hit_rows[which], hit_groups[which] + step * m, members[which, step])]
    if m * group < cols:  # the columns after the last whole group are groups of their own
        rest = sims.narrow(1, m * group, cols - m * group)
        rows, extra = (rest >= tau[:, None]).nonzero().unbind(1)
        found.append((rows, extra + m * group, rest[rows, extra]))
    rows, cols, vals = (torch.cat(parts) for parts in zip(*found, strict=True))
    return rows, cols, vals


def _raise_bound(
    best: torch.Tensor, start: int, maxima: torch.Tensor, rho: torch.Tensor
) -> torch.Tensor:
    """Merge a block's group maxima into rows ``start:`` of ``best``; their new thresholds."""
    rows = slice(start, start + maxima.shape[0])
    k = best.shape[1]
    merged = torch.cat([best[rows], maxima], dim=1).topk(k, dim=1, sorted=False).values
    best[rows] = merged
    return _candidate_threshold(merged.amin(dim=1), rho[rows])
