"""A hand-built registration case the phantom does not make: a round block of porous bone with no screw.

The block is a cylinder (axis along the volume's z) of trabecular-like bone: smoothed Gaussian noise
thresholded into bone and pores, soft tissue in the pores, embedding around the cylinder. The section is
one CT plane (a z slice) sampled at twice the CT resolution, coloured like a toluidine-blue slide (bone
purple, soft tissue pale blue, glass white), turned on its slide by any angle and optionally mirrored.
Nothing about the section's orientation is carried by the outline (a disc): only the texture tells it.

Shared by the tests (``tests/test_registration_texture.py``) and the benchmarks
(``benchmarks/registration_texture.py``, which puts this folder on ``sys.path``). A case carries what
:func:`vstain.phantom.truth.registration_errors` reads: ``plane_normal``, ``histology_to_volume``,
``section_labels``, ``fov_mask`` and the pixel sizes.

Examples
--------
>>> case = texture_block((24, 64, 64), angle_deg=37.0, mirrored=True, seed=1)
>>> case.histology.shape[-1], case.histology.dtype.name, case.ct_volume.shape
(3, 'uint8', (24, 64, 64))
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import ndimage as ndi

#: Toluidine-blue-like colours (RGB) of glass, soft tissue and bone.
GLASS, SOFT, BONE = (244, 242, 246), (188, 196, 228), (112, 62, 150)
#: CT values of embedding (outside the block), soft tissue and bone (before blur and noise).
CT_OUTSIDE, CT_SOFT, CT_BONE = 0.1, 0.35, 1.0


@dataclasses.dataclass
class TextureCase:
    """A texture-only pair and its truth: the section's pixel ``(y, x)`` lies at ``histology_to_volume``."""

    pair_id: str
    ct_volume: np.ndarray
    histology: np.ndarray
    ct_voxel_um: float
    histology_pixel_um: float
    section_labels: np.ndarray  # 0 glass, 1 soft tissue, 2 bone
    fov_mask: np.ndarray
    affine: np.ndarray  # (3, 3): histology (y, x, 1) -> plane (i, j, 1), CT pixels
    origin: np.ndarray  # voxel (z, y, x) of plane pixel (0, 0)
    axes: np.ndarray  # (2, 3): voxel steps per plane pixel along i and j
    angle_deg: float
    mirrored: bool

    @property
    def plane_normal(self) -> np.ndarray:
        normal = np.cross(self.axes[0], self.axes[1])
        return normal / np.linalg.norm(normal)

    def histology_to_volume(self, points_yx: np.ndarray) -> np.ndarray:
        """Histology pixels ``(N, 2)`` (y, x) -> CT voxel coordinates ``(N, 3)`` (z, y, x)."""
        points = np.asarray(points_yx, float)
        ij = points @ self.affine[:2, :2].T + self.affine[:2, 2]
        return self.origin + ij[:, :1] * self.axes[0] + ij[:, 1:] * self.axes[1]


def porous_field(shape, seed: int, pore_um: float = 20.0, ct_voxel_um: float = 5.0) -> np.ndarray:
    """Smoothed Gaussian noise of unit spread: thresholded, trabecular-like bone and pores about ``pore_um`` across."""
    rng = np.random.default_rng(seed)
    sigma = pore_um / ct_voxel_um / 2.0
    field = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="wrap")
    return field / field.std()


def texture_block(ct_shape=(40, 128, 128), *, angle_deg: float = 0.0, mirrored: bool = False, depth: int | None = None,
                  seed: int = 0, ct_voxel_um: float = 5.0, upsample: int = 2, section_px: int | None = None,
                  bone_fraction: float = 0.4, pore_um: float = 20.0, tilt_deg: float = 0.0) -> TextureCase:
    """A round block of porous bone and one of its z planes as a turned (and mirrored) stained section.

    Parameters
    ----------
    ct_shape : (int, int, int)
        The CT's (Z, Y, X); the cylinder's radius is 0.42 of the smaller of Y and X.
    angle_deg, mirrored
        The section's turn on its slide (about the slide's centre) and whether it lies face down.
    depth : int, optional
        The z slice cut (default: the middle one).
    seed : int
        The texture's seed (the section's colour noise too).
    ct_voxel_um, upsample
        The CT voxel size and how many histology pixels per CT pixel.
    section_px : int, optional
        The square slide's side in histology pixels (default: the block's diameter plus a margin);
        the disc stays inside at any turn.
    bone_fraction : float
        The fraction of the block that is bone.
    pore_um : float
        The texture's scale: pores and trabeculae about this wide (:func:`porous_field`).
    tilt_deg : float
        The cut's tilt from the z plane (about the volume's y axis, through the block's centre at
        ``depth``): the section then crosses the texture of several z planes.
    """
    z_n, y_n, x_n = ct_shape
    field = porous_field(ct_shape, seed, pore_um, ct_voxel_um)
    split = float(np.quantile(field, 1.0 - bone_fraction))
    radius = 0.42 * min(y_n, x_n)
    centre = np.array([(y_n - 1) / 2, (x_n - 1) / 2])
    yy, xx = np.mgrid[0:y_n, 0:x_n]
    inside = np.hypot(yy - centre[0], xx - centre[1]) <= radius
    ct = np.where(inside[None], np.where(field > split, CT_BONE, CT_SOFT), CT_OUTSIDE).astype(np.float32)
    rng = np.random.default_rng(seed + 1)
    ct = ndi.gaussian_filter(ct, 0.8) + rng.normal(0.0, 0.03, ct.shape).astype(np.float32)
    depth = z_n // 2 if depth is None else int(depth)
    side = int(section_px or 2 * (int(math.ceil(upsample * radius)) + 8))
    # histology (y, x) -> plane (i, j): about the slide's centre, turned by angle_deg, mirrored, 1/upsample
    a = math.radians(angle_deg)
    turn = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    if mirrored:
        turn = turn @ np.diag([1.0, -1.0])
    linear = np.linalg.inv(turn) / upsample
    slide_centre = np.array([(side - 1) / 2, (side - 1) / 2])
    affine = np.eye(3)
    affine[:2, :2] = linear
    affine[:2, 2] = centre - linear @ slide_centre
    hy, hx = np.mgrid[0:side, 0:side].astype(float)
    ij = np.tensordot(linear, np.stack([hy, hx]), axes=1) + affine[:2, 2][:, None, None]
    t = math.radians(tilt_deg)
    axes = np.array([[0.0, 1.0, 0.0], [math.sin(t), 0.0, math.cos(t)]])
    origin = np.array([float(depth), *centre]) - centre[0] * axes[0] - centre[1] * axes[1]
    if tilt_deg == 0:
        plane_field = ndi.map_coordinates(field[depth], ij, order=3, mode="wrap")
        in_block = np.hypot(ij[0] - centre[0], ij[1] - centre[1]) <= radius
    else:
        zyx = origin[:, None, None] + ij[0][None] * axes[0][:, None, None] + ij[1][None] * axes[1][:, None, None]
        plane_field = ndi.map_coordinates(field, zyx, order=1, mode="nearest")
        in_block = (np.hypot(zyx[1] - centre[0], zyx[2] - centre[1]) <= radius) & (zyx[0] >= 0) & (zyx[0] <= z_n - 1)
    labels = np.where(in_block, np.where(plane_field > split, 2, 1), 0).astype(np.uint8)
    palette = np.array([GLASS, SOFT, BONE], np.float32)
    rgb = ndi.gaussian_filter(palette[labels], (0.7, 0.7, 0)) + rng.normal(0.0, 4.0, (side, side, 3))
    histology = np.clip(np.round(rgb), 0, 255).astype(np.uint8)
    return TextureCase(f"texture_{angle_deg:g}{'_m' if mirrored else ''}", ct, histology, ct_voxel_um,
                       ct_voxel_um / upsample, labels, np.ones((side, side), bool), affine, origin, axes,
                       float(angle_deg), bool(mirrored))
