"""The phantom beside the paper's regime: the table and sentences of chapter 00.

Everything here is computed from :func:`vstain.stages.dataset.regime_measures` (one row per
toluidine-blue pair); the paper's side is its own words and figures (sections 2.1, 3, 3.1, S3).

Examples
--------
>>> import pandas as pd
>>> m = pd.DataFrame({"pair_id": ["a", "b", "c"], "material": ["Mg", "Mg", "Ti"],
...                   "r_ct_stain": [-0.6, -0.4, 0.1], "r_ct_twin": [-0.7, -0.5, 0.0],
...                   "aligned_fraction": [0.8, 0.85, 0.9], "ct_frc_px": [5.5, 6.0, 5.0],
...                   "histology_frc_px": [3.0, 2.9, 3.1]})
>>> correlation_statement(m)
'CT intensity and stain lightness correlate negatively inside the mask on 2 of 3 toluidine-blue pairs (median r = -0.40): the intensity mismatch of the paper.'
>>> resolution_statement(m)
'The CT is coarser than the histology on 3 of 3 pairs (median FRC resolution 5.5 px against 3.0 px).'
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

#: What the paper says of each quantity (its section in brackets).
PAPER_REGIME = {
    "section thickness": "about 40 µm (2.1)",
    "label kept between CT plane and slide": "not aligned down to every pixel: soft tissue shifts, cracks formed "
                                             "after the scan (3)",
    "CT resolution (FRC)": "about 5-6 px (S3)",
    "histology resolution (FRC)": "under 3 px (S3)",
    "CT vs stain luminance": "strong intensity mismatch: bone bright in CT, purple and dark in the stain (2.1, 3.1)",
    "dense bone": "shades of purple, darker where younger (2.1)",
    "new bone": "bright blue at the degradation layer (2.1)",
    "soft tissue": "a blue tint, brownish on some slides (2.1, 3.1)",
    "degradation layer": "distinct from the black residual alloy (Fig. 1)",
    "screw": "black: the metal blocks the light (Fig. 1)",
}


def _rgb_median(values: pd.Series) -> str:
    rgb = np.array([[float(c) for c in v.split()] for v in values.dropna()])
    return "-" if not len(rgb) else "RGB " + ", ".join(f"{c:.0f}" for c in np.median(rgb, axis=0))


def _resolution(measures: pd.DataFrame, modality: str) -> str:
    value = measures[f"{modality}_frc_px"].median()
    finer = measures.get(f"{modality}_frc_finer")
    bound = finer is not None and finer.median() >= 0.5
    return f"{'at most ' if bound else ''}{value:.1f} px (median; finer patches at the finest measurable)"


def regime_table(measures: pd.DataFrame, dataset_cfg: Any) -> pd.DataFrame:
    """The phantom's figures beside the paper's: one row per quantity, columns ``phantom`` and ``paper``."""
    if measures.empty:
        raise ValueError("no toluidine-blue pairs to measure")
    r = measures["r_ct_stain"]
    rows = {
        "section thickness": f"{dataset_cfg.section_thickness_um:g} µm ({dataset_cfg.section_sublayers} planes "
                             "integrated)",
        "label kept between CT plane and slide": f"{100 * measures['aligned_fraction'].median():.0f} % of the "
                                                 "mask's tissue (median)",
        "CT resolution (FRC)": _resolution(measures, "ct"),
        "histology resolution (FRC)": _resolution(measures, "histology"),
        "CT vs stain luminance": f"r = {r.median():+.2f} (median; negative on {int((r < 0).sum())} of {len(r)})",
    }
    for tissue in ("dense_bone", "new_bone", "soft_tissue", "degradation_layer", "screw"):
        column = f"rgb_{tissue}"
        rows[tissue.replace("_", " ")] = _rgb_median(measures[column]) if column in measures else "-"
    return pd.DataFrame({"phantom": rows, "paper": {k: PAPER_REGIME[k] for k in rows}})


def correlation_by_material(measures: pd.DataFrame) -> pd.DataFrame:
    """Per implant material: pairs, median CT-stain correlation of the slide and of its twin, pairs with r < 0."""
    grouped = measures.groupby("material")
    return pd.DataFrame({"pairs": grouped.size(), "median r (slide)": grouped["r_ct_stain"].median().round(2),
                         "median r (aligned twin)": grouped["r_ct_twin"].median().round(2),
                         "negative": grouped["r_ct_stain"].apply(lambda r: int((r < 0).sum()))})


def correlation_statement(measures: pd.DataFrame) -> str:
    """Whether CT intensity and stain lightness run against each other, as measured."""
    r = measures["r_ct_stain"].dropna()
    negative = int((r < 0).sum())
    verdict = ("the intensity mismatch of the paper" if negative > len(r) / 2
               else "not the paper's intensity mismatch on most pairs")
    return (f"CT intensity and stain lightness correlate negatively inside the mask on {negative} of {len(r)} "
            f"toluidine-blue pairs (median r = {r.median():+.2f}): {verdict}.")


def resolution_statement(measures: pd.DataFrame) -> str:
    """Whether the CT is coarser than the histology (paper S3), as measured."""
    both = measures[["ct_frc_px", "histology_frc_px"]].dropna()
    coarser = int((both["ct_frc_px"] > both["histology_frc_px"]).sum())
    relation = "coarser than" if coarser > len(both) / 2 else "not coarser than"
    return (f"The CT is {relation} the histology on {coarser} of {len(both)} pairs (median FRC resolution "
            f"{both['ct_frc_px'].median():.1f} px against {both['histology_frc_px'].median():.1f} px).")


def inversion_statement(correlations: Sequence[float]) -> str:
    """What inverting the CT does to its relation with the stain, from per-pair CT-stain correlations.

    Examples
    --------
    >>> inversion_statement([-0.7, -0.5, 0.1])
    'On these pairs CT intensity and stain lightness correlate with a median r of -0.50 inside the mask (negative on 2 of 3), so the inverted CT (r = +0.50) runs with the stain rather than against it.'
    """
    r = pd.Series(list(correlations), dtype=float).dropna()
    if r.empty:
        return "No pair could be measured."
    median = float(r.median())
    effect = ("runs with the stain rather than against it" if median < 0
              else "runs against the stain, where the raw CT already runs with it")
    return (f"On these pairs CT intensity and stain lightness correlate with a median r of {median:+.2f} inside the "
            f"mask (negative on {int((r < 0).sum())} of {len(r)}), so the inverted CT (r = {-median:+.2f}) {effect}.")
