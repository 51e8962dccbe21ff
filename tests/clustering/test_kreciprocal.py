"""Known-answer tests of the k-reciprocal encoding on ranked lists and V matrices built by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reid_clustering import (
    RowSparse,
    expanded_reciprocal_pairs,
    half_width,
    jaccard_from_encoding,
    k_reciprocal_encoding,
    k_reciprocal_sets,
    local_query_expansion,
)
from reid_clustering._reference import reciprocal_neighbours

# A ranked list made by hand for k1 = 6: 6 columns for R, round(6/2) + 1 = 4 for the half sets.
# Row i lists the neighbours of i, itself first.
RANKED = torch.tensor(
    [
        [0, 1, 2, 3, 5, 6],
        [1, 2, 3, 4, 0, 5],
        [2, 1, 3, 4, 0, 6],
        [3, 1, 2, 4, 0, 7],
        [4, 1, 2, 3, 7, 6],
        [5, 6, 7, 2, 3, 4],
        [6, 5, 7, 1, 2, 3],
        [7, 6, 5, 4, 3, 2],
    ]
)


def _sets(ranked: torch.Tensor, width: int) -> list[set[int]]:
    return [set(s.tolist()) for s in k_reciprocal_sets(ranked, width)]


def test_reciprocal_sets_by_hand() -> None:
    # R(0): 1, 2 and 3 list 0 among their 6 columns; 5 and 6 do not.
    # R(2): 6 lists 2 (row 6 = [6, 5, 7, 1, 2, 3]), so 6 is reciprocal although far in row 2.
    # R(4): 1, 2, 3 and 7 list 4; 6 does not.
    # R(6): of 5, 7, 1, 2, 3 only 5, 7 and 2 list 6.
    assert _sets(RANKED, 6) == [
        {0, 1, 2, 3},
        {0, 1, 2, 3, 4},
        {0, 1, 2, 3, 4, 6},
        {0, 1, 2, 3, 4, 7},
        {1, 2, 3, 4, 7},
        {5, 6, 7},
        {2, 5, 6, 7},
        {3, 4, 5, 6, 7},
    ]
    # Half sets from 4 columns: 1's first four are [1, 2, 3, 4] and each of 2, 3, 4 has 1 in its
    # own first four; 0 is in nobody's first four but its own.
    assert _sets(RANKED, 4) == [
        {0},
        {1, 2, 3, 4},
        {1, 2, 3, 4},
        {1, 2, 3, 4},
        {1, 2, 3, 4},
        {5, 6, 7},
        {5, 6, 7},
        {5, 6, 7},
    ]
    # Ranked-list order is kept.
    assert k_reciprocal_sets(RANKED, 6)[4].tolist() == [4, 1, 2, 3, 7]


def test_expansion_by_hand_follows_the_strict_two_thirds_rule() -> None:
    rows, cols = expanded_reciprocal_pairs(RANKED, 6, 4)
    expanded = [cols[rows == i].tolist() for i in range(8)]
    # R(0) = {0,1,2,3}; R_half(1) = {1,2,3,4} shares 3 > 2/3·4 members with it: 4 joins.
    assert expanded[0] == [0, 1, 2, 3, 4]
    # R(4) = {1,2,3,4,7}; R_half(7) = {5,6,7} shares only {7}: 1 is not > 2, 5 and 6 stay out.
    assert expanded[4] == [1, 2, 3, 4, 7]
    # R(7) = {3,4,5,6,7}; R_half(3) = R_half(4) = {1,2,3,4} share {3,4}: 2 is not > 8/3.
    # R_half(5) = R_half(6) = {5,6,7} are inside R(7) already.
    assert expanded[7] == [3, 4, 5, 6, 7]
    # Sorted by row then column, like np.unique.
    assert torch.equal(rows, rows.sort().values)


def test_two_thirds_boundary_is_strict() -> None:
    # R(0) = {0,1,2}; R_half(1) = {1,2,3} from 3 columns: |{1,2}| = 2 is not > 2/3·3 = 2.
    ranked = torch.tensor([[0, 1, 2, 4], [1, 2, 3, 0], [2, 1, 3, 0], [3, 1, 2, 4], [4, 3, 2, 1]])
    assert _sets(ranked, 4)[0] == {0, 1, 2}
    assert _sets(ranked, 3)[1] == {1, 2, 3}
    rows, cols = expanded_reciprocal_pairs(ranked, 4, 3)
    assert cols[rows == 0].tolist() == [0, 1, 2]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sets_match_the_plain_loops_on_random_ranked_lists(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, k1 = 40, 8
    # Random ranked lists with self first; no metric behind them, only the set logic.
    ranked = np.stack(
        [np.r_[i, rng.permutation(np.delete(np.arange(n), i))[: k1 - 1]] for i in range(n)]
    )
    half = half_width(k1)
    for i in range(n):
        assert set(k_reciprocal_sets(ranked, k1)[i]) == set(reciprocal_neighbours(ranked, i, k1))
        assert set(k_reciprocal_sets(ranked, half)[i]) == set(
            reciprocal_neighbours(ranked, i, half)
        )


def test_half_width_rounds_half_to_even_like_the_reference() -> None:
    assert [half_width(k) for k in (1, 2, 3, 5, 6, 7, 20, 30)] == [1, 2, 3, 3, 4, 5, 11, 16]
    assert all(half_width(k) == int(np.around(k / 2)) + 1 for k in range(1, 200))


def test_encoding_is_a_softmax_of_minus_distance_over_the_expanded_set() -> None:
    def distance(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        return (rows - cols).abs().to(torch.float32) / 4  # any distance will do

    v = k_reciprocal_encoding(RANKED, distance, width=6, half_width=4)
    dense = v.to_dense()
    members = torch.tensor([0, 1, 2, 3, 4])
    expected = torch.softmax(-members.to(torch.float32) / 4, dim=0)
    torch.testing.assert_close(dense[0, members], expected)
    assert dense[0, 5:].eq(0).all()
    torch.testing.assert_close(dense.sum(dim=1), torch.ones(8))


def _row_sparse(dense: torch.Tensor) -> RowSparse:
    rows, cols = dense.nonzero(as_tuple=True)
    return RowSparse.from_sorted_coo(rows, cols, dense[rows, cols], tuple(dense.shape))


def test_local_query_expansion_averages_neighbour_rows() -> None:
    dense = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.25, 0.75], [0.0, 0.0, 1.0]])
    neighbours = torch.tensor([[0, 1], [1, 2], [2, 0]])
    out = local_query_expansion(_row_sparse(dense), neighbours).to_dense()
    expected = torch.tensor([[0.25, 0.375, 0.375], [0.0, 0.125, 0.875], [0.25, 0.25, 0.5]])
    torch.testing.assert_close(out, expected)


def test_jaccard_of_hand_made_encodings() -> None:
    dense = torch.tensor([[0.5, 0.5, 0.0], [0.25, 0.75, 0.0], [0.0, 0.0, 1.0]])
    v = _row_sparse(dense)
    # S(0,1) = min(.5,.25) + min(.5,.75) = .75 -> J = 1 - .75 / 1.25 = 0.4; no shared support -> 1.
    expected = torch.tensor([[0.0, 0.4, 1.0], [0.4, 0.0, 1.0], [1.0, 1.0, 0.0]])
    torch.testing.assert_close(jaccard_from_encoding(v), expected)
    sparse = jaccard_from_encoding(v, dense=False)
    assert sparse.nnz == 5  # (0,0), (0,1), (1,0), (1,1), (2,2): the diagonal is stored
    torch.testing.assert_close(
        sparse.to_dense(), torch.tensor([[0, 0.4, 0], [0.4, 0, 0], [0, 0, 0]])
    )
    only_query = jaccard_from_encoding(v, rows=torch.tensor([2, 0]))
    torch.testing.assert_close(only_query, expected[[2, 0]])
    radius = jaccard_from_encoding(v, dense=False, max_distance=0.3)
    assert radius.nnz == 3


def test_row_sparse_round_trips() -> None:
    dense = torch.tensor([[0.0, 2.0, 0.0], [1.0, 0.0, 3.0]])
    sp = _row_sparse(dense)
    assert torch.equal(sp.to_dense(), dense)
    assert torch.equal(sp.transpose().to_dense(), dense.t())
    assert np.array_equal(sp.to_scipy().toarray(), dense.numpy())


def _plain_expansion(ranked: np.ndarray, i: int, width: int, half: int) -> set[int]:
    """Eq. 6 one sample at a time: R(i) plus each R_half(j) with |R_half(j) ∩ R(i)| > 2/3."""
    full = set(reciprocal_neighbours(ranked, i, width).tolist())
    out = set(full)
    for j in full:
        half_j = set(reciprocal_neighbours(ranked, j, half).tolist())
        if len(half_j & full) > 2 / 3 * len(half_j):
            out |= half_j
    return out


@pytest.mark.parametrize(("seed", "n", "k1"), [(0, 40, 8), (1, 60, 12), (2, 25, 24)])
def test_expanded_pairs_match_the_plain_expansion_on_random_ranked_lists(
    seed: int, n: int, k1: int
) -> None:
    rng = np.random.default_rng(seed)
    ranked = np.stack(
        [np.r_[i, rng.permutation(np.delete(np.arange(n), i))[: k1 - 1]] for i in range(n)]
    )
    rows, cols = expanded_reciprocal_pairs(torch.from_numpy(ranked), k1, half_width(k1))
    key = (rows * n + cols).tolist()
    assert key == sorted(set(key))  # sorted by row, then column; no duplicates
    for i in range(n):
        got = set(cols[rows == i].tolist())
        assert got == _plain_expansion(ranked, i, k1, half_width(k1)), i


def _random_encoding(seed: int, n: int, per_row: int) -> RowSparse:
    """A random V with heavily shared support, one empty row and values with ties."""
    gen = torch.Generator().manual_seed(seed)
    dense = torch.zeros(n, n)
    for i in range(1, n):
        cols = torch.randperm(n, generator=gen)[:per_row]
        dense[i, cols] = torch.randint(1, 5, (per_row,), generator=gen).float() / 7
    dense[:, : n // 3] *= 3  # many equal values across rows
    dense /= dense.sum(dim=1, keepdim=True).clamp(min=1e-12)
    return _row_sparse(dense)


@pytest.mark.parametrize("seed", [0, 1])
def test_all_pairs_jaccard_is_the_general_path_bit_for_bit(seed: int) -> None:
    """rows=None accumulates j >= i only and mirrors it: the same floats as the row-by-row
    path (asked for through explicit rows), dense and sparse, with and without a radius."""
    v = _random_encoding(seed, 90, 12)
    every = torch.arange(v.num_rows)
    full, general = jaccard_from_encoding(v), jaccard_from_encoding(v, every)
    assert torch.equal(full, general)
    assert torch.equal(full, full.t())
    assert full[0].eq(1).sum() == v.num_rows  # the empty row shares nothing, even with itself
    for radius in (None, 0.6):
        a = jaccard_from_encoding(v, dense=False, max_distance=radius)
        b = jaccard_from_encoding(v, every, dense=False, max_distance=radius)
        assert torch.equal(a.indptr, b.indptr) and torch.equal(a.indices, b.indices)
        assert torch.equal(a.values, b.values)
        assert a.nnz > (v.num_rows if radius is None else v.num_rows - 2)


def test_transpose_positions_locate_every_entry() -> None:
    v = _random_encoding(3, 30, 5)
    t, where = v.transpose_with_positions()
    assert torch.equal(t.indices[where], v.row_ids())  # entry (i, j) sits in row j of t at i
    assert torch.equal(t.values[where], v.values)
    assert torch.equal(t.to_dense(), v.to_dense().t())
