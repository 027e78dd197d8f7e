"""Geometry of a bone-implant block: the tissue labels as a function of position.

A trephine block of bone stands in a sample tube (the tube axis is the CT's z
axis, so every CT slice shows a disc of tissue inside a ring of tube wall). A
threaded screw runs along the x axis through the block, entering through a slab
of cortical bone. Around it: dense trabecular bone with vessels (canals elongated
along x) and lacunae (a few voxels wide), marrow (soft tissue), new
low-mineralised bone at the implant interface and, for Mg, a degradation layer
where the metal has corroded.

The geometry is continuous: :func:`labels_at` evaluates it at any point (voxel
coordinates ``z, y, x``), so the histology section is rendered at its own, finer
pixel size from the same tissue as the CT label volume (:func:`label_volume`).

Examples
--------
>>> import numpy as np
>>> geometry = draw_geometry((16, 48, 48), "Ti", np.random.default_rng(0))
>>> volume = label_volume(geometry)
>>> volume.shape, volume.dtype
((16, 48, 48), dtype('uint8'))
>>> bool((volume == LABELS["screw"]).any() and (volume == LABELS["holder_wall"]).any())
True
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from vstain.phantom.labels import LABELS, MATERIALS


@dataclasses.dataclass
class BlockGeometry:
    """Random draws that define one bone-implant block (voxel units, ``z, y, x``)."""

    shape: tuple[int, int, int]
    material: str
    tube_center: tuple[float, float]  # (y, x) of the sample tube axis
    tube_radii: tuple[float, float]  # inner, outer radius of the tube wall
    block_center: tuple[float, float]  # (y, x) of the trephine block axis
    block_radius: float
    block_wobble: tuple[float, float, float]  # relative amplitude, lobes, phase of the block outline
    screw_axis: tuple[float, float]  # (z, y) of the screw axis (it runs along x)
    screw_x: tuple[float, float]  # x of the screw head side and of the tip
    core_radius: float
    thread_depth: float
    pitch: float
    thread_phase: float
    cortex_x: float  # bone with x below this is the cortical slab
    degradation: tuple[float, float]  # metal lost inside / corrosion layer outside the surface (Mg)
    new_bone_width: float
    new_bone_threshold: float  # higher: patchier new bone
    bone_threshold: float  # trabecular bone where the bone field exceeds this
    vessel_threshold: float
    lacuna_radii: tuple[float, float, float]
    lacunae: np.ndarray  # (N, 3) lacuna centres
    fields: dict[str, np.ndarray]  # smooth random fields on the voxel grid, unit variance
    implant: str = "centre"  # where the screw runs: IMPLANT_PLACEMENTS


#: Where a block's screw runs: through the middle of the section (``centre``, the paper's blocks), along
#: the section's edge (``edge``: the implant barely in the section), or nowhere (``none``: a round block of
#: trabecular bone with no screw and no cortex, whose orientation only the texture of the bone carries).
IMPLANT_PLACEMENTS = ("centre", "edge", "none")
#: Where a block has no screw, its screw lies this far outside the volume (voxels): never reached.
_FAR = 1e9


def _smooth_noise(shape: tuple[int, ...], sigma, rng: np.random.Generator) -> np.ndarray:
    """A Gaussian random field of unit standard deviation (smoothing ``sigma`` in voxels)."""
    field = ndi.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma, mode="wrap")
    field -= field.mean()
    field /= field.std() + 1e-12
    return field


def draw_geometry(shape, material: str, rng: np.random.Generator, implant: str = "centre") -> BlockGeometry:
    """Draw one random bone-implant block of ``shape`` voxels.

    Parameters
    ----------
    shape : (Z, Y, X) sequence of int
        CT volume shape; the screw radius is limited by ``Z`` so the screw stays inside.
    material : {"Mg", "Ti", "PEEK"}
        Implant material; Mg gets a degradation layer and more new bone.
    rng : numpy.random.Generator
    implant : {"centre", "edge", "none"}
        Where the screw runs (:data:`IMPLANT_PLACEMENTS`). The draws are the same for every placement,
        so the three blocks of one seed share their bone: only the implant (and, with none, the cortex
        and the lobed outline, which would also break the block's symmetry) differ.

    Returns
    -------
    BlockGeometry
    """
    if material not in MATERIALS:
        raise ValueError(f"material must be one of {MATERIALS}, got {material!r}")
    if implant not in IMPLANT_PLACEMENTS:
        raise ValueError(f"implant must be one of {IMPLANT_PLACEMENTS}, got {implant!r}")
    nz, ny, nx = (int(s) for s in shape)
    if nz < 8 or ny < 32 or nx < 32:
        raise ValueError(f"ct_shape must be at least (8, 32, 32), got {tuple(shape)}")
    side = min(ny, nx)
    tube_center = ((ny - 1) / 2, (nx - 1) / 2)
    tube_radii = (0.465 * side, 0.49 * side)
    radius = 0.40 * side * rng.uniform(0.95, 1.0)
    # The block sits loosely in the tube: it is a little off its axis.
    slack = tube_radii[0] - radius * 1.04 - 1
    angle = rng.uniform(0, 2 * np.pi)
    offset = rng.uniform(0, max(slack, 0))
    block_center = (tube_center[0] + offset * np.sin(angle), tube_center[1] + offset * np.cos(angle))
    core = min(0.085 * side, 0.24 * nz)
    thread = 0.28 * core
    screw_axis = (
        (nz - 1) / 2 + rng.uniform(-0.5, 0.5),
        block_center[0] + rng.uniform(-0.06, 0.06) * radius,
    )
    x_head = block_center[1] - radius - 2  # the trephine cut through the screw head
    x_tip = block_center[1] + radius * rng.uniform(0.35, 0.55)
    if material == "Mg":
        degradation = (core * rng.uniform(0.12, 0.3), core * rng.uniform(0.1, 0.22))
        new_bone_width, new_bone_threshold = core * rng.uniform(0.35, 0.55), -0.6
    else:
        degradation = (0.0, 0.0)
        new_bone_width, new_bone_threshold = core * rng.uniform(0.15, 0.3), 0.0
    trabecular_sigma = max(4.0, 0.045 * side)
    fields = {
        "bone": _smooth_noise((nz, ny, nx), trabecular_sigma, rng),
        # Vessels (osteonal canals) are elongated along the bone's long axis (x).
        "vessel": _smooth_noise((nz, ny, nx), (0.9, 0.9, max(3.0, 0.03 * side)), rng),
        "interface": _smooth_noise((nz, ny, nx), max(1.5, 0.02 * side), rng),
    }
    lacuna_radii = (0.75, 0.75, 1.5)
    n_lacunae = int(nz * ny * nx / 260)
    lacunae = rng.uniform((0, 0, 0), (nz - 1, ny - 1, nx - 1), size=(n_lacunae, 3)).astype(np.float32)
    geometry = BlockGeometry(
        shape=(nz, ny, nx), material=material, tube_center=tube_center, tube_radii=tube_radii,
        block_center=block_center, block_radius=radius,
        block_wobble=(rng.uniform(0.01, 0.03), int(rng.integers(3, 7)), rng.uniform(0, 2 * np.pi)),
        screw_axis=screw_axis, screw_x=(x_head, x_tip), core_radius=core, thread_depth=thread,
        pitch=max(3.0, 0.5 * (core + thread)), thread_phase=rng.uniform(0, 1),
        cortex_x=block_center[1] - radius + 2 * radius * rng.uniform(0.12, 0.2),
        degradation=degradation, new_bone_width=new_bone_width, new_bone_threshold=new_bone_threshold,
        bone_threshold=rng.uniform(0.0, 0.25), vessel_threshold=rng.uniform(1.9, 2.1),
        lacuna_radii=lacuna_radii, lacunae=lacunae, fields=fields, implant=implant,
    )
    return _place_implant(geometry, implant)


def _place_implant(geometry: BlockGeometry, implant: str) -> BlockGeometry:
    """Move the drawn block's screw to ``implant``'s place (``centre``: as drawn)."""
    g = geometry
    if implant == "edge":
        # the screw's axis near the outline, so only its outer half lies in the block (and in the section)
        side = 1.0 if g.screw_axis[1] >= g.block_center[0] else -1.0
        axis_y = g.block_center[0] + side * (g.block_radius - 0.6 * g.core_radius)
        return dataclasses.replace(g, screw_axis=(g.screw_axis[0], axis_y))
    if implant == "none":
        # no screw (its head beyond reach), no cortical slab, a round outline: nothing but trabecular texture
        return dataclasses.replace(g, screw_x=(_FAR, _FAR), cortex_x=-_FAR, degradation=(0.0, 0.0),
                                   block_wobble=(0.0, g.block_wobble[1], g.block_wobble[2]))
    return g


def _field_at(geometry: BlockGeometry, name: str, points: np.ndarray | None) -> np.ndarray:
    field = geometry.fields[name]
    if points is None:  # evaluating on the voxel grid itself
        return field
    coords = points.reshape(-1, 3).T
    return ndi.map_coordinates(field, coords, order=1, mode="nearest").reshape(points.shape[:-1])


def screw_distance(geometry: BlockGeometry, z, y, x) -> np.ndarray:
    """Approximate signed distance (voxels) to the threaded screw surface (negative inside)."""
    g = geometry
    rho = np.hypot(z - g.screw_axis[0], y - g.screw_axis[1])
    theta = np.arctan2(z - g.screw_axis[0], y - g.screw_axis[1])
    # A single-start helical thread: triangular profile advancing one pitch per turn.
    phase = (x - g.screw_x[0]) / g.pitch + theta / (2 * np.pi) + g.thread_phase
    triangle = 2 * np.abs(phase - np.floor(phase) - 0.5)
    radius = g.core_radius + g.thread_depth * (1 - triangle)
    taper_length = 1.3 * g.core_radius
    radius = radius * np.sqrt(np.clip((g.screw_x[1] - x) / taper_length, 0, 1))
    return np.maximum(rho - radius, g.screw_x[0] - x)


def labels_at(geometry: BlockGeometry, points: np.ndarray | None = None) -> np.ndarray:
    """Tissue labels at ``points`` (array ``(..., 3)`` of voxel ``z, y, x``), or on the whole grid.

    Parameters
    ----------
    geometry : BlockGeometry
    points : ndarray, optional
        Voxel coordinates, last axis ``(z, y, x)``. ``None`` evaluates every voxel centre.

    Returns
    -------
    ndarray of uint8
        Label codes (:data:`LABELS`), shape ``points.shape[:-1]`` (or the volume shape).
    """
    g = geometry
    if points is None:
        z, y, x = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in g.shape), indexing="ij", sparse=True)
        out_shape = g.shape
    else:
        points = np.asarray(points, dtype=np.float32)
        z, y, x = points[..., 0], points[..., 1], points[..., 2]
        out_shape = points.shape[:-1]
    out = np.zeros(out_shape, np.uint8)
    radial_tube = np.hypot(y - g.tube_center[0], x - g.tube_center[1])
    out[np.broadcast_to((radial_tube >= g.tube_radii[0]) & (radial_tube < g.tube_radii[1]), out_shape)] = \
        LABELS["holder_wall"]
    dy, dx = y - g.block_center[0], x - g.block_center[1]
    amp, lobes, phase = g.block_wobble
    outline = g.block_radius * (1 + amp * np.sin(lobes * np.arctan2(dy, dx) + phase))
    inside = np.broadcast_to(np.hypot(dy, dx) < outline, out_shape)

    bone = _field_at(g, "bone", points)
    threshold = np.where(x < g.cortex_x, -1.4, g.bone_threshold)  # the cortex is almost solid bone
    dense = bone > threshold
    tissue = np.where(dense, LABELS["dense_bone"], LABELS["soft_tissue"]).astype(np.uint8)
    vessel = dense & (_field_at(g, "vessel", points) > g.vessel_threshold)
    tissue[vessel] = LABELS["vessel"]
    candidates = np.flatnonzero((dense & ~vessel).ravel())
    if candidates.size and len(g.lacunae):
        if points is None:
            coords = np.stack(np.unravel_index(candidates, g.shape), axis=1).astype(np.float32)
        else:
            coords = points.reshape(-1, 3)[candidates]
        scale = np.asarray(g.lacuna_radii, np.float32)
        dist, _ = cKDTree(g.lacunae / scale).query(coords / scale, k=1, distance_upper_bound=1.0)
        tissue.ravel()[candidates[np.isfinite(dist)]] = LABELS["lacuna"]

    # The implant and its interface.
    d = screw_distance(g, z, y, x)
    interface = _field_at(g, "interface", points)
    lost, grown = g.degradation
    if lost > 0:
        inner = lost * (1 + 0.35 * interface)
        outer = grown * (1 + 0.5 * interface)
        screw = d < -inner
        layer = (d >= -inner) & (d < outer)
        start = outer
    else:
        screw = d < 0
        layer = np.zeros_like(screw)
        start = 0.0
    new_bone = (d >= start) & (d < start + g.new_bone_width * (1 + 0.4 * interface)) & \
        (interface > g.new_bone_threshold)
    # Fibrous pockets where the bone did not reach the implant.
    gap = (d >= start) & (d < start + 0.25 * g.core_radius) & (interface < -1.2)
    tissue[np.broadcast_to(new_bone, out_shape)] = LABELS["new_bone"]
    tissue[np.broadcast_to(gap, out_shape)] = LABELS["soft_tissue"]
    tissue[np.broadcast_to(layer, out_shape)] = LABELS["degradation_layer"]
    tissue[np.broadcast_to(screw, out_shape)] = LABELS["screw"]
    out[inside] = tissue[inside]
    return out


def label_volume(geometry: BlockGeometry) -> np.ndarray:
    """The label volume (uint8, shape ``geometry.shape``) at the voxel centres."""
    return labels_at(geometry, None)
