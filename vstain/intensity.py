"""How CT intensity and stain luminance relate inside a pair's correspondence mask.

The paper's standard CycleGAN fails on "the strong intensity mismatch between the CT and histology
domains" (3.1): bone bright in CT is stained dark, the background dark in CT is the white slide. The
correlation of the two inside the mask measures that mismatch on any pair, real or synthetic.

Examples
--------
>>> import numpy as np
>>> ct = np.array([[10.0, 30.0], [10.0, 30.0]])
>>> rgb = np.array([[[250, 250, 250], [120, 80, 160]]] * 2, np.uint8)
>>> round(ct_stain_correlation(ct, rgb, np.ones((2, 2), bool)), 2)
-1.0
"""

from __future__ import annotations

import numpy as np


def luminance(rgb: np.ndarray) -> np.ndarray:
    """Rec. 601 luma of uint8 or float RGB ``(..., 3)`` (float64).

    Examples
    --------
    >>> round(float(luminance(np.array([255, 255, 255]))), 6)
    255.0
    """
    rgb = np.asarray(rgb, float)
    if rgb.shape[-1] != 3:
        raise ValueError(f"expected RGB (..., 3), got shape {rgb.shape}")
    return rgb @ np.array([0.299, 0.587, 0.114])


def ct_stain_correlation(ct: np.ndarray, rgb: np.ndarray, mask: np.ndarray) -> float:
    """Pearson correlation of CT intensity and stain luminance inside ``mask`` (NaN if either is constant).

    Negative: the stain is dark where the CT is bright (the paper's intensity mismatch, 3.1).
    """
    ct, mask = np.asarray(ct, float), np.asarray(mask, bool)
    if ct.shape != mask.shape or np.shape(rgb)[:2] != mask.shape:
        raise ValueError(f"ct {ct.shape}, rgb {np.shape(rgb)} and mask {mask.shape} must share (Y, X)")
    a, b = ct[mask], luminance(rgb)[mask]
    if a.size < 3 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])
