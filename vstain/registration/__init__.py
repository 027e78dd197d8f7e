"""2D-3D registration of a histology section to a CT volume (paper 2.3).

A histology section was cut from the block after tomography, at a slightly oblique
plane, and was then distorted a little (non-uniform shrinkage, shear) by the
preparation. Registration recovers both, by mutual information (MI), which needs no
assumption about how CT grey values relate to stain colours (the contrast is often
inverted: dense bone is bright in CT and pale in toluidine blue):

1. **Global start** (any in-plane rotation, either face, any searched volume axis). A section
   lies on its slide at any rotation and may be mounted face down (mirrored), and it is cut along
   the screw wherever that lies in the volume, so the start is searched over the whole circle,
   both faces and the volume axes of ``search_axes``: the histology is a thin 3D "slab" (the fixed
   image), block-averaged to the coarsest pyramid level (``histology_downsample_um``, about 50 px
   across), and the mirrored face is the same slab flipped left-right. For each axis the CT is
   turned so that axis is the first (:data:`AXIS_ORDERS`, a rotation). The section's tissue
   centroid (optical density above Otsu's split: glass around the section does not move it) is
   put on the view's centre axis, and an exhaustive grid scores SimpleITK's Mattes MI of the CT
   values sampled on the slab for every in-plane rotation (``inplane_step_deg``, -180 to 180),
   in-plane shift (``max_shift_fraction``, ``shift_step_fraction``) and depth (one coarse pixel
   apart, ``depth_margin_voxels`` from the ends) on each face. A rotation whose view cannot hold
   ``min_inside_fraction`` of the section's footprint is skipped, and every MI is weighted by the
   fraction of the footprint the volume holds (MI on a sliver of overlap is high for few, alike
   samples): in a thin volume only the thick cross-section is searched. The ``n_starts`` best depths
   also start tilted, where a cone of tilts (rings ``tilt_step_deg`` apart up to ``max_tilt_deg``,
   8 directions) scores best. **Capture range**: any rotation and face; a normal within
   ``max_tilt_deg`` of any searched axis (the cone reaches 10-15 degree tilts that an untilted
   start loses to a near-axial optimum); translations within about ``max_shift_fraction`` of the
   CT width of the view's centre axis; any depth inside the volume. A fit beyond ``max_tilt_deg``
   fails. A pair's ``initial_guess`` narrows it: landmarks replace the search (the plane they span
   is refined through every level), orientation values restrict what the fit may take.
2. **Plane fit** (3D rigid, coarse to fine). A regular-step gradient descent refines the
   starts and the best poses of ``n_orientation_starts`` other orientations (further than
   ``orientation_separation_deg`` in rotation, the other face, or another axis) at the coarsest
   level; the best pose of every distinct orientation then goes on through the pyramid (the
   histology block-averaged, the CT smoothed to match), and the finest level picks the fit. (The
   profile may narrow the orientations the fit may take, ``max_inplane_rotation_deg`` and
   ``search_mirror``; the grid still scans all of them, as competitors of the check of step 5.)
   **Texture proposals** (:mod:`~vstain.registration.texture`): the coarsest level sees the section's
   outline, not its fine texture, and a round block of porous bone with no screw looks alike at every
   turn there. So the section, at the CT's pixel size, is also compared with the CT planes of each view
   (``texture_depth_step_voxels`` apart) by the polar Fourier magnitude (shift-invariant; a turn is a
   circular shift along the angle), the best turns go on to a masked cross-correlation of the texture
   that tells a turn from its opposite and finds the shift, and where no untilted plane matches well
   a cone of tilted planes is tried; the ``texture_starts`` best poses join the finest level beside
   the grid's (0: none). Only where the coarser levels left the orientation open (their MI margin
   below ``texture_below_margin``): where a screw sets it, the fit is what it was without them.
3. **2D affine**. The CT is resampled on the fitted plane
   (:func:`scipy.ndimage.map_coordinates`), and a 2D affine of the histology
   (non-uniform scale, shear, rotation, translation; a negative determinant for a section
   face down) onto that slice maximises MI.
4. **Plane refinement**. The plane fit is repeated with the histology undistorted (and
   un-mirrored) by that affine (the rigid model is now right), then the 2D affine is fitted again.
5. **Quality check**: a wrong local optimum must not pass for a fit. ``mi_margin`` is
   ``(MI - MI_other) / MI`` of the fit over the best pose of another orientation, both
   refined to the finest level (a section of another sample, or a symmetric one, leaves no
   orientation clearly best: the margin is small; negative when an orientation the profile
   did not allow fits better); ``silhouette_iou`` is the overlap of the sample's outline in
   the CT plane and in the registered section (:func:`silhouette_iou`: a plane in the wrong
   place); ``tilt_spread_deg`` (:func:`~vstain.registration.checks.tilt_restarts`): the last plane fit is restarted from
   itself tilted over the cone (multiples of ``check_tilt_deg`` up to ``max_tilt_deg``, 8
   directions); on a right fit no refit ends clearly higher in MI (``tilt_refit_gain``), on a plane
   tilted too little or too far (a 14 degree plane that converged to an axial one) one climbs
   higher: it replaces the fit and refits start again around it (``tilt_refit_rounds``); how far
   the last round still moved the plane is the spread. Below ``min_mi_margin`` or ``min_silhouette_iou``, or
   a spread beyond ``max_tilt_spread_deg``, the result's ``status`` is ``uncertain: <reason>``, and
   the registration stage keeps such a pair out of training. The check cannot see a wrong fit
   whose true orientation never reached the finest level while every pose that did is clearly
   worse than it (measured on the smoke phantom at a coarsest level of only 24 px); the coarsest
   level must be fine enough (about 50 px).

Coordinates follow :mod:`vstain.phantom`: the plane is ``point(i, j) = plane_point +
i * plane_axes[0] + j * plane_axes[1]`` in CT voxel (z, y, x) coordinates for plane
pixels ``(i, j)`` at CT pixel size, and ``[i, j, 1] = affine @ [y, x, 1]`` for a
histology pixel ``(y, x)``. The result's plane pixel ``(0, 0)`` is the top-left pixel
of its cropped output images.

The package's parts, in the order of the fit: :mod:`~vstain.registration.inputs` (checks at the
boundary), :mod:`~vstain.registration.images` (grey density, oblique slices, pyramid levels),
:mod:`~vstain.registration.views` (the CT turned per searched axis, smoothed per level),
:mod:`~vstain.registration.metric` (the one Mattes MI set-up), :mod:`~vstain.registration.poses`
(pose algebra, landmarks), :mod:`~vstain.registration.search` (step 1),
:mod:`~vstain.registration.texture` (the texture proposals), :mod:`~vstain.registration.plane` (step 2), :mod:`~vstain.registration.affine` (steps 3 and 4),
:mod:`~vstain.registration.checks` (step 5), :mod:`~vstain.registration.warp` (the registered
images), :mod:`~vstain.registration.pipeline` (the whole) and :mod:`~vstain.registration.result`.
Errors against the synthetic dataset's truth are :mod:`vstain.phantom.truth`'s; drawings of a
registration, :mod:`vstain.figures.registration`'s.

Examples
--------
>>> import numpy as np
>>> from vstain.registration import oblique_slice
>>> volume = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
>>> axes = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])   # an axial plane
>>> plane = oblique_slice(volume, np.array([2.0, 0.0, 0.0]), axes, (5, 6))
>>> bool(np.allclose(plane, volume[2]))
True
"""

# The settings of the check and of the metric's sampling, and the axis orders, stay readable here as before.
from vstain.registration.checks import (CHECK_CONFIRMATIONS, CHECK_MAX_SAMPLES, CHECK_SAMPLING,  # noqa: F401
                                        silhouette_iou)
from vstain.registration.images import histology_grey, oblique_slice
from vstain.registration.inputs import check_registration_inputs
from vstain.registration.metric import SAMPLING_SEED  # noqa: F401
from vstain.registration.pipeline import register_section_to_volume
from vstain.registration.result import (RegistrationError, RegistrationFailed, RegistrationResult,
                                        RegistrationUncertain)
from vstain.registration.views import AXIS_NAMES, AXIS_ORDERS  # noqa: F401
from vstain.registration.warp import warp_to_result

__all__ = [
    "RegistrationError",
    "RegistrationFailed",
    "RegistrationResult",
    "RegistrationUncertain",
    "check_registration_inputs",
    "histology_grey",
    "oblique_slice",
    "register_section_to_volume",
    "silhouette_iou",
    "warp_to_result",
]
