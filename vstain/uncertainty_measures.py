"""How well an uncertainty map predicts the actual error of a stain, and mixing several maps into one.

:func:`rank_correlation` (Spearman), :func:`flag_auroc` (how well the uncertainty ranks pixels whose error exceeds a
threshold), :func:`reliability_curve` (error per uncertainty bin), :func:`by_label` (per tissue class) and
:func:`quiet_error_fraction` (the wrong pixels a map leaves in its quieter half); :func:`mix_maps` and
:func:`choose_mix` weigh several maps on validation slides. Part of :mod:`vstain.uncertainty`, which re-exports every
name here.

Examples
--------
>>> import numpy as np
>>> error = np.array([[0.0, 1.0], [2.0, 3.0]])
>>> rank_correlation(error * 10, error), rank_correlation(-error, error)
(1.0, -1.0)
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import pandas as pd
from scipy import stats


# --------------------------------------------------------------------------- measured against the truth


def _valid(uncertainty: np.ndarray, error: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    uncertainty, error = np.asarray(uncertainty, np.float64), np.asarray(error, np.float64)
    if uncertainty.shape != error.shape:
        raise ValueError(f"uncertainty {uncertainty.shape} and error {error.shape} differ in shape")
    keep = np.isfinite(uncertainty) & np.isfinite(error)
    if mask is not None:
        mask = np.asarray(mask, bool)
        if mask.shape != error.shape:
            raise ValueError(f"mask {mask.shape} and error {error.shape} differ in shape")
        keep &= mask
    return uncertainty[keep], error[keep]


def rank_correlation(uncertainty: np.ndarray, error: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Spearman's rank correlation between uncertainty and actual error over the (masked) pixels.

    Ties take their average rank. NaN for fewer than 2 pixels or a constant input.

    Examples
    --------
    >>> round(rank_correlation([1, 2, 3, 4], [1, 3, 2, 4]), 3)   # 1 - 6 * 2 / (4 * 15)
    0.8
    """
    u, e = _valid(uncertainty, error, mask)
    if u.size < 2 or np.ptp(u) == 0 or np.ptp(e) == 0:
        return float("nan")
    return float(stats.spearmanr(u, e).statistic)


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` ranking ``positive`` above the rest (Mann-Whitney U).

    The probability that a random positive scores higher than a random negative, ties
    counting one half. NaN when either class is empty.

    Examples
    --------
    >>> auroc([0.1, 0.4, 0.35, 0.8], [False, False, True, True])   # 3 of 4 pairs ordered
    0.75
    """
    scores, positive = np.ravel(np.asarray(scores, np.float64)), np.ravel(np.asarray(positive, bool))
    if scores.shape != positive.shape:
        raise ValueError(f"scores {scores.shape} and labels {positive.shape} differ in size")
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = stats.rankdata(scores)
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def flag_auroc(uncertainty: np.ndarray, error: np.ndarray, threshold: float, mask: np.ndarray | None = None) -> float:
    """AUROC of flagging, by uncertainty, the pixels whose actual error exceeds ``threshold``.

    Examples
    --------
    >>> flag_auroc([0.1, 0.2, 0.9, 0.8], [0.0, 0.1, 1.0, 2.0], threshold=0.5)
    1.0
    """
    u, e = _valid(uncertainty, error, mask)
    return auroc(u, e > threshold)


def quiet_error_fraction(uncertainty: np.ndarray, error: np.ndarray, threshold: float,
                         mask: np.ndarray | None = None) -> float:
    """Of the pixels whose error exceeds ``threshold``, the fraction whose uncertainty is at most the median.

    Errors the map cannot flag: where the runs agree (less spread than half the pixels) yet the
    stain is wrong. 0.5 is what a map unrelated to the error gives; NaN without wrong pixels.

    Examples
    --------
    >>> quiet_error_fraction([1.0, 2.0, 3.0, 4.0], [30.0, 0.0, 0.0, 30.0], threshold=20.0)   # median 2.5
    0.5
    """
    u, e = _valid(uncertainty, error, mask)
    wrong = e > threshold
    if not wrong.any():
        return float("nan")
    return float(np.mean(u[wrong] <= np.median(u)))


def reliability_curve(uncertainty: np.ndarray, error: np.ndarray, n_bins: int, mask: np.ndarray | None = None,
                      threshold: float | None = None) -> pd.DataFrame:
    """Actual error per uncertainty bin: does more uncertainty mean more error?

    Bins are quantiles of the uncertainty (equal pixel counts; ties may merge bins).

    Returns
    -------
    pandas.DataFrame
        One row per bin: ``bin, lower, upper, pixels, uncertainty`` (mean), ``error`` (mean),
        ``error_median`` and, with ``threshold``, ``above`` (fraction of pixels whose error exceeds it).

    Examples
    --------
    >>> import numpy as np
    >>> u = np.arange(10.0); e = 2 * u
    >>> reliability_curve(u, e, 2)[["pixels", "uncertainty", "error"]].values.tolist()
    [[5.0, 2.0, 4.0], [5.0, 7.0, 14.0]]
    """
    if int(n_bins) < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    u, e = _valid(uncertainty, error, mask)
    columns = ["bin", "lower", "upper", "pixels", "uncertainty", "error", "error_median"] + (
        ["above"] if threshold is not None else [])
    if u.size == 0:
        return pd.DataFrame(columns=columns)
    edges = np.unique(np.quantile(u, np.linspace(0, 1, int(n_bins) + 1)))
    index = np.clip(np.searchsorted(edges, u, side="right") - 1, 0, max(len(edges) - 2, 0))
    rows = []
    for b in range(max(len(edges) - 1, 1)):
        inside = index == b
        if not inside.any():
            continue
        row = [b, edges[b], edges[min(b + 1, len(edges) - 1)], int(inside.sum()), u[inside].mean(),
               e[inside].mean(), float(np.median(e[inside]))]
        if threshold is not None:
            row.append(float((e[inside] > threshold).mean()))
        rows.append(row)
    return pd.DataFrame(rows, columns=columns)


def by_label(uncertainty: np.ndarray, error: np.ndarray, labels: np.ndarray, names: dict[str, int],
             mask: np.ndarray | None = None) -> pd.DataFrame:
    """Uncertainty and actual error per tissue class.

    Parameters
    ----------
    uncertainty, error : ndarray
        ``(Y, X)`` maps.
    labels : ndarray
        ``(Y, X)`` label codes.
    names : dict
        Class name -> label code (e.g. a subset of :data:`vstain.phantom.LABELS`).
    mask : ndarray of bool, optional
        Only these pixels count.

    Returns
    -------
    pandas.DataFrame
        One row per class present: ``tissue, pixels, uncertainty`` (mean), ``uncertainty_median``,
        ``error`` (mean), ``error_median``.

    Examples
    --------
    >>> import numpy as np
    >>> table = by_label(np.array([[1.0, 3.0]]), np.array([[0.5, 0.5]]), np.array([[1, 2]]), {"a": 1, "b": 2})
    >>> table[["tissue", "uncertainty"]].values.tolist()
    [['a', 1.0], ['b', 3.0]]
    """
    labels = np.asarray(labels)
    if labels.shape != np.shape(error):
        raise ValueError(f"labels {labels.shape} and error {np.shape(error)} differ in shape")
    rows = []
    for name, code in names.items():
        u, e = _valid(uncertainty, error, (labels == code) & (True if mask is None else np.asarray(mask, bool)))
        if u.size:
            rows.append({"tissue": name, "pixels": int(u.size), "uncertainty": float(u.mean()),
                         "uncertainty_median": float(np.median(u)), "error": float(e.mean()),
                         "error_median": float(np.median(e))})
    return pd.DataFrame(rows, columns=["tissue", "pixels", "uncertainty", "uncertainty_median", "error",
                                       "error_median"])


# --------------------------------------------------------------------------- mixing maps


def simplex_weights(n: int, step: float = 0.1) -> list[tuple[float, ...]]:
    """Every weight vector of ``n`` non-negative weights summing to 1 on a grid of ``step``.

    Examples
    --------
    >>> simplex_weights(2, 0.5)
    [(0.0, 1.0), (0.5, 0.5), (1.0, 0.0)]
    >>> len(simplex_weights(3, 0.1))
    66
    """
    if n < 1:
        raise ValueError(f"simplex_weights needs at least one weight, got {n}")
    parts = int(round(1.0 / step))
    if parts < 1 or not np.isclose(parts * step, 1.0):
        raise ValueError(f"step must divide 1 into whole parts, got {step}")

    def split(k: int, total: int) -> Iterator[tuple[int, ...]]:
        if k == 1:
            yield (total,)
            return
        for first in range(total + 1):
            for rest in split(k - 1, total - first):
                yield (first, *rest)

    return [tuple(round(p / parts, 10) for p in combo) for combo in split(n, parts)]


def mix_maps(maps: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """A weighted mean of uncertainty maps of the same pixels (Delta E in, Delta E out).

    Examples
    --------
    >>> import numpy as np
    >>> mix_maps([np.array([2.0]), np.array([4.0])], (0.25, 0.75)).tolist()
    [3.5]
    """
    if len(maps) == 0 or len(maps) != len(weights):
        raise ValueError(f"{len(maps)} maps and {len(weights)} weights: one weight per map, at least one")
    weights = np.asarray(weights, np.float64)
    if np.any(weights < 0) or not weights.sum() > 0:
        raise ValueError(f"weights must be non-negative and not all 0, got {weights.tolist()}")
    total = np.zeros(np.shape(maps[0]), np.float64)
    for weight, values in zip(weights / weights.sum(), maps):
        if np.shape(values) != total.shape:
            raise ValueError(f"maps disagree in shape: {np.shape(values)} and {total.shape}")
        total += weight * np.asarray(values, np.float64)
    return total.astype(np.float32)


def choose_mix(candidates: dict[str, Sequence[np.ndarray]], errors: Sequence[np.ndarray], threshold: float,
               step: float = 0.1) -> tuple[dict[str, float], float]:
    """The weights of a mix of maps that best flags one stain's errors on the given (validation) slides.

    Every weight vector of :func:`simplex_weights` is scored by the median over slides of
    :func:`flag_auroc` of the mixed map against the error (slides without pixels on both sides of
    the threshold are left out); the first best wins (ties keep the order of the grid).

    Parameters
    ----------
    candidates : dict
        Map name -> one array per slide (the pixels that count, e.g. inside the mask).
    errors : sequence of ndarray
        The stain's error on the same pixels, one array per slide.
    threshold : float
        Error above which a pixel counts as wrong (Delta E).
    step : float
        Grid of the weights.

    Returns
    -------
    weights : dict
        Map name -> weight (summing to 1).
    score : float
        The median AUROC reached (NaN when no slide has pixels on both sides).

    Examples
    --------
    >>> import numpy as np
    >>> error = [np.array([0.0, 1.0, 2.0, 3.0])]
    >>> useful, noise = [np.array([0.0, 1.0, 2.0, 3.0])], [np.array([3.0, 2.0, 0.0, 1.0])]
    >>> choose_mix({"useful": useful, "noise": noise}, error, threshold=1.5, step=0.5)
    ({'useful': 1.0, 'noise': 0.0}, 1.0)
    """
    names = list(candidates)
    if not names:
        raise ValueError("choose_mix needs at least one map")
    for name in names:
        if len(candidates[name]) != len(errors):
            raise ValueError(f"map {name!r} has {len(candidates[name])} slides, the errors {len(errors)}")
    best, best_score = None, -np.inf
    for weights in simplex_weights(len(names), step):
        scores = [flag_auroc(mix_maps([candidates[n][i] for n in names], weights), errors[i], threshold)
                  for i in range(len(errors))]
        scores = [v for v in scores if np.isfinite(v)]
        score = float(np.median(scores)) if scores else float("nan")
        if best is None or (np.isfinite(score) and score > best_score):
            best, best_score = weights, score
    return dict(zip(names, best)), (best_score if np.isfinite(best_score) else float("nan"))
