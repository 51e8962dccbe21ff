"""P×K identity batch sampler over an epoch's pseudo labels, deterministic and distributed-aware.

Every batch holds P = batch_size / K distinct pseudo identities with K images each, the batch
structure the triplet loss (hardest positive and negative in the batch) needs. The sampler is a
*batch* sampler: give it to ``DataLoader(dataset, batch_sampler=...)``.

Sampling (the RandomIdentitySampler / RandomMultipleGallerySampler convention of SpCL and PPLR):

* identities are visited in random permutations; each batch takes the next P identities of the
  current permutation and a new permutation starts when fewer than P remain (the remainder is
  dropped, like ``drop_last``), so a batch never repeats an identity;
* an identity with at least K images gives K distinct images; one with fewer gives all of them
  plus random repeats (sampling with replacement), a singleton its one image K times;
* with ``camids`` (``cross_camera=True``), the first image is drawn at random and the K − 1 others
  preferably from *other* cameras of the same identity (the official RandomMultipleGallerySampler),
  then from the identity's other images, which gives the camera-aware losses cross-camera
  positives.

Outliers: entries of ``labels`` below 0 (DBSCAN's −1) are never sampled, so the dataset may hold
every training image with its epoch label; dropping them beforehand works the same.

Determinism and ranks: the batches are a function of ``(seed, epoch)`` only, drawn from a private
``torch.Generator`` (the global RNG is never touched). With ``num_replicas = R`` every rank draws
the same global stream of ``iters × R`` batches and rank r takes batches r, r + R, r + 2R, ...:
ranks see different batches and each gets exactly ``iters``. Build it with the process count and
index (e.g. ``accelerator.num_processes`` / ``accelerator.process_index``) and keep the loader out
of ``accelerator.prepare`` (which would shard it a second time); or build it with
``num_replicas=1`` and let ``prepare`` shard the batches (each rank then gets about
``iters / R`` of them).

With ``augment_seeds=True`` every index comes as ``(index, seed)``: a per-sample seed that
:class:`reid_train.data.TrainImageDataset` uses for its random augmentation, which makes the
images (not only their order) a function of ``(seed, epoch)``, whatever the number of workers.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

__all__ = ["PKBatchSampler", "TooFewIdentitiesError", "epoch_generator"]


class TooFewIdentitiesError(ValueError):
    """The epoch has fewer pseudo identities than a P×K batch needs."""


def epoch_generator(seed: int, epoch: int, stream: int = 0) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded from ``(seed, epoch, stream)`` (hashed: nearby seeds and
    epochs give unrelated streams)."""
    state = np.random.SeedSequence([int(seed), int(epoch), int(stream)]).generate_state(
        1, dtype=np.uint64
    )
    return torch.Generator().manual_seed(int(state[0]))


def _as_int_array(values: object, name: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must hold integers, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def _positive_int(value: object, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


class PKBatchSampler(Sampler[list]):
    """Batches of P pseudo identities × K images, ``iters`` batches per epoch (see module doc).

    Args:
        labels: ``[N]`` integer pseudo label of each dataset index; negative = outlier, never
            sampled. Labels need not be contiguous.
        batch_size: images per batch (per rank), ``P × K``.
        num_instances: K, images per identity.
        iters: batches per epoch (per rank).
        camids: optional ``[N]`` camera of each index, for ``cross_camera``.
        cross_camera: draw the K − 1 companions from other cameras first (needs ``camids``).
        seed: base seed; with ``epoch`` it fixes every batch.
        epoch: the epoch (also settable with :meth:`set_epoch`).
        num_replicas: number of ranks R; rank: this rank in ``[0, R)``.
        augment_seeds: yield ``(index, seed)`` pairs instead of indices.

    Raises:
        TooFewIdentitiesError: fewer than P identities (outliers excluded); the message gives the
            numbers and the fixes.
        ValueError: invalid sizes, or labels/camids of different lengths.
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray | torch.Tensor,
        batch_size: int,
        num_instances: int,
        iters: int,
        *,
        camids: Sequence[int] | np.ndarray | torch.Tensor | None = None,
        cross_camera: bool = True,
        seed: int = 0,
        epoch: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        augment_seeds: bool = False,
    ) -> None:
        self.batch_size = _positive_int(batch_size, "batch_size")
        self.num_instances = _positive_int(num_instances, "num_instances")
        self.iters = _positive_int(iters, "iters")
        self.num_replicas = _positive_int(num_replicas, "num_replicas")
        self.rank = _positive_int(rank, "rank", minimum=0)
        if self.rank >= self.num_replicas:
            raise ValueError(f"rank must be in [0, num_replicas={num_replicas}), got {rank}")
        if self.batch_size % self.num_instances:
            raise ValueError(
                f"batch_size {batch_size} must be a multiple of num_instances {num_instances} "
                "(P identities x K images)"
            )
        self.num_identities = self.batch_size // self.num_instances  # P
        self.seed = int(seed)
        self.epoch = int(epoch)
        self.augment_seeds = bool(augment_seeds)

        labels_arr = _as_int_array(labels, "labels")
        cams_arr = None
        if camids is not None and cross_camera:
            cams_arr = _as_int_array(camids, "camids")
            if cams_arr.shape != labels_arr.shape:
                raise ValueError(
                    f"camids must have one entry per label ({labels_arr.size}), got {cams_arr.size}"
                )
        self.cross_camera = cams_arr is not None
        kept = np.flatnonzero(labels_arr >= 0)
        ids, inverse = np.unique(labels_arr[kept], return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        bounds = np.cumsum(np.bincount(inverse, minlength=ids.size))[:-1]
        #: dataset indices of each identity (identities in ascending label order)
        self._members: list[np.ndarray] = np.split(kept[order], bounds) if ids.size else []
        self._cams: list[np.ndarray] | None = (
            [cams_arr[m] for m in self._members] if cams_arr is not None else None
        )
        self.identities = ids  # the distinct labels sampled (ascending)
        if ids.size < self.num_identities:
            raise TooFewIdentitiesError(
                f"the epoch's pseudo labels hold {ids.size} identities ({kept.size} of "
                f"{labels_arr.size} images clustered, outliers excluded) but every batch needs "
                f"P = {self.num_identities} distinct identities (batch_size {self.batch_size} / "
                f"num_instances {self.num_instances}); lower data.batch_size (or "
                "data.num_instances), or let more clusters form (raise cluster.eps or lower "
                "cluster.min_samples)"
            )

    def __len__(self) -> int:
        return self.iters

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch: the batches are a function of ``(seed, epoch)``."""
        self.epoch = int(epoch)

    def _choose(self, pool: np.ndarray, m: int, g: torch.Generator) -> list[int]:
        """``m`` entries of ``pool``: distinct when it has enough, else all + random repeats."""
        n = pool.size
        perm = torch.randperm(n, generator=g).numpy()
        if n >= m:
            return pool[perm[:m]].tolist()
        extra = torch.randint(n, (m - n,), generator=g).numpy()
        return pool[perm].tolist() + pool[extra].tolist()

    def _instances(self, identity: int, g: torch.Generator) -> list[int]:
        members = self._members[identity]
        k = self.num_instances
        if self._cams is None:
            return self._choose(members, k, g)
        cams = self._cams[identity]
        first = int(torch.randint(members.size, (1,), generator=g))
        if k == 1:
            return [int(members[first])]
        others = members[cams != cams[first]]
        if others.size == 0:
            others = np.delete(members, first)
        if others.size == 0:  # a singleton cluster
            return [int(members[first])] * k
        return [int(members[first]), *self._choose(others, k - 1, g)]

    def global_batches(self) -> list[list[int]]:
        """The ``iters × num_replicas`` batches of the epoch, before the split between ranks."""
        g = epoch_generator(self.seed, self.epoch)
        p, num_ids = self.num_identities, len(self._members)
        batches: list[list[int]] = []
        perm: list[int] = []
        pos = 0
        for _ in range(self.iters * self.num_replicas):
            if pos + p > len(perm):
                perm, pos = torch.randperm(num_ids, generator=g).tolist(), 0
            batch: list[int] = []
            for identity in perm[pos : pos + p]:
                batch.extend(self._instances(identity, g))
            pos += p
            batches.append(batch)
        return batches

    def batches(self) -> list[list]:
        """This rank's ``iters`` batches for the current epoch (what iterating yields)."""
        mine = self.global_batches()[self.rank :: self.num_replicas]
        if not self.augment_seeds:
            return mine
        g = epoch_generator(self.seed, self.epoch, stream=1)
        seeds = torch.randint(
            0, 2**62, (self.iters * self.num_replicas, self.batch_size), generator=g
        )
        seeds = seeds[self.rank :: self.num_replicas].tolist()
        return [list(zip(b, s, strict=True)) for b, s in zip(mine, seeds, strict=True)]

    def __iter__(self) -> Iterator[list]:
        yield from self.batches()
