"""Image helpers of the registration: the section's grey density, planes through the CT, pyramid levels.

Coordinates follow :mod:`vstain.registration`: plane pixel ``(i, j)`` lies at ``plane_point + i *
plane_axes[0] + j * plane_axes[1]`` in CT voxel (z, y, x) coordinates.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu


def histology_grey(histology: np.ndarray) -> np.ndarray:
    """One grey channel of an RGB section for mutual information: total optical density.

    ``-log`` of the normalised intensity, summed over R, G, B: proportional to the
    amount of stain (Beer-Lambert), so stained tissue classes stay apart even where
    their luminances coincide, and the white glass is 0.

    Parameters
    ----------
    histology : ndarray, (H, W, 3) uint8

    Returns
    -------
    ndarray, (H, W) float32

    Examples
    --------
    >>> import numpy as np
    >>> rgb = np.array([[[255, 255, 255], [20, 60, 120]]], np.uint8)
    >>> grey = histology_grey(rgb)
    >>> float(grey[0, 0]), bool(grey[0, 1] > 1)
    (0.0, True)
    """
    rgb = np.asarray(histology, dtype=np.float32)
    return (-np.log(np.clip(rgb, 1.0, 255.0) / 255.0)).sum(axis=-1).astype(np.float32)


def oblique_slice(
    volume: np.ndarray,
    plane_point: np.ndarray,
    plane_axes: np.ndarray,
    shape: Sequence[int],
    *,
    order: int = 1,
    cval: float = np.nan,
) -> np.ndarray:
    """Sample a volume on a plane grid: pixel ``(i, j)`` lies at ``plane_point + i*axes[0] + j*axes[1]``.

    Parameters
    ----------
    volume : ndarray, (Z, Y, X)
    plane_point : ndarray, (3,)
        Voxel (z, y, x) coordinates of pixel ``(0, 0)``.
    plane_axes : ndarray, (2, 3)
        Steps in voxels for one pixel along ``i`` and along ``j``.
    shape : (int, int)
        Output shape.
    order : int
        Spline order of :func:`scipy.ndimage.map_coordinates` (1: linear; 0 for labels).
    cval : float
        Value outside the volume.

    Returns
    -------
    ndarray of ``shape``, float (or the volume's dtype for ``order=0``).

    Examples
    --------
    >>> import numpy as np
    >>> volume = np.zeros((3, 4, 4)); volume[1] = 7.0
    >>> oblique_slice(volume, np.array([1.0, 0, 0]), np.array([[0, 1.0, 0], [0, 0, 1.0]]), (2, 2)).tolist()
    [[7.0, 7.0], [7.0, 7.0]]
    """
    ii, jj = np.mgrid[0 : shape[0], 0 : shape[1]].astype(float)
    coords = (
        np.asarray(plane_point, float)[:, None, None]
        + ii[None] * np.asarray(plane_axes[0], float)[:, None, None]
        + jj[None] * np.asarray(plane_axes[1], float)[:, None, None]
    )
    if order == 0:
        return ndi.map_coordinates(volume, coords, order=0, mode="constant", cval=cval)
    return ndi.map_coordinates(np.asarray(volume, np.float32), coords, order=order, mode="constant", cval=cval)


def block_mean(image: np.ndarray, factor: float) -> np.ndarray:
    """Anti-aliased downsampling by a (possibly fractional) factor >= 1."""
    if factor <= 1.0 + 1e-6:
        return image.astype(np.float32)
    sigma = (factor - 1.0) / 2.0  # scikit-image's anti-aliasing width
    smooth = ndi.gaussian_filter(image.astype(np.float32), sigma)
    out_shape = [max(2, int(round(s / factor))) for s in image.shape]
    grid = np.meshgrid(*[(np.arange(n) + 0.5) * (s / n) - 0.5 for n, s in zip(out_shape, image.shape)], indexing="ij")
    return ndi.map_coordinates(smooth, grid, order=1, mode="nearest").astype(np.float32)


def fov_at(fov: np.ndarray, factor: float) -> np.ndarray:
    """The field of view downsampled by ``factor``, eroded 1 px where it is partial (edge effects)."""
    small = block_mean(fov.astype(np.float32), factor) > 0.5
    if fov.all():
        return small
    return ndi.binary_erosion(small, iterations=1, border_value=1)


def tissue_pixels(grey: np.ndarray) -> np.ndarray:
    """Which optical densities are tissue rather than glass: above Otsu's split (clipped like the masks')."""
    values = np.minimum(np.asarray(grey, np.float32), 3.0)
    if values.size < 2 or float(values.max()) == float(values.min()):
        return np.ones(values.shape, bool)
    return values > threshold_otsu(values)


def tissue_centre(grey_small: np.ndarray, fov_small: np.ndarray) -> np.ndarray:
    """Row, column of the centroid of the section's tissue: its centre whatever glass surrounds it.

    The tissue is the optical density above Otsu's split (:func:`tissue_pixels`), unweighted: an
    opaque implant would pull a density-weighted centroid far towards itself.
    """
    tissue = tissue_pixels(np.where(fov_small, grey_small, 0.0)) & fov_small
    if not tissue.any():
        return (np.asarray(grey_small.shape, float) - 1) / 2
    rows, cols = np.nonzero(tissue)
    return np.array([rows.mean(), cols.mean()])


def plane_grid(origin: np.ndarray, axes: np.ndarray, ct_shape: Sequence[int]) -> tuple[np.ndarray, tuple[int, int]]:
    """A plane grid (origin, shape) covering the whole intersection of the plane with the volume."""
    corners = np.array(np.meshgrid(*[[0, s - 1] for s in ct_shape], indexing="ij")).reshape(3, -1).T
    proj = (corners - origin) @ axes.T  # (8, 2) plane coordinates
    low = np.floor(proj.min(axis=0)) - 1
    high = np.ceil(proj.max(axis=0)) + 1
    return origin + low[0] * axes[0] + low[1] * axes[1], (int(high[0] - low[0]) + 1, int(high[1] - low[1]) + 1)


def inside_volume(points: np.ndarray, ct_shape: Sequence[int]) -> np.ndarray:
    """Whether each voxel coordinate ``(..., 3)`` lies inside a volume of ``ct_shape`` (its voxel centres' box)."""
    upper = np.asarray(ct_shape, float) - 1
    return np.all((points >= 0) & (points <= upper), axis=-1)
