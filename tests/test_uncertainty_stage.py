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
from vstain.io import read_tiff, write_json
from vstain.layout import model_dir, stage_dir
from vstain.stages import uncertainty as stage
from vstain.uncertainty import SOURCES


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
    assert (tmp_path / "stained_uncertainty.zarr" / "0").is_dir()


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


@pytest.mark.parametrize("argv, message", [
    (["--uncertainty", "--axes", "zyx"], "slice-wise along Z only"),
    (["--ensemble", "EXTRA"], "--ensemble is for --uncertainty"),
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


def test_uncertainty_stage_on_smoke(smoke_dataset, tmp_path, monkeypatch):
    """The stage on the smoke phantom, with untrained generators in place of training."""
    monkeypatch.setenv("VSTAIN_RESULTS", str(tmp_path / "results"))
    profile = load_profile("smoke")
    shutil.copytree(smoke_dataset.parent, stage_dir(profile.name, "dataset"))
    selected, trained = [], []

    def untrained(profile, model, fold, *, progress):
        selected.append(fold)
        folder = model_dir(profile.name, model, fold)
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / "training.json", {"epochs_done": profile.training.epochs, "seconds": 2.0})
        return make_checkpoint(folder / "last.pt")

    def short_run(profile, model, fold, *, epochs, pairs, out_dir, progress):
        trained.append((fold, epochs))
        out_dir.mkdir(parents=True, exist_ok=True)
        torch_seed_ckpt = make_checkpoint(out_dir / "last.pt", ngf=4)
        write_json(out_dir / "training.json", {"epochs_done": epochs, "seconds": 1.0})
        return torch_seed_ckpt.parent

    monkeypatch.setattr(stage, "ensure_selected", untrained)
    monkeypatch.setattr(stage, "train_fold", short_run)
    monkeypatch.setattr(stage, "fold_pairs", lambda *a, **k: [])
    done = stage.measure_uncertainty(profile, progress=False)
    assert selected == [0] and trained == [(1, profile.uncertainty.member_epochs)]
    results = stage.read_results(profile)
    slides = results["slides"]
    assert set(slides["source"]) == {"single", *SOURCES}
    assert set(slides["role"]) == {"validation", "test"}
    scored = slides[slides["source"] != "single"]
    # AUROC needs pixels on both sides of the threshold (an untrained net errs everywhere on some slides)
    both = scored["above_threshold"].between(0, 1, inclusive="neither")
    assert scored.loc[both, "auroc"].between(0, 1).all() and scored.loc[~both, "auroc"].isna().all()
    # the two untrained members are the same network: no ensemble spread, while flips and tiles disagree
    ensemble = scored["source"] == "ensemble"
    assert (scored.loc[ensemble, "mean_uncertainty"] == 0).all()
    assert (scored.loc[~ensemble, "mean_uncertainty"] > 0).all()
    assert scored.loc[~ensemble, "spearman"].between(-1, 1).all()
    # fold 0's validation pairs train fold 1's member; test pairs train none
    assert (slides.loc[slides["role"] == "test", "members_trained_on_it"] == 0).all()
    assert (slides.loc[slides["role"] == "validation", "members_trained_on_it"] == 1).all()
    members = results["members"]
    assert members["own_run"].tolist() == [True, False] and members["epochs"].tolist() == [2, 1]
    assert {"degradation_layer", "dense_bone"} <= set(results["tissue"]["tissue"])
    assert set(results["reliability"]["role"]) == {"validation", "test"}
    pair_id = slides["pair_id"].iloc[0]
    stain, spacing, _ = read_tiff(stage.uncertainty_dir(profile.name) / pair_id / "combined.tif")
    spread, spread_spacing, _ = read_tiff(stage.uncertainty_dir(profile.name) / pair_id / "combined_uncertainty.tif")
    assert stain.shape == spread.shape + (3,) and spacing == spread_spacing
    volume = results["volume"].iloc[0]
    assert volume["slices"] == profile.dataset.ct_shape[0] and 0 <= volume["auroc"] <= 1
    costs = stage.source_costs(slides, results["timing"], members)
    assert costs.loc["ensemble", "training_seconds"] == 1.0 and costs.loc["tta", "training_seconds"] == 0.0
    gain = stage.ensemble_gain(slides)
    assert gain.loc[("test", "single"), "ssim_gain"] == 0.0
    assert not stage.tissue_summary(results["tissue"], "combined").empty
    before = os.stat(done).st_mtime_ns
    assert stage.measure_uncertainty(profile, progress=False) == done  # idempotent
    assert os.stat(done).st_mtime_ns == before and len(trained) == 1
    assert json.loads(done.read_text())["settings"]["tables_version"] == stage.TABLES_VERSION
    assert isinstance(pd.read_csv(done.parent / "slides.csv"), pd.DataFrame)
