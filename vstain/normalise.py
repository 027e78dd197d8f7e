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

from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from vstain.masks import OPAQUE_OD, optical_density, segment_ct, segment_histology
# whole CT volumes (statistics, contrast, field of view, the volume's scale) live in their own part; their names
# are this module's too
from vstain.normalise_volume import (CT_QUANTILES, DISTRIBUTION_TOLERANCE, EDGE_RING_FRACTION,  # noqa: F401
                                     FILL_AREA_FRACTION, FILL_BORDER_FRACTION, FILL_GAP, FILL_NEAR_FRACTION,
                                     MIN_ROI_PIXELS, FieldOfViewVolume, compare_ct_statistics,
                                     ct_outside_field_of_view, ct_statistics, edge_class_shares,
                                     find_ct_fill_value, linear_ct_map, looks_inverted, segment_ct_slices,
                                     volume_scale_from_slices)

__all__ = ["FieldOfViewVolume", "automatic_rois", "ct_outside_field_of_view", "edge_class_shares",
           "find_ct_fill_value", "looks_inverted", "normalise_ct", "normalise_ct_volume", "normalise_histology",
           "relative_spread", "roi_means", "spread_table"]


def _check_roi(roi: Any, shape: tuple[int, ...], name: str, where: str) -> np.ndarray:
    roi = np.asarray(roi, bool)
    if roi.shape != shape:
        raise ValueError(f"{where}: {name} shape {roi.shape} != image shape {shape}")
    if not roi.any():
        raise ValueError(f"{where}: {name} is empty; cannot normalise without it")
    return roi


def normalise_ct_volume(
    ct_volume: np.ndarray,
    labels_volume: np.ndarray,
    bone_label: int,
    background_label: int,
    *,
    bone_mean: float = 30000.0,
    background_mean: float = 10000.0,
    pair_id: str = "?",
) -> tuple[np.ndarray, dict[str, float]]:
    """A CT volume scaled like the training slices (paper 2.5), one linear map for the whole scan.

    One scan has one gain and offset, so the map is fitted once, by :func:`normalise_ct` on the
    middle slice with the voxels labelled ``bone_label`` and ``background_label`` as the ROIs, and
    applied to the whole volume (float32, clipped to the 16-bit range, not rounded).

    Parameters
    ----------
    ct_volume : ndarray, (Z, Y, X)
        Raw CT, any real dtype.
    labels_volume : ndarray of int, (Z, Y, X)
        A label per voxel (e.g. a segmentation, or a phantom's true labels).
    bone_label, background_label : int
        The labels whose middle-slice means become ``bone_mean`` and ``background_mean``.
    bone_mean, background_mean : float
        Targets (``profile.normalisation``).
    pair_id : str
        Named in errors.

    Returns
    -------
    volume : ndarray of float32
        In ``[0, 65535]``.
    stats : dict
        :func:`normalise_ct`'s record of the middle slice (``scale``, ``offset``, ...).

    Examples
    --------
    >>> ct = np.stack([np.array([[1.0, 2.0, 3.0]])] * 3)
    >>> labels = np.stack([np.array([[0, 2, 1]])] * 3)  # background, other, bone
    >>> volume, stats = normalise_ct_volume(ct, labels, 1, 0)
    >>> volume[0].tolist(), volume.dtype.name
    ([[10000.0, 20000.0, 30000.0]], 'float32')
    """
    ct_volume, labels_volume = np.asarray(ct_volume), np.asarray(labels_volume)
    if ct_volume.ndim != 3 or labels_volume.shape != ct_volume.shape:
        raise ValueError(f"pair {pair_id}: ct_volume {ct_volume.shape} and labels_volume {labels_volume.shape} "
                         "must be volumes (Z, Y, X) of the same shape")
    middle = ct_volume.shape[0] // 2
    _, stats = normalise_ct(ct_volume[middle], labels_volume[middle] == bone_label,
                            labels_volume[middle] == background_label, bone_mean=bone_mean,
                            background_mean=background_mean, pair_id=pair_id)
    scaled = np.clip(stats["scale"] * ct_volume.astype(np.float64) + stats["offset"], 0, 65535).astype(np.float32)
    return scaled, stats


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


