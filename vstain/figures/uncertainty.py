"""Figures of the uncertainty chapter: uncertainty beside error, the reliability curve, orthogonal views.

Examples
--------
>>> import matplotlib; matplotlib.use("Agg")
>>> import numpy as np, pandas as pd
>>> curve = pd.DataFrame({"role": "test", "source": "tta", "uncertainty": [0.1, 0.2], "error": [0.2, 0.5]})
>>> fig = plot_reliability(curve)
>>> fig.axes[0].get_xlabel()
'mean uncertainty in the bin (Delta E)'
"""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from vstain.volume import orthogonal_views

#: One colour per source of uncertainty, the same in every figure (a map around the runs' mean, ``<source>_mean``,
#: is drawn in its source's colour with dashes or open markers).
SOURCE_COLOURS = {"ensemble": "tab:blue", "tta": "tab:orange", "tiling": "tab:green", "combined": "tab:red",
                  "mix": "tab:purple"}


def _name_column(table: pd.DataFrame) -> str:
    """The column naming the maps: ``map`` (the stage's tables), else ``source``."""
    return "map" if "map" in table.columns else "source"


def map_colour(name: str) -> str | None:
    """The colour of a map: its source's (``tta_mean`` is drawn as ``tta``).

    Examples
    --------
    >>> map_colour("tta_mean"), map_colour("mix")
    ('tab:orange', 'tab:purple')
    """
    return SOURCE_COLOURS.get(name.removesuffix("_mean"))
#: Colour map of uncertainty and error maps (dark: trusted, bright: doubtful).
MAP_CMAP = "magma"


def _colourbar(fig: Figure, ax, image, label: str) -> None:
    bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02)
    bar.set_label(label)


def _top(maps: Sequence[np.ndarray]) -> float:
    """The 99th percentile of the values of several maps: the top of their colour scale."""
    values = np.concatenate([np.ravel(m) for m in maps if np.size(m)] or [np.zeros(1)])
    return float(np.percentile(values, 99)) or 1.0


def plot_uncertainty_beside_error(slides: Sequence[Mapping[str, object]]) -> Figure:
    """Per slide one row: CT, true stain, stain, its uncertainty, its actual error.

    Uncertainty and error each have one colour scale over all slides (0 to the 99th percentile
    inside the masks): the maps show where, the reliability plot how much.

    Parameters
    ----------
    slides : sequence of dict
        Each with ``title``, ``ct`` (Y, X), ``truth``, ``stain`` (Y, X, 3 uint8), ``uncertainty``,
        ``error`` (Y, X, Delta E) and ``mask`` (Y, X bool; outside is greyed).

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> z = np.zeros((8, 8)); rgb = np.zeros((8, 8, 3), np.uint8)
    >>> fig = plot_uncertainty_beside_error([{"title": "p", "ct": z, "truth": rgb, "stain": rgb,
    ...                                        "uncertainty": z, "error": z, "mask": z > -1}])
    >>> [ax.get_title() for ax in fig.axes[:5]]
    ['p: CT', 'true stain', 'stain', 'uncertainty (Delta E)', 'actual error (Delta E)']
    """
    tops = {name: _top([np.asarray(s[name])[np.asarray(s["mask"], bool)] for s in slides])
            for name in ("uncertainty", "error")}
    fig, axes = plt.subplots(len(slides), 5, figsize=(16, 3.3 * len(slides)), squeeze=False)
    for r, slide in enumerate(slides):
        mask = np.asarray(slide["mask"], bool)
        panels = [(f"{slide['title']}: CT", slide["ct"], "gray"), ("true stain", slide["truth"], None),
                  ("stain", slide["stain"], None)]
        for c, (title, image, cmap) in enumerate(panels):
            axes[r, c].imshow(image, cmap=cmap)
            axes[r, c].set_title(title)
        maps = (("uncertainty (Delta E)", "uncertainty"), ("actual error (Delta E)", "error"))
        for c, (title, name) in enumerate(maps, 3):
            shown = np.ma.masked_array(np.asarray(slide[name], float), ~mask)
            image = axes[r, c].imshow(shown, cmap=MAP_CMAP, vmin=0, vmax=tops[name])
            axes[r, c].set_facecolor("0.85")
            axes[r, c].set_title(title)
            _colourbar(fig, axes[r, c], image, "Delta E (CIE76)")
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    return fig


def plot_reliability(curve: pd.DataFrame, threshold: float | None = None) -> Figure:
    """Mean actual error against mean uncertainty per uncertainty bin, one line per map, one panel per role.

    Parameters
    ----------
    curve : DataFrame
        The stage's ``reliability.csv``: ``role, map, uncertainty, error`` (or ``source`` for ``map``).
    threshold : float, optional
        The error threshold of the AUROC, drawn as a dashed line.
    """
    roles = list(dict.fromkeys(curve["role"]))
    fig, axes = plt.subplots(1, len(roles), figsize=(5.5 * len(roles), 4.2), squeeze=False, sharey=True)
    for ax, role in zip(axes[0], roles):
        part = curve[curve["role"] == role]
        top = 0.0
        for name, rows in part.groupby(_name_column(curve), sort=False):
            style = "o--" if name.endswith("_mean") else "o-"
            ax.plot(rows["uncertainty"], rows["error"], style, color=map_colour(name), label=name)
            top = max(top, float(rows["uncertainty"].max()))
        ax.plot([0, top], [0, top], ":", color="0.5", label="error = uncertainty")
        if threshold is not None:
            ax.axhline(threshold, ls="--", color="0.3", lw=1, label=f"error threshold {threshold:g}")
        ax.set_xlabel("mean uncertainty in the bin (Delta E)")
        ax.set_title(f"{role} slides")
        ax.legend(fontsize=8)
    axes[0, 0].set_ylabel("mean actual error (Delta E)")
    fig.tight_layout()
    return fig


def plot_source_scores(slides: pd.DataFrame) -> Figure:
    """Rank correlation and AUROC of each map (or source), one point per slide (validation and test).

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> t = pd.DataFrame({"source": ["tta", "tta"], "role": ["test", "validation"], "spearman": [0.3, 0.4],
    ...                   "auroc": [0.7, 0.8]})
    >>> [ax.get_ylabel() for ax in plot_source_scores(t).axes]
    ['Spearman rank correlation', 'AUROC (error > threshold)']
    """
    scored = slides.dropna(subset=["spearman"])
    key = _name_column(scored)
    sources = list(dict.fromkeys(scored[key]))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    markers = {"validation": "o", "test": "s"}
    for ax, column, label in ((axes[0], "spearman", "Spearman rank correlation"),
                              (axes[1], "auroc", "AUROC (error > threshold)")):
        for i, source in enumerate(sources):
            for role, rows in scored[scored[key] == source].groupby("role"):
                jitter = np.linspace(-0.12, 0.12, len(rows)) if len(rows) > 1 else np.zeros(1)
                ax.scatter(i + jitter, rows[column], marker=markers.get(role, "o"), color=map_colour(source),
                           label=role if i == 0 else None, edgecolor="k", linewidth=0.5)
        ax.set_xticks(range(len(sources)), sources, rotation=30, ha="right")
        ax.set_ylabel(label)
        if column == "auroc":
            ax.axhline(0.5, ls=":", color="0.5")
        else:
            ax.axhline(0.0, ls=":", color="0.5")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_uncertainty_views(stain: np.ndarray, uncertainty: np.ndarray, error: np.ndarray,
                           voxel_size_um: Sequence[float], inside: np.ndarray | None = None) -> Figure:
    """Orthogonal XY, XZ, YZ planes of a stained volume, its uncertainty and its actual error.

    Uncertainty and error each have their own colour scale, 0 to the 99th percentile (inside
    ``inside``, a boolean volume, when given).

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> fig = plot_uncertainty_views(np.zeros((4, 6, 8, 3), np.uint8), np.zeros((4, 6, 8)), np.zeros((4, 6, 8)),
    ...                              (2.0, 1.0, 1.0))
    >>> fig.axes[3].get_title()
    'uncertainty: XY'
    """
    select = (lambda v: v[inside]) if inside is not None else (lambda v: v)
    rows = (("stain", stain, None, None), ("uncertainty", uncertainty, MAP_CMAP, _top([select(uncertainty)])),
            ("actual error", error, MAP_CMAP, _top([select(error)])))
    fig, axes = plt.subplots(3, 3, figsize=(11, 9), squeeze=False)
    for r, (name, volume, cmap, vmax) in enumerate(rows):
        for c, (view, image) in enumerate(orthogonal_views(volume).items()):
            shown = axes[r, c].imshow(image, cmap=cmap, vmin=0 if cmap else None, vmax=vmax if cmap else None,
                                      aspect=voxel_size_um[0] / voxel_size_um[1] if view != "xy" else 1)
            axes[r, c].set_title(f"{name}: {view.upper()}")
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
            if cmap and c == 2:
                _colourbar(fig, axes[r, c], shown, "Delta E (CIE76)")
    fig.tight_layout()
    return fig
