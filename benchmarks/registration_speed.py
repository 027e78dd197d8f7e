"""Seconds per pair and registration accuracy on a profile's synthetic dataset (default: quick).

Usage: python benchmarks/registration_speed.py [--profile quick] [--threads 1] [--limit N] [--pairs a,b]

Draws the profile's phantom pairs (the same, seed for seed, as its dataset; ``--limit``
takes the first N of each stain), registers each with the profile's settings (``--threads``
replaces ``registration.threads``: the count really used) and prints per-pair figures and the
summary the targets refer to, per case type: ``plain`` (the section within 10 degrees of
upright, face up), ``rotated`` (turned further on its slide) and ``mirrored`` (face down).
A pair flagged ``uncertain`` or ``failed`` is counted, and its errors shown, so a wrong fit
that went unflagged (TRE above 5 px with status ok) is visible as a silent failure.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import pandas as pd

from vstain.config import load_profile
from vstain.masks import field_of_view_mask
from vstain.phantom import make_sample
from vstain.phantom.dataset import dataset_plan
from vstain.registration import RegistrationFailed, register_section_to_volume, registration_errors


def case_type(sample) -> str:
    """``mirrored``, ``rotated`` (more than 10 degrees from upright) or ``plain``."""
    affine = sample.details.get("affine", {})
    if affine.get("mirrored"):
        return "mirrored"
    return "rotated" if abs(affine.get("rotation_deg", 0.0)) > 10 else "plain"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--threads", type=int, default=None,
                        help="SimpleITK threads (default: the profile's registration.threads)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N pairs of each stain")
    parser.add_argument("--pairs", default=None, help="only these pairs (comma-separated ids)")
    args = parser.parse_args()
    profile = load_profile(args.profile)
    config = profile.registration
    if args.threads is not None:
        config = dataclasses.replace(config, threads=args.threads)
    plan = dataset_plan(profile.dataset, profile.seed)
    if args.limit is not None:
        plan = [p for stain in ("toluidine_blue", "he") for p in [q for q in plan if q["stain"] == stain][: args.limit]]
    if args.pairs:
        wanted = set(args.pairs.split(","))
        plan = [p for p in plan if p["pair_id"] in wanted]
    rows = []
    for item in plan:
        sample = make_sample(profile.dataset, item["pair_id"], item["material"], item["stain"], item["beamtime"],
                             item["session"], item["seed"])
        fov = field_of_view_mask(sample.histology) if sample.stain == "he" else None
        row = {"pair_id": sample.pair_id, "stain": sample.stain, "case": case_type(sample),
               "rotation_deg": sample.details["affine"]["rotation_deg"]}
        started = time.perf_counter()
        try:
            result = register_section_to_volume(sample.ct_volume, sample.histology,
                                                ct_voxel_um=sample.ct_voxel_um,
                                                histology_pixel_um=sample.histology_pixel_um,
                                                config=config, fov_mask=fov, pair_id=sample.pair_id)
            row.update(seconds=time.perf_counter() - started, **registration_errors(result, sample),
                       mi_margin=result.mi_margin, silhouette_iou=result.silhouette_iou,
                       status=result.status.split(":")[0])
        except RegistrationFailed as err:
            row.update(seconds=time.perf_counter() - started, status="failed", reason=str(err))
        rows.append(row)
        print(pd.DataFrame([row]).drop(columns="reason", errors="ignore").round(3)
              .to_string(index=False, header=len(rows) == 1), flush=True)
    table = pd.DataFrame(rows)
    ok = table[table["status"] == "ok"]
    print(f"\nprofile {profile.name}: {len(table)} pairs, {len(ok)} registered, "
          f"{int((table['status'] == 'uncertain').sum())} uncertain, {int((table['status'] == 'failed').sum())} "
          f"failed; SimpleITK threads {config.threads}")
    print(f"seconds per pair: median {table['seconds'].median():.1f}, max {table['seconds'].max():.1f}")
    if "tre_median_px" in table:
        silent = ok[ok["tre_max_px"] > 5]
        print(f"silent failures (status ok, worst TRE > 5 px): {len(silent)}"
              + (f" ({', '.join(silent['pair_id'])})" if len(silent) else ""))
    groups = [("all", ok)] + [(name, ok[ok.stain == name]) for name in ("toluidine_blue", "he")] + \
        [(name, ok[ok.case == name]) for name in ("plain", "rotated", "mirrored")]
    for name, part in groups:
        if len(part):
            print(f"{name:>15}: {len(part)} pairs, median angle error {part['angle_error_deg'].median():.2f} deg, "
                  f"median TRE {part['tre_median_px'].median():.2f} px, "
                  f"95th percentile of pair TRE {np.percentile(part['tre_median_px'], 95):.2f} px, "
                  f"worst TRE {part['tre_max_px'].max():.2f} px, "
                  f"median {part['seconds'].median():.1f} s (targets: < 0.5 deg, < 1 px, < 3 px)")


if __name__ == "__main__":
    main()
