"""Training speed of the four models: seconds per iteration, GFLOP/s, % of this machine's fp32 matmul peak.

For each model, one training iteration (generator update + discriminator update, one
batch) is timed at the quick profile's size and at the paper's (256 px, ngf 64, batch
4; a few iterations only). FLOPs per iteration are counted with
``torch.utils.flop_counter`` (forward + backward of every convolution and matmul). The
fp32 matmul peak is measured in the same run with the same thread count. Variants:
thread count, channels_last memory format, bf16 autocast, torch.compile. The patch
sampler's time per batch is measured against the step time.

Run: ``.venv/bin/python benchmarks/train_speed.py [--skip-paper] [--paper-fp32] [--compile]``.
At paper size one iteration per model is timed after one warm-up iteration that counts the
FLOPs (a CycleGAN iteration is several TFLOP). bf16 variants are set against both the fp32
and the bf16 matmul peak.
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
from vstain.train import Trainer, cpu_has_native_bf16


def matmul_peak_gflops(threads: int, n: int = 1024, repeats: int = 10, dtype: torch.dtype = torch.float32) -> float:
    """Best matmul throughput of ``repeats`` n x n products in ``dtype``."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
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


def make_trainer(model: str, training, threads: int, channels_last: bool = False, bf16: bool = False,
                 compile_: bool = False) -> Trainer:
    torch.set_num_threads(threads)
    trainer = Trainer(model, training, 0, channels_last=channels_last, cpu_bf16=bf16)
    if compile_:
        trainer.nets = {k: torch.compile(v) for k, v in trainer.nets.items()}
    return trainer


def seconds_per_iteration(model: str, training, patch_size: int, iterations: int, threads: int,
                          warmup: bool = True, **options) -> float:
    """Median seconds of ``iterations`` training iterations (after one warm-up iteration)."""
    trainer = make_trainer(model, training, threads, **options)
    batch = batch_for(patch_size, training.batch_size)
    if warmup:
        trainer.step(batch)  # oneDNN primitive creation, compilation
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        trainer.step(batch)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def counted_iteration(model: str, training, threads: int, **options) -> tuple[float, float]:
    """(seconds, FLOPs) at paper size: FLOPs counted on a warm-up iteration, then one iteration timed alone.

    The warm-up pays oneDNN's primitive creation and the counter's own overhead, so
    neither lands in the timed iteration.
    """
    trainer = make_trainer(model, training, threads, **options)
    batch = batch_for(training.patch_size, training.batch_size)
    with FlopCounterMode(display=False) as counter:
        trainer.step(batch)
    start = time.perf_counter()
    trainer.step(batch)
    return time.perf_counter() - start, float(counter.get_total_flops())


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
    parser.add_argument("--quick-iters", type=int, default=5)
    parser.add_argument("--skip-paper", action="store_true")
    parser.add_argument("--paper-fp32", action="store_true", help="also time plain fp32 at paper size (slow)")
    parser.add_argument("--compile", action="store_true", help="also try torch.compile (slow to compile)")
    parser.add_argument("--models", nargs="*", default=list(MODEL_NAMES))
    args = parser.parse_args()
    cores = torch.get_num_threads()
    quick, paper = load_profile("quick").training, load_profile("paper").training
    print(f"torch {torch.__version__}, {cores} threads available, native bf16: {cpu_has_native_bf16()}")
    peaks = {t: matmul_peak_gflops(t) for t in sorted({1, cores})}
    for t, peak in peaks.items():
        print(f"fp32 matmul peak, {t} thread(s): {peak:.1f} GFLOP/s")
    # bf16 variants are also set against the bf16 matmul peak: beating the fp32 peak says little on its own
    bf16_peaks = {t: matmul_peak_gflops(t, dtype=torch.bfloat16) for t in sorted({1, cores})}
    for t, peak in bf16_peaks.items():
        print(f"bf16 matmul peak, {t} thread(s): {peak:.1f} GFLOP/s")

    torch.set_num_threads(1)
    print("\nsampler (1 thread)")
    sampler_quick = sampler_seconds_per_batch(quick, 192)
    sampler_paper = sampler_seconds_per_batch(paper, 600)
    print(f"  {sampler_quick * 1e3:.1f} ms/batch of {quick.batch_size} x {quick.patch_size} px, "
          f"{sampler_paper * 1e3:.1f} ms/batch of {paper.batch_size} x {paper.patch_size} px")

    header = ("model           size   threads variant            s/iter  GFLOP/iter  GFLOP/s  % of fp32 peak"
              "  % of bf16 peak")
    print("\n" + header)

    def line(model, size, threads, label, seconds, flops):
        rate = flops / seconds / 1e9
        of_bf16 = f"{100 * rate / bf16_peaks[threads]:15.1f}" if "bf16" in label else f"{'-':>15s}"
        print(f"{model:15s} {size:6s} {threads:7d} {label:18s} {seconds:7.3f} {flops / 1e9:11.1f} {rate:8.1f}"
              f" {100 * rate / peaks[threads]:14.1f} {of_bf16}", flush=True)

    fast = {"channels_last": True, "bf16": True}
    for model in args.models:
        flops = flops_per_iteration(model, quick, quick.patch_size)
        variants = [(t, "fp32", {}) for t in sorted(peaks)] + [
            (1, "channels_last", {"channels_last": True}), (1, "bf16 autocast", {"bf16": True}),
            (1, "channels_last+bf16", fast), (cores, "channels_last+bf16", fast)]
        if args.compile:
            variants.append((1, "compile+CL+bf16", {**fast, "compile_": True}))
        step_fast = None
        for threads, label, options in variants:
            seconds = seconds_per_iteration(model, quick, quick.patch_size, args.quick_iters, threads, **options)
            line(model, "quick", threads, label, seconds, flops)
            if threads == 1 and label == "channels_last+bf16":
                step_fast = seconds
        print(f"{'':15s} sampler / (sampler + step), quick, fastest variant: "
              f"{100 * sampler_quick / (sampler_quick + step_fast):.1f} %")
        if args.skip_paper:
            continue
        paper_variants = [(1, "channels_last+bf16", fast)] + ([(1, "fp32", {})] if args.paper_fp32 else [])
        for threads, label, options in paper_variants:
            seconds, paper_flops = counted_iteration(model, paper, threads, **options)
            line(model, "paper", threads, label, seconds, paper_flops)


if __name__ == "__main__":
    main()
