"""What a registration returns or raises: :class:`RegistrationResult` and the errors.

The public classes name :mod:`vstain.registration`, where they are imported from, as their module.

Examples
--------
>>> import numpy as np
>>> axes = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
>>> histology_points_to_volume([[4.0, 6.0]], np.diag([0.5, 0.5, 1.0]), np.array([3.0, 0.0, 0.0]), axes).tolist()
[[3.0, 2.0, 3.0]]
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np


class RegistrationError(ValueError):
    """The input of a registration is unusable; the message names the pair id and the field."""

    __module__ = "vstain.registration"


class RegistrationFailed(RegistrationError):
    """A registration ran but failed (no MI gain, plane outside the volume or too tilted)."""

    __module__ = "vstain.registration"


class RegistrationUncertain(RegistrationFailed):
    """A registration ran, but its quality check cannot tell it from a wrong local optimum.

    Raised by the callers that must not use such a fit (:mod:`vstain.stages.register`);
    :func:`~vstain.registration.register_section_to_volume` itself returns the result with its ``status``.
    ``row`` holds the pair's table row (quality figures, errors against a known truth).
    """

    __module__ = "vstain.registration"

    def __init__(self, message: str, row: dict | None = None):
        super().__init__(message)
        self.row = dict(row or {})


@dataclasses.dataclass
class RegistrationResult:
    """The fitted plane, the 2D affine and the registered images of one pair.

    Attributes
    ----------
    pair_id : str
    plane_point : ndarray, shape (3,)
        Voxel (z, y, x) coordinates of plane pixel ``(0, 0)``: the top-left pixel of
        ``ct_slice`` and ``histology``.
    plane_axes : ndarray, shape (2, 3)
        Orthonormal in-plane axes (rows: the ``i`` and ``j`` directions), in voxels.
    plane_normal : ndarray, shape (3,)
        Unit normal, ``cross(plane_axes[0], plane_axes[1])``.
    affine : ndarray, shape (3, 3)
        ``[i, j, 1] = affine @ [y, x, 1]`` for histology pixel ``(y, x)``.
    ct_slice : ndarray, (H, W) float32
        The CT on the plane at CT pixel size, cropped to the common field of view.
    histology : ndarray, (H, W, 3) uint8
        The histology warped onto the same grid.
    ct_valid, histology_valid : ndarray, (H, W) bool
        Where the plane lies inside the volume / the histology (and its field of view)
        has data. Outside, ``ct_slice`` holds the CT's lowest percentile and
        ``histology`` white.
    pixel_size_um : float
        The CT voxel size: the pixel size of the output images.
    mutual_information : float
        Mattes MI (nats) of the final 2D affine fit, at CT pixel size.
    initial_mutual_information : float
        MI of the plane fit's best starting point (coarsest level).
    mi_history : list of dict
        One record per optimiser iteration: ``stage``, ``level``, ``iteration``, ``mi``.
    seconds : float
        Wall time of the registration.
    mi_margin : float
        How clearly the chosen orientation beats every other: ``(MI - MI_other) / MI`` of the
        plane fit and of the best pose of another in-plane rotation or the other face, both
        refined to the finest level of the first plane fit; negative when an orientation the
        profile kept the fit from taking fits better; NaN when no other orientation was refined.
    silhouette_iou : float
        IoU of the CT plane's sample silhouette and the registered section's tissue
        (:func:`~vstain.registration.checks.silhouette_iou`).
    status : str
        ``ok``, or ``uncertain: <reasons>`` when ``mi_margin`` or ``silhouette_iou`` is below
        the profile's ``min_mi_margin`` / ``min_silhouette_iou``, or ``tilt_spread_deg`` above
        ``max_tilt_spread_deg``: the fit may be a wrong local optimum and must not be used as a
        registered pair.
    tilt_spread_deg : float
        The tilt check (:func:`~vstain.registration.checks.tilt_restarts`): how far (degrees) the
        last round of refits, from the fit tilted ``check_tilt_deg`` four ways, still moved the plane
        to a clearly higher MI (0: the fit settled); NaN when the profile sets no refits.
    tilt_disagreement_deg : float
        How far from the fit the refits of the tilt check reach planes that fit about as well (MI
        within ``tilt_agreement_tolerance``), or the fit refined on one half of the section turns:
        the tilt the data leave open (:func:`~vstain.registration.checks.tilt_disagreement`,
        :func:`~vstain.registration.checks.half_section_tilt`).
    tilt_error_px : float
        What that open tilt could cost: the section's tissue radius (CT pixels) times its sine, the
        largest out-of-plane error such a turn about the tissue's centre makes. Above
        ``max_tilt_error_px`` the fit is uncertain.
    normal_axis : str
        The volume axis (``z``, ``y`` or ``x``) the fitted normal lies nearest.
    threads : int
        The SimpleITK threads every registration method of the fit ran with (``config.threads``).
    """

    __module__ = "vstain.registration"

    pair_id: str
    plane_point: np.ndarray
    plane_axes: np.ndarray
    plane_normal: np.ndarray
    affine: np.ndarray
    ct_slice: np.ndarray
    histology: np.ndarray
    ct_valid: np.ndarray
    histology_valid: np.ndarray
    pixel_size_um: float
    mutual_information: float
    initial_mutual_information: float
    mi_history: list[dict[str, Any]]
    seconds: float
    mi_margin: float = math.nan
    silhouette_iou: float = math.nan
    status: str = "ok"
    tilt_spread_deg: float = math.nan
    tilt_disagreement_deg: float = math.nan
    tilt_error_px: float = math.nan
    normal_axis: str = "z"
    threads: int = 1

    @property
    def mirrored(self) -> bool:
        """Whether the section lies face down: the histology is flipped, seen along the normal's positive axis.

        The affine flips the histology (negative determinant) onto a plane whose normal points along its
        axis; a fit from landmarks may instead turn the plane over (normal against its axis) unflipped.
        """
        normal = np.asarray(self.plane_normal, float)
        facing_back = normal[int(np.argmax(np.abs(normal)))] < 0
        return bool((np.linalg.det(self.affine[:2, :2]) < 0) != facing_back)

    def histology_to_volume(self, points_yx: np.ndarray) -> np.ndarray:
        """Map histology pixel coordinates ``(N, 2)`` (y, x) to CT voxel coordinates ``(N, 3)`` (z, y, x)."""
        return histology_points_to_volume(points_yx, self.affine, self.plane_point, self.plane_axes)


def histology_points_to_volume(points_yx, affine, plane_point, plane_axes) -> np.ndarray:
    """Histology pixels ``(N, 2)`` (y, x) -> CT voxels ``(N, 3)`` (z, y, x): through ``affine``, then the plane."""
    points = np.atleast_2d(np.asarray(points_yx, dtype=float))
    ij = (affine[:2, :2] @ points.T).T + affine[:2, 2]
    return plane_point[None, :] + ij[:, :1] * plane_axes[0][None, :] + ij[:, 1:2] * plane_axes[1][None, :]
