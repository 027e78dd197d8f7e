"""Registration-only blocks: the phantom's implant placements, their plan, their stage and chapter 01's sentences."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from vstain.config import ProfileError, load_profile, resolve_profile_path
from vstain.phantom import LABELS, make_sample
from vstain.phantom.dataset import dataset_plan, registration_case_plan
from vstain.phantom.geometry import draw_geometry, label_volume
from vstain.reports.registration import block_sentence, case_summary, registration_cases, target_sentence

IMPLANT_LABELS = [LABELS[name] for name in ("screw", "new_bone", "degradation_layer")]


def _geometry(implant: str, shape=(24, 96, 96), seed: int = 3, material: str = "Mg"):
    return draw_geometry(shape, material, np.random.default_rng(seed), implant=implant)


def test_a_centre_block_is_drawn_as_before_placements_existed():
    # the default draws the same block, voxel for voxel: the dataset's pairs do not change
    default = label_volume(draw_geometry((24, 96, 96), "Mg", np.random.default_rng(3)))
    assert np.array_equal(default, label_volume(_geometry("centre")))


def test_a_screwless_block_is_round_trabecular_bone_with_no_implant_and_no_cortex():
    centre, none = _geometry("centre"), _geometry("none")
    labels = label_volume(none)
    assert not np.isin(labels, IMPLANT_LABELS).any()
    assert np.isin(label_volume(centre), IMPLANT_LABELS).any()
    assert none.block_wobble[0] == 0.0  # a round outline: no lobe breaks its symmetry
    # the same bone as the centre block of the seed: only the implant and the cortex differ
    assert np.array_equal(none.fields["bone"], centre.fields["bone"])
    # no cortical slab: the bone fraction is the same on the head side as on the far side of the block
    dense = labels == LABELS["dense_bone"]
    inside = labels != LABELS["background"]
    head = slice(None, int(none.block_center[1] - 0.5 * none.block_radius))
    far = slice(int(none.block_center[1] + 0.5 * none.block_radius), None)
    fraction = [dense[..., side].sum() / inside[..., side].sum() for side in (head, far)]
    assert abs(fraction[0] - fraction[1]) < 0.25, fraction
    cortex = label_volume(centre) == LABELS["dense_bone"]
    assert cortex[..., head].sum() / inside[..., head].sum() > fraction[0]  # the centre block has one


def test_a_screw_at_the_edge_runs_along_the_outline_and_barely_enters_the_block():
    centre, edge = _geometry("centre"), _geometry("edge")
    counts = [(label_volume(g) == LABELS["screw"]).sum() for g in (centre, edge)]
    assert 0 < counts[1] < 0.7 * counts[0]
    offset = abs(edge.screw_axis[1] - edge.block_center[0])
    assert offset > 0.8 * edge.block_radius
    assert abs(centre.screw_axis[1] - centre.block_center[0]) < 0.1 * centre.block_radius


def test_an_unknown_placement_is_refused_naming_the_choices():
    with pytest.raises(ValueError, match="implant must be one of .*'middle'"):
        _geometry("middle")


@pytest.mark.parametrize("stain", ["toluidine_blue", "he"])
def test_a_sample_records_its_placement_and_an_he_field_centres_on_a_screwless_block(stain):
    cfg = load_profile("smoke").dataset
    sample = make_sample(cfg, "b", "Ti", stain, 0, 0, seed=11, implant="none")
    assert sample.details["implant"] == "none"
    assert not np.isin(sample.labels_volume, IMPLANT_LABELS).any()
    assert sample.fov_mask.mean() > 0.2  # the stitched field lies on the block, not off the slide
    assert make_sample(cfg, "b", "Ti", stain, 0, 0, seed=11).details["implant"] == "centre"


def test_the_case_plan_is_its_own_and_deterministic():
    profile = load_profile("quick")
    plan = registration_case_plan(profile.registration_cases, profile.dataset, profile.seed)
    assert [p["pair_id"] for p in plan] == [f"screwless_{k:02d}" for k in range(1, 5)] + [
        f"edge_{k:02d}" for k in range(1, 5)]
    assert {p["implant"] for p in plan[:4]} == {"none"} and {p["implant"] for p in plan[4:]} == {"edge"}
    assert not any(p["test"] for p in plan) and {p["stain"] for p in plan} == {"toluidine_blue"}
    assert plan == registration_case_plan(profile.registration_cases, profile.dataset, profile.seed)
    # drawn apart from the dataset: no seed of a dataset pair is reused
    assert not {p["seed"] for p in plan} & {p["seed"] for p in dataset_plan(profile.dataset, profile.seed)}
    none = dataclasses.replace(profile.registration_cases, screwless=0, screw_at_edge=0)
    assert registration_case_plan(none, profile.dataset, profile.seed) == []


def test_a_negative_case_count_is_refused_naming_the_file_and_key(tmp_path):
    text = resolve_profile_path("smoke").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("screwless: 1", "screwless: -2"))
    with pytest.raises(ProfileError, match=r"bad.yaml: registration_cases.screwless must be a count .* got -2"):
        load_profile(bad)
    missing = tmp_path / "missing.yaml"
    missing.write_text(text.split("registration_cases:")[0])
    with pytest.raises(ProfileError, match="missing.yaml.*registration_cases"):
        load_profile(missing)


def _table(**columns):
    n = len(next(iter(columns.values())))
    base = {"rotated": [False] * n, "mirrored": [False] * n, "tilted": [False] * n, "other axis": [False] * n,
            "screwless": [False] * n, "screw at edge": [False] * n, "angle_error_deg": [0.2] * n, "seconds": [1.0] * n}
    return pd.DataFrame({**base, **columns})


def test_the_block_sentence_counts_registered_flagged_and_silent_failures():
    table = _table(screwless=[True, True, False, False], **{"screw at edge": [False, False, True, True]},
                   status=["ok", "ok", "ok", "uncertain: margin"], tre_median_px=[0.4, 30.0, 2.0, 25.0],
                   tre_max_px=[0.9, 60.0, 3.0, 50.0])
    sentence = block_sentence(table)
    assert "Of 2 screwless blocks" in sentence and "2 (100 %) were registered" in sentence
    assert "1 registered wrongly without a flag" in sentence  # the 30 px one is a silent failure, said so
    assert "Of 2 blocks with the screw at the section's edge, 1 (50 %) were registered" in sentence
    assert "median TRE 2.00 px (not under the 1 px target)" in sentence
    assert "1 flagged (1 of them indeed wrong" in sentence
    assert block_sentence(table.iloc[:0]).startswith("No registration-only blocks")


def test_the_target_sentence_follows_the_figures():
    row = {"median angle error (deg)": 0.2, "median TRE (px)": 0.6, "95th percentile TRE (px)": 1.5,
           "wrong, not flagged": 0}
    met = target_sentence(row, warp_px=1.6)
    assert met.startswith("The registered pairs meet the targets for") and "miss" not in met
    assert "warp" not in met  # nothing missed, nothing to explain
    missed = target_sentence({**row, "median TRE (px)": 2.0, "wrong, not flagged": 2}, warp_px=1.6)
    assert "miss those for median TRE (2.00 px, target under 1)" in missed
    assert "(2, at most 0)" in missed and "1.6 CT px RMS" in missed


def test_case_types_come_from_the_blocks_truth_and_old_tables_still_summarise(tmp_path):
    for pair_id, implant in (("a", "none"), ("b", "edge"), ("c", None)):
        details = {"affine": {"rotation_deg": 0.0}, "tilt_deg": 0.0}
        if implant:
            details["implant"] = implant
        (tmp_path / pair_id).mkdir()
        (tmp_path / pair_id / "truth.json").write_text(json.dumps({"details": details}))
    table = pd.DataFrame({"pair_id": list("abc"), "status": ["ok"] * 3, "angle_error_deg": [0.1] * 3,
                          "tre_median_px": [0.3] * 3, "tre_max_px": [0.6] * 3, "seconds": [1.0] * 3})
    cases = registration_cases(table, tmp_path)
    assert cases["screwless"].tolist() == [True, False, False]
    assert cases["screw at edge"].tolist() == [False, True, False]
    summary = case_summary(cases).set_index("case")
    assert summary.loc["screwless", "pairs"] == 1 and summary.loc["screw at edge", "pairs"] == 1
    # a table written before the placements existed has no such column: its summary has no such row
    old = case_summary(cases.drop(columns=["screwless", "screw at edge"]))
    assert "screwless" not in set(old["case"])


def test_the_stage_draws_registers_and_keeps_its_blocks(tmp_path, monkeypatch):
    from vstain.reports.registration import read_blocks
    from vstain.stages import register_cases

    monkeypatch.setenv("VSTAIN_RESULTS", str(tmp_path))
    profile = load_profile("smoke")
    with pytest.raises(FileNotFoundError, match="vstain register-cases --profile smoke"):
        read_blocks("smoke")  # the chapter's reader names the command that writes the table
    table = register_cases.ensure_registration_cases(profile, progress=False, workers=1)
    blocks = read_blocks("smoke")
    assert blocks["screwless"].tolist() == [True, False] and blocks["screw at edge"].tolist() == [False, True]
    assert table["pair_id"].tolist() == ["screwless_01", "edge_01"]
    assert set(table["status"].str.split(":").str[0]) <= {"ok", "uncertain", "failed"}
    out = tmp_path / "smoke" / "registration_cases"
    pd.testing.assert_frame_equal(pd.read_csv(out / "registration.csv")[["pair_id"]], table[["pair_id"]])
    truth = json.loads((out / "blocks" / "screwless_01" / "truth.json").read_text())
    assert truth["details"]["implant"] == "none"
    registered = table[table["status"] == "ok"]
    assert (registered["tre_max_px"] < 5).all(), registered  # a registered block is right (else: a silent failure)
    # the dataset's own folders are untouched: the blocks live apart and are never trained on
    assert not (tmp_path / "smoke" / "registered").exists()
    # a second call finds every block current: nothing is drawn or registered again
    from vstain.stages import dataset, register

    def must_not_run(*args, **kwargs):
        raise AssertionError("a current block was drawn or registered again")

    monkeypatch.setattr(register, "register_pair_into", must_not_run)
    monkeypatch.setattr(dataset, "make_sample", must_not_run)
    again = register_cases.ensure_registration_cases(profile, progress=False)
    pd.testing.assert_frame_equal(again, table)


def test_the_command_reports_the_blocks(tmp_path, monkeypatch, capsys):
    from vstain.cli import main

    monkeypatch.setenv("VSTAIN_RESULTS", str(tmp_path))
    assert main(["register-cases", "--profile", "smoke", "--no-progress"]) == 0
    assert "of 2 blocks registered" in capsys.readouterr().out
    with pytest.raises(SystemExit) as err:
        main(["register-cases", "--profile", "smoke", "--workers", "0"])
    assert err.value.code == 2
