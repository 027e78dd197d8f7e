"""The CT intensities a stain starts from: the sampled slices, the field of view, the map to the study's scale.

A part of the ``vstain stain`` command (:mod:`vstain.stages.stain`, which re-exports every public name):
a few slices are read and segmented once (:func:`read_sample_slices`), the reconstruction's fill outside
its circle is found (:func:`choose_field_of_view`), bone and background are mapped to the profile's scale
(:func:`ct_targets`, :func:`choose_ct_normalisation`; paper 2.5), and what looks wrong is said in words
(:func:`check_ct_contrast`, :func:`check_ct_intensities`, :func:`check_voxel_size`).

Examples
--------
>>> from vstain.volume_io import ArrayVolume
>>> sample_slices(ArrayVolume(np.zeros((10, 2, 2)), (1, 1, 1)), 2)
[1, 8]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vstain.config import NormalisationConfig, ProfileError, as_profile
from vstain.normalise import (compare_ct_statistics, ct_outside_field_of_view, ct_statistics, edge_class_shares,
                              find_ct_fill_value, linear_ct_map, looks_inverted, segment_ct_slices,
                              volume_scale_from_slices)
from vstain.volume_io import NormalisedVolume

#: Slices sampled (evenly, away from the ends) to find the automatic ROIs and describe the intensities.
N_SAMPLE_SLICES = 9


def sample_slices(source, n: int = N_SAMPLE_SLICES) -> list[int]:
    """Indices of ``n`` slices spread evenly over the middle 80 % of the depth (the ends often hold no sample).

    Examples
    --------
    >>> from vstain.volume_io import ArrayVolume
    >>> sample_slices(ArrayVolume(np.zeros((100, 2, 2)), (1, 1, 1)), 3)
    [10, 50, 89]
    """
    depth = source.shape[0]
    return sorted({int(round(z)) for z in np.linspace(0.1 * (depth - 1), 0.9 * (depth - 1), min(n, depth))})


def read_sample_slices(source, n: int = N_SAMPLE_SLICES, *,
                       fill_value: float | str | None = "auto") -> tuple[list[np.ndarray], list[dict | None], dict]:
    """The :func:`sample_slices` of ``source``, their field of view and segmentations, each read and segmented once.

    The automatic normalisation (:func:`choose_ct_normalisation`) and the intensity check
    (:func:`check_ct_intensities`) share them. Voxels outside the reconstruction's field of view
    (the constant a reconstruction writes outside its circle, :func:`choose_field_of_view`; 0, any
    number or NaN) are left out of the segmentations, so they are neither background nor sample.
    A NaN or infinite voxel inside the field of view (or anywhere, without one) stops the run.

    Parameters
    ----------
    source
        A volume source (:func:`vstain.volume_io.open_volume`).
    n : int
    fill_value : float, "auto" or None
        As :func:`choose_field_of_view` takes it.

    Returns
    -------
    slices : list of ndarray
    segmentations : list of dict or None
        :func:`vstain.normalise.segment_ct_slices` of ``slices`` inside the field of view.
    field_of_view : dict
        :func:`choose_field_of_view` of ``slices``.

    Raises
    ------
    ValueError
        A non-finite voxel with data (inside the field of view), naming the file and the slice.
    """
    zs = sample_slices(source, n)
    slices = [np.asarray(source.read_slice(z)) for z in zs]
    field = choose_field_of_view(source, slices, fill_value)
    valid = (None if field["fill_value"] is None else
             [~ct_outside_field_of_view(image, field["fill_value"]) for image in slices])
    for k, (z, image) in enumerate(zip(zs, slices)):
        finite = np.isfinite(image)
        bad = int(np.count_nonzero(~finite if valid is None else valid[k] & ~finite))
        if bad:
            where = "" if valid is None else " inside the field of view"
            hint = (" (NaN outside the reconstruction circle is found with --ct-fill-value auto)"
                    if fill_value != "auto" and np.isnan(image).any() else "")
            raise ValueError(f"{source.name}: slice {z} holds {bad} non-finite voxels (NaN or infinite){where}; "
                             f"fix or mask them before staining{hint}")
    return slices, segment_ct_slices(slices, valid), field


def choose_field_of_view(source, slices: list[np.ndarray], fill_value: float | str | None = "auto") -> dict:
    """Which voxels of ``source`` hold data: all, or all but the reconstruction's fill outside its circle.

    Reconstructions write a constant (mostly 0, some NaN) outside the circle the projections cover.
    Taken for background it would drag the automatic normalisation (bone 30000, background 10000)
    and be stained as if it were tissue; :func:`vstain.normalise.find_ct_fill_value` finds it on
    the sample ``slices`` (``fill_value="auto"``, a NaN fill included), a number gives it, None
    says there is none.

    Returns
    -------
    dict
        ``method`` (``found``, ``given``, ``none``, ``not found``), ``fill_value`` (float, NaN for a
        NaN fill, or None) and ``outside_fraction``: the share of the sampled voxels outside the field of view.

    Raises
    ------
    ValueError
        A fill value that covers every sampled voxel (nothing left to stain).
    """
    if isinstance(fill_value, str) and fill_value != "auto":
        raise ValueError(f"--ct-fill-value must be a number, auto or none, got {fill_value!r}")
    if fill_value is None:
        return {"method": "none", "fill_value": None, "outside_fraction": 0.0}
    method = "found" if fill_value == "auto" else "given"
    value = find_ct_fill_value(slices) if fill_value == "auto" else float(fill_value)
    if value is None:
        return {"method": "not found", "fill_value": None, "outside_fraction": 0.0}
    outside = sum(int(ct_outside_field_of_view(image, value).sum()) for image in slices)
    total = sum(image.size for image in slices)
    if total and outside == total:
        if method == "given":
            raise ValueError(f"{source.name}: --ct-fill-value {value:g} covers every sampled voxel; the volume would "
                             "hold no data (give the value the reconstruction writes outside its circle, or none)")
        raise ValueError(f"{source.name}: every sampled slice holds the one value {value:g} and nothing else: "
                         "no data to stain")
    return {"method": method, "fill_value": value, "outside_fraction": outside / total if total else 0.0}


def field_of_view_record(field: dict) -> dict:
    """The field of view as the output records it: a NaN fill as the string ``"NaN"`` (JSON has no NaN).

    Examples
    --------
    >>> field_of_view_record({"method": "found", "fill_value": float("nan"), "outside_fraction": 0.2})["fill_value"]
    'NaN'
    """
    value = field.get("fill_value")
    return {**field, "fill_value": "NaN"} if isinstance(value, float) and np.isnan(value) else field


def _roi_mean(source, roi: tuple[int, slice, slice], option: str) -> float:
    z, rows, columns = roi
    if z >= source.shape[0]:
        raise ValueError(f"{source.name}: {option} slice {z} is beyond the volume's {source.shape[0]} slices")
    box = source.read_slice(z)[rows, columns]
    if box.size == 0 or box.shape != (rows.stop - rows.start, columns.stop - columns.start):
        raise ValueError(f"{source.name}: {option} box {rows.start}:{rows.stop}, {columns.start}:{columns.stop} "
                         f"leaves the {source.shape[1]} x {source.shape[2]} slice")
    return float(np.mean(box))


def ct_targets(profile: Any = None, info: dict | None = None) -> NormalisationConfig:
    """The CT scale a stain brings the volume to (paper 2.5): the ``normalisation`` section of a profile.

    That of ``profile`` when given, else of the checkpoint's training profile (``info["profile"]``,
    :func:`vstain.models.checkpoint.load_generator`'s record) where it is found here, else of the
    embedded ``quick`` profile (the study's scale, bone 30000 and background 10000).

    Examples
    --------
    >>> targets = ct_targets("smoke")
    >>> targets.ct_bone_mean, targets.ct_background_mean
    (30000.0, 10000.0)
    """
    if profile is not None:
        return as_profile(profile).normalisation
    try:
        return as_profile((info or {}).get("profile") or "quick").normalisation
    except ProfileError:
        return as_profile("quick").normalisation


def choose_ct_normalisation(source, *, method: str = "auto", bone_value: float | None = None,
                            background_value: float | None = None, bone_roi=None, background_roi=None,
                            sample: tuple[list, list] | None = None,
                            targets: NormalisationConfig | None = None) -> dict:
    """How the CT volume is brought to the study's scale (``targets``: :func:`ct_targets`; paper 2.5).

    ``bone_value`` and ``background_value`` (the input's own numbers) or ``bone_roi`` and
    ``background_roi`` (:func:`vstain.stages.stain.parse_roi` boxes) fix the linear map; otherwise ``method="auto"``
    finds bone and background on a few slices as the registration stage does
    (:func:`vstain.normalise.volume_scale_from_slices`), and ``"none"`` takes the volume as
    already normalised (then the automatic ROIs only check that it is). ``sample``
    (:func:`read_sample_slices` of ``source``) spares reading and segmenting them again.
    ``targets`` (default :func:`ct_targets` of no profile) gives the bone and background means.

    Returns
    -------
    dict
        ``method`` and, unless ``"none"``, ``scale`` and ``offset`` with the ROI values they come from.
    """
    targets = ct_targets() if targets is None else targets
    means = dict(bone_mean=targets.ct_bone_mean, background_mean=targets.ct_background_mean)
    given = {"values": (bone_value, background_value), "ROIs": (bone_roi, background_roi)}
    for kind, pair in given.items():
        if (pair[0] is None) != (pair[1] is None):
            raise ValueError(f"{source.name}: give both bone and background {kind}, or neither")
    if bone_value is not None and bone_roi is not None:
        raise ValueError(f"{source.name}: give bone/background values or ROIs, not both")
    if bone_value is not None:
        return {"method": "given values", **linear_ct_map(bone_value, background_value, **means)}
    if bone_roi is not None:
        values = _roi_mean(source, bone_roi, "--bone-roi"), _roi_mean(source, background_roi, "--background-roi")
        try:
            return {"method": "given ROIs", **linear_ct_map(*values, **means)}
        except ValueError as err:
            raise ValueError(f"{source.name}: --bone-roi / --background-roi: {err}") from None
    if method == "none":
        return {"method": "none (the input is taken as normalised)"}
    try:
        slices, segmentations = (sample or read_sample_slices(source))[:2]
        return volume_scale_from_slices(slices, segmentations=segmentations, **means)
    except ValueError as err:
        raise ValueError(f"{source.name}: automatic CT normalisation failed: {err} "
                         "(--ct-bone-value/--ct-background-value or --bone-roi/--background-roi)") from None


#: ``--ct-contrast``: found from the slices, bone bright as it is, or bone dark (the volume is negated first).
CONTRASTS = ("auto", "normal", "inverted")


def check_ct_contrast(source, sample: tuple, contrast: str = "auto") -> dict:
    """Stop when the CT looks inverted (bone dark): the brightest class lines the edge of the field of view.

    Around a sample lies air or medium, the darkest class of a CT; where the brightest class
    lines most of the edge instead (:func:`vstain.normalise.edge_class_shares`), bone and
    background would swap in the automatic normalisation and the stain. ``--ct-contrast
    inverted`` negates the volume first; ``--ct-contrast normal`` skips the check (a sample
    wider than the field of view, with bone at its edge). With ``contrast="inverted"`` (``source``
    already negated) the same finding means the CT was not inverted in the first place.

    Returns
    -------
    dict
        ``edge_class_shares`` (darkest to brightest class), for the output's record.

    Raises
    ------
    ValueError
        Naming the file and ``--ct-contrast``.
    """
    shares = edge_class_shares(sample[1])
    if looks_inverted(shares) and contrast == "inverted":
        raise ValueError(
            f"{source.name}: --ct-contrast inverted, but negated the CT looks inverted: its darkest class would "
            f"line {shares[3]:.0%} of the edge of the field of view; bone is bright in this scan as it comes: "
            "drop --ct-contrast inverted")
    if looks_inverted(shares):
        raise ValueError(
            f"{source.name}: the CT looks inverted (bone dark): its brightest class lines {shares[3]:.0%} of the edge "
            f"of the field of view, where air or medium lies, its darkest {shares[0]:.0%}; stained as it is, bone "
            "and background would swap. Pass --ct-contrast inverted (or --ct-contrast normal if bone is bright and "
            "the sample fills the field of view)")
    return {"edge_class_shares": None if shares is None else [round(float(v), 4) for v in shares]}


def check_ct_intensities(source, normalisation: dict, training: dict | None, checkpoint, *,
                         sample: tuple[list, list] | None = None,
                         targets: NormalisationConfig | None = None) -> tuple[dict, list[str]]:
    """Describe the intensities of ``source`` once normalised, and say, in words, what looks wrong.

    Returns the statistics (:func:`vstain.normalise.ct_statistics` over the sample region of the
    sampled slices, mapped by ``normalisation``) and a list of warnings: the volume unlike the
    checkpoint's training CT, an input taken as normalised whose bone and background are far
    from the ``targets`` (:func:`ct_targets`), or a checkpoint that records no training statistics. ``sample``
    (:func:`read_sample_slices` of ``source``) spares reading and segmenting the slices again:
    the sample region comes from the input's own segmentation (a linear map with a positive
    scale leaves the intensity classes where they are).
    """
    raw, segmentations = (sample or read_sample_slices(source))[:2]
    if "scale" in normalisation:
        mapping = NormalisedVolume(source, normalisation["scale"], normalisation["offset"])
        slices = [mapping.map_slice(image) for image in raw]
    else:
        slices = raw
    # the sample, not the air around it nor the fill outside the field of view (class -1)
    fill = (sample[2] if sample is not None and len(sample) > 2 else {}).get("fill_value")
    masks = [seg["classes"] >= 1 if seg is not None else
             ~ct_outside_field_of_view(image, fill) if fill is not None else np.ones(image.shape, bool)
             for image, seg in zip(raw, segmentations)]
    stats = ct_statistics(slices, masks)
    notes = []
    targets = ct_targets() if targets is None else targets
    bone, background = targets.ct_bone_mean, targets.ct_background_mean
    contrast = bone - background
    if normalisation["method"].startswith("none"):
        try:
            found = volume_scale_from_slices(slices, segmentations=segmentations, bone_mean=bone,
                                             background_mean=background)
        except ValueError:
            found = None
        if found is None or (abs(found["bone_mean_before"] - bone) > 0.25 * contrast
                             or abs(found["background_mean_before"] - background) > 0.25 * contrast):
            seen = ("no bone and background found" if found is None else
                    f"bone {found['bone_mean_before']:.0f}, background {found['background_mean_before']:.0f}")
            notes.append(f"{source.name}: taken as normalised, but the automatic ROIs read {seen} "
                         f"where the model expects {bone:.0f} and {background:.0f}; drop --ct-normalisation none")
    if training is None:
        notes.append(f"{checkpoint}: records no training CT statistics; the volume's intensities cannot be "
                     "compared with what the model was trained on")
    else:
        difference = compare_ct_statistics(stats, training, contrast=contrast)
        if difference:
            notes.append(f"{source.name}: the normalised CT is unlike the training CT of {checkpoint}: "
                         f"{difference}; check the normalisation before trusting the stain")
    return stats, notes


#: Largest factor between a volume's voxel size and the training CT's (either way) before a warning; also the
#: largest ratio of a volume's longest to shortest voxel side.
VOXEL_SIZE_FACTOR = 2.0


def check_voxel_size(source, training_um: float | None, checkpoint) -> list[str]:
    """Warnings, in words, when the volume's voxels are far from the training CT's or far from cubic.

    The generator learnt the structures at the training voxel size (recorded in the checkpoint
    as ``ct_voxel_um``); at another size they appear larger or smaller than it knows them. A
    checkpoint that records none is not compared.

    Examples
    --------
    >>> from vstain.volume_io import ArrayVolume
    >>> check_voxel_size(ArrayVolume(np.zeros((2, 2, 2)), (5, 5, 5), name="ct.tif"), 5.0, "last.pt")
    []
    >>> check_voxel_size(ArrayVolume(np.zeros((2, 2, 2)), (50, 1, 1), name="ct.tif"), 5.0, "last.pt")[0]
    'ct.tif: voxel size 50 x 1 x 1 um (z, y, x), but last.pt was trained on CT at 5 um: structures appear 0.1-5x the size the model learnt; resample the volume to 5 um voxels, or expect a worse stain'
    """
    sizes = tuple(float(v) for v in source.voxel_size_um)
    shown = " x ".join(f"{v:g}" for v in sizes)
    notes = []
    if training_um:
        factors = [training_um / v for v in sizes]
        if max(factors) > VOXEL_SIZE_FACTOR or min(factors) < 1 / VOXEL_SIZE_FACTOR:
            notes.append(f"{source.name}: voxel size {shown} um (z, y, x), but {checkpoint} was trained on CT at "
                         f"{training_um:g} um: structures appear {min(factors):.2g}-{max(factors):.2g}x the size "
                         f"the model learnt; resample the volume to {training_um:g} um voxels, or expect a worse "
                         "stain")
    if max(sizes) > VOXEL_SIZE_FACTOR * min(sizes):
        notes.append(f"{source.name}: anisotropic voxels {shown} um (z, y, x): each slice is stained as if its "
                     "voxels were cubic; resample to cubic voxels first")
    return notes
