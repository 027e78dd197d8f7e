"""The rigid plane fit: coarse to fine, by Mattes MI, from the global search's starts or a given one.

:func:`fit_plane` fits the section's plane in a :class:`PlaneProblem` (the CT views, the pixel sizes,
the settings, the pair); its poses are :class:`Candidate` objects and its answer a :class:`PlaneFit`.
:func:`orientation_margin` measures how clearly the fit beats the best pose of another orientation.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import SimpleITK as sitk

from vstain.params import RegistrationParams
from vstain.registration.metric import mattes_method
from vstain.registration.poses import coverage, inplane_rotation, orientation_distance
from vstain.registration.result import RegistrationFailed
from vstain.registration.search import Start, best_cone_tilt, pick_starts, search_grid
from vstain.registration.texture import texture_poses
from vstain.registration.views import AXIS_NAMES, CTViews, SectionLevel, section_level


@dataclasses.dataclass(frozen=True)
class PlaneProblem:
    """What every plane fit of one pair reads: the CT views, the pixel sizes, the settings and the pair id.

    Attributes
    ----------
    views : CTViews
        The CT turned so each searched axis is first, smoothed per level.
    ct_voxel_um, histology_pixel_um : float
        The pixel sizes.
    config : RegistrationParams
        The profile's ``registration`` section.
    pair_id : str
        Named in every error.
    """

    views: CTViews
    ct_voxel_um: float
    histology_pixel_um: float
    config: RegistrationParams
    pair_id: str

    def only(self, axis: int) -> "PlaneProblem":
        """The same problem in the view of one axis (sharing its smoothed images)."""
        return dataclasses.replace(self, views=self.views.only(axis))


@dataclasses.dataclass
class Candidate:
    """A pose refined at one pyramid level.

    Attributes
    ----------
    value : float
        Minus Mattes MI, weighted by the fraction of the section's tissue inside the view (NaN for a
        lone start above the finest level: its value is not needed there).
    transform : SimpleITK.Euler3DTransform
    key : (int, int)
        ``(axis, face)``.
    history : list of dict
        The optimiser's iterations (:func:`~vstain.registration.metric.mattes_method`).
    allowed : bool
        Whether the fit may take it.
    """

    value: float
    transform: sitk.Euler3DTransform
    key: tuple[int, int]
    history: list[dict[str, Any]]
    allowed: bool


@dataclasses.dataclass
class PlaneFit:
    """The answer of :func:`fit_plane`.

    Attributes
    ----------
    transform : SimpleITK.Euler3DTransform
        The fitted slab -> CT view transform (um).
    key : (int, int)
        ``(axis, face)`` of the fit.
    search : dict
        The orientation check (:func:`orientation_margin` at the finest level that still had a
        rival); empty after a given start.
    value : float
        Minus MI of the fit at the finest level (weighted as :attr:`Candidate.value`).
    """

    transform: sitk.Euler3DTransform
    key: tuple[int, int]
    search: dict[str, float]
    value: float


def level_sizes(problem: PlaneProblem, refinement: bool, n_finest: int | None = None) -> list[float]:
    """Pixel sizes (um) of the pyramid levels, coarsest first: geometric steps down to the CT voxel size.

    A ``refinement`` (a fit from a given start) runs on the ``n_finest`` finest levels only
    (default ``refinement_levels``).

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> cfg = SimpleNamespace(histology_downsample_um=40.0, pyramid_levels=3, refinement_levels=2)
    >>> problem = PlaneProblem(None, 10.0, 2.5, cfg, "p")
    >>> level_sizes(problem, False), level_sizes(problem, True)
    ([40.0, 20.0, 10.0], [20.0, 10.0])
    """
    cfg = problem.config
    finest_um = max(problem.ct_voxel_um, problem.histology_pixel_um)
    coarsest_um = max(finest_um, cfg.histology_downsample_um)
    n_levels = max(1, cfg.pyramid_levels)
    level_um = [coarsest_um * (finest_um / coarsest_um) ** (level / max(n_levels - 1, 1)) for level in range(n_levels)]
    if n_levels == 1:
        level_um = [finest_um]
    if refinement:
        level_um = level_um[-(n_finest or cfg.refinement_levels):]  # refinement: the plane is already close
    return level_um


@dataclasses.dataclass
class _Level:
    """One pyramid level of a plane fit: the CT smoothed to ``um``, the section's faces block-averaged to it."""

    problem: PlaneProblem
    faces: list[tuple[np.ndarray, np.ndarray]]
    um: float
    index: int
    is_last: bool
    stage: str
    sampling: float = 1.0
    max_samples: int | None = None
    _images: dict[int, SectionLevel] = dataclasses.field(default_factory=dict)

    def moving(self, axis: int) -> sitk.Image:
        """The view of ``axis`` smoothed to this level, decimated as far as the smoothing allows."""
        ct_voxel_um = self.problem.ct_voxel_um
        sigma = max(0.0, (self.um / ct_voxel_um - 1) / 2)
        step = max(1, int(self.um / ct_voxel_um / 2 + 1e-9))  # the smoothing is wide enough for that decimation
        return self.problem.views.moving(axis, sigma, step)

    def images(self, face: int) -> SectionLevel:
        """The fixed slab, its mask and bins of one face at this level."""
        if face not in self._images:
            factor = self.um / self.problem.histology_pixel_um
            self._images[face] = section_level(self.problem.views, self.faces[face], factor, self.um,
                                               self.problem.config.mi_bins)
        return self._images[face]

    def weighted(self, value: float, transform: sitk.Euler3DTransform, key: tuple[int, int]) -> float:
        """``value`` in proportion to the section's tissue the pose holds inside the volume.

        MI on a small overlap is high for few, alike samples: so a thin volume's other axes cannot win on a sliver.
        """
        tissue = self.images(key[1]).tissue_xyz
        return value * coverage(transform, tissue, self.problem.views[key[0]].shape, self.problem.ct_voxel_um)

    def refine(self, start: Start, alone: bool) -> Candidate | None:
        """``start`` refined at this level by regular-step gradient descent (None if it failed among others).

        A lone start's value counts on the last level only (each evaluation scans the whole volume).
        """
        images, cfg = self.images(start.key[1]), self.problem.config
        trial_history: list[dict[str, Any]] = []
        fraction = self.sampling if self.max_samples is None else \
            min(self.sampling, self.max_samples / max(1, int(images.fov.sum())))
        method = mattes_method(images.bins, images.mask, sampling=fraction, history=trial_history,
                               stage=self.stage, level=self.index)
        method.SetOptimizerAsRegularStepGradientDescent(
            learningRate=2.0 * self.um, minStep=0.01 * self.um, numberOfIterations=cfg.plane_iterations,
            relaxationFactor=0.6, gradientMagnitudeTolerance=1e-8,
        )
        method.SetOptimizerScalesFromPhysicalShift()
        method.SetInitialTransform(start.transform, inPlace=True)
        try:
            method.Execute(images.fixed, self.moving(start.key[0]))
            value = float(method.MetricEvaluate(images.fixed, self.moving(start.key[0]))) \
                if not alone or self.is_last else math.nan
        except RuntimeError as err:  # e.g. every sample left the volume
            if not alone:
                return None
            raise RegistrationFailed(f"pair {self.problem.pair_id}: plane fit failed at level {self.index} "
                                     f"({self.um:g} um): {err}; registration failed") from err
        return Candidate(self.weighted(value, start.transform, start.key), start.transform, start.key,
                         trial_history, start.allowed)


def _global_starts(level: _Level, history: list, hint: dict | None) -> list[Start]:
    """The starts of a fit with none given: the grid over every view and face, and the best starts tilted.

    The grid has no tilt, and the gradient descent from an untilted start may stop at a nearer
    optimum of a plane tilted 10-15 degrees: each of the best depths also starts tilted as the cone
    scores best there (the other orientations, the check's rivals, start untilted).
    """
    problem, cfg = level.problem, level.problem.config
    grid = []
    for axis in problem.views:
        for face in range(len(level.faces)):
            grid += search_grid(level.images(face), problem.views[axis].shape, problem.ct_voxel_um, cfg,
                                (axis, face), lambda axis=axis: level.moving(axis), hint)
    if not grid:
        raise RegistrationFailed(
            f"pair {problem.pair_id}: no plane along the searched axes "
            f"({', '.join(AXIS_NAMES[a] for a in problem.views)}) holds registration.min_inside_fraction "
            f"{cfg.min_inside_fraction} of the section's tissue; registration failed")
    starts = pick_starts(grid, cfg)
    history.append({"stage": "search", "level": 0, "iteration": 0, "mi": -min(g.value for g in grid)})
    tilted = []
    for start in (starts[:cfg.n_starts] if cfg.tilt_step_deg > 0 else []):
        best_tilt = best_cone_tilt(start.transform, level.images(start.key[1]), level.moving(start.key[0]), cfg)
        if best_tilt is not None:
            tilted.append(Start(best_tilt, start.key, start.allowed))
    return starts + tilted


def _going_on(best: Candidate, refined: list[Candidate], cfg: RegistrationParams) -> list[Start]:
    """The poses the next level refines: the best pose of every distinct orientation.

    A coarse grid can rank a near-symmetric wrong pose first (a screw looks alike flipped about its
    axis); the finest level decides, and its margin is the one reported.
    """
    if len(refined) <= 1:
        return [Start(best.transform, best.key, True)]
    rivals = [item for item in distinct_orientations(refined, cfg) if item is not best]
    return [Start(item.transform, item.key, item.allowed) for item in [best] + rivals
            if item is best or best_other(best, [item], cfg) is not None]


def fit_plane(problem: PlaneProblem, faces: list[tuple[np.ndarray, np.ndarray]], history: list,
              start: tuple[sitk.Euler3DTransform, int] | None = None, round_: int = 0, *, hint: dict | None = None,
              n_finest: int | None = None, sampling: float = 1.0, max_samples: int | None = None) -> PlaneFit:
    """Coarse-to-fine rigid fit of the section plane (an Euler3D transform: slab -> CT view, um).

    ``problem.views`` (:class:`~vstain.registration.views.CTViews`) maps a volume axis to the CT turned
    so that axis is its first, and smooths it per level; ``faces`` holds one ``(grey, fov)`` slab per
    face of the section (the second, if any, mirrored). With no ``start`` the coarsest level searches
    every view and face (:func:`~vstain.registration.search.search_grid`), each start is tilted over
    the cone (:func:`~vstain.registration.search.best_cone_tilt`), and the best pose of each distinct
    orientation goes on to the finer levels, where the finest picks the fit. Where the coarser levels
    left the orientation open (:func:`texture_wanted`), the poses the section's texture proposes
    (:func:`~vstain.registration.texture.texture_poses`, up to ``texture_starts``) join the finest
    level (the coarser levels do not see the texture that found them). ``start`` is
    ``(transform, axis)``: a refinement of the ``n_finest`` finest levels (default
    ``refinement_levels``); the transform given is left as it was. ``sampling`` is the fraction of
    the section's pixels the metric samples (a fixed random subset), at most ``max_samples`` of them
    if given. ``history`` receives the search's best score and the fit's iterations, level by
    level; ``round_`` names them (``plane<round_>``).

    Raises
    ------
    RegistrationFailed
        No view holds the section, or every start failed at a level.
    """
    cfg = problem.config
    level_um = level_sizes(problem, start is not None, n_finest)
    # a copy: the optimiser moves its transform in place, and the caller's start must stay what it was
    candidates = None if start is None else [Start(sitk.Euler3DTransform(start[0]), (start[1], 0), True)]
    search: dict[str, float] = {}
    for index, um in enumerate(level_um):
        level = _Level(problem, faces, um, index, index == len(level_um) - 1, f"plane{round_}", sampling,
                       max_samples)
        starts = _global_starts(level, history, hint) if candidates is None else candidates
        if level.is_last and start is None and texture_wanted(search, cfg):
            # the poses the section's fine texture proposes join the finest level, where the texture is seen
            starts = starts + texture_poses(problem.views, faces, problem.ct_voxel_um, problem.histology_pixel_um,
                                            cfg, hint)
        refined = [item for item in (level.refine(s, alone=len(starts) == 1) for s in starts) if item is not None]
        if not any(item.allowed for item in refined):
            raise RegistrationFailed(f"pair {problem.pair_id}: plane fit failed at level {index} ({um:g} um) from "
                                     "every starting point; registration failed")
        # The fit takes the best pose the search allows; poses outside it only check it.
        best = min((item for item in refined if item.allowed), key=lambda item: item.value)
        if len(refined) > 1:
            margin = orientation_margin(best, refined, cfg)
            if math.isfinite(margin["mi_margin"]) or not search:  # else the coarser level's margin stands
                search = margin
        candidates = _going_on(best, refined, cfg)
        history.extend(best.history)
    return PlaneFit(best.transform, best.key, search, best.value)


def texture_wanted(search: dict[str, float], cfg: RegistrationParams) -> bool:
    """Whether the finest level should also refine the texture's poses: the coarser levels' margin is small.

    ``search`` is the orientation check of the coarser levels (:func:`orientation_margin`; empty
    without a rival, or with one level). Where a screw or an outline sets the orientation, the
    coarser levels' best beats every other orientation clearly (``mi_margin`` of ``texture_below_margin``
    or more) and the texture is not consulted: the fit and its time are what they were without it.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> cfg = SimpleNamespace(texture_starts=2, texture_below_margin=0.15)
    >>> texture_wanted({"mi_margin": 0.01}, cfg), texture_wanted({"mi_margin": 0.4}, cfg), texture_wanted({}, cfg)
    (True, False, True)
    """
    margin = search.get("mi_margin", math.nan)
    return cfg.texture_starts > 0 and not margin >= cfg.texture_below_margin


def best_other(best: Candidate, refined: list[Candidate], cfg: RegistrationParams) -> Candidate | None:
    """The best refined pose whose orientation differs from ``best``'s (None if there is none)."""
    orientation = (best.key, inplane_rotation(best.transform))
    others = [item for item in refined
              if orientation_distance((item.key, inplane_rotation(item.transform)), orientation)
              > cfg.orientation_separation_deg]
    return min(others, key=lambda item: item.value) if others else None


def distinct_orientations(refined: list[Candidate], cfg: RegistrationParams) -> list[Candidate]:
    """The best refined pose of each orientation, best first (orientations apart by ``orientation_separation_deg``)."""
    kept: list[Candidate] = []
    for item in sorted(refined, key=lambda entry: entry.value):
        orientation = (item.key, inplane_rotation(item.transform))
        if all(orientation_distance(orientation, (k.key, inplane_rotation(k.transform)))
               > cfg.orientation_separation_deg for k in kept):
            kept.append(item)
    return kept


def orientation_margin(best: Candidate, refined: list[Candidate], cfg: RegistrationParams) -> dict[str, float]:
    """How clearly the best refined pose beats the best refined pose of another orientation.

    Returns ``mi_margin``: ``(MI_best - MI_other) / MI_best`` at the level of ``refined``, NaN
    when no pose of another orientation is among them (both refined to convergence there, or
    the other one ran into ``best``'s orientation: then the previous level's margin stands);
    and ``other_mi``.
    """
    other = best_other(best, refined, cfg)
    mi_best = -best.value
    if other is None or mi_best <= 0:
        return {"mi_margin": math.nan, "other_mi": math.nan}
    # Negative: an orientation the search was not allowed to take fits better.
    mi_other = -other.value
    return {"mi_margin": (mi_best - mi_other) / mi_best, "other_mi": mi_other}
