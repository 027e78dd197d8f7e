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
