"""X-ray forward model: label volume -> reconstructed attenuation (CT grey values).

Each tissue has a linear attenuation coefficient made of a photoelectric part,
which falls as ``E**-3`` with the X-ray energy ``E``, and a Compton part that is
nearly flat; so the contrast between bone, implant and soft tissue changes from
one beamtime to the next (25-45 keV in the paper, 2.2). The implant materials
reproduce the paper's ambiguity: Mg attenuates almost like bone, Ti much more,
PEEK less. Vessels and lacunae are empty (dark) after critical-point drying, the
opposite of the histology, where they stain. Each beamtime also has its own blur
(detector and reconstruction), noise level, gain and offset, so the raw grey
values differ between pairs and normalisation (paper 2.5) matters.

Examples
--------
>>> import numpy as np
>>> labels = np.zeros((4, 16, 16), np.uint8); labels[:, 4:12, 4:12] = LABELS["dense_bone"]
>>> ct = simulate_ct(labels, "Ti", beamtime_params(0), np.random.default_rng(0))
>>> ct.dtype, bool(ct[:, 8, 8].mean() > ct[:, 0, 0].mean())
(dtype('float32'), True)
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from vstain.phantom.labels import LABELS, MATERIALS

#: Attenuation at 30 keV (relative to dense bone = 1) and its photoelectric fraction.
ATTENUATION: dict[str, tuple[float, float]] = {
    "background": (0.0, 0.0),
    "soft_tissue": (0.22, 0.35),
    "dense_bone": (1.0, 0.75),
    "new_bone": (0.62, 0.7),
    "degradation_layer": (0.5, 0.6),
    "vessel": (0.04, 0.3),
    "lacuna": (0.04, 0.3),
    "holder_wall": (0.3, 0.2),
}
#: The screw, per implant material: Mg close to bone, Ti brighter, PEEK darker.
SCREW_ATTENUATION: dict[str, tuple[float, float]] = {
    "Mg": (0.9, 0.6),
    "Ti": (3.2, 0.85),
    "PEEK": (0.24, 0.25),
}


def beamtime_params(beamtime: int) -> dict:
    """Acquisition settings of one beamtime (deterministic from its index).

    Parameters
    ----------
    beamtime : int
        Beamtime index; the same index always gives the same settings.

    Returns
    -------
    dict
        ``energy_kev``, ``gain``, ``offset``, ``noise`` (std relative to bone),
        ``blur_sigma`` (voxels), ``mineral_texture`` (relative spread of bone density).

    Examples
    --------
    >>> beamtime_params(1) == beamtime_params(1)
    True
    """
    if int(beamtime) < 0:
        raise ValueError(f"beamtime must be >= 0, got {beamtime}")
    rng = np.random.default_rng([int(beamtime), 0xC7])
    return {
        "beamtime": int(beamtime),
        "energy_kev": float(rng.uniform(25.0, 45.0)),
        "gain": float(rng.uniform(0.7, 1.4) * 10000.0),
        "offset": float(rng.uniform(-1500.0, 3000.0)),
        "noise": float(rng.uniform(0.03, 0.08)),
        "blur_sigma": float(rng.uniform(0.6, 1.1)),
        "mineral_texture": float(rng.uniform(0.03, 0.06)),
    }


def attenuation_table(material: str, energy_kev: float) -> np.ndarray:
    """Attenuation per label code at ``energy_kev`` (array indexed by label code)."""
    if material not in MATERIALS:
        raise ValueError(f"material must be one of {MATERIALS}, got {material!r}")
    table = np.zeros(max(LABELS.values()) + 1, np.float32)
    entries = dict(ATTENUATION, screw=SCREW_ATTENUATION[material])
    for name, (mu30, photo) in entries.items():
        table[LABELS[name]] = mu30 * (photo * (30.0 / energy_kev) ** 3 + (1 - photo))
    return table


def simulate_ct(labels: np.ndarray, material: str, beamtime_params: dict, rng: np.random.Generator) -> np.ndarray:
    """Simulate reconstructed CT grey values of a label volume (or slice).

    Parameters
    ----------
    labels : ndarray of uint8
        Label codes (:data:`LABELS`), any number of dimensions.
    material : {"Mg", "Ti", "PEEK"}
        Implant material (sets the screw's attenuation).
    beamtime_params : dict
        From :func:`beamtime_params`.
    rng : numpy.random.Generator
        Source of the noise and the bone-density texture.

    Returns
    -------
    ndarray of float32
        ``gain * blur(attenuation * texture) + offset + noise``; bone bright, background dark.
    """
    labels = np.asarray(labels)
    if labels.dtype != np.uint8:
        raise ValueError(f"labels must be uint8 label codes, got {labels.dtype}")
    p = beamtime_params
    mu = attenuation_table(material, p["energy_kev"])[labels]
    # Mineral density varies smoothly inside bone.
    texture = ndi.gaussian_filter(rng.standard_normal(labels.shape, dtype=np.float32), 2.0)
    texture *= p["mineral_texture"] / (texture.std() + 1e-12)
    bony = np.isin(labels, (LABELS["dense_bone"], LABELS["new_bone"]))
    mu[bony] *= 1 + texture[bony]
    mu = ndi.gaussian_filter(mu, p["blur_sigma"])
    mu += rng.standard_normal(labels.shape, dtype=np.float32) * np.float32(p["noise"])
    return (mu * np.float32(p["gain"]) + np.float32(p["offset"])).astype(np.float32)
