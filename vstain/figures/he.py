"""Figures of the H&E chapter (paper S2, Figures S2-S4): registered pairs, masked and unmasked
views, the model comparison with its ROI, training curves and the patch metrics.

Every function takes what it draws (registered pairs, the views of
:func:`vstain.stages.he.he_views`, tables) and returns a matplotlib figure; the
choices of what to show (:func:`order_for_figure`; :func:`~vstain.figures.plotting.roi_origin` and
:func:`~vstain.figures.plotting.ct_display_range`, shared with the other chapters) are pure functions of
their arguments.

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

from typing import Any, Mapping, Sequence

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from vstain.figures.plotting import (crop, ct_display_range, draw_roi, image_grid, order_by_material, roi_origin,
                                     row_label, show_image)
from vstain.pairs import RegisteredPair
from vstain.vocabulary import MODEL_LABELS

FIGURE_ORDER = ("PEEK", "Ti", "Mg")  # paper Figures S2, S3: Sample 1 = PEEK, 2 = Ti, 3 = Mg
ROLE_NAMES = {"train": "training", "test": "validation/testing"}


# --------------------------------------------------------------------------- what to show


def order_for_figure(materials: Mapping[str, str], n: int | None = None) -> list[str]:
    """Pair ids ordered as the paper's Figures S2/S3 (PEEK, Ti, Mg), at most one per material
    first, then the rest; at most ``n`` (:func:`vstain.figures.plotting.order_by_material`).

    Examples
    --------
    >>> order_for_figure({"a": "Mg", "b": "Mg", "c": "PEEK"}, 2)
    ['c', 'a']
    """
    return order_by_material(materials, n, order=FIGURE_ORDER)


# --------------------------------------------------------------------------- figures


def plot_he_pairs(pairs: Sequence[RegisteredPair], roles: Mapping[str, str]) -> Figure:
    """The registered H&E pairs: CT slice and section, with the sample-correspondence mask's outline.

    The section is black outside its stitched field of view and white where the screw was
    (laser-cut sections lose it); the mask stays inside the field of view.

    Parameters
    ----------
    pairs : sequence of RegisteredPair
        One column each (:func:`vstain.stages.he.load_he_pairs`).
    roles : dict
        ``pair_id -> role`` (:func:`vstain.stages.he.he_roles`), shown in the titles.

    Returns
    -------
    matplotlib.figure.Figure
        One column per pair, rows: CT, histology with the mask outline.
    """
    fig, axes = image_grid(2, len(pairs))
    for column, pair in enumerate(pairs):
        low, high = ct_display_range(pair.ct, pair.mask)
        show_image(axes[0, column], pair.ct, pixel_size_um=pair.pixel_size_um, vmin=low, vmax=high,
                   title=f"{pair.pair_id} ({pair.material}, {roles.get(pair.pair_id, '?')})")
        show_image(axes[1, column], pair.histology, pixel_size_um=pair.pixel_size_um)
        axes[1, column].contour(pair.mask, levels=[0.5], colors="cyan", linewidths=1.0)
    row_label(axes[0, 0], "µCT slice")
    row_label(axes[1, 0], "H&E section + mask")
    return fig


def plot_he_examples(rows: Sequence[tuple[str, Mapping[str, Any]]], *, masked: bool = True) -> Figure:
    """Figures S2 (``masked=True``) and S3 (``masked=False``): real and generated histology and µCT.

    Parameters
    ----------
    rows : sequence of (role, view)
        One row per pair, rows grouped by role; each view as
        :func:`vstain.stages.he.he_views` returns it (:func:`vstain.stages.he.example_views`
        gives the list).
    masked : bool
        Show the images masked by the sample-correspondence mask (outside: the real image's
        mean background value), or the whole registered field of view.

    Returns
    -------
    matplotlib.figure.Figure
        Columns: real µCT, generated histology, real histology, and generated µCT when the
        model has a reverse generator (not Pix2Pix).
    """
    if not rows:
        raise ValueError("no row to show: rows is empty")
    with_ct = all(view["generated_ct"] is not None for _, view in rows)
    titles = ["real µCT", "generated histology", "real histology"] + (["generated µCT"] if with_ct else [])
    fig, axes = image_grid(len(rows), len(titles))
    suffix = "_masked" if masked else ""
    counters: dict[str, int] = {}
    for r, (role, view) in enumerate(rows):
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
        row_label(axes[r, 0], f"{ROLE_NAMES.get(role, role)} {counters[role]}: {view['material']}")
    return fig


def plot_model_comparison(views: Mapping[str, Mapping[str, Any]], pair_id: str, roi_size: int) -> Figure:
    """Figure S4: real histology and each model's generated histology (masked) on one WSI, with
    the ``roi_size`` ROI the mask covers most outlined, and the ROI enlarged below.

    Parameters
    ----------
    views : dict
        ``model -> view`` of one pair (:func:`vstain.stages.he.comparison_views`), in column order.
    pair_id : str
        Shown in the row label.
    roi_size : int
        ROI side in pixels (:func:`roi_origin`).

    Returns
    -------
    matplotlib.figure.Figure
        Top row: whole slides; bottom row: the ROI.
    """
    models = list(views)
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
    row_label(axes[0, 0], f"{pair_id} ({first['material']}, WSI)")
    row_label(axes[1, 0], f"{roi_size} x {roi_size} px ROI")
    return fig


def plot_he_history(histories: pd.DataFrame) -> Figure:
    """Total generator loss per epoch of each H&E model.

    Parameters
    ----------
    histories : DataFrame
        The models' ``history.csv`` rows with a ``model`` column (``epoch``, ``total``).

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> h = pd.DataFrame({"model": ["pix2pix"] * 2, "epoch": [1, 2], "total": [3.0, 2.0]})
    >>> plot_he_history(h).axes[0].get_ylabel()
    'generator loss (total)'
    """
    fig, ax = plt.subplots(figsize=(5, 3), constrained_layout=True)
    for model, rows in histories.groupby("model", sort=False):
        ax.plot(rows["epoch"], rows["total"], "o-", label=MODEL_LABELS.get(model, model))
    ax.set_xlabel("epoch")
    ax.set_ylabel("generator loss (total)")
    ax.legend(fontsize=8, frameon=False)
    return fig


def plot_he_metrics(per_patch: pd.DataFrame, models: Sequence[str]) -> Figure:
    """Box plots of SSIM (left) and PSNR (right) per model over the given patches.

    Parameters
    ----------
    per_patch : DataFrame
        ``model``, ``ssim``, ``psnr`` per patch (:func:`vstain.stages.he.comparison_patches`).
    models : sequence of str
        The boxes, in order.

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> t = pd.DataFrame({"model": ["pix2pix"] * 3, "ssim": [0.1, 0.2, 0.3], "psnr": [9.0, 10.0, 11.0]})
    >>> [ax.get_ylabel() for ax in plot_he_metrics(t, ["pix2pix"]).axes]
    ['SSIM', 'PSNR (dB)']
    """
    fig, axes = plt.subplots(1, 2, figsize=(7, 3), constrained_layout=True)
    for ax, metric in zip(axes, ("ssim", "psnr")):
        ax.boxplot([per_patch.loc[per_patch["model"] == m, metric] for m in models])
        ax.set_xticks(range(1, len(models) + 1), [MODEL_LABELS.get(m, m) for m in models], fontsize=7)
        ax.set_ylabel(metric.upper() + (" (dB)" if metric == "psnr" else ""))
    return fig
