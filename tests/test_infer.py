"""Whole-slide overlapping patch inference (vstain.infer) and the inference stage (vstain.stages.infer)."""

from __future__ import annotations

import json
import tracemalloc
import types

import numpy as np
import pytest
import torch

from vstain.cli import main
from vstain.config import load_profile
from vstain.infer import (
    BLENDS,
    blend_weights,
    ct_to_histology_slide,
    histology_to_ct_slide,
    infer_slide,
    seam_score,
    tile_grid,
    with_channels,
)
from vstain.io import read_tiff, write_tiff
from vstain.masks import apply_mask
from vstain.models import checkpoint as checkpoint_module
from vstain.pairs import RegisteredPair, write_registered_pair
from vstain.stages import infer as infer_stage
from vstain.train import train_model

torch.set_num_threads(1)


class PatchOffset(torch.nn.Module):
    """Adds a random constant to each patch: the tiling steps of an uncertain generator."""

    def __init__(self, scale: float = 0.3, seed: int = 0):
        super().__init__()
        self.rng = torch.Generator().manual_seed(seed)
        self.scale = scale

    def forward(self, x):
        return x + self.scale * torch.randn(x.shape[0], 1, 1, 1, generator=self.rng)


class BatchRecorder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.batch_sizes = []

    def forward(self, x):
        self.batch_sizes.append(x.shape[0])
        return x


# --------------------------------------------------------------------------- tiling


@pytest.mark.parametrize("blend", BLENDS)
@pytest.mark.parametrize("shape", [(32, 32), (33, 47), (100, 37), (64, 96), (71, 71)])
@pytest.mark.parametrize("step", [1, 7, 16, 32])
def test_identity_network_reproduces_the_slide_exactly(blend, shape, step):
    image = np.random.default_rng(sum(shape) + step).uniform(-1, 1, shape + (3,)).astype(np.float32)
    out = infer_slide(torch.nn.Identity(), image, patch_size=32, step=step, batch_size=5, blend=blend)
    assert out.dtype == np.float32 and out.shape == image.shape
    assert np.array_equal(out, image)


@pytest.mark.parametrize("shape", [(32, 32), (45, 77), (100, 33)])
def test_tiling_covers_every_pixel_equally(shape):
    grid = tile_grid(shape, patch_size=32, step=8)
    coverage = np.zeros(grid.padded_shape, int)
    for y, x in grid.origins():
        coverage[y:y + 32, x:x + 32] += 1
    inner = coverage[grid.pad_before[0]:grid.pad_before[0] + shape[0], grid.pad_before[1]:grid.pad_before[1] + shape[1]]
    assert (coverage > 0).all()  # the padded slide is tiled to its far edge
    assert (inner == (32 // 8) ** 2).all()  # edges of the slide are covered as often as its centre
    assert grid.n_patches == len(list(grid.origins()))


def test_window_weights_sum_to_a_constant_under_uniform_coverage():
    weights = blend_weights(32, "window")
    total = sum(np.roll(weights, (dy, dx), axis=(0, 1)) for dy in range(0, 32, 8) for dx in range(0, 32, 8))
    assert np.allclose(total, total[0, 0])
    assert weights.min() > 0 and weights[16, 16] > 0.95


def test_patches_are_fed_in_batches_and_memory_does_not_hold_all_patches():
    recorder = BatchRecorder()
    image = np.zeros((64, 80, 3), np.float32)
    infer_slide(recorder, image, patch_size=32, step=8, batch_size=6, blend="mean")
    grid = tile_grid(image.shape[:2], 32, 8)
    assert max(recorder.batch_sizes) == 6
    assert sum(recorder.batch_sizes) == grid.n_patches
    assert isinstance(grid.origins(), types.GeneratorType)


def _peak_bytes(image: np.ndarray, patch_size: int, step: int) -> int:
    tracemalloc.start()
    try:
        infer_slide(torch.nn.Identity(), image, patch_size=patch_size, step=step, batch_size=16)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_tiled_inference_holds_memory_of_the_slide_not_of_its_patches():
    # 32 px patches every 8 px: every pixel lies in 16 patches, so keeping the patch outputs would take
    # over 15 times the slide (and a slide-sized array per patch thousands of times)
    small = np.zeros((256, 256, 3), np.float32)
    large = np.zeros((512, 512, 3), np.float32)
    peak_small, peak_large = _peak_bytes(small, 32, 8), _peak_bytes(large, 32, 8)
    grid = tile_grid(large.shape[:2], 32, 8)
    assert grid.n_patches * 32 * 32 * 3 * 4 > 15 * large.nbytes
    # float64 accumulators and the padded input (a little larger than the slide), the output, one batch
    assert peak_large < 8 * large.nbytes
    # it grows like the slide: 4x the pixels, about 4x the memory (not 4x the patches times 4x the slide)
    assert peak_large < 4.5 * peak_small


def test_single_channel_is_repeated_to_the_generator_channels():
    image = np.random.default_rng(0).uniform(-1, 1, (40, 40)).astype(np.float32)
    out = infer_slide(torch.nn.Identity(), with_channels(image, 3), patch_size=16, step=8, batch_size=4)
    assert out.shape == (40, 40, 3)
    assert np.array_equal(out[..., 2], image)
    assert with_channels(image[..., None], None).shape == (40, 40, 1)
    with pytest.raises(ValueError, match="image has 2 channels, the generator expects 3"):
        with_channels(np.zeros((64, 64, 2), np.float32), 3)


def test_bfloat16_runs_close_to_float32():
    image = np.random.default_rng(1).uniform(-1, 1, (48, 48, 3)).astype(np.float32)
    net = torch.nn.Conv2d(3, 3, 3, padding=1)
    fp32 = infer_slide(net, image, patch_size=16, step=8, batch_size=8)
    bf16 = infer_slide(net, image, patch_size=16, step=8, batch_size=8, dtype=torch.bfloat16)
    assert np.abs(fp32 - bf16).max() < 0.05
    assert not np.array_equal(fp32, bf16)


def test_window_blend_lowers_the_seam_score():
    rng = np.random.default_rng(2)
    image = rng.normal(0, 0.05, (96, 96, 3)).astype(np.float32)
    grid = tile_grid(image.shape[:2], 32, 8)
    mean = infer_slide(PatchOffset(), image, patch_size=32, step=8, batch_size=16, blend="mean")
    window = infer_slide(PatchOffset(), image, patch_size=32, step=8, batch_size=16, blend="window")
    mean_score, window_score = seam_score(mean, grid), seam_score(window, grid)
    assert mean_score > 1.15
    assert window_score < mean_score - 0.1
    # the same seams measured in a region only (as the notebook does in the masked-out background)
    region = np.zeros((96, 96), bool)
    region[:, :48] = True
    assert seam_score(window, grid, region) < seam_score(mean, grid, region)


def test_seam_score_of_a_smooth_image_is_about_one():
    grid = tile_grid((64, 64), 32, 16)
    image = np.random.default_rng(3).normal(size=(64, 64))
    assert 0.8 < seam_score(image, grid) < 1.2


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kwargs, image, match",
    [
        ({"patch_size": 32, "step": 8}, np.zeros((31, 64, 3), np.float32), "smaller than one patch"),
        ({"patch_size": 32, "step": 33}, np.zeros((64, 64, 3), np.float32), "step 33 is larger than patch_size 32"),
        ({"patch_size": 32, "step": 0}, np.zeros((64, 64, 3), np.float32), "step must be"),
        ({"patch_size": 32, "step": 8}, np.full((64, 64, 3), np.nan, np.float32), "NaN"),
        ({"patch_size": 32, "step": 8}, np.zeros((64, 64, 3), np.uint8), "float array"),
        ({"patch_size": 32, "step": 8, "blend": "max"}, np.zeros((64, 64, 3), np.float32), "blend"),
        ({"patch_size": 32, "step": 8, "batch_size": 0}, np.zeros((64, 64, 3), np.float32), "batch_size"),
    ],
)
def test_bad_input_is_refused_with_the_parameter_named(kwargs, image, match):
    kwargs = {"batch_size": 4, **kwargs}
    with pytest.raises(ValueError, match=match):
        infer_slide(torch.nn.Identity(), image, **kwargs)


def test_a_generator_with_the_wrong_output_shape_is_named():
    with pytest.raises(ValueError, match="generator returned shape"):
        infer_slide(lambda x: x[:, :, :8, :8], np.zeros((32, 32, 3), np.float32), patch_size=16, step=8, batch_size=2)


def test_slides_in_image_units():
    rng = np.random.default_rng(4)
    ct = rng.integers(0, 65536, (40, 52)).astype(np.uint16)
    stained = ct_to_histology_slide(torch.nn.Identity(), ct, patch_size=16, step=5, batch_size=8, blend="window")
    assert stained.dtype == np.uint8 and stained.shape == (40, 52, 3)
    assert np.array_equal(stained[..., 1], np.round(ct / 65535 * 255).astype(np.uint8))
    inverted = ct_to_histology_slide(torch.nn.Identity(), ct, patch_size=16, step=5, batch_size=8,
                                     info={"invert_ct": True})
    assert np.array_equal(inverted[..., 0], 255 - stained[..., 0])
    grey = np.repeat(rng.integers(0, 256, (40, 52, 1)).astype(np.uint8), 3, axis=-1)
    ct_back = histology_to_ct_slide(torch.nn.Identity(), grey, patch_size=16, step=5, batch_size=8)
    assert ct_back.dtype == np.uint16
    assert np.array_equal(ct_to_histology_slide(torch.nn.Identity(), ct_back, patch_size=16, step=5, batch_size=8),
                          grey)
    with pytest.raises(ValueError, match="histology must be"):
        histology_to_ct_slide(torch.nn.Identity(), grey[..., :2], patch_size=16, step=5, batch_size=8)
    with pytest.raises(ValueError, match="ct must be a single-channel"):
        ct_to_histology_slide(torch.nn.Identity(), grey, patch_size=16, step=5, batch_size=8)
    with pytest.raises(ValueError, match="NaN"):
        ct_to_histology_slide(torch.nn.Identity(), np.full((40, 40), np.nan, np.float32), patch_size=16, step=5,
                              batch_size=8)


def test_apply_mask_fills_outside_only():
    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    mask = np.array([[True, False, True], [False, True, True]])
    out = apply_mask(image, mask, (7, 8, 9))
    assert (out[~mask] == (7, 8, 9)).all() and np.array_equal(out[mask], image[mask])
    with pytest.raises(ValueError, match="mask shape"):
        apply_mask(image, mask[:1], 0)


# --------------------------------------------------------------------------- the stage


SMOKE = load_profile("smoke")


def _training_pair(pair_id: str, seed: int) -> RegisteredPair:
    rng = np.random.default_rng(seed)
    ct = rng.integers(5000, 40000, (48, 48)).astype(np.uint16)
    histology = np.repeat((255 - ct // 160).astype(np.uint8)[..., None], 3, axis=-1)
    return RegisteredPair(pair_id, "Mg", "toluidine_blue", ct, histology, np.ones((48, 48), bool), 5.0)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """``last.pt`` of a modified CycleGAN and of a Pix2Pix, trained for one smoke epoch."""
    folder = tmp_path_factory.mktemp("models")
    pairs = [_training_pair("t0", 0), _training_pair("t1", 1)]
    return {model: train_model(pairs, folder / model, model, SMOKE.training, epochs=1, seed=SMOKE.seed,
                               profile_name="smoke", progress=False) / "last.pt"
            for model in ("mod_cyclegan", "pix2pix")}


@pytest.fixture
def stage(tmp_path, monkeypatch, checkpoints):
    """Two registered pairs and a split under a temporary results root; generator loads are recorded."""
    monkeypatch.setenv("VSTAIN_RESULTS", str(tmp_path / "results"))
    rng = np.random.default_rng(5)
    registered = tmp_path / "results" / "smoke" / "registered"
    for pair_id, shape in (("p0", (40, 50)), ("p1", (36, 36))):
        mask = np.zeros(shape, bool)
        mask[5:-5, 5:-5] = True
        pair = RegisteredPair(pair_id, "Mg", "toluidine_blue", rng.integers(5000, 40000, shape).astype(np.uint16),
                              rng.integers(0, 256, shape + (3,)).astype(np.uint8), mask, 5.0)
        write_registered_pair(registered / pair_id, pair, {"test": True})
    dataset = tmp_path / "results" / "smoke" / "dataset"
    dataset.mkdir(parents=True)
    (dataset / "split.csv").write_text("pair_id,stain,material,fold0\np0,toluidine_blue,Mg,train\n"
                                       "p1,toluidine_blue,Mg,test\n")
    calls = []
    real = checkpoint_module.load_generator

    def recording(path, direction="ct_to_histology"):
        calls.append(direction)
        return real(path, direction)

    monkeypatch.setattr(checkpoint_module, "load_generator", recording)
    return types.SimpleNamespace(root=tmp_path / "results", checkpoint=checkpoints["mod_cyclegan"],
                                 pix2pix=checkpoints["pix2pix"], calls=calls, tmp=tmp_path)


def test_run_inference_writes_every_pair_once(stage):
    out = infer_stage.run_inference("smoke", "mod_cyclegan", 0, checkpoint=stage.checkpoint, progress=False)
    assert out == stage.root / "smoke" / "inference" / "mod_cyclegan" / "fold0"
    done = json.loads((out / "done.json").read_text())
    assert done["pairs"] == ["p0", "p1"]
    histology, size, meta = read_tiff(out / "p0" / "histology.tif")
    assert histology.shape == (40, 50, 3) and histology.dtype == np.uint8 and size == (5.0, 5.0)
    assert meta["pair_id"] == "p0" and meta["role"] == "train" and "vstain_version" in meta
    ct, _, _ = read_tiff(out / "p1" / "ct.tif")
    assert ct.shape == (36, 36) and ct.dtype == np.uint16
    masked, _, _ = read_tiff(out / "p0" / "histology_masked.tif")
    record = infer_stage.read_inference(out / "p0")["record"]
    assert (masked[0, 0] == np.round(record["histology_fill"]).astype(np.uint8)).all()
    assert np.array_equal(masked[20, 25], histology[20, 25])
    # the stage's output is the science function's on the registered pair
    generator, info = checkpoint_module.load_generator(stage.checkpoint)
    pair_ct, _, _ = read_tiff(stage.root / "smoke" / "registered" / "p0" / "ct.tif")
    expected = ct_to_histology_slide(generator, pair_ct, patch_size=SMOKE.inference.patch_size,
                                     step=SMOKE.inference.step, batch_size=SMOKE.inference.batch_size, info=info)
    assert np.array_equal(histology, expected)
    # idempotent: nothing is recomputed the second time
    stamp = (out / "p0" / "histology.tif").stat().st_mtime_ns
    n_calls = len(stage.calls)
    infer_stage.run_inference("smoke", "mod_cyclegan", 0, checkpoint=stage.checkpoint, progress=False)
    assert len(stage.calls) == n_calls and (out / "p0" / "histology.tif").stat().st_mtime_ns == stamp
    # a new blend is a new result
    infer_stage.run_inference("smoke", "mod_cyclegan", 0, checkpoint=stage.checkpoint, blend="window",
                              progress=False)
    assert json.loads((out / "done.json").read_text())["settings"]["blend"] == "window"


def test_pix2pix_has_no_generated_ct(stage):
    out = infer_stage.run_inference("smoke", "pix2pix", 0, checkpoint=stage.pix2pix, progress=False,
                                    out_dir=stage.tmp / "p2p")
    assert stage.calls == ["ct_to_histology"]
    assert (out / "p0" / "histology.tif").is_file() and not (out / "p0" / "ct.tif").exists()


def test_missing_and_mismatched_checkpoints_are_named(stage):
    missing = stage.tmp / "nope.pt"
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        infer_stage.run_inference("smoke", "mod_cyclegan", 0, checkpoint=missing, progress=False)
    with pytest.raises(ValueError, match=r"last\.pt: checkpoint of model 'pix2pix', expected 'mod_cyclegan'"):
        infer_stage.run_inference("smoke", "mod_cyclegan", 0, checkpoint=stage.pix2pix, progress=False)
    assert not (stage.root / "smoke" / "inference").exists()


def test_a_failure_leaves_no_complete_looking_output(stage, monkeypatch):
    calls = {"n": 0}
    real = infer_stage.histology_to_ct_slide

    def fail_second(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("boom")
        return real(*args, **kwargs)

    monkeypatch.setattr(infer_stage, "histology_to_ct_slide", fail_second)
    with pytest.raises(RuntimeError):
        infer_stage.run_inference("smoke", "mod_cyclegan", 0, checkpoint=stage.checkpoint, progress=False)
    out = stage.root / "smoke" / "inference" / "mod_cyclegan" / "fold0"
    assert (out / "p0" / "inference.json").is_file()
    assert not (out / "p1" / "inference.json").exists() and not (out / "done.json").exists()
    assert not list(out.rglob("*.part"))


def test_cli_reports_a_missing_checkpoint_in_one_line(stage, capsys):
    code = main(["infer", "--profile", "smoke", "--model", "mod_cyclegan", "--checkpoint", str(stage.tmp / "x.pt")])
    assert code == 2
    assert "x.pt: checkpoint not found" in capsys.readouterr().err


def test_changed_registered_pairs_are_stained_again(stage):
    out = infer_stage.run_inference("smoke", "mod_cyclegan", 0, checkpoint=stage.checkpoint, progress=False)
    before = json.loads((out / "done.json").read_text())["inputs"]
    pair_folder = stage.root / "smoke" / "registered" / "p1"
    mask, size, _ = read_tiff(pair_folder / "mask.tif")
    write_tiff(pair_folder / "mask.tif", np.ones_like(mask), size)
    n_calls = len(stage.calls)
    infer_stage.run_inference("smoke", "mod_cyclegan", 0, checkpoint=stage.checkpoint, progress=False)
    after = json.loads((out / "done.json").read_text())["inputs"]
    assert after["p0"] == before["p0"] and after["p1"] != before["p1"]
    assert len(stage.calls) > n_calls
    assert json.loads((out / "p1" / "inference.json").read_text())["input"] == after["p1"]


def test_compare_blends_stains_one_pair_with_both_blends_and_scores_the_seams(stage):
    result = infer_stage.compare_blends("smoke", "mod_cyclegan", 0, "p0", checkpoint=stage.checkpoint)
    assert result["pair"].pair_id == "p0"
    assert result["grid"] == tile_grid((40, 50), SMOKE.inference.patch_size, SMOKE.inference.step)
    for blend in BLENDS:
        assert result[blend].shape == (40, 50, 3) and result[blend].dtype == np.uint8
    assert not np.array_equal(result["mean"], result["window"])
    scores = result["scores"]
    assert scores.columns.tolist() == ["blend", "region", "seam_score"]
    assert sorted(zip(scores.blend, scores.region)) == sorted(
        (b, r) for b in BLENDS for r in ("whole slide", "inside mask", "background"))
    assert np.isfinite(scores.loc[scores.region == "whole slide", "seam_score"]).all()
    # the mean blend is what the stage writes with the profile's (mean) blend
    out = infer_stage.run_inference("smoke", "mod_cyclegan", 0, checkpoint=stage.checkpoint, progress=False)
    assert np.array_equal(result["mean"], read_tiff(out / "p0" / "histology.tif")[0])


def test_quick_inference_defaults_stain_as_before_within_the_stated_tolerance(checkpoints):
    """The quick profile's inference defaults (measured by benchmarks/infer_speed.py --checkpoint: step patch/2,
    window blend, bf16 autocast where the CPU has it) against the previous step patch/4 in fp32 with the same
    blend, on a trained generator: bf16 alone moves the 8-bit image by at most 32 levels and 2 on average;
    halving the overlap as well by at most 64 levels and 8 on average (a generator whose output depends on
    where the patch lies; benchmarks/infer_speed.py reports the same figures for the quick model)."""
    from tests.test_stain_cli import structured_ct
    from vstain.models.checkpoint import load_generator

    quick = load_profile("quick").inference
    assert quick.step * 2 == quick.patch_size and quick.blend == "window" and quick.cpu_bf16 == "auto"
    generator, info = load_generator(checkpoints["mod_cyclegan"])
    ct = np.rint(10000 + 25000 * structured_ct((1, 96, 96))[0]).astype(np.uint16)
    patch = 32
    step = patch * quick.step // quick.patch_size

    def stain(step, dtype):
        return ct_to_histology_slide(generator, ct, patch_size=patch, step=step, batch_size=16, blend=quick.blend,
                                     info=info, dtype=dtype).astype(int)

    before = stain(patch // 4, torch.float32)
    precision_only = np.abs(stain(patch // 4, torch.bfloat16) - before)
    defaults = np.abs(stain(step, torch.bfloat16) - before)
    assert precision_only.max() <= 32 and precision_only.mean() <= 2
    assert defaults.max() <= 64 and defaults.mean() <= 8
    assert defaults.mean() > 0  # the comparison sees the change
