"""Registration (paper 2.3): recovers a known plane and affine at any in-plane rotation and on either face;
a wrong fit is flagged, never accepted; bad input and failures named by pair id."""

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import yaml
from scipy import ndimage as ndi

from vstain.config import ProfileError, load_profile, resolve_profile_path
from vstain.layout import stage_dir
from vstain.phantom import make_sample
from vstain.phantom.truth import registration_errors, true_correspondence_mask
from vstain.registration import (RegistrationError, RegistrationFailed, oblique_slice,
                                 register_section_to_volume, warp_to_result)

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


# --------------------------------------------------------------------------- any orientation, either face


def turned(sample, angle_deg: float, mirror: bool = False):
    """The sample with its slide image turned by ``angle_deg`` (and mirrored), glass around it.

    An exact resampling of the section onto a canvas that holds all of it (so larger than the
    CT's field of view), filled with the section's own glass colour; the true affine follows.
    The generator draws its own rotations; these are chosen here, whatever it draws.
    """
    h, w = sample.histology.shape[:2]
    a = math.radians(angle_deg)
    linear = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    if mirror:
        linear = linear @ np.diag([1.0, -1.0])
    corners = np.array([[0, 0], [0, w - 1], [h - 1, 0], [h - 1, w - 1]], float) - [(h - 1) / 2, (w - 1) / 2]
    mapped = corners @ linear.T
    height, width = (int(np.ceil(np.ptp(mapped[:, k]))) + 1 for k in range(2))
    old_to_new = np.eye(3)
    old_to_new[:2, :2] = linear
    old_to_new[:2, 2] = [(height - 1) / 2, (width - 1) / 2] - linear @ [(h - 1) / 2, (w - 1) / 2]
    inverse = np.linalg.inv(old_to_new)

    def warp(image, order, cval):
        return ndi.affine_transform(image, inverse[:2, :2], inverse[:2, 2], output_shape=(height, width),
                                    order=order, cval=cval)

    glass = [int(np.median(sample.histology[..., c][sample.section_labels == 0])) for c in range(3)]
    histology = np.stack([warp(sample.histology[..., c], 1, glass[c]) for c in range(3)], axis=-1)
    return dataclasses.replace(sample, histology=histology.astype(np.uint8),
                               section_labels=warp(sample.section_labels, 0, 0),
                               fov_mask=np.ones((height, width), bool), affine=sample.affine @ inverse,
                               artefacts=None)


def _register(sample, config=None, pair_id="turned"):
    return register_section_to_volume(sample.ct_volume, sample.histology, ct_voxel_um=sample.ct_voxel_um,
                                      histology_pixel_um=sample.histology_pixel_um,
                                      config=config or PROFILE.registration, pair_id=pair_id)


@pytest.mark.slow
@pytest.mark.parametrize("angle, mirror", [(90.0, False), (200.0, False), (0.0, True), (137.0, True)])
def test_recovers_a_section_turned_or_mirrored_on_its_slide(sample, angle, mirror):
    case = turned(sample, angle, mirror)
    assert case.histology.shape[0] > sample.histology.shape[0] or angle % 90 == 0  # glass beyond the CT's view
    result = _register(case)
    errors = registration_errors(result, case)
    assert result.status == "ok", result.status
    assert result.mirrored == (np.linalg.det(case.affine[:2, :2]) < 0) and errors["mirror_correct"]
    assert errors["angle_error_deg"] < 2.5 and errors["inplane_error_deg"] < 3.0
    assert errors["tre_median_px"] < 2.0 and errors["tre_max_px"] < 5.0
    assert result.mi_margin > PROFILE.registration.min_mi_margin
    # The warps follow a mirrored affine: the true common region lands on the registered grid.
    true_mask = true_correspondence_mask(result, case)
    assert true_mask.sum() > 0.2 * true_mask.size
    labels = warp_to_result(case.section_labels, result)
    assert (labels[true_mask] > 0).mean() > 0.95


@pytest.mark.slow
def test_a_section_of_another_sample_is_flagged_not_registered(sample):
    other = make_sample(PROFILE.dataset, "tb_test_02", "Mg", "toluidine_blue", beamtime=0, session=1, seed=12)
    mismatched = dataclasses.replace(other, histology=sample.histology)
    result = _register(mismatched, pair_id="mismatch")
    assert result.status.startswith("uncertain: MI margin"), result.status
    assert result.mi_margin < PROFILE.registration.min_mi_margin


def test_a_search_denied_the_true_orientation_is_flagged_or_fails(sample):
    # The section lies at 90 deg, the search looks only within +/- 40 deg of upright, face up:
    # every start is wrong, and the result must say so rather than report a fit.
    denied = dataclasses.replace(PROFILE.registration, max_inplane_rotation_deg=40.0, search_mirror=False)
    try:
        result = _register(turned(sample, 90.0), config=denied, pair_id="denied")
    except RegistrationFailed as err:
        assert "pair denied" in str(err)
    else:
        assert result.status.startswith("uncertain"), result.status


def test_the_right_fit_beats_every_other_orientation_clearly(result):
    assert result.status == "ok"
    assert result.mi_margin > 2 * PROFILE.registration.min_mi_margin
    assert result.silhouette_iou > PROFILE.registration.min_silhouette_iou


@pytest.mark.parametrize("key, value", [("min_mi_margin", 1.5), ("min_mi_margin", -0.1),
                                        ("min_silhouette_iou", 1.0), ("orientation_separation_deg", 0),
                                        ("n_orientation_starts", -1)])
def test_quality_thresholds_are_range_checked_by_the_profile_loader(tmp_path, key, value):
    data = yaml.safe_load(resolve_profile_path("smoke").read_text())
    data["registration"][key] = value
    path = tmp_path / "variant.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ProfileError, match=rf"variant\.yaml: registration\.{key} must be .*got"):
        load_profile(path)


def test_an_uncertain_pair_is_tabled_with_its_figures_and_never_registered(smoke_dataset, tmp_path, monkeypatch):
    """A real fit the check flags (the pair's orientation guess is 90 degrees off) reaches the table with its
    quality figures and its errors against the truth, and leaves no pair folder for training to find."""
    from vstain.manifest import load_manifest
    from vstain.phantom import load_sample
    from vstain.stages import register

    monkeypatch.setenv("VSTAIN_RESULTS", str(tmp_path))
    profile = load_profile("smoke")
    entry = next(e for e in load_manifest(smoke_dataset).pairs if e.stain == "toluidine_blue")
    truth = load_sample(Path(entry.ct_path).parent).details["affine"]
    wrong = dataclasses.replace(entry, initial_guess={"rotation_deg": truth["rotation_deg"] + 90.0,
                                                      "mirrored": bool(truth["mirrored"])})
    out = stage_dir("smoke", "registered")
    out.mkdir(parents=True, exist_ok=True)
    assert register.register_pair_into(out, wrong, profile, synthetic=True) == "uncertain"
    assert not (out / entry.pair_id).exists()  # no pair folder: training never sees it
    row = register.registration_table("smoke", [entry.pair_id]).iloc[0]
    assert row["status"].startswith("uncertain: another orientation"), row["status"]
    assert row["mi_margin"] < 0 and row["silhouette_iou"] >= 0 and row["initial_guess"] == "orientation"
    assert row["tre_median_px"] > 5.0 and row["angle_error_deg"] >= 0 and row["seconds"] > 0
    assert json.loads((out / f".{entry.pair_id}.failed.json").read_text())["mutual_information"] > 0


# --------------------------------------------------------------------------- steep tilts, other axes, starts


#: The phantom as the quick profile draws it (tilts up to 15 degrees, 30 % of normals along y or x) at smoke size,
#: and the quick profile's search (every axis, the cone of tilts, the tilt check): smoke keeps neither.
QUICK = load_profile("quick")
STEEP = dataclasses.replace(PROFILE.dataset, min_tilt_deg=QUICK.dataset.min_tilt_deg,
                            max_tilt_deg=QUICK.dataset.max_tilt_deg,
                            other_axis_fraction=QUICK.dataset.other_axis_fraction)
FULL = dataclasses.replace(PROFILE.registration, max_tilt_deg=QUICK.registration.max_tilt_deg,
                           search_axes=QUICK.registration.search_axes,
                           tilt_step_deg=QUICK.registration.tilt_step_deg,
                           check_tilt_deg=QUICK.registration.check_tilt_deg,
                           tilt_refit_gain=QUICK.registration.tilt_refit_gain,
                           tilt_refit_rounds=QUICK.registration.tilt_refit_rounds,
                           max_tilt_spread_deg=QUICK.registration.max_tilt_spread_deg,
                           tilt_agreement_tolerance=QUICK.registration.tilt_agreement_tolerance,
                           max_tilt_error_px=QUICK.registration.max_tilt_error_px)


def _seeded(seed: int, cfg=None):
    return make_sample(cfg or STEEP, f"seed_{seed}", "Mg", "toluidine_blue", beamtime=0, session=0, seed=seed)


@pytest.mark.slow
@pytest.mark.parametrize("seed, axis", [(22, "z"), (31, "y"), (17, "x")])
def test_recovers_a_strongly_tilted_section_along_any_volume_axis(seed, axis):
    case = _seeded(seed)
    assert case.details["normal_axis"] == axis and case.details["tilt_deg"] > 9.5  # the draw this test is about
    result = _register(case, config=FULL, pair_id=f"tilted_{axis}")
    errors = registration_errors(result, case)
    assert result.status == "ok", result.status
    assert result.normal_axis == axis
    assert errors["angle_error_deg"] < 2.5 and errors["tre_median_px"] < 2.0 and errors["tre_max_px"] < 5.0
    assert result.tilt_spread_deg <= FULL.max_tilt_spread_deg
    assert result.tilt_error_px <= FULL.max_tilt_error_px  # a sharp MI peak: the refits agree on the tilt


@pytest.mark.slow
def test_the_search_picks_the_right_axis_where_every_axis_could_hold_the_section():
    """In a cube-shaped volume every axis's cross-section holds the section: all three are searched and
    the section normal's axis wins (in smoke's thin volumes only the thick cross-section can)."""
    cube = dataclasses.replace(STEEP, ct_shape=[64, 64, 64])
    case = _seeded(10, cube)
    assert case.details["normal_axis"] == "y"
    result = _register(case, config=FULL, pair_id="cube")
    errors = registration_errors(result, case)
    assert result.normal_axis == "y" and result.status == "ok", result.status
    assert errors["tre_median_px"] < 2.0 and errors["tre_max_px"] < 5.0


@pytest.mark.slow
def test_a_deliberately_wrong_start_is_flagged_not_accepted(sample):
    # The pair's "known" orientation is off by 90 degrees: the fit may take only that one, the grid still
    # scans the rest, and the right orientation beats the fit: uncertain, never ok.
    wrong = {"rotation_deg": sample.details["affine"]["rotation_deg"] + 90.0, "mirrored": False}
    result = register_section_to_volume(sample.ct_volume, sample.histology, ct_voxel_um=sample.ct_voxel_um,
                                        histology_pixel_um=sample.histology_pixel_um, config=PROFILE.registration,
                                        pair_id="wrong_start", initial_guess=wrong)
    assert result.status.startswith("uncertain"), result.status
    assert result.mi_margin < 0
    assert registration_errors(result, sample)["tre_median_px"] > 5.0


def test_a_right_orientation_guess_registers(sample):
    guess = {"rotation_deg": sample.details["affine"]["rotation_deg"], "mirrored": False, "normal_axis": 0}
    result = register_section_to_volume(sample.ct_volume, sample.histology, ct_voxel_um=sample.ct_voxel_um,
                                        histology_pixel_um=sample.histology_pixel_um, config=PROFILE.registration,
                                        pair_id="guess", initial_guess=guess)
    assert result.status == "ok" and registration_errors(result, sample)["tre_max_px"] < 5.0


def _landmarks(case, points_yx):
    points = np.asarray(points_yx, float)
    return {"landmarks": {"histology_yx": points, "ct_zyx": case.histology_to_volume(points)}}


def test_three_landmarks_recover_a_pose_the_global_search_is_denied():
    case = _seeded(17)  # normal along x, tilted 14 degrees, face down
    denied = dataclasses.replace(FULL, search_axes=["z"])
    with pytest.raises(RegistrationFailed, match="pair denied: no plane along the searched axes"):
        _register(case, config=denied, pair_id="denied")
    h, w = case.histology.shape[:2]
    # Three rough clicks: the true correspondences moved by a CT voxel or so.
    guess = _landmarks(case, [(0.3 * h, 0.3 * w), (0.35 * h, 0.7 * w), (0.75 * h, 0.5 * w)])
    guess["landmarks"]["ct_zyx"] += np.array([[1.0, -1.0, 0.5], [-0.5, 1.0, 1.0], [0.8, 0.3, -1.0]])
    result = register_section_to_volume(case.ct_volume, case.histology, ct_voxel_um=case.ct_voxel_um,
                                        histology_pixel_um=case.histology_pixel_um, config=denied,
                                        pair_id="landmarks", initial_guess=guess)
    errors = registration_errors(result, case)
    assert result.status == "ok", result.status
    assert result.normal_axis == "x" and result.mirrored and errors["mirror_correct"]
    assert errors["angle_error_deg"] < 2.5 and errors["tre_median_px"] < 2.0 and errors["tre_max_px"] < 5.0


@pytest.mark.parametrize("points, ct_zyx, words", [
    ([(10, 10), (10, 60)], None, "2 landmark pairs given, at least 3"),
    ([(10, 10), (20, 20), (30, 30)], None, "histology_yx points lie on one line"),
    ([(10, 10), (10, 60), (500, 30)], None, "landmarks'[2].histology_yx [500.0, 30.0] lies outside the histology"),
    ([(10, 10), (10, 60), (60, 30)], [(1.0, 2.0, 3.0), (1.0, 2.0, 60.0), (1.0, 200.0, 3.0)],
     "landmarks'[2].ct_zyx [1.0, 200.0, 3.0] lies outside the CT volume"),
    ([(10, 10), (10, 60), (60, 30)], [(1.0, 2.0, 3.0), (1.0, 4.0, 5.0), (1.0, 6.0, 7.0)],
     "ct_zyx points lie on one line"),
])
def test_bad_landmarks_stop_with_an_error_naming_the_pair_and_field(sample, points, ct_zyx, words):
    guess = _landmarks(sample, points)
    if ct_zyx is not None:
        guess["landmarks"]["ct_zyx"] = np.asarray(ct_zyx)
    with pytest.raises(RegistrationError) as info:
        register_section_to_volume(sample.ct_volume, sample.histology, ct_voxel_um=sample.ct_voxel_um,
                                   histology_pixel_um=sample.histology_pixel_um, config=PROFILE.registration,
                                   pair_id="clicks_01", initial_guess=guess)
    assert "pair clicks_01: field 'initial_guess.landmarks'" in str(info.value) and words in str(info.value)


@pytest.mark.parametrize("section, key, value", [
    ("registration", "search_axes", ["z", "w"]), ("registration", "search_axes", []),
    ("registration", "search_axes", ["z", "z"]), ("registration", "tilt_step_deg", -1),
    ("registration", "check_tilt_deg", 25), ("registration", "max_tilt_spread_deg", 0),
    ("registration", "max_tilt_deg", 60), ("registration", "tilt_refit_rounds", 0),
    ("registration", "tilt_refit_gain", 1.0), ("dataset", "mirror_fraction", 1.5), ("dataset", "min_tilt_deg", 40),
    ("dataset", "slide_rotation_deg", 200), ("dataset", "max_tilt_deg", -1),
    ("dataset", "other_axis_fraction", -0.1),
])
def test_search_and_phantom_ranges_are_checked_by_the_profile_loader(tmp_path, section, key, value):
    data = yaml.safe_load(resolve_profile_path("smoke").read_text())
    data[section][key] = value
    path = tmp_path / "variant.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ProfileError, match=rf"variant\.yaml: {section}\.{key}(\[\d\])? must be .*"):
        load_profile(path)


def test_the_open_tilt_is_the_farthest_refit_that_fits_as_well():
    from vstain.registration.checks import tilt_disagreement

    def normal(tilt_deg):  # the plane normal tilted about x by tilt_deg
        transform = sitk.Euler3DTransform()
        transform.SetRotation(math.radians(tilt_deg), 0.0, 0.0)
        return np.asarray(transform.GetMatrix()).reshape(3, 3)[:, 2]

    fit = normal(0.0)
    reference = (normal(0.1), -0.50)  # the fit refitted untilted on the check's level; values are minus MI
    refits = [reference, (normal(0.2), -0.50), (normal(3.0), -0.4995), (normal(9.0), -0.45), (normal(-6.0), -0.499)]
    # within 0.2 %: the refits at 0.2, 3 and -6 degrees; the one at 9 degrees fits clearly worse
    assert tilt_disagreement(fit, refits, 0.002) == pytest.approx(6.0, abs=1e-6)
    assert tilt_disagreement(fit, refits, 0.0005) == pytest.approx(0.2, abs=1e-6)
    assert tilt_disagreement(fit, refits, 0.2) == pytest.approx(9.0, abs=1e-6)
    # the reference counts too: levels that disagree on the tilt leave it open
    assert tilt_disagreement(fit, [(normal(4.0), -0.5)], 0.002) == pytest.approx(4.0, abs=1e-6)
    assert tilt_disagreement(fit, [], 0.002) == 0.0


def test_an_open_tilt_that_could_move_the_section_beyond_the_limit_is_uncertain():
    from vstain.registration.checks import judge

    cfg = QUICK.registration
    assert judge(0.3, 0.95, cfg, 0.0, cfg.max_tilt_error_px * 0.9, 3.0) == "ok"
    verdict = judge(0.3, 0.95, cfg, 0.0, cfg.max_tilt_error_px * 1.1, 6.0)
    assert verdict.startswith("uncertain") and "max_tilt_error_px" in verdict and "6.0 deg" in verdict


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="known silent failure: a strip one sixth of a smoke section (96 x 16 CT px) "
                   "registers 19 deg off (worst TRE 47 px; in-plane 48 deg) with MI margin 0.067, silhouette IoU "
                   "0.87 and open tilt 5.3 deg = 4.4 px, just inside the limit: every check passes it")
def test_a_narrow_strip_of_section_leaves_its_tilt_open_and_is_flagged_or_accurate(sample):
    """A strip of the section (a partial field of view) fixes the plane along the strip, not across it:
    the refits of the tilt check stop degrees apart at equal MI. Such a fit fails or is flagged, or else is right."""
    rows = sample.histology.shape[0]
    strip = np.zeros(sample.histology.shape[:2], bool)
    strip[rows // 2 - rows // 12: rows // 2 + rows // 12] = True
    histology = np.where(strip[..., None], sample.histology, 0).astype(np.uint8)
    try:
        result = register_section_to_volume(sample.ct_volume, histology, ct_voxel_um=sample.ct_voxel_um,
                                            histology_pixel_um=sample.histology_pixel_um, config=FULL,
                                            fov_mask=strip, pair_id="strip")
    except RegistrationFailed as err:
        assert "pair strip" in str(err)
        return
    errors = registration_errors(result, dataclasses.replace(sample, fov_mask=sample.fov_mask & strip))
    assert result.tilt_disagreement_deg >= 0 and math.isfinite(result.tilt_error_px)
    assert result.status != "ok" or errors["tre_max_px"] < 5.0, (result.status, errors)


def test_ct_views_smooth_each_level_once_and_keep_only_the_last_few():
    from vstain.registration.views import AXIS_ORDERS, CTViews

    ct = np.random.default_rng(0).random((6, 7, 8)).astype(np.float32)
    views = CTViews(ct, [0, 1, 2], 5.0, keep=2)
    assert list(views) == [0, 1, 2] and views[1].shape == ct.transpose(AXIS_ORDERS[1]).shape
    moving = views.moving(1, 1.5)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(moving),
                                  ndi.gaussian_filter(ct.transpose(AXIS_ORDERS[1]), 1.5))
    assert moving.GetSpacing() == (5.0, 5.0, 5.0)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(views.moving(2, 0.0)), ct.transpose(AXIS_ORDERS[2]))
    # the same level again is the same image, also through the one-axis view that shares the cache
    assert views.moving(1, 1.5) is moving and views.only(1).moving(1, 1.5) is moving
    assert 0 not in views.only(1)
    views.moving(0, 0.5)
    views.moving(2, 0.0)  # two newer levels: the first is let go
    assert views.moving(1, 1.5) is not moving
    # a coarse level keeps every step-th voxel of the smoothed view, in the same physical frame
    coarse = views.moving(2, 1.5, step=2)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(coarse),
                                  ndi.gaussian_filter(ct.transpose(AXIS_ORDERS[2]), 1.5)[::2, ::2, ::2])
    assert coarse.GetSpacing() == (10.0, 10.0, 10.0) and coarse.GetOrigin() == (0.0, 0.0, 0.0)
    # the section's levels are kept too, per array and factor
    grey, fov = np.random.default_rng(1).random((20, 30)).astype(np.float32), np.ones((20, 30), bool)
    small, fov_small = views.section_level(grey, fov, 2.0)
    assert small.shape == fov_small.shape == (10, 15)
    assert views.only(2).section_level(grey, fov, 2.0)[0] is small
    assert views.section_level(grey.copy(), fov, 2.0)[0] is not small


def test_a_refinement_leaves_the_start_it_was_given_as_it_was(sample):
    """The optimiser moves its transform in place: a start handed to a refit must not become the refit."""
    from vstain.registration import histology_grey
    from vstain.registration.plane import PlaneProblem, fit_plane
    from vstain.registration.views import CTViews

    grey = histology_grey(sample.histology)
    views = CTViews(sample.ct_volume.astype(np.float32), [0], sample.ct_voxel_um)
    start = sitk.Euler3DTransform()
    slab_centre = (np.array(grey.shape[::-1] + (1,), float) - 1) / 2 * sample.histology_pixel_um * [1, 1, 0]
    volume_centre = (np.array(sample.ct_volume.shape[::-1], float) - 1) / 2 * sample.ct_voxel_um
    start.SetCenter(tuple(slab_centre))
    start.SetTranslation(tuple(volume_centre - slab_centre))
    before = start.GetParameters()
    problem = PlaneProblem(views, sample.ct_voxel_um, sample.histology_pixel_um, PROFILE.registration, "start")
    moved = fit_plane(problem, [(grey, np.ones(grey.shape, bool))], [], (start, 0), 0).transform
    assert start.GetParameters() == before
    assert moved is not start and not np.allclose(moved.GetParameters(), before)


def test_a_turn_in_the_plane_keeps_the_plane():
    from vstain.registration.poses import normal_of, rotation_between, tilted, turned

    pose = tilted(sitk.Euler3DTransform((1.0, 2.0, 0.0), 0.1, -0.2, 0.7, (3.0, 4.0, 5.0)), 0.4, 12.0)
    spun = turned(pose, 25.0)
    np.testing.assert_allclose(normal_of(spun), normal_of(pose), atol=1e-12)
    assert rotation_between(pose, spun) == pytest.approx(25.0)
    assert rotation_between(pose, tilted(pose, 1.0, 7.0)) == pytest.approx(7.0)
    # about its centre: the centre maps where it did
    np.testing.assert_allclose(spun.TransformPoint((1.0, 2.0, 0.0)), pose.TransformPoint((1.0, 2.0, 0.0)))
