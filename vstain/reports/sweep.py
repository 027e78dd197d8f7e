"""The misalignment sweep's tables and the sentences chapter 11 states from them (the paper's claim tested).

The sweep (:mod:`vstain.sweep`, the stage ``vstain sweep``) scores every network patch by patch on the same test
slides at every misalignment strength, against the prepared section (the paper's protocol) and against its
aligned twin. Its per-patch table has Table 1's shape (``model`` is the arm, ``role`` the target, ``seed`` the
replicate), so the same statistics serve it, strength by strength:

* :func:`sweep_intervals`: the median of each arm at each strength with its bootstrap interval over slides and
  seeds (:func:`vstain.reports.table1.table1_intervals`);
* :func:`sweep_comparisons`: two arms compared on the same slides and seeds at each strength (the interval of
  the mean paired difference and the paired sign-flip test, :func:`vstain.reports.table1.paired_comparisons`);
* :func:`strength_effect`: one arm at the strongest misalignment against itself without it (the same slides
  and seeds), and :func:`interaction`: whether misalignment costs one arm more than another (the difference
  of their paired differences), which is the paper's explanation put to the test;
* the sentences: :func:`claim_sentence` (where the modified CycleGAN overtakes Pix2Pix, or that it does not),
  :func:`ablation_sentence` (which of its terms carries the effect), :func:`interaction_sentence`, each by the
  book's rule (:func:`vstain.reports.table1.beats`): a difference is stated only where its interval excludes
  zero and the paired test agrees; otherwise "not distinguishable on these data".

Examples
--------
>>> import pandas as pd
>>> rows = [{"strength": s, "model": m, "seed": 0, "fold": 0, "pair_id": f"p{k}", "role": "section",
...          "ssim": 0.5 + (0.1 * s if m == "mod_cyclegan" else 0.0) + 0.01 * k}
...         for s in (0.0, 2.0) for m in ("mod_cyclegan", "pix2pix") for k in range(6)]
>>> c = sweep_comparisons(pd.DataFrame(rows), "mod_cyclegan", "pix2pix", n_boot=200)
>>> c[["strength", "role", "verdict"]].values.tolist()
[[0.0, 'section', ''], [2.0, 'section', 'mod_cyclegan']]
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from vstain.io import read_tiff
from vstain.layout import sweep_dir
from vstain.metrics import HIGHER_IS_BETTER, METRICS
from vstain.pairs import read_registered_pair
from vstain.reports.table1 import (BOOT_SEED, LEVEL, N_BOOT, NOT_DISTINGUISHABLE, beats, number_text,
                                   paired_comparisons, paired_difference, table1_intervals)
from vstain.sweep import TARGETS, ablation_arm, arm_label, level_name
from vstain.vocabulary import ABLATED_MODEL

#: How the chapter names the two targets.
TARGET_NAMES = {"section": "against the prepared section (the paper's protocol)",
                "twin": "against the aligned twin (the truth a user wants)"}
STRENGTH = "strength"


def _strengths(per_patch: pd.DataFrame) -> list[float]:
    if STRENGTH not in per_patch.columns:
        raise ValueError(f"sweep per-patch table: missing column {STRENGTH!r}")
    return sorted(float(s) for s in per_patch[STRENGTH].unique())


def sweep_intervals(per_patch: pd.DataFrame, *, n_boot: int = N_BOOT, level: float = LEVEL,
                    seed: int = BOOT_SEED) -> pd.DataFrame:
    """Each arm's median per strength, target and metric with its bootstrap interval over slides and seeds.

    Returns
    -------
    pandas.DataFrame
        ``strength, model, role, metric, estimate, low, high, level, n_slides, n_replicates`` (``role`` is the
        target; ``level`` the interval's coverage).
    """
    tables = []
    for strength in _strengths(per_patch):
        part = per_patch[per_patch[STRENGTH] == strength]
        table = table1_intervals(part, n_boot=n_boot, level=level, seed=seed)
        table.insert(0, STRENGTH, strength)
        tables.append(table)
    return pd.concat(tables, ignore_index=True)


def sweep_comparisons(per_patch: pd.DataFrame, model_a: str, model_b: str, *, n_boot: int = N_BOOT,
                      level: float = LEVEL, seed: int = BOOT_SEED) -> pd.DataFrame:
    """Two arms compared at every strength where both ran, per target and metric.

    Returns
    -------
    pandas.DataFrame
        ``strength`` and the columns of :func:`vstain.reports.table1.paired_comparisons` (``role`` is the target;
        a positive ``difference`` favours the row's ``model_a``).
    """
    tables = []
    for strength in _strengths(per_patch):
        part = per_patch[(per_patch[STRENGTH] == strength) & per_patch["model"].isin([model_a, model_b])]
        if set(part["model"]) != {model_a, model_b}:
            continue
        table = paired_comparisons(part, [model_a, model_b], n_boot=n_boot, level=level, seed=seed)
        table.insert(0, STRENGTH, strength)
        tables.append(table)
    columns = [STRENGTH, "role", "metric", "model_a", "model_b", "difference", "low", "high", "level", "p_value",
               "n_slides", "n_replicates", "verdict"]
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=columns)


def _slide_medians(per_patch: pd.DataFrame, metric: str) -> pd.Series:
    """``(strength, model, role, seed, pair_id) -> median over the slide's patches``."""
    keys = [STRENGTH, "model", "role", "seed", "pair_id"]
    return per_patch.dropna(subset=[metric]).groupby(keys)[metric].median()


def _span(per_patch: pd.DataFrame, low: float | None, high: float | None) -> tuple[float, float]:
    """The two strengths compared: the given ones, else the weakest and the strongest swept."""
    strengths = _strengths(per_patch)
    return (strengths[0] if low is None else float(low)), (strengths[-1] if high is None else float(high))


def _measured_metrics(per_patch: pd.DataFrame) -> list[str]:
    """The metrics with at least one value (LPIPS is empty without its weights)."""
    return [m for m in METRICS if m in per_patch.columns and per_patch[m].notna().any()]


def strength_effect(per_patch: pd.DataFrame, models: Sequence[str], *, low: float | None = None,
                    high: float | None = None, n_boot: int = N_BOOT, level: float = LEVEL,
                    seed: int = BOOT_SEED) -> pd.DataFrame:
    """What misalignment costs each arm: its score at strength ``high`` minus at ``low`` on the same slides and seeds.

    The sweep cuts the same blocks and trains with the same seeds at every strength, so a slide's score at two
    strengths is a pair. Defaults: the weakest and the strongest swept.

    Returns
    -------
    pandas.DataFrame
        ``model, role, metric, low_strength, high_strength, difference, low, high, level, p_value, n_slides,
        n_replicates, verdict`` (``difference`` = high - low, signed so that positive is better; ``verdict`` is
        ``"better"`` or ``"worse"`` where the book's rule separates the two strengths, else ``""``).
    """
    low, high = _span(per_patch, low, high)
    rows = []
    for metric in _measured_metrics(per_patch):
        medians = _slide_medians(per_patch, metric)
        sign = 1.0 if HIGHER_IS_BETTER[metric] else -1.0
        for model in models:
            for role in TARGETS:
                try:
                    a, b = medians.loc[(high, model, role)], medians.loc[(low, model, role)]
                except KeyError:
                    continue
                shared = a.index.intersection(b.index)
                cells = {key: sign * float(a[key] - b[key]) for key in shared}
                row = {"model": model, "role": role, "metric": metric, "low_strength": low, "high_strength": high,
                       **paired_difference(cells, n_boot=n_boot, level=level, seed=seed)}
                verdict = beats({**row, "model_a": "better", "model_b": "worse"})
                rows.append({**row, "verdict": verdict})
    return pd.DataFrame(rows)


def interaction(per_patch: pd.DataFrame, model_a: str, model_b: str, *, low: float | None = None,
                high: float | None = None, n_boot: int = N_BOOT, level: float = LEVEL,
                seed: int = BOOT_SEED) -> pd.DataFrame:
    """Whether misalignment costs ``model_b`` more than ``model_a``: the change of their paired difference.

    Per seed and slide: ``(a - b at high) - (a - b at low)``, signed so that positive favours ``model_a`` (it
    gains on ``model_b`` as the misalignment grows). The paper's explanation predicts a positive value for the
    modified CycleGAN against Pix2Pix against the section.

    Returns
    -------
    pandas.DataFrame
        ``role, metric, model_a, model_b, low_strength, high_strength, difference, low, high, level, p_value,
        n_slides, n_replicates, verdict`` (``verdict``: ``model_a`` or ``model_b`` where the gain is separated from
        zero by the book's rule, else ``""``).
    """
    low, high = _span(per_patch, low, high)
    rows = []
    for metric in _measured_metrics(per_patch):
        medians = _slide_medians(per_patch, metric)
        sign = 1.0 if HIGHER_IS_BETTER[metric] else -1.0
        for role in TARGETS:
            try:
                parts = [medians.loc[(s, m, role)] for s in (high, low) for m in (model_a, model_b)]
            except KeyError:
                continue
            shared = parts[0].index
            for part in parts[1:]:
                shared = shared.intersection(part.index)
            cells = {key: sign * float((parts[0][key] - parts[1][key]) - (parts[2][key] - parts[3][key]))
                     for key in shared}
            row = {"role": role, "metric": metric, "model_a": model_a, "model_b": model_b, "low_strength": low,
                   "high_strength": high, **paired_difference(cells, n_boot=n_boot, level=level, seed=seed)}
            rows.append({**row, "verdict": beats(row)})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- sentences


def _detail(row: Any, metric: str) -> str:
    """The brackets of a sentence: difference, interval, p-value, slides and seeds."""
    unit = " dB" if metric == "psnr" else ""
    return (f"{number_text(row['difference'], metric, signed=True)}{unit}, {row['level'] * 100:.0f} % interval "
            f"{number_text(row['low'], metric, signed=True)} to {number_text(row['high'], metric, signed=True)}, paired test p = {row['p_value']:.2g}; "
            f"{int(row['n_slides'])} slides x {int(row['n_replicates'])} seeds")


def _strength_list(strengths: Sequence[float]) -> str:
    names = [level_name(s) for s in strengths]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def claim_verdicts(comparisons: pd.DataFrame, model_a: str, model_b: str, role: str, metric: str) -> pd.DataFrame:
    """One row per strength: the paired difference ``model_a - model_b`` and who wins by the book's rule.

    Returns
    -------
    pandas.DataFrame
        ``strength, difference, low, high, p_value, n_slides, n_replicates, winner`` (``winner`` an arm or ``""``),
        the difference signed so that positive favours ``model_a``.
    """
    rows = comparisons[(comparisons["role"] == role) & (comparisons["metric"] == metric)
                       & comparisons["model_a"].isin([model_a, model_b])
                       & comparisons["model_b"].isin([model_a, model_b])]
    out = []
    for _, r in rows.sort_values(STRENGTH).iterrows():
        flip = r["model_a"] != model_a
        out.append({STRENGTH: float(r[STRENGTH]),
                    "difference": -r["difference"] if flip else r["difference"],
                    "low": -r["high"] if flip else r["low"], "high": -r["low"] if flip else r["high"],
                    "level": r["level"], "p_value": r["p_value"], "n_slides": r["n_slides"],
                    "n_replicates": r["n_replicates"], "winner": r["verdict"]})
    return pd.DataFrame(out, columns=[STRENGTH, "difference", "low", "high", "level", "p_value", "n_slides",
                                      "n_replicates", "winner"])


def claim_sentence(comparisons: pd.DataFrame, role: str, metric: str, model_a: str = "mod_cyclegan",
                   model_b: str = "pix2pix") -> str:
    """Where ``model_a`` overtakes ``model_b`` across the strengths, or that it does not, as the data support it.

    "Overtakes from strength s on" only where ``model_a`` beats ``model_b`` at ``s`` and at every stronger
    misalignment (and not at the weakest); otherwise the strengths where either wins, and the rest "not
    distinguishable on these data". Each strength's difference follows in brackets.

    Examples
    --------
    >>> c = pd.DataFrame([{"strength": s, "role": "section", "metric": "ssim", "model_a": "mod_cyclegan",
    ...                    "model_b": "pix2pix", "difference": d, "low": d - 0.01, "high": d + 0.01, "level": 0.95,
    ...                    "p_value": p, "n_slides": 6, "n_replicates": 3, "verdict": v}
    ...                   for s, d, p, v in ((0.0, 0.0, 0.9, ""), (1.0, 0.05, 0.03, "mod_cyclegan"),
    ...                                      (2.0, 0.08, 0.03, "mod_cyclegan"))])
    >>> claim_sentence(c, "section", "ssim").split(" (")[0]
    'Against the prepared section, by SSIM, Mod. CycleGAN overtakes Pix2Pix from misalignment strength 1 on'
    """
    table = claim_verdicts(comparisons, model_a, model_b, role, metric)
    where = f"{TARGET_NAMES[role].split(' (')[0].capitalize()}, by {metric.upper()}"
    a, b = arm_label(model_a), arm_label(model_b)
    if table.empty:
        return f"{where}, {a} and {b} were not both measured at any strength"
    details = "; ".join(f"strength {level_name(r[STRENGTH])}: {a} - {b} {_detail(r, metric)}"
                        for _, r in table.iterrows())
    wins_a = [r[STRENGTH] for _, r in table.iterrows() if r["winner"] == model_a]
    wins_b = [r[STRENGTH] for _, r in table.iterrows() if r["winner"] == model_b]
    strengths = table[STRENGTH].tolist()
    if wins_a and not wins_b and wins_a == strengths[strengths.index(wins_a[0]):] and wins_a[0] != strengths[0]:
        head = f"{a} overtakes {b} from misalignment strength {level_name(wins_a[0])} on"
    elif wins_a and len(wins_a) == len(strengths):
        head = f"{a} beats {b} at every misalignment strength swept"
    elif not wins_a and not wins_b:
        head = f"{a} and {b} are {NOT_DISTINGUISHABLE} at any misalignment strength swept"
    else:
        parts = []
        if wins_a:
            parts.append(f"{a} beats {b} at strength {_strength_list(wins_a)}")
        if wins_b:
            parts.append(f"{b} beats {a} at strength {_strength_list(wins_b)}")
        rest = [s for s in strengths if s not in wins_a + wins_b]
        if rest:
            parts.append(f"at {_strength_list(rest)} they are {NOT_DISTINGUISHABLE}")
        head = "; ".join(parts)
    return f"{where}, {head} ({details})"


def ablation_sentence(comparisons: pd.DataFrame, role: str, metric: str, ablations: Sequence[str]) -> str:
    """Which of the modified CycleGAN's terms carries the effect at the ablation strength, as the data support it.

    ``comparisons`` holds the full model against each ablated arm at that strength (:func:`sweep_comparisons`).
    A term "carries" an effect where the full model beats the arm without it by the book's rule.
    """
    rows = comparisons[(comparisons["role"] == role) & (comparisons["metric"] == metric)]
    where = f"{TARGET_NAMES[role].split(' (')[0].capitalize()}, by {metric.upper()}"
    parts, carried = [], []
    for ablation in ablations:
        arm = ablation_arm(ablation)
        row = rows[((rows["model_a"] == ABLATED_MODEL) & (rows["model_b"] == arm))]
        if row.empty:
            continue
        r = row.iloc[0]
        term = ablation.removeprefix("no_").replace("_no_", " and ").replace("px", "L_px").replace("gs", "L_gs")
        if r["verdict"] == ABLATED_MODEL:
            verdict = f"taking out {term} makes it worse"
            carried.append(term)
        elif r["verdict"] == arm:
            verdict = f"taking out {term} makes it better"
        else:
            verdict = f"with and without {term} it is {NOT_DISTINGUISHABLE}"
        parts.append(f"{verdict} (full - without: {_detail(r, metric)})")
    if not parts:
        return f"{where}: no ablation was measured"
    strength = level_name(float(rows[STRENGTH].iloc[0])) if len(rows) else "?"
    lead = (f"{' and '.join(carried)} {'carries' if len(carried) == 1 else 'carry'} the modified CycleGAN's score"
            if carried else "no single term measurably carries the modified CycleGAN's score")
    return f"{where}, at strength {strength}, {lead}: " + "; ".join(parts)


def interaction_sentence(table: pd.DataFrame, role: str, metric: str) -> str:
    """Whether misalignment costs one model more than the other (:func:`interaction`), as the data support it."""
    rows = table[(table["role"] == role) & (table["metric"] == metric)]
    if rows.empty:
        return f"{TARGET_NAMES[role].split(' (')[0].capitalize()}: not measured"
    r = rows.iloc[0]
    a, b = arm_label(r["model_a"]), arm_label(r["model_b"])
    span = f"from strength {level_name(r['low_strength'])} to {level_name(r['high_strength'])}"
    where = f"{TARGET_NAMES[role].split(' (')[0].capitalize()}, by {metric.upper()}"
    if r["verdict"] == r["model_a"]:
        head = f"{a} gains on {b} {span}"
    elif r["verdict"] == r["model_b"]:
        head = f"{b} gains on {a} {span}"
    else:
        head = f"the gap between {a} and {b} does not measurably change {span} ({NOT_DISTINGUISHABLE})"
    return f"{where}, {head} (change of {a} - {b}: {_detail(r, metric)})"


# --------------------------------------------------------------------------- reading the stage's results


def read_sweep(profile_name: str, root: str | Path | None = None) -> dict[str, Any]:
    """What ``vstain sweep`` wrote for a profile: ``per_patch``, ``runs`` (training time) and ``status``.

    Raises
    ------
    FileNotFoundError
        Naming the first missing file and the command that writes it.
    """
    folder = sweep_dir(profile_name, root)
    files = {"per_patch": "per_patch.csv", "runs": "runs.csv", "status": "done.json"}
    for name in files.values():
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder / name}: not found; `vstain sweep --profile {profile_name}` writes it")
    out: dict[str, Any] = {key: pd.read_csv(folder / name, dtype={"pair_id": str})
                           for key, name in files.items() if name.endswith(".csv")}
    out["status"] = json.loads((folder / files["status"]).read_text())
    return out


def sweep_examples(profile_name: str, pair_id: str | None = None, *, arms: Sequence[str] = (), seed: int = 0,
                   root: str | Path | None = None) -> dict[float, dict[str, Any]]:
    """One test slide at every strength: its CT, prepared section, aligned twin, mask and the arms' stains.

    Parameters
    ----------
    profile_name : str
    pair_id : str, optional
        A test slide of the sweep (default: the first, whose stains every run keeps).
    arms : sequence of str
        Arms whose stain of the first test slide (seed ``seed``) to include, where they ran.

    Returns
    -------
    dict
        ``strength -> {"ct", "section", "twin", "mask", "pair_id", "stains": {arm: image}}``.
    """
    folder = sweep_dir(profile_name, root)
    out: dict[float, dict[str, Any]] = {}
    for data in sorted(folder.glob("level*/data.json"), key=lambda p: float(p.parent.name.removeprefix("level"))):
        strength = float(data.parent.name.removeprefix("level"))
        slides = [s["pair_id"] for s in json.loads(data.read_text())["slides"] if s["role"] == "test"]
        chosen = pair_id or slides[0]
        if chosen not in slides:
            raise ValueError(f"{data}: no test slide {chosen!r}; test slides: {', '.join(slides)}")
        section = read_registered_pair(data.parent / "data" / "section" / chosen)
        twin = read_registered_pair(data.parent / "data" / "twin" / chosen)
        stains = {}
        for arm in arms:
            path = data.parent / arm / f"seed{seed}" / "example_stain.tif"
            if path.is_file() and chosen == slides[0]:
                stains[arm] = read_tiff(path)[0]
        out[strength] = {"pair_id": chosen, "ct": section.ct, "section": section.histology, "twin": twin.histology,
                         "mask": section.mask, "stains": stains}
    if not out:
        raise FileNotFoundError(f"{folder}: no sweep slides; `vstain sweep --profile {profile_name}` writes them")
    return out
