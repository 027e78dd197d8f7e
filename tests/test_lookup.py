"""The CT colour lookup (vstain.lookup): fitted on hand-built pairs whose colours are known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from vstain.lookup import ColourLookup, apply_lookup, fit_lookup

PURPLE = (120, 60, 140)  # bone, darker than the slide
BLUE = (100, 120, 220)   # soft tissue


def _two_level_pair(shape=(20, 30)):
    """A CT of two grey levels (soft tissue 15000 left, bone 30000 right) and its known colours."""
    ct = np.full(shape, 15000, np.uint16)
    ct[:, shape[1] // 2:] = 30000
    rgb = np.zeros(shape + (3,), np.uint8)
    rgb[ct == 15000] = BLUE
    rgb[ct == 30000] = PURPLE
    return ct, rgb


def test_two_level_ct_gets_its_two_colours_back():
    ct, rgb = _two_level_pair()
    mask = np.ones(ct.shape, bool)
    table = fit_lookup([ct], [rgb], [mask])
    assert table.n_bins == 256 and table.counts.sum() == ct.size
    assert table.edges[0] == 15000 and table.edges[-1] == 30000  # the range the pairs actually use
    assert table.counts[0] == table.counts[-1] == ct.size // 2 and table.counts[1:-1].sum() == 0
    out = apply_lookup(table, ct)
    assert out.dtype == np.uint8 and out.shape == rgb.shape
    np.testing.assert_array_equal(out, rgb)


def test_pixels_outside_the_mask_are_not_fitted():
    ct, rgb = _two_level_pair()
    mask = np.ones(ct.shape, bool)
    mask[:5] = False
    spoiled = rgb.copy()
    spoiled[:5] = (0, 255, 0)  # green outside the mask: must not reach the table
    table = fit_lookup([ct], [spoiled], [mask])
    np.testing.assert_array_equal(apply_lookup(table, ct), rgb)
    assert table.counts.sum() == mask.sum()


def test_empty_bins_are_interpolated_and_values_beyond_the_range_take_the_end_colours():
    ct, rgb = _two_level_pair()
    table = fit_lookup([ct], [rgb], [np.ones(ct.shape, bool)], n_bins=5)
    assert table.counts.tolist() == [300, 0, 0, 0, 300]
    # bin centres at 1/10, 3/10 ... 9/10 of the range: the middle bin lies halfway between the two colours
    np.testing.assert_allclose(table.colours[2], (np.array(BLUE) + np.array(PURPLE)) / 2)
    np.testing.assert_allclose(table.colours[1], np.array(BLUE) * 0.75 + np.array(PURPLE) * 0.25)
    probe = np.array([[0, 14000, 22500, 31000, 65535]], np.uint16)
    out = apply_lookup(table, probe)
    assert out[0, 0].tolist() == list(BLUE) and out[0, 1].tolist() == list(BLUE)
    assert out[0, 3].tolist() == list(PURPLE) and out[0, 4].tolist() == list(PURPLE)
    assert out[0, 2].tolist() == [110, 90, 180]


def test_several_pairs_pool_their_pixels():
    ct_a, rgb_a = _two_level_pair((10, 10))
    ct_b = np.full((10, 30), 30000, np.uint16)
    rgb_b = np.full((10, 30, 3), (60, 30, 70), np.uint8)  # a darker bone on the second slide, three times the pixels
    table = fit_lookup([ct_a, ct_b], [rgb_a, rgb_b], [np.ones((10, 10), bool), np.ones((10, 30), bool)], n_bins=4)
    expected = (50 * np.array(PURPLE) + 300 * np.array((60, 30, 70))) / 350
    np.testing.assert_allclose(table.colours[-1], expected)
    np.testing.assert_allclose(table.colours[0], BLUE)


def test_one_grey_value_makes_one_colour():
    ct = np.full((4, 4), 20000, np.uint16)
    rgb = np.full((4, 4, 3), (10, 20, 30), np.uint8)
    table = fit_lookup([ct], [rgb], [np.ones((4, 4), bool)], n_bins=8)
    assert apply_lookup(table, np.array([[0, 20000, 60000]]))[0].tolist() == [[10, 20, 30]] * 3


def test_float_ct_is_binned_like_uint16():
    ct, rgb = _two_level_pair()
    mask = np.ones(ct.shape, bool)
    a, b = fit_lookup([ct], [rgb], [mask]), fit_lookup([ct.astype(np.float32)], [rgb], [mask])
    np.testing.assert_array_equal(a.colours, b.colours)


def test_table_round_trips_through_a_frame():
    ct, rgb = _two_level_pair()
    table = fit_lookup([ct], [rgb], [np.ones(ct.shape, bool)], n_bins=16)
    back = ColourLookup.from_frame(table.to_frame())
    np.testing.assert_allclose(back.edges, table.edges)
    np.testing.assert_array_equal(back.counts, table.counts)
    np.testing.assert_array_equal(apply_lookup(back, ct), apply_lookup(table, ct))
    with pytest.raises(ValueError, match="lut.csv: missing column"):
        ColourLookup.from_frame(table.to_frame().drop(columns="g"), where="lut.csv")
    broken = table.to_frame()
    broken.loc[3, "low"] += 5
    with pytest.raises(ValueError, match="contiguous"):
        ColourLookup.from_frame(broken)


@pytest.mark.parametrize("bad, message", [
    (dict(ct_list=[]), "one CT"),
    (dict(rgb_list=[np.zeros((20, 30, 3), np.float32)]), "uint8"),
    (dict(mask_list=[np.ones((20, 31), bool)]), "mask must be bool of shape"),
    (dict(mask_list=[np.zeros((20, 30), bool)]), "no pixel"),
    (dict(ct_list=[np.full((20, 30), np.nan, np.float32)]), "NaN"),
    (dict(ct_list=[np.zeros((2, 20, 30))]), "2D"),
])
def test_bad_input_says_what_is_wrong(bad, message):
    ct, rgb = _two_level_pair()
    arguments = dict(ct_list=[ct], rgb_list=[rgb], mask_list=[np.ones(ct.shape, bool)], **{})
    arguments.update(bad)
    with pytest.raises(ValueError, match=message):
        fit_lookup(arguments["ct_list"], arguments["rgb_list"], arguments["mask_list"])


def test_apply_refuses_a_volume_or_nan():
    table = ColourLookup(np.array([0.0, 1.0]), np.zeros((1, 3)), np.array([1]))
    with pytest.raises(ValueError, match="2D"):
        apply_lookup(table, np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="NaN"):
        apply_lookup(table, np.array([[np.nan]]))
    assert isinstance(table.to_frame(), pd.DataFrame)
