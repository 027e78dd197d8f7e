"""Chapter 02's tables: how far apart the tissue classes' colours lie before and after normalisation.

The paper's histology normalisation (2.5) white-balances on the background and stretches every
channel between ``f_min`` (the 1st percentile of bone, minus c, clamped to 10) and ``f_max``. A
stretch that clips can merge two dark classes into one colour; on the phantom the truth says which
pixel is which tissue, so the merge is measured: the CIELAB Delta E between the mean colours of every
two classes (:func:`vstain.colour.delta_e`), before and after, per slide, and how often the clamp at 10
engaged.

* :func:`class_colour_distances`: one slide, from its raw section, labels and valid pixels;
* :func:`ground_truth_colour_distances`: every phantom pair, on the ground-truth pair's grid
  (:func:`vstain.phantom.ground_truth_pair` / :func:`vstain.phantom.ground_truth_labels`), normalised
  by the pipeline's own :func:`vstain.normalise.normalise_histology` with the true bone and background;
* :func:`distance_summary`, :func:`merge_sentence`, :func:`clamp_sentence`: what chapter 02 shows and says.

Examples
--------
>>> import numpy as np
>>> raw = np.zeros((4, 4, 3), np.uint8); raw[:2] = (230, 230, 240); raw[2:] = (90, 40, 120)
>>> labels = np.zeros((4, 4), int); labels[2:] = 2
>>> d = class_colour_distances(raw, raw, labels, min_pixels=1)
>>> d[["class_a", "class_b"]].values.tolist(), bool(d["merged_after"].iloc[0])
([['background', 'dense_bone']], False)
"""

from __future__ import annotations

import itertools
from typing import Iterable

import numpy as np
import pandas as pd

from vstain.colour import class_mean_colours, delta_e
from vstain.normalise import normalise_histology
from vstain.phantom import LABELS, PhantomSample, ground_truth_labels, ground_truth_pair, label_name

#: Two classes whose mean colours lie closer than this (CIEDE2000) read as one colour: merged.
MERGE_THRESHOLD = 5.0

#: The pair of classes the paper's regime puts at risk: a black screw and the dark degradation layer.
WATCHED = ("degradation_layer", "screw")


def class_colour_distances(raw: np.ndarray, normalised: np.ndarray, labels: np.ndarray,
                           valid: np.ndarray | None = None, *, threshold: float = MERGE_THRESHOLD,
                           min_pixels: int = 20, method: str = "ciede2000") -> pd.DataFrame:
    """Delta E between the mean colours of every two classes of one slide, before and after normalisation.

    Parameters
    ----------
    raw, normalised : ndarray
        ``(Y, X, 3)`` uint8 section before and after normalisation, pixel for pixel.
    labels : ndarray
        ``(Y, X)`` true class of each pixel (label codes of :data:`vstain.phantom.LABELS`).
    valid : ndarray of bool, optional
        Pixels of the section (default: all).
    threshold : float
        Delta E below which two classes are merged.
    min_pixels, method
        As :func:`vstain.colour.class_mean_colours` and :func:`vstain.colour.delta_e`.

    Returns
    -------
    pandas.DataFrame
        One row per pair of classes present: ``class_a, class_b, delta_e_before, delta_e_after,
        merged_before, merged_after``, and the classes' mean colours (``rgb_a_before`` ...).
    """
    if raw.shape != normalised.shape:
        raise ValueError(f"raw {raw.shape} and normalised {normalised.shape} sections differ in shape")
    before = class_mean_colours(raw, labels, valid, min_pixels=min_pixels)
    after = class_mean_colours(normalised, labels, valid, min_pixels=min_pixels)
    rows = []
    for a, b in itertools.combinations(sorted(before), 2):
        d_before = float(delta_e(before[a], before[b], method=method))
        d_after = float(delta_e(after[a], after[b], method=method))
        rows.append({"class_a": label_name(a), "class_b": label_name(b), "delta_e_before": d_before,
                     "delta_e_after": d_after, "merged_before": d_before < threshold,
                     "merged_after": d_after < threshold,
                     "rgb_a_before": np.round(before[a]).astype(int).tolist(),
                     "rgb_b_before": np.round(before[b]).astype(int).tolist(),
                     "rgb_a_after": np.round(after[a]).astype(int).tolist(),
                     "rgb_b_after": np.round(after[b]).astype(int).tolist()})
    return pd.DataFrame(rows, columns=["class_a", "class_b", "delta_e_before", "delta_e_after", "merged_before",
                                       "merged_after", "rgb_a_before", "rgb_b_before", "rgb_a_after",
                                       "rgb_b_after"])


def ground_truth_colour_distances(samples: Iterable[PhantomSample], *, c_low: float, c_high: float,
                                  threshold: float = MERGE_THRESHOLD, min_pixels: int = 20,
                                  method: str = "ciede2000") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Class colour distances and the stretch's clamps of phantom pairs, on their ground truth.

    Each sample's section is taken on the ground-truth pair's grid, raw
    (:func:`vstain.phantom.ground_truth_pair` with ``normalised=False``), with the classes the section
    shows (:func:`vstain.phantom.ground_truth_labels`), and normalised by the paper's formula
    (:func:`vstain.normalise.normalise_histology`) with the true dense bone and background as ROIs.

    Parameters
    ----------
    samples : iterable of PhantomSample
    c_low, c_high : float
        ``c`` and ``c'`` of paper 2.5 (a profile's ``normalisation`` section).
    threshold, min_pixels, method
        As :func:`class_colour_distances`.

    Returns
    -------
    distances : pandas.DataFrame
        :func:`class_colour_distances` of every slide, with ``pair_id, stain, material`` first.
    clamps : pandas.DataFrame
        One row per slide: ``pair_id, stain, material, f_min, f_max, f_min_clamped, f_max_clamped,
        clipped_fraction``.
    """
    distances, clamps = [], []
    for sample in samples:
        raw = ground_truth_pair(sample, normalised=False).histology
        labels = ground_truth_labels(sample)[1]
        # outside the section the warped slide is 0 and labelled background; a section pixel is either
        # labelled tissue or, being background, bright
        valid = (labels != LABELS["background"]) | raw.any(axis=-1)
        bone, background = (labels == LABELS["dense_bone"]) & valid, (labels == LABELS["background"]) & valid
        if bone.sum() < min_pixels or background.sum() < min_pixels:
            continue  # no bone or no slide to normalise on
        normalised, stats = normalise_histology(raw, bone, background, c_low=c_low, c_high=c_high,
                                                pair_id=sample.pair_id)
        who = {"pair_id": sample.pair_id, "stain": sample.stain, "material": sample.material}
        table = class_colour_distances(raw, normalised, labels, valid, threshold=threshold, min_pixels=min_pixels,
                                       method=method)
        distances.append(table.assign(**who)[list(who) + list(table.columns)])
        clamps.append({**who, **{k: stats[k] for k in ("f_min", "f_max", "f_min_clamped", "f_max_clamped",
                                                        "clipped_fraction")}})
    columns = ["pair_id", "stain", "material", "f_min", "f_max", "f_min_clamped", "f_max_clamped", "clipped_fraction"]
    return (pd.concat(distances, ignore_index=True) if distances else pd.DataFrame(),
            pd.DataFrame(clamps, columns=columns))


def distance_summary(distances: pd.DataFrame) -> pd.DataFrame:
    """Per stain and pair of classes: the median Delta E over slides before and after, the smallest after.

    Returns
    -------
    pandas.DataFrame
        ``stain, class_a, class_b, median_before, median_after, min_after, n_slides, n_merged_after``
        (slides where the pair is closer than the threshold after normalisation) and ``n_merged_by`` (of those,
        the slides where it was not already that close before: merged by normalisation), closest pairs (after) first.

    Examples
    --------
    >>> d = pd.DataFrame({"stain": "tb", "class_a": "a", "class_b": "b", "delta_e_before": [30.0, 40.0],
    ...                   "delta_e_after": [2.0, 8.0], "merged_after": [True, False]})
    >>> s = distance_summary(d)
    >>> s[["median_before", "median_after", "min_after"]].values.tolist(), int(s["n_merged_after"][0])
    ([[35.0, 5.0, 2.0]], 1)
    >>> int(s["n_merged_by"][0])
    1
    """
    if distances.empty:
        return pd.DataFrame(columns=["stain", "class_a", "class_b", "median_before", "median_after", "min_after",
                                     "n_slides", "n_merged_after", "n_merged_by"])
    distances = distances.assign(merged_by=distances["merged_after"].astype(bool)
                                 & ~(distances["delta_e_before"] < MERGE_THRESHOLD))
    groups = distances.groupby(["stain", "class_a", "class_b"], sort=False)
    out = pd.DataFrame({"median_before": groups["delta_e_before"].median(),
                        "median_after": groups["delta_e_after"].median(),
                        "min_after": groups["delta_e_after"].min(), "n_slides": groups.size(),
                        "n_merged_after": groups["merged_after"].sum().astype(int),
                        "n_merged_by": groups["merged_by"].sum().astype(int)}).reset_index()
    return out.sort_values(["stain", "min_after"], kind="stable").reset_index(drop=True)


def merge_sentence(distances: pd.DataFrame, stain: str, threshold: float = MERGE_THRESHOLD) -> str:
    r"""Whether normalisation merged any two classes of ``stain``'s slides, the watched pair named.

    Examples
    --------
    >>> d = pd.DataFrame({"stain": "tb", "class_a": ["degradation_layer", "soft_tissue"],
    ...                   "class_b": ["screw", "dense_bone"], "delta_e_before": [38.0, 20.0],
    ...                   "delta_e_after": [1.1, 12.0], "merged_before": False, "merged_after": [True, False],
    ...                   "pair_id": "p"})
    >>> print(merge_sentence(d, "tb").replace("; ", ";\n"))
    Normalisation merges 1 of 2 pairs of classes on at least one slide (Delta E below 5 after it, not before): degradation layer and screw;
    the degradation layer against the screw: Delta E 38.0 before, 1.1 after (median over 1 slide, smallest 1.1).
    """
    rows = distances[distances["stain"] == stain] if not distances.empty else distances
    if rows.empty:
        return f"No {stain} slide had the classes to compare."
    summary = distance_summary(rows)
    merged = summary[summary["n_merged_by"] > 0]
    already = summary[(summary["n_merged_after"] > 0) & (summary["n_merged_by"] == 0)]
    n = len(summary)
    if merged.empty:
        text = (f"Normalisation merges no two classes that were apart before it (every Delta E after it is at least "
                f"{threshold:g} where it was before; the closest, {_pair_name(summary.iloc[0])}, "
                f"{summary.iloc[0]['min_after']:.1f} on its closest slide)")
    else:
        names = "; ".join(_pair_name(r) for _, r in merged.iterrows())
        text = (f"Normalisation merges {len(merged)} of {n} pairs of classes on at least one slide "
                f"(Delta E below {threshold:g} after it, not before): {names}")
    if len(already):
        text += (f"; {len(already)} pairs were as close before it ("
                 + "; ".join(_pair_name(r) for _, r in already.iterrows()) + ")")
    watched = summary[(summary["class_a"] == WATCHED[0]) & (summary["class_b"] == WATCHED[1])]
    if len(watched):
        w = watched.iloc[0]
        text += (f"; the degradation layer against the screw: Delta E {w['median_before']:.1f} before, "
                 f"{w['median_after']:.1f} after (median over {_slides(int(w['n_slides']))}, smallest "
                 f"{w['min_after']:.1f})")
    return text + "."


def _slides(n: int) -> str:
    return f"{n} slide" + ("" if n == 1 else "s")


def _pair_name(row: pd.Series) -> str:
    return f"{row['class_a'].replace('_', ' ')} and {row['class_b'].replace('_', ' ')}"


def clamp_sentence(clamps: pd.DataFrame, where: str = "slides") -> str:
    r"""How often the clamp at 10 of ``f_min`` (and at 255 of ``f_max``) engaged, as the paper reports it.

    Examples
    --------
    >>> print(clamp_sentence(pd.DataFrame({"f_min_clamped": [True, False, True], "f_max_clamped": [False] * 3,
    ...                                    "f_min": [10.0, 40.0, 10.0]})).replace("; ", ";\n"))
    The clamp of f_min at 10 engaged on 2 of 3 slides;
    f_min ranged from 10 to 40, and the clamp of f_max at 255 engaged on 0.
    """
    if clamps.empty:
        return f"No {where} were normalised."
    n_min, n_max = int(clamps["f_min_clamped"].sum()), int(clamps["f_max_clamped"].sum())
    return (f"The clamp of f_min at 10 engaged on {n_min} of {len(clamps)} {where}; f_min ranged from "
            f"{clamps['f_min'].min():.0f} to {clamps['f_min'].max():.0f}, and the clamp of f_max at 255 engaged on "
            f"{n_max}.")
