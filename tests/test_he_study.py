"""The H&E secondary study (paper S2): driver outputs, H&E-only pairs, masks on the field of view."""

import json
import os

import numpy as np
import pandas as pd
import pytest
import torch

from vstain.cli import main
from vstain.config import load_profile
from vstain.figures import he as he_figures
from vstain.io import read_tiff
from vstain.manifest import read_split
from vstain.metrics import patch_metrics
from vstain.pairs import read_registered_pair
from vstain.stages import he as he_stage
from vstain.stages import register as register_stage
from vstain.stages.upstream import MissingInput

@pytest.fixture(scope="module")
def he_run(tmp_path_factory):
    """The registration stage's H&E pairs, then the whole H&E study on the smoke profile (1 H&E epoch), in a
    fresh results root."""
    root = tmp_path_factory.mktemp("he_results")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VSTAIN_RESULTS", str(root))
        profile = load_profile("smoke")
        assert profile.he.epochs == 1  # the test's budget relies on it
        # the study reads the registration stage's H&E pairs: before it has run, the study names its command
        with pytest.raises(MissingInput, match=r"run `vstain register --profile smoke --stain he`"):
            he_stage.run_he_study(profile, progress=False)
        register_stage.ensure_registered(profile, stain="he", progress=False)
        outputs = he_stage.run_he_study(profile, progress=False)
        yield profile, root / profile.name, outputs
    torch.set_num_threads(threads)


def _split(results):
    return read_split(results / "dataset" / "split.csv")


@pytest.mark.slow
def test_driver_writes_models_inference_and_metrics_from_he_pairs_only(he_run):
    profile, results, outputs = he_run
    split = _split(results)
    he = split[split["stain"] == "he"]
    he_ids = set(he["pair_id"])
    train_ids = he.loc[he["fold0"] == "train", "pair_id"].tolist()
    registered = he_stage.registered_he_ids(profile)
    assert set(registered) <= he_ids and any(r == "test" for r in he.set_index("pair_id").loc[registered, "fold0"])
    assert sorted(outputs) == sorted(profile.he.models)
    for model in profile.he.models:
        model_dir = results / "he" / "models" / model
        assert (model_dir / "last.pt").is_file()
        record = json.loads((model_dir / "training.json").read_text())
        assert record["stain"] == "he" and record["epochs_done"] == profile.he.epochs
        assert record["pair_ids"] == [pid for pid in train_ids if pid in registered]
        done = json.loads((results / "he" / "inference" / model / "done.json").read_text())
        assert outputs[model] == results / "he" / "inference" / model
        assert done["pairs"] == registered
        assert done["settings"]["checkpoint"] == str(model_dir / "last.pt")
        assert done["provenance"]["profile"] == "smoke"
        for pid in registered:
            info = json.loads((outputs[model] / pid / "inference.json").read_text())
            assert info["stain"] == "he"
            assert info["role"] == he.set_index("pair_id").loc[pid, "fold0"]
            # Pix2Pix has no histology-to-CT generator, the modified CycleGAN has.
            assert (outputs[model] / pid / "ct.tif").is_file() == (model != "pix2pix")
    # Nothing of the toluidine-blue study was registered, trained or stained.
    registered_dirs = [p.name for p in (results / "registered").iterdir() if (p / "pair.json").is_file()]
    assert set(registered_dirs) <= he_ids
    assert not (results / "models").exists() and not (results / "inference").exists()

    table = pd.read_csv(results / "he" / "metrics.csv")
    assert set(table["model"]) == set(profile.he.models)
    assert set(table["pair_id"]) <= set(registered)
    assert set(table["role"]) <= {"train", "test"} and len(table)
    # the numbers are those of the stored stain against the registered section, patch by patch
    model, pair_id = table.iloc[0][["model", "pair_id"]]
    pair = read_registered_pair(results / "registered" / pair_id)
    generated = read_tiff(outputs[model] / pair_id / "histology.tif")[0]
    e = profile.evaluation
    again = patch_metrics(pair.histology, generated, pair.mask, patch_size=e.patch_size, step=e.patch_step,
                          min_mask_fraction=e.min_mask_fraction)
    stored = table[(table["model"] == model) & (table["pair_id"] == pair_id)]
    np.testing.assert_allclose(stored[["y", "x", "ssim", "psnr"]].to_numpy(float),
                               again[["y", "x", "ssim", "psnr"]].to_numpy(float), rtol=1e-9)
    assert (table["mask_fraction"] >= profile.evaluation.min_mask_fraction).all()
    compared, scope = he_stage.comparison_patches(table)
    assert set(compared["role"]) == ({"test"} if "test" in set(table["role"]) else set(table["role"]))
    assert scope.startswith("the validation/testing") == ("test" in set(table["role"]))
    summary = he_stage.summarise_metrics(compared, role=None)
    assert sorted(summary.index) == sorted(profile.he.models)
    assert he_stage.better_model(summary, "ssim") == summary["ssim"].idxmax()


@pytest.mark.slow
def test_masks_follow_the_stitched_field_of_view(he_run):
    profile, results, _ = he_run
    partial_somewhere = False
    for pid in he_stage.registered_he_ids(profile):
        folder = results / "registered" / pid
        pair = read_registered_pair(folder)
        # The registration stage records where each image has data: 1 CT, 2 histology, 3 both.
        valid = read_tiff(folder / "valid.tif")[0]
        histology_fov = (valid & 2) > 0
        assert pair.mask.any(), pid
        assert not (pair.mask & ~histology_fov).any(), f"{pid}: mask reaches outside the stitched field of view"
        partial_somewhere |= bool((~histology_fov).any())
        # Generated images shown masked carry one fill value outside the mask.
        generated = he_stage.he_views(profile, "mod_cyclegan", pid)
        outside = generated["generated_histology_masked"][~pair.mask]
        assert len(outside) and (outside == outside[0]).all()
    assert partial_somewhere, "no registered H&E pair shows a partial field of view"


@pytest.mark.slow
def test_study_is_idempotent(he_run):
    profile, results, _ = he_run
    files = [results / "he" / "metrics.csv"] + [
        results / "he" / kind / m / name
        for m in profile.he.models for kind, name in (("models", "last.pt"), ("inference", "done.json"))]
    before = {f: os.stat(f).st_mtime_ns for f in files}
    he_stage.run_he_study(profile, progress=False)
    assert {f: os.stat(f).st_mtime_ns for f in files} == before


@pytest.mark.slow
def test_cli_runs_a_stage_and_reports_bad_models(he_run, capsys):
    profile, results, _ = he_run
    assert main(["he", "--profile", "smoke", "--stage", "train", "--model", "pix2pix", "--no-progress"]) == 0
    assert capsys.readouterr().out.strip() == str(results / "he" / "models" / "pix2pix")
    assert main(["he", "--profile", "smoke", "--model", "unet9000", "--no-progress"]) == 2
    assert "unet9000" in capsys.readouterr().err


@pytest.mark.slow
def test_figures_have_the_papers_panels(he_run):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    profile, _, _ = he_run
    shown = {"train": he_stage.figure_pairs(profile, "train"), "test": he_stage.figure_pairs(profile, "test")}
    n_rows = len(shown["train"]) + len(shown["test"])
    for model, n_cols in (("mod_cyclegan", 4), ("pix2pix", 3)):
        fig = he_figures.plot_he_examples(he_stage.example_views(profile, model, shown), masked=False)
        assert len(fig.axes) == n_rows * n_cols
        assert all(any(t.get_text().endswith(("µm", "mm")) for t in ax.texts) for ax in fig.axes)
        plt.close(fig)
    views = he_stage.comparison_views(profile, profile.he.models, shown["test"][0])
    fig = he_figures.plot_model_comparison(views, shown["test"][0], profile.evaluation.patch_size)
    assert len(fig.axes) == 2 * (1 + len(profile.he.models))
    plt.close(fig)
    assert he_stage.sample_materials(profile, shown["test"]).startswith("Sample 1 = ")
    pairs = he_stage.load_he_pairs(profile)
    fig = he_figures.plot_he_pairs(pairs, he_stage.he_roles(profile))
    assert len(fig.axes) == 2 * len(pairs) and fig.axes[0].get_title().startswith(pairs[0].pair_id)
    plt.close(fig)


# --------------------------------------------------------------------------- small pieces


def test_roi_origin_is_the_window_the_mask_covers_most():
    rng = np.random.default_rng(3)
    mask = rng.random((23, 31)) < 0.3
    mask[5:15, 12:22] = True
    size = 8
    cover = np.array([[mask[y:y + size, x:x + size].sum() for x in range(31 - size + 1)]
                      for y in range(23 - size + 1)])
    y, x = he_figures.roi_origin(mask, size)
    assert cover[y, x] == cover.max()
    with pytest.raises(ValueError, match="does not fit"):
        he_figures.roi_origin(mask, 24)


def test_figure_order_puts_one_peek_ti_mg_first():
    materials = {"a": "Mg", "b": "Mg", "c": "Ti", "d": "PEEK", "e": "PEEK"}
    assert he_figures.order_for_figure(materials) == ["d", "c", "a", "e", "b"]
    assert he_figures.order_for_figure(materials, 3) == ["d", "c", "a"]


def test_a_split_without_he_pairs_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("VSTAIN_RESULTS", str(tmp_path))
    split = tmp_path / "smoke" / "dataset" / "split.csv"
    split.parent.mkdir(parents=True)
    pd.DataFrame({"pair_id": ["tb_1", "tb_2"], "stain": ["toluidine_blue"] * 2, "material": ["Mg", "Ti"],
                  "fold0": ["train", "test"], "fold1": ["validation", "test"]}).to_csv(split, index=False)
    with pytest.raises(ValueError, match="no pair with stain 'he'"):
        he_stage.he_roles("smoke")


def test_unknown_model_and_stage_are_refused():
    with pytest.raises(ValueError, match="unknown model 'resnet'"):
        he_stage.run_he_study("smoke", ["resnet"])
    with pytest.raises(ValueError, match="unknown H&E stage"):
        he_stage.run_he_study("smoke", stage="everything")
