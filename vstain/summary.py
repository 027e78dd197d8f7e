"""The study's headline numbers, gathered from the artefacts every stage wrote.

:func:`study_summary` reads ``results/<profile>/`` (nothing is recomputed) and returns
one flat dict of the figures the results chapter quotes: registration accuracy, Table 1
for the modified CycleGAN and the raw-CT baseline, resolution ratios and the 3D
stripe/fidelity figures. A stage that has not run yet contributes NaN and is listed in
``missing``.

Examples
--------
>>> import tempfile
>>> summary = study_summary("smoke", root=tempfile.mkdtemp())
>>> sorted(summary["missing"])
['evaluation', 'frc', 'registered', 'volume']
>>> import math; math.isnan(summary["registration_median_tre_px"])
True
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from vstain.layout import stage_dir

NAN = float("nan")


def _read(path: Path) -> pd.DataFrame | None:
    return pd.read_csv(path) if path.is_file() else None


def _registration(root: Any, profile: str) -> dict[str, Any]:
    table = _read(stage_dir(profile, "registered", root) / "registration.csv")
    if table is None:
        return {}
    ok = table[table["status"] == "ok"]
    return {
        "registration_pairs": int(len(table)),
        "registration_failed": int((table["status"] != "ok").sum()),
        "registration_failed_ids": ", ".join(table.loc[table["status"] != "ok", "pair_id"]) or "none",
        "registration_median_angle_deg": float(ok["angle_error_deg"].median()),
        "registration_median_tre_px": float(ok["tre_median_px"].median()),
        "registration_worst_median_tre_px": float(ok["tre_median_px"].max()),
        "registration_median_seconds": float(ok["seconds"].median()),
    }


def _evaluation(root: Any, profile: str) -> dict[str, Any]:
    table = _read(stage_dir(profile, "evaluation", root) / "table1.csv")
    if table is None:
        return {}
    out: dict[str, Any] = {}
    for model in ("mod_cyclegan", "raw_ct"):
        for role in ("train", "validation", "test"):
            row = table[(table["model"] == model) & (table["role"] == role)]
            for metric in ("ssim", "psnr", "lpips"):
                value = float(row[metric].iloc[0]) if len(row) else NAN
                out[f"{model}_{role}_{metric}"] = value
    out["lpips_available"] = bool(table["lpips"].notna().any())
    return out


def _frc(root: Any, profile: str, model: str, fold: int) -> dict[str, Any]:
    from vstain.frc import summarise_resolution

    frame = _read(stage_dir(profile, "frc", root) / model / f"fold{fold}" / "resolution.csv")
    if frame is None:
        return {}
    summary = summarise_resolution(frame)
    out = {}
    for role in summary.index:
        for column in ("ct_px", "histology_px", "generated_px", "generated_over_histology", "generated_over_ct"):
            if column in summary.columns:
                out[f"frc_{role}_{column}"] = float(summary.loc[role, column])
    return out


def _volume(root: Any, profile: str) -> dict[str, Any]:
    metrics = _read(stage_dir(profile, "volume", root) / "metrics.csv")
    if metrics is None:
        return {}
    out = {}
    for _, row in metrics.iterrows():
        key = "truth" if row["variant"] == "truth" else ("fused" if "fused" in row["variant"] else "single")
        for column in ("stripe_z", "stripe_y", "stripe_x", "ssim", "psnr",
                       "stripe_z_sample", "stripe_y_sample", "stripe_x_sample", "ssim_sample", "psnr_sample"):
            if column in metrics.columns:
                out[f"volume_{key}_{column}"] = float(row[column])
    return out


def study_summary(profile: Any, root: str | Path | None = None) -> dict[str, Any]:
    """Headline numbers of a profile's run, read from its artefacts.

    Parameters
    ----------
    profile : Profile or str
        The profile (or its name) whose ``results/<profile>/`` is read; resolution
        figures are those of ``mod_cyclegan`` on the profile's first fold.
    root : path, optional
        Results root (default :func:`vstain.layout.results_root`).

    Returns
    -------
    dict
        Flat ``name -> value``; values of stages that have not run are NaN and the
        stages are listed under ``"missing"``.
    """
    from vstain.config import load_profile

    profile = load_profile(profile) if isinstance(profile, (str, Path)) else profile
    name = profile.name
    fold = profile.training.folds[0]
    parts = {"registered": _registration, "evaluation": _evaluation,
             "frc": lambda r, n: _frc(r, n, "mod_cyclegan", fold), "volume": _volume}
    summary: dict[str, Any] = {"missing": []}
    for stage, reader in parts.items():
        values = reader(root, name)
        if not values:
            summary["missing"].append(stage)
        summary.update(values)
    for key in ("registration_median_tre_px", "registration_median_angle_deg",
                "mod_cyclegan_validation_ssim", "raw_ct_validation_ssim"):
        summary.setdefault(key, NAN)
    return summary


def format_value(value: Any, digits: int = 2) -> str:
    """A number for prose: fixed digits, ``n/a`` for NaN or None."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def plot_table1_beside_paper(compared: pd.DataFrame, role: str = "test"):
    """Bar charts of SSIM, LPIPS and PSNR per model on one split, ours beside the paper's.

    ``compared`` is :func:`vstain.metrics.compare_with_paper`'s output. Returns the figure.
    """
    import matplotlib.pyplot as plt
    import numpy as np

    from vstain.metrics import MODEL_LABELS

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
