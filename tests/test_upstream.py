"""The resolver between stages: what it reads, what it makes, and the command a missing input names."""

import json

import numpy as np
import pytest

from vstain.config import load_profile
from vstain.io import write_json
from vstain.layout import inference_dir, model_dir
from vstain.models import architecture
from vstain.normalise import normalise_ct_volume
from vstain.pairs import RegisteredPair, write_registered_pair
from vstain.stages import upstream
from vstain.stages.upstream import MissingInput
from vstain.volume import volume_sample

SMOKE = load_profile("smoke")


def _finished_run(root, model="pix2pix", fold=0, **changes):
    run = model_dir("smoke", model, fold, root=root)
    run.mkdir(parents=True)
    (run / "last.pt").write_bytes(b"weights")
    record = {"epochs_done": SMOKE.training.epochs, "architecture": architecture(model, SMOKE.training), **changes}
    write_json(run / "training.json", record)
    return run


def test_a_missing_model_names_the_command_that_trains_it(tmp_path, monkeypatch):
    monkeypatch.setenv("VSTAIN_RESULTS", str(tmp_path))
    with pytest.raises(MissingInput, match=r"pix2pix/fold1: .*run `vstain train --profile smoke --model pix2pix "
                                           r"--fold 1`"):
        upstream.selected_checkpoint(SMOKE, "pix2pix", 1)
    with pytest.raises(MissingInput, match=r"run `vstain he --profile smoke --model pix2pix --stage train`"):
        upstream.trained_run(SMOKE, "pix2pix", 0, "he")
    assert not model_dir("smoke", "pix2pix", 1).exists()  # nothing was trained


def test_is_trained_checks_epochs_and_architecture_of_hand_built_runs(tmp_path):
    run = _finished_run(tmp_path)
    assert upstream.is_trained(SMOKE, "pix2pix", 0, root=tmp_path)
    assert upstream.trained_run(SMOKE, "pix2pix", 0, root=tmp_path) == run
    write_json(run / "training.json", {"epochs_done": SMOKE.training.epochs - 1,
                                       "architecture": architecture("pix2pix", SMOKE.training)})
    assert not upstream.is_trained(SMOKE, "pix2pix", 0, root=tmp_path)  # unfinished
    write_json(run / "training.json", {"epochs_done": SMOKE.training.epochs, "architecture": {"ngf": 1}})
    assert not upstream.is_trained(SMOKE, "pix2pix", 0, root=tmp_path)  # another network
    (run / "training.json").write_text("{")
    assert not upstream.is_trained(SMOKE, "pix2pix", 0, root=tmp_path)  # corrupt record


def test_selection_by_the_last_rule_is_written_once_and_read_back(tmp_path, monkeypatch):
    profile = SMOKE
    if profile.training.checkpoint_selection != "last":
        import dataclasses

        profile = dataclasses.replace(SMOKE, training=dataclasses.replace(SMOKE.training, checkpoint_selection="last"))
    run = _finished_run(tmp_path)
    chosen = upstream.selected_checkpoint(profile, "pix2pix", 0, root=tmp_path)
    assert chosen == run / "last.pt"
    record = json.loads((run / "selection.json").read_text())
    assert record["chosen"] == "last" and record["validation_pairs"] == []
    monkeypatch.setattr(upstream, "select_checkpoint", lambda *a, **k: pytest.fail("chosen again"))
    assert upstream.selected_checkpoint(profile, "pix2pix", 0, root=tmp_path) == chosen
    (run / "last.pt").write_bytes(b"other weights")  # the run changed: chosen again
    with pytest.raises(pytest.fail.Exception, match="chosen again"):
        upstream.selected_checkpoint(profile, "pix2pix", 0, root=tmp_path)


def test_missing_inference_and_registration_name_their_commands(tmp_path, monkeypatch):
    monkeypatch.setenv("VSTAIN_RESULTS", str(tmp_path))
    with pytest.raises(MissingInput, match=r"done.json: .*run `vstain infer --profile smoke --model cyclegan "
                                           r"--fold 0`"):
        upstream.inference_run(SMOKE, "cyclegan", 0)
    with pytest.raises(MissingInput, match=r"run `vstain he --profile smoke --model cyclegan --stage infer`"):
        upstream.inference_run(SMOKE, "cyclegan", 0, "he")
    folder = inference_dir("smoke", "cyclegan", 0)
    folder.mkdir(parents=True)
    (folder / "done.json").write_text("{half")  # a half-written record is no complete run
    with pytest.raises(MissingInput):
        upstream.inference_run(SMOKE, "cyclegan", 0)
    write_json(folder / "done.json", {"pairs": []})
    assert upstream.inference_run(SMOKE, "cyclegan", 0) == folder
    # registration: a pair with neither a folder nor a failure record stops the caller
    pair = RegisteredPair("a", "Mg", "he", np.zeros((8, 8), np.uint16), np.zeros((8, 8, 3), np.uint8),
                          np.ones((8, 8), bool), 5.0, {"table_row": {"pair_id": "a", "stain": "he", "status": "ok"}})
    write_registered_pair(tmp_path / "smoke" / "registered" / "a", pair)
    table = upstream.registered_table(SMOKE, ["a"], stain="he")
    assert table["pair_id"].tolist() == ["a"] and list(table.columns) == upstream.TABLE_COLUMNS
    with pytest.raises(MissingInput, match=r"registered/b: not registered \(1 of 2 pairs\); run `vstain register "
                                           r"--profile smoke --stain he`"):
        upstream.registered_table(SMOKE, ["a", "b"], stain="he")


def test_the_volume_sample_is_chosen_by_one_rule():
    roles = {"tb_3": "test", "he_1": "test", "tb_2": "test", "tb_1": "validation"}
    stains = {"tb_3": "toluidine_blue", "he_1": "he", "tb_2": "toluidine_blue", "tb_1": "toluidine_blue"}
    # the first toluidine-blue test pair by id, whatever order the split lists them in
    assert volume_sample(roles, stains) == "tb_2"
    assert volume_sample(dict(reversed(list(roles.items()))), stains) == "tb_2"
    assert volume_sample({"he_1": "test", "tb_1": "train"}, stains) == "he_1"  # no TB test pair: any test pair
    assert volume_sample({"tb_2": "train", "tb_1": "validation"}, stains) == "tb_1"  # no test pair at all
    with pytest.raises(ValueError, match="no stain given"):
        volume_sample({"x": "test"}, {})


def test_normalise_ct_volume_fits_the_middle_slice_and_maps_every_slice():
    labels = np.zeros((3, 4, 4), int)
    labels[:, :2] = 1  # bone on top, background below
    ct = np.stack([np.where(labels[0] == 1, 5.0, 1.0) + z for z in range(3)])  # a drift along z
    volume, stats = normalise_ct_volume(ct, labels, 1, 0, bone_mean=300.0, background_mean=100.0)
    assert stats["bone_mean_before"] == 6.0 and stats["background_mean_before"] == 2.0  # slice 1
    assert volume.dtype == np.float32 and volume[1, 0, 0] == 300.0 and volume[1, 3, 0] == 100.0
    assert volume[0, 0, 0] == 250.0 and volume[2, 3, 0] == 150.0  # one map for the scan: the drift stays
    with pytest.raises(ValueError, match="pair x: ct_volume .* same shape"):
        normalise_ct_volume(ct, labels[:2], 1, 0, pair_id="x")
    with pytest.raises(ValueError, match="not above"):
        normalise_ct_volume(ct, 1 - labels, 1, 0)


def test_evaluation_reads_inference_through_the_resolver_only(tmp_path, monkeypatch):
    # the evaluation stage no longer runs inference: with nothing there it names the command, trains nothing
    from vstain.stages import evaluate as evaluate_stage

    monkeypatch.setenv("VSTAIN_RESULTS", str(tmp_path))
    with pytest.raises(MissingInput, match="vstain infer --profile smoke --model pix2pix --fold 0"):
        evaluate_stage.evaluate_fold(SMOKE, "pix2pix", 0, lpips_status=None, progress=False)
    assert not (tmp_path / "smoke" / "models").exists()


def test_a_command_whose_input_is_missing_says_which_command_makes_it(tmp_path, monkeypatch, capsys):
    from vstain import cli

    monkeypatch.setenv("VSTAIN_RESULTS", str(tmp_path))
    assert cli.main(["frc", "--profile", "smoke"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vstain frc: error: ") and "run `vstain infer --profile smoke --model" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "smoke" / "inference").exists()
