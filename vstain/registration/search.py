"""The global start of the plane fit: an exhaustive MI grid over orientations, shifts and depths, and a cone of tilts.

:func:`search_grid` scores every in-plane rotation (the whole circle), shift and depth of one face of
the section in one view of the CT; :func:`pick_starts` keeps the best depths and the best poses of
other orientations (the quality check's rivals); :func:`best_cone_tilt` tilts a start over the cone
where the coarse MI is best. Grid poses and starts are :class:`GridPose` and :class:`Start`.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import SimpleITK as sitk

from vstain.masks import convex_hull
from vstain.params import RegistrationParams
from vstain.registration.images import tissue_centre, tissue_pixels
from vstain.registration.metric import mattes_method
from vstain.registration.poses import orientation_distance, tilted
from vstain.registration.views import SectionLevel


@dataclasses.dataclass(frozen=True)
class GridPose:
    """One pose of the global grid (:func:`search_grid`).

    Attributes
    ----------
    value : float
        Minus Mattes MI, weighted by the fraction of the section's footprint the view holds.
    position : tuple of float
        The Euler3D parameters of the pose (the in-plane rotation in radians is the third, the depth
        the sixth).
    key : (int, int)
        ``(axis, face)``: the volume axis the view turns to z, and the face of the section (1: mirrored).
    transform : SimpleITK.Euler3DTransform
        The grid's transform (its centre and starting translation); ``position`` sets its parameters.
    allowed : bool
        Whether the fit may take the pose (else it only competes in the quality check).
    """

    value: float
    position: tuple
    key: tuple[int, int]
    transform: sitk.Euler3DTransform
    allowed: bool

    def start_transform(self) -> sitk.Euler3DTransform:
        """A new transform at this pose."""
        start = sitk.Euler3DTransform(self.transform)
        start.SetParameters(self.position)
        return start


@dataclasses.dataclass
class Start:
    """A pose the plane fit refines: its transform (moved in place by the fit), key and whether it may be taken."""

    transform: sitk.Euler3DTransform
    key: tuple[int, int]
    allowed: bool


def search_grid(level: SectionLevel, view_shape, ct_voxel_um: float, cfg: RegistrationParams,
                key: tuple[int, int], moving, hint: dict | None = None) -> list[GridPose]:
    """Exhaustive MI grid over in-plane rotation, in-plane shift and depth for one view and face.

    ``key`` is ``(axis, face)``: the volume axis the view turns to z and the face of the section.
    The section's tissue centre starts on the view's centre axis and the rotation turns about
    it, so the grid covers every orientation with shifts and depths around that one position.
    Rotations that cannot bring ``min_inside_fraction`` of the section's footprint inside the
    view's cross-section (:func:`inside_fractions`) are left out: MI on a small overlap is
    unreliable (few, alike samples score high), and every grid MI is weighted by that fraction. A
    view with no such rotation (a thin volume cut across its thin axis) is not searched;
    ``moving()`` builds the CT view only when needed.

    The grid covers the whole circle on both faces whatever the profile lets the fit take
    (``max_inplane_rotation_deg``, ``search_mirror``, or the pair's ``hint``: a narrower search,
    as from a known orientation): the poses outside it are the competitors of the quality check.

    Returns
    -------
    list of GridPose
        Every grid pose the fit may weigh.
    """
    fixed, mask, fov_small, bins, um = level.fixed, level.mask, level.fov, level.bins, level.um
    grey_small = sitk.GetArrayViewFromImage(fixed)[0]
    cy, cx = tissue_centre(grey_small, fov_small)
    centre_hist = np.array([cx * um, cy * um, 0.0])
    z, y, x = (np.asarray(view_shape, float) - 1) * ct_voxel_um
    n_rot = int(math.ceil(180.0 / cfg.inplane_step_deg - 1e-9))  # the whole circle, whatever the fit may take
    shift_step = cfg.shift_step_fraction * min(x, y)
    n_shift = int(round(cfg.max_shift_fraction / cfg.shift_step_fraction))
    angles = np.arange(-n_rot, n_rot + 1) * math.radians(cfg.inplane_step_deg)
    fractions = inside_fractions(grey_small, fov_small, (cx, cy), um, angles, (x, y))
    feasible = fractions >= cfg.min_inside_fraction
    if not feasible.any():
        return []
    transform = sitk.Euler3DTransform()
    transform.SetCenter(tuple(centre_hist))
    transform.SetTranslation(tuple(np.array([x / 2, y / 2, z / 2]) - centre_hist))
    depth_step = um
    n_depth = max(0, int((z / 2 - cfg.depth_margin_voxels * ct_voxel_um) // depth_step))
    method = mattes_method(bins, mask)
    method.SetOptimizerAsExhaustive([0, 0, n_rot, n_shift, n_shift, n_depth])
    method.SetOptimizerScales([1, 1, math.radians(cfg.inplane_step_deg), shift_step, shift_step, depth_step])
    method.SetInitialTransform(transform, inPlace=False)
    grid: list[tuple[float, tuple]] = []
    method.AddCommand(sitk.sitkIterationEvent,
                      lambda: grid.append((float(method.GetMetricValue()), tuple(method.GetOptimizerPosition()))))
    try:
        method.Execute(fixed, moving())
    except RuntimeError:  # some grid pose left the view entirely: keep the poses scored before it
        pass
    out = []
    for value, position in grid:
        if abs(position[2]) >= math.pi - 1e-6 and position[2] > 0:
            continue  # +180 deg is -180 deg again
        index = int(round(position[2] / math.radians(cfg.inplane_step_deg))) + n_rot
        if not feasible[index]:
            continue
        allowed = allowed_pose(cfg, key, position[2], hint)
        # as in the refinement: MI in proportion to the tissue the cross-section can hold
        out.append(GridPose(value * min(1.0, fractions[index]), position, key, transform, allowed))
    return out


def allowed_pose(cfg: RegistrationParams, key: tuple[int, int], angle: float, hint: dict | None) -> bool:
    """Whether the fit may take a pose of ``key`` ``(axis, face)`` turned by ``angle`` (radians) in its plane.

    The profile's ``search_mirror`` and ``max_inplane_rotation_deg``, narrowed by the pair's ``hint``
    (``mirrored``, ``normal_axis``, ``rotation_deg``: then within ``inplane_step_deg`` of it).
    """
    hint = hint or {}
    axis, face = key
    mirrored = bool(face)
    allowed_key = (mirrored is False or cfg.search_mirror) and hint.get("mirrored", mirrored) == mirrored \
        and hint.get("normal_axis", axis) == axis
    centre = -math.radians(hint["rotation_deg"]) if "rotation_deg" in hint else 0.0
    limit = math.radians(cfg.inplane_step_deg if "rotation_deg" in hint else cfg.max_inplane_rotation_deg) + 1e-9
    return bool(allowed_key and abs(math.remainder(angle - centre, 2 * math.pi)) <= limit)


def inside_fractions(grey_small, fov_small, centre_xy, um, angles, extent_xy) -> np.ndarray:
    """Per in-plane rotation, the fraction of the section's footprint inside a view's cross-section.

    The footprint is the convex hull of the tissue (:func:`tissue_pixels`: pale soft tissue between
    stained bone belongs to the section too), turned by each angle about the tissue centre, which
    lies on the view's centre axis, against the cross-section ``extent_xy`` (um, x and y, centred).
    """
    tissue = tissue_pixels(np.where(fov_small, grey_small, 0.0)) & fov_small
    if not tissue.any():
        return np.ones(len(angles))
    rows, cols = np.nonzero(convex_hull(tissue))
    dx, dy = (cols - centre_xy[0]) * um, (rows - centre_xy[1]) * um
    out = []
    for angle in angles:
        ca, sa = math.cos(angle), math.sin(angle)
        px, py = ca * dx - sa * dy, sa * dx + ca * dy
        out.append(np.mean((np.abs(px) <= extent_xy[0] / 2) & (np.abs(py) <= extent_xy[1] / 2)))
    return np.asarray(out)


def pick_starts(grid: list[GridPose], cfg: RegistrationParams) -> list[Start]:
    """The starting poses refined at the coarsest level.

    The ``n_starts`` best depths among the poses the fit may take (each at its best rotation
    and shift: the screw is near-symmetric about its axis, so planes at mirrored depths can
    score alike on a coarse grid), then the best poses of up to ``n_orientation_starts`` other
    orientations (other in-plane rotations beyond ``orientation_separation_deg``, or the other
    face), allowed or not: a wrong orientation that scores well on the grid is refined too, so
    that either it wins fairly or its refined MI measures the margin of the fit
    (:func:`~vstain.registration.plane.orientation_margin`).
    """
    best_by_depth: dict[tuple, GridPose] = {}
    best_by_orientation: dict[tuple, GridPose] = {}
    for entry in grid:
        depth = (entry.key, round(entry.position[5], 3))
        if entry.allowed and (depth not in best_by_depth or entry.value < best_by_depth[depth].value):
            best_by_depth[depth] = entry
        orientation = (entry.key, round(entry.position[2], 6))
        if orientation not in best_by_orientation or entry.value < best_by_orientation[orientation].value:
            best_by_orientation[orientation] = entry
    chosen = sorted(best_by_depth.values(), key=lambda item: item.value)[: max(1, cfg.n_starts)]
    taken = [(entry.key, entry.position[2]) for entry in chosen]
    others = 0
    for entry in sorted(best_by_orientation.values(), key=lambda item: item.value):
        if others >= cfg.n_orientation_starts:
            break
        orientation = (entry.key, entry.position[2])
        if all(orientation_distance(orientation, t) > cfg.orientation_separation_deg for t in taken):
            chosen.append(entry)
            taken.append(orientation)
            others += 1
    return [Start(entry.start_transform(), entry.key, entry.allowed) for entry in chosen]


def best_cone_tilt(transform: sitk.Euler3DTransform, level: SectionLevel, moving: sitk.Image,
                   cfg: RegistrationParams) -> sitk.Euler3DTransform | None:
    """The start tilted over the cone where the coarse MI is best, or None if no tilt beats it.

    The cone: rings ``tilt_step_deg`` apart up to ``max_tilt_deg``, 8 directions each, about the
    start's centre (the section's tissue centre: its depth there stays).
    """
    method = mattes_method(level.bins, level.mask)
    fixed = level.fixed
    best, best_value = None, math.inf
    for tilt in np.arange(0.0, cfg.max_tilt_deg + 1e-9, cfg.tilt_step_deg):
        for direction in (np.arange(8) * math.pi / 4 if tilt > 0 else [0.0]):
            trial = tilted(transform, direction, tilt) if tilt > 0 else transform
            method.SetInitialTransform(trial, inPlace=False)
            try:
                value = float(method.MetricEvaluate(fixed, moving))
            except RuntimeError:  # the tilted slab leaves the volume
                continue
            if value < best_value:
                best, best_value = (None if tilt == 0 else sitk.Euler3DTransform(trial)), value
    return best
