"""The 2D affine of the section onto the fitted plane (non-uniform scale, shear, a mirror), and its undoing.

:func:`fit_affine` fits the histology (fixed) onto the CT sampled on the plane (moving) by Mattes MI;
:func:`rectify` undistorts the section by the fitted affine for the next rigid plane fit;
:func:`mi_before_registration` scores the pair as it comes. An affine maps histology pixels
``[y, x, 1]`` to plane pixels ``[i, j, 1]``; SimpleITK's are in (x, y) order
(:func:`to_sitk_affine`, :func:`from_sitk_affine`).

Examples
--------
>>> import numpy as np
>>> affine = np.array([[0.5, 0.1, 3.0], [-0.2, 0.6, 4.0], [0.0, 0.0, 1.0]])
>>> bool(np.allclose(from_sitk_affine(to_sitk_affine(affine, np.array([10.0, 20.0]))), affine))
True
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from vstain.params import RegistrationParams
from vstain.registration.images import block_mean, fov_at
from vstain.registration.inputs import RegistrationInputs
from vstain.registration.metric import bins_for, mask_image, mattes_method
from vstain.registration.result import RegistrationFailed


def affine_images(ct_plane, plane_valid, grey, fov, factor, max_bins):
    """Fixed (histology at about CT pixel size, physical units = histology pixels) and moving (CT plane)."""
    fixed_grey = block_mean(grey, factor)
    fov_small = fov_at(fov, factor)
    sy = grey.shape[0] / fixed_grey.shape[0]
    sx = grey.shape[1] / fixed_grey.shape[1]
    fixed = sitk.GetImageFromArray(fixed_grey)
    fixed.SetSpacing((sx, sy))
    fixed.SetOrigin(((sx - 1) / 2, (sy - 1) / 2))
    fill = float(np.percentile(ct_plane[plane_valid], 1))
    # Physical xy of the moving image = plane pixels (j, i).
    moving = sitk.GetImageFromArray(np.where(plane_valid, ct_plane, fill).astype(np.float32))
    return fixed, moving, mask_image(fov_small, fixed), bins_for(int(fov_small.sum()), max_bins)


def to_sitk_affine(affine: np.ndarray, centre_xy: np.ndarray) -> sitk.AffineTransform:
    """Histology pixel (y, x) -> plane pixel (i, j) matrix as a SimpleITK (x, y) -> (j, i) transform."""
    linear = affine[:2, :2][::-1, ::-1]
    translation = affine[:2, 2][::-1]
    transform = sitk.AffineTransform(2)
    transform.SetMatrix(tuple(linear.ravel()))
    transform.SetCenter(tuple(centre_xy))  # rotation/scale about the section centre: better conditioned
    transform.SetTranslation(tuple(linear @ centre_xy + translation - centre_xy))
    return transform


def from_sitk_affine(transform: sitk.AffineTransform) -> np.ndarray:
    """A SimpleITK (x, y) -> (j, i) affine as the histology pixel (y, x) -> plane pixel (i, j) matrix."""
    matrix = np.asarray(transform.GetMatrix()).reshape(2, 2)
    centre = np.asarray(transform.GetCenter())
    translation = np.asarray(transform.GetTranslation()) + centre - matrix @ centre
    affine = np.eye(3)
    affine[:2, :2] = matrix[::-1, ::-1]
    affine[:2, 2] = translation[::-1]
    return affine


def affine_mi(inputs: RegistrationInputs, ct_plane: np.ndarray, plane_valid: np.ndarray, affine: np.ndarray,
              max_bins: int) -> float:
    """Mattes MI of the histology mapped onto the CT plane by ``affine`` (no optimisation)."""
    grey = inputs.grey
    fixed, moving, mask, bins = affine_images(ct_plane, plane_valid, grey, inputs.fov, inputs.factor, max_bins)
    method = mattes_method(bins, mask)
    centre = np.array([(grey.shape[1] - 1) / 2, (grey.shape[0] - 1) / 2])
    method.SetInitialTransform(to_sitk_affine(affine, centre))
    try:
        return -float(method.MetricEvaluate(fixed, moving))
    except RuntimeError:  # the section falls outside the slice: no information
        return 0.0


def fit_affine(inputs: RegistrationInputs, ct_plane: np.ndarray, plane_valid: np.ndarray, initial: np.ndarray,
               cfg: RegistrationParams, history: list, stage: str) -> tuple[np.ndarray, float]:
    """2D affine of the histology (fixed) onto the CT plane image (moving), by Mattes MI.

    ``initial`` and the result map histology *pixels* [y, x, 1] to plane pixels [i, j, 1]. Returns
    the affine and its MI; the optimiser's iterations go to ``history``, named ``stage``.
    """
    grey = inputs.grey
    fixed, moving, mask, bins = affine_images(ct_plane, plane_valid, grey, inputs.fov, inputs.factor, cfg.mi_bins)
    centre = np.array([(grey.shape[1] - 1) / 2, (grey.shape[0] - 1) / 2])
    transform = to_sitk_affine(initial, centre)
    method = mattes_method(bins, mask, history=history, stage=stage, level=0)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=1.0, minStep=1e-3, numberOfIterations=cfg.affine_iterations,
        relaxationFactor=0.6, gradientMagnitudeTolerance=1e-8,
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel([2, 1])
    method.SetSmoothingSigmasPerLevel([1.0, 0.0])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    method.SetInitialTransform(transform, inPlace=True)
    try:
        method.Execute(fixed, moving)
        final_mi = -float(method.MetricEvaluate(fixed, moving))
    except RuntimeError as err:
        raise RegistrationFailed(f"pair {inputs.pair_id}: 2D affine fit failed: {err}") from err
    return from_sitk_affine(transform), final_mi


def mi_before_registration(inputs: RegistrationInputs, cfg: RegistrationParams) -> float:
    """MI before registration: the section centred on the middle axial slice, nominal scale."""
    ct, grey, factor = inputs.ct, inputs.grey, inputs.factor
    ct_plane = ct[ct.shape[0] // 2].astype(np.float32)
    affine = np.diag([1.0 / factor, 1.0 / factor, 1.0])
    affine[:2, 2] = (np.asarray(ct.shape[1:], float) - 1) / 2 - (np.asarray(grey.shape, float) - 1) / 2 / factor
    return affine_mi(inputs, ct_plane, np.ones(ct_plane.shape, bool), affine, cfg.mi_bins)


def rectify(inputs: RegistrationInputs, affine: np.ndarray, origin: np.ndarray, axes: np.ndarray):
    """Undistort the section by the affine's linear part, for a rigid plane fit that now fits.

    Returns the rigid plane transform of the rectified section (where the affine puts it),
    ``pre`` (histology pixels -> rectified pixels) and the rectified grey image and mask.
    """
    grey, fov, factor = inputs.grey, inputs.fov, inputs.factor
    histology_pixel_um, ct_voxel_um = inputs.histology_pixel_um, inputs.ct_voxel_um
    linear = affine[:2, :2] * factor  # histology pixels -> plane distances in histology pixels
    corners = np.array([[0, 0], [0, grey.shape[1] - 1], [grey.shape[0] - 1, 0],
                        [grey.shape[0] - 1, grey.shape[1] - 1]], float)
    mapped = corners @ linear.T
    low = np.floor(mapped.min(axis=0))
    shape = tuple(int(v) for v in np.ceil(mapped.max(axis=0)) - low + 1)
    pre = np.eye(3)
    pre[:2, :2] = linear
    pre[:2, 2] = -low
    rr, cc = np.mgrid[0 : shape[0], 0 : shape[1]].astype(float)
    src = np.linalg.inv(pre) @ np.stack([rr.ravel(), cc.ravel(), np.ones(rr.size)])
    rect_grey = ndi.map_coordinates(grey, src[:2], order=1, mode="constant", cval=0.0).reshape(shape)
    rect_fov = ndi.map_coordinates(fov.astype(np.float32), src[:2], order=0, mode="constant",
                                   cval=0.0).reshape(shape) > 0.5
    # Rectified pixel r lies at plane pixel affine(t) + r / factor - low / factor ... i.e. the slab origin:
    slab_origin_plane = affine[:2, 2] + low / factor
    slab_origin = origin + slab_origin_plane @ axes
    # Physical frame: slab x (columns) along axes[1], y (rows) along axes[0], in xyz order.
    ex, ey = axes[1][::-1], axes[0][::-1]
    rotation = np.stack([ex, ey, np.cross(ex, ey)], axis=1)
    transform = sitk.Euler3DTransform()
    centre = np.array([(shape[1] - 1) / 2, (shape[0] - 1) / 2, 0.0]) * histology_pixel_um
    transform.SetCenter(tuple(centre))
    transform.SetMatrix(tuple(rotation.ravel()))
    transform.SetTranslation(tuple(slab_origin[::-1] * ct_voxel_um + rotation @ centre - centre))
    return transform, pre, rect_grey.astype(np.float32), rect_fov
