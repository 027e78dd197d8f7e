"""Figures of the misalignment sweep (chapter 11): scores against strength, the claim's difference, example slides.

Each function draws the tables of :mod:`vstain.reports.sweep` (or the arrays of
:func:`vstain.reports.sweep.sweep_examples`) and returns the figure; nothing is computed here.

Examples
--------
>>> import matplotlib
>>> matplotlib.use("Agg")
>>> import pandas as pd
>>> t = pd.DataFrame([{"strength": s, "model": m, "role": r, "metric": "ssim", "estimate": 0.5, "low": 0.4,
...                    "high": 0.6} for s in (0.0, 1.0) for m in ("a", "b") for r in ("section", "twin")])
>>> len(plot_scores_by_strength(t, "ssim", ["a", "b"]).axes)
2
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from vstain.figures.plotting import ct_display_range, image_grid, row_label, show_image
from vstain.sweep import TARGETS, arm_label, level_name

TARGET_TITLES = {"section": "against the prepared section\n(the paper's protocol)",
                 "twin": "against the aligned twin\n(the truth a user wants)"}
METRIC_TITLES = {"ssim": "SSIM (higher is better)", "psnr": "PSNR in dB (higher is better)",
                 "lpips": "LPIPS (lower is better)"}


def plot_scores_by_strength(intervals: pd.DataFrame, metric: str, arms: Sequence[str]) -> Figure:
    """Each arm's median score against misalignment strength with its 95 % interval, one panel per target."""
    fig, axes = plt.subplots(1, len(TARGETS), figsize=(5.0 * len(TARGETS), 3.4), sharey=True, constrained_layout=True)
    offsets = np.linspace(-0.06, 0.06, max(len(arms), 1)) if len(arms) > 1 else [0.0]
    for ax, target in zip(np.atleast_1d(axes), TARGETS):
        for arm, offset in zip(arms, offsets):
            rows = intervals[(intervals["model"] == arm) & (intervals["role"] == target)
                             & (intervals["metric"] == metric)].sort_values("strength")
            if rows.empty:
                continue
            x = rows["strength"].to_numpy(float) + offset
            y = rows["estimate"].to_numpy(float)
            err = np.vstack([y - rows["low"].to_numpy(float), rows["high"].to_numpy(float) - y])
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=arm_label(arm))
        ax.set_title(TARGET_TITLES[target], fontsize=9)
        ax.set_xlabel("misalignment strength")
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel(METRIC_TITLES.get(metric, metric))
    np.atleast_1d(axes)[0].legend(fontsize=8)
    return fig


def plot_claim_difference(verdicts: Mapping[str, pd.DataFrame], metric: str, model_a: str, model_b: str) -> Figure:
    """The paired difference ``model_a - model_b`` against strength with its interval, per target.

    ``verdicts`` maps a target to :func:`vstain.reports.sweep.claim_verdicts`; a filled marker is a strength where
    the book's rule separates the two (interval and paired test), an open one where it does not.
    """
    fig, ax = plt.subplots(figsize=(6.0, 3.4), constrained_layout=True)
    for (target, table), offset in zip(verdicts.items(), (-0.04, 0.04)):
        if table.empty:
            continue
        x = table["strength"].to_numpy(float) + offset
        y = table["difference"].to_numpy(float)
        err = np.vstack([y - table["low"].to_numpy(float), table["high"].to_numpy(float) - y])
        line = ax.errorbar(x, y, yerr=err, capsize=3, label=TARGET_TITLES[target].replace("\n", " "), ls="-",
                           marker="none")
        colour = line[0].get_color()
        separated = table["winner"].astype(str).str.len().to_numpy() > 0
        ax.scatter(x[separated], y[separated], color=colour, zorder=3)
        ax.scatter(x[~separated], y[~separated], facecolor="white", edgecolor=colour, zorder=3)
    ax.axhline(0.0, color="black", lw=0.8)
    ax.set_xlabel("misalignment strength")
    ax.set_ylabel(f"{arm_label(model_a)} - {arm_label(model_b)}\n{metric.upper()}")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def show_examples(examples: Mapping[float, Mapping[str, Any]], arms: Sequence[str]) -> Figure:
    """One test slide at every strength (rows): CT, prepared section, aligned twin and each arm's stain."""
    columns = ["CT", "section as prepared", "aligned twin"] + [arm_label(a) for a in arms]
    fig, axes = image_grid(len(examples), len(columns), panel_size=2.1)
    for row, (strength, example) in enumerate(sorted(examples.items())):
        vmin, vmax = ct_display_range(example["ct"], example["mask"])
        images = [example["ct"], example["section"], example["twin"]] + [example["stains"].get(a) for a in arms]
        for col, (image, title) in enumerate(zip(images, columns)):
            ax = axes[row, col]
            if image is None:
                ax.set_axis_off()
                continue
            show_image(ax, image, title=title if row == 0 else None, vmin=vmin, vmax=vmax)
        row_label(axes[row, 0], f"strength {level_name(strength)}")
    return fig
