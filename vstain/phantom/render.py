"""Rendering the section's slide image in row strips, so a whole-slide image of any size fits in memory.

A section at the paper's 0.44 um is about 11.6k x 11.6k px: its labels and stain as whole
float arrays need tens of GB. Here every per-pixel step (the plane's labels, the soft-tissue
shift, stain uptake, artefacts, Beer-Lambert transmission, grain) runs on strips of rows with
the halo each neighbourhood operation needs (dilations, Gaussian smoothing), and the only
whole arrays are the uint8 results and the float32 random fields whose global standard
deviation scales them.

The rendering does not depend on the strip height: each random field is drawn from its
generator in the same order as one whole-array draw would (row blocks in C order, with the
generator's state saved at the start of each block so any rows can be drawn again), and
every filter sees the same neighbourhood. A slide rendered in one strip is the slide the
phantom drew before it rendered in strips (same generators, same draws, same arithmetic);
rendered in many strips it is the same image except for the last bits of one mean (the
thickness wedge's), which :mod:`tests.test_phantom` bounds.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(1)
>>> rows = NoiseRows(rng, (10, 4), block_rows=3)
>>> whole = np.random.default_rng(1).standard_normal((10, 4), dtype=np.float32)
>>> bool(np.array_equal(rows.rows(2, 7), whole[2:7]))
True
"""

from __future__ import annotations

import copy
import math

import numpy as np
from scipy import ndimage as ndi

from vstain.phantom.geometry import BlockGeometry, labels_at
from vstain.phantom.labels import LABELS, RIGID_LABELS
from vstain.phantom.section import ARTEFACT_CODES, histology_to_plane, plane_to_volume
from vstain.phantom.stain import concentration_table, transmit

#: Pixels per strip (rows x width): about 8 M px keeps every float temporary of a strip under ~200 MB.
STRIP_PIXELS = 2**23


class NoiseRows:
    """A standard-normal float32 field of ``shape`` drawn from ``rng`` in C order, any rows drawn again.

    Creating it advances ``rng`` past the whole field (as one ``rng.standard_normal(shape)`` would)
    and keeps the generator's state at the start of every block of ``block_rows`` rows.
    """

    def __init__(self, rng: np.random.Generator, shape: tuple[int, ...], block_rows: int, dtype=np.float32):
        self.dtype = np.dtype(dtype)  # the dtype drawn (float64 draws are another stream), returned as float32
        self.shape = tuple(int(n) for n in shape)
        self.block_rows = max(1, int(block_rows))
        self.row_size = math.prod(self.shape[1:])
        self.bit_generator = type(rng.bit_generator)
        self.states = []
        for start in range(0, self.shape[0], self.block_rows):
            self.states.append(copy.deepcopy(rng.bit_generator.state))
            rng.standard_normal(min(self.block_rows, self.shape[0] - start) * self.row_size, dtype=self.dtype)

    def rows(self, lo: int, hi: int) -> np.ndarray:
        """Rows ``lo:hi`` of the field."""
        block = lo // self.block_rows
        generator = np.random.Generator(self.bit_generator())
        generator.bit_generator.state = self.states[block]
        start = block * self.block_rows
        draws = generator.standard_normal((hi - start) * self.row_size, dtype=self.dtype)
        return draws[(lo - start) * self.row_size:].reshape((hi - lo,) + self.shape[1:]).astype(np.float32, copy=False)


def _halo(sigma: float) -> int:
    """Rows a Gaussian filter of ``sigma`` reaches (scipy's kernel radius at truncate 4)."""
    return int(4.0 * float(sigma) + 0.5)


def smooth_noise(noise: NoiseRows, sigma: float, strips: list[tuple[int, int]], out=None) -> np.ndarray:
    """The Gaussian-smoothed noise field, whole (float32), computed strip by strip with halos.

    Equal to ``ndi.gaussian_filter(noise, sigma)`` of the whole field drawn at once.
    """
    height = noise.shape[0]
    out = np.empty(noise.shape, np.float32) if out is None else out
    halo = _halo(sigma)
    for lo, hi in strips:
        a, b = max(0, lo - halo), min(height, hi + halo)
        out[lo:hi] = ndi.gaussian_filter(noise.rows(a, b), sigma)[lo - a:hi - a]
    return out


def row_strips(height: int, width: int, strip_pixels: int | None = None) -> list[tuple[int, int]]:
    """Row ranges ``(lo, hi)`` covering ``height`` rows with about ``strip_pixels`` pixels each.

    Examples
    --------
    >>> row_strips(10, 4, strip_pixels=12)
    [(0, 3), (3, 6), (6, 9), (9, 10)]
    """
    rows = max(1, int(strip_pixels or STRIP_PIXELS) // max(1, width))
    return [(lo, min(height, lo + rows)) for lo in range(0, height, rows)]


def _plane_points(plane_point, plane_axes, affine, lo: int, hi: int, width: int) -> np.ndarray:
    """Plane-pixel ``(i, j)`` of histology rows ``lo:hi``."""
    yx = np.stack(np.meshgrid(np.arange(lo, hi), np.arange(width), indexing="ij"), axis=-1)
    return histology_to_plane(affine, yx)


def cut_section(geometry: BlockGeometry, plane_point, plane_axes, affine, histology_shape,
                rng: np.random.Generator, strip_pixels: int | None = None) -> np.ndarray:
    """The true tissue labels of the section at histology pixel size, rendered in row strips.

    Soft tissue moves a little relative to the rigid bone (a smooth displacement of
    about one CT voxel) and retracts from the bone in places; the sample tube is not
    part of the section. Cracks, saw marks and droplets are not labels.
    """
    height, width = histology_shape
    strips = row_strips(height, width, strip_pixels)
    block = strips[0][1] - strips[0][0]
    ratio = float(np.sqrt(abs(np.linalg.det(affine[:2, :2]))))
    # Soft tissue is not rigid: its content shifts between CT and sectioning (one field per axis).
    channels = [NoiseRows(rng, (height, width), block, np.float64) for _ in range(2)]
    displacement = np.empty((2, height, width), np.float32)
    for channel, noise in zip(displacement, channels):
        smooth_noise(noise, 6.0 / ratio, strips, out=channel)
    displacement /= displacement.std() + 1e-12
    displacement *= rng.uniform(0.8, 1.6)
    retraction = smooth_noise(NoiseRows(rng, (height, width), block, np.float64), 4.0 / ratio, strips)
    retraction /= retraction.std() + 1e-12
    iterations = max(1, int(round(1 / ratio)))
    soft = (LABELS["soft_tissue"], LABELS["background"], LABELS["vessel"])
    labels = np.empty((height, width), np.uint8)
    for lo, hi in strips:
        a, b = max(0, lo - iterations), min(height, hi + iterations)
        ij = _plane_points(plane_point, plane_axes, affine, a, b, width)
        shifted_ij = ij + np.moveaxis(displacement[:, a:b], 0, -1)
        rows = labels_at(geometry, plane_to_volume(plane_point, plane_axes, ij))
        shifted = labels_at(geometry, plane_to_volume(plane_point, plane_axes, shifted_ij))
        movable = np.isin(rows, soft) & np.isin(shifted, soft[:2])
        rows[movable] = shifted[movable]
        # Marrow retracts from the bone surface in places (shrinkage during embedding).
        near_bone = ndi.binary_dilation(np.isin(rows, RIGID_LABELS), iterations=iterations)[lo - a:hi - a]
        rows = rows[lo - a:hi - a]
        retract = near_bone & (rows == LABELS["soft_tissue"]) & (retraction[lo:hi] > 1.0)
        rows[retract] = LABELS["background"]
        rows[rows == LABELS["holder_wall"]] = LABELS["background"]
        labels[lo:hi] = rows
    return labels


def _nth_true(mask_rows, strips, n: int) -> tuple[int, int]:
    """``(y, x)`` of the ``n``-th True pixel in C order of a mask given strip by strip."""
    for lo, hi in strips:
        rows = mask_rows(lo, hi)
        count = int(np.count_nonzero(rows))
        if n < count:
            y, x = np.unravel_index(np.flatnonzero(rows)[n], rows.shape)
            return lo + int(y), int(x)
        n -= count
    raise IndexError("fewer True pixels than asked for")


def render_slide(section_labels: np.ndarray, stain: str, params: dict, rng_stain: np.random.Generator,
                 rng_artefacts: np.random.Generator, strip_pixels: int | None = None):
    """Stain a section's labels and add its histology-only artefacts, in row strips.

    Stain uptake (a smooth texture per component, :func:`vstain.phantom.stain.concentration_table`),
    then the artefacts: a thickness wedge and saw marks, cracks through the bone (empty:
    white), stain droplets, and for H&E lost tissue beside the laser-cut implant; then the
    microscope (:func:`vstain.phantom.stain.transmit`: Beer-Lambert, blur, white point, grain).

    Returns
    -------
    histology : ndarray of uint8, (H, W, 3)
    artefacts : ndarray of uint8, (H, W)
        :data:`vstain.phantom.section.ARTEFACT_CODES` per pixel (0 where none).
    details : dict
    """
    height, width = section_labels.shape
    strips = row_strips(height, width, strip_pixels)
    block = strips[0][1] - strips[0][0]
    table = concentration_table(stain, params)
    n_components = table.shape[1]
    sigma = params["texture_sigma_px"]
    textures = []
    for _ in range(n_components - 1):  # the opaque component has no texture
        texture = smooth_noise(NoiseRows(rng_stain, (height, width), block), sigma, strips)
        texture *= params["texture_amplitude"] / (texture.std() + 1e-12)
        textures.append(texture)
    grain = NoiseRows(rng_stain, (height, width, 3), block)

    # Artefacts: every random number drawn first, in the order of a whole-slide rendering.
    rng = rng_artefacts
    side = min(height, width)
    details: dict = {"cracks": 0, "droplets": 0}
    angle = rng.uniform(0, np.pi)
    period = rng.uniform(0.03, 0.06) * side
    stripe_amplitude = rng.uniform(0.05, 0.12)
    wedge_amplitude = rng.uniform(-0.12, 0.12)
    details["saw_mark_period_px"] = float(period)
    cos, sin = np.cos(angle), np.sin(angle)
    if len(strips) == 1:
        yy, xx = np.meshgrid(np.arange(height, dtype=np.float32), np.arange(width, dtype=np.float32), indexing="ij")
        across_mean = (cos * yy + sin * xx).mean()
    else:  # strip by strip: equal to the whole mean but in its last bits
        across_mean = sum(float((cos * np.arange(lo, hi, dtype=np.float32)[:, None]
                                 + sin * np.arange(width, dtype=np.float32)).sum()) for lo, hi in strips)
        across_mean /= height * width
    corners = [cos * y + sin * x for y in (0.0, height - 1.0) for x in (0.0, width - 1.0)]
    across_ptp = max(corners) - min(corners)
    tissue = lambda lo, hi: section_labels[lo:hi] != LABELS["background"]  # noqa: E731
    n_tissue = sum(int(np.count_nonzero(tissue(lo, hi))) for lo, hi in strips)
    cracks = []
    n_cracks = int(rng.integers(0, 4)) if stain == "toluidine_blue" else int(rng.integers(0, 2))
    for _ in range(n_cracks):
        if not n_tissue:
            break
        y0, x0 = _nth_true(tissue, strips, int(rng.integers(n_tissue)))
        direction = rng.uniform(0, np.pi)
        length = rng.uniform(0.15, 0.4) * side
        wave = (rng.uniform(0.5, 2.0), rng.uniform(0.05, 0.15), rng.uniform(0, 6.3))
        cracks.append((np.int64(y0), np.int64(x0), direction, length, wave, rng.uniform(0.6, 1.3)))
        details["cracks"] += 1
    droplets = []
    for _ in range(int(rng.integers(1, 5))):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        radius = rng.uniform(0.008, 0.025) * side + 1.5
        droplets.append((cy, cx, radius, rng.uniform(0.6, 1.5)))
        details["droplets"] += 1
    lost = None
    if stain == "he" and any((section_labels[lo:hi] == LABELS["screw"]).any() for lo, hi in strips):
        # Laser cutting loses some tissue next to the implant.
        lost = smooth_noise(NoiseRows(rng, (height, width), block, np.float64), side / 25, strips)
        lost /= lost.std() + 1e-12
        details["tissue_loss_px"] = 0
    reach = max(2, side // 40)

    def concentrations(lo: int, hi: int):
        """Stain concentrations and artefact codes of rows ``lo:hi``."""
        labels = section_labels[lo:hi]
        conc = table[labels]
        for k, texture in enumerate(textures):
            conc[..., k] *= np.clip(1 + texture[lo:hi], 0.3, None)
        yy, xx = np.meshgrid(np.arange(lo, hi, dtype=np.float32), np.arange(width, dtype=np.float32), indexing="ij")
        codes = np.zeros(labels.shape, np.uint8)
        # Section thickness: a wedge across the slide and saw marks (periodic stripes).
        across = cos * yy + sin * xx
        stripes = 1 + stripe_amplitude * (2 * np.abs((across / period) % 1 - 0.5) - 0.5)
        wedge = 1 + wedge_amplitude * (across - across_mean) / (across_ptp + 1e-9)
        conc[..., :-1] *= (stripes * wedge)[..., None]
        rigid = np.isin(labels, RIGID_LABELS) & (labels != LABELS["screw"])
        for y0, x0, direction, length, (amplitude, wavelength, phase), half_width in cracks:
            u = np.cos(direction) * (yy - y0) + np.sin(direction) * (xx - x0)
            v = -np.sin(direction) * (yy - y0) + np.cos(direction) * (xx - x0)
            wave = amplitude * np.sin(2 * np.pi * u / wavelength / side + phase)
            crack = (np.abs(v - wave) < half_width) & (np.abs(u) < length / 2) & rigid
            conc[crack] = 0.0
            codes[crack] = ARTEFACT_CODES["crack"]
        for cy, cx, radius, amount in droplets:  # small dark blobs anywhere on the slide
            blob = np.clip(radius - np.hypot(yy - cy, xx - cx), 0, 1.5) / 1.5
            conc[..., 0] += amount * blob
            conc[..., 1] += 0.3 * amount * blob
            codes[(blob > 0.5) & (codes == 0)] = ARTEFACT_CODES["droplet"]
        if lost is not None:
            a, b = max(0, lo - reach), min(height, hi + reach)
            screw = section_labels[a:b] == LABELS["screw"]
            near = (ndi.binary_dilation(screw, iterations=reach) & ~screw)[lo - a:hi - a]
            loss = near & (lost[lo:hi] > 1.2)
            conc[loss] = 0.0
            codes[loss] = ARTEFACT_CODES["tissue_loss"]
        return conc, codes

    histology = np.empty((height, width, 3), np.uint8)
    artefacts = np.empty((height, width), np.uint8)
    blur = _halo(params.get("blur_sigma_px", 0)) if params.get("blur_sigma_px", 0) > 0 else 0
    for lo, hi in strips:
        a, b = max(0, lo - blur), min(height, hi + blur)
        conc, codes = concentrations(a, b)
        artefacts[lo:hi] = codes[lo - a:hi - a]
        if lost is not None:
            details["tissue_loss_px"] += int(np.count_nonzero(artefacts[lo:hi] == ARTEFACT_CODES["tissue_loss"]))
        histology[lo:hi] = transmit(conc, params, grain.rows(lo, hi), rows=slice(lo - a, hi - a))
    return histology, artefacts, details
