"""The CT as the registration sees it: turned so each searched axis is first, smoothed per pyramid level.

:class:`CTViews` keeps one float32 copy of the volume per smoothed level it was asked for (the last
``keep``), shared by its one-axis views; :func:`to_volume_frame` and :func:`to_view_frame` convert
coordinates between a view and the volume.

Examples
--------
>>> import numpy as np
>>> points = np.array([[1.0, 2.0, 3.0]])
>>> to_view_frame(points, 1).tolist()
[[2.0, 3.0, 1.0]]
>>> origin, axes = to_volume_frame(to_view_frame(points, 1)[0], np.eye(3)[:2], 1)
>>> origin.tolist()
[1.0, 2.0, 3.0]
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Sequence

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from vstain.registration.images import block_mean, fov_at, tissue_pixels
from vstain.registration.metric import bins_for, mask_image, slab_image


#: Cyclic axis orders that turn the volume so that its axis 0, 1 or 2 becomes the first (z) axis:
#: ``view = volume.transpose(order)``; a voxel ``p`` of the volume is ``p[list(order)]`` of the view. A
#: cyclic order is a rotation, so the plane fit in a view is the same rigid problem.
AXIS_ORDERS = {0: (0, 1, 2), 1: (1, 2, 0), 2: (2, 0, 1)}


AXIS_NAMES = ("z", "y", "x")


class CTViews:
    """The CT turned so that each searched axis is its first (:data:`AXIS_ORDERS`), and its smoothed copies.

    A mapping from axis to view. Every plane fit smooths the view it fits against to each pyramid
    level's scale; on a paper-size volume (134 M voxels) that takes seconds, and the tilt check's
    dozens of refits go down the same levels. The last ``keep`` smoothed images are kept (the
    registration keeps one per pyramid level: that many float32 copies of the volume in memory),
    shared by the views that :meth:`only` makes.
    """

    def __init__(self, ct: np.ndarray, axes: Sequence[int], ct_voxel_um: float, keep: int = 2,
                 caches: tuple[collections.OrderedDict, collections.OrderedDict] | None = None):
        self.ct, self.axes, self.ct_voxel_um, self.keep = ct, list(axes), float(ct_voxel_um), int(keep)
        self._cache, self._sections = caches or (collections.OrderedDict(), collections.OrderedDict())

    def __iter__(self):
        return iter(self.axes)

    def __contains__(self, axis) -> bool:
        return axis in self.axes

    def __getitem__(self, axis: int) -> np.ndarray:
        if axis not in self.axes:
            raise KeyError(axis)
        return self.ct.transpose(AXIS_ORDERS[axis])

    def only(self, axis: int) -> "CTViews":
        """The view of one axis, sharing the smoothed images."""
        return CTViews(self.ct, [axis], self.ct_voxel_um, self.keep, (self._cache, self._sections))

    def moving(self, axis: int, sigma: float, step: int = 1) -> sitk.Image:
        """The view of ``axis`` smoothed by a Gaussian of ``sigma`` voxels, every ``step``-th voxel kept.

        A SimpleITK image in um whose voxel ``i`` lies where the view's voxel ``i * step`` does (the
        same physical frame at every step). Mattes MI scans the whole moving image on every
        evaluation (0.4 s at 134 M voxels): a coarse level's smoothed view loses nothing by keeping
        one voxel in ``step`` along each axis and scans ``step ** 3`` times fewer.
        """
        key = (axis, round(float(sigma), 9), int(step))
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        view = self[axis]
        smoothed = ndi.gaussian_filter(view, sigma) if sigma > 0 else view
        image = sitk.GetImageFromArray(np.ascontiguousarray(smoothed[::step, ::step, ::step]))
        image.SetSpacing((self.ct_voxel_um * step,) * 3)
        self._cache[key] = image
        while len(self._cache) > self.keep:
            self._cache.popitem(last=False)
        return image

    def section_level(self, grey: np.ndarray, fov: np.ndarray, factor: float) -> tuple[np.ndarray, np.ndarray]:
        """The section image and its field of view downsampled by ``factor`` (:func:`block_mean`, :func:`fov_at`).

        Kept like the smoothed views: the tilt check refits the same section at the same levels dozens
        of times, and a paper-size section takes a good fraction of a second to smooth.
        """
        key = (id(grey), id(fov), round(float(factor), 9))
        if key in self._sections and self._sections[key][0] is grey and self._sections[key][1] is fov:
            self._sections.move_to_end(key)
            return self._sections[key][2]
        level = (block_mean(grey, factor), fov_at(fov, factor))
        self._sections[key] = (grey, fov, level)  # the arrays too: their ids stay theirs while kept
        while len(self._sections) > 2 * self.keep:
            self._sections.popitem(last=False)
        return level


def to_volume_frame(origin: np.ndarray, axes: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """A plane (origin, axes) in the voxel frame of the view of ``axis`` -> the volume's voxel frame."""
    back = np.argsort(AXIS_ORDERS[axis])
    return np.asarray(origin, float)[back], np.asarray(axes, float)[:, back]


def to_view_frame(points: np.ndarray, axis: int) -> np.ndarray:
    """Volume voxel coordinates ``(..., 3)`` -> those of the view of ``axis``."""
    return np.asarray(points, float)[..., list(AXIS_ORDERS[axis])]


@dataclasses.dataclass(frozen=True)
class SectionLevel:
    """One face of the section at one pyramid level, as the plane fit's fixed image.

    Attributes
    ----------
    fixed : SimpleITK.Image
        The section's grey density, block-averaged to ``um`` pixels, as a slab (:func:`slab_image`).
    mask : SimpleITK.Image
        Its field of view (:func:`mask_image`).
    fov : ndarray, bool
        The same field of view as an array.
    bins : int
        Mattes MI histogram bins for that many pixels (:func:`bins_for`).
    um : float
        The level's pixel size.
    tissue_xyz : ndarray, (N, 3)
        Physical slab coordinates (x, y, 0 um) of its tissue pixels (:func:`tissue_pixels`).
    """

    fixed: sitk.Image
    mask: sitk.Image
    fov: np.ndarray
    bins: int
    um: float
    tissue_xyz: np.ndarray


def section_level(views: CTViews, face: tuple[np.ndarray, np.ndarray], factor: float, um: float,
                  max_bins: int) -> SectionLevel:
    """A face ``(grey, fov)`` of the section downsampled by ``factor`` to ``um`` pixels (kept by ``views``)."""
    small, fov_small = views.section_level(*face, factor)
    fixed = slab_image(small, um)
    rows, cols = np.nonzero(tissue_pixels(np.where(fov_small, small, 0.0)) & fov_small)
    tissue = np.column_stack([cols * um, rows * um, np.zeros(len(rows))])
    return SectionLevel(fixed, mask_image(fov_small, fixed), fov_small, bins_for(int(fov_small.sum()), max_bins),
                        um, tissue)
