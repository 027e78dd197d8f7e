"""Chapter 01's tables: registration accuracy per case type, measured against the synthetic dataset's truth.

The phantom draws sections as real ones come: turned on the slide (``rotated``), face down
(``mirrored``), tilted (``tilted``), cut with the normal along another volume axis (``other axis``).
:func:`case_flags` says which types a pair is from its ground truth; :func:`registration_cases` adds
them to the registration table; :func:`case_summary` gives per type the pairs registered and flagged,
the median angle and TRE against the targets, and the wrong fits caught and missed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["CASE_TYPES", "case_flags", "case_summary", "registration_cases"]


#: An in-plane rotation further than this from upright (either way) makes a pair "rotated".
ROTATED_DEG = 20.0
#: A true plane tilted more than this (half the phantom's 15 degree range) makes a pair "tilted".
TILTED_DEG = 7.5
#: The case types of chapter 01 and ``benchmarks/registration_speed.py``; a pair may be of several.
CASE_TYPES = ("rotated", "mirrored", "tilted", "other axis")


def case_flags(details: dict) -> dict[str, bool]:
    """Which case types a phantom pair is, from its ground truth ``details`` (``truth.json``).

    Examples
    --------
    >>> case_flags({"affine": {"rotation_deg": 95.0, "mirrored": False}, "tilt_deg": 12.0, "normal_axis": "z"})
    {'rotated': True, 'mirrored': False, 'tilted': True, 'other axis': False}
    """
    affine = details.get("affine", {})
    rotation = float(affine.get("rotation_deg", 0.0))
    return {"rotated": abs((rotation + 180.0) % 360.0 - 180.0) > ROTATED_DEG,
            "mirrored": bool(affine.get("mirrored", False)),
            "tilted": float(details.get("tilt_deg", 0.0)) > TILTED_DEG,
            "other axis": details.get("normal_axis", "z") != "z"}


def registration_cases(table: pd.DataFrame, dataset_dir: str | Path) -> pd.DataFrame:
    """The registration table of a synthetic dataset with each pair's case types from its ground truth.

    Adds one boolean column per :data:`CASE_TYPES` (:func:`case_flags`), ``true_rotation_deg``,
    ``tilt_deg`` (the true plane's tilt) and ``true_normal_axis``.

    Parameters
    ----------
    table : DataFrame
        :func:`vstain.stages.register.registration_table`.
    dataset_dir : path
        The generated dataset (``<pair>/truth.json`` per pair).
    """
    rows = []
    for row in table.to_dict("records"):
        truth_path = Path(dataset_dir) / str(row["pair_id"]) / "truth.json"
        details = json.loads(truth_path.read_text()).get("details", {}) if truth_path.is_file() else {}
        rows.append({**row, **case_flags(details),
                     "true_rotation_deg": float(details.get("affine", {}).get("rotation_deg", np.nan)),
                     "tilt_deg": details.get("tilt_deg", np.nan), "true_normal_axis": details.get("normal_axis", "z")})
    return pd.DataFrame(rows)


def case_summary(cases: pd.DataFrame, *, wrong_px: float = 5.0) -> pd.DataFrame:
    """Accuracy per case type against the targets: pairs, registered, flagged, angle and TRE, silent failures.

    One row for every pair (``all``) and one per :data:`CASE_TYPES` (a pair counts in each of its
    types). Medians and the 95th percentile are over the registered pairs' median TREs; ``flagged,
    TRE > 5 px`` counts flagged pairs whose worst TRE exceeds ``wrong_px`` (wrong fits caught),
    ``wrong, not flagged`` registered ones (silent failures, the target is zero).

    Examples
    --------
    >>> t = pd.DataFrame({"rotated": [True, True], "mirrored": [False, False], "tilted": [False, True],
    ...                   "other axis": [False, False], "status": ["ok", "uncertain: x"],
    ...                   "angle_error_deg": [0.5, 9.0], "tre_median_px": [0.3, 20.0], "tre_max_px": [0.9, 40.0],
    ...                   "seconds": [10.0, 12.0]})
    >>> case_summary(t).set_index("case").loc["rotated", ["pairs", "registered", "flagged"]].tolist()
    [2, 1, 1]
    """
    out = []
    for case in ("all",) + CASE_TYPES:
        part = cases if case == "all" else cases[cases[case].astype(bool)]
        if not len(part):
            continue
        ok = part[part["status"] == "ok"]
        flagged = part[part["status"] != "ok"]
        tre = ok["tre_median_px"].astype(float)
        out.append({"case": case, "pairs": len(part), "registered": len(ok), "flagged": len(flagged),
                    "median angle error (deg)": float(ok["angle_error_deg"].median()) if len(ok) else np.nan,
                    "median TRE (px)": float(tre.median()) if len(ok) else np.nan,
                    "95th percentile TRE (px)": float(np.percentile(tre, 95)) if len(ok) else np.nan,
                    "worst TRE (px)": float(ok["tre_max_px"].max()) if len(ok) else np.nan,
                    "flagged, TRE > 5 px": int((flagged["tre_max_px"].astype(float) > wrong_px).sum()),
                    "wrong, not flagged": int((ok["tre_max_px"].astype(float) > wrong_px).sum()),
                    "median seconds": float(part["seconds"].median())})
    return pd.DataFrame(out)
