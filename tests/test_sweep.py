"""The misalignment sweep: its plan, its profile section, its statements and its stage (smoke)."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pandas as pd
import pytest

from vstain.config import ProfileError, check_ranges, load_profile
from vstain.reports import sweep as report
from vstain.sweep import (SweepRun, ablation_arm, arm_label, arm_model, arm_training, arms_at, level_name,
                          parse_level, sample_plan, sweep_runs, sweep_seed)


# --------------------------------------------------------------------------- the plan


def test_runs_cross_levels_arms_and_seeds_with_ablations_at_one_level():
    cfg = load_profile("quick").sweep
    runs = sweep_runs(cfg)
    assert len(runs) == len(cfg.levels) * len(cfg.models) * cfg.seeds + len(cfg.ablations) * cfg.seeds
    assert len(set(runs)) == len(runs)
    ablated = {run.arm for run in runs if run.arm not in cfg.models}
    assert ablated == {"mod_cyclegan_no_px", "mod_cyclegan_no_gs"}
    assert {run.level for run in runs if run.arm in ablated} == {cfg.ablation_level}
    assert {run.model for run in runs if run.arm in ablated} == {"mod_cyclegan"}
    # every level trains the same seeds
    seeds = {level: sorted({r.seed for r in runs if r.level == level}) for level in cfg.levels}
    assert all(s == list(range(cfg.seeds)) for s in seeds.values())


def test_arm_training_zeroes_only_the_ablated_weights():
    training = load_profile("quick").training
    for arm, zeroed in (("mod_cyclegan", set()), ("pix2pix", set()), ("mod_cyclegan_no_px", {"lambda_px"}),
                        ("mod_cyclegan_no_gs", {"lambda_gs"}),
                        ("mod_cyclegan_no_px_no_gs", {"lambda_px", "lambda_gs"})):
        changed = arm_training(training, arm, 7)
        before, after = dataclasses.asdict(training), dataclasses.asdict(changed)
        differs = {k for k in before if before[k] != after[k]}
        assert differs == zeroed | {"patches_per_pair"}, arm
        assert all(after[k] == 0.0 for k in zeroed)
        assert after["patches_per_pair"] == 7
    with pytest.raises(ValueError, match="unknown sweep arm 'cyclegan_no_px'"):
        arm_training(training, "cyclegan_no_px", 7)


def test_arm_names_and_labels():
    assert ablation_arm("no_gs") == "mod_cyclegan_no_gs"
    assert arm_model("mod_cyclegan_no_px_no_gs") == "mod_cyclegan"
    assert arm_label("mod_cyclegan") == "Mod. CycleGAN"
    assert arm_label("mod_cyclegan_no_px") == "Mod. CycleGAN without L_px"
    with pytest.raises(ValueError, match="unknown ablation"):
        ablation_arm("no_cyc")


def test_levels_are_named_and_parsed_against_the_profile():
    assert [level_name(v) for v in (0.0, 0.5, 2.0, 10.0)] == ["0", "0.5", "2", "10"]
    assert parse_level("2", [0.0, 2.0]) == 2.0 and parse_level(0.5, [0.5]) == 0.5
    with pytest.raises(ValueError, match="strength abc is not swept"):
        parse_level("abc", [0.0])


def test_seeds_differ_by_index_and_not_by_level():
    assert sweep_seed(2025, 0) == 2025
    assert len({sweep_seed(2025, k) for k in range(10)}) == 10
    with pytest.raises(ValueError):
        sweep_seed(2025, -1)


def test_sample_plan_spreads_materials_and_is_reproducible():
    plan = sample_plan({"Mg": 10, "Ti": 2, "PEEK": 3}, 8, 6, 2025)
    assert plan == sample_plan({"Mg": 10, "Ti": 2, "PEEK": 3}, 8, 6, 2025)
    assert len({p["pair_id"] for p in plan}) == 14 and len({p["seed"] for p in plan}) == 14
    for role in ("train", "test"):
        materials = {p["material"] for p in plan if p["role"] == role}
        assert materials == {"Mg", "Ti", "PEEK"}, role
    assert sample_plan({"Mg": 1}, 1, 1, 1)[0]["seed"] != sample_plan({"Mg": 1}, 1, 1, 2)[0]["seed"]
    with pytest.raises(ValueError, match="at least one toluidine-blue material"):
        sample_plan({}, 1, 1, 0)


@pytest.mark.parametrize("change, key", [
    ({"levels": [0.0, 0.0]}, "sweep.levels"),
    ({"levels": [-1.0]}, "sweep.levels"),
    ({"levels": []}, "sweep.levels"),
    ({"models": ["pix2pix", "unet"]}, "sweep.models"),
    ({"seeds": 0}, "sweep.seeds"),
    ({"ablation_level": 5.0}, "sweep.ablation_level"),
    ({"ablations": ["no_cyc"]}, "sweep.ablations"),
    ({"models": ["pix2pix"]}, "sweep.ablations"),  # an ablation needs the full model beside it
    ({"n_test": 0}, "sweep.n_test"),
    ({"ct_shape": [48, 192]}, "sweep.ct_shape"),
    ({"epochs": 0}, "sweep.epochs"),
])
def test_profile_sweep_section_is_range_checked(change, key):
    quick = load_profile("quick")
    bad = dataclasses.replace(quick, sweep=dataclasses.replace(quick.sweep, **change))
    with pytest.raises(ProfileError, match=rf"^my\.yaml: {key} must be"):
        check_ranges(bad, "my.yaml")


# --------------------------------------------------------------------------- the statements, on hand-built tables


def _table(effect, strengths=(0.0, 1.0, 2.0, 3.0), n_slides=6, n_seeds=3, noise=0.002, arms=("mod_cyclegan",
                                                                                            "pix2pix")):
    """A per-patch table: ``effect(strength, arm)`` added to a slide-specific base, a little noise, 2 patches."""
    rng = np.random.default_rng(0)
    rows = []
    for strength in strengths:
        for arm in arms:
            for seed in range(n_seeds):
                for k in range(n_slides):
                    for target in ("section", "twin"):
                        for _ in range(2):
                            rows.append({"strength": strength, "model": arm, "seed": seed, "fold": 0,
                                         "pair_id": f"s{k}", "role": target, "material": "Mg",
                                         "ssim": 0.4 + 0.02 * k + effect(strength, arm, target)
                                         + noise * rng.standard_normal(),
                                         "psnr": 15.0 + 0.1 * k + rng.standard_normal() * noise, "lpips": np.nan})
    return pd.DataFrame(rows)


def test_claim_sentence_finds_where_the_model_overtakes():
    # Pix2Pix loses 0.05 per unit of strength against the section; the modified CycleGAN does not
    per_patch = _table(lambda s, arm, t: -0.05 * s if (arm == "pix2pix" and t == "section") else 0.0)
    claims = report.sweep_comparisons(per_patch, "mod_cyclegan", "pix2pix", n_boot=500)
    sentence = report.claim_sentence(claims, "section", "ssim")
    assert "Mod. CycleGAN overtakes Pix2Pix from misalignment strength 1 on" in sentence
    assert re.search(r"strength 0: Mod\. CycleGAN - Pix2Pix [+-]0\.00\d, ", sentence)
    twin = report.claim_sentence(claims, "twin", "ssim")
    assert "not distinguishable on these data at any misalignment strength" in twin
    gap = report.interaction(per_patch, "mod_cyclegan", "pix2pix", n_boot=500)
    assert "Mod. CycleGAN gains on Pix2Pix from strength 0 to 3" in report.interaction_sentence(gap, "section", "ssim")
    assert "does not measurably change" in report.interaction_sentence(gap, "twin", "ssim")
    effects = report.strength_effect(per_patch, ["mod_cyclegan", "pix2pix"], n_boot=500)
    verdict = effects.set_index(["model", "role", "metric"])["verdict"]
    assert verdict[("pix2pix", "section", "ssim")] == "worse"
    assert verdict[("mod_cyclegan", "section", "ssim")] == ""
    row = effects.set_index(["model", "role", "metric"]).loc[("pix2pix", "section", "ssim")]
    assert row["difference"] == pytest.approx(-0.15, abs=0.005)


def test_claim_sentence_names_each_winner_when_the_order_changes():
    per_patch = _table(lambda s, arm, t: (0.03 if s == 0 else -0.03 if s == 3 else 0.0) * (arm == "pix2pix"))
    claims = report.sweep_comparisons(per_patch, "mod_cyclegan", "pix2pix", n_boot=500)
    sentence = report.claim_sentence(claims, "section", "ssim")
    assert sentence.startswith("Against the prepared section, by SSIM, Mod. CycleGAN beats Pix2Pix at strength 3; "
                               "Pix2Pix beats Mod. CycleGAN at strength 0; at 1 and 2 they are not distinguishable")


def test_few_slides_never_separate_two_models():
    # a large difference on 3 slides: the interval excludes zero, but the paired test cannot reach p < 0.05
    per_patch = _table(lambda s, arm, t: 0.1 * (arm == "mod_cyclegan"), strengths=(0.0,), n_slides=3)
    claims = report.sweep_comparisons(per_patch, "mod_cyclegan", "pix2pix", n_boot=500)
    row = claims[(claims.role == "section") & (claims.metric == "ssim")].iloc[0]
    assert row["low"] > 0 and row["p_value"] == pytest.approx(0.25)
    assert "not distinguishable" in report.claim_sentence(claims, "section", "ssim")


def test_ablation_sentence_names_the_term_that_carries_the_score():
    arms = ("mod_cyclegan", "mod_cyclegan_no_px", "mod_cyclegan_no_gs")
    per_patch = _table(lambda s, arm, t: -0.08 * (arm == "mod_cyclegan_no_px"), strengths=(2.0,), arms=arms)
    comparisons = pd.concat([report.sweep_comparisons(per_patch, "mod_cyclegan", a, n_boot=500) for a in arms[1:]])
    sentence = report.ablation_sentence(comparisons, "section", "ssim", ["no_px", "no_gs"])
    assert sentence.startswith("Against the prepared section, by SSIM, at strength 2, L_px carries")
    assert "taking out L_px makes it worse" in sentence
    assert "with and without L_gs it is not distinguishable" in sentence


# --------------------------------------------------------------------------- the stage, end to end on smoke


@pytest.fixture(scope="module")
def smoke_sweep(tmp_path_factory):
    import os

    from vstain.stages import sweep as stage

    root = tmp_path_factory.mktemp("results")
    old = os.environ.get("VSTAIN_RESULTS")
    os.environ["VSTAIN_RESULTS"] = str(root)
    try:
        done = stage.run_sweep("smoke", progress=False)
        yield stage, done
    finally:
        if old is None:
            os.environ.pop("VSTAIN_RESULTS", None)
        else:
            os.environ["VSTAIN_RESULTS"] = old


def test_stage_scores_every_run_on_every_test_slide_against_both_targets(smoke_sweep):
    stage, done = smoke_sweep
    cfg = load_profile("smoke").sweep
    results = report.read_sweep("smoke")
    per_patch, runs = results["per_patch"], results["runs"]
    cells = per_patch.groupby(["strength", "model", "seed", "role"])["pair_id"].nunique()
    expected = {(r.level, r.arm, r.seed, t) for r in sweep_runs(cfg) for t in ("section", "twin")}
    assert set(cells.index) == expected
    assert (cells == cfg.n_test).all()
    assert len(runs) == len(sweep_runs(cfg)) and (runs["steps"] > 0).all()
    assert json.loads(done.read_text())["runs"] == len(sweep_runs(cfg))


def test_stronger_misalignment_moves_the_section_away_from_its_twin(smoke_sweep):
    examples = report.sweep_examples("smoke", arms=["mod_cyclegan", "pix2pix"])
    assert sorted(examples) == [0.0, 2.0]
    apart = {}
    for strength, example in examples.items():
        mask = example["mask"]
        difference = np.abs(example["section"].astype(float) - example["twin"].astype(float)).mean(axis=-1)
        apart[strength] = float(difference[mask].mean())
        assert set(example["stains"]) == {"mod_cyclegan", "pix2pix"}
        assert example["stains"]["pix2pix"].shape == example["section"].shape
    assert apart[2.0] > apart[0.0]


def test_stage_keeps_current_runs_and_names_what_is_missing(smoke_sweep):
    stage, done = smoke_sweep
    run = SweepRun(2.0, "pix2pix", 1)
    scores = stage.run_dir("smoke", run) / "scores.csv"
    stamp = scores.stat().st_mtime_ns
    assert stage.train_and_score("smoke", run, progress=False) == scores
    assert scores.stat().st_mtime_ns == stamp  # current: not trained again
    with pytest.raises(ValueError, match="arm 'mod_cyclegan_no_px' is not trained at strength 0"):
        stage.train_and_score("smoke", SweepRun(0.0, "mod_cyclegan_no_px", 0), progress=False)
    with pytest.raises(ValueError, match="seed index 5 is outside"):
        stage.train_and_score("smoke", SweepRun(0.0, "pix2pix", 5), progress=False)
    moved = scores.with_suffix(".moved")
    scores.rename(moved)
    try:
        with pytest.raises(FileNotFoundError, match=r"1 of the sweep's 10 runs are missing; run `vstain sweep"):
            stage.summarise("smoke")
    finally:
        moved.rename(scores)


def test_cli_names_the_missing_option():
    from vstain.cli import main

    assert main(["sweep", "--profile", "smoke", "--stage", "run", "--level", "0"]) == 2
