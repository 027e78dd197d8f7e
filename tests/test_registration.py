"""Registration (paper 2.3): recovers a known plane and affine; bad input and failures named by pair id."""

import dataclasses

import numpy as np
import pytest

from vstain.config import load_profile
from vstain.phantom import make_sample
from vstain.registration import (RegistrationError, RegistrationFailed, oblique_slice, register_section_to_volume,
                                 registration_errors)

PROFILE = load_profile("smoke")


@pytest.fixture(scope="module")
def sample():
    return make_sample(PROFILE.dataset, "tb_test_01", "Mg", "toluidine_blue", beamtime=0, session=1, seed=11)


@pytest.fixture(scope="module")
def result(sample):
    return register_section_to_volume(sample.ct_volume, sample.histology, ct_voxel_um=sample.ct_voxel_um,
                                      histology_pixel_um=sample.histology_pixel_um, config=PROFILE.registration,
                                      pair_id=sample.pair_id)


def test_recovers_plane_and_affine_within_targets(result, sample):
    errors = registration_errors(result, sample)
    # Smoke volumes are thin (24 slices): the quick-profile targets (< 1 deg median) are the benchmark's.
    assert errors["angle_error_deg"] < 2.5
    assert errors["tre_median_px"] < 2.0
    assert errors["tre_max_px"] < 5.0
    assert errors["offset_um"] < sample.ct_voxel_um
    # The affine's scale recovers the pixel-size ratio (0.5) within the slide's few-% distortion.
    assert np.sqrt(abs(np.linalg.det(result.affine[:2, :2]))) == pytest.approx(0.5, rel=0.06)


def test_result_geometry_is_consistent(result):
    assert np.allclose(result.plane_axes @ result.plane_axes.T, np.eye(2), atol=1e-6)
    assert np.allclose(np.linalg.norm(result.plane_normal), 1.0)
    assert np.allclose(result.plane_axes @ result.plane_normal, 0.0, atol=1e-6)
    # The CT slice is the volume sampled on the plane, pixel (0, 0) at plane_point.
    assert result.ct_slice.shape == result.histology.shape[:2] == result.ct_valid.shape
    assert result.histology.dtype == np.uint8
    # histology_to_volume composes the affine and the plane.
    yx = np.array([[10.0, 20.0], [100.0, 50.0]])
    ij = (result.affine @ np.c_[yx, np.ones(2)].T)[:2].T
    expected = result.plane_point + ij[:, :1] * result.plane_axes[0] + ij[:, 1:] * result.plane_axes[1]
    assert np.allclose(result.histology_to_volume(yx), expected)
    assert result.mutual_information > result.initial_mutual_information
    assert [h["stage"] for h in result.mi_history][0] == "search" and len(result.mi_history) > 10


def test_oblique_slice_matches_axial_slice():
    volume = np.random.default_rng(0).random((6, 7, 8)).astype(np.float32)
    axes = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    assert np.allclose(oblique_slice(volume, np.array([3.0, 0.0, 0.0]), axes, (7, 8)), volume[3])
    outside = oblique_slice(volume, np.array([10.0, 0.0, 0.0]), axes, (7, 8))
    assert np.isnan(outside).all()


def test_failure_is_reported_by_pair_id(sample):
    strict = dataclasses.replace(PROFILE.registration, max_tilt_deg=0.0)
    with pytest.raises(RegistrationFailed, match="pair tb_test_01: the fitted plane tilts"):
        register_section_to_volume(sample.ct_volume, sample.histology, ct_voxel_um=5.0, histology_pixel_um=2.5,
                                   config=strict, pair_id="tb_test_01")


def _bad(ct, histology, ct_um=5.0, hist_um=2.5):
    return register_section_to_volume(ct, histology, ct_voxel_um=ct_um, histology_pixel_um=hist_um,
                                      config=PROFILE.registration, pair_id="bad_07")


VOLUME = np.random.default_rng(1).random((12, 32, 32)).astype(np.float32)
SECTION = np.random.default_rng(2).integers(0, 255, (40, 40, 3)).astype(np.uint8)


@pytest.mark.parametrize("ct, histology, ct_um, hist_um, field", [
    (VOLUME[0], SECTION, 5.0, 2.5, "ct_volume must be a 3D"),
    (np.where(VOLUME > 0.99, np.nan, VOLUME), SECTION, 5.0, 2.5, "ct_volume contains NaN"),
    (np.ones_like(VOLUME), SECTION, 5.0, 2.5, "ct_volume is constant"),
    (VOLUME, SECTION.astype(np.float32), 5.0, 2.5, "histology must be an RGB uint8"),
    (VOLUME, SECTION[..., 0], 5.0, 2.5, "histology must be an RGB uint8"),
    (VOLUME, np.zeros((0, 0, 3), np.uint8), 5.0, 2.5, "histology must be an RGB uint8|histology is empty"),
    (VOLUME, np.full((40, 40, 3), 7, np.uint8), 5.0, 2.5, "histology is constant"),
    (VOLUME, SECTION, None, 2.5, "ct_voxel_um \\(pixel size\\) is missing"),
    (VOLUME, SECTION, 5.0, None, "histology_pixel_um \\(pixel size\\) is missing"),
    (VOLUME, SECTION, 5.0, -1.0, "histology_pixel_um must be a positive"),
    (VOLUME, np.zeros((400, 400, 3), np.uint8) + SECTION[:1, :1], 5.0, 2.5, "larger than any plane"),
])
def test_bad_input_names_pair_and_field(ct, histology, ct_um, hist_um, field):
    with pytest.raises(RegistrationError, match=f"pair bad_07: .*({field})"):
        _bad(ct, histology, ct_um, hist_um)


def test_fit_does_not_depend_on_the_machines_thread_count(sample, result):
    import SimpleITK as sitk

    previous = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1 if previous != 1 else 3)
    try:
        again = register_section_to_volume(sample.ct_volume, sample.histology, ct_voxel_um=sample.ct_voxel_um,
                                           histology_pixel_um=sample.histology_pixel_um,
                                           config=PROFILE.registration, pair_id=sample.pair_id)
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(previous)
    assert PROFILE.registration.threads == 1
    np.testing.assert_array_equal(again.affine, result.affine)
    np.testing.assert_array_equal(again.plane_normal, result.plane_normal)
