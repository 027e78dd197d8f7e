"""The paper's size, measured: one paper-size registration and staining a paper-size volume.

1. **Registration.** One phantom pair at the paper profile's size (CT slices of 1024 x 1024
   voxels at 5 um, histology at 0.44 um: about 11.6k x 11.6k px, written as a pyramidal OME-TIFF
   as slide scanners write it) is generated (seconds and peak memory printed), then read and
   registered as the registration stage does (the CT volume, the slide's pyramid level nearest
   above half a CT voxel) with the paper profile's settings in a fresh subprocess on
   ``--threads`` SimpleITK threads. Printed: seconds, peak resident memory, angle error and
   median TRE against the truth. Goal: at most 5 minutes and 6 GB on 2 cores.
2. **Staining.** A 1024 x 1024 uint16 volume is written as a folder of slice TIFFs for each
   depth of ``--depths`` and stained by ``vstain stain`` (a fresh subprocess each) with a trained
   checkpoint (default: the quick profile's modified CycleGAN, which ``make book`` trains).
   Printed: slices per second and peak resident memory; memory should be the same for every
   depth (the volume streams slice by slice).

Usage::

    .venv/bin/python benchmarks/paper_scale.py [--skip-registration] [--skip-staining]
        [--threads 2] [--depths 128 512] [--step 64] [--checkpoint results/quick/models/mod_cyclegan/fold0/last.pt]
        [--keep DIR]  # keep the generated pair in DIR; a later run with the same DIR registers it again

The full run takes long on 2 cores (staining is one whole-slide inference per slice: reduce
``--depths`` or raise ``--step`` for a first look; the figures say what was run).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

REGISTER_CHILD = r"""
import dataclasses, json, sys, time
from vstain.config import load_profile
from vstain.io import read_tiff
from vstain.phantom import load_sample
from vstain.phantom.sample import at_pyramid_level
from vstain.phantom.truth import registration_errors
from vstain.registration import register_section_to_volume
from vstain.slide_io import read_slide
from vstain.stages.register import HISTOLOGY_OVERSAMPLING
folder, threads = sys.argv[1], int(sys.argv[2])
config = dataclasses.replace(load_profile("paper").registration, threads=threads)
start = time.perf_counter()
# as the registration stage reads a pair: the CT volume and the slide's level nearest above half a CT voxel
ct, ct_size, _ = read_tiff(folder + "/ct.tif", require_pixel_size=False)
ct_um = float(ct_size[-1])
histology, level_um, level = read_slide(folder + "/histology.tif", target_um=ct_um / HISTOLOGY_OVERSAMPLING)
result = register_section_to_volume(ct, histology, ct_voxel_um=ct_um, histology_pixel_um=level_um, config=config,
                                    pair_id="paper")
seconds = time.perf_counter() - start
# VmHWM: this process's own peak (ru_maxrss would carry the high-water mark of the parent it was forked from)
peak = int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) / 2**20
# the truth in the level's own pixels (the registration stage measures it so too)
truth = at_pyramid_level(load_sample(folder), round(level_um / level["full_pixel_um"]), histology.shape[:2])
errors = registration_errors(result, truth)
print(json.dumps({"seconds": seconds, "peak_rss_gb": peak, "status": result.status, "level": level["level"],
                  "level_um": level_um, "level_shape": list(histology.shape[:2]), "ct_shape": list(ct.shape),
                  "mi_margin": result.mi_margin,
                  **{k: float(v) for k, v in errors.items()}}))
"""


def measure_registration(threads: int, seed: int, keep: Path | None = None) -> None:
    from vstain.config import load_profile
    from vstain.phantom import make_sample, write_sample

    cfg = load_profile("paper").dataset
    with tempfile.TemporaryDirectory() as tmp:
        folder = keep or Path(tmp) / "paper_mg"
        written = [folder / name for name in ("ct.tif", "histology.tif", "truth.json")]
        if keep is not None and all(path.is_file() for path in written):
            # generation takes 10-25 minutes: a kept pair is registered again as it is
            print(f"phantom pair: the one kept in {folder} (seed as it was written)", flush=True)
        else:
            started = time.perf_counter()
            sample = make_sample(cfg, "paper_mg", "Mg", "toluidine_blue", 0, 0, seed)
            generated = time.perf_counter() - started
            write_sample(folder, sample, {})
            print(f"phantom pair: CT {sample.ct_volume.shape} at {sample.ct_voxel_um} um, histology "
                  f"{sample.histology.shape[:2]} at {sample.histology_pixel_um} um (generated in {generated:.0f} s, "
                  f"written as a pyramidal OME-TIFF in {time.perf_counter() - started - generated:.0f} s; peak "
                  f"memory of generation {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GB)",
                  flush=True)
            del sample
        done = subprocess.run([sys.executable, "-c", REGISTER_CHILD, str(folder), str(threads)],
                              capture_output=True, text=True, cwd=ROOT)
        if done.returncode:
            print(f"registration failed:\n{done.stderr[-3000:]}")
            return
        row = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"registration, {threads} SimpleITK threads, reading included: {row['seconds']:.0f} s (goal 300 s), "
              f"peak memory {row['peak_rss_gb']:.2f} GB (goal 6 GB); slide level {row['level']} "
              f"({row['level_shape'][0]} x {row['level_shape'][1]} px at {row['level_um']:.2f} um), status "
              f"{row['status']} (MI margin {row['mi_margin']:.3f}), angle error {row['angle_error_deg']:.2f} deg, "
              f"median TRE {row['tre_median_px']:.2f} px (CT pixels), worst {row['tre_max_px']:.2f} px")


def write_slice_folder(folder: Path, depth: int, size: int = 1024) -> None:
    """A uint16 CT volume as one TIFF per slice: background, soft tissue and bone, in a scale of its own."""
    import tifffile

    folder.mkdir(parents=True)
    y, x = np.mgrid[:size, :size]
    r = np.hypot(y - size / 2, x - size / 2) / (size / 2)
    base = np.where(r < 0.8, 14000.0, 6000.0) + np.where(r < 0.5, 18000.0, 0.0)
    rng = np.random.default_rng(0)
    for z in range(depth):
        image = base + rng.normal(0, 600, base.shape)
        tifffile.imwrite(folder / f"rec_{z:05d}.tif", np.clip(image, 0, 65535).astype(np.uint16))


def measure_staining(checkpoint: Path, depths: list[int], step: int | None) -> None:
    if not checkpoint.is_file():
        print(f"staining skipped: {checkpoint} not found (train it with `make book` or "
              "`vstain train --profile quick --model mod_cyclegan --fold 0`, or pass --checkpoint)")
        return
    for depth in depths:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "ct"
            write_slice_folder(folder, depth)
            command = [sys.executable, "-m", "vstain", "stain", "--checkpoint", str(checkpoint), "--input",
                       str(folder), "--voxel-size", "5", "5", "5", "--output", str(Path(tmp) / "stained.tif")]
            if step:
                command += ["--step", str(step)]
            started = time.perf_counter()
            with open(Path(tmp) / "stderr.txt", "w+") as err:
                child = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err, text=True)
                # its own peak (ru_maxrss also counts what it shared with this small parent at the fork)
                _, status, usage = os.wait4(child.pid, 0)
                seconds = time.perf_counter() - started
                err.seek(0)
                message = err.read().strip().splitlines()
            if os.waitstatus_to_exitcode(status):
                print(f"depth {depth}: vstain stain failed: {message[-1] if message else '?'}")
                continue
            settings = json.loads(subprocess.run(
                [sys.executable, "-c", "import json, sys, tifffile; t = tifffile.TiffFile(sys.argv[1]); "
                 "print(json.dumps({k: v for k, v in json.loads(t.imagej_metadata['Info']).items() "
                 "if k in ('step', 'blend', 'precision', 'patch_size')}))", str(Path(tmp) / "stained.tif")],
                capture_output=True, text=True).stdout or "{}")
            print(f"stain 1024 x 1024 x {depth} uint16 from a slice folder ({settings}): {depth / seconds:.3f} "
                  f"slices/s, {depth * 1024 ** 2 / seconds / 1e6:.2f} Mvoxels/s ({seconds:.0f} s with start-up and "
                  f"normalisation), peak memory {usage.ru_maxrss / 2**20:.2f} GB", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-registration", action="store_true")
    parser.add_argument("--skip-staining", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=2025)
    parser.add_argument("--depths", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--step", type=int, default=None, help="inference step (default: the checkpoint's patch / 4)")
    parser.add_argument("--keep", type=Path, help="write the paper-size pair here (default: a temporary folder); "
                        "a complete pair already there (truth.json is written last) is registered without "
                        "generating it")
    parser.add_argument("--checkpoint", type=Path,
                        default=ROOT / "results" / "quick" / "models" / "mod_cyclegan" / "fold0" / "last.pt")
    args = parser.parse_args()
    if not args.skip_registration:
        measure_registration(args.threads, args.seed, args.keep)
    if not args.skip_staining:
        measure_staining(args.checkpoint, sorted(args.depths), args.step)


if __name__ == "__main__":
    main()
