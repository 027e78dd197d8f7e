"""Time the synthetic dataset generation (smoke and quick profiles) and its size on disk.

Usage: ``.venv/bin/python benchmarks/dataset_speed.py [profile ...]`` (default: smoke quick).
Each profile is generated from scratch into a temporary folder; the quick dataset must take
under 2 minutes on 2 cores.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from vstain.config import load_profile
from vstain.stages.dataset import dataset_summary, generate_dataset


def main(profiles: list[str]) -> None:
    print(f"cores available: {len(os.sched_getaffinity(0))}")
    for name in profiles:
        profile = load_profile(name)
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            manifest = generate_dataset(profile, Path(tmp), progress=False)
            seconds = time.perf_counter() - start
            summary = dataset_summary(manifest)
            print(f"{name:6s} pairs {summary['n_pairs']:3d}  ct_shape {profile.dataset.ct_shape}  "
                  f"generation {seconds:6.1f} s  ({seconds / summary['n_pairs']:.2f} s/pair)  "
                  f"size {summary['bytes'] / 1e6:7.1f} MB")


if __name__ == "__main__":
    main(sys.argv[1:] or ["smoke", "quick"])
