"""Profiles: every shipped profile loads; bad input names the file and the key."""

from pathlib import Path

import pytest
import yaml

from vstain.config import PROFILE_NAMES, ProfileError, load_profile, resolve_profile_path


@pytest.mark.parametrize("name", PROFILE_NAMES)
def test_shipped_profiles_load(name):
    profile = load_profile(name)
    assert profile.name == name
    assert profile.training.patch_size > 0


def test_paper_profile_has_the_papers_settings():
    p = load_profile("paper")
    assert p.dataset.tb_counts == {"Mg": 38, "Ti": 5, "PEEK": 10}
    assert p.dataset.tb_test_counts == {"Mg": 2, "PEEK": 1}
    assert (p.training.patch_size, p.training.patches_per_pair, p.training.batch_size, p.training.epochs) == (256, 100, 4, 500)
    assert (p.training.ngf, p.training.n_blocks, p.training.lr) == (64, 9, 2e-4)
    assert (p.training.lambda_cyc, p.training.lambda_id, p.training.lambda_px, p.training.lambda_gs) == (6, 3, 6, 1)
    assert p.training.lambda_l1 == 20
    assert (p.inference.patch_size, p.inference.step) == (256, 64)


def _write_variant(tmp_path: Path, edit) -> Path:
    data = yaml.safe_load(resolve_profile_path("smoke").read_text())
    edit(data)
    path = tmp_path / "variant.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_unknown_key_names_file_and_key(tmp_path):
    path = _write_variant(tmp_path, lambda d: d["training"].update(epochz=3))
    with pytest.raises(ProfileError, match=r"variant\.yaml.*training\.epochz"):
        load_profile(path)


def test_wrong_type_names_file_and_key(tmp_path):
    path = _write_variant(tmp_path, lambda d: d["training"].update(batch_size="four"))
    with pytest.raises(ProfileError, match=r"variant\.yaml.*training\.batch_size.*integer"):
        load_profile(path)


def test_missing_value_names_file_and_key(tmp_path):
    path = _write_variant(tmp_path, lambda d: d["inference"].pop("step"))
    with pytest.raises(ProfileError, match=r"variant\.yaml.*missing value for inference\.step"):
        load_profile(path)


def test_bad_literal_lists_choices(tmp_path):
    path = _write_variant(tmp_path, lambda d: d["inference"].update(blend="median"))
    with pytest.raises(ProfileError, match=r"inference\.blend must be one of"):
        load_profile(path)


def test_malformed_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ProfileError, match="bad.yaml: malformed YAML"):
        load_profile(bad)
    with pytest.raises(ProfileError, match="profile file not found"):
        load_profile("nonexistent_profile")


@pytest.mark.parametrize("section, key, value", [
    ("registration", "threads", -2),
    ("dataset", "n_folds", 1),
    ("training", "patch_size", 33),
    ("training", "lr", -0.0002),
    ("training", "min_mask_fraction", 1.5),
    ("training", "epochs", -3),
    ("training", "models", ["mod_cyclegan", "stargan"]),
    ("training", "folds", [0, 7]),
    ("training", "threads", -1),
    ("inference", "step", 0),
    ("inference", "patch_size", 30),
    ("evaluation", "min_mask_fraction", -0.1),
    ("volume", "model", "stargan"),
    ("volume", "axes", ["w"]),
    ("he", "models", ["stargan"]),
    ("he", "epochs", 0),
    # every number finite and in range (a NaN target made every CT zero; a negative weight trained)
    ("normalisation", "ct_bone_mean", float("nan")),
    ("normalisation", "ct_bone_mean", 5000.0),  # below the background's 10000: every CT inverted
    ("normalisation", "ct_bone_mean", 70000.0),  # beyond 16 bit
    ("normalisation", "ct_background_mean", -1.0),
    ("normalisation", "histology_c_low", -5.0),
    ("normalisation", "histology_c_high", float("inf")),
    ("training", "lr", float("inf")),
    ("training", "lr", 3.0),
    ("training", "lambda_cyc", -6.0),
    ("training", "lambda_id", float("nan")),
    ("training", "lambda_px", -6.0),
    ("training", "lambda_gs", -1.0),
    ("training", "lambda_l1", -20.0),
    ("dataset", "ct_voxel_um", float("inf")),  # was a ZeroDivisionError deep in the phantom
    ("dataset", "ct_voxel_um", 5000.0),  # 5 mm: a unit slip
    ("dataset", "histology_pixel_um", 0.0001),
    ("registration", "max_tilt_error_px", float("nan")),
    ("uncertainty", "error_threshold", float("inf")),
    ("volume", "sigma_voxels", float("nan")),
    ("training", "ngf", 100000),  # was "unexpected error ... please report it" when the network was built
])
def test_values_out_of_range_stop_at_load_naming_file_and_key(tmp_path, section, key, value):
    path = _write_variant(tmp_path, lambda d: d[section].update({key: value}))
    with pytest.raises(ProfileError, match=rf"variant\.yaml: {section}\.{key} must be .*got"):
        load_profile(path)


def test_unet_depth_must_suit_the_patch_size(tmp_path):
    # 40 px is a multiple of 8 but not of 2 ** 5: the U-Net's innermost block would see a fraction of a pixel
    path = _write_variant(tmp_path, lambda d: d["training"].update(patch_size=40))
    with pytest.raises(ProfileError, match=r"training\.unet_num_downs"):
        load_profile(path)


def test_profile_text_is_the_packaged_file_and_loads_back(tmp_path):
    from vstain.config import profile_text

    copy = tmp_path / "mine.yaml"
    copy.write_text(profile_text("quick"))
    assert load_profile(copy) == load_profile("quick")
    with pytest.raises(ProfileError, match="unknown profile"):
        profile_text("huge")


def test_checkpoint_selection_rule_is_checked_at_load(tmp_path):
    path = _write_variant(tmp_path, lambda d: d["training"].update(checkpoint_selection="best_test_ssim"))
    with pytest.raises(ProfileError, match=r"variant\.yaml.*training\.checkpoint_selection must be one of"):
        load_profile(path)


@pytest.mark.parametrize("key, value, message", [
    ("cuda_precision", "fp8", r"training\.cuda_precision must be one of"),
    ("lr_decay_start_epoch", -1, r"training\.lr_decay_start_epoch must be 0 \(constant\) or an epoch before"),
    ("prefetch_batches", -2, r"training\.prefetch_batches must be between 0 and 64"),
])
def test_gpu_training_settings_are_checked_at_load(tmp_path, key, value, message):
    path = _write_variant(tmp_path, lambda d: d["training"].update({key: value}))
    with pytest.raises(ProfileError, match=rf"variant\.yaml.*{message}"):
        load_profile(path)


@pytest.mark.parametrize("section, key, value, message", [
    ("training", "cuda_precision", "half", r"training\.cuda_precision must be one of \['fp32', 'bf16', 'fp16'\]"),
    ("training", "cuda_precision", 16, r"training\.cuda_precision must be one of"),
    ("inference", "cuda_precision", "fp8", r"inference\.cuda_precision must be one of \['fp32', 'bf16', 'fp16'\]"),
    ("training", "lr_decay_start_epoch", 2, r"training\.lr_decay_start_epoch must be 0 \(constant\) or an epoch before"),
    ("training", "prefetch_batches", 65, r"training\.prefetch_batches must be between 0 and 64"),
])
def test_every_precision_and_schedule_option_names_the_file_and_key(tmp_path, section, key, value, message):
    path = _write_variant(tmp_path, lambda d: d[section].update({key: value}))
    with pytest.raises(ProfileError, match=rf"variant\.yaml.*{message}"):
        load_profile(path)


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_each_cuda_precision_loads_for_training_and_inference(tmp_path, precision):
    def both(d):
        d["training"]["cuda_precision"] = precision
        d["inference"]["cuda_precision"] = precision

    profile = load_profile(_write_variant(tmp_path, both))
    assert profile.training.cuda_precision == profile.inference.cuda_precision == precision


@pytest.mark.parametrize("section, key, value, words", [
    ("normalisation", "ct_bone_mean", float("nan"), "must be a finite number, got nan"),
    ("normalisation", "ct_bone_mean", 5000.0, "above normalisation.ct_background_mean"),
    ("training", "lr", float("inf"), "must be a finite number, got inf"),
    ("training", "lambda_cyc", -6.0, "a non-negative loss weight"),
    ("dataset", "ct_voxel_um", float("inf"), "must be a finite number"),
])
def test_a_bad_profile_number_stops_every_command_with_one_line(tmp_path, capsys, section, key, value, words):
    """Through the command line: exit 2, one line naming the profile file and the dotted key, no traceback."""
    from vstain.cli import main

    path = _write_variant(tmp_path, lambda d: d[section].update({key: value}))
    code = main(["check-manifest", "--profile", str(path), "--split", str(tmp_path / "split.csv")])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert str(path) in err and f"{section}.{key}" in err and words in err, err
    assert not (tmp_path / "split.csv").exists()
