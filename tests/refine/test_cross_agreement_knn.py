"""cross_agreement with an injected kNN search (``knn=``) and a precomputed global ranked list."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from reid_clustering import knn_search
from reid_refine import cross_agreement, ranked_lists
from tests.helpers import assert_rank_gaps


def clustering_knn(x: torch.Tensor, m: int) -> torch.Tensor:
    """The search reid-train injects: reid_clustering's machine-independent ranking."""
    return knn_search(x, k=m).indices


def separated_data(k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit vectors (32 × 8 global, 32 × 3 × 6 parts) whose similarity rankings are separated by
    more than 1e-3 at both cuts that matter: after the first column (the one dropped) and after
    the top k + 1 (the one searched). Two float32 computations of a D <= 8 inner product of unit
    vectors differ by < 1e-6, so no rounding can reorder them there."""
    gen = torch.Generator().manual_seed(74)
    g = torch.nn.functional.normalize(torch.randn(32, 8, generator=gen), dim=1)
    p = torch.nn.functional.normalize(torch.randn(32, 3, 6, generator=gen), dim=2)
    for x in [g] + [p[:, i] for i in range(3)]:
        x64 = x.double().numpy()
        assert_rank_gaps(x64 @ x64.T, cuts=[1, k + 1], margin=1e-3)
    return g, p


def brute_force(
    g: torch.Tensor, p: torch.Tensor, k: int, knn: Callable[[torch.Tensor, int], torch.Tensor]
) -> torch.Tensor:
    """Eq. 6 by the definition: sets R_i from knn's top-(k+1) minus its first column, |∩|/|∪|."""
    lists_g = knn(g, k + 1).tolist()
    out = np.zeros((g.shape[0], p.shape[1]), dtype=np.float32)
    for part in range(p.shape[1]):
        lists_p = knn(p[:, part].contiguous(), k + 1).tolist()
        for i in range(g.shape[0]):
            a, b = set(lists_g[i][1:]), set(lists_p[i][1:])
            assert len(a) == len(b) == k
            out[i, part] = len(a & b) / len(a | b)
    return torch.from_numpy(out)


def test_injected_knn_equals_the_default_path_on_separated_data() -> None:
    k = 5
    g, p = separated_data(k)
    default = cross_agreement(g, p, k)
    injected = cross_agreement(g, p, k, knn=clustering_knn)
    assert injected.dtype == torch.float32 and injected.shape == (32, 3)
    assert torch.equal(injected, default)
    assert torch.unique(injected).numel() >= 3  # not a degenerate example


@pytest.mark.parametrize("k", [1, 5, 12])
def test_injected_knn_equals_the_brute_force_definition(k: int) -> None:
    gen = torch.Generator().manual_seed(k)
    g = torch.nn.functional.normalize(torch.randn(40, 16, generator=gen), dim=1)
    p = torch.nn.functional.normalize(torch.randn(40, 2, 8, generator=gen), dim=2)
    expected = brute_force(g, p, k, clustering_knn)
    assert torch.equal(cross_agreement(g, p, k, knn=clustering_knn), expected)


def test_global_ranked_replaces_the_global_search() -> None:
    k = 5
    g, p = separated_data(k)
    calls: list[tuple[tuple[int, ...], int]] = []

    def counting(x: torch.Tensor, m: int) -> torch.Tensor:
        assert not x.requires_grad
        if x.shape[1] == p.shape[2]:  # a part: passed as a view of part_feats, not copied
            assert x.untyped_storage().data_ptr() == p.untyped_storage().data_ptr()
            assert not x.is_contiguous()
        calls.append((tuple(x.shape), m))
        return clustering_knn(x, m)

    searched = cross_agreement(g, p, k, knn=counting)
    assert calls == [((32, 8), k + 1)] + [((32, 6), k + 1)] * 3  # global first, then each part
    calls.clear()
    wider = clustering_knn(g, k + 7)  # e.g. the clustering's k1 columns: the first k + 1 are used
    reused = cross_agreement(g, p, k, knn=counting, global_ranked=wider)
    assert calls == [((32, 6), k + 1)] * 3  # never the global features
    assert torch.equal(reused, searched)
    # Without knn the parts take the default search; on separated data it ranks the same.
    assert torch.equal(cross_agreement(g, p, k, global_ranked=wider), searched)


# Hand-made ties: rows 0 = 1 and 2 = 3 are duplicates in the global space, 1 = 2 and 0 = 3 in the
# part space. Integer features: every inner product is exact in any summation order.
TIE_GLOBAL = torch.tensor([[1, 0], [1, 0], [0, 1], [0, 1], [1, 1]], dtype=torch.float32)
TIE_PART = torch.tensor([[0, 1], [1, 0], [1, 0], [0, 1], [1, 1]], dtype=torch.float32)
# Top-3 by inner product, ties to the lower index. Row 1's column 0 is its duplicate 0, not
# itself: dropping column 0 *by position* keeps row 1 in its own list (likewise rows 3, and 2
# of the part space).
TIE_TOP3_GLOBAL = [[0, 1, 4], [0, 1, 4], [2, 3, 4], [2, 3, 4], [4, 0, 1]]
TIE_TOP3_PART = [[0, 3, 4], [1, 2, 4], [1, 2, 4], [0, 3, 4], [4, 0, 1]]
# R_i(g) vs R_i(p): {1,4}/{3,4}, {1,4}/{2,4}, {3,4}/{2,4}, {3,4}/{3,4}, {0,1}/{0,1}. Dropping
# "self" by value instead would give row 3 {2,4}/{0,4}: 1/3, not 1.
TIE_EXPECTED = torch.tensor([[1 / 3], [1 / 3], [1 / 3], [1.0], [1.0]], dtype=torch.float32)


@pytest.mark.parametrize("path", ["default", "knn", "global_ranked"])
def test_ties_go_to_the_lower_index_and_column_0_is_dropped_by_position(path: str) -> None:
    assert clustering_knn(TIE_GLOBAL, 3).tolist() == TIE_TOP3_GLOBAL
    assert clustering_knn(TIE_PART, 3).tolist() == TIE_TOP3_PART
    assert ranked_lists(TIE_GLOBAL, 2).tolist() == [row[1:] for row in TIE_TOP3_GLOBAL]
    assert ranked_lists(TIE_PART, 2).tolist() == [row[1:] for row in TIE_TOP3_PART]
    parts = TIE_PART[:, None, :]
    kwargs: dict = {
        "default": {},
        "knn": {"knn": clustering_knn},
        "global_ranked": {"knn": clustering_knn, "global_ranked": torch.tensor(TIE_TOP3_GLOBAL)},
    }[path]
    assert torch.equal(cross_agreement(TIE_GLOBAL, parts, 2, **kwargs), TIE_EXPECTED)


def _returning(value: object) -> Callable[[torch.Tensor, int], object]:
    return lambda x, m: value


N, K = 6, 2  # searches of m = K + 1 = 3 columns
GOOD = torch.tensor([[i, (i + 1) % N, (i + 2) % N] for i in range(N)])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"knn": "faiss"}, "knn must be a callable"),
        ({"knn": _returning(GOOD.tolist())}, r"returned a ranked list that must be a torch\.Te"),
        ({"knn": _returning(GOOD.int())}, "must have dtype torch.int64"),
        ({"knn": _returning(GOOD.float())}, "must have dtype torch.int64"),
        ({"knn": _returning(GOOD[:, :2])}, "exactly m = 3 columns"),
        ({"knn": _returning(torch.cat([GOOD, GOOD[:, :1]], 1))}, "exactly m = 3 columns"),
        ({"knn": _returning(GOOD[:5])}, r"must have shape \[N = 6, 3\]"),
        ({"knn": _returning(GOOD[0])}, r"must have shape \[N = 6, 3\]"),
        ({"knn": _returning(GOOD.to("meta"))}, "is on meta, but the features are on cpu"),
        ({"knn": _returning(GOOD + 1)}, r"indices outside \[0, N = 6\)"),
        ({"knn": _returning(GOOD - 1)}, r"indices outside \[0, N = 6\)"),
        ({"knn": _returning(GOOD[:, [0, 1, 1]])}, "repeats an index within a row"),
        ({"global_ranked": GOOD.tolist()}, "global_ranked must be a torch.Tensor"),
        ({"global_ranked": GOOD.int()}, "global_ranked must have dtype torch.int64"),
        ({"global_ranked": GOOD[:, :2]}, r"too few columns: 2 < k \+ 1 = 3"),
        ({"global_ranked": GOOD[:4]}, r"global_ranked must have shape \[N = 6, >= 3\]"),
        ({"global_ranked": GOOD.to("meta")}, "global_ranked is on meta"),
        ({"global_ranked": GOOD * 2}, r"global_ranked holds indices outside \[0, N = 6\)"),
        ({"global_ranked": GOOD[:, [0, 0, 2]]}, "global_ranked repeats an index"),
        ({"knn": clustering_knn, "k": 0}, r"1 <= k < N = 6"),
        ({"knn": clustering_knn, "k": N}, r"1 <= k < N = 6"),
        ({"global_ranked": GOOD, "k": True}, r"1 <= k < N = 6"),
    ],
)
def test_bad_inputs_raise_clear_errors(kwargs: dict, message: str) -> None:
    g = torch.nn.functional.normalize(torch.randn(N, 4, generator=torch.Generator().manual_seed(0)))
    p = torch.nn.functional.normalize(torch.randn(N, 2, 4), dim=2)
    kwargs = {"k": K, **kwargs}
    with pytest.raises(ValueError, match=message):
        cross_agreement(g, p, **kwargs)


def test_repeats_beyond_the_columns_used_and_wider_lists_are_accepted() -> None:
    g = torch.nn.functional.normalize(torch.randn(N, 4, generator=torch.Generator().manual_seed(0)))
    p = torch.nn.functional.normalize(torch.randn(N, 2, 4), dim=2)
    wide = torch.cat([GOOD, GOOD[:, :1]], dim=1)  # column 3 repeats column 0: never read (k = 2)
    expected = cross_agreement(g, p, K, global_ranked=GOOD)
    assert torch.equal(cross_agreement(g, p, K, global_ranked=wide), expected)
