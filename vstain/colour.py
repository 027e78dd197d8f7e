"""Colour measures on stained images: class mean colours, CIELAB Delta E, CT-luminance correlation.

* :func:`class_mean_colours`: the mean RGB of each tissue class of a labelled image;
* :func:`delta_e`: the CIELAB colour difference of RGB colours (scikit-image, CIEDE2000 by default,
  CIE 1976 on request); about 2 is just noticeable, below 5 two colours read as one;
* :func:`lightness` and :func:`ct_lightness_correlation`: the CIELAB lightness L* of a stained
  image and its Pearson correlation with the CT grey values inside a mask. Its sign is the intensity
  relation between the modalities: positive where bright CT is pale in the stain, negative where
  bright CT (mineralised bone) is dark in the stain, as in the paper's toluidine blue (2.1).

Arrays in, numbers out; the chapters' tables built from them are :mod:`vstain.reports`.

Examples
--------
>>> import numpy as np
>>> round(float(delta_e([255, 255, 255], [0, 0, 0], method="cie76")), 1)
100.0
>>> ct = np.array([[1.0, 2.0, 3.0]])
>>> rgb = np.array([[[250, 250, 250], [128, 128, 128], [10, 10, 10]]], np.uint8)
>>> round(ct_lightness_correlation(ct, rgb, np.ones((1, 3), bool)), 2)
-1.0
"""

from __future__ import annotations

import numpy as np
from skimage.color import deltaE_cie76, deltaE_ciede2000, rgb2lab

DELTA_E_METHODS = ("ciede2000", "cie76")


def _lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB of RGB values in 0-255 (any shape ending in 3)."""
    rgb = np.asarray(rgb, np.float64)
    if rgb.shape[-1:] != (3,):
        raise ValueError(f"colours must end in an RGB axis of 3, got shape {rgb.shape}")
    return rgb2lab(np.clip(rgb, 0, 255).reshape(-1, 1, 3) / 255.0).reshape(rgb.shape)


def delta_e(rgb_a: np.ndarray, rgb_b: np.ndarray, *, method: str = "ciede2000") -> np.ndarray:
    """CIELAB colour difference of two RGB colours (or arrays of colours), 0-255 scale.

    Parameters
    ----------
    rgb_a, rgb_b : array_like
        Colours ``(..., 3)`` in 0-255 (sRGB, D65).
    method : {"ciede2000", "cie76"}
        CIEDE2000 (default, the perceptually corrected difference) or CIE 1976 (Euclidean in L*a*b*).

    Returns
    -------
    ndarray
        ``(...)`` float64 Delta E.

    Examples
    --------
    >>> float(delta_e([120, 60, 140], [120, 60, 140]))
    0.0
    >>> bool(delta_e([0, 0, 0], [5, 5, 5]) < 5)    # two blacks: one colour to the eye
    True
    """
    if method not in DELTA_E_METHODS:
        raise ValueError(f"unknown Delta E method {method!r}; valid: {', '.join(DELTA_E_METHODS)}")
    a, b = _lab(rgb_a), _lab(rgb_b)
    if a.shape != b.shape:
        raise ValueError(f"colour arrays differ in shape: {a.shape} and {b.shape}")
    return np.asarray(deltaE_ciede2000(a, b) if method == "ciede2000" else deltaE_cie76(a, b), np.float64)


def class_mean_colours(rgb: np.ndarray, labels: np.ndarray, valid: np.ndarray | None = None, *,
                       min_pixels: int = 20) -> dict[int, np.ndarray]:
    """The mean RGB of each label of an image, over the valid pixels.

    Parameters
    ----------
    rgb : ndarray
        ``(Y, X, 3)`` uint8 image.
    labels : ndarray
        ``(Y, X)`` integer class of each pixel.
    valid : ndarray of bool, optional
        Pixels to count (default: all).
    min_pixels : int
        Classes with fewer valid pixels are left out (too few to have a colour).

    Returns
    -------
    dict
        ``label -> (3,) float64 mean RGB``, by label.

    Examples
    --------
    >>> import numpy as np
    >>> rgb = np.array([[[10, 20, 30], [30, 40, 50], [200, 200, 200]]], np.uint8)
    >>> {k: v.tolist() for k, v in class_mean_colours(rgb, np.array([[1, 1, 0]]), min_pixels=1).items()}
    {0: [200.0, 200.0, 200.0], 1: [20.0, 30.0, 40.0]}
    """
    rgb, labels = np.asarray(rgb), np.asarray(labels)
    if rgb.ndim != 3 or rgb.shape[-1] != 3 or rgb.shape[:2] != labels.shape:
        raise ValueError(f"need an (Y, X, 3) image and (Y, X) labels, got {rgb.shape} and {labels.shape}")
    valid = np.ones(labels.shape, bool) if valid is None else np.asarray(valid, bool)
    if valid.shape != labels.shape:
        raise ValueError(f"valid shape {valid.shape} does not match labels shape {labels.shape}")
    out = {}
    for code in np.unique(labels[valid]):
        pixels = (labels == code) & valid
        if pixels.sum() >= min_pixels:
            out[int(code)] = rgb[pixels].astype(np.float64).mean(axis=0)
    return out


def lightness(rgb: np.ndarray) -> np.ndarray:
    """CIELAB lightness L* (0 black - 100 white) of an ``(..., 3)`` uint8 RGB image.

    Examples
    --------
    >>> import numpy as np
    >>> lightness(np.array([[0, 0, 0], [255, 255, 255]], np.uint8)).round(1).tolist()
    [0.0, 100.0]
    """
    return _lab(rgb)[..., 0]


def ct_lightness_correlation(ct: np.ndarray, rgb: np.ndarray, mask: np.ndarray) -> float:
    """Pearson correlation of CT grey values and stain lightness L* inside ``mask``.

    Negative where what is bright in CT is dark in the stain (the paper's intensity mismatch of
    toluidine blue, bone purple and darker than soft tissue); NaN with fewer than 3 masked pixels or
    when either image is constant there.

    Parameters
    ----------
    ct : ndarray
        ``(Y, X)`` CT slice.
    rgb : ndarray
        ``(Y, X, 3)`` uint8 stained image on the same grid (real or generated).
    mask : ndarray of bool
        ``(Y, X)`` pixels to correlate (the sample-correspondence mask).

    Examples
    --------
    >>> import numpy as np
    >>> ct = np.array([[1.0, 2.0, 3.0, 4.0]])
    >>> rgb = np.repeat(np.array([[10, 80, 150, 250]], np.uint8)[..., None], 3, axis=-1)
    >>> round(ct_lightness_correlation(ct, rgb, np.ones((1, 4), bool)), 1)
    1.0
    """
    ct, rgb, mask = np.asarray(ct), np.asarray(rgb), np.asarray(mask, bool)
    if ct.shape != mask.shape or rgb.shape != ct.shape + (3,):
        raise ValueError(f"CT {ct.shape}, stain {rgb.shape} and mask {mask.shape} must share one (Y, X) grid")
    x = ct[mask].astype(np.float64)
    y = lightness(rgb[mask])
    # constant within rounding (L* of one colour varies in its last bits): no correlation to speak of
    if len(x) < 3 or x.std() <= 1e-9 * max(1.0, np.abs(x).max()) or y.std() <= 1e-9 * max(1.0, np.abs(y).max()):
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])
