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


# --------------------------------------------------------------------------- the reconstruction's field of view


def _scan(shape=(48, 56), *, fill=0.0, air=1500.0, tissue=3000.0, bone=7000.0, noise=60.0, seed=0):
    """A hand-built CT slice: air, a tissue disc, a bone core; ``fill`` outside the reconstruction circle."""
    height, width = shape
    y, x = np.mgrid[:height, :width]
    r = np.hypot(y - (height - 1) / 2, x - (width - 1) / 2)
    image = np.where(r < 0.6 * height / 2, tissue, air) + np.where(r < 0.3 * height / 2, bone - tissue, 0.0)
    image = image + np.random.default_rng(seed).normal(0, noise, shape)
    outside = r > (height - 1) / 2
    if fill is not None:
        image[outside] = fill
    return image, outside


def test_the_fill_outside_the_reconstruction_circle_is_found_and_outlined():
    from vstain.normalise import ct_outside_field_of_view, find_ct_fill_value

    for fill in (0.0, -1000.0, 65535.0):
        image, outside = _scan(fill=fill)
        assert find_ct_fill_value([image, image]) == fill
        np.testing.assert_array_equal(ct_outside_field_of_view(image, fill), outside)
    image, outside = _scan()
    image[24, 28] = 0.0  # a voxel of the fill value inside the circle is data
    found = ct_outside_field_of_view(image, 0.0)
    assert not found[24, 28] and found.sum() == outside.sum()


def test_no_fill_is_found_where_there_is_none_or_it_is_clipped_air():
    from vstain.normalise import find_ct_fill_value

    assert find_ct_fill_value([_scan(fill=None)[0]]) is None  # a scan without a circle
    clipped = np.clip(_scan(fill=None, air=0.0, noise=300.0)[0], 0, None)  # air clipped at 0: background, not fill
    assert (clipped == 0).mean() > 0.1 and find_ct_fill_value([clipped]) is None
    quantised = np.rint(_scan(fill=None, air=5.0, tissue=40.0, bone=200.0, noise=3.0)[0]).clip(0, 255)
    assert find_ct_fill_value([quantised]) is None  # an 8-bit scan with a few exact values at its border


def test_the_fill_found_on_most_slices_wins_and_a_blank_slice_is_all_fill():
    from vstain.normalise import find_ct_fill_value

    blank = np.zeros((48, 56))
    assert find_ct_fill_value([_scan()[0], blank, _scan(fill=None)[0]]) == 0.0
    assert find_ct_fill_value([_scan(fill=-5.0)[0], _scan()[0], _scan(seed=1)[0]]) == 0.0


def test_the_fill_is_left_out_of_the_volume_normalisation():
    from vstain.normalise import ct_outside_field_of_view, segment_ct_slices, volume_scale_from_slices

    slices = [_scan(seed=seed)[0] for seed in range(3)]
    truth = volume_scale_from_slices([_scan(fill=None, seed=seed)[0] for seed in range(3)])
    naive = volume_scale_from_slices(slices)
    assert naive["background_mean_before"] < 500  # the fill taken as background: the fault this guards against
    valid = [~ct_outside_field_of_view(image, 0.0) for image in slices]
    segmentations = segment_ct_slices(slices, valid)
    assert all((seg["classes"][~inside] == -1).all() for seg, inside in zip(segmentations, valid))
    found = volume_scale_from_slices(slices, segmentations=segmentations)
    assert found["background_mean_before"] == pytest.approx(1500, abs=60)
    assert found["scale"] == pytest.approx(truth["scale"], rel=0.03)
    assert segment_ct_slices([np.zeros((48, 56))], [np.zeros((48, 56), bool)]) == [None]
    with pytest.raises(ValueError, match="2 field-of-view masks for 3 slices"):
        segment_ct_slices(slices, valid[:2])


def test_nan_outside_the_reconstruction_circle_is_the_fill_and_is_left_out_like_zeros():
    from vstain.normalise import (FieldOfViewVolume, ct_outside_field_of_view, find_ct_fill_value,
                                  segment_ct_slices, volume_scale_from_slices)
    from vstain.volume_io import ArrayVolume

    slices = [_scan(fill=np.nan, seed=seed)[0] for seed in range(3)]
    outside = _scan(fill=np.nan)[1]
    assert np.isnan(find_ct_fill_value(slices))
    found = ct_outside_field_of_view(slices[0], np.nan)
    np.testing.assert_array_equal(found, outside)
    # a NaN inside the circle is not connected to the border: it is not the fill (the caller refuses it)
    holed = slices[0].copy()
    holed[24, 28] = np.nan
    assert not ct_outside_field_of_view(holed, np.nan)[24, 28]
    # the normalisation from the slices' field of view is that of the scan without a circle
    valid = [~ct_outside_field_of_view(image, np.nan) for image in slices]
    segmentations = segment_ct_slices(slices, valid)
    assert all((seg["classes"][~inside] == -1).all() for seg, inside in zip(segmentations, valid))
    truth = volume_scale_from_slices([_scan(fill=None, seed=seed)[0] for seed in range(3)])
    scale = volume_scale_from_slices(slices, segmentations=segmentations)
    assert scale["background_mean_before"] == pytest.approx(1500, abs=60)
    assert scale["scale"] == pytest.approx(truth["scale"], rel=0.03) and np.isfinite(scale["offset"])
    # the generator reads the background there: no NaN reaches the stain
    volume = FieldOfViewVolume(ArrayVolume(np.stack(slices).astype(np.float32), (1, 1, 1)), np.nan, 1500.0)
    mapped = volume.read_slice(1)
    assert np.isfinite(mapped).all() and (mapped[outside] == 1500.0).all()
    np.testing.assert_array_equal(volume.outside(2), outside)


def test_a_nan_fill_is_weighed_against_numeric_fills_by_the_slices_that_show_it():
    from vstain.normalise import find_ct_fill_value

    nan_slice, zero_slice = _scan(fill=np.nan)[0], _scan()[0]
    assert np.isnan(find_ct_fill_value([nan_slice, nan_slice, zero_slice]))
    assert find_ct_fill_value([zero_slice, _scan(seed=1)[0], nan_slice]) == 0.0
    assert np.isnan(find_ct_fill_value([np.full((48, 56), np.nan)]))  # the blank end of a scan: all fill
    few = _scan(fill=None)[0]
    few[0, :3] = np.nan  # a few NaN pixels on the border: not a circle's fill
    assert find_ct_fill_value([few]) is None


def test_a_field_of_view_volume_reads_background_outside_and_remembers_the_masks():
    from vstain.normalise import FieldOfViewVolume
    from vstain.volume_io import ArrayVolume

    image, outside = _scan()
    reads = []

    class Counting(ArrayVolume):
        def read_slice(self, z):
            reads.append(z)
            return super().read_slice(z)

    volume = FieldOfViewVolume(Counting(np.stack([image, image]).astype(np.float32), (1, 1, 1)), 0.0, 1500.0,
                               cache=1)
    mapped = volume.read_slice(0)
    assert (mapped[outside] == 1500.0).all() and np.array_equal(mapped[~outside], image[~outside].astype(np.float32))
    np.testing.assert_array_equal(volume.outside(0), outside)
    assert reads == [0]  # the mask of a slice just read is remembered
    volume.read_slice(1)
    np.testing.assert_array_equal(volume.outside(0), outside)
    assert reads == [0, 1, 0]  # beyond the cache: read again


# --------------------------------------------------------------------------- contrast: bone bright or dark


def test_the_classes_along_the_edge_tell_an_inverted_ct():
    from vstain.masks import segment_ct
    from vstain.normalise import edge_class_shares, looks_inverted

    image, outside = _scan()
    valid = ~outside
    normal = edge_class_shares([segment_ct(image, valid)])
    inverted = edge_class_shares([segment_ct(-image, valid)])
    assert normal[0] > 0.9 and not looks_inverted(normal)  # air along the rim of the circle
    assert inverted[3] > 0.9 and looks_inverted(inverted)
    # outside the field of view (class -1) is not the edge: a ring of bright fill does not count
    classes = np.zeros((30, 30), np.int8)
    classes[:3], classes[12:18, 12:18] = -1, 3
    assert edge_class_shares([{"classes": classes}, None]).tolist() == [1.0, 0.0, 0.0, 0.0]
    assert edge_class_shares([None]) is None and not looks_inverted(None)
    # a sample filling the view, with bone and soft tissue at its edge, is not called inverted
    assert not looks_inverted(np.array([0.0, 0.5, 0.2, 0.3]))
