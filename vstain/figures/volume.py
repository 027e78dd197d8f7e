"""Figures of the 3D chapter (paper Fig. 8): orthogonal views, volume renderings, stripe scores, a slice browser.

Examples
--------
>>> import matplotlib; matplotlib.use("Agg")
>>> import numpy as np
>>> fig = plot_orthogonal_views({"truth": np.zeros((4, 6, 8, 3), np.uint8)}, (2.0, 1.0, 1.0))
>>> [ax.get_title() for ax in fig.axes]
['truth: XY', 'truth: XZ', 'truth: YZ']
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
from typing import Callable, Mapping, Sequence

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


def _browser_panel(volume: np.ndarray, colormap: str) -> tuple[Callable[[int], np.ndarray], int]:
    """A function from slice index to ``(Y, X, 3)`` uint8 of one panel, and the panel's depth.

    RGB volumes ``(Z, Y, X, 3)`` are shown as they are; greyscale ones ``(Z, Y, X)`` through
    ``colormap``, scaled between the 1st and 99th percentiles of a few slices (so a bright screw
    does not grey out the rest).
    """
    volume = np.asarray(volume)
    if volume.ndim == 4 and volume.shape[-1] == 3:
        if volume.dtype != np.uint8:
            raise ValueError(f"an RGB panel must be uint8, got {volume.dtype}")
        return (lambda z: volume[z]), volume.shape[0]
    if volume.ndim != 3:
        raise ValueError(f"a panel must be (Z, Y, X) or (Z, Y, X, 3), got shape {volume.shape}")
    picks = np.linspace(0, volume.shape[0] - 1, min(8, volume.shape[0])).astype(int)
    sample = np.asarray(volume[picks], np.float64)
    sample = sample[np.isfinite(sample)]
    low, high = (np.percentile(sample, (1, 99)) if sample.size else (0.0, 1.0))
    mapping = plt.get_cmap(colormap)

    def render(z: int) -> np.ndarray:
        scaled = np.clip((np.nan_to_num(volume[z].astype(np.float64)) - low) / max(high - low, 1e-12), 0, 1)
        return (mapping(scaled)[..., :3] * 255).round().astype(np.uint8)

    return render, volume.shape[0]


def slice_browser_html(panels: Mapping[str, np.ndarray], *, n_frames: int = 24, max_px: int = 256,
                       colormaps: Mapping[str, str] | None = None, title: str = "slice") -> str:
    """A slider over Z showing the panels side by side, as self-contained HTML (no server, no widgets).

    Each of ``n_frames`` slices spread evenly over the depth is drawn once, every panel shrunk by
    a whole stride to at most ``max_px`` on its longer side, and embedded as a PNG; a few lines of
    plain JavaScript swap the picture as the slider moves, so the page works in a static book
    opened offline.

    Parameters
    ----------
    panels : mapping of name to array
        Volumes of one depth and slice shape: RGB ``(Z, Y, X, 3)`` uint8 (a stain) or greyscale
        ``(Z, Y, X)`` (the CT, an uncertainty map), left to right.
    n_frames : int
        Slices offered (all of them when the volume is shallower).
    max_px : int
        Longer side of a panel in the page, in pixels.
    colormaps : mapping of name to matplotlib colormap, optional
        For greyscale panels (default ``gray``; e.g. ``{"uncertainty": "magma"}``).
    title : str
        What the slider's label calls a slice.

    Returns
    -------
    str
        An HTML fragment: ``IPython.display.HTML(...)`` shows it in a notebook and in the built book.

    Examples
    --------
    >>> import numpy as np
    >>> ct = np.random.default_rng(0).normal(size=(10, 32, 40))
    >>> stain = np.zeros((10, 32, 40, 3), np.uint8)
    >>> page = slice_browser_html({"CT": ct, "stain": stain}, n_frames=5)
    >>> page.count("data:image/png;base64,"), 'type="range"' in page  # 5 frames and the one shown first
    (6, True)
    """
    if not panels:
        raise ValueError("slice_browser_html: give at least one panel")
    colormaps = dict(colormaps or {})
    renders = {name: _browser_panel(volume, colormaps.get(name, "gray")) for name, volume in panels.items()}
    depths = {depth for _, depth in renders.values()}
    shapes = {np.shape(volume)[1:3] for volume in panels.values()}
    if len(depths) != 1 or len(shapes) != 1:
        raise ValueError(f"slice_browser_html: the panels differ in shape: "
                         f"{ {name: np.shape(volume) for name, volume in panels.items()} }")
    depth, (height, width) = depths.pop(), shapes.pop()
    stride = max(1, -(-max(height, width) // int(max_px)))
    slices = sorted({int(round(z)) for z in np.linspace(0, depth - 1, min(int(n_frames), depth))})
    gap = np.full((-(-height // stride), 4, 3), 255, np.uint8)
    frames = []
    for z in slices:
        tiles = []
        for render, _ in renders.values():
            tiles += [render(z)[::stride, ::stride], gap]
        buffer = io.BytesIO()
        plt.imsave(buffer, np.concatenate(tiles[:-1], axis=1), format="png")
        frames.append("data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii"))
    key = "vstain-browser-" + hashlib.sha1("".join(frames).encode()).hexdigest()[:12]
    names = " | ".join(html.escape(name) for name in panels)
    start = len(slices) // 2
    return (
        f'<div class="vstain-slice-browser" id="{key}">\n'
        f'<p style="margin:0">{names}</p>\n'
        f'<img src="{frames[start]}" alt="{html.escape(names)}, {title} {slices[start]}" '
        f'style="image-rendering:pixelated;max-width:100%">\n'
        f'<p style="margin:0"><label>{html.escape(title)} <input type="range" min="0" max="{len(slices) - 1}" '
        f'step="1" value="{start}"></label> <output>{slices[start]}</output> / {depth - 1}</p>\n'
        f'<script>(function () {{\n'
        f'  var root = document.getElementById("{key}");\n'
        f'  var frames = {json.dumps(frames)};\n'
        f'  var slices = {json.dumps(slices)};\n'
        f'  var slider = root.querySelector("input"), image = root.querySelector("img"), '
        f'shown = root.querySelector("output");\n'
        f'  slider.addEventListener("input", function () {{\n'
        f'    image.src = frames[slider.value];\n'
        f'    shown.textContent = slices[slider.value];\n'
        f'  }});\n'
        f'}})();</script>\n'
        f'</div>\n'
    )
