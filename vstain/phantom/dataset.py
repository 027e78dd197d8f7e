"""Pairs of the synthetic dataset: the plan of a dataset, and one sample folder on disk.

A sample folder (written by :func:`write_sample`, read by :func:`load_sample`)::

    <pair_id>/ct.tif          float32 CT volume (z, y, x), voxel size in um (ImageJ TIFF)
    <pair_id>/histology.tif   uint8 RGB section, pixel size in um
    <pair_id>/histology_twin.tif  its aligned twin (the same slide without preparation artefacts)
    <pair_id>/truth.npz       labels_volume, section_labels, twin_labels, fov_mask, artefacts, plane_point,
                              plane_axes, plane_normal, affine
    <pair_id>/truth.json      material, stain, beamtime, session, stain and CT parameters
                              (written last: marks the folder complete)

The whole dataset (every sample, ``manifest.yaml`` and ``split.csv`` under
``results/<profile>/dataset/``) is written by :mod:`vstain.stages.dataset`.

Examples
--------
>>> from vstain.config import load_profile
>>> profile = load_profile("smoke")
>>> plan = dataset_plan(profile.dataset, profile.seed)
>>> [p["pair_id"] for p in plan][:3]
['tb_mg_01', 'tb_mg_02', 'tb_mg_03']
>>> sum(p["test"] for p in plan if p["stain"] == "toluidine_blue")
3
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from vstain.io import atomic_path, read_tiff, write_json, write_tiff
from vstain.phantom.labels import MATERIALS, STAINS
from vstain.phantom.sample import PhantomSample
from vstain.slide_io import read_slide, write_pyramid

_TRUTH_ARRAYS = ("labels_volume", "section_labels", "fov_mask", "artefacts", "plane_point", "plane_axes",
                 "plane_normal", "affine", "twin_labels")
#: Bump when the generator changes what it draws, so cached datasets are regenerated
#: (3: sections at any rotation on the slide, 30 % mirrored; 4: tilts up to the profile's
#: ``max_tilt_deg``, section normals along y or x, the draws' ranges from the profile; 5: the paper's
#: regime: thick, deformed and cracked sections with an aligned twin, the toluidine-blue palette of
#: paper 2.1, two cameras, tile illumination, a coarser CT with its artefacts).
PHANTOM_MODEL_VERSION = 5

#: A slide with a side above this is written as a tiled pyramidal OME-TIFF, as slide scanners write
#: whole-slide images (paper 2.2: 6k-13k px at 0.44 um); smaller ones as a plain RGB TIFF.
PYRAMID_MIN_SIDE = 4096
#: ... with levels halving until the coarsest has no side above this.
PYRAMID_TOP_SIDE = 1024


def pyramid_levels(shape: tuple[int, ...]) -> int:
    """How many levels the slide of ``shape`` is written with (1: a plain TIFF).

    Examples
    --------
    >>> pyramid_levels((384, 384, 3)), pyramid_levels((11636, 11636, 3))
    (1, 5)
    """
    side = max(shape[:2])
    if side <= PYRAMID_MIN_SIDE:
        return 1
    levels = 1
    while side > PYRAMID_TOP_SIDE:
        side //= 2
        levels += 1
    return levels


STAIN_PREFIX = {"toluidine_blue": "tb", "he": "he"}


def dataset_plan(cfg: Any, seed: int, *, where: str = "dataset") -> list[dict[str, Any]]:
    """The pairs of a synthetic dataset: id, material, stain, beamtime, session, seed, test.

    Parameters
    ----------
    cfg : DatasetConfig
        A profile's ``dataset`` section. Counts per material come from ``tb_counts`` and
        ``he_counts``; the held-out test pairs are drawn per material from ``tb_test_counts``
        / ``he_test_counts``.
    seed : int
        The profile's seed: beamtimes, sessions, test pairs and per-pair seeds derive from it.
    where : str
        Named in errors (e.g. ``"profile quick"``).

    Returns
    -------
    list of dict
        One entry per pair, toluidine blue first, materials in :data:`MATERIALS` order.

    Raises
    ------
    ValueError
        Negative counts, more test pairs than pairs, or an unknown material.
    """
    rng = np.random.default_rng([int(seed), 0xDA7A])
    plan: list[dict[str, Any]] = []
    for stain, counts, test_counts in (("toluidine_blue", cfg.tb_counts, cfg.tb_test_counts),
                                       ("he", cfg.he_counts, cfg.he_test_counts)):
        for material in MATERIALS:
            n = int(counts.get(material, 0))
            n_test = int(test_counts.get(material, 0))
            if n < 0 or not 0 <= n_test <= n:
                raise ValueError(f"{where}: dataset counts for {stain} {material}: "
                                 f"{n_test} test pairs out of {n}")
            test = set(rng.choice(n, size=n_test, replace=False).tolist()) if n_test else set()
            for k in range(n):
                plan.append({
                    "pair_id": f"{STAIN_PREFIX[stain]}_{material.lower()}_{k + 1:02d}",
                    "material": material, "stain": stain,
                    "beamtime": int(rng.integers(cfg.n_beamtimes)),
                    "session": int(rng.integers(cfg.n_staining_sessions)),
                    "seed": int(rng.integers(2**31 - 1)),
                    "test": k in test,
                })
    for unknown in set(cfg.tb_counts) | set(cfg.he_counts):
        if unknown not in MATERIALS:
            raise ValueError(f"{where}: dataset counts: unknown material {unknown!r}")
    return plan


#: The pair-id prefix of each kind of registration-only block (:func:`registration_case_plan`) and its implant.
CASE_KINDS = {"screwless": ("screwless", "none"), "screw_at_edge": ("edge", "edge")}


def registration_case_plan(cases: Any, cfg: Any, seed: int) -> list[dict[str, Any]]:
    """The blocks drawn only to measure registration: screwless ones, and ones with the screw at the edge.

    Parameters
    ----------
    cases : RegistrationCasesConfig
        A profile's ``registration_cases`` section (counts per kind of block).
    cfg : DatasetConfig
        The profile's ``dataset`` section: beamtimes and staining sessions are drawn from its counts.
    seed : int
        The profile's seed; the blocks' draws derive from it, apart from the dataset's.

    Returns
    -------
    list of dict
        As :func:`dataset_plan`, plus ``implant`` (``none`` or ``edge``); toluidine blue, materials in
        turn (a screwless block's material names no implant and changes nothing of it), none held out.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> cfg = SimpleNamespace(n_beamtimes=4, n_staining_sessions=4)
    >>> plan = registration_case_plan(SimpleNamespace(screwless=2, screw_at_edge=1), cfg, seed=0)
    >>> [(p["pair_id"], p["implant"]) for p in plan]
    [('screwless_01', 'none'), ('screwless_02', 'none'), ('edge_01', 'edge')]
    """
    rng = np.random.default_rng([int(seed), 0xCA5E])
    plan: list[dict[str, Any]] = []
    for kind, (prefix, implant) in CASE_KINDS.items():
        n = int(getattr(cases, kind))
        if n < 0:
            raise ValueError(f"registration_cases.{kind} must be a non-negative count, got {n}")
        for k in range(n):
            plan.append({"pair_id": f"{prefix}_{k + 1:02d}", "material": MATERIALS[k % len(MATERIALS)],
                         "stain": "toluidine_blue", "beamtime": int(rng.integers(cfg.n_beamtimes)),
                         "session": int(rng.integers(cfg.n_staining_sessions)), "seed": int(rng.integers(2**31 - 1)),
                         "test": False, "implant": implant})
    return plan


def write_sample(folder: str | Path, sample: PhantomSample, metadata: dict | None = None) -> None:
    """Write one sample's folder; every file atomically, ``truth.json`` last."""
    folder = Path(folder)
    metadata = metadata or {}
    write_tiff(folder / "ct.tif", sample.ct_volume, sample.ct_voxel_um, metadata=metadata)
    levels = pyramid_levels(sample.histology.shape)
    slides = [("histology.tif", sample.histology)]
    if sample.histology_twin is not None:
        slides.append(("histology_twin.tif", sample.histology_twin))
    for name, slide in slides:
        if levels > 1:
            write_pyramid(folder / name, slide, sample.histology_pixel_um, levels=levels)
        else:
            write_tiff(folder / name, slide, sample.histology_pixel_um, metadata=metadata)
    arrays = {name: getattr(sample, name) for name in _TRUTH_ARRAYS}
    if arrays["artefacts"] is None:
        arrays["artefacts"] = np.zeros(sample.section_labels.shape, np.uint8)
    if arrays["twin_labels"] is None:
        del arrays["twin_labels"]
    with atomic_path(folder / "truth.npz") as tmp:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, **arrays)
    write_json(folder / "truth.json", {
        "pair_id": sample.pair_id, "material": sample.material, "stain": sample.stain,
        "beamtime": sample.beamtime, "session": sample.session,
        "ct_voxel_um": sample.ct_voxel_um, "histology_pixel_um": sample.histology_pixel_um,
        "stain_params": sample.stain_params, "ct_params": sample.ct_params, "details": sample.details,
        **metadata,
    })


def load_sample(folder: str | Path) -> PhantomSample:
    """Read a sample folder written by :func:`write_sample`."""
    folder = Path(folder)
    meta_path = folder / "truth.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path}: not found (the sample folder is missing or incomplete)")
    meta = json.loads(meta_path.read_text())
    ct, ct_size, _ = read_tiff(folder / "ct.tif")
    histology, histology_um, _ = read_slide(folder / "histology.tif")  # plain TIFF or pyramid: full resolution
    truth_path = folder / "truth.npz"
    if not truth_path.is_file():
        raise FileNotFoundError(f"{truth_path}: not found")
    with np.load(truth_path) as truth:
        arrays = {name: truth[name] if name in truth.files else None for name in _TRUTH_ARRAYS}
    twin_path = folder / "histology_twin.tif"
    twin = read_slide(twin_path)[0] if twin_path.is_file() else None
    if ct.ndim != 3:
        raise ValueError(f"{folder / 'ct.tif'}: expected a 3D volume, got shape {ct.shape}")
    return PhantomSample(
        pair_id=meta["pair_id"], material=meta["material"], stain=meta["stain"],
        ct_volume=ct.astype(np.float32), ct_voxel_um=float(ct_size[-1]),
        labels_volume=arrays["labels_volume"], histology=histology, histology_pixel_um=float(histology_um),
        section_labels=arrays["section_labels"], fov_mask=arrays["fov_mask"].astype(bool),
        plane_point=arrays["plane_point"], plane_axes=arrays["plane_axes"], plane_normal=arrays["plane_normal"],
        affine=arrays["affine"], beamtime=int(meta["beamtime"]), session=int(meta["session"]),
        stain_params=meta["stain_params"], ct_params=meta.get("ct_params", {}), artefacts=arrays["artefacts"],
        details=meta.get("details", {}), histology_twin=twin, twin_labels=arrays["twin_labels"],
    )


__all__ = ["CASE_KINDS", "PHANTOM_MODEL_VERSION", "dataset_plan", "registration_case_plan", "load_sample", "write_sample", "MATERIALS", "STAINS"]
