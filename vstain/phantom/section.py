"""Cutting the histology section: the oblique plane, the slide's affine distortion, artefacts.

The section is the block's tissue on a plane tilted up to ``max_tilt_deg`` off the
CT's z-slices, passing near the screw axis (the paper cuts along the screw). The
plane is parametrised in CT voxels: ``point(i, j) = plane_point + i * axes[0] +
j * axes[1]`` for plane-pixel coordinates ``(i, j)`` at CT pixel size. The
histology image samples that plane at its own finer pixel size through an
affine map ``[i, j, 1] = affine @ [y, x, 1]`` (pixel-size ratio, the section's
rotation on the slide, uniform over +/- ``rotation_deg`` (the whole circle in every
profile), a mirror for the ``mirror_fraction`` of sections mounted face down (the
dataset profile's ``slide_rotation_deg`` and ``mirror_fraction``), non-uniform scale and shear
from section preparation, translation). The slide image keeps the CT slice's size,
so at most rotations its corners show glass beyond the CT's field of view.

Effects that exist only in the section: soft tissue moves and retracts from the
bone (part of the section's true labels), cracks, saw marks, section-thickness
wedge and stain droplets (in the stain), and for laser-cut H&E a partial,
non-rectangular stitched field of view and lost tissue next to the implant. The section's
labels and slide image are rendered in row strips by :mod:`vstain.phantom.render`.

Examples
--------
>>> import numpy as np
>>> from vstain.phantom.geometry import draw_geometry
>>> rng = np.random.default_rng(0)
>>> geometry = draw_geometry((16, 64, 64), "Mg", rng)
>>> point, axes, normal = draw_plane(geometry, rng)
>>> np.allclose(axes @ axes.T, np.eye(2)), np.allclose(axes @ normal, 0)
(True, True)
"""

from __future__ import annotations

import numpy as np

from vstain.phantom.geometry import BlockGeometry

ARTEFACT_CODES = {"none": 0, "crack": 1, "droplet": 2, "tissue_loss": 3}


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rodrigues rotation matrix about a unit ``axis`` by ``angle`` radians."""
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)


def draw_plane(geometry: BlockGeometry, rng: np.random.Generator, max_tilt_deg: float = 4.0,
               min_tilt_deg: float = 0.0):
    """Draw the true section plane: near the screw axis, tilted uniformly between ``min_tilt_deg`` and ``max_tilt_deg``.

    The tilt turns the plane about a random in-plane direction through its centre; a steep tilt
    in a thin volume may take the plane's corners (glass, the tube) out of the volume, as on
    real blocks, but the block's tissue stays mostly inside.

    Returns
    -------
    plane_point : (3,) ndarray
        Voxel ``(z, y, x)`` of plane pixel ``(0, 0)``.
    plane_axes : (2, 3) ndarray
        Orthonormal directions of plane rows ``i`` and columns ``j`` (unit CT voxels).
    plane_normal : (3,) ndarray
    """
    _, ny, nx = geometry.shape
    center = np.array([geometry.screw_axis[0] + rng.uniform(-0.15, 0.15) * geometry.core_radius,
                       (ny - 1) / 2, (nx - 1) / 2])
    tilt = np.deg2rad(min_tilt_deg + rng.uniform(0.0, 1.0) * (max_tilt_deg - min_tilt_deg))
    direction = rng.uniform(0, 2 * np.pi)
    rotation = _rotation(np.array([0.0, np.sin(direction), np.cos(direction)]), tilt)
    normal = rotation @ np.array([1.0, 0, 0])
    axes = np.stack([rotation @ np.array([0, 1.0, 0]), rotation @ np.array([0, 0, 1.0])])
    point = center - (ny - 1) / 2 * axes[0] - (nx - 1) / 2 * axes[1]
    return point, axes, normal


#: Cyclic axis orders that carry the block's z axis (the section normal's) to volume axis 0, 1 or 2:
#: ``volume.transpose(order)``, and a point ``p`` moves to ``p[list(order)]``. A cyclic order is a
#: rotation, so a right-handed plane frame stays right-handed (a mirror stays a mirror).
NORMAL_AXIS_ORDERS = {0: (0, 1, 2), 1: (2, 0, 1), 2: (1, 2, 0)}
AXIS_NAMES = ("z", "y", "x")


def draw_normal_axis(rng: np.random.Generator, other_axis_fraction: float) -> int:
    """The volume axis the section normal lies along: 0 (z), or for ``other_axis_fraction`` of blocks 1 or 2.

    The block sits in its tube at any orientation and is cut along its screw wherever that
    lies, so the section's plane is a y or x "slice" of some volumes.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> sorted({draw_normal_axis(rng, 0.5) for _ in range(50)})
    [0, 1, 2]
    >>> draw_normal_axis(rng, 0.0)
    0
    """
    if rng.random() < other_axis_fraction:
        return int(rng.integers(1, 3))
    return 0


def plane_to_volume(plane_point: np.ndarray, plane_axes: np.ndarray, ij: np.ndarray) -> np.ndarray:
    """Voxel ``(z, y, x)`` coordinates of plane-pixel coordinates ``ij`` (``(..., 2)``)."""
    ij = np.asarray(ij, float)
    return plane_point + ij[..., :1] * plane_axes[0] + ij[..., 1:2] * plane_axes[1]


def draw_affine(plane_shape: tuple[int, int], pixel_ratio: float, rng: np.random.Generator, *,
                rotation_deg: float = 180.0, mirror_fraction: float = 0.3):
    """Draw the slide's affine map from histology pixels to plane pixels.

    Parameters
    ----------
    plane_shape : (int, int)
        Plane grid covered by the section, in CT pixels.
    pixel_ratio : float
        Histology pixel size / CT voxel size (< 1: the histology is finer).
    rotation_deg : float
        The section's rotation on the slide is uniform over +/- this (180: any).
    mirror_fraction : float
        The probability that the section lies face down.

    Returns
    -------
    affine : (3, 3) ndarray
        ``[i, j, 1] = affine @ [y, x, 1]``.
    histology_shape : (int, int)
    details : dict
        The drawn rotation (degrees), ``mirrored`` (the section lies face down: the
        affine flips the histology's columns, negative determinant), scales, shear and
        translation.
    """
    height, width = (int(round(n / pixel_ratio)) for n in plane_shape)
    angle = rng.uniform(-rotation_deg, rotation_deg)
    mirrored = bool(rng.random() < mirror_fraction)
    scale = 1 + rng.uniform(-0.03, 0.03, 2)
    shear = rng.uniform(-0.03, 0.03)
    shift = rng.uniform(-3.0, 3.0, 2)
    a = np.deg2rad(angle)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    flip = np.diag([1.0, -1.0]) if mirrored else np.eye(2)
    matrix = pixel_ratio * rot @ np.diag(scale) @ np.array([[1.0, shear], [0.0, 1.0]]) @ flip
    center_h = np.array([(height - 1) / 2, (width - 1) / 2])
    center_p = np.array([(plane_shape[0] - 1) / 2, (plane_shape[1] - 1) / 2]) + shift
    affine = np.eye(3)
    affine[:2, :2] = matrix
    affine[:2, 2] = center_p - matrix @ center_h
    details = {"rotation_deg": angle, "mirrored": mirrored, "scale_yx": scale.tolist(), "shear": shear,
               "translation_ij": shift.tolist(), "pixel_ratio": pixel_ratio}
    return affine, (height, width), details


def histology_to_plane(affine: np.ndarray, points_yx: np.ndarray) -> np.ndarray:
    """Plane-pixel ``(i, j)`` of histology pixels ``(y, x)`` (``(..., 2)``)."""
    points_yx = np.asarray(points_yx, float)
    return points_yx @ affine[:2, :2].T + affine[:2, 2]


def stitched_fov(histology_shape: tuple[int, int], center_yx, rng: np.random.Generator) -> np.ndarray:
    """A partial, non-rectangular field of view stitched from tiles around ``center_yx``.

    The union of microscope tiles whose centres fall inside an ellipse around the
    implant, with a few tiles missing and small stitching offsets.
    """
    height, width = histology_shape
    tile = max(8, int(min(height, width) / rng.uniform(4.0, 6.0)))
    semi = np.array([rng.uniform(0.3, 0.4) * height, rng.uniform(0.38, 0.48) * width])
    fov = np.zeros(histology_shape, bool)
    for ty in range(0, height, tile):
        for tx in range(0, width, tile):
            centre = np.array([ty + tile / 2, tx + tile / 2])
            inside = np.sum(((centre - np.asarray(center_yx)) / semi) ** 2) <= 1.0
            if not inside or rng.random() < 0.08:
                continue
            # Neighbouring tiles overlap by a few pixels (stitching), with small offsets.
            jy, jx = rng.integers(-2, 3, 2)
            fov[max(ty + jy - 2, 0):ty + jy + tile + 2, max(tx + jx - 2, 0):tx + jx + tile + 2] = True
    if not fov.any():  # degenerate draw: keep at least the tile around the centre
        cy, cx = (int(c) for c in center_yx)
        fov[max(cy - tile, 0):cy + tile, max(cx - tile, 0):cx + tile] = True
    return fov
