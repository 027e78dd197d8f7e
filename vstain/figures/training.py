"""Figures of the training chapter: loss curves, Fig. 4a-style patch panels, the Fig. 3 schematic.

Examples
--------
>>> import matplotlib
>>> matplotlib.use("Agg")
>>> fig = draw_modified_cyclegan()
>>> len(fig.axes)
1
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

COMPONENT_LABELS = {
    "gan": "adversarial (Eq. 2 / 8)", "cyc": "cycle (Eq. 1)", "id": "identity (Eq. 3)",
    "px": "pixelwise (Eq. 5)", "gs": "greyscale (Eq. 6)", "l1": "l1 (Eq. 9)", "total": "total",
    "D_X": "D_X", "D_Y": "D_Y", "D_XY": "D (conditional)",
}


def plot_loss_history(history: pd.DataFrame | str | Path, title: str = "") -> Figure:
    """Per-epoch loss curves: generator components (left), total and discriminators (right).

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> h = pd.DataFrame({"epoch": [1, 2], "gan": [1.0, 0.9], "l1": [0.3, 0.2], "total": [7.0, 5.0],
    ...                   "D_XY": [0.3, 0.25], "seconds": [1.0, 1.0]})
    >>> len(plot_loss_history(h).axes)  # components, total, discriminators (twin axis)
    3
    """
    if not isinstance(history, pd.DataFrame):
        history = pd.read_csv(history)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.4))
    for column in [c for c in ("gan", "cyc", "id", "px", "gs", "l1") if c in history]:
        left.plot(history["epoch"], history[column], marker="o", ms=3, label=COMPONENT_LABELS[column])
    left.set(xlabel="epoch", ylabel="loss (epoch mean)", title="generator components")
    left.legend(fontsize=8)
    right.plot(history["epoch"], history["total"], marker="o", ms=3, color="k", label="generator total")
    right.set(xlabel="epoch", ylabel="generator total")
    twin = right.twinx()
    for column in [c for c in ("D_X", "D_Y", "D_XY") if c in history]:
        twin.plot(history["epoch"], history[column], ls="--", label=COMPONENT_LABELS[column])
    twin.set_ylabel("discriminator loss")
    handles = right.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    right.legend(handles, [h.get_label() for h in handles], fontsize=8)
    right.set_title("total and discriminators")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_patch_panels(panels: dict[str, np.ndarray], title: str = "") -> Figure:
    """Fig. 4a: rows of real CT, generated histology, mask, real histology, generated CT.

    ``panels`` as returned by :func:`vstain.train.patch_panels`.
    """
    columns = [("real_ct", "real CT"), ("generated_histology", "generated histology"), ("mask", "mask"),
               ("real_histology", "real histology"), ("generated_ct", "generated CT")]
    columns = [(k, t) for k, t in columns if k in panels]
    n = len(panels["real_ct"])
    fig, axes = plt.subplots(n, len(columns), figsize=(1.9 * len(columns), 1.9 * n), squeeze=False)
    for row in range(n):
        for col, (key, label) in enumerate(columns):
            ax = axes[row, col]
            image = panels[key][row]
            ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=1 if image.ndim == 2 else None)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(label, fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _box(ax: Any, xy: tuple[float, float], text: str, colour: str, width: float = 1.5, height: float = 0.7) -> None:
    x, y = xy
    ax.add_patch(FancyBboxPatch((x - width / 2, y - height / 2), width, height, boxstyle="round,pad=0.05",
                                fc=colour, ec="k", lw=1))
    ax.text(x, y, text, ha="center", va="center", fontsize=9)


def _arrow(ax: Any, start: tuple[float, float], end: tuple[float, float], colour: str = "k", text: str = "",
           rad: float = 0.0, offset: tuple[float, float] = (0, 0.15)) -> None:
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=12, color=colour, lw=1.3,
                                 connectionstyle=f"arc3,rad={rad}"))
    if text:
        ax.text((start[0] + end[0]) / 2 + offset[0], (start[1] + end[1]) / 2 + offset[1], text, ha="center",
                fontsize=8, color=colour)


def draw_modified_cyclegan(figsize: tuple[float, float] = (11.0, 5.0)) -> Figure:
    """Fig. 3: the modified CycleGAN for paired data and where each loss term of Eq. 7 acts.

    Two generators map CT (X) to histology (Y) and back; discriminators D_Y and D_X
    judge each domain (Eq. 2); the cycle (Eq. 1) and identity (Eq. 3) terms of the
    standard CycleGAN are joined by the pixelwise supervision (Eq. 5, red), which
    compares each generated image with its registered partner, and the greyscale term
    (Eq. 6) on the generated CT. Every l1 term is multiplied by the correspondence mask.
    """
    fig, ax = plt.subplots(figsize=figsize)
    ct, hist, gen = "#d9d9d9", "#c9b3e6", "#bfe3c0"
    _box(ax, (0.8, 3.0), "real CT\nx", ct)
    _box(ax, (3.4, 3.0), "G_XY", gen, 1.0)
    _box(ax, (6.0, 3.0), "generated\nhistology ŷ", hist)
    _box(ax, (8.6, 3.0), "G_YX", gen, 1.0)
    _box(ax, (11.0, 3.0), "reconstructed\nCT x̂", ct)
    _box(ax, (0.8, 0.6), "real histology\ny", hist)
    _box(ax, (3.4, 0.6), "G_YX", gen, 1.0)
    _box(ax, (6.0, 0.6), "generated\nCT x̃", ct)
    _box(ax, (8.6, 0.6), "G_XY", gen, 1.0)
    _box(ax, (11.0, 0.6), "reconstructed\nhistology", hist)
    _box(ax, (6.0, 4.0), "D_Y", "#ffe0b3", 1.0, 0.5)
    _box(ax, (6.0, -0.4), "D_X", "#ffe0b3", 1.0, 0.5)
    for y in (3.0, 0.6):
        _arrow(ax, (1.55, y), (2.9, y))
        _arrow(ax, (3.9, y), (5.25, y))
        _arrow(ax, (6.75, y), (8.1, y))
        _arrow(ax, (9.1, y), (10.25, y))
    _arrow(ax, (6.0, 3.35), (6.0, 3.75), "tab:orange", "L_GAN (Eq. 2)", offset=(1.0, -0.05))
    _arrow(ax, (6.0, 0.25), (6.0, -0.15), "tab:orange", "L_GAN (Eq. 2)", offset=(1.0, -0.05))
    _arrow(ax, (11.0, 3.4), (0.8, 3.4), "tab:blue", "L_cyc (Eq. 1): x̂ vs x", rad=0.25, offset=(-3.0, 1.0))
    _arrow(ax, (11.0, 0.2), (0.8, 0.2), "tab:blue", "L_cyc (Eq. 1)", rad=-0.25, offset=(-3.0, -1.3))
    _arrow(ax, (6.0, 2.6), (1.3, 1.0), "tab:red", "L_px (Eq. 5): ŷ vs y", offset=(0.4, 0.35))
    _arrow(ax, (6.0, 1.0), (1.3, 2.6), "tab:red", "L_px (Eq. 5): x̃ vs x", offset=(0.4, -0.6))
    ax.text(4.6, -0.1, "L_gs (Eq. 6):\nR = G = B", ha="center", fontsize=8, color="tab:purple")
    ax.text(0.0, -1.7, "Also: identity L_id (Eq. 3), ||G_XY(y) - y|| + ||G_YX(x) - x||.  Every l1 term is "
            "multiplied by the sample-correspondence mask.  Eq. 7: L_GAN + 6 L_cyc + 3 L_id + 6 L_px + 1 L_gs.",
            fontsize=8)
    ax.set_xlim(-0.3, 12.2)
    ax.set_ylim(-2.0, 5.4)
    ax.axis("off")
    fig.tight_layout()
    return fig


def plot_validation_medians(medians: pd.DataFrame) -> Figure:
    """Median SSIM and PSNR per model, generated vs real next to raw CT vs real (the baseline).

    ``medians`` is :func:`vstain.train.validation_medians`'s table (indexed by model).

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> medians = pd.DataFrame({"ssim": [0.5], "psnr": [15.0], "ssim_baseline": [0.1], "psnr_baseline": [5.0]},
    ...                        index=pd.Index(["pix2pix"], name="model"))
    >>> len(plot_validation_medians(medians).axes)
    2
    """
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for ax, metric in zip(axes, ("ssim", "psnr")):
        medians[[metric, f"{metric}_baseline"]].plot.bar(ax=ax, rot=20)
        ax.set(ylabel=metric.upper(), xlabel="")
        ax.legend(["generated vs real", "raw CT vs real (baseline)"], fontsize=8)
    fig.tight_layout()
    return fig
