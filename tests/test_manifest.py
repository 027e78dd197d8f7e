"""The data manifest and the split: validation errors, round trip, split properties."""

import shutil
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import yaml

from vstain.cli import main
from vstain.io import write_png, write_tiff
from vstain.manifest import (ManifestError, PairEntry, load_manifest, make_split, pairs_in_role, read_split,
                             sha256_file, validate_split, write_manifest, write_split)
from vstain.pairs import fold_pair_ids, read_profile_split, split_roles
from vstain.stages.dataset import check_manifest

SHAPE = (8, 8)  # (y, x) of the tiny histology images; CT volumes are (4, 8, 8)


def _image(pid: str, shape: tuple, dtype=np.uint16) -> np.ndarray:
    """Small deterministic pixels, different for every pair (so are their checksums)."""
    rng = np.random.default_rng(zlib.crc32(pid.encode()))
    return rng.integers(0, 200, shape).astype(dtype)


def _pair_files(folder: Path, pid: str) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    ct, hist = folder / f"{pid}_ct.tif", folder / f"{pid}_hist.tif"
    write_tiff(ct, _image(pid, (4,) + SHAPE), 5.0)
    write_tiff(hist, _image(pid, SHAPE + (3,), np.uint8), 0.44)
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
    ("histology_pixel_um", 440.0001e3, ManifestError, ["p1", "histology_pixel_um", "nm or mm"]),
    ("ct_voxel_um", 0.005, ManifestError, ["p1", "ct_voxel_um", "0.01 - 1000"]),
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


# --------------------------------------------------------------------------- every bad input: exit 2, one line


def _table_pairs(folder: Path) -> list:
    """A valid manifest for `check-manifest --profile smoke`: 2 training toluidine-blue pairs (2 folds),
    one test pair, one H&E pair; every pair flagged, so no test pair is drawn."""
    pairs = [_pair_files(folder, f"p{i}") for i in range(4)]
    pairs[1]["material"], pairs[2]["stain"] = "PEEK", "he"
    for i, entry in enumerate(pairs):
        entry["test"] = i == 3
    return pairs


def _replace(folder: Path, entry: dict, stem: str, write) -> None:
    """Write another file as the pair's ``stem`` file and record its checksum, so the checksum passes."""
    path = folder / entry[f"{stem}_path"]
    write(path)
    entry[f"{stem}_sha256"] = sha256_file(path)


def _tiff(image, size=0.44):
    return lambda path: write_tiff(path, image, size)


def _mask(folder, entry, image):
    entry["extra_mask_path"] = "p1_mask.tif"
    _replace(folder, entry, "extra_mask", _tiff(image))


def _set(field, value):
    def change(folder, pairs, top):
        pairs[1][field] = value
    return change


def _top(field, value):
    def change(folder, pairs, top):
        top[field] = value
    return change


def _file(stem, write):
    def change(folder, pairs, top):
        _replace(folder, pairs[1], stem, write)
    return change


def _all_test(folder, pairs, top):
    for entry in pairs:
        if entry["stain"] == "toluidine_blue":
            entry["test"] = True


def _folder(folder, pairs, top):
    (folder / "slices").mkdir()
    pairs[1]["histology_path"] = "slices"  # a CT may be a folder of slices; a histology is one file


def _ct_folder_without_slices(folder, pairs, top):
    from vstain.io import sha256_path

    (folder / "slices").mkdir()
    (folder / "slices" / "notes.txt").write_text("no slices here")
    pairs[1]["ct_path"] = "slices"
    pairs[1]["ct_sha256"] = sha256_path(folder / "slices")


def _damaged(folder, pairs, top):
    path = folder / pairs[1]["ct_path"]
    path.write_bytes(path.read_bytes()[:-7])


def _duplicate(folder, pairs, top):
    pairs[2]["id"] = "p1"


def _test_pair_copied_for_training(folder, pairs, top):
    pairs.append({**pairs[3], "id": "p4", "test": False})  # the test pair's files again, as a training pair


def _same_histology(folder, pairs, top):
    pairs[1]["histology_path"], pairs[1]["histology_sha256"] = pairs[0]["histology_path"], pairs[0]["histology_sha256"]


# id, change, expected words beyond the manifest path (pair id, field, what is wrong, the file)
BAD_INPUTS = [
    ("rgb-ct", _file("ct", _tiff(_image("x", SHAPE + (3,), np.uint8))), ["pair p1", "'ct_path'", "RGB image"]),
    ("2d-ct", _file("ct", _tiff(_image("x", SHAPE))), ["pair p1", "'ct_path'", "2D image", "p1_ct.tif"]),
    ("4d-ct", _file("ct", lambda p: tifffile.imwrite(p, _image("x", (2, 2) + SHAPE), imagej=True,
                                                      metadata={"axes": "TZYX"})),
     ["pair p1", "'ct_path'", "4 dimensions"]),
    ("grey-histology", _file("histology", _tiff(_image("x", SHAPE, np.uint8))),
     ["pair p1", "'histology_path'", "greyscale"]),
    ("16-bit-histology", _file("histology", lambda p: tifffile.imwrite(p, _image("x", SHAPE + (3,)),
                                                                        photometric="rgb")),
     ["pair p1", "'histology_path'", "uint16 RGB", "8-bit"]),
    ("planar-histology", _file("histology", lambda p: tifffile.imwrite(p, _image("x", (3,) + SHAPE, np.uint8),
                                                                        photometric="rgb", planarconfig="separate")),
     ["pair p1", "'histology_path'", "separate planes"]),
    ("histology-stack", _file("histology", _tiff(_image("x", (2,) + SHAPE + (3,), np.uint8))),
     ["pair p1", "'histology_path'", "stack"]),
    ("text-as-tiff", _file("ct", lambda p: p.write_text("ct volume of p1\n")),
     ["pair p1", "'ct_path'", "p1_ct.tif", "not a readable TIFF"]),
    ("empty-file", _file("histology", lambda p: p.write_bytes(b"")),
     ["pair p1", "'histology_path'", "p1_hist.tif", "empty"]),
    ("png-as-tiff", _file("histology", lambda p: write_png(p, _image("x", SHAPE + (3,), np.uint8))),
     ["pair p1", "'histology_path'", "p1_hist.tif", "not a readable TIFF"]),
    ("folder", _folder, ["pair p1", "'histology_path'", "slices", "is a folder"]),
    ("ct folder without slices", _ct_folder_without_slices, ["pair p1", "'ct_path'", "slices", "without .tif"]),
    ("rgb-mask", lambda f, pairs, t: _mask(f, pairs[1], _image("x", SHAPE + (3,), np.uint8)),
     ["pair p1", "'extra_mask_path'", "RGB image", "p1_mask.tif"]),
    ("mask-size", lambda f, pairs, t: _mask(f, pairs[1], _image("x", (4, 4), np.uint8)),
     ["pair p1", "'extra_mask_path'", "size of the histology"]),
    ("zero-voxel", _set("ct_voxel_um", 0), ["pair p1", "'ct_voxel_um'", "positive"]),
    ("voxel-unlike-the-header", _set("ct_voxel_um", 10.0),
     ["pair p1", "'ct_voxel_um'", "10 um", "header says 5 x 5 x 5 um"]),
    ("negative-pixel", _set("histology_pixel_um", -0.44), ["pair p1", "'histology_pixel_um'", "positive"]),
    ("voxel-in-nm", _set("ct_voxel_um", 5000), ["pair p1", "'ct_voxel_um'", "plausible"]),
    ("pixel-in-mm", _set("histology_pixel_um", 0.00044), ["pair p1", "'histology_pixel_um'", "plausible"]),
    ("pixel-as-text", _set("histology_pixel_um", "0.44 um"), ["pair p1", "'histology_pixel_um'"]),
    ("all-test", _all_test, ["pair p0", "'test'", "none to train on"]),
    ("version-2", _top("version", 2), ["'version'", "got 2"]),
    ("version-one", _top("version", "one"), ["'version'", "'one'"]),
    ("version-true", _top("version", True), ["'version'"]),
    # inputs refused before this table existed
    ("missing-file", _set("histology_path", "nowhere.tif"), ["pair p1", "'histology_path'", "nowhere.tif"]),
    ("checksum", _damaged, ["pair p1", "'ct_sha256'", "mismatch", "p1_ct.tif"]),
    ("bad-sha", _set("ct_sha256", "abc"), ["pair p1", "'ct_sha256'"]),
    ("material", _set("material", "steel"), ["pair p1", "'material'", "steel"]),
    ("unknown-field", _set("colour", "blue"), ["pair p1", "'colour'"]),
    ("duplicate-id", _duplicate, ["pair p1", "'id'", "duplicated"]),
    ("test-pair-copied-for-training", _test_pair_copied_for_training,
     ["pair p4", "pair p3", "'ct_sha256'", "p3_ct.tif", "test data into training"]),
    ("same-histology-two-pairs", _same_histology, ["pair p1", "pair p0", "'histology_sha256'", "p0_hist.tif"]),
    ("source", _top("source", "cloud"), ["'source'"]),
]


def test_the_table_starts_from_a_valid_manifest(tmp_path, capsys):
    folder = tmp_path / "data"
    pairs = _table_pairs(folder)
    _mask(folder, pairs[0], _image("m", SHAPE, np.uint8))
    path = _write(folder, pairs)
    assert main(["check-manifest", "--manifest", str(path), "--profile", "smoke",
                 "--split", str(tmp_path / "split.csv")]) == 0, capsys.readouterr().err
    assert "4 pairs valid" in capsys.readouterr().out


@pytest.mark.parametrize("change,words", [case[1:] for case in BAD_INPUTS], ids=[case[0] for case in BAD_INPUTS])
def test_every_bad_input_is_one_line_naming_the_manifest_pair_and_field(tmp_path, capsys, change, words):
    folder = tmp_path / "data"
    pairs, top = _table_pairs(folder), {}
    change(folder, pairs, top)
    path = _write(folder, pairs, **top)
    code = main(["check-manifest", "--manifest", str(path), "--profile", "smoke",
                 "--split", str(tmp_path / "split.csv")])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("vstain check-manifest: error: "), err
    assert "Traceback" not in err and str(path) in err, err
    for word in words:
        assert word in err, (word, err)
    assert not (tmp_path / "split.csv").exists()  # nothing written from a bad manifest


def test_two_datasets_of_one_hdf5_file_are_two_ct_volumes(tmp_path):
    """They share the file's checksum; the dataset path tells them apart. The same dataset twice is refused."""
    import h5py

    folder = tmp_path / "data"
    pairs = _table_pairs(folder)
    with h5py.File(folder / "scans.h5", "w") as h5:
        for name in ("a", "b"):
            h5.create_dataset(name, data=_image(name, (4,) + SHAPE)).attrs["element_size_um"] = [5.0] * 3
    checksum = sha256_file(folder / "scans.h5")
    for entry, name in zip(pairs[:2], ("a", "b")):
        entry["ct_path"], entry["ct_sha256"] = f"scans.h5:/{name}", checksum
    assert [p.ct_dataset for p in load_manifest(_write(folder, pairs)).pairs[:2]] == ["/a", "/b"]
    pairs[1]["ct_path"] = "scans.h5:/a"
    with pytest.raises(ManifestError, match=r"pair p1: field 'ct_sha256' is the same as pair p0's.*scans.h5:/a"):
        load_manifest(_write(folder, pairs))


def test_header_checks_read_no_pixels(tmp_path, monkeypatch):
    """The TIFF checks cost a header read: no image data is decoded."""
    def no_pixels(*args, **kwargs):
        raise AssertionError("pixels were read")

    monkeypatch.setattr(tifffile.TiffFile, "asarray", no_pixels)
    monkeypatch.setattr(tifffile.TiffPage, "asarray", no_pixels)
    folder = tmp_path / "data"
    assert len(load_manifest(_write(folder, _table_pairs(folder))).pairs) == 4


def test_drawn_test_counts_that_take_every_pair_are_refused():
    with pytest.raises(ManifestError, match="every toluidine_blue pair .* none is left to train on"):
        make_split(_entries({"Mg": 2, "PEEK": 1}), 1, 0, {"Mg": 2, "PEEK": 1})


# --------------------------------------------------------------------------- a split that contradicts the manifest


def _consistent_split(tmp_path):
    folder = tmp_path / "data"
    path = _write(folder, _table_pairs(folder))
    manifest, split, split_path = check_manifest(path, "smoke", tmp_path / "out" / "split.csv")
    return manifest, split, split_path


def _test_pair_trains(split):
    split.loc[split.pair_id == "p3", ["fold0", "fold1"]] = "train"
    return split


def _train_pair_tests(split):
    split.loc[split.pair_id == "p0", ["fold0", "fold1"]] = "test"
    return split


def _drop_pair(split):
    return split[split.pair_id != "p2"]


def _extra_pair(split):
    extra = pd.DataFrame([["q9", "toluidine_blue", "Mg", "train", "validation"]], columns=split.columns)
    return pd.concat([split, extra], ignore_index=True)


def _other_material(split):
    split.loc[split.pair_id == "p1", "material"] = "Ti"
    return split


CONTRADICTIONS = [
    ("test-pair-in-a-fold", _test_pair_trains, "p3", "marks the pair test: true"),
    ("train-pair-as-test", _train_pair_tests, "p0", "does not mark the pair test"),
    ("pair-missing-from-split", _drop_pair, "p2", "missing from the split"),
    ("pair-not-in-manifest", _extra_pair, "q9", "not in the manifest"),
    ("other-material", _other_material, "p1", "'material'"),
]


@pytest.mark.parametrize("change,pid,words", [c[1:] for c in CONTRADICTIONS], ids=[c[0] for c in CONTRADICTIONS])
def test_a_split_contradicting_the_manifest_names_both_files_and_the_pair(tmp_path, change, pid, words):
    manifest, split, split_path = _consistent_split(tmp_path)
    pd.testing.assert_frame_equal(read_split(split_path, manifest), split)  # consistent: read as written
    change(split.copy()).to_csv(split_path, index=False)
    for given in (manifest, manifest.path):
        with pytest.raises(ValueError) as info:
            read_split(split_path, given)
        message = str(info.value)
        assert str(split_path) in message and str(manifest.path) in message and f"pair {pid}" in message
        assert words in message and "check-manifest" in message and "\n" not in message


def test_the_manifest_beside_a_split_is_checked_by_default(smoke_dataset, tmp_path):
    folder = tmp_path / "dataset"
    shutil.copytree(Path(smoke_dataset).parent, folder)
    split = read_split(folder / "split.csv")
    pd.testing.assert_frame_equal(split, read_split(Path(smoke_dataset).parent / "split.csv"))
    test_pair = split.pair_id[split.fold0 == "test"].iloc[0]
    split.loc[split.pair_id == test_pair, [c for c in split.columns if c.startswith("fold")]] = "train"
    split.to_csv(folder / "split.csv", index=False)
    with pytest.raises(ManifestError, match=f"split.csv: pair {test_pair}: .*manifest.yaml marks the pair test"):
        read_split(folder / "split.csv")


def test_stages_read_no_split_that_contradicts_the_synthetic_manifest(smoke_dataset, tmp_path, monkeypatch):
    monkeypatch.delenv("VSTAIN_MANIFEST", raising=False)  # the shipped data_manifest.yaml: source synthetic
    dataset = tmp_path / "smoke" / "dataset"
    shutil.copytree(Path(smoke_dataset).parent, dataset)
    expected = read_split(dataset / "split.csv")
    pd.testing.assert_frame_equal(read_profile_split("smoke", tmp_path), expected)
    test_pair = expected.pair_id[expected.fold0 == "test"].iloc[0]
    leaked = expected.copy()
    leaked.loc[leaked.pair_id == test_pair, "fold0"] = "train"
    leaked.loc[leaked.pair_id == test_pair, "fold1"] = "validation"
    leaked.to_csv(dataset / "split.csv", index=False)
    for read in (lambda: split_roles("smoke", 0, root=tmp_path),
                 lambda: fold_pair_ids("smoke", 0, "train", root=tmp_path)):
        with pytest.raises(ValueError, match=f"{dataset / 'split.csv'}: pair {test_pair}: .*"
                                             f"{dataset / 'manifest.yaml'} marks the pair test"):
            read()


def test_stages_read_no_split_that_contradicts_the_data_manifest(tmp_path, monkeypatch):
    manifest, split, _ = _consistent_split(tmp_path)
    monkeypatch.setenv("VSTAIN_MANIFEST", str(manifest.path))  # real files, as in data_manifest.yaml
    split_file = tmp_path / "results" / "smoke" / "dataset" / "split.csv"
    write_split(split_file, split)
    assert split_roles("smoke", 1, root=tmp_path / "results") == dict(zip(split.pair_id, split.fold1))
    _test_pair_trains(split).to_csv(split_file, index=False)
    with pytest.raises(ValueError, match=f"pair p3: .*{manifest.path} marks the pair test"):
        fold_pair_ids("smoke", 1, "train", root=tmp_path / "results")


def test_a_ct_as_a_folder_of_slices_or_an_hdf5_dataset_is_a_valid_manifest_ct(manifest_dir):
    import h5py
    import tifffile

    from vstain.io import read_tiff, sha256_path

    folder, pairs = manifest_dir
    volume = read_tiff(folder / pairs[0]["ct_path"])[0]
    (folder / "slices").mkdir()
    for z, image in enumerate(volume):
        tifffile.imwrite(folder / "slices" / f"rec_{z:04d}.tif", image)
    with h5py.File(folder / "scan.h5", "w") as h5:
        h5.create_dataset("exchange/data", data=volume)
    pairs[0].update(ct_path="slices", ct_sha256=sha256_path(folder / "slices"))
    pairs[1].update(ct_path="scan.h5:/exchange/data", ct_sha256=sha256_path(folder / "scan.h5"))
    manifest = load_manifest(_write(folder, pairs))
    assert manifest.pairs[0].ct_source == str((folder / "slices").resolve())
    assert manifest.pairs[1].ct_source == f"{(folder / 'scan.h5').resolve()}:/exchange/data"
    assert manifest.pairs[1].to_yaml(folder.resolve())["ct_path"] == "scan.h5:/exchange/data"
    (folder / "slices" / "rec_0001.tif").unlink()  # a missing slice: the folder's checksum changes
    with pytest.raises(ManifestError, match=r"pair p0: field 'ct_sha256': checksum mismatch"):
        load_manifest(_write(folder, pairs))


# --------------------------------------------------------------------------- initial guesses (landmarks)

GOOD_LANDMARKS = [{"histology_yx": [0, 0], "ct_zyx": [1, 0, 0]}, {"histology_yx": [0, 7], "ct_zyx": [1, 0, 7]},
                  {"histology_yx": [7, 3], "ct_zyx": [2, 7, 3]}]


def test_an_initial_guess_round_trips_through_the_manifest(manifest_dir):
    folder, pairs = manifest_dir
    pairs[0]["initial_guess"] = {"landmarks": GOOD_LANDMARKS}
    pairs[1]["initial_guess"] = {"rotation_deg": 90, "mirrored": True, "normal_axis": "y"}
    manifest = load_manifest(_write(folder, pairs))
    assert manifest.pairs[0].initial_guess["landmarks"]["ct_zyx"][2] == [2.0, 7.0, 3.0]
    assert manifest.pairs[1].initial_guess == {"rotation_deg": 90.0, "mirrored": True, "normal_axis": "y"}
    assert manifest.pairs[2].initial_guess is None
    again = write_manifest(folder / "copy.yaml", manifest.pairs, source="files")
    assert load_manifest(again).pairs == manifest.pairs


@pytest.mark.parametrize("guess, words", [
    ({"landmarks": GOOD_LANDMARKS[:2]}, ["2 landmark pairs given, at least 3"]),
    ({"landmarks": []}, ["0 landmark pairs given"]),
    ({"landmarks": [{"histology_yx": [0, 0], "ct_zyx": [1, 0, 0]}, {"histology_yx": [1, 1], "ct_zyx": [1, 1, 1]},
                    {"histology_yx": [2, 2], "ct_zyx": [1, 5, 3]}]}, ["histology_yx points lie on one line"]),
    ({"landmarks": [{"histology_yx": [0, 0], "ct_zyx": [1, 0, 0]}, {"histology_yx": [0, 7], "ct_zyx": [1, 1, 1]},
                    {"histology_yx": [7, 3], "ct_zyx": [1, 2, 2]}]}, ["ct_zyx points lie on one line"]),
    ({"landmarks": GOOD_LANDMARKS[:2] + [{"histology_yx": [8, 3], "ct_zyx": [2, 7, 3]}]},
     ["landmarks'[2].histology_yx [8.0, 3.0] lies outside the histology (shape (8, 8))"]),
    ({"landmarks": GOOD_LANDMARKS[:2] + [{"histology_yx": [7, 3], "ct_zyx": [4, 7, 3]}]},
     ["landmarks'[2].ct_zyx [4.0, 7.0, 3.0] lies outside the CT volume (shape (4, 8, 8))"]),
    ({"landmarks": GOOD_LANDMARKS[:2] + [{"histology_yx": [7, -1], "ct_zyx": [2, 7, 3]}]}, ["outside the histology"]),
    ({"landmarks": GOOD_LANDMARKS[:2] + [{"histology_yx": [7], "ct_zyx": [2, 7, 3]}]},
     ["[2].histology_yx must be 2 finite numbers"]),
    ({"landmarks": GOOD_LANDMARKS[:2] + [{"histology_yx": [7, 3], "ct_zyx": [2, ".nan", 3]}]},
     ["[2].ct_zyx must be 3 finite numbers"]),
    ({"landmarks": GOOD_LANDMARKS[:2] + [{"histology_yx": [7, 3]}]}, ["exactly histology_yx and ct_zyx"]),
    ({"landmarks": "three points"}, ["must be a list"]),
    ({"landmarks": GOOD_LANDMARKS, "rotation_deg": 10}, ["landmarks or orientation values, not both"]),
    ({"rotation_deg": "ninety"}, ["initial_guess.rotation_deg' must be a number"]),
    ({"mirrored": "yes"}, ["initial_guess.mirrored' must be true or false"]),
    ({"normal_axis": "w"}, ["initial_guess.normal_axis' must be one of z, y, x"]),
    ({"tilt": 3}, ["unknown field 'tilt'"]),
    ([1, 2, 3], ["must be a mapping"]),
])
def test_every_bad_initial_guess_names_the_manifest_the_pair_and_the_field(manifest_dir, guess, words):
    folder, pairs = manifest_dir
    pairs[1]["initial_guess"] = guess
    path = _write(folder, pairs)
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    message = str(info.value)
    for word in [str(path), "pair p1", "field 'initial_guess"] + words:
        assert word in message, message
