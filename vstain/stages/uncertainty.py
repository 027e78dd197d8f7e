"""``vstain uncertainty``: per-pixel uncertainty of the virtual stain, measured against the phantom's truth.

The science is :mod:`vstain.uncertainty`. This stage takes a profile's ``uncertainty`` section:

1. the ensemble: ``uncertainty.model`` on each of ``uncertainty.folds`` (a fold of
   ``training.folds``, or any fold when ``member_epochs`` is 0, is its own run with its chosen
   checkpoint, :func:`vstain.stages.train.ensure_selected`; other folds are trained here for
   ``member_epochs`` epochs into ``results/<profile>/uncertainty/members/``, last checkpoint);
2. every toluidine-blue validation pair of the first fold and every test pair, registered by the
   phantom's ground truth, is stained by every member under the 8 flips / quarter turns with the
   spread over overlapping patches (:func:`vstain.uncertainty.slide_uncertainty`); each source's
   uncertainty is compared with the actual error of its own stain against the true stained section;
3. the first test pair's CT volume (as the 3D stage) is stained with ``uncertainty.volume_source``
   and its uncertainty, streaming (:func:`vstain.uncertainty.stain_volume_uncertainty`), and
   compared with the true stained volume.

Everything goes to ``results/<profile>/uncertainty/``: ``slides.csv`` (per slide and source: rank
correlation, AUROC, mean uncertainty and error, SSIM / PSNR of the stain), ``tissue.csv``,
``reliability.csv``, ``members.csv`` (training seconds), ``timing.csv`` (seconds per stained
run), ``volume.csv``, per pair ``<pair>/<source>.tif`` (stain) and ``<source>_uncertainty.tif``
(same pixel size) with ``truth.tif``, ``labels.tif``, ``mask.tif``, and the volume's
``volume_stained.tif`` / ``volume_stained_uncertainty.tif`` / ``volume_truth.tif``;
``done.json`` last.

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
from vstain.io import provenance, read_tiff, write_csv, write_json, write_tiff
from vstain.layout import stage_dir
from vstain.metrics import patch_metrics
from vstain.models.checkpoint import load_generator
from vstain.pairs import split_roles
from vstain.phantom import LABELS, ground_truth_labels, ground_truth_pair, load_sample, stain_labels
from vstain.stages.arguments import add_stage_options
from vstain.stages.dataset import ensure_dataset
from vstain.stages.train import ensure_selected, fold_pairs, train_fold
from vstain.stages.volume import normalised_ct_volume
from vstain.uncertainty import (
    DIHEDRAL,
    SOURCES,
    by_label,
    flag_auroc,
    make_uncertainty_stainer,
    rank_correlation,
    reliability_curve,
    slide_uncertainty,
    source_runs,
    stain_error,
    stain_volume_uncertainty,
    uncertainty_path,
    UNIT,
)
from vstain.volume_io import ArrayVolume

#: Version of the stage's tables: a change re-runs the stage.
TABLES_VERSION = 1
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
            checkpoint = ensure_selected(profile, cfg.model, fold, progress=progress)
            run = checkpoint.parent
        else:
            run = uncertainty_dir(profile.name) / "members" / cfg.model / f"fold{fold}"
            record = run / "training.json"
            finished = record.is_file() and json.loads(record.read_text()).get("epochs_done", 0) >= cfg.member_epochs
            if not finished:
                pairs = fold_pairs(profile, fold, "train", progress=progress)
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


def measure_slide(members: list, infos: list[dict], pair, labels: np.ndarray, profile: Profile, device: str
                  ) -> tuple[Any, list[dict], list[dict], dict[str, np.ndarray], float]:
    """Stain one ground-truth pair with every member and transform; its rows and error maps.

    Returns the :class:`vstain.uncertainty.SlideUncertainty`, the per-source rows, the per-tissue
    rows, the error map of each stain (``single`` and each source) and the seconds of one run.
    """
    cfg, inf = profile.uncertainty, profile.inference
    info = infos[0]
    image = ct_network_channels_last(pair.ct, invert=bool(info.get("invert_ct")), channels=generator_channels(info))
    started = time.perf_counter()
    result = slide_uncertainty(members, image, patch_size=inf.patch_size, step=inf.step, batch_size=inf.batch_size,
                               tta=cfg.tta, tiling=cfg.tiling, blend=inf.blend, device=device,
                               in_channels=generator_channels(info))
    n_runs = len(members) * (len(DIHEDRAL) if cfg.tta else 1)
    seconds_per_run = (time.perf_counter() - started) / n_runs
    truth, mask = pair.histology, pair.mask
    errors = {"single": stain_error(result.single, truth)}
    rows = [{"source": "single", "runs": 1, "mean_uncertainty": float("nan"),
             "mean_error": float(errors["single"][mask].mean()), "spearman": float("nan"), "auroc": float("nan"),
             "above_threshold": float((errors["single"][mask] > cfg.error_threshold).mean()),
             **_stain_metrics(truth, result.single, mask, profile)}]
    tissue_rows = []
    names = {name: LABELS[name] for name in TISSUES}
    for source, spread in result.spreads.items():
        stain = result.means[source]
        error = errors[source] = stain_error(stain, truth)
        rows.append({"source": source, "runs": len(source_runs(source, len(members),
                                                                len(DIHEDRAL) if cfg.tta else 1)),
                     "mean_uncertainty": float(spread[mask].mean()), "mean_error": float(error[mask].mean()),
                     "spearman": rank_correlation(spread, error, mask),
                     "auroc": flag_auroc(spread, error, cfg.error_threshold, mask),
                     "above_threshold": float((error[mask] > cfg.error_threshold).mean()),
                     **_stain_metrics(truth, stain, mask, profile)})
        for row in by_label(spread, error, labels, names, mask).to_dict("records"):
            tissue_rows.append({"source": source, **row})
    return result, rows, tissue_rows, errors, seconds_per_run


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
                "checkpoint_selection": profile.training.checkpoint_selection, "tables_version": TABLES_VERSION}
    if not force and done.is_file() and json.loads(done.read_text()).get("settings") == settings:
        return done
    ensure_dataset(profile)
    device = resolve_device(profile.device, source=f"profile {profile.name}: field device")
    checkpoints, members_table = ensemble_members(profile, progress=progress)
    loaded = [load_generator(c, direction="ct_to_histology") for c in checkpoints]
    members = [g.to(device) for g, _ in loaded]
    infos = [info for _, info in loaded]
    meta = provenance(profile, model=cfg.model, folds=list(cfg.folds))

    dataset = stage_dir(profile.name, "dataset")
    roles = split_roles(profile.name, cfg.folds[0])
    member_roles = {fold: split_roles(profile.name, fold) for fold in cfg.folds}
    chosen = [(pid, role) for role in ("validation", "test") for pid, r in sorted(roles.items()) if r == role]
    slide_rows, tissue_rows, timing_rows, pooled = [], [], [], {}
    n = profile.normalisation
    for pair_id, role in tqdm(chosen, desc="uncertainty", unit="slide", disable=not progress):
        sample = load_sample(dataset / pair_id)
        if sample.stain != "toluidine_blue":
            continue
        pair = ground_truth_pair(sample, ct_bone_mean=n.ct_bone_mean, ct_background_mean=n.ct_background_mean,
                                 c_low=n.histology_c_low, c_high=n.histology_c_high)
        labels = ground_truth_labels(sample)[1]  # what the section shows, on the pair's grid
        result, rows, tissues, errors, seconds = measure_slide(members, infos, pair, labels, profile, device)
        # a validation pair of the first fold trains the other folds' members: their spread is not honest there
        seen = sum(member_roles[fold].get(pair_id) == "train" for fold in cfg.folds)
        common = {"pair_id": pair_id, "role": role, "material": sample.material, "members_trained_on_it": seen}
        slide_rows += [{**common, **row} for row in rows]
        tissue_rows += [{**common, **row} for row in tissues]
        timing_rows.append({**common, "seconds_per_run": seconds, "height": pair.ct.shape[0],
                            "width": pair.ct.shape[1]})
        folder = out / pair_id
        pixel = pair.pixel_size_um
        write_tiff(folder / "truth.tif", pair.histology, pixel, metadata=meta)
        write_tiff(folder / "ct.tif", pair.ct, pixel, metadata=meta)
        write_tiff(folder / "labels.tif", labels, pixel, metadata=meta)
        write_tiff(folder / "mask.tif", pair.mask.astype(np.uint8), pixel, metadata=meta)
        write_tiff(folder / "single.tif", result.single, pixel, metadata=meta)
        for source, spread in result.spreads.items():
            write_tiff(folder / f"{source}.tif", result.means[source], pixel, metadata={**meta, "source": source})
            write_tiff(uncertainty_path(folder / f"{source}.tif"), spread, pixel,
                       metadata={**meta, "source": source, "unit": UNIT})
            key = (role, source)
            pooled.setdefault(key, ([], []))
            pooled[key][0].append(spread[pair.mask])
            pooled[key][1].append(errors[source][pair.mask])
    if not slide_rows:
        raise ValueError(f"profile {profile.name}: no toluidine-blue validation or test pair in fold {cfg.folds[0]} "
                         "to measure uncertainty on")
    reliability = []
    for (role, source), (spreads, errs) in pooled.items():
        curve = reliability_curve(np.concatenate(spreads), np.concatenate(errs), cfg.reliability_bins,
                                  threshold=cfg.error_threshold)
        curve.insert(0, "source", source)
        curve.insert(0, "role", role)
        reliability.append(curve)
    volume_row = _measure_volume(profile, members, infos, out, meta, device, progress)
    write_csv(out / "slides.csv", pd.DataFrame(slide_rows))
    write_csv(out / "tissue.csv", pd.DataFrame(tissue_rows))
    write_csv(out / "reliability.csv", pd.concat(reliability, ignore_index=True))
    write_csv(out / "members.csv", members_table)
    write_csv(out / "timing.csv", pd.DataFrame(timing_rows))
    write_csv(out / "volume.csv", pd.DataFrame([volume_row]))
    write_json(done, {"settings": settings, "checkpoints": [str(c) for c in checkpoints],
                      "sources": list(SOURCES), "provenance": meta})
    return done


def _measure_volume(profile: Profile, members: list, infos: list[dict], out: Path, meta: dict, device: str,
                    progress: bool) -> dict[str, Any]:
    """Stain the 3D stage's phantom volume with its uncertainty (streaming) and compare with the truth."""
    cfg, inf = profile.uncertainty, profile.inference
    roles = split_roles(profile.name, profile.volume.fold)
    candidates = [pid for pid, role in sorted(roles.items()) if role == "test"] or sorted(roles)
    dataset = stage_dir(profile.name, "dataset")
    samples = [load_sample(dataset / pid) for pid in candidates]
    sample = ([s for s in samples if s.stain == "toluidine_blue"] or samples)[0]
    ct, _ = normalised_ct_volume(sample.ct_volume, sample.labels_volume, profile, sample.pair_id)
    voxel = (sample.ct_voxel_um,) * 3
    tta = cfg.tta and cfg.volume_source in ("tta", "combined")
    chosen = members if cfg.volume_source in ("ensemble", "combined") else members[:1]
    tiling = cfg.tiling and cfg.volume_source in ("tiling", "combined")
    stainer = make_uncertainty_stainer(chosen, patch_size=inf.patch_size, step=inf.step, batch_size=inf.batch_size,
                                       source=cfg.volume_source, tta=tta, tiling=tiling, blend=inf.blend,
                                       device=device, invert=bool(infos[0].get("invert_ct")))
    started = time.perf_counter()
    stained, uncertainty = stain_volume_uncertainty(
        ArrayVolume(ct, voxel, name=f"{sample.pair_id} ct"), stainer, out / "volume_stained.tif",
        sigma_voxels=profile.volume.sigma_voxels, metadata={**meta, "pair_id": sample.pair_id,
                                                            "source": cfg.volume_source},
        overwrite=True, progress=progress)
    seconds = time.perf_counter() - started
    truth = stain_labels(sample.labels_volume, sample.stain, sample.stain_params, np.random.default_rng(profile.seed))
    write_tiff(out / "volume_truth.tif", truth, voxel, metadata=meta)
    inside = ~np.isin(sample.labels_volume, [LABELS["background"], LABELS["holder_wall"]])
    spread, error = read_tiff(uncertainty)[0], stain_error(read_tiff(stained)[0], truth)
    per_tissue = by_label(spread, error, sample.labels_volume, {name: LABELS[name] for name in TISSUES}, inside)
    layer = per_tissue.set_index("tissue")["uncertainty"].to_dict()
    return {"pair_id": sample.pair_id, "material": sample.material, "source": cfg.volume_source,
            "slices": int(ct.shape[0]), "seconds": seconds, "spearman": rank_correlation(spread, error, inside),
            "auroc": flag_auroc(spread, error, cfg.error_threshold, inside),
            "mean_uncertainty": float(spread[inside].mean()), "mean_error": float(error[inside].mean()),
            **{f"uncertainty_{name}": value for name, value in layer.items()}}


def read_results(profile: Profile | str) -> dict[str, pd.DataFrame]:
    """The stage's tables (for the chapter): ``slides``, ``tissue``, ``reliability``, ``members``, ``timing``,
    ``volume``."""
    out = uncertainty_dir(as_profile(profile).name)
    if not (out / "done.json").is_file():
        raise FileNotFoundError(f"{out / 'done.json'}: no uncertainty results; run vstain uncertainty first")
    return {name: pd.read_csv(out / f"{name}.csv")
            for name in ("slides", "tissue", "reliability", "members", "timing", "volume")}


# --------------------------------------------------------------------------- for the chapter


def source_summary(slides: pd.DataFrame) -> pd.DataFrame:
    """Median over slides, per role and source: rank correlation, AUROC, uncertainty, error, SSIM, PSNR.

    Examples
    --------
    >>> t = pd.DataFrame({"role": ["test"] * 2, "source": ["tta"] * 2, "spearman": [0.2, 0.4], "auroc": [0.6, 0.8],
    ...                   "mean_uncertainty": [0.1, 0.3], "mean_error": [0.2, 0.2], "ssim": [0.5, 0.7],
    ...                   "psnr": [15.0, 17.0], "pair_id": ["a", "b"]})
    >>> source_summary(t).loc[("test", "tta"), ["spearman", "auroc", "slides"]].tolist()
    [0.30000000000000004, 0.7, 2.0]
    """
    columns = ["spearman", "auroc", "mean_uncertainty", "mean_error", "ssim", "psnr"]
    grouped = slides.groupby(["role", "source"], sort=False)
    table = grouped[columns].median()
    table["slides"] = grouped["pair_id"].nunique().astype(float)
    return table


def tissue_summary(tissue: pd.DataFrame, source: str) -> pd.DataFrame:
    """Pixel-weighted mean uncertainty and error per tissue class over all slides, for one source.

    Returns one row per tissue (index) with ``pixels``, ``uncertainty``, ``error`` and
    ``relative`` (uncertainty over the mean of the dense-bone and soft-tissue uncertainty).

    Examples
    --------
    >>> t = pd.DataFrame({"source": "tta", "tissue": ["dense_bone", "soft_tissue", "new_bone"],
    ...                   "pixels": [10, 10, 5], "uncertainty": [0.1, 0.3, 0.4], "error": [0.1, 0.1, 0.5]})
    >>> float(tissue_summary(t, "tta").loc["new_bone", "relative"])
    2.0
    """
    part = tissue[tissue["source"] == source]
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


def ensemble_gain(slides: pd.DataFrame) -> pd.DataFrame:
    """Median SSIM and PSNR (Table 1's metrics, median over the slides' patches, then over slides) of the single
    model's stain and of each mean stain, per role, with the difference to the single model.

    Examples
    --------
    >>> t = pd.DataFrame({"role": "test", "source": ["single", "ensemble"], "ssim": [0.5, 0.55],
    ...                   "psnr": [16.0, 16.5], "pair_id": "a"})
    >>> round(float(ensemble_gain(t).loc[("test", "ensemble"), "ssim_gain"]), 2)
    0.05
    """
    table = slides.groupby(["role", "source"], sort=False)[["ssim", "psnr"]].median()
    for role in table.index.get_level_values(0).unique():
        single = table.loc[(role, "single")]
        for metric in ("ssim", "psnr"):
            table.loc[role, f"{metric}_gain"] = (table.loc[role, metric] - single[metric]).to_numpy()
    return table


def source_costs(slides: pd.DataFrame, timing: pd.DataFrame, members: pd.DataFrame) -> pd.DataFrame:
    """What each source costs on the measured slides, and how well it ranks the error on the test slides.

    ``stain_seconds``: its runs per slide x the mean seconds of one run x the slides;
    ``training_seconds``: the training of ensemble members that are no fold's own run (sources
    that use the ensemble only). With the test slides' median rank correlation and AUROC.
    """
    per_run = float(timing["seconds_per_run"].mean())
    n_slides = int(timing["pair_id"].nunique())
    extra = float(members.loc[~members["own_run"].astype(bool), "seconds"].sum())
    test = slides[slides["role"] == "test"].groupby("source")
    rows = []
    for source, runs in slides.drop_duplicates("source").set_index("source")["runs"].items():
        if source == "single":
            continue
        rows.append({"source": source, "runs_per_slide": int(runs),
                     "stain_seconds": float(runs) * per_run * n_slides,
                     "training_seconds": extra if source in ("ensemble", "combined") else 0.0,
                     "test_spearman": float(test.get_group(source)["spearman"].median()),
                     "test_auroc": float(test.get_group(source)["auroc"].median())})
    table = pd.DataFrame(rows).set_index("source")
    table["total_seconds"] = table["stain_seconds"] + table["training_seconds"]
    return table


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
