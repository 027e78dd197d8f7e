"""One synthetic pair: CT volume + stained section + ground truth, and the perfect registration.

Examples
--------
>>> from vstain.config import load_profile
>>> cfg = load_profile("smoke").dataset
>>> sample = make_sample(cfg, "tb_mg_01", "Mg", "toluidine_blue", beamtime=0, session=1, seed=5)
>>> sample.ct_volume.shape == tuple(cfg.ct_shape), sample.histology.dtype
(True, dtype('uint8'))
>>> sample.histology_to_volume([[0.0, 0.0]]).shape
(1, 3)
>>> pair = ground_truth_pair(sample)
>>> pair.ct.dtype, pair.histology.shape[:2] == pair.ct.shape
(dtype('uint16'), True)
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import numpy as np
from scipy import ndimage as ndi
from skimage.morphology import convex_hull_image

from vstain.pairs import RegisteredPair
from vstain.phantom.ct import CTArtefacts, beamtime_params, simulate_ct
from vstain.phantom.geometry import draw_geometry, label_volume
from vstain.phantom.labels import LABELS, MATERIALS, RIGID_LABELS, STAINS, label_name
from vstain.phantom.render import Illumination, cut_section, render_slide
from vstain.phantom.section import (AXIS_NAMES, NORMAL_AXIS_ORDERS, SectionPreparation, draw_affine,
                                    draw_normal_axis, draw_plane, histology_to_plane, plane_to_volume, stitched_fov)
from vstain.phantom.stain import session_params, slide_params


@dataclasses.dataclass
class PhantomSample:
    """A synthetic CT / histology pair with its ground truth.

    Coordinates: CT voxels ``(z, y, x)``; the true plane maps plane pixel ``(i, j)``
    (CT pixel size) to ``plane_point + i * plane_axes[0] + j * plane_axes[1]``;
    ``affine`` maps histology pixel ``[y, x, 1]`` to plane pixel ``[i, j, 1]``.

    The slide shows the section as prepared (thick, deformed, cracked: ``section_labels`` is its
    middle plane as it lies on the slide); ``histology_twin`` is its aligned twin, the same slide
    stained and imaged the same way had preparation moved nothing (``twin_labels``: the true plane's
    labels), so the error of the data (misalignment) and of a model can be told apart.
    """

    pair_id: str
    material: str
    stain: str
    ct_volume: np.ndarray  # float32 (Z, Y, X)
    ct_voxel_um: float
    labels_volume: np.ndarray  # uint8 (Z, Y, X)
    histology: np.ndarray  # uint8 (H, W, 3)
    histology_pixel_um: float
    section_labels: np.ndarray  # uint8 (H, W), before histology-only artefacts
    fov_mask: np.ndarray  # bool (H, W)
    plane_point: np.ndarray  # (3,)
    plane_axes: np.ndarray  # (2, 3)
    plane_normal: np.ndarray  # (3,)
    affine: np.ndarray  # (3, 3)
    beamtime: int
    session: int
    stain_params: dict[str, Any]
    ct_params: dict[str, Any] = dataclasses.field(default_factory=dict)
    artefacts: np.ndarray | None = None  # uint8 (H, W): section.ARTEFACT_CODES
    details: dict[str, Any] = dataclasses.field(default_factory=dict)
    histology_twin: np.ndarray | None = None  # uint8 (H, W, 3): the aligned twin (no preparation artefacts)
    twin_labels: np.ndarray | None = None  # uint8 (H, W): the twin's middle plane

    @property
    def normal_axis(self) -> int:
        """The volume axis (0 z, 1 y, 2 x) the section normal lies along (``details["normal_axis"]``)."""
        return AXIS_NAMES.index(self.details.get("normal_axis", "z"))

    @property
    def plane_shape(self) -> tuple[int, int]:
        """The plane grid (rows, columns) at CT pixel size: the CT slice shape across the normal's axis."""
        order = NORMAL_AXIS_ORDERS[self.normal_axis]
        return (int(self.ct_volume.shape[order.index(1)]), int(self.ct_volume.shape[order.index(2)]))

    def histology_to_volume(self, points_yx) -> np.ndarray:
        """Voxel ``(z, y, x)`` coordinates ``(N, 3)`` of histology pixels ``(y, x)`` ``(N, 2)``.

        The composition of the true affine and the true plane; registration results
        provide the same method, so target registration errors are comparable.
        """
        points_yx = np.asarray(points_yx, float).reshape(-1, 2)
        return plane_to_volume(self.plane_point, self.plane_axes, histology_to_plane(self.affine, points_yx))


def _child_rngs(seed: int, n: int) -> list[np.random.Generator]:
    return [np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(n)]


def make_sample(dataset_cfg, pair_id: str, material: str, stain: str, beamtime: int, session: int,
                seed: int, *, strip_pixels: int | None = None, implant: str = "centre") -> PhantomSample:
    """Generate one synthetic pair, deterministically from ``seed``.

    Parameters
    ----------
    dataset_cfg : vstain.config.DatasetConfig
        Uses ``ct_shape``, ``ct_voxel_um``, ``histology_pixel_um`` and the section's draws:
        ``slide_rotation_deg``, ``mirror_fraction``, ``min_tilt_deg``, ``max_tilt_deg``, ``other_axis_fraction``
        (a block drawn with its section normal along y or x is the same block with the volume's
        axes turned: :data:`~vstain.phantom.section.NORMAL_AXIS_ORDERS`; ``ct_shape`` is then
        turned too).
    pair_id : str
    material : {"Mg", "Ti", "PEEK"}
    stain : {"toluidine_blue", "he"}
    beamtime, session : int
        CT beamtime and staining session (their settings are shared by all pairs
        with the same index: :func:`~vstain.phantom.ct.beamtime_params`,
        :func:`~vstain.phantom.stain.session_params`).
    seed : int
    strip_pixels : int, optional
        Pixels per row strip of the histology rendering (:data:`vstain.phantom.render.STRIP_PIXELS`);
        the image does not depend on it.
    implant : {"centre", "edge", "none"}
        Where the block's screw runs (:data:`~vstain.phantom.geometry.IMPLANT_PLACEMENTS`): the
        paper's blocks (``centre``), the screw at the section's edge, or a screwless round block of
        trabecular bone. Recorded as ``details["implant"]``.

    Returns
    -------
    PhantomSample
    """
    if material not in MATERIALS:
        raise ValueError(f"pair {pair_id}: material must be one of {MATERIALS}, got {material!r}")
    if stain not in STAINS:
        raise ValueError(f"pair {pair_id}: stain must be one of {STAINS}, got {stain!r}")
    ct_um, hist_um = float(dataset_cfg.ct_voxel_um), float(dataset_cfg.histology_pixel_um)
    if ct_um <= 0 or hist_um <= 0:
        raise ValueError(f"pair {pair_id}: ct_voxel_um and histology_pixel_um must be positive")
    shape = tuple(int(n) for n in dataset_cfg.ct_shape)
    if len(shape) != 3:
        raise ValueError(f"pair {pair_id}: ct_shape must have 3 entries (z, y, x), got {list(shape)}")
    rng_geometry, rng_ct, rng_plane, rng_section, rng_stain, rng_artefacts, rng_slide = _child_rngs(seed, 7)
    geometry = draw_geometry(shape, material, rng_geometry, implant=implant)
    labels = label_volume(geometry)
    ct_params = beamtime_params(beamtime, tuple(dataset_cfg.ct_blur_voxels))
    ct = simulate_ct(labels, material, ct_params, rng_ct, CTArtefacts.from_profile(dataset_cfg))
    plane_point, plane_axes, plane_normal = draw_plane(geometry, rng_plane, float(dataset_cfg.max_tilt_deg),
                                                       float(dataset_cfg.min_tilt_deg))
    affine, hist_shape, affine_details = draw_affine(shape[1:], hist_um / ct_um, rng_plane,
                                                     rotation_deg=float(dataset_cfg.slide_rotation_deg),
                                                     mirror_fraction=float(dataset_cfg.mirror_fraction))
    normal_axis = draw_normal_axis(rng_plane, float(dataset_cfg.other_axis_fraction))
    tilt_deg = float(np.degrees(np.arccos(min(1.0, abs(plane_normal[0])))))
    # rendered in row strips: a whole-slide image at the paper's 0.44 um fits in memory
    preparation = SectionPreparation.from_profile(dataset_cfg)
    cut = cut_section(geometry, plane_point, plane_axes, affine, hist_shape, rng_section, strip_pixels,
                      preparation=preparation, ct_voxel_um=ct_um)
    section = cut.labels
    params = slide_params(session_params(stain, session, int(dataset_cfg.n_cameras)), rng_slide,
                          float(dataset_cfg.slide_hue_jitter), float(dataset_cfg.brown_soft_tissue_fraction))
    light = Illumination(rng_slide, hist_shape, hist_um, float(dataset_cfg.microscope_tile_um),
                         float(dataset_cfg.vignetting))
    # The twin is the same slide (same texture, grain and light) without what preparation did to it.
    twin_rngs = [copy.deepcopy(r) for r in (rng_stain, rng_artefacts)]
    histology, artefacts, artefact_details = render_slide(cut.layers, stain, params, (rng_stain, rng_artefacts),
                                                          strip_pixels, preparation=preparation, pixel_um=hist_um,
                                                          cracks=cut.cracks, illumination=light)
    twin, _, _ = render_slide(cut.twin_layers, stain, params, tuple(twin_rngs), strip_pixels, preparation=preparation,
                              pixel_um=hist_um, illumination=light, surface_artefacts=False)
    artefact_details.update(cut.details)
    if stain == "he":
        # Partial whole-slide image centred on the implant (or the block); outside the stitched tiles is black.
        middle_x = np.mean(geometry.screw_x) if implant != "none" else geometry.block_center[1]
        axis_point = np.array([geometry.screw_axis[0], geometry.screw_axis[1], middle_x])
        ij = plane_axes @ (axis_point - plane_point)
        yx = np.linalg.solve(affine, np.array([ij[0], ij[1], 1.0]))[:2]
        fov = stitched_fov(hist_shape, yx, rng_artefacts)
        histology[~fov] = 0
        twin[~fov] = 0
    else:
        fov = np.ones(hist_shape, bool)
    if normal_axis:
        # The block lies turned in its tube: the same block, its volume axes turned (a rotation).
        order = NORMAL_AXIS_ORDERS[normal_axis]
        ct, labels = (np.ascontiguousarray(a.transpose(order)) for a in (ct, labels))
        plane_point, plane_normal = plane_point[list(order)], plane_normal[list(order)]
        plane_axes = plane_axes[:, list(order)]
    return PhantomSample(
        pair_id=pair_id, material=material, stain=stain, ct_volume=ct, ct_voxel_um=ct_um,
        labels_volume=labels, histology=histology, histology_pixel_um=hist_um, section_labels=section,
        fov_mask=fov, plane_point=plane_point, plane_axes=plane_axes, plane_normal=plane_normal,
        affine=affine, beamtime=int(beamtime), session=int(session), stain_params=params,
        ct_params=ct_params, artefacts=artefacts,
        details={"seed": int(seed), "affine": affine_details, "artefacts": artefact_details,
                 "tilt_deg": tilt_deg, "normal_axis": AXIS_NAMES[normal_axis], "implant": implant,
                 "preparation": dataclasses.asdict(preparation)},
        histology_twin=twin, twin_labels=cut.twin_labels,
    )


def at_pyramid_level(sample: PhantomSample, factor: int, shape: tuple[int, int] | None = None) -> PhantomSample:
    """The sample as seen on a slide pyramid level ``factor`` times coarser (2 x 2 block means per halving).

    Level pixel ``k`` is the mean of full-resolution pixels ``k f .. k f + f - 1``, centred on
    ``(k + 1/2) f - 1/2``: the affine takes that into account, and the histology-sized arrays
    (image, labels, field of view, artefacts) are sampled at those centres. Registration on a level is
    then measured against the truth in the level's own pixels.

    Examples
    --------
    >>> from vstain.config import load_profile
    >>> s = make_sample(load_profile("smoke").dataset, "p", "Mg", "toluidine_blue", 0, 0, seed=1)
    >>> level = at_pyramid_level(s, 4)
    >>> level.histology_pixel_um, level.section_labels.shape
    (10.0, (48, 48))
    >>> bool(np.allclose(level.histology_to_volume([[0.0, 0.0]]), s.histology_to_volume([[1.5, 1.5]])))
    True
    """
    factor = int(factor)
    if factor < 1:
        raise ValueError(f"pair {sample.pair_id}: a pyramid level factor must be a positive integer, got {factor}")
    if shape is None:
        shape = (sample.histology.shape[0] // factor, sample.histology.shape[1] // factor)
    centre = (factor - 1) / 2
    to_full = np.array([[factor, 0.0, centre], [0.0, factor, centre], [0.0, 0.0, 1.0]])
    pick = (slice(factor // 2, None, factor), slice(factor // 2, None, factor))
    crop = (slice(0, shape[0]), slice(0, shape[1]))
    return dataclasses.replace(
        sample, affine=sample.affine @ to_full, histology=sample.histology[pick][crop],
        histology_pixel_um=sample.histology_pixel_um * factor,
        section_labels=sample.section_labels[pick][crop], fov_mask=sample.fov_mask[pick][crop],
        artefacts=None if sample.artefacts is None else sample.artefacts[pick][crop],
        histology_twin=None if sample.histology_twin is None else sample.histology_twin[pick][crop],
        twin_labels=None if sample.twin_labels is None else sample.twin_labels[pick][crop],
    )


def plane_grid(sample: PhantomSample) -> np.ndarray:
    """Voxel coordinates ``(Hp, Wp, 3)`` of every plane pixel of the true plane."""
    ij = np.stack(np.meshgrid(*(np.arange(n, dtype=float) for n in sample.plane_shape), indexing="ij"), -1)
    return plane_to_volume(sample.plane_point, sample.plane_axes, ij)


def label_means(image: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray | float]:
    """Mean of ``image`` (grey or RGB) over each label present in ``labels`` (same spatial shape).

    Examples
    --------
    >>> label_means(np.array([1.0, 3.0, 5.0]), np.array([0, 0, 5], np.uint8))
    {'background': 2.0, 'screw': 5.0}
    """
    out = {}
    for code in np.unique(labels):
        value = image[labels == code].mean(axis=0)
        out[label_name(code)] = float(value) if np.ndim(value) == 0 else value
    return out


def screw_contrast(ct_volume: np.ndarray, labels_volume: np.ndarray) -> float:
    """The screw's mean CT value relative to bone: background 0, dense bone 1.

    Parameters
    ----------
    ct_volume : ndarray
        A CT volume (or slice).
    labels_volume : ndarray
        Its true labels (:data:`LABELS`); background, dense bone and screw must be present.

    Returns
    -------
    float
        ``(screw - background) / (dense_bone - background)`` of the label means: near 1 for Mg,
        above for Ti, below for PEEK.

    Examples
    --------
    >>> screw_contrast(np.array([0.0, 2.0, 1.0]), np.array([0, 2, 5], np.uint8))
    0.5
    """
    means = label_means(ct_volume, labels_volume)
    return (means["screw"] - means["background"]) / (means["dense_bone"] - means["background"])


def plane_height(sample: PhantomSample, y, x) -> np.ndarray:
    """The true plane's z (voxels) above CT positions ``(y, x)``, to draw it on orthogonal views.

    Only for a section whose normal lies along z (``sample.normal_axis == 0``).

    Examples
    --------
    >>> from vstain.config import load_profile
    >>> s = make_sample(load_profile("smoke").dataset, "p", "Ti", "toluidine_blue", 0, 0, seed=6)
    >>> z = plane_height(s, np.array([0.0, 95.0]), np.array([0.0, 95.0]))
    >>> bool(abs(z[0] - z[1]) < 10)
    True
    """
    if sample.normal_axis != 0:
        raise ValueError(f"pair {sample.pair_id}: the section normal lies along {AXIS_NAMES[sample.normal_axis]}, "
                         "not z: the plane has no height above (y, x)")
    n = sample.plane_normal
    p = sample.plane_point
    return p[0] - (n[1] * (np.asarray(y, float) - p[1]) + n[2] * (np.asarray(x, float) - p[2])) / n[0]


def _sample_volume(volume: np.ndarray, points: np.ndarray, order: int) -> np.ndarray:
    coords = np.moveaxis(points, -1, 0)
    return ndi.map_coordinates(volume, coords, order=order, mode="nearest")


def _normalise_ct(ct: np.ndarray, labels: np.ndarray, valid: np.ndarray, bone_mean: float,
                  background_mean: float) -> np.ndarray:
    """Paper 2.5 with true ROIs: linear scaling to the bone and background means, 16 bit."""
    bone = ct[(labels == LABELS["dense_bone"]) & valid].mean()
    background = ct[(labels == LABELS["background"]) & valid].mean()
    scaled = background_mean + (ct - background) * (bone_mean - background_mean) / (bone - background)
    return np.clip(np.rint(scaled), 0, 65535).astype(np.uint16)


def _normalise_histology(rgb: np.ndarray, labels: np.ndarray, valid: np.ndarray, c_low: float,
                         c_high: float) -> np.ndarray:
    """Paper 2.5 with true ROIs: white balance on the background, then a common contrast stretch."""
    rgb = rgb.astype(np.float32)
    background = (labels == LABELS["background"]) & valid
    bone = (labels == LABELS["dense_bone"]) & valid
    if background.sum() < 10 or bone.sum() < 10:
        return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    mean = rgb[background].mean(axis=0)
    balanced = rgb * (mean.mean() / mean)
    f_min = max(np.percentile(balanced[bone], 1, axis=0).min() - c_low, 10.0)
    f_max = min(np.percentile(balanced[background], 99, axis=0).max() + c_high, 255.0)
    stretched = (balanced - f_min) * 255.0 / max(f_max - f_min, 1.0)
    out = np.clip(np.rint(stretched), 0, 255).astype(np.uint8)
    out[~valid] = 0
    return out


def _twin_view(sample: PhantomSample, twin: bool) -> tuple[np.ndarray, np.ndarray]:
    """The slide and its labels, or its aligned twin's."""
    if not twin:
        return sample.histology, sample.section_labels
    if sample.histology_twin is None or sample.twin_labels is None:
        raise ValueError(f"pair {sample.pair_id}: the sample has no aligned twin (generated by an older phantom)")
    return sample.histology_twin, sample.twin_labels


def _on_true_plane(sample: PhantomSample, twin: bool = False) -> dict[str, np.ndarray | tuple[int, int]]:
    """CT, histology and both label maps on the true plane, cropped to their common field of view.

    The CT and its labels are resampled on the plane grid; the section and its labels are
    warped through the true affine. ``valid`` marks the pixels inside the CT volume, the
    section and its stitched field of view; ``origin`` is the crop's corner on the plane grid.
    """
    points = plane_grid(sample)
    shape = np.asarray(sample.ct_volume.shape)
    in_volume = np.all((points >= 0) & (points <= shape - 1), axis=-1)
    ct = _sample_volume(sample.ct_volume, points, 1).astype(np.float32)
    ct_labels = _sample_volume(sample.labels_volume, points, 0)
    ij = np.stack(np.meshgrid(*(np.arange(n, dtype=float) for n in sample.plane_shape), indexing="ij"), -1)
    inverse = np.linalg.inv(sample.affine)
    yx = ij @ inverse[:2, :2].T + inverse[:2, 2]
    slide, slide_labels = _twin_view(sample, twin)
    height, width = slide.shape[:2]
    in_histology = (yx[..., 0] >= 0) & (yx[..., 0] <= height - 1) & (yx[..., 1] >= 0) & (yx[..., 1] <= width - 1)
    coords = np.moveaxis(yx, -1, 0)
    fov = ndi.map_coordinates(sample.fov_mask.astype(np.uint8), coords, order=0, mode="constant") > 0
    valid = in_volume & in_histology & fov
    if not valid.any():
        raise ValueError(f"pair {sample.pair_id}: the histology does not overlap the CT plane")
    histology = np.stack([ndi.map_coordinates(slide[..., c], coords, order=1, mode="constant")
                          for c in range(3)], axis=-1)
    histology_labels = ndi.map_coordinates(slide_labels, coords, order=0, mode="constant")
    rows, cols = np.nonzero(valid)
    crop = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
    views = {"ct": ct, "ct_labels": ct_labels, "histology": histology, "histology_labels": histology_labels,
             "valid": valid}
    return {**{name: image[crop] for name, image in views.items()}, "origin": (int(rows.min()), int(cols.min()))}


def ground_truth_labels(sample: PhantomSample, twin: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The true labels of the pair :func:`ground_truth_pair` gives, pixel for pixel.

    Parameters
    ----------
    sample : PhantomSample
    twin : bool
        The aligned twin's labels instead of the slide's.

    Returns
    -------
    ct_labels : ndarray of uint8
        The label volume on the true plane (what the CT slice shows).
    histology_labels : ndarray of uint8
        The section labels warped through the true affine (what the histology shows: the
        soft tissue shifted as cut; 0 outside the section).

    Examples
    --------
    >>> from vstain.config import load_profile
    >>> s = make_sample(load_profile("smoke").dataset, "p", "Mg", "toluidine_blue", 0, 0, seed=3)
    >>> ct_labels, histology_labels = ground_truth_labels(s)
    >>> ct_labels.shape == histology_labels.shape == ground_truth_pair(s).ct.shape
    True
    >>> bool((ct_labels == LABELS["degradation_layer"]).any())
    True
    """
    views = _on_true_plane(sample, twin)
    return views["ct_labels"], views["histology_labels"]


def ground_truth_pair(sample: PhantomSample, normalised: bool = True, *, ct_bone_mean: float = 30000.0,
                      ct_background_mean: float = 10000.0, c_low: float = 5.0,
                      c_high: float = 5.0, twin: bool = False) -> RegisteredPair:
    """The pair a perfect registration would give.

    The CT slice on the true plane and the histology warped through the true affine,
    both at CT pixel size, cropped to their common field of view, with the
    sample-correspondence mask (paper 2.8) from the true labels: the intersection of
    the convex hulls of the rigid tissue (bone and implant) seen in each modality,
    inside the histology's field of view.

    Parameters
    ----------
    sample : PhantomSample
    normalised : bool
        Apply the paper's normalisation (2.5) with true bone/background ROIs: CT to
        uint16 with the given means, histology white-balanced and stretched. Else the
        raw CT (float32) and histology.
    ct_bone_mean, ct_background_mean, c_low, c_high : float
        Normalisation constants (a profile's ``normalisation`` section).
    twin : bool
        Pair the CT with the slide's aligned twin (the stain where the CT says the tissue is: the
        truth a model should reach) instead of the slide as prepared.

    Returns
    -------
    vstain.pairs.RegisteredPair
        ``extras`` holds ``crop_origin_ij`` (the crop's corner on the plane grid).
    """
    views = _on_true_plane(sample, twin)
    ct, ct_labels, histology, hist_labels, valid = (
        views[name] for name in ("ct", "ct_labels", "histology", "histology_labels", "valid"))
    hulls = []
    for labels in (ct_labels, hist_labels):
        rigid = np.isin(labels, RIGID_LABELS) & valid
        hulls.append(convex_hull_image(rigid) if rigid.any() else rigid)
    mask = hulls[0] & hulls[1] & valid
    if normalised:
        ct = _normalise_ct(ct, ct_labels, valid, ct_bone_mean, ct_background_mean)
        histology = _normalise_histology(histology, hist_labels, valid, c_low, c_high)
    else:
        histology = np.clip(np.rint(histology), 0, 255).astype(np.uint8)
    return RegisteredPair(
        pair_id=sample.pair_id, material=sample.material, stain=sample.stain, ct=ct, histology=histology,
        mask=mask, pixel_size_um=sample.ct_voxel_um,
        extras={"source": "ground_truth_twin" if twin else "ground_truth", "crop_origin_ij": list(views["origin"]),
                "normalised": bool(normalised)},
    )

