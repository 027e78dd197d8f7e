"""Stage driver: dataset manifest -> registered, normalised, masked pairs (paper 2.3, 2.5, 2.8).

For every pair of the profile's manifest, :func:`prepare_registered_pairs`

1. reads the CT volume and the section (pixel sizes from the manifest),
2. registers the section to the volume (:mod:`vstain.registration`),
3. normalises both images from automatic ROIs (:mod:`vstain.normalise`),
4. builds the sample-correspondence mask (:mod:`vstain.masks`) with the H&E stitched
   field of view and any hand-made mask of the manifest,
5. on the synthetic dataset, measures registration errors, the mask's IoU with the
   true common region and the ROI means on true labels, and
6. writes ``results/<profile>/registered/<pair_id>/`` (:func:`vstain.pairs.write_registered_pair`,
   plus ``ct_raw.tif`` / ``histology_raw.tif`` before normalisation), then the tables
   ``registration.csv`` and ``normalisation.csv``.

A pair folder is written under a temporary name and renamed when complete, so a
folder that exists is whole; a pair whose folder exists with the same inputs and
settings is skipped. Bad input stops the run (error naming the pair and field); a
registration that fails is listed in the table with its reason and written nowhere.

Examples
--------
>>> from vstain.prepare import relative_spread
>>> relative_spread([30000.0, 30010.0], [10000.0, 9990.0]) < 0.001
True
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from vstain.io import provenance, read_tiff, write_csv, write_tiff
from vstain.layout import stage_dir
from vstain.masks import convex_hull, correspondence_mask, field_of_view_mask, mask_iou
from vstain.normalise import automatic_rois, normalise_ct, normalise_histology
from vstain.pairs import RegisteredPair, write_registered_pair
from vstain.registration import (RegistrationError, RegistrationFailed, RegistrationResult, oblique_slice,
                                 register_section_to_volume, registration_errors)

__all__ = ["prepare_registered_pairs", "registration_table", "normalisation_table", "relative_spread",
           "true_rois", "true_correspondence_mask", "warp_to_result"]

TABLE_COLUMNS = ["pair_id", "material", "stain", "beamtime", "session", "mutual_information",
                 "initial_mutual_information", "angle_error_deg", "offset_um", "tre_median_px", "tre_max_px",
                 "mask_iou", "seconds", "status"]


# --------------------------------------------------------------------------- ground-truth helpers


def warp_to_result(image: np.ndarray, result: RegistrationResult, *, order: int = 0, cval: float = 0) -> np.ndarray:
    """Resample a histology-grid image (labels, a mask) onto the result's output grid."""
    shape = result.ct_slice.shape
    ii, jj = np.mgrid[0 : shape[0], 0 : shape[1]].astype(float)
    src = np.linalg.inv(result.affine) @ np.stack([ii.ravel(), jj.ravel(), np.ones(ii.size)])
    return ndi.map_coordinates(np.asarray(image), src[:2], order=order, mode="constant", cval=cval).reshape(shape)


def true_correspondence_mask(result: RegistrationResult, sample: Any) -> np.ndarray:
    """The phantom's true common region on the result's grid.

    Every output pixel shows one point of the section (through the fitted affine); the
    truth there is the section's true label, and the true CT label at the point the
    section pixel truly came from (through the true plane and affine). The true mask is
    the intersection of the convex hulls of the rigid labels of both, inside the
    section's field of view, as in :func:`vstain.phantom.ground_truth_pair`.
    """
    from vstain.phantom.labels import RIGID_LABELS

    shape = result.ct_slice.shape
    ii, jj = np.mgrid[0 : shape[0], 0 : shape[1]].astype(float)
    yx = (np.linalg.inv(result.affine) @ np.stack([ii.ravel(), jj.ravel(), np.ones(ii.size)]))[:2].T
    section = warp_to_result(sample.section_labels, result)
    fov = warp_to_result(sample.fov_mask.astype(np.uint8), result) > 0
    voxels = sample.histology_to_volume(yx)
    ct_labels = ndi.map_coordinates(sample.labels_volume, voxels.T, order=0, mode="nearest").reshape(shape)
    hulls = [convex_hull(np.isin(labels, RIGID_LABELS) & fov & result.ct_valid) for labels in (ct_labels, section)]
    return hulls[0] & hulls[1] & fov & result.ct_valid


def true_rois(result: RegistrationResult, sample: Any) -> dict[str, np.ndarray]:
    """True dense-bone and background ROIs on the result's grid (for measuring normalisation)."""
    from vstain.phantom.labels import LABELS

    ct_labels = oblique_slice(sample.labels_volume, result.plane_point, result.plane_axes, result.ct_slice.shape,
                              order=0, cval=255)
    section = warp_to_result(sample.section_labels, result, cval=255)
    return {
        "ct_bone": ct_labels == LABELS["dense_bone"],
        "ct_background": ct_labels == LABELS["background"],
        "histology_bone": (section == LABELS["dense_bone"]) & result.histology_valid,
        "histology_background": (section == LABELS["background"]) & result.histology_valid,
    }


def relative_spread(bone_means, background_means) -> float:
    """Spread of ROI means across pairs relative to the bone-background contrast.

    ``(std(bone) + std(background)) / 2 / (mean(bone) - mean(background))``: a number
    that does not change when the whole dataset is rescaled linearly, so spreads before
    and after normalisation compare.
    """
    bone = np.asarray(bone_means, float)
    background = np.asarray(background_means, float)
    contrast = abs(bone.mean() - background.mean())
    return float((bone.std() + background.std()) / 2 / contrast) if contrast > 0 else float("nan")


# --------------------------------------------------------------------------- one pair


def _config_key(profile: Any, entry: Any) -> str:
    payload = json.dumps({"registration": profile.to_dict()["registration"],
                          "normalisation": profile.to_dict()["normalisation"],
                          "ct": entry.ct_sha256, "histology": entry.histology_sha256,
                          "extra": getattr(entry, "extra_mask_sha256", None),
                          "ct_um": entry.ct_voxel_um, "hist_um": entry.histology_pixel_um}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _read_inputs(entry: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    where = f"pair {entry.pair_id}"
    ct, _, _ = read_tiff(entry.ct_path, require_pixel_size=False)
    histology, _, _ = read_tiff(entry.histology_path, require_pixel_size=False)
    extra = None
    if getattr(entry, "extra_mask_path", None):
        extra_image, _, _ = read_tiff(entry.extra_mask_path, require_pixel_size=False)
        if extra_image.shape[:2] != histology.shape[:2]:
            raise ValueError(f"{where}: extra_mask_path {entry.extra_mask_path}: shape {extra_image.shape} != "
                             f"histology shape {histology.shape[:2]}")
        extra = np.asarray(extra_image) > 0
        if extra.ndim == 3:
            extra = extra.any(axis=-1)
    return ct, histology, extra


def prepare_pair(entry: Any, profile: Any, sample: Any = None) -> tuple[RegisteredPair, dict[str, Any], dict]:
    """Register, normalise and mask one manifest pair; returns the pair, its table row and extra images.

    ``sample`` (a :class:`vstain.phantom.PhantomSample`) adds the ground-truth measures.

    Raises
    ------
    RegistrationError
        Bad input (naming the pair and the field).
    RegistrationFailed
        The registration failed.
    """
    ct_volume, histology, extra = _read_inputs(entry)
    fov = field_of_view_mask(histology) if entry.stain == "he" and np.asarray(histology).ndim == 3 else None
    result = register_section_to_volume(
        ct_volume, histology, ct_voxel_um=entry.ct_voxel_um, histology_pixel_um=entry.histology_pixel_um,
        config=profile.registration, fov_mask=fov, pair_id=entry.pair_id,
    )
    extra_masks = [warp_to_result(extra.astype(np.uint8), result) > 0] if extra is not None else []
    rois = automatic_rois(result.ct_slice, result.histology, ct_valid=result.ct_valid,
                          histology_valid=result.histology_valid)
    norm = profile.normalisation
    ct_out, ct_stats = normalise_ct(result.ct_slice, rois["ct_bone"], rois["ct_background"],
                                    bone_mean=norm.ct_bone_mean, background_mean=norm.ct_background_mean,
                                    pair_id=entry.pair_id)
    hist_out, hist_stats = normalise_histology(result.histology, rois["histology_bone"],
                                               rois["histology_background"], c_low=norm.histology_c_low,
                                               c_high=norm.histology_c_high, pair_id=entry.pair_id)
    mask = correspondence_mask(result.ct_slice, result.histology, ct_valid=result.ct_valid,
                               histology_valid=result.histology_valid, extra_masks=extra_masks)
    row: dict[str, Any] = {
        "pair_id": entry.pair_id, "material": entry.material, "stain": entry.stain,
        "beamtime": getattr(entry, "beamtime", None), "session": getattr(entry, "session", None),
        "mutual_information": result.mutual_information,
        "initial_mutual_information": result.initial_mutual_information,
        "angle_error_deg": np.nan, "offset_um": np.nan, "tre_median_px": np.nan, "tre_max_px": np.nan,
        "mask_iou": np.nan, "seconds": result.seconds, "status": "ok",
    }
    truth: dict[str, Any] = {}
    if sample is not None:
        row.update(registration_errors(result, sample))
        row["mask_iou"] = mask_iou(mask, true_correspondence_mask(result, sample))
        true = true_rois(result, sample)
        for key, image_before, image_after in (("ct", result.ct_slice, ct_out),
                                               ("histology", result.histology, hist_out)):
            for roi in ("bone", "background"):
                region = true[f"{key}_{roi}"]
                if region.sum() >= 10:
                    truth[f"{key}_{roi}_before"] = np.asarray(image_before, float)[region].mean(axis=0).tolist()
                    truth[f"{key}_{roi}_after"] = np.asarray(image_after, float)[region].mean(axis=0).tolist()
    extras = {
        "registration": {
            "plane_point_zyx": result.plane_point.tolist(), "plane_axes_zyx": result.plane_axes.tolist(),
            "plane_normal_zyx": result.plane_normal.tolist(), "affine": result.affine.tolist(),
            "ct_voxel_um": entry.ct_voxel_um, "histology_pixel_um": entry.histology_pixel_um,
            "mutual_information": result.mutual_information,
            "initial_mutual_information": result.initial_mutual_information,
            "mi_history": result.mi_history, "seconds": result.seconds,
        },
        "normalisation": {"ct": ct_stats, "histology": hist_stats},
        "table_row": row,
        "truth_roi_means": truth,
    }
    pair = RegisteredPair(entry.pair_id, entry.material, entry.stain, ct_out, hist_out, mask,
                          result.pixel_size_um, extras)
    raw = {"ct_raw": result.ct_slice.astype(np.float32), "histology_raw": result.histology,
           "ct_valid": result.ct_valid, "histology_valid": result.histology_valid}
    return pair, row, raw


def _write_pair_folder(folder: Path, pair: RegisteredPair, raw: dict, record: dict) -> None:
    """Write the whole folder under a temporary name, then rename it into place."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".part", dir=folder.parent))
    try:
        for name in ("ct_raw", "histology_raw"):
            write_tiff(tmp / f"{name}.tif", raw[name], pair.pixel_size_um, metadata=record)
        valid = raw["ct_valid"].astype(np.uint8) + 2 * raw["histology_valid"].astype(np.uint8)
        write_tiff(tmp / "valid.tif", valid, pair.pixel_size_um, metadata={"meaning": "1: CT, 2: histology, 3: both"})
        write_registered_pair(tmp, pair, record)
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# --------------------------------------------------------------------------- the stage


def prepare_registered_pairs(profile: Any, stain: str | None = None, progress: bool = True,
                             manifest_path: str | Path | None = None) -> pd.DataFrame:
    """Register, normalise and mask every pair of the profile's dataset (idempotent).

    Parameters
    ----------
    profile : Profile or str
        A loaded profile or its name.
    stain : {"toluidine_blue", "he"}, optional
        Only pairs of this stain (default: all).
    progress : bool
        Show a tqdm progress bar.
    manifest_path : path, optional
        The data manifest; default :func:`vstain.layout.default_manifest_path`
        (``data_manifest.yaml``). ``source: synthetic`` means the profile's phantom
        dataset (generated if missing, :func:`vstain.phantom.ensure_dataset`).

    Returns
    -------
    pandas.DataFrame
        The registration table (also written to ``registered/registration.csv``);
        ``status`` is ``ok`` or ``failed: <reason>``.
    """
    from tqdm import tqdm  # plain text bars: the same in a terminal, a log and a notebook

    from vstain.config import load_profile
    from vstain.layout import default_manifest_path
    from vstain.manifest import load_manifest, resolve_manifest

    if isinstance(profile, (str, Path)):
        profile = load_profile(profile)
    if stain not in (None, "toluidine_blue", "he"):
        raise ValueError(f"stain must be toluidine_blue, he or None, got {stain!r}")
    if manifest_path is None:
        manifest_path = default_manifest_path()
    # `source: synthetic` resolves to the generated dataset (generated if missing)
    manifest = load_manifest(resolve_manifest(manifest_path, profile))
    synthetic = manifest.source == "synthetic"
    out_dir = stage_dir(profile.name, "registered")
    entries = [e for e in manifest.pairs if stain is None or e.stain == stain]
    for entry in tqdm(entries, desc="register", disable=not progress):
        folder = out_dir / entry.pair_id
        key = _config_key(profile, entry)
        meta_path = folder / "pair.json"
        if meta_path.is_file() and json.loads(meta_path.read_text()).get("provenance", {}).get("config_key") == key:
            continue
        failed_path = out_dir / f".{entry.pair_id}.failed.json"
        if failed_path.is_file() and json.loads(failed_path.read_text()).get("config_key") == key:
            continue  # registration is deterministic: the same inputs and settings fail the same way
        sample = None
        if synthetic:
            from vstain.phantom import load_sample

            sample = load_sample(Path(entry.ct_path).parent)
        started = time.perf_counter()
        try:
            pair, row, raw = prepare_pair(entry, profile, sample)
        except RegistrationFailed as err:
            _record_failure(out_dir, entry, str(err), time.perf_counter() - started, key)
            continue
        record = provenance(profile, stage="registered", config_key=key, pair_id=entry.pair_id)
        _write_pair_folder(folder, pair, raw, record)
        (out_dir / f".{entry.pair_id}.failed.json").unlink(missing_ok=True)
    table = registration_table(profile.name, [e.pair_id for e in manifest.pairs])
    write_csv(out_dir / "registration.csv", table)
    write_csv(out_dir / "normalisation.csv", normalisation_table(profile.name, [e.pair_id for e in manifest.pairs]))
    if stain is not None:
        table = table[table["stain"] == stain].reset_index(drop=True)
    return table


def _record_failure(out_dir: Path, entry: Any, reason: str, seconds: float, key: str) -> None:
    from vstain.io import write_json

    row = {c: None for c in TABLE_COLUMNS}
    row.update(pair_id=entry.pair_id, material=entry.material, stain=entry.stain,
               beamtime=getattr(entry, "beamtime", None), session=getattr(entry, "session", None),
               seconds=seconds, status=f"failed: {reason}")
    write_json(out_dir / f".{entry.pair_id}.failed.json", {**row, "config_key": key})
    folder = out_dir / entry.pair_id
    if folder.exists():  # an older result of different inputs or settings: no longer valid
        shutil.rmtree(folder)


def _pair_records(profile_name: str, pair_ids: list[str]) -> list[dict]:
    out_dir = stage_dir(profile_name, "registered")
    records = []
    for pair_id in pair_ids:
        meta = out_dir / pair_id / "pair.json"
        failed = out_dir / f".{pair_id}.failed.json"
        if meta.is_file():
            records.append(json.loads(meta.read_text()))
        elif failed.is_file():
            row = {c: v for c, v in json.loads(failed.read_text()).items() if c in TABLE_COLUMNS}
            records.append({"extras": {"table_row": row}})
    return records


def registration_table(profile_name: str, pair_ids: list[str] | None = None) -> pd.DataFrame:
    """The per-pair registration table from the pair folders (one row per pair, failures included)."""
    if pair_ids is None:
        out_dir = stage_dir(profile_name, "registered")
        pair_ids = sorted(p.parent.name for p in out_dir.glob("*/pair.json"))
        pair_ids += sorted(p.name[1:-len(".failed.json")] for p in out_dir.glob(".*.failed.json"))
    rows = [r["extras"]["table_row"] for r in _pair_records(profile_name, pair_ids)]
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def normalisation_table(profile_name: str, pair_ids: list[str] | None = None) -> pd.DataFrame:
    """Per-pair normalisation statistics, with ROI means on true labels where known.

    Columns: ``pair_id``, ``stain``, ``beamtime``, ``session``, ``ct_scale``, ``ct_offset``,
    ``ct_clipped_fraction``, ``f_min``, ``f_max``, ``f_min_clamped``, ``f_max_clamped``,
    ``histology_clipped_fraction`` and, on the synthetic dataset, ``ct_bone_before``,
    ``ct_bone_after``, ``ct_background_before``, ``ct_background_after`` and the same for
    the histology per channel (``histology_bone_before_r`` ...).
    """
    if pair_ids is None:
        out_dir = stage_dir(profile_name, "registered")
        pair_ids = sorted(p.parent.name for p in out_dir.glob("*/pair.json"))
    rows = []
    for record in _pair_records(profile_name, pair_ids):
        extras = record["extras"]
        if "normalisation" not in extras:
            continue
        row = extras["table_row"]
        ct, hist = extras["normalisation"]["ct"], extras["normalisation"]["histology"]
        out = {"pair_id": row["pair_id"], "stain": row["stain"], "beamtime": row["beamtime"],
               "session": row["session"], "ct_scale": ct["scale"], "ct_offset": ct["offset"],
               "ct_clipped_fraction": ct["clipped_fraction"], "f_min": hist["f_min"], "f_max": hist["f_max"],
               "f_min_clamped": hist["f_min_clamped"], "f_max_clamped": hist["f_max_clamped"],
               "histology_clipped_fraction": hist["clipped_fraction"]}
        for name, value in extras.get("truth_roi_means", {}).items():
            if np.ndim(value) == 0:
                out[name] = value
            else:
                for channel, v in zip("rgb", value):
                    out[f"{name}_{channel}"] = v
        rows.append(out)
    return pd.DataFrame(rows)
