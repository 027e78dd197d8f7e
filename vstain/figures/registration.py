"""The drawings of the registration chapter (01): checkerboards, the fitted plane in the volume, MI, errors, checks.

Pure functions of arrays and tables: :func:`before_after_checkerboards` and
:func:`plot_checkerboards` (a pair before and after registration), :func:`plot_fitted_plane` (the
fitted and the true section in the CT volume), :func:`plot_mi_history` (the optimiser's iterations),
:func:`plot_errors_by_stain` (errors against the truth) and :func:`plot_quality_checks` (each pair's
checks against its worst error); :func:`display_range`, :func:`image_outline` and
:func:`plane_corners` are their pieces.

Examples
--------
>>> image_outline((3, 4))[2].tolist()
[2, 3]
"""

from __future__ import annotations

from typing import Any, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from skimage.util import compare_images

from vstain.registration import histology_grey


def display_range(image: np.ndarray, low: float = 1, high: float = 99) -> np.ndarray:
    """``image`` scaled so that its ``low`` and ``high`` percentiles map to 0 and 1, clipped to [0, 1].

    Examples
    --------
    >>> display_range(np.arange(101.0), 0, 100)[[0, 50, 100]].round(3).tolist()
    [0.0, 0.5, 1.0]
    """
    lo, hi = np.percentile(image, [low, high])
    return np.clip((image - lo) / (hi - lo + 1e-9), 0, 1)


def image_outline(shape: Sequence[int]) -> np.ndarray:
    """The corners ``(5, 2)`` (row, column) of an image of ``shape``, closed (the first repeated).

    Examples
    --------
    >>> image_outline((3, 4)).tolist()
    [[0, 0], [0, 3], [2, 3], [2, 0], [0, 0]]
    """
    return np.array([(0, 0), (0, shape[1] - 1), (shape[0] - 1, shape[1] - 1), (shape[0] - 1, 0), (0, 0)])


def plane_corners(point: Sequence[float], axes: Sequence[Sequence[float]], shape: Sequence[int]) -> np.ndarray:
    """Voxel coordinates ``(5, 3)`` (z, y, x) of the outline of a plane's ``shape`` pixels, closed.

    Parameters
    ----------
    point : (3,) array_like
        Voxel coordinates of plane pixel ``(0, 0)`` (``RegistrationResult.plane_point``).
    axes : (2, 3) array_like
        The in-plane axes (``RegistrationResult.plane_axes``).
    shape : (2,) sequence of int
        The plane image's shape.

    Examples
    --------
    >>> plane_corners([5, 0, 0], [[0, 1, 0], [0, 0, 1]], (3, 4))[2].tolist()
    [5.0, 2.0, 3.0]
    """
    point, axes = np.asarray(point, float), np.asarray(axes, float)
    return np.array([point + i * axes[0] + j * axes[1] for i, j in image_outline(shape)])


def before_after_checkerboards(ct_volume: np.ndarray, histology: np.ndarray, ct_voxel_um: float,
                               histology_pixel_um: float, registered_ct: np.ndarray,
                               registered_histology: np.ndarray, n_tiles: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Checkerboards of CT and section before and after registration.

    Before: the section at its nominal scale (every ``ct_voxel_um / histology_pixel_um``-th
    pixel) on the middle CT slice; after: the registered section on the CT of the fitted
    plane. Tiles alternate CT and the section's inverted grey optical density (bone bright
    in both), each scaled by :func:`display_range`.

    Returns
    -------
    (ndarray, ndarray)
        The two checkerboard images, values in [0, 1].
    """
    middle = ct_volume[ct_volume.shape[0] // 2]
    step = int(round(ct_voxel_um / histology_pixel_um))
    section = -histology_grey(histology[::step, ::step])
    height, width = min(middle.shape[0], section.shape[0]), min(middle.shape[1], section.shape[1])
    before = compare_images(display_range(middle[:height, :width]), display_range(section[:height, :width]),
                            method="checkerboard", n_tiles=(n_tiles, n_tiles))
    after = compare_images(display_range(registered_ct.astype(float)),
                           display_range(-histology_grey(registered_histology)),
                           method="checkerboard", n_tiles=(n_tiles, n_tiles))
    return before, after


def plot_checkerboards(sample: Any, pair: Any, n_tiles: int = 6) -> Figure:
    """A pair before and after registration, and its registered section.

    Parameters
    ----------
    sample
        The unregistered pair: ``ct_volume``, ``histology``, ``ct_voxel_um``, ``histology_pixel_um``
        (a :class:`~vstain.phantom.PhantomSample`).
    pair
        The registered pair: ``ct``, ``histology`` (a :class:`~vstain.pairs.RegisteredPair`).
    n_tiles : int
        Checkerboard tiles per side.

    Returns
    -------
    matplotlib.figure.Figure
        Three panels: before (:func:`before_after_checkerboards`), after, the registered section.

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> from types import SimpleNamespace
    >>> rng = np.random.default_rng(0)
    >>> sample = SimpleNamespace(ct_volume=rng.random((4, 12, 12)), ct_voxel_um=2.0, histology_pixel_um=1.0,
    ...                          histology=rng.integers(0, 255, (24, 24, 3), np.uint8))
    >>> pair = SimpleNamespace(ct=rng.random((12, 12)), histology=rng.integers(0, 255, (12, 12, 3), np.uint8))
    >>> [ax.get_title()[:6] for ax in plot_checkerboards(sample, pair).axes]
    ['before', 'after:', 'regist']
    """
    before, after = before_after_checkerboards(sample.ct_volume, sample.histology, sample.ct_voxel_um,
                                               sample.histology_pixel_um, pair.ct, pair.histology, n_tiles)
    fig, axes = plt.subplots(1, 3, figsize=(12, 4))
    axes[0].imshow(before, cmap="gray")
    axes[0].set_title("before: middle CT slice / section")
    axes[1].imshow(after, cmap="gray")
    axes[1].set_title("after: CT on the fitted plane / section")
    axes[2].imshow(pair.histology)
    axes[2].set_title("registered section (normalised)")
    for ax in axes:
        ax.set_axis_off()
    fig.tight_layout()
    return fig


def plot_fitted_plane(volume_shape: Sequence[int], true_outline_zyx: np.ndarray, plane_point: Sequence[float],
                      plane_axes: Sequence[Sequence[float]], plane_shape: Sequence[int]) -> Figure:
    """The section's true outline and the fitted plane's output area inside the CT volume's bounding box.

    Parameters
    ----------
    volume_shape : (int, int, int)
        The CT volume's shape (z, y, x).
    true_outline_zyx : ndarray, (N, 3)
        Voxel coordinates of the section's true outline (its :func:`image_outline` mapped by the truth).
    plane_point, plane_axes, plane_shape
        The registered pair's plane (:func:`plane_corners`).

    Returns
    -------
    matplotlib.figure.Figure
        One 3D axes, in voxels: the box in grey, the truth in black, the fit dashed red.

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> truth = plane_corners([5, 0, 0], [[0, 1, 0], [0, 0, 1]], (10, 12))
    >>> fig = plot_fitted_plane((10, 10, 12), truth, [5, 0, 0], [[0, 1, 0], [0, 0, 1]], (10, 12))
    >>> fig.axes[0].get_zlabel()
    'z (voxels)'
    """
    nz, ny, nx = volume_shape
    fitted = plane_corners(plane_point, plane_axes, plane_shape)
    truth = np.asarray(true_outline_zyx, float)
    fig = plt.figure(figsize=(6, 5))
    ax = fig.add_subplot(projection="3d")
    for z in (0, nz - 1):
        ax.plot([0, nx - 1, nx - 1, 0, 0], [0, 0, ny - 1, ny - 1, 0], [z] * 5, color="grey", lw=0.8)
    ax.plot(truth[:, 2], truth[:, 1], truth[:, 0], color="black", label="true section")
    ax.plot(fitted[:, 2], fitted[:, 1], fitted[:, 0], color="tab:red", ls="--", label="fitted plane (cropped)")
    ax.set_xlabel("x (voxels)")
    ax.set_ylabel("y (voxels)")
    ax.set_zlabel("z (voxels)")
    ax.legend(loc="upper left")
    return fig


def plot_mi_history(mi_history: Sequence[dict]) -> Figure:
    """Mutual information over the optimiser's iterations, one curve per stage and pyramid level.

    ``mi_history`` is a result's ``mi_history`` (records ``stage``, ``level``, ``iteration``, ``mi``);
    the global search's record is left out.

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> history = [{"stage": "search", "level": 0, "iteration": 0, "mi": 0.1}] + [
    ...     {"stage": "plane0", "level": level, "iteration": i, "mi": 0.2 + 0.01 * i}
    ...     for level in (0, 1) for i in range(3)]
    >>> [line.get_label() for line in plot_mi_history(history).axes[0].get_lines()]
    ['plane0, level 0', 'plane0, level 1']
    """
    history = pd.DataFrame(list(mi_history))
    history = history[history["stage"] != "search"].reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(8, 3.5))
    for (stage, level), part in history.groupby(["stage", "level"], sort=False):
        ax.plot(part.index, part["mi"], label=f"{stage}, level {level}")
    ax.set_xlabel("iteration (all stages in order)")
    ax.set_ylabel("Mattes mutual information (nats)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def plot_errors_by_stain(errors: pd.DataFrame) -> Figure:
    """Per-pair plane angle error against the median (left) and worst (right) TRE, one colour per stain.

    ``errors`` has the registration table's ``stain``, ``angle_error_deg``, ``tre_median_px`` and
    ``tre_max_px``.

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> t = pd.DataFrame({"stain": ["he", "toluidine_blue"], "angle_error_deg": [0.2, 0.4],
    ...                   "tre_median_px": [0.5, 0.7], "tre_max_px": [1.0, 2.0]})
    >>> [ax.get_ylabel() for ax in plot_errors_by_stain(t).axes]
    ['median TRE (px)', 'worst TRE (px)']
    """
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for stain, part in errors.groupby("stain"):
        axes[0].scatter(part["angle_error_deg"], part["tre_median_px"], label=stain)
        axes[1].scatter(part["angle_error_deg"], part["tre_max_px"], label=stain)
    axes[0].set_xlabel("angle error (deg)")
    axes[0].set_ylabel("median TRE (px)")
    axes[1].set_xlabel("angle error (deg)")
    axes[1].set_ylabel("worst TRE (px)")
    axes[0].legend()
    fig.tight_layout()
    return fig


def plot_quality_checks(cases: pd.DataFrame, config: Any, wrong_px: float = 5.0) -> Figure:
    """Each pair's quality figures against its worst TRE, the profile's thresholds dashed; flagged pairs as crosses.

    Parameters
    ----------
    cases : DataFrame
        The registration cases (:func:`vstain.reports.registration.registration_cases`): ``status``,
        ``mi_margin``, ``silhouette_iou``, ``tilt_spread_deg``, ``tilt_error_px``, ``tre_max_px``.
    config : RegistrationConfig
        The thresholds: ``min_mi_margin``, ``min_silhouette_iou``, ``max_tilt_spread_deg``,
        ``max_tilt_error_px``.
    wrong_px : float
        The worst TRE (CT px) above which a fit counts as wrong (dotted red).

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> from types import SimpleNamespace
    >>> cfg = SimpleNamespace(min_mi_margin=0.05, min_silhouette_iou=0.5, max_tilt_spread_deg=1.0,
    ...                       max_tilt_error_px=3.0)
    >>> cases = pd.DataFrame({"status": ["ok", "uncertain: x"], "mi_margin": [0.3, 0.01],
    ...                       "silhouette_iou": [0.9, 0.8], "tilt_spread_deg": [0.0, 0.2],
    ...                       "tilt_error_px": [0.5, 1.0], "tre_max_px": [1.2, 30.0]})
    >>> [ax.get_xlabel()[:9] for ax in plot_quality_checks(cases, cfg).axes]
    ['MI margin', 'silhouett', 'spread of', 'error an ']
    """
    checks = [("mi_margin", config.min_mi_margin, "MI margin over the best other orientation", False),
              ("silhouette_iou", config.min_silhouette_iou, "silhouette IoU", False),
              ("tilt_spread_deg", config.max_tilt_spread_deg, "spread of tilted refits (deg)", True),
              ("tilt_error_px", config.max_tilt_error_px, "error an open tilt could make (CT px)", True)]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6), sharey=True)
    flagged_rows = cases["status"] != "ok"
    for ax, (column, threshold, label, upper) in zip(axes, checks):
        for is_flagged, marker in ((False, "o"), (True, "x")):
            part = cases[flagged_rows == is_flagged]
            ax.scatter(pd.to_numeric(part[column], errors="coerce"), pd.to_numeric(part["tre_max_px"], errors="coerce"),
                       marker=marker, label="flagged" if is_flagged else "ok")
        ax.axvline(threshold, color="grey", ls="--", lw=1)
        ax.axhline(wrong_px, color="tab:red", ls=":", lw=1)
        ax.set_xlabel(label + (" (lower is better)" if upper else ""))
    axes[0].set_ylabel("worst TRE (CT px)")
    axes[0].set_yscale("symlog", linthresh=1.0)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig
