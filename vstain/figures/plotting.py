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

from typing import Any, Mapping, Sequence

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


def order_by_material(materials: Mapping[str, str], n: int | None = None, *,
                      order: Sequence[str] = ()) -> list[str]:
    """Pair ids with one pair per material first, then the rest; at most ``n``.

    The first pair of each material comes first, materials named in ``order`` in that order,
    the others in order of first appearance (so with no ``order`` the first pair stays
    first); then the remaining pairs, grouped the same way. Figures of several slides show
    every material before repeating one.

    Parameters
    ----------
    materials : dict
        ``pair_id -> material``, in split order.
    n : int, optional
        How many to keep (default all).
    order : sequence of str
        Materials to put first, in this order (the paper's Figures S2/S3: PEEK, Ti, Mg).

    Returns
    -------
    list of str

    Examples
    --------
    >>> order_by_material({"a": "Mg", "b": "Mg", "c": "PEEK", "d": "Ti"})
    ['a', 'c', 'd', 'b']
    >>> order_by_material({"a": "Mg", "b": "Mg", "c": "PEEK"}, 2, order=("PEEK", "Ti", "Mg"))
    ['c', 'a']
    """
    if n is not None and n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rank = {m: i for i, m in enumerate(order)}
    for material in materials.values():
        rank.setdefault(material, len(rank))
    first, rest, seen = [], [], set()
    for pid, material in sorted(materials.items(), key=lambda kv: rank[kv[1]]):
        (rest if material in seen else first).append(pid)
        seen.add(material)
    ordered = first + rest
    return ordered if n is None else ordered[:n]


def roi_origin(mask: np.ndarray, size: int) -> tuple[int, int]:
    """The ``(y, x)`` corner of the ``size`` x ``size`` window the mask covers most
    (first such window in row order): the ROI of Figure S4, the enlarged view of Figure 1.

    Every window position is considered (an integral image), unlike
    :func:`vstain.metrics.choose_roi`, which searches a coarse grid and prefers structure.

    Parameters
    ----------
    mask : ndarray of bool
        ``(Y, X)``.
    size : int
        Window side in pixels.

    Returns
    -------
    (int, int)

    Raises
    ------
    ValueError
        If the image is smaller than the window.
    """
    mask = np.asarray(mask, bool)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2D, got shape {mask.shape}")
    if size < 1 or min(mask.shape) < size:
        raise ValueError(f"ROI size {size} does not fit in an image of shape {mask.shape}")
    integral = np.pad(mask.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    cover = integral[size:, size:] - integral[:-size, size:] - integral[size:, :-size] + integral[:-size, :-size]
    y, x = np.unravel_index(int(np.argmax(cover)), cover.shape)
    return int(y), int(x)


def ct_display_range(ct: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """Grey-value window shared by a real CT slice and the generated ones: the 1st to
    99.5th percentile of the real slice inside the mask (the whole slice if the mask is empty).

    Examples
    --------
    >>> ct_display_range(np.arange(1000.0).reshape(25, 40), np.ones((25, 40), bool))
    (9.99, 994.005)
    """
    ct = np.asarray(ct, float)
    values = ct[np.asarray(mask, bool)] if np.asarray(mask, bool).any() else ct.ravel()
    low, high = np.percentile(values, (1.0, 99.5))
    return float(low), float(high)


def row_label(ax: Any, text: str) -> None:
    """Write ``text`` vertically left of an image axes (the label of a row of panels)."""
    ax.text(-0.06, 0.5, text, transform=ax.transAxes, rotation=90, ha="right", va="center", fontsize=8)


def _channels(image: np.ndarray) -> list[tuple[np.ndarray, str, str]]:
    """``(values, colour, name)`` per channel: R, G, B of an RGB image, or the grey values."""
    image = np.asarray(image)
    if image.ndim == 2:
        return [(image, "k", "grey")]
    return [(image[..., c], colour, "RGB"[c]) for c, colour in enumerate(RGB_COLOURS)]


def _value_range(real: np.ndarray, generated: np.ndarray) -> tuple[float, float]:
    """0-255 for RGB; for greyscale the range both images span."""
    if np.asarray(real).ndim == 3:
        return 0.0, 255.0
    low = float(min(np.min(real), np.min(generated)))
    high = float(max(np.max(real), np.max(generated)))
    return low, max(high, low + 1.0)


def rgb_histograms(ax: Any, real: np.ndarray, generated: np.ndarray, *, bins: int = 64) -> None:
    """Per-channel intensity histograms of a real (solid) and a generated (dashed) ROI.

    RGB ROIs give one curve per channel (0-255); greyscale ROIs (a CT and a generated CT)
    one black curve over the range both span.
    """
    low, high = _value_range(real, generated)
    edges = np.linspace(low, high + (1.0 if np.asarray(real).ndim == 3 else 0.0), bins + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    for (real_values, colour, name), (generated_values, _, _) in zip(_channels(real), _channels(generated)):
        for values, style, label in ((real_values, "-", "real"), (generated_values, "--", "generated")):
            counts, _ = np.histogram(values, bins=edges)
            ax.plot(centres, counts / max(1, counts.sum()), style, color=colour, linewidth=1,
                    label=f"{name} {label}")
    ax.set_xlim(low, high)
    ax.set_xlabel("intensity")
    ax.set_ylabel("fraction of pixels")


def intensity_profiles(ax: Any, real: np.ndarray, generated: np.ndarray, *, pixel_size_um: float | None = None) -> None:
    """Intensity along the horizontal line through the ROI midpoint, real (solid) vs generated (dashed).

    One curve per RGB channel, or one black curve for greyscale ROIs.
    """
    row = np.asarray(real).shape[0] // 2
    n = np.asarray(real).shape[1]
    position = np.arange(n) * (pixel_size_um or 1.0)
    for (real_values, colour, _), (generated_values, _, _) in zip(_channels(real), _channels(generated)):
        ax.plot(position, real_values[row], "-", color=colour, linewidth=1)
        ax.plot(position, generated_values[row], "--", color=colour, linewidth=1)
    ax.set_ylim(*_value_range(real, generated))
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
