"""How right a registration is, measured against the synthetic dataset's ground truth.

The registration itself (:mod:`vstain.registration`) knows nothing of the phantom: these measures
compare its :class:`~vstain.registration.RegistrationResult` with what a :class:`~vstain.phantom.PhantomSample`
knows (the true plane, affine and labels). :func:`registration_errors` gives the plane's angle and
offset errors and the target registration error; :func:`true_correspondence_mask` and
:func:`true_rois` put the true common region and the true bone / background regions on the result's grid.

Examples
--------
>>> import numpy as np
>>> from types import SimpleNamespace
>>> from vstain.registration import RegistrationResult
>>> axes = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
>>> fit = RegistrationResult("p", np.array([2.0, 0.0, 0.0]), axes, np.array([1.0, 0.0, 0.0]), np.diag([0.5, 0.5, 1]),
...                          np.zeros((8, 8), np.float32), np.zeros((8, 8, 3), np.uint8), np.ones((8, 8), bool),
...                          np.ones((8, 8), bool), 2.0, 1.0, 0.5, [], 0.0)
>>> truth = SimpleNamespace(plane_normal=[1.0, 0.0, 0.0], histology_to_volume=fit.histology_to_volume,
...                         section_labels=np.ones((16, 16), np.uint8), fov_mask=np.ones((16, 16), bool),
...                         ct_voxel_um=2.0, histology_pixel_um=1.0)
>>> errors = registration_errors(fit, truth)
>>> errors["tre_max_px"], errors["angle_error_deg"], errors["mirror_correct"]
(0.0, 0.0, True)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from vstain.masks import convex_hull
from vstain.phantom.labels import LABELS, RIGID_LABELS
from vstain.registration import RegistrationResult, oblique_slice, warp_to_result
from vstain.registration.poses import angle_between_planes
from vstain.registration.warp import result_grid_to_histology

__all__ = ["normalisation_truth", "registration_errors", "true_correspondence_mask", "true_rois"]


def registration_errors(result: Any, sample: Any, *, grid_step_px: int | None = None) -> dict[str, float]:
    """Registration accuracy against the phantom's ground truth.

    Parameters
    ----------
    result : RegistrationResult
    sample : PhantomSample
        Any object with ``plane_normal``, ``histology_to_volume``, ``section_labels``,
        ``fov_mask``, ``ct_voxel_um`` and ``histology_pixel_um``.
    grid_step_px : int, optional
        Spacing, in histology pixels, of the grid of target points (default: one CT pixel).

    Returns
    -------
    dict
        ``angle_error_deg``: angle between the true and fitted plane normals;
        ``offset_um``: distance from the true plane of the fitted position of the
        section centre, along the true normal; ``tre_median_px``, ``tre_max_px``:
        target registration error over grid points inside the sample (non-background
        true labels, inside the field of view), in CT pixels, with both mappings done
        by ``histology_to_volume``; ``inplane_error_deg``: angle between the true and fitted
        directions of the section's rows in the volume (a wrong in-plane rotation or face);
        ``mirror_correct``: whether the fit found the face the section lies on.
    """
    true_normal = np.asarray(sample.plane_normal, float)
    true_normal = true_normal / np.linalg.norm(true_normal)
    angle = angle_between_planes(true_normal, result.plane_normal)
    step = grid_step_px or max(1, int(round(sample.ct_voxel_um / sample.histology_pixel_um)))
    inside = (np.asarray(sample.section_labels) > 0) & np.asarray(sample.fov_mask, bool)
    ys, xs = np.nonzero(inside[::step, ::step])
    points = np.stack([ys * step, xs * step], axis=1).astype(float)
    if len(points) == 0:
        raise ValueError(f"pair {getattr(sample, 'pair_id', '?')}: no sample pixels to measure the error on")
    truth = sample.histology_to_volume(points)
    fitted = result.histology_to_volume(points)
    tre = np.linalg.norm(truth - fitted, axis=1)
    centre = points.mean(axis=0, keepdims=True)
    # The section's row direction in the volume, true and fitted: a wrong in-plane turn or face shows here.
    ends = np.vstack([centre, centre + [[0.0, 100.0]]])
    true_dir = np.diff(sample.histology_to_volume(ends), axis=0)[0]
    fitted_dir = np.diff(result.histology_to_volume(ends), axis=0)[0]
    cos_dir = float(np.dot(true_dir, fitted_dir) / (np.linalg.norm(true_dir) * np.linalg.norm(fitted_dir)))
    offset_vox = float(np.dot(result.histology_to_volume(centre)[0] - sample.histology_to_volume(centre)[0],
                              true_normal))
    return {
        "angle_error_deg": angle,
        "offset_um": abs(offset_vox) * float(sample.ct_voxel_um),
        "tre_median_px": float(np.median(tre)),
        "tre_max_px": float(np.max(tre)),
        "inplane_error_deg": math.degrees(math.acos(max(-1.0, min(1.0, cos_dir)))),
        "mirror_correct": bool(_handedness(result, centre, true_normal) == _handedness(sample, centre, true_normal)),
    }


def _handedness(mapping: Any, point: np.ndarray, normal: np.ndarray) -> bool:
    """Whether a histology -> volume mapping makes the section's (row, column) frame right-handed about ``normal``."""
    corners = np.vstack([point, point + [[1.0, 0.0]], point + [[0.0, 1.0]]])
    origin, row_end, column_end = mapping.histology_to_volume(corners)
    return bool(np.dot(np.cross(row_end - origin, column_end - origin), normal) > 0)


def true_correspondence_mask(result: RegistrationResult, sample: Any) -> np.ndarray:
    """The phantom's true common region on the result's grid.

    Every output pixel shows one point of the section (through the fitted affine); the
    truth there is the section's true label, and the true CT label at the point the
    section pixel truly came from (through the true plane and affine). The true mask is
    the intersection of the convex hulls of the rigid labels of both, inside the
    section's field of view, as in :func:`vstain.phantom.ground_truth_pair`.

    Parameters
    ----------
    result : RegistrationResult
    sample : PhantomSample
        Any object with ``section_labels``, ``fov_mask``, ``labels_volume`` and
        ``histology_to_volume``.

    Returns
    -------
    ndarray, (H, W) bool
    """
    shape = result.ct_slice.shape
    yx = result_grid_to_histology(result)[:2].T
    section = warp_to_result(sample.section_labels, result)
    fov = warp_to_result(sample.fov_mask.astype(np.uint8), result) > 0
    voxels = sample.histology_to_volume(yx)
    ct_labels = ndi.map_coordinates(sample.labels_volume, voxels.T, order=0, mode="nearest").reshape(shape)
    hulls = [convex_hull(np.isin(labels, RIGID_LABELS) & fov & result.ct_valid) for labels in (ct_labels, section)]
    return hulls[0] & hulls[1] & fov & result.ct_valid


def true_rois(result: RegistrationResult, sample: Any) -> dict[str, np.ndarray]:
    """True dense-bone and background ROIs on the result's grid (for measuring normalisation).

    Parameters
    ----------
    result : RegistrationResult
    sample : PhantomSample
        Any object with ``labels_volume`` and ``section_labels``.

    Returns
    -------
    dict of ndarray, (H, W) bool
        ``ct_bone``, ``ct_background`` (the CT labels on the fitted plane),
        ``histology_bone``, ``histology_background`` (the section's labels through the
        fitted affine, where the histology has data).
    """
    ct_labels = oblique_slice(sample.labels_volume, result.plane_point, result.plane_axes, result.ct_slice.shape,
                              order=0, cval=255)
    section = warp_to_result(sample.section_labels, result, cval=255)
    return {
        "ct_bone": ct_labels == LABELS["dense_bone"],
        "ct_background": ct_labels == LABELS["background"],
        "histology_bone": (section == LABELS["dense_bone"]) & result.histology_valid,
        "histology_background": (section == LABELS["background"]) & result.histology_valid,
    }


def normalisation_truth(result: RegistrationResult, sample: Any, ct: np.ndarray, histology: np.ndarray,
                        min_pixels: int = 10) -> dict[str, list[float]]:
    """Mean CT and histology values on the true bone and background, before and after normalisation.

    Parameters
    ----------
    result : RegistrationResult
        Its ``ct_slice`` and ``histology`` are the images before normalisation.
    sample : PhantomSample
        As :func:`true_rois` reads it.
    ct, histology : ndarray
        The normalised images on the result's grid.
    min_pixels : int
        A true region smaller than this is left out.

    Returns
    -------
    dict
        ``<ct|histology>_<bone|background>_<before|after>``: the mean (a list: one value for the CT,
        three for RGB) over that true region.
    """
    true = true_rois(result, sample)
    out: dict[str, list[float]] = {}
    for key, image_before, image_after in (("ct", result.ct_slice, ct), ("histology", result.histology, histology)):
        for roi in ("bone", "background"):
            region = true[f"{key}_{roi}"]
            if region.sum() >= min_pixels:
                out[f"{key}_{roi}_before"] = np.asarray(image_before, float)[region].mean(axis=0).tolist()
                out[f"{key}_{roi}_after"] = np.asarray(image_after, float)[region].mean(axis=0).tolist()
    return out
