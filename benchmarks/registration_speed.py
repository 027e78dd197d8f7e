"""Seconds per pair and registration accuracy on a profile's synthetic dataset (default: quick).

Usage: python benchmarks/registration_speed.py [--profile quick] [--threads 2]

Generates the dataset if missing, registers every pair (toluidine blue and H&E) with
the profile's settings and prints per-pair figures and the summary the targets refer
to: median plane-normal angle error, median and worst target registration error.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import SimpleITK as sitk

from vstain.config import load_profile
from vstain.manifest import load_manifest
from vstain.masks import field_of_view_mask
from vstain.phantom import load_sample
from vstain.stages.dataset import ensure_dataset
from vstain.registration import RegistrationFailed, register_section_to_volume, registration_errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--threads", type=int, default=2, help="SimpleITK threads (the target: 2 cores)")
    args = parser.parse_args()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(args.threads)
    profile = load_profile(args.profile)
    manifest = load_manifest(ensure_dataset(profile, progress=False))
    rows = []
    for entry in manifest.pairs:
        from pathlib import Path

        sample = load_sample(Path(entry.ct_path).parent)
        fov = field_of_view_mask(sample.histology) if sample.stain == "he" else None
        started = time.perf_counter()
        try:
            result = register_section_to_volume(sample.ct_volume, sample.histology,
                                                ct_voxel_um=entry.ct_voxel_um,
                                                histology_pixel_um=entry.histology_pixel_um,
                                                config=profile.registration, fov_mask=fov, pair_id=entry.pair_id)
            row = {"pair_id": entry.pair_id, "stain": entry.stain, "seconds": time.perf_counter() - started,
                   **registration_errors(result, sample), "status": "ok"}
        except RegistrationFailed as err:
            row = {"pair_id": entry.pair_id, "stain": entry.stain, "seconds": time.perf_counter() - started,
                   "status": f"failed: {err}"}
        rows.append(row)
        print(pd.DataFrame([row]).round(3).to_string(index=False, header=len(rows) == 1), flush=True)
    table = pd.DataFrame(rows)
    ok = table[table["status"] == "ok"]
    print(f"\nprofile {profile.name}: {len(table)} pairs, {len(ok)} registered, "
          f"{len(table) - len(ok)} failed, SimpleITK threads {args.threads}")
    print(f"seconds per pair: median {table['seconds'].median():.1f}, max {table['seconds'].max():.1f}")
    for name, part in [("all", ok), ("toluidine_blue", ok[ok.stain == "toluidine_blue"]), ("he", ok[ok.stain == "he"])]:
        if len(part):
            print(f"{name:>15}: median angle error {part['angle_error_deg'].median():.2f} deg, "
                  f"median offset {part['offset_um'].median():.2f} um, "
                  f"median TRE {part['tre_median_px'].median():.2f} px, "
                  f"worst TRE {part['tre_max_px'].max():.2f} px (target: <1 deg, <2 px, <5 px)")
    print(f"median over pairs of the per-pair median TRE: {np.median(ok['tre_median_px']):.2f} px")


if __name__ == "__main__":
    main()
