"""Normalisation of CT slices and stained sections (paper 2.5).

The pairs come from several beamtimes and staining sessions, each with its own
grey-value scale or white point. Both modalities are mapped to a common scale from
two regions of interest (ROIs), rigid bone and background:

* CT (:func:`normalise_ct`): a linear map that puts the bone ROI mean at 30000 and
  the background ROI mean at 10000, written as 16-bit (values outside 0-65535 are
  clipped and the clipped fraction is reported).
* Histology (:func:`normalise_histology`): white balance so that the background ROI
  has equal mean R, G and B, then one contrast stretch for all three channels from
  ``f_min = max(10, min_c P1(bone_c) - c)`` to ``f_max = min(255, max_c P99(background_c) + c')``.
  The same stretch on every channel scales the colour's offset from grey by one
  factor, so hue is kept (see :func:`normalise_histology`).

The ROIs are the user's masks or an automatic segmentation
(:func:`automatic_rois`): on a registered pair, the bone ROI is the CT's bone
(:func:`vstain.masks.segment_ct`) in both modalities (it is rigid, so it is bone in
the section too), eroded so that small registration errors do not matter; each
modality's background ROI is its own segmented background (glass for the section).

Examples
--------
>>> import numpy as np
>>> ct = np.array([[100.0, 100.0], [300.0, 300.0]])
>>> bone = np.array([[False, False], [True, True]])
>>> out, stats = normalise_ct(ct, bone, ~bone)
>>> out.tolist(), stats["clipped_fraction"]
([[10000, 10000], [30000, 30000]], 0.0)
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from vstain.masks import OPAQUE_OD, optical_density, segment_ct, segment_histology

__all__ = ["FieldOfViewVolume", "automatic_rois", "ct_outside_field_of_view", "edge_class_shares",
           "find_ct_fill_value", "looks_inverted", "normalise_ct", "normalise_histology", "relative_spread", "roi_means", "spread_table"]

#: Fewest pixels of an automatic bone ROI before its erosion is relaxed.
MIN_ROI_PIXELS = 20


def _check_roi(roi: Any, shape: tuple[int, ...], name: str, where: str) -> np.ndarray:
    roi = np.asarray(roi, bool)
    if roi.shape != shape:
        raise ValueError(f"{where}: {name} shape {roi.shape} != image shape {shape}")
    if not roi.any():
        raise ValueError(f"{where}: {name} is empty; cannot normalise without it")
    return roi


def normalise_ct(
    ct: np.ndarray,
    bone_roi: np.ndarray,
    background_roi: np.ndarray,
    *,
    bone_mean: float = 30000.0,
    background_mean: float = 10000.0,
    pair_id: str = "?",
) -> tuple[np.ndarray, dict[str, float]]:
    """Linear CT scaling to fixed bone and background means, as uint16 (paper 2.5).

    Parameters
    ----------
    ct : ndarray, (H, W)
        CT slice, any real dtype.
    bone_roi, background_roi : ndarray of bool
        The ROIs whose means become ``bone_mean`` and ``background_mean``.
    bone_mean, background_mean : float
        Targets (``profile.normalisation``; the paper's 30000 and 10000).
    pair_id : str
        Named in errors.

    Returns
    -------
    image : ndarray of uint16
    stats : dict
        ``scale``, ``offset`` (``out = scale * ct + offset``), the ROI means before
        (``bone_mean_before``, ``background_mean_before``) and after rounding and
        clipping (``bone_mean_after``, ``background_mean_after``), ``clipped_fraction``.

    Raises
    ------
    ValueError
        Empty ROI, NaN in the slice, or bone not brighter than background.

    Examples
    --------
    >>> import numpy as np
    >>> ct = np.array([[0.0, 1.0, 9.0]])
    >>> image, stats = normalise_ct(ct, np.array([[0, 1, 0]], bool), np.array([[1, 0, 0]], bool))
    >>> image.tolist(), round(stats["clipped_fraction"], 3)
    ([[10000, 30000, 65535]], 0.333)
    """
    where = f"pair {pair_id}"
    ct = np.asarray(ct, dtype=np.float64)
    if ct.ndim != 2:
        raise ValueError(f"{where}: ct must be a 2D slice, got shape {ct.shape}")
    if not np.all(np.isfinite(ct)):
        raise ValueError(f"{where}: ct contains NaN or infinite values")
    bone_roi = _check_roi(bone_roi, ct.shape, "bone_roi", where)
    background_roi = _check_roi(background_roi, ct.shape, "background_roi", where)
    bone_before = float(ct[bone_roi].mean())
    background_before = float(ct[background_roi].mean())
    if not bone_before > background_before:
        raise ValueError(
            f"{where}: bone_roi mean ({bone_before:.4g}) is not above background_roi mean "
            f"({background_before:.4g}); check the ROIs"
        )
    scale = (bone_mean - background_mean) / (bone_before - background_before)
    offset = background_mean - scale * background_before
    scaled = np.rint(scale * ct + offset)
    limit = np.iinfo(np.uint16).max
    clipped = float(np.mean((scaled < 0) | (scaled > limit)))
    image = np.clip(scaled, 0, limit).astype(np.uint16)
    return image, {
        "scale": float(scale),
        "offset": float(offset),
        "bone_mean_before": bone_before,
        "background_mean_before": background_before,
        "bone_mean_after": float(image[bone_roi].mean()),
        "background_mean_after": float(image[background_roi].mean()),
        "clipped_fraction": clipped,
    }


def normalise_histology(
    histology: np.ndarray,
    bone_roi: np.ndarray,
    background_roi: np.ndarray,
    *,
    c_low: float,
    c_high: float,
    pair_id: str = "?",
) -> tuple[np.ndarray, dict[str, Any]]:
    """White balance on the background, then one contrast stretch for R, G and B (paper 2.5).

    1. White balance: channel ``k`` is multiplied by ``mean(mu) / mu_k``, where ``mu``
       is the background ROI's mean colour, so that ``mu_R = mu_G = mu_B``.
    2. Stretch: ``f_min = max(10, min_k P1(bone_k) - c_low)`` and
       ``f_max = min(255, max_k P99(background_k) + c_high)`` over the white-balanced
       ROIs; every channel is mapped by ``255 * (v - f_min) / (f_max - f_min)`` and
       clipped to 0-255.

    The same map on every channel multiplies the colour's offset from grey,
    ``v - mean_k(v)``, by one positive factor: for pixels that are not clipped the
    hue (the direction of that offset) is kept exactly.

    Parameters
    ----------
    histology : ndarray, (H, W, 3) uint8
    bone_roi, background_roi : ndarray of bool, (H, W)
    c_low, c_high : float
        ``c`` and ``c'`` (``profile.normalisation``).
    pair_id : str
        Named in errors.

    Returns
    -------
    image : ndarray, (H, W, 3) uint8
    stats : dict
        ``white_balance_gains``, ``f_min``, ``f_max``, ``f_min_clamped``, ``f_max_clamped``,
        mean colours of both ROIs before and after, ``clipped_fraction``.

    Examples
    --------
    >>> import numpy as np
    >>> rgb = np.array([[[230, 240, 250], [60, 80, 100]]], np.uint8)
    >>> background = np.array([[True, False]]); bone = ~background
    >>> image, stats = normalise_histology(rgb, bone, background, c_low=5, c_high=5)
    >>> image[0, 0].tolist(), stats["f_max_clamped"]
    ([248, 248, 248], False)
    """
    where = f"pair {pair_id}"
    rgb = np.asarray(histology)
    if rgb.ndim != 3 or rgb.shape[-1] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"{where}: histology must be RGB uint8 (H, W, 3), got {rgb.dtype} {rgb.shape}")
    bone_roi = _check_roi(bone_roi, rgb.shape[:2], "bone_roi", where)
    background_roi = _check_roi(background_roi, rgb.shape[:2], "background_roi", where)
    values = rgb.astype(np.float64)
    mu = values[background_roi].mean(axis=0)
    if np.any(mu <= 0):
        raise ValueError(f"{where}: background_roi mean colour {mu.tolist()} has a zero channel")
    gains = mu.mean() / mu
    balanced = values * gains
    f_min_raw = float(np.percentile(balanced[bone_roi], 1, axis=0).min() - c_low)
    f_max_raw = float(np.percentile(balanced[background_roi], 99, axis=0).max() + c_high)
    f_min = max(10.0, f_min_raw)
    f_max = min(255.0, f_max_raw)
    if not f_max > f_min:
        raise ValueError(f"{where}: stretch bounds f_min {f_min:.1f} >= f_max {f_max:.1f}; check the ROIs")
    stretched = 255.0 * (balanced - f_min) / (f_max - f_min)
    clipped = float(np.mean(np.any((stretched < 0) | (stretched > 255), axis=-1)))
    image = np.clip(np.rint(stretched), 0, 255).astype(np.uint8)
    return image, {
        "white_balance_gains": gains.tolist(),
        "f_min": f_min,
        "f_max": f_max,
        "f_min_clamped": f_min_raw < 10.0,
        "f_max_clamped": f_max_raw > 255.0,
        "bone_rgb_before": values[bone_roi].mean(axis=0).tolist(),
        "background_rgb_before": mu.tolist(),
        "bone_rgb_after": image[bone_roi].mean(axis=0).tolist(),
        "background_rgb_after": image[background_roi].mean(axis=0).tolist(),
        "clipped_fraction": clipped,
    }


def automatic_rois(
    ct: np.ndarray,
    histology: np.ndarray,
    *,
    ct_valid: np.ndarray | None = None,
    histology_valid: np.ndarray | None = None,
    erosion_px: int = 2,
) -> dict[str, np.ndarray]:
    """Bone and background ROIs of a registered pair, by automatic segmentation.

    The bone ROI of both modalities is the brightest CT class of
    :func:`vstain.masks.segment_ct` that is stained tissue in the section: the implant
    is never stained (opaque in ground sections, missing after laser cutting), so when
    most of the brightest class is not stained tissue, or is metal by CT contrast, the
    next class is bone. It is eroded by ``erosion_px + 1`` pixels (less if that would
    leave fewer than :data:`MIN_ROI_PIXELS`) so that it stays on bone in the section
    despite small registration errors, and kept only where the section is stained
    tissue (cracks and droplets left out). The background ROIs are each modality's
    own segmented background.

    Returns
    -------
    dict of bool arrays
        ``ct_bone``, ``ct_background``, ``histology_bone``, ``histology_background``.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> ct = np.zeros((60, 60)); ct[10:50, 10:50] = 0.25; ct[20:40, 20:40] = 0.6; ct[25:35, 25:35] = 1.0
    >>> rgb = np.full((60, 60, 3), 235, np.uint8); rgb[10:50, 10:50] = (90, 60, 150)
    >>> rois = automatic_rois(ct + rng.normal(0, 0.02, ct.shape), rgb)
    >>> bool(rois["histology_bone"][30, 30]), bool(rois["histology_background"][2, 2])
    (True, True)
    """
    ct = np.asarray(ct)
    ct_seg = segment_ct(ct, ct_valid)
    hist_seg = segment_histology(histology, histology_valid)
    histology_valid = np.ones(ct.shape, bool) if histology_valid is None else np.asarray(histology_valid, bool)
    # The implant is never stained tissue (opaque in ground sections, missing in laser-cut ones):
    # if most of the brightest CT class is not stained tissue in the section, it is the implant.
    stained = hist_seg["tissue"] & (optical_density(histology).sum(axis=-1) < OPAQUE_OD) & histology_valid
    classes = ct_seg["classes"]
    top, below = classes == 3, classes == 2
    implant_on_top = bool(ct_seg["metal"].any()) or (top & stained).sum() < 0.5 * max(top.sum(), 1)
    bone_class = below if implant_on_top else top
    # Thin bone (small images): erode less rather than lose the ROI.
    for erosion in range(erosion_px + 1, -1, -1):
        ct_bone = ndi.binary_erosion(bone_class, iterations=erosion) if erosion else bone_class
        histology_bone = ct_bone & stained
        if histology_bone.sum() >= MIN_ROI_PIXELS:
            break
    return {
        "ct_bone": ct_bone,
        "ct_background": ct_seg["background"],
        "histology_bone": histology_bone,
        "histology_background": hist_seg["background"],
    }


def roi_means(image: np.ndarray, roi: np.ndarray) -> np.ndarray:
    """Mean value (greyscale) or mean colour (RGB) of an image over a ROI.

    Examples
    --------
    >>> import numpy as np
    >>> roi_means(np.array([[1.0, 3.0]]), np.array([[True, True]])).tolist()
    2.0
    """
    return np.asarray(image, np.float64)[np.asarray(roi, bool)].mean(axis=0)


def relative_spread(bone_means, background_means) -> float:
    """Spread of ROI means across pairs relative to the bone-background contrast.

    ``(std(bone) + std(background)) / 2 / (mean(bone) - mean(background))``: a number
    that does not change when the whole dataset is rescaled linearly, so spreads before
    and after normalisation compare.

    Examples
    --------
    >>> relative_spread([30000.0, 30010.0], [10000.0, 9990.0]) < 0.001
    True
    """
    bone = np.asarray(bone_means, float)
    background = np.asarray(background_means, float)
    contrast = abs(bone.mean() - background.mean())
    return float((bone.std() + background.std()) / 2 / contrast) if contrast > 0 else float("nan")


def spread_table(norm: pd.DataFrame) -> pd.DataFrame:
    """Relative spread (:func:`relative_spread`) of the true bone and background means, before and after.

    Parameters
    ----------
    norm : pandas.DataFrame
        The normalisation table (:func:`vstain.stages.register.normalisation_table`) of the
        synthetic dataset, with ROI means on true labels: ``ct_bone_before``,
        ``ct_background_before``, ... and ``histology_bone_before_r`` ... per channel.

    Returns
    -------
    pandas.DataFrame
        Columns ``modality`` (``CT``, ``section``), ``when`` (``before``, ``after``) and
        ``relative_spread`` (for the section, the mean over R, G and B).

    Examples
    --------
    >>> import pandas as pd
    >>> channels = {"ct": [""], "histology": ["_r", "_g", "_b"]}
    >>> norm = pd.DataFrame({f"{m}_{roi}_{w}{c}": [v, v + 1.0] for m, cs in channels.items() for c in cs
    ...                      for w in ("before", "after") for roi, v in (("bone", 30.0), ("background", 10.0))})
    >>> spread_table(norm)["relative_spread"].round(3).tolist()
    [0.025, 0.025, 0.025, 0.025]
    """
    rows = []
    for modality, columns in (("CT", [("ct_bone_{}", "ct_background_{}")]),
                              ("section", [(f"histology_bone_{{}}_{c}", f"histology_background_{{}}_{c}")
                                           for c in "rgb"])):
        for when in ("before", "after"):
            values = [relative_spread(norm[bone.format(when)].dropna(), norm[background.format(when)].dropna())
                      for bone, background in columns]
            rows.append({"modality": modality, "when": when, "relative_spread": float(np.mean(values))})
    return pd.DataFrame(rows)


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
