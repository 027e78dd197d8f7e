"""The section on the result's grid: the RGB warp of a registration and the resampling of other images.

:func:`warp_histology` warps the RGB section onto a plane grid (anti-aliased, white outside its field
of view); :func:`warp_to_result` resamples any image on the histology's grid (labels, a mask) onto a
result's output grid.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from vstain.registration.result import RegistrationResult


def warp_histology(histology: np.ndarray, fov: np.ndarray, affine: np.ndarray, shape: tuple[int, int],
                   sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """The RGB section on a plane grid of ``shape``: anti-aliased (it is finer than the CT), then sampled.

    Parameters
    ----------
    histology : ndarray, (H, W, 3) uint8
    fov : ndarray, (H, W) bool
        Where it has data.
    affine : ndarray, (3, 3)
        ``[i, j, 1] = affine @ [y, x, 1]``.
    shape : (int, int)
        The grid's shape.
    sigma : float
        Gaussian smoothing (histology pixels) before sampling.

    Returns
    -------
    (ndarray, ndarray)
        The warped section (uint8, white outside the field of view) and where it has data.

    Examples
    --------
    >>> import numpy as np
    >>> rgb = np.zeros((4, 4, 3), np.uint8); rgb[1, 2] = 90
    >>> warped, valid = warp_histology(rgb, np.ones((4, 4), bool), np.eye(3), (5, 5), 0.0)
    >>> int(warped[1, 2, 0]), bool(valid[3, 3]), int(warped[4, 4, 0]), bool(valid[4, 4])
    (90, True, 255, False)
    """
    ii, jj = np.mgrid[0 : shape[0], 0 : shape[1]].astype(float)
    src = np.linalg.inv(affine) @ np.stack([ii.ravel(), jj.ravel(), np.ones(ii.size)])
    warped = np.empty(tuple(shape) + (3,), np.uint8)
    for channel in range(3):
        smooth = ndi.gaussian_filter(histology[..., channel].astype(np.float32), sigma)
        values = ndi.map_coordinates(smooth, src[:2], order=1, mode="constant", cval=255.0)
        warped[..., channel] = np.clip(np.rint(values), 0, 255).reshape(shape).astype(np.uint8)
    valid = ndi.map_coordinates(fov.astype(np.float32), src[:2], order=0, mode="constant",
                                cval=0.0).reshape(shape) > 0.5
    warped[~valid] = 255
    return warped, valid


def result_grid_to_histology(result: RegistrationResult) -> np.ndarray:
    """Histology coordinates ``(3, H*W)`` (y, x, 1) of every pixel of the result's output grid."""
    shape = result.ct_slice.shape
    ii, jj = np.mgrid[0 : shape[0], 0 : shape[1]].astype(float)
    return np.linalg.inv(result.affine) @ np.stack([ii.ravel(), jj.ravel(), np.ones(ii.size)])


def warp_to_result(image: np.ndarray, result: RegistrationResult, *, order: int = 0, cval: float = 0) -> np.ndarray:
    """Resample a histology-grid image (labels, a mask) onto the result's output grid.

    Parameters
    ----------
    image : ndarray, (H, W)
        An image on the histology's pixel grid.
    result : RegistrationResult
        Its ``affine`` maps histology pixels onto the output grid (the shape of ``ct_slice``).
    order : int
        Spline order (0: nearest, for labels and masks).
    cval : float
        Value outside ``image``.

    Returns
    -------
    ndarray
        ``image`` on the result's grid.
    """
    shape = result.ct_slice.shape
    src = result_grid_to_histology(result)
    return ndi.map_coordinates(np.asarray(image), src[:2], order=order, mode="constant", cval=cval).reshape(shape)
