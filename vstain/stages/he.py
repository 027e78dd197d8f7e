"""``vstain he``: the H&E secondary study (paper S2), the same pipeline on a second stain.

The H&E sections of the study were laser-cut: the screw is missing from them (white,
not black as in toluidine blue) and each whole-slide image is a partial, non-rectangular
stitch of tiles, black outside the stitched field of view (paper S2.1). The sample
correspondence masks follow that field of view, and since the masks multiply every L1
term, the models learn nothing about the region outside it (paper S2.2).

This module is glue, not a second pipeline: the H&E pairs are registered, normalised and
masked by the registration stage (``vstain register``, read through
:mod:`vstain.stages.upstream`), the modified CycleGAN and Pix2Pix (``profile.he.models``) are trained from
scratch on the H&E training pairs by :func:`vstain.stages.train.train_fold` with the
toluidine-blue hyper-parameters (``profile.training``) and ``profile.he.epochs``, and every
H&E pair is stained by :func:`vstain.stages.infer.run_inference`. Artefacts live under
``results/<profile>/he/`` (:func:`vstain.layout.model_dir` and
:func:`vstain.layout.inference_dir` with ``stain="he"``)::

    models/<model>/          last.pt, best_<component>.pt, history.csv, training.json
    inference/<model>/       <pair_id>/{histology,ct}[_masked].tif + inference.json, done.json
    metrics.csv              SSIM / PSNR per 256 px patch of every model on every H&E pair
    metrics.json             provenance of metrics.csv

The H&E split is the same in every fold (``dataset/split.csv``): ``train`` pairs and
``test`` pairs (the paper's validation/testing pairs). Fold 0's column is read.

Every stage function is idempotent: it computes only what is missing or stale, so
notebook 08 and ``vstain he`` can be re-run at any point. ``vstain he --stage evaluate``
writes ``he/metrics.csv``.

Examples
--------
>>> import pandas as pd
>>> table = pd.DataFrame({"model": ["a", "a", "b"], "role": ["test", "train", "test"],
...                       "ssim": [0.2, 0.4, 0.5], "psnr": [10.0, 12.0, 9.0]})
>>> rows, scope = comparison_patches(table)
>>> better_model(summarise_metrics(rows, role=None), "ssim"), scope
('b', 'the validation/testing pairs')
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import pandas as pd
from tqdm import tqdm  # plain text bars: the same in a terminal, a log and a notebook

from vstain.config import Profile, as_profile
from vstain.figures.he import order_for_figure
from vstain.io import is_current, provenance, read_record, write_csv, write_json
from vstain.layout import inference_dir, model_dir, registered_dir, split_path, stage_dir
from vstain.masks import apply_mask
from vstain.metrics import patch_metrics
from vstain.pairs import RegisteredPair, read_registered_pair, split_roles
from vstain.stages import upstream
from vstain.stages.arguments import add_stage_options
from vstain.stages.infer import run_inference
from vstain.stages.train import train_fold
from vstain.stages.upstream import read_inference
from vstain.vocabulary import MODEL_NAMES

STAIN = "he"
FOLD = 0  # the H&E split is the same in every fold; the runs are recorded as fold 0
CHECKPOINT = "last.pt"  # the generators after the last epoch stain the slides
STAGES = ("train", "infer", "evaluate", "all")


def _check_models(profile: Profile, models: Iterable[str] | str | None) -> list[str]:
    models = list(profile.he.models if models is None else ([models] if isinstance(models, str) else models))
    if not models:
        raise ValueError(f"profile {profile.name}: field he.models is empty; name at least one model")
    for model in models:
        if model not in MODEL_NAMES:
            raise ValueError(f"unknown model {model!r} for the H&E study; valid models: {', '.join(MODEL_NAMES)}")
    return models


# --------------------------------------------------------------------------- the H&E pairs


def he_roles(profile: Profile | str) -> dict[str, str]:
    """``pair_id -> role`` (``train`` or ``test``) of every H&E pair, from ``dataset/split.csv``.

    Generates the dataset first when it is missing (:func:`vstain.stages.upstream.dataset_folder`).

    Raises
    ------
    ValueError
        If the split has no H&E pair, none for training or none for testing.
    """
    profile = as_profile(profile)
    split = split_path(profile.name)
    if not split.is_file():
        upstream.dataset_folder(profile)
    roles = split_roles(profile.name, FOLD, stain=STAIN)
    if not roles:
        raise ValueError(f"{split}: no pair with stain 'he' (field stain); the H&E study needs H&E pairs "
                         f"(profile {profile.name}: dataset.he_counts)")
    for role in ("train", "test"):
        if role not in roles.values():
            raise ValueError(f"{split}: no H&E pair with role {role!r} in column fold{FOLD} "
                             f"(profile {profile.name}: dataset.he_counts / he_test_counts)")
    return roles


def he_pair_ids(profile: Profile | str, role: str | None = None) -> list[str]:
    """The H&E pair ids in split order, all or those of one ``role`` (``train``/``test``)."""
    roles = he_roles(profile)
    if role is not None and role not in ("train", "test"):
        raise ValueError(f"H&E role must be 'train' or 'test', got {role!r}")
    return [pid for pid, r in roles.items() if role is None or r == role]


def ensure_he_registered(profile: Profile | str, *, progress: bool = True) -> list[str]:
    """Register, normalise and mask the H&E pairs; the ids of those registered.

    The work is done by the registration stage (``vstain register``, or ``vstain register --stain he``
    for the H&E pairs alone); an H&E pair it has no record of (neither a registered folder nor a
    recorded failure) stops the study with that command
    (:class:`vstain.stages.upstream.MissingInput`). A pair whose registration
    failed is left out of the study with a warning giving the stage's reason (the paper, too,
    used the pairs that could be co-registered).

    Returns
    -------
    list of str
        The registered H&E pair ids, in split order.

    Raises
    ------
    FileNotFoundError
        If no training or no validation/testing H&E pair could be registered, or an H&E pair was
        not registered yet (:class:`vstain.stages.upstream.MissingInput`).
    """
    profile = as_profile(profile)
    roles = he_roles(profile)
    table = upstream.registered_table(profile, list(roles), stain=STAIN)
    registered = registered_dir(profile.name)
    ids = [pid for pid in roles if (registered / pid / "pair.json").is_file()]
    status = dict(zip(table["pair_id"], table["status"]))
    for pid in roles:
        if pid not in ids:
            warnings.warn(f"H&E pair {pid} left out of the H&E study: {status.get(pid, 'not registered')}",
                          stacklevel=2)
    for role in ("train", "test"):
        if not any(roles[pid] == role for pid in ids):
            reasons = "; ".join(f"{pid}: {status.get(pid, 'missing')}" for pid in roles if pid not in ids)
            raise FileNotFoundError(f"{registered}: no registered H&E pair with role {role!r} ({reasons})")
    return ids


def registered_he_ids(profile: Profile | str, role: str | None = None) -> list[str]:
    """The H&E pairs (of ``role``) that have a registered folder, in split order."""
    profile = as_profile(profile)
    registered = registered_dir(profile.name)
    return [pid for pid in he_pair_ids(profile, role) if (registered / pid / "pair.json").is_file()]


def load_he_pairs(profile: Profile | str, pair_ids: Sequence[str] | None = None) -> list[RegisteredPair]:
    """The registered H&E pairs ``pair_ids`` (default: all registered ones, in split order)."""
    profile = as_profile(profile)
    ids = list(registered_he_ids(profile) if pair_ids is None else pair_ids)
    return [read_registered_pair(registered_dir(profile.name) / pid) for pid in ids]


# --------------------------------------------------------------------------- training


def is_he_trained(profile: Profile | str, model: str) -> bool:
    """Whether ``he/models/<model>/`` holds a finished run of the profile's H&E epochs,
    architecture and current H&E training pairs."""
    profile = as_profile(profile)
    out = model_dir(profile.name, model, FOLD, STAIN)
    record = read_record(out / "training.json")
    return ((out / CHECKPOINT).is_file() and upstream.is_trained(profile, model, FOLD, STAIN)
            and is_current(record, STAIN, key="stain")
            and is_current(record, registered_he_ids(profile, "train"), key="pair_ids"))


def ensure_he_model(profile: Profile | str, model: str, *, progress: bool = True) -> Path:
    """Train ``model`` from scratch on the H&E training pairs unless a finished run exists.

    Same hyper-parameters as the toluidine-blue study (``profile.training``) and
    ``profile.he.epochs`` epochs (paper S2.1); an interrupted run is resumed.

    Returns
    -------
    Path
        ``results/<profile>/he/models/<model>/``.
    """
    profile = as_profile(profile)
    (model,) = _check_models(profile, [model])
    out = model_dir(profile.name, model, FOLD, STAIN)
    if is_he_trained(profile, model):
        return out
    ensure_he_registered(profile, progress=progress)
    registered = registered_dir(profile.name)
    pairs = [read_registered_pair(registered / pid) for pid in registered_he_ids(profile, "train")]
    wrong = [p for p in pairs if p.stain != STAIN]
    if wrong:
        raise ValueError(f"{registered / wrong[0].pair_id / 'pair.json'}: field stain is {wrong[0].stain!r}, "
                         "but the split lists the pair as H&E")
    return train_fold(profile, model, FOLD, stain=STAIN, pairs=pairs, out_dir=out, progress=progress)


def he_histories(profile: Profile | str, models: Sequence[str] | None = None) -> pd.DataFrame:
    """The ``history.csv`` of each trained H&E model, stacked, with a ``model`` column."""
    profile = as_profile(profile)
    models = _check_models(profile, models)
    return pd.concat([pd.read_csv(model_dir(profile.name, m, FOLD, STAIN) / "history.csv").assign(model=m)
                      for m in models])


# --------------------------------------------------------------------------- inference


def ensure_he_inference(profile: Profile | str, model: str, *, progress: bool = True) -> Path:
    """Stain every H&E pair (training and testing) with the H&E-trained ``model``.

    Trains the model first if needed. Whole-slide overlapping inference with the profile's
    ``inference`` settings (:func:`vstain.stages.infer.run_inference`); unchanged pairs are not
    recomputed. ``done.json`` in the returned folder marks the run complete and records the
    checkpoint, its SHA-256, the pairs and the provenance.

    Returns
    -------
    Path
        ``results/<profile>/he/inference/<model>/``.
    """
    profile = as_profile(profile)
    checkpoint = ensure_he_model(profile, model, progress=progress) / CHECKPOINT
    ids = ensure_he_registered(profile, progress=progress)
    return run_inference(profile, model, FOLD, stain=STAIN, pair_ids=ids, checkpoint=checkpoint,
                         out_dir=inference_dir(profile.name, model, FOLD, STAIN), progress=progress)


# --------------------------------------------------------------------------- metrics


def he_patch_metrics(profile: Profile | str, models: Iterable[str] | None = None, *,
                     progress: bool = True) -> pd.DataFrame:
    """SSIM and PSNR of every model on every H&E pair, per masked patch (paper 2.10).

    Patches as in the evaluation stage (``profile.evaluation``: size, grid step, at least
    ``min_mask_fraction`` inside the mask), outside the mask both images show the real
    image's mean background value. Runs the inference first if needed and writes
    ``results/<profile>/he/metrics.csv`` (with ``metrics.json``: the provenance and the
    ``done.json`` records it was computed from); an up-to-date file is read, not recomputed.

    Returns
    -------
    pandas.DataFrame
        One row per patch: ``model, pair_id, material, role, y, x, mask_fraction, ssim, psnr``.
    """
    profile = as_profile(profile)
    models = _check_models(profile, models)
    cfg = profile.evaluation
    done = {m: json.loads((ensure_he_inference(profile, m, progress=progress) / "done.json").read_text())
            for m in models}
    folder = stage_dir(profile.name, "he")
    settings = {"models": models, "patch_size": cfg.patch_size, "step": cfg.patch_step,
                "min_mask_fraction": cfg.min_mask_fraction,
                "inference": {m: {"settings": d.get("settings"), "pairs": d.get("pairs")} for m, d in done.items()}}
    table_path, meta_path = folder / "metrics.csv", folder / "metrics.json"
    if table_path.is_file() and is_current(meta_path, settings):
        return pd.read_csv(table_path)

    roles = he_roles(profile)
    registered = registered_dir(profile.name)
    frames = []
    for model in models:
        for pair_id in tqdm(done[model]["pairs"], desc=f"H&E metrics {model}", unit="pair", disable=not progress):
            pair = read_registered_pair(registered / pair_id)
            generated = read_inference(inference_dir(profile.name, model, FOLD, STAIN) / pair_id)["histology"]
            table = patch_metrics(pair.histology, generated, pair.mask, patch_size=cfg.patch_size,
                                  step=cfg.patch_step, min_mask_fraction=cfg.min_mask_fraction)
            table = table.drop(columns=["lpips"])
            table.insert(0, "role", roles.get(pair_id, "unknown"))
            table.insert(0, "material", pair.material)
            table.insert(0, "pair_id", pair_id)
            table.insert(0, "model", model)
            frames.append(table)
    columns = ["model", "pair_id", "material", "role", "y", "x", "mask_fraction", "ssim", "psnr"]
    result = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    write_csv(table_path, result)
    write_json(meta_path, {"settings": settings, "provenance": provenance(profile, stage="he_metrics")})
    return result


def summarise_metrics(per_patch: pd.DataFrame, role: str | None = "test") -> pd.DataFrame:
    """Median SSIM and PSNR per model over the patches of one role (all roles with ``None``).

    Examples
    --------
    >>> table = pd.DataFrame({"model": ["a", "a", "b"], "role": ["test"] * 3,
    ...                       "ssim": [0.2, 0.4, 0.5], "psnr": [10.0, 12.0, 9.0]})
    >>> summarise_metrics(table).loc["a", "ssim"].round(2), int(summarise_metrics(table).loc["b", "n_patches"])
    (np.float64(0.3), 1)
    """
    missing = {"model", "role", "ssim", "psnr"} - set(per_patch.columns)
    if missing:
        raise ValueError(f"per-patch table lacks column {sorted(missing)[0]!r}")
    rows = per_patch if role is None else per_patch[per_patch["role"] == role]
    if rows.empty:
        raise ValueError(f"no patch with role {role!r} in the per-patch table")
    grouped = rows.groupby("model")
    summary = grouped[["ssim", "psnr"]].median()
    summary["n_patches"] = grouped.size()
    return summary


def comparison_patches(per_patch: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The patches the model comparison is measured on, and their description.

    The validation/testing pairs' patches; all H&E patches when no validation/testing patch
    is covered enough by its mask (tiny profiles), which the description then says.

    Examples
    --------
    >>> table = pd.DataFrame({"model": ["a", "a"], "role": ["train", "test"], "ssim": [0.1, 0.2],
    ...                       "psnr": [9.0, 8.0]})
    >>> rows, scope = comparison_patches(table)
    >>> len(rows), scope
    (1, 'the validation/testing pairs')
    """
    test = per_patch[per_patch["role"] == "test"]
    if len(test):
        return test, "the validation/testing pairs"
    return per_patch, "all H&E pairs (no validation/testing patch is half inside its mask)"


def better_model(summary: pd.DataFrame, metric: str) -> str:
    """The model with the higher median ``metric`` (``ssim`` or ``psnr``: higher is better).

    Examples
    --------
    >>> better_model(pd.DataFrame({"ssim": [0.3, 0.5]}, index=["a", "b"]), "ssim")
    'b'
    """
    if metric not in ("ssim", "psnr"):
        raise ValueError(f"metric must be 'ssim' or 'psnr', got {metric!r}")
    return str(summary[metric].idxmax())


# --------------------------------------------------------------------------- what the figures show


def figure_pairs(profile: Profile | str, role: str, n: int = 3) -> list[str]:
    """Up to ``n`` registered H&E pairs of ``role`` for Figures S2/S3, one per material first (PEEK, Ti, Mg)."""
    profile = as_profile(profile)
    registered = registered_dir(profile.name)
    ids = registered_he_ids(profile, role)
    return order_for_figure({pid: read_registered_pair(registered / pid).material for pid in ids}, n)


def sample_materials(profile: Profile | str, pair_ids: Sequence[str]) -> str:
    """The caption text of Figures S2/S3: ``"Sample 1 = PEEK, Sample 2 = Ti"`` for ``pair_ids``."""
    profile = as_profile(profile)
    registered = registered_dir(profile.name)
    return ", ".join(f"Sample {i + 1} = {read_registered_pair(registered / pid).material}"
                     for i, pid in enumerate(pair_ids))


def he_views(profile: Profile | str, model: str, pair_id: str) -> dict[str, Any]:
    """Everything Figures S2-S4 show of one pair: real and generated images, masked and not.

    Returns
    -------
    dict
        ``ct``, ``histology`` (real, unmasked), ``ct_masked``, ``histology_masked`` (outside
        the mask: the real image's mean background value, as the inference stage fills the
        generated ones), ``mask``, ``generated_histology``, ``generated_histology_masked``,
        ``generated_ct``, ``generated_ct_masked`` (``None`` for Pix2Pix), ``material``,
        ``role``, ``pixel_size_um``.
    """
    profile = as_profile(profile)
    pair = read_registered_pair(registered_dir(profile.name) / pair_id)
    folder = inference_dir(profile.name, model, FOLD, STAIN) / pair_id
    generated = read_inference(folder)
    record = generated["record"]
    return {
        "ct": pair.ct, "histology": pair.histology, "mask": pair.mask,
        "ct_masked": apply_mask(pair.ct, pair.mask, record["ct_fill"]),
        "histology_masked": apply_mask(pair.histology, pair.mask, record["histology_fill"]),
        "generated_histology": generated["histology"],
        "generated_histology_masked": generated["histology_masked"],
        "generated_ct": generated.get("ct"), "generated_ct_masked": generated.get("ct_masked"),
        "material": pair.material, "role": record.get("role", "unknown"), "pixel_size_um": pair.pixel_size_um,
    }


def example_views(profile: Profile | str, model: str,
                  pairs_by_role: Mapping[str, Sequence[str]]) -> list[tuple[str, dict[str, Any]]]:
    """``(role, view)`` of every pair of ``pairs_by_role`` (:func:`figure_pairs`), for
    :func:`vstain.figures.he.plot_he_examples` (Figures S2/S3).

    Parameters
    ----------
    profile : Profile or str
    model : str
        An H&E-trained model whose inference exists (:func:`ensure_he_inference`).
    pairs_by_role : dict
        ``role -> pair ids``, e.g. ``{"train": [...], "test": [...]}``.
    """
    profile = as_profile(profile)
    rows = [(role, pid) for role, ids in pairs_by_role.items() for pid in ids]
    if not rows:
        raise ValueError("pairs_by_role lists no pair")
    return [(role, he_views(profile, model, pid)) for role, pid in rows]


def comparison_views(profile: Profile | str, models: Sequence[str], pair_id: str) -> dict[str, dict[str, Any]]:
    """``model -> view`` of one pair, for :func:`vstain.figures.he.plot_model_comparison` (Figure S4)."""
    profile = as_profile(profile)
    models = _check_models(profile, models)
    return {m: he_views(profile, m, pair_id) for m in models}


# --------------------------------------------------------------------------- the study


def run_he_study(profile: Profile | str, models: Sequence[str] | None = None, *, stage: str = "all",
                 progress: bool = True) -> dict[str, Path]:
    """The whole H&E study, idempotently: register the H&E pairs, train, infer, measure.

    Parameters
    ----------
    profile : Profile or str
    models : sequence of str, optional
        Default ``profile.he.models`` (paper: ``mod_cyclegan`` and ``pix2pix``).
    stage : {"train", "infer", "evaluate", "all"}
        How far to go; each stage runs what it needs before it. ``all`` = ``evaluate``, which
        writes ``he/metrics.csv`` (:func:`he_patch_metrics`).
    progress : bool

    Returns
    -------
    dict
        ``model -> folder`` of the last stage run (``he/models/<model>/`` for ``train``,
        ``he/inference/<model>/`` otherwise).
    """
    profile = as_profile(profile)
    models = _check_models(profile, models)
    if stage not in STAGES:
        raise ValueError(f"unknown H&E stage {stage!r}; valid: {', '.join(STAGES)}")
    if stage == "train":
        return {m: ensure_he_model(profile, m, progress=progress) for m in models}
    out = {m: ensure_he_inference(profile, m, progress=progress) for m in models}
    if stage in ("evaluate", "all"):
        he_patch_metrics(profile, models, progress=progress)
    return out


# --------------------------------------------------------------------------- CLI


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Options of ``vstain he``."""
    add_stage_options(parser, progress=True)
    parser.add_argument("--model", action="append", default=None,
                        help="model to run (repeatable; default: the profile's he.models)")
    parser.add_argument("--stage", choices=STAGES, default="all",
                        help="train: he/models/<model>/last.pt; infer: he/inference/<model>/done.json; "
                             "evaluate/all: also he/metrics.csv (default: all)")


def run_cli(args: argparse.Namespace) -> int:
    """Run ``vstain he``; prints the folder of each model."""
    outputs = run_he_study(args.profile, args.model, stage=args.stage, progress=not args.no_progress)
    for path in outputs.values():
        print(path)
    return 0
