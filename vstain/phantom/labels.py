"""Tissue labels, implant materials and stains of the synthetic dataset.

The label codes are shared by the CT label volume, the section labels and every
later stage that measures against ground truth.

Examples
--------
>>> LABELS["background"], LABELS["screw"]
(0, 5)
>>> label_name(7)
'lacuna'
"""

from __future__ import annotations

import numpy as np
from matplotlib.colors import BoundaryNorm, ListedColormap

from vstain.vocabulary import MATERIALS, STAINS  # noqa: F401  (re-exported for the phantom's modules)

#: Tissue classes of the bone-implant block (uint8 codes). ``holder_wall`` (the
#: sample tube) is seen by the CT only; histology-only artefacts (cracks, saw
#: marks, stain droplets) are not labels of the volume.
LABELS: dict[str, int] = {
    "background": 0,
    "soft_tissue": 1,
    "dense_bone": 2,
    "new_bone": 3,
    "degradation_layer": 4,
    "screw": 5,
    "vessel": 6,
    "lacuna": 7,
    "holder_wall": 8,
}


#: Labels that are part of the rigid sample (bone and implant), used for masks.
RIGID_LABELS: tuple[int, ...] = (
    LABELS["dense_bone"], LABELS["new_bone"], LABELS["degradation_layer"], LABELS["screw"],
    LABELS["vessel"], LABELS["lacuna"],
)


def label_name(code: int) -> str:
    """The name of a label code.

    Raises
    ------
    ValueError
        If ``code`` is not a label code.
    """
    for name, value in LABELS.items():
        if value == int(code):
            return name
    raise ValueError(f"unknown label code {code!r}; valid codes: {sorted(LABELS.values())}")


#: A colour per label for figures (RGB in 0-1), in code order.
LABEL_COLOURS: dict[str, tuple[float, float, float]] = {
    "background": (1.0, 1.0, 1.0),
    "soft_tissue": (0.55, 0.45, 0.75),
    "dense_bone": (0.85, 0.75, 0.45),
    "new_bone": (0.2, 0.45, 0.95),
    "degradation_layer": (0.55, 0.25, 0.15),
    "screw": (0.1, 0.1, 0.1),
    "vessel": (0.9, 0.2, 0.2),
    "lacuna": (0.2, 0.7, 0.3),
    "holder_wall": (0.6, 0.6, 0.6),
}


def label_colormap():
    """A matplotlib colormap and norm that draw label codes in :data:`LABEL_COLOURS`.

    Examples
    --------
    >>> cmap, norm = label_colormap()
    >>> cmap.N == len(LABELS)
    True
    """
    codes = sorted(LABELS.values())
    names = [label_name(c) for c in codes]
    cmap = ListedColormap([LABEL_COLOURS[n] for n in names], name="vstain_labels")
    norm = BoundaryNorm(np.arange(len(codes) + 1) - 0.5, cmap.N)
    return cmap, norm
