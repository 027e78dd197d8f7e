"""Colour measures (vstain.colour) and chapter 02's class colour distances (vstain.reports.normalisation)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from skimage.color import rgb2lab

from vstain.colour import class_mean_colours, ct_lightness_correlation, delta_e, lightness
from vstain.config import load_profile
from vstain.normalise import normalise_histology
from vstain.phantom import LABELS, make_sample
from vstain.reports import normalisation as report


def test_delta_e_matches_the_lab_distance_and_refuses_unknown_methods():
    a, b = np.array([120.0, 60, 140]), np.array([100.0, 120, 220])
    lab_a, lab_b = rgb2lab(a[None, None] / 255)[0, 0], rgb2lab(b[None, None] / 255)[0, 0]
    assert float(delta_e(a, b, method="cie76")) == pytest.approx(np.linalg.norm(lab_a - lab_b))
    assert 0 < float(delta_e(a, b)) < float(delta_e(a, b, method="cie76"))  # CIEDE2000 weighs hue and chroma down
    assert delta_e(np.zeros((4, 3)), np.zeros((4, 3))).shape == (4,)
    with pytest.raises(ValueError, match="Delta E method"):
        delta_e(a, b, method="cmc")
    with pytest.raises(ValueError, match="RGB axis"):
        delta_e([1, 2], [3, 4])


def test_class_means_count_only_valid_pixels_of_large_enough_classes():
    rgb = np.zeros((4, 6, 3), np.uint8)
    labels = np.zeros((4, 6), int)
    rgb[:, :3] = (200, 210, 220)
    labels[:, 3:] = 2
    rgb[:, 3:] = (90, 40, 120)
    rgb[0, 3:] = (255, 0, 0)  # invalid row: must not count
    labels[3, 5] = 7           # a class of one pixel
    valid = np.ones((4, 6), bool)
    valid[0, 3:] = False
    means = class_mean_colours(rgb, labels, valid, min_pixels=2)
    assert sorted(means) == [0, 2]
    assert means[2].tolist() == [90.0, 40.0, 120.0] and means[0].tolist() == [200.0, 210.0, 220.0]
    with pytest.raises(ValueError, match="labels"):
        class_mean_colours(rgb, labels[:, :5])


def test_lightness_correlation_sign_is_the_intensity_relation():
    rng = np.random.default_rng(0)
    ct = rng.uniform(10000, 30000, (16, 16))
    grey = np.clip((ct - 10000) / 20000 * 200 + 30, 0, 255).astype(np.uint8)
    pale_bone = np.repeat(grey[..., None], 3, axis=-1)          # bright CT, pale stain
    dark_bone = 255 - pale_bone                                 # bright CT, dark stain (the paper's TB)
    mask = np.ones(ct.shape, bool)
    assert ct_lightness_correlation(ct, pale_bone, mask) > 0.95
    assert ct_lightness_correlation(ct, dark_bone, mask) < -0.95
    flat = np.full_like(pale_bone, 128)
    assert np.isnan(ct_lightness_correlation(ct, flat, mask))
    assert np.isnan(ct_lightness_correlation(ct, pale_bone, np.zeros_like(mask)))
    assert lightness(pale_bone).shape == ct.shape


def _slide():
    """Background (pale slide), dense bone (purple), a dark degradation layer and a black screw, hand-made."""
    labels = np.zeros((40, 40), np.uint8)
    labels[:, 10:20] = LABELS["dense_bone"]
    labels[:, 20:30] = LABELS["degradation_layer"]
    labels[:, 30:] = LABELS["screw"]
    raw = np.zeros((40, 40, 3), np.uint8)
    raw[labels == LABELS["background"]] = (230, 230, 230)  # neutral: white balance leaves it
    raw[labels == LABELS["dense_bone"]] = (120, 70, 150)
    raw[labels == LABELS["degradation_layer"]] = (50, 35, 60)
    raw[labels == LABELS["screw"]] = (8, 8, 10)
    return raw, labels


def test_a_stretch_that_clips_merges_the_degradation_layer_with_the_screw():
    raw, labels = _slide()
    bone, background = labels == LABELS["dense_bone"], labels == LABELS["background"]
    normalised, stats = normalise_histology(raw, bone, background, c_low=5, c_high=5)
    # f_min = P1 of bone (min over RGB: 70) - 5 = 65: everything darker than that clips to black
    assert stats["f_min"] == pytest.approx(65.0) and not stats["f_min_clamped"]
    d = report.class_colour_distances(raw, normalised, labels, min_pixels=1).set_index(["class_a", "class_b"])
    watched = d.loc[("degradation_layer", "screw")]
    assert watched.delta_e_before > 10 and watched.delta_e_after == pytest.approx(0.0, abs=1e-6)
    assert watched.merged_after and not watched.merged_before
    assert watched.rgb_a_after == [0, 0, 0]
    assert not d.loc[("background", "dense_bone")].merged_after
    table = d.reset_index().assign(stain="toluidine_blue", pair_id="p")
    sentence = report.merge_sentence(table, "toluidine_blue")
    assert sentence.startswith("Normalisation merges 1 of 6 pairs of classes")
    assert "degradation layer and screw" in sentence
    assert report.merge_sentence(table, "he") == "No he slide had the classes to compare."


def test_a_gentle_stretch_merges_nothing():
    raw, labels = _slide()
    same = report.class_colour_distances(raw, raw, labels, min_pixels=1)
    assert (same.delta_e_before == same.delta_e_after).all() and not same.merged_after.any()
    sentence = report.merge_sentence(same.assign(stain="tb", pair_id="p"), "tb")
    assert sentence.startswith("Normalisation merges no two classes")


def test_ground_truth_distances_on_a_phantom_pair():
    profile = load_profile("smoke")
    sample = make_sample(profile.dataset, "tb_mg_x", "Mg", "toluidine_blue", 0, 0, seed=3)
    distances, clamps = report.ground_truth_colour_distances([sample], c_low=5, c_high=5)
    assert len(clamps) == 1 and clamps.pair_id[0] == "tb_mg_x"
    assert {"background", "dense_bone", "screw"} <= set(distances.class_a) | set(distances.class_b)
    assert (distances.delta_e_before >= 0).all() and (distances.delta_e_after >= 0).all()
    assert report.clamp_sentence(clamps).startswith("The clamp of f_min at 10 engaged on ")
    summary = report.distance_summary(distances)
    assert (summary.min_after <= summary.median_after).all()
    assert list(summary.min_after) == sorted(summary.min_after)
    assert report.clamp_sentence(pd.DataFrame()) == "No slides were normalised."
