"""Sample-correspondence masks (paper 2.8) and the segmentations behind them.

CT and section disagree in places: the CT shows the sample tube's wall and loose
tissue that did not end up in the section, the section has a partial field of view
or lost tissue. The sample-correspondence mask keeps the part both show:

1. segment the rigid sample (bone and implant) in the CT slice
   (:func:`segment_ct`) and the tissue in the section (:func:`segment_histology`),
   by intensity alone;
2. take the convex hull of each (:func:`convex_hull`): it keeps soft tissue
   enclosed by bone, drops the wall and loose material outside;
3. intersect the two hulls, the valid areas of both images (CT inside the volume,
   section inside its stitched field of view) and any hand-made masks.

:func:`apply_mask` shows an image the way the paper displays masked results: outside
the mask, the mean background value.

Examples
--------
>>> import numpy as np
>>> ct = np.zeros((40, 40), np.float32); ct[10:30, 12:28] = 1.0   # a bright block
>>> rgb = np.full((40, 40, 3), 240, np.uint8); rgb[12:32, 10:30] = (90, 60, 150)
>>> mask = correspondence_mask(ct, rgb)
>>> bool(mask[13:29, 13:27].all()), bool(mask[:, :11].any() or mask[:11].any())
(True, False)
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
from scipy import ndimage as ndi
from skimage.filters import threshold_multiotsu
from skimage.morphology import convex_hull_image

__all__ = [
    "apply_mask",
    "background_fill",
    "from_optical_density",
    "convex_hull",
    "correspondence_mask",
    "field_of_view_mask",
    "mask_iou",
    "segment_ct",
    "segment_histology",
]

#: A class of CT values whose contrast to the background exceeds the next class's by this factor is metal.
METAL_CONTRAST = 2.0
#: Total optical density (sum over R, G, B of -ln(I/255)) beyond which a section is opaque (an implant).
OPAQUE_OD = 8.0
#: Optical densities are clipped here before the tissue/glass threshold, so the implant does not dominate it.
TISSUE_OD_CLIP = 3.0


def _largest_components(mask: np.ndarray, min_fraction: float) -> np.ndarray:
    """Keep connected components at least ``min_fraction`` of the largest one."""
    labelled, n = ndi.label(mask)
    if n == 0:
        return mask
    sizes = np.bincount(labelled.ravel())[1:]
    keep = np.flatnonzero(sizes >= min_fraction * sizes.max()) + 1
    return np.isin(labelled, keep)


def segment_ct(ct_slice: np.ndarray, valid: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Segment a CT slice into background, rigid sample, bone and metal by intensity.

    The slice is smoothed (Gaussian, sigma 1 px) and split by a four-class multi-Otsu
    threshold ``t0 < t1 < t2`` computed inside ``valid``: background (air or medium)
    below ``t0``, soft tissue and the tube wall between ``t0`` and ``t1``, the rigid
    sample (bone and implant) above ``t1``. The top class is metal when its contrast to
    the background is at least :data:`METAL_CONTRAST` times the next class's (a
    titanium screw), and is
    then left out of the bone. The bone is the brightest non-metal class. Background
    and bone are eroded (2 px and 1 px) so that partial-volume edges, lacunae and vessels
    stay out of the ROIs used for normalisation.

    Parameters
    ----------
    ct_slice : ndarray, (H, W)
    valid : ndarray of bool, optional
        Pixels with data (default: all).

    Returns
    -------
    dict of bool arrays
        ``rigid`` (bone + implant, for the hull), ``bone`` and ``background`` (ROIs),
        ``metal``; and ``classes`` (int8: 0-3 the four classes, -1 outside ``valid``).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> ct = np.zeros((60, 60)); ct[10:50, 10:50] = 0.25       # soft tissue
    >>> ct[20:40, 20:40] = 0.6; ct[25:35, 25:35] = 1.0            # new bone around dense bone
    >>> seg = segment_ct(ct + rng.normal(0, 0.02, ct.shape))
    >>> bool(seg["bone"][30, 30]), bool(seg["rigid"][22, 22]), bool(seg["rigid"][15, 15])
    (True, True, False)
    >>> bool(seg["background"][2, 2]), bool(seg["metal"].any())
    (True, False)
    """
    image = np.asarray(ct_slice, dtype=np.float32)
    valid = np.ones(image.shape, bool) if valid is None else np.asarray(valid, bool)
    smooth = ndi.gaussian_filter(np.where(valid, image, np.median(image[valid])), 1.0)
    values = smooth[valid]
    t0, t1, t2 = threshold_multiotsu(values, classes=4)
    top = values[values > t2]
    next_class = values[(values > t1) & (values <= t2)]
    base = values[values < t0].mean() if np.any(values < t0) else values.min()
    is_metal = bool(top.size and next_class.size
                    and top.mean() - base > METAL_CONTRAST * max(next_class.mean() - base, 1e-12))
    rigid = ndi.binary_opening((smooth > t1) & valid, iterations=1)
    rigid = _largest_components(rigid, 0.05)
    metal = (smooth > t2) & valid if is_metal else np.zeros_like(valid)
    bone_class = ((smooth > t1) & (smooth <= t2)) if is_metal else (smooth > t2)
    bone = ndi.binary_erosion(bone_class & valid & ~metal, iterations=1)
    background = ndi.binary_erosion((smooth < t0) & valid, iterations=2, border_value=1)
    background = _largest_components(background, 0.05)
    classes = np.where(valid, np.digitize(smooth, [t0, t1, t2]), -1).astype(np.int8)
    return {"rigid": rigid, "bone": bone, "background": background, "metal": metal, "classes": classes}


def optical_density(rgb: np.ndarray, *, offset: float = 0.0) -> np.ndarray:
    """Optical density ``-ln((I + offset) / (255 + offset))`` per channel of an RGB uint8 image: 0 on white.

    ``offset=0`` (the masks' and normalisation's convention) clips ``I`` at 1 so black stays finite;
    ``offset=1`` is the Beer-Lambert form ``-ln((I + 1) / 256)`` that the 3D fusion averages (paper 2.11).
    Sum over the last axis for the total optical density.

    Examples
    --------
    >>> import numpy as np
    >>> optical_density(np.array([[255, 255, 255]], np.uint8)).tolist()
    [[0.0, 0.0, 0.0]]
    >>> round(float(optical_density(np.array([0], np.uint8), offset=1.0)[0]), 3)
    5.545
    """
    rgb = np.asarray(rgb, np.float32)
    scale = np.float32(255.0 + offset)
    return 0.0 - np.log(np.clip(rgb + np.float32(offset), 1.0, scale) / scale)  # 0.0 - x: no -0.0


def from_optical_density(od: np.ndarray, *, offset: float = 1.0) -> np.ndarray:
    """Inverse of :func:`optical_density` (default the fusion's ``offset=1``), rounded to uint8.

    Examples
    --------
    >>> import numpy as np
    >>> from_optical_density(optical_density(np.array([7, 200], np.uint8), offset=1.0)).tolist()
    [7, 200]
    """
    scale = 255.0 + offset
    return np.clip(np.round(scale * np.exp(-np.asarray(od)) - offset), 0, 255).astype(np.uint8)


def segment_histology(histology: np.ndarray, valid: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Segment a stained section into tissue and background (glass) by optical density.

    The total optical density (:func:`optical_density`, smoothed, clipped at
    :data:`TISSUE_OD_CLIP`) is split by four-class multi-Otsu thresholds; the lowest one
    separates the glass from stained tissue and the opaque implant. Small objects on
    the glass (stain droplets, dust: components under 5 % of the largest) are dropped
    from the tissue; the background is eroded 2 px and loses cracks and holes inside the
    tissue by keeping only components at least 5 % of the largest.

    Every stained class counts as tissue: the section holds only what was cut, so its
    hull is the sample's; the CT side is where loose tissue and the tube must be left
    out (:func:`segment_ct`).

    Returns
    -------
    dict of bool arrays
        ``tissue``, ``background``.

    Examples
    --------
    >>> import numpy as np
    >>> rgb = np.full((50, 50, 3), 235, np.uint8); rgb[10:40, 10:40] = (60, 90, 170)
    >>> seg = segment_histology(rgb)
    >>> int(seg["tissue"][10:40, 10:40].sum()) >= 890, bool(seg["background"][0, 0])
    (True, True)
    """
    rgb = np.asarray(histology)
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"histology must be (H, W, 3), got shape {rgb.shape}")
    valid = np.ones(rgb.shape[:2], bool) if valid is None else np.asarray(valid, bool)
    od = ndi.gaussian_filter(optical_density(rgb).sum(axis=-1), 1.0)
    # Opaque implant (OD >> 3) would dominate a plain Otsu split: clip it, and take the lowest
    # of four multi-Otsu classes (glass is one narrow, light peak; tissue spreads over the others).
    threshold = threshold_multiotsu(np.minimum(od[valid], TISSUE_OD_CLIP), classes=4)[0]
    tissue = ndi.binary_opening((od > threshold) & valid, iterations=1)
    tissue = _largest_components(tissue, 0.05)
    background = ndi.binary_erosion((od <= threshold) & valid, iterations=2, border_value=1)
    background = _largest_components(background, 0.05)
    return {"tissue": tissue, "background": background}


def convex_hull(mask: np.ndarray) -> np.ndarray:
    """The convex hull of a boolean mask (all False if the mask is empty).

    Examples
    --------
    >>> import numpy as np
    >>> ring = np.zeros((9, 9), bool); ring[2:7, 2:7] = True; ring[3:6, 3:6] = False
    >>> int(convex_hull(ring).sum())
    25
    """
    mask = np.asarray(mask, bool)
    if not mask.any():
        return np.zeros_like(mask)
    return convex_hull_image(mask)


def field_of_view_mask(histology: np.ndarray) -> np.ndarray:
    """Where a stitched section image has data: not the pure black fill of missing tiles.

    Stitching software fills the area no tile covered with pure black (0, 0, 0); the
    filled area is connected to the image border. Black pixels inside the tissue (an
    opaque implant) are not connected to the border through black and are kept.

    Examples
    --------
    >>> import numpy as np
    >>> rgb = np.full((20, 20, 3), 200, np.uint8); rgb[:, :5] = 0; rgb[8:12, 8:12] = 0
    >>> fov = field_of_view_mask(rgb)
    >>> bool(fov[10, 2]), bool(fov[10, 10]), int(fov.sum())
    (False, True, 300)
    """
    black = np.all(np.asarray(histology) == 0, axis=-1)
    labelled, _ = ndi.label(black)
    border = np.unique(np.concatenate([labelled[0], labelled[-1], labelled[:, 0], labelled[:, -1]]))
    border = border[border > 0]
    return ~np.isin(labelled, border)


def correspondence_mask(
    ct_slice: np.ndarray,
    histology: np.ndarray,
    *,
    ct_valid: np.ndarray | None = None,
    histology_valid: np.ndarray | None = None,
    extra_masks: Iterable[np.ndarray] = (),
) -> np.ndarray:
    """The sample-correspondence mask of a registered pair (paper 2.8).

    Parameters
    ----------
    ct_slice : ndarray, (H, W)
        Registered CT slice.
    histology : ndarray, (H, W, 3) uint8
        Registered section on the same grid.
    ct_valid, histology_valid : ndarray of bool, optional
        Where each image has data (inside the volume; inside the stitched field of view).
    extra_masks : iterable of bool arrays
        Hand-made masks (True = keep), intersected with the result.

    Returns
    -------
    ndarray of bool
        Hull of the CT's rigid sample AND hull of the section's tissue AND both valid
        areas AND every extra mask.
    """
    ct_slice = np.asarray(ct_slice)
    shape = ct_slice.shape
    if np.asarray(histology).shape[:2] != shape:
        raise ValueError(f"histology shape {np.asarray(histology).shape[:2]} != CT slice shape {shape}")
    ct_valid = np.ones(shape, bool) if ct_valid is None else np.asarray(ct_valid, bool)
    histology_valid = np.ones(shape, bool) if histology_valid is None else np.asarray(histology_valid, bool)
    ct_hull = convex_hull(segment_ct(ct_slice, ct_valid)["rigid"])
    histology_hull = convex_hull(segment_histology(histology, histology_valid)["tissue"])
    mask = ct_hull & histology_hull & ct_valid & histology_valid
    for index, extra in enumerate(extra_masks):
        extra = np.asarray(extra, bool)
        if extra.shape != shape:
            raise ValueError(f"extra mask {index}: shape {extra.shape} != image shape {shape}")
        mask &= extra
    return mask


def apply_mask(image: np.ndarray, mask: np.ndarray, fill=None) -> np.ndarray:
    """Replace the pixels outside ``mask`` by ``fill``: the paper's masked display (2.8).

    Parameters
    ----------
    image : ndarray, (H, W) or (H, W, C)
    mask : ndarray of bool, (H, W)
    fill : scalar or sequence, optional
        Default: the mean background value of the image (per channel): the mean over
        the background found by :func:`segment_histology` (RGB) or :func:`segment_ct`
        (greyscale) outside the mask, or the mean outside the mask if none is found.

    Returns
    -------
    ndarray of the image's dtype

    Examples
    --------
    >>> import numpy as np
    >>> image = np.arange(4, dtype=np.uint16).reshape(2, 2)
    >>> apply_mask(image, np.array([[True, False], [False, True]]), fill=9).tolist()
    [[0, 9], [9, 3]]
    """
    image = np.asarray(image)
    mask = np.asarray(mask, bool)
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} != image shape {image.shape[:2]}")
    if fill is None:
        if image.ndim == 3:
            background = segment_histology(image)["background"]
        else:
            background = segment_ct(image)["background"]
        region = background if background.any() else ~mask
        if not region.any():
            region = np.ones_like(mask)
        fill = image[region].mean(axis=0)
    out = image.copy()
    fill_value = np.asarray(fill, dtype=np.float64)
    if np.issubdtype(image.dtype, np.integer):
        fill_value = np.clip(np.rint(fill_value), np.iinfo(image.dtype).min, np.iinfo(image.dtype).max)
    out[~mask] = fill_value.astype(image.dtype)
    return out


def background_fill(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The mean value (per channel) of ``image`` outside ``mask``; the whole image's mean if all is mask.

    The fill of the paper's masked comparisons (2.8): metrics and figures compare images whose
    background is replaced by this value (see :func:`apply_mask`).

    Examples
    --------
    >>> import numpy as np
    >>> image = np.array([[0, 10], [20, 30]], np.uint16)
    >>> background_fill(image, np.array([[True, False], [False, True]])).tolist()
    15.0
    """
    image = np.asarray(image, np.float64)
    mask = np.asarray(mask, bool)
    outside = image[~mask] if (~mask).any() else image.reshape(-1, *image.shape[2:])
    return outside.mean(axis=0)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks (1.0 when both are empty).

    Examples
    --------
    >>> import numpy as np
    >>> a = np.zeros((4, 4), bool); a[:2] = True
    >>> b = np.zeros((4, 4), bool); b[:, :2] = True
    >>> mask_iou(a, b)
    0.3333333333333333
    """
    a = np.asarray(a, bool)
    b = np.asarray(b, bool)
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)
