"""The FRC stage: single-image FRC resolution per patch of every registered pair (Fig. S5); ``vstain frc``.

The Fourier ring correlation itself is :mod:`vstain.frc`. This stage takes a profile,
reads the registered pairs and the generated histology of one model and fold (running
the inference first when needed) and writes
``results/<profile>/frc/<model>/fold<k>/resolution.csv`` (:func:`vstain.layout.frc_dir`).

Examples
--------
>>> import argparse
>>> parser = argparse.ArgumentParser(prog="vstain frc")
>>> configure_parser(parser)
>>> parser.parse_args(["--fold", "1"]).model
'mod_cyclegan'
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm  # plain text bars: the same in a terminal, a log and a notebook

from vstain.config import Profile, as_profile, load_profile
from vstain.frc import (MODALITIES, FRCResult, interpolation_effect, pair_resolution, single_image_frc,
                        summarise_resolution)
from vstain.io import is_current, provenance, read_tiff, write_csv, write_json
from vstain.layout import frc_dir, inference_dir, registered_dir, stage_dir
from vstain.manifest import load_manifest
from vstain.pairs import RegisteredPair, read_registered_pair, registered_pair_ids, split_roles
from vstain.stages import upstream
from vstain.stages.arguments import add_stage_options, non_negative_int
from vstain.stages.upstream import read_inference


def measure_resolution(profile: Profile | str, model: str, fold: int, *, force: bool = False,
                       progress: bool = True) -> Path:
    """Stage driver: FRC resolution per patch of every registered pair of one model and fold (Fig. S5).

    Reads the registered pairs (``results/<profile>/registered/``), the generated
    histology of ``vstain infer`` (:func:`vstain.stages.upstream.inference_run`: a missing one stops
    with that command) and the
    split roles; writes ``results/<profile>/frc/<model>/fold<k>/resolution.csv`` (one
    row per patch: pair, role, absolute resolutions and statuses, relative ratios) and
    ``frc.json`` (settings, provenance), written last. Idempotent: a folder whose
    ``frc.json`` records the same settings is not recomputed.

    Parameters
    ----------
    profile : str or Profile
        Patch size, split, threshold and minimum mask fraction come from ``profile.frc``.
    model : str
        The model whose generated histology is measured.
    fold : int
    force : bool
        Recompute even when up to date.
    progress : bool
        Show progress bars.

    Returns
    -------
    Path
        The ``resolution.csv``.
    """
    profile = as_profile(profile)
    cfg = profile.frc
    out = frc_dir(profile.name, model, fold)
    settings = {"model": model, "fold": int(fold), "patch_size": cfg.patch_size, "split": cfg.split,
                "threshold": cfg.threshold, "min_mask_fraction": cfg.min_mask_fraction}
    record_path, csv_path = out / "frc.json", out / "resolution.csv"
    if not force and is_current(record_path, settings, requires=[csv_path]):
        return csv_path
    generated_dir = upstream.inference_run(profile, model, fold)
    roles = split_roles(profile.name, fold)
    registered = registered_dir(profile.name)
    rows = []
    for pair_id in tqdm(registered_pair_ids(profile.name), desc=f"FRC {model} fold{fold}", disable=not progress):
        pair = read_registered_pair(registered / pair_id)
        generated = read_inference(generated_dir / pair_id)["histology"]
        for row in pair_resolution(pair.ct.astype(np.float32), pair.histology, generated, pair.mask,
                                   patch_size=cfg.patch_size, min_mask_fraction=cfg.min_mask_fraction,
                                   split=cfg.split, threshold=cfg.threshold):
            rows.append({"pair_id": pair_id, "material": pair.material, "role": roles.get(pair_id, "unknown"),
                         "model": model, "fold": int(fold), **row})
    columns = ["pair_id", "material", "role", "model", "fold", "y", "x"] + [
        f"{m}_{k}" for m in MODALITIES for k in ("px", "status")] + ["generated_over_histology", "generated_over_ct"]
    frame = pd.DataFrame(rows, columns=columns)
    write_csv(csv_path, frame)
    write_json(record_path, {"settings": settings, "n_patches": len(frame),
                             "provenance": provenance(profile, model=model, fold=int(fold))})
    return csv_path


def patch_example(profile: Profile | str, model: str, fold: int, table: pd.DataFrame
                  ) -> tuple[RegisteredPair, dict[str, np.ndarray], dict[str, FRCResult]]:
    """The first measured patch of :func:`measure_resolution`'s ``table``: its images and their FRC results.

    Parameters
    ----------
    profile : str or Profile
        Patch size, split and threshold come from ``profile.frc``.
    model : str
    fold : int
    table : DataFrame
        ``resolution.csv``; without rows, the top-left patch of the first registered pair.

    Returns
    -------
    pair : RegisteredPair
    patches : dict
        ``"CT"`` (float), ``"histology"`` and ``"generated"`` (RGB) patches.
    results : dict
        Their single-image FRC results (:func:`vstain.frc.single_image_frc`).
    """
    profile = as_profile(profile)
    pair_id = table["pair_id"].iloc[0] if len(table) else registered_pair_ids(profile.name)[0]
    pair = read_registered_pair(registered_dir(profile.name) / str(pair_id))
    generated = read_inference(inference_dir(profile.name, model, fold) / str(pair_id))["histology"]
    p = profile.frc.patch_size
    y, x = (int(table["y"].iloc[0]), int(table["x"].iloc[0])) if len(table) else (0, 0)
    patches = {"CT": (pair.ct[y:y + p, x:x + p].astype(float), None),
               "histology": (pair.histology[y:y + p, x:x + p], -1),
               "generated": (generated[y:y + p, x:x + p], -1)}
    results = {name: single_image_frc(patch, split=profile.frc.split, threshold=profile.frc.threshold,
                                      channel_axis=channel_axis)
               for name, (patch, channel_axis) in patches.items()}
    return pair, {name: patch for name, (patch, _) in patches.items()}, results


def interpolation_example(profile: Profile | str, pair_id: str) -> tuple[FRCResult, FRCResult]:
    """Single-image FRC of a central patch of a pair's axial CT slice, as it is and shifted by half a pixel.

    The CT volume of ``pair_id`` comes from the data manifest (:func:`vstain.layout.default_manifest_path`,
    the synthetic dataset generated when the manifest lists none); the patch is the centre
    ``profile.frc.patch_size`` square of the middle axial slice (:func:`vstain.frc.interpolation_effect`).

    Returns
    -------
    (FRCResult, FRCResult)
        Before and after the shift.
    """
    profile = as_profile(profile)
    manifest = load_manifest(upstream.dataset_manifest(profile), verify=False)
    entries = {e.pair_id: e for e in manifest.pairs}
    volume, _, _ = read_tiff(entries[pair_id].ct_path)
    axial = volume[volume.shape[0] // 2].astype(float)
    side = min(profile.frc.patch_size, *axial.shape)
    top, left = (axial.shape[0] - side) // 2, (axial.shape[1] - side) // 2
    return interpolation_effect(axial[top:top + side, left:left + side], split=profile.frc.split,
                                threshold=profile.frc.threshold)


# --------------------------------------------------------------------------- command line


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Options of ``vstain frc``."""
    add_stage_options(parser, force=True)
    parser.add_argument("--model", default="mod_cyclegan", help="the model whose generated histology is measured")
    parser.add_argument("--fold", type=non_negative_int, help="fold (default: the profile's first training fold)")


def run_cli(args: argparse.Namespace) -> int:
    """``vstain frc``: per-patch FRC resolution, then ``frc/resolution.csv`` and ``frc/summary.csv``."""
    profile = load_profile(args.profile)
    fold = args.fold if args.fold is not None else profile.training.folds[0]
    csv_path = measure_resolution(profile, args.model, fold, force=args.force)
    frame = pd.read_csv(csv_path)
    folder = stage_dir(profile.name, "frc")
    write_csv(folder / "summary.csv", summarise_resolution(frame), index=True)
    write_csv(folder / "resolution.csv", frame)
    print(f"wrote {folder / 'resolution.csv'} ({len(frame)} patches) and {folder / 'summary.csv'}")
    return 0
