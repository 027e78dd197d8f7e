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

With ``--checkpoint`` instead: the defaults of ``vstain stain`` and ``inference`` chosen by
measurement (issue "real data in", item 5). A trained CT-to-histology generator stains

* a 1024 x 1024 CT slice (wall-clock seconds, slices/s and voxels/s) and
* every registered pair of ``--pairs-profile`` (seam score, :func:`vstain.infer.seam_score`,
  median over pairs, in the background outside the correspondence mask where the paper saw
  tiling steps and over the whole slide; and the largest and mean difference in 8-bit levels
  from today's default and from step patch/4 in fp32 with the same blend)

for step = patch/4 and patch/2 with each blend, fp32 and bf16 autocast, and one forward pass over
the whole slide (the limit: no overlap, no seams). Today's default (the reference): step = patch/4,
``mean`` blend, batch 4, fp32. Times are wall-clock over ``--repeats`` runs: the median (the
figure to quote) and the fastest and slowest. ``--configs`` picks some of them by key (``today``,
``p4-mean-fp32``, ``p2-window-bf16``, ``whole-bf16``, ...; the first one given is the reference of
the "x first" and "diff from first" columns).

Usage::

    .venv/bin/python benchmarks/infer_speed.py --profile quick [--threads 2] [--repeats 3]
    .venv/bin/python benchmarks/infer_speed.py --checkpoint results/quick/models/mod_cyclegan/fold0/last.pt \
        --pairs-profile quick [--threads 2] [--slice 1024] [--configs today p2-window-bf16 whole-bf16]
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np
import torch

from vstain.config import load_profile
from vstain.data import network_to_histology
from vstain.infer import ct_network_channels_last, infer_slide, seam_score, tile_grid
from vstain.models import architecture, build_generator
from vstain.train import cpu_has_native_bf16


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


def whole_slide(generator, network: np.ndarray, dtype: torch.dtype) -> np.ndarray:
    """One forward pass over the whole slide (reflection-padded to the generator's multiple of 4)."""
    height, width = network.shape[:2]
    pad = ((0, -height % 4), (0, -width % 4), (0, 0))
    tensor = torch.from_numpy(np.ascontiguousarray(np.pad(network, pad, mode="reflect").transpose(2, 0, 1)[None]))
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        out = generator(tensor).float()
    return out[0].numpy().transpose(1, 2, 0)[:height, :width]


def stain_network(generator, network: np.ndarray, config: dict) -> np.ndarray:
    """The blended network-range output of one configuration (``step`` None: the whole slide at once)."""
    if config["step"] is None:
        return whole_slide(generator, network, config["dtype"])
    return infer_slide(generator, network, patch_size=config["patch"], step=config["step"],
                       batch_size=config["batch"], blend=config["blend"], dtype=config["dtype"])


def sweep_defaults(args) -> None:
    """Time and seam score of step, blend and precision on a trained generator (see the module text)."""
    from vstain.layout import registered_dir
    from vstain.models.checkpoint import load_generator
    from vstain.pairs import read_registered_pair, registered_pair_ids

    generator, info = load_generator(args.checkpoint, direction="ct_to_histology")
    generator.eval()
    patch = int(info["patch_size"])
    ids = registered_pair_ids(args.pairs_profile)
    if not ids:
        raise SystemExit(f"no registered pairs of profile {args.pairs_profile} (run vstain register --profile ...)")
    pairs = [read_registered_pair(registered_dir(args.pairs_profile) / pid) for pid in ids]
    precisions = [torch.float32] + ([torch.bfloat16] if cpu_has_native_bf16() else [])
    configs = [dict(key="today", name="today", step=patch // 4, blend="mean", batch=4, dtype=torch.float32)]
    for dtype in precisions:
        precision = "bf16" if dtype == torch.bfloat16 else "fp32"
        for label, step in ((f"patch/4 = {patch // 4}", patch // 4), (f"patch/2 = {patch // 2}", patch // 2)):
            for blend in ("mean", "window"):
                configs.append(dict(key=f"{label[:7].replace('/', '').replace('patch', 'p')}-{blend}-{precision}",
                                    name=f"step {label}, {blend}", step=step, blend=blend, batch=16, dtype=dtype))
        configs.append(dict(key=f"whole-{precision}", name="whole slide, one forward", step=None, blend="-",
                            batch=1, dtype=dtype))
    for config in configs:
        config["patch"] = patch
    if args.configs:
        by_key = {config["key"]: config for config in configs}
        unknown = [key for key in args.configs if key not in by_key]
        if unknown:
            raise SystemExit(f"--configs: unknown {', '.join(unknown)}; this CPU offers {', '.join(by_key)}")
        configs = [by_key[key] for key in args.configs]
    print(f"{args.checkpoint}: {info.get('model')} (patch {patch}), {args.threads} thread(s), "
          f"{len(pairs)} registered pairs of {args.pairs_profile}, wall-clock seconds of one "
          f"{args.slice} x {args.slice} slice (after a warm-up): median of {args.repeats} runs [fastest, slowest]")

    # the 1024 x 1024 slice: a registered CT mirrored out to the size (timing does not depend on content)
    ct = pairs[0].ct
    big = np.pad(ct, [(0, max(0, args.slice - n)) for n in ct.shape], mode="symmetric")[:args.slice, :args.slice]
    big_net = ct_network_channels_last(big)
    nets = [ct_network_channels_last(pair.ct) for pair in pairs]
    print("config (key)                                         | precision | batch | s/slice [range]       "
          "| slices/s | Mvoxels/s | x first "
          "| seam bg | seam whole | diff from first: max, mean | from patch/4 fp32, same blend: max, mean")
    baseline = None
    reference: dict[str, list[np.ndarray]] = {}  # rgb of patch/4 fp32 per blend, and today's
    for config in configs:
        stain_network(generator, big_net[:2 * patch, :2 * patch], config)  # warm-up (kernel choice)
        runs = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            stain_network(generator, big_net, config)
            runs.append(time.perf_counter() - start)
        seconds = float(np.median(runs))
        baseline = baseline or seconds
        seams_bg, seams_all, rgbs = [], [], []
        for pair, net in zip(pairs, nets):
            out = stain_network(generator, net, config)
            grid = tile_grid(net.shape[:2], patch, config["step"] or patch // 2)
            seams_bg.append(seam_score(out, grid, ~pair.mask))
            seams_all.append(seam_score(out, grid))
            rgbs.append(np.asarray(network_to_histology(np.moveaxis(out, -1, 0)), np.int16))
        reference.setdefault("today", rgbs)
        if config["step"] == patch // 4 and config["dtype"] == torch.float32 and config["batch"] != 4:
            reference.setdefault(config["blend"], rgbs)

        def differences(key: str) -> str:
            if key not in reference:
                return "       -,     -"
            diffs = [np.abs(a - b) for a, b in zip(rgbs, reference[key])]
            return f"{max(int(d.max()) for d in diffs):8d}, {np.mean([d.mean() for d in diffs]):5.2f}"

        precision = "bf16" if config["dtype"] == torch.bfloat16 else "fp32"
        name = f"{config['name']} ({config['key']})"
        print(f"{name:52s} | {precision:9s} | {config['batch']:5d} | {seconds:7.2f} [{min(runs):5.2f}, "
              f"{max(runs):5.2f}] | {1 / seconds:8.3f} | "
              f"{args.slice ** 2 / seconds / 1e6:9.3f} | {baseline / seconds:7.1f} | {np.nanmedian(seams_bg):7.3f} | "
              f"{np.nanmedian(seams_all):10.3f} | {differences('today'):>26s} | {differences(config['blend']):>38s}",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--model", default="mod_cyclegan")
    parser.add_argument("--slide", type=int, default=160, help="side of the slide timed with the real generator")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--clock", choices=("process", "wall"), default="process",
                        help="process: CPU seconds of this process (default, robust on shared machines); wall: elapsed")
    parser.add_argument("--checkpoint", help="measure step, blend and precision on this trained checkpoint instead")
    parser.add_argument("--pairs-profile", default="quick", help="registered pairs scored with --checkpoint")
    parser.add_argument("--slice", type=int, default=1024, help="side of the slice timed with --checkpoint")
    parser.add_argument("--configs", nargs="+", metavar="KEY",
                        help="with --checkpoint: only these configurations, the first the reference (keys: today, "
                             "p4-mean-fp32, p4-window-fp32, p2-mean-fp32, p2-window-fp32, whole-fp32, and -bf16 "
                             "where the CPU has it)")
    args = parser.parse_args()
    if args.checkpoint:
        torch.set_num_threads(args.threads)
        sweep_defaults(args)
        return

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
