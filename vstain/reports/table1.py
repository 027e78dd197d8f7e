"""Table 1 and the sentences chapters 05 and 09 state from it (paper 3.2).

* Table 1 as the paper reports it: the median of each metric per model and split
  (:func:`table1`), per fold and over the folds (:func:`table1_by_fold`, :func:`table1_over_folds`),
  beside the paper's own (:data:`PAPER_TABLE1`, :func:`compare_with_paper`).
* Its uncertainty: a bootstrap interval over slides (and folds / seeds) of each median
  (:func:`table1_intervals`) and a paired comparison of every two models on the same slides
  (:func:`paired_comparisons`): the interval of the mean per-slide difference and a paired sign-flip
  test (:mod:`vstain.intervals`).
* The sentences: one model "beats" another only where the interval of their paired difference excludes
  zero and the paired test agrees (p below 1 - level); otherwise they are "not distinguishable on these
  data" (:func:`comparison_sentence`, :func:`ranking_sentence`, :func:`paper_rankings_check`).

Examples
--------
>>> ranking(PAPER_TABLE1, "test", "ssim")
['mod_cyclegan', 'cyclegan_invct', 'pix2pix', 'cyclegan']
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any, Hashable, Sequence

import numpy as np
import pandas as pd

from vstain.intervals import Interval, bootstrap_mean_difference, bootstrap_median, sign_flip_test
from vstain.layout import evaluation_dir
from vstain.metrics import HIGHER_IS_BETTER, METRICS
from vstain.vocabulary import BASELINE, MODEL_LABELS, ROLES

#: Bootstrap rounds, coverage and seed of the intervals the chapters show.
N_BOOT = 2000
LEVEL = 0.95
BOOT_SEED = 0

NOT_DISTINGUISHABLE = "not distinguishable on these data"

# Table 1 of the paper (Irvine et al., section 3.2): medians over 256 px patches of
# training (40 WSIs), validation (10) and testing (3), one row per (model, role).
# The raw-CT baseline is from the text of section 3.2 ("average SSIM, LPIPS and PSNR
# were 0.15, 0.4 and 5"); the paper gives it once, not per split.
PAPER_TABLE1 = pd.DataFrame(
    [
        ("mod_cyclegan", "train", 0.63, 0.12, 17.0),
        ("mod_cyclegan", "validation", 0.60, 0.16, 15.0),
        ("mod_cyclegan", "test", 0.59, 0.16, 15.0),
        ("pix2pix", "train", 0.24, 0.15, 16.0),
        ("pix2pix", "validation", 0.21, 0.17, 14.0),
        ("pix2pix", "test", 0.22, 0.22, 15.0),
        ("cyclegan_invct", "train", 0.27, 0.25, 13.0),
        ("cyclegan_invct", "validation", 0.31, 0.25, 13.0),
        ("cyclegan_invct", "test", 0.33, 0.25, 12.0),
        ("cyclegan", "train", 0.15, 0.44, 5.0),
        ("cyclegan", "validation", 0.18, 0.43, 5.0),
        ("cyclegan", "test", 0.20, 0.43, 5.0),
    ],
    columns=["model", "role", "ssim", "lpips", "psnr"],
)
PAPER_BASELINE = {"ssim": 0.15, "lpips": 0.4, "psnr": 5.0}


def table1(per_patch: pd.DataFrame) -> pd.DataFrame:
    """Median SSIM, LPIPS and PSNR per model and split (Table 1) from per-patch metrics.

    Parameters
    ----------
    per_patch : pandas.DataFrame
        Columns ``model, role, pair_id, ssim, lpips, psnr`` (as written by :func:`vstain.stages.evaluate.evaluate`).

    Returns
    -------
    pandas.DataFrame
        ``model, role, ssim, lpips, psnr, n_patches, n_pairs, lpips_available``; LPIPS is
        NaN (and ``lpips_available`` False) where no patch has an LPIPS value.

    Examples
    --------
    >>> import pandas as pd
    >>> rows = pd.DataFrame({"model": ["a"] * 3, "role": ["train"] * 3, "pair_id": ["p", "p", "q"],
    ...                      "ssim": [0.1, 0.5, 0.3], "lpips": [float("nan")] * 3, "psnr": [10, 12, 20]})
    >>> table1(rows)[["ssim", "psnr", "n_pairs", "lpips_available"]].values.tolist()
    [[0.3, 12.0, 2, False]]
    """
    groups = per_patch.groupby(["model", "role"], sort=False)
    table = groups[list(METRICS)].median()
    table["n_patches"] = groups.size()
    table["n_pairs"] = groups["pair_id"].nunique()
    table["lpips_available"] = groups["lpips"].apply(lambda s: bool(s.notna().any()))
    table = table.reset_index()
    order = {m: i for i, m in enumerate(MODEL_LABELS)}
    table["_m"] = table["model"].map(lambda m: order.get(m, len(order)))
    table["_r"] = table["role"].map(lambda r: ROLES.index(r) if r in ROLES else len(ROLES))
    return table.sort_values(["_m", "_r"]).drop(columns=["_m", "_r"]).reset_index(drop=True)


def table1_by_fold(per_patch: pd.DataFrame) -> pd.DataFrame:
    """Table 1 of each fold apart: :func:`table1` per ``fold``, with a ``fold`` column first.

    Examples
    --------
    >>> import pandas as pd
    >>> rows = pd.DataFrame({"model": ["a"] * 4, "role": ["test"] * 4, "pair_id": ["p"] * 4, "fold": [0, 0, 1, 1],
    ...                      "ssim": [0.1, 0.3, 0.5, 0.7], "lpips": [float("nan")] * 4, "psnr": [10, 12, 20, 22]})
    >>> table1_by_fold(rows)[["fold", "ssim", "psnr"]].values.tolist()
    [[0.0, 0.2, 11.0], [1.0, 0.6, 21.0]]
    """
    tables = [table1(part).assign(fold=int(fold)) for fold, part in per_patch.groupby("fold", sort=True)]
    table = pd.concat(tables, ignore_index=True)
    return table[["fold"] + [c for c in table.columns if c != "fold"]]


def table1_over_folds(by_fold: pd.DataFrame) -> pd.DataFrame:
    """Table 1 over the cross-validation folds: the median of the per-fold medians and their range.

    Each fold's model is a different network, so the folds are summarised as folds (median of the
    per-fold medians of :func:`table1_by_fold`, with the smallest and largest per-fold median as
    ``<metric>_min`` / ``<metric>_max``), not by pooling their patches. With one fold it is that
    fold's Table 1.

    Returns
    -------
    pandas.DataFrame
        ``model, role, ssim, lpips, psnr, <metric>_min, <metric>_max, n_folds, n_patches, n_pairs,
        lpips_available`` (``n_patches`` and ``n_pairs`` summed over the folds).

    Examples
    --------
    >>> import pandas as pd
    >>> by_fold = pd.DataFrame({"fold": [0, 1, 2], "model": ["a"] * 3, "role": ["test"] * 3,
    ...                         "ssim": [0.2, 0.6, 0.5], "lpips": [float("nan")] * 3, "psnr": [11.0, 21.0, 15.0],
    ...                         "n_patches": [4, 5, 6], "n_pairs": [1, 1, 1], "lpips_available": [False] * 3})
    >>> t = table1_over_folds(by_fold)
    >>> t[["ssim", "ssim_min", "ssim_max"]].values.tolist(), int(t["n_folds"][0]), int(t["n_patches"][0])
    ([[0.5, 0.2, 0.6]], 3, 15)
    """
    groups = by_fold.groupby(["model", "role"], sort=False)
    table = groups[list(METRICS)].median()
    for metric in METRICS:
        table[f"{metric}_min"] = groups[metric].min()
        table[f"{metric}_max"] = groups[metric].max()
    table["n_folds"] = groups["fold"].nunique()
    table["n_patches"] = groups["n_patches"].sum()
    table["n_pairs"] = groups["n_pairs"].sum()
    table["lpips_available"] = groups["lpips_available"].any()
    return table.reset_index()


def rank_models(table: pd.DataFrame) -> pd.DataFrame:
    """Rank the models (1 = best) per split and metric; NaN metrics get no rank.

    Examples
    --------
    >>> import pandas as pd
    >>> t = pd.DataFrame({"model": ["a", "b"], "role": ["test"] * 2, "ssim": [0.2, 0.6],
    ...                   "lpips": [0.3, 0.1], "psnr": [9.0, 8.0]})
    >>> rank_models(t)[["ssim", "lpips", "psnr"]].values.tolist()
    [[2.0, 2.0, 1.0], [1.0, 1.0, 2.0]]
    """
    ranks = table[["model", "role"]].copy()
    for metric in METRICS:
        ranks[metric] = table.groupby("role")[metric].rank(ascending=not HIGHER_IS_BETTER[metric], method="min")
    return ranks


def compare_with_paper(table: pd.DataFrame) -> pd.DataFrame:
    """Table 1 as measured beside the paper's, with each model's rank per split and metric.

    Only the generative models are ranked (the raw-CT baseline is listed with the
    paper's baseline values). Returns one row per (model, role) with columns
    ``<metric>``, ``<metric>_paper``, ``<metric>_rank``, ``<metric>_rank_paper``.
    """
    models = table[table["model"] != BASELINE]
    ours = models.merge(rank_models(models), on=["model", "role"], suffixes=("", "_rank"))
    paper = PAPER_TABLE1.merge(rank_models(PAPER_TABLE1[PAPER_TABLE1["model"].isin(models["model"])]),
                               on=["model", "role"], suffixes=("", "_rank"))
    merged = ours.merge(paper, on=["model", "role"], how="left", suffixes=("", "_paper"))
    baseline = table[table["model"] == BASELINE].copy()
    for metric, value in PAPER_BASELINE.items():
        baseline[f"{metric}_paper"] = value
    merged = pd.concat([merged, baseline], ignore_index=True)
    columns = ["model", "role"]
    for metric in METRICS:
        columns += [metric, f"{metric}_paper", f"{metric}_rank", f"{metric}_rank_paper"]
    merged = merged.reindex(columns=columns + ["n_patches", "n_pairs"])
    return merged


def ranking(table: pd.DataFrame, role: str, metric: str) -> list[str]:
    """Models (not the baseline) from best to worst median on one split and metric; empty if unmeasured.

    The order of the point estimates only: what of it the data support is :func:`ranking_sentence`'s.

    Examples
    --------
    >>> ranking(PAPER_TABLE1, "test", "lpips")
    ['mod_cyclegan', 'pix2pix', 'cyclegan_invct', 'cyclegan']
    """
    rows = table[(table["role"] == role) & (table["model"] != BASELINE)].dropna(subset=[metric])
    rows = rows.sort_values(metric, ascending=not HIGHER_IS_BETTER[metric], kind="stable")
    return rows["model"].tolist()


# --------------------------------------------------------------------------- uncertainty


def _replicate_columns(per_patch: pd.DataFrame) -> list[str]:
    """The columns that name a replicate network: the fold, and the seed where there are several."""
    columns = [c for c in ("fold", "seed") if c in per_patch.columns]
    if not columns:
        raise ValueError("per-patch table: a 'fold' column is needed to tell the networks apart")
    return columns


def _check_per_patch(per_patch: pd.DataFrame, metric: str | None = None) -> None:
    missing = {"model", "role", "pair_id"} - set(per_patch.columns)
    if missing:
        raise ValueError(f"per-patch table: missing column(s) {sorted(missing)}")
    if metric is not None and metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; valid: {', '.join(METRICS)}")


def slide_values(per_patch: pd.DataFrame, model: str, role: str, metric: str) -> dict[tuple[Hashable, str], np.ndarray]:
    """``(replicate, slide) -> per-patch values`` of one model, split and metric (the bootstrap's units).

    A replicate is a fold, or a ``(fold, seed)`` pair when the table has a ``seed`` column.

    Examples
    --------
    >>> t = pd.DataFrame({"model": "a", "role": "test", "pair_id": ["p", "p", "q"], "fold": 0,
    ...                   "ssim": [0.1, 0.2, 0.3]})
    >>> {k: v.tolist() for k, v in slide_values(t, "a", "test", "ssim").items()}
    {(0, 'p'): [0.1, 0.2], (0, 'q'): [0.3]}
    """
    _check_per_patch(per_patch, metric)
    columns = _replicate_columns(per_patch)
    rows = per_patch[(per_patch["model"] == model) & (per_patch["role"] == role)]
    out = {}
    for key, part in rows.groupby(columns + ["pair_id"], sort=True):
        replicate = key[0] if len(columns) == 1 else tuple(key[:-1])
        out[(replicate, str(key[-1]))] = part[metric].to_numpy(float)
    return out


def table1_intervals(per_patch: pd.DataFrame, *, n_boot: int = N_BOOT, level: float = LEVEL,
                     seed: int = BOOT_SEED) -> pd.DataFrame:
    """The bootstrap interval of every median of Table 1 (:func:`vstain.intervals.bootstrap_median`).

    Parameters
    ----------
    per_patch : pandas.DataFrame
        ``model, role, pair_id, fold[, seed]`` and the metric columns (the evaluation's per-patch table).
    n_boot, level, seed
        Bootstrap rounds, coverage and seed.

    Returns
    -------
    pandas.DataFrame
        One row per (model, role, metric): ``estimate`` (Table 1's median over the folds of the
        per-fold medians), ``low``, ``high``, ``level``, ``n_slides``, ``n_replicates``. NaN where the
        metric was not measured (LPIPS without its weights).

    Examples
    --------
    >>> t = pd.DataFrame({"model": "a", "role": "test", "pair_id": ["p", "q", "r"], "fold": 0,
    ...                   "ssim": [0.5, 0.5, 0.5], "psnr": 10.0, "lpips": float("nan")})
    >>> table1_intervals(t, n_boot=20)[["metric", "estimate", "low", "high"]].values.tolist()[0]
    ['ssim', 0.5, 0.5, 0.5]
    """
    _check_per_patch(per_patch)
    rows = []
    for (model, role), _ in per_patch.groupby(["model", "role"], sort=False):
        for metric in METRICS:
            if metric not in per_patch.columns:
                continue
            interval = bootstrap_median(slide_values(per_patch, model, role, metric), n_boot=n_boot, level=level,
                                        seed=seed)
            rows.append({"model": model, "role": role, "metric": metric, **_interval_columns(interval)})
    return _order(pd.DataFrame(rows, columns=["model", "role", "metric", "estimate", "low", "high", "level",
                                              "n_slides", "n_replicates"]))


def _interval_columns(interval: Interval) -> dict[str, Any]:
    return {"estimate": interval.estimate, "low": interval.low, "high": interval.high, "level": interval.level,
            "n_slides": interval.n_slides, "n_replicates": interval.n_replicates}


def _order(table: pd.DataFrame) -> pd.DataFrame:
    order = {m: i for i, m in enumerate(MODEL_LABELS)}
    keys = table.assign(_m=table["model"].map(lambda m: order.get(m, len(order))),
                        _r=table["role"].map(lambda r: ROLES.index(r) if r in ROLES else len(ROLES)))
    return keys.sort_values(["_m", "_r"], kind="stable").drop(columns=["_m", "_r"]).reset_index(drop=True)


def slide_medians(per_patch: pd.DataFrame, model: str, role: str, metric: str) -> dict[tuple[Hashable, str], float]:
    """``(replicate, slide) -> median over the slide's patches`` of one model, split and metric (NaN left out)."""
    return {key: float(np.median(v[~np.isnan(v)])) for key, v in slide_values(per_patch, model, role, metric).items()
            if (~np.isnan(v)).any()}


def paired_difference(cells: dict[tuple[Hashable, str], float], *, n_boot: int = N_BOOT, level: float = LEVEL,
                      seed: int = BOOT_SEED) -> dict[str, Any]:
    """The mean of paired ``(replicate, slide) -> difference`` cells with its interval and the paired test.

    The interval is :func:`vstain.intervals.bootstrap_mean_difference`'s; the p-value is the sign-flip test of the
    per-slide differences averaged over the replicates (:func:`vstain.intervals.sign_flip_test`).

    Returns
    -------
    dict
        ``difference, low, high, level, p_value, n_slides, n_replicates`` (NaN difference, p 1.0 and no units
        without any cell).

    Examples
    --------
    >>> d = paired_difference({(0, "a"): 0.1, (0, "b"): 0.2, (0, "c"): 0.3}, n_boot=200)
    >>> round(d["difference"], 3), d["p_value"], d["n_slides"]
    (0.2, 0.25, 3)
    """
    if not cells:
        return {"difference": float("nan"), "low": float("nan"), "high": float("nan"), "level": level,
                "p_value": 1.0, "n_slides": 0, "n_replicates": 0}
    interval = bootstrap_mean_difference(cells, n_boot=n_boot, level=level, seed=seed)
    per_slide = pd.Series(cells).groupby(level=1).mean()  # the replicates of a slide averaged
    return {"difference": interval.estimate, "low": interval.low, "high": interval.high, "level": level,
            "p_value": sign_flip_test(per_slide.to_numpy(), seed=seed), "n_slides": interval.n_slides,
            "n_replicates": interval.n_replicates}


def paired_comparisons(per_patch: pd.DataFrame, models: Sequence[str] | None = None, *, n_boot: int = N_BOOT,
                       level: float = LEVEL, seed: int = BOOT_SEED) -> pd.DataFrame:
    """Every two models compared on the same slides, per split and metric.

    For each slide and replicate (fold / seed) that measured both models, the difference of their
    per-slide medians, signed so that a positive difference favours ``model_a`` (higher SSIM and PSNR,
    lower LPIPS). Its mean over the slides comes with a crossed bootstrap interval
    (:func:`vstain.intervals.bootstrap_mean_difference`) and the paired sign-flip test of the per-slide
    differences averaged over the replicates (:func:`vstain.intervals.sign_flip_test`).

    Parameters
    ----------
    per_patch : pandas.DataFrame
        As :func:`table1_intervals`.
    models : sequence of str, optional
        The models compared, in this order (default: every model of the table, Table 1's order).
    n_boot, level, seed
        Bootstrap rounds, coverage and seed.

    Returns
    -------
    pandas.DataFrame
        ``role, metric, model_a, model_b, difference, low, high, level, p_value, n_slides,
        n_replicates, verdict``; ``verdict`` is ``model_a`` or ``model_b`` where that model beats the
        other (:func:`beats`), else ``""``.

    Examples
    --------
    >>> rows = [{"model": m, "role": "test", "pair_id": f"s{k}", "fold": 0, "ssim": v + 0.01 * k}
    ...         for k in range(8) for m, v in (("a", 0.6), ("b", 0.4))]
    >>> c = paired_comparisons(pd.DataFrame(rows), n_boot=200)
    >>> c[["model_a", "model_b", "difference", "verdict"]].round(3).values.tolist()
    [['a', 'b', 0.2, 'a']]
    """
    _check_per_patch(per_patch)
    if models is None:
        models = _order(per_patch[["model", "role"]].drop_duplicates())["model"].drop_duplicates().tolist()
    rows = []
    for role in [r for r in ROLES if r in set(per_patch["role"])] + sorted(set(per_patch["role"]) - set(ROLES)):
        for metric in [m for m in METRICS if m in per_patch.columns]:
            medians = {m: slide_medians(per_patch, m, role, metric) for m in models}
            for a, b in itertools.combinations(models, 2):
                sign = 1.0 if HIGHER_IS_BETTER[metric] else -1.0
                shared = medians[a].keys() & medians[b].keys()
                cells = {key: sign * (medians[a][key] - medians[b][key]) for key in shared
                         if np.isfinite(medians[a][key] - medians[b][key])}
                if not cells:
                    continue
                row = {"role": role, "metric": metric, "model_a": a, "model_b": b,
                       **paired_difference(cells, n_boot=n_boot, level=level, seed=seed)}
                row["verdict"] = beats(row)
                rows.append(row)
    return pd.DataFrame(rows, columns=["role", "metric", "model_a", "model_b", "difference", "low", "high", "level",
                                       "p_value", "n_slides", "n_replicates", "verdict"])


def beats(comparison: Any) -> str:
    """The model that beats the other in one row of :func:`paired_comparisons`, or ``""``.

    The rule of the book: a model beats another only where the interval of their paired difference
    excludes zero on its side *and* the paired sign-flip test rejects no difference at the interval's
    level (p below ``1 - level``). With three slides the test never goes below 0.25, so three test slides
    alone never separate two models.

    Examples
    --------
    >>> beats({"model_a": "a", "model_b": "b", "low": 0.01, "high": 0.03, "p_value": 0.01, "level": 0.95})
    'a'
    >>> beats({"model_a": "a", "model_b": "b", "low": 0.01, "high": 0.03, "p_value": 0.25, "level": 0.95})
    ''
    >>> beats({"model_a": "a", "model_b": "b", "low": -0.03, "high": -0.01, "p_value": 0.01, "level": 0.95})
    'b'
    """
    if not comparison["p_value"] < 1.0 - comparison["level"]:
        return ""
    if comparison["low"] > 0:
        return comparison["model_a"]
    if comparison["high"] < 0:
        return comparison["model_b"]
    return ""


# --------------------------------------------------------------------------- sentences


def label(model: str) -> str:
    """A model's name as the paper writes it (without the "(our model)" tag)."""
    return MODEL_LABELS.get(model, model).replace(" (our model)", "")


def _metric_name(metric: str) -> str:
    return metric.upper()


def number_text(value: float, metric: str, signed: bool = False) -> str:
    """A metric's value as the sentences write it: PSNR to 1 decimal, the others to 3; ``n/a`` if not finite."""
    digits = 1 if metric == "psnr" else 3
    if value is None or not np.isfinite(value):
        return "n/a"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _split_name(role: str) -> str:
    return {"train": "training", "validation": "validation", "test": "test"}.get(role, role)


def comparison_sentence(comparisons: pd.DataFrame, model_a: str, model_b: str, role: str, metric: str) -> str:
    r"""One sentence on two models on one split and metric, as the data support it.

    "On the test SSIM, A beats B (...)" only where :func:`beats` says so; otherwise "On the test SSIM, A and B
    are not distinguishable on these data (...)". The brackets give the paired difference, its interval, the
    paired test's p-value and the slides behind them.

    Examples
    --------
    >>> c = pd.DataFrame([{"role": "test", "metric": "ssim", "model_a": "pix2pix", "model_b": "cyclegan",
    ...                    "difference": 0.02, "low": -0.01, "high": 0.05, "level": 0.95, "p_value": 0.25,
    ...                    "n_slides": 3, "n_replicates": 1, "verdict": ""}])
    >>> print(comparison_sentence(c, "cyclegan", "pix2pix", "test", "ssim").replace(" (", "\n("))
    On the test SSIM, Std. CycleGAN and Pix2Pix are not distinguishable on these data
    (Pix2Pix - Std. CycleGAN: +0.020, 95 % interval -0.010 to +0.050, paired test p = 0.25; 3 slides, 1 network each)
    """
    rows = comparisons[(comparisons["role"] == role) & (comparisons["metric"] == metric)
                       & (((comparisons["model_a"] == model_a) & (comparisons["model_b"] == model_b))
                          | ((comparisons["model_a"] == model_b) & (comparisons["model_b"] == model_a)))]
    where = f"the {_split_name(role)} {_metric_name(metric)}"
    if rows.empty:
        return f"{label(model_a)} and {label(model_b)} were not both measured on {where}"
    r = rows.iloc[0]
    better = "higher" if HIGHER_IS_BETTER[metric] else "lower"
    detail = (f"{label(r['model_a'])} - {label(r['model_b'])}: {number_text(r['difference'], metric, True)}"
              f"{'' if HIGHER_IS_BETTER[metric] else ' (lower LPIPS counted positive)'}, "
              f"{r['level'] * 100:.0f} % interval {number_text(r['low'], metric, True)} to "
              f"{number_text(r['high'], metric, True)}, "
              f"paired test p = {r['p_value']:.2g}; {int(r['n_slides'])} slides, "
              f"{int(r['n_replicates'])} network{'s' if r['n_replicates'] != 1 else ''} each")
    if r["verdict"]:
        winner, loser = r["verdict"], r["model_b"] if r["verdict"] == r["model_a"] else r["model_a"]
        return f"On {where}, {label(winner)} beats {label(loser)} ({better} is better; {detail})"
    return f"On {where}, {label(model_a)} and {label(model_b)} are {NOT_DISTINGUISHABLE} ({detail})"


def ranking_sentence(table: pd.DataFrame, comparisons: pd.DataFrame, role: str, metric: str,
                     models: Sequence[str] | None = None) -> str:
    """What the data say about the order of the models on one split and metric, in one sentence.

    The models are listed by their median (the order of the point estimates, which alone proves
    nothing), then every pair that :func:`beats` separates; all other pairs are not distinguishable.

    Parameters
    ----------
    table : pandas.DataFrame
        Table 1 (:func:`table1_over_folds`).
    comparisons : pandas.DataFrame
        :func:`paired_comparisons` of the same run.
    role, metric : str
    models : sequence of str, optional
        The models spoken of (default: every model of ``table`` but the raw-CT baseline).

    Examples
    --------
    >>> t = pd.DataFrame({"model": ["a", "b", "c"], "role": "test", "ssim": [0.5, 0.6, 0.2]})
    >>> c = pd.DataFrame([
    ...     {"role": "test", "metric": "ssim", "model_a": "a", "model_b": "b", "verdict": ""},
    ...     {"role": "test", "metric": "ssim", "model_a": "a", "model_b": "c", "verdict": "a"},
    ...     {"role": "test", "metric": "ssim", "model_a": "b", "model_b": "c", "verdict": "b"}])
    >>> ranking_sentence(t, c, "test", "ssim")
    'By median test SSIM: b, a, c. b beats c; a beats c; every other pair is not distinguishable on these data.'
    """
    order = ranking(table, role, metric)
    if models is not None:
        order = [m for m in order if m in set(models)]
    where = f"{_split_name(role)} {_metric_name(metric)}"
    if not order:
        return f"No model was measured on the {where}."
    rows = comparisons[(comparisons["role"] == role) & (comparisons["metric"] == metric)]
    wins = []
    for _, r in rows.iterrows():
        if r["verdict"] and r["model_a"] in order and r["model_b"] in order:
            loser = r["model_b"] if r["verdict"] == r["model_a"] else r["model_a"]
            wins.append((order.index(r["verdict"]), order.index(loser), f"{label(r['verdict'])} beats {label(loser)}"))
    n_pairs = len(order) * (len(order) - 1) // 2
    text = f"By median {where}: {', '.join(label(m) for m in order)}."
    if not wins:
        return text + (f" No two of them are distinguishable on these data." if n_pairs else "")
    wins.sort()
    rest = (" every other pair is " + NOT_DISTINGUISHABLE) if len(wins) < n_pairs else ""
    return text + " " + "; ".join(w for *_, w in wins) + (";" + rest if rest else "") + "."


def paper_rankings_check(comparisons: pd.DataFrame, roles: Sequence[str] = ROLES,
                         metrics: Sequence[str] = METRICS) -> pd.DataFrame:
    """Each ordering of two models in the paper's Table 1 against ours, by the book's rule.

    For every split, metric and pair of the paper's models that we measured: which the paper puts
    first, and whether our data ``agree`` (the same model beats the other), ``contradict`` (the other
    beats it) or are ``not distinguishable`` (:func:`beats`). The paper gives no intervals, so its
    order is taken as stated.

    Returns
    -------
    pandas.DataFrame
        ``role, metric, paper_better, paper_worse, ours`` (the sentence's verb), ``difference``, ``low``,
        ``high``, ``p_value``.

    Examples
    --------
    >>> c = pd.DataFrame([{"role": "test", "metric": "ssim", "model_a": "mod_cyclegan", "model_b": "pix2pix",
    ...                    "difference": 0.01, "low": 0.002, "high": 0.02, "p_value": 0.01, "level": 0.95,
    ...                    "verdict": "mod_cyclegan"}])
    >>> paper_rankings_check(c, ["test"], ["ssim"])[["paper_better", "paper_worse", "ours"]].values.tolist()
    [['mod_cyclegan', 'pix2pix', 'agree']]
    """
    paper = PAPER_TABLE1.set_index(["model", "role"])
    rows = []
    for _, r in comparisons.iterrows():
        role, metric, a, b = r["role"], r["metric"], r["model_a"], r["model_b"]
        if role not in roles or metric not in metrics or (a, role) not in paper.index or (b, role) not in paper.index:
            continue
        va, vb = paper.loc[(a, role), metric], paper.loc[(b, role), metric]
        if va == vb:
            continue  # the paper ties them: no order to check
        a_first = (va > vb) == HIGHER_IS_BETTER[metric]
        better, worse = (a, b) if a_first else (b, a)
        ours = "agree" if r["verdict"] == better else "contradict" if r["verdict"] == worse else NOT_DISTINGUISHABLE
        sign = 1.0 if better == a else -1.0
        rows.append({"role": role, "metric": metric, "paper_better": better, "paper_worse": worse, "ours": ours,
                     "difference": sign * r["difference"], "low": sign * (r["high"] if sign < 0 else r["low"]),
                     "high": sign * (r["low"] if sign < 0 else r["high"]), "p_value": r["p_value"]})
    return pd.DataFrame(rows, columns=["role", "metric", "paper_better", "paper_worse", "ours", "difference", "low",
                                       "high", "p_value"])


def paper_check_sentence(check: pd.DataFrame) -> str:
    r"""How many of the paper's orderings our data support, contradict or cannot tell, in one sentence.

    Examples
    --------
    >>> check = pd.DataFrame({"ours": ["agree", "contradict", NOT_DISTINGUISHABLE, NOT_DISTINGUISHABLE]})
    >>> print(paper_check_sentence(check).replace(", our", ",\nour"))
    Of the paper's 4 orderings of two models (per split and metric),
    our data support 1, contradict 1 and cannot tell 2 apart.
    """
    n = len(check)
    if not n:
        return "None of the paper's orderings of two models could be checked: no two of its models were measured."
    counts = check["ours"].value_counts()
    return (f"Of the paper's {n} orderings of two models (per split and metric), our data support "
            f"{int(counts.get('agree', 0))}, contradict {int(counts.get('contradict', 0))} and cannot tell "
            f"{int(counts.get(NOT_DISTINGUISHABLE, 0))} apart.")


# --------------------------------------------------------------------------- for the book


def _cell(value: Any, digits: int, low: Any = None, high: Any = None, rank: Any = None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    text = f"{value:.{digits}f}" if abs(value) < 100 else f"{value:.0f}"
    if low is not None and high is not None and np.isfinite(low) and np.isfinite(high):
        text += f" [{low:.{digits}f}, {high:.{digits}f}]"
    if rank is not None and not (isinstance(rank, float) and math.isnan(rank)):
        text += f" ({int(rank)})"
    return text


def table1_display(compared: pd.DataFrame, intervals: pd.DataFrame | None = None, digits: int = 2) -> pd.DataFrame:
    """Table 1 for the book: one row per model, columns (split, metric, ours / paper).

    Ours prints as ``0.61 [0.58, 0.63]`` with the bootstrap interval of :func:`table1_intervals` when
    ``intervals`` is given (no rank: which model beats which is :func:`ranking_sentence`'s to say); the
    paper's value with its rank in brackets, ``0.59 (1)``.

    Parameters
    ----------
    compared : pandas.DataFrame
        :func:`compare_with_paper`'s output.
    intervals : pandas.DataFrame, optional
        :func:`table1_intervals` of the same run.

    Examples
    --------
    >>> t = pd.DataFrame({"model": ["mod_cyclegan"], "role": ["test"], "ssim": [0.5], "lpips": [float("nan")],
    ...                   "psnr": [14.0], "n_patches": [9], "n_pairs": [3]})
    >>> shown = table1_display(compare_with_paper(t))
    >>> shown.loc["Mod. CycleGAN (our model)", ("test", "SSIM ↑", "paper")]
    '0.59 (1)'
    """
    bounds = {}
    if intervals is not None:
        for _, r in intervals.iterrows():
            bounds[(r["model"], r["role"], r["metric"])] = (r["low"], r["high"])
    rows: dict[str, dict] = {}
    for _, r in compared.iterrows():
        row = rows.setdefault(MODEL_LABELS.get(r["model"], r["model"]), {})
        for metric in METRICS:
            name = f"{metric.upper()} {'↑' if HIGHER_IS_BETTER[metric] else '↓'}"
            low, high = bounds.get((r["model"], r["role"], metric), (None, None))
            row[(r["role"], name, "ours")] = _cell(r[metric], digits, low, high)
            row[(r["role"], name, "paper")] = _cell(r[f"{metric}_paper"], digits, rank=r.get(f"{metric}_rank_paper"))
    table = pd.DataFrame.from_dict(rows, orient="index")
    order = [(role, f"{m.upper()} {'↑' if HIGHER_IS_BETTER[m] else '↓'}", who)
             for role in ROLES for m in METRICS for who in ("ours", "paper")]
    table = table.reindex(columns=[c for c in order if c in table.columns])
    table.columns = pd.MultiIndex.from_tuples(table.columns, names=["split", "metric", ""])
    return table


def read_evaluation(profile_name: str, root: str | Path | None = None) -> dict[str, Any]:
    """What the evaluation stage (``vstain evaluate``) wrote for a profile, read back for a chapter.

    Returns
    -------
    dict
        ``per_patch`` (every patch of every model, fold and split), ``table`` (Table 1 over the folds),
        ``by_fold``, ``intervals`` (:func:`table1_intervals`), ``comparisons`` (:func:`paired_comparisons`)
        and ``status`` (the evaluation's settings and LPIPS message).

    Raises
    ------
    FileNotFoundError
        Naming the first missing file and the command that writes it.
    """
    folder = evaluation_dir(profile_name, root)
    files = {"per_patch": "metrics_per_patch.csv", "table": "table1.csv", "by_fold": "table1_by_fold.csv",
             "intervals": "table1_intervals.csv", "comparisons": "comparisons.csv", "status": "evaluation.json"}
    for name in files.values():
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder / name}: not found; `vstain evaluate --profile {profile_name}` writes it")
    out: dict[str, Any] = {key: pd.read_csv(folder / name, dtype={"pair_id": str}, keep_default_na=True)
                           for key, name in files.items() if name.endswith(".csv")}
    out["comparisons"]["verdict"] = out["comparisons"]["verdict"].astype(object).fillna("").astype(str)
    out["status"] = json.loads((folder / files["status"]).read_text())
    return out

