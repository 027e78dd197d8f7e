"""Fourier ring correlation: known blurs, pure noise, splits, bad input."""

import argparse
import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage
from skimage import data

from vstain import frc
from vstain.config import load_profile
from vstain.io import read_tiff
from vstain.layout import frc_dir
from vstain.pairs import RegisteredPair, read_registered_pair, write_registered_pair
from vstain.stages import frc as frc_stage
from vstain.stages import infer as infer_stage
from vstain.stages.upstream import MissingInput


def blurred_texture(sigma, size=256, snr=100.0, seed=0):
    """White texture blurred by a Gaussian of ``sigma`` px, unit variance, plus white noise.

    Its power spectrum is ``4 pi sigma^2 exp(-4 pi^2 sigma^2 f^2)`` against a noise floor
    of ``1 / snr``, so the FRC = S / (S + N) crosses 1/7 where S / N = 1/6: at
    ``f = sqrt(ln(6 snr 4 pi sigma^2)) / (2 pi sigma)``.
    """
    rng = np.random.default_rng(seed)
    texture = ndimage.gaussian_filter(rng.normal(size=(size, size)), sigma, mode="wrap")
    texture /= texture.std()
    return texture, rng


def predicted_resolution(sigma, snr=100.0):
    return 2 * math.pi * sigma / math.sqrt(math.log(6 * snr * 4 * math.pi * sigma**2))


SIGMAS = [2.0, 3.0, 4.0, 5.0]
TOLERANCE = 0.10  # measured resolution within 10 % of the analytic crossing


@pytest.mark.parametrize("split", ["checkerboard", "two-image"])
def test_resolution_follows_known_gaussian_blur(split):
    measured = []
    for sigma in SIGMAS:
        texture, rng = blurred_texture(sigma)
        noisy = texture + rng.normal(size=texture.shape) / 10.0
        if split == "checkerboard":
            result = frc.single_image_frc(noisy, split="checkerboard")
        else:
            result = frc.image_resolution(noisy, texture + rng.normal(size=texture.shape) / 10.0)
        assert result.status == "crossed"
        expected = predicted_resolution(sigma)
        assert abs(result.resolution_px - expected) <= TOLERANCE * expected, (sigma, result.resolution_px, expected)
        measured.append(result.resolution_px)
    assert np.all(np.diff(measured) > 0), measured


def test_binomial_split_follows_blur_on_photon_counts():
    measured = []
    for sigma in [2.0, 3.0, 4.0]:
        texture, rng = blurred_texture(sigma, seed=5)
        # Poisson counts around 400 with a +-20 % texture: SNR per pixel ~ (0.2 * 400)^2 / 400 = 16.
        counts = rng.poisson(400.0 * (1.0 + 0.2 * texture))
        result = frc.single_image_frc(counts, split="binomial", rng=1)
        expected = predicted_resolution(sigma, snr=16.0)
        assert result.status == "crossed"
        assert abs(result.resolution_px - expected) <= 0.15 * expected, (sigma, result.resolution_px, expected)
        measured.append(result.resolution_px)
    assert np.all(np.diff(measured) > 0)


def test_natural_image_resolution_worsens_monotonically_with_blur():
    image = data.camera()[:256, 128:384].astype(float) / 255.0
    rng = np.random.default_rng(0)
    values = []
    for sigma in [0.0, 1.5, 3.0, 5.0]:
        blurred = ndimage.gaussian_filter(image, sigma) if sigma else image
        result = frc.single_image_frc(blurred + 0.01 * rng.normal(size=image.shape))
        values.append(result.resolution_px if result.crossed else 2 * math.sqrt(2))
    assert np.all(np.diff(values) > 0), values


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("size", [32, 64, 256])
def test_pure_noise_gives_no_crossing(seed, size):
    noise = np.random.default_rng(seed).normal(size=(size, size))
    result = frc.single_image_frc(noise)
    assert result.status == "no_signal"
    assert math.isnan(result.resolution_px) and not result.crossed
    other = np.random.default_rng(seed + 100).normal(size=(size, size))
    assert frc.image_resolution(noise, other).status == "no_signal"
    assert frc.image_resolution(noise, other, threshold="half-bit").status == "no_signal"


def test_pure_poisson_noise_gives_no_crossing_with_binomial_split():
    counts = np.random.default_rng(0).poisson(30.0, (128, 128))
    assert frc.single_image_frc(counts, split="binomial").status == "no_signal"


def test_noise_free_image_is_not_reached_rather_than_a_number():
    texture, _ = blurred_texture(0.7, size=64)
    result = frc.image_resolution(texture, texture)
    assert result.status == "not_reached" and math.isnan(result.resolution_px)


def test_checkerboard_phase_correction_keeps_a_noise_free_curve_at_one():
    texture, _ = blurred_texture(1.5, size=128)
    curve = frc.single_image_frc_curve(texture)
    assert curve.frequency[-1] == pytest.approx(0.5 / math.sqrt(2))
    # Without the phase correction the correlation would be cos(pi f ...) and fall to ~0 at Nyquist.
    assert np.all(curve.frc[1:-8] > 0.95)


def test_half_bit_threshold_is_stricter_at_low_frequencies():
    texture, rng = blurred_texture(3.0, size=128)
    noisy = texture + rng.normal(size=texture.shape) / 10.0
    one_seventh = frc.single_image_frc(noisy, threshold="1/7")
    half_bit = frc.single_image_frc(noisy, threshold="half-bit")
    assert half_bit.crossed and one_seventh.crossed
    assert half_bit.resolution_px >= one_seventh.resolution_px


def test_rgb_images_pool_channels():
    texture, rng = blurred_texture(2.0, size=128)
    rgb = np.stack([texture, 0.5 * texture, -texture], axis=-1) + rng.normal(size=(128, 128, 3)) / 10.0
    result = frc.single_image_frc(rgb, channel_axis=-1)
    assert result.crossed and abs(result.resolution_px - predicted_resolution(2.0)) < 0.2 * predicted_resolution(2.0)


def test_bad_input_is_reported_clearly():
    with pytest.raises(ValueError, match="binomial split needs photon counts"):
        frc.single_image_frc(np.full((32, 32), 0.5), split="binomial")
    with pytest.raises(ValueError, match="differ in shape"):
        frc.frc_curve(np.zeros((32, 32)), np.zeros((32, 33)))
    with pytest.raises(ValueError, match="too small"):
        frc.single_image_frc(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="NaN"):
        frc.single_image_frc(np.full((32, 32), np.nan))
    with pytest.raises(ValueError, match="split must be one of"):
        frc.single_image_frc(np.zeros((32, 32)), split="halves")
    with pytest.raises(ValueError, match="threshold must be one of"):
        frc.single_image_frc(np.zeros((32, 32)), threshold="3-sigma")


def test_per_patch_resolution_orders_ct_generated_histology_and_respects_the_mask():
    """Generated histology between the blurred CT and the sharp histology, as in Fig. S5."""
    texture, rng = blurred_texture(1.5, size=128, seed=3)
    histology = np.repeat(texture[..., None], 3, -1) + rng.normal(size=(128, 128, 3)) / 10.0
    generated = np.repeat(ndimage.gaussian_filter(texture, 1.5, mode="wrap")[..., None], 3, -1)
    generated = generated / generated.std() + rng.normal(size=(128, 128, 3)) / 10.0
    ct = ndimage.gaussian_filter(texture, 3.0, mode="wrap")
    ct = ct / ct.std() + rng.normal(size=ct.shape) / 10.0
    mask = np.zeros((128, 128), bool)
    mask[:, :100] = True  # the right column of 64 px patches is only 56 % inside: skipped
    rows = frc.pair_resolution(ct, histology, generated, mask, patch_size=64, min_mask_fraction=0.75)
    assert [(r["y"], r["x"]) for r in rows] == [(0, 0), (64, 0)]
    for row in rows:
        assert row["ct_px"] > row["generated_px"] > row["histology_px"]
        assert 0 < row["generated_over_ct"] < 1 < row["generated_over_histology"]
    summary = frc.summarise_resolution(pd.DataFrame([{**r, "role": "train"} for r in rows]))
    assert summary.loc["train", "n_patches"] == 2 and summary.loc["train", "ct_crossed"] == 1.0


def test_statements_count_missing_crossings_and_never_give_them_a_number():
    frame = pd.DataFrame({
        "histology_px": [np.nan, np.nan, np.nan], "histology_status": ["not_reached", "not_reached", "no_signal"],
        "generated_over_histology": [np.nan, np.nan, np.nan]})
    text = frc.resolution_statement(frame, "histology")
    assert text.startswith("not measurable") and "2 of 3 sharper" in text and "1 of 3 without signal" in text
    assert "nan" not in text.lower()
    assert "2.83 px" in text and "2.00 px" in frc.resolution_statement(frame, "histology", "binomial")
    assert frc.ratio_statement(frame, "generated_over_histology").startswith("not measurable")
    with pytest.raises(ValueError, match="modality"):
        frc.resolution_statement(frame, "mri")
    with pytest.raises(ValueError, match="split"):
        frc.finest_measurable_px("random")


def test_interpolation_makes_noise_look_like_signal():
    rng = np.random.default_rng(3)
    signal = ndimage.gaussian_filter(rng.normal(size=(96, 96)), 2.0)
    image = signal / signal.std() + 0.3 * rng.normal(size=signal.shape)
    as_is, shifted = frc.interpolation_effect(image)
    assert as_is.crossed
    assert not shifted.crossed or shifted.resolution_px < as_is.resolution_px - 0.5
    with pytest.raises(ValueError, match="2D"):
        frc.interpolation_effect(np.zeros((4, 8, 8)))


@pytest.mark.slow
def test_measure_resolution_writes_one_row_per_masked_patch_and_is_idempotent(one_epoch_models, capsys):
    """Stain two written pairs with a one-epoch smoke model (the inference stage), then measure every patch inside
    the masks."""
    smoke = load_profile("smoke")
    root = one_epoch_models
    rng = np.random.default_rng(0)
    for pair_id in ("p0", "p1"):
        base = ndimage.gaussian_filter(rng.normal(size=(64, 96)), 2)
        ct = (20000 + 8000 * base / base.std() + rng.normal(0, 300, base.shape)).astype(np.uint16)
        histology = np.repeat((255 - ct // 160).astype(np.uint8)[..., None], 3, axis=-1)
        mask = np.zeros((64, 96), bool)
        mask[:, :70] = True  # patches at x = 0, 32 inside; x = 64 only 6 of 32 columns
        write_registered_pair(root / "registered" / pair_id,
                              RegisteredPair(pair_id, "Mg", "toluidine_blue", ct, histology, mask, 5.0))
    (root / "dataset").mkdir(parents=True)
    (root / "dataset" / "split.csv").write_text(
        "pair_id,stain,material,fold0\np0,toluidine_blue,Mg,train\np1,toluidine_blue,Mg,test\n")

    # FRC reads the inference stage's outputs: missing, they stop it with the command that makes them
    with pytest.raises(MissingInput, match="run `vstain infer --profile smoke --model mod_cyclegan --fold 0`"):
        frc_stage.measure_resolution("smoke", "mod_cyclegan", 0, progress=False)
    infer_stage.run_inference("smoke", "mod_cyclegan", 0, progress=False)
    csv_path = frc_stage.measure_resolution("smoke", "mod_cyclegan", 0, progress=False)
    assert csv_path == frc_dir("smoke", "mod_cyclegan", 0) / "resolution.csv"
    table = pd.read_csv(csv_path)
    assert table[["pair_id", "role", "y", "x"]].values.tolist() == [
        ["p0", "train", 0, 0], ["p0", "train", 0, 32], ["p0", "train", 32, 0], ["p0", "train", 32, 32],
        ["p1", "test", 0, 0], ["p1", "test", 0, 32], ["p1", "test", 32, 0], ["p1", "test", 32, 32]]
    assert set(table.ct_status) <= {"crossed", "no_signal", "not_reached"}
    # the numbers are those of vstain.frc on the registered and generated images
    pair = read_registered_pair(root / "registered" / "p1")
    generated, _, _ = read_tiff(root / "inference" / "mod_cyclegan" / "fold0" / "p1" / "histology.tif")
    rows = frc.pair_resolution(pair.ct.astype(np.float32), pair.histology, generated, pair.mask,
                               patch_size=smoke.frc.patch_size, min_mask_fraction=smoke.frc.min_mask_fraction,
                               split=smoke.frc.split, threshold=smoke.frc.threshold)
    ours = table[table.pair_id == "p1"].reset_index(drop=True)
    np.testing.assert_array_equal(ours["ct_px"], [r["ct_px"] for r in rows])
    np.testing.assert_array_equal(ours["generated_px"], [r["generated_px"] for r in rows])
    record = json.loads((csv_path.parent / "frc.json").read_text())
    assert record["n_patches"] == 8 and record["settings"]["patch_size"] == smoke.frc.patch_size
    # idempotent (a marked file is left alone), and recomputed on request
    computed = csv_path.read_text()
    csv_path.write_text(computed + "marked\n")
    assert frc_stage.measure_resolution("smoke", "mod_cyclegan", 0, progress=False) == csv_path
    assert csv_path.read_text().endswith("marked\n")
    frc_stage.measure_resolution("smoke", "mod_cyclegan", 0, force=True, progress=False)
    assert csv_path.read_text() == computed
    # the command writes the table and its summary per role
    args = argparse.Namespace(profile="smoke", model="mod_cyclegan", fold=None, force=False)
    assert frc_stage.run_cli(args) == 0
    summary = pd.read_csv(root / "frc" / "summary.csv", index_col=0)
    assert summary.index.tolist() == ["train", "test"] and summary["n_patches"].tolist() == [4, 4]
    assert "resolution.csv (8 patches)" in capsys.readouterr().out
