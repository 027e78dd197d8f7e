"""Preparing a registered pair (paper 2.3, 2.5, 2.8): register the section, normalise both images, mask.

The science of the registration stage, on arrays: :func:`prepare_pair_images` registers a section
to its CT volume (:func:`vstain.registration.register_section_to_volume`, with the stitched field
of view of an H&E slide), and, where the quality check finds the fit sure, normalises both images
from automatic ROIs (:mod:`vstain.normalise`) and builds the sample-correspondence mask
(:mod:`vstain.masks`, with any hand-made mask). :func:`quality_figures` and
:func:`registration_record` are what a table row and a pair's record keep of the fit. Reading the
files, measuring against a known truth and writing the pair are the stage's
(:mod:`vstain.stages.register`).

Examples
--------
>>> import numpy as np
>>> from vstain.registration import RegistrationResult
>>> fit = RegistrationResult("p", np.zeros(3), np.eye(3)[1:], np.array([1.0, 0, 0]), np.eye(3),
...                          np.zeros((4, 4), np.float32), np.zeros((4, 4, 3), np.uint8), np.ones((4, 4), bool),
...                          np.ones((4, 4), bool), 5.0, 0.6, 0.1, [], 2.0, status="uncertain: x")
>>> prepared = PreparedPair(fit)
>>> prepared.registered, quality_figures(fit)["mirrored"]
(False, False)
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from vstain.masks import correspondence_mask, field_of_view_mask
from vstain.normalise import automatic_rois, normalise_ct, normalise_histology
from vstain.params import RegistrationParams
from vstain.registration import RegistrationResult, register_section_to_volume, warp_to_result

__all__ = ["PreparedPair", "prepare_pair_images", "quality_figures", "registration_record"]


@dataclasses.dataclass
class PreparedPair:
    """A registered, normalised and masked pair, or a registration the quality check did not pass.

    Attributes
    ----------
    result : RegistrationResult
        The registration (its ``ct_slice`` and ``histology`` before normalisation).
    ct, histology : ndarray or None
        The normalised images on the registered grid (None when the fit is uncertain).
    mask : ndarray, bool, or None
        The sample-correspondence mask.
    normalisation : dict
        ``{"ct": ..., "histology": ...}``: the normalisations' statistics.
    """

    result: RegistrationResult
    ct: np.ndarray | None = None
    histology: np.ndarray | None = None
    mask: np.ndarray | None = None
    normalisation: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def registered(self) -> bool:
        """Whether the quality check passed the fit (``status`` ``ok``): only then is it a registered pair."""
        return self.result.status == "ok"

    def raw_images(self) -> dict[str, np.ndarray]:
        """The registered images before normalisation and where each has data."""
        result = self.result
        return {"ct_raw": result.ct_slice.astype(np.float32), "histology_raw": result.histology,
                "ct_valid": result.ct_valid, "histology_valid": result.histology_valid}


def prepare_pair_images(ct_volume: np.ndarray, histology: np.ndarray, *, ct_voxel_um: float, histology_pixel_um: float,
                        stain: str, registration: RegistrationParams, normalisation: Any,
                        extra_mask: np.ndarray | None = None, pair_id: str = "?",
                        initial_guess: dict | None = None) -> PreparedPair:
    """Register a section to its CT volume; if the fit is sure, normalise both images and mask their common region.

    Parameters
    ----------
    ct_volume : ndarray, (Z, Y, X)
    histology : ndarray, (H, W, 3) uint8
    ct_voxel_um, histology_pixel_um : float
        The pixel sizes.
    stain : str
        ``he`` slides are stitched: their field of view (:func:`vstain.masks.field_of_view_mask`)
        limits the registration.
    registration : RegistrationParams
    normalisation : NormalisationConfig
        ``ct_bone_mean``, ``ct_background_mean``, ``histology_c_low``, ``histology_c_high``.
    extra_mask : ndarray, (H, W) bool, optional
        A hand-made mask on the histology's grid, intersected with the automatic one.
    pair_id : str
        Named in every error.
    initial_guess : dict, optional
        As :func:`~vstain.registration.register_section_to_volume` takes it.

    Returns
    -------
    PreparedPair
        Only ``result`` set when the fit is uncertain (:attr:`PreparedPair.registered` False).

    Raises
    ------
    RegistrationError
        Bad input, naming the pair and the field; :class:`~vstain.registration.RegistrationFailed` when
        the registration fails.
    """
    fov = field_of_view_mask(histology) if stain == "he" and np.asarray(histology).ndim == 3 else None
    result = register_section_to_volume(ct_volume, histology, ct_voxel_um=ct_voxel_um,
                                        histology_pixel_um=histology_pixel_um, config=registration, fov_mask=fov,
                                        pair_id=pair_id, initial_guess=initial_guess)
    if result.status != "ok":
        # A fit that may be a wrong local optimum is not a registered pair: stop here.
        return PreparedPair(result)
    extra_masks = [warp_to_result(extra_mask.astype(np.uint8), result) > 0] if extra_mask is not None else []
    rois = automatic_rois(result.ct_slice, result.histology, ct_valid=result.ct_valid,
                          histology_valid=result.histology_valid)
    ct_out, ct_stats = normalise_ct(result.ct_slice, rois["ct_bone"], rois["ct_background"],
                                    bone_mean=normalisation.ct_bone_mean,
                                    background_mean=normalisation.ct_background_mean, pair_id=pair_id)
    hist_out, hist_stats = normalise_histology(result.histology, rois["histology_bone"],
                                               rois["histology_background"], c_low=normalisation.histology_c_low,
                                               c_high=normalisation.histology_c_high, pair_id=pair_id)
    mask = correspondence_mask(result.ct_slice, result.histology, ct_valid=result.ct_valid,
                               histology_valid=result.histology_valid, extra_masks=extra_masks)
    return PreparedPair(result, ct_out, hist_out, mask, {"ct": ct_stats, "histology": hist_stats})


def quality_figures(result: RegistrationResult) -> dict[str, Any]:
    """What a registration table keeps of a fit: its MI and the figures of its quality check."""
    return {"mutual_information": result.mutual_information,
            "initial_mutual_information": result.initial_mutual_information,
            "mi_margin": result.mi_margin, "silhouette_iou": result.silhouette_iou,
            "tilt_spread_deg": result.tilt_spread_deg, "tilt_disagreement_deg": result.tilt_disagreement_deg,
            "tilt_error_px": result.tilt_error_px, "mirrored": result.mirrored,
            "normal_axis": result.normal_axis}


def registration_record(result: RegistrationResult, ct_voxel_um: float, histology_pixel_um: float,
                        initial_guess: str) -> dict[str, Any]:
    """What a registered pair's record keeps of its fit: plane, affine, pixel sizes, quality, MI history.

    ``initial_guess`` names how the fit started (``none``, ``orientation``, ``landmarks``). Plain
    lists and numbers, for a JSON file.
    """
    return {
        "plane_point_zyx": result.plane_point.tolist(), "plane_axes_zyx": result.plane_axes.tolist(),
        "plane_normal_zyx": result.plane_normal.tolist(), "affine": result.affine.tolist(),
        "ct_voxel_um": ct_voxel_um, "histology_pixel_um": histology_pixel_um,
        "mutual_information": result.mutual_information,
        "initial_mutual_information": result.initial_mutual_information,
        "mi_margin": result.mi_margin, "silhouette_iou": result.silhouette_iou, "mirrored": result.mirrored,
        "tilt_spread_deg": result.tilt_spread_deg, "tilt_disagreement_deg": result.tilt_disagreement_deg,
        "tilt_error_px": result.tilt_error_px, "normal_axis": result.normal_axis,
        "initial_guess": initial_guess, "status": result.status, "mi_history": result.mi_history,
        "seconds": result.seconds,
    }
