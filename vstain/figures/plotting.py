"""Figure helpers shared by the chapters: scale bars, image panels, ROIs, histograms, profiles.

Plain functions that draw on a given matplotlib ``Axes``; the notebooks arrange them.

Examples
--------
>>> import matplotlib
>>> matplotlib.use("Agg")
>>> import matplotlib.pyplot as plt, numpy as np
>>> fig, ax = plt.subplots()
>>> show_image(ax, np.zeros((100, 200, 3), np.uint8), pixel_size_um=5.0, title="slide")
>>> [t.get_text() for t in ax.texts]
['200 µm']
>>> plt.close(fig)
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

RGB_COLOURS = ("tab:red", "tab:green", "tab:blue")
ROI_COLOUR = "orange"


def nice_scale_length(width_px: int, pixel_size_um: float, fraction: float = 0.25) -> float:
    """A round scale-bar length (1, 2 or 5 times a power of ten, in µm) near ``fraction`` of the width.

    Examples
    --------
    >>> nice_scale_length(1000, 5.0)
    1000.0
    >>> nice_scale_length(190, 5.0)
    200.0
    """
    if pixel_size_um <= 0 or width_px <= 0:
        raise ValueError(f"pixel_size_um and width_px must be positive, got {pixel_size_um} and {width_px}")
    target = width_px * pixel_size_um * fraction
    power = 10.0 ** np.floor(np.log10(target))
    candidates = [m * power for m in (1, 2, 5, 10)]
    return float(min(candidates, key=lambda c: abs(np.log(c / target))))


def add_scale_bar(
    ax: Any,
    pixel_size_um: float,
    length_um: float | None = None,
    *,
    location: str = "lower right",
    color: str = "white",
    linewidth: float = 3.0,
    fontsize: float = 8.0,
) -> float:
    """Draw a scale bar of ``length_um`` micrometres on an image axes (pixel coordinates).

    Parameters
    ----------
    ax : matplotlib.axes.Axes
        Axes showing an image with ``imshow`` (x to the right, y down).
    pixel_size_um : float
        Pixel size of the image in µm.
    length_um : float, optional
        Bar length; default :func:`nice_scale_length` of the image width.
    location : {"lower right", "lower left"}
    color : str
        Bar and label colour.

    Returns
    -------
    float
        The bar length in µm.
    """
    if pixel_size_um <= 0:
        raise ValueError(f"pixel_size_um must be positive, got {pixel_size_um}")
    x0, x1 = sorted(ax.get_xlim())
    y_bottom, y_top = max(ax.get_ylim()), min(ax.get_ylim())
    width = x1 - x0
    height = y_bottom - y_top
    if length_um is None:
        length_um = nice_scale_length(int(round(width)), pixel_size_um)
    length_px = length_um / pixel_size_um
    margin = 0.04 * width
    y = y_bottom - 0.06 * height
    if location == "lower right":
        start = x1 - margin - length_px
    elif location == "lower left":
        start = x0 + margin
    else:
        raise ValueError(f"location must be 'lower right' or 'lower left', got {location!r}")
    ax.plot([start, start + length_px], [y, y], color=color, linewidth=linewidth, solid_capstyle="butt")
    label = f"{length_um:g} µm" if length_um < 1000 or length_um % 1000 else f"{length_um / 1000:g} mm"
    ax.text(start + length_px / 2, y - 0.02 * height, label, color=color, ha="center", va="bottom",
            fontsize=fontsize)
    return float(length_um)


def show_image(
    ax: Any,
    image: np.ndarray,
    *,
    pixel_size_um: float | None = None,
    title: str | None = None,
    scale_um: float | None = None,
    scale_color: str | None = None,
    cmap: str = "gray",
    vmin: float | None = None,
    vmax: float | None = None,
) -> None:
    """Show a greyscale or RGB image without axes, with an optional title and scale bar."""
    image = np.asarray(image)
    if image.ndim == 2:
        ax.imshow(image, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    else:
        ax.imshow(image, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)
    if pixel_size_um is not None:
        if scale_color is None:
            corner = image[-max(1, image.shape[0] // 8):, -max(1, image.shape[1] // 3):]
            level = corner.mean() / (np.iinfo(image.dtype).max if np.issubdtype(image.dtype, np.integer) else 1.0)
            scale_color = "black" if level > 0.6 else "white"
        add_scale_bar(ax, pixel_size_um, scale_um, color=scale_color)


def draw_roi(ax: Any, y: int, x: int, size: int, *, color: str = ROI_COLOUR, arrow: bool = True) -> None:
    """Outline a square ROI; with ``arrow``, mark the horizontal profile line through its midpoint."""
    from matplotlib.patches import Rectangle

    ax.add_patch(Rectangle((x - 0.5, y - 0.5), size, size, fill=False, edgecolor=color, linewidth=1.5))
    if arrow:
        mid = y + size // 2
        ax.annotate("", xy=(x + size - 0.5, mid), xytext=(x - 0.5, mid),
                    arrowprops=dict(arrowstyle="->", color=color, linewidth=1.2))


def crop(image: np.ndarray, y: int, x: int, size: int) -> np.ndarray:
    """The ``size`` x ``size`` ROI of ``image`` at ``(y, x)``."""
    return np.asarray(image)[y:y + size, x:x + size]


def rgb_histograms(ax: Any, real: np.ndarray, generated: np.ndarray, *, bins: int = 64) -> None:
    """Per-channel intensity histograms of a real (solid) and a generated (dashed) RGB ROI."""
    edges = np.linspace(0, 256, bins + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    for channel, colour in enumerate(RGB_COLOURS):
        for image, style, label in ((real, "-", "real"), (generated, "--", "generated")):
            counts, _ = np.histogram(np.asarray(image)[..., channel], bins=edges)
            ax.plot(centres, counts / max(1, counts.sum()), style, color=colour, linewidth=1,
                    label=f"{'RGB'[channel]} {label}")
    ax.set_xlim(0, 255)
    ax.set_xlabel("intensity")
    ax.set_ylabel("fraction of pixels")


def intensity_profiles(ax: Any, real: np.ndarray, generated: np.ndarray, *, pixel_size_um: float | None = None) -> None:
    """Per-channel intensity along the horizontal line through the ROI midpoint, real vs generated."""
    row = np.asarray(real).shape[0] // 2
    n = np.asarray(real).shape[1]
    position = np.arange(n) * (pixel_size_um or 1.0)
    for channel, colour in enumerate(RGB_COLOURS):
        ax.plot(position, np.asarray(real)[row, :, channel], "-", color=colour, linewidth=1)
        ax.plot(position, np.asarray(generated)[row, :, channel], "--", color=colour, linewidth=1)
    ax.set_ylim(0, 255)
    ax.set_xlabel("position (µm)" if pixel_size_um else "position (px)")
    ax.set_ylabel("intensity")


def legend_real_generated(ax: Any, **kwargs: Any) -> None:
    """A compact legend: solid = real, dashed = generated."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color="k", linestyle="-", label="real"),
               Line2D([], [], color="k", linestyle="--", label="generated")]
    ax.legend(handles=handles, fontsize=7, frameon=False, **kwargs)


def image_grid(n_rows: int, n_cols: int, *, panel_size: float = 2.4, squeeze: bool = False) -> tuple[Any, Any]:
    """A figure of ``n_rows`` x ``n_cols`` image panels with tight spacing."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(n_rows, n_cols, figsize=(panel_size * n_cols, panel_size * n_rows), squeeze=squeeze,
                             constrained_layout=True)
    return fig, axes
