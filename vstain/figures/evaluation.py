"""Figures of the inference, evaluation and FRC chapters (04-06): whole slides, ROIs, metric and resolution plots.

Each function draws what it is given (registered pairs, inference outputs, tables) and
returns the figure; nothing is computed here beyond what the drawing needs.

Examples
--------
>>> import matplotlib
>>> matplotlib.use("Agg")
>>> import pandas as pd
>>> table = pd.DataFrame({"role": ["train", "test"], "ct_px": [5.0, 6.0], "histology_px": [3.0, 3.5],
...                       "generated_px": [4.0, 4.5], "generated_over_histology": [1.3, 1.3],
...                       "generated_over_ct": [0.8, 0.75]})
>>> len(plot_resolution_boxplots(table).axes)
2
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from vstain.figures.plotting import (add_scale_bar, crop, ct_display_range, draw_roi, image_grid,
                                     intensity_profiles, legend_real_generated, order_by_material, rgb_histograms,
                                     row_label, show_image)
from vstain.frc import FRCResult
from vstain.masks import apply_mask
from vstain.pairs import RegisteredPair
from vstain.vocabulary import MODEL_LABELS, ROLES


# --------------------------------------------------------------------------- chapter 04: whole slides


def plot_masked_slide(pair: RegisteredPair, outputs: dict[str, Any]) -> Figure:
    """Figure 4b: real CT, generated histology, mask, real histology and (CycleGANs) generated CT, masked.

    Parameters
    ----------
    pair : RegisteredPair
    outputs : dict
        :func:`vstain.stages.infer.read_inference` of the pair: the masked outputs and the
        fill values of its ``record``.
    """
    record = outputs["record"]
    panels = [
        ("real CT (masked)", apply_mask(pair.ct, pair.mask, record["ct_fill"])),
        ("generated histology", outputs["histology_masked"]),
        ("correspondence mask", pair.mask),
        ("real histology (masked)", apply_mask(pair.histology, pair.mask, record["histology_fill"])),
    ]
    if "ct_masked" in outputs:
        panels.append(("generated CT", outputs["ct_masked"]))
    fig, axes = image_grid(1, len(panels), panel_size=2.6)
    for ax, (title, image) in zip(axes[0], panels):
        show_image(ax, image, pixel_size_um=pair.pixel_size_um, title=title)
    return fig


#: Slides per split in the paper's Figure S1 (training, validation, testing).
PAPER_S1_SLIDES = {"train": 5, "validation": 5, "test": 3}


def figure_slides(catalogue: pd.DataFrame, counts: Mapping[str, int]) -> dict[str, list[str]]:
    """The slides a figure shows per split: every material before a second slide of one.

    The first slide of each split (in catalogue order) always comes first, so the first sample
    of Figure S1 is the slide of Figure 5, as in the paper; then one slide of each other
    material, then the rest (:func:`vstain.figures.plotting.order_by_material`).

    Parameters
    ----------
    catalogue : DataFrame
        ``pair_id, material, role`` (:func:`vstain.pairs.pair_catalogue`).
    counts : dict
        ``role -> how many`` (e.g. :data:`PAPER_S1_SLIDES`); a split with fewer slides gives
        all it has, a split without any is left out.

    Returns
    -------
    dict
        ``role -> pair ids``, in the order of ``counts``.

    Examples
    --------
    >>> t = pd.DataFrame({"pair_id": ["a", "b", "c", "d"], "material": ["Mg", "Mg", "Ti", "Mg"],
    ...                   "role": ["train", "train", "train", "test"]})
    >>> figure_slides(t, {"train": 2, "validation": 5, "test": 3})
    {'train': ['a', 'c'], 'test': ['d']}
    """
    chosen = {}
    for role, n in counts.items():
        rows = catalogue[catalogue.role == role]
        if len(rows):
            chosen[role] = order_by_material(dict(zip(rows.pair_id, rows.material)), n)
    return chosen


def plot_unmasked_slides(pairs: Sequence[RegisteredPair], outputs: Sequence[Mapping[str, Any]]) -> Figure:
    """Figure S1: per pair (column) the real CT, the generated histology, the real histology and
    (CycleGANs) the generated CT, all unmasked: the whole field of view, background included.

    Parameters
    ----------
    pairs : sequence of RegisteredPair
    outputs : sequence of dict
        :func:`vstain.stages.infer.read_inference` of each pair (``histology``, and ``ct`` for
        a model with a reverse generator; the generated-CT row is drawn when every pair has it).

    Returns
    -------
    matplotlib.figure.Figure
        Rows: real CT, generated histology, real histology[, generated CT]; one column per pair.
    """
    if not pairs or len(pairs) != len(outputs):
        raise ValueError(f"need one output per pair and at least one pair, got {len(pairs)} pairs and "
                         f"{len(outputs)} outputs")
    with_ct = all("ct" in out for out in outputs)
    rows = ["real CT", "generated histology", "real histology"] + (["generated CT"] if with_ct else [])
    fig, axes = image_grid(len(rows), len(pairs), panel_size=2.4, squeeze=False)
    for j, (pair, out) in enumerate(zip(pairs, outputs)):
        low, high = ct_display_range(pair.ct, pair.mask)
        panels = [(pair.ct, True), (out["histology"], False), (pair.histology, False)]
        if with_ct:
            panels.append((out["ct"], True))
        for i, (image, grey) in enumerate(panels):
            show_image(axes[i, j], image, pixel_size_um=pair.pixel_size_um, vmin=low if grey else None,
                       vmax=high if grey else None,
                       title=f"Sample {j + 1} = {pair.material}" if i == 0 else None)
    for i, name in enumerate(rows):
        row_label(axes[i, 0], name)
    return fig


def plot_blend_comparison(blends: dict[str, Any]) -> Figure:
    """The mean and window blends of one slide and their difference, the mask outlined.

    ``blends`` is :func:`vstain.stages.infer.compare_blends`'s result.
    """
    pair = blends["pair"]
    difference = np.abs(blends["mean"].astype(float) - blends["window"].astype(float)).mean(axis=-1)
    fig, axes = image_grid(1, 3, panel_size=3.2)
    show_image(axes[0, 0], blends["mean"], pixel_size_um=pair.pixel_size_um, title="mean blend (paper)")
    show_image(axes[0, 1], blends["window"], pixel_size_um=pair.pixel_size_um, title="window blend")
    show_image(axes[0, 2], difference, pixel_size_um=pair.pixel_size_um, title="|mean - window| (grey levels)",
               cmap="magma", vmin=0, vmax=max(1.0, float(np.percentile(difference, 99))))
    axes[0, 2].contour(pair.mask, levels=[0.5], colors="cyan", linewidths=0.6)
    return fig


# --------------------------------------------------------------------------- chapter 05: evaluation


def plot_rois(examples: Sequence[tuple[str, RegisteredPair, dict[str, Any], tuple[int, int]]],
              roi_size: int) -> Figure:
    """Figure 5: per split a CT row and a histology row, each real and generated, with an ROI.

    Each row shows the real slide and the generated one (masked) with the ROI (orange box, the
    arrow marks the profile line), the ROI real beside generated, their intensity histograms
    (solid real, dashed generated) and the intensity profile along the arrow. The CT row is the
    reverse generator's (histology to CT) output beside the real CT; a model without one
    (Pix2Pix) has the histology row only. Both CT images share the real CT's grey window.

    Parameters
    ----------
    examples : sequence of (role, pair, outputs, (y, x))
        ``outputs`` from :func:`vstain.stages.infer.read_inference` (``histology``,
        ``histology_masked``; ``ct``, ``ct_masked`` when there is a reverse generator);
        ``(y, x)`` the ROI origin.
    roi_size : int
        ROI side in pixels.

    Returns
    -------
    matplotlib.figure.Figure
        Five columns; two rows per example (CT, histology), or one without a generated CT.
    """
    rows = []
    for role, pair, generated, (y, x) in examples:
        label = f"{role}: {pair.pair_id} ({pair.material})"
        if "ct" in generated:
            rows.append((label, "CT", pair, pair.ct, generated["ct"], generated["ct_masked"], (y, x)))
        rows.append((label, "histology", pair, pair.histology, generated["histology"],
                     generated["histology_masked"], (y, x)))
    fig, axes = plt.subplots(len(rows), 5, figsize=(14.5, 2.9 * len(rows)), squeeze=False, constrained_layout=True)
    for r, (label, domain, pair, real, generated, generated_masked, (y, x)) in enumerate(rows):
        grey = domain == "CT"
        low, high = ct_display_range(pair.ct, pair.mask) if grey else (None, None)
        real_roi, generated_roi = crop(real, y, x, roi_size), crop(generated, y, x, roi_size)
        show_image(axes[r, 0], real, pixel_size_um=pair.pixel_size_um, vmin=low, vmax=high, title=f"real {domain}")
        show_image(axes[r, 1], generated_masked, pixel_size_um=pair.pixel_size_um, vmin=low, vmax=high,
                   title=f"generated {domain}")
        for ax in axes[r, :2]:
            draw_roi(ax, y, x, roi_size)
        show_image(axes[r, 2], np.concatenate([real_roi, generated_roi], axis=1), vmin=low, vmax=high,
                   title=f"ROI {domain}: real | generated")
        rgb_histograms(axes[r, 3], real_roi, generated_roi)
        intensity_profiles(axes[r, 4], real_roi, generated_roi, pixel_size_um=pair.pixel_size_um)
        row_label(axes[r, 0], label)
    legend_real_generated(axes[0, 3])
    return fig


def plot_models_side_by_side(examples: Sequence[tuple[str, RegisteredPair, tuple[int, int], dict[str, np.ndarray]]],
                             roi_size: int) -> Figure:
    """Figure 6: per split the real CT, the real histology and each model's masked output, whole and ROI.

    Parameters
    ----------
    examples : sequence of (role, pair, (y, x), {model: generated histology (masked)})
    roi_size : int
    """
    n_columns = 2 + max(len(generated) for *_, generated in examples)
    fig, axes = plt.subplots(2 * len(examples), n_columns, figsize=(2.5 * n_columns, 5.2 * len(examples)),
                             squeeze=False, constrained_layout=True)
    for k, (role, pair, (y, x), generated) in enumerate(examples):
        columns = [("real CT", pair.ct), ("real histology", pair.histology)]
        columns += [(MODEL_LABELS.get(name, name), image) for name, image in generated.items()]
        for j, (title, image) in enumerate(columns):
            show_image(axes[2 * k, j], image, pixel_size_um=pair.pixel_size_um,
                       title=f"{role}: {title}" if j == 0 else title)
            draw_roi(axes[2 * k, j], y, x, roi_size, arrow=False)
            show_image(axes[2 * k + 1, j], crop(image, y, x, roi_size), title="ROI")
    return fig


def plot_metric_distributions(per_patch: pd.DataFrame) -> Figure:
    """Figure 7: box plots of SSIM, PSNR and LPIPS per split and model over the evaluated patches.

    ``per_patch`` is ``metrics_per_patch.csv`` of the evaluation stage; a metric without
    values (LPIPS without its weights) is marked unavailable.
    """
    order = [m for m in MODEL_LABELS if m in set(per_patch.model)]
    long = per_patch.melt(id_vars=["model", "role"], value_vars=["ssim", "psnr", "lpips"], var_name="metric")
    long["model"] = long["model"].map(lambda m: MODEL_LABELS.get(m, m))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4), constrained_layout=True)
    for ax, metric in zip(axes, ("ssim", "psnr", "lpips")):
        data = long[(long.metric == metric) & long.value.notna() & np.isfinite(long.value)]
        if data.empty:
            ax.text(0.5, 0.5, f"{metric.upper()} unavailable", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
            continue
        sns.boxplot(data=data, x="role", y="value", hue="model", order=list(ROLES),
                    hue_order=[MODEL_LABELS[m] for m in order], ax=ax, fliersize=1.5, linewidth=0.8)
        ax.set_title(metric.upper() + (" (dB)" if metric == "psnr" else ""))
        ax.set_xlabel("")
        ax.set_ylabel("")
        if ax is not axes[0]:
            ax.get_legend().remove()
    axes[0].legend(fontsize=7, loc="best")
    return fig


# --------------------------------------------------------------------------- chapter 06: FRC


def _frc_axes(ax: Any, results: dict[str, FRCResult]) -> None:
    for label, result in results.items():
        ax.plot(result.curve.frequency[1:], result.curve.frc[1:], label=f"{label}: {result.describe()}")
    ax.axhline(1 / 7, color="k", ls="--", lw=0.8, label="1/7")
    ax.set_xlabel("spatial frequency (cycles / pixel)")
    ax.set_ylabel("FRC")
    ax.legend(fontsize=8)


def plot_patch_frc(patches: dict[str, np.ndarray], results: dict[str, FRCResult], pixel_size_um: float) -> Figure:
    """One patch per image (CT, histology, generated) and their FRC curves with the 1/7 threshold.

    Parameters
    ----------
    patches : dict
        ``name -> patch`` (greyscale or RGB), drawn in this order.
    results : dict
        ``name -> FRCResult`` of each patch (:func:`vstain.frc.single_image_frc`).
    pixel_size_um : float
        For the scale bar of the first patch.
    """
    fig, axes = plt.subplots(1, len(patches) + 1, figsize=(14, 3.4))
    for ax, (name, patch) in zip(axes, patches.items()):
        ax.imshow(patch, cmap="gray" if patch.ndim == 2 else None)
        ax.set_title(name)
        ax.axis("off")
    _frc_axes(axes[-1], results)
    add_scale_bar(axes[0], pixel_size_um, length_um=50)
    return fig


def plot_frc_curves(results: dict[str, FRCResult]) -> Figure:
    """FRC curves of labelled results on one plot with the 1/7 threshold (e.g. before and after a shift)."""
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    _frc_axes(ax, results)
    return fig


def plot_resolution_boxplots(table: pd.DataFrame) -> Figure:
    """Figure S5: (a) absolute FRC resolution per split and image, (b) the generated histology's relative one.

    ``table`` holds the per-patch rows of :func:`vstain.stages.frc.measure_resolution`; patches
    without a crossing (NaN) are left out.
    """
    long = table.melt(id_vars=["role"], value_vars=["ct_px", "histology_px", "generated_px"],
                      var_name="image", value_name="resolution_px").dropna()
    ratios = table.melt(id_vars=["role"], value_vars=["generated_over_histology", "generated_over_ct"],
                        var_name="ratio", value_name="relative").dropna()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    if len(long):
        sns.boxplot(data=long, x="role", y="resolution_px", hue="image", ax=axes[0])
    if len(ratios):
        sns.boxplot(data=ratios, x="role", y="relative", hue="ratio", ax=axes[1])
    axes[1].axhline(1.0, color="k", lw=0.8, ls="--")
    axes[0].set_title("(a) absolute resolution (pixels)")
    axes[1].set_title("(b) relative resolution of the generated histology")
    return fig
