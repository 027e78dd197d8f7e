"""Training throughput on 1 and several ranks (distributed data parallel): samples per second.

Each configuration starts its ranks as processes (``torch.multiprocessing.spawn``; gloo on the CPU,
NCCL and one GPU per rank on CUDA), builds the model's networks at the chosen profile's size and times
``--steps`` training iterations (generator + discriminator update) after ``--warmup`` ones. The global
batch is the profile's ``training.batch_size`` (or ``--batch``): each of ``n`` ranks steps on
``batch / n`` images, so the figures are strong scaling at the global batch the study trains with.
The images are random tensors (the patch sampler's cost is ``benchmarks/sampler_speed.py``'s), so
the figure is the networks' and the gradient exchange's. One rank runs the plain one-process trainer.

On the CPU a fair comparison holds the cores fixed: ``--threads`` is per rank, and the one-rank run is
also timed with ``ranks x threads`` threads (the same cores as the several ranks).

Run::

    .venv/bin/python benchmarks/ddp_speed.py                            # quick size, CPU, 1 and 2 ranks
    .venv/bin/python benchmarks/ddp_speed.py --profile smoke --steps 20
    .venv/bin/python benchmarks/ddp_speed.py --profile paper --device cuda --ranks 1 2 4   # a node with 4 GPUs

On a shared machine every figure is noisy: say so when you quote one.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import socket
import time

import torch
import torch.multiprocessing as mp

from vstain.config import load_profile
from vstain.distributed import Ranks, barrier, process_group
from vstain.train import Trainer


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def random_batch(size: int, patch_size: int, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    shape = (size, 3, patch_size, patch_size)
    return {"x": torch.rand(shape, generator=generator) * 2 - 1, "y": torch.rand(shape, generator=generator) * 2 - 1,
            "mask": torch.ones(size, 1, patch_size, patch_size)}


def rank_body(rank: int, world_size: int, port: int, model: str, training, device: str, threads: int, steps: int,
              warmup: int, results) -> None:
    """One rank: ``warmup`` then ``steps`` timed iterations; rank 0 puts the seconds in ``results``."""
    torch.set_num_threads(threads)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    ranks = Ranks(rank, world_size, rank)
    with process_group(ranks, device) as rank_device:
        trainer = Trainer(model, training, seed=0, device=rank_device, ranks=ranks if ranks.distributed else None)
        batch = random_batch(training.batch_size // world_size, training.patch_size, seed=rank)
        for index in range(warmup):
            trainer.step(batch, 0, index)
        if rank_device.type == "cuda":
            torch.cuda.synchronize(rank_device)
        barrier(ranks)
        start = time.perf_counter()
        for index in range(steps):
            trainer.step(batch, 1, index)
        if rank_device.type == "cuda":
            torch.cuda.synchronize(rank_device)
        barrier(ranks)
        if ranks.is_main:
            results.put(time.perf_counter() - start)


def measure(world_size: int, model: str, training, device: str, threads: int, steps: int, warmup: int) -> float:
    """Samples per second of ``world_size`` ranks at the global batch ``training.batch_size``."""
    context = mp.get_context("spawn")
    results = context.SimpleQueue()
    mp.spawn(rank_body, args=(world_size, free_port(), model, training, device, threads, steps, warmup, results),
             nprocs=world_size)
    seconds = results.get()
    return steps * training.batch_size / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--model", default="mod_cyclegan")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per rank")
    parser.add_argument("--batch", type=int, default=None, help="global batch (default: the profile's)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    training = load_profile(args.profile).training
    if args.batch is not None:
        training = dataclasses.replace(training, batch_size=args.batch)
    if args.device == "cuda" and max(args.ranks) > torch.cuda.device_count():
        parser.error(f"--ranks {max(args.ranks)} needs as many GPUs; {torch.cuda.device_count()} visible")
    configurations = [(n, args.threads) for n in args.ranks]
    if args.device == "cpu":
        configurations += [(1, n * args.threads) for n in args.ranks if n > 1]
    print(f"{args.model}, profile {args.profile} (patch {training.patch_size}, global batch {training.batch_size}), "
          f"{args.device}, {args.steps} steps after {args.warmup}; torch {torch.__version__}, {os.cpu_count()} CPUs")
    print(f"{'ranks':>5} {'threads/rank':>12} {'samples/s':>10}")
    for world_size, threads in configurations:
        if training.batch_size % world_size:
            print(f"{world_size:>5} {threads:>12} {'skipped: the global batch is not a multiple of the ranks':>10}")
            continue
        rate = measure(world_size, args.model, training, args.device, threads, args.steps, args.warmup)
        print(f"{world_size:>5} {threads:>12} {rate:>10.2f}", flush=True)


if __name__ == "__main__":
    main()
