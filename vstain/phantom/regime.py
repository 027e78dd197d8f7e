"""How close the phantom comes to the paper's regime: the measures chapter 00 sets beside the paper's.

The paper explains its result by its data (2.1, 3, S3): sections that are thick and only partly
aligned with the CT, a stain in which bone is darker than the slide and the soft tissue (so CT
intensity and stain luminance run against each other: the intensity mismatch that defeats the
standard CycleGAN), and a CT blurrier than the histology. These functions measure each of them
on a pair, from arrays; :func:`without` turns one phenomenon off in a dataset profile, so a figure
can show each with and without.

Examples
--------
>>> import numpy as np
>>> ct = np.array([[10.0, 30.0], [10.0, 30.0]])
>>> rgb = np.array([[[250, 250, 250], [120, 80, 160]]] * 2, np.uint8)
>>> round(ct_stain_correlation(ct, rgb, np.ones((2, 2), bool)), 2)
-1.0
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from vstain.colour import ct_lightness_correlation as ct_stain_correlation  # noqa: F401  (the regime's measure)

#: The phenomena of the paper's regime, each a set of dataset-profile keys and the values that turn it off.
PHENOMENA: dict[str, dict[str, Any]] = {
    "thick section": {"section_thickness_um": 0.0, "section_sublayers": 1},
    "preparation (misalignment)": {"misalignment_strength": 0.0},
    "slide imaging": {"n_cameras": 1, "vignetting": 0.0, "slide_hue_jitter": 0.0, "brown_soft_tissue_fraction": 0.0},
    "coarse CT and its artefacts": {"ct_blur_voxels": [0.6, 1.1], "ct_noise_correlation_voxels": 0.0,
                                    "ct_ring_amplitude": 0.0, "ct_metal_streak_amplitude": 0.0,
                                    "marrow_air_fraction": 0.0},
}


def without(dataset_cfg: Any, phenomenon: str) -> Any:
    """A dataset profile section with one phenomenon of :data:`PHENOMENA` turned off.

    Examples
    --------
    >>> from vstain.config import load_profile
    >>> without(load_profile("quick").dataset, "thick section").section_sublayers
    1
    """
    if phenomenon not in PHENOMENA:
        raise ValueError(f"unknown phenomenon {phenomenon!r}; known: {list(PHENOMENA)}")
    return dataclasses.replace(dataset_cfg, **PHENOMENA[phenomenon])


def label_agreement(labels: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> float:
    """Fraction of ``mask`` pixels whose label equals the reference's (how aligned a section is)."""
    mask = np.asarray(mask, bool)
    if not mask.any():
        return float("nan")
    return float((np.asarray(labels)[mask] == np.asarray(reference)[mask]).mean())
