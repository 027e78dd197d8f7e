"""Training on several processes at once: distributed data parallel (DDP), launched by ``torchrun``.

One training run can use ``n`` processes (*ranks*), one GPU each on CUDA (NCCL) or CPU cores
(gloo)::

    torchrun --standalone --nproc_per_node 4 -m vstain train --profile paper --model pix2pix --fold 0

(the workflow's train rule does this when ``training.ranks`` is above 1). What a rank does:

* **patches**: each rank draws its own share of every batch
  (:meth:`vstain.data.PatchSampler.epoch` with ``shard=(rank, n)``); ``training.batch_size`` stays
  the *global* batch, a multiple of ``n``, so each rank's batch is ``batch_size / n``. Every patch
  comes from its own generator seeded by the epoch and its position, so the shares put together
  are the same patches whatever ``n`` (and whatever rank a kill interrupts).
* **updates**: every network is wrapped in its own :class:`~torch.nn.parallel.DistributedDataParallel`.
  The generator update runs the discriminators through their plain modules (their weights are
  frozen there, so no gradient of theirs is awaited: default DDP would stop with "Expected to
  have finished reduction"); the discriminator update runs them through their wrappers. Gradients
  are averaged over the ranks. The masked l1 terms are normalised by the mask pixels of the
  whole global batch (:func:`l1_share`), so the averaged gradient is the one-process gradient of
  the global batch, not an average of per-rank ratios.
* **image buffers**: the generated images of all ranks are gathered, every rank queries its copy
  of the buffer with the whole global batch (the copies stay identical, as the one-process
  buffer) and keeps its own share of the answer.
* **losses, checkpoints**: loss components are averaged over the ranks before anything looks at
  them, so every rank sees the one-process numbers, a non-finite loss stops all ranks alike, and
  the checkpoint selection (the minimum of each component) is the same; only rank 0 writes.
* **batch norm** (Pix2Pix): on CUDA the layers become :class:`~torch.nn.SyncBatchNorm` (statistics
  of the global batch); on the CPU (gloo has no synchronised batch norm) each rank normalises by
  its own share and rank 0's running statistics are broadcast. **Dropout** (Pix2Pix's U-Net)
  draws its masks from each rank's own seed. These two are why only the CycleGANs (instance
  norm, no dropout) equal a one-process run to rounding.
* **resume**: as one process (``last.pt`` of the last finished epoch; every rank reads it).
* **failure**: a rank that fails prints ``vstain: rank r of n failed: ...`` and ends; torchrun then
  stops the others (and names the first failure). Gloo's collectives fail at once when a peer
  leaves; NCCL's after :data:`COLLECTIVE_TIMEOUT_S` at the latest.

A run with one process (no ``torchrun``) takes none of these paths and is unchanged.

Examples
--------
>>> ranks = ranks_from_environment({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"})
>>> ranks, ranks.is_main, ranks.distributed
(Ranks(rank=1, world_size=2, local_rank=1), False, True)
>>> ranks_from_environment({}) is None
True
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
import sys
import zlib
from typing import Any, Iterator, Mapping

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

#: Seconds a collective waits for the other ranks before it fails (a lost rank cannot hang a job for longer).
COLLECTIVE_TIMEOUT_S = 600


@dataclasses.dataclass(frozen=True)
class Ranks:
    """Where one process stands among the ranks of a run.

    Attributes
    ----------
    rank : int
        This process, 0 to ``world_size - 1``; rank 0 writes.
    world_size : int
        Processes of the run.
    local_rank : int
        This process on its machine: the index of its GPU.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    def __post_init__(self) -> None:
        if self.world_size < 1 or not 0 <= self.rank < self.world_size or self.local_rank < 0:
            raise ValueError(f"ranks: need 0 <= rank < world_size and local_rank >= 0, got rank {self.rank}, "
                             f"world_size {self.world_size}, local_rank {self.local_rank}")

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0 (the one that writes and shows progress)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether there is more than one rank."""
        return self.world_size > 1

    @property
    def shard(self) -> tuple[int, int]:
        """``(rank, world_size)``, the sampler's shard (:meth:`vstain.data.PatchSampler.epoch`)."""
        return self.rank, self.world_size


def ranks_from_environment(environ: Mapping[str, str] | None = None) -> Ranks | None:
    """The ranks ``torchrun`` gives this process (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), or None.

    None outside ``torchrun`` (no ``WORLD_SIZE``). A malformed value stops with the variable's name.

    Examples
    --------
    >>> ranks_from_environment({"RANK": "0", "WORLD_SIZE": "1"})
    Ranks(rank=0, world_size=1, local_rank=0)
    >>> ranks_from_environment({"RANK": "x", "WORLD_SIZE": "2"})
    Traceback (most recent call last):
    ...
    ValueError: environment variable RANK must be an integer, got 'x' (torchrun sets it)
    """
    environ = os.environ if environ is None else environ
    if "WORLD_SIZE" not in environ:
        return None
    values = {}
    for name, default in (("RANK", None), ("WORLD_SIZE", None), ("LOCAL_RANK", "0")):
        text = environ.get(name, default)
        if text is None:
            raise ValueError(f"environment variable {name} is not set but WORLD_SIZE is (torchrun sets both)")
        try:
            values[name] = int(text)
        except ValueError:
            raise ValueError(f"environment variable {name} must be an integer, got {text!r} (torchrun sets it)") from None
    return Ranks(values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"])


@contextlib.contextmanager
def process_group(ranks: Ranks, device: torch.device | str) -> Iterator[torch.device]:
    """Join the run's process group for the block; yields this rank's device.

    NCCL and ``cuda:<local_rank>`` on CUDA, gloo on the CPU; the rendezvous is torchrun's
    (``MASTER_ADDR``, ``MASTER_PORT``). One rank: nothing is joined and ``device`` comes back.
    The group is left at the end of the block, also on failure.
    """
    device = torch.device(device)
    if not ranks.distributed:
        yield device
        return
    if device.type == "cuda":
        if ranks.local_rank >= torch.cuda.device_count():
            raise ValueError(f"rank {ranks.rank}: local rank {ranks.local_rank} has no GPU "
                             f"({torch.cuda.device_count()} visible); ask for as many GPUs as ranks")
        torch.cuda.set_device(ranks.local_rank)
        device, backend = torch.device("cuda", ranks.local_rank), "nccl"
    else:
        backend = "gloo"
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if name not in os.environ:
            raise ValueError(f"environment variable {name} is not set: start the ranks with torchrun")
    dist.init_process_group(backend, rank=ranks.rank, world_size=ranks.world_size,
                            timeout=datetime.timedelta(seconds=COLLECTIVE_TIMEOUT_S),
                            **({"device_id": device} if device.type == "cuda" else {}))
    try:
        yield device
    finally:
        dist.destroy_process_group()


def _active(ranks: Ranks | None) -> bool:
    return ranks is not None and ranks.distributed


def rank_seed(seed: int, epoch: int, rank: int) -> int:
    """The torch seed of one rank in one epoch (dropout), so that a resumed epoch draws as the first try.

    Examples
    --------
    >>> rank_seed(7, 1, 0) == rank_seed(7, 1, 0) != rank_seed(7, 1, 1)
    True
    """
    sequence = np.random.SeedSequence([int(seed), int(epoch), int(rank), zlib.crc32(b"rank")])
    return int(sequence.generate_state(1, np.uint32)[0])


def wrap(net: nn.Module, ranks: Ranks | None, device: torch.device) -> nn.Module:
    """``net`` in a :class:`~torch.nn.parallel.DistributedDataParallel` wrapper (one rank: ``net`` itself).

    Gradients of the wrapper's backward are averaged over the ranks. Every parameter must take part
    in each backward through the wrapper (no ``find_unused_parameters``): call the plain module where
    a network's weights are frozen.
    """
    if not _active(ranks):
        return net
    if device.type == "cuda":
        return nn.parallel.DistributedDataParallel(net, device_ids=[device.index], output_device=device.index)
    return nn.parallel.DistributedDataParallel(net)


def sync_batch_norm(net: nn.Module, ranks: Ranks | None, device: torch.device) -> nn.Module:
    """Batch norm over the global batch on CUDA (:class:`~torch.nn.SyncBatchNorm`); unchanged otherwise.

    The state dict keeps its names, so checkpoints load into plain :class:`~torch.nn.BatchNorm2d`.
    """
    if _active(ranks) and device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(net)
    return net


def mean_over_ranks(values: Mapping[str, torch.Tensor], ranks: Ranks | None) -> dict[str, float]:
    """Each (scalar) value averaged over the ranks, as floats; one rank: the values themselves.

    With equal shares of the batch, the average of per-rank batch means is the global batch mean.
    """
    if not _active(ranks):
        return {k: float(v.detach()) for k, v in values.items()}
    stacked = torch.stack([v.detach().float().reshape(()) for v in values.values()])
    dist.all_reduce(stacked, op=dist.ReduceOp.SUM)
    return dict(zip(values, (stacked / ranks.world_size).tolist()))


def l1_share(mask: torch.Tensor, ranks: Ranks | None) -> torch.Tensor | None:
    """The factor that turns this rank's masked l1 terms into its share of the global batch's.

    A masked l1 term is ``S / V`` (absolute differences summed inside the mask over mask pixels,
    :func:`vstain.losses.masked_l1`). The global batch's term is ``sum_r S_r / sum_r V_r``; DDP
    averages gradients, so rank ``r`` must contribute ``n S_r / sum_r V_r = (S_r / V_r) * n V_r /
    sum_r V_r``. All masked terms of a step share the mask, hence one factor. One rank: None.
    """
    if not _active(ranks):
        return None
    local = mask.detach().float().sum()
    total = local.clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return ranks.world_size * local / total


def gather_batch(images: torch.Tensor, ranks: Ranks | None) -> torch.Tensor:
    """The (detached) images of every rank, concatenated in rank order: the global batch."""
    images = images.detach().contiguous()
    if not _active(ranks):
        return images
    parts = [torch.empty_like(images) for _ in range(ranks.world_size)]
    dist.all_gather(parts, images)
    return torch.cat(parts, 0)


def own_share(batch: torch.Tensor, ranks: Ranks | None) -> torch.Tensor:
    """This rank's rows of a global batch (the inverse of :func:`gather_batch`)."""
    if not _active(ranks):
        return batch
    share = batch.shape[0] // ranks.world_size
    return batch[ranks.rank * share:(ranks.rank + 1) * share]


def barrier(ranks: Ranks | None) -> None:
    """Wait until every rank reaches this point (one rank: return)."""
    if _active(ranks):
        dist.barrier()


def failure_message(ranks: Ranks, error: BaseException) -> str:
    """What a failing rank says before it ends (torchrun then stops the other ranks).

    Examples
    --------
    >>> failure_message(Ranks(1, 2), ValueError("pair p0: field mask is all zero"))
    'vstain: rank 1 of 2 failed: ValueError: pair p0: field mask is all zero; the other ranks are stopped'
    """
    return (f"vstain: rank {ranks.rank} of {ranks.world_size} failed: {type(error).__name__}: {error}; "
            "the other ranks are stopped")


@contextlib.contextmanager
def report_failure(ranks: Ranks | None) -> Iterator[None]:
    """Print :func:`failure_message` to stderr when the block raises on one of several ranks, then re-raise.

    An error is reported; an interruption (Ctrl-C, or the SIGTERM with which torchrun stops the other
    ranks once one has failed) is not: the failing rank's message is the one to read.
    """
    try:
        yield
    except Exception as err:
        if _active(ranks):
            print(failure_message(ranks, err), file=sys.stderr, flush=True)
        raise


def describe(ranks: Ranks | None) -> dict[str, Any]:
    """What a run's records say of its ranks: ``{"ranks": n}``."""
    return {"ranks": ranks.world_size if ranks is not None else 1}
