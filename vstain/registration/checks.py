"""The quality check of a fit: a wrong local optimum must not pass for a fit.

:func:`tilt_restarts` refits from the fit tilted over the cone (and turned in its plane) and moves it
where a refit climbs clearly higher; :func:`tilt_disagreement` and :func:`half_section_tilt` measure
the tilt the data leave open; :func:`silhouette_iou` compares the sample's outline in the two
registered images; :func:`judge` turns the figures into the verdict, ``ok`` or ``uncertain: <reasons>``.

Examples
--------
>>> from types import SimpleNamespace
>>> cfg = SimpleNamespace(min_mi_margin=0.05, min_silhouette_iou=0.5, max_tilt_spread_deg=1.0,
...                       max_tilt_error_px=3.0, tilt_refit_rounds=2, check_tilt_deg=4.0,
...                       tilt_agreement_tolerance=0.002)
>>> judge(0.3, 0.9, cfg)
'ok'
>>> judge(0.01, 0.9, cfg).startswith("uncertain: MI margin 0.010")
True
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from vstain.masks import convex_hull, segment_ct, segment_histology
from vstain.params import RegistrationParams
from vstain.registration.images import tissue_centre
from vstain.registration.plane import PlaneFit, PlaneProblem, fit_plane
from vstain.registration.poses import angle_between_planes, normal_of, rotation_between, tilted, turned
from vstain.registration.result import RegistrationFailed


#: Refits of the tilt check that are refined on the finest level, at most, per round.
CHECK_CONFIRMATIONS = 3


#: The tilt check's refits sample this fraction of the section's pixels (its confirmations, all).
CHECK_SAMPLING = 0.25


#: ... and at most this many (a paper-size section has a million pixels at the finest level; the
#: confirmations, with every pixel, decide).
CHECK_MAX_SAMPLES = 20000


@dataclasses.dataclass
class TiltCheck:
    """The answer of :func:`tilt_restarts`.

    Attributes
    ----------
    transform : SimpleITK.Euler3DTransform
        The fit after the check.
    value : float
        Its metric value (minus MI, finest level).
    spread_deg : float
        How far the last round of refits still moved the plane (0: settled).
    refits : list of (ndarray, float)
        The reference's plane normal and value, then every refit's, on the check's level, for
        :func:`tilt_disagreement`.
    """

    transform: sitk.Euler3DTransform
    value: float
    spread_deg: float
    refits: list[tuple[np.ndarray, float]]


def _check_starts(transform: sitk.Euler3DTransform, cfg: RegistrationParams,
                  round_index: int) -> list[tuple[Any, int | None]]:
    """The starts of one round of the tilt check: ``(pose, levels it runs down; None: the refinement levels)``.

    The first round reaches over the whole cone (rings ``check_tilt_deg`` apart, 8 directions): a steep
    plane that converged to an axial one is far from it; later rounds look round the new fit.
    The nearest ring runs on the refinement levels only: where the MI is flat over the tilt, its refits
    stop where the slope runs out, and show it (the open tilt); the farther rings, and starts turned in
    the plane by half a grid step and a whole one either way, run down the whole pyramid, whose coarse
    levels reach a better optimum 10 degrees off that the finest cannot (a steep plane converged to an
    axial one, or a fit one coarse in-plane step off).
    """
    rings = np.arange(cfg.check_tilt_deg, cfg.max_tilt_deg + 1e-9, cfg.check_tilt_deg) if round_index == 0 \
        else [cfg.check_tilt_deg]
    n_directions = 8 if round_index == 0 else 4
    starts = [(tilted(transform, k * 2 * math.pi / n_directions, tilt),
               None if tilt <= cfg.check_tilt_deg + 1e-9 else cfg.pyramid_levels)
              for tilt in rings for k in range(n_directions)]
    turns = (0.5, 1.0) if round_index == 0 else (0.5,)
    starts += [(turned(transform, sign * f * cfg.inplane_step_deg), cfg.pyramid_levels)
               for f in turns for sign in (-1, 1)]
    return starts


def _confirmations(candidates: list[PlaneFit], fit: sitk.Euler3DTransform) -> list[PlaneFit]:
    """The best :data:`CHECK_CONFIRMATIONS` distinct poses among the refits' ``candidates``, none the fit again.

    They are refined with every pixel on the finest level, whatever their sampled MI (the sampling and
    the levels may rank near-equal planes differently).
    """
    close: list[PlaneFit] = []
    for candidate in sorted(candidates, key=lambda c: c.value):
        poses = [fit] + [c.transform for c in close]
        if all(rotation_between(candidate.transform, pose) > 0.5 for pose in poses):
            close.append(candidate)
        if len(close) == CHECK_CONFIRMATIONS:
            break
    return close


def tilt_restarts(problem: PlaneProblem, slab: tuple[np.ndarray, np.ndarray], transform: sitk.Euler3DTransform,
                  value: float, axis: int, round_: int) -> TiltCheck:
    """The check against a wrong tilt: refit from the fit tilted over the cone.

    The first round starts from the fit tilted by every multiple of ``check_tilt_deg`` up to
    ``max_tilt_deg``, 8 directions each, and turned in its plane by half and a whole
    ``inplane_step_deg`` either way; later rounds by ``check_tilt_deg``, 4 directions, and half a
    step. The nearest ring runs on the ``refinement_levels`` finest levels, the farther rings and
    the turns down the whole pyramid (a start 10 degrees off is outside the finest levels' reach);
    all on a fixed random quarter of the section's pixels (:data:`CHECK_SAMPLING`), at most
    :data:`CHECK_MAX_SAMPLES`, so the check costs a fraction of the fit. The fit itself, refitted
    so on the refinement levels, is their reference. On a right fit the refits end no higher than the
    reference: wherever the optimiser stops on the flanks, the fit is the top. A fit that is off
    (a steep plane that converged to an axial one, one grid step off in its plane, or on a
    partial or featureless section) lies on a slope or on a lower, sharp peak: a refit climbs as
    high or higher. The best few distinct poses the refits reach, the reference among them
    (:data:`CHECK_CONFIRMATIONS`), are refined with every pixel on the finest level, and the best
    replaces the fit if it beats it there by ``tilt_refit_gain`` (relative MI); the refits start
    again from the new fit, up to ``tilt_refit_rounds`` rounds. The spread is how far the last
    round still moved the plane: 0 when the fit settled, more when it was still climbing.

    Returns
    -------
    TiltCheck
        The fit after the check, its metric value, the spread and the refits.
    """
    cfg = problem.config

    def refit(start, n_finest=None, sampling=CHECK_SAMPLING):
        return fit_plane(problem, [slab], [], (start, axis), round_, n_finest=n_finest, sampling=sampling,
                         max_samples=CHECK_MAX_SAMPLES if sampling < 1 else None)

    spread = 0.0
    reference: tuple[np.ndarray, float] = (normal_of(transform), float(value))
    refits: list[tuple[np.ndarray, float]] = []
    for round_index in range(cfg.tilt_refit_rounds):
        try:
            ref = refit(transform)
            reference = (normal_of(ref.transform), float(ref.value))
        except RegistrationFailed:
            ref = PlaneFit(transform, (axis, 0), {}, math.inf)
        refits, candidates = [], []
        for start, n_levels in _check_starts(transform, cfg, round_index):
            try:
                candidate = refit(start, n_finest=n_levels)
            except RegistrationFailed:  # a refit that leaves the volume says nothing about the fit
                continue
            refits.append((normal_of(candidate.transform), float(candidate.value)))
            candidates.append(candidate)
        # The best replaces the fit if it beats it on the finest level by tilt_refit_gain. The reference is one
        # of the confirmations: a fit the sampled metric moves off is not settled either.
        moved, best_value = None, value - cfg.tilt_refit_gain * abs(value)
        for candidate in _confirmations(candidates + [ref], transform):
            try:
                finer = refit(candidate.transform, n_finest=1, sampling=1.0)
            except RegistrationFailed:
                continue
            if finer.value < best_value:  # minus MI: lower is better
                best_value, moved = finer.value, finer
        if moved is None:
            return TiltCheck(transform, value, 0.0, [reference] + refits)
        spread = angle_between_planes(normal_of(transform), normal_of(moved.transform))
        transform, value = moved.transform, moved.value
    return TiltCheck(transform, value, spread, [reference] + refits)


def tilt_disagreement(fit_normal, refits, tolerance) -> float:
    """How far from the fit the planes reach that fit about as well: the tilt's indeterminacy, degrees.

    ``refits`` is :func:`tilt_restarts`' list: first the fit refitted untilted on the check's
    level (the reference), then every refit there, each ``(plane normal, minus MI)``. The result is
    the largest angle between the fit's normal ``fit_normal`` and the reference's or that of any
    refit whose MI is within ``tolerance`` (relative) of the reference's. Where the MI peaks sharply
    at the fit, the reference stays on it and the refits from the tilted starts come back to it (a
    fraction of a degree) or stop on other, clearly lower optima; where it is flat over the tilt (a
    section with few features, or the MI favouring no plane), they stop wherever the slope runs
    out, at MI as good as the fit's, degrees away; where the levels disagree on the tilt, the
    reference itself moves away. Either way the data do not fix the tilt. 0 with no refits.
    """
    if not refits:
        return 0.0
    (normal, value), others = refits[0], refits[1:]
    near = [normal] + [other for other, other_value in others if other_value <= value + tolerance * abs(value)]
    return max(angle_between_planes(fit_normal, other) for other in near)


def half_section_tilt(problem: PlaneProblem, slab: tuple[np.ndarray, np.ndarray],
                      transform: sitk.Euler3DTransform, axis: int, round_: int) -> float:
    """How far (degrees) the plane of one half of the section turns from the fit's: the split-half check.

    The fit is refined (``refinement_levels``, every pixel) on each half of the section in turn, the
    halves split through the tissue's centre along rows and along columns. Where the whole
    section fixes the plane, so does each half, within a degree or so; where the MI peaks at a
    tilt that only part of the section supports (a partial field with little bone, a
    near-featureless implant), one half's plane turns degrees away. The largest turn of the four
    counts as open tilt (:func:`tilt_disagreement`). 0 where no half could be refitted. The halves
    split through :func:`~vstain.registration.images.tissue_centre`.
    """
    grey, fov = slab
    centre_y, centre_x = tissue_centre(grey, fov)
    yy, xx = np.indices(grey.shape)
    turns = [0.0]
    for half in (yy < centre_y, yy >= centre_y, xx < centre_x, xx >= centre_x):
        try:
            fitted = fit_plane(problem, [(grey, fov & half)], [], (transform, axis), round_).transform
        except RegistrationFailed:  # a half that leaves the volume says nothing about the fit
            continue
        turns.append(angle_between_planes(normal_of(fitted), normal_of(transform)))
    return max(turns)


def silhouette_iou(ct_slice: np.ndarray, ct_valid: np.ndarray, histology: np.ndarray,
                   histology_valid: np.ndarray) -> float:
    """Agreement of the sample's outline in the two registered images: IoU of CT sample and section tissue.

    The CT's sample is the largest connected region above the background class of
    :func:`vstain.masks.segment_ct`, opened by 3 px (the block without the thin tube wall
    around it); the section's is :func:`vstain.masks.segment_histology`'s tissue. Their convex
    hulls are compared where both images have data (a laser-cut implant leaves a hole that
    may open onto the edge of a partial field of view). A right fit overlays the two outlines;
    a plane in the wrong place or a section of another sample does not.

    Returns
    -------
    float
        In [0, 1]; NaN when either image has no sample to compare.
    """
    both = np.asarray(ct_valid, bool) & np.asarray(histology_valid, bool)
    if both.sum() < 64:
        return math.nan
    try:
        classes = segment_ct(ct_slice, ct_valid)["classes"]
        tissue = segment_histology(histology, histology_valid)["tissue"]
    except ValueError:  # a constant image: nothing to threshold
        return math.nan
    # An opening wider than the tube wall cuts it loose from the block where the two touch.
    labelled, n = ndi.label(ndi.binary_opening(classes >= 1, iterations=3))
    if n == 0 or not tissue.any():
        return math.nan
    largest = np.argmax(np.bincount(labelled.ravel())[1:]) + 1
    # Convex hulls: a laser-cut implant leaves a hole open to the edge of a partial field of view.
    ct_sample = convex_hull(labelled == largest) & both
    section = convex_hull(tissue & both) & both
    union = (ct_sample | section).sum()
    return float((ct_sample & section).sum() / union) if union else math.nan


def judge(mi_margin: float, iou: float, cfg: RegistrationParams, tilt_spread: float = math.nan,
          tilt_error: float = math.nan, tilt_disagreement: float = math.nan) -> str:
    """``ok``, or ``uncertain: <reasons>`` when the fit may be a wrong local optimum."""
    reasons = []
    if math.isfinite(mi_margin) and mi_margin < 0:
        reasons.append(f"another orientation, outside the search's range, fits better (MI margin {mi_margin:.3f})")
    elif math.isfinite(mi_margin) and mi_margin < cfg.min_mi_margin:
        reasons.append(f"MI margin {mi_margin:.3f} over the best other orientation is below "
                       f"registration.min_mi_margin {cfg.min_mi_margin}")
    if not math.isfinite(iou) or iou < cfg.min_silhouette_iou:
        reasons.append(f"silhouette IoU {iou:.2f} of CT sample and section tissue is below "
                       f"registration.min_silhouette_iou {cfg.min_silhouette_iou}")
    if math.isfinite(tilt_spread) and tilt_spread > cfg.max_tilt_spread_deg:
        reasons.append(f"after {cfg.tilt_refit_rounds} rounds of refits from tilts of {cfg.check_tilt_deg:g} deg the "
                       f"plane still moved {tilt_spread:.1f} deg to a higher MI, beyond "
                       f"registration.max_tilt_spread_deg {cfg.max_tilt_spread_deg}: the tilt has not settled")
    if math.isfinite(tilt_error) and tilt_error > cfg.max_tilt_error_px:
        reasons.append(f"refits reach planes {tilt_disagreement:.1f} deg from the fit with MI within "
                       f"registration.tilt_agreement_tolerance {cfg.tilt_agreement_tolerance} of its, or fits to "
                       f"one half of the section do: the data do not fix the tilt, and a tilt that far moves the "
                       f"section's edge {tilt_error:.1f} CT px, beyond registration.max_tilt_error_px "
                       f"{cfg.max_tilt_error_px}")
    return "uncertain: " + "; ".join(reasons) if reasons else "ok"
