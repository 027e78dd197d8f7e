"""Sample-correspondence masks (paper 2.8)."""

import numpy as np
import pytest

from vstain.masks import (apply_mask, convex_hull, correspondence_mask, field_of_view_mask, mask_iou, segment_ct,
                          segment_histology)


def _pair():
    rng = np.random.default_rng(0)
    ct = np.zeros((80, 80))
    ct[5:75, 5:75] = 0.25  # loose soft tissue and the tube (CT only)
    ct[20:60, 15:55] = 1.0  # bone
    ct[30:50, 25:45] = 0.5
    rgb = np.full((80, 80, 3), 235, np.uint8)
    rgb[18:62, 22:62] = (110, 130, 200)  # the section: shifted against the CT's bone
    return ct + rng.normal(0, 0.02, ct.shape), rgb


def test_mask_is_inside_both_hulls_and_valid_areas():
    ct, rgb = _pair()
    ct_valid = np.ones(ct.shape, bool)
    ct_valid[:, 70:] = False
    mask = correspondence_mask(ct, rgb, ct_valid=ct_valid)
    ct_hull = convex_hull(segment_ct(ct, ct_valid)["rigid"])
    hist_hull = convex_hull(segment_histology(rgb)["tissue"])
    assert mask.any()
    assert not (mask & ~ct_hull).any() and not (mask & ~hist_hull).any() and not (mask & ~ct_valid).any()
    # The loose soft tissue around the bone is not in the mask.
    assert not mask[8, 8] and not mask[70, 40]
    assert mask_iou(mask, ct_hull & hist_hull) > 0.95


def test_extra_masks_are_respected():
    ct, rgb = _pair()
    extra = np.ones(ct.shape, bool)
    extra[:, :40] = False
    mask = correspondence_mask(ct, rgb, extra_masks=[extra])
    assert mask.any() and not (mask & ~extra).any()
    with pytest.raises(ValueError, match="extra mask 0: shape"):
        correspondence_mask(ct, rgb, extra_masks=[np.ones((3, 3), bool)])


def test_apply_mask_fills_with_mean_background():
    ct, rgb = _pair()
    mask = np.zeros(ct.shape, bool)
    mask[30:50, 30:50] = True
    shown = apply_mask(rgb, mask)
    assert np.array_equal(shown[mask], rgb[mask])
    assert np.all(np.abs(shown[~mask].astype(int) - 235) <= 1)
    grey = apply_mask(ct.astype(np.float32), mask, fill=-1.0)
    assert np.all(grey[~mask] == -1.0) and np.array_equal(grey[mask], ct.astype(np.float32)[mask])


def test_field_of_view_ignores_black_inside_tissue():
    rgb = np.full((30, 30, 3), 200, np.uint8)
    rgb[:, :6] = 0  # missing tiles at the border
    rgb[12:16, 12:16] = 0  # an opaque implant inside
    fov = field_of_view_mask(rgb)
    assert not fov[:, :6].any() and fov[12:16, 12:16].all()


def test_mask_matches_ground_truth_common_region():
    from vstain.config import load_profile
    from vstain.phantom import ground_truth_pair, make_sample

    sample = make_sample(load_profile("smoke").dataset, "tb_m_01", "PEEK", "toluidine_blue", 0, 1, seed=3)
    pair = ground_truth_pair(sample, normalised=False)
    mask = correspondence_mask(pair.ct, pair.histology)
    assert mask_iou(mask, pair.mask) > 0.8
