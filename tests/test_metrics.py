"""SSIM / PSNR / LPIPS on masked patches (vstain.metrics) and the evaluation stage that writes Table 1."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
import torch

from vstain import metrics
from vstain.frc import patch_origins
from vstain.metrics import (
    load_lpips,
    lpips_distances,
    patch_grid,
    patch_metrics,
    psnr,
    sample_patches,
    squeezenet_weights_path,
    ssim,
)
from vstain.pairs import RegisteredPair, write_registered_pair
from vstain.stages import evaluate as evaluate_stage
from vstain.stages import infer as infer_stage
from vstain.stages.upstream import MissingInput
from vstain.reports.table1 import PAPER_TABLE1, compare_with_paper, table1
from vstain.vocabulary import BASELINE, LOOKUP

torch.set_num_threads(1)


def test_psnr_against_hand_computed_values():
    real = np.zeros((4, 4, 3), np.uint8)
    generated = real.copy()
    generated[0, 0, 0] = 48  # one error of 48 in 48 values: MSE = 48
    assert psnr(real, generated) == pytest.approx(10 * np.log10(255**2 / 48.0))
    assert psnr(real, np.full_like(real, 255)) == pytest.approx(0.0)
    assert psnr(real, real) == float("inf")


def test_ssim_of_constant_images_is_the_luminance_term():
    # For constant images the variances and covariance vanish, so Eq. 11 reduces to
    # (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1) with C1 = (0.01 * 255)^2.
    a, b = 100.0, 150.0
    c1 = (0.01 * 255) ** 2
    expected = (2 * a * b + c1) / (a**2 + b**2 + c1)
    real = np.full((16, 16, 3), a, np.uint8)
    generated = np.full((16, 16, 3), b, np.uint8)
    assert ssim(real, generated) == pytest.approx(expected, rel=1e-9)
    assert ssim(real, real) == pytest.approx(1.0)


def test_ssim_and_psnr_refuse_mismatched_or_non_rgb_images():
    with pytest.raises(ValueError, match="shape"):
        ssim(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 9, 3), np.uint8))
    with pytest.raises(ValueError, match="RGB"):
        psnr(np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        psnr(np.zeros((8, 8, 3), np.float32), np.zeros((8, 8, 3), np.float32))


@pytest.mark.parametrize("threshold", [0.0, 0.25, 0.5, 0.75, 1.0])
def test_patch_sampling_respects_the_mask_threshold(threshold):
    rng = np.random.default_rng(0)
    mask = np.zeros((50, 70), bool)
    mask[10:45, 5:60] = rng.random((35, 55)) < 0.8
    origins = sample_patches(mask, patch_size=16, step=8, min_mask_fraction=threshold)
    ys = sorted(set(range(0, 50 - 16 + 1, 8)) | {50 - 16})
    xs = sorted(set(range(0, 70 - 16 + 1, 8)) | {70 - 16})
    brute = [(y, x) for y in ys for x in xs if mask[y:y + 16, x:x + 16].mean() >= threshold]
    assert [tuple(o) for o in origins] == brute
    assert all(mask[y:y + 16, x:x + 16].mean() >= threshold for y, x in origins)


def test_patch_sampling_keeps_exactly_half_and_drops_just_below():
    mask = np.zeros((8, 16), bool)
    mask[:, :4] = True  # patch at x=0: 4/8 columns = exactly 50 %
    mask[:7, 8:12] = True  # patch at x=8: 28/64 < 50 %
    assert sample_patches(mask, patch_size=8, step=8, min_mask_fraction=0.5).tolist() == [[0, 0]]


def test_patch_metrics_ignore_differences_outside_the_mask():
    rng = np.random.default_rng(1)
    real = rng.integers(0, 256, (32, 32, 3)).astype(np.uint8)
    generated = real.copy()
    mask = np.ones((32, 32), bool)
    mask[:, 24:] = False
    generated[:, 24:] = 255 - generated[:, 24:]  # wrong only where the mask excludes
    table = patch_metrics(real, generated, mask, patch_size=16, step=8, min_mask_fraction=0.5)
    assert len(table) == 9  # y and x in {0, 8, 16}; the x = 16 column is exactly 50 % mask
    assert (table["psnr"] == np.inf).all() and np.allclose(table["ssim"], 1.0)
    assert table["lpips"].isna().all()
    generated[4, 4] = 0
    table = patch_metrics(real, generated, mask, patch_size=16, step=8, min_mask_fraction=0.5)
    assert np.isfinite(table.loc[(table.y == 0) & (table.x == 0), "psnr"]).all()


def test_lpips_unavailable_says_which_file_to_put_where(tmp_path):
    status = load_lpips(tmp_path / "hub")
    assert not status.available and status.model is None
    expected = tmp_path / "hub" / "checkpoints" / "squeezenet1_1-b8a52dc0.pth"
    assert squeezenet_weights_path(tmp_path / "hub") == expected
    assert str(expected) in status.message and "squeezenet1_1-b8a52dc0.pth" in status.message


def test_a_wrong_weights_file_is_not_used(tmp_path):
    path = squeezenet_weights_path(tmp_path)
    path.parent.mkdir(parents=True)
    torch.save(torch.nn.Conv2d(1, 1, 1).state_dict(), path)
    status = load_lpips(tmp_path)
    assert not status.available and "is not torchvision's SqueezeNet" in status.message


def test_lpips_plumbing_with_a_random_backbone_only():
    status = load_lpips(random_backbone=True)
    assert "RANDOM" in status.message
    rng = np.random.default_rng(2)
    a = rng.integers(0, 256, (3, 32, 32, 3)).astype(np.uint8)
    b = 255 - a
    same = lpips_distances(a, a, status.model, batch_size=2)
    different = lpips_distances(a, b, status.model, batch_size=2)
    assert same.shape == (3,) and np.allclose(same, 0)
    assert (different > 0).all()


def test_lpips_with_the_real_weights_when_present():
    path = squeezenet_weights_path()
    if not path.is_file():
        pytest.skip(f"{path} absent (no network here): the unavailable path is tested above")
    status = load_lpips()
    assert status.available
    assert hashlib.sha256(path.read_bytes()).hexdigest().startswith("b8a52dc0")


def _per_patch(lpips_value=np.nan):
    rows = []
    for model, base in (("mod_cyclegan", 0.6), ("pix2pix", 0.3), ("raw_ct", 0.1)):
        for role in ("train", "validation", "test"):
            for i, pair in enumerate(("a", "a", "b")):
                rows.append({"pair_id": pair, "role": role, "material": "Mg", "model": model, "fold": 0,
                             "y": i, "x": 0, "ssim": base + 0.1 * i, "psnr": 10 + i + base * 10,
                             "lpips": lpips_value})
    return pd.DataFrame(rows)


def test_table1_medians_and_no_fake_lpips():
    table = table1(_per_patch())
    row = table[(table.model == "mod_cyclegan") & (table.role == "validation")].iloc[0]
    assert row.ssim == pytest.approx(0.7) and row.psnr == pytest.approx(17.0)
    assert row.n_patches == 3 and row.n_pairs == 2
    assert table["lpips"].isna().all() and not table["lpips_available"].any()
    assert list(table.model.unique()) == ["mod_cyclegan", "pix2pix", "raw_ct"]
    assert list(table.role[:3]) == ["train", "validation", "test"]


def test_comparison_with_the_paper_ranks_as_measured():
    compared = compare_with_paper(table1(_per_patch(lpips_value=0.2)))
    ours = compared[(compared.model == "mod_cyclegan") & (compared.role == "test")].iloc[0]
    assert ours.ssim_paper == 0.59 and ours.ssim_rank == 1 and ours.ssim_rank_paper == 1
    pix = compared[(compared.model == "pix2pix") & (compared.role == "test")].iloc[0]
    assert pix.psnr_rank == 2 and pix.lpips_paper == 0.22
    baseline = compared[compared.model == "raw_ct"]
    assert (baseline.ssim_paper == 0.15).all() and baseline.ssim_rank.isna().all()
    assert len(PAPER_TABLE1) == 12


def test_raw_ct_baseline_is_greyscale():
    rgb = metrics.raw_ct_as_rgb(np.array([[10000, 30000]], np.uint16))
    assert rgb.shape == (1, 2, 3) and (rgb[..., 0] == rgb[..., 2]).all() and rgb[0, 0, 0] < rgb[0, 1, 0]


def test_evaluate_stage_end_to_end_on_tiny_pairs(tmp_path, one_epoch_models, capsys):
    """Train two smoke models on two written pairs, stain them (the inference stage), write Table 1 without LPIPS."""
    rng = np.random.default_rng(3)
    root = one_epoch_models
    for pair_id in ("p0", "p1", "p2"):
        ct = rng.integers(5000, 40000, (48, 48)).astype(np.uint16)
        histology = np.repeat((255 - ct // 160).astype(np.uint8)[..., None], 3, axis=-1)
        mask = np.zeros((48, 48), bool)
        mask[4:44, 4:44] = True
        write_registered_pair(root / "registered" / pair_id,
                              RegisteredPair(pair_id, "Mg", "toluidine_blue", ct, histology, mask, 5.0))
    (root / "dataset").mkdir(parents=True)
    (root / "dataset" / "split.csv").write_text(
        "pair_id,stain,material,fold0\np0,toluidine_blue,Mg,train\np1,toluidine_blue,Mg,validation\n"
        "p2,toluidine_blue,Mg,test\n")
    # the evaluation reads the inference stage's outputs; missing, they stop it with the command that makes them
    with pytest.raises(MissingInput, match=r"run `vstain infer --profile smoke --model mod_cyclegan --fold 0`"):
        evaluate_stage.evaluate("smoke", models=["mod_cyclegan"], folds=[0], hub_dir=tmp_path / "hub", progress=False)
    capsys.readouterr()
    for model in ("mod_cyclegan", "pix2pix"):
        infer_stage.run_inference("smoke", model, 0, progress=False)
    path = evaluate_stage.evaluate("smoke", models=["mod_cyclegan", "pix2pix"], folds=[0], hub_dir=tmp_path / "hub",
                            progress=False)
    assert capsys.readouterr().err.count("LPIPS unavailable") == 1
    table = pd.read_csv(path)
    assert set(table.model) == {"mod_cyclegan", "pix2pix", LOOKUP, BASELINE}
    assert set(table.role) == {"train", "validation", "test"}
    assert table.lpips.isna().all() and not table.lpips_available.any()
    per_patch = pd.read_csv(root / "evaluation" / "metrics_per_patch.csv")
    # one fold: Table 1 holds the median over its patches of every model and split
    medians = per_patch.groupby(["model", "role"])[["ssim", "psnr"]].median()
    shown = table.set_index(["model", "role"])[["ssim", "psnr"]]
    pd.testing.assert_frame_equal(shown.sort_index(), medians.loc[shown.index].sort_index(), rtol=1e-9)
    assert np.isfinite(table.psnr).all() and table.ssim.nunique() > 1
    assert {"pair_id", "role", "material", "model", "y", "x", "ssim", "psnr", "lpips"} <= set(per_patch.columns)
    # 48 px pairs, 32 px patches every 16 px: 4 candidate patches per pair, all at least 50 % masked
    assert (per_patch.groupby(["model", "pair_id"]).size() == 4).all()
    assert (root / "inference" / "pix2pix" / "fold0" / "p1" / "histology.tif").is_file()
    assert not (root / "inference" / "pix2pix" / "fold0" / "p1" / "ct.tif").exists()
    compared = pd.read_csv(root / "evaluation" / "table1_vs_paper.csv")
    assert compared.loc[compared.model == "mod_cyclegan", "ssim_paper"].tolist() == [0.63, 0.60, 0.59]
    assert compared.loc[compared.model == LOOKUP, "ssim_paper"].isna().all()
    # the lookup: fitted on the training pair p0 only (histology = 255 - ct // 160 there), applied to all three
    lookup = evaluate_stage.read_lookup("smoke", 0)
    assert lookup.counts.sum() == 40 * 40
    written = pd.read_csv(root / "evaluation" / "ct_lookup" / "fold0.csv")
    assert len(written) == lookup.n_bins == 256
    centres = (lookup.edges[:-1] + lookup.edges[1:]) / 2
    filled = lookup.counts > 0
    assert np.abs(lookup.colours[filled, 0] - (255 - centres[filled] / 160)).max() < 2.5  # the grey map, learnt
    assert (per_patch[per_patch.model == LOOKUP].groupby("pair_id").size() == 4).all()
    ssim_by_model = table[table.role == "test"].set_index("model")["ssim"]
    assert ssim_by_model[LOOKUP] > 0.9  # a pixelwise grey map is what a lookup learns exactly
    intervals = pd.read_csv(root / "evaluation" / "table1_intervals.csv")
    measured = intervals.dropna(subset=["estimate"])  # LPIPS: not measured without its weights
    assert set(intervals.model) == set(table.model) and set(measured.metric) == {"ssim", "psnr"}
    assert (measured.low <= measured.estimate + 1e-12).all() and (measured.estimate <= measured.high + 1e-12).all()
    comparisons = pd.read_csv(root / "evaluation" / "comparisons.csv")
    assert {"model_a", "model_b", "difference", "low", "high", "p_value", "verdict"} <= set(comparisons.columns)
    # one slide per split: no comparison can separate two models
    assert comparisons.verdict.isna().all() and (comparisons.n_slides == 1).all()
    # cached: a second run reads the per-patch CSVs back
    stamp = (root / "evaluation" / "per_patch" / "mod_cyclegan_fold0.csv").stat().st_mtime_ns
    lookup_stamp = (root / "evaluation" / "per_patch" / "ct_lookup_fold0.csv").stat().st_mtime_ns
    evaluate_stage.evaluate("smoke", models=["mod_cyclegan", "pix2pix"], folds=[0], hub_dir=tmp_path / "hub",
                     progress=False)
    assert (root / "evaluation" / "per_patch" / "mod_cyclegan_fold0.csv").stat().st_mtime_ns == stamp
    assert (root / "evaluation" / "per_patch" / "ct_lookup_fold0.csv").stat().st_mtime_ns == lookup_stamp


def test_roi_prefers_full_mask_and_structure():
    mask = np.ones((64, 64), bool)
    image = np.zeros((64, 64))
    image[40:56, 8:24] = np.random.default_rng(0).normal(size=(16, 16))
    y, x = metrics.choose_roi(mask, 16, image)
    assert (y, x) == (40, 8)
    assert metrics.choose_roi(np.ones((10, 12), bool), 16) == (0, 0)


def _old_evaluation_patches(mask, patch_size, step, min_mask_fraction):
    """The evaluation's patch placement written out patch by patch (the reference)."""
    def starts(size):
        s = list(range(0, size - patch_size + 1, step))
        return s if s[-1] == size - patch_size else s + [size - patch_size]

    return [[y, x] for y in starts(mask.shape[0]) for x in starts(mask.shape[1])
            if mask[y:y + patch_size, x:x + patch_size].sum() >= min_mask_fraction * patch_size ** 2 - 1e-9]


def _old_frc_patches(mask, patch_size, min_mask_fraction):
    """The FRC's patch placement written out patch by patch (the reference)."""
    return [(y, x) for y in range(0, mask.shape[0] - patch_size + 1, patch_size)
            for x in range(0, mask.shape[1] - patch_size + 1, patch_size)
            if mask[y:y + patch_size, x:x + patch_size].mean() >= min_mask_fraction]


@pytest.mark.parametrize("seed", range(6))
def test_one_patch_grid_places_evaluation_frc_and_roi_patches(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(rng.integers(20, 90, 2))
    mask = np.zeros(shape, bool)
    y0, x0 = rng.integers(0, 15, 2)
    mask[y0:y0 + rng.integers(5, 70), x0:x0 + rng.integers(5, 70)] = True
    mask ^= rng.random(shape) < 0.05
    for size, step, fraction in ((16, 8, 0.5), (16, 5, 0.75), (8, 8, 0.0), (12, 7, 1.0)):
        assert sample_patches(mask, patch_size=size, step=step, min_mask_fraction=fraction).tolist() == \
            _old_evaluation_patches(mask, size, step, fraction)
        assert patch_origins(mask, size, fraction) == _old_frc_patches(mask, size, fraction)
    origins, covered = patch_grid(mask, 16, 4)
    assert [covered[i] for i in range(len(origins))] == [mask[y:y + 16, x:x + 16].sum() for y, x in origins]
    # the ROI is a candidate of the grid of step size // 4 with the largest mask fraction
    y, x = metrics.choose_roi(mask, 16)
    assert mask[y:y + 16, x:x + 16].mean() == max(mask[a:a + 16, b:b + 16].mean() for a, b in origins)


def test_table1_over_two_folds_is_what_the_per_fold_tables_imply():
    from vstain.reports.table1 import table1_by_fold, table1_over_folds

    rng = np.random.default_rng(0)
    rows = []
    for fold in (0, 1):
        for model in ("mod_cyclegan", "pix2pix"):
            for role in ("validation", "test"):
                for k in range(7 + 3 * fold):
                    rows.append({"model": model, "role": role, "fold": fold, "pair_id": f"p{k % 3}",
                                 "ssim": rng.uniform(0, 1), "psnr": rng.uniform(5, 25), "lpips": np.nan})
    per_patch = pd.DataFrame(rows)
    by_fold = table1_by_fold(per_patch)
    over = table1_over_folds(by_fold).set_index(["model", "role"])
    for (model, role), row in over.iterrows():
        medians = [table1(per_patch[per_patch.fold == f]).set_index(["model", "role"]).loc[(model, role), "ssim"]
                   for f in (0, 1)]
        assert row["ssim"] == pytest.approx(np.median(medians))
        assert (row["ssim_min"], row["ssim_max"]) == pytest.approx((min(medians), max(medians)))
        assert row["n_folds"] == 2 and row["n_patches"] == 7 + 10
    # one fold: the fold's own Table 1
    single = table1_over_folds(table1_by_fold(per_patch[per_patch.fold == 0]))
    pd.testing.assert_series_equal(single["ssim"], table1(per_patch[per_patch.fold == 0])["ssim"])
