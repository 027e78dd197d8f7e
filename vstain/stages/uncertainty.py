"""``vstain uncertainty``: per-pixel uncertainty of the virtual stain, measured against the phantom's truth.

The science is :mod:`vstain.uncertainty`. This stage takes a profile's ``uncertainty`` section:

1. the ensemble: ``uncertainty.model`` on each of ``uncertainty.folds`` (a fold of
   ``training.folds``, or any fold when ``member_epochs`` is 0, is its own run with its chosen
   checkpoint, :func:`vstain.stages.upstream.selected_checkpoint`; other folds are trained here for
   ``member_epochs`` epochs into ``results/<profile>/uncertainty/members/``, last checkpoint);
2. every toluidine-blue validation pair of the first fold and every test pair, registered by the
   phantom's ground truth, is stained by every member under the 8 flips / quarter turns with the
   spread over overlapping patches (:func:`vstain.uncertainty.slide_uncertainty`). Every map is
   scored against the error of the **single stain** (the first member's own, what ``vstain stain``
   writes with or without ``--uncertainty``): each source's map around that stain, each source's
   map around its runs' mean (``<source>_mean``, the old measure), and a ``mix`` of the
   single-source maps with weights chosen on the validation slides
   (:func:`vstain.uncertainty.choose_mix`). The mean stains are scored as stains of their own
   (Table 1's SSIM / PSNR, and their own maps against their own error) in ``stains.csv``;
3. the 3D stage's sample (:func:`vstain.stages.upstream.volume_sample`) is stained with its single stain and the
   ``uncertainty.volume_source`` map around it, streaming
   (:func:`vstain.uncertainty.stain_volume_uncertainty`), and compared with the true stained
   volume brought into the normalised sections' colours (:func:`normalised_true_volume`).

Everything goes to ``results/<profile>/uncertainty/``: ``slides.csv`` (per slide and map, against
the single stain: rank correlation, AUROC, mean uncertainty and error, runs), ``stains.csv`` (per
slide and stain: SSIM / PSNR, error, own-map scores), ``tissue.csv``, ``reliability.csv``,
``mix.csv`` (the mix's weights), ``members.csv`` (training seconds), ``timing.csv`` (seconds per
stained run), ``volume.csv``, per pair ``single.tif`` (the stain), ``<map>_uncertainty.tif``
(maps around it), ``<source>_mean.tif`` with ``<source>_mean_uncertainty.tif`` (a mean stain and
its map), ``truth.tif``, ``labels.tif``, ``mask.tif`` (same pixel size), and the volume's
``volume_stained.tif`` / ``volume_stained_uncertainty.tif`` / ``volume_truth.tif``; ``done.json``
last.

Examples
--------
>>> import argparse
>>> parser = argparse.ArgumentParser(); configure_parser(parser)
>>> args = parser.parse_args(["--profile", "smoke"])
>>> args.profile, args.force
('smoke', False)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from vstain.config import Profile, as_profile, resolve_device
from vstain.infer import ct_network_channels_last, generator_channels
from vstain.io import is_current, provenance, read_tiff, write_csv, write_json, write_tiff
from vstain.layout import stage_dir
from vstain.metrics import patch_metrics
from vstain.models.checkpoint import load_generator
from vstain.normalise import normalise_ct_volume, normalise_histology
from vstain.pairs import split_roles
from vstain.phantom import LABELS, ground_truth_labels, ground_truth_pair, load_sample, stain_labels
from vstain.stages import upstream
from vstain.stages.arguments import add_stage_options
from vstain.stages.train import train_fold
from vstain.uncertainty import (DIHEDRAL, SOURCES, by_label, choose_mix, flag_auroc, make_uncertainty_stainer, mix_maps,
                                rank_correlation, reliability_curve, slide_uncertainty, source_runs, stain_error,
                                stain_volume_uncertainty, uncertainty_path, UNIT)
from vstain.volume_io import ArrayVolume

#: Version of the stage's tables: a change re-runs the stage.
TABLES_VERSION = 2
#: The tissue classes whose uncertainty the chapter compares (the paper's doubt: degradation layer, new bone).
TISSUES = ("degradation_layer", "new_bone", "dense_bone", "soft_tissue", "screw", "vessel", "lacuna")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Options of ``vstain uncertainty``."""
    add_stage_options(parser, force=True, progress=True)


def run_cli(args: argparse.Namespace) -> int:
    """``vstain uncertainty``: :func:`measure_uncertainty`, then say where its results are."""
    done = measure_uncertainty(args.profile, force=args.force, progress=not args.no_progress)
    print(f"wrote {done.parent} (slides.csv, tissue.csv, reliability.csv, volume.csv, maps; done.json last)")
    return 0


def uncertainty_dir(profile: str, root: str | Path | None = None) -> Path:
    """``results/<profile>/uncertainty/``."""
    return stage_dir(profile, "uncertainty", root)


def ensemble_members(profile: Profile, *, progress: bool = True) -> tuple[list[Path], pd.DataFrame]:
    """The checkpoints of the ensemble (trained when missing) and what each cost to train.

    Returns
    -------
    checkpoints : list of Path
        One per fold of ``uncertainty.folds``, in that order.
    table : DataFrame
        ``fold, epochs, seconds, checkpoint, own_run`` (``own_run``: the fold's full training run).
    """
    cfg = profile.uncertainty
    checkpoints, rows = [], []
    for fold in cfg.folds:
        own_run = fold in profile.training.folds or cfg.member_epochs == 0
        if own_run:
            checkpoint = upstream.selected_checkpoint(profile, cfg.model, fold, progress=progress)
            run = checkpoint.parent
        else:
            run = uncertainty_dir(profile.name) / "members" / cfg.model / f"fold{fold}"
            record = run / "training.json"
            finished = record.is_file() and json.loads(record.read_text()).get("epochs_done", 0) >= cfg.member_epochs
            if not finished:
                pairs = upstream.fold_pairs(profile, fold, "train", progress=progress)
                train_fold(profile, cfg.model, fold, epochs=cfg.member_epochs, pairs=pairs, out_dir=run,
                           progress=progress)
            checkpoint = run / "last.pt"
        summary = json.loads((run / "training.json").read_text())
        checkpoints.append(checkpoint)
        rows.append({"fold": fold, "epochs": int(summary.get("epochs_done", 0)),
                     "seconds": float(summary.get("seconds", float("nan"))), "checkpoint": checkpoint.name,
                     "own_run": own_run})
    return checkpoints, pd.DataFrame(rows)


def _stain_metrics(truth: np.ndarray, stain: np.ndarray, mask: np.ndarray, profile: Profile) -> dict[str, float]:
    e = profile.evaluation
    table = patch_metrics(truth, stain, mask, patch_size=e.patch_size, step=e.patch_step,
                          min_mask_fraction=e.min_mask_fraction)
    return {"ssim": float(table["ssim"].median()) if len(table) else float("nan"),
            "psnr": float(table["psnr"].median()) if len(table) else float("nan"), "patches": len(table)}


#: The sources a mix of maps is made of (each alone, around the single stain; ``combined`` is itself a mix).
MIX_COMPONENTS = ("tiling", "tta", "ensemble")


def slide_maps(result: Any, n_members: int, n_transforms: int) -> dict[str, dict[str, Any]]:
    """Every uncertainty map of one slide with what it is: ``map name -> {map, source, centre, runs}``.

    Around the single stain (the stain a user keeps): one map per source, named after it. Around
    the mean of the source's runs (the stain ``--stain-from mean`` writes): ``<source>_mean``, for
    the sources of more than one run.

    Examples
    --------
    >>> import numpy as np
    >>> from vstain.uncertainty import SlideUncertainty
    >>> z = np.zeros((2, 2), np.float32)
    >>> result = SlideUncertainty(single=None, means={}, spreads={"tta": z, "tiling": z},
    ...                           about_single={"tta": z, "tiling": z})
    >>> {name: (m["centre"], m["runs"]) for name, m in slide_maps(result, 1, 8).items()}
    {'tta': ('single', 8), 'tiling': ('single', 1), 'tta_mean': ('mean', 8)}
    """
    maps = {}
    for source, spread in result.about_single.items():
        maps[source] = {"map": spread, "source": source, "centre": "single",
                        "runs": len(source_runs(source, n_members, n_transforms))}
    for source, spread in result.spreads.items():
        runs = len(source_runs(source, n_members, n_transforms))
        if runs > 1:
            maps[f"{source}_mean"] = {"map": spread, "source": source, "centre": "mean", "runs": runs}
    return maps


def _map_rows(name: str, about: dict[str, Any], error: np.ndarray, mask: np.ndarray, labels: np.ndarray,
              threshold: float) -> tuple[dict, list[dict]]:
    """One map scored against the single stain's error: its row and its per-tissue rows."""
    spread = about["map"]
    row = {"map": name, "source": about["source"], "centre": about["centre"], "runs": about["runs"],
           "stain": "single", "mean_uncertainty": float(spread[mask].mean()),
           "mean_error": float(error[mask].mean()), "spearman": rank_correlation(spread, error, mask),
           "auroc": flag_auroc(spread, error, threshold, mask),
           "above_threshold": float((error[mask] > threshold).mean())}
    names = {tissue: LABELS[tissue] for tissue in TISSUES}
    tissues = [{"map": name, **r} for r in by_label(spread, error, labels, names, mask).to_dict("records")]
    return row, tissues


def measure_slide(members: list, infos: list[dict], pair, labels: np.ndarray, profile: Profile, device: str
                  ) -> tuple[Any, list[dict], list[dict], list[dict], dict[str, dict], float]:
    """Stain one ground-truth pair with every member and transform; score every map against the single stain.

    Returns the :class:`vstain.uncertainty.SlideUncertainty`, the per-map rows (each map against
    the error of the single stain, the one a user keeps), the per-tissue rows, the per-stain rows
    (the single stain and each source's mean stain, with Table 1's metrics and, for a mean stain,
    how its own map ranks its own error), the maps (:func:`slide_maps`) and the seconds of one run.
    """
    cfg, inf = profile.uncertainty, profile.inference
    info = infos[0]
    image = ct_network_channels_last(pair.ct, invert=bool(info.get("invert_ct")), channels=generator_channels(info))
    started = time.perf_counter()
    result = slide_uncertainty(members, image, patch_size=inf.patch_size, step=inf.step, batch_size=inf.batch_size,
                               tta=cfg.tta, tiling=cfg.tiling, blend=inf.blend, device=device,
                               in_channels=generator_channels(info))
    n_transforms = len(DIHEDRAL) if cfg.tta else 1
    seconds_per_run = (time.perf_counter() - started) / (len(members) * n_transforms)
    truth, mask = pair.histology, pair.mask
    error = stain_error(result.single, truth)
    maps = slide_maps(result, len(members), n_transforms)
    rows, tissue_rows = [], []
    for name, about in maps.items():
        row, tissues = _map_rows(name, about, error, mask, labels, cfg.error_threshold)
        rows.append(row)
        tissue_rows += tissues
    stain_rows = [{"stain": "single", "source": "", "runs": 1, "mean_error": float(error[mask].mean()),
                   "above_threshold": float((error[mask] > cfg.error_threshold).mean()),
                   "own_spearman": float("nan"), "own_auroc": float("nan"),
                   **_stain_metrics(truth, result.single, mask, profile)}]
    for name, about in maps.items():
        if about["centre"] != "mean":
            continue
        stain = result.means[about["source"]]
        own_error = stain_error(stain, truth)
        stain_rows.append({"stain": name, "source": about["source"], "runs": about["runs"],
                           "mean_error": float(own_error[mask].mean()),
                           "above_threshold": float((own_error[mask] > cfg.error_threshold).mean()),
                           "own_spearman": rank_correlation(about["map"], own_error, mask),
                           "own_auroc": flag_auroc(about["map"], own_error, cfg.error_threshold, mask),
                           **_stain_metrics(truth, stain, mask, profile)})
    return result, rows, tissue_rows, stain_rows, maps, seconds_per_run


def measure_uncertainty(profile: Profile | str | Path, *, force: bool = False, progress: bool = True) -> Path:
    """Stage driver: uncertainty of slides and of a volume, against the phantom's truth (see the module notes).

    Returns
    -------
    Path
        ``results/<profile>/uncertainty/done.json``. Idempotent: an up-to-date result is kept.
    """
    profile = as_profile(profile)
    cfg = profile.uncertainty
    out = uncertainty_dir(profile.name)
    done = out / "done.json"
    settings = {"uncertainty": profile.to_dict()["uncertainty"], "inference": profile.to_dict()["inference"],
                "evaluation": profile.to_dict()["evaluation"], "sigma_voxels": profile.volume.sigma_voxels,
                "normalisation": profile.to_dict()["normalisation"],
                "checkpoint_selection": profile.training.checkpoint_selection, "tables_version": TABLES_VERSION}
    if not force and is_current(done, settings):
        return done
    dataset = upstream.dataset_folder(profile)
    device = resolve_device(profile.device, source=f"profile {profile.name}: field device")
    checkpoints, members_table = ensemble_members(profile, progress=progress)
    loaded = [load_generator(c, direction="ct_to_histology") for c in checkpoints]
    members = [g.to(device) for g, _ in loaded]
    infos = [info for _, info in loaded]
    meta = provenance(profile, model=cfg.model, folds=list(cfg.folds))

    roles = split_roles(profile.name, cfg.folds[0])
    member_roles = {fold: split_roles(profile.name, fold) for fold in cfg.folds}
    chosen = [(pid, role) for role in ("validation", "test") for pid, r in sorted(roles.items()) if r == role]
    slide_rows, tissue_rows, stain_rows, timing_rows = [], [], [], []
    pooled: dict[tuple[str, str], tuple[list, list]] = {}
    measured: list[dict[str, Any]] = []  # per slide: what the mix needs
    n = profile.normalisation
    for pair_id, role in tqdm(chosen, desc="uncertainty", unit="slide", disable=not progress):
        sample = load_sample(dataset / pair_id)
        if sample.stain != "toluidine_blue":
            continue
        # the truth a stain should reach is the aligned twin: the slide where the CT says the tissue is (the error
        # of the data, preparation's moves, is no error of the model's)
        twin = sample.histology_twin is not None
        pair = ground_truth_pair(sample, ct_bone_mean=n.ct_bone_mean, ct_background_mean=n.ct_background_mean,
                                 c_low=n.histology_c_low, c_high=n.histology_c_high, twin=twin)
        labels = ground_truth_labels(sample, twin=twin)[1]  # what the truth shows, on the pair's grid
        result, rows, tissues, stains, maps, seconds = measure_slide(members, infos, pair, labels, profile, device)
        # a validation pair of the first fold trains the other folds' members: their spread is not honest there
        seen = sum(member_roles[fold].get(pair_id) == "train" for fold in cfg.folds)
        common = {"pair_id": pair_id, "role": role, "material": sample.material, "members_trained_on_it": seen}
        slide_rows += [{**common, **row} for row in rows]
        tissue_rows += [{**common, **row} for row in tissues]
        stain_rows += [{**common, **row} for row in stains]
        timing_rows.append({**common, "seconds_per_run": seconds, "height": pair.ct.shape[0],
                            "width": pair.ct.shape[1]})
        folder, pixel = out / pair_id, pair.pixel_size_um
        error = _write_slide(folder, pair, labels, result, maps, meta, pooled, role)
        measured.append({"common": common, "folder": folder, "pixel": pixel, "error": error, "mask": pair.mask,
                         "labels": labels, "components": {s: maps[s]["map"] for s in MIX_COMPONENTS if s in maps}})
    if not slide_rows:
        raise ValueError(f"profile {profile.name}: no toluidine-blue validation or test pair in fold {cfg.folds[0]} "
                         "to measure uncertainty on")
    mix_rows = _mix(measured, cfg, len(members), len(DIHEDRAL) if cfg.tta else 1, meta, slide_rows, tissue_rows,
                    pooled)
    reliability = []
    for (role, name), (spreads, errs) in pooled.items():
        curve = reliability_curve(np.concatenate(spreads), np.concatenate(errs), cfg.reliability_bins,
                                  threshold=cfg.error_threshold)
        curve.insert(0, "map", name)
        curve.insert(0, "role", role)
        reliability.append(curve)
    volume_row = _measure_volume(profile, members, infos, out, meta, device, progress)
    write_csv(out / "slides.csv", pd.DataFrame(slide_rows))
    write_csv(out / "stains.csv", pd.DataFrame(stain_rows))
    write_csv(out / "tissue.csv", pd.DataFrame(tissue_rows))
    write_csv(out / "reliability.csv", pd.concat(reliability, ignore_index=True))
    write_csv(out / "mix.csv", pd.DataFrame(mix_rows, columns=["component", "weight", "validation_auroc"]))
    write_csv(out / "members.csv", members_table)
    write_csv(out / "timing.csv", pd.DataFrame(timing_rows))
    write_csv(out / "volume.csv", pd.DataFrame([volume_row]))
    write_json(done, {"settings": settings, "checkpoints": [str(c) for c in checkpoints],
                      "sources": list(SOURCES), "provenance": meta})
    return done


def _write_slide(folder: Path, pair: Any, labels: np.ndarray, result: Any, maps: dict, meta: dict, pooled: dict,
                 role: str) -> np.ndarray:
    """Write a slide's truth, inputs, stains and maps; add its maps and error to ``pooled``; return the error."""
    pixel = pair.pixel_size_um
    write_tiff(folder / "truth.tif", pair.histology, pixel, metadata=meta)
    write_tiff(folder / "ct.tif", pair.ct, pixel, metadata=meta)
    write_tiff(folder / "labels.tif", labels, pixel, metadata=meta)
    write_tiff(folder / "mask.tif", pair.mask.astype(np.uint8), pixel, metadata=meta)
    write_tiff(folder / "single.tif", result.single, pixel, metadata={**meta, "stain": "single"})
    error = stain_error(result.single, pair.histology)
    for name, about in maps.items():
        centre_stain = "single" if about["centre"] == "single" else name
        if about["centre"] == "mean":
            write_tiff(folder / f"{name}.tif", result.means[about["source"]], pixel,
                       metadata={**meta, "source": about["source"], "stain": name})
        write_tiff(uncertainty_path(folder / f"{name}.tif"), about["map"], pixel,
                   metadata={**meta, "source": about["source"], "stain": centre_stain, "unit": UNIT})
        pooled.setdefault((role, name), ([], []))
        pooled[role, name][0].append(about["map"][pair.mask])
        pooled[role, name][1].append(error[pair.mask])
    return error


def _mix(measured: list[dict], cfg: Any, n_members: int, n_transforms: int, meta: dict, slide_rows: list,
         tissue_rows: list, pooled: dict) -> list[dict]:
    """The ``mix`` map: the single-source maps (around the single stain) mixed with weights chosen on the
    validation slides (:func:`vstain.uncertainty.choose_mix`), then scored on every slide like the others.

    Adds its rows to ``slide_rows``, ``tissue_rows`` and ``pooled`` in place and writes its maps;
    returns the weights (no rows without validation slides or with fewer than two components).
    """
    names = [s for s in MIX_COMPONENTS if all(s in m["components"] for m in measured)]
    validation = [m for m in measured if m["common"]["role"] == "validation"]
    if len(names) < 2 or not validation:
        return []
    weights, score = choose_mix({s: [m["components"][s][m["mask"]] for m in validation] for s in names},
                                [m["error"][m["mask"]] for m in validation], cfg.error_threshold)
    used = [s for s in names if weights[s] > 0]
    runs = len(set().union(*(source_runs(s, n_members, n_transforms) for s in used)))
    for m in measured:
        mixed = mix_maps([m["components"][s] for s in names], [weights[s] for s in names])
        about = {"map": mixed, "source": "+".join(used), "centre": "single", "runs": runs}
        row, tissues = _map_rows("mix", about, m["error"], m["mask"], m["labels"], cfg.error_threshold)
        slide_rows.append({**m["common"], **row})
        tissue_rows.extend({**m["common"], **r} for r in tissues)
        write_tiff(uncertainty_path(m["folder"] / "mix.tif"), mixed, m["pixel"],
                   metadata={**meta, "source": "mix", "stain": "single", "unit": UNIT, "weights": weights})
        role = m["common"]["role"]
        pooled.setdefault((role, "mix"), ([], []))
        pooled[role, "mix"][0].append(mixed[m["mask"]])
        pooled[role, "mix"][1].append(m["error"][m["mask"]])
    return [{"component": s, "weight": weights[s], "validation_auroc": score} for s in names]


def _measure_volume(profile: Profile, members: list, infos: list[dict], out: Path, meta: dict, device: str,
                    progress: bool) -> dict[str, Any]:
    """Stain the 3D stage's phantom volume with its uncertainty (streaming) and compare with the truth.

    The stain is the single model's (as ``vstain stain`` writes it), the map the profile's
    ``volume_source`` measured around it. The true stained volume (the phantom's stain model of the
    label volume) is brought into the colours the model learnt, the normalised sections' (paper 2.5
    with true ROIs: white balance on the background, stretch from dense bone and background), so
    that a colour offset between the stain model and the normalised sections is not counted as
    the model's error; the error against the raw stain model is kept beside it.
    """
    cfg, inf, n = profile.uncertainty, profile.inference, profile.normalisation
    sample = upstream.volume_sample(profile, profile.volume.fold)  # the 3D stage's own sample
    ct, _ = normalise_ct_volume(sample.ct_volume, sample.labels_volume, LABELS["dense_bone"], LABELS["background"],
                                bone_mean=n.ct_bone_mean, background_mean=n.ct_background_mean,
                                pair_id=sample.pair_id)
    voxel = (sample.ct_voxel_um,) * 3
    tta = cfg.tta and cfg.volume_source in ("tta", "combined")
    chosen = members if cfg.volume_source in ("ensemble", "combined") else members[:1]
    tiling = cfg.tiling and cfg.volume_source in ("tiling", "combined")
    stainer = make_uncertainty_stainer(chosen, patch_size=inf.patch_size, step=inf.step, batch_size=inf.batch_size,
                                       source=cfg.volume_source, stain_from="single", tta=tta, tiling=tiling,
                                       blend=inf.blend, device=device, invert=bool(infos[0].get("invert_ct")))
    started = time.perf_counter()
    stained, uncertainty = stain_volume_uncertainty(
        ArrayVolume(ct, voxel, name=f"{sample.pair_id} ct"), stainer, out / "volume_stained.tif",
        sigma_voxels=profile.volume.sigma_voxels, metadata={**meta, "pair_id": sample.pair_id,
                                                            "source": cfg.volume_source, "stain": "single"},
        overwrite=True, progress=progress)
    seconds = time.perf_counter() - started
    raw = stain_labels(sample.labels_volume, sample.stain, sample.stain_params, np.random.default_rng(profile.seed))
    truth = normalised_true_volume(raw, sample.labels_volume, profile, sample.pair_id)
    write_tiff(out / "volume_truth.tif", truth, voxel, metadata={**meta, "colours": "normalised (paper 2.5)"})
    inside = ~np.isin(sample.labels_volume, [LABELS["background"], LABELS["holder_wall"]])
    spread, stain = read_tiff(uncertainty)[0], read_tiff(stained)[0]
    error, raw_error = stain_error(stain, truth), stain_error(stain, raw)
    per_tissue = by_label(spread, error, sample.labels_volume, {name: LABELS[name] for name in TISSUES}, inside)
    layer = per_tissue.set_index("tissue")["uncertainty"].to_dict()
    return {"pair_id": sample.pair_id, "material": sample.material, "source": cfg.volume_source, "stain": "single",
            "truth": "normalised", "slices": int(ct.shape[0]), "seconds": seconds,
            "spearman": rank_correlation(spread, error, inside),
            "auroc": flag_auroc(spread, error, cfg.error_threshold, inside),
            "mean_uncertainty": float(spread[inside].mean()), "mean_error": float(error[inside].mean()),
            "spearman_raw_colours": rank_correlation(spread, raw_error, inside),
            "auroc_raw_colours": flag_auroc(spread, raw_error, cfg.error_threshold, inside),
            "mean_error_raw_colours": float(raw_error[inside].mean()),
            **{f"uncertainty_{name}": value for name, value in layer.items()}}


def normalised_true_volume(rgb: np.ndarray, labels: np.ndarray, profile: Profile, pair_id: str = "?") -> np.ndarray:
    """A true stained volume ``(Z, Y, X, 3)`` in the colours of the normalised sections the model learnt.

    :func:`vstain.normalise.normalise_histology` (paper 2.5) with the true ROIs, as the phantom's
    ground-truth pairs are normalised: the volume's background voxels for the white balance and
    the stretch's upper bound, its dense-bone voxels for the lower bound (the profile's ``c_low``,
    ``c_high``).
    """
    rgb, labels = np.asarray(rgb), np.asarray(labels)
    if rgb.shape != labels.shape + (3,):
        raise ValueError(f"pair {pair_id}: stained volume {rgb.shape} and labels {labels.shape} differ")
    flat = rgb.reshape(-1, rgb.shape[-2], 3)  # (Z * Y, X, 3): the ROIs are sets of voxels, the layout does not matter
    flat_labels = labels.reshape(-1, labels.shape[-1])
    n = profile.normalisation
    image, _ = normalise_histology(flat, flat_labels == LABELS["dense_bone"], flat_labels == LABELS["background"],
                                   c_low=n.histology_c_low, c_high=n.histology_c_high, pair_id=pair_id)
    return image.reshape(rgb.shape)


def read_results(profile: Profile | str) -> dict[str, pd.DataFrame]:
    """The stage's tables (for the chapter): ``slides``, ``stains``, ``tissue``, ``reliability``, ``mix``,
    ``members``, ``timing``, ``volume``."""
    out = uncertainty_dir(as_profile(profile).name)
    if not (out / "done.json").is_file():
        raise FileNotFoundError(f"{out / 'done.json'}: no uncertainty results; run vstain uncertainty first")
    return {name: pd.read_csv(out / f"{name}.csv")
            for name in ("slides", "stains", "tissue", "reliability", "mix", "members", "timing", "volume")}


# --------------------------------------------------------------------------- for the chapter

#: What each map is, in words (the chapter's tables name them so).
MAP_WORDS = {
    "tiling": "overlapping tiles (spread of the patches)",
    "tta": "8 flips and turns, around the single stain",
    "ensemble": "fold ensemble, around the single stain",
    "combined": "all members x flips and turns with the tiles, around the single stain",
    "mix": "mix of the single-source maps, weights chosen on validation",
    "tta_mean": "8 flips and turns, around their mean",
    "ensemble_mean": "fold ensemble, around its mean",
    "combined_mean": "all runs combined, around their mean",
}


def describe_map(name: str) -> str:
    """A map's name in words.

    Examples
    --------
    >>> describe_map("tta_mean")
    '8 flips and turns, around their mean'
    """
    return MAP_WORDS.get(name, name)


def slide_artefacts(profile: Profile | str, pair_id: str, map_name: str) -> dict[str, Any]:
    """What the stage wrote for one slide, for the chapter's figures: ``title`` (the pair), ``ct``, ``truth``,
    ``stain`` (the single stain), ``uncertainty`` (the map ``map_name`` around it), ``error`` (the single
    stain's Delta E from the truth), ``mask`` and ``labels``.
    """
    folder = uncertainty_dir(as_profile(profile).name) / pair_id
    path = uncertainty_path(folder / f"{map_name}.tif")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no map {map_name!r} for {pair_id}; run vstain uncertainty first")
    stain, truth = read_tiff(folder / "single.tif")[0], read_tiff(folder / "truth.tif")[0]
    return {"title": pair_id, "ct": read_tiff(folder / "ct.tif")[0], "truth": truth, "stain": stain,
            "uncertainty": read_tiff(path)[0], "error": stain_error(stain, truth),
            "mask": read_tiff(folder / "mask.tif")[0] > 0, "labels": read_tiff(folder / "labels.tif")[0]}


def volume_artefacts(profile: Profile | str) -> dict[str, Any]:
    """The stained volume (single stain), its map, its error against the normalised truth and its voxel size."""
    out = uncertainty_dir(as_profile(profile).name)
    stained, voxel, _ = read_tiff(out / "volume_stained.tif")
    return {"stain": stained, "uncertainty": read_tiff(uncertainty_path(out / "volume_stained.tif"))[0],
            "error": stain_error(stained, read_tiff(out / "volume_truth.tif")[0]), "voxel_size_um": voxel}


def map_summary(slides: pd.DataFrame) -> pd.DataFrame:
    """Median over slides, per role and map: rank correlation, AUROC, uncertainty, error (of the single stain).

    Examples
    --------
    >>> t = pd.DataFrame({"role": ["test"] * 2, "map": ["tta"] * 2, "spearman": [0.2, 0.4], "auroc": [0.6, 0.8],
    ...                   "mean_uncertainty": [0.1, 0.3], "mean_error": [0.2, 0.2], "runs": 8, "pair_id": ["a", "b"]})
    >>> map_summary(t).loc[("test", "tta"), ["spearman", "auroc", "runs", "slides"]].tolist()
    [0.30000000000000004, 0.7, 8.0, 2.0]
    """
    columns = ["spearman", "auroc", "mean_uncertainty", "mean_error", "runs"]
    grouped = slides.groupby(["role", "map"], sort=False)
    table = grouped[columns].median()
    table["slides"] = grouped["pair_id"].nunique().astype(float)
    return table


def chosen_map(slides: pd.DataFrame) -> str:
    """The map chosen on the validation slides: the highest median AUROC against the single stain's error
    (ties: the higher median rank correlation, then the fewer runs). Without validation slides, the test ones.

    Examples
    --------
    >>> t = pd.DataFrame({"role": ["validation", "validation", "test"], "map": ["tiling", "tta", "tiling"],
    ...                   "spearman": [0.5, 0.2, 0.9], "auroc": [0.7, 0.8, 0.9], "mean_uncertainty": 1.0,
    ...                   "mean_error": 1.0, "runs": [1, 8, 1], "pair_id": "a"})
    >>> chosen_map(t)
    'tta'
    """
    summary = map_summary(slides)
    roles = summary.index.get_level_values("role")
    part = summary.loc["validation"] if "validation" in roles else summary.loc["test"]
    part = part.dropna(subset=["auroc"])
    if part.empty:
        raise ValueError("no map has an AUROC on the validation or test slides (no pixel above the error threshold)")
    ranked = part.assign(minus_runs=-part["runs"]).sort_values(["auroc", "spearman", "minus_runs"], ascending=False,
                                                              kind="stable")
    return str(ranked.index[0])


def map_table(slides: pd.DataFrame) -> pd.DataFrame:
    """The per-map table of the closing note: what the map is, around which stain, its runs per slide, and the
    median rank correlation and AUROC against the single stain's error on the validation and the test slides.

    Examples
    --------
    >>> t = pd.DataFrame({"role": ["validation", "test"], "map": "tiling", "centre": "single", "spearman": [0.5, 0.4],
    ...                   "auroc": [0.7, 0.6], "mean_uncertainty": 1.0, "mean_error": 1.0, "runs": 1, "pair_id": "a"})
    >>> map_table(t).loc["tiling", ["runs", "validation_auroc", "test_auroc"]].tolist()
    [1.0, 0.7, 0.6]
    """
    summary = map_summary(slides)
    rows = {}
    for name in dict.fromkeys(slides["map"]):
        row = {"what": describe_map(name),
               "around": str(slides.loc[slides["map"] == name, "centre"].iloc[0]) if "centre" in slides else "single",
               "runs": int(slides.loc[slides["map"] == name, "runs"].max())}
        for role in ("validation", "test"):
            for column in ("spearman", "auroc"):
                key = (role, name)
                row[f"{role}_{column}"] = float(summary.loc[key, column]) if key in summary.index else float("nan")
        rows[name] = row
    return pd.DataFrame.from_dict(rows, orient="index")


def stain_summary(stains: pd.DataFrame) -> pd.DataFrame:
    """Median SSIM and PSNR (Table 1's metrics, median over the slides' patches, then over slides) of the single
    stain and of each mean stain, per role, with the difference to the single stain, and how each mean stain's
    own map (around it) ranks its own error.

    Examples
    --------
    >>> t = pd.DataFrame({"role": "test", "stain": ["single", "tta_mean"], "ssim": [0.5, 0.45],
    ...                   "psnr": [16.0, 15.5], "mean_error": [20.0, 21.0], "own_spearman": [float("nan"), 0.6],
    ...                   "own_auroc": [float("nan"), 0.9], "pair_id": "a"})
    >>> round(float(stain_summary(t).loc[("test", "tta_mean"), "ssim_gain"]), 2)
    -0.05
    """
    columns = ["ssim", "psnr", "mean_error", "own_spearman", "own_auroc"]
    table = stains.groupby(["role", "stain"], sort=False)[columns].median()
    for role in table.index.get_level_values(0).unique():
        single = table.loc[(role, "single")]
        for metric in ("ssim", "psnr"):
            table.loc[role, f"{metric}_gain"] = (table.loc[role, metric] - single[metric]).to_numpy()
    return table


def source_costs(slides: pd.DataFrame, timing: pd.DataFrame, members: pd.DataFrame) -> pd.DataFrame:
    """What each map costs on the measured slides, and how well it ranks the single stain's error on the test
    slides.

    ``stain_seconds``: its runs per slide x the mean seconds of one run x the slides;
    ``training_seconds``: the training of ensemble members that are no fold's own run (maps that
    use the ensemble only). With the test slides' median rank correlation and AUROC.
    """
    per_run = float(timing["seconds_per_run"].mean())
    n_slides = int(timing["pair_id"].nunique())
    extra = float(members.loc[~members["own_run"].astype(bool), "seconds"].sum())
    summary = map_summary(slides)
    rows = []
    for name, group in slides.groupby("map", sort=False):
        runs = int(group["runs"].max())
        source = str(group["source"].iloc[0])
        uses_members = "ensemble" in source or "combined" in source
        rows.append({"map": name, "runs_per_slide": runs, "stain_seconds": runs * per_run * n_slides,
                     "training_seconds": extra if uses_members else 0.0,
                     "test_spearman": float(summary.loc[("test", name), "spearman"])
                     if ("test", name) in summary.index else float("nan"),
                     "test_auroc": float(summary.loc[("test", name), "auroc"])
                     if ("test", name) in summary.index else float("nan")})
    table = pd.DataFrame(rows).set_index("map")
    table["total_seconds"] = table["stain_seconds"] + table["training_seconds"]
    return table


def tissue_summary(tissue: pd.DataFrame, map_name: str) -> pd.DataFrame:
    """Pixel-weighted mean uncertainty and single-stain error per tissue class over all slides, for one map.

    Returns one row per tissue (index) with ``pixels``, ``uncertainty``, ``error`` and
    ``relative`` (uncertainty over the mean of the dense-bone and soft-tissue uncertainty).

    Examples
    --------
    >>> t = pd.DataFrame({"map": "tta", "tissue": ["dense_bone", "soft_tissue", "new_bone"],
    ...                   "pixels": [10, 10, 5], "uncertainty": [0.1, 0.3, 0.4], "error": [0.1, 0.1, 0.5]})
    >>> float(tissue_summary(t, "tta").loc["new_bone", "relative"])
    2.0
    """
    part = tissue[tissue["map"] == map_name]
    rows = {}
    for name, group in part.groupby("tissue", sort=False):
        weights = group["pixels"].to_numpy(float)
        rows[name] = {"pixels": int(weights.sum()),
                      "uncertainty": float(np.average(group["uncertainty"], weights=weights)),
                      "error": float(np.average(group["error"], weights=weights))}
    table = pd.DataFrame.from_dict(rows, orient="index", columns=["pixels", "uncertainty", "error"])
    reference = [t for t in ("dense_bone", "soft_tissue") if t in table.index]
    base = float(table.loc[reference, "uncertainty"].mean()) if reference else float("nan")
    table["relative"] = table["uncertainty"] / base
    order = [t for t in TISSUES if t in table.index]
    return table.loc[order]


#: What the uncertainty should reach against the single stain's error (median over the test slides).
GOAL = {"auroc": 0.85, "spearman": 0.5}


def goal_verdict(slides: pd.DataFrame, goal: dict[str, float] | None = None) -> dict[str, Any]:
    """The chosen map (:func:`chosen_map`) on the test slides against the goal, in numbers and words.

    Returns
    -------
    dict
        ``map``, ``auroc``, ``spearman`` (test medians), ``best_test_auroc`` and ``best_test_map``
        (the best any map reached on the test slides), ``met`` (bool) and ``sentence``.

    Examples
    --------
    >>> t = pd.DataFrame({"role": ["validation", "test"], "map": "tiling", "spearman": [0.5, 0.4],
    ...                   "auroc": [0.7, 0.6], "mean_uncertainty": 1.0, "mean_error": 1.0, "runs": 1, "pair_id": "a"})
    >>> goal_verdict(t)["met"]
    False
    """
    goal = dict(GOAL if goal is None else goal)
    summary = map_summary(slides)
    name = chosen_map(slides)
    test = summary.loc["test"] if "test" in summary.index.get_level_values("role") else summary.iloc[:0]
    row = test.loc[name] if name in test.index else pd.Series({"auroc": float("nan"), "spearman": float("nan")})
    scored = test.dropna(subset=["auroc"])
    best_name = str(scored["auroc"].idxmax()) if len(scored) else name
    best = float(scored["auroc"].max()) if len(scored) else float("nan")
    met = bool(row["auroc"] >= goal["auroc"] and row["spearman"] >= goal["spearman"])
    if met:
        sentence = (f"reaches the goal (AUROC >= {goal['auroc']:.2f} and rank correlation >= "
                    f"{goal['spearman']:.2f})")
    else:
        short = [f"{label} {row[key]:.2f} < {goal[key]:.2f}" for key, label in
                 (("auroc", "AUROC"), ("spearman", "rank correlation")) if not row[key] >= goal[key]]
        sentence = f"falls short of the goal ({'; '.join(short)})"
    return {"map": name, "auroc": float(row["auroc"]), "spearman": float(row["spearman"]),
            "best_test_map": best_name, "best_test_auroc": best, "met": met, "sentence": sentence}


def profile_section(text: str, section: str = "uncertainty") -> str:
    """A profile's ``section`` with the comment lines just above it (where a profile records why).

    Examples
    --------
    >>> profile_section("a: 1\\n# why\\nuncertainty:\\n  tta: true\\nb: 2\\n")
    '# why\\nuncertainty:\\n  tta: true'
    """
    lines = text.splitlines()
    if f"{section}:" not in lines:
        return ""
    start = end = lines.index(f"{section}:")
    while start > 0 and lines[start - 1].startswith("#"):
        start -= 1
    while end + 1 < len(lines) and (lines[end + 1].startswith(" ") or not lines[end + 1].strip()):
        end += 1
    return "\n".join(lines[start:end + 1]).rstrip()
