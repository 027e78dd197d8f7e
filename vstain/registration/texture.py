"""Orientation from texture: in-plane turn, face, depth and shift of a section proposed by its fine texture.

The coarsest level of the MI search sees the section's outline, not its texture: a round block of
porous bone with no screw looks alike at every turn there, and the grid's best orientations are a
matter of chance. The fine texture (trabeculae, pores) does tell the turn, at the CT's own pixel size.
Following the Fourier-Mellin idea (Reddy and Chatterji, IEEE TIP 1996), the magnitude of an image's
Fourier transform does not move when the image shifts and turns with it; sampled on polar coordinates
(:func:`polar_magnitude`, scikit-image's :func:`~skimage.transform.warp_polar`), a turn of the image is
a circular shift along the angle, found for all angles at once by a 1D circular cross-correlation
(:func:`rotation_scores`). The magnitude ignores the sign and scale of the grey values, so stain
density and CT attenuation compare even where one is the other's inverse. The magnitude of a real
image repeats every 180 degrees: both turns, and their shift, are then tried by a masked normalised
cross-correlation of the band-passed images (:func:`align_in_plane`), which also scores the pose.
:func:`texture_poses` runs this over the CT planes of each searched view (every ``texture_depth_step``
voxels) and each face, and keeps the best distinct poses: the plane fit refines them at its finest
levels (:func:`~vstain.registration.plane.fit_plane`), beside the grid's starts.

The proposals assume a section cut near a plane of the view (within the plane fit's capture range of
it); a strongly tilted section shares its texture with no single plane, and is left to the grid.

Examples
--------
>>> import numpy as np
>>> from scipy import ndimage as ndi
>>> rng = np.random.default_rng(0)
>>> texture = ndi.gaussian_filter(rng.standard_normal((96, 96)), 1.5)
>>> turned = ndi.rotate(texture, -30.0, reshape=False, order=1)   # 30 degrees from x towards y (rows)
>>> angle = estimate_rotation(texture, turned)[0]
>>> bool(abs(((angle - 30.0) + 90) % 180 - 90) < 3)
True
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import SimpleITK as sitk
from scipy import fft as sfft
from scipy import ndimage as ndi
from skimage.transform import warp_polar

from vstain.masks import convex_hull
from vstain.params import RegistrationParams
from vstain.registration.images import tissue_pixels
from vstain.registration.search import Start, allowed_pose
from vstain.registration.views import CTViews

#: Radii of the polar magnitude, as a fraction of the sampling frequency: wavelengths of about 2.2 to 14 pixels.
BAND = (0.07, 0.45)
#: Angles of the polar magnitude over 180 degrees (the magnitude of a real image repeats every 180).
N_ANGLES = 180


def _fft_size(shape) -> int:
    return int(sfft.next_fast_len(int(max(shape))))


def _windowed(image: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """The image less its mean inside ``mask``, zero outside it, tapered at the mask's edge."""
    image = np.asarray(image, np.float64)
    mask = np.isfinite(image) if mask is None else (np.asarray(mask, bool) & np.isfinite(image))
    if not mask.any():
        return np.zeros(image.shape)
    centred = np.where(mask, image - image[mask].mean(), 0.0)
    return centred * ndi.gaussian_filter(mask.astype(np.float64), 2.0)


def polar_magnitude(image: np.ndarray, mask: np.ndarray | None = None, *, size: int | None = None) -> np.ndarray:
    """The log Fourier magnitude of an image on polar coordinates, each radius whitened: ``(radii, angles)``.

    Parameters
    ----------
    image : ndarray, (H, W)
        Grey values of any scale or sign (NaN where there are none).
    mask : ndarray of bool, optional
        Where the image has data (default: its finite pixels).
    size : int, optional
        The square Fourier transform's side (default: the next fast length of the larger side): two
        images compare only at the same size (then a radius is the same frequency in both).

    Returns
    -------
    ndarray, (n_radii, N_ANGLES)
        Radii over :data:`BAND`, angles over 180 degrees one degree apart (angle ``a`` is the
        direction ``(cos a, sin a)`` in (x, y) = (column, row)); each radius has zero mean and
        unit spread over the angles (the isotropic part, the outline's rings among it, removed).
    """
    size = size or _fft_size(np.shape(image))
    padded = np.zeros((size, size))
    windowed = _windowed(image, mask)
    h, w = windowed.shape
    padded[(size - h) // 2:(size - h) // 2 + h, (size - w) // 2:(size - w) // 2 + w] = windowed
    magnitude = np.log1p(np.abs(sfft.fftshift(sfft.fft2(padded))))
    radius = size // 2
    polar = warp_polar(magnitude, center=(size // 2, size // 2), radius=radius,
                       output_shape=(2 * N_ANGLES, radius), order=1)  # rows: angle, 0-360 degrees
    low, high = int(BAND[0] * size), int(BAND[1] * size)
    rings = polar[:N_ANGLES, low:high].T + polar[N_ANGLES:, low:high].T  # the two halves are the same: average
    rings = rings - rings.mean(axis=1, keepdims=True)
    spread = rings.std(axis=1, keepdims=True)
    return np.where(spread > 0, rings / np.where(spread > 0, spread, 1.0), 0.0)


def rotation_scores(fixed_polar: np.ndarray, moving_polar: np.ndarray) -> np.ndarray:
    """Per turn of 0-179 degrees, the correlation of the moving image's polar magnitude with the fixed one turned.

    ``scores[k]`` compares ``moving_polar[:, a]`` with ``fixed_polar[:, a - k]`` over every angle
    ``a`` and radius: high where the moving image is the fixed one turned by ``k`` degrees (or
    ``k + 180``). Each radius is whitened (:func:`polar_magnitude`): the scores are correlation
    coefficients, 1 for a perfect match.
    """
    spectrum = sfft.rfft(moving_polar, axis=1) * np.conj(sfft.rfft(fixed_polar, axis=1))
    return sfft.irfft(spectrum, n=fixed_polar.shape[1], axis=1).mean(axis=0) / fixed_polar.shape[1]


def estimate_rotation(fixed: np.ndarray, moving: np.ndarray, fixed_mask: np.ndarray | None = None,
                      moving_mask: np.ndarray | None = None) -> tuple[float, float]:
    """The turn (degrees, modulo 180) that takes ``fixed`` to ``moving`` by their texture, and its score.

    The turn ``a`` is the one of the plane fit's poses: ``moving(R p) = fixed(p)`` about the centre, for
    ``R = [[cos a, -sin a], [sin a, cos a]]`` acting on ``p = (x, y) = (column, row)`` (so
    :func:`scipy.ndimage.rotate` by ``-a`` turns an array by ``a``); both images at the same pixel size.
    See :func:`polar_magnitude` and :func:`rotation_scores`.

    Returns
    -------
    angle_deg : float
        In [0, 180): the turn is ``angle_deg`` or ``angle_deg + 180`` (:func:`align_in_plane` tells).
    score : float
        The correlation of the polar magnitudes at that turn (about 0 for unrelated textures).
    """
    size = _fft_size(np.maximum(np.shape(fixed), np.shape(moving)))
    scores = rotation_scores(polar_magnitude(fixed, fixed_mask, size=size),
                             polar_magnitude(moving, moving_mask, size=size))
    best = int(np.argmax(scores))
    left, right = scores[best - 1], scores[(best + 1) % N_ANGLES]
    curvature = left - 2 * scores[best] + right
    offset = 0.5 * (left - right) / curvature if curvature < 0 else 0.0  # parabolic peak
    return float((best + offset) % N_ANGLES), float(scores[best])


def _turn_rc(angle_rad: float) -> np.ndarray:
    """The turn ``R`` of (x, y) = (column, row) as a matrix on (row, column)."""
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    return np.array([[c, s], [-s, c]])  # P R P, P the exchange of (x, y) and (row, column)


def band_passed(image: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """The texture band of an image (a difference of Gaussians, 0.7 and 4 px), zero outside ``mask``."""
    windowed = _windowed(image, mask)
    return ndi.gaussian_filter(windowed, 0.7) - ndi.gaussian_filter(windowed, 4.0)


def masked_ncc(fixed: np.ndarray, fixed_mask: np.ndarray, moving: np.ndarray, moving_mask: np.ndarray,
               min_overlap: float) -> tuple[float, np.ndarray]:
    """The largest absolute normalised cross-correlation over shifts, and its shift ``d`` (row, column).

    ``moving[p + d]`` is compared with ``fixed[p]`` over the pixels where both masks hold; shifts
    whose overlap has fewer than ``min_overlap`` pixels are left out (a high score on a sliver means
    little). Zero-mean images (:func:`band_passed`) are assumed. The sign is ignored: contrast may be
    inverted between the modalities.
    """
    from scipy.signal import fftconvolve

    f, m = np.where(fixed_mask, fixed, 0.0), np.where(moving_mask, moving, 0.0)
    fm, mm = np.asarray(fixed_mask, float), np.asarray(moving_mask, float)

    def corr(moving_part, fixed_part):
        return fftconvolve(moving_part, fixed_part[::-1, ::-1], mode="full")

    overlap = corr(mm, fm)
    energy = np.clip(corr(mm, f * f), 0, None) * np.clip(corr(m * m, fm), 0, None)
    valid = (overlap >= min_overlap) & (energy > 0)
    if not valid.any():
        return 0.0, np.zeros(2)
    ncc = np.where(valid, np.abs(corr(m, f)) / np.sqrt(np.where(valid, energy, 1.0)), 0.0)
    best = np.unravel_index(int(np.argmax(ncc)), ncc.shape)
    return float(ncc[best]), np.asarray(best, float) - (np.asarray(fixed.shape) - 1)


@dataclasses.dataclass(frozen=True)
class InPlanePose:
    """A section turned by ``angle_rad`` about ``centre`` and shifted: ``plane = R (p - centre) + centre + shift``.

    Points ``p`` are (x, y) = (column, row) pixels of the section, the plane's too; ``score`` is the
    masked normalised cross-correlation of the texture at that pose (:func:`masked_ncc`).
    """

    score: float
    angle_rad: float
    centre: np.ndarray
    shift: np.ndarray


def align_in_plane(section: np.ndarray, section_mask: np.ndarray, plane: np.ndarray, plane_mask: np.ndarray,
                   angle_deg: float, min_overlap: float) -> InPlanePose:
    """The better of the turns ``angle_deg`` and ``angle_deg + 180`` and its shift, by texture cross-correlation.

    Both images at the same pixel size, band-passed here (:func:`band_passed`); the section turns
    about its mask's centroid (:func:`estimate_rotation`'s convention).
    """
    rows, cols = np.nonzero(section_mask)
    centre_rc = np.array([rows.mean(), cols.mean()])
    textured = band_passed(section, section_mask)
    side = int(math.ceil(math.hypot(*section.shape))) + 2
    canvas_centre = np.full(2, (side - 1) / 2)
    plane_texture = band_passed(plane, plane_mask)
    best = None
    for angle in (math.radians(angle_deg), math.radians(angle_deg) + math.pi):
        back = _turn_rc(angle).T  # canvas (row, column) -> section (row, column), about the two centres
        offset = centre_rc - back @ canvas_centre
        turned = ndi.affine_transform(textured, back, offset, output_shape=(side, side), order=1)
        turned_mask = ndi.affine_transform(section_mask.astype(float), back, offset, output_shape=(side, side),
                                           order=0) > 0.5
        score, shift_rc = masked_ncc(turned, turned_mask, plane_texture, plane_mask, min_overlap)
        if best is None or score > best.score:
            shift = (canvas_centre + shift_rc - centre_rc)[::-1]  # section centre -> plane, (x, y)
            best = InPlanePose(score, angle, centre_rc[::-1].copy(), shift)
    return best


#: Below this cross-correlation the untilted planes matched weakly (right: about 0.85 untilted, 0.37 at 8 degrees
#: of tilt; wrong poses about 0.2 on the hand-built porous block): the planes of a cone of tilts are tried too.
TILT_TRIGGER_SCORE = 0.5
#: The cone's rings, this far apart (degrees, up to the profile's ``max_tilt_deg``), eight directions each: a cut
#: within about 4 degrees of a tried plane still matches its texture (rings 6 and 12 only: a 12 um-pore block cut
#: 18 degrees off registered 2 of 8 times; with the 18-degree ring, 8 of 8).
TEXTURE_TILT_STEP_DEG = 6.0


def texture_tilts(max_tilt_deg: float) -> list[float]:
    """The tilts (degrees) of the cone's rings whose planes the texture tries, up to ``max_tilt_deg``.

    Examples
    --------
    >>> texture_tilts(20.0), texture_tilts(5.0)
    ([6.0, 12.0, 18.0], [])
    """
    count = int(math.floor(float(max_tilt_deg) / TEXTURE_TILT_STEP_DEG + 1e-9))
    return [TEXTURE_TILT_STEP_DEG * k for k in range(1, count + 1)]


@dataclasses.dataclass(frozen=True)
class _Peak:
    """A turn of one face against one CT plane that the polar magnitudes rank high."""

    score: float
    key: tuple[int, int]
    depth: int
    angle_deg: float
    family: int  # the plane family (:func:`_families`): 0 untilted


def _families(tilts_deg) -> list[np.ndarray]:
    """Plane families as bases: columns the plane's x (columns), y (rows) and normal in a view's voxel (x, y, z)."""
    from vstain.registration.poses import axis_rotation

    out = [np.eye(3)]
    for tilt in tilts_deg:
        for direction in np.arange(8) * math.pi / 4:
            out.append(axis_rotation(np.array([math.cos(direction), math.sin(direction), 0.0]), math.radians(tilt)))
    return out


def _plane(view: np.ndarray, basis: np.ndarray, depth: int) -> np.ndarray:
    """The view on a plane of ``basis`` through its centre column at ``depth``: the view's (Y, X), NaN outside."""
    if np.allclose(basis, np.eye(3)):
        return np.asarray(view[depth], np.float32)
    y_n, x_n = view.shape[1:]
    centre = np.array([(x_n - 1) / 2, (y_n - 1) / 2, float(depth)])
    yy, xx = np.mgrid[0:y_n, 0:x_n].astype(float)
    offsets = np.stack([xx - centre[0], yy - centre[1], np.zeros_like(xx)])
    xyz = centre[:, None, None] + np.tensordot(basis, offsets, axes=1)
    return ndi.map_coordinates(view, xyz[::-1], order=1, mode="constant", cval=np.nan).astype(np.float32)


def _section_faces(views: CTViews, faces, factor: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each face of the section at the CT's pixel size with its mask: the convex hull of its tissue."""
    out = []
    for grey, fov in faces:
        small, fov_small = views.section_level(grey, fov, factor)
        tissue = tissue_pixels(np.where(fov_small, small, 0.0)) & fov_small
        out.append((small, (convex_hull(tissue) & fov_small) if tissue.any() else fov_small))
    return out


def _polar_peaks(arrays: dict, sections, families: dict[int, np.ndarray], depth_step: float,
                 margin: float) -> list[_Peak]:
    """For every view, plane family, CT plane (``depth_step`` voxels apart) and face: the best turn and its score."""
    peaks = []
    for axis, view in arrays.items():
        size = _fft_size(np.maximum(view.shape[1:], np.max([s[0].shape for s in sections], axis=0)))
        polars = [polar_magnitude(grey, mask, size=size) for grey, mask in sections]
        low, high = int(math.ceil(margin)), view.shape[0] - 1 - int(math.ceil(margin))
        for depth in np.unique(np.round(np.arange(low, high + 1e-9, max(depth_step, 1.0))).astype(int)):
            for family, basis in families.items():
                plane = polar_magnitude(_plane(view, basis, int(depth)), None, size=size)
                for face, polar in enumerate(polars):
                    scores = rotation_scores(polar, plane)
                    best = int(np.argmax(scores))
                    peaks.append(_Peak(float(scores[best]), (axis, face), int(depth), float(best), family))
    return sorted(peaks, key=lambda peak: -peak.score)


def _distinct(peaks: list[_Peak], n: int, depth_apart: float) -> list[_Peak]:
    """The ``n`` best peaks of each key, none within ``depth_apart`` voxels and 10 degrees of a better one.

    Per key (view and face), not overall: a tilted section matches no plane well, and its right view's
    peaks may rank below a thin view's chance ones (which the cross-correlation then rejects).
    """
    kept: list[_Peak] = []
    for peak in peaks:
        if sum(k.key == peak.key for k in kept) >= n:
            continue
        if all(k.key != peak.key or abs(k.depth - peak.depth) > depth_apart
               or abs((k.angle_deg - peak.angle_deg + 90) % 180 - 90) > 10 for k in kept):
            kept.append(peak)
    return kept


def _aligned(arrays: dict, sections, families, peaks: list[_Peak], min_inside_fraction: float) -> list[tuple]:
    """Each peak's pose by :func:`align_in_plane`: ``(InPlanePose, peak)``, best first."""
    poses = []
    for peak in peaks:
        grey, mask = sections[peak.key[1]]
        plane = _plane(arrays[peak.key[0]], families[peak.family], peak.depth)
        valid = np.isfinite(plane)
        pose = align_in_plane(grey, mask, np.where(valid, plane, 0.0), valid, peak.angle_deg,
                              min_inside_fraction * mask.sum())
        poses.append((pose, peak))
    return sorted(poses, key=lambda item: -item[0].score)


def _start(pose: InPlanePose, peak: _Peak, basis: np.ndarray, view_shape, ct_voxel_um: float) -> sitk.Euler3DTransform:
    """The slab -> view transform (um) of an in-plane pose on a plane of ``basis`` at ``peak.depth``."""
    s = ct_voxel_um
    y_n, x_n = view_shape[1:]
    plane_centre = np.array([(x_n - 1) / 2, (y_n - 1) / 2])
    c, sn = math.cos(pose.angle_rad), math.sin(pose.angle_rad)
    matrix = basis @ np.array([[c, -sn, 0.0], [sn, c, 0.0], [0.0, 0.0, 1.0]])
    centre = np.array([pose.centre[0], pose.centre[1], 0.0]) * s
    landed = np.array([*plane_centre, float(peak.depth)]) + basis @ np.array([*(pose.centre + pose.shift
                                                                                - plane_centre), 0.0])
    transform = sitk.Euler3DTransform()
    transform.SetCenter(tuple(centre))
    transform.SetMatrix(tuple(matrix.ravel()))
    transform.SetTranslation(tuple(landed * s - centre))
    return transform


def _can_hold(plane_shape, mask: np.ndarray, fraction: float) -> bool:
    """Whether a plane of ``plane_shape`` can hold ``fraction`` of the section's ``mask`` (bounding boxes, either way)."""
    rows, cols = np.nonzero(mask)
    if not len(rows):
        return True
    h, w = np.ptp(rows) + 1, np.ptp(cols) + 1
    y_n, x_n = plane_shape
    return max(min(1, y_n / h) * min(1, x_n / w), min(1, y_n / w) * min(1, x_n / h)) >= fraction


def texture_poses(views: CTViews, faces, ct_voxel_um: float, histology_pixel_um: float, cfg: RegistrationParams,
                  hint: dict | None = None) -> list[Start]:
    """The ``cfg.texture_starts`` poses the section's texture proposes, best first, as plane-fit starts.

    Each face of the section (``faces``: ``(grey, fov)``, the second mirrored) is brought to the CT's
    pixel size and compared with every plane of every view of ``views`` ``texture_depth_step_voxels``
    apart (``depth_margin_voxels`` from the ends) by :func:`rotation_scores`; the best distinct
    (view, face, plane, turn) of those go on to :func:`align_in_plane`, which picks the turn of the
    two and the shift and scores the pose. Where the best score stays below
    :data:`TILT_TRIGGER_SCORE`, the planes tilted by :func:`texture_tilts` (rings
    :data:`TEXTURE_TILT_STEP_DEG` apart up to ``max_tilt_deg``, eight directions) through the same depths
    are tried as well (views
    whose planes cannot hold ``min_inside_fraction`` of the section's extent are not searched). The best scores
    become starts (in the view's frame; the slab's pixel ``(x, y)`` at ``(x, y) * ct_voxel_um``),
    allowed as the grid's poses are (:func:`~vstain.registration.search.allowed_pose`). A pose whose
    overlap with the CT plane holds less than ``min_inside_fraction`` of the section is not proposed,
    nor one that scores less than half the best (its texture does not match: a right pose scores
    about 0.85 on the hand-built porous block, the others 0.2 and below).
    """
    if cfg.texture_starts <= 0:
        return []
    sections = _section_faces(views, faces, ct_voxel_um / histology_pixel_um)
    step, n_peaks = cfg.texture_depth_step_voxels, cfg.texture_starts + 2
    # a view whose planes cannot hold enough of the section proposes nothing (the grid skips it too)
    arrays = {axis: views[axis] for axis in views
              if _can_hold(views[axis].shape[1:], sections[0][1], cfg.min_inside_fraction)}
    families = dict(enumerate(_families(texture_tilts(cfg.max_tilt_deg))))
    untilted = {0: families[0]}
    peaks = _distinct(_polar_peaks(arrays, sections, untilted, step, cfg.depth_margin_voxels), n_peaks, 2 * step)
    poses = _aligned(arrays, sections, families, peaks, cfg.min_inside_fraction)
    if len(families) > 1 and (not poses or poses[0][0].score < TILT_TRIGGER_SCORE):
        # a contiguous copy once: sampling oblique planes of a transposed view would copy it every time
        arrays = {axis: np.ascontiguousarray(view, np.float32) for axis, view in arrays.items()}
        tilted = {k: v for k, v in families.items() if k > 0}
        peaks = _distinct(_polar_peaks(arrays, sections, tilted, step, cfg.depth_margin_voxels), n_peaks, 2 * step)
        poses = sorted(poses + _aligned(arrays, sections, families, peaks, cfg.min_inside_fraction),
                       key=lambda item: -item[0].score)
    # a pose far below the best is a plane the texture does not match (often a sliver of a thin view)
    best = poses[0][0].score if poses else 0.0
    poses = [(pose, peak) for pose, peak in poses if pose.score > 0 and pose.score >= 0.5 * best]
    return [Start(_start(pose, peak, families[peak.family], arrays[peak.key[0]].shape, ct_voxel_um), peak.key,
                  allowed_pose(cfg, peak.key, math.remainder(pose.angle_rad, 2 * math.pi), hint))
            for pose, peak in poses[:cfg.texture_starts]]
