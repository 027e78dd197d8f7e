"""Speed and peak memory of 3D staining: voxels per second for depths 32, 64, 128 at one slice size.

Each (depth, axes) case runs in a fresh subprocess so that its peak resident memory
(``ru_maxrss``) is its own. The volume streams from a TIFF stack on disk to a TIFF stack
on disk, so peak memory should stay flat in depth (a few slices, the network and, for
``zyx``, one plane of each orientation), while the time grows linearly.

The generator is a ResNet of the smoke profile's width (untrained: speed does not
depend on the weights); patch and step as given on the command line.

Usage::

    .venv/bin/python benchmarks/volume_speed.py [--size 64] [--depths 32 64 128] [--patch 32] [--step 16]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def one_case(depth: int, size: int, axes: str, patch: int, step: int, folder: str) -> dict:
    import torch

    from vstain.config import load_profile
    from vstain.io import write_tiff
    from vstain.models import architecture, build_generator
    from vstain.volume import make_slice_stainer, stain_volume
    from vstain.volume_io import open_volume

    torch.set_num_threads(1)
    torch.manual_seed(0)
    folder = Path(folder)
    ct_path = folder / f"ct_{depth}.tif"
    rng = np.random.default_rng(0)
    # Written slab by slab is not needed at these sizes; the stain run below only streams it.
    write_tiff(ct_path, rng.integers(8000, 32000, (depth, size, size)).astype(np.uint16), (5.0, 5.0, 5.0))
    arch = architecture("mod_cyclegan", load_profile("smoke").training)["generator"]
    generator = build_generator(arch).eval()
    stainer = make_slice_stainer(generator, patch_size=patch, step=step, batch_size=8)
    source = open_volume(ct_path)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    with torch.no_grad():
        stain_volume(source, stainer, folder / f"out_{axes}_{depth}.tif", sigma_voxels=1.0, axes=axes)
    seconds = time.perf_counter() - started
    source.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"depth": depth, "size": size, "axes": axes, "seconds": seconds,
            "voxels_per_second": depth * size * size / seconds, "peak_rss_mib": peak / 1024,
            "peak_before_run_mib": base / 1024}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="slice side in voxels")
    parser.add_argument("--depths", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--axes", nargs="+", default=["z", "zyx"])
    parser.add_argument("--patch", type=int, default=32)
    parser.add_argument("--step", type=int, default=16)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.case:
        depth, axes, folder = args.case.split(",")
        print(json.dumps(one_case(int(depth), args.size, axes, args.patch, args.step, folder)))
        return 0
    print(f"slice {args.size} x {args.size}, patch {args.patch}, step {args.step}, 1 torch thread, CPU")
    print(f"{'axes':>5} {'depth':>6} {'seconds':>9} {'voxels/s':>10} {'peak RSS MiB':>13} {'(before run)':>13}")
    with tempfile.TemporaryDirectory() as folder:
        for axes in args.axes:
            for depth in args.depths:
                result = subprocess.run(
                    [sys.executable, __file__, "--size", str(args.size), "--patch", str(args.patch),
                     "--step", str(args.step), "--case", f"{depth},{axes},{folder}"],
                    capture_output=True, text=True, check=True)
                r = json.loads(result.stdout.strip().splitlines()[-1])
                print(f"{axes:>5} {depth:>6} {r['seconds']:>9.2f} {r['voxels_per_second']:>10.0f} "
                      f"{r['peak_rss_mib']:>13.1f} {r['peak_before_run_mib']:>13.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
