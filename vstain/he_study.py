"""The H&E secondary study (paper S2): the same pipeline on a second stain.

The H&E sections of the study were laser-cut: the screw is missing from them (white,
not black as in toluidine blue) and each whole-slide image is a partial, non-rectangular
stitch of tiles, black outside the stitched field of view (paper S2.1). The sample
correspondence masks follow that field of view, and since the masks multiply every L1
term, the models learn nothing about the region outside it (paper S2.2).

This module is glue, not a second pipeline: the H&E pairs are registered, normalised and
masked by :mod:`vstain.registration` (with the stain ``he``), the modified CycleGAN and
Pix2Pix (``profile.he.models``) are trained from scratch on the H&E training pairs by
:func:`vstain.train.train_model` with the toluidine-blue hyper-parameters
(``profile.training``) and ``profile.he.epochs``, and every H&E pair is stained by
:func:`vstain.infer.run_inference`. Artefacts live under ``results/<profile>/he/``::

    models/<model>/          last.pt, best_<component>.pt, history.csv, training.json
    inference/<model>/       <pair_id>/{histology,ct}[_masked].tif + inference.json, done.json
    metrics.csv              SSIM / PSNR per 256 px patch of every model on every H&E pair
    metrics.json             provenance of metrics.csv

The H&E split is the same in every fold (``dataset/split.csv``): ``train`` pairs and
``test`` pairs (the paper's validation/testing pairs). Fold 0's column is read.

Every stage function is idempotent: it computes only what is missing or stale, so
notebook 08 and ``vstain he`` can be re-run at any point.

Examples
--------
>>> import numpy as np
>>> mask = np.zeros((10, 12), bool); mask[6:, 7:] = True
>>> roi_origin(mask, 4)
(6, 7)
>>> order_for_figure({"a": "Mg", "b": "PEEK", "c": "Ti"})
['b', 'c', 'a']
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
from tqdm import tqdm  # plain text bars: the same in a terminal, a log and a notebook

from vstain.config import Profile, load_profile
from vstain.io import provenance, write_csv, write_json
from vstain.layout import stage_dir

STAIN = "he"
FOLD = 0  # the H&E split is the same in every fold; the runs are recorded as fold 0
CHECKPOINT = "last.pt"  # the generators after the last epoch stain the slides
FIGURE_ORDER = ("PEEK", "Ti", "Mg")  # paper Figures S2, S3: Sample 1 = PEEK, 2 = Ti, 3 = Mg
STAGES = ("train", "infer", "evaluate", "all")


def _profile(profile: Profile | str) -> Profile:
    return profile if isinstance(profile, Profile) else load_profile(profile)


def _check_models(profile: Profile, models: Iterable[str] | None) -> list[str]:
    from vstain.models import MODEL_NAMES

    models = list(profile.he.models if models is None else ([models] if isinstance(models, str) else models))
    if not models:
        raise ValueError(f"profile {profile.name}: field he.models is empty; name at least one model")
    for model in models:
        if model not in MODEL_NAMES:
            raise ValueError(f"unknown model {model!r} for the H&E study; valid models: {', '.join(MODEL_NAMES)}")
    return models


# --------------------------------------------------------------------------- where things are


def he_model_dir(profile_name: str, model: str) -> Path:
    """``results/<profile>/he/models/<model>/``.

    Examples
    --------
    >>> he_model_dir("smoke", "pix2pix").as_posix().endswith("smoke/he/models/pix2pix")
    True
    """
    return stage_dir(profile_name, "he") / "models" / model


def he_inference_dir(profile_name: str, model: str) -> Path:
    """``results/<profile>/he/inference/<model>/`` (holds ``done.json`` when complete).

    Examples
    --------
    >>> he_inference_dir("smoke", "pix2pix").as_posix().endswith("smoke/he/inference/pix2pix")
    True
    """
    return stage_dir(profile_name, "he") / "inference" / model


# --------------------------------------------------------------------------- the H&E pairs


def he_roles(profile: Profile | str) -> dict[str, str]:
    """``pair_id -> role`` (``train`` or ``test``) of every H&E pair, from ``dataset/split.csv``.

    Generates the dataset first when it is missing (``vstain.phantom.ensure_dataset``)
    if the profile's data are the synthetic ones.

    Raises
    ------
    ValueError
        If the split has no H&E pair, none for training or none for testing.
    """
    from vstain.manifest import read_split

    profile = _profile(profile)
    split_path = stage_dir(profile.name, "dataset") / "split.csv"
    if not split_path.is_file():
        from vstain.phantom import ensure_dataset

        ensure_dataset(profile, progress=False)
    split = read_split(split_path)
    rows = split[split["stain"] == STAIN]
    roles = dict(zip(rows["pair_id"].astype(str), rows[f"fold{FOLD}"].astype(str)))
    if not roles:
        raise ValueError(f"{split_path}: no pair with stain 'he' (field stain); the H&E study needs H&E pairs "
                         f"(profile {profile.name}: dataset.he_counts)")
    for role in ("train", "test"):
        if role not in roles.values():
            raise ValueError(f"{split_path}: no H&E pair with role {role!r} in column fold{FOLD} "
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

    The work is done by the registration stage (:func:`vstain.prepare.prepare_registered_pairs`
    with ``stain="he"``), called only when some H&E pair has no record there yet (neither a
    registered folder nor a recorded failure), so a failed pair is not registered again on
    every call; ``vstain register --stain he`` re-runs the stage. A pair whose registration
    failed is left out of the study with a warning giving the stage's reason (the paper, too,
    used the pairs that could be co-registered).

    Returns
    -------
    list of str
        The registered H&E pair ids, in split order.

    Raises
    ------
    FileNotFoundError
        If no training or no validation/testing H&E pair could be registered.
    """
    from vstain.prepare import prepare_registered_pairs, registration_table

    profile = _profile(profile)
    roles = he_roles(profile)
    table = registration_table(profile.name, list(roles))
    if set(table["pair_id"]) != set(roles):
        table = prepare_registered_pairs(profile, stain=STAIN, progress=progress)
    registered = stage_dir(profile.name, "registered")
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
    profile = _profile(profile)
    registered = stage_dir(profile.name, "registered")
    return [pid for pid in he_pair_ids(profile, role) if (registered / pid / "pair.json").is_file()]


# --------------------------------------------------------------------------- training


def is_he_trained(profile: Profile | str, model: str) -> bool:
    """Whether ``he/models/<model>/`` holds a finished run of the profile's H&E epochs,
    architecture and current H&E training pairs."""
    from vstain.models import architecture

    profile = _profile(profile)
    out = he_model_dir(profile.name, model)
    summary = out / "training.json"
    if not (summary.is_file() and (out / CHECKPOINT).is_file()):
        return False
    record = json.loads(summary.read_text())
    return (record.get("stain") == STAIN
            and record.get("epochs_done", 0) >= profile.he.epochs
            and record.get("architecture") == json.loads(json.dumps(architecture(model, profile.training)))
            and record.get("pair_ids") == registered_he_ids(profile, "train"))


def ensure_he_model(profile: Profile | str, model: str, *, progress: bool = True) -> Path:
    """Train ``model`` from scratch on the H&E training pairs unless a finished run exists.

    Same hyper-parameters as the toluidine-blue study (``profile.training``) and
    ``profile.he.epochs`` epochs (paper S2.1); an interrupted run is resumed.

    Returns
    -------
    Path
        ``results/<profile>/he/models/<model>/``.
    """
    from vstain.pairs import read_registered_pair
    from vstain.train import train_model

    profile = _profile(profile)
    (model,) = _check_models(profile, [model])
    out = he_model_dir(profile.name, model)
    if is_he_trained(profile, model):
        return out
    ensure_he_registered(profile, progress=progress)
    registered = stage_dir(profile.name, "registered")
    pairs = [read_registered_pair(registered / pid) for pid in registered_he_ids(profile, "train")]
    wrong = [p for p in pairs if p.stain != STAIN]
    if wrong:
        raise ValueError(f"{registered / wrong[0].pair_id / 'pair.json'}: field stain is {wrong[0].stain!r}, "
                         "but the split lists the pair as H&E")
    return train_model(profile, model, FOLD, stain=STAIN, pairs=pairs, out_dir=out, progress=progress)


# --------------------------------------------------------------------------- inference


def ensure_he_inference(profile: Profile | str, model: str, *, progress: bool = True) -> Path:
    """Stain every H&E pair (training and testing) with the H&E-trained ``model``.

    Trains the model first if needed. Whole-slide overlapping inference with the profile's
    ``inference`` settings (:func:`vstain.infer.run_inference`); unchanged pairs are not
    recomputed. ``done.json`` in the returned folder marks the run complete and records the
    checkpoint, its SHA-256, the pairs and the provenance.

    Returns
    -------
    Path
        ``results/<profile>/he/inference/<model>/``.
    """
    from vstain.infer import run_inference

    profile = _profile(profile)
    checkpoint = ensure_he_model(profile, model, progress=progress) / CHECKPOINT
    ids = ensure_he_registered(profile, progress=progress)
    return run_inference(profile, model, FOLD, stain=STAIN, pair_ids=ids, checkpoint=checkpoint,
                         out_dir=he_inference_dir(profile.name, model), progress=progress)


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
    from vstain.infer import read_inference
    from vstain.metrics import patch_metrics
    from vstain.pairs import read_registered_pair

    profile = _profile(profile)
    models = _check_models(profile, models)
    cfg = profile.evaluation
    done = {m: json.loads((ensure_he_inference(profile, m, progress=progress) / "done.json").read_text())
            for m in models}
    folder = stage_dir(profile.name, "he")
    settings = {"models": models, "patch_size": cfg.patch_size, "step": cfg.patch_step,
                "min_mask_fraction": cfg.min_mask_fraction,
                "inference": {m: {"settings": d.get("settings"), "pairs": d.get("pairs")} for m, d in done.items()}}
    table_path, meta_path = folder / "metrics.csv", folder / "metrics.json"
    if table_path.is_file() and meta_path.is_file() and json.loads(meta_path.read_text()).get("settings") == settings:
        return pd.read_csv(table_path)

    roles = he_roles(profile)
    registered = stage_dir(profile.name, "registered")
    frames = []
    for model in models:
        for pair_id in tqdm(done[model]["pairs"], desc=f"H&E metrics {model}", unit="pair", disable=not progress):
            pair = read_registered_pair(registered / pair_id)
            generated = read_inference(he_inference_dir(profile.name, model) / pair_id)["histology"]
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


# --------------------------------------------------------------------------- figures


def order_for_figure(materials: dict[str, str], n: int | None = None) -> list[str]:
    """Pair ids ordered as the paper's Figures S2/S3 (PEEK, Ti, Mg), at most one per material
    first, then the rest; at most ``n``.

    Parameters
    ----------
    materials : dict
        ``pair_id -> material``, in split order.
    n : int, optional
        How many to keep (default all).
    """
    rank = {m: i for i, m in enumerate(FIGURE_ORDER)}
    first, rest, seen = [], [], set()
    for pid, material in sorted(materials.items(), key=lambda kv: rank.get(kv[1], len(rank))):
        (rest if material in seen else first).append(pid)
        seen.add(material)
    ordered = first + rest
    return ordered if n is None else ordered[:n]


def figure_pairs(profile: Profile | str, role: str, n: int = 3) -> list[str]:
    """Up to ``n`` registered H&E pairs of ``role`` for Figures S2/S3, one per material first (PEEK, Ti, Mg)."""
    from vstain.pairs import read_registered_pair

    profile = _profile(profile)
    registered = stage_dir(profile.name, "registered")
    ids = registered_he_ids(profile, role)
    return order_for_figure({pid: read_registered_pair(registered / pid).material for pid in ids}, n)


def sample_materials(profile: Profile | str, pair_ids: Sequence[str]) -> str:
    """The caption text of Figures S2/S3: ``"Sample 1 = PEEK, Sample 2 = Ti"`` for ``pair_ids``."""
    from vstain.pairs import read_registered_pair

    profile = _profile(profile)
    registered = stage_dir(profile.name, "registered")
    return ", ".join(f"Sample {i + 1} = {read_registered_pair(registered / pid).material}"
                     for i, pid in enumerate(pair_ids))


def roi_origin(mask: np.ndarray, size: int) -> tuple[int, int]:
    """The ``(y, x)`` corner of the ``size`` x ``size`` window the mask covers most
    (first such window in row order): the region of interest of Figure S4.

    Raises
    ------
    ValueError
        If the image is smaller than the window.
    """
    mask = np.asarray(mask, bool)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2D, got shape {mask.shape}")
    if size < 1 or min(mask.shape) < size:
        raise ValueError(f"ROI size {size} does not fit in an image of shape {mask.shape}")
    integral = np.pad(mask.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    cover = integral[size:, size:] - integral[:-size, size:] - integral[size:, :-size] + integral[:-size, :-size]
    y, x = np.unravel_index(int(np.argmax(cover)), cover.shape)
    return int(y), int(x)


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
    from vstain.infer import apply_mask, read_inference
    from vstain.pairs import read_registered_pair

    profile = _profile(profile)
    pair = read_registered_pair(stage_dir(profile.name, "registered") / pair_id)
    folder = he_inference_dir(profile.name, model) / pair_id
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


def ct_display_range(ct: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """Grey-value window shared by a real CT slice and the generated ones: the 1st to
    99.5th percentile of the real slice inside the mask (the whole slice if the mask is empty).

    Examples
    --------
    >>> ct_display_range(np.arange(1000.0).reshape(25, 40), np.ones((25, 40), bool))
    (9.99, 994.005)
    """
    ct = np.asarray(ct, float)
    values = ct[np.asarray(mask, bool)] if np.asarray(mask, bool).any() else ct.ravel()
    low, high = np.percentile(values, (1.0, 99.5))
    return float(low), float(high)


def _row_label(ax: Any, text: str) -> None:
    ax.text(-0.06, 0.5, text, transform=ax.transAxes, rotation=90, ha="right", va="center", fontsize=8)


def plot_he_pairs(profile: Profile | str, pair_ids: Sequence[str] | None = None):
    """The registered H&E pairs: CT slice and section, with the sample-correspondence mask's outline.

    The section is black outside its stitched field of view and white where the screw was
    (laser-cut sections lose it); the mask stays inside the field of view.

    Returns
    -------
    matplotlib.figure.Figure
        One column per pair, rows: CT, histology with the mask outline.
    """
    from vstain.pairs import read_registered_pair
    from vstain.figures.plotting import image_grid, show_image

    profile = _profile(profile)
    ids = list(registered_he_ids(profile) if pair_ids is None else pair_ids)
    roles = he_roles(profile)
    registered = stage_dir(profile.name, "registered")
    fig, axes = image_grid(2, len(ids))
    for column, pid in enumerate(ids):
        pair = read_registered_pair(registered / pid)
        low, high = ct_display_range(pair.ct, pair.mask)
        show_image(axes[0, column], pair.ct, pixel_size_um=pair.pixel_size_um, vmin=low, vmax=high,
                   title=f"{pid} ({pair.material}, {roles.get(pid, '?')})")
        show_image(axes[1, column], pair.histology, pixel_size_um=pair.pixel_size_um)
        axes[1, column].contour(pair.mask, levels=[0.5], colors="cyan", linewidths=1.0)
    _row_label(axes[0, 0], "µCT slice")
    _row_label(axes[1, 0], "H&E section + mask")
    return fig


def plot_he_examples(profile: Profile | str, model: str, pairs_by_role: dict[str, Sequence[str]], *,
                     masked: bool = True):
    """Figures S2 (``masked=True``) and S3 (``masked=False``): real and generated histology and µCT.

    Parameters
    ----------
    profile : Profile or str
    model : str
        An H&E-trained model whose inference exists (:func:`ensure_he_inference`).
    pairs_by_role : dict
        ``role -> pair ids``, e.g. ``{"train": [...], "test": [...]}`` (:func:`figure_pairs`);
        one row per pair, rows grouped by role.
    masked : bool
        Show the images masked by the sample-correspondence mask (outside: the real image's
        mean background value), or the whole registered field of view.

    Returns
    -------
    matplotlib.figure.Figure
        Columns: real µCT, generated histology, real histology, and generated µCT when the
        model has a reverse generator (not Pix2Pix).
    """
    from vstain.figures.plotting import image_grid, show_image

    profile = _profile(profile)
    rows = [(role, pid) for role, ids in pairs_by_role.items() for pid in ids]
    if not rows:
        raise ValueError("pairs_by_role lists no pair")
    views = [he_views(profile, model, pid) for _, pid in rows]
    with_ct = all(v["generated_ct"] is not None for v in views)
    titles = ["real µCT", "generated histology", "real histology"] + (["generated µCT"] if with_ct else [])
    fig, axes = image_grid(len(rows), len(titles))
    suffix = "_masked" if masked else ""
    role_names = {"train": "training", "test": "validation/testing"}
    counters: dict[str, int] = {}
    for r, ((role, pid), view) in enumerate(zip(rows, views)):
        counters[role] = counters.get(role, 0) + 1
        low, high = ct_display_range(view["ct"], view["mask"])
        size = view["pixel_size_um"]
        real_ct = view["ct_masked"] if masked else view["ct"]
        real_histology = view["histology_masked"] if masked else view["histology"]
        panels = [(real_ct, True), (view["generated_histology" + suffix], False), (real_histology, False)]
        if with_ct:
            panels.append((view["generated_ct" + suffix], True))
        for c, (image, grey) in enumerate(panels):
            show_image(axes[r, c], image, pixel_size_um=size, vmin=low if grey else None,
                       vmax=high if grey else None, title=titles[c] if r == 0 else None)
        _row_label(axes[r, 0], f"{role_names.get(role, role)} {counters[role]}: {view['material']}")
    return fig


def plot_model_comparison(profile: Profile | str, models: Sequence[str], pair_id: str, roi_size: int):
    """Figure S4: real histology and each model's generated histology (masked) on one WSI, with
    the ``roi_size`` ROI the mask covers most outlined, and the ROI enlarged below.

    Returns
    -------
    matplotlib.figure.Figure
        Top row: whole slides; bottom row: the ROI.
    """
    from vstain.metrics import MODEL_LABELS
    from vstain.figures.plotting import crop, draw_roi, image_grid, show_image

    profile = _profile(profile)
    models = _check_models(profile, models)
    views = {m: he_views(profile, m, pair_id) for m in models}
    first = views[models[0]]
    y, x = roi_origin(first["mask"], roi_size)
    size = first["pixel_size_um"]
    panels = [("real histology", first["histology_masked"])] + [
        (MODEL_LABELS.get(m, m), views[m]["generated_histology_masked"]) for m in models]
    fig, axes = image_grid(2, len(panels))
    for c, (title, image) in enumerate(panels):
        show_image(axes[0, c], image, pixel_size_um=size, title=title)
        draw_roi(axes[0, c], y, x, roi_size, arrow=False)
        show_image(axes[1, c], crop(image, y, x, roi_size), pixel_size_um=size)
    _row_label(axes[0, 0], f"{pair_id} ({first['material']}, WSI)")
    _row_label(axes[1, 0], f"{roi_size} x {roi_size} px ROI")
    return fig


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
        How far to go; each stage runs what it needs before it. ``all`` = ``evaluate``.
    progress : bool

    Returns
    -------
    dict
        ``model -> folder`` of the last stage run (``he/models/<model>/`` for ``train``,
        ``he/inference/<model>/`` otherwise).
    """
    profile = _profile(profile)
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
    parser.add_argument("--profile", default="quick", help="profile name or YAML path (default: quick)")
    parser.add_argument("--model", action="append", default=None,
                        help="model to run (repeatable; default: the profile's he.models)")
    parser.add_argument("--stage", choices=STAGES, default="all",
                        help="train: he/models/<model>/last.pt; infer: he/inference/<model>/done.json; "
                             "evaluate/all: also he/metrics.csv (default: all)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run_cli(args: argparse.Namespace) -> int:
    """Run ``vstain he``; prints the folder of each model."""
    outputs = run_he_study(args.profile, args.model, stage=args.stage, progress=not args.no_progress)
    for path in outputs.values():
        print(path)
    return 0
