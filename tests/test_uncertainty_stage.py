"""The uncertainty stage on the smoke phantom and `vstain stain --uncertainty`."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest
from test_stain_cli import ct_stack, make_checkpoint, one_thread, run  # noqa: F401  (fixtures; one_thread is autouse)

from vstain.config import load_profile
from vstain.data import network_to_histology
from vstain.infer import ct_network_channels_last, infer_slide
from vstain.io import read_tiff, write_json
from vstain.layout import model_dir, stage_dir
from vstain.models.checkpoint import load_generator
from vstain.phantom import LABELS, load_sample
from vstain.stages import uncertainty as stage
from vstain.stages import upstream
from vstain.uncertainty import SOURCES, flag_auroc, network_lab, rank_correlation, stain_error


def test_stain_uncertainty_writes_a_map_beside_the_stain(tmp_path, ct_stack, capsys):  # noqa: F811
    first, second = make_checkpoint(tmp_path / "a.pt"), make_checkpoint(tmp_path / "b.pt", seed=1)
    out = tmp_path / "stained.tif"
    code, err = run(["--checkpoint", first, "--ensemble", second, "--input", ct_stack, "--output", out,
                     "--uncertainty", "--uncertainty-source", "combined", "--step", "8"], capsys)
    assert code == 0, err
    stained, spacing, meta = read_tiff(out)
    spread, spread_spacing, spread_meta = read_tiff(tmp_path / "stained_uncertainty.tif")
    assert stained.shape == spread.shape + (3,) and spread.dtype == np.float32
    assert spacing == spread_spacing == (4.0, 2.0, 2.0)
    assert spread_meta["uncertainty_source"] == "combined" and len(spread_meta["members"]) == 2
    assert float(spread.max()) > 0  # an untrained net is not flip-equivariant
    zarr_out = tmp_path / "stained.zarr"
    code, err = run(["--checkpoint", first, "--input", ct_stack, "--output", zarr_out, "--uncertainty",
                     "--uncertainty-source", "tta", "--step", "8"], capsys)
    assert code == 0, err
    from vstain.volume_io import validate_ome_zarr
    validate_ome_zarr(zarr_out)
    assert validate_ome_zarr(zarr_out / "uncertainty").ome_zarr_version == "0.4"  # the map inside the stain's store
    assert not (tmp_path / "stained_uncertainty.zarr").exists()


def test_stain_uncertainty_reads_each_checkpoint_once_and_builds_one_stainer(tmp_path, ct_stack, capsys,  # noqa: F811
                                                                            monkeypatch):
    from vstain.stages import stain as stain_stage

    loaded, plain = [], []
    original_load, original_stainer = stain_stage.load_generator, stain_stage.make_slice_stainer
    monkeypatch.setattr(stain_stage, "load_generator",
                        lambda path, **kwargs: loaded.append(path) or original_load(path, **kwargs))
    monkeypatch.setattr(stain_stage, "make_slice_stainer",
                        lambda *args, **kwargs: plain.append(1) or original_stainer(*args, **kwargs))
    first, second = make_checkpoint(tmp_path / "a.pt"), make_checkpoint(tmp_path / "b.pt", seed=1)
    code, err = run(["--checkpoint", first, "--ensemble", second, "--input", ct_stack, "--output",
                     tmp_path / "o.tif", "--uncertainty", "--step", "8"], capsys)
    assert code == 0, err
    assert sorted(loaded) == [first, second] and plain == []  # no plain stainer beside the uncertainty one
    loaded.clear()
    code, err = run(["--checkpoint", first, "--input", ct_stack, "--output", tmp_path / "p.tif", "--step", "8"],
                    capsys)
    assert code == 0, err
    assert loaded == [first] and plain == [1]


def test_stain_with_and_without_uncertainty_is_bit_identical(tmp_path, ct_stack, capsys):  # noqa: F811
    """The map comes beside the same stain: the checkpoint's own, unless the mean is asked for by name."""
    first, second = make_checkpoint(tmp_path / "a.pt"), make_checkpoint(tmp_path / "b.pt", ngf=8)
    common = ["--checkpoint", first, "--input", ct_stack, "--step", "8", "--blend", "window"]
    code, err = run([*common, "--output", tmp_path / "plain.tif"], capsys)
    assert code == 0, err
    plain = read_tiff(tmp_path / "plain.tif")[0]
    runs = {"tta": [], "tiling": [], "combined": ["--ensemble", second]}
    for source, extra in runs.items():
        out = tmp_path / f"{source}.tif"
        code, err = run([*common, "--output", out, "--uncertainty", "--uncertainty-source", source, *extra], capsys)
        assert code == 0, err
        stained, _, meta = read_tiff(out)
        assert stained.dtype == plain.dtype and np.array_equal(stained, plain), source
        spread_meta = read_tiff(tmp_path / f"{source}_uncertainty.tif")[2]
        assert meta["stain"] == spread_meta["stain"] == "single" and "own stain" in meta["stain_note"]
    code, err = run([*common, "--output", tmp_path / "mean.tif", "--uncertainty", "--uncertainty-source", "combined",
                     "--ensemble", second, "--stain-from", "mean"], capsys)
    assert code == 0, err
    mean, _, meta = read_tiff(tmp_path / "mean.tif")
    assert meta["stain"] == "mean" and not np.array_equal(mean, plain)  # asked for by name: another stain
    # each map is measured around the stain it is written beside
    around_single = read_tiff(tmp_path / "combined_uncertainty.tif")[0]
    around_mean = read_tiff(tmp_path / "mean_uncertainty.tif")[0]
    assert not np.allclose(around_single, around_mean)


@pytest.mark.parametrize("argv, message", [
    (["--uncertainty", "--axes", "zyx"], "slice-wise along Z only"),
    (["--ensemble", "EXTRA"], "--ensemble is for --uncertainty"),
    (["--stain-from", "mean"], "--stain-from is for --uncertainty"),
    (["--uncertainty", "--uncertainty-source", "ensemble"], "needs other members"),
    (["--uncertainty", "--ensemble", "EXTRA"], "c.pt: --ensemble member with the same file as"),
    (["--uncertainty", "--uncertainty-source", "ensemble", "--ensemble", "COPY"], "with the same weights as"),
])
def test_bad_uncertainty_options_are_one_line_errors(tmp_path, ct_stack, capsys, argv, message):  # noqa: F811
    ckpt = make_checkpoint(tmp_path / "c.pt")
    copy = make_checkpoint(tmp_path / "copy.pt")  # another file, the same weights (the same seed)
    argv = [str(ckpt) if a == "EXTRA" else str(copy) if a == "COPY" else a for a in argv]
    code, err = run(["--checkpoint", ckpt, "--input", ct_stack, "--output", tmp_path / "o.tif", *argv], capsys)
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "o.tif").exists() and not (tmp_path / "o_uncertainty.tif").exists()


def test_an_existing_uncertainty_map_needs_overwrite(tmp_path, ct_stack, capsys):  # noqa: F811
    (tmp_path / "o_uncertainty.tif").write_bytes(b"")
    code, err = run(["--checkpoint", make_checkpoint(tmp_path / "c.pt"), "--input", ct_stack, "--output",
                     tmp_path / "o.tif", "--uncertainty"], capsys)
    assert code == 2 and "o_uncertainty.tif: output exists" in err


def member_stain(checkpoint, ct, inference):
    """One member's whole-slide stain (network range) of a CT slide, by plain inference (not through the stage)."""
    generator = load_generator(checkpoint, "ct_to_histology")[0]
    return infer_slide(generator, ct_network_channels_last(ct), patch_size=inference.patch_size,
                       step=inference.step, batch_size=inference.batch_size, blend=inference.blend)


def test_uncertainty_stage_on_smoke(smoke_dataset, tmp_path, monkeypatch):
    """The stage on the smoke phantom, with two different untrained generators in place of training."""
    monkeypatch.setenv("VSTAIN_RESULTS", str(tmp_path / "results"))
    profile = load_profile("smoke")
    shutil.copytree(smoke_dataset.parent, stage_dir(profile.name, "dataset"))
    selected, trained, checkpoints = [], [], []

    def untrained(profile, model, fold, *, progress):
        selected.append(fold)
        folder = model_dir(profile.name, model, fold)
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / "training.json", {"epochs_done": profile.training.epochs, "seconds": 2.0})
        checkpoints.append(make_checkpoint(folder / "last.pt"))
        return checkpoints[-1]

    def short_run(profile, model, fold, *, epochs, pairs, out_dir, progress):
        trained.append((fold, epochs))
        out_dir.mkdir(parents=True, exist_ok=True)
        checkpoints.append(make_checkpoint(out_dir / "last.pt", seed=1))  # another network than fold 0's
        write_json(out_dir / "training.json", {"epochs_done": epochs, "seconds": 1.0})
        return checkpoints[-1].parent

    monkeypatch.setattr(upstream, "selected_checkpoint", untrained)
    monkeypatch.setattr(stage, "train_fold", short_run)
    monkeypatch.setattr(upstream, "fold_pairs", lambda *a, **k: [])
    done = stage.measure_uncertainty(profile, progress=False)
    assert selected == [0] and trained == [(1, profile.uncertainty.member_epochs)]
    results = stage.read_results(profile)
    slides = results["slides"]
    # every map is scored against the single stain, the one `vstain stain` writes
    assert (slides["stain"] == "single").all()
    assert set(slides["map"]) == {*SOURCES, "tta_mean", "ensemble_mean", "combined_mean", "mix"}
    assert set(slides.loc[slides["map"].str.endswith("_mean"), "centre"]) == {"mean"}
    assert set(slides.loc[~slides["map"].str.endswith("_mean"), "centre"]) == {"single"}
    assert set(slides["role"]) == {"validation", "test"}
    # one error per slide (the single stain's), whichever map is scored against it
    assert (slides.groupby("pair_id")["mean_error"].nunique() == 1).all()
    # AUROC needs pixels on both sides of the threshold (an untrained net errs everywhere on some slides)
    both = slides["above_threshold"].between(0, 1, inclusive="neither")
    assert slides.loc[~both, "auroc"].isna().all()
    # two different networks, flips and tiles: every source disagrees somewhere
    assert (slides.loc[slides["map"].isin(["ensemble", "tta", "tiling", "combined"]), "mean_uncertainty"] > 0).all()
    runs = slides.drop_duplicates("map").set_index("map")["runs"]
    assert runs["tiling"] == 1 and runs["tta"] == 8 and runs["combined"] == 16 and runs["ensemble"] == 2
    # fold 0's validation pairs train fold 1's member; test pairs train none
    assert (slides.loc[slides["role"] == "test", "members_trained_on_it"] == 0).all()
    assert (slides.loc[slides["role"] == "validation", "members_trained_on_it"] == 1).all()
    mix = results["mix"]
    assert set(mix["component"]) == {"tiling", "tta", "ensemble"} and mix["weight"].sum() == pytest.approx(1.0)
    stains = results["stains"]
    assert set(stains["stain"]) == {"single", "tta_mean", "ensemble_mean", "combined_mean"}
    assert stains.loc[stains["stain"] == "single", "own_auroc"].isna().all()
    members = results["members"]
    assert members["own_run"].tolist() == [True, False] and members["epochs"].tolist() == [2, 1]
    assert {"degradation_layer", "dense_bone"} <= set(results["tissue"]["tissue"])
    assert set(results["reliability"]["role"]) == {"validation", "test"}
    folder = stage.uncertainty_dir(profile.name) / slides["pair_id"].iloc[0]
    single, spacing, _ = read_tiff(folder / "single.tif")
    truth = read_tiff(folder / "truth.tif")[0]
    error = stain_error(single, truth)
    mask = read_tiff(folder / "mask.tif")[0] > 0
    threshold = profile.uncertainty.error_threshold
    for name in ("combined", "tta", "ensemble", "mix"):
        spread, spread_spacing, meta = read_tiff(folder / f"{name}_uncertainty.tif")
        assert single.shape == spread.shape + (3,) and spacing == spread_spacing and meta["stain"] == "single"
        row = slides[(slides["pair_id"] == folder.name) & (slides["map"] == name)].iloc[0]
        assert row["spearman"] == pytest.approx(rank_correlation(spread, error, mask), nan_ok=True)
        assert row["auroc"] == pytest.approx(flag_auroc(spread, error, threshold, mask), nan_ok=True)
    # the ensemble map around the single stain, from the two members' own stains: each pixel's root-mean-square
    # Delta E of the two runs from the first member's (0 for itself), sqrt(|lab_1 - lab_0|^2 / 2)
    assert [c.name for c in checkpoints] == ["last.pt", "last.pt"] and checkpoints[0] != checkpoints[1]
    ct = read_tiff(folder / "ct.tif")[0]
    member_stains = [member_stain(c, ct, profile.inference) for c in checkpoints]
    labs = [network_lab(stain).astype(np.float64) for stain in member_stains]
    expected = np.sqrt(((labs[1] - labs[0]) ** 2).sum(axis=-1) / 2)
    ensemble_map = read_tiff(folder / "ensemble_uncertainty.tif")[0]
    np.testing.assert_allclose(ensemble_map, expected, rtol=1e-4, atol=1e-3)
    assert float(expected[mask].mean()) > 0.1  # two different networks stain differently
    row = slides[(slides["pair_id"] == folder.name) & (slides["map"] == "ensemble")].iloc[0]
    assert row["mean_uncertainty"] == pytest.approx(float(expected[mask].mean()), rel=1e-4)
    # the single stain is the first member's, bit for bit as plain inference gives it
    assert np.array_equal(single, network_to_histology(np.moveaxis(member_stains[0], -1, 0)))
    shown = stage.slide_artefacts(profile, folder.name, "tta")
    assert np.array_equal(shown["stain"], single) and np.array_equal(shown["error"], error)
    with pytest.raises(FileNotFoundError, match="no map 'nothing'"):
        stage.slide_artefacts(profile, folder.name, "nothing")
    views = stage.volume_artefacts(profile)
    assert views["stain"].shape == views["error"].shape + (3,) == views["uncertainty"].shape + (3,)
    mean_stain, _, meta = read_tiff(folder / "combined_mean.tif")
    assert meta["stain"] == "combined_mean" and not np.array_equal(mean_stain, single)
    assert read_tiff(folder / "combined_mean_uncertainty.tif")[2]["stain"] == "combined_mean"
    volume = results["volume"].iloc[0]
    assert volume["slices"] == profile.dataset.ct_shape[0]
    labels = load_sample(stage_dir(profile.name, "dataset") / volume["pair_id"]).labels_volume
    inside = ~np.isin(labels, [LABELS["background"], LABELS["holder_wall"]])
    assert volume["auroc"] == pytest.approx(flag_auroc(views["uncertainty"], views["error"], threshold, inside),
                                            nan_ok=True)
    assert volume["mean_uncertainty"] == pytest.approx(float(views["uncertainty"][inside].mean()), rel=1e-6)
    assert volume["stain"] == "single" and volume["truth"] == "normalised"
    assert volume["mean_error"] != volume["mean_error_raw_colours"]
    costs = stage.source_costs(slides, results["timing"], members)
    assert costs.loc["ensemble", "training_seconds"] == 1.0 and costs.loc["tta", "training_seconds"] == 0.0
    assert costs.loc["tta", "runs_per_slide"] == 8
    gain = stage.stain_summary(stains)
    assert gain.loc[("test", "single"), "ssim_gain"] == 0.0
    table = stage.map_table(slides)
    assert set(table.index) == set(slides["map"]) and table.loc["tta_mean", "around"] == "mean"
    assert stage.chosen_map(slides) in set(slides["map"])
    verdict = stage.goal_verdict(slides)
    assert verdict["map"] == stage.chosen_map(slides) and isinstance(verdict["sentence"], str)
    assert not stage.tissue_summary(results["tissue"], "combined").empty
    before = {path: os.stat(path).st_mtime_ns for path in (done, done.parent / "slides.csv")}
    assert stage.measure_uncertainty(profile, progress=False) == done  # idempotent: nothing written again
    assert {path: os.stat(path).st_mtime_ns for path in before} == before and len(trained) == 1
    assert json.loads(done.read_text())["settings"]["tables_version"] == stage.TABLES_VERSION


def test_the_chosen_map_is_chosen_on_validation_and_reported_on_test():
    rows = []
    for role, tiling, tta in (("validation", 0.6, 0.8), ("test", 0.9, 0.7)):
        for name, auroc in (("tiling", tiling), ("tta", tta)):
            rows.append({"pair_id": role, "role": role, "map": name, "centre": "single",
                         "runs": 8 if name == "tta" else 1, "spearman": auroc - 0.3, "auroc": auroc, "mean_uncertainty": 1.0, "mean_error": 20.0})
    slides = pd.DataFrame(rows)
    assert stage.chosen_map(slides) == "tta"  # the best on validation, though tiling is better on test
    verdict = stage.goal_verdict(slides)
    assert verdict["auroc"] == pytest.approx(0.7) and verdict["best_test_map"] == "tiling" and not verdict["met"]
    assert "AUROC 0.70 < 0.85" in verdict["sentence"]
    assert stage.goal_verdict(slides, {"auroc": 0.6, "spearman": 0.3})["met"]


def test_the_true_volume_is_brought_into_the_sections_colours():
    from vstain.phantom import LABELS

    labels = np.full((2, 4, 5), LABELS["background"], np.uint8)
    labels[:, 1:3, 1:4] = LABELS["dense_bone"]
    rgb = np.empty(labels.shape + (3,), np.uint8)
    rgb[labels == LABELS["background"]] = (200, 220, 240)  # a bluish slide
    rgb[labels == LABELS["dense_bone"]] = (90, 60, 120)
    profile = load_profile("smoke")
    out = stage.normalised_true_volume(rgb, labels, profile)
    background = out[labels == LABELS["background"]]
    # white balance: the slide turns grey; stretch: it turns white (c_high above the 99th percentile)
    assert (background == background[0]).all() and np.ptp(background[0].astype(int)) <= 1 and background[0][0] > 240
    assert out.shape == rgb.shape and out.dtype == np.uint8
    with pytest.raises(ValueError, match="differ"):
        stage.normalised_true_volume(rgb[:1], labels, profile)
