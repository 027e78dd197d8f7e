"""The synthetic dataset: determinism, the physical effects later chapters measure, ground truth."""

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

from vstain.config import load_profile
from vstain.io import read_tiff
from vstain.manifest import load_manifest
from vstain.phantom import (LABELS, beamtime_params, ground_truth_pair, load_sample, make_sample, plane_grid,
                            session_params, simulate_ct, stain_labels)
from vstain.phantom.section import histology_to_plane, plane_to_volume
from vstain.stages.dataset import ensure_dataset, generate_dataset

CFG = load_profile("smoke").dataset


@pytest.fixture(scope="module")
def samples():
    return {
        (m, s): make_sample(CFG, f"{s}_{m}", m, s, beamtime=1, session=1, seed=11)
        for m, s in [("Mg", "toluidine_blue"), ("Ti", "toluidine_blue"), ("PEEK", "toluidine_blue"), ("Mg", "he")]
    }


def test_same_seed_same_arrays_other_seed_differs(samples):
    a = samples[("Mg", "toluidine_blue")]
    b = make_sample(CFG, "x", "Mg", "toluidine_blue", beamtime=1, session=1, seed=11)
    c = make_sample(CFG, "x", "Mg", "toluidine_blue", beamtime=1, session=1, seed=12)
    for name in ("ct_volume", "labels_volume", "histology", "section_labels", "affine", "plane_point"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.ct_volume, c.ct_volume)
    assert not np.array_equal(a.histology, c.histology)
    assert not np.allclose(a.affine, c.affine)


def test_every_tissue_is_present(samples):
    mg = samples[("Mg", "toluidine_blue")]
    present = set(np.unique(mg.labels_volume))
    assert present == set(LABELS.values())  # incl. degradation layer and the tube wall
    ti = samples[("Ti", "toluidine_blue")]
    assert LABELS["degradation_layer"] not in set(np.unique(ti.labels_volume))
    assert LABELS["holder_wall"] not in set(np.unique(mg.section_labels))  # CT only


def _mean(image, labels, name):
    return image[labels == LABELS[name]].mean(axis=0)


def test_ct_contrast_and_screw_material_ambiguity(samples):
    means = {}
    for material in ("Mg", "Ti", "PEEK"):
        s = samples[(material, "toluidine_blue")]
        bone = _mean(s.ct_volume, s.labels_volume, "dense_bone")
        background = _mean(s.ct_volume, s.labels_volume, "background")
        means[material] = (_mean(s.ct_volume, s.labels_volume, "screw") - background) / (bone - background)
        assert bone > background  # bone bright, background dark
    assert abs(means["Mg"] - 1) < 0.3  # Mg close to bone
    assert means["Ti"] > 1.5  # Ti brighter
    assert means["PEEK"] < 0.55  # PEEK darker


def test_toluidine_blue_colours(samples):
    s = samples[("Mg", "toluidine_blue")]
    h, lab = s.histology.astype(float), s.section_labels
    background = _mean(h, lab, "background")
    bone, new_bone, soft = (_mean(h, lab, n) for n in ("dense_bone", "new_bone", "soft_tissue"))
    assert background.min() > 200  # white
    # paper 2.1: bone purple (red and blue over green) and darker than the soft tissue, which is bluish
    assert bone.mean() < soft.mean() < background.mean()
    assert bone[0] > bone[1] + 20 and bone[2] > bone[1] + 20
    assert soft[2] > soft[0] + 20 and soft[2] > soft[1] + 20
    assert new_bone[2] - new_bone[0] > bone[2] - bone[0]  # new bone bright blue
    for material in ("Mg", "Ti", "PEEK"):  # all screws black
        t = samples[(material, "toluidine_blue")]
        assert _mean(t.histology.astype(float), t.section_labels, "screw").max() < 40
    assert s.fov_mask.all()


def test_he_laser_cut_section(samples):
    s = samples[("Mg", "he")]
    h, lab, fov = s.histology.astype(float), s.section_labels, s.fov_mask
    assert 0.2 < fov.mean() < 0.95
    rows, cols = np.nonzero(fov)
    assert fov[rows.min():rows.max() + 1, cols.min():cols.max() + 1].mean() < 0.97  # not a rectangle
    assert (s.histology[~fov] == 0).all()  # black outside the stitched tiles
    screw = (lab == LABELS["screw"]) & fov
    bone = (lab == LABELS["dense_bone"]) & fov
    assert h[screw].mean(axis=0).min() > 180  # missing screw: white
    red = h[bone].mean(axis=0)
    assert red[0] > red[1] + 60  # mineralised bone deep pink-red
    soft = h[(lab == LABELS["soft_tissue"]) & fov].mean(axis=0)
    assert soft[2] > soft[1] and soft[0] > soft[1]  # purple


def test_section_is_oblique_inside_the_volume_at_finer_pixels(samples):
    for s in samples.values():
        axis = s.normal_axis
        tilt = np.degrees(np.arccos(abs(s.plane_normal[axis])))
        assert tilt == pytest.approx(s.details["tilt_deg"]) and tilt <= CFG.max_tilt_deg
        np.testing.assert_allclose(s.plane_axes @ s.plane_axes.T, np.eye(2), atol=1e-9)
        points = plane_grid(s)
        inside = np.all((points >= 0) & (points <= np.asarray(s.ct_volume.shape) - 1), axis=-1)
        tissue = ndi.map_coordinates(s.labels_volume, np.moveaxis(points, -1, 0), order=0, mode="nearest") != 0
        assert inside[tissue].mean() > 0.9  # a steep tilt may take the block's rim out of a thin volume
        assert s.histology_pixel_um < s.ct_voxel_um
        ratio = s.ct_voxel_um / s.histology_pixel_um
        assert abs(s.histology.shape[0] - ratio * s.plane_shape[0]) <= 1


def _consistency(s, labels=None):
    """Agreement (inside the sample) of the label volume resampled through the true plane and affine
    with the section's labels (or ``labels``), and the same for a plane shifted 3 voxels along its normal."""
    labels = s.section_labels if labels is None else labels
    height, width = labels.shape
    yx = np.stack(np.meshgrid(np.arange(height), np.arange(width), indexing="ij"), -1).reshape(-1, 2)
    zyx = s.histology_to_volume(yx)
    np.testing.assert_allclose(zyx, plane_to_volume(s.plane_point, s.plane_axes, histology_to_plane(s.affine, yx)))
    inside = labels != LABELS["background"]
    agreements = []
    for offset in (0, 3):
        resampled = ndi.map_coordinates(s.labels_volume, (zyx + offset * s.plane_normal).T, order=0,
                                        mode="nearest").reshape(height, width)
        resampled[resampled == LABELS["holder_wall"]] = LABELS["background"]
        agreements.append((resampled[inside] == labels[inside]).mean())
    return agreements


@pytest.mark.slow
def test_ground_truth_consistency():
    """Quick-profile pairs: the aligned twin's labels are the label volume resampled on the true plane through
    the true affine (> 95 % inside the sample); the prepared section is only partly aligned (the paper's
    regime: soft tissue moved, cracks opened, the section warped in and out of its plane)."""
    cfg = load_profile("quick").dataset
    for seed, (material, stain) in enumerate([("Mg", "toluidine_blue"), ("Ti", "he"), ("PEEK", "toluidine_blue")]):
        s = make_sample(cfg, "q", material, stain, beamtime=seed, session=seed, seed=100 + seed)
        true_plane, wrong_plane = _consistency(s, s.twin_labels)
        assert true_plane > 0.95, (material, true_plane)
        assert wrong_plane < true_plane - 0.03
        prepared, _ = _consistency(s)
        assert 0.6 < prepared < true_plane - 0.03, (material, prepared, true_plane)


def test_misalignment_strength_is_one_dial():
    """Strength 0: the slide's labels are its twin's; the agreement with the CT's plane falls as the strength grows."""
    cfg = load_profile("quick").dataset
    agreements = []
    for strength in (0.0, 1.0, 2.5):
        s = make_sample(dataclasses.replace(cfg, misalignment_strength=strength), "q", "Mg", "toluidine_blue",
                        beamtime=0, session=0, seed=21)
        if strength == 0:
            np.testing.assert_array_equal(s.section_labels, s.twin_labels)
            assert not (s.artefacts == 1).any()  # no crack opened
        agreements.append(_consistency(s)[0])
    assert agreements[0] > agreements[1] > agreements[2], agreements


def test_ground_truth_consistency_smoke(samples):
    """The tiny smoke volumes are coarser (more boundary voxels) but still consistent."""
    for s in samples.values():
        true_plane, wrong_plane = _consistency(s)
        assert true_plane > 0.92, (s.pair_id, true_plane)
        assert wrong_plane < true_plane - 0.03


def test_histology_only_artefacts_and_soft_tissue_shift(samples):
    s = samples[("Mg", "toluidine_blue")]
    assert s.artefacts is not None and (s.artefacts == 2).any()  # stain droplets
    assert s.details["artefacts"]["saw_mark_period_px"] > 0


def test_stain_labels_on_a_volume_and_session_drift():
    labels = np.full((4, 6, 6), LABELS["background"], np.uint8)
    labels[:, 2:4, 2:4] = LABELS["dense_bone"]
    rgb = stain_labels(labels, "toluidine_blue", session_params("toluidine_blue", 0), np.random.default_rng(0))
    assert rgb.shape == (4, 6, 6, 3) and rgb.dtype == np.uint8
    white = [np.asarray(session_params("toluidine_blue", k)["white"]) for k in range(4)]
    assert max(np.abs(w - white[0]).max() for w in white[1:]) > 2  # white balance drifts between sessions
    with pytest.raises(ValueError, match="stain"):
        stain_labels(labels, "gram", session_params("he", 0), np.random.default_rng(0))


def test_beamtimes_differ_in_gain_and_offset():
    labels = np.zeros((4, 16, 16), np.uint8)
    labels[:, 4:12, 4:12] = LABELS["dense_bone"]
    a, b = (simulate_ct(labels, "Mg", beamtime_params(k), np.random.default_rng(0)) for k in (0, 1))
    assert abs(a[:, 8, 8].mean() - b[:, 8, 8].mean()) > 100
    with pytest.raises(ValueError, match="material"):
        make_sample(CFG, "x", "steel", "he", 0, 0, 0)


def test_ground_truth_pair(samples):
    for s in samples.values():
        pair = ground_truth_pair(s)
        assert pair.ct.dtype == np.uint16 and pair.histology.shape == pair.ct.shape + (3,)
        assert 0.2 < pair.mask.mean() <= 1.0
        assert pair.pixel_size_um == s.ct_voxel_um
    pair = ground_truth_pair(samples[("Ti", "toluidine_blue")], normalised=False)
    assert pair.ct.dtype == np.float32


def test_written_dataset_round_trip_and_idempotence(smoke_dataset):
    folder = Path(smoke_dataset).parent
    sample = load_sample(folder / "tb_mg_03")
    meta = json.loads((folder / "tb_mg_03" / "truth.json").read_text())
    again = make_sample(CFG, "tb_mg_03", "Mg", "toluidine_blue", meta["beamtime"], meta["session"],
                        meta["details"]["seed"])
    np.testing.assert_array_equal(sample.ct_volume, again.ct_volume)
    np.testing.assert_array_equal(sample.histology, again.histology)
    np.testing.assert_allclose(sample.affine, again.affine)
    assert sample.ct_voxel_um == CFG.ct_voxel_um and sample.histology_pixel_um == CFG.histology_pixel_um
    before = {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}
    assert ensure_dataset(load_profile("smoke"), folder, progress=False) == smoke_dataset
    after = {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}
    assert before == after  # nothing regenerated
    (folder / "tb_ti_01" / "truth.json").unlink()
    ensure_dataset(load_profile("smoke"), folder, progress=False)
    assert (folder / "tb_ti_01" / "truth.json").is_file()
    assert (folder / "tb_mg_03" / "ct.tif").stat().st_mtime_ns == before[folder / "tb_mg_03" / "ct.tif"]


def test_cli_phantom(smoke_dataset, capsys):
    from vstain.cli import main

    folder = Path(smoke_dataset).parent
    assert main(["phantom", "--profile", "smoke", "--out", str(folder), "--quiet"]) == 0
    assert str(smoke_dataset) in capsys.readouterr().out
    assert main(["phantom", "--profile", "nonexistent", "--quiet"]) == 2
    assert "nonexistent" in capsys.readouterr().err


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _alter(path):
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # one pixel of the last slice: the header still reads
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_truncate, _alter], ids=["truncated", "altered"])
def test_phantom_force_regenerates_damaged_files(smoke_dataset, tmp_path, capsys, damage):
    from vstain.cli import main

    fresh = Path(smoke_dataset).parent
    folder = tmp_path / "dataset"
    shutil.copytree(fresh, folder)
    ct = folder / "tb_mg_01" / "ct.tif"
    damage(ct)
    check = ["check-manifest", "--manifest", str(folder / "manifest.yaml"), "--profile", "smoke",
             "--split", str(tmp_path / "split.csv")]
    assert main(check) == 2
    err = capsys.readouterr().err
    assert "tb_mg_01" in err and "ct_sha256" in err and f"vstain phantom --profile smoke --out {folder} --force" in err
    # without --force the complete dataset is kept as it is: its manifest still records the good file
    assert main(["phantom", "--profile", "smoke", "--out", str(folder), "--quiet"]) == 0
    assert main(check) == 2
    capsys.readouterr()
    assert main(["phantom", "--profile", "smoke", "--out", str(folder), "--quiet", "--force"]) == 0
    assert main(check) == 0, capsys.readouterr().err
    for pair in ("tb_mg_01", "he_ti_01"):
        for name in ("ct.tif", "histology.tif"):
            again, size, _ = read_tiff(folder / pair / name)
            original, original_size, _ = read_tiff(fresh / pair / name)
            np.testing.assert_array_equal(again, original)
            assert size == original_size
    assert (folder / "split.csv").read_bytes() == (fresh / "split.csv").read_bytes()


def test_regenerating_repairs_only_the_damaged_samples(smoke_dataset, tmp_path):
    fresh = Path(smoke_dataset).parent
    folder = tmp_path / "dataset"
    shutil.copytree(fresh, folder)
    _alter(folder / "tb_peek_01" / "histology.tif")
    kept = (folder / "tb_mg_02" / "ct.tif").stat().st_mtime_ns
    generate_dataset(load_profile("smoke"), folder, progress=False)  # no force: the manifest's checksums tell
    load_manifest(folder / "manifest.yaml")  # verifies every checksum and header
    np.testing.assert_array_equal(read_tiff(folder / "tb_peek_01" / "histology.tif")[0],
                                  read_tiff(fresh / "tb_peek_01" / "histology.tif")[0])
    assert (folder / "tb_mg_02" / "ct.tif").stat().st_mtime_ns == kept  # the intact samples are kept


def test_sections_lie_at_any_rotation_and_some_face_down():
    """The slide's affine: rotation uniform over the profile's range, the profile's fraction mirrored
    (negative determinant exactly when mirrored), scale still the pixel-size ratio."""
    from vstain.phantom.section import draw_affine

    rng = np.random.default_rng(5)
    draws = [draw_affine((96, 96), 0.5, rng, rotation_deg=CFG.slide_rotation_deg,
                         mirror_fraction=CFG.mirror_fraction) for _ in range(400)]
    angles = np.array([d[2]["rotation_deg"] for d in draws])
    mirrored = np.array([d[2]["mirrored"] for d in draws])
    dets = np.array([np.linalg.det(d[0][:2, :2]) for d in draws])
    assert CFG.slide_rotation_deg == 180.0
    assert np.histogram(angles, bins=4, range=(-180, 180))[0].min() > 60  # every quarter of the circle
    assert abs(mirrored.mean() - CFG.mirror_fraction) < 0.07
    assert ((dets < 0) == mirrored).all()
    np.testing.assert_allclose(np.sqrt(np.abs(dets)), 0.5, rtol=0.06)
    upright = [draw_affine((96, 96), 0.5, rng, rotation_deg=5.0, mirror_fraction=0.0) for _ in range(50)]
    assert max(abs(d[2]["rotation_deg"]) for d in upright) <= 5.0 and not any(d[2]["mirrored"] for d in upright)


def test_tilts_and_normal_axes_follow_the_dataset_profile():
    """Tilts uniform up to dataset.max_tilt_deg; other_axis_fraction of the normals along y or x."""
    import types

    from vstain.phantom.section import draw_normal_axis, draw_plane

    rng = np.random.default_rng(3)
    geometry = types.SimpleNamespace(shape=(24, 96, 96), screw_axis=(11.5, 47.5), core_radius=5.0)
    tilts = np.array([np.degrees(np.arccos(abs(draw_plane(geometry, rng, 15.0)[2][0]))) for _ in range(400)])
    assert tilts.max() <= 15.0 and tilts.max() > 14.0 and np.histogram(tilts, bins=3, range=(0, 15))[0].min() > 100
    axes = np.array([draw_normal_axis(rng, 0.3) for _ in range(1000)])
    assert abs((axes != 0).mean() - 0.3) < 0.05 and (axes == 1).sum() > 100 and (axes == 2).sum() > 100
    assert (np.array([draw_normal_axis(rng, 0.0) for _ in range(50)]) == 0).all()


@pytest.mark.parametrize("axis", ["y", "x"])
def test_a_block_turned_in_its_tube_is_cut_along_another_volume_axis(axis):
    """A sample drawn with its normal along y or x: the volume is the block turned (a rotation), the true
    plane lies across that axis, and the section still agrees with the label volume through it."""
    cfg = dataclasses.replace(CFG, other_axis_fraction=0.3, min_tilt_deg=0.0, max_tilt_deg=15.0)  # as quick draws
    for seed in range(60):
        s = make_sample(cfg, "turned", "Mg", "toluidine_blue", beamtime=0, session=0, seed=seed)
        if s.details["normal_axis"] == axis:
            break
    assert s.details["normal_axis"] == axis and s.normal_axis == "zyx".index(axis)
    assert s.ct_volume.shape[s.normal_axis] == CFG.ct_shape[0]  # the thin axis of the block's volume
    assert abs(s.plane_normal[s.normal_axis]) > np.cos(np.radians(cfg.max_tilt_deg))
    np.testing.assert_allclose(np.cross(s.plane_axes[0], s.plane_axes[1]), s.plane_normal, atol=1e-9)
    assert s.plane_shape == tuple(CFG.ct_shape[1:])
    true_plane, wrong_plane = _consistency(s)
    assert true_plane > 0.9 and wrong_plane < true_plane - 0.03
    pair = ground_truth_pair(s)
    assert pair.ct.shape == pair.histology.shape[:2] and pair.mask.mean() > 0.2


def test_a_mirrored_section_is_the_plane_seen_face_down():
    """A mirrored sample's labels still agree with the label volume through the true plane and affine."""
    for seed in range(20):  # about 30 % are mirrored: the first comes soon
        s = make_sample(CFG, "mirrored", "Mg", "toluidine_blue", beamtime=0, session=0, seed=seed)
        if s.details["affine"]["mirrored"]:
            break
    assert s.details["affine"]["mirrored"] and np.linalg.det(s.affine[:2, :2]) < 0
    true_plane, wrong_plane = _consistency(s)
    # smoke's coarse voxels: about 0.93 for either face (quick: > 0.95, test_ground_truth_consistency)
    assert true_plane > 0.9 and wrong_plane < true_plane - 0.1


@pytest.mark.parametrize("material, stain", [("Mg", "toluidine_blue"), ("Ti", "he")])
def test_slide_rendered_in_strips_is_the_slide_rendered_whole(samples, material, stain):
    """The histology is rendered in row strips (memory bounded at the paper's size); the strip height must
    not change a pixel: labels, artefacts and RGB of 7-row strips equal the one-strip rendering."""
    whole = make_sample(CFG, "p", material, stain, beamtime=1, session=1, seed=11, strip_pixels=10**9)
    width = whole.histology.shape[1]
    strips = make_sample(CFG, "p", material, stain, beamtime=1, session=1, seed=11, strip_pixels=7 * width)
    for name in ("histology", "section_labels", "artefacts", "fov_mask"):
        np.testing.assert_array_equal(getattr(strips, name), getattr(whole, name), err_msg=name)
    assert strips.details == whole.details
    # the strips did cross the artefacts and every label the section holds
    assert len(np.unique(whole.section_labels)) >= 5 and whole.artefacts.any()
    if stain == "he":
        assert whole.details["artefacts"].get("tissue_loss_px", 0) > 0


def test_noise_rows_redraw_any_rows_of_the_whole_field():
    from vstain.phantom.render import NoiseRows

    for dtype in (np.float32, np.float64):
        rng = np.random.default_rng(5)
        rows = NoiseRows(rng, (23, 6, 3), block_rows=4, dtype=dtype)
        reference = np.random.default_rng(5)
        whole = reference.standard_normal((23, 6, 3), dtype=dtype).astype(np.float32)
        for lo, hi in [(0, 23), (3, 9), (8, 12), (22, 23)]:
            np.testing.assert_array_equal(rows.rows(lo, hi), whole[lo:hi])
        assert rng.random() == reference.random()  # the generator continues where a whole draw leaves it


def test_large_slide_written_as_pyramidal_ome_tiff_and_read_back(tmp_path, monkeypatch, samples):
    """Slides above PYRAMID_MIN_SIDE are written as pyramids (as scanners write them); load_sample reads level 0."""
    import vstain.phantom.dataset as dataset
    from vstain.phantom import write_sample
    from vstain.slide_io import read_slide

    sample = samples[("Mg", "toluidine_blue")]
    monkeypatch.setattr(dataset, "PYRAMID_MIN_SIDE", 100)
    monkeypatch.setattr(dataset, "PYRAMID_TOP_SIDE", 50)
    write_sample(tmp_path / "p", sample, {})
    _, level_um, info = read_slide(tmp_path / "p" / "histology.tif", target_um=4 * sample.histology_pixel_um)
    assert info["n_levels"] == dataset.pyramid_levels(sample.histology.shape) == 3
    assert info["level"] == 2 and level_um == pytest.approx(4 * sample.histology_pixel_um)
    back = load_sample(tmp_path / "p")
    np.testing.assert_array_equal(back.histology, sample.histology)
    assert back.histology_pixel_um == pytest.approx(sample.histology_pixel_um)


def test_truth_on_a_pyramid_level_is_measured_in_the_levels_pixels(samples):
    """Registration on a coarser slide level is measured against at_pyramid_level's truth, not the full-size one."""
    import types

    from vstain.phantom.sample import at_pyramid_level
    from vstain.phantom.truth import registration_errors

    sample = samples[("Mg", "toluidine_blue")]
    level = at_pyramid_level(sample, 2)
    perfect = types.SimpleNamespace(plane_normal=sample.plane_normal / np.linalg.norm(sample.plane_normal),
                                    histology_to_volume=level.histology_to_volume)  # the true fit on the level
    assert registration_errors(perfect, level)["tre_max_px"] < 1e-9
    assert registration_errors(perfect, sample)["tre_median_px"] > 1.0  # the full-size truth would call it wrong
    assert level.section_labels.shape == (96, 96) and level.histology_pixel_um == 2 * sample.histology_pixel_um


def test_a_thick_section_adds_the_stain_of_its_layers():
    """Hand-built layers: a pixel with bone in one of two layers has the Beer-Lambert mean of their densities,
    and a dot in a layer beyond the depth of field spreads (defocus) while one in focus stays sharp."""
    from vstain.phantom.render import render_slide
    from vstain.phantom.section import SectionPreparation

    params = dict(session_params("toluidine_blue", 0), texture_amplitude=0.0, grain=0.0, blur_sigma_px=0.0)
    bone, soft = LABELS["dense_bone"], LABELS["soft_tissue"]
    layers = np.full((2, 16, 16), soft, np.uint8)
    layers[0, :, :8] = bone
    prep = SectionPreparation(thickness_um=4.0, sublayers=2, depth_of_field_um=10.0)
    rgb, _, _ = render_slide(layers, "toluidine_blue", params, (np.random.default_rng(0), np.random.default_rng(1)),
                             preparation=prep, pixel_um=1.0, surface_artefacts=False)
    one = {}
    for name, code in (("bone", bone), ("soft", soft)):
        flat = np.full((1, 16, 16), code, np.uint8)
        one[name] = render_slide(flat, "toluidine_blue", params, (np.random.default_rng(0), np.random.default_rng(1)),
                                 pixel_um=1.0, surface_artefacts=False)[0][8, 12].astype(float)
    white = np.asarray(params["white"])
    expected = white * np.sqrt((one["bone"] / white) * (one["soft"] / white))  # mean optical density
    np.testing.assert_allclose(rgb[8, 4], expected, atol=2.0)
    assert np.abs(rgb[8, 12].astype(float) - one["soft"]).max() <= 1  # soft in both layers: as one layer

    dot = np.full((3, 41, 41), LABELS["background"], np.uint8)
    far = SectionPreparation(thickness_um=60.0, sublayers=3, depth_of_field_um=10.0, objective_na=0.25)
    spreads = []
    for k in (1, 2):  # the middle layer is in focus, the last 20 um beyond its depth of field
        layers = dot.copy()
        layers[k, 19:22, 19:22] = LABELS["screw"]
        rgb, _, _ = render_slide(layers, "toluidine_blue", params, (np.random.default_rng(0), np.random.default_rng(1)),
                                 preparation=far, pixel_um=1.0, surface_artefacts=False)
        spreads.append(int((rgb[..., 0] < white[0] - 1).sum()))
    assert spreads[0] == 9 and spreads[1] > 30, spreads


def test_ct_artefacts_each_do_what_they_say():
    """Hand-built label volumes: blur from the profile's range, marrow air, rings about the axis, streaks for Ti only."""
    from vstain.phantom.ct import CTArtefacts

    labels = np.zeros((4, 48, 48), np.uint8)
    labels[:, 8:40, 8:40] = LABELS["soft_tissue"]
    labels[:, 20:28, 8:40] = LABELS["screw"]
    quiet = dict(beamtime_params(0), noise=0.0, mineral_texture=0.0)
    sharp = simulate_ct(labels, "Mg", dict(quiet, blur_sigma=0.5), np.random.default_rng(0))
    coarse = simulate_ct(labels, "Mg", dict(quiet, blur_sigma=2.0), np.random.default_rng(0))
    assert np.abs(np.diff(coarse, axis=2)).max() < np.abs(np.diff(sharp, axis=2)).max()
    assert beamtime_params(0, (2.0, 2.0))["blur_sigma"] == 2.0
    with pytest.raises(ValueError, match="blur_voxels"):
        beamtime_params(0, (3.0, 1.0))
    dry = simulate_ct(labels, "Mg", quiet, np.random.default_rng(0), CTArtefacts(marrow_air_fraction=0.5))
    marrow = (labels == LABELS["soft_tissue"])[:, 10:38, 10:38]
    air = np.isclose(dry[:, 10:38, 10:38][marrow], quiet["offset"], atol=0.05 * quiet["gain"])
    assert 0.2 < air.mean() < 0.6
    empty = np.zeros((2, 48, 48), np.uint8)
    ringed = simulate_ct(empty, "Mg", quiet, np.random.default_rng(0), CTArtefacts(ring_amplitude=0.1))
    radius = np.hypot(*np.meshgrid(np.arange(48) - 23.5, np.arange(48) - 23.5, indexing="ij"))
    ring_std = [ringed[0][np.abs(radius - r) < 0.5].std() for r in (5.0, 10.0, 15.0)]
    assert max(ring_std) < 0.25 * ringed[0].std()  # constant along each ring, varying across
    streaked = {m: simulate_ct(labels, m, quiet, np.random.default_rng(0), CTArtefacts(metal_streak_amplitude=0.3))
                for m in ("Ti", "Mg")}
    plain = {m: simulate_ct(labels, m, quiet, np.random.default_rng(0)) for m in ("Ti", "Mg")}
    assert np.abs(streaked["Ti"] - plain["Ti"]).max() > 0.05 * quiet["gain"]
    np.testing.assert_array_equal(streaked["Mg"], plain["Mg"])
    with pytest.raises(ValueError, match="marrow_air_fraction"):
        CTArtefacts(marrow_air_fraction=1.5)


def test_the_twin_is_the_same_slide_without_preparation():
    """Quick pair: the twin shares the stain session, camera and light, but has no droplet, crack or moved tissue."""
    cfg = load_profile("quick").dataset
    s = make_sample(cfg, "q", "Mg", "toluidine_blue", beamtime=0, session=1, seed=7)
    assert s.histology_twin.shape == s.histology.shape and s.histology_twin.dtype == np.uint8
    same = (s.section_labels == s.twin_labels) & (s.artefacts == 0)
    diff = np.abs(s.histology.astype(int) - s.histology_twin.astype(int)).max(axis=-1)
    assert np.median(diff[same]) < np.median(diff[~same])
    gt, twin = ground_truth_pair(s), ground_truth_pair(s, twin=True)
    assert gt.ct.shape == twin.ct.shape and twin.extras["source"] == "ground_truth_twin"
    np.testing.assert_array_equal(gt.ct, twin.ct)
