"""The whole registration of one pair: global start, plane fit, 2D affine, plane refits, checks, result.

:func:`register_section_to_volume` runs the steps of :mod:`vstain.registration` in order:
:func:`first_fit` (the global search, or landmarks), :func:`refine` (the 2D affine, the plane refitted
on the undistorted section, the tilt check) and :func:`finish` (the fit's checks, the crop to the
common field of view, the registered images and the verdict).
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import numpy as np
import SimpleITK as sitk

from vstain.params import RegistrationParams
from vstain.registration.affine import fit_affine, mi_before_registration, rectify
from vstain.registration.checks import half_section_tilt, judge, silhouette_iou, tilt_disagreement, tilt_restarts
from vstain.registration.images import histology_grey, inside_volume, oblique_slice, plane_grid, tissue_pixels
from vstain.registration.inputs import RegistrationInputs, checked_inputs, checked_landmarks
from vstain.registration.metric import sitk_threads
from vstain.registration.plane import PlaneProblem, fit_plane
from vstain.registration.poses import Plane, landmark_start, normal_of
from vstain.registration.result import RegistrationFailed, RegistrationResult, histology_points_to_volume
from vstain.registration.views import AXIS_NAMES, CTViews, to_volume_frame
from vstain.registration.warp import warp_histology


@dataclasses.dataclass
class FirstFit:
    """The first plane fit of a pair, where :func:`refine` goes on from.

    Attributes
    ----------
    problem : PlaneProblem
        In the view of the fit's axis only.
    axis : int
        The volume axis the fitted normal lies nearest.
    transform : SimpleITK.Euler3DTransform
        The fitted slab -> view transform.
    value : float
        Its metric value (minus MI).
    slab : (ndarray, ndarray)
        The face of the section the fit saw: grey density and field of view.
    pre : ndarray, (3, 3)
        Histology pixels -> the slab's pixels (the identity, or the left-right flip of the mirrored face).
    search : dict
        The orientation check of the global search (:func:`~vstain.registration.plane.orientation_margin`).
    """

    problem: PlaneProblem
    axis: int
    transform: sitk.Euler3DTransform
    value: float
    slab: tuple[np.ndarray, np.ndarray]
    pre: np.ndarray
    search: dict[str, float]


@dataclasses.dataclass
class Fit:
    """A pair's fitted plane and affine, in the volume's voxel frame, with what the checks measured.

    ``affine``, ``origin`` and ``axes`` are as in :class:`~vstain.registration.RegistrationResult`
    before the crop; ``final_mi`` the 2D affine's MI; ``search`` the orientation check;
    ``tilt_spread`` and ``tilt_disagreement`` the tilt check's figures (NaN without one).
    """

    affine: np.ndarray
    origin: np.ndarray
    axes: np.ndarray
    final_mi: float
    axis: int
    search: dict[str, float]
    tilt_spread: float = math.nan
    tilt_disagreement: float = math.nan


def register_section_to_volume(
    ct_volume: np.ndarray,
    histology: np.ndarray,
    *,
    ct_voxel_um: float,
    histology_pixel_um: float,
    config: RegistrationParams,
    fov_mask: np.ndarray | None = None,
    pair_id: str = "?",
    initial_guess: dict | None = None,
) -> RegistrationResult:
    """Register a stained section to the oblique plane of a CT volume it was cut from.

    Parameters
    ----------
    ct_volume : ndarray, (Z, Y, X)
        The CT volume, any real dtype; isotropic voxels of ``ct_voxel_um``.
    histology : ndarray, (H, W, 3) uint8
        The section, at ``histology_pixel_um`` (finer than or equal to the CT voxel).
    ct_voxel_um, histology_pixel_um : float
        Pixel sizes in micrometres.
    config : RegistrationParams
        The settings: a profile's ``registration`` section.
    fov_mask : ndarray, (H, W) bool, optional
        Where the section image has data (a stitched, non-rectangular field of view).
    pair_id : str
        Named in every error.
    initial_guess : dict, optional
        A semi-automatic start. ``landmarks``: ``{"histology_yx": (N, 2), "ct_zyx": (N, 3)}``,
        N >= 3 corresponding points (histology pixels, CT voxels), not collinear, inside the
        images: the plane fit starts from the plane they span and searches nothing. Or any of
        ``rotation_deg`` (the section's turn on the slide, as :func:`vstain.phantom.section.draw_affine`
        draws it), ``mirrored`` (bool) and ``normal_axis`` (0 z, 1 y, 2 x): the global search
        still scans every orientation, but the fit may take only those within
        ``inplane_step_deg`` of the rotation, on that face, along that axis.

    Returns
    -------
    RegistrationResult

    Raises
    ------
    RegistrationError
        Bad input (naming the field), or a failed registration: mutual information
        did not improve, or the fitted plane leaves the volume or tilts beyond
        ``config.max_tilt_deg``.

    Examples
    --------
    >>> from vstain.phantom import make_sample                                # doctest: +SKIP
    >>> sample = make_sample(profile.dataset, "tb_000", "Mg", "toluidine_blue", 0, 0, 1)  # doctest: +SKIP
    >>> result = register_section_to_volume(sample.ct_volume, sample.histology,
    ...     ct_voxel_um=sample.ct_voxel_um, histology_pixel_um=sample.histology_pixel_um,
    ...     config=profile.registration)                                         # doctest: +SKIP
    >>> from vstain.phantom.truth import registration_errors                 # doctest: +SKIP
    >>> registration_errors(result, sample)["tre_median_px"] < 2                 # doctest: +SKIP
    True
    """
    # ITK splits every filter and metric over threads and sums their parts in varying order, which the
    # optimiser amplifies: the profile fixes the count (1: bit-for-bit the same fit on any machine).
    with sitk_threads(config.threads):
        started = time.perf_counter()
        inputs = checked_inputs(ct_volume, histology, ct_voxel_um, histology_pixel_um, fov_mask, pair_id)
        history: list[dict[str, Any]] = []
        initial_mi = mi_before_registration(inputs, config)
        fit = refine(inputs, first_fit(inputs, config, initial_guess, history), history)
        return finish(inputs, fit, config, history, initial_mi, started)




def first_fit(inputs: RegistrationInputs, config: RegistrationParams, initial_guess: dict | None,
              history: list) -> FirstFit:
    """The first rigid plane fit: from the pair's landmarks, or from the global search over views and faces.

    The first fit searches both faces (the mirrored slab is the section flipped left-right), even when
    the profile forbids a mirrored fit: its poses are the check's competitors. Each search axis has
    its view of the CT (the volume turned so the axis is z); after the first fit everything runs in
    the view of the fit's axis, where the plane is near-axial.
    """
    grey, fov = inputs.grey, inputs.fov
    flip = np.array([[1.0, 0.0, 0.0], [0.0, -1.0, grey.shape[1] - 1.0], [0.0, 0.0, 1.0]])
    faces = [(np.eye(3), grey, fov),
             (flip, np.ascontiguousarray(grey[:, ::-1]), np.ascontiguousarray(fov[:, ::-1]))]
    guess = dict(initial_guess or {})
    landmarks = guess.pop("landmarks", None)

    def problem(axes: list[int]) -> PlaneProblem:
        views = CTViews(inputs.ct, axes, inputs.ct_voxel_um, keep=config.pyramid_levels)
        return PlaneProblem(views, inputs.ct_voxel_um, inputs.histology_pixel_um, config, inputs.pair_id)

    if landmarks is not None:
        hist_yx, ct_zyx = checked_landmarks(landmarks, inputs.histology.shape[:2], inputs.ct.shape, inputs.pair_id)
        axis, transform = landmark_start(hist_yx, ct_zyx, inputs.ct_voxel_um, inputs.histology_pixel_um,
                                         grey.shape)
        on_axis = problem([axis])
        fit = fit_plane(on_axis, [faces[0][1:]], history, (transform, axis), 0, n_finest=config.pyramid_levels)
        return FirstFit(on_axis, axis, fit.transform, fit.value, faces[0][1:], faces[0][0], {})
    search_axes = [AXIS_NAMES.index(a) for a in config.search_axes]
    if "normal_axis" in guess and guess["normal_axis"] not in search_axes:
        search_axes.append(guess["normal_axis"])
    searched = problem(search_axes)
    fit = fit_plane(searched, [f[1:] for f in faces], history, None, 0, hint=guess)
    axis, face = fit.key
    return FirstFit(searched.only(axis), axis, fit.transform, fit.value, faces[face][1:], faces[face][0], fit.search)


def refine(inputs: RegistrationInputs, first: FirstFit, history: list) -> Fit:
    """From a first plane fit: the 2D affine, the plane refits on the undistorted section, the tilt check.

    Stage 1: rigid plane; stage 2: 2D affine; then the plane again on the section undistorted (and
    un-mirrored) by the affine, ``refinement_rounds`` times; the last round runs the tilt check
    (:func:`~vstain.registration.checks.tilt_restarts`, :func:`~vstain.registration.checks.half_section_tilt`).
    ``pre`` maps histology pixels to the pixels of the image the plane fit saw (the slab).
    """
    problem, axis, cfg = first.problem, first.axis, first.problem.config
    view = np.ascontiguousarray(problem.views[axis])
    scale = np.diag([1.0 / inputs.factor, 1.0 / inputs.factor, 1.0])
    transform, value, slab, pre = first.transform, first.value, first.slab, first.pre
    spread = disagreement = math.nan
    for round_ in range(1 + cfg.refinement_rounds):
        last = round_ == cfg.refinement_rounds
        if round_ > 0:
            fit = fit_plane(problem, [slab], history, (transform, axis), round_)
            transform, value = fit.transform, fit.value
        if last and cfg.check_tilt_deg > 0:
            check = tilt_restarts(problem, slab, transform, value, axis, round_)
            transform, value, spread = check.transform, check.value, check.spread_deg
            disagreement = max(tilt_disagreement(normal_of(transform), check.refits, cfg.tilt_agreement_tolerance),
                               half_section_tilt(problem, slab, transform, axis, round_))
        slab_origin, axes = Plane.from_transform(transform).voxel_frame(inputs.ct_voxel_um)
        origin, grid_shape = plane_grid(slab_origin, axes, view.shape)
        ct_plane = oblique_slice(view, origin, axes, grid_shape)
        plane_valid = np.isfinite(ct_plane)
        if plane_valid.sum() < 64:
            raise RegistrationFailed(f"pair {inputs.pair_id}: the fitted plane leaves the volume; registration failed")
        start = np.eye(3)
        start[:2, 2] = (slab_origin - origin) @ axes.T
        start = start @ scale @ pre
        affine, final_mi = fit_affine(inputs, ct_plane, plane_valid, start, cfg, history, f"affine{round_}")
        if not last:
            # the rectified section is the section undistorted (and un-mirrored) by the affine
            transform, pre, slab_grey, slab_fov = rectify(inputs, affine, origin, axes)
            slab = (slab_grey, slab_fov)
    origin, axes = to_volume_frame(origin, axes, axis)
    return Fit(affine, origin, axes, final_mi, axis, first.search, spread, disagreement)


def _checked_plane(inputs: RegistrationInputs, fit: Fit, cfg: RegistrationParams, initial_mi: float) -> np.ndarray:
    """The fit's unit normal, or RegistrationFailed: tilted beyond ``max_tilt_deg``, or no MI gained."""
    axes, axis, pair_id = fit.axes, fit.axis, inputs.pair_id
    normal = np.cross(axes[0], axes[1])
    normal /= np.linalg.norm(normal)
    tilt = math.degrees(math.acos(min(1.0, abs(float(normal[axis])))))
    if tilt > cfg.max_tilt_deg:
        raise RegistrationFailed(
            f"pair {pair_id}: the fitted plane tilts {tilt:.1f} deg from the {AXIS_NAMES[axis]} axis, beyond "
            "max_tilt_deg "
            f"{cfg.max_tilt_deg}; registration failed"
        )
    if not fit.final_mi > initial_mi:
        raise RegistrationFailed(
            f"pair {pair_id}: mutual information did not improve ({initial_mi:.4f} -> {fit.final_mi:.4f}); "
            "registration failed"
        )
    return normal


def _section_in_volume(inputs: RegistrationInputs, fit: Fit, cfg: RegistrationParams) -> tuple[np.ndarray, float]:
    """Where the section's field of view lands: its points (histology px, every CT pixel) inside the volume.

    Glass around the section may lie beyond the CT's field of view; the tissue may not
    (RegistrationFailed when less than ``min_inside_fraction`` of it is inside). Also returns the
    error a tilt as undetermined as the refits show could make: the section's tissue turned about its
    centre by that angle moves out of the plane by up to its radius times the sine.
    """
    step = max(1, int(round(inputs.ct_voxel_um / inputs.histology_pixel_um)))
    ys, xs = np.nonzero(inputs.fov[::step, ::step])
    points = np.stack([ys * step, xs * step], axis=1).astype(float)
    voxels = histology_points_to_volume(points, fit.affine, fit.origin, fit.axes)
    inside = inside_volume(voxels, inputs.ct.shape)
    tissue = tissue_pixels(histology_grey(inputs.histology[::step, ::step])[ys, xs])
    inside_fraction = float(inside[tissue].mean()) if tissue.any() else float(inside.mean())
    tissue_voxels = voxels[tissue] if tissue.any() else voxels
    radius = float(np.max(np.linalg.norm(tissue_voxels - tissue_voxels.mean(axis=0), axis=1)))
    tilt_error = radius * math.sin(math.radians(fit.tilt_disagreement)) \
        if math.isfinite(fit.tilt_disagreement) else math.nan
    if inside_fraction < cfg.min_inside_fraction or not inside.any():
        raise RegistrationFailed(
            f"pair {inputs.pair_id}: the fitted plane leaves the volume ({100 * (1 - inside_fraction):.0f} % of the "
            "section's tissue maps outside the CT); registration failed"
        )
    return points[inside], tilt_error


def finish(inputs: RegistrationInputs, fit: Fit, cfg: RegistrationParams, history: list, initial_mi: float,
           started: float) -> RegistrationResult:
    """Checks, crop to the common field of view, warp the RGB section, judge the fit.

    The verdict is :func:`~vstain.registration.checks.judge`'s.
    """
    normal = _checked_plane(inputs, fit, cfg, initial_mi)
    inside, tilt_error = _section_in_volume(inputs, fit, cfg)
    axes = fit.axes
    ij = (fit.affine[:2, :2] @ inside.T).T + fit.affine[:2, 2]
    low = np.floor(ij.min(axis=0)).astype(int)
    high = np.ceil(ij.max(axis=0)).astype(int)
    shape = (int(high[0] - low[0]) + 1, int(high[1] - low[1]) + 1)
    origin = fit.origin + low[0] * axes[0] + low[1] * axes[1]
    shift = np.eye(3)
    shift[:2, 2] = -low
    affine = shift @ fit.affine
    ct_slice = oblique_slice(inputs.ct, origin, axes, shape)
    ct_valid = np.isfinite(ct_slice)
    ct_slice = np.where(ct_valid, ct_slice, np.percentile(ct_slice[ct_valid], 1)).astype(np.float32)
    sigma = max(0.0, (inputs.ct_voxel_um / inputs.histology_pixel_um - 1.0) / 2.0)
    warped, histology_valid = warp_histology(inputs.histology, inputs.fov, affine, shape, sigma)
    iou = silhouette_iou(ct_slice, ct_valid, warped, histology_valid)
    margin = float(fit.search.get("mi_margin", math.nan))
    return RegistrationResult(
        pair_id=inputs.pair_id, plane_point=origin, plane_axes=axes, plane_normal=normal, affine=affine,
        ct_slice=ct_slice, histology=warped, ct_valid=ct_valid, histology_valid=histology_valid,
        pixel_size_um=inputs.ct_voxel_um, mutual_information=float(fit.final_mi),
        initial_mutual_information=float(initial_mi), mi_history=history,
        seconds=time.perf_counter() - started, mi_margin=margin, silhouette_iou=iou,
        tilt_spread_deg=float(fit.tilt_spread), tilt_disagreement_deg=float(fit.tilt_disagreement),
        tilt_error_px=float(tilt_error), normal_axis=AXIS_NAMES[fit.axis],
        threads=int(sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()),
        status=judge(margin, iou, cfg, fit.tilt_spread, tilt_error, fit.tilt_disagreement),
    )
