"""Normalisation (paper 2.5): CT ROI means, histology white balance, stretch bounds, clamps and hue."""

import numpy as np
import pytest

from vstain.normalise import automatic_rois, normalise_ct, normalise_histology


def test_ct_roi_means_and_clipped_fraction():
    rng = np.random.default_rng(0)
    ct = rng.normal(500.0, 20.0, (64, 64))
    ct[20:40, 20:40] = rng.normal(2500.0, 50.0, (20, 20))
    ct[0, 0] = 1e6  # an outlier beyond 16 bit
    bone = np.zeros(ct.shape, bool)
    bone[20:40, 20:40] = True
    background = np.zeros(ct.shape, bool)
    background[45:, 45:] = True
    image, stats = normalise_ct(ct, bone, background, bone_mean=30000, background_mean=10000)
    assert image.dtype == np.uint16
    assert image[bone].mean() == pytest.approx(30000, abs=1)
    assert image[background].mean() == pytest.approx(10000, abs=1)
    assert stats["clipped_fraction"] == pytest.approx(1 / ct.size)
    assert image[0, 0] == 65535


def test_ct_errors_name_pair_and_field():
    ct = np.ones((8, 8))
    roi = np.zeros((8, 8), bool)
    with pytest.raises(ValueError, match="pair p3: bone_roi is empty"):
        normalise_ct(ct, roi, ~roi, pair_id="p3")
    with pytest.raises(ValueError, match="pair p3: bone_roi mean .* is not above"):
        normalise_ct(ct, ~roi, ~roi, pair_id="p3")
    with pytest.raises(ValueError, match="pair p3: ct contains NaN"):
        normalise_ct(np.full((8, 8), np.nan), ~roi, ~roi, pair_id="p3")


def _section(white=(230, 240, 250)):
    rng = np.random.default_rng(1)
    rgb = np.empty((60, 60, 3), np.float64)
    rgb[:] = white
    rgb[10:50, 10:50] = (120, 140, 200)  # bone
    rgb[25:35, 25:35] = (80, 60, 160)  # darker tissue
    rgb += rng.normal(0, 2, rgb.shape)
    bone = np.zeros((60, 60), bool)
    bone[12:48, 12:24] = True
    return np.clip(rgb, 0, 255).astype(np.uint8), bone, ~np.pad(np.ones((44, 44), bool), 8)


def test_histology_white_balance_and_stretch_bounds():
    rgb, bone, background = _section()
    image, stats = normalise_histology(rgb, bone, background, c_low=5, c_high=5)
    balanced = rgb.astype(float) * np.asarray(stats["white_balance_gains"])
    # After white balance the background's R, G and B means are equal.
    assert np.ptp(balanced[background].mean(axis=0)) < 1e-6
    expected_min = max(10.0, np.percentile(balanced[bone], 1, axis=0).min() - 5)
    expected_max = min(255.0, np.percentile(balanced[background], 99, axis=0).max() + 5)
    assert stats["f_min"] == pytest.approx(expected_min) and stats["f_max"] == pytest.approx(expected_max)
    assert np.ptp(image[background].mean(axis=0)) < 1.0  # still neutral after the stretch


def test_histology_keeps_hue_of_unclipped_pixels():
    rgb, bone, background = _section()
    image, stats = normalise_histology(rgb, bone, background, c_low=5, c_high=5)
    balanced = rgb.astype(float) * np.asarray(stats["white_balance_gains"])
    inside = np.all((balanced > stats["f_min"] + 2) & (balanced < stats["f_max"] - 2), axis=-1)
    assert inside.sum() > 500
    before = balanced[inside] - balanced[inside].mean(axis=1, keepdims=True)
    after = image[inside].astype(float) - image[inside].mean(axis=1, keepdims=True)
    factor = 255.0 / (stats["f_max"] - stats["f_min"])
    # The offset from grey is scaled by one factor for every channel (up to 8-bit rounding).
    assert np.abs(after - factor * before).max() < 1.0


def test_histology_clamps():
    rgb, bone, background = _section(white=(255, 255, 255))
    rgb[bone] = 3  # bone darker than the lower clamp
    image, stats = normalise_histology(rgb, bone, background, c_low=5, c_high=5)
    assert stats["f_min"] == 10.0 and stats["f_min_clamped"]
    assert stats["f_max"] == 255.0 and stats["f_max_clamped"]
    assert image[bone].max() == 0


def test_histology_rejects_non_rgb_uint8():
    rgb, bone, background = _section()
    with pytest.raises(ValueError, match="pair q1: histology must be RGB uint8"):
        normalise_histology(rgb.astype(np.float32), bone, background, c_low=5, c_high=5, pair_id="q1")


def test_automatic_rois_on_ground_truth_pair():
    from vstain.config import load_profile
    from vstain.phantom import ground_truth_pair, make_sample

    sample = make_sample(load_profile("smoke").dataset, "tb_n_01", "Ti", "toluidine_blue", 1, 0, seed=5)
    pair = ground_truth_pair(sample, normalised=False)
    rois = automatic_rois(pair.ct, pair.histology)
    assert rois["ct_bone"].sum() >= 20 and rois["histology_background"].sum() > 100
    # The bone ROI is bone, not the titanium screw: far below the screw's brightness.
    screw_level = np.percentile(pair.ct, 99.5)
    assert pair.ct[rois["ct_bone"]].mean() < 0.7 * screw_level
    assert pair.ct[rois["ct_background"]].mean() < pair.ct[rois["ct_bone"]].mean()
