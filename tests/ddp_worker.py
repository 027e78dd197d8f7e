"""The body of one rank in the distributed training tests (spawned processes import it by name).

Kept out of the test module so that ``torch.multiprocessing.spawn`` can pickle it whatever import mode
pytest uses.
"""

from __future__ import annotations

import os
import signal
import socket

import torch

from vstain.distributed import Ranks, process_group, report_failure
from vstain.train import Trainer, train_model


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fail_at(rank: int, epoch: int, step: int, how: str) -> None:
    """Make ``Trainer.step`` of ``rank`` fail at ``(epoch, step)``: ``raise`` a ValueError or ``kill`` the process."""
    original = Trainer.step

    def step_or_fail(self, batch, epoch_now=0, step_now=0):
        if self.ranks is not None and self.ranks.rank == rank and (epoch_now, step_now) == (epoch, step):
            if how == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise ValueError(f"a failure made on purpose at epoch {epoch}, step {step}")
        return original(self, batch, epoch_now, step_now)

    Trainer.step = step_or_fail


def train_rank(rank: int, world_size: int, port: int, pairs, out_dir: str, model: str, training, epochs: int,
               seed: int, failure: tuple | None = None) -> None:
    """One rank of a gloo run of :func:`vstain.train.train_model` (``failure``: ``(rank, epoch, step, how)``)."""
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if failure is not None:
        fail_at(*failure)
    ranks = Ranks(rank, world_size, rank)
    with report_failure(ranks), process_group(ranks, "cpu") as device:
        train_model(pairs, out_dir, model, training, epochs=epochs, seed=seed, ranks=ranks, device=device,
                    progress=False)


def gradients_rank(rank: int, world_size: int, port: int, pairs, model: str, training, seed: int, out: str) -> None:
    """One training step of a gloo run (``world_size`` 1: one process); rank 0 saves every parameter's gradient.

    After a step each network's ``.grad`` holds the gradient of its last update (averaged over the ranks).
    """
    from vstain.data import PatchSampler

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    ranks = Ranks(rank, world_size, rank)
    with process_group(ranks, "cpu"):
        trainer = Trainer(model, training, seed, ranks=ranks)
        batch = next(iter(PatchSampler.from_profile(pairs, training, seed).epoch(1, ranks.shard)))
        trainer.step(batch, 1, 0)
        if ranks.is_main:
            torch.save({name: {key: p.grad for key, p in net.named_parameters()} for name, net in trainer.nets.items()},
                       out)
