"""Chapter 01's tables: registration accuracy per case type, measured against the synthetic dataset's truth.

The phantom draws sections as real ones come: turned on the slide (``rotated``), face down
(``mirrored``), tilted (``tilted``), cut with the normal along another volume axis (``other axis``),
and, among the registration-only blocks (:mod:`vstain.stages.register_cases`), blocks without a screw
(``screwless``: only the bone's texture orients the section) or with the screw at the section's edge
(``screw at edge``).
:func:`case_flags` says which types a pair is from its ground truth; :func:`registration_cases` adds
them to the registration table; :func:`case_summary` gives per type the pairs registered and flagged,
the median angle and TRE against the targets, and the wrong fits caught and missed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vstain.layout import registration_cases_dir
from vstain.phantom.section import SectionPreparation

__all__ = ["CASE_TYPES", "BLOCK_TYPES", "TARGETS", "block_sentence", "case_flags", "case_summary", "read_blocks",
           "registration_cases", "section_warp_px", "target_sentence", "wrong_tre_px"]


#: An in-plane rotation further than this from upright (either way) makes a pair "rotated".
ROTATED_DEG = 20.0
#: A true plane tilted more than this (half the phantom's 15 degree range) makes a pair "tilted".
TILTED_DEG = 7.5
#: The case types of chapter 01 and ``benchmarks/registration_speed.py``; a pair may be of several.
CASE_TYPES = ("rotated", "mirrored", "tilted", "other axis", "screwless", "screw at edge")


#: A registered fit whose worst TRE exceeds this, beyond half the section's thickness, is wrong (CT px).
WRONG_BEYOND_SECTION_PX = 5.0


def wrong_tre_px(section_thickness_um: float, ct_voxel_um: float) -> float:
    """The worst TRE (CT px) beyond which a fit counts as wrong: 5 px plus half the section's thickness.

    A slide shows its section's whole thickness at once, so a plane anywhere inside the section fits the
    slide as well as its middle, which is what the ground truth records; tilted about the tissue's centre
    within the section, a fit's edge moves by up to half the thickness without being wrong. The check's
    ``registration.max_tilt_error_px`` makes the same allowance.

    Examples
    --------
    >>> wrong_tre_px(0.0, 5.0), wrong_tre_px(40.0, 5.0)
    (5.0, 9.0)
    """
    if ct_voxel_um <= 0 or section_thickness_um < 0:
        raise ValueError(f"need a positive CT voxel size and a non-negative thickness, got {ct_voxel_um}, "
                         f"{section_thickness_um}")
    return WRONG_BEYOND_SECTION_PX + 0.5 * float(section_thickness_um) / float(ct_voxel_um)


def case_flags(details: dict) -> dict[str, bool]:
    """Which case types a phantom pair is, from its ground truth ``details`` (``truth.json``).

    Examples
    --------
    >>> flags = case_flags({"affine": {"rotation_deg": 95.0, "mirrored": False}, "tilt_deg": 12.0,
    ...                     "normal_axis": "z", "implant": "none"})
    >>> [case for case, is_case in flags.items() if is_case]
    ['rotated', 'tilted', 'screwless']
    """
    affine = details.get("affine", {})
    rotation = float(affine.get("rotation_deg", 0.0))
    implant = details.get("implant", "centre")  # blocks drawn before placements existed had it in the centre
    return {"rotated": abs((rotation + 180.0) % 360.0 - 180.0) > ROTATED_DEG,
            "mirrored": bool(affine.get("mirrored", False)),
            "tilted": float(details.get("tilt_deg", 0.0)) > TILTED_DEG,
            "other axis": details.get("normal_axis", "z") != "z",
            "screwless": implant == "none", "screw at edge": implant == "edge"}


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
    wrong`` counts flagged pairs whose worst TRE exceeds ``wrong_px`` (wrong fits caught; see
    :func:`wrong_tre_px`), ``wrong, not flagged`` registered ones (silent failures, the target is zero).

    Examples
    --------
    >>> t = pd.DataFrame({"rotated": [True, True], "mirrored": [False, False], "tilted": [False, True],
    ...                   "other axis": [False, False], "screwless": [False, True], "screw at edge": [False, False],
    ...                   "status": ["ok", "uncertain: x"],
    ...                   "angle_error_deg": [0.5, 9.0], "tre_median_px": [0.3, 20.0], "tre_max_px": [0.9, 40.0],
    ...                   "seconds": [10.0, 12.0]})
    >>> case_summary(t).set_index("case").loc["rotated", ["pairs", "registered", "flagged"]].tolist()
    [2, 1, 1]
    """
    out = []
    for case in ("all",) + CASE_TYPES:
        if case != "all" and case not in cases:
            continue  # a table from before the type existed
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
                    "flagged, wrong": int((flagged["tre_max_px"].astype(float) > wrong_px).sum()),
                    "wrong, not flagged": int((ok["tre_max_px"].astype(float) > wrong_px).sum()),
                    "median seconds": float(part["seconds"].median())})
    return pd.DataFrame(out)


def read_blocks(profile_name: str, root: str | Path | None = None) -> pd.DataFrame:
    """The registration-only blocks' table (``vstain register-cases``) with each block's case types.

    Parameters
    ----------
    profile_name : str
    root : path, optional
        The results root (default: :func:`vstain.layout.results_root`).

    Raises
    ------
    FileNotFoundError
        Naming the missing table and the command that writes it.
    """
    folder = registration_cases_dir(profile_name, root)
    path = folder / "registration.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; `vstain register-cases --profile {profile_name}` writes it")
    return registration_cases(pd.read_csv(path, dtype={"pair_id": str}), folder / "blocks")


#: The case types of the registration-only blocks, and how a sentence names them.
BLOCK_TYPES = {"screwless": "screwless blocks (only the bone's texture orients the section)",
               "screw at edge": "blocks with the screw at the section's edge"}


def block_sentence(cases: pd.DataFrame, *, target_px: float = 1.0, wrong_px: float = 5.0) -> str:
    """What registration did with the registration-only blocks, one clause per block type, from the numbers.

    Parameters
    ----------
    cases : DataFrame
        The blocks' registration table with their case types (:func:`registration_cases`).
    target_px : float
        The median TRE target the sentence compares with (CT px).
    wrong_px : float
        A registered block whose worst TRE exceeds this is a silent failure.

    Examples
    --------
    >>> t = pd.DataFrame({"screwless": [True, True, True], "screw at edge": [False, False, False],
    ...                   "status": ["ok", "ok", "uncertain: x"], "tre_median_px": [0.4, 0.6, 30.0],
    ...                   "tre_max_px": [0.9, 1.2, 60.0], "angle_error_deg": [0.2, 0.3, 10.0],
    ...                   "seconds": [20.0, 21.0, 19.0]})
    >>> print(block_sentence(t))  # doctest: +NORMALIZE_WHITESPACE
    Of 3 screwless blocks (only the bone's texture orients the section), 2 (67 %) were registered,
    median TRE 0.50 px (under the 1 px target), and 1 flagged (1 of them indeed wrong by more than 5 px);
    0 registered wrongly without a flag.
    """
    # the counts are case_summary's rows: one rule for registered, flagged, caught and silent, table and sentence
    summary = case_summary(cases, wrong_px=wrong_px)
    rows = summary.set_index("case") if len(summary) else summary
    clauses = []
    for case, name in BLOCK_TYPES.items():
        if case not in rows.index:
            continue
        row = rows.loc[case]
        pairs, registered = int(row["pairs"]), int(row["registered"])
        clause = f"Of {pairs} {name}, {registered} ({100 * registered / pairs:.0f} %) were registered"
        if registered:
            tre = float(row["median TRE (px)"])
            verdict = "under" if tre < target_px else "not under"
            clause += f", median TRE {tre:.2f} px ({verdict} the {target_px:g} px target)"
        clause += (f", and {int(row['flagged'])} flagged ({int(row['flagged, wrong'])} of them indeed wrong by more "
                   f"than {wrong_px:g} px); {int(row['wrong, not flagged'])} registered wrongly without a flag.")
        clauses.append(clause)
    return " ".join(clauses) if clauses else "No registration-only blocks were drawn (registration_cases: 0)."


#: The registration targets of chapter 01 and ``benchmarks/registration_speed.py``: (figure of
#: :func:`case_summary`, bound, what the figure is called in a sentence); every one is "under the bound"
#: but the silent failures, whose target is "at most".
TARGETS = (("median angle error (deg)", 0.5, "median angle error", "deg"),
           ("median TRE (px)", 1.0, "median TRE", "px"),
           ("95th percentile TRE (px)", 3.0, "95th percentile of the pairs' median TRE", "px"),
           ("wrong, not flagged", 0, "silent failures (registered pairs that are wrong)", ""))


def section_warp_px(dataset_cfg: Any) -> float:
    """RMS (CT px) of the smooth warp a profile's sections carry that no affine removes: the TRE's floor.

    ``dataset.residual_warp_um`` at the profile's ``misalignment_strength`` (as the phantom scales it,
    :meth:`vstain.phantom.section.SectionPreparation.scaled`), over the CT voxel size.

    Examples
    --------
    >>> from vstain.config import load_profile
    >>> round(section_warp_px(load_profile("quick").dataset), 2)
    1.6
    """
    preparation = SectionPreparation.from_profile(dataset_cfg)
    return preparation.scaled("residual_warp_um") / float(dataset_cfg.ct_voxel_um)


def target_sentence(row: pd.Series | dict, *, warp_px: float) -> str:
    """Which registration targets one row of :func:`case_summary` meets and misses, with the figures.

    Parameters
    ----------
    row : Series or dict
        One row of :func:`case_summary` (e.g. ``all``).
    warp_px : float
        The RMS of the section's own deformation that no affine removes (CT px,
        :func:`section_warp_px`): a TRE
        measured against the true affine cannot fall far below it, however right the fit.

    Examples
    --------
    >>> row = {"median angle error (deg)": 0.3, "median TRE (px)": 2.1, "95th percentile TRE (px)": 3.4,
    ...        "wrong, not flagged": 0}
    >>> print(target_sentence(row, warp_px=1.6))  # doctest: +NORMALIZE_WHITESPACE
    The registered pairs meet the targets for median angle error (0.30 deg, under 0.5) and silent failures
    (registered pairs that are wrong) (0, at most 0), and miss those for median TRE (2.10 px, target
    under 1) and 95th percentile of the pairs' median TRE (3.40 px, target under 3). The TRE is measured
    against the true affine, while the sections as prepared carry a warp no affine removes (1.6 CT px RMS
    here): a TRE near or above it says as much about the section as about the fit.
    """
    met, missed = [], []
    for key, bound, name, unit in TARGETS:
        value = float(row[key])
        if key == "wrong, not flagged":
            (met if value <= bound else missed).append(f"{name} ({value:.0f}, at most {bound})")
            continue
        figure = f"{value:.2f} {unit}"
        if value < bound:
            met.append(f"{name} ({figure}, under {bound:g})")
        else:
            missed.append(f"{name} ({figure}, target under {bound:g})")
    def listed(items: list[str]) -> str:
        return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]

    parts = []
    if met:
        parts.append(f"meet the target{'s' if len(met) > 1 else ''} for {listed(met)}")
    if missed:
        parts.append(("miss " + ("those" if len(missed) > 1 else "the one") if met else "miss the targets")
                     + f" for {listed(missed)}")
    sentence = "The registered pairs " + ", and ".join(parts) + "."
    if missed and warp_px > 0:
        sentence += (" The TRE is measured against the true affine, while the sections as prepared carry a warp "
                     f"no affine removes ({warp_px:.1f} CT px RMS here): a TRE near or above it says as much "
                     "about the section as about the fit.")
    return sentence
