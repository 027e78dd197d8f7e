"""Typed parameter objects of the science: the profile's sections that science reads, checking their own ranges.

Plumbing without dependencies beyond the standard library: a science module annotates its settings
with these types (``config: RegistrationParams``) and never reads a profile; :mod:`vstain.config`
builds them from a profile's YAML (the field annotations are the schema) and reports any value out of
range, naming the file. Built by hand, they check themselves: :meth:`RegistrationParams.check`.

Examples
--------
>>> from vstain.config import load_profile
>>> params = load_profile("smoke").registration
>>> isinstance(params, RegistrationParams), params.check() is None
(True, True)
>>> import dataclasses
>>> dataclasses.replace(params, mi_bins=2).check()
Traceback (most recent call last):
...
vstain.params.ParameterError: registration.mi_bins must be at least 4 bins, got 2
"""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["ParameterError", "RegistrationParams"]

FRACTION = "a fraction between 0 and 1"
POSITIVE = "a positive number"
AT_LEAST_ONE = "an integer of at least 1"


class ParameterError(ValueError):
    """A parameter is out of its range: the message names the dotted key, the range and the value."""


def _first_invalid(checks: list[tuple[str, Any, bool, str]], source: str | None) -> None:
    for key, value, valid, what in checks:
        if not valid:
            where = f"{source}: " if source else ""
            raise ParameterError(f"{where}{key} must be {what}, got {value!r}")


@dataclasses.dataclass(frozen=True)
class RegistrationParams:
    """2D-3D registration (paper 2.3): the ``registration`` section of a profile."""

    pyramid_levels: int  # coarse-to-fine levels of the plane search, finest at the CT voxel size
    histology_downsample_um: float  # histology pixel size of the coarsest plane-search level
    max_tilt_deg: float  # the search's cone around each search axis; a fit tilted further is a failure
    search_axes: list[str]  # volume axes (z, y, x) the section normal may lie along; each is searched
    tilt_step_deg: float  # starting cone: tilt rings this far apart, up to max_tilt_deg (0: no cone)
    mi_bins: int  # histogram bins of the Mattes mutual information (fewer on small images)
    affine_iterations: int  # optimiser iterations of the 2D affine stage
    plane_iterations: int  # optimiser iterations per level of the rigid plane fit
    max_inplane_rotation_deg: float  # in-plane rotations the fit may take, +/- (180: any); the check scans all
    inplane_step_deg: float  # starting grid: rotation step (the grid covers the whole circle)
    search_mirror: bool  # the fit may take the mirrored face (mounted face down); the check scans both
    max_shift_fraction: float  # starting grid: in-plane shifts searched, +/- (fraction of the CT width)
    shift_step_fraction: float  # starting grid: shift step (fraction of the CT width)
    depth_margin_voxels: float  # starting grid: planes no closer than this to the top/bottom slice
    n_starts: int  # starting grid: best depths refined at the coarsest level; the best fit wins
    refinement_rounds: int  # plane refits on the section undistorted by the fitted affine
    refinement_levels: int  # finest pyramid levels used by each refit
    min_inside_fraction: float  # less of the section than this inside the volume is a failure
    threads: int  # SimpleITK threads; 1 makes every fit bit-for-bit reproducible (ITK reductions vary with threads)
    workers: int  # pairs registered at once, one process each (the stage's parallelism; results do not depend on it)
    n_orientation_starts: int  # best grid poses of other orientations also refined: the competitors of the MI margin
    orientation_separation_deg: float  # poses further apart in in-plane rotation (or of the other face) differ
    min_mi_margin: float  # (MI of the fit - MI of the best other orientation) / MI of the fit; below: uncertain
    min_silhouette_iou: float  # IoU of the CT plane's sample silhouette and the section's tissue; below: uncertain
    check_tilt_deg: float  # the check restarts the plane fit from the fit tilted this far, in four directions
    tilt_refit_gain: float  # a refit whose MI beats the fit's by this fraction replaces it
    tilt_refit_rounds: int  # rounds of refits from the tilted fit, each from the best so far
    max_tilt_spread_deg: float  # a last round that still moved the fit further than this: uncertain
    tilt_agreement_tolerance: float  # refits with MI within this fraction of the fit's fit as well as it
    max_tilt_error_px: float  # tissue radius x sin(farthest such refit's tilt) above this (CT px): uncertain
    texture_starts: int  # poses the section's texture proposes, refined at the finest level beside the grid's (0: none)
    texture_depth_step_voxels: float  # CT planes this far apart are compared with the section's texture
    texture_below_margin: float  # the texture is consulted only where the coarser levels' MI margin is below this

    def range_checks(self, prefix: str = "registration") -> list[tuple[str, Any, bool, str]]:
        """``(dotted key, value, valid, what a valid value is)`` for every setting with a range, in field order."""
        r = self
        rows = [
            ("pyramid_levels", r.pyramid_levels >= 1, AT_LEAST_ONE),
            ("histology_downsample_um", r.histology_downsample_um > 0, POSITIVE),
            ("max_tilt_deg", 0 < r.max_tilt_deg <= 45, "an angle in (0, 45] degrees"),
            ("search_axes", len(r.search_axes) >= 1 and set(r.search_axes) <= {"z", "y", "x"}
             and len(set(r.search_axes)) == len(r.search_axes), "distinct volume axes among z, y, x"),
            ("tilt_step_deg", 0 <= r.tilt_step_deg <= 45, "an angle in [0, 45] degrees (0: no cone)"),
            ("check_tilt_deg", 0 <= r.check_tilt_deg <= 20, "an angle in [0, 20] degrees (0: no restarts)"),
            ("max_tilt_spread_deg", r.max_tilt_spread_deg > 0, POSITIVE),
            ("tilt_refit_gain", 0 <= r.tilt_refit_gain < 1, "a fraction in [0, 1)"),
            ("tilt_refit_rounds", r.tilt_refit_rounds >= 1, AT_LEAST_ONE),
            ("mi_bins", r.mi_bins >= 4, "at least 4 bins"),
            ("affine_iterations", r.affine_iterations >= 1, AT_LEAST_ONE),
            ("plane_iterations", r.plane_iterations >= 1, AT_LEAST_ONE),
            ("max_inplane_rotation_deg", 0 <= r.max_inplane_rotation_deg <= 180, "an angle in [0, 180] degrees"),
            ("inplane_step_deg", r.inplane_step_deg > 0, POSITIVE),
            ("max_shift_fraction", 0 <= r.max_shift_fraction <= 1, FRACTION),
            ("shift_step_fraction", 0 < r.shift_step_fraction <= 1, FRACTION),
            ("depth_margin_voxels", r.depth_margin_voxels >= 0, "non-negative"),
            ("n_starts", r.n_starts >= 1, AT_LEAST_ONE),
            ("refinement_rounds", r.refinement_rounds >= 0, "non-negative"),
            ("refinement_levels", 1 <= r.refinement_levels <= r.pyramid_levels,
             f"between 1 and {prefix}.pyramid_levels"),
            ("min_inside_fraction", 0 < r.min_inside_fraction <= 1, FRACTION),
            ("threads", r.threads >= 1, AT_LEAST_ONE),
            ("workers", r.workers >= 1, AT_LEAST_ONE),
            ("tilt_agreement_tolerance", 0 <= r.tilt_agreement_tolerance < 1, "a fraction in [0, 1)"),
            ("max_tilt_error_px", r.max_tilt_error_px > 0, "positive"),
            ("texture_starts", r.texture_starts >= 0, "non-negative"),
            ("texture_depth_step_voxels", r.texture_depth_step_voxels >= 1, "at least 1 voxel"),
            ("texture_below_margin", 0 <= r.texture_below_margin <= 1, FRACTION),
            ("n_orientation_starts", r.n_orientation_starts >= 0, "non-negative"),
            ("orientation_separation_deg", 0 < r.orientation_separation_deg <= 180, "an angle in (0, 180] degrees"),
            ("min_mi_margin", 0 <= r.min_mi_margin < 1, "a fraction in [0, 1)"),
            ("min_silhouette_iou", 0 <= r.min_silhouette_iou < 1, "a fraction in [0, 1)"),
        ]
        return [(f"{prefix}.{name}", getattr(r, name), bool(valid), what) for name, valid, what in rows]

    def check(self, source: str | None = None) -> None:
        """Stop with a :class:`ParameterError` at the first setting out of range (``source`` named first)."""
        _first_invalid(self.range_checks(), source)
