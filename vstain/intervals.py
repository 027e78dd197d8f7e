"""Bootstrap intervals over slides and replicates, and a paired test of per-slide differences.

A model's number in Table 1 is the median over patches, each patch on one slide, each slide
stained by the network of one fold (and, where several are trained, one seed). Patches of one
slide are not independent, so the uncertainty is resampled at the level of slides, and at the
level of replicates (folds, seeds) where there are several: a *crossed* bootstrap draws the
slides with replacement once per round (the same draw for every replicate, since the test slides
are shared by all folds) and the replicates with replacement, and recomputes the statistic.

* :func:`bootstrap_median`: the median over patches of each replicate, then the median over the
  replicates (Table 1's statistic), with its percentile interval.
* :func:`bootstrap_mean_difference`: the mean over (replicate, slide) cells of a paired per-slide
  difference between two models, with its percentile interval.
* :func:`sign_flip_test`: the exact paired randomisation test of per-slide differences (each
  slide's sign flipped at random under the null hypothesis of no difference).

Arrays in, numbers out; the tables that call these are :mod:`vstain.reports.table1`.

Examples
--------
>>> import numpy as np
>>> values = {(0, "a"): np.array([0.1, 0.2]), (0, "b"): np.array([0.3, 0.4]), (0, "c"): np.array([0.5])}
>>> result = bootstrap_median(values, n_boot=200, seed=0)
>>> round(result.estimate, 2), result.low <= result.estimate <= result.high
(0.3, True)
>>> sign_flip_test([1.0, 2.0, 3.0])   # 3 slides: no paired test can go below 2 / 2**3
0.25
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Hashable, Mapping, Sequence

import numpy as np

#: Exact enumeration of the sign flips up to this many slides (2**16 patterns); random flips beyond.
EXACT_SIGN_FLIP_MAX = 16


@dataclasses.dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap percentile interval.

    ``n_slides`` and ``n_replicates`` count the units resampled; ``level`` is the interval's
    coverage (0.95 for a 95 % interval). NaN estimate and bounds where there was nothing to measure.
    """

    estimate: float
    low: float
    high: float
    level: float
    n_slides: int
    n_replicates: int

    def excludes_zero(self) -> bool:
        """Whether the interval lies wholly above or wholly below zero (False if NaN)."""
        return bool(self.low > 0 or self.high < 0)


def _check(level: float, n_boot: int) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be positive, got {n_boot}")


def _units(keys: Sequence[tuple[Hashable, Hashable]]) -> tuple[list[Hashable], list[Hashable]]:
    replicates = sorted({r for r, _ in keys}, key=str)
    slides = sorted({s for _, s in keys}, key=str)
    return replicates, slides


def _draw_counts(rng: np.random.Generator, n: int, n_boot: int) -> np.ndarray:
    """``(n_boot, n)`` how often each of ``n`` units is drawn in each bootstrap round."""
    draws = rng.integers(0, n, (n_boot, n))
    counts = np.zeros((n_boot, n), np.int64)
    np.add.at(counts, (np.repeat(np.arange(n_boot), n), draws.ravel()), 1)
    return counts


def _weighted_medians(values: np.ndarray, owner: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per bootstrap round ``b``, the median of ``values`` with each value repeated ``counts[b, owner]`` times.

    The same number :func:`numpy.median` gives for the repeated array (the mean of the two middle values
    when the total is even); NaN where a round draws none of the owners. The two middle positions are
    found by bisection over the sorted values, all rounds at once: the repeated count up to a position is
    the rounds' counts times each owner's running count there.
    """
    out = np.full(len(counts), np.nan)
    if not len(values):
        return out
    order = np.argsort(values, kind="stable")
    v = values[order]
    running = np.zeros((len(v), counts.shape[1]))
    running[np.arange(len(v)), owner[order]] = 1.0
    running = np.cumsum(running, axis=0)  # (n, owners): values of each owner up to each sorted position
    counts = counts.astype(np.float64)
    total = counts @ running[-1]
    ok = total > 0

    def first_beyond(k: np.ndarray) -> np.ndarray:
        """The first sorted position whose repeated count exceeds ``k``, per round."""
        lo, hi = np.zeros(len(counts), np.int64), np.full(len(counts), len(v) - 1, np.int64)
        while np.any(lo < hi):
            mid = (lo + hi) // 2
            below = np.einsum("bs,bs->b", counts, running[mid]) <= k
            lo, hi = np.where(below, mid + 1, lo), np.where(below, hi, mid)
        return lo

    lower, upper = first_beyond((total - 1) // 2), first_beyond(total // 2)
    out[ok] = (v[lower[ok]] + v[upper[ok]]) / 2.0
    return out


def _row_weighted_medians(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Row by row, the median of ``values[b]`` repeated ``weights[b]`` times; NaN values count 0 times."""
    weights = np.where(np.isnan(values), 0, weights)
    order = np.argsort(np.where(np.isnan(values), np.inf, values), axis=1, kind="stable")
    v = np.take_along_axis(values, order, axis=1)
    cumulative = np.cumsum(np.take_along_axis(weights, order, axis=1), axis=1)
    total = cumulative[:, -1]
    lower = (cumulative <= ((total - 1) // 2)[:, None]).sum(axis=1)
    upper = (cumulative <= (total // 2)[:, None]).sum(axis=1)
    out = np.full(len(values), np.nan)
    ok = total > 0
    rows = np.nonzero(ok)[0]
    out[ok] = (v[rows, lower[ok]] + v[rows, upper[ok]]) / 2.0
    return out


def _percentiles(samples: np.ndarray, level: float) -> tuple[float, float]:
    samples = samples[~np.isnan(samples)]
    if not len(samples):
        return float("nan"), float("nan")
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(samples, [alpha, 1.0 - alpha])
    return float(low), float(high)


def bootstrap_median(
    values: Mapping[tuple[Hashable, Hashable], np.ndarray],
    *,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Table 1's median (over patches per replicate, then over replicates) with a crossed bootstrap interval.

    Parameters
    ----------
    values : mapping
        ``(replicate, slide) -> per-patch values`` of one model on one split; a replicate is a fold
        (or a fold and seed), a slide a pair id. NaN values are left out.
    n_boot : int
        Bootstrap rounds; each draws the slides and the replicates with replacement.
    level : float
        Coverage of the percentile interval.
    seed : int
        Seed of the resampling (the same seed gives the same interval).

    Returns
    -------
    Interval
        ``estimate`` is the median over replicates of each replicate's median over the patches of
        its slides; a round whose draw leaves a replicate without any of its slides skips that
        replicate. NaN (and zero counts) when every value is NaN.

    Examples
    --------
    >>> import numpy as np
    >>> same = {(0, s): np.array([0.5, 0.5]) for s in "abcd"}
    >>> bootstrap_median(same, n_boot=50)
    Interval(estimate=0.5, low=0.5, high=0.5, level=0.95, n_slides=4, n_replicates=1)
    """
    _check(level, n_boot)
    cleaned = {key: np.asarray(v, float)[~np.isnan(np.asarray(v, float))] for key, v in values.items()}
    cleaned = {key: v for key, v in cleaned.items() if len(v)}
    replicates, slides = _units(list(cleaned))
    if not cleaned:
        return Interval(float("nan"), float("nan"), float("nan"), level, 0, 0)
    slide_index = {s: i for i, s in enumerate(slides)}
    rng = np.random.default_rng(seed)
    slide_counts = _draw_counts(rng, len(slides), n_boot)
    replicate_counts = _draw_counts(rng, len(replicates), n_boot)
    per_replicate = np.full((n_boot, len(replicates)), np.nan)
    estimates = []
    for j, replicate in enumerate(replicates):
        keys = [key for key in cleaned if key[0] == replicate]
        v = np.concatenate([cleaned[key] for key in keys])
        owner = np.concatenate([np.full(len(cleaned[key]), slide_index[key[1]]) for key in keys])
        per_replicate[:, j] = _weighted_medians(v, owner, slide_counts)
        estimates.append(float(np.median(v)))
    # the median over the drawn replicates, each as often as drawn, skipping those left without slides
    rounds = _row_weighted_medians(per_replicate, replicate_counts)
    low, high = _percentiles(rounds, level)
    return Interval(float(np.median(estimates)), low, high, level, len(slides), len(replicates))


def bootstrap_mean_difference(
    differences: Mapping[tuple[Hashable, Hashable], float],
    *,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> Interval:
    """The mean of paired per-slide differences over (replicate, slide) cells, with a crossed bootstrap interval.

    Parameters
    ----------
    differences : mapping
        ``(replicate, slide) -> difference`` between two models measured on the same slide by the
        networks of the same replicate (e.g. the difference of their per-slide median SSIM). NaN
        cells are left out.
    n_boot, level, seed
        As :func:`bootstrap_median`.

    Returns
    -------
    Interval
        ``estimate`` is the mean over the cells; each round weights a cell by how often its slide and
        its replicate were drawn.

    Examples
    --------
    >>> d = {(0, "a"): 0.1, (0, "b"): 0.2, (0, "c"): 0.3, (0, "d"): 0.2}
    >>> i = bootstrap_mean_difference(d, n_boot=500)
    >>> round(i.estimate, 3), i.excludes_zero()
    (0.2, True)
    """
    _check(level, n_boot)
    cells = {key: float(v) for key, v in differences.items() if not np.isnan(float(v))}
    if not cells:
        return Interval(float("nan"), float("nan"), float("nan"), level, 0, 0)
    replicates, slides = _units(list(cells))
    table = np.zeros((len(replicates), len(slides)))
    present = np.zeros_like(table)
    r_index = {r: i for i, r in enumerate(replicates)}
    s_index = {s: i for i, s in enumerate(slides)}
    for (r, s), v in cells.items():
        table[r_index[r], s_index[s]] = v
        present[r_index[r], s_index[s]] = 1.0
    rng = np.random.default_rng(seed)
    slide_counts = _draw_counts(rng, len(slides), n_boot).astype(float)
    replicate_counts = _draw_counts(rng, len(replicates), n_boot).astype(float)
    numerator = np.einsum("br,rs,bs->b", replicate_counts, table, slide_counts)
    denominator = np.einsum("br,rs,bs->b", replicate_counts, present, slide_counts)
    with np.errstate(invalid="ignore", divide="ignore"):
        rounds = np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1), np.nan)
    low, high = _percentiles(rounds, level)
    return Interval(float(np.mean(list(cells.values()))), low, high, level, len(slides), len(replicates))


def sign_flip_test(differences: Sequence[float], *, n_random: int = 20000, seed: int = 0) -> float:
    """Two-sided p-value of the paired sign-flip (randomisation) test that the mean difference is zero.

    Under the null hypothesis each slide's difference is as likely positive as negative; the
    p-value is the fraction of sign patterns whose mean is at least as far from zero as the observed
    one. Exact (every pattern) up to :data:`EXACT_SIGN_FLIP_MAX` slides, ``n_random`` random patterns
    beyond. With ``n`` slides no p-value is below ``2 / 2**n``: 3 slides can never reach 0.05.

    Parameters
    ----------
    differences : sequence of float
        One paired difference per slide (averaged over the replicates that measured it); NaN left out.

    Returns
    -------
    float
        The p-value; 1.0 without any difference or when all are zero.

    Examples
    --------
    >>> round(sign_flip_test([0.2, 0.1, 0.3, 0.25, 0.15, 0.2]), 4)   # all six positive: 2 of 64 patterns
    0.0312
    >>> sign_flip_test([0.2, -0.2])
    1.0
    """
    d = np.asarray(differences, float)
    d = d[~np.isnan(d)]
    if not len(d) or np.all(d == 0):
        return 1.0
    observed = abs(d.mean())
    tolerance = 1e-12 * max(1.0, float(np.abs(d).max()))
    if len(d) <= EXACT_SIGN_FLIP_MAX:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=len(d))))
    else:
        signs = np.random.default_rng(seed).choice((1.0, -1.0), size=(n_random, len(d)))
    means = np.abs(signs @ d) / len(d)
    return float(np.mean(means >= observed - tolerance))
