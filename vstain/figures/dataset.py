"""Figures of the dataset chapter (00): the paper's Figure 1 on a phantom pair, marked from its true labels.

The paper's Figure 1 shows a real Mg screw section and its CT slice with the interface between
the residual alloy and the degradation layer (green, in the histology), the boundary between the
degradation layer and the tissue around it (red, in the CT) and, in enlarged views, arrows at new
(woven) bone. The phantom knows where these are, so here they are drawn from its label maps
(:func:`vstain.phantom.ground_truth_labels`) rather than by hand.

Examples
--------
>>> import numpy as np
>>> labels = np.zeros((5, 5), np.uint8); labels[1:4, 1:4] = LABELS["degradation_layer"]
>>> labels[2, 2] = LABELS["screw"]
>>> int(interface(labels, [LABELS["screw"]], [LABELS["degradation_layer"]]).sum())
1
>>> int(interface(labels, [LABELS["degradation_layer"]], [LABELS["background"]]).sum())
8
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from matplotlib.figure import Figure
from scipy import ndimage as ndi

from vstain.figures.plotting import ct_display_range, draw_roi, image_grid, roi_origin, show_image
from vstain.phantom import LABELS

ALLOY_INTERFACE_COLOUR = (0.0, 0.85, 0.0)  # the paper's green line (histology)
LAYER_BOUNDARY_COLOUR = (0.9, 0.0, 0.0)  # the paper's red line (CT)
#: Labels of the tissue around the degradation layer (its outer boundary is drawn against these).
SURROUNDING_TISSUE = ("soft_tissue", "dense_bone", "new_bone", "vessel", "lacuna")


def interface(labels: np.ndarray, inner: Sequence[int], outer: Sequence[int]) -> np.ndarray:
    """Pixels of the ``inner`` labels that touch (4-neighbourhood) a pixel of the ``outer`` labels.

    Parameters
    ----------
    labels : ndarray of int
        ``(Y, X)`` label map (:data:`vstain.phantom.LABELS` codes).
    inner, outer : sequence of int
        Label codes on either side of the interface; the line lies on the ``inner`` side.

    Returns
    -------
    ndarray of bool
        ``(Y, X)``, True on the interface.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be a 2D label map, got shape {labels.shape}")
    return np.isin(labels, inner) & ndi.binary_dilation(np.isin(labels, outer))


def new_bone_targets(labels: np.ndarray, max_targets: int = 3) -> list[tuple[int, int]]:
    """Where arrows point at new bone: one pixel of each of the largest new-bone regions.

    Parameters
    ----------
    labels : ndarray of int
        ``(Y, X)`` label map (a crop of it: the enlarged view).
    max_targets : int
        At most this many regions, largest first.

    Returns
    -------
    list of (int, int)
        ``(y, x)`` of the region's pixel nearest its centroid (always inside the region, also
        for a curved one).

    Examples
    --------
    >>> labels = np.zeros((6, 8), np.uint8); labels[1:3, 1:4] = LABELS["new_bone"]; labels[5, 7] = LABELS["new_bone"]
    >>> new_bone_targets(labels)
    [(1, 2), (5, 7)]
    """
    regions, n = ndi.label(np.asarray(labels) == LABELS["new_bone"])
    if n == 0:
        return []
    sizes = np.bincount(regions.ravel())[1:]
    targets = []
    for index in np.argsort(-sizes, kind="stable")[:max_targets] + 1:
        ys, xs = np.nonzero(regions == index)
        nearest = np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2)
        targets.append((int(ys[nearest]), int(xs[nearest])))
    return targets


def _outline(ax: Any, line: np.ndarray, colour: tuple[float, float, float]) -> None:
    """Draw the True pixels of ``line`` in ``colour`` over an image (transparent elsewhere)."""
    overlay = np.zeros(line.shape + (4,), np.float32)
    overlay[line] = (*colour, 1.0)
    ax.imshow(overlay, interpolation="nearest")


def _arrows(ax: Any, targets: Sequence[tuple[int, int]], colour: str, size: int) -> None:
    """Arrows at ``targets`` (``(y, x)`` in a ``size`` x ``size`` view), their tails inside the view."""
    length = size / 8
    for y, x in targets:
        tail_x = x - length if x - length >= 0 else x + length
        tail_y = y - length if y - length >= 0 else y + length
        ax.annotate("", xy=(x, y), xytext=(tail_x, tail_y),
                    arrowprops=dict(arrowstyle="-|>", color=colour, linewidth=1.5))


def plot_figure1(histology: np.ndarray, ct: np.ndarray, ct_labels: np.ndarray, histology_labels: np.ndarray,
                 pixel_size_um: float, *, zoom_size: int | None = None, title: str = "") -> Figure:
    """Figure 1: a paired section and CT slice of a Mg sample, the degradation layer and new bone marked.

    (a) the histology with the interface between the residual alloy and the degradation layer
    (green), (b) the CT slice with the boundary between the degradation layer and the tissue
    around it (red), both with the enlarged region (orange box); (c, d) the enlarged region,
    arrows (black in the histology, white in the CT) at the largest patches of new bone. Lines
    and arrows come from the true labels.

    Parameters
    ----------
    histology : ndarray
        ``(Y, X, 3)`` uint8 section on the CT grid (:func:`vstain.phantom.ground_truth_pair`).
    ct : ndarray
        ``(Y, X)`` CT slice on the same grid.
    ct_labels, histology_labels : ndarray
        ``(Y, X)`` true labels of each (:func:`vstain.phantom.ground_truth_labels`).
    pixel_size_um : float
        For the scale bars.
    zoom_size : int, optional
        Side of the enlarged region in pixels (default a third of the shorter side); placed where
        it covers the most new bone (the degradation layer where there is none).
    title : str
        Prefix of panel (a)'s title (e.g. the pair id).

    Returns
    -------
    matplotlib.figure.Figure
        Four panels, (a)-(d).

    Raises
    ------
    ValueError
        If the shapes differ or the labels show no degradation layer (not a Mg sample).
    """
    histology, ct = np.asarray(histology), np.asarray(ct)
    ct_labels, histology_labels = np.asarray(ct_labels), np.asarray(histology_labels)
    shape = ct.shape
    if ct.ndim != 2 or histology.shape != shape + (3,) or ct_labels.shape != shape or histology_labels.shape != shape:
        raise ValueError(f"expected a (Y, X) CT, a (Y, X, 3) histology and two (Y, X) label maps of one shape, got "
                         f"{ct.shape}, {histology.shape}, {ct_labels.shape}, {histology_labels.shape}")
    layer = LABELS["degradation_layer"]
    if not (ct_labels == layer).any():
        raise ValueError("the labels show no degradation layer: Figure 1 needs a Mg sample")
    zoom = zoom_size or max(8, min(shape) // 3)
    if zoom > min(shape):
        raise ValueError(f"zoom_size {zoom} does not fit in an image of shape {shape}")
    new_bone = ct_labels == LABELS["new_bone"]
    y, x = roi_origin(new_bone if new_bone.any() else ct_labels == layer, zoom)
    box = (slice(y, y + zoom), slice(x, x + zoom))
    alloy_line = interface(histology_labels, [LABELS["screw"]], [layer])
    layer_line = interface(ct_labels, [layer], [LABELS[name] for name in SURROUNDING_TISSUE])
    low, high = ct_display_range(ct, ct_labels != LABELS["background"])

    fig, axes = image_grid(2, 2, panel_size=4.0)
    (a, b), (c, d) = axes
    show_image(a, histology, pixel_size_um=pixel_size_um, title=f"(a) {title + ' ' if title else ''}histology")
    _outline(a, alloy_line, ALLOY_INTERFACE_COLOUR)
    show_image(b, ct, pixel_size_um=pixel_size_um, vmin=low, vmax=high, title="(b) CT slice")
    _outline(b, layer_line, LAYER_BOUNDARY_COLOUR)
    for ax in (a, b):
        draw_roi(ax, y, x, zoom, arrow=False)
    targets = new_bone_targets(ct_labels[box])
    show_image(c, histology[box], pixel_size_um=pixel_size_um, title="(c) enlarged: new bone (black arrows)")
    _outline(c, alloy_line[box], ALLOY_INTERFACE_COLOUR)
    _arrows(c, targets, "black", zoom)
    show_image(d, ct[box], pixel_size_um=pixel_size_um, vmin=low, vmax=high,
               title="(d) enlarged: new bone (white arrows)")
    _outline(d, layer_line[box], LAYER_BOUNDARY_COLOUR)
    _arrows(d, targets, "white", zoom)
    return fig


def plot_phenomena(panels: Sequence[tuple[str, np.ndarray, np.ndarray]]) -> Figure:
    """Each phenomenon of the paper's regime with and without: one row per ``(title, with, without)``.

    Colour images are shown as they are, grey ones (CT) in the first image's display range.

    Examples
    --------
    >>> import numpy as np
    >>> fig = plot_phenomena([("grey", np.zeros((8, 8)), np.ones((8, 8))),
    ...                       ("colour", np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8))])
    >>> len(fig.axes)
    4
    """
    fig = Figure(figsize=(8, 3.6 * len(panels)))
    axes = fig.subplots(len(panels), 2, squeeze=False)
    for row, (title, with_it, without_it) in zip(axes, panels):
        window = None if with_it.ndim == 3 else ct_display_range(with_it, np.ones(with_it.shape, bool))
        for ax, image, label in zip(row, (with_it, without_it), ("with", "without")):
            if image.ndim == 3:
                ax.imshow(image)
            else:
                ax.imshow(image, cmap="gray", vmin=window[0], vmax=window[1])
            ax.set_title(f"{title}: {label}", fontsize=10)
            ax.axis("off")
    fig.tight_layout()
    return fig
