"""A bit-for-bit fingerprint of the registration of a few smoke pairs, for changes that must not move a fit.

Usage: python benchmarks/registration_fingerprint.py OUT.json [--cases a,b]

Registers ten synthetic pairs that between them take every path of
:func:`vstain.registration.register_section_to_volume` (the global search on one axis and on
three, a section turned and face down, a section of another sample, a wrong orientation guess,
landmarks, the cone of tilts and the tilt and split-half checks, an H&E field of view) and writes,
per case, every number of the result exactly (floats as ``float.hex``), digests of its images
and MI history, its verdict, and its errors and masks against the phantom's truth. Run it before
and after a refactoring and compare the two files (``cmp`` or ``diff``): any difference is a
changed fit. It is a check, not a timing: the seconds of each fit are left out.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import sys
from pathlib import Path

import numpy as np

from vstain.config import load_profile
from vstain.masks import field_of_view_mask
from vstain.phantom import make_sample
from vstain.phantom.truth import registration_errors, true_correspondence_mask, true_rois
from vstain.registration import RegistrationFailed, register_section_to_volume, warp_to_result

SMOKE = load_profile("smoke")
QUICK = load_profile("quick")
#: The quick profile's phantom draw (steep tilts, other axes) and search (every axis, the cone, the checks).
STEEP = dataclasses.replace(SMOKE.dataset, min_tilt_deg=QUICK.dataset.min_tilt_deg,
                            max_tilt_deg=QUICK.dataset.max_tilt_deg,
                            other_axis_fraction=QUICK.dataset.other_axis_fraction)
FULL = dataclasses.replace(SMOKE.registration, **{key: getattr(QUICK.registration, key) for key in (
    "max_tilt_deg", "search_axes", "tilt_step_deg", "check_tilt_deg", "tilt_refit_gain", "tilt_refit_rounds",
    "max_tilt_spread_deg", "tilt_agreement_tolerance", "max_tilt_error_px")})


def _turned(sample, angle_deg: float, mirror: bool):
    """The sample's slide turned by ``angle_deg`` (and mirrored) on a canvas that holds all of it."""
    from scipy import ndimage as ndi

    h, w = sample.histology.shape[:2]
    a = math.radians(angle_deg)
    linear = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    if mirror:
        linear = linear @ np.diag([1.0, -1.0])
    corners = np.array([[0, 0], [0, w - 1], [h - 1, 0], [h - 1, w - 1]], float) - [(h - 1) / 2, (w - 1) / 2]
    mapped = corners @ linear.T
    height, width = (int(np.ceil(np.ptp(mapped[:, k]))) + 1 for k in range(2))
    old_to_new = np.eye(3)
    old_to_new[:2, :2] = linear
    old_to_new[:2, 2] = [(height - 1) / 2, (width - 1) / 2] - linear @ [(h - 1) / 2, (w - 1) / 2]
    inverse = np.linalg.inv(old_to_new)

    def warp(image, order, cval):
        return ndi.affine_transform(image, inverse[:2, :2], inverse[:2, 2], output_shape=(height, width),
                                    order=order, cval=cval)

    glass = [int(np.median(sample.histology[..., c][sample.section_labels == 0])) for c in range(3)]
    histology = np.stack([warp(sample.histology[..., c], 1, glass[c]) for c in range(3)], axis=-1)
    return dataclasses.replace(sample, histology=histology.astype(np.uint8),
                               section_labels=warp(sample.section_labels, 0, 0),
                               fov_mask=np.ones((height, width), bool), affine=sample.affine @ inverse,
                               artefacts=None)


def _cases():
    """``name -> (sample, config, initial_guess, fov_mask)``, built lazily (each draw takes seconds)."""
    def base():
        return make_sample(SMOKE.dataset, "tb_test_01", "Mg", "toluidine_blue", beamtime=0, session=1, seed=11)

    def mismatch():
        other = make_sample(SMOKE.dataset, "tb_test_02", "Mg", "toluidine_blue", beamtime=0, session=1, seed=12)
        return dataclasses.replace(other, histology=base().histology)

    def landmarks():
        case = make_sample(STEEP, "seed_17", "Mg", "toluidine_blue", beamtime=0, session=0, seed=17)
        h, w = case.histology.shape[:2]
        points = np.array([(0.3 * h, 0.3 * w), (0.35 * h, 0.7 * w), (0.75 * h, 0.5 * w)])
        ct_zyx = case.histology_to_volume(points) + np.array([[1.0, -1.0, 0.5], [-0.5, 1.0, 1.0],
                                                               [0.8, 0.3, -1.0]])
        return case, {"landmarks": {"histology_yx": points, "ct_zyx": ct_zyx}}

    def he():
        return make_sample(SMOKE.dataset, "he_test_01", "Ti", "he", beamtime=0, session=1, seed=5)

    denied = dataclasses.replace(FULL, search_axes=["z"])
    return {
        "smoke": lambda: (base(), SMOKE.registration, None, None),
        "turned_137_mirrored": lambda: (_turned(base(), 137.0, True), SMOKE.registration, None, None),
        "another_sample": lambda: (mismatch(), SMOKE.registration, None, None),
        "wrong_start": lambda: (base(), SMOKE.registration, {
            "rotation_deg": base().details["affine"]["rotation_deg"] + 90.0, "mirrored": False}, None),
        "tilted_y": lambda: (make_sample(STEEP, "seed_31", "Mg", "toluidine_blue", beamtime=0, session=0,
                                         seed=31), FULL, None, None),
        "tilted_z": lambda: (make_sample(STEEP, "seed_22", "Mg", "toluidine_blue", beamtime=0, session=0,
                                         seed=22), FULL, None, None),
        "tilted_x": lambda: (make_sample(STEEP, "seed_17", "Mg", "toluidine_blue", beamtime=0, session=0,
                                         seed=17), FULL, None, None),
        "cube": lambda: (make_sample(dataclasses.replace(STEEP, ct_shape=[64, 64, 64]), "seed_10", "Mg",
                                     "toluidine_blue", beamtime=0, session=0, seed=10), FULL, None, None),
        "landmarks": lambda: (lambda case, guess: (case, denied, guess, None))(*landmarks()),
        "he_field": lambda: (lambda s: (s, SMOKE.registration, None, field_of_view_mask(s.histology)))(he()),
    }


def _digest(array) -> str:
    array = np.ascontiguousarray(array)
    return f"{array.dtype}{array.shape}:" + hashlib.sha256(array.tobytes()).hexdigest()[:24]


def _exact(value):
    """Floats as ``float.hex`` (every bit), arrays element by element, others as they are."""
    if isinstance(value, (float, np.floating)):
        return float(value).hex()
    if isinstance(value, np.ndarray):
        return [_exact(v) for v in value.tolist()] if value.ndim else _exact(value.item())
    if isinstance(value, (list, tuple)):
        return [_exact(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    return value


def fingerprint(name: str, sample, config, guess, fov) -> dict:
    """Every number of one case's registration, exactly, or its failure message."""
    try:
        result = register_section_to_volume(sample.ct_volume, sample.histology, ct_voxel_um=sample.ct_voxel_um,
                                            histology_pixel_um=sample.histology_pixel_um, config=config,
                                            fov_mask=fov, pair_id=name, initial_guess=guess)
    except RegistrationFailed as err:
        return {"failed": str(err)}
    fields = {f.name: getattr(result, f.name) for f in dataclasses.fields(result)
              if f.name not in ("seconds", "ct_slice", "histology", "ct_valid", "histology_valid", "mi_history")}
    truth = sample if fov is None else dataclasses.replace(sample, fov_mask=sample.fov_mask & fov)
    return {
        **{key: _exact(value) for key, value in fields.items()},
        "mirrored": result.mirrored,
        "images": {key: _digest(getattr(result, key)) for key in ("ct_slice", "histology", "ct_valid",
                                                                   "histology_valid")},
        "mi_history": _digest(np.array([[h["level"], h["iteration"], h["mi"]] for h in result.mi_history])),
        "mi_history_stages": sorted({h["stage"] for h in result.mi_history}),
        "errors": {key: _exact(value) for key, value in registration_errors(result, truth).items()},
        "true_mask": _digest(true_correspondence_mask(result, truth)),
        "true_rois": {key: _digest(value) for key, value in true_rois(result, truth).items()},
        "labels_on_grid": _digest(warp_to_result(truth.section_labels, result)),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--cases", help="comma-separated case names (default: all)")
    args = parser.parse_args(argv)
    cases = _cases()
    names = args.cases.split(",") if args.cases else list(cases)
    out = {}
    for name in names:
        print(f"{name} ...", file=sys.stderr, flush=True)
        out[name] = fingerprint(name, *cases[name]())
        print(f"{name}: {out[name].get('status', out[name].get('failed'))}", file=sys.stderr, flush=True)
    tmp = args.out.with_suffix(args.out.suffix + ".tmp")
    tmp.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    tmp.replace(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
