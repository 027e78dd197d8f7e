"""Pose algebra of the plane fit: rigid slab transforms, their planes, tilts, turns and angles.

A pose is a SimpleITK :class:`~SimpleITK.Euler3DTransform` from the section's slab (physical x, y,
0 um) into a CT view (physical x, y, z um); :class:`Plane` turns one into a plane in voxels.

Examples
--------
>>> import SimpleITK as sitk
>>> pose = sitk.Euler3DTransform()
>>> round(angle_between_planes(normal_of(pose), normal_of(tilted(pose, 0.0, 12.0))), 6)
12.0
>>> round(rotation_between(pose, turned(pose, 30.0)), 6)
30.0
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import SimpleITK as sitk

from vstain.registration.views import to_view_frame


@dataclasses.dataclass
class Plane:
    """A rigid map from histology physical (x, y, 0) um to CT physical (x, y, z) um."""

    rotation: np.ndarray  # (3, 3), physical xyz
    offset: np.ndarray  # (3,), physical xyz of histology physical origin

    @classmethod
    def from_transform(cls, transform: sitk.Euler3DTransform) -> "Plane":
        rotation = np.asarray(transform.GetMatrix()).reshape(3, 3)
        center = np.asarray(transform.GetCenter())
        offset = -rotation @ center + center + np.asarray(transform.GetTranslation())
        return cls(rotation, offset)

    def voxel_frame(self, voxel_um: float) -> tuple[np.ndarray, np.ndarray]:
        """(origin, axes) in voxel zyx: a histology physical point (x, y) um lies at origin + (y*ax0 + x*ax1)/voxel."""
        origin = self.offset[::-1] / voxel_um
        axes = np.stack([self.rotation[:, 1][::-1], self.rotation[:, 0][::-1]])
        return origin, axes


def coverage(transform: sitk.Euler3DTransform, points_xyz: np.ndarray, view_shape, ct_voxel_um: float) -> float:
    """The fraction of slab points (physical x, y, 0 um) that ``transform`` maps inside a CT view."""
    if not len(points_xyz):
        return 1.0
    matrix = np.asarray(transform.GetMatrix()).reshape(3, 3)
    centre = np.asarray(transform.GetCenter())
    mapped = (points_xyz - centre) @ matrix.T + centre + np.asarray(transform.GetTranslation())
    upper = (np.asarray(view_shape[::-1], float) - 1) * ct_voxel_um
    return float(np.mean(np.all((mapped >= 0) & (mapped <= upper), axis=1)))


def tilted(transform: sitk.Euler3DTransform, direction: float, tilt_deg: float) -> sitk.Euler3DTransform:
    """``transform`` with its plane turned by ``tilt_deg`` about the in-plane direction ``direction`` (rad, CT x-y).

    The turn is about the transform's centre as mapped into the CT, so the plane keeps its depth there.
    """
    axis = np.array([math.cos(direction), math.sin(direction), 0.0])
    turn = axis_rotation(axis, math.radians(tilt_deg))
    out = sitk.Euler3DTransform(transform)
    out.SetMatrix(tuple((turn @ np.asarray(transform.GetMatrix()).reshape(3, 3)).ravel()))
    return out


def turned(transform: sitk.Euler3DTransform, angle_deg: float) -> sitk.Euler3DTransform:
    """``transform`` turned by ``angle_deg`` in its own plane (about its normal, through its centre)."""
    turn = axis_rotation(normal_of(transform), math.radians(angle_deg))
    out = sitk.Euler3DTransform(transform)
    out.SetMatrix(tuple((turn @ np.asarray(transform.GetMatrix()).reshape(3, 3)).ravel()))
    return out


def angle_between_planes(normal_a: np.ndarray, normal_b: np.ndarray) -> float:
    """The angle (degrees, 0-90) between two planes given by their unit normals, whichever way each points."""
    return math.degrees(math.acos(min(1.0, abs(float(np.dot(normal_a, normal_b))))))


def rotation_between(a: sitk.Euler3DTransform, b: sitk.Euler3DTransform) -> float:
    """The angle (degrees) of the rotation that takes pose ``a`` to pose ``b``: tilt and in-plane turn together."""
    ra, rb = (np.asarray(t.GetMatrix()).reshape(3, 3) for t in (a, b))
    return math.degrees(math.acos(float(np.clip((np.trace(ra.T @ rb) - 1) / 2, -1.0, 1.0))))


def axis_rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rodrigues rotation matrix about a unit ``axis`` by ``angle`` radians."""
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * (k @ k)


def normal_of(transform: sitk.Euler3DTransform) -> np.ndarray:
    """The plane normal (the slab's z axis) of a transform, in CT physical (x, y, z)."""
    return np.asarray(transform.GetMatrix()).reshape(3, 3)[:, 2]


def inplane_rotation(transform: sitk.Euler3DTransform) -> float:
    """The in-plane angle (radians) of the slab's x axis in the CT's x-y plane (the plane is near-axial)."""
    rotation = np.asarray(transform.GetMatrix()).reshape(3, 3)
    return math.atan2(rotation[1, 0], rotation[0, 0])


def orientation_distance(a: tuple[int, float], b: tuple[int, float]) -> float:
    """Degrees between two (face, in-plane rotation) orientations; infinite across faces."""
    if a[0] != b[0]:
        return math.inf
    return abs(math.degrees(math.remainder(a[1] - b[1], 2 * math.pi)))


def landmark_start(hist_yx, ct_zyx, ct_voxel_um, histology_pixel_um, grey_shape):
    """The plane start from landmark pairs: ``(axis, Euler3D transform in that axis's view)``.

    A least-squares map ``ct = o + y * u + x * v`` of the histology pixels onto the CT voxels gives
    the plane (normal ``u x v``, nearest volume axis ``axis``); its in-plane directions, made
    orthonormal (the nearest rotation), and ``o`` set the rigid slab transform. Scale, shear and a
    mirror are left to the 2D affine: the rotation ``[cols, rows, cols x rows]`` is proper either way.
    """
    design = np.column_stack([hist_yx, np.ones(len(hist_yx))])
    solution, *_ = np.linalg.lstsq(design, ct_zyx, rcond=None)
    u, v, o = solution
    axis = int(np.argmax(np.abs(np.cross(u, v))))
    u, v, o = (to_view_frame(w, axis) for w in (u, v, o))
    directions = np.stack([v[::-1], u[::-1]], axis=1)  # slab x (columns), y (rows) in CT physical xyz
    left, _, right = np.linalg.svd(directions, full_matrices=False)
    columns = left @ right
    rotation = np.column_stack([columns[:, 0], columns[:, 1], np.cross(columns[:, 0], columns[:, 1])])
    centre = np.array([(grey_shape[1] - 1) / 2, (grey_shape[0] - 1) / 2, 0.0]) * histology_pixel_um
    transform = sitk.Euler3DTransform()
    transform.SetCenter(tuple(centre))
    transform.SetMatrix(tuple(rotation.ravel()))
    transform.SetTranslation(tuple(o[::-1] * ct_voxel_um + rotation @ centre - centre))
    return axis, transform
