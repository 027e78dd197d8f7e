"""Normalising whole CT volumes (``vstain stain``): intensity statistics and their comparison with a checkpoint's
training CT, bone bright or dark (:func:`looks_inverted`), the reconstruction's field of view and its fill value
(:class:`FieldOfViewVolume`), and the linear map that puts bone at 30000 and background at 10000 from a sample of
slices (:func:`volume_scale_from_slices`, :func:`linear_ct_map`).

Part of :mod:`vstain.normalise`, which re-exports every name here.

Examples
--------
>>> CT_QUANTILES[0], CT_QUANTILES[-1]
(0.01, 0.99)
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from scipy import ndimage as ndi

from vstain.masks import segment_ct

#: Fewest pixels of an automatic bone ROI before its erosion is relaxed (and of a slice's valid area).
MIN_ROI_PIXELS = 20


# --------------------------------------------------------------------------- whole volumes (vstain stain)

#: Quantile levels of the CT intensity statistics a checkpoint records and a stained volume is compared with.
CT_QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)

#: Largest quantile shift, as a fraction of the bone-background contrast, still called "like the training CT".
DISTRIBUTION_TOLERANCE = 0.25


def ct_statistics(images: Sequence[np.ndarray], masks: Sequence[np.ndarray] | None = None, *,
                  max_samples: int = 200_000, seed: int = 0) -> dict[str, Any]:
    """Quantiles of CT values inside the sample: what a model was trained on, or what it is given.

    Parameters
    ----------
    images : sequence of ndarray
        Normalised CT slices (the 30000 / 10000 scale).
    masks : sequence of bool ndarray, optional
        The sample region of each image (a pair's correspondence mask); default: all pixels.
    max_samples : int
        At most this many values in all (drawn evenly at random), so the cost is bounded.
    seed : int

    Returns
    -------
    dict
        ``levels`` (:data:`CT_QUANTILES`), ``quantiles`` (one value per level), ``n_values``.

    Examples
    --------
    >>> stats = ct_statistics([np.arange(101, dtype=float)])
    >>> stats["quantiles"][3], stats["n_values"]
    (50.0, 101)
    """
    values = []
    masks = [None] * len(images) if masks is None else masks
    for image, mask in zip(images, masks):
        image = np.asarray(image, np.float64)
        values.append(image[np.asarray(mask, bool)] if mask is not None else image.ravel())
    pooled = np.concatenate(values) if values else np.zeros(0)
    pooled = pooled[np.isfinite(pooled)]
    if pooled.size == 0:
        raise ValueError("no CT values to describe (empty images or masks)")
    if pooled.size > max_samples:
        pooled = np.random.default_rng(seed).choice(pooled, max_samples, replace=False)
    return {"levels": list(CT_QUANTILES), "quantiles": [float(q) for q in np.quantile(pooled, CT_QUANTILES)],
            "n_values": int(pooled.size)}


def compare_ct_statistics(found: dict[str, Any], expected: dict[str, Any], *, contrast: float,
                          tolerance: float = DISTRIBUTION_TOLERANCE) -> str | None:
    """A sentence saying how ``found`` differs from ``expected``, or None when they are alike.

    Alike means every quantile within ``tolerance * contrast`` of the other (``contrast``: the
    bone-background difference of the normalised scale, 20000 for the paper's 30000 / 10000).

    Examples
    --------
    >>> train = {"levels": [0.5], "quantiles": [20000.0]}
    >>> compare_ct_statistics({"levels": [0.5], "quantiles": [21000.0]}, train, contrast=20000) is None
    True
    >>> compare_ct_statistics({"levels": [0.5], "quantiles": [40000.0]}, train, contrast=20000)
    'the 50 % quantile is 40000 here but 20000 in the training CT (a shift of 1 bone-background contrasts)'
    """
    if list(found["levels"]) != list(expected["levels"]):
        raise ValueError(f"quantile levels differ: {found['levels']} and {expected['levels']}")
    shifts = [abs(a - b) / contrast for a, b in zip(found["quantiles"], expected["quantiles"])]
    worst = int(np.argmax(shifts))
    if shifts[worst] <= tolerance:
        return None
    return (f"the {100 * found['levels'][worst]:g} % quantile is {found['quantiles'][worst]:.0f} here but "
            f"{expected['quantiles'][worst]:.0f} in the training CT (a shift of {shifts[worst]:.2g} "
            "bone-background contrasts)")


def segment_ct_slices(slices: Sequence[np.ndarray],
                      valid: Sequence[np.ndarray | None] | None = None) -> list[dict[str, np.ndarray] | None]:
    """:func:`vstain.masks.segment_ct` of each slice; None for a slice it cannot split (too few distinct values).

    ``valid`` (one bool mask or None per slice, e.g. the inverse of :func:`ct_outside_field_of_view`)
    keeps the pixels outside a reconstruction's field of view out of the thresholds and the ROIs
    (their class is -1); a slice with fewer than :data:`MIN_ROI_PIXELS` valid pixels gives None.

    Examples
    --------
    >>> ct = np.zeros((20, 20)); ct[5:15, 5:15] = 1.0; ct[8:12, 8:12] = 2.0; ct[9:11, 9:11] = 3.0
    >>> [seg is None for seg in segment_ct_slices([ct, np.zeros((20, 20))])]
    [False, True]
    """
    valid = [None] * len(slices) if valid is None else list(valid)
    if len(valid) != len(slices):
        raise ValueError(f"{len(valid)} field-of-view masks for {len(slices)} slices")
    segmentations = []
    for image, inside in zip(slices, valid):
        if inside is not None and int(np.count_nonzero(inside)) < MIN_ROI_PIXELS:
            segmentations.append(None)  # (almost) nothing but fill: no classes to find
            continue
        try:
            segmentations.append(segment_ct(np.asarray(image, np.float32), inside))
        except ValueError:  # a blank slice: no classes to find
            segmentations.append(None)
    return segmentations


# --------------------------------------------------------------------------- contrast: bone bright or dark

#: Width of the ring along the edge of the field of view read by :func:`edge_class_shares`, as a fraction of
#: the slice's shorter side (at least 2 px).
EDGE_RING_FRACTION = 0.03


def edge_class_shares(segmentations: Sequence[dict[str, np.ndarray] | None]) -> np.ndarray | None:
    """Share of each intensity class (0 darkest to 3 brightest, :func:`vstain.masks.segment_ct`) along the edge.

    The edge is a ring :data:`EDGE_RING_FRACTION` wide just inside the field of view (the slice
    border, or the rim of the reconstruction circle: pixels of class -1 are outside), pooled over
    the slices. Around a sample lies air or medium, the darkest class; where the brightest class
    lines the edge instead, the CT is most likely inverted (bone dark).

    Returns
    -------
    ndarray of 4 floats, or None when no slice was segmented.

    Examples
    --------
    >>> classes = np.zeros((40, 40), np.int8); classes[10:30, 10:30] = 3
    >>> edge_class_shares([{"classes": classes}]).tolist(), edge_class_shares([{"classes": 3 - classes}]).tolist()
    ([1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0])
    """
    counts = np.zeros(4)
    for seg in segmentations:
        if seg is None:
            continue
        classes = np.asarray(seg["classes"])
        valid = classes >= 0
        width = max(2, int(round(EDGE_RING_FRACTION * min(classes.shape))))
        ring = valid & ~ndi.binary_erosion(valid, iterations=width, border_value=0)
        counts += np.bincount(classes[ring].astype(np.int64), minlength=4)[:4]
    return counts / counts.sum() if counts.sum() else None


def looks_inverted(shares: np.ndarray | None) -> bool:
    """True when the brightest class lines most of the edge and the darkest almost none (:func:`edge_class_shares`).

    Examples
    --------
    >>> looks_inverted(np.array([0.02, 0.1, 0.18, 0.7])), looks_inverted(np.array([0.8, 0.2, 0.0, 0.0]))
    (True, False)
    """
    return shares is not None and bool(shares[3] > 0.5 and shares[0] < 0.1)


# --------------------------------------------------------------------------- the reconstruction's field of view

#: Smallest share of a slice's border that must hold the fill value for it to be taken as a reconstruction's fill.
FILL_BORDER_FRACTION = 0.25

#: Smallest share of a slice the fill must cover (less is left in: it cannot move the normalisation much).
FILL_AREA_FRACTION = 0.01

#: Largest share of the pixels inside the field of view allowed within :data:`FILL_GAP` of the fill value:
#: more, and the "fill" is the clipped end of the sample's own values (air clipped at 0), not padding.
FILL_NEAR_FRACTION = 0.005

#: The gap between the fill value and the data, as a fraction of the data's 1-99 % range.
FILL_GAP = 0.02


def ct_outside_field_of_view(image: np.ndarray, fill_value: float) -> np.ndarray:
    """Pixels of a CT slice outside the reconstruction's field of view: the fill value, connected to the border.

    Reconstructions write a constant (mostly 0, some NaN) outside the circle the projections cover.
    Those pixels hold no data: taken as background they move the normalisation (paper 2.5), and the
    stain there means nothing. A pixel of the fill value inside the field of view (not connected
    to the border through fill) is kept.

    Parameters
    ----------
    image : ndarray, (H, W)
    fill_value : float
        The constant the reconstruction writes (see :func:`find_ct_fill_value`); NaN: every NaN pixel
        is fill (NaN equals nothing, not even itself).

    Returns
    -------
    ndarray of bool, (H, W)
        True outside the field of view.

    Examples
    --------
    >>> image = np.full((5, 5), 7.0); image[0] = 0; image[2, 2] = 0
    >>> ct_outside_field_of_view(image, 0).sum(axis=1).tolist()
    [5, 0, 0, 0, 0]
    >>> image[0] = np.nan; ct_outside_field_of_view(image, np.nan).sum(axis=1).tolist()
    [5, 0, 0, 0, 0]
    """
    image = np.asarray(image)
    fill = np.isnan(image) if np.isnan(fill_value) else image == fill_value
    if not fill.any():
        return fill
    labelled, _ = ndi.label(fill)
    border = np.unique(np.concatenate([labelled[0], labelled[-1], labelled[:, 0], labelled[:, -1]]))
    border = border[border > 0]
    return np.isin(labelled, border) if border.size else np.zeros_like(fill)


def _slice_fill_value(image: np.ndarray) -> float | None:
    """The fill value of one slice, or None (see :func:`find_ct_fill_value`)."""
    image = np.asarray(image)
    if image.ndim != 2 or min(image.shape) < 3:
        return None
    frame = np.concatenate([image[0], image[-1], image[1:-1, 0], image[1:-1, -1]])
    if np.count_nonzero(np.isnan(frame)) >= FILL_BORDER_FRACTION * frame.size:
        # NaN outside the circle: no value of the data comes near it, so only its extent is tested
        outside = ct_outside_field_of_view(image, np.nan)
        if int(outside.sum()) >= max(MIN_ROI_PIXELS, FILL_AREA_FRACTION * image.size):
            return float("nan")
    frame = frame[np.isfinite(frame)]
    if frame.size == 0:
        return None
    values, counts = np.unique(frame, return_counts=True)
    candidate = values[np.argmax(counts)]
    if counts.max() < FILL_BORDER_FRACTION * frame.size:
        return None
    outside = ct_outside_field_of_view(image, candidate)
    n_outside = int(outside.sum())
    if n_outside < max(MIN_ROI_PIXELS, FILL_AREA_FRACTION * image.size):
        return None
    inside = image[~outside]
    inside = inside[np.isfinite(inside)]
    if inside.size < MIN_ROI_PIXELS:
        return float(candidate)  # a slice of fill only (the blank end of a scan)
    low, high = np.percentile(inside, [1, 99])
    gap = FILL_GAP * max(float(high - low), 0.0)
    near = np.count_nonzero(np.abs(inside.astype(np.float64) - float(candidate)) <= gap)
    return float(candidate) if near <= FILL_NEAR_FRACTION * inside.size else None


def find_ct_fill_value(slices: Sequence[np.ndarray]) -> float | None:
    """The constant a reconstruction wrote outside its field of view, found on a few slices; None if there is none.

    On each slice a NaN that holds at least :data:`FILL_BORDER_FRACTION` of the one-pixel frame, and
    whose region connected to the border covers at least :data:`FILL_AREA_FRACTION` of the slice, is
    the fill (NaN is never data). Otherwise the candidate is the most common value of the frame; it is the fill
    when it holds at least :data:`FILL_BORDER_FRACTION` of the frame, its region connected to the
    border (:func:`ct_outside_field_of_view`) covers at least :data:`FILL_AREA_FRACTION` of the
    slice, and it is set apart from the data: at most :data:`FILL_NEAR_FRACTION` of the pixels
    inside lie within :data:`FILL_GAP` of the data's 1-99 % range of it. Air clipped at 0 fails
    the last test (its noise reaches up from 0 continuously), so it stays background. The value
    found on most slices wins. A fill the test cannot tell from clipped air is given by the user.

    Parameters
    ----------
    slices : sequence of ndarray, (H, W)
        A few slices of the volume, raw.

    Returns
    -------
    float or None
        The fill value (NaN for a NaN fill), or None.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> y, x = np.mgrid[:40, :40]
    >>> r = np.hypot(y - 19.5, x - 19.5)
    >>> ct = np.where(r < 8, 5000.0, 1500.0) + rng.normal(0, 50, (40, 40))
    >>> ct[r > 19.5] = 0                                      # zeros outside the reconstruction circle
    >>> air_clipped = np.clip(np.where(r < 8, 3500.0, 0.0) + rng.normal(0, 50, (40, 40)), 0, None)
    >>> find_ct_fill_value([ct]), find_ct_fill_value([air_clipped])
    (0.0, None)
    >>> ct[r > 19.5] = np.nan                                 # NaN outside the circle
    >>> find_ct_fill_value([ct])
    nan
    """
    found = [value for value in (_slice_fill_value(image) for image in slices) if value is not None]
    if not found:
        return None
    n_nan = sum(1 for value in found if np.isnan(value))
    finite = [value for value in found if not np.isnan(value)]
    if not finite:
        return float("nan")
    values, counts = np.unique(finite, return_counts=True)
    return float(values[np.argmax(counts)]) if counts.max() > n_nan else float("nan")


class FieldOfViewVolume:
    """A CT source whose voxels outside the reconstruction's field of view read as ``replacement``.

    The generator then sees plain background up to the edge of the field of view instead of an
    edge to the fill value (a number, or NaN: then no NaN of the fill reaches the stain);
    :meth:`outside` says which voxels of slice ``z`` were replaced, so a writer can paint them as
    "no data". The last masks are kept (``cache`` slices), so a slice
    read for the stain and asked for its mask at writing is read once.

    Parameters
    ----------
    source
        Anything with ``name``, ``shape``, ``voxel_size_um``, ``read_slice(z)`` and ``close()``.
    fill_value : float
        The reconstruction's fill (:func:`find_ct_fill_value`).
    replacement : float
        What those voxels read as: the input's background value.
    cache : int

    Examples
    --------
    >>> from vstain.volume_io import ArrayVolume
    >>> vol = np.full((1, 4, 4), 9.0, np.float32); vol[0, 0] = 0
    >>> fov = FieldOfViewVolume(ArrayVolume(vol, (1, 1, 1)), 0.0, 2.0)
    >>> fov.read_slice(0)[0].tolist(), int(fov.outside(0).sum())
    ([2.0, 2.0, 2.0, 2.0], 4)
    """

    def __init__(self, source: Any, fill_value: float, replacement: float, *, cache: int = 64) -> None:
        self.source, self.fill_value, self.replacement = source, float(fill_value), float(replacement)
        self.name, self.shape, self.voxel_size_um = source.name, source.shape, source.voxel_size_um
        self._masks: dict[int, np.ndarray] = {}
        self._cache = max(1, int(cache))

    def _remember(self, z: int, outside: np.ndarray) -> None:
        self._masks.pop(z, None)
        self._masks[z] = outside
        while len(self._masks) > self._cache:
            del self._masks[next(iter(self._masks))]

    def read_slice(self, z: int) -> np.ndarray:
        """Slice ``z`` of the source with the voxels outside the field of view set to ``replacement``."""
        image = np.array(self.source.read_slice(z), dtype=np.float32)
        outside = ct_outside_field_of_view(image, self.fill_value)
        self._remember(z, outside)
        image[outside] = self.replacement
        return image

    def outside(self, z: int) -> np.ndarray:
        """The voxels of slice ``z`` outside the field of view (bool ``(Y, X)``)."""
        if z not in self._masks:
            self._remember(z, ct_outside_field_of_view(self.source.read_slice(z), self.fill_value))
        return self._masks[z]

    def close(self) -> None:
        """Close the source."""
        self.source.close()


def volume_scale_from_slices(slices: Sequence[np.ndarray], *, bone_mean: float = 30000.0,
                             background_mean: float = 10000.0,
                             segmentations: Sequence[dict[str, np.ndarray] | None] | None = None) -> dict[str, Any]:
    """The linear CT map of a whole volume from automatic bone and background ROIs on a few slices.

    Each slice is segmented (:func:`vstain.masks.segment_ct`, as the registration stage does for
    a pair's CT); the pooled bone and background ROI means give ``scale`` and ``offset`` with
    ``scale * value + offset`` putting bone at ``bone_mean`` and background at ``background_mean``
    (paper 2.5). One map for the volume: a per-slice map would turn slice-to-slice segmentation
    noise into stripes. ``segmentations`` (:func:`segment_ct_slices` of ``slices``, when the
    caller needs them too) spares segmenting again.

    Returns
    -------
    dict
        ``method`` (``"automatic ROIs"``), ``scale``, ``offset``, ``bone_mean_before``,
        ``background_mean_before``, ``n_slices``, ``bone_pixels``, ``background_pixels``.

    Raises
    ------
    ValueError
        If no slice gives both ROIs, or the bone is not brighter than the background.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> ct = np.full((60, 60), 5.0); ct[10:50, 10:50] = 8.0; ct[20:40, 20:40] = 12.0; ct[25:35, 25:35] = 20.0
    >>> m = volume_scale_from_slices([ct + rng.normal(0, 0.3, ct.shape) for _ in range(3)])
    >>> round(m["scale"] * 20 + m["offset"], -3), round(m["scale"] * 5 + m["offset"], -3)
    (30000.0, 10000.0)
    """
    bone_sum = background_sum = 0.0
    bone_n = background_n = used = 0
    if segmentations is None:
        segmentations = segment_ct_slices(slices)
    elif len(segmentations) != len(slices):
        raise ValueError(f"{len(segmentations)} segmentations for {len(slices)} slices")
    for image, seg in zip(slices, segmentations):
        if seg is None:  # a slice without enough distinct values (blank): no ROIs from it
            continue
        image = np.asarray(image, np.float32)
        bone, background = seg["bone"], seg["background"]
        if bone.sum() < MIN_ROI_PIXELS or background.sum() < MIN_ROI_PIXELS:
            continue
        bone_sum += float(image[bone].sum())
        bone_n += int(bone.sum())
        background_sum += float(image[background].sum())
        background_n += int(background.sum())
        used += 1
    if not used:
        raise ValueError("no slice gave both a bone and a background region (automatic ROIs); give the values or "
                         "ROIs of bone and background")
    bone_before, background_before = bone_sum / bone_n, background_sum / background_n
    if not bone_before > background_before:
        raise ValueError(f"the automatic bone ROI mean ({bone_before:.4g}) is not above the background's "
                         f"({background_before:.4g}); give the values or ROIs of bone and background")
    return {"method": "automatic ROIs", **linear_ct_map(bone_before, background_before, bone_mean=bone_mean,
                                                        background_mean=background_mean),
            "n_slices": used, "bone_pixels": bone_n, "background_pixels": background_n}


def linear_ct_map(bone_value: float, background_value: float, *, bone_mean: float = 30000.0,
                  background_mean: float = 10000.0) -> dict[str, float]:
    """``scale`` and ``offset`` that map ``bone_value`` to ``bone_mean`` and ``background_value`` to ``background_mean``.

    Examples
    --------
    >>> linear_ct_map(0.8, 0.2)
    {'scale': 33333.33333333333, 'offset': 3333.333333333334, 'bone_mean_before': 0.8, 'background_mean_before': 0.2}
    """
    bone_value, background_value = float(bone_value), float(background_value)
    if not (np.isfinite(bone_value) and np.isfinite(background_value)) or not bone_value > background_value:
        raise ValueError(f"bone value ({bone_value:g}) must be a finite number above the background value "
                         f"({background_value:g})")
    scale = (bone_mean - background_mean) / (bone_value - background_value)
    return {"scale": float(scale), "offset": float(background_mean - scale * background_value),
            "bone_mean_before": bone_value, "background_mean_before": background_value}
