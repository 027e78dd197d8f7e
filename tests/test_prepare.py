"""The registration stage driver is idempotent: nothing recomputed, no table rewritten, failures remembered; and
the science of one pair (vstain.prepare) registers, normalises and masks, or returns an uncertain fit untouched."""

import dataclasses
import json
import os

import numpy as np
import pandas as pd
import pytest

from vstain.config import load_profile
from vstain.layout import stage_dir
from vstain.pairs import read_registered_pair
from vstain.stages import register


@pytest.mark.slow
def test_failed_pairs_are_recorded_once_and_tables_not_rewritten(smoke_dataset, tmp_path, monkeypatch):
    """Real failures (every fit tilts beyond the profile's limit) are recorded once: not retried, no table rewritten."""
    monkeypatch.setenv("VSTAIN_RESULTS", str(tmp_path))
    smoke = load_profile("smoke")
    # smoke's sections tilt 1.6 to 4 degrees from the screw's plane: a limit of 0.5 degrees fails every fit
    profile = dataclasses.replace(smoke, registration=dataclasses.replace(smoke.registration, max_tilt_deg=0.5))
    table = register.ensure_registered(profile, stain="he", progress=False, manifest_path=smoke_dataset)
    he_ids = sorted(table["pair_id"])
    assert len(he_ids) > 0
    for pair_id, status in zip(table["pair_id"], table["status"]):
        assert status.startswith(f"failed: pair {pair_id}: the fitted plane tilts"), status
        assert "beyond" in status
    out = stage_dir("smoke", "registered")
    records = [out / f".{pair_id}.failed.json" for pair_id in he_ids]
    assert all(record.is_file() for record in records)
    assert not any((out / pair_id).exists() for pair_id in he_ids)  # no pair folder: training never sees them
    csv = out / "registration.csv"
    for path in (csv, *records):
        os.utime(path, (1_000_000, 1_000_000))

    again = register.ensure_registered(profile, stain="he", progress=False, manifest_path=smoke_dataset)
    assert all(record.stat().st_mtime == 1_000_000 for record in records), "a deterministic failure was retried"
    assert csv.stat().st_mtime == 1_000_000, "an unchanged table was rewritten"
    pd.testing.assert_frame_equal(again, table)


@pytest.mark.slow
def test_pair_folders_follow_the_umask_and_a_finished_stage_shows_no_progress_bar(smoke_dataset, tmp_path,
                                                                                 monkeypatch, capsys):
    monkeypatch.setenv("VSTAIN_RESULTS", str(tmp_path))
    profile = load_profile("smoke")
    previous = os.umask(0o022)
    try:
        table = register.ensure_registered(profile, stain="he", progress=True, manifest_path=smoke_dataset)
    finally:
        os.umask(previous)
    assert "register" in capsys.readouterr().err  # work to do: a bar
    ok = table.loc[table["status"] == "ok", "pair_id"]
    assert len(ok) > 0
    for pair_id in ok:
        folder = stage_dir("smoke", "registered") / pair_id
        assert folder.stat().st_mode & 0o777 == 0o755, oct(folder.stat().st_mode)  # not mkdtemp's private 0700
    assert not list(stage_dir("smoke", "registered").glob(".*.part"))
    register.ensure_registered(profile, stain="he", progress=True, manifest_path=smoke_dataset)
    assert "register" not in capsys.readouterr().err  # nothing to do: no bar


@pytest.mark.slow
def test_a_ct_folder_and_a_pyramidal_slide_register_as_the_plain_files_do(smoke_dataset, tmp_path):
    """The same pair as a folder of slice TIFFs and a 3-level OME-TIFF pyramid: the same registered pair."""
    import dataclasses

    import numpy as np
    import tifffile

    from vstain.io import read_tiff, sha256_path
    from vstain.manifest import load_manifest
    from vstain.slide_io import write_pyramid

    profile = load_profile("smoke")
    entry = next(e for e in load_manifest(smoke_dataset, verify=False).pairs if e.stain == "toluidine_blue")
    ct = read_tiff(entry.ct_path)[0]
    (tmp_path / "slices").mkdir()
    for z, image in enumerate(ct):
        tifffile.imwrite(tmp_path / "slices" / f"ct_{z}.tif", image)
    histology = read_tiff(entry.histology_path)[0]
    # twice as fine as the original: the level the stage reads (half the CT voxel) is the original itself
    finer = np.repeat(np.repeat(histology, 2, axis=0), 2, axis=1)
    write_pyramid(tmp_path / "slide.ome.tif", finer, entry.histology_pixel_um / 2, levels=3, tile=64)
    assert entry.histology_pixel_um <= entry.ct_voxel_um / register.HISTOLOGY_OVERSAMPLING < \
        2 * entry.histology_pixel_um
    other = dataclasses.replace(entry, ct_path=tmp_path / "slices", ct_sha256=sha256_path(tmp_path / "slices"),
                                histology_path=tmp_path / "slide.ome.tif",
                                histology_pixel_um=entry.histology_pixel_um / 2)
    plain, _, _ = register.prepare_pair(entry, profile)
    again, _, _ = register.prepare_pair(other, profile)
    for field in ("ct", "histology", "mask"):
        np.testing.assert_array_equal(getattr(again, field), getattr(plain, field), err_msg=field)


def test_a_ct_with_nan_voxels_is_refused_naming_the_file(smoke_dataset, tmp_path):
    import dataclasses

    import numpy as np
    import pytest

    from vstain.io import read_tiff, write_tiff
    from vstain.manifest import load_manifest

    entry = load_manifest(smoke_dataset, verify=False).pairs[0]
    ct, spacing, _ = read_tiff(entry.ct_path)
    ct = ct.astype(np.float32)
    ct[1, 2, 3] = np.nan
    write_tiff(tmp_path / "nan_ct.tif", ct, spacing)
    with pytest.raises(ValueError, match=rf"pair {entry.pair_id}: field 'ct_path' .*nan_ct\.tif: 1 NaN or infinite"):
        register.prepare_pair(dataclasses.replace(entry, ct_path=tmp_path / "nan_ct.tif"), load_profile("smoke"))


def test_registration_cases_come_from_the_ground_truth(tmp_path):
    from vstain.reports.registration import case_summary, registration_cases

    for pid, rotation, mirrored, tilt, axis in (("a", 10.0, False, 3.0, "z"), ("b", 95.0, False, 12.0, "z"),
                                                ("c", -350.0, False, 3.0, "y"), ("d", 5.0, True, 8.0, "x")):
        (tmp_path / pid).mkdir()
        (tmp_path / pid / "truth.json").write_text(json.dumps(
            {"details": {"affine": {"rotation_deg": rotation, "mirrored": mirrored}, "tilt_deg": tilt,
                         "normal_axis": axis}}))
    table = pd.DataFrame({"pair_id": list("abcde"), "stain": ["he"] * 5, "status": ["ok"] * 4 + ["uncertain: x"],
                          "angle_error_deg": [0.1] * 5, "tre_median_px": [0.2, 0.4, 0.2, 0.2, 9.0],
                          "tre_max_px": [0.5, 6.0, 0.5, 0.5, 20.0], "seconds": [10.0] * 5})
    cases = registration_cases(table, tmp_path)
    assert cases["rotated"].tolist() == [False, True, False, False, False]
    assert cases["mirrored"].tolist() == [False, False, False, True, False]
    assert cases["tilted"].tolist() == [False, True, False, True, False]
    assert cases["other axis"].tolist() == [False, False, True, True, False]
    summary = case_summary(cases).set_index("case")
    assert summary.loc["all", "pairs"] == 5 and summary.loc["all", "flagged"] == 1
    assert summary.loc["all", "flagged, wrong"] == 1 and summary.loc["all", "wrong, not flagged"] == 1
    assert summary.loc["tilted", "pairs"] == 2 and summary.loc["tilted", "wrong, not flagged"] == 1
    assert summary.loc["other axis", "median TRE (px)"] == 0.2


@pytest.mark.slow
def test_two_workers_register_the_pairs_exactly_as_one_does(smoke_dataset, tmp_path, monkeypatch):
    profile = load_profile("smoke")
    tables = {}
    for workers in (1, 2):
        monkeypatch.setenv("VSTAIN_RESULTS", str(tmp_path / f"w{workers}"))
        tables[workers] = register.ensure_registered(profile, stain="he", progress=False,
                                                     manifest_path=smoke_dataset, workers=workers)
    one, two = (tables[w].drop(columns="seconds") for w in (1, 2))
    assert (one["status"] == "ok").sum() >= 2
    pd.testing.assert_frame_equal(one, two)  # each fit runs on one ITK thread, whatever the workers
    for pair_id in one.loc[one["status"] == "ok", "pair_id"]:
        first, second = (read_registered_pair(tmp_path / f"w{w}" / "smoke" / "registered" / pair_id) for w in (1, 2))
        assert np.array_equal(first.ct, second.ct) and np.array_equal(first.histology, second.histology)


def test_the_number_of_workers_does_not_invalidate_registered_pairs(smoke_dataset):
    from vstain.manifest import load_manifest

    profile = load_profile("smoke")
    entry = load_manifest(smoke_dataset).pairs[0]
    more = dataclasses.replace(profile, registration=dataclasses.replace(profile.registration, workers=8))
    fewer_threads = dataclasses.replace(profile, registration=dataclasses.replace(profile.registration, threads=2))
    assert register._config_key(more, entry) == register._config_key(profile, entry)
    assert register._config_key(fewer_threads, entry) != register._config_key(profile, entry)


def test_pairs_registration_was_not_sure_of_are_left_out(tmp_path, monkeypatch):
    """A pair recorded uncertain in registration.csv is left out of a fold, with a warning naming it; all left out
    is an error naming the table; a pair neither registered nor recorded is still an error."""
    import pandas as pd

    from vstain import pairs as pairs_module
    from vstain.layout import registered_dir

    folder = registered_dir("demo", tmp_path)
    folder.mkdir(parents=True)
    pd.DataFrame({"pair_id": ["a", "b", "c"], "status": ["ok", "uncertain: tilt open", "failed: no overlap"]}).to_csv(
        folder / "registration.csv", index=False)
    (folder / "a").mkdir()
    (folder / "a" / "pair.json").write_text("{}")
    assert pairs_module.left_out_pairs("demo", tmp_path) == {"b": "uncertain: tilt open", "c": "failed: no overlap"}
    monkeypatch.setattr(pairs_module, "read_registered_pair", lambda path: path.name)
    monkeypatch.setattr(pairs_module, "fold_pair_ids", lambda *a, **k: ["a", "b"])
    with pytest.warns(UserWarning, match="1 of 2 .* left out.*: b"):
        assert pairs_module.load_fold_pairs("demo", 0, "train", root=tmp_path) == ["a"]
    monkeypatch.setattr(pairs_module, "fold_pair_ids", lambda *a, **k: ["b", "c"])
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="registration.csv.*left out"):
        pairs_module.load_fold_pairs("demo", 0, "train", root=tmp_path)
    monkeypatch.setattr(pairs_module, "fold_pair_ids", lambda *a, **k: ["a", "d"])
    with pytest.raises(FileNotFoundError, match="d/pair.json"):
        pairs_module.load_fold_pairs("demo", 0, "train", root=tmp_path)


# --------------------------------------------------------------------------- the science of one pair (vstain.prepare)


def test_a_sure_fit_is_normalised_and_masked_within_its_hand_made_mask():
    from vstain.phantom import make_sample
    from vstain.prepare import prepare_pair_images, registration_record
    from vstain.registration import warp_to_result

    profile = load_profile("smoke")
    sample = make_sample(profile.dataset, "tb_test_01", "Mg", "toluidine_blue", beamtime=0, session=1, seed=11)
    extra = np.zeros(sample.histology.shape[:2], bool)
    extra[:, : extra.shape[1] // 2] = True  # a hand-made mask: the left half of the slide
    prepared = prepare_pair_images(sample.ct_volume, sample.histology, ct_voxel_um=sample.ct_voxel_um,
                                   histology_pixel_um=sample.histology_pixel_um, stain="toluidine_blue",
                                   registration=profile.registration, normalisation=profile.normalisation,
                                   extra_mask=extra, pair_id="half")
    result = prepared.result
    assert prepared.registered and result.status == "ok"
    assert prepared.ct.dtype == np.uint16 and prepared.ct.shape == result.ct_slice.shape
    assert prepared.histology.shape == result.histology.shape and prepared.mask.shape == result.ct_slice.shape
    # the mask keeps to the hand-made half: nothing of the other half's warp is in it
    other_half = warp_to_result((~extra).astype(np.uint8), result) > 0
    assert prepared.mask.sum() > 50 and not (prepared.mask & other_half).any()
    target = profile.normalisation.ct_bone_mean
    assert abs(prepared.normalisation["ct"]["bone_mean_after"] - target) < 0.01 * target
    raw = prepared.raw_images()
    np.testing.assert_array_equal(raw["histology_raw"], result.histology)
    assert raw["ct_raw"].dtype == np.float32 and raw["ct_valid"].shape == result.ct_slice.shape
    record = registration_record(result, sample.ct_voxel_um, sample.histology_pixel_um, "none")
    assert json.loads(json.dumps(record))["status"] == "ok" and len(record["affine"]) == 3


def test_an_uncertain_fit_is_returned_unnormalised_and_unmasked():
    from vstain.phantom import make_sample
    from vstain.prepare import prepare_pair_images, quality_figures

    profile = load_profile("smoke")
    section = make_sample(profile.dataset, "tb_test_01", "Mg", "toluidine_blue", beamtime=0, session=1, seed=11)
    other = make_sample(profile.dataset, "tb_test_02", "Mg", "toluidine_blue", beamtime=0, session=1, seed=12)
    prepared = prepare_pair_images(other.ct_volume, section.histology, ct_voxel_um=other.ct_voxel_um,
                                   histology_pixel_um=other.histology_pixel_um, stain="toluidine_blue",
                                   registration=profile.registration, normalisation=profile.normalisation,
                                   pair_id="mismatch")
    assert not prepared.registered and prepared.result.status.startswith("uncertain")
    assert prepared.ct is None and prepared.histology is None and prepared.mask is None
    assert quality_figures(prepared.result)["mi_margin"] < profile.registration.min_mi_margin
