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
import dataclasses
import math

import numpy as np
from scipy import ndimage as ndi
from scipy.special import ndtri

from vstain.phantom.geometry import BlockGeometry, labels_at
from vstain.phantom.labels import LABELS, RIGID_LABELS
from vstain.phantom.section import ARTEFACT_CODES, SectionPreparation, histology_to_plane, plane_to_volume
from vstain.phantom.stain import concentration_table, expose

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


class SmoothField:
    """A smooth standard-normal random field over a slide, drawn on a coarse grid and interpolated.

    The whole coarse grid is drawn at once (its spacing half the correlation length), so any rows
    evaluate to the same values whatever the strips; the field is scaled to unit RMS over the slide.

    Examples
    --------
    >>> field = SmoothField(np.random.default_rng(0), (64, 48), pixel_um=2.5, correlation_um=40.0)
    >>> bool(np.allclose(field.rows(10, 20), field.rows(0, 64)[10:20]))
    True
    """

    def __init__(self, rng: np.random.Generator, shape: tuple[int, int], pixel_um: float, correlation_um: float):
        self.step = max(float(correlation_um) / float(pixel_um) / 2.0, 1.0)
        self.pad = 4
        self.width = int(shape[1])
        grid = [int(np.ceil((n - 1) / self.step)) + 1 + 2 * self.pad for n in shape]
        coarse = ndi.gaussian_filter(rng.standard_normal(grid), 1.0)
        self.coeffs = ndi.spline_filter(coarse, order=3)
        ys = np.linspace(0, shape[0] - 1, min(int(shape[0]), 256))
        xs = np.linspace(0, shape[1] - 1, min(int(shape[1]), 256))
        self.scale = 1.0 / (float(self._at(ys, xs).std()) + 1e-12)

    def _at(self, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        yy, xx = np.meshgrid(ys / self.step + self.pad, xs / self.step + self.pad, indexing="ij")
        return ndi.map_coordinates(self.coeffs, [yy, xx], order=3, prefilter=False, mode="nearest")

    def rows(self, lo: int, hi: int) -> np.ndarray:
        """Rows ``lo:hi`` of the field (float32)."""
        return (self._at(np.arange(lo, hi, dtype=float), np.arange(self.width, dtype=float))
                * self.scale).astype(np.float32)


@dataclasses.dataclass
class SectionCut:
    """A cut section's labels at histology pixel size (see :func:`cut_section`)."""

    labels: np.ndarray  # uint8 (H, W): the section's middle plane as it lies on the slide
    layers: np.ndarray  # uint8 (n, H, W): the sublayers through its thickness, as on the slide
    twin_labels: np.ndarray  # uint8 (H, W): the middle plane without preparation artefacts
    twin_layers: np.ndarray  # uint8 (n, H, W)
    cracks: np.ndarray  # bool (H, W): the open cracks' gaps
    details: dict


def _crack_rows(cracks: list[dict], lo: int, hi: int, width: int):
    """Displacement ``(2, rows, W)`` (slide pixels) and gap mask of the open cracks on rows ``lo:hi``.

    A crack is a wavy line; its two fragments move apart by ``opening`` at its middle (an
    elliptical opening, closing at its tips), the movement fading with the distance from it.
    """
    yy, xx = np.meshgrid(np.arange(lo, hi, dtype=np.float32), np.arange(width, dtype=np.float32), indexing="ij")
    shift = np.zeros((2,) + yy.shape, np.float32)
    gap = np.zeros(yy.shape, bool)
    for c in cracks:
        cos, sin = np.cos(c["direction"]), np.sin(c["direction"])
        u = cos * (yy - c["y0"]) + sin * (xx - c["x0"])
        v = -sin * (yy - c["y0"]) + cos * (xx - c["x0"])
        v = v - c["amplitude"] * np.sin(2 * np.pi * u / c["wavelength"] + c["phase"])
        along = np.clip(1 - (2 * u / c["length"]) ** 2, 0, 1)
        half_open = 0.5 * c["opening"] * np.sqrt(along)
        inside = np.abs(u) < c["length"] / 2
        gap |= inside & (np.abs(v) < c["half_width"] + half_open)
        fade = np.exp(-np.maximum(np.abs(v) - half_open, 0) / (c["length"] / 4))
        move = np.where(inside, -np.sign(v) * half_open * fade, 0).astype(np.float32)
        shift[0] += move * -sin
        shift[1] += move * cos
    return shift, gap


def cut_section(geometry: BlockGeometry, plane_point, plane_axes, affine, histology_shape,
                rng: np.random.Generator, strip_pixels: int | None = None, *,
                preparation: SectionPreparation | None = None, ct_voxel_um: float = 5.0) -> SectionCut:
    """The true tissue labels of the section at histology pixel size, rendered in row strips.

    Parameters
    ----------
    geometry : BlockGeometry
    plane_point, plane_axes : ndarray
        The section's middle plane in CT voxels.
    affine : (3, 3) ndarray
        Histology pixel ``[y, x, 1]`` -> plane pixel ``[i, j, 1]``.
    histology_shape : (int, int)
    rng : numpy.random.Generator
        Source of every random draw of the preparation.
    strip_pixels : int, optional
    preparation : SectionPreparation, optional
        Thickness and what preparation does to the section (default: one plane, gentle shifts).
    ct_voxel_um : float
        CT voxel size, to turn the preparation's lengths into voxels.

    Returns
    -------
    SectionCut
        The section's labels through its thickness as on the slide (soft tissue shifted and retracted,
        cracks opened, the whole warped in and out of its plane), the aligned twin's labels (the same
        planes where the CT says they are) and the cracks' gaps. The sample tube is not part of a
        section; saw marks and droplets are not labels.
    """
    prep = preparation or SectionPreparation()
    height, width = histology_shape
    strips = row_strips(height, width, strip_pixels)
    ratio = float(np.sqrt(abs(np.linalg.det(affine[:2, :2]))))  # CT px per slide px
    pixel_um = ratio * float(ct_voxel_um)
    normal = np.cross(plane_axes[0], plane_axes[1])
    offsets = prep.layer_offsets_um() / float(ct_voxel_um)  # voxels along the normal
    middle = int(np.argmin(np.abs(offsets)))
    need_middle = bool(abs(offsets[middle]) > 1e-9)
    iterations = max(1, int(round(1 / ratio)))
    soft = (LABELS["soft_tissue"], LABELS["background"], LABELS["vessel"])
    # Every random field drawn first, in a fixed order (strip-independent).
    soft_shift = [SmoothField(rng, histology_shape, pixel_um, 40.0) for _ in range(2)]
    warp = [SmoothField(rng, histology_shape, pixel_um, 300.0) for _ in range(2)]
    waviness = SmoothField(rng, histology_shape, pixel_um, 400.0)
    retraction = SmoothField(rng, histology_shape, pixel_um, 20.0)
    shift_px = prep.scaled("soft_tissue_shift_um") / float(ct_voxel_um) / np.sqrt(2)  # per axis, CT px
    warp_px = prep.scaled("residual_warp_um") / float(ct_voxel_um) / np.sqrt(2)
    wave_vox = prep.scaled("waviness_um") / float(ct_voxel_um)
    retract_fraction = prep.scaled("marrow_retraction")
    retract_cut = float(_normal_quantile(1 - retract_fraction)) if retract_fraction > 0 else np.inf

    def points(ij, depth):
        return plane_to_volume(plane_point, plane_axes, ij) + depth[..., None] * normal

    n = len(offsets)
    twin_layers = np.empty((n, height, width), np.uint8)
    twin_labels = np.empty((height, width), np.uint8)
    for lo, hi in strips:
        ij = _plane_points(plane_point, plane_axes, affine, lo, hi, width)
        flat = np.zeros(ij.shape[:-1])
        for k, offset in enumerate(offsets):
            twin_layers[k, lo:hi] = labels_at(geometry, points(ij, flat + offset))
        twin_labels[lo:hi] = (labels_at(geometry, points(ij, flat)) if need_middle else twin_layers[middle, lo:hi])
    twin_layers[twin_layers == LABELS["holder_wall"]] = LABELS["background"]
    twin_labels[twin_labels == LABELS["holder_wall"]] = LABELS["background"]

    cracks = _draw_cracks(rng, twin_labels, strips, prep, pixel_um)

    layers = np.empty((n, height, width), np.uint8)
    labels = np.empty((height, width), np.uint8)
    crack_map = np.zeros((height, width), bool)
    order = [middle] + [k for k in range(n) if k != middle]
    depths = list(offsets[order]) + ([0.0] if need_middle else [])
    for lo, hi in strips:
        a, b = max(0, lo - iterations), min(height, hi + iterations)
        shift, gap = _crack_rows(cracks, a, b, width)
        yx = np.stack(np.meshgrid(np.arange(a, b), np.arange(width), indexing="ij"), axis=-1) + np.moveaxis(shift, 0, -1)
        ij = histology_to_plane(affine, yx)
        ij = ij + np.stack([field.rows(a, b) for field in warp], axis=-1) * warp_px
        moved_ij = ij + np.stack([field.rows(a, b) for field in soft_shift], axis=-1) * shift_px
        wave = waviness.rows(a, b) * wave_vox
        near_retract = retraction.rows(lo, hi) > retract_cut
        gap_here = None
        for step, depth in enumerate(depths):
            rows = labels_at(geometry, points(ij, wave + depth))
            if shift_px > 0:
                shifted = labels_at(geometry, points(moved_ij, wave + depth))
                movable = np.isin(rows, soft) & np.isin(shifted, soft[:2])
                rows[movable] = shifted[movable]
            # Marrow retracts from the bone surface in places (shrinkage during embedding).
            near_bone = ndi.binary_dilation(np.isin(rows, RIGID_LABELS), iterations=iterations)[lo - a:hi - a]
            rows = rows[lo - a:hi - a]
            rows[near_bone & (rows == LABELS["soft_tissue"]) & near_retract] = LABELS["background"]
            rows[rows == LABELS["holder_wall"]] = LABELS["background"]
            if gap_here is None:  # the middle layer: a crack is open where it runs through rigid tissue
                gap_here = gap[lo - a:hi - a] & np.isin(rows, RIGID_LABELS) & (rows != LABELS["screw"])
                crack_map[lo:hi] = gap_here
            rows[gap_here] = LABELS["background"]
            if step < n:
                layers[order[step], lo:hi] = rows
            else:
                labels[lo:hi] = rows
        if not need_middle:
            labels[lo:hi] = layers[middle, lo:hi]
    details = {"cracks": len(cracks), "crack_opening_px": [round(c["opening"], 2) for c in cracks],
               "layer_offsets_um": [round(float(o), 3) for o in prep.layer_offsets_um()],
               "misalignment_strength": prep.strength}
    return SectionCut(labels=labels, layers=layers, twin_labels=twin_labels, twin_layers=twin_layers,
                      cracks=crack_map, details=details)


def _draw_cracks(rng: np.random.Generator, twin_labels: np.ndarray, strips: list[tuple[int, int]],
                 prep: SectionPreparation, pixel_um: float) -> list[dict]:
    """The section's cracks (start, direction, length, shape, opening), started in its middle's rigid tissue.

    Cracks start in rigid tissue that is not the screw; their number is Poisson with the
    preparation's mean (scaled by its misalignment strength).
    """
    height, width = twin_labels.shape
    side = min(height, width)
    crackable = lambda lo, hi: np.isin(twin_labels[lo:hi], RIGID_LABELS) & (twin_labels[lo:hi] != LABELS["screw"])  # noqa: E731
    n_crackable = sum(int(np.count_nonzero(crackable(lo, hi))) for lo, hi in strips)
    cracks = []
    for _ in range(int(rng.poisson(prep.cracks_per_section * prep.strength))):
        if not n_crackable:
            break
        y0, x0 = _nth_true(crackable, strips, int(rng.integers(n_crackable)))
        cracks.append({"y0": float(y0), "x0": float(x0), "direction": float(rng.uniform(0, np.pi)),
                       "length": float(rng.uniform(0.15, 0.4) * side),
                       "amplitude": float(rng.uniform(0.5, 2.0)), "wavelength": float(rng.uniform(0.05, 0.15) * side),
                       "phase": float(rng.uniform(0, 6.3)), "half_width": float(rng.uniform(0.6, 1.3)),
                       "opening": float(prep.scaled("crack_opening_um") / pixel_um * rng.uniform(0.5, 1.5))})
    return cracks


def _normal_quantile(q: float) -> float:
    """The standard normal's ``q`` quantile."""
    return float(ndtri(min(max(q, 1e-12), 1 - 1e-12)))


class Illumination:
    """The lamp's field over a slide imaged tile by tile: vignetting in each tile, a small gain per tile (seams).

    Examples
    --------
    >>> light = Illumination(np.random.default_rng(0), (40, 40), pixel_um=2.5, tile_um=50.0, vignetting=0.2)
    >>> rows = light.rows(0, 40)
    >>> bool(rows.max() <= 1.0 + 1e-6), bool(rows.min() > 0.7)
    (True, True)
    """

    def __init__(self, rng: np.random.Generator, shape: tuple[int, int], pixel_um: float, tile_um: float,
                 vignetting: float):
        self.tile = max(float(tile_um) / float(pixel_um), 2.0)
        self.offset = rng.uniform(0, self.tile, 2)
        n_tiles = [int(np.ceil((n + self.tile) / self.tile)) + 1 for n in shape]
        self.gains = 1 + 0.02 * rng.standard_normal(n_tiles)
        self.gains /= self.gains.max()
        self.vignetting = float(vignetting)
        self.width = int(shape[1])

    def rows(self, lo: int, hi: int) -> np.ndarray:
        """Relative illumination (<= 1) of rows ``lo:hi``."""
        y = (np.arange(lo, hi, dtype=float) + self.offset[0]) / self.tile
        x = (np.arange(self.width, dtype=float) + self.offset[1]) / self.tile
        fy, fx = y % 1 - 0.5, x % 1 - 0.5
        falloff = 1 - self.vignetting * 2 * (fy[:, None] ** 2 + fx[None, :] ** 2)  # 1 at a tile's centre
        return (self.gains[np.floor(y).astype(int)][:, np.floor(x).astype(int)] * falloff).astype(np.float32)


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


def render_slide(section_labels: np.ndarray, stain: str, params: dict,
                 rngs: tuple[np.random.Generator, np.random.Generator], strip_pixels: int | None = None, *,
                 preparation: SectionPreparation | None = None, pixel_um: float = 1.0,
                 cracks: np.ndarray | None = None, illumination: Illumination | None = None,
                 surface_artefacts: bool = True):
    """Stain a section's labels and add its histology-only artefacts, in row strips.

    Stain uptake (a smooth texture per component, :func:`vstain.phantom.stain.concentration_table`)
    in every sublayer of the section; each layer's optical density blurs as far as it lies out of the
    microscope's focus (``preparation``'s depth of field; the middle is in focus) and the layers'
    densities add up through the section's thickness (Beer-Lambert). On the surface: a thickness
    wedge and saw marks, stain droplets, and for H&E lost tissue beside the laser-cut implant (all
    left out with ``surface_artefacts=False``: the aligned twin). Then the microscope
    (:func:`vstain.phantom.stain.expose`: white point, the illumination of each tile, the camera's
    response, grain).

    Parameters
    ----------
    section_labels : ndarray of uint8
        ``(H, W)`` (one plane) or ``(n, H, W)`` (the sublayers of :func:`cut_section`).
    stain, params, strip_pixels
        The stain, its parameters and the rows per strip.
    rngs : (Generator, Generator)
        The generators of the stain's texture and grain and of the artefacts.
    preparation : SectionPreparation, optional
        Thickness and optics (its sublayers must match ``section_labels``).
    pixel_um : float
        The slide's pixel size (for the defocus blur).
    cracks : ndarray of bool, optional
        The open cracks' gaps (:attr:`SectionCut.cracks`), coded as cracks in the artefact map.
    illumination : Illumination, optional

    Returns
    -------
    histology : ndarray of uint8, (H, W, 3)
    artefacts : ndarray of uint8, (H, W)
        :data:`vstain.phantom.section.ARTEFACT_CODES` per pixel (0 where none).
    details : dict
    """
    rng_stain, rng_artefacts = rngs
    layers = section_labels[None] if section_labels.ndim == 2 else section_labels
    n_layers, height, width = layers.shape
    prep = preparation or SectionPreparation(sublayers=n_layers)
    if int(prep.sublayers) != n_layers:
        raise ValueError(f"render_slide: {n_layers} label layers for a preparation of {prep.sublayers} sublayers")
    strips = row_strips(height, width, strip_pixels)
    table = concentration_table(stain, params)
    od_vectors = np.asarray(params["od_vectors"], np.float32)
    psf = float(params.get("blur_sigma_px", 0))
    sigmas = [float(np.hypot(d, psf)) for d in prep.defocus_sigma_px(pixel_um)]
    textures, grain = _stain_noise(rng_stain, table.shape[1], params, (height, width), strips)
    middle = layers[int(np.argmin(np.abs(prep.layer_offsets_um())))]
    # artefacts: every random number drawn first, in the order of a whole-slide rendering
    surface = _draw_surface(rng_artefacts, stain, middle, strips, cracks, surface_artefacts)

    histology = np.empty((height, width, 3), np.uint8)
    artefacts = np.empty((height, width), np.uint8)
    halo = max((_halo(s) for s in sigmas if s > 0), default=0)
    for lo, hi in strips:
        a, b = max(0, lo - halo), min(height, hi + halo)
        scale, loss, codes = surface.rows(a, b)
        od = np.zeros((b - a, width, 3), np.float32)
        for layer, s in zip(layers, sigmas):
            conc = table[layer[a:b]]
            for k, texture in enumerate(textures):
                conc[..., k] *= np.clip(1 + texture[a:b], 0.3, None)
            conc[..., :-1] *= scale[..., None]
            conc[loss] = 0.0
            layer_od = conc @ od_vectors
            if s > 0:
                layer_od = ndi.gaussian_filter(layer_od, [s, s, 0])
            od += layer_od / np.float32(n_layers)
        if surface.droplets:  # small dark blobs on the surface, in focus
            od[lo - a:hi - a] += surface.droplet_od(lo, hi, codes[lo - a:hi - a], od_vectors, psf)
        artefacts[lo:hi] = codes[lo - a:hi - a]
        if surface.lost is not None:
            lost_here = artefacts[lo:hi] == ARTEFACT_CODES["tissue_loss"]
            surface.details["tissue_loss_px"] += int(np.count_nonzero(lost_here))
        light = illumination.rows(lo, hi) if illumination is not None else None
        histology[lo:hi] = expose(od[lo - a:hi - a], params, grain.rows(lo, hi), light)
    return histology, artefacts, surface.details


def _stain_noise(rng: np.random.Generator, n_components: int, params: dict, shape: tuple[int, int],
                 strips: list[tuple[int, int]]) -> tuple[list[np.ndarray], NoiseRows]:
    """The smooth uptake texture of each stain component but the opaque one, then the camera grain's field."""
    block = strips[0][1] - strips[0][0]
    textures = []
    for _ in range(n_components - 1):  # the opaque component has no texture
        texture = smooth_noise(NoiseRows(rng, shape, block), params["texture_sigma_px"], strips)
        texture *= params["texture_amplitude"] / (texture.std() + 1e-12)
        textures.append(texture)
    return textures, NoiseRows(rng, shape + (3,), block)


@dataclasses.dataclass
class _Surface:
    """The drawn surface artefacts of one slide: thickness wedge and saw marks, droplets, tissue lost to the laser."""

    middle: np.ndarray  # the in-focus layer's labels
    cracks: np.ndarray | None
    enabled: bool  # False: the aligned twin (no wedge, saw marks, droplets or lost tissue)
    cos: float
    sin: float
    period: float
    stripe_amplitude: float
    wedge_amplitude: float
    across_mean: float
    across_ptp: float
    droplets: list[tuple[float, float, float, float]]
    lost: np.ndarray | None
    reach: int
    details: dict

    def rows(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Optical-density scale, lost tissue and artefact codes of rows ``lo:hi``."""
        height, width = self.middle.shape
        yy, xx = np.meshgrid(np.arange(lo, hi, dtype=np.float32), np.arange(width, dtype=np.float32), indexing="ij")
        codes = np.zeros((hi - lo, width), np.uint8)
        if self.cracks is not None:
            codes[self.cracks[lo:hi]] = ARTEFACT_CODES["crack"]
        scale = np.ones((hi - lo, width), np.float32)
        if self.enabled:  # section thickness: a wedge across the slide and saw marks (periodic stripes)
            across = self.cos * yy + self.sin * xx
            stripes = 1 + self.stripe_amplitude * (2 * np.abs((across / self.period) % 1 - 0.5) - 0.5)
            scale = stripes * (1 + self.wedge_amplitude * (across - self.across_mean) / (self.across_ptp + 1e-9))
        loss = np.zeros((hi - lo, width), bool)
        if self.lost is not None:
            reach = self.reach
            a, b = max(0, lo - reach), min(height, hi + reach)
            screw = self.middle[a:b] == LABELS["screw"]
            near = (ndi.binary_dilation(screw, iterations=reach) & ~screw)[lo - a:hi - a]
            loss = near & (self.lost[lo:hi] > 1.2)
            codes[loss] = ARTEFACT_CODES["tissue_loss"]
        return scale, loss, codes

    def droplet_od(self, lo: int, hi: int, codes: np.ndarray, od_vectors: np.ndarray, psf: float) -> np.ndarray:
        """The droplets' optical density of rows ``lo:hi`` (blurred by the optics); marks them in ``codes``."""
        height, width = self.middle.shape
        psf_halo = _halo(psf) if psf > 0 else 0
        c0, c1 = max(0, lo - psf_halo), min(height, hi + psf_halo)
        yy, xx = np.meshgrid(np.arange(c0, c1, dtype=np.float32), np.arange(width, dtype=np.float32), indexing="ij")
        drop = np.zeros((c1 - c0, width, od_vectors.shape[0]), np.float32)
        for cy, cx, radius, amount in self.droplets:
            blob = np.clip(radius - np.hypot(yy - cy, xx - cx), 0, 1.5) / 1.5
            drop[..., 0] += amount * blob
            drop[..., 1] += 0.3 * amount * blob
            rows_inside = (blob > 0.5)[lo - c0:hi - c0]
            codes[rows_inside & (codes == 0)] = ARTEFACT_CODES["droplet"]
        drop_od = drop @ od_vectors
        if psf > 0:
            drop_od = ndi.gaussian_filter(drop_od, [psf, psf, 0])
        return drop_od[lo - c0:hi - c0]


def _draw_surface(rng: np.random.Generator, stain: str, middle: np.ndarray, strips: list[tuple[int, int]],
                  cracks: np.ndarray | None, enabled: bool) -> _Surface:
    """Draw the surface artefacts of a slide (all of them, also for the twin, so both draw the same numbers)."""
    height, width = middle.shape
    side = min(height, width)
    details: dict = {"cracks": 0 if cracks is None else int(ndi.label(cracks)[1]), "droplets": 0}
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
    droplets = []
    for _ in range(int(rng.integers(1, 5))):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        radius = rng.uniform(0.008, 0.025) * side + 1.5
        droplets.append((cy, cx, radius, rng.uniform(0.6, 1.5)))
    if enabled:
        details["droplets"] = len(droplets)
    else:
        droplets = []
    lost = None
    if enabled and stain == "he" and any((middle[lo:hi] == LABELS["screw"]).any() for lo, hi in strips):
        # laser cutting loses some tissue next to the implant
        block = strips[0][1] - strips[0][0]
        lost = smooth_noise(NoiseRows(rng, (height, width), block, np.float64), side / 25, strips)
        lost /= lost.std() + 1e-12
        details["tissue_loss_px"] = 0
    return _Surface(middle, cracks, enabled, cos, sin, period, stripe_amplitude, wedge_amplitude, across_mean,
                    max(corners) - min(corners), droplets, lost, max(2, side // 40), details)
