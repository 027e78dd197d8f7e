"""Paired patch sampler (paper 2.7) and the image <-> network mappings.

The sampler's speed is measured by ``benchmarks/sampler_speed.py``, not asserted here.
"""

import numpy as np
import pytest
import torch

from vstain.config import load_profile
from vstain.data import (Augmentation, PatchSampler, ct_to_network, ct_to_network_channels, histology_to_network,
                         jitter_rgb, network_to_ct, network_to_histology)
from vstain.pairs import RegisteredPair


def make_pair(pair_id="p0", shape=(60, 80), seed=0):
    """A tiny synthetic pair: a bone disc (CT 30000, blue) on background (CT 10000, white), with a gradient."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    bone = (yy - shape[0] / 2) ** 2 + (xx - shape[1] / 3) ** 2 < (min(shape) / 3) ** 2
    ct = np.where(bone, 30000, 10000) + 50 * xx + rng.normal(0, 300, shape)
    histology = np.where(bone[..., None], [60, 90, 200], [235, 230, 240]).astype(float)
    histology = np.clip(histology - 0.5 * yy[..., None], 0, 255).astype(np.uint8)
    mask = np.zeros(shape, bool)
    mask[5:-5, 5:-5] = True
    return RegisteredPair(pair_id, "Mg", "toluidine_blue", ct.astype(np.uint16), histology, mask, 5.0)


def test_mappings_round_trip_and_range():
    ct = np.array([[0, 10000, 30000, 65535]], np.uint16)
    net = ct_to_network(ct)
    assert net.min() == -1 and net.max() == 1 and net.dtype == np.float32
    assert np.array_equal(network_to_ct(ct_to_network_channels(ct)), ct)
    inv = ct_to_network_channels(ct, invert=True)
    assert np.array_equal(inv, -ct_to_network_channels(ct))
    assert np.array_equal(network_to_ct(inv, invert=True), ct)
    rgb = np.random.default_rng(0).integers(0, 256, (5, 6, 3)).astype(np.uint8)
    t = histology_to_network(rgb)
    assert t.shape == (3, 5, 6) and -1 <= t.min() and t.max() <= 1
    assert np.array_equal(network_to_histology(torch.from_numpy(t)), rgb)
    with pytest.raises(ValueError, match="RGB"):
        histology_to_network(rgb[..., :2])


def test_patch_shapes_ranges_and_three_identical_ct_channels():
    sampler = PatchSampler([make_pair()], patch_size=32, patches_per_pair=6, batch_size=3, seed=0)
    batches = list(sampler.epoch(0))
    assert len(batches) == len(sampler) == 2
    for b in batches:
        assert b["x"].shape == b["y"].shape == (3, 3, 32, 32) and b["mask"].shape == (3, 1, 32, 32)
        assert b["x"].dtype == torch.float32
        assert torch.equal(b["x"][:, 0], b["x"][:, 1]) and torch.equal(b["x"][:, 0], b["x"][:, 2])
        assert b["x"].min() >= -1 and b["x"].max() <= 1 and b["y"].min() >= -1 and b["y"].max() <= 1
        assert set(torch.unique(b["mask"]).tolist()) <= {0.0, 1.0}
        assert (b["mask"].mean(dim=(1, 2, 3)) >= 0.25).all()


def test_geometry_applied_identically_to_ct_histology_and_mask():
    # encode the same label in all three images: bone <=> bright CT <=> blue histology; mask = bone
    pair = make_pair(shape=(64, 64))
    bone = pair.histology[..., 2].astype(int) - pair.histology[..., 0] > 60
    pair = RegisteredPair("b", "Mg", "toluidine_blue", np.where(bone, 40000, 10000).astype(np.uint16),
                          np.where(bone[..., None], [0, 0, 255], [255, 255, 255]).astype(np.uint8), bone, 5.0)
    sampler = PatchSampler([pair], patch_size=32, patches_per_pair=16, batch_size=4, seed=3,
                           augmentation=Augmentation(jitter=0.0), min_mask_fraction=0.1)
    for batch in sampler.epoch(0):
        ct_bone = batch["x"][:, 0] > -0.4  # bone ~ +0.22, background ~ -0.69 in network range
        hist_bone = batch["y"][:, 0] < 0  # red channel low in blue bone
        mask = batch["mask"][:, 0] > 0.5
        agree = ((ct_bone == hist_bone) & (ct_bone == mask)).float().mean()
        assert agree > 0.97  # only interpolated boundary pixels may differ


def test_augmentations_happen_rescale_and_flips():
    # a CT ramp along x: the slope of a patch reveals its horizontal flip (sign) and its rescale (magnitude)
    xx = np.tile(np.arange(96), (64, 1))
    ramp = RegisteredPair("ramp", "Mg", "toluidine_blue", (10000 + 400 * xx).astype(np.uint16),
                          np.full((64, 96, 3), 128, np.uint8), np.ones((64, 96), bool), 5.0)

    def slopes(sampler):
        xs = torch.cat([b["x"][:, 0] for b in sampler.epoch(0)])
        return ((xs[:, :, -1] - xs[:, :, 0]).mean(dim=1) / 31).numpy()

    plain = slopes(PatchSampler([ramp], 32, 64, 4, seed=0, augmentation=None))
    per_pixel = 2 * 400 / 65535
    assert np.allclose(plain, per_pixel, rtol=1e-3)
    augmented = slopes(PatchSampler([ramp], 32, 64, 4, seed=0, augmentation=Augmentation(jitter=0.0)))
    assert (augmented < 0).any() and (augmented > 0).any()  # horizontal flips
    magnitude = np.abs(augmented) / per_pixel  # = window / patch = 1 / scale
    assert magnitude.min() > 1 / 1.1 - 0.03 and magnitude.max() < 1 / 0.9 + 0.03
    assert magnitude.max() - magnitude.min() > 0.1  # scales vary across the 0.9-1.1 range
    # vertical flips: a ramp along y
    ramp_y = RegisteredPair("ramp_y", "Mg", "toluidine_blue", np.ascontiguousarray(ramp.ct[:, :64].T),
                            np.full((64, 64, 3), 128, np.uint8), np.ones((64, 64), bool), 5.0)
    no_jitter = Augmentation(jitter=0.0)
    ys = torch.cat([b["x"][:, 0] for b in PatchSampler([ramp_y], 32, 32, 4, seed=0, augmentation=no_jitter).epoch(0)])
    vertical = (ys[:, -1, :] - ys[:, 0, :]).mean(dim=1)
    assert (vertical < 0).any() and (vertical > 0).any()


def test_jitter_keeps_rgb_ratios_and_is_bounded():
    rng = np.random.default_rng(0)
    rgb = rng.uniform(0.05, 0.95, (16, 16, 3)).astype(np.float32)
    out = jitter_rgb(rgb, brightness=1.1, contrast=0.9)
    assert np.allclose(out / out.sum(-1, keepdims=True), rgb / rgb.sum(-1, keepdims=True), atol=1e-5)
    assert out.max() <= 1.0 and not np.allclose(out, rgb)
    # separately drawn CT and histology jitter: intensities of a flat pair change by at most ~10 %
    flat = RegisteredPair("f", "Mg", "toluidine_blue", np.full((40, 40), 30000, np.uint16),
                          np.full((40, 40, 3), [100, 50, 150], np.uint8), np.ones((40, 40), bool), 5.0)
    sampler = PatchSampler([flat], 32, 40, 4, seed=1, augmentation=Augmentation(jitter=0.1))
    ct_vals, ratios = [], []
    for b in sampler.epoch(0):
        ct_vals += ((b["x"][:, 0].mean(dim=(1, 2)) + 1) / 2 * 65535).tolist()
        y = (b["y"] + 1) / 2
        ratios += (y[:, 0] / y[:, 1]).flatten().tolist()
    ct_vals = np.array(ct_vals)
    assert ct_vals.min() >= 30000 * 0.89 and ct_vals.max() <= 30000 * 1.11 and ct_vals.std() > 300
    assert np.allclose(ratios, 2.0, atol=0.03)


def test_deterministic_per_epoch_and_seed():
    pairs = [make_pair("a", seed=0), make_pair("b", seed=1)]
    s1 = PatchSampler(pairs, 32, 4, 2, seed=7)
    s2 = PatchSampler(pairs, 32, 4, 2, seed=7)
    first = [b["y"] for b in s1.epoch(3)]
    assert all(torch.equal(a, b["y"]) for a, b in zip(first, s2.epoch(3)))
    assert not torch.equal(first[0], next(iter(s1.epoch(4)))["y"])
    assert not torch.equal(first[0], next(iter(PatchSampler(pairs, 32, 4, 2, seed=8).epoch(3)))["y"])
    ids = [pid for b in s1.epoch(0) for pid in b["pair_ids"]]
    assert sorted(ids) == ["a"] * 4 + ["b"] * 4


def test_mask_redraw_and_bad_input():
    pair = make_pair(shape=(64, 64))
    mask = np.zeros((64, 64), bool)
    mask[:20, :20] = True
    corner = RegisteredPair("corner", "Mg", "toluidine_blue", pair.ct, pair.histology, mask, 5.0)
    sampler = PatchSampler([corner], 32, 20, 4, seed=0, min_mask_fraction=0.2)
    for b in sampler.epoch(0):
        assert (b["mask"].mean(dim=(1, 2, 3)) >= 0.2 - 0.03).all()  # 0.03: nearest-neighbour rescale
    with pytest.raises(ValueError, match="corner: no patch .* mask fraction >= 0.9"):
        list(PatchSampler([corner], 32, 4, 2, seed=0, min_mask_fraction=0.9).epoch(0))
    empty = RegisteredPair("empty", "Mg", "toluidine_blue", pair.ct, pair.histology, np.zeros((64, 64), bool), 5.0)
    with pytest.raises(ValueError, match="pair empty: field mask is all zero"):
        PatchSampler([empty], 32, 4, 2, seed=0)
    with pytest.raises(ValueError, match=r"pair p0: image shape \(64, 64\) is smaller than the patch size 128"):
        PatchSampler([pair], 128, 4, 2, seed=0)
    bad = make_pair(shape=(64, 64))
    bad.histology = bad.histology[:60]
    with pytest.raises(ValueError, match="pair p0: field histology has shape"):
        PatchSampler([bad], 32, 4, 2, seed=0)
    bad = make_pair(shape=(64, 64))
    bad.mask = bad.mask[:, :50]
    with pytest.raises(ValueError, match="pair p0: field mask has shape"):
        PatchSampler([bad], 32, 4, 2, seed=0)
    with pytest.raises(ValueError, match="no training pairs"):
        PatchSampler([], 32, 4, 2, seed=0)
    with pytest.raises(ValueError, match="no complete batch"):
        PatchSampler([pair], 32, 1, 2, seed=0)
    with pytest.raises(ValueError, match=r"rescale_range must be 0 < low <= high, got \[1.2, 1.1\]"):
        Augmentation(rescale_range=(1.2, 1.1))
    with pytest.raises(ValueError, match="augmentation must be a vstain.data.Augmentation or None, got dict"):
        PatchSampler([pair], 32, 4, 2, seed=0, augmentation={"jitter": 0.1})


def test_from_profile_uses_training_section():
    training = load_profile("smoke").training
    sampler = PatchSampler.from_profile([make_pair()], training, seed=0, invert_ct=True)
    assert sampler.patch_size == training.patch_size and sampler.invert_ct
    assert sampler.augmentation == Augmentation(tuple(training.rescale_range), training.jitter)
    assert PatchSampler.from_profile([make_pair()], training, seed=0, augment=False).augmentation is None
    assert len(sampler) == training.patches_per_pair // training.batch_size
