"""What several processes share: sharded feature extraction and the collectives around it
(steps 1 and 5 of an epoch).

Every process extracts the features of its shard of the images; the shards are gathered on
every process, in the order of the records, and stay on the training device
(``Accelerator.device``: the GPU of a GPU run). :func:`broadcast_from_main` gives every
process the main process's tensor (the epoch's labels, the method's per-image tensors, the
best mAP); :func:`on_main` runs a job on the main process and raises its failure on every
process.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast, broadcast_object_list
from tqdm.auto import tqdm

from reid_backbones import ReIDModel
from reid_eval import ImageRecord

from .config import ConfigError, TrainConfig
from .data import build_extract_loader
from .run_folder import RunDirError

__all__ = [
    "broadcast_from_main",
    "broadcast_tensors",
    "extract_features",
    "on_main",
    "shard_indices",
]

T = TypeVar("T")


def shard_indices(n: int, rank: int, world: int) -> list[int]:
    """The record indices process ``rank`` of ``world`` extracts: every ``world``-th one from
    ``rank``, padded with its last index (or 0) to ``ceil(n / world)`` so that every process
    gathers the same number of rows."""
    per_rank = math.ceil(n / world)
    shard = list(range(rank, n, world))
    shard += [shard[-1]] * (per_rank - len(shard)) if shard else [0] * per_rank
    return shard


@torch.no_grad()
def extract_features(
    acc: Accelerator,
    net: ReIDModel,
    records: list[ImageRecord],
    cfg: TrainConfig,
    parts: bool = False,
    **loader_options: Any,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """L2-normalised features of ``records`` (each process its shard, gathered on all).

    ``net`` is the model without its distributed wrapper; it is put in eval mode for the
    extraction and back in the mode it was in. ``loader_options`` go to
    :func:`reid_train.data.build_extract_loader` (e.g. ``what_next``).

    Returns ``(global [N, D], parts [N, P, D] | None, valid [N] bool)`` float32 on the
    training device (``acc.device``; the CPU in a CPU run), in the order of ``records``;
    unreadable images have ``valid = False`` (treated as outliers). Nothing is copied to the
    CPU; with one process the gathered tensors are returned as they are.
    """
    device = acc.device
    shard = shard_indices(len(records), acc.process_index, acc.num_processes)
    loader = build_extract_loader(
        [records[i] for i in shard], cfg.data,
        max_bad_images=cfg.runtime.max_bad_images, device=device,
        **loader_options,
    )  # fmt: skip
    was_training = net.training
    net.eval()
    g_out, p_out, v_out = [], [], []
    for batch in tqdm(
        loader, desc="extract", disable=None if acc.is_main_process else True, leave=False
    ):
        images = batch["image"].to(device)
        if cfg.runtime.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with acc.autocast():
            g, p = net.extract(images, parts=parts)
        g_out.append(g.float())
        p_out.append(p.float() if p is not None else None)
        v_out.append(batch["valid"].to(device))
    net.train(was_training)
    with_parts = parts and bool(p_out) and p_out[0] is not None
    local_g, local_v = torch.cat(g_out), torch.cat(v_out)
    local_p = torch.cat(p_out) if with_parts else None
    del g_out, p_out, v_out  # the batches: one copy of the shard is enough
    index = torch.tensor(shard, device=device)
    gathered_idx = acc.gather(index).cpu()
    order = torch.empty(len(records), dtype=torch.int64)
    order[gathered_idx] = torch.arange(gathered_idx.numel())  # duplicates: last one wins
    # One process (or shards that gather in order): the gathered rows are in order already.
    in_order = gathered_idx.numel() == len(records) and torch.equal(
        order, torch.arange(len(records))
    )
    order = order.to(device)

    def ordered(local: torch.Tensor) -> torch.Tensor:
        gathered = acc.gather(local)
        return gathered if in_order else gathered[order]

    g_all = ordered(local_g)
    v_all = ordered(local_v).bool()
    p_all = ordered(local_p) if local_p is not None else None
    return g_all, p_all, v_all


def broadcast_from_main(acc: Accelerator, tensor: torch.Tensor) -> torch.Tensor:
    """The main process's ``tensor`` on every process, on the device it was given on (the
    tensor itself with one process)."""
    if acc.num_processes == 1:
        return tensor
    return broadcast(tensor.to(acc.device), from_process=0).to(tensor.device)


def broadcast_tensors(
    acc: Accelerator, tensors: dict[str, torch.Tensor], device: torch.device
) -> dict[str, torch.Tensor]:
    """The main process's named tensors on every process: their names, shapes and dtypes first,
    then each tensor (on ``device``). With one process, ``tensors`` itself."""
    if acc.num_processes == 1:
        return tensors
    meta = [{k: (tuple(t.shape), t.dtype) for k, t in tensors.items()}]
    broadcast_object_list(meta, from_process=0)
    out = {}
    for name, (shape, dtype) in meta[0].items():
        if acc.is_main_process:
            out[name] = broadcast_from_main(acc, tensors[name])
        else:
            out[name] = broadcast_from_main(acc, torch.zeros(shape, dtype=dtype, device=device))
    return out


def on_main(acc: Accelerator, job: Callable[[], T]) -> T | None:
    """Run ``job`` on the main process (None elsewhere); a :class:`RunDirError` or
    :class:`ConfigError` it raises is raised on every process (the others would otherwise wait
    forever at their next collective)."""
    failure: list[Any] = [None]
    result = None
    if acc.is_main_process:
        try:
            result = job()
        except (RunDirError, ConfigError) as e:
            failure = [(type(e).__name__, str(e))]
    if acc.num_processes > 1:
        broadcast_object_list(failure, from_process=0)
    if failure[0] is not None:
        kind, message = failure[0]
        raise (ConfigError if kind == "ConfigError" else RunDirError)(message)
    return result
