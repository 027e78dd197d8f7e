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

The paper's CT is coarser than its histology (S3: a Fourier-ring resolution of about 5-6 px
against under 3 px at the same 5 um pixel): the beamtime's blur is drawn from the dataset
profile's ``ct_blur_voxels``. :class:`CTArtefacts` adds what real reconstructions show and the
phantom's histology never does: noise correlated by the reconstruction filter, ring artefacts
about the rotation axis (the tube's axis, z), streaks around a strongly attenuating Ti implant,
and marrow that is partly air after critical-point drying (paper 2.1), so the CT sees empty
pores where the section shows stained soft tissue.

Examples
--------
>>> import numpy as np
>>> labels = np.zeros((4, 16, 16), np.uint8); labels[:, 4:12, 4:12] = LABELS["dense_bone"]
>>> ct = simulate_ct(labels, "Ti", beamtime_params(0), np.random.default_rng(0))
>>> ct.dtype, bool(ct[:, 8, 8].mean() > ct[:, 0, 0].mean())
(dtype('float32'), True)
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage as ndi
from skimage.transform import iradon, radon

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


@dataclasses.dataclass(frozen=True)
class CTArtefacts:
    """Artefacts of the reconstruction and of the sample's drying (all amplitudes relative to dense bone).

    Parameters
    ----------
    noise_correlation_voxels : float
        Gaussian correlation length of the noise (0: white noise).
    ring_amplitude : float
        Peak amplitude of the rings about the rotation axis (0: none).
    metal_streak_amplitude : float
        Peak amplitude of the streaks a Ti screw casts (beam hardening; 0: none).
    marrow_air_fraction : float
        Fraction of the marrow that is air in the CT (critical-point drying, paper 2.1).

    Examples
    --------
    >>> CTArtefacts().ring_amplitude
    0.0
    """

    noise_correlation_voxels: float = 0.0
    ring_amplitude: float = 0.0
    metal_streak_amplitude: float = 0.0
    marrow_air_fraction: float = 0.0

    def __post_init__(self):
        for name in ("noise_correlation_voxels", "ring_amplitude", "metal_streak_amplitude"):
            value = getattr(self, name)
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"CTArtefacts.{name} must be a finite number >= 0, got {value!r}")
        if not 0 <= self.marrow_air_fraction <= 1:
            raise ValueError(f"CTArtefacts.marrow_air_fraction must be in [0, 1], got {self.marrow_air_fraction!r}")

    @classmethod
    def from_profile(cls, dataset_cfg) -> "CTArtefacts":
        """The artefacts a dataset profile asks for."""
        return cls(noise_correlation_voxels=float(dataset_cfg.ct_noise_correlation_voxels),
                   ring_amplitude=float(dataset_cfg.ct_ring_amplitude),
                   metal_streak_amplitude=float(dataset_cfg.ct_metal_streak_amplitude),
                   marrow_air_fraction=float(dataset_cfg.marrow_air_fraction))


def beamtime_params(beamtime: int, blur_voxels: tuple[float, float] = (0.6, 1.1)) -> dict:
    """Acquisition settings of one beamtime (deterministic from its index).

    Parameters
    ----------
    beamtime : int
        Beamtime index; the same index always gives the same settings.
    blur_voxels : (float, float)
        The range the beamtime's Gaussian blur (sigma, voxels) is drawn from (a dataset profile's
        ``ct_blur_voxels``; the default is the sharp CT of earlier phantoms).

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
    low, high = (float(b) for b in blur_voxels)
    if not 0 <= low <= high < 50:
        raise ValueError(f"blur_voxels must be a range 0 <= min <= max < 50 voxels, got {list(blur_voxels)}")
    rng = np.random.default_rng([int(beamtime), 0xC7])
    return {
        "beamtime": int(beamtime),
        "energy_kev": float(rng.uniform(25.0, 45.0)),
        "gain": float(rng.uniform(0.7, 1.4) * 10000.0),
        "offset": float(rng.uniform(-1500.0, 3000.0)),
        "noise": float(rng.uniform(0.03, 0.08)),
        "blur_sigma": float(low + rng.uniform(0.0, 1.0) * (high - low)),
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


def _rings(shape: tuple[int, ...], amplitude: float, rng: np.random.Generator) -> np.ndarray:
    """Ring artefacts of a slice ``shape[-2:]``: narrow rings of random sign about the centre (the rotation axis)."""
    ny, nx = shape[-2:]
    radius = np.hypot(*np.meshgrid(np.arange(ny) - (ny - 1) / 2, np.arange(nx) - (nx - 1) / 2, indexing="ij"))
    rings = np.zeros((ny, nx), np.float32)
    for _ in range(int(rng.integers(6, 16))):  # a few defective detector columns
        r0, width = rng.uniform(2.0, radius.max()), rng.uniform(0.5, 1.2)
        rings += np.float32(rng.uniform(-1, 1)) * np.exp(-0.5 * ((radius - r0) / width) ** 2).astype(np.float32)
    return (amplitude * rings / (np.abs(rings).max() + 1e-12)).astype(np.float32)


def _metal_streaks(metal: np.ndarray, amplitude: float) -> np.ndarray:
    """Beam-hardening streaks of a metal mask ``(..., Y, X)``, slice by slice, peak ``amplitude``.

    The detector sees the metal's path length squared (the beam hardens along it); filtered
    back-projection of that error gives the dark bands between metal parts and the bright
    rays beside them that real scans of Ti implants show.
    """
    streaks = np.zeros(metal.shape, np.float32)
    flat = metal.reshape((-1,) + metal.shape[-2:])
    out = streaks.reshape(flat.shape)
    side = max(metal.shape[-2:])
    theta = np.linspace(0.0, 180.0, 60, endpoint=False)
    for k, mask in enumerate(flat):
        if not mask.any():
            continue
        square = np.zeros((side, side), np.float32)
        square[:mask.shape[0], :mask.shape[1]] = mask
        sinogram = radon(square, theta, circle=False)
        error = -(sinogram / side) ** 2  # hardening: the error grows with the squared path length
        image = iradon(error, theta, output_size=side, circle=False, filter_name="ramp")
        out[k] = image[:mask.shape[0], :mask.shape[1]]
    peak = np.abs(streaks[~metal]).max() if (~metal).any() else 0.0
    return (amplitude * streaks / (peak + 1e-12)).astype(np.float32)


def simulate_ct(labels: np.ndarray, material: str, beamtime_params: dict, rng: np.random.Generator,
                artefacts: CTArtefacts | None = None) -> np.ndarray:
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
    artefacts : CTArtefacts, optional
        Reconstruction and drying artefacts (default: none). Rings and streaks need a volume
        whose z axis is the rotation axis (the block's frame, before any axis turn).

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
    artefacts = artefacts or CTArtefacts()
    if artefacts.marrow_air_fraction > 0:
        # Critical-point drying leaves parts of the marrow empty: air in the CT, tissue in the section.
        field = ndi.gaussian_filter(rng.standard_normal(labels.shape, dtype=np.float32), 3.0)
        marrow = labels == LABELS["soft_tissue"]
        if marrow.any():
            cut = np.quantile(field[marrow], 1 - artefacts.marrow_air_fraction)
            mu[marrow & (field > cut)] = 0.0
    if artefacts.metal_streak_amplitude > 0 and material == "Ti" and labels.ndim >= 2:
        bone = attenuation_table(material, p["energy_kev"])[LABELS["dense_bone"]]
        mu += bone * _metal_streaks(labels == LABELS["screw"], artefacts.metal_streak_amplitude)
    mu = ndi.gaussian_filter(mu, p["blur_sigma"])
    noise = rng.standard_normal(labels.shape, dtype=np.float32)
    if artefacts.noise_correlation_voxels > 0:  # the reconstruction filter correlates neighbouring voxels
        noise = ndi.gaussian_filter(noise, artefacts.noise_correlation_voxels)
        noise /= noise.std() + 1e-12
    mu += noise * np.float32(p["noise"])
    if artefacts.ring_amplitude > 0 and labels.ndim >= 2:
        bone = attenuation_table(material, p["energy_kev"])[LABELS["dense_bone"]]
        mu += bone * _rings(labels.shape, artefacts.ring_amplitude, rng)
    return (mu * np.float32(p["gain"]) + np.float32(p["offset"])).astype(np.float32)
