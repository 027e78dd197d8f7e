"""Optical-density (Beer-Lambert) stain model: label image -> stained RGB.

Each tissue label binds an amount ``c_k`` of each stain component ``k``; light
through the section is attenuated as ``I = I_0 * exp(-sum_k c_k * OD_k)`` per
colour channel, where ``OD_k`` is the component's optical-density vector (its
absorbance in R, G, B) and ``I_0`` the white point of the microscope.

Toluidine blue - pyronin Y as paper 2.1 describes it: the bone in shades of purple
(the two dyes together; darker than the slide and than the soft tissue), the soft
tissue with more of a blue tint (brownish on some slides, paper 3.1: a third, brown
component), new woven bone at the implant bright blue, the screw and its residue black
(ground sections keep the implant), the Mg degradation layer a dark greyish mauve. H&E
(paper S2.1): mineralised bone deep pink-red, soft tissue purple, the laser-cut screw
missing (white).

Per staining session the white point drifts (white balance) and stain uptake
varies, and the session's slides were imaged with one of the paper's two cameras
(2.2: a colour response of its own); per slide the uptake varies again
(:func:`slide_params`) and has a smooth texture, and the camera adds grain.
The model works on label arrays of any shape, so the true stained 3D volume is
known too.

Examples
--------
>>> import numpy as np
>>> params = session_params("toluidine_blue", 0)
>>> codes = [LABELS["background"], LABELS["screw"], LABELS["new_bone"]]
>>> labels = np.repeat(np.array(codes, np.uint8), 8)[None].repeat(8, axis=0)  # three 8x8 blocks
>>> rgb = stain_labels(labels, "toluidine_blue", params, np.random.default_rng(0))
>>> rgb.shape, bool(rgb[4, 4].min() > 200), bool(rgb[4, 12].max() < 40)
((8, 24, 3), True, True)
>>> bool(rgb[4, 20, 2] > rgb[4, 20, 0] + 50)   # new bone is blue
True
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from vstain.phantom.labels import LABELS, STAINS

#: Optical-density vectors (absorbance in R, G, B per unit concentration) of each component.
OD_VECTORS: dict[str, dict[str, tuple[float, float, float]]] = {
    "toluidine_blue": {
        "toluidine_blue": (0.80, 0.55, 0.12),  # absorbs red: blue
        "pyronin_y": (0.08, 0.70, 0.30),  # absorbs green: red-pink
        "brown": (0.20, 0.40, 0.75),  # absorbs blue: the brownish soft tissue of some slides (paper 3.1)
        "opaque": (1.0, 1.0, 1.0),  # metal and its residues: black
    },
    "he": {
        "hematoxylin": (0.62, 0.72, 0.30),  # blue-purple
        "eosin": (0.10, 0.85, 0.55),  # deep pink-red
        "opaque": (1.0, 1.0, 1.0),
    },
}

#: Concentration of each component (same order as OD_VECTORS) bound by each label.
CONCENTRATIONS: dict[str, dict[str, tuple[float, float, float]]] = {
    "toluidine_blue": {  # paper 2.1: bone purple and darker, soft tissue bluish, new bone bright blue
        "background": (0.0, 0.0, 0.0, 0.0),
        "soft_tissue": (0.45, 0.12, 0.0, 0.0),  # light blue (about 176, 183, 233)
        "dense_bone": (0.57, 0.97, 0.0, 0.0),  # purple (about 150, 95, 178)
        "new_bone": (1.40, 0.15, 0.0, 0.0),  # young woven bone: bright blue (about 80, 103, 205)
        "degradation_layer": (0.25, 0.25, 0.35, 0.30),  # greyish mauve, apart from the black alloy (about 141, 120, 130)
        "screw": (0.0, 0.0, 0.0, 4.0),  # black (ground sections keep the implant)
        "vessel": (0.60, 0.20, 0.0, 0.0),  # canal contents: cells, blue
        "lacuna": (1.60, 0.50, 0.0, 0.0),  # osteocytes: dark blue dots
        "holder_wall": (0.0, 0.0, 0.0, 0.0),  # not in the section
    },
    "he": {
        "background": (0.0, 0.0, 0.0),
        "soft_tissue": (0.95, 0.35, 0.0),  # purple
        "dense_bone": (0.12, 1.45, 0.0),  # deep pink-red
        "new_bone": (0.15, 0.55, 0.0),  # pale pink
        "degradation_layer": (0.2, 0.45, 0.08),  # pale pink-grey (kept by laser cutting)
        "screw": (0.0, 0.0, 0.0),  # laser cutting removes the implant: white
        "vessel": (0.7, 0.3, 0.0),
        "lacuna": (1.3, 0.6, 0.0),
        "holder_wall": (0.0, 0.0, 0.0),
    },
}


#: The brownish soft tissue of some slides (paper 3.1): toluidine blue, pyronin Y and brown.
BROWN_SOFT_TISSUE = (0.15, 0.10, 0.35)

#: The two cameras of paper 2.2: a colour-mixing matrix (rows: output R, G, B) and a gamma each.
CAMERAS: tuple[dict, ...] = (
    {"name": "camera 1", "matrix": [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], "gamma": 1.0},
    {"name": "camera 2", "matrix": [[0.93, 0.07, 0.0], [0.03, 0.91, 0.06], [0.0, 0.08, 0.92]], "gamma": 0.85},
)


def _check_stain(stain: str) -> None:
    if stain not in STAINS:
        raise ValueError(f"stain must be one of {STAINS}, got {stain!r}")


def session_params(stain: str, session: int, n_cameras: int = 1) -> dict:
    """Stain-model parameters of one staining/imaging session (deterministic from its index).

    The session sets the microscope white point (white-balance drift), how strongly
    each stain component was taken up, and the camera (session ``k`` uses camera
    ``k % n_cameras`` of :data:`CAMERAS`); the tissue tables are shared.

    Returns
    -------
    dict (JSON-serialisable)
        ``stain``, ``session``, ``components``, ``od_vectors`` (K x 3), ``concentrations``
        (label name -> K values), ``uptake`` (K factors), ``white`` (RGB, 0-255),
        ``texture_amplitude``, ``texture_sigma_px``, ``grain``, ``blur_sigma_px``, ``camera`` (name,
        matrix, gamma).

    Examples
    --------
    >>> session_params("he", 1)["components"]
    ['hematoxylin', 'eosin', 'opaque']
    >>> session_params("he", 1, n_cameras=2)["camera"]["name"]
    'camera 2'
    """
    _check_stain(stain)
    if int(session) < 0:
        raise ValueError(f"session must be >= 0, got {session}")
    if not 1 <= int(n_cameras) <= len(CAMERAS):
        raise ValueError(f"n_cameras must be between 1 and {len(CAMERAS)}, got {n_cameras}")
    rng = np.random.default_rng([int(session), STAINS.index(stain), 0x57A1])
    components = list(OD_VECTORS[stain])
    white = 255.0 * np.clip(1.0 - rng.uniform(0.0, 0.09, 3), 0, 1)
    return {
        "stain": stain,
        "session": int(session),
        "components": components,
        "od_vectors": [list(OD_VECTORS[stain][c]) for c in components],
        "concentrations": {name: list(v) for name, v in CONCENTRATIONS[stain].items()},
        "uptake": [float(u) for u in rng.uniform(0.8, 1.2, len(components) - 1)] + [1.0],
        "white": [float(w) for w in white],
        "texture_amplitude": float(rng.uniform(0.12, 0.22)),
        "texture_sigma_px": float(rng.uniform(1.5, 3.0)),
        "grain": float(rng.uniform(2.0, 4.0)),
        "blur_sigma_px": 0.7,
        "camera": dict(CAMERAS[int(session) % int(n_cameras)]),
    }


def slide_params(params: dict, rng: np.random.Generator, hue_jitter: float = 0.0,
                 brown_fraction: float = 0.0) -> dict:
    """One slide's stain parameters: its session's, with the slide's own uptake (paper 3.1).

    Parameters
    ----------
    params : dict
        From :func:`session_params`.
    rng : numpy.random.Generator
    hue_jitter : float
        Relative spread (standard deviation) of each stain component's uptake on this slide.
    brown_fraction : float
        Probability that the slide's soft tissue stains brownish (toluidine blue only).

    Returns
    -------
    dict
        A copy of ``params`` with ``uptake`` drawn again around the session's and ``brown_soft_tissue``.

    Examples
    --------
    >>> p = slide_params(session_params("toluidine_blue", 0), np.random.default_rng(1), 0.1, 1.0)
    >>> p["brown_soft_tissue"], p["concentrations"]["soft_tissue"][2] > 0
    (True, True)
    """
    if not (np.isfinite(hue_jitter) and 0 <= hue_jitter <= 1):
        raise ValueError(f"hue_jitter must be in [0, 1], got {hue_jitter!r}")
    if not 0 <= brown_fraction <= 1:
        raise ValueError(f"brown_fraction must be in [0, 1], got {brown_fraction!r}")
    out = {**params, "concentrations": {k: list(v) for k, v in params["concentrations"].items()}}
    n_stains = len(params["uptake"]) - 1  # the opaque component takes no uptake
    jitter = np.clip(1 + hue_jitter * rng.standard_normal(n_stains), 0.5, 1.5) if hue_jitter > 0 else np.ones(n_stains)
    out["uptake"] = [float(u * j) for u, j in zip(params["uptake"][:-1], jitter)] + [1.0]
    brown = bool(params["stain"] == "toluidine_blue" and brown_fraction > 0 and rng.random() < brown_fraction)
    if brown:
        out["concentrations"]["soft_tissue"] = list(BROWN_SOFT_TISSUE) + [0.0]
    out["brown_soft_tissue"] = brown
    return out


def camera_response(rgb: np.ndarray, camera: dict | None) -> np.ndarray:
    """A camera's colour response on linear intensities in 0-255 (float; ``None``: the identity)."""
    if not camera:
        return rgb
    matrix = np.asarray(camera["matrix"], np.float32)
    out = np.clip(rgb @ matrix.T, 0, 255) / np.float32(255)
    return np.float32(255) * out ** np.float32(camera["gamma"])


def concentration_table(stain: str, params: dict) -> np.ndarray:
    """Concentration ``(n_labels, K)`` (float32) of each stain component bound by each label code, times uptake.

    Examples
    --------
    >>> concentration_table("he", session_params("he", 0)).shape
    (9, 3)
    >>> concentration_table("toluidine_blue", session_params("toluidine_blue", 0)).shape
    (9, 4)
    """
    _check_stain(stain)
    if params.get("stain") != stain:
        raise ValueError(f"stain params are for {params.get('stain')!r}, not {stain!r}")
    n_components = len(params["components"])
    table = np.zeros((max(LABELS.values()) + 1, n_components), np.float32)
    for name, values in params["concentrations"].items():
        table[LABELS[name]] = values
    table *= np.asarray(params["uptake"], np.float32)
    return table


def stain_concentrations(labels: np.ndarray, stain: str, params: dict, rng: np.random.Generator) -> np.ndarray:
    """Stain concentrations ``(..., K)`` bound by a label image, with smooth uptake texture."""
    table = concentration_table(stain, params)
    labels = np.asarray(labels)
    if labels.dtype != np.uint8:
        raise ValueError(f"labels must be uint8 label codes, got {labels.dtype}")
    conc = table[labels]
    sigma = params["texture_sigma_px"]
    for k in range(table.shape[1] - 1):  # the opaque component has no texture
        texture = ndi.gaussian_filter(rng.standard_normal(labels.shape, dtype=np.float32), sigma)
        texture *= params["texture_amplitude"] / (texture.std() + 1e-12)
        conc[..., k] *= np.clip(1 + texture, 0.3, None)
    return conc


def transmit(concentrations: np.ndarray, params: dict, grain: np.ndarray, rows: slice = slice(None)) -> np.ndarray:
    """Beer-Lambert transmission of concentrations ``(..., K)`` -> uint8 RGB ``(..., 3)``.

    ``grain`` is the camera's standard-normal noise (scaled by ``params["grain"]``) of the
    pixels kept: ``concentrations[rows]``; the rows around them only feed the optics' blur
    (a slide rendered in strips passes each strip with its halo).
    """
    od = concentrations @ np.asarray(params["od_vectors"], np.float32)
    if params.get("blur_sigma_px", 0) > 0:  # optics: the microscope's point-spread function
        sigma = [params["blur_sigma_px"]] * (od.ndim - 1) + [0]
        od = ndi.gaussian_filter(od, sigma)
    return expose(od[rows], params, grain)


def expose(od: np.ndarray, params: dict, grain: np.ndarray, illumination: np.ndarray | None = None) -> np.ndarray:
    """The camera's image of optical densities ``(..., 3)``: white point, illumination, response, grain -> uint8.

    Examples
    --------
    >>> p = session_params("toluidine_blue", 0)
    >>> expose(np.zeros((1, 1, 3), np.float32), p, np.zeros((1, 1, 3), np.float32)).tolist() == [[[round(w) for w in p["white"]]]]
    True
    """
    rgb = np.asarray(params["white"], np.float32) * np.exp(-od)
    if illumination is not None:  # the lamp's field across each microscope tile (vignetting, seams)
        rgb *= illumination[..., None]
    rgb = camera_response(rgb, params.get("camera"))
    rgb += grain * np.float32(params["grain"])
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def render_stain(concentrations: np.ndarray, params: dict, rng: np.random.Generator) -> np.ndarray:
    """Beer-Lambert transmission of concentrations ``(..., K)`` -> uint8 RGB ``(..., 3)``, grain from ``rng``."""
    grain = rng.standard_normal(concentrations.shape[:-1] + (3,), dtype=np.float32)
    return transmit(concentrations, params, grain)


def stain_labels(labels: np.ndarray, stain: str, params: dict, rng: np.random.Generator) -> np.ndarray:
    """Stain a label image of any shape with the Beer-Lambert optical-density model.

    Parameters
    ----------
    labels : ndarray of uint8
        Label codes (:data:`LABELS`), 2D slice or 3D volume.
    stain : {"toluidine_blue", "he"}
    params : dict
        From :func:`session_params` (or a sample's ``stain_params``).
    rng : numpy.random.Generator
        Source of the uptake texture and camera grain.

    Returns
    -------
    ndarray of uint8, shape ``labels.shape + (3,)``
    """
    return render_stain(stain_concentrations(labels, stain, params, rng), params, rng)
