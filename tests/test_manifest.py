"""The data manifest and the split: validation errors, round trip, split properties."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from vstain.manifest import (ManifestError, PairEntry, load_manifest, make_split, pairs_in_role, read_split,
                             sha256_file, validate_split, write_manifest, write_split)
from vstain.stages.dataset import check_manifest


def _pair_files(folder: Path, pid: str) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    ct, hist = folder / f"{pid}_ct.tif", folder / f"{pid}_hist.tif"
    ct.write_bytes(f"ct {pid}".encode())
    hist.write_bytes(f"hist {pid}".encode())
    return {"id": pid, "material": "Mg", "stain": "toluidine_blue",
            "ct_path": ct.name, "ct_voxel_um": 5.0, "ct_sha256": sha256_file(ct),
            "histology_path": hist.name, "histology_pixel_um": 0.44, "histology_sha256": sha256_file(hist)}


def _write(folder: Path, pairs: list, **top) -> Path:
    path = folder / "manifest.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "source": "files", **top, "pairs": pairs}, sort_keys=False))
    return path


@pytest.fixture
def manifest_dir(tmp_path):
    pairs = [_pair_files(tmp_path, f"p{i}") for i in range(3)]
    pairs[1]["material"], pairs[2]["stain"] = "PEEK", "he"
    return tmp_path, pairs


def test_round_trip(manifest_dir, tmp_path):
    folder, pairs = manifest_dir
    manifest = load_manifest(_write(folder, pairs))
    assert [p.pair_id for p in manifest.pairs] == ["p0", "p1", "p2"]
    assert manifest.pairs[1].material == "PEEK" and manifest.pairs[2].stain == "he"
    assert manifest.pairs[0].ct_path == (folder / "p0_ct.tif").resolve()
    again = write_manifest(folder / "copy.yaml", manifest.pairs, source="files")
    assert load_manifest(again).pairs == manifest.pairs


@pytest.mark.parametrize("field,value,error,words", [
    ("material", "steel", ManifestError, ["p1", "material", "steel"]),
    ("stain", "masson", ManifestError, ["p1", "stain", "masson"]),
    ("ct_voxel_um", 0, ManifestError, ["p1", "ct_voxel_um"]),
    ("histology_pixel_um", -0.44, ManifestError, ["p1", "histology_pixel_um"]),
    ("ct_sha256", "0" * 64, ManifestError, ["p1", "ct_sha256", "mismatch"]),
    ("histology_path", "nowhere.tif", FileNotFoundError, ["p1", "histology_path", "nowhere.tif"]),
    ("ct_sha256", "abc", ManifestError, ["p1", "ct_sha256"]),
    ("colour", "blue", ManifestError, ["p1", "colour"]),
])
def test_bad_pair_fields_name_file_pair_and_field(manifest_dir, field, value, error, words):
    folder, pairs = manifest_dir
    pairs[1][field] = value
    path = _write(folder, pairs)
    with pytest.raises(error) as info:
        load_manifest(path)
    message = str(info.value)
    assert str(path) in message
    for word in words:
        assert word in message


def test_missing_field_and_duplicate_id(manifest_dir):
    folder, pairs = manifest_dir
    del pairs[0]["ct_voxel_um"]
    with pytest.raises(ManifestError, match="p0.*missing field 'ct_voxel_um'"):
        load_manifest(_write(folder, pairs))
    pairs[0]["ct_voxel_um"] = 5.0
    pairs[2]["id"] = "p0"
    with pytest.raises(ManifestError, match="pair p0: field 'id' is duplicated"):
        load_manifest(_write(folder, pairs))


def test_malformed_yaml_and_missing_manifest(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("source: files\npairs: [\n  - id: x\n")
    with pytest.raises(ManifestError, match="bad.yaml: malformed YAML"):
        load_manifest(bad)
    with pytest.raises(FileNotFoundError, match="nothing.yaml"):
        load_manifest(tmp_path / "nothing.yaml")
    bad.write_text("source: cloud\npairs: []\n")
    with pytest.raises(ManifestError, match="field 'source'"):
        load_manifest(bad)


def test_shipped_manifest_is_synthetic():
    manifest = load_manifest(Path(__file__).resolve().parent.parent / "data_manifest.yaml")
    assert manifest.source == "synthetic" and manifest.pairs == []


def _entries(counts: dict, stain="toluidine_blue", prefix="tb"):
    return [PairEntry(f"{prefix}_{m}_{k}", m, stain, None, 5.0, None, 0.44, None, "", "")
            for m, n in counts.items() for k in range(n)]


def test_paper_split_keeps_the_material_ratio_and_holds_out_the_test_set():
    pairs = _entries({"Mg": 38, "Ti": 5, "PEEK": 10}) + _entries({"Mg": 3, "Ti": 6, "PEEK": 2}, "he", "he")
    split = make_split(pairs, 5, seed=2025, tb_test_counts={"Mg": 2, "PEEK": 1},
                       he_test_counts={"Mg": 1, "Ti": 1, "PEEK": 1})
    validate_split(split)
    tb = split[split.stain == "toluidine_blue"]
    folds = [f"fold{k}" for k in range(5)]
    test = tb[tb.fold0 == "test"]
    assert sorted(test.material) == ["Mg", "Mg", "PEEK"]
    assert (tb.loc[test.index, folds] == "test").all().all()  # never inside a fold
    pool = tb.drop(test.index)
    assert ((pool[folds] == "validation").sum(axis=1) == 1).all()  # each pool pair validates exactly once
    for fold in folds:
        validation = pool[pool[fold] == "validation"]
        assert len(validation) == 10  # paper: 40 / 10
        ratio = validation.material.value_counts()
        assert abs(ratio.get("Mg", 0) - 7) <= 1 and ratio.get("Ti", 0) == 1 and abs(ratio.get("PEEK", 0) - 2) <= 1
    he = split[split.stain == "he"]
    assert sorted(he[he.fold0 == "test"].material) == ["Mg", "PEEK", "Ti"]
    assert (he[folds].nunique(axis=1) == 1).all()  # H&E roles do not rotate
    assert len(pairs_in_role(split, 3, "train")) == 40
    assert pairs_in_role(split, 0, "test", stain="he") == he[he.fold0 == "test"].pair_id.tolist()


def test_split_is_deterministic_and_seeded():
    pairs = _entries({"Mg": 10, "Ti": 2, "PEEK": 3})
    a = make_split(pairs, 5, 1, {"Mg": 2, "PEEK": 1})
    b = make_split(pairs, 5, 1, {"Mg": 2, "PEEK": 1})
    c = make_split(pairs, 5, 2, {"Mg": 2, "PEEK": 1})
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(c)


def test_manifest_test_flags_decide_the_test_set():
    pairs = [PairEntry(f"p{i}", "Mg", "toluidine_blue", None, 5.0, None, 0.44, None, "", "", test=(i == 3))
             for i in range(6)]
    split = make_split(pairs, 2, 0, {"Mg": 2})
    assert split[split.fold0 == "test"].pair_id.tolist() == ["p3"]


def test_split_file_errors(tmp_path):
    split = make_split(_entries({"Mg": 6, "Ti": 2}), 2, 0, {"Mg": 1})
    path = write_split(tmp_path / "split.csv", split)
    pd.testing.assert_frame_equal(read_split(path), split)
    leaked = split.copy()
    row = leaked.index[leaked.fold0 == "test"][0]
    leaked.loc[row, "fold1"] = "train"
    leaked.to_csv(path, index=False)
    with pytest.raises(ManifestError, match=f"{leaked.pair_id[row]}: a test pair appears inside a fold.*fold1"):
        read_split(path)
    split.loc[0, "fold0"] = "holiday"
    split.to_csv(path, index=False)
    with pytest.raises(ManifestError, match="field 'fold0'"):
        read_split(path)
    with pytest.raises(FileNotFoundError):
        read_split(tmp_path / "none.csv")


def test_check_manifest_writes_the_split_for_real_files(manifest_dir, tmp_path):
    folder, pairs = manifest_dir
    pairs += [_pair_files(folder, f"q{i}") for i in range(4)]
    pairs[-1]["test"] = True
    pairs[2]["test"] = False  # the one H&E pair trains
    path = _write(folder, pairs)
    manifest, split, split_path = check_manifest(path, "smoke", tmp_path / "out" / "split.csv")
    assert split_path.is_file() and len(manifest.pairs) == 7
    back = read_split(split_path)
    assert back.loc[back.pair_id == "q3", "fold0"].item() == "test"
    assert set(back.columns) == {"pair_id", "stain", "material", "fold0", "fold1"}


def test_cli_reports_bad_manifest_in_one_line(manifest_dir, capsys):
    from vstain.cli import main

    folder, pairs = manifest_dir
    pairs[0]["stain"] = "gram"
    path = _write(folder, pairs)
    assert main(["check-manifest", "--manifest", str(path), "--profile", "smoke"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "p0" in err and "stain" in err


def test_smoke_dataset_manifest_and_split(smoke_dataset):
    manifest = load_manifest(smoke_dataset)
    split = read_split(Path(smoke_dataset).parent / "split.csv")
    validate_split(split, manifest=manifest)
    assert manifest.source == "synthetic" and len(manifest.pairs) == len(split)
    flagged = {p.pair_id for p in manifest.pairs if p.test}
    assert flagged == set(split[split.fold0 == "test"].pair_id)
    assert np.isclose(manifest.pairs[0].histology_pixel_um, 2.5)
