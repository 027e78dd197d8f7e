"""Speed and memory of whole-slide inference (vstain.infer).

Prints:

1. patches per second (per CPU second by default) of bare batched generator forwards, and of the full tiled
   pipeline (padding, patch extraction, blending) on a slide, for both blends; the
   overhead of tiling and blending over the same number of bare forwards
   (target: under 10 %);
2. peak memory of the tiled pipeline for slides of 512, 1024 and 2048 px against
   the size of the output arrays (it must grow no faster than they do). Peak memory
   is measured with ``tracemalloc`` (NumPy buffers are traced; the generator is the
   identity here, so the number is the pipeline's own memory, independent of the
   network's activations, which are bounded by the batch);
3. fp32 against bf16 (autocast) forwards on the CPU: patches per second and the
   largest output difference.

Usage::

    .venv/bin/python benchmarks/infer_speed.py --profile quick [--threads 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np
import torch

from vstain.config import load_profile
from vstain.infer import infer_slide, tile_grid
from vstain.models import architecture, build_generator


CLOCK = time.process_time  # CPU seconds of this process: robust to other jobs on a shared machine


def bare_forwards(generator, n_patches: int, patch_size: int, batch_size: int, dtype=torch.float32) -> float:
    """Seconds for ``n_patches`` forwards in batches, inputs prepared beforehand."""
    rng = np.random.default_rng(0)
    batches = [torch.from_numpy(rng.uniform(-1, 1, (min(batch_size, n_patches - s), 3, patch_size, patch_size))
                                .astype(np.float32)) for s in range(0, n_patches, batch_size)]
    start = CLOCK()
    with torch.inference_mode():
        for batch in batches:
            if dtype == torch.bfloat16:
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    generator(batch)
            else:
                generator(batch)
    return CLOCK() - start


def best_of(repeats: int, fn, *args, **kwargs) -> float:
    return min(fn(*args, **kwargs) for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--model", default="mod_cyclegan")
    parser.add_argument("--slide", type=int, default=160, help="side of the slide timed with the real generator")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--clock", choices=("process", "wall"), default="process",
                        help="process: CPU seconds of this process (default, robust on shared machines); wall: elapsed")
    args = parser.parse_args()

    global CLOCK
    CLOCK = time.process_time if args.clock == "process" else time.perf_counter
    torch.set_num_threads(args.threads)
    profile = load_profile(args.profile)
    cfg = profile.inference
    torch.manual_seed(profile.seed)
    generator = build_generator(architecture(args.model, profile.training)["generator"]).eval()
    p, step, batch = cfg.patch_size, cfg.step, cfg.batch_size
    print(f"profile {profile.name}: {args.model} generator (ngf {profile.training.ngf}), patch {p}, step {step}, "
          f"batch {batch}, {args.threads} thread(s), best of {args.repeats}, {args.clock} time")

    # 1. bare forwards vs the tiled pipeline on the same number of patches
    slide = np.random.default_rng(1).uniform(-1, 1, (args.slide, args.slide, 3)).astype(np.float32)
    n = tile_grid(slide.shape[:2], p, step).n_patches
    def tiled(blend: str) -> float:
        start = CLOCK()
        infer_slide(generator, slide, patch_size=p, step=step, batch_size=batch, blend=blend)
        return CLOCK() - start

    # warm-up (first calls pay for kernel selection), then interleaved repeats, best of each:
    # on a shared machine this compares like with like
    bare_forwards(generator, n, p, batch)
    tiled("mean")
    times: dict[str, list[float]] = {"bare": [], "mean": [], "window": []}
    for _ in range(args.repeats):
        times["bare"].append(bare_forwards(generator, n, p, batch))
        for blend in ("mean", "window"):
            times[blend].append(tiled(blend))
    bare = min(times["bare"])
    print(f"\n1. slide {args.slide} x {args.slide} px = {n} patches")
    print(f"   bare batched forwards : {n / bare:8.1f} patches/s ({bare:.2f} s)")
    for blend in ("mean", "window"):
        t = min(times[blend])
        print(f"   tiled pipeline ({blend:6s}): {n / t:8.1f} patches/s ({t:.2f} s), "
              f"overhead {100 * (t - bare) / bare:+.1f} % over bare forwards")
    # The pipeline minus the network: padding, patch extraction, tensor copies and blending, timed
    # with an identity generator. Less noisy than the difference of two timings that include the network.
    for blend in ("mean", "window"):
        def tiling_only() -> float:
            start = CLOCK()
            infer_slide(torch.nn.Identity(), slide, patch_size=p, step=step, batch_size=batch, blend=blend)
            return CLOCK() - start

        t = best_of(args.repeats, tiling_only)
        print(f"   tiling + blending alone ({blend:6s}): {t * 1000:.1f} ms = {100 * t / bare:.1f} % of the bare forwards")

    # 2. peak memory against the output arrays
    print("\n2. peak traced memory of infer_slide (identity generator; accumulators are float64)")
    print("   slide px | patches | input MB | output MB | peak MB | peak / output")
    for side in (512, 1024, 2048):
        image = np.zeros((side, side, 3), np.float32)
        output_mb = image.nbytes / 2**20
        tracemalloc.start()
        tracemalloc.reset_peak()
        infer_slide(torch.nn.Identity(), image, patch_size=p, step=step, batch_size=batch, blend="window")
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        n_side = tile_grid(image.shape[:2], p, step).n_patches
        print(f"   {side:8d} | {n_side:7d} | {image.nbytes / 2**20:8.1f} | {output_mb:9.1f} | {peak / 2**20:7.1f} | "
              f"{peak / 2**20 / output_mb:13.2f}")

    # 3. fp32 vs bf16 autocast on the CPU
    n_cmp = 8 * batch
    bare_forwards(generator, batch, p, batch, torch.bfloat16)  # warm-up of the bf16 kernels
    precision: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for _ in range(args.repeats):
        precision["fp32"].append(bare_forwards(generator, n_cmp, p, batch, torch.float32))
        precision["bf16"].append(bare_forwards(generator, n_cmp, p, batch, torch.bfloat16))
    fp32, bf16 = min(precision["fp32"]), min(precision["bf16"])
    sample = torch.from_numpy(slide[None, :p, :p].transpose(0, 3, 1, 2).copy())
    with torch.inference_mode():
        out32 = generator(sample)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out16 = generator(sample).float()
    print(f"\n3. CPU precision ({n_cmp} patches)")
    print(f"   fp32: {n_cmp / fp32:8.1f} patches/s")
    print(f"   bf16: {n_cmp / bf16:8.1f} patches/s ({fp32 / bf16:.2f}x fp32), "
          f"max |bf16 - fp32| = {float((out32 - out16).abs().max()):.4f} (network range [-1, 1])")


if __name__ == "__main__":
    main()
