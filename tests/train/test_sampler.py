"""reid_train.sampler.PKBatchSampler: P×K structure, determinism, ranks, too few identities."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from reid_train.sampler import PKBatchSampler, TooFewIdentitiesError, epoch_generator


def _labels(sizes: list[int], outliers: int = 0) -> np.ndarray:
    """Identity i gets sizes[i] images; then ``outliers`` images labelled -1; shuffled."""
    labels = np.concatenate([np.full(n, i) for i, n in enumerate(sizes)] + [np.full(outliers, -1)])
    return np.random.default_rng(0).permutation(labels)


def test_every_batch_has_p_identities_times_k_images() -> None:
    labels = _labels([6, 5, 4, 3, 2, 1, 8, 7], outliers=5)
    sampler = PKBatchSampler(labels, batch_size=12, num_instances=4, iters=20, seed=3)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 20
    for batch in batches:
        assert len(batch) == 12
        counts = Counter(int(labels[i]) for i in batch)
        assert len(counts) == 3 and set(counts.values()) == {4}  # P = 3 distinct, K = 4 each
        assert -1 not in counts  # outliers are never sampled
        for identity in counts:
            picked = [i for i in batch if labels[i] == identity]
            size = int((labels == identity).sum())
            # distinct images when the identity has K of them, all of them otherwise
            assert len(set(picked)) == min(size, 4)


def test_identities_are_visited_in_permutations() -> None:
    labels = _labels([4] * 6)
    batches = PKBatchSampler(labels, 8, 4, iters=3, seed=0).batches()  # P = 2: 3 batches = 1 pass
    seen = [int(labels[b[0]]) for batch in batches for b in [batch[:4], batch[4:]]]
    assert sorted(seen) == list(range(6))


def test_determinism_from_seed_and_epoch_without_the_global_rng() -> None:
    labels = _labels([5] * 10)
    state = torch.get_rng_state()
    a = PKBatchSampler(labels, 16, 4, iters=5, seed=7, epoch=2).batches()
    b = PKBatchSampler(labels, 16, 4, iters=5, seed=7, epoch=2).batches()
    assert torch.equal(torch.get_rng_state(), state)
    assert a == b
    sampler = PKBatchSampler(labels, 16, 4, iters=5, seed=7)
    assert sampler.batches() != a
    sampler.set_epoch(2)
    assert list(sampler) == a
    assert PKBatchSampler(labels, 16, 4, iters=5, seed=8, epoch=2).batches() != a


def test_ranks_get_different_batches_of_equal_number() -> None:
    labels = _labels([5] * 12, outliers=3)
    kwargs = {"batch_size": 8, "num_instances": 4, "iters": 6, "seed": 1, "epoch": 4}
    r0 = PKBatchSampler(labels, num_replicas=2, rank=0, **kwargs)
    r1 = PKBatchSampler(labels, num_replicas=2, rank=1, **kwargs)
    b0, b1 = r0.batches(), r1.batches()
    assert len(b0) == len(b1) == len(r0) == len(r1) == 6
    assert all(x != y for x, y in zip(b0, b1, strict=True))
    # both take from one global stream, alternately
    stream = r0.global_batches()
    assert stream == r1.global_batches() and len(stream) == 12
    assert b0 == stream[0::2] and b1 == stream[1::2]
    with pytest.raises(ValueError, match="rank"):
        PKBatchSampler(labels, num_replicas=2, rank=2, **kwargs)


def test_cross_camera_companions() -> None:
    # identity 0: one image in camera 0, three in camera 1; identity 1: all in camera 2
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    camids = np.array([0, 1, 1, 1, 2, 2, 2, 2])
    sampler = PKBatchSampler(labels, 8, 4, iters=30, camids=camids, seed=0)
    for batch in sampler:
        halves = {int(labels[h[0]]): h for h in (batch[:4], batch[4:])}
        group, other = halves[0], halves[1]
        if camids[group[0]] == 0:  # the 3 companions come from the other camera
            assert sorted(group[1:]) == [1, 2, 3]
        else:  # first image in camera 1: its only other-camera image, index 0, repeated
            assert group[1:] == [0, 0, 0]
        assert sorted(other) == [4, 5, 6, 7]  # one camera only: the identity's other images


def test_small_and_singleton_identities_are_sampled_with_replacement() -> None:
    labels = np.array([0, 1, 1, 2, 2, 2])
    for camids in (None, np.array([0, 0, 1, 0, 1, 2])):
        batches = PKBatchSampler(labels, 12, 4, iters=3, camids=camids, seed=2).batches()
        for batch in batches:
            counts = Counter(batch)
            assert counts[0] == 4  # the singleton, four times
            assert {counts[1], counts[2]} >= {1} and counts[1] + counts[2] == 4
            assert counts[3] + counts[4] + counts[5] == 4 and min(counts[i] for i in (3, 4, 5)) >= 1


def test_too_few_identities_is_a_clear_error() -> None:
    labels = _labels([4, 4, 4], outliers=10)
    with pytest.raises(TooFewIdentitiesError) as info:
        PKBatchSampler(labels, batch_size=16, num_instances=4, iters=2)
    message = str(info.value)
    assert "3 identities" in message and "P = 4" in message and "batch_size" in message
    assert "cluster.eps" in message
    with pytest.raises(TooFewIdentitiesError, match="0 identities"):
        PKBatchSampler(np.full(10, -1), batch_size=8, num_instances=4, iters=2)


def test_augment_seeds_pairs_are_deterministic() -> None:
    labels = _labels([4] * 4)
    a = PKBatchSampler(labels, 8, 4, iters=2, seed=5, augment_seeds=True).batches()
    b = PKBatchSampler(labels, 8, 4, iters=2, seed=5, augment_seeds=True).batches()
    plain = PKBatchSampler(labels, 8, 4, iters=2, seed=5).batches()
    assert a == b
    assert [[i for i, _ in batch] for batch in a] == plain
    seeds = [s for batch in a for _, s in batch]
    assert len(set(seeds)) == len(seeds)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"batch_size": 10, "num_instances": 4}, "multiple"),
        ({"batch_size": 8, "num_instances": 0}, "num_instances"),
        ({"batch_size": 8, "num_instances": 4, "iters": 0}, "iters"),
    ],
)
def test_invalid_arguments(kwargs: dict, error: str) -> None:
    kwargs.setdefault("iters", 2)
    with pytest.raises(ValueError, match=error):
        PKBatchSampler(_labels([4] * 4), **kwargs)
    with pytest.raises(TypeError, match="integers"):
        PKBatchSampler(np.array([0.5, 1.0]), 8, 4, 2)
    with pytest.raises(ValueError, match="camids"):
        PKBatchSampler(_labels([4] * 4), 8, 4, 2, camids=[0, 1])


def test_epoch_generator_streams_differ() -> None:
    draw = [torch.rand(3, generator=epoch_generator(1, e, s)) for e, s in ((0, 0), (1, 0), (0, 1))]
    assert not torch.equal(draw[0], draw[1]) and not torch.equal(draw[0], draw[2])
    assert torch.equal(draw[0], torch.rand(3, generator=epoch_generator(1, 0, 0)))
