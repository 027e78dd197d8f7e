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

Effects that exist only in the section (:class:`SectionPreparation`), the regime the paper names
as the cause of its result (2.1, 3): the section is about 40 um thick (8 CT voxels) and the slide
shows its stain integrated through that depth; between the scan and the slide the soft tissue
moves by 10-50 um and retracts from the bone, cracks open in the dense bone (the fragments move
apart), and the whole section is warped a little out of its affine and out of its plane
(registration, a plane and an affine, removes neither); saw marks, a thickness wedge and stain
droplets add to the stain; for laser-cut H&E a partial, non-rectangular stitched field of view
and lost tissue next to the implant. One dial, ``misalignment_strength``, scales every effect
registration cannot remove, so a study can sweep it. The section's labels and slide image are
rendered in row strips by :mod:`vstain.phantom.render`.

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

import dataclasses

import numpy as np

from vstain.phantom.geometry import BlockGeometry

ARTEFACT_CODES = {"none": 0, "crack": 1, "droplet": 2, "tissue_loss": 3}


@dataclasses.dataclass(frozen=True)
class SectionPreparation:
    """What happens to a section between the scan and the slide (lengths in um, at misalignment strength 1).

    Parameters
    ----------
    thickness_um : float
        Section thickness; the slide integrates the stain through it (paper 2.1: about 40 um).
    sublayers : int
        Planes through the thickness whose stain is summed (1: the section is one plane).
    depth_of_field_um, objective_na : float
        The microscope's depth of field and numerical aperture: a layer further than half the depth
        of field from the focal plane (the section's middle) blurs by ``NA x`` the excess distance.
    strength : float
        Scales every effect below together (0: the section is where the CT says it is).
    soft_tissue_shift_um : float
        RMS displacement of soft tissue relative to the bone.
    marrow_retraction : float
        Fraction of the marrow next to the bone that retracts from it (shrinkage during embedding).
    residual_warp_um : float
        RMS of a smooth non-affine warp of the whole section.
    waviness_um : float
        RMS out-of-plane offset of the section's surface (smooth: not a plane).
    cracks_per_section : float
        Mean number of cracks through the dense bone.
    crack_opening_um : float
        How far the fragments of a crack move apart at its middle (0: hairline cracks that move nothing).

    Examples
    --------
    >>> prep = SectionPreparation(thickness_um=40, sublayers=5, strength=1.0, soft_tissue_shift_um=25)
    >>> prep.layer_offsets_um().tolist()
    [-16.0, -8.0, 0.0, 8.0, 16.0]
    >>> prep.aligned().scaled("soft_tissue_shift_um"), prep.aligned().thickness_um
    (0.0, 40)
    """

    thickness_um: float = 0.0
    sublayers: int = 1
    depth_of_field_um: float = 10.0
    objective_na: float = 0.25
    strength: float = 1.0
    soft_tissue_shift_um: float = 6.0
    marrow_retraction: float = 0.16
    residual_warp_um: float = 0.0
    waviness_um: float = 0.0
    cracks_per_section: float = 1.5
    crack_opening_um: float = 0.0

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"SectionPreparation.{f.name} must be a finite number >= 0, got {value!r}")
        if int(self.sublayers) != self.sublayers or self.sublayers < 1:
            raise ValueError(f"SectionPreparation.sublayers must be an integer >= 1, got {self.sublayers!r}")
        if self.marrow_retraction > 1 or self.objective_na > 1.5:
            raise ValueError("SectionPreparation: marrow_retraction must be <= 1 and objective_na <= 1.5")

    @classmethod
    def from_profile(cls, dataset_cfg) -> "SectionPreparation":
        """The preparation a dataset profile asks for (its ``section_*``, ``misalignment_strength`` ... keys)."""
        d = dataset_cfg
        return cls(thickness_um=float(d.section_thickness_um), sublayers=int(d.section_sublayers),
                   depth_of_field_um=float(d.depth_of_field_um), objective_na=float(d.objective_na),
                   strength=float(d.misalignment_strength), soft_tissue_shift_um=float(d.soft_tissue_shift_um),
                   marrow_retraction=float(d.marrow_retraction), residual_warp_um=float(d.residual_warp_um),
                   waviness_um=float(d.section_waviness_um), cracks_per_section=float(d.cracks_per_section),
                   crack_opening_um=float(d.crack_opening_um))

    def aligned(self) -> "SectionPreparation":
        """The same section without preparation artefacts: the aligned twin's (thickness and optics kept)."""
        return dataclasses.replace(self, strength=0.0)

    def scaled(self, name: str) -> float:
        """Effect ``name`` at this strength (retraction as a fraction, capped at 1)."""
        value = getattr(self, name) * self.strength
        return min(value, 1.0) if name == "marrow_retraction" else value

    def layer_offsets_um(self) -> np.ndarray:
        """Depths (um, from the section's middle) of the sublayers: the centres of equal slabs."""
        n = int(self.sublayers)
        return (np.arange(n) + 0.5) / n * self.thickness_um - self.thickness_um / 2

    def defocus_sigma_px(self, pixel_um: float) -> np.ndarray:
        """Defocus blur (Gaussian sigma, slide pixels) of each sublayer."""
        excess = np.maximum(np.abs(self.layer_offsets_um()) - self.depth_of_field_um / 2, 0.0)
        return excess * self.objective_na / float(pixel_um)


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
