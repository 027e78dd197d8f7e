"""The registration stage: dataset manifest -> registered, normalised, masked pairs (paper 2.3, 2.5, 2.8).

For every pair of the profile's manifest, :func:`ensure_registered`

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
registration that fails is listed in the table with its reason and written nowhere, and
so is one whose quality check finds it uncertain (status ``uncertain: <reason>``: the MI
margin over the best other orientation, or the silhouette IoU, is below the profile's
threshold; :attr:`vstain.registration.RegistrationResult.status`), with its quality
figures and, on the synthetic dataset, its errors: such a pair never reaches training.

Two commands run this stage: ``vstain register`` (:func:`configure_parser` / :func:`run_cli`)
and ``vstain normalise`` (:func:`configure_normalise_parser` / :func:`run_normalise_cli`),
since pairs are written normalised and masked.

Examples
--------
>>> import argparse
>>> parser = argparse.ArgumentParser(); configure_parser(parser)
>>> args = parser.parse_args(["--profile", "smoke", "--stain", "he"])
>>> args.profile, args.stain, args.strict
('smoke', 'he', False)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm  # plain text bars: the same in a terminal, a log and a notebook

from vstain.config import as_profile
from vstain.io import atomic_target, is_current, provenance, read_tiff, write_csv, write_json, write_tiff
from vstain.layout import stage_dir
from vstain.manifest import load_manifest
from vstain.masks import mask_iou
from vstain.pairs import RegisteredPair, write_registered_pair
from vstain.phantom.dataset import load_sample
from vstain.phantom.sample import at_pyramid_level
from vstain.phantom.truth import normalisation_truth, registration_errors, true_correspondence_mask
from vstain.prepare import prepare_pair_images, quality_figures, registration_record
from vstain.registration import RegistrationFailed, RegistrationUncertain
from vstain.slide_io import read_slide
from vstain.stages import upstream
from vstain.stages.arguments import add_stage_options
# the registration table's columns and reader live in the resolver, where later stages read the table
from vstain.stages.upstream import TABLE_COLUMNS, registration_table  # noqa: F401
from vstain.volume_io import open_volume

__all__ = ["configure_normalise_parser", "configure_parser", "ensure_registered", "normalisation_table",
           "prepare_pair", "register_entries", "registration_table", "run_cli", "run_normalise_cli"]

# --------------------------------------------------------------------------- one pair


def _config_key(profile: Any, entry: Any) -> str:
    # every registration setting but the number of workers, which does not change a fit
    registration = {k: v for k, v in profile.to_dict()["registration"].items() if k != "workers"}
    payload = json.dumps({"registration": registration,
                          "normalisation": profile.to_dict()["normalisation"],
                          "ct": entry.ct_sha256, "histology": entry.histology_sha256,
                          "extra": getattr(entry, "extra_mask_sha256", None),
                          "initial_guess": getattr(entry, "initial_guess", None),
                          "ct_um": entry.ct_voxel_um, "hist_um": entry.histology_pixel_um}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


#: The slide is read at the pyramid level nearest above half the CT voxel size: registration and the
#: registered pair work at the CT voxel size, so finer levels only cost memory (a 14k x 14k slide is 590 MB).
HISTOLOGY_OVERSAMPLING = 2


def _read_inputs(entry: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, float]:
    """The pair's CT volume, histology (at its working pyramid level), extra mask and that level's pixel size."""
    where = f"pair {entry.pair_id}"
    if Path(entry.ct_source).is_file() and not getattr(entry, "ct_dataset", None):
        ct, _, _ = read_tiff(entry.ct_path, require_pixel_size=False)
    else:  # a folder of slice TIFFs, an OME-Zarr store or an HDF5 dataset
        source = open_volume(entry.ct_source, (entry.ct_voxel_um,) * 3)
        try:
            ct = np.stack([source.read_slice(z) for z in range(source.shape[0])])
        finally:
            source.close()
    bad = ct.size - int(np.count_nonzero(np.isfinite(ct))) if np.asarray(ct).dtype.kind == "f" else 0
    if bad:
        raise ValueError(f"{where}: field 'ct_path' {entry.ct_source}: {bad} NaN or infinite voxels; "
                         "fix or mask them in the CT volume")
    histology, histology_um, level = read_slide(entry.histology_path, pixel_um=entry.histology_pixel_um,
                                                target_um=entry.ct_voxel_um / HISTOLOGY_OVERSAMPLING)
    extra = None
    if getattr(entry, "extra_mask_path", None):
        extra_image, _, _ = read_tiff(entry.extra_mask_path, require_pixel_size=False)
        if extra_image.shape[:2] != tuple(level["full_shape"][:2]):
            raise ValueError(f"{where}: extra_mask_path {entry.extra_mask_path}: shape {extra_image.shape} != "
                             f"histology shape {tuple(level['full_shape'][:2])}")
        extra = np.asarray(extra_image) > 0
        if extra.ndim == 3:
            extra = extra.any(axis=-1)
        if extra.shape != histology.shape[:2]:  # drawn on the full-resolution slide: take the level's pixels
            rows = np.minimum((np.arange(histology.shape[0]) + 0.5) * extra.shape[0] / histology.shape[0],
                              extra.shape[0] - 1).astype(int)
            columns = np.minimum((np.arange(histology.shape[1]) + 0.5) * extra.shape[1] / histology.shape[1],
                                 extra.shape[1] - 1).astype(int)
            extra = extra[np.ix_(rows, columns)]
    return ct, histology, extra, histology_um


def _guess_kind(entry: Any) -> str:
    """``landmarks``, ``orientation`` or ``none``: the manifest's start of this pair's registration."""
    guess = getattr(entry, "initial_guess", None)
    return "none" if not guess else ("landmarks" if "landmarks" in guess else "orientation")


def registration_guess(entry: Any, histology_um: float) -> dict | None:
    """The manifest's ``initial_guess`` of a pair in the form of :func:`register_section_to_volume`.

    Landmark pixels are given on the full-resolution slide (``histology_pixel_um``); the slide is read
    at a coarser pyramid level (``histology_um``), so they are scaled to it. Axis names become indices.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> entry = SimpleNamespace(histology_pixel_um=0.5, initial_guess={"landmarks": {
    ...     "histology_yx": [[10.0, 20.0]], "ct_zyx": [[1.0, 2.0, 3.0]]}})
    >>> registration_guess(entry, 2.5)["landmarks"]["histology_yx"].tolist()
    [[2.0, 4.0]]
    """
    guess = getattr(entry, "initial_guess", None)
    if not guess:
        return None
    if "landmarks" in guess:
        ratio = float(entry.histology_pixel_um) / float(histology_um)
        return {"landmarks": {"histology_yx": np.asarray(guess["landmarks"]["histology_yx"], float) * ratio,
                              "ct_zyx": np.asarray(guess["landmarks"]["ct_zyx"], float)}}
    out = dict(guess)
    if "normal_axis" in out:
        out["normal_axis"] = "zyx".index(out["normal_axis"])
    return out


def prepare_pair(entry: Any, profile: Any, sample: Any = None) -> tuple[RegisteredPair, dict[str, Any], dict]:
    """Register, normalise and mask one manifest pair.

    Parameters
    ----------
    entry : PairEntry
        The manifest's pair (files and pixel sizes).
    profile : Profile
        Supplies the ``registration`` and ``normalisation`` settings.
    sample : PhantomSample, optional
        The pair's ground truth (synthetic dataset): adds the registration errors, the
        mask's IoU with the true common region and the ROI means on true labels.

    Returns
    -------
    tuple
        ``(RegisteredPair, table row, raw images)``; the raw images are ``ct_raw``,
        ``histology_raw`` (before normalisation), ``ct_valid`` and ``histology_valid``.

    Raises
    ------
    RegistrationError
        Bad input (naming the pair and the field).
    RegistrationFailed
        The registration failed.
    RegistrationUncertain
        The registration's quality check flagged it (``err.row``: its table row, status
        ``uncertain: <reason>``).
    """
    ct_volume, histology, extra, histology_um = _read_inputs(entry)
    if sample is not None and histology.shape[:2] != sample.histology.shape[:2]:  # a coarser level of a pyramid
        sample = at_pyramid_level(sample, round(histology_um / sample.histology_pixel_um), histology.shape[:2])
    prepared = prepare_pair_images(ct_volume, histology, ct_voxel_um=entry.ct_voxel_um, histology_pixel_um=histology_um,
                                   stain=entry.stain, registration=profile.registration,
                                   normalisation=profile.normalisation, extra_mask=extra, pair_id=entry.pair_id,
                                   initial_guess=registration_guess(entry, histology_um))
    result = prepared.result
    quality = {**quality_figures(result), "initial_guess": _guess_kind(entry)}
    if not prepared.registered:
        # A fit that may be a wrong local optimum is not a registered pair: stop here, keep its figures.
        row = {c: None for c in TABLE_COLUMNS}
        row.update(pair_id=entry.pair_id, material=entry.material, stain=entry.stain,
                   beamtime=getattr(entry, "beamtime", None), session=getattr(entry, "session", None),
                   seconds=result.seconds, status=result.status, **quality)
        if sample is not None:
            row.update({k: v for k, v in registration_errors(result, sample).items() if k in TABLE_COLUMNS})
        raise RegistrationUncertain(f"pair {entry.pair_id}: {result.status}", row)
    row: dict[str, Any] = {
        "pair_id": entry.pair_id, "material": entry.material, "stain": entry.stain,
        "beamtime": getattr(entry, "beamtime", None), "session": getattr(entry, "session", None),
        **quality,
        "angle_error_deg": np.nan, "offset_um": np.nan, "tre_median_px": np.nan, "tre_max_px": np.nan,
        "mask_iou": np.nan, "seconds": result.seconds, "status": "ok",
    }
    truth: dict[str, Any] = {}
    if sample is not None:
        row.update({k: v for k, v in registration_errors(result, sample).items() if k in TABLE_COLUMNS})
        row["mask_iou"] = mask_iou(prepared.mask, true_correspondence_mask(result, sample))
        truth = normalisation_truth(result, sample, prepared.ct, prepared.histology)
    extras = {
        "registration": registration_record(result, entry.ct_voxel_um, histology_um, _guess_kind(entry)),
        "normalisation": prepared.normalisation,
        "table_row": row,
        "truth_roi_means": truth,
    }
    pair = RegisteredPair(entry.pair_id, entry.material, entry.stain, prepared.ct, prepared.histology, prepared.mask,
                          result.pixel_size_um, extras)
    return pair, row, prepared.raw_images()


def _write_pair_folder(folder: Path, pair: RegisteredPair, raw: dict, record: dict) -> None:
    """Write the whole folder under a temporary name, then rename it into place.

    The folder is made by ``mkdir`` (not ``mkdtemp``, which is private): it gets the user's umask,
    as shared cluster storage needs.
    """
    with atomic_target(folder, overwrite=True) as tmp:
        tmp.mkdir()
        for name in ("ct_raw", "histology_raw"):
            write_tiff(tmp / f"{name}.tif", raw[name], pair.pixel_size_um, metadata=record)
        valid = raw["ct_valid"].astype(np.uint8) + 2 * raw["histology_valid"].astype(np.uint8)
        write_tiff(tmp / "valid.tif", valid, pair.pixel_size_um, metadata={"meaning": "1: CT, 2: histology, 3: both"})
        write_registered_pair(tmp, pair, record)


def _record_failure(out_dir: Path, entry: Any, reason: str, seconds: float, key: str,
                    row: dict | None = None) -> None:
    """Remember a failed (or, with its ``row``, an uncertain) pair; no pair folder is left for it."""
    if row is None:
        row = {c: None for c in TABLE_COLUMNS}
        row.update(pair_id=entry.pair_id, material=entry.material, stain=entry.stain,
                   beamtime=getattr(entry, "beamtime", None), session=getattr(entry, "session", None),
                   seconds=seconds, status=f"failed: {reason}")
    write_json(out_dir / f".{entry.pair_id}.failed.json", {**row, "config_key": key})
    folder = out_dir / entry.pair_id
    if folder.exists():  # an older result of different inputs or settings: no longer valid
        shutil.rmtree(folder)


# --------------------------------------------------------------------------- the stage


def register_pair_into(out_dir: Path, entry: Any, profile: Any, synthetic: bool) -> str:
    """Register one manifest pair and write its folder (or its failure record) under ``out_dir``.

    A module-level function, so a worker process can run it. Returns the pair's status word
    (``ok``, ``uncertain`` or ``failed``); bad input raises, naming the pair and field.
    """
    folder = out_dir / entry.pair_id
    key = _config_key(profile, entry)
    sample = load_sample(Path(entry.ct_path).parent) if synthetic else None
    started = time.perf_counter()
    try:
        pair, row, raw = prepare_pair(entry, profile, sample)
    except RegistrationUncertain as err:
        _record_failure(out_dir, entry, str(err), time.perf_counter() - started, key, row=err.row)
        return "uncertain"
    except RegistrationFailed as err:
        _record_failure(out_dir, entry, str(err), time.perf_counter() - started, key)
        return "failed"
    record = provenance(profile, stage="registered", config_key=key, pair_id=entry.pair_id)
    _write_pair_folder(folder, pair, raw, record)
    (out_dir / f".{entry.pair_id}.failed.json").unlink(missing_ok=True)
    return "ok"


def _up_to_date(out_dir: Path, entry: Any, key: str) -> bool:
    """Whether a pair's folder, or its failure record, was made from these inputs and settings."""
    if is_current(out_dir / entry.pair_id / "pair.json", key, key="provenance.config_key"):
        return True
    # registration is deterministic: the same inputs and settings fail the same way
    return is_current(out_dir / f".{entry.pair_id}.failed.json", key, key="config_key")


def register_entries(out_dir: Path, entries: list, profile: Any, synthetic: bool, *, workers: int | None = None,
                     progress: bool = True, desc: str = "register") -> int:
    """Register every manifest entry whose folder (or failure record) under ``out_dir`` is not current.

    ``workers`` pairs at once (default ``registration.workers``), one spawned process each; bad input in
    any pair stops the run. Returns how many pairs were registered.
    """
    # only pairs with work to do get a progress bar: a later stage calling this sees none when all is done
    pending = [e for e in entries if not _up_to_date(out_dir, e, _config_key(profile, e))]
    workers = min(profile.registration.workers if workers is None else int(workers), len(pending))
    if workers < 1 and pending:
        raise ValueError(f"workers must be at least 1, got {workers}")
    bar = tqdm(total=len(pending), desc=desc, disable=not progress or not pending)
    if workers <= 1:
        for entry in pending:
            register_pair_into(out_dir, entry, profile, synthetic)
            bar.update()
    else:
        # One process per pair at a time: each fit runs on registration.threads (1: reproducible) and the
        # pairs share the cores. Spawned, not forked: the parent may hold threads (ITK's, tqdm's).
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(register_pair_into, out_dir, entry, profile, synthetic) for entry in pending]
            try:
                for future in as_completed(futures):
                    future.result()  # bad input in any pair stops the stage, as it does one by one
                    bar.update()
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    bar.close()
    return len(pending)


def ensure_registered(profile: Any, stain: str | None = None, progress: bool = True,
                      manifest_path: str | Path | None = None, workers: int | None = None) -> pd.DataFrame:
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
        dataset (generated if missing, :func:`vstain.stages.upstream.dataset_manifest`).

    Returns
    -------
    pandas.DataFrame
        The registration table (also written to ``registered/registration.csv``);
        ``status`` is ``ok``, ``uncertain: <reason>`` or ``failed: <reason>``; only ``ok`` pairs
        have a pair folder.
    """
    profile = as_profile(profile)
    if stain not in (None, "toluidine_blue", "he"):
        raise ValueError(f"stain must be toluidine_blue, he or None, got {stain!r}")
    # `source: synthetic` resolves to the generated dataset (generated if missing)
    manifest = load_manifest(upstream.dataset_manifest(profile, manifest_path))
    synthetic = manifest.source == "synthetic"
    out_dir = stage_dir(profile.name, "registered")
    entries = [e for e in manifest.pairs if stain is None or e.stain == stain]
    register_entries(out_dir, entries, profile, synthetic, workers=workers, progress=progress)
    table = registration_table(profile.name, [e.pair_id for e in manifest.pairs])
    write_csv(out_dir / "registration.csv", table)
    write_csv(out_dir / "normalisation.csv", normalisation_table(profile.name, [e.pair_id for e in manifest.pairs]))
    if stain is not None:
        table = table[table["stain"] == stain].reset_index(drop=True)
    return table


# --------------------------------------------------------------------------- tables


def normalisation_table(profile_name: str, pair_ids: list[str] | None = None) -> pd.DataFrame:
    """Per-pair normalisation statistics, with ROI means on true labels where known.

    Parameters
    ----------
    profile_name : str
        The profile whose ``results/<profile>/registered/`` is read.
    pair_ids : list of str, optional
        These pairs (default: every registered pair); failed pairs have no row.

    Returns
    -------
    pandas.DataFrame
        Columns ``pair_id``, ``stain``, ``beamtime``, ``session``, ``ct_scale``, ``ct_offset``,
        ``ct_clipped_fraction``, ``f_min``, ``f_max``, ``f_min_clamped``, ``f_max_clamped``,
        ``histology_clipped_fraction`` and, on the synthetic dataset, ``ct_bone_before``,
        ``ct_bone_after``, ``ct_background_before``, ``ct_background_after`` and the same for
        the histology per channel (``histology_bone_before_r`` ...).
    """
    if pair_ids is None:
        out_dir = stage_dir(profile_name, "registered")
        pair_ids = sorted(p.parent.name for p in out_dir.glob("*/pair.json"))
    rows = []
    for record in upstream.pair_records(profile_name, pair_ids):
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


# --------------------------------------------------------------------------- commands


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Options of ``vstain register``."""
    add_stage_options(parser, progress=True)
    parser.add_argument("--stain", choices=["toluidine_blue", "he"], default=None,
                        help="only this stain (default: both)")
    parser.add_argument("--manifest", default=None,
                        help="data manifest (default: data_manifest.yaml of the project)")
    parser.add_argument("--workers", type=int, default=None,
                        help="pairs registered at once, one process each (default: the profile's registration.workers)")
    parser.add_argument("--strict", action="store_true",
                        help="exit with status 1 when any pair fails (default: report failures, carry on)")


def run_cli(args: argparse.Namespace) -> int:
    """Run ``vstain register``: register, normalise and mask every pair of the profile's dataset.

    Failed and uncertain pairs are listed by id (and in ``registration.csv``) and left out of later
    stages; with ``--strict`` any of them makes the command fail.
    """
    profile = as_profile(args.profile)
    if args.workers is not None and args.workers < 1:
        raise SystemExit(f"vstain register: --workers must be at least 1, got {args.workers}")
    table = ensure_registered(profile, stain=args.stain, progress=not args.no_progress,
                              manifest_path=args.manifest, workers=args.workers)
    failed = table[table["status"] != "ok"]
    print(f"registered {int((table['status'] == 'ok').sum())} of {len(table)} pairs")
    for _, row in failed.iterrows():
        print(f"  not registered: {row['pair_id']}: {row['status']}", file=sys.stderr)
    return 1 if (args.strict and len(failed)) else 0


def configure_normalise_parser(parser: argparse.ArgumentParser) -> None:
    """Options of ``vstain normalise`` (the same stage as ``vstain register``)."""
    configure_parser(parser)


def run_normalise_cli(args: argparse.Namespace) -> int:
    """``vstain normalise``: normalisation and masks run inside the registration stage.

    Registered pairs are written normalised and masked, so this command runs (or
    resumes) that stage: it is the same as ``vstain register``.
    """
    return run_cli(args)
