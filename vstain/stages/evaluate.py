"""The evaluation stage: per-patch SSIM / PSNR / LPIPS of every model and fold, Table 1; ``vstain evaluate``.

The metrics themselves are :mod:`vstain.metrics`; this stage takes a profile, reads the
inference of each model and fold (``vstain infer``, through :func:`vstain.stages.upstream.inference_run`;
a missing one stops with that command),
adds the CT colour lookup fitted on each fold's training pairs (:mod:`vstain.lookup`, a peer that
is not a network) and the raw-CT baseline, and writes under ``results/<profile>/evaluation/``
(:func:`vstain.layout.evaluation_dir`) Table 1, its intervals and the paired comparisons of the
models (:mod:`vstain.reports.table1`).

Examples
--------
>>> import argparse
>>> parser = argparse.ArgumentParser(prog="vstain evaluate")
>>> configure_parser(parser)
>>> parser.parse_args(["--folds", "0", "1"]).folds
[0, 1]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd
from tqdm import tqdm  # plain text bars: the same in a terminal, a log and a notebook

from vstain.config import as_profile
from vstain.io import is_current, provenance, write_csv, write_json
from vstain.layout import evaluation_dir, inference_dir, registered_dir
from vstain.masks import background_fill
from vstain.lookup import ColourLookup, apply_lookup, fit_lookup
from vstain.metrics import LPIPSStatus, load_lpips, patch_metrics, raw_ct_as_rgb
from vstain.pairs import load_fold_pairs, read_registered_pair, split_roles
from vstain.reports.table1 import (compare_with_paper, paired_comparisons, table1_by_fold, table1_intervals,
                                   table1_over_folds)
from vstain.stages import upstream
from vstain.stages.arguments import add_stage_options, non_negative_int
from vstain.vocabulary import BASELINE, LOOKUP


def _pair_rows(table: pd.DataFrame, **columns: Any) -> pd.DataFrame:
    for i, (name, value) in enumerate(columns.items()):
        table.insert(i, name, value)
    return table


def evaluate_fold(
    profile: Any, model: str, fold: int, lpips_status: LPIPSStatus, *, progress: bool = True
) -> pd.DataFrame:
    """Per-patch metrics of one model and fold on every pair it stained (see :func:`evaluate`)."""
    cfg = profile.evaluation
    folder = upstream.inference_run(profile, model, fold)
    done = json.loads((folder / "done.json").read_text())
    registered = registered_dir(profile.name)
    tables = []
    for pair_id in tqdm(done["pairs"], desc=f"metrics {model} fold{fold}", unit="pair", disable=not progress):
        pair = read_registered_pair(registered / pair_id)
        outputs = upstream.read_inference(folder / pair_id)
        if outputs["histology"].shape != pair.histology.shape:
            raise ValueError(f"{folder / pair_id / 'histology.tif'}: shape {outputs['histology'].shape} does not "
                             f"match the registered pair's {pair.histology.shape} (re-run inference with --force)")
        table = patch_metrics(pair.histology, outputs["histology"], pair.mask, patch_size=cfg.patch_size,
                              step=cfg.patch_step, min_mask_fraction=cfg.min_mask_fraction,
                              lpips_model=lpips_status.model)
        record = outputs["record"]
        tables.append(_pair_rows(table, pair_id=pair_id, role=record.get("role", "unknown"),
                                 material=pair.material, model=model, fold=fold))
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


def evaluate_baseline(profile: Any, fold: int, lpips_status: LPIPSStatus, pair_ids: Iterable[str]) -> pd.DataFrame:
    """Per-patch metrics of the raw CT (greyscale RGB) against the histology (paper 3.2 baseline)."""
    cfg = profile.evaluation
    roles = split_roles(profile.name, fold)
    registered = registered_dir(profile.name)
    tables = []
    for pair_id in pair_ids:
        pair = read_registered_pair(registered / pair_id)
        ct_rgb = raw_ct_as_rgb(pair.ct)
        # without generation each image keeps its own background value
        table = patch_metrics(pair.histology, ct_rgb, pair.mask, patch_size=cfg.patch_size, step=cfg.patch_step,
                              min_mask_fraction=cfg.min_mask_fraction, lpips_model=lpips_status.model,
                              generated_fill=background_fill(ct_rgb, pair.mask))
        tables.append(_pair_rows(table, pair_id=pair_id, role=roles.get(pair_id, "unknown"),
                                 material=pair.material, model=BASELINE, fold=fold))
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


def lookup_path(profile_name: str, fold: int, root: str | Path | None = None) -> Path:
    """Where the evaluation keeps the CT colour lookup fitted on ``fold``'s training pairs (CSV)."""
    return evaluation_dir(profile_name, root) / LOOKUP / f"fold{int(fold)}.csv"


def read_lookup(profile_name: str, fold: int, root: str | Path | None = None) -> ColourLookup:
    """The CT colour lookup the evaluation fitted on ``fold``'s training pairs (:func:`evaluate` writes it)."""
    path = lookup_path(profile_name, fold, root)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; `vstain evaluate --profile {profile_name}` fits and writes it")
    return ColourLookup.from_frame(pd.read_csv(path), where=str(path))


def evaluate_lookup(profile: Any, fold: int, lpips_status: LPIPSStatus, pair_ids: Iterable[str]) -> tuple[
        pd.DataFrame, ColourLookup]:
    """Per-patch metrics of the CT colour lookup fitted on ``fold``'s training pairs (:func:`vstain.lookup.fit_lookup`).

    The table is fitted on the masked pixels of the registered training pairs of the fold (those the
    networks trained on) and applied to the CT of every pair in ``pair_ids``; the metrics are those of
    the networks (the real image's background value outside the mask in both images).
    """
    cfg = profile.evaluation
    training = load_fold_pairs(profile.name, fold, "train")
    table = fit_lookup([p.ct for p in training], [p.histology for p in training], [p.mask for p in training])
    roles = split_roles(profile.name, fold)
    registered = registered_dir(profile.name)
    tables = []
    for pair_id in pair_ids:
        pair = read_registered_pair(registered / pair_id)
        rows = patch_metrics(pair.histology, apply_lookup(table, pair.ct), pair.mask, patch_size=cfg.patch_size,
                             step=cfg.patch_step, min_mask_fraction=cfg.min_mask_fraction,
                             lpips_model=lpips_status.model)
        tables.append(_pair_rows(rows, pair_id=pair_id, role=roles.get(pair_id, "unknown"),
                                 material=pair.material, model=LOOKUP, fold=fold))
    return (pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()), table


def _registered_digest(profile_name: str) -> str:
    """A digest of the registration table: the lookup's cache is stale once the pairs are registered again."""
    path = registered_dir(profile_name) / "registration.csv"
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""


def evaluate(
    profile: Any,
    models: Sequence[str] | None = None,
    folds: Sequence[int] | None = None,
    *,
    hub_dir: str | Path | None = None,
    lookup: bool = True,
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Stage driver: per-patch SSIM / PSNR / LPIPS of every model and fold, and Table 1 (idempotent).

    Runs (or reuses) :func:`vstain.stages.infer.run_inference` for each model and fold, then
    writes under ``results/<profile>/evaluation/``:

    * ``per_patch/<model>_fold<k>.csv``: one row per patch (pair, role, material, model,
      fold, patch origin, mask fraction, ssim, psnr, lpips), a cache reused while the
      inference is unchanged;
    * ``ct_lookup/fold<k>.csv``: the CT colour lookup fitted on the fold's training pairs, and
      ``per_patch/ct_lookup_fold<k>.csv`` its per-patch metrics (model ``ct_lookup``), when ``lookup``;
    * ``metrics_per_patch.csv``: all of them, plus the raw-CT baseline (model ``raw_ct``);
    * ``table1_by_fold.csv``: medians per model, split and fold (:func:`vstain.reports.table1.table1_by_fold`);
    * ``table1.csv``: Table 1 over the folds, the median of the per-fold medians with their range
      (:func:`vstain.reports.table1.table1_over_folds`);
    * ``table1_intervals.csv``: the bootstrap interval over slides and folds of every median
      (:func:`vstain.reports.table1.table1_intervals`);
    * ``comparisons.csv``: every two models compared on the same slides, the interval of their paired
      difference and the paired test (:func:`vstain.reports.table1.paired_comparisons`);
    * ``table1_vs_paper.csv``: ours beside the paper's Table 1 with rankings;
    * ``evaluation.json``: whether LPIPS was available and why, settings, provenance.

    Parameters
    ----------
    profile : str or Profile
    models, folds : sequence, optional
        Default: ``profile.training.models`` and ``profile.training.folds``.
    hub_dir : str or Path, optional
        Torch hub directory for the SqueezeNet weights (default :func:`torch.hub.get_dir`).
    lookup : bool
        Add the CT colour lookup's row (fitted on each fold's training pairs).
    force : bool
        Recompute the per-patch metrics even when cached.
    progress : bool
        Show progress bars.

    Returns
    -------
    Path
        The path of ``table1.csv``.
    """
    profile = as_profile(profile)
    models = list(profile.training.models if models is None else models)
    folds = list(profile.training.folds if folds is None else folds)
    out = evaluation_dir(profile.name)
    status = load_lpips(hub_dir)
    if not status.available:
        print(status.message, file=sys.stderr)  # once per evaluation; also kept in evaluation.json
    settings = {"patch_size": profile.evaluation.patch_size, "patch_step": profile.evaluation.patch_step,
                "min_mask_fraction": profile.evaluation.min_mask_fraction, "lpips_available": status.available}
    tables = []
    for fold in folds:
        pair_ids: list[str] = []
        for model in models:
            cache = out / "per_patch" / f"{model}_fold{fold}.csv"
            cache_meta = cache.with_suffix(".json")
            table = None
            done = inference_dir(profile.name, model, fold) / "done.json"
            if not force and cache.is_file() and cache_meta.is_file() and done.is_file():
                if is_current(cache_meta, settings) and is_current(cache_meta, json.loads(done.read_text()),
                                                                   key="inference"):
                    table = pd.read_csv(cache, dtype={"pair_id": str})
            if table is None:
                table = evaluate_fold(profile, model, fold, status, progress=progress)
                write_csv(cache, table)
                write_json(cache_meta, {"settings": settings, "inference": json.loads(done.read_text()),
                                        "provenance": provenance(profile, model=model, fold=fold)})
            tables.append(table)
            pair_ids = sorted(set(pair_ids) | set(table["pair_id"].astype(str)))
        if lookup:
            tables.append(_lookup_rows(profile, fold, status, pair_ids, settings, force))
        tables.append(evaluate_baseline(profile, fold, status, pair_ids))
    per_patch = pd.concat(tables, ignore_index=True)
    write_csv(out / "metrics_per_patch.csv", per_patch)
    by_fold = table1_by_fold(per_patch)
    write_csv(out / "table1_by_fold.csv", by_fold)
    table = table1_over_folds(by_fold)
    write_csv(out / "table1_intervals.csv", table1_intervals(per_patch))
    write_csv(out / "comparisons.csv", paired_comparisons(per_patch))
    write_csv(out / "table1_vs_paper.csv", compare_with_paper(table))
    write_json(out / "evaluation.json", {
        **settings, "lpips_message": status.message, "models": models, "folds": folds, "lookup": lookup,
        "provenance": provenance(profile),
    })
    write_csv(out / "table1.csv", table)  # last: the workflow's target marks a complete evaluation
    return out / "table1.csv"


def _lookup_rows(profile: Any, fold: int, status: LPIPSStatus, pair_ids: list[str], settings: dict[str, Any],
                 force: bool) -> pd.DataFrame:
    """The lookup's per-patch metrics of one fold: cached while the settings, pairs and registration hold."""
    out = evaluation_dir(profile.name)
    cache = out / "per_patch" / f"{LOOKUP}_fold{fold}.csv"
    key = {"settings": settings, "pairs": pair_ids, "registration": _registered_digest(profile.name)}
    meta_path = cache.with_suffix(".json")
    table_path = lookup_path(profile.name, fold)
    if not force and is_current(meta_path, key, key="key", requires=[cache, table_path]):
        return pd.read_csv(cache, dtype={"pair_id": str})
    rows, table = evaluate_lookup(profile, fold, status, pair_ids)
    write_csv(table_path, table.to_frame())
    write_csv(cache, rows)
    write_json(meta_path, {"key": key, "provenance": provenance(profile, model=LOOKUP, fold=fold)})
    return rows


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Options of ``vstain evaluate``."""
    add_stage_options(parser, force="recompute the per-patch metrics")
    parser.add_argument("--models", nargs="+", default=None, help="models (default: the profile's)")
    parser.add_argument("--folds", nargs="+", type=non_negative_int, default=None, help="folds (default: the profile's)")
    parser.add_argument("--no-lookup", dest="lookup", action="store_false",
                        help="leave out the CT colour lookup's row of Table 1")


def run_cli(args: argparse.Namespace) -> int:
    """Run ``vstain evaluate``; prints Table 1."""
    path = evaluate(args.profile, args.models, args.folds, lookup=args.lookup, force=args.force)
    with pd.option_context("display.width", 120, "display.max_columns", 20):
        print(pd.read_csv(path).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(path)
    return 0
