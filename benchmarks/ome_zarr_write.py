"""Time and peak memory of writing a stained RGB volume as OME-Zarr (level 0, then the pyramid).

Each depth runs in a fresh subprocess so that its peak resident memory (``ru_maxrss``) is its own;
the slices are made one at a time (a smooth pattern plus noise, so compression has work to do),
never stacked, as the stain stage hands them to the writer. Memory should stay flat in depth.
``--old-module`` names another ``volume_io.py`` (e.g. one taken from git history with
``git show REV:vstain/volume_io.py > /tmp/old_volume_io.py``) whose ``write_rgb_ome_zarr`` is
measured the same way, for a before / after comparison.

Usage::

    .venv/bin/python benchmarks/ome_zarr_write.py [--size 1024] [--depths 64 512] [--old-module FILE]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def slices(depth: int, size: int):
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:size, :size]
    base = (127 + 100 * np.sin(x / 37.0) * np.cos(y / 53.0)).astype(np.float32)
    for z in range(depth):
        plane = base + 10 * np.sin(z / 9.0) + rng.normal(0, 8, base.shape).astype(np.float32)
        yield np.repeat(np.clip(plane, 0, 255).astype(np.uint8)[..., None], 3, axis=2)


def one_case(depth: int, size: int, module_path: str | None, folder: str) -> dict:
    if module_path:
        spec = importlib.util.spec_from_file_location("old_volume_io", module_path)
        writer = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(writer)
    else:
        from vstain import volume_io as writer
    out = Path(folder) / "stain.zarr"
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    writer.write_rgb_ome_zarr(out, slices(depth, size), (depth, size, size), (1.0, 1.0, 1.0))
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    size_mb = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 1e6
    shutil.rmtree(out)
    return {"depth": depth, "seconds": seconds, "peak_rss_mib": peak / 1024, "before_mib": base / 1024,
            "store_mb": size_mb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--depths", type=int, nargs="+", default=[64, 512])
    parser.add_argument("--old-module", help="another volume_io.py to measure instead of the package's")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        depth, folder = args.case.split(":", 1)
        print(json.dumps(one_case(int(depth), args.size, args.old_module, folder)))
        return
    print(f"writer: {args.old_module or 'vstain.volume_io'}; {args.size} x {args.size} RGB slices")
    print(f"{'depth':>6} {'seconds':>9} {'peak RSS MiB':>13} {'(before)':>9} {'store MB':>9}")
    for depth in args.depths:
        with tempfile.TemporaryDirectory() as folder:
            command = [sys.executable, __file__, "--size", str(args.size), "--case", f"{depth}:{folder}"]
            if args.old_module:
                command += ["--old-module", args.old_module]
            result = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
        print(f"{depth:>6} {result['seconds']:>9.1f} {result['peak_rss_mib']:>13.1f} {result['before_mib']:>9.1f} "
              f"{result['store_mb']:>9.1f}", flush=True)


if __name__ == "__main__":
    main()
