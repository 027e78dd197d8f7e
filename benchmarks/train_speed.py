"""Training speed of the four models: seconds per iteration, GFLOP/s, % of this machine's fp32 matmul peak.

For each model, one training iteration (generator update + discriminator update, one
batch) is timed at the quick profile's size and at the paper's (256 px, ngf 64, batch
4; a few iterations only). FLOPs per iteration are counted with
``torch.utils.flop_counter`` (forward + backward of every convolution and matmul). The
fp32 matmul peak is measured in the same run with the same thread count. Variants:
thread count, channels_last memory format, bf16 autocast, torch.compile. The patch
sampler's time per batch is measured against the step time.

Run: ``.venv/bin/python benchmarks/train_speed.py [--paper-iters 2] [--skip-paper] [--compile]``.
On a shared machine every figure is noisy: run it when the CPU is otherwise idle.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from vstain.config import load_profile
from vstain.data import PatchSampler
from vstain.models import MODEL_NAMES
from vstain.pairs import RegisteredPair
from vstain.train import Trainer


def matmul_peak_gflops(threads: int, n: int = 1024, repeats: int = 10) -> float:
    """Best fp32 matmul throughput of ``repeats`` n x n products."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2 * n ** 3 / (time.perf_counter() - start) / 1e9)
    return best


def batch_for(patch_size: int, batch_size: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    shape = (batch_size, 3, patch_size, patch_size)
    return {"x": torch.rand(shape, generator=g) * 2 - 1, "y": torch.rand(shape, generator=g) * 2 - 1,
            "mask": torch.ones(batch_size, 1, patch_size, patch_size)}


def flops_per_iteration(model: str, training, patch_size: int) -> float:
    trainer = Trainer(model, training, 0)
    with FlopCounterMode(display=False) as counter:
        trainer.step(batch_for(patch_size, training.batch_size))
    return float(counter.get_total_flops())


def seconds_per_iteration(model: str, training, patch_size: int, iterations: int, threads: int,
                          channels_last: bool = False, bf16: bool = False, compile_: bool = False) -> float:
    torch.set_num_threads(threads)
    trainer = Trainer(model, training, 0, channels_last=channels_last, cpu_bf16=bf16)
    if compile_:
        trainer.nets = {k: torch.compile(v) for k, v in trainer.nets.items()}
    batch = batch_for(patch_size, training.batch_size)
    trainer.step(batch)  # warm-up (oneDNN primitive creation, compilation)
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        trainer.step(batch)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def sampler_seconds_per_batch(training, pair_side: int) -> float:
    rng = np.random.default_rng(0)
    pair = RegisteredPair("bench", "Mg", "toluidine_blue", rng.integers(5000, 40000, (pair_side, pair_side)).astype(
        np.uint16), rng.integers(0, 256, (pair_side, pair_side, 3)).astype(np.uint8),
        np.ones((pair_side, pair_side), bool), 5.0)
    sampler = PatchSampler.from_profile([pair] * 4, training, seed=0)
    start = time.perf_counter()
    n = sum(1 for _ in sampler.epoch(0))
    return (time.perf_counter() - start) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paper-iters", type=int, default=1)
    parser.add_argument("--quick-iters", type=int, default=5)
    parser.add_argument("--skip-paper", action="store_true")
    parser.add_argument("--compile", action="store_true", help="also try torch.compile (slow to compile)")
    parser.add_argument("--models", nargs="*", default=list(MODEL_NAMES))
    args = parser.parse_args()
    cores = torch.get_num_threads()
    quick, paper = load_profile("quick").training, load_profile("paper").training
    print(f"torch {torch.__version__}, {cores} threads available")
    peaks = {t: matmul_peak_gflops(t) for t in sorted({1, cores})}
    for t, peak in peaks.items():
        print(f"fp32 matmul peak, {t} thread(s): {peak:.1f} GFLOP/s")

    print("\nsampler vs step (quick size, 1 thread)")
    sampler_s = sampler_seconds_per_batch(quick, 192)
    print(f"  sampler: {sampler_s * 1e3:.1f} ms/batch of {quick.batch_size} x {quick.patch_size} px")
    sampler_paper = sampler_seconds_per_batch(paper, 600)
    print(f"  sampler: {sampler_paper * 1e3:.1f} ms/batch of {paper.batch_size} x {paper.patch_size} px")

    sizes = [("quick", quick, args.quick_iters)] + ([] if args.skip_paper else [("paper", paper, args.paper_iters)])
    print("\nmodel           size   threads variant        s/iter   GFLOP/iter  GFLOP/s  % of peak")
    for model in args.models:
        for size_name, training, iters in sizes:
            flops = flops_per_iteration(model, training, training.patch_size)
            variants = [(t, "fp32", {}) for t in sorted(peaks)]
            if size_name == "quick":
                variants += [(1, "channels_last", {"channels_last": True}), (1, "bf16 autocast", {"bf16": True})]
                if args.compile:
                    variants.append((1, "torch.compile", {"compile_": True}))
            for threads, label, options in variants:
                seconds = seconds_per_iteration(model, training, training.patch_size, iters, threads, **options)
                rate = flops / seconds / 1e9
                print(f"{model:15s} {size_name:6s} {threads:7d} {label:14s} {seconds:7.3f} {flops / 1e9:11.2f}"
                      f" {rate:8.1f} {100 * rate / peaks[threads]:9.1f}", flush=True)
            if size_name == "quick":
                step = seconds_per_iteration(model, training, training.patch_size, iters, 1)
                print(f"{'':15s} sampler share of a quick step: {100 * sampler_s / (step + sampler_s):.1f} %")


if __name__ == "__main__":
    main()
