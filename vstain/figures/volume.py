"""Figures of the 3D chapter (paper Fig. 8): orthogonal views, volume renderings, stripe scores.

Examples
--------
>>> import matplotlib; matplotlib.use("Agg")
>>> import numpy as np
>>> fig = plot_orthogonal_views({"truth": np.zeros((4, 6, 8, 3), np.uint8)}, (2.0, 1.0, 1.0))
>>> [ax.get_title() for ax in fig.axes]
['truth: XY', 'truth: XZ', 'truth: YZ']
"""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from vstain.volume import orthogonal_views


def plot_orthogonal_views(volumes: Mapping[str, np.ndarray], voxel_size_um: Sequence[float], *,
                          insets: Mapping[str, np.ndarray] | None = None, inset_fraction: float = 0.4) -> Figure:
    """The XY, XZ and YZ planes through the centre of each volume, one row per volume (Fig. 8a-c).

    Parameters
    ----------
    volumes : dict
        ``name -> (Z, Y, X)`` greyscale or ``(Z, Y, X, 3)`` RGB volume, in row order.
    voxel_size_um : (z, y, x)
        The XZ and YZ planes are drawn with the aspect ratio ``z / y``.
    insets : dict, optional
        ``name -> image`` (greyscale or RGB) shown in the bottom-left corner of that row's XY
        view, as the paper's Figure 8a shows the real histology of the sample.
    inset_fraction : float
        The inset's box as a fraction of the XY view's width and height (the image keeps its
        aspect ratio inside it, anchored bottom-left).

    Returns
    -------
    matplotlib.figure.Figure
        Three panels per volume; each inset is a child axes of its XY panel.
    """
    insets = dict(insets or {})
    unknown = set(insets) - set(volumes)
    if unknown:
        raise ValueError(f"insets name volumes that are not shown: {sorted(unknown)}; volumes: {list(volumes)}")
    if not 0 < inset_fraction <= 1:
        raise ValueError(f"inset_fraction must be in (0, 1], got {inset_fraction}")
    fig, axes = plt.subplots(len(volumes), 3, figsize=(10, 3 * len(volumes)), squeeze=False)
    for r, (name, vol) in enumerate(volumes.items()):
        for c, (view, image) in enumerate(orthogonal_views(vol).items()):
            axes[r, c].imshow(image, cmap="gray" if image.ndim == 2 else None,
                              aspect=voxel_size_um[0] / voxel_size_um[1] if view != "xy" else 1)
            axes[r, c].set_title(f"{name}: {view.upper()}")
            axes[r, c].axis("off")
        if name in insets:
            inset = axes[r, 0].inset_axes([0.0, 0.0, inset_fraction, inset_fraction])
            picture = np.asarray(insets[name])
            inset.imshow(picture, cmap="gray" if picture.ndim == 2 else None, interpolation="nearest")
            inset.set_anchor("SW")
            inset.set_xticks([])
            inset.set_yticks([])
            for spine in inset.spines.values():
                spine.set_edgecolor("white")
                spine.set_linewidth(1.5)
    fig.tight_layout()
    return fig


def plot_renderings(images: Mapping[str, np.ndarray | None], status: Mapping[str, str]) -> Figure:
    """Volume renderings side by side; where one is missing, the reason it was skipped.

    Parameters
    ----------
    images : dict
        ``variant -> image`` (``None`` where no rendering exists), in column order.
    status : dict
        ``variant -> "rendered"`` or ``"skipped: <reason>"`` (the stage's ``done.json``).

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> fig = plot_renderings({"z": None}, {"z": "skipped: no OpenGL"})
    >>> fig.axes[0].get_title()
    'z: skipped'
    """
    fig, axes = plt.subplots(1, len(images), figsize=(5 * len(images), 5), squeeze=False)
    for ax, (name, image) in zip(axes[0], images.items()):
        if image is not None:
            ax.imshow(image)
        else:
            ax.text(0.5, 0.5, status[name], ha="center", va="center", wrap=True)
        ax.set_title(f"{name}: {status[name].split(':')[0]}")
        ax.axis("off")
    return fig


def plot_stripe_scores(metrics: pd.DataFrame) -> Figure:
    """Stripe score along Z, Y and X per variant (the volume stage's ``metrics.csv``).

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> m = pd.DataFrame({"variant": ["truth"], "stripe_z": [1.0], "stripe_y": [1.0], "stripe_x": [1.0]})
    >>> plot_stripe_scores(m).axes[0].get_ylabel()
    'stripe score'
    """
    fig, ax = plt.subplots(figsize=(6, 3.5))
    metrics.set_index("variant")[["stripe_z", "stripe_y", "stripe_x"]].plot.bar(ax=ax, rot=0)
    ax.set_ylabel("stripe score")
    return fig
