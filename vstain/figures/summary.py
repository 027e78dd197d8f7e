"""Figures and number formatting of the results chapter: registration errors, Table 1 beside the paper.

Examples
--------
>>> format_value(0.6123), format_value(float("nan")), format_value(3)
('0.61', 'n/a', '3')
"""

from __future__ import annotations

import math
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from vstain.vocabulary import MODEL_LABELS


def format_value(value: Any, digits: int = 2) -> str:
    """A number for prose: fixed digits, ``n/a`` for NaN or None."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def plot_registration_errors(table: pd.DataFrame) -> Figure:
    """Registration error per registered pair against the phantom's true plane, one colour per stain.

    Parameters
    ----------
    table : DataFrame
        The registration table (:func:`vstain.stages.register.registration_table`): ``pair_id``,
        ``stain``, ``status``, ``angle_error_deg``, ``tre_median_px``; failed pairs are left out.

    Returns
    -------
    matplotlib.figure.Figure
        Plane angle error (left) and median target registration error in CT pixels (right).

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> t = pd.DataFrame({"pair_id": ["a", "b"], "stain": ["he", "he"], "status": ["ok", "failed: x"],
    ...                   "angle_error_deg": [0.5, 9.0], "tre_median_px": [1.0, 8.0]})
    >>> [ax.get_ylabel() for ax in plot_registration_errors(t).axes]
    ['plane angle error (deg)', 'median TRE (CT px)']
    """
    fig, axes = plt.subplots(1, 2, figsize=(9, 3))
    ok = table[table.status == "ok"]
    for ax, column, label in zip(axes, ("angle_error_deg", "tre_median_px"),
                                 ("plane angle error (deg)", "median TRE (CT px)")):
        for stain, group in ok.groupby("stain"):
            ax.scatter(group["pair_id"], group[column], label=stain, s=18)
        ax.set_ylabel(label)
        ax.tick_params(axis="x", labelrotation=90, labelsize=6)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_table1_beside_paper(compared: pd.DataFrame, role: str = "test") -> Figure:
    """Bar charts of SSIM, LPIPS and PSNR per model on one split, ours beside the paper's.

    ``compared`` is :func:`vstain.reports.table1.compare_with_paper`'s output (a row without a paper value, such as
    the CT colour lookup, has no grey bar). Returns the figure.
    """
    rows = compared[compared["role"] == role].reset_index(drop=True)
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    x = np.arange(len(rows))
    labels = [MODEL_LABELS.get(m, m).replace(" (our model)", "").replace(" + inv. CT input", "\n+ inv. CT")
              for m in rows["model"]]
    for ax, metric in zip(axes, ("ssim", "lpips", "psnr")):
        ax.bar(x - 0.2, rows[metric], width=0.4, label="ours (phantom)", color="#4c72b0")
        ax.bar(x + 0.2, rows[f"{metric}_paper"], width=0.4, label="paper", color="#c9c9c9", edgecolor="#666666")
        if rows[metric].isna().all():
            ax.text(0.5, 0.5, "not measured", transform=ax.transAxes, ha="center", color="#aa3333")
        ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=8)
        ax.set_title(f"{metric.upper()} ({role})" + (" [dB]" if metric == "psnr" else ""))
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig
