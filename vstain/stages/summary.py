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

from pathlib import Path
from typing import Any

import pandas as pd

from vstain.config import Profile, as_profile
from vstain.frc import summarise_resolution
from vstain.layout import evaluation_dir, frc_dir, registered_dir, volume_dir

NAN = float("nan")


def _read(path: Path) -> pd.DataFrame | None:
    return pd.read_csv(path) if path.is_file() else None


def _registration(root: Any, profile: str) -> dict[str, Any]:
    table = _read(registered_dir(profile, root) / "registration.csv")
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
    table = _read(evaluation_dir(profile, root) / "table1.csv")
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
    frame = _read(frc_dir(profile, model, fold, root) / "resolution.csv")
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
    metrics = _read(volume_dir(profile, root) / "metrics.csv")
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


def study_summary(profile: Profile | str | Path, root: str | Path | None = None) -> dict[str, Any]:
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
    profile = as_profile(profile)
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
