"""The registration's input: checked at the boundary, errors naming the pair and the field.

:func:`check_registration_inputs` checks a pair's arrays and pixel sizes; :func:`checked_inputs`
turns them, with the section's field of view, into the :class:`RegistrationInputs` every step of the
fit reads (the CT as float32, the section's grey optical density); :func:`checked_landmarks` checks a
pair's landmarks.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from vstain.manifest import check_landmarks
from vstain.registration.images import histology_grey
from vstain.registration.result import RegistrationError


@dataclasses.dataclass(frozen=True)
class RegistrationInputs:
    """One pair's checked input: what every step of the registration reads.

    Attributes
    ----------
    ct : ndarray, (Z, Y, X) float32
        The CT volume.
    histology : ndarray, (H, W, 3) uint8
        The section.
    grey : ndarray, (H, W) float32
        Its grey optical density (:func:`~vstain.registration.images.histology_grey`), the median of
        the field of view outside it.
    fov : ndarray, (H, W) bool
        Where the section image has data.
    ct_voxel_um, histology_pixel_um : float
        The pixel sizes; the histology's is not coarser than the CT's.
    pair_id : str
        Named in every error.
    """

    ct: np.ndarray
    histology: np.ndarray
    grey: np.ndarray
    fov: np.ndarray
    ct_voxel_um: float
    histology_pixel_um: float
    pair_id: str

    @property
    def factor(self) -> float:
        """CT voxels per histology pixel: how much finer the section is."""
        return self.ct_voxel_um / self.histology_pixel_um


def checked_inputs(ct_volume: Any, histology: Any, ct_voxel_um: Any, histology_pixel_um: Any,
                   fov_mask: Any = None, pair_id: str = "?") -> RegistrationInputs:
    """A pair's registration input, checked (:func:`check_registration_inputs`, the field of view, the scales).

    Raises
    ------
    RegistrationError
        Naming ``pair_id`` and the offending field.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> inputs = checked_inputs(rng.random((8, 16, 16)), rng.integers(0, 255, (32, 32, 3), np.uint8), 5.0, 2.5)
    >>> inputs.ct.dtype.name, bool(inputs.fov.all()), inputs.factor
    ('float32', True, 2.0)
    >>> checked_inputs(rng.random((8, 16, 16)), rng.integers(0, 255, (16, 16, 3), np.uint8), 2.5, 5.0, pair_id="p1")
    Traceback (most recent call last):
    ...
    vstain.registration.RegistrationError: pair p1: histology_pixel_um (5.0) must not be coarser than ct_voxel_um (2.5)
    """
    check_registration_inputs(ct_volume, histology, ct_voxel_um, histology_pixel_um, pair_id=pair_id)
    ct_voxel_um = float(ct_voxel_um)
    histology_pixel_um = float(histology_pixel_um)
    if histology_pixel_um > ct_voxel_um * 1.001:
        raise RegistrationError(
            f"pair {pair_id}: histology_pixel_um ({histology_pixel_um}) must not be coarser than ct_voxel_um "
            f"({ct_voxel_um})"
        )
    ct = np.asarray(ct_volume, dtype=np.float32)
    histology = np.asarray(histology)
    fov = np.ones(histology.shape[:2], bool) if fov_mask is None else np.asarray(fov_mask, bool)
    if fov.shape != histology.shape[:2]:
        raise RegistrationError(f"pair {pair_id}: fov_mask shape {fov.shape} != histology shape {histology.shape[:2]}")
    if fov.sum() < 64:
        raise RegistrationError(f"pair {pair_id}: fov_mask is empty; nothing to register")
    grey = histology_grey(histology)
    if not fov.all():
        # Neutral fill outside the field of view, so smoothing does not bleed the fill into it.
        grey = np.where(fov, grey, np.median(grey[fov])).astype(np.float32)
    return RegistrationInputs(ct, histology, grey, fov, ct_voxel_um, histology_pixel_um, pair_id)


def check_registration_inputs(
    ct_volume: Any,
    histology: Any,
    ct_voxel_um: Any,
    histology_pixel_um: Any,
    *,
    pair_id: str = "?",
) -> None:
    """Stop with a clear error if a pair cannot be registered.

    Checks that the CT is a 3D finite non-constant volume, the histology an RGB
    ``uint8`` image that is not constant, both pixel sizes positive numbers, and the
    section not far larger than the largest plane through the volume (glass around it may
    exceed the CT's field of view; several times it means a wrong pixel size).

    Raises
    ------
    RegistrationError
        Naming ``pair_id`` and the offending field.

    Examples
    --------
    >>> import numpy as np
    >>> check_registration_inputs(np.zeros((4, 4)), np.zeros((4, 4, 3), np.uint8), 5.0, 2.5, pair_id="p7")
    Traceback (most recent call last):
    ...
    vstain.registration.RegistrationError: pair p7: ct_volume must be a 3D (z, y, x) volume, got shape (4, 4)
    """
    where = f"pair {pair_id}"
    for name, value in (("ct_voxel_um", ct_voxel_um), ("histology_pixel_um", histology_pixel_um)):
        if value is None:
            raise RegistrationError(f"{where}: {name} (pixel size) is missing")
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
            raise RegistrationError(f"{where}: {name} must be a number, got {value!r}")
        if not math.isfinite(float(value)) or float(value) <= 0:
            raise RegistrationError(f"{where}: {name} must be a positive pixel size in um, got {value!r}")
    ct = np.asarray(ct_volume)
    if ct.ndim != 3:
        raise RegistrationError(f"{where}: ct_volume must be a 3D (z, y, x) volume, got shape {ct.shape}")
    if min(ct.shape) < 4:
        raise RegistrationError(f"{where}: ct_volume is too small ({ct.shape}); need at least 4 voxels per axis")
    if not np.issubdtype(ct.dtype, np.number):
        raise RegistrationError(f"{where}: ct_volume must be numeric, got {ct.dtype}")
    if not np.all(np.isfinite(ct)):
        raise RegistrationError(f"{where}: ct_volume contains NaN or infinite values")
    if float(ct.max()) == float(ct.min()):
        raise RegistrationError(f"{where}: ct_volume is constant ({float(ct.min())}); nothing to register")
    hist = np.asarray(histology)
    if hist.ndim != 3 or hist.shape[-1] != 3 or hist.dtype != np.uint8:
        raise RegistrationError(
            f"{where}: histology must be an RGB uint8 image of shape (H, W, 3), got {hist.dtype} {hist.shape}"
        )
    if min(hist.shape[:2]) < 8:
        raise RegistrationError(f"{where}: histology is empty or too small ({hist.shape[:2]})")
    if int(hist.max()) == int(hist.min()):
        raise RegistrationError(f"{where}: histology is constant ({int(hist.min())}); nothing to register")
    # A slide image may show glass beyond the CT's field of view, but one more than twice the volume's
    # diagonal long, or four times its largest plane in area, means a wrong pixel size.
    sides = np.sort(np.asarray(ct.shape, float) * float(ct_voxel_um))
    largest_area = sides[2] * math.hypot(sides[0], sides[1])
    section = np.sort(np.asarray(hist.shape[:2], float) * float(histology_pixel_um))
    if section[0] * section[1] > 4 * largest_area or section[1] > 2 * float(np.linalg.norm(sides)):
        raise RegistrationError(
            f"{where}: histology ({section[1]:.0f} x {section[0]:.0f} um) is far larger than any plane of the CT "
            f"volume (largest {sides[2]:.0f} x {math.hypot(sides[0], sides[1]):.0f} um); check the pixel sizes "
            "histology_pixel_um and ct_voxel_um"
        )


def checked_landmarks(landmarks, histology_shape, ct_shape, pair_id):
    """The landmark arrays, checked (:func:`vstain.manifest.check_landmarks`); errors name the pair and field."""
    try:
        return check_landmarks(landmarks, histology_shape, ct_shape,
                               where=f"pair {pair_id}: field 'initial_guess.landmarks'")
    except ValueError as err:
        raise RegistrationError(str(err)) from None
