"""Whole-slide overlapping patch inference (vstain.infer)."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest
import torch

from vstain import infer
from vstain.infer import (
    BLENDS,
    apply_mask,
    blend_weights,
    ct_to_histology_slide,
    histology_to_ct_slide,
    infer_slide,
    seam_score,
    tile_grid,
)
from vstain.io import read_tiff
from vstain.pairs import RegisteredPair, write_registered_pair

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


def test_single_channel_is_repeated_to_the_generator_channels():
    image = np.random.default_rng(0).uniform(-1, 1, (40, 40)).astype(np.float32)
    out = infer_slide(torch.nn.Identity(), image, patch_size=16, step=8, batch_size=4, in_channels=3)
    assert out.shape == (40, 40, 3)
    assert np.array_equal(out[..., 2], image)


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
        ({"patch_size": 32, "step": 8, "in_channels": 3}, np.zeros((64, 64, 2), np.float32), "2 channels"),
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


class TinyGenerator(torch.nn.Module):
    def __init__(self, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        return torch.tanh(self.conv(x))


@pytest.fixture
def stage(tmp_path, monkeypatch):
    """Two registered pairs, a split and a fake training module under a temporary results root."""
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
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"weights")
    calls = []

    def load_generator(path, direction="ct_to_histology"):
        calls.append(direction)
        info = json.loads(open(path).read()) if str(path).endswith(".json") else {"model": "mod_cyclegan"}
        return TinyGenerator(0 if direction == "ct_to_histology" else 1), info

    monkeypatch.setitem(sys.modules, "vstain.train", types.SimpleNamespace(load_generator=load_generator))
    return types.SimpleNamespace(root=tmp_path / "results", checkpoint=checkpoint, calls=calls, tmp=tmp_path)


def test_run_inference_writes_every_pair_once(stage):
    out = infer.run_inference("smoke", "mod_cyclegan", 0, checkpoint=stage.checkpoint, progress=False)
    assert out == stage.root / "smoke" / "inference" / "mod_cyclegan" / "fold0"
    done = json.loads((out / "done.json").read_text())
    assert done["pairs"] == ["p0", "p1"]
    histology, size, meta = read_tiff(out / "p0" / "histology.tif")
    assert histology.shape == (40, 50, 3) and histology.dtype == np.uint8 and size == (5.0, 5.0)
    assert meta["pair_id"] == "p0" and meta["role"] == "train" and "vstain_version" in meta
    ct, _, _ = read_tiff(out / "p1" / "ct.tif")
    assert ct.shape == (36, 36) and ct.dtype == np.uint16
    masked, _, _ = read_tiff(out / "p0" / "histology_masked.tif")
    record = infer.read_inference(out / "p0")["record"]
    assert (masked[0, 0] == np.round(record["histology_fill"]).astype(np.uint8)).all()
    assert np.array_equal(masked[20, 25], histology[20, 25])
    # idempotent: nothing is recomputed the second time
    stamp = (out / "p0" / "histology.tif").stat().st_mtime_ns
    n_calls = len(stage.calls)
    infer.run_inference("smoke", "mod_cyclegan", 0, checkpoint=stage.checkpoint, progress=False)
    assert len(stage.calls) == n_calls and (out / "p0" / "histology.tif").stat().st_mtime_ns == stamp
    # a new blend is a new result
    infer.run_inference("smoke", "mod_cyclegan", 0, checkpoint=stage.checkpoint, blend="window", progress=False)
    assert json.loads((out / "done.json").read_text())["settings"]["blend"] == "window"


def test_pix2pix_has_no_generated_ct(stage):
    checkpoint = stage.tmp / "pix2pix.json"
    checkpoint.write_text(json.dumps({"model": "pix2pix"}))
    out = infer.run_inference("smoke", "pix2pix", 0, checkpoint=checkpoint, progress=False,
                              out_dir=stage.tmp / "p2p")
    assert stage.calls == ["ct_to_histology"]
    assert (out / "p0" / "histology.tif").is_file() and not (out / "p0" / "ct.tif").exists()


def test_missing_and_mismatched_checkpoints_are_named(stage):
    missing = stage.tmp / "nope.pt"
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        infer.run_inference("smoke", "mod_cyclegan", 0, checkpoint=missing, progress=False)
    other = stage.tmp / "other.json"
    other.write_text(json.dumps({"model": "pix2pix"}))
    with pytest.raises(ValueError, match=r"other\.json.*pix2pix.*mod_cyclegan"):
        infer.run_inference("smoke", "mod_cyclegan", 0, checkpoint=other, progress=False)
    assert not (stage.root / "smoke" / "inference").exists()


def test_a_failure_leaves_no_complete_looking_output(stage, monkeypatch):
    calls = {"n": 0}
    real = infer.histology_to_ct_slide

    def fail_second(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("boom")
        return real(*args, **kwargs)

    monkeypatch.setattr(infer, "histology_to_ct_slide", fail_second)
    with pytest.raises(RuntimeError):
        infer.run_inference("smoke", "mod_cyclegan", 0, checkpoint=stage.checkpoint, progress=False)
    out = stage.root / "smoke" / "inference" / "mod_cyclegan" / "fold0"
    assert (out / "p0" / "inference.json").is_file()
    assert not (out / "p1" / "inference.json").exists() and not (out / "done.json").exists()
    assert not list(out.rglob("*.part"))


def test_cli_reports_a_missing_checkpoint_in_one_line(stage, capsys):
    from vstain.cli import main

    code = main(["infer", "--profile", "smoke", "--model", "mod_cyclegan", "--checkpoint", str(stage.tmp / "x.pt")])
    assert code == 2
    assert "x.pt: checkpoint not found" in capsys.readouterr().err


def test_changed_registered_pairs_are_stained_again(stage):
    out = infer.run_inference("smoke", "mod_cyclegan", 0, checkpoint=stage.checkpoint, progress=False)
    before = json.loads((out / "done.json").read_text())["inputs"]
    pair_folder = stage.root / "smoke" / "registered" / "p1"
    mask, size, _ = read_tiff(pair_folder / "mask.tif")
    from vstain.io import write_tiff

    write_tiff(pair_folder / "mask.tif", np.ones_like(mask), size)
    n_calls = len(stage.calls)
    infer.run_inference("smoke", "mod_cyclegan", 0, checkpoint=stage.checkpoint, progress=False)
    after = json.loads((out / "done.json").read_text())["inputs"]
    assert after["p0"] == before["p0"] and after["p1"] != before["p1"]
    assert len(stage.calls) > n_calls
    assert json.loads((out / "p1" / "inference.json").read_text())["input"] == after["p1"]
