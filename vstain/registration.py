"""2D-3D registration of a histology section to a CT volume (paper 2.3).

A histology section was cut from the block after tomography, at a slightly oblique
plane, and was then distorted a little (non-uniform shrinkage, shear) by the
preparation. Registration recovers both, by mutual information (MI), which needs no
assumption about how CT grey values relate to stain colours (the contrast is often
inverted: dense bone is bright in CT and pale in toluidine blue):

1. **Global start** (any in-plane rotation, either face, any searched volume axis). A section
   lies on its slide at any rotation and may be mounted face down (mirrored), and it is cut along
   the screw wherever that lies in the volume, so the start is searched over the whole circle,
   both faces and the volume axes of ``search_axes``: the histology is a thin 3D "slab" (the fixed
   image), block-averaged to the coarsest pyramid level (``histology_downsample_um``, about 50 px
   across), and the mirrored face is the same slab flipped left-right. For each axis the CT is
   turned so that axis is the first (:data:`AXIS_ORDERS`, a rotation). The section's tissue
   centroid (optical density above Otsu's split: glass around the section does not move it) is
   put on the view's centre axis, and an exhaustive grid scores SimpleITK's Mattes MI of the CT
   values sampled on the slab for every in-plane rotation (``inplane_step_deg``, -180 to 180),
   in-plane shift (``max_shift_fraction``, ``shift_step_fraction``) and depth (one coarse pixel
   apart, ``depth_margin_voxels`` from the ends) on each face. A rotation whose view cannot hold
   ``min_inside_fraction`` of the section's footprint is skipped, and every MI is weighted by the
   fraction of the footprint the volume holds (MI on a sliver of overlap is high for few, alike
   samples): in a thin volume only the thick cross-section is searched. The ``n_starts`` best depths
   also start tilted, where a cone of tilts (rings ``tilt_step_deg`` apart up to ``max_tilt_deg``,
   8 directions) scores best. **Capture range**: any rotation and face; a normal within
   ``max_tilt_deg`` of any searched axis (the cone reaches 10-15 degree tilts that an untilted
   start loses to a near-axial optimum); translations within about ``max_shift_fraction`` of the
   CT width of the view's centre axis; any depth inside the volume. A fit beyond ``max_tilt_deg``
   fails. A pair's ``initial_guess`` narrows it: landmarks replace the search (the plane they span
   is refined through every level), orientation values restrict what the fit may take.
2. **Plane fit** (3D rigid, coarse to fine). A regular-step gradient descent refines the
   starts and the best poses of ``n_orientation_starts`` other orientations (further than
   ``orientation_separation_deg`` in rotation, the other face, or another axis) at the coarsest
   level; the best pose of every distinct orientation then goes on through the pyramid (the
   histology block-averaged, the CT smoothed to match), and the finest level picks the fit. (The
   profile may narrow the orientations the fit may take, ``max_inplane_rotation_deg`` and
   ``search_mirror``; the grid still scans all of them, as competitors of the check of step 5.)
3. **2D affine**. The CT is resampled on the fitted plane
   (:func:`scipy.ndimage.map_coordinates`), and a 2D affine of the histology
   (non-uniform scale, shear, rotation, translation; a negative determinant for a section
   face down) onto that slice maximises MI.
4. **Plane refinement**. The plane fit is repeated with the histology undistorted (and
   un-mirrored) by that affine (the rigid model is now right), then the 2D affine is fitted again.
5. **Quality check**: a wrong local optimum must not pass for a fit. ``mi_margin`` is
   ``(MI - MI_other) / MI`` of the fit over the best pose of another orientation, both
   refined to the finest level (a section of another sample, or a symmetric one, leaves no
   orientation clearly best: the margin is small; negative when an orientation the profile
   did not allow fits better); ``silhouette_iou`` is the overlap of the sample's outline in
   the CT plane and in the registered section (:func:`silhouette_iou`: a plane in the wrong
   place); ``tilt_spread_deg`` (:func:`_tilt_restarts`): the last plane fit is restarted from
   itself tilted over the cone (multiples of ``check_tilt_deg`` up to ``max_tilt_deg``, 8
   directions); on a right fit no refit ends clearly higher in MI (``tilt_refit_gain``), on a plane
   tilted too little or too far (a 14 degree plane that converged to an axial one) one climbs
   higher: it replaces the fit and refits start again around it (``tilt_refit_rounds``); how far
   the last round still moved the plane is the spread. Below ``min_mi_margin`` or ``min_silhouette_iou``, or
   a spread beyond ``max_tilt_spread_deg``, the result's ``status`` is ``uncertain: <reason>``, and
   the registration stage keeps such a pair out of training. The check cannot see a wrong fit
   whose true orientation never reached the finest level while every pose that did is clearly
   worse than it (measured on the smoke phantom at a coarsest level of only 24 px); the coarsest
   level must be fine enough (about 50 px).

Coordinates follow :mod:`vstain.phantom`: the plane is ``point(i, j) = plane_point +
i * plane_axes[0] + j * plane_axes[1]`` in CT voxel (z, y, x) coordinates for plane
pixels ``(i, j)`` at CT pixel size, and ``[i, j, 1] = affine @ [y, x, 1]`` for a
histology pixel ``(y, x)``. The result's plane pixel ``(0, 0)`` is the top-left pixel
of its cropped output images.

Examples
--------
>>> import numpy as np
>>> from vstain.registration import oblique_slice
>>> volume = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
>>> axes = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])   # an axial plane
>>> plane = oblique_slice(volume, np.array([2.0, 0.0, 0.0]), axes, (5, 6))
>>> bool(np.allclose(plane, volume[2]))
True
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import math
import time
from typing import Any, Sequence

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu
from skimage.util import compare_images

from vstain.manifest import check_landmarks
from vstain.masks import convex_hull, segment_ct, segment_histology
from vstain.phantom.labels import LABELS, RIGID_LABELS

__all__ = [
    "RegistrationError",
    "RegistrationFailed",
    "RegistrationResult",
    "RegistrationUncertain",
    "before_after_checkerboards",
    "check_registration_inputs",
    "display_range",
    "histology_grey",
    "image_outline",
    "oblique_slice",
    "plane_corners",
    "register_section_to_volume",
    "registration_errors",
    "silhouette_iou",
    "true_correspondence_mask",
    "true_rois",
    "warp_to_result",
]


class RegistrationError(ValueError):
    """The input of a registration is unusable; the message names the pair id and the field."""


class RegistrationFailed(RegistrationError):
    """A registration ran but failed (no MI gain, plane outside the volume or too tilted)."""


class RegistrationUncertain(RegistrationFailed):
    """A registration ran, but its quality check cannot tell it from a wrong local optimum.

    Raised by the callers that must not use such a fit (:mod:`vstain.stages.register`);
    :func:`register_section_to_volume` itself returns the result with its ``status``.
    ``row`` holds the pair's table row (quality figures, errors against a known truth).
    """

    def __init__(self, message: str, row: dict | None = None):
        super().__init__(message)
        self.row = dict(row or {})


# --------------------------------------------------------------------------- result


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
        (:func:`silhouette_iou`).
    status : str
        ``ok``, or ``uncertain: <reasons>`` when ``mi_margin`` or ``silhouette_iou`` is below
        the profile's ``min_mi_margin`` / ``min_silhouette_iou``, or ``tilt_spread_deg`` above
        ``max_tilt_spread_deg``: the fit may be a wrong local optimum and must not be used as a
        registered pair.
    tilt_spread_deg : float
        The tilt check (:func:`_tilt_restarts`): how far (degrees) the last round of refits, from
        the fit tilted ``check_tilt_deg`` four ways, still moved the plane to a clearly higher MI
        (0: the fit settled); NaN when the profile sets no refits.
    tilt_disagreement_deg : float
        How far from the fit the refits of the tilt check reach planes that fit about as well (MI
        within ``tilt_agreement_tolerance``), or the fit refined on one half of the section turns:
        the tilt the data leave open (:func:`_tilt_disagreement`, :func:`_half_section_tilt`).
    tilt_error_px : float
        What that open tilt could cost: the section's tissue radius (CT pixels) times its sine, the
        largest out-of-plane error such a turn about the tissue's centre makes. Above
        ``max_tilt_error_px`` the fit is uncertain.
    normal_axis : str
        The volume axis (``z``, ``y`` or ``x``) the fitted normal lies nearest.
    threads : int
        The SimpleITK threads every registration method of the fit ran with (``config.threads``).
    """

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
        return _histology_to_volume(points_yx, self.affine, self.plane_point, self.plane_axes)


def _histology_to_volume(points_yx, affine, plane_point, plane_axes) -> np.ndarray:
    points = np.atleast_2d(np.asarray(points_yx, dtype=float))
    ij = (affine[:2, :2] @ points.T).T + affine[:2, 2]
    return plane_point[None, :] + ij[:, :1] * plane_axes[0][None, :] + ij[:, 1:2] * plane_axes[1][None, :]


# --------------------------------------------------------------------------- validation


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


# --------------------------------------------------------------------------- image helpers


def histology_grey(histology: np.ndarray) -> np.ndarray:
    """One grey channel of an RGB section for mutual information: total optical density.

    ``-log`` of the normalised intensity, summed over R, G, B: proportional to the
    amount of stain (Beer-Lambert), so stained tissue classes stay apart even where
    their luminances coincide, and the white glass is 0.

    Parameters
    ----------
    histology : ndarray, (H, W, 3) uint8

    Returns
    -------
    ndarray, (H, W) float32

    Examples
    --------
    >>> import numpy as np
    >>> rgb = np.array([[[255, 255, 255], [20, 60, 120]]], np.uint8)
    >>> grey = histology_grey(rgb)
    >>> float(grey[0, 0]), bool(grey[0, 1] > 1)
    (0.0, True)
    """
    rgb = np.asarray(histology, dtype=np.float32)
    return (-np.log(np.clip(rgb, 1.0, 255.0) / 255.0)).sum(axis=-1).astype(np.float32)


def oblique_slice(
    volume: np.ndarray,
    plane_point: np.ndarray,
    plane_axes: np.ndarray,
    shape: Sequence[int],
    *,
    order: int = 1,
    cval: float = np.nan,
) -> np.ndarray:
    """Sample a volume on a plane grid: pixel ``(i, j)`` lies at ``plane_point + i*axes[0] + j*axes[1]``.

    Parameters
    ----------
    volume : ndarray, (Z, Y, X)
    plane_point : ndarray, (3,)
        Voxel (z, y, x) coordinates of pixel ``(0, 0)``.
    plane_axes : ndarray, (2, 3)
        Steps in voxels for one pixel along ``i`` and along ``j``.
    shape : (int, int)
        Output shape.
    order : int
        Spline order of :func:`scipy.ndimage.map_coordinates` (1: linear; 0 for labels).
    cval : float
        Value outside the volume.

    Returns
    -------
    ndarray of ``shape``, float (or the volume's dtype for ``order=0``).

    Examples
    --------
    >>> import numpy as np
    >>> volume = np.zeros((3, 4, 4)); volume[1] = 7.0
    >>> oblique_slice(volume, np.array([1.0, 0, 0]), np.array([[0, 1.0, 0], [0, 0, 1.0]]), (2, 2)).tolist()
    [[7.0, 7.0], [7.0, 7.0]]
    """
    ii, jj = np.mgrid[0 : shape[0], 0 : shape[1]].astype(float)
    coords = (
        np.asarray(plane_point, float)[:, None, None]
        + ii[None] * np.asarray(plane_axes[0], float)[:, None, None]
        + jj[None] * np.asarray(plane_axes[1], float)[:, None, None]
    )
    if order == 0:
        return ndi.map_coordinates(volume, coords, order=0, mode="constant", cval=cval)
    return ndi.map_coordinates(np.asarray(volume, np.float32), coords, order=order, mode="constant", cval=cval)


def _block_mean(image: np.ndarray, factor: float) -> np.ndarray:
    """Anti-aliased downsampling by a (possibly fractional) factor >= 1."""
    if factor <= 1.0 + 1e-6:
        return image.astype(np.float32)
    sigma = (factor - 1.0) / 2.0  # scikit-image's anti-aliasing width
    smooth = ndi.gaussian_filter(image.astype(np.float32), sigma)
    out_shape = [max(2, int(round(s / factor))) for s in image.shape]
    grid = np.meshgrid(*[(np.arange(n) + 0.5) * (s / n) - 0.5 for n, s in zip(out_shape, image.shape)], indexing="ij")
    return ndi.map_coordinates(smooth, grid, order=1, mode="nearest").astype(np.float32)


def _fov_at(fov: np.ndarray, factor: float) -> np.ndarray:
    """The field of view downsampled by ``factor``, eroded 1 px where it is partial (edge effects)."""
    small = _block_mean(fov.astype(np.float32), factor) > 0.5
    if fov.all():
        return small
    return ndi.binary_erosion(small, iterations=1, border_value=1)


def _slab(grey: np.ndarray, spacing_um: float) -> sitk.Image:
    """A 2D image as a one-pixel-thick 3D image lying in the z = 0 physical plane."""
    image = sitk.GetImageFromArray(grey[None].astype(np.float32))
    image.SetSpacing((spacing_um, spacing_um, spacing_um))
    return image


def _mask_image(mask: np.ndarray, like: sitk.Image) -> sitk.Image:
    image = sitk.GetImageFromArray(mask.astype(np.uint8).reshape(sitk.GetArrayViewFromImage(like).shape))
    image.CopyInformation(like)
    return image


# --------------------------------------------------------------------------- stage 1: plane


@dataclasses.dataclass
class _Plane:
    """A rigid map from histology physical (x, y, 0) um to CT physical (x, y, z) um."""

    rotation: np.ndarray  # (3, 3), physical xyz
    offset: np.ndarray  # (3,), physical xyz of histology physical origin

    @classmethod
    def from_transform(cls, transform: sitk.Euler3DTransform) -> "_Plane":
        rotation = np.asarray(transform.GetMatrix()).reshape(3, 3)
        center = np.asarray(transform.GetCenter())
        offset = -rotation @ center + center + np.asarray(transform.GetTranslation())
        return cls(rotation, offset)

    def voxel_frame(self, voxel_um: float) -> tuple[np.ndarray, np.ndarray]:
        """(origin, axes) in voxel zyx: a histology physical point (x, y) um lies at origin + (y*ax0 + x*ax1)/voxel."""
        origin = self.offset[::-1] / voxel_um
        axes = np.stack([self.rotation[:, 1][::-1], self.rotation[:, 0][::-1]])
        return origin, axes


def _new_method(bins: int, mask: sitk.Image | None, history: list, stage: str, level: int,
                sampling: float = 1.0) -> sitk.ImageRegistrationMethod:
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=int(bins))
    if sampling < 1.0:  # a fixed random subset of the fixed pixels: a fixed seed keeps it deterministic
        method.SetMetricSamplingStrategy(method.RANDOM)
        method.SetMetricSamplingPercentage(float(sampling), SAMPLING_SEED)
    else:
        method.SetMetricSamplingStrategy(method.NONE)  # every fixed pixel: deterministic
    # The slab samples a few thousand points of a large volume: gradients at those points are cheaper
    # than a gradient image of the whole volume, which ITK would otherwise rebuild for every start.
    method.SetMetricUseMovingImageGradientFilter(False)
    method.SetInterpolator(sitk.sitkLinear)
    if mask is not None:
        method.SetMetricFixedMask(mask)

    def record() -> None:
        history.append({"stage": stage, "level": level, "iteration": int(method.GetOptimizerIteration()),
                        "mi": -float(method.GetMetricValue())})

    method.AddCommand(sitk.sitkIterationEvent, record)
    return method


def _bins_for(n_samples: int, max_bins: int) -> int:
    # A joint histogram needs several samples per cell: fewer bins on small (coarse) images.
    return int(np.clip(np.sqrt(n_samples) / 2.0, 12, max_bins))


#: Cyclic axis orders that turn the volume so that its axis 0, 1 or 2 becomes the first (z) axis:
#: ``view = volume.transpose(order)``; a voxel ``p`` of the volume is ``p[list(order)]`` of the view. A
#: cyclic order is a rotation, so the plane fit in a view is the same rigid problem.
AXIS_ORDERS = {0: (0, 1, 2), 1: (1, 2, 0), 2: (2, 0, 1)}
AXIS_NAMES = ("z", "y", "x")


class _CTViews:
    """The CT turned so that each searched axis is its first (:data:`AXIS_ORDERS`), and its smoothed copies.

    A mapping from axis to view. Every plane fit smooths the view it fits against to each pyramid
    level's scale; on a paper-size volume (134 M voxels) that takes seconds, and the tilt check's
    dozens of refits go down the same levels. The last ``keep`` smoothed images are kept (the
    registration keeps one per pyramid level: that many float32 copies of the volume in memory),
    shared by the views that :meth:`only` makes.
    """

    def __init__(self, ct: np.ndarray, axes: Sequence[int], ct_voxel_um: float, keep: int = 2,
                 caches: tuple[collections.OrderedDict, collections.OrderedDict] | None = None):
        self.ct, self.axes, self.ct_voxel_um, self.keep = ct, list(axes), float(ct_voxel_um), int(keep)
        self._cache, self._sections = caches or (collections.OrderedDict(), collections.OrderedDict())

    def __iter__(self):
        return iter(self.axes)

    def __contains__(self, axis) -> bool:
        return axis in self.axes

    def __getitem__(self, axis: int) -> np.ndarray:
        if axis not in self.axes:
            raise KeyError(axis)
        return self.ct.transpose(AXIS_ORDERS[axis])

    def only(self, axis: int) -> "_CTViews":
        """The view of one axis, sharing the smoothed images."""
        return _CTViews(self.ct, [axis], self.ct_voxel_um, self.keep, (self._cache, self._sections))

    def moving(self, axis: int, sigma: float, step: int = 1) -> sitk.Image:
        """The view of ``axis`` smoothed by a Gaussian of ``sigma`` voxels, every ``step``-th voxel kept.

        A SimpleITK image in um whose voxel ``i`` lies where the view's voxel ``i * step`` does (the
        same physical frame at every step). Mattes MI scans the whole moving image on every
        evaluation (0.4 s at 134 M voxels): a coarse level's smoothed view loses nothing by keeping
        one voxel in ``step`` along each axis and scans ``step ** 3`` times fewer.
        """
        key = (axis, round(float(sigma), 9), int(step))
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        view = self[axis]
        smoothed = ndi.gaussian_filter(view, sigma) if sigma > 0 else view
        image = sitk.GetImageFromArray(np.ascontiguousarray(smoothed[::step, ::step, ::step]))
        image.SetSpacing((self.ct_voxel_um * step,) * 3)
        self._cache[key] = image
        while len(self._cache) > self.keep:
            self._cache.popitem(last=False)
        return image

    def section_level(self, grey: np.ndarray, fov: np.ndarray, factor: float) -> tuple[np.ndarray, np.ndarray]:
        """The section image and its field of view downsampled by ``factor`` (:func:`_block_mean`, :func:`_fov_at`).

        Kept like the smoothed views: the tilt check refits the same section at the same levels dozens
        of times, and a paper-size section takes a good fraction of a second to smooth.
        """
        key = (id(grey), id(fov), round(float(factor), 9))
        if key in self._sections and self._sections[key][0] is grey and self._sections[key][1] is fov:
            self._sections.move_to_end(key)
            return self._sections[key][2]
        level = (_block_mean(grey, factor), _fov_at(fov, factor))
        self._sections[key] = (grey, fov, level)  # the arrays too: their ids stay theirs while kept
        while len(self._sections) > 2 * self.keep:
            self._sections.popitem(last=False)
        return level


def _to_volume_frame(origin: np.ndarray, axes: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """A plane (origin, axes) in the voxel frame of the view of ``axis`` -> the volume's voxel frame."""
    back = np.argsort(AXIS_ORDERS[axis])
    return np.asarray(origin, float)[back], np.asarray(axes, float)[:, back]


def _to_view_frame(points: np.ndarray, axis: int) -> np.ndarray:
    """Volume voxel coordinates ``(..., 3)`` -> those of the view of ``axis``."""
    return np.asarray(points, float)[..., list(AXIS_ORDERS[axis])]


def _fit_plane(views, faces, ct_voxel_um, histology_pixel_um, cfg, history, start, pair_id, round_, *,
               hint=None, n_finest=None, sampling=1.0, max_samples=None):
    """Coarse-to-fine rigid fit of the section plane (an Euler3D transform: slab -> CT view, um).

    ``views`` (:class:`_CTViews`) maps a volume axis to the CT turned so that axis is its first, and
    smooths it per level;
    ``faces`` holds one ``(grey, fov)`` slab per face of the section (the second, if any,
    mirrored). With no ``start`` the coarsest level searches every view and face
    (:func:`_search_start`), each start is tilted over the cone (:func:`_best_tilt`), and the best
    pose of each distinct orientation goes on to the finer levels, where the finest picks the
    fit. ``start`` is ``(transform, axis)``: a refinement of the ``n_finest`` finest levels
    (default ``refinement_levels``); ``sampling`` is the fraction of the section's pixels the
    metric samples (a fixed random subset), at most ``max_samples`` of them if given. Returns the
    transform, its key ``(axis, face)``, the orientation check (:func:`_orientation_margin` at the
    finest level that still had a rival; empty after a given ``start``) and the final metric
    value (minus MI).
    """
    # Geometric steps from the coarsest pixel size down to the CT voxel size.
    finest_um = max(ct_voxel_um, histology_pixel_um)
    coarsest_um = max(finest_um, cfg.histology_downsample_um)
    n_levels = max(1, cfg.pyramid_levels)
    level_um = [coarsest_um * (finest_um / coarsest_um) ** (level / max(n_levels - 1, 1)) for level in range(n_levels)]
    if n_levels == 1:
        level_um = [finest_um]
    if start is not None:
        level_um = level_um[-(n_finest or cfg.refinement_levels):]  # refinement: the plane is already close
    # a copy: the optimiser moves its transform in place, and the caller's start must stay what it was
    candidates = None if start is None else [(sitk.Euler3DTransform(start[0]), (start[1], 0), True)]
    search: dict[str, float] = {}
    for level, um in enumerate(level_um):
        factor = um / histology_pixel_um
        sigma = max(0.0, (um / ct_voxel_um - 1) / 2)
        images: dict[int, tuple] = {}
        tissue: dict[int, np.ndarray] = {}

        step = max(1, int(um / ct_voxel_um / 2 + 1e-9))  # the smoothing is wide enough for that decimation

        def moving_for(axis, sigma=sigma, step=step):
            return views.moving(axis, sigma, step)

        def level_images(index, factor=factor, um=um, images=images):
            if index not in images:  # the fixed slab, its mask and bins of one face at this level
                small, fov_small = views.section_level(*faces[index], factor)
                fixed = _slab(small, um)
                rows, cols = np.nonzero(_tissue_pixels(np.where(fov_small, small, 0.0)) & fov_small)
                tissue[index] = np.column_stack([cols * um, rows * um, np.zeros(len(rows))])
                images[index] = (fixed, _mask_image(fov_small, fixed), fov_small,
                                 _bins_for(int(fov_small.sum()), cfg.mi_bins))
            return images[index]

        def weighted(value, transform, key, tissue=tissue):
            # MI on a small overlap is high for few, alike samples: a pose keeps its MI in proportion to the
            # section's tissue it holds inside the volume, so a thin volume's other axes cannot win on a sliver.
            level_images(key[1])
            return value * _coverage(transform, tissue[key[1]], views[key[0]].shape, ct_voxel_um)

        if candidates is None:
            grid = []
            for axis in views:
                for index in range(len(faces)):
                    fixed, mask, fov_small, bins = level_images(index)
                    grid += _search_start(fixed, mask, fov_small, um, views[axis].shape, ct_voxel_um, bins, cfg,
                                          (axis, index), lambda axis=axis: moving_for(axis), hint)
            if not grid:
                raise RegistrationFailed(
                    f"pair {pair_id}: no plane along the searched axes ({', '.join(AXIS_NAMES[a] for a in views)}) "
                    f"holds registration.min_inside_fraction {cfg.min_inside_fraction} of the section's tissue; "
                    "registration failed")
            starts = _pick_starts(grid, cfg)
            history.append({"stage": "search", "level": 0, "iteration": 0, "mi": -min(g[0] for g in grid)})
            # The grid has no tilt, and the gradient descent from an untilted start may stop at a nearer
            # optimum of a plane tilted 10-15 degrees: each of the best depths also starts tilted as the
            # cone scores best there (the other orientations, the check's rivals, start untilted).
            tilted = []
            for start_transform, key, allowed in (starts[:cfg.n_starts] if cfg.tilt_step_deg > 0 else []):
                fixed, mask, _, bins = level_images(key[1])
                best_tilt = _best_cone_tilt(start_transform, fixed, mask, bins, moving_for(key[0]), cfg)
                if best_tilt is not None:
                    tilted.append((best_tilt, key, allowed))
            starts = starts + tilted
        else:
            starts = candidates
        refined: list[tuple[float, Any, tuple, list, bool]] = []
        for start_transform, key, allowed in starts:
            fixed, mask, fov_small, bins = level_images(key[1])
            trial_history: list[dict[str, Any]] = []
            fraction = sampling if max_samples is None else min(sampling, max_samples / max(1, int(fov_small.sum())))
            method = _new_method(bins, mask, trial_history, f"plane{round_}", level, fraction)
            method.SetOptimizerAsRegularStepGradientDescent(
                learningRate=2.0 * um, minStep=0.01 * um, numberOfIterations=cfg.plane_iterations,
                relaxationFactor=0.6, gradientMagnitudeTolerance=1e-8,
            )
            method.SetOptimizerScalesFromPhysicalShift()
            method.SetInitialTransform(start_transform, inPlace=True)
            try:
                method.Execute(fixed, moving_for(key[0]))
                # a lone start's value counts on the last level only (each evaluation scans the whole volume)
                value = float(method.MetricEvaluate(fixed, moving_for(key[0]))) \
                    if len(starts) > 1 or level == len(level_um) - 1 else math.nan
            except RuntimeError as err:  # e.g. every sample left the volume
                if len(starts) > 1:
                    continue
                raise RegistrationFailed(
                    f"pair {pair_id}: plane fit failed at level {level} ({um:g} um): {err}; registration failed"
                ) from err
            refined.append((weighted(value, start_transform, key), start_transform, key, trial_history, allowed))
        if not any(item[4] for item in refined):
            raise RegistrationFailed(f"pair {pair_id}: plane fit failed at level {level} ({um:g} um) from every "
                                     "starting point; registration failed")
        # The fit takes the best pose the search allows; poses outside it only check it.
        best = min((item for item in refined if item[4]), key=lambda item: item[0])
        if len(refined) > 1:
            margin = _orientation_margin(best, refined, cfg)
            if math.isfinite(margin["mi_margin"]) or not search:  # else the coarser level's margin stands
                search = margin
            # The best pose of every distinct orientation goes on to the finer levels: a coarse grid can
            # rank a near-symmetric wrong pose first (a screw looks alike flipped about its axis); the
            # finest level decides, and its margin is the one reported.
            rivals = [item for item in _distinct_orientations(refined, cfg) if item is not best]
            candidates = [(item[1], item[2], item[4]) for item in [best] + rivals
                          if item is best or _best_other(best, [item], cfg) is not None]
        else:
            candidates = [(best[1], best[2], True)]
        history.extend(best[3])
    return best[1], best[2], search, best[0]


def _coverage(transform: sitk.Euler3DTransform, points_xyz: np.ndarray, view_shape, ct_voxel_um: float) -> float:
    """The fraction of slab points (physical x, y, 0 um) that ``transform`` maps inside a CT view."""
    if not len(points_xyz):
        return 1.0
    matrix = np.asarray(transform.GetMatrix()).reshape(3, 3)
    centre = np.asarray(transform.GetCenter())
    mapped = (points_xyz - centre) @ matrix.T + centre + np.asarray(transform.GetTranslation())
    upper = (np.asarray(view_shape[::-1], float) - 1) * ct_voxel_um
    return float(np.mean(np.all((mapped >= 0) & (mapped <= upper), axis=1)))


def _tilted(transform: sitk.Euler3DTransform, direction: float, tilt_deg: float) -> sitk.Euler3DTransform:
    """``transform`` with its plane turned by ``tilt_deg`` about the in-plane direction ``direction`` (rad, CT x-y).

    The turn is about the transform's centre as mapped into the CT, so the plane keeps its depth there.
    """
    axis = np.array([math.cos(direction), math.sin(direction), 0.0])
    turn = _axis_rotation(axis, math.radians(tilt_deg))
    out = sitk.Euler3DTransform(transform)
    out.SetMatrix(tuple((turn @ np.asarray(transform.GetMatrix()).reshape(3, 3)).ravel()))
    return out


def _turned(transform: sitk.Euler3DTransform, angle_deg: float) -> sitk.Euler3DTransform:
    """``transform`` turned by ``angle_deg`` in its own plane (about its normal, through its centre)."""
    turn = _axis_rotation(_normal_of(transform), math.radians(angle_deg))
    out = sitk.Euler3DTransform(transform)
    out.SetMatrix(tuple((turn @ np.asarray(transform.GetMatrix()).reshape(3, 3)).ravel()))
    return out


def _angle_between_planes(normal_a: np.ndarray, normal_b: np.ndarray) -> float:
    """The angle (degrees, 0-90) between two planes given by their unit normals, whichever way each points."""
    return math.degrees(math.acos(min(1.0, abs(float(np.dot(normal_a, normal_b))))))


def _rotation_between(a: sitk.Euler3DTransform, b: sitk.Euler3DTransform) -> float:
    """The angle (degrees) of the rotation that takes pose ``a`` to pose ``b``: tilt and in-plane turn together."""
    ra, rb = (np.asarray(t.GetMatrix()).reshape(3, 3) for t in (a, b))
    return math.degrees(math.acos(float(np.clip((np.trace(ra.T @ rb) - 1) / 2, -1.0, 1.0))))


def _axis_rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rodrigues rotation matrix about a unit ``axis`` by ``angle`` radians."""
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * (k @ k)


def _normal_of(transform: sitk.Euler3DTransform) -> np.ndarray:
    """The plane normal (the slab's z axis) of a transform, in CT physical (x, y, z)."""
    return np.asarray(transform.GetMatrix()).reshape(3, 3)[:, 2]


def _best_cone_tilt(transform, fixed, mask, bins, moving, cfg) -> sitk.Euler3DTransform | None:
    """The start tilted over the cone where the coarse MI is best, or None if no tilt beats it.

    The cone: rings ``tilt_step_deg`` apart up to ``max_tilt_deg``, 8 directions each, about the
    start's centre (the section's tissue centre: its depth there stays).
    """
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=int(bins))
    method.SetMetricSamplingStrategy(method.NONE)
    method.SetMetricUseMovingImageGradientFilter(False)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetMetricFixedMask(mask)
    best, best_value = None, math.inf
    for tilt in np.arange(0.0, cfg.max_tilt_deg + 1e-9, cfg.tilt_step_deg):
        for direction in (np.arange(8) * math.pi / 4 if tilt > 0 else [0.0]):
            trial = _tilted(transform, direction, tilt) if tilt > 0 else transform
            method.SetInitialTransform(trial, inPlace=False)
            try:
                value = float(method.MetricEvaluate(fixed, moving))
            except RuntimeError:  # the tilted slab leaves the volume
                continue
            if value < best_value:
                best, best_value = (None if tilt == 0 else sitk.Euler3DTransform(trial)), value
    return best


def _tissue_centre(grey_small: np.ndarray, fov_small: np.ndarray) -> np.ndarray:
    """Row, column of the centroid of the section's tissue: its centre whatever glass surrounds it.

    The tissue is the optical density above Otsu's split (:func:`_tissue_pixels`), unweighted: an
    opaque implant would pull a density-weighted centroid far towards itself.
    """
    tissue = _tissue_pixels(np.where(fov_small, grey_small, 0.0)) & fov_small
    if not tissue.any():
        return (np.asarray(grey_small.shape, float) - 1) / 2
    rows, cols = np.nonzero(tissue)
    return np.array([rows.mean(), cols.mean()])


def _search_start(fixed, mask, fov_small, um, view_shape, ct_voxel_um, bins, cfg, key, moving, hint=None):
    """Exhaustive MI grid over in-plane rotation, in-plane shift and depth for one view and face.

    ``key`` is ``(axis, face)``: the volume axis the view turns to z and the face of the section.
    The section's tissue centre starts on the view's centre axis and the rotation turns about
    it, so the grid covers every orientation with shifts and depths around that one position.
    Rotations that cannot bring ``min_inside_fraction`` of the section's footprint inside the
    view's cross-section (:func:`_inside_fractions`) are left out: MI on a small overlap is
    unreliable (few, alike samples score high), and every grid MI is weighted by that fraction. A
    view with no such rotation (a thin volume cut across its thin axis) is not searched;
    ``moving()`` builds the CT view only when needed.

    The grid covers the whole circle on both faces whatever the profile lets the fit take
    (``max_inplane_rotation_deg``, ``search_mirror``, or the pair's ``hint``: a narrower search,
    as from a known orientation): the poses outside it are the competitors of the quality check.

    Returns
    -------
    list of (value, parameters, key, transform, allowed)
        Every grid pose: its metric value (minus MI), its Euler3D parameters (the in-plane
        rotation in radians is the third), the key, the transform they set, and whether the fit
        may take it.
    """
    grey_small = sitk.GetArrayViewFromImage(fixed)[0]
    cy, cx = _tissue_centre(grey_small, fov_small)
    centre_hist = np.array([cx * um, cy * um, 0.0])
    z, y, x = (np.asarray(view_shape, float) - 1) * ct_voxel_um
    n_rot = int(math.ceil(180.0 / cfg.inplane_step_deg - 1e-9))  # the whole circle, whatever the fit may take
    shift_step = cfg.shift_step_fraction * min(x, y)
    n_shift = int(round(cfg.max_shift_fraction / cfg.shift_step_fraction))
    angles = np.arange(-n_rot, n_rot + 1) * math.radians(cfg.inplane_step_deg)
    fractions = _inside_fractions(grey_small, fov_small, (cx, cy), um, angles, (x, y))
    feasible = fractions >= cfg.min_inside_fraction
    if not feasible.any():
        return []
    transform = sitk.Euler3DTransform()
    transform.SetCenter(tuple(centre_hist))
    transform.SetTranslation(tuple(np.array([x / 2, y / 2, z / 2]) - centre_hist))
    depth_step = um
    n_depth = max(0, int((z / 2 - cfg.depth_margin_voxels * ct_voxel_um) // depth_step))
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=int(bins))
    method.SetMetricSamplingStrategy(method.NONE)
    method.SetMetricUseMovingImageGradientFilter(False)  # values only: no gradient image of the volume
    method.SetInterpolator(sitk.sitkLinear)
    method.SetMetricFixedMask(mask)
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
    hint = hint or {}
    axis, face = key
    mirrored = bool(face)
    allowed_key = (mirrored is False or cfg.search_mirror) and hint.get("mirrored", mirrored) == mirrored \
        and hint.get("normal_axis", axis) == axis
    centre = -math.radians(hint["rotation_deg"]) if "rotation_deg" in hint else 0.0
    limit = math.radians(cfg.inplane_step_deg if "rotation_deg" in hint else cfg.max_inplane_rotation_deg) + 1e-9
    out = []
    for value, position in grid:
        if abs(position[2]) >= math.pi - 1e-6 and position[2] > 0:
            continue  # +180 deg is -180 deg again
        index = int(round(position[2] / math.radians(cfg.inplane_step_deg))) + n_rot
        if not feasible[index]:
            continue
        allowed = allowed_key and abs(math.remainder(position[2] - centre, 2 * math.pi)) <= limit
        # as in the refinement: MI in proportion to the tissue the cross-section can hold
        out.append((value * min(1.0, fractions[index]), position, key, transform, allowed))
    return out


def _inside_fractions(grey_small, fov_small, centre_xy, um, angles, extent_xy) -> np.ndarray:
    """Per in-plane rotation, the fraction of the section's footprint inside a view's cross-section.

    The footprint is the convex hull of the tissue (:func:`_tissue_pixels`: pale soft tissue between
    stained bone belongs to the section too), turned by each angle about the tissue centre, which
    lies on the view's centre axis, against the cross-section ``extent_xy`` (um, x and y, centred).
    """
    tissue = _tissue_pixels(np.where(fov_small, grey_small, 0.0)) & fov_small
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


def _orientation_distance(a: tuple[int, float], b: tuple[int, float]) -> float:
    """Degrees between two (face, in-plane rotation) orientations; infinite across faces."""
    if a[0] != b[0]:
        return math.inf
    return abs(math.degrees(math.remainder(a[1] - b[1], 2 * math.pi)))


def _pick_starts(grid: list, cfg) -> list[tuple[Any, int, bool]]:
    """The starting poses refined at the coarsest level: ``(transform, face, allowed)``.

    The ``n_starts`` best depths among the poses the fit may take (each at its best rotation
    and shift: the screw is near-symmetric about its axis, so planes at mirrored depths can
    score alike on a coarse grid), then the best poses of up to ``n_orientation_starts`` other
    orientations (other in-plane rotations beyond ``orientation_separation_deg``, or the other
    face), allowed or not: a wrong orientation that scores well on the grid is refined too, so
    that either it wins fairly or its refined MI measures the margin of the fit
    (:func:`_orientation_margin`).
    """
    best_by_depth: dict[tuple, tuple] = {}
    best_by_orientation: dict[tuple[int, float], tuple] = {}
    for entry in grid:
        value, position, face, _, allowed = entry
        depth = (face, round(position[5], 3))
        if allowed and (depth not in best_by_depth or value < best_by_depth[depth][0]):
            best_by_depth[depth] = entry
        key = (face, round(position[2], 6))
        if key not in best_by_orientation or value < best_by_orientation[key][0]:
            best_by_orientation[key] = entry
    chosen = sorted(best_by_depth.values(), key=lambda item: item[0])[: max(1, cfg.n_starts)]
    taken = [(entry[2], entry[1][2]) for entry in chosen]
    others = 0
    for entry in sorted(best_by_orientation.values(), key=lambda item: item[0]):
        if others >= cfg.n_orientation_starts:
            break
        orientation = (entry[2], entry[1][2])
        if all(_orientation_distance(orientation, t) > cfg.orientation_separation_deg for t in taken):
            chosen.append(entry)
            taken.append(orientation)
            others += 1
    starts = []
    for _, position, face, transform, allowed in chosen:
        start = sitk.Euler3DTransform(transform)
        start.SetParameters(position)
        starts.append((start, face, allowed))
    return starts


def _inplane_rotation(transform: sitk.Euler3DTransform) -> float:
    """The in-plane angle (radians) of the slab's x axis in the CT's x-y plane (the plane is near-axial)."""
    rotation = np.asarray(transform.GetMatrix()).reshape(3, 3)
    return math.atan2(rotation[1, 0], rotation[0, 0])


def _best_other(best: tuple, refined: list, cfg) -> tuple | None:
    """The best refined pose whose orientation differs from ``best``'s (None if there is none)."""
    orientation = (best[2], _inplane_rotation(best[1]))
    others = [item for item in refined
              if _orientation_distance((item[2], _inplane_rotation(item[1])), orientation)
              > cfg.orientation_separation_deg]
    return min(others, key=lambda item: item[0]) if others else None


def _distinct_orientations(refined: list, cfg) -> list[tuple]:
    """The best refined pose of each orientation, best first (orientations apart by ``orientation_separation_deg``)."""
    kept: list[tuple] = []
    for item in sorted(refined, key=lambda entry: entry[0]):
        orientation = (item[2], _inplane_rotation(item[1]))
        if all(_orientation_distance(orientation, (k[2], _inplane_rotation(k[1]))) > cfg.orientation_separation_deg
               for k in kept):
            kept.append(item)
    return kept


def _orientation_margin(best: tuple, refined: list, cfg) -> dict[str, float]:
    """How clearly the best refined pose beats the best refined pose of another orientation.

    Returns ``mi_margin``: ``(MI_best - MI_other) / MI_best`` at the level of ``refined``, NaN
    when no pose of another orientation is among them (both refined to convergence there, or
    the other one ran into ``best``'s orientation: then the previous level's margin stands);
    and ``other_mi``.
    """
    other = _best_other(best, refined, cfg)
    mi_best = -best[0]
    if other is None or mi_best <= 0:
        return {"mi_margin": math.nan, "other_mi": math.nan}
    # Negative: an orientation the search was not allowed to take fits better.
    mi_other = -other[0]
    return {"mi_margin": (mi_best - mi_other) / mi_best, "other_mi": mi_other}


# --------------------------------------------------------------------------- stage 2: 2D affine


def _affine_images(ct_plane, plane_valid, grey, fov, factor, max_bins):
    """Fixed (histology at about CT pixel size, physical units = histology pixels) and moving (CT plane)."""
    fixed_grey = _block_mean(grey, factor)
    fov_small = _fov_at(fov, factor)
    sy = grey.shape[0] / fixed_grey.shape[0]
    sx = grey.shape[1] / fixed_grey.shape[1]
    fixed = sitk.GetImageFromArray(fixed_grey)
    fixed.SetSpacing((sx, sy))
    fixed.SetOrigin(((sx - 1) / 2, (sy - 1) / 2))
    fill = float(np.percentile(ct_plane[plane_valid], 1))
    # Physical xy of the moving image = plane pixels (j, i).
    moving = sitk.GetImageFromArray(np.where(plane_valid, ct_plane, fill).astype(np.float32))
    return fixed, moving, _mask_image(fov_small, fixed), _bins_for(int(fov_small.sum()), max_bins)


def _to_sitk_affine(affine: np.ndarray, centre_xy: np.ndarray) -> sitk.AffineTransform:
    """Histology pixel (y, x) -> plane pixel (i, j) matrix as a SimpleITK (x, y) -> (j, i) transform."""
    linear = affine[:2, :2][::-1, ::-1]
    translation = affine[:2, 2][::-1]
    transform = sitk.AffineTransform(2)
    transform.SetMatrix(tuple(linear.ravel()))
    transform.SetCenter(tuple(centre_xy))  # rotation/scale about the section centre: better conditioned
    transform.SetTranslation(tuple(linear @ centre_xy + translation - centre_xy))
    return transform


def _from_sitk_affine(transform: sitk.AffineTransform) -> np.ndarray:
    matrix = np.asarray(transform.GetMatrix()).reshape(2, 2)
    centre = np.asarray(transform.GetCenter())
    translation = np.asarray(transform.GetTranslation()) + centre - matrix @ centre
    affine = np.eye(3)
    affine[:2, :2] = matrix[::-1, ::-1]
    affine[:2, 2] = translation[::-1]
    return affine


def _affine_mi(ct_plane, plane_valid, grey, fov, factor, affine, cfg) -> float:
    """Mattes MI of the histology mapped onto the CT plane by ``affine`` (no optimisation)."""
    fixed, moving, mask, bins = _affine_images(ct_plane, plane_valid, grey, fov, factor, cfg.mi_bins)
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=bins)
    method.SetMetricSamplingStrategy(method.NONE)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetMetricFixedMask(mask)
    centre = np.array([(grey.shape[1] - 1) / 2, (grey.shape[0] - 1) / 2])
    method.SetInitialTransform(_to_sitk_affine(affine, centre))
    try:
        return -float(method.MetricEvaluate(fixed, moving))
    except RuntimeError:  # the section falls outside the slice: no information
        return 0.0


def _fit_affine(ct_plane, plane_valid, grey, fov, factor, initial, cfg, history, pair_id, stage):
    """2D affine of the histology (fixed) onto the CT plane image (moving), by Mattes MI.

    ``initial`` and the result map histology *pixels* [y, x, 1] to plane pixels [i, j, 1].
    """
    fixed, moving, mask, bins = _affine_images(ct_plane, plane_valid, grey, fov, factor, cfg.mi_bins)
    centre = np.array([(grey.shape[1] - 1) / 2, (grey.shape[0] - 1) / 2])
    transform = _to_sitk_affine(initial, centre)
    method = _new_method(bins, mask, history, stage, 0)
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
        raise RegistrationFailed(f"pair {pair_id}: 2D affine fit failed: {err}") from err
    return _from_sitk_affine(transform), final_mi


# --------------------------------------------------------------------------- the whole registration


def _plane_grid(origin: np.ndarray, axes: np.ndarray, ct_shape: Sequence[int]) -> tuple[np.ndarray, tuple[int, int]]:
    """A plane grid (origin, shape) covering the whole intersection of the plane with the volume."""
    corners = np.array(np.meshgrid(*[[0, s - 1] for s in ct_shape], indexing="ij")).reshape(3, -1).T
    proj = (corners - origin) @ axes.T  # (8, 2) plane coordinates
    low = np.floor(proj.min(axis=0)) - 1
    high = np.ceil(proj.max(axis=0)) + 1
    return origin + low[0] * axes[0] + low[1] * axes[1], (int(high[0] - low[0]) + 1, int(high[1] - low[1]) + 1)


def _inside_volume(points: np.ndarray, ct_shape: Sequence[int]) -> np.ndarray:
    upper = np.asarray(ct_shape, float) - 1
    return np.all((points >= 0) & (points <= upper), axis=-1)


def register_section_to_volume(
    ct_volume: np.ndarray,
    histology: np.ndarray,
    *,
    ct_voxel_um: float,
    histology_pixel_um: float,
    config: Any,
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
    config : RegistrationConfig
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
    >>> registration_errors(result, sample)["tre_median_px"] < 2                 # doctest: +SKIP
    True
    """
    # ITK splits every filter and metric over threads and sums their parts in varying order, which the
    # optimiser amplifies: the profile fixes the count (1: bit-for-bit the same fit on any machine).
    with _sitk_threads(config.threads):
        return _register_section_to_volume(ct_volume, histology, ct_voxel_um, histology_pixel_um,
                                           config, fov_mask, pair_id, initial_guess)


@contextlib.contextmanager
def _sitk_threads(threads: int):
    previous = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(int(threads))
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(previous)


def _register_section_to_volume(ct_volume, histology, ct_voxel_um, histology_pixel_um, config, fov_mask, pair_id,
                                initial_guess=None):
    started = time.perf_counter()
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
    history: list[dict[str, Any]] = []
    factor = ct_voxel_um / histology_pixel_um
    scale = np.diag([1.0 / factor, 1.0 / factor, 1.0])
    initial_mi = _initial_mi(ct, grey, fov, factor, config)

    # Stage 1: rigid plane; stage 2: 2D affine; then the plane again on the undistorted section.
    # ``pre`` maps histology pixels to the pixels of the image the plane fit saw (the "slab"); the
    # first fit searches both faces (the mirrored slab is the section flipped left-right).
    # (searched even when the profile forbids a mirrored fit: its poses are the check's competitors).
    # Each search axis has its view of the CT (the volume turned so the axis is z); after the first
    # fit everything runs in the view of the fit's axis, where the plane is near-axial.
    flip = np.array([[1.0, 0.0, 0.0], [0.0, -1.0, grey.shape[1] - 1.0], [0.0, 0.0, 1.0]])
    faces = [(np.eye(3), grey, fov),
             (flip, np.ascontiguousarray(grey[:, ::-1]), np.ascontiguousarray(fov[:, ::-1]))]
    guess = dict(initial_guess or {})
    landmarks = guess.pop("landmarks", None)
    search: dict[str, float] = {}
    if landmarks is not None:
        hist_yx, ct_zyx = _checked_landmarks(landmarks, histology.shape[:2], ct.shape, pair_id)
        axis, transform = _landmark_start(hist_yx, ct_zyx, ct_voxel_um, histology_pixel_um, grey.shape)
        views = _CTViews(ct, [axis], ct_voxel_um, keep=config.pyramid_levels)
        slab, pre = faces[0][1:], faces[0][0]
        transform, _, _, value = _fit_plane(views, [slab], ct_voxel_um, histology_pixel_um, config,
                                            history, (transform, axis), pair_id, 0, n_finest=config.pyramid_levels)
        candidates = [(transform, value, history)]
    else:
        search_axes = [AXIS_NAMES.index(a) for a in config.search_axes]
        if "normal_axis" in guess and guess["normal_axis"] not in search_axes:
            search_axes.append(guess["normal_axis"])
        views = _CTViews(ct, search_axes, ct_voxel_um, keep=config.pyramid_levels)
        transform, key, search, value = _fit_plane(views, [f[1:] for f in faces], ct_voxel_um, histology_pixel_um,
                                                    config, history, None, pair_id, 0, hint=guess)
        axis, (pre, *slab) = key[0], faces[key[1]]
    affine, origin, axes, final_mi, spread, disagreement, history = _complete(
        views.only(axis), axis, transform, value, slab, pre, grey, fov, factor, scale, ct_voxel_um, histology_pixel_um,
        config, history, pair_id)
    origin, axes = _to_volume_frame(origin, axes, axis)
    return _finish(ct, histology, fov, affine, origin, axes, ct_voxel_um, histology_pixel_um,
                   final_mi, initial_mi, history, started, config, pair_id, search, axis, spread, disagreement)


def _complete(views, axis, transform, value, slab, pre, grey, fov, factor, scale, ct_voxel_um, histology_pixel_um,
              config, history, pair_id):
    """From a first plane fit: the 2D affine, the plane refits on the undistorted section, the tilt check.

    ``views`` is the :class:`_CTViews` of the fit's axis. Returns ``(affine, origin, axes, final_mi,
    tilt_spread, tilt_disagreement, history)`` in the view's voxel frame.
    """
    view = np.ascontiguousarray(views[axis])
    spread = disagreement = math.nan
    for round_ in range(1 + config.refinement_rounds):
        last = round_ == config.refinement_rounds
        if round_ > 0:
            slab = (slab_grey, slab_fov)
            transform, _, _, value = _fit_plane(views, [slab], ct_voxel_um, histology_pixel_um, config,
                                                history, (transform, axis), pair_id, round_)
        if last and config.check_tilt_deg > 0:
            transform, value, spread, refits = _tilt_restarts(views, slab, transform, value, axis, ct_voxel_um,
                                                              histology_pixel_um, config, pair_id, round_)
            disagreement = max(_tilt_disagreement(_normal_of(transform), refits, config.tilt_agreement_tolerance),
                               _half_section_tilt(views, slab, transform, axis, ct_voxel_um, histology_pixel_um,
                                                  config, pair_id, round_))
        slab_origin, axes = _Plane.from_transform(transform).voxel_frame(ct_voxel_um)
        origin, grid_shape = _plane_grid(slab_origin, axes, view.shape)
        ct_plane = oblique_slice(view, origin, axes, grid_shape)
        plane_valid = np.isfinite(ct_plane)
        if plane_valid.sum() < 64:
            raise RegistrationFailed(f"pair {pair_id}: the fitted plane leaves the volume; registration failed")
        start = np.eye(3)
        start[:2, 2] = (slab_origin - origin) @ axes.T
        start = start @ scale @ pre
        affine, final_mi = _fit_affine(ct_plane, plane_valid, grey, fov, factor, start, config, history,
                                       pair_id, f"affine{round_}")
        if not last:
            # the rectified section is the section undistorted (and un-mirrored) by the affine
            transform, pre, slab_grey, slab_fov = _rectify(grey, fov, affine, factor, origin, axes,
                                                           histology_pixel_um, ct_voxel_um)
    return affine, origin, axes, final_mi, spread, disagreement, history


#: Refits of the tilt check that are refined on the finest level, at most, per round.
CHECK_CONFIRMATIONS = 3
#: The tilt check's refits sample this fraction of the section's pixels (its confirmations, all).
CHECK_SAMPLING = 0.25
#: ... and at most this many (a paper-size section has a million pixels at the finest level; the
#: confirmations, with every pixel, decide).
CHECK_MAX_SAMPLES = 20000
#: Seed of the metric's pixel sampling: the same pixels every run.
SAMPLING_SEED = 20250601


def _tilt_restarts(views, slab, transform, value, axis, ct_voxel_um, histology_pixel_um, cfg, pair_id, round_):
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
    (transform, value, spread_deg, refits)
        The fit after the check and its metric value (minus MI, finest level); ``refits``: the
        reference's plane normal and value and every refit's, on the check's level, for
        :func:`_tilt_disagreement`.
    """
    def refit(start, n_finest=None, sampling=CHECK_SAMPLING):
        return _fit_plane(views, [slab], ct_voxel_um, histology_pixel_um, cfg, [], (start, axis), pair_id,
                          round_, n_finest=n_finest, sampling=sampling,
                          max_samples=CHECK_MAX_SAMPLES if sampling < 1 else None)

    spread = 0.0
    reference: tuple[np.ndarray, float] = (_normal_of(transform), float(value))
    refits: list[tuple[np.ndarray, float]] = []
    for round_index in range(cfg.tilt_refit_rounds):
        try:
            ref_transform, _, _, ref_value = refit(transform)
            reference = (_normal_of(ref_transform), float(ref_value))
        except RegistrationFailed:
            ref_transform, ref_value = transform, math.inf
        refits, candidates = [], []
        # The first round reaches over the whole cone (rings check_tilt_deg apart, 8 directions): a steep
        # plane that converged to an axial one is far from it; later rounds look round the new fit.
        rings = np.arange(cfg.check_tilt_deg, cfg.max_tilt_deg + 1e-9, cfg.check_tilt_deg) if round_index == 0 \
            else [cfg.check_tilt_deg]
        n_directions = 8 if round_index == 0 else 4
        # The nearest ring runs on the refinement levels only: where the MI is flat over the tilt, its refits stop
        # where the slope runs out, and show it (the open tilt); the farther rings, and starts turned in the plane
        # by half a grid step and a whole one either way, run down the whole pyramid, whose coarse levels reach a
        # better optimum 10 degrees off that the finest cannot (a steep plane converged to an axial one, or a fit
        # one coarse in-plane step off).
        starts = [(_tilted(transform, k * 2 * math.pi / n_directions, tilt),
                   None if tilt <= cfg.check_tilt_deg + 1e-9 else cfg.pyramid_levels)
                  for tilt in rings for k in range(n_directions)]
        turns = (0.5, 1.0) if round_index == 0 else (0.5,)
        starts += [(_turned(transform, sign * f * cfg.inplane_step_deg), cfg.pyramid_levels)
                   for f in turns for sign in (-1, 1)]
        for start, n_levels in starts:
            try:
                candidate, _, _, candidate_value = refit(start, n_finest=n_levels)
            except RegistrationFailed:  # a refit that leaves the volume says nothing about the fit
                continue
            refits.append((_normal_of(candidate), float(candidate_value)))
            candidates.append((float(candidate_value), candidate))
        # The best CHECK_CONFIRMATIONS distinct planes the refits reached (not the fit again) are refined with every
        # pixel on the finest level, whatever their sampled MI (the sampling and the levels may rank near-equal
        # planes differently); the best replaces the fit if it beats it there by tilt_refit_gain.
        # The reference is one of them: a fit the sampled metric moves off is not settled either.
        close: list[tuple[float, Any]] = []
        for candidate in sorted(candidates + [(float(ref_value), ref_transform)], key=lambda c: c[0]):
            poses = [transform] + [c[1] for c in close]
            if all(_rotation_between(candidate[1], pose) > 0.5 for pose in poses):
                close.append(candidate)
            if len(close) == CHECK_CONFIRMATIONS:
                break
        moved, best_value = None, value - cfg.tilt_refit_gain * abs(value)
        for _, candidate in close:
            try:
                finer, _, _, finer_value = refit(candidate, n_finest=1, sampling=1.0)
            except RegistrationFailed:
                continue
            if finer_value < best_value:  # minus MI: lower is better
                best_value, moved = finer_value, (finer, finer_value)
        if moved is None:
            return transform, value, 0.0, [reference] + refits
        spread = _angle_between_planes(_normal_of(transform), _normal_of(moved[0]))
        transform, value = moved
    return transform, value, spread, [reference] + refits


def _tilt_disagreement(fit_normal, refits, tolerance) -> float:
    """How far from the fit the planes reach that fit about as well: the tilt's indeterminacy, degrees.

    ``refits`` is :func:`_tilt_restarts`' list: first the fit refitted untilted on the check's
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
    return max(_angle_between_planes(fit_normal, other) for other in near)


def _half_section_tilt(views, slab, transform, axis, ct_voxel_um, histology_pixel_um, cfg, pair_id, round_) -> float:
    """How far (degrees) the plane of one half of the section turns from the fit's: the split-half check.

    The fit is refined (``refinement_levels``, every pixel) on each half of the section in turn, the
    halves split through the tissue's centre along rows and along columns. Where the whole
    section fixes the plane, so does each half, within a degree or so; where the MI peaks at a
    tilt that only part of the section supports (a partial field with little bone, a
    near-featureless implant), one half's plane turns degrees away. The largest turn of the four
    counts as open tilt (:func:`_tilt_disagreement`). 0 where no half could be refitted. The halves
    split through :func:`_tissue_centre`.
    """
    grey, fov = slab
    centre_y, centre_x = _tissue_centre(grey, fov)
    yy, xx = np.indices(grey.shape)
    turns = [0.0]
    for half in (yy < centre_y, yy >= centre_y, xx < centre_x, xx >= centre_x):
        try:
            fitted, _, _, _ = _fit_plane(views, [(grey, fov & half)], ct_voxel_um, histology_pixel_um, cfg, [],
                                         (transform, axis), pair_id, round_)
        except RegistrationFailed:  # a half that leaves the volume says nothing about the fit
            continue
        turns.append(_angle_between_planes(_normal_of(fitted), _normal_of(transform)))
    return max(turns)


def _checked_landmarks(landmarks, histology_shape, ct_shape, pair_id):
    """The landmark arrays, checked (:func:`vstain.manifest.check_landmarks`); errors name the pair and field."""
    try:
        return check_landmarks(landmarks, histology_shape, ct_shape,
                               where=f"pair {pair_id}: field 'initial_guess.landmarks'")
    except ValueError as err:
        raise RegistrationError(str(err)) from None


def _landmark_start(hist_yx, ct_zyx, ct_voxel_um, histology_pixel_um, grey_shape):
    """The plane start from landmark pairs: ``(axis, Euler3D transform in that axis's view)``.

    A least-squares map ``ct = o + y * u + x * v`` of the histology pixels onto the CT voxels gives
    the plane (normal ``u x v``, nearest volume axis ``axis``); its in-plane directions, made
    orthonormal (the nearest rotation), and ``o`` set the rigid slab transform. Scale, shear and a
    mirror are left to the 2D affine: the rotation ``[cols, rows, cols x rows]`` is proper either way.
    """
    design = np.column_stack([hist_yx, np.ones(len(hist_yx))])
    solution, *_ = np.linalg.lstsq(design, ct_zyx, rcond=None)
    u, v, o = solution
    axis = int(np.argmax(np.abs(np.cross(u, v))))
    u, v, o = (_to_view_frame(w, axis) for w in (u, v, o))
    directions = np.stack([v[::-1], u[::-1]], axis=1)  # slab x (columns), y (rows) in CT physical xyz
    left, _, right = np.linalg.svd(directions, full_matrices=False)
    columns = left @ right
    rotation = np.column_stack([columns[:, 0], columns[:, 1], np.cross(columns[:, 0], columns[:, 1])])
    centre = np.array([(grey_shape[1] - 1) / 2, (grey_shape[0] - 1) / 2, 0.0]) * histology_pixel_um
    transform = sitk.Euler3DTransform()
    transform.SetCenter(tuple(centre))
    transform.SetMatrix(tuple(rotation.ravel()))
    transform.SetTranslation(tuple(o[::-1] * ct_voxel_um + rotation @ centre - centre))
    return axis, transform


def _initial_mi(ct, grey, fov, factor, cfg) -> float:
    """MI before registration: the section centred on the middle axial slice, nominal scale."""
    ct_plane = ct[ct.shape[0] // 2].astype(np.float32)
    affine = np.diag([1.0 / factor, 1.0 / factor, 1.0])
    affine[:2, 2] = (np.asarray(ct.shape[1:], float) - 1) / 2 - (np.asarray(grey.shape, float) - 1) / 2 / factor
    return _affine_mi(ct_plane, np.ones(ct_plane.shape, bool), grey, fov, factor, affine, cfg)


def _rectify(grey, fov, affine, factor, origin, axes, histology_pixel_um, ct_voxel_um):
    """Undistort the section by the affine's linear part, for a rigid plane fit that now fits.

    Returns the rigid plane transform of the rectified section (where the affine puts it),
    ``pre`` (histology pixels -> rectified pixels) and the rectified grey image and mask.
    """
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


def _finish(ct, histology, fov, affine, origin, axes, ct_voxel_um, histology_pixel_um, final_mi, initial_mi,
            history, started, cfg, pair_id, search, axis=0, tilt_spread=math.nan,
            tilt_disagreement=math.nan) -> RegistrationResult:
    """Checks, crop to the common field of view, warp the RGB section, judge the fit (:func:`_judge`)."""
    normal = np.cross(axes[0], axes[1])
    normal /= np.linalg.norm(normal)
    tilt = math.degrees(math.acos(min(1.0, abs(float(normal[axis])))))
    if tilt > cfg.max_tilt_deg:
        raise RegistrationFailed(
            f"pair {pair_id}: the fitted plane tilts {tilt:.1f} deg from the {AXIS_NAMES[axis]} axis, beyond "
            "max_tilt_deg "
            f"{cfg.max_tilt_deg}; registration failed"
        )
    if not final_mi > initial_mi:
        raise RegistrationFailed(
            f"pair {pair_id}: mutual information did not improve ({initial_mi:.4f} -> {final_mi:.4f}); "
            "registration failed"
        )
    # Where does the section's field of view land on the plane, and is its tissue inside the volume?
    # (Glass around the section may lie beyond the CT's field of view; the tissue may not.)
    step = max(1, int(round(ct_voxel_um / histology_pixel_um)))
    ys, xs = np.nonzero(fov[::step, ::step])
    points = np.stack([ys * step, xs * step], axis=1).astype(float)
    voxels = _histology_to_volume(points, affine, origin, axes)
    inside = _inside_volume(voxels, ct.shape)
    tissue = _tissue_pixels(histology_grey(histology[::step, ::step])[ys, xs])
    inside_fraction = float(inside[tissue].mean()) if tissue.any() else float(inside.mean())
    # The error a tilt as undetermined as the refits show could make: the section's tissue turned about
    # its centre by that angle moves out of the plane by up to its radius times the sine.
    tissue_voxels = voxels[tissue] if tissue.any() else voxels
    radius = float(np.max(np.linalg.norm(tissue_voxels - tissue_voxels.mean(axis=0), axis=1)))
    tilt_error = radius * math.sin(math.radians(tilt_disagreement)) if math.isfinite(tilt_disagreement) else math.nan
    if inside_fraction < cfg.min_inside_fraction or not inside.any():
        raise RegistrationFailed(
            f"pair {pair_id}: the fitted plane leaves the volume ({100 * (1 - inside_fraction):.0f} % of the "
            "section's tissue maps outside the CT); registration failed"
        )
    ij = (affine[:2, :2] @ points[inside].T).T + affine[:2, 2]
    low = np.floor(ij.min(axis=0)).astype(int)
    high = np.ceil(ij.max(axis=0)).astype(int)
    shape = (int(high[0] - low[0]) + 1, int(high[1] - low[1]) + 1)
    origin = origin + low[0] * axes[0] + low[1] * axes[1]
    shift = np.eye(3)
    shift[:2, 2] = -low
    affine = shift @ affine
    ct_slice = oblique_slice(ct, origin, axes, shape)
    ct_valid = np.isfinite(ct_slice)
    ct_slice = np.where(ct_valid, ct_slice, np.percentile(ct_slice[ct_valid], 1)).astype(np.float32)
    # Warp the RGB section: anti-alias (it is finer than the CT), then sample at each plane pixel.
    ii, jj = np.mgrid[0 : shape[0], 0 : shape[1]].astype(float)
    src = np.linalg.inv(affine) @ np.stack([ii.ravel(), jj.ravel(), np.ones(ii.size)])
    sigma = max(0.0, (ct_voxel_um / histology_pixel_um - 1.0) / 2.0)
    warped = np.empty(shape + (3,), np.uint8)
    for channel in range(3):
        smooth = ndi.gaussian_filter(histology[..., channel].astype(np.float32), sigma)
        values = ndi.map_coordinates(smooth, src[:2], order=1, mode="constant", cval=255.0)
        warped[..., channel] = np.clip(np.rint(values), 0, 255).reshape(shape).astype(np.uint8)
    histology_valid = ndi.map_coordinates(fov.astype(np.float32), src[:2], order=0, mode="constant",
                                          cval=0.0).reshape(shape) > 0.5
    warped[~histology_valid] = 255
    iou = silhouette_iou(ct_slice, ct_valid, warped, histology_valid)
    margin = float(search.get("mi_margin", math.nan))
    return RegistrationResult(
        pair_id=pair_id, plane_point=origin, plane_axes=axes, plane_normal=normal, affine=affine,
        ct_slice=ct_slice, histology=warped, ct_valid=ct_valid, histology_valid=histology_valid,
        pixel_size_um=ct_voxel_um, mutual_information=float(final_mi),
        initial_mutual_information=float(initial_mi), mi_history=history,
        seconds=time.perf_counter() - started, mi_margin=margin, silhouette_iou=iou,
        tilt_spread_deg=float(tilt_spread), tilt_disagreement_deg=float(tilt_disagreement),
        tilt_error_px=float(tilt_error), normal_axis=AXIS_NAMES[axis],
        threads=int(sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()),
        status=_judge(margin, iou, cfg, tilt_spread, tilt_error, tilt_disagreement),
    )


def _tissue_pixels(grey: np.ndarray) -> np.ndarray:
    """Which optical densities are tissue rather than glass: above Otsu's split (clipped like the masks')."""
    values = np.minimum(np.asarray(grey, np.float32), 3.0)
    if values.size < 2 or float(values.max()) == float(values.min()):
        return np.ones(values.shape, bool)
    return values > threshold_otsu(values)


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


def _judge(mi_margin: float, iou: float, cfg, tilt_spread: float = math.nan, tilt_error: float = math.nan,
           tilt_disagreement: float = math.nan) -> str:
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


# --------------------------------------------------------------------------- accuracy


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
    angle = _angle_between_planes(true_normal, result.plane_normal)
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


# --------------------------------------------------------------------------- ground truth on the result's grid


def _result_grid_to_histology(result: RegistrationResult) -> np.ndarray:
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
    src = _result_grid_to_histology(result)
    return ndi.map_coordinates(np.asarray(image), src[:2], order=order, mode="constant", cval=cval).reshape(shape)


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
    yx = _result_grid_to_histology(result)[:2].T
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


# --------------------------------------------------------------------------- showing a registration


def display_range(image: np.ndarray, low: float = 1, high: float = 99) -> np.ndarray:
    """``image`` scaled so that its ``low`` and ``high`` percentiles map to 0 and 1, clipped to [0, 1].

    Examples
    --------
    >>> display_range(np.arange(101.0), 0, 100)[[0, 50, 100]].round(3).tolist()
    [0.0, 0.5, 1.0]
    """
    lo, hi = np.percentile(image, [low, high])
    return np.clip((image - lo) / (hi - lo + 1e-9), 0, 1)


def image_outline(shape: Sequence[int]) -> np.ndarray:
    """The corners ``(5, 2)`` (row, column) of an image of ``shape``, closed (the first repeated).

    Examples
    --------
    >>> image_outline((3, 4)).tolist()
    [[0, 0], [0, 3], [2, 3], [2, 0], [0, 0]]
    """
    return np.array([(0, 0), (0, shape[1] - 1), (shape[0] - 1, shape[1] - 1), (shape[0] - 1, 0), (0, 0)])


def plane_corners(point: Sequence[float], axes: Sequence[Sequence[float]], shape: Sequence[int]) -> np.ndarray:
    """Voxel coordinates ``(5, 3)`` (z, y, x) of the outline of a plane's ``shape`` pixels, closed.

    Parameters
    ----------
    point : (3,) array_like
        Voxel coordinates of plane pixel ``(0, 0)`` (``RegistrationResult.plane_point``).
    axes : (2, 3) array_like
        The in-plane axes (``RegistrationResult.plane_axes``).
    shape : (2,) sequence of int
        The plane image's shape.

    Examples
    --------
    >>> plane_corners([5, 0, 0], [[0, 1, 0], [0, 0, 1]], (3, 4))[2].tolist()
    [5.0, 2.0, 3.0]
    """
    point, axes = np.asarray(point, float), np.asarray(axes, float)
    return np.array([point + i * axes[0] + j * axes[1] for i, j in image_outline(shape)])


def before_after_checkerboards(ct_volume: np.ndarray, histology: np.ndarray, ct_voxel_um: float,
                               histology_pixel_um: float, registered_ct: np.ndarray,
                               registered_histology: np.ndarray, n_tiles: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Checkerboards of CT and section before and after registration.

    Before: the section at its nominal scale (every ``ct_voxel_um / histology_pixel_um``-th
    pixel) on the middle CT slice; after: the registered section on the CT of the fitted
    plane. Tiles alternate CT and the section's inverted grey optical density (bone bright
    in both), each scaled by :func:`display_range`.

    Returns
    -------
    (ndarray, ndarray)
        The two checkerboard images, values in [0, 1].
    """
    middle = ct_volume[ct_volume.shape[0] // 2]
    step = int(round(ct_voxel_um / histology_pixel_um))
    section = -histology_grey(histology[::step, ::step])
    height, width = min(middle.shape[0], section.shape[0]), min(middle.shape[1], section.shape[1])
    before = compare_images(display_range(middle[:height, :width]), display_range(section[:height, :width]),
                            method="checkerboard", n_tiles=(n_tiles, n_tiles))
    after = compare_images(display_range(registered_ct.astype(float)),
                           display_range(-histology_grey(registered_histology)),
                           method="checkerboard", n_tiles=(n_tiles, n_tiles))
    return before, after
