"""Time the paired patch sampler (vstain.data.PatchSampler) per batch, for growing pairs.

Prints milliseconds per batch of 4 patches of 64 px (with augmentation) drawn from one pair
of side 100, 200, 400 and 800 px. The cost of a batch depends on the patch, not on the pair:
the figures should stay about flat as the pair grows (an accidentally quadratic sampler,
e.g. one that transforms the whole pair per patch, grows with the pair's area). A sampler
batch should also take a small part of a training step (``benchmarks/train_speed.py``
measures both on the profiles' sizes).

Usage: ``.venv/bin/python benchmarks/sampler_speed.py [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from vstain.data import PatchSampler
from vstain.pairs import RegisteredPair


def make_pair(side: int, seed: int = 0) -> RegisteredPair:
    """A pair of ``side`` px: a bone disc on background, with noise, the mask inset by 5 px."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:side, :side]
    bone = (yy - side / 2) ** 2 + (xx - side / 3) ** 2 < (side / 3) ** 2
    ct = np.where(bone, 30000, 10000) + rng.normal(0, 300, (side, side))
    histology = np.where(bone[..., None], [60, 90, 200], [235, 230, 240]).astype(np.uint8)
    mask = np.zeros((side, side), bool)
    mask[5:-5, 5:-5] = True
    return RegisteredPair("bench", "Mg", "toluidine_blue", ct.astype(np.uint16), histology, mask, 5.0)


def seconds_per_batch(side: int, repeats: int) -> float:
    """The best over ``repeats`` epochs of the mean seconds per batch (40 patches of 64 px, batches of 4)."""
    sampler = PatchSampler([make_pair(side)], 64, 40, 4, seed=0)
    best = float("inf")
    for epoch in range(repeats):
        start = time.perf_counter()
        n = sum(1 for _ in sampler.epoch(epoch))
        best = min(best, (time.perf_counter() - start) / n)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("sampler, 1 thread: ms per batch of 4 x 64 px patches")
    for side in (100, 200, 400, 800):
        print(f"  pair {side:4d} px: {1e3 * seconds_per_batch(side, args.repeats):7.2f} ms/batch")


if __name__ == "__main__":
    main()
