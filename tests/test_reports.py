"""Table 1 with its uncertainty and the sentences made from it (vstain.intervals, vstain.reports.table1).

Every table here is built by hand, so what the intervals, the paired test and the sentences must
say is known beforehand.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from vstain.intervals import (_weighted_medians, bootstrap_mean_difference, bootstrap_median,
                              sign_flip_test)
from vstain.reports import table1 as reports
from vstain.vocabulary import LOOKUP


def _per_patch(effects: dict[str, float], n_slides: int, *, folds=(0,), patches: int = 6, noise: float = 0.02,
               role: str = "test", seed: int = 0, shared_slides: bool = True) -> pd.DataFrame:
    """Patches of each model on each slide: SSIM = slide level + model effect + noise; PSNR and LPIPS follow."""
    rng = np.random.default_rng(seed)
    rows = []
    for fold in folds:
        for k in range(n_slides):
            slide = f"s{k}" if shared_slides else f"f{fold}s{k}"
            level = 0.4 + 0.05 * np.sin(k + 3 * fold)
            for model, effect in effects.items():
                for i in range(patches):
                    value = level + effect + noise * rng.normal()
                    rows.append({"model": model, "role": role, "pair_id": slide, "fold": fold, "y": i, "x": 0,
                                 "ssim": value, "psnr": 10 + 20 * value, "lpips": 0.6 - value})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- intervals (science)


@pytest.mark.parametrize("seed", range(5))
def test_weighted_median_is_the_median_of_the_repeated_values(seed):
    rng = np.random.default_rng(seed)
    values = rng.normal(size=rng.integers(1, 12))
    weights = rng.integers(0, 4, (30, len(values)))
    found = _weighted_medians(values, np.arange(len(values)), weights)
    for w, f in zip(weights, found):
        repeated = np.repeat(values, w)
        assert (np.isnan(f) and not len(repeated)) or f == pytest.approx(np.median(repeated))
    # values owned by slides: each slide's count repeats all its values
    owner = rng.integers(0, 3, len(values))
    counts = rng.integers(0, 3, (20, 3))
    for c, f in zip(counts, _weighted_medians(values, owner, counts)):
        repeated = np.repeat(values, c[owner])
        assert (np.isnan(f) and not len(repeated)) or f == pytest.approx(np.median(repeated))


def test_identical_slides_give_a_zero_width_interval_and_spread_slides_a_wide_one():
    same = {(0, f"s{k}"): np.array([0.5, 0.5, 0.5]) for k in range(6)}
    flat = bootstrap_median(same, n_boot=200)
    assert (flat.estimate, flat.low, flat.high) == (0.5, 0.5, 0.5) and flat.n_slides == 6
    spread = {(0, f"s{k}"): np.full(3, 0.2 + 0.1 * k) for k in range(6)}
    wide = bootstrap_median(spread, n_boot=500)
    assert wide.low < wide.estimate < wide.high and wide.high - wide.low > 0.15
    assert wide.low >= 0.2 and wide.high <= 0.7  # a median never leaves the range of the slides


def test_bootstrap_median_is_table1s_median_over_folds():
    per_patch = _per_patch({"a": 0.0}, 4, folds=(0, 1, 2), shared_slides=False)
    over = reports.table1_over_folds(reports.table1_by_fold(per_patch))
    interval = bootstrap_median(reports.slide_values(per_patch, "a", "test", "ssim"), n_boot=100)
    assert interval.estimate == pytest.approx(float(over["ssim"].iloc[0]))
    assert interval.n_slides == 12 and interval.n_replicates == 3


def test_same_seed_same_interval_and_the_level_widens_it():
    values = {(0, f"s{k}"): np.array([0.1 * k, 0.1 * k + 0.05]) for k in range(8)}
    assert bootstrap_median(values, seed=3) == bootstrap_median(values, seed=3)
    narrow, broad = bootstrap_median(values, level=0.5), bootstrap_median(values, level=0.99)
    assert broad.low <= narrow.low and broad.high >= narrow.high
    with pytest.raises(ValueError, match="level"):
        bootstrap_median(values, level=95)


def test_nothing_measured_gives_nan():
    interval = bootstrap_median({(0, "s"): np.array([np.nan, np.nan])})
    assert np.isnan(interval.estimate) and interval.n_slides == 0 and not interval.excludes_zero()
    assert np.isnan(bootstrap_mean_difference({}).estimate)


def test_mean_difference_crosses_slides_and_folds():
    # the same three test slides in two folds: 3 slides, 2 replicates, the mean over the six cells
    cells = {(fold, s): d + 0.01 * fold for fold in (0, 1) for s, d in zip("abc", (0.1, 0.2, 0.3))}
    interval = bootstrap_mean_difference(cells, n_boot=400)
    assert interval.estimate == pytest.approx(0.205)
    assert (interval.n_slides, interval.n_replicates) == (3, 2)
    assert 0.1 <= interval.low < interval.estimate < interval.high <= 0.31
    mixed = bootstrap_mean_difference({(0, s): d for s, d in zip("abcdef", (0.2, -0.2, 0.1, -0.1, 0.05, -0.05))})
    assert not mixed.excludes_zero()


def test_sign_flip_test_exact_values():
    assert sign_flip_test([0.1, 0.2, 0.3]) == 0.25                  # 2 of 8 patterns as extreme
    assert sign_flip_test([0.1] * 6) == pytest.approx(2 / 64)
    # sum 0.5: the patterns whose sum is at least 0.5 from zero are ++++, +-++, +++- and their mirrors
    assert sign_flip_test([0.3, -0.1, 0.2, 0.1]) == pytest.approx(6 / 16)
    assert sign_flip_test([0.0, 0.0]) == 1.0 and sign_flip_test([]) == 1.0
    many = sign_flip_test(np.full(30, 0.1) + np.linspace(-0.01, 0.01, 30))  # random patterns beyond 16 slides
    assert many < 1e-3


# --------------------------------------------------------------------------- comparisons


def test_a_clear_difference_on_enough_slides_is_stated():
    per_patch = _per_patch({"mod_cyclegan": 0.10, "pix2pix": 0.0}, 10)
    c = reports.paired_comparisons(per_patch, n_boot=500)
    ssim = c[c.metric == "ssim"].iloc[0]
    assert (ssim.model_a, ssim.model_b, ssim.verdict) == ("mod_cyclegan", "pix2pix", "mod_cyclegan")
    assert ssim.difference == pytest.approx(0.10, abs=0.02) and ssim.low > 0 and ssim.p_value < 0.01
    # LPIPS: lower is better, so the difference that favours mod_cyclegan is positive too
    lpips = c[c.metric == "lpips"].iloc[0]
    assert lpips.difference > 0 and lpips.verdict == "mod_cyclegan"
    sentence = reports.comparison_sentence(c, "pix2pix", "mod_cyclegan", "test", "ssim")
    assert sentence.startswith("On the test SSIM, Mod. CycleGAN beats Pix2Pix (higher is better; ")
    assert "10 slides" in sentence


def test_three_slides_never_separate_two_models():
    # the interval excludes zero (every slide favours a), but the paired test cannot go below 0.25
    per_patch = _per_patch({"a": 0.10, "b": 0.0}, 3, noise=0.0)
    c = reports.paired_comparisons(per_patch, n_boot=300)
    row = c[c.metric == "ssim"].iloc[0]
    assert row.low > 0 and row.p_value == 0.25 and row.verdict == ""
    assert reports.NOT_DISTINGUISHABLE in reports.comparison_sentence(c, "a", "b", "test", "ssim")


def test_no_difference_is_not_distinguishable():
    per_patch = _per_patch({"a": 0.0, "b": 0.0}, 12, noise=0.05, seed=4)
    c = reports.paired_comparisons(per_patch, n_boot=500)
    assert (c.verdict == "").all()
    assert reports.comparison_sentence(c, "a", "b", "test", "psnr").startswith(
        "On the test PSNR, a and b are not distinguishable on these data (")


def test_comparisons_pair_the_same_slides_and_folds():
    # a's slides are easy and b's hard when pooled, but b is better on every slide it shares with a
    rows = []
    for k in range(8):
        level = 0.1 * k
        rows += [{"model": "a", "role": "test", "pair_id": f"s{k}", "fold": 0, "ssim": level}]
        rows += [{"model": "b", "role": "test", "pair_id": f"s{k}", "fold": 0, "ssim": level + 0.01}]
    rows += [{"model": "a", "role": "test", "pair_id": "only_a", "fold": 0, "ssim": 0.95}]
    c = reports.paired_comparisons(pd.DataFrame(rows), n_boot=300)
    assert c.iloc[0].n_slides == 8 and c.iloc[0].verdict == "b"
    assert c.iloc[0].difference == pytest.approx(-0.01)


def test_ranking_sentence_states_only_what_the_intervals_support():
    per_patch = pd.concat([_per_patch({"mod_cyclegan": 0.2, "pix2pix": 0.2, LOOKUP: 0.0}, 10, seed=1)])
    table = reports.table1(per_patch)
    c = reports.paired_comparisons(per_patch, n_boot=500)
    sentence = reports.ranking_sentence(table, c, "test", "ssim")
    assert sentence.startswith("By median test SSIM: ")
    assert "Mod. CycleGAN beats CT colour lookup (no network)" in sentence
    assert "Pix2Pix beats CT colour lookup (no network)" in sentence
    assert "Pix2Pix beats Mod. CycleGAN" not in sentence and "Mod. CycleGAN beats Pix2Pix" not in sentence
    assert sentence.endswith("every other pair is not distinguishable on these data.")
    alone = reports.ranking_sentence(table, c, "test", "ssim", models=["mod_cyclegan", "pix2pix"])
    assert alone.endswith("No two of them are distinguishable on these data.")


def test_table1_intervals_cover_every_model_split_and_metric():
    per_patch = pd.concat([_per_patch({"a": 0.1, "b": 0.0}, 5),
                           _per_patch({"a": 0.1, "b": 0.0}, 5, role="validation", seed=2)])
    per_patch.loc[per_patch.model == "b", "lpips"] = np.nan  # a metric that was not measured
    intervals = reports.table1_intervals(per_patch, n_boot=200)
    assert len(intervals) == 2 * 2 * 3
    assert intervals.loc[(intervals.model == "b") & (intervals.metric == "lpips"), "estimate"].isna().all()
    ok = intervals.dropna()
    assert ((ok.low <= ok.estimate) & (ok.estimate <= ok.high)).all()
    assert list(intervals.model.unique()) == ["a", "b"]


def test_paper_rankings_checked_with_the_same_rule():
    per_patch = _per_patch({"mod_cyclegan": 0.0, "pix2pix": 0.15, "cyclegan": -0.15}, 10, seed=3)
    check = reports.paper_rankings_check(reports.paired_comparisons(per_patch, n_boot=400), ["test"], ["ssim"])
    verdicts = {(r.paper_better, r.paper_worse): r.ours for r in check.itertuples()}
    # the paper: mod_cyclegan 0.59 > pix2pix 0.22 > cyclegan 0.20 (test SSIM)
    assert verdicts[("mod_cyclegan", "pix2pix")] == "contradict"
    assert verdicts[("mod_cyclegan", "cyclegan")] == "agree"
    assert verdicts[("pix2pix", "cyclegan")] == "agree"
    row = check[(check.paper_better == "mod_cyclegan") & (check.paper_worse == "pix2pix")].iloc[0]
    assert row.difference < 0 and row.high < 0  # signed for the paper's order: ours says the opposite
    assert reports.paper_check_sentence(check).startswith("Of the paper's 3 orderings")


def test_table1_display_prints_our_intervals_and_the_papers_ranks():
    per_patch = _per_patch({"mod_cyclegan": 0.1, "pix2pix": 0.0}, 5)
    table = reports.table1_over_folds(reports.table1_by_fold(per_patch))
    intervals = reports.table1_intervals(per_patch, n_boot=200)
    shown = reports.table1_display(reports.compare_with_paper(table), intervals)
    cell = shown.loc["Mod. CycleGAN (our model)", ("test", "SSIM ↑", "ours")]
    row = intervals[(intervals.model == "mod_cyclegan") & (intervals.metric == "ssim")].iloc[0]
    assert cell == f"{row.estimate:.2f} [{row.low:.2f}, {row.high:.2f}]"
    assert shown.loc["Pix2Pix", ("test", "SSIM ↑", "paper")] == "0.22 (2)"


def test_bad_tables_are_refused_with_the_missing_column():
    with pytest.raises(ValueError, match="pair_id"):
        reports.table1_intervals(pd.DataFrame({"model": ["a"], "role": ["test"], "fold": [0], "ssim": [0.1]}))
    with pytest.raises(ValueError, match="fold"):
        reports.slide_values(pd.DataFrame({"model": ["a"], "role": ["test"], "pair_id": ["p"], "ssim": [0.1]}),
                             "a", "test", "ssim")


# --------------------------------------------------------------------------- the intensity relation


def test_a_model_that_copies_ct_brightness_inverts_a_stain_where_bone_is_dark():
    from vstain.pairs import RegisteredPair
    from vstain.reports import intensity

    rng = np.random.default_rng(0)
    rows = []
    for k in range(3):
        ct = rng.uniform(10000, 30000, (24, 24)).astype(np.uint16)
        grey = ((ct.astype(float) - 10000) / 20000 * 200 + 30).astype(np.uint8)
        dark_bone = np.repeat((255 - grey)[..., None], 3, axis=-1)      # the real stain: bright CT, dark stain
        copy_ct = np.repeat(grey[..., None], 3, axis=-1)                # a model that copies the CT's brightness
        mask = np.zeros(ct.shape, bool)
        mask[2:22, 2:22] = True
        pair = RegisteredPair(f"p{k}", "Mg", "toluidine_blue", ct, dark_bone, mask, 5.0)
        rows.append(intensity.intensity_relation(pair, {"cyclegan": copy_ct, "pix2pix": dark_bone}))
    table = pd.concat(rows, ignore_index=True)
    assert (table[table.source == "real"].r < -0.95).all() and (table[table.source == "cyclegan"].r > 0.95).all()
    assert intensity.real_relation_sentence(table).startswith(
        "Inside the mask, CT intensity and the real stain's lightness correlate negatively on 3 of 3 slides")
    assert intensity.inversion_sentence(table, "cyclegan").startswith(
        "Std. CycleGAN inverts the real stain's CT-lightness relation on 3 of 3 slides")
    assert intensity.inversion_sentence(table, "pix2pix").startswith(
        "Pix2Pix keeps the real stain's CT-lightness relation on all 3 slides")
    assert intensity.inversion_sentence(table, "mod_cyclegan") == "Mod. CycleGAN: not measured."


@pytest.mark.parametrize("seed", range(4))
def test_row_weighted_medians_skip_nan_and_match_numpy(seed):
    from vstain.intervals import _row_weighted_medians

    rng = np.random.default_rng(seed)
    values = rng.normal(size=(40, 5))
    values[rng.random(values.shape) < 0.3] = np.nan
    weights = rng.integers(0, 3, values.shape)
    found = _row_weighted_medians(values, weights)
    for v, w, f in zip(values, weights, found):
        repeated = np.repeat(v[~np.isnan(v)], w[~np.isnan(v)])
        assert (np.isnan(f) and not len(repeated)) or f == pytest.approx(np.median(repeated))


def test_reading_an_evaluation_that_has_not_run_names_the_file_and_the_command(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"metrics_per_patch.csv: not found; `vstain evaluate --profile smoke`"):
        reports.read_evaluation("smoke", root=tmp_path)


def test_reading_back_what_the_stage_writes(tmp_path):
    per_patch = _per_patch({"mod_cyclegan": 0.1, "pix2pix": 0.0}, 4)
    folder = tmp_path / "smoke" / "evaluation"
    folder.mkdir(parents=True)
    per_patch.to_csv(folder / "metrics_per_patch.csv", index=False)
    by_fold = reports.table1_by_fold(per_patch)
    by_fold.to_csv(folder / "table1_by_fold.csv", index=False)
    reports.table1_over_folds(by_fold).to_csv(folder / "table1.csv", index=False)
    reports.table1_intervals(per_patch, n_boot=50).to_csv(folder / "table1_intervals.csv", index=False)
    reports.paired_comparisons(per_patch, n_boot=50).to_csv(folder / "comparisons.csv", index=False)
    (folder / "evaluation.json").write_text('{"lpips_message": "none"}')
    back = reports.read_evaluation("smoke", root=tmp_path)
    assert back["status"]["lpips_message"] == "none" and len(back["per_patch"]) == len(per_patch)
    assert (back["comparisons"]["verdict"] == "").all()  # an empty verdict reads back as no winner, not NaN
    assert reports.comparison_sentence(back["comparisons"], "mod_cyclegan", "pix2pix", "test", "ssim").startswith(
        "On the test SSIM, Mod. CycleGAN and Pix2Pix are not distinguishable on these data")


def test_classes_as_close_before_normalisation_are_not_said_to_be_merged_by_it():
    import pandas as pd

    from vstain.reports.normalisation import merge_sentence

    d = pd.DataFrame({"stain": "tb", "class_a": ["dense_bone", "degradation_layer", "soft_tissue"],
                      "class_b": ["lacuna", "screw", "dense_bone"], "delta_e_before": [3.0, 30.0, 20.0],
                      "delta_e_after": [2.0, 16.0, 12.0], "merged_before": [True, False, False],
                      "merged_after": [True, False, False], "pair_id": "p"})
    text = merge_sentence(d, "tb")
    assert text.startswith("Normalisation merges no two classes that were apart before it")
    assert "1 pairs were as close before it (dense bone and lacuna)" in text
    d.loc[1, ["delta_e_after", "merged_after"]] = [1.0, True]
    assert merge_sentence(d, "tb").startswith("Normalisation merges 1 of 3 pairs")
