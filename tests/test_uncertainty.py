"""Per-pixel uncertainty (vstain.uncertainty): its sources, its measures against the truth, its volumes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from vstain.infer import infer_slide
from vstain.io import read_tiff
from vstain.uncertainty import (
    DIHEDRAL,
    STAINS,
    auroc,
    by_label,
    choose_mix,
    dihedral,
    flag_auroc,
    make_uncertainty_stainer,
    mix_maps,
    network_lab,
    quiet_error_fraction,
    rank_correlation,
    reliability_curve,
    simplex_weights,
    slide_uncertainty,
    spread_about,
    spread_of_runs,
    stain_error,
    stain_volume_uncertainty,
    undo_dihedral,
    uncertainty_path,
)
from vstain.volume import TRUNCATE, make_slice_stainer
from vstain.volume_io import ArrayVolume, open_volume

TILING = {"patch_size": 16, "step": 8, "batch_size": 8}


class Shift(torch.nn.Module):
    """An ensemble member that agrees with the identity up to a constant offset."""

    def __init__(self, offset: float) -> None:
        super().__init__()
        self.offset = offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x + self.offset).clamp(-1, 1)


class Ramp(torch.nn.Module):
    """Not translation- or flip-equivariant: adds a ramp along the patch's x axis."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ramp = torch.linspace(-0.3, 0.3, x.shape[-1])
        return (x + ramp).clamp(-1, 1)


def _slide(seed: int = 0, shape=(40, 48)) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-0.8, 0.8, shape + (3,)).astype(np.float32)


def test_identical_members_have_zero_uncertainty():
    result = slide_uncertainty([torch.nn.Identity()] * 3, _slide(), tta=False, tiling=True, **TILING)
    assert set(result.spreads) == {"ensemble", "tiling", "combined"}
    for spread in result.spreads.values():
        assert float(np.abs(spread).max()) == 0.0
    assert np.array_equal(result.means["ensemble"], result.single)


def test_uncertainty_grows_with_disagreement():
    image = _slide()
    medians = []
    for offset in (0.0, 0.05, 0.2, 0.4):
        result = slide_uncertainty([torch.nn.Identity(), Shift(offset), Shift(-offset)], image, tta=False,
                                   tiling=False, **TILING)
        medians.append(float(np.median(result.spreads["ensemble"])))
    assert medians[0] == 0.0
    assert all(a < b for a, b in zip(medians, medians[1:])), medians


def test_ensemble_spread_is_the_rms_delta_e_from_the_mean():
    image = _slide()
    members = [torch.nn.Identity(), Shift(0.3)]
    result = slide_uncertainty(members, image, tta=False, tiling=False, **TILING)
    ods = [network_lab(np.clip(image + offset, -1, 1)) for offset in (0.0, 0.3)]
    expected = np.sqrt(np.var(np.stack(ods), axis=0).sum(axis=-1))
    np.testing.assert_allclose(result.spreads["ensemble"], expected, atol=1e-5)


def test_tta_of_a_flip_equivariant_function_gives_zero_spread():
    equivariant = lambda x: torch.tanh(2.0 * x) * 0.9  # noqa: E731  (pixel-wise: commutes with flips/turns)
    result = slide_uncertainty([equivariant], _slide(1), tta=True, tiling=False, **TILING)
    assert set(result.spreads) == {"tta", "combined"}
    assert float(result.spreads["tta"].max()) < 1e-5


def test_tta_of_a_direction_dependent_function_gives_spread():
    result = slide_uncertainty([Ramp()], _slide(1), tta=True, tiling=False, **TILING)
    assert float(np.median(result.spreads["tta"])) > 0.01


def test_dihedral_round_trip_and_eight_distinct_transforms():
    image = np.arange(12).reshape(3, 4)
    seen = set()
    for turns, flip in DIHEDRAL:
        assert np.array_equal(undo_dihedral(dihedral(image, turns, flip), turns, flip), image)
        seen.add(dihedral(image, turns, flip).tobytes() + bytes(dihedral(image, turns, flip).shape))
    assert len(seen) == 8


def test_tiling_spread_zero_for_a_translation_equivariant_net_and_positive_otherwise():
    image = _slide(2)
    out, spread = infer_slide(torch.nn.Identity(), image, spread_of=network_lab, **TILING)
    assert np.array_equal(out, image)
    assert float(spread.max()) < 1e-6
    _, spread = infer_slide(Ramp(), image, spread_of=network_lab, **TILING)
    assert float(np.median(spread)) > 0.01
    plain = infer_slide(Ramp(), image, **TILING)
    with_spread, _ = infer_slide(Ramp(), image, spread_of=network_lab, **TILING)
    assert np.array_equal(plain, with_spread)  # measuring the spread does not change the stain


def test_combined_is_total_variance():
    a, b = np.zeros((2, 2, 3)), np.full((2, 2, 3), 2.0)
    within = [np.full((2, 2, 3), 0.5), np.full((2, 2, 3), 1.5)]
    _, spread = spread_of_runs([a, b], within)
    np.testing.assert_allclose(spread, np.sqrt(3 * (1.0 + 1.0)))


def test_auroc_matches_hand_computed_values():
    # positives 0.35, 0.8; negatives 0.1, 0.4: pairs (0.35>0.1), (0.35<0.4), (0.8>0.1), (0.8>0.4) -> 3/4
    assert auroc([0.1, 0.4, 0.35, 0.8], [False, False, True, True]) == 0.75
    # a tie between a positive and a negative counts one half: (1 + 0.5) / 2
    assert auroc([0.2, 0.5, 0.5], [False, False, True]) == 0.75
    assert auroc([0.9, 0.1], [False, True]) == 0.0
    assert np.isnan(auroc([0.1, 0.2], [True, True]))
    u = np.array([0.1, 0.2, 0.9, 0.8])
    # positives (error > 0.5) score 0.2, 0.9; negatives 0.1, 0.8: 0.2>0.1, 0.9>0.1, 0.9>0.8 of 4 pairs
    assert flag_auroc(u, [0.0, 0.6, 1.0, 0.2], threshold=0.5) == 0.75


def test_rank_correlation_matches_hand_computed_values():
    # ranks 1 2 3 4 vs 1 3 2 4: d^2 = 2, rho = 1 - 6 * 2 / (4 * 15) = 0.8
    assert rank_correlation([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert rank_correlation([1, 2, 3], [30, 20, 10]) == pytest.approx(-1.0)
    # ties: u ranks 1.5 1.5 3, e ranks 1 2 3 -> Pearson of the ranks = sqrt(3) / 2
    assert rank_correlation([5, 5, 9], [1, 2, 3]) == pytest.approx(np.sqrt(3) / 2)
    # the mask leaves out the pixel that breaks the order
    assert rank_correlation([1, 2, 3, 4], [1, 2, 3, 0], mask=[True, True, True, False]) == pytest.approx(1.0)
    assert np.isnan(rank_correlation([1, 1, 1], [1, 2, 3]))


def test_reliability_curve_and_per_tissue_table():
    u = np.array([0.0, 1.0, 2.0, 3.0])
    e = np.array([0.1, 0.3, 1.0, 2.0])
    curve = reliability_curve(u, e, 2, threshold=0.5)
    assert curve["pixels"].tolist() == [2, 2]
    assert curve["error"].tolist() == pytest.approx([0.2, 1.5])
    assert curve["above"].tolist() == [0.0, 1.0]
    labels = np.array([7, 7, 3, 3])
    table = by_label(u, e, labels, {"bone": 3, "soft": 7, "absent": 9}, mask=np.array([True, True, True, False]))
    assert table["tissue"].tolist() == ["bone", "soft"]
    assert table.set_index("tissue").loc["bone", "pixels"] == 1
    assert table.set_index("tissue").loc["soft", "uncertainty"] == pytest.approx(0.5)


def test_stain_error_is_delta_e():
    white = np.full((1, 2, 3), 255, np.uint8)
    assert float(stain_error(white, white).max()) == 0.0
    grey = white.copy()
    grey[0, 1] = 0
    assert stain_error(grey, white)[0, 1] == pytest.approx(100.0, abs=1e-3)  # black to white: L* 0 to 100
    red = white.copy()
    red[0, 1] = (255, 0, 0)
    assert stain_error(red, white)[0, 1] == pytest.approx(np.sqrt((100 - 53.24) ** 2 + 80.09 ** 2 + 67.20 ** 2),
                                                          abs=0.05)  # sRGB red: L* 53.24, a* 80.09, b* 67.20
    with pytest.raises(ValueError, match="one shape"):
        stain_error(white, white[:, :1])


@pytest.mark.parametrize("suffix", [".tif", ".zarr"])
def test_streaming_a_volume_equals_computing_it_whole(tmp_path, suffix):
    rng = np.random.default_rng(3)
    ct = ndimage.gaussian_filter(rng.uniform(5000, 40000, (6, 20, 24)), 1.5).astype(np.float32)
    members = [torch.nn.Conv2d(3, 3, 3, padding=1), torch.nn.Conv2d(3, 3, 3, padding=1)]
    for seed, member in enumerate(members):
        torch.manual_seed(seed)
        torch.nn.init.normal_(member.weight, 0.1, 0.1)
    stainer = make_uncertainty_stainer(members, patch_size=16, step=8, batch_size=4, source="combined")
    volume = ArrayVolume(ct, (4.0, 2.0, 2.0))
    out, unc = stain_volume_uncertainty(volume, stainer, tmp_path / f"stained{suffix}", sigma_voxels=1.0)
    assert unc == uncertainty_path(out)
    # whole: the volume filtered at once, every slice stained in memory
    filtered = ndimage.gaussian_filter(ct.astype(np.float64), 1.0, mode="reflect", truncate=TRUNCATE)
    whole = [stainer(plane.astype(np.float32)) for plane in filtered]
    rgb_whole = np.stack([rgb for rgb, _ in whole])
    spread_whole = np.stack([spread for _, spread in whole])
    assert float(spread_whole.max()) > 0
    if suffix == ".tif":
        rgb, spacing, _ = read_tiff(out)
        spread, spread_spacing, _ = read_tiff(unc)
        assert spacing == spread_spacing == (4.0, 2.0, 2.0)
    else:
        import zarr
        rgb = np.moveaxis(np.asarray(zarr.open(str(out / "0"), mode="r")), 0, -1)
        assert unc == out / "uncertainty"  # one store: the stain and its map
        from vstain.volume_io import validate_ome_zarr
        validate_ome_zarr(out), validate_ome_zarr(unc)
        stream = open_volume(unc)
        spread = np.stack([stream.read_slice(z) for z in range(stream.shape[0])])
        assert tuple(stream.voxel_size_um) == (4.0, 2.0, 2.0)
        stream.close()
    assert np.abs(rgb.astype(int) - rgb_whole.astype(int)).max() <= 1
    np.testing.assert_allclose(spread, spread_whole, atol=1e-4)
    with pytest.raises(FileExistsError, match="output exists"):
        stain_volume_uncertainty(volume, stainer, out, sigma_voxels=1.0)


def test_volume_memory_is_flat_in_depth(tmp_path):
    from test_volume import CountingVolume, colour_map, random_volume

    def with_uncertainty(ct):
        return colour_map(ct), (ct / 100.0).astype(np.float32)

    held = {}
    for depth in (16, 48):
        source = CountingVolume(random_volume((depth, 8, 8), seed=depth))
        _, unc = stain_volume_uncertainty(source, with_uncertainty, tmp_path / f"s{depth}.tif", sigma_voxels=1.0)
        held[depth] = source.max_alive
        assert source.reads == depth  # each slice is read once
        assert read_tiff(unc)[0].shape == (depth, 8, 8)
    window = 2 * int(4 * 1.0 + 0.5) + 1
    assert held[16] == held[48] <= window + 1, held


def test_spread_about_the_single_stain_by_hand():
    image = _slide()
    # two members agree with each other, not with the first: about their mean they barely differ,
    # about the single stain (the first member's) by the whole offset
    members = [torch.nn.Identity(), Shift(0.3), Shift(0.3)]
    result = slide_uncertainty(members, image, tta=False, tiling=False, **TILING)
    labs = [network_lab(np.clip(image + offset, -1, 1)) for offset in (0.0, 0.3, 0.3)]
    by_hand = np.sqrt(np.mean([np.sum((lab - labs[0]) ** 2, axis=-1) for lab in labs], axis=0))
    np.testing.assert_allclose(result.about_single["ensemble"], by_hand, atol=1e-4)
    about_mean = np.sqrt(np.var(np.stack(labs), axis=0).sum(axis=-1))
    np.testing.assert_allclose(result.spreads["ensemble"], about_mean, atol=1e-4)
    assert float(np.median(result.about_single["ensemble"])) > 1.1 * float(np.median(result.spreads["ensemble"]))
    # the single stain is the first member's, as plain inference converts it
    assert np.array_equal(result.single, np.clip(np.round((image + 1) * 127.5), 0, 255).astype(np.uint8))
    assert result.stain("single", "ensemble")[0] is result.single
    assert result.stain("mean", "ensemble")[1] is result.spreads["ensemble"]
    with pytest.raises(ValueError, match="stain_from"):
        result.stain("median", "ensemble")


def test_spread_about_a_reference_with_tiling_variance():
    reference, other = np.zeros((1, 1, 3)), np.full((1, 1, 3), 2.0)
    within = [np.full((1, 1, 3), 1.0), np.full((1, 1, 3), 3.0)]
    # (0 + 3 * 4) / 2 from the runs' offsets, plus 3 * (1 + 3) / 2 inside them
    assert float(spread_about([reference, other], reference, within)[0, 0]) == pytest.approx(np.sqrt(6.0 + 6.0))
    assert float(spread_about([other], other)[0, 0]) == 0.0
    with pytest.raises(ValueError, match="differ"):
        spread_about([np.zeros((2, 1, 3))], reference)


@pytest.mark.parametrize("source, blend", [("tta", "mean"), ("tiling", "window"), ("combined", "window")])
def test_the_uncertainty_stainer_writes_the_plain_stain_bit_for_bit(source, blend):
    rng = np.random.default_rng(4)
    ct = ndimage.gaussian_filter(rng.uniform(5000, 40000, (22, 26)), 1.5).astype(np.float32)
    torch.manual_seed(1)
    members = [torch.nn.Conv2d(3, 3, 3, padding=1), Ramp()]
    settings = {"patch_size": 16, "step": 6, "batch_size": 3, "blend": blend}
    plain = make_slice_stainer(members[0], **settings)(ct)
    single, spread = make_uncertainty_stainer(members, source=source, **settings)(ct)
    assert single.dtype == np.uint8 and np.array_equal(single, plain)
    assert spread.shape == ct.shape and float(spread.max()) > 0
    mean, _ = make_uncertainty_stainer(members, source="combined", stain_from="mean", **settings)(ct)
    assert not np.array_equal(mean, plain)  # the mean of the flips and members is another stain
    with pytest.raises(ValueError, match="stain_from"):
        make_uncertainty_stainer(members, stain_from="best", **settings)
    assert STAINS == ("single", "mean")


def test_mixing_maps_and_choosing_the_weights():
    assert simplex_weights(1) == [(1.0,)]
    assert all(sum(w) == pytest.approx(1.0) for w in simplex_weights(3, 0.25))
    with pytest.raises(ValueError, match="step"):
        simplex_weights(2, 0.3)
    np.testing.assert_allclose(mix_maps([np.array([1.0, 3.0]), np.array([3.0, 1.0])], (1, 3)), [2.5, 1.5])
    with pytest.raises(ValueError, match="non-negative"):
        mix_maps([np.zeros(2), np.zeros(2)], (1.0, -1.0))
    # one map ranks the errors of the first half of the pixels, the other those of the second half:
    # only a mix ranks them all
    error = np.array([0.0, 5.0, 0.0, 5.0, 0.0, 5.0, 0.0, 5.0])
    left = np.array([0.0, 1.0, 0.0, 1.0, 0.5, 0.5, 0.5, 0.5])
    right = np.array([0.5, 0.5, 0.5, 0.5, 0.0, 1.0, 0.0, 1.0])
    weights, score = choose_mix({"left": [left], "right": [right]}, [error], threshold=1.0, step=0.25)
    assert score == 1.0 and 0.0 < weights["left"] < 1.0 and weights["left"] + weights["right"] == pytest.approx(1.0)
    assert flag_auroc(mix_maps([left, right], (weights["left"], weights["right"])), error, 1.0) == 1.0
    assert flag_auroc(left, error, 1.0) < 1.0 and flag_auroc(right, error, 1.0) < 1.0
    # a slide whose pixels all lie on one side of the threshold is left out, not counted as chance
    weights, score = choose_mix({"left": [left, left]}, [error, np.zeros(8)], threshold=1.0)
    assert weights == {"left": 1.0} and score == pytest.approx(flag_auroc(left, error, 1.0))
    with pytest.raises(ValueError, match="slides"):
        choose_mix({"left": [left]}, [error, error], threshold=1.0)


def test_quiet_error_fraction_counts_the_errors_a_map_cannot_flag():
    u = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    # wrong pixels at uncertainty 0, 1 (at most the median 2.5) and 5: two of three are quiet
    assert quiet_error_fraction(u, [30.0, 30.0, 0.0, 0.0, 0.0, 30.0], threshold=20.0) == pytest.approx(2 / 3)
    assert quiet_error_fraction(u, [0.0, 0.0, 0.0, 30.0, 30.0, 30.0], threshold=20.0) == 0.0
    assert np.isnan(quiet_error_fraction(u, np.zeros(6), threshold=20.0))
    mask = np.array([False, True, True, True, True, True])  # the median is then 3
    assert quiet_error_fraction(u, [30.0, 30.0, 0.0, 30.0, 0.0, 0.0], threshold=20.0, mask=mask) == 1.0
