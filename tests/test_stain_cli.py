"""`vstain stain`: a user's own CT volume through a trained checkpoint, and every bad input."""

import contextlib
import json
import os
import shutil
import sys
import threading

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch
import zarr

from vstain import cli
from vstain.config import load_profile
from vstain.io import read_tiff, write_tiff
from vstain.layout import model_dir, stage_dir, volume_dir
from vstain.models import architecture, build_generator
from vstain.models.checkpoint import CHECKPOINT_FORMAT
from vstain.stages import stain as stain_stage
from vstain.stages import volume as volume_stage
from vstain.stages import upstream


def make_checkpoint(path, *, directions=None, ngf=4, weights_ngf=None, seed=0):
    training = load_profile("smoke").training
    arch = architecture("mod_cyclegan", training)
    arch["generator"].update(ngf=ngf, n_blocks=1)
    weights_arch = dict(arch["generator"], ngf=weights_ngf or ngf)
    torch.manual_seed(seed)  # the same seed, the same weights
    state = build_generator(weights_arch).state_dict()
    directions = directions or {"ct_to_histology": "G_XY", "histology_to_ct": "G_YX"}
    torch.save({"format": CHECKPOINT_FORMAT, "model": "mod_cyclegan", "architecture": arch, "patch_size": 16,
                "directions": directions, "invert_ct": False, "epoch": 1, "component": "last",
                "generators": {name: state for name in directions.values()}}, path)
    return path


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def structured_ct(shape=(5, 20, 24), *, background=0.1, tissue=0.3, bone=0.8, seed=0):
    """A CT volume in any scale with what the automatic ROIs look for: background, soft tissue, bone."""
    depth, height, width = shape
    y, x = np.mgrid[:height, :width]
    r = np.hypot(y - (height - 1) / 2, x - (width - 1) / 2) / (min(height, width) / 2)
    image = np.where(r < 0.75, tissue, background) + np.where(r < 0.45, bone - tissue, 0.0)
    image[(r >= 0.2) & (r < 0.3)] = tissue + 0.7 * (bone - tissue)  # new bone: a class just below dense bone
    noise = np.random.default_rng(seed).normal(0, 0.01 * (bone - background), shape)
    return (image[None] + noise).astype(np.float32)


@pytest.fixture
def ct_stack(tmp_path):
    data = np.rint(20000 + 30000 * structured_ct()).astype(np.uint16)  # a scale of its own
    write_tiff(tmp_path / "ct.tif", data, (4.0, 2.0, 2.0))
    return tmp_path / "ct.tif"


def run(argv, capsys):
    code = cli.main(["stain", *map(str, argv)])
    return code, capsys.readouterr().err


def test_stain_a_tiff_stack_carries_the_voxel_size(tmp_path, ct_stack, capsys):
    ckpt = make_checkpoint(tmp_path / "last.pt")
    for axes in ("z", "zyx"):
        out = tmp_path / f"stained_{axes}.tif"
        code, err = run(["--checkpoint", ckpt, "--input", ct_stack, "--output", out, "--axes", axes,
                          "--step", "8"], capsys)
        assert code == 0, err
        image, spacing, meta = read_tiff(out)
        assert image.shape == (5, 20, 24, 3) and image.dtype == np.uint8
        assert spacing == (4.0, 2.0, 2.0) and meta["axes"] == axes and meta["checkpoint"] == str(ckpt)
        assert image.std() > 0  # the generator produced something, not a constant fill


def test_a_2d_image_is_refused_with_advice_that_works(tmp_path, capsys):
    image = np.rint(20000 + 30000 * structured_ct((1, 20, 24))[0]).astype(np.uint16)
    write_tiff(tmp_path / "slice.tif", image, 2.0)
    ckpt = make_checkpoint(tmp_path / "c.pt")
    code, err = run(["--checkpoint", ckpt, "--input", tmp_path / "slice.tif", "--output", tmp_path / "o.tif"], capsys)
    assert code == 2 and "2D image" in err and "slice.tif" in err and "folder of its own" in err
    (tmp_path / "one").mkdir()
    (tmp_path / "slice.tif").rename(tmp_path / "one" / "slice_0.tif")  # as the message says
    code, err = run(["--checkpoint", ckpt, "--input", tmp_path / "one", "--voxel-size", "2", "2", "2", "--output",
                     tmp_path / "o.tif", "--step", "8"], capsys)
    assert code == 0, err
    stained = read_tiff(tmp_path / "o.tif")[0]
    assert stained.reshape(-1, 20, 24, 3).shape == (1, 20, 24, 3) and stained.std() > 0  # one slice, stained


def test_a_volume_without_voxel_size_says_use_voxel_size(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "bare.tif", structured_ct((4, 20, 20)), photometric="minisblack")
    ckpt = make_checkpoint(tmp_path / "c.pt")
    code, err = run(["--checkpoint", ckpt, "--input", tmp_path / "bare.tif", "--output", tmp_path / "o.tif"], capsys)
    assert code == 2 and "--voxel-size" in err and "bare.tif" in err
    code, err = run(["--checkpoint", ckpt, "--input", tmp_path / "bare.tif", "--output", tmp_path / "o.tif",
                     "--voxel-size", "3", "1", "1"], capsys)
    assert code == 0, err
    assert read_tiff(tmp_path / "o.tif")[1] == (3.0, 1.0, 1.0)


def test_reverse_generator_checkpoint_is_refused(tmp_path, ct_stack, capsys):
    ckpt = make_checkpoint(tmp_path / "reverse.pt", directions={"histology_to_ct": "G_YX"})
    code, err = run(["--checkpoint", ckpt, "--input", ct_stack, "--output", tmp_path / "o.tif"], capsys)
    assert code == 2 and "reverse.pt" in err and "ct_to_histology" in err
    assert not (tmp_path / "o.tif").exists()


def test_checkpoint_of_another_architecture_is_refused(tmp_path, ct_stack, capsys):
    ckpt = make_checkpoint(tmp_path / "other.pt", ngf=4, weights_ngf=8)
    code, err = run(["--checkpoint", ckpt, "--input", ct_stack, "--output", tmp_path / "o.tif"], capsys)
    assert code == 2 and "other.pt" in err and "architecture" in err
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    code, err = run(["--checkpoint", tmp_path / "junk.pt", "--input", ct_stack, "--output", tmp_path / "o.tif"], capsys)
    assert code == 2 and "junk.pt" in err


def test_existing_output_needs_overwrite(tmp_path, ct_stack, capsys):
    ckpt = make_checkpoint(tmp_path / "c.pt")
    out = tmp_path / "o.tif"
    out.write_bytes(b"keep me")
    code, err = run(["--checkpoint", ckpt, "--input", ct_stack, "--output", out], capsys)
    assert code == 2 and "--overwrite" in err and out.read_bytes() == b"keep me"
    code, err = run(["--checkpoint", ckpt, "--input", ct_stack, "--output", out, "--overwrite"], capsys)
    assert code == 0 and read_tiff(out)[0].shape == (5, 20, 24, 3)


def test_zarr_with_wrong_number_of_dimensions(tmp_path, capsys):
    zarr.create_array(str(tmp_path / "ct4d.zarr"), shape=(2, 3, 20, 20), dtype=np.uint16)
    code, err = run(["--checkpoint", make_checkpoint(tmp_path / "c.pt"), "--input", tmp_path / "ct4d.zarr",
                     "--output", tmp_path / "o.tif", "--voxel-size", "1", "1", "1"], capsys)
    assert code == 2 and "4 dimensions" in err and "ct4d.zarr" in err


def test_interrupted_run_leaves_no_output(tmp_path, ct_stack, capsys, monkeypatch):
    original = stain_stage.make_slice_stainer

    def interrupting(*args, **kwargs):
        stainer, calls = original(*args, **kwargs), []

        def stain(ct):
            calls.append(1)
            if len(calls) == 3:
                raise KeyboardInterrupt
            return stainer(ct)
        return stain

    monkeypatch.setattr(stain_stage, "make_slice_stainer", interrupting)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, err = run(["--checkpoint", make_checkpoint(tmp_path / "c.pt"), "--input", ct_stack,
                     "--output", out_dir / "o.tif"], capsys)
    assert code == 130 and "interrupted" in err
    assert list(out_dir.iterdir()) == []


def test_an_output_another_run_wrote_meanwhile_is_kept(tmp_path, ct_stack, capsys, monkeypatch):
    """Two runs on one output: the one that finishes second stops at its final rename, unless --overwrite."""
    original = stain_stage.make_slice_stainer
    out = tmp_path / "o.tif"

    def other_run_finishes_first(*args, **kwargs):
        stainer, calls = original(*args, **kwargs), []

        def stain(ct):
            calls.append(1)
            if len(calls) == 2 and not out.exists():
                out.write_bytes(b"the other run's stain")
            return stainer(ct)
        return stain

    monkeypatch.setattr(stain_stage, "make_slice_stainer", other_run_finishes_first)
    ckpt = make_checkpoint(tmp_path / "c.pt")
    code, err = run(["--checkpoint", ckpt, "--input", ct_stack, "--output", out, "--step", "8"], capsys)
    assert code == 2 and "o.tif: written by another run while this one ran" in err and "--overwrite" in err, err
    assert "wrote" not in err and out.read_bytes() == b"the other run's stain"
    assert not list(tmp_path.glob(".o.tif*"))
    out.unlink()
    code, err = run(["--checkpoint", ckpt, "--input", ct_stack, "--output", out, "--step", "8", "--overwrite"], capsys)
    assert code == 0, err
    assert read_tiff(out)[0].shape == (5, 20, 24, 3)  # asked to replace: this run's stain


def test_no_progress_leaves_stderr_to_messages(tmp_path, ct_stack, capsys):
    ckpt = make_checkpoint(tmp_path / "c.pt")
    code, err = run(["--checkpoint", ckpt, "--input", ct_stack, "--output", tmp_path / "o.tif", "--step", "8",
                     "--no-progress"], capsys)
    assert code == 0 and err.strip().splitlines() == [line for line in err.strip().splitlines()
                                                      if line.startswith("vstain stain: warning:")], err
    code, err = run(["--checkpoint", ckpt, "--input", ct_stack, "--output", tmp_path / "p.tif", "--step", "8"], capsys)
    assert code == 0 and "stain z" in err  # the bar, by default


def test_help_lists_stain(capsys):
    with pytest.raises(SystemExit):
        cli.main(["stain", "--help"])
    assert "--voxel-size" in capsys.readouterr().out


def test_top_level_help_lists_every_command_with_its_options(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    listing = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert name in listing
        configure, run_command = cli.command_functions(name)
        assert callable(configure) and callable(run_command)
    with pytest.raises(SystemExit):
        cli.main(["volume", "--help"])
    assert "--profile" in capsys.readouterr().out


def test_volume_stage_command_runs_the_phantom_stage(monkeypatch, tmp_path, capsys):
    calls = []

    def fake_stage(profile, *, force, progress):
        calls.append((profile, force, progress))
        return tmp_path / "done.json"

    monkeypatch.setattr(volume_stage, "stain_phantom_volume", fake_stage)
    assert cli.main(["volume", "--profile", "smoke", "--force", "--no-progress"]) == 0
    assert calls == [("smoke", True, False)]
    assert str(tmp_path) in capsys.readouterr().out


def test_phantom_volume_stage_on_smoke(smoke_dataset, tmp_path, monkeypatch):
    """The stage on the smoke phantom, with an untrained generator in place of the training stage."""
    monkeypatch.setenv("VSTAIN_RESULTS", str(tmp_path / "results"))
    profile = load_profile("smoke")
    shutil.copytree(smoke_dataset.parent, stage_dir(profile.name, "dataset"))
    trained = []

    def untrained(profile, model, fold, *, progress):
        trained.append((model, fold))
        run = model_dir(profile.name, model, fold)
        run.mkdir(parents=True, exist_ok=True)
        make_checkpoint(run / "last.pt")
        return run / "last.pt"

    def no_rendering(*args, **kwargs):
        # an off-screen VTK context left in the process breaks later torch imports (triton): stay clear of it
        raise volume_stage.RenderingUnavailable("not in this test")

    monkeypatch.setattr(upstream, "selected_checkpoint", untrained)
    monkeypatch.setattr(volume_stage, "render_rgba", no_rendering)
    done = volume_stage.stain_phantom_volume(profile, progress=False)
    out = volume_dir(profile.name)
    assert done == out / "done.json" and trained == [(profile.volume.model, profile.volume.fold)]
    record = json.loads(done.read_text())
    assert record["settings"]["metrics_version"] == volume_stage.METRICS_VERSION
    assert record["rendering"] == {"z": "skipped: not in this test", "zyx": "skipped: not in this test"}
    assert 0 < record["sample_fraction"] < 1 and not list(out.glob("rendering_*.png"))
    ct, voxel, _ = read_tiff(out / "ct.tif")
    assert ct.shape == tuple(profile.dataset.ct_shape) and voxel == (profile.dataset.ct_voxel_um,) * 3
    for name in ("stained_z", "stained_zyx", "truth"):
        image, spacing, _ = read_tiff(out / f"{name}.tif")
        assert image.shape == ct.shape + (3,) and image.dtype == np.uint8 and spacing == voxel, name
    metrics = pd.read_csv(out / "metrics.csv")
    assert list(metrics["variant"]) == ["truth", "single-axis (z)", "fused (zyx, OD mean)"]
    assert metrics.loc[0, "ssim"] == 1.0 and metrics.loc[0, "ssim_sample"] == 1.0
    assert metrics.loc[1:, ["stripe_z", "ssim", "psnr", "stripe_z_sample", "ssim_sample"]].notna().all().all()
    before = os.stat(done).st_mtime_ns
    assert volume_stage.stain_phantom_volume(profile, progress=False) == done  # idempotent
    assert os.stat(done).st_mtime_ns == before and len(trained) == 1


# ------------------------------------------------------------------ bad inputs: one line, exit 2, the file named


def _nan_stack(tmp_path, value):
    data = structured_ct((4, 20, 24))
    data[2, 3, 4] = value
    write_tiff(tmp_path / "bad.tif", data, (4.0, 2.0, 2.0))
    return ["--input", tmp_path / "bad.tif"], "bad.tif"


def _empty_file(tmp_path):
    (tmp_path / "empty.tif").write_bytes(b"")
    return ["--input", tmp_path / "empty.tif"], "empty.tif"


def _text_file(tmp_path):
    (tmp_path / "notes.tif").write_text("not an image\n")
    return ["--input", tmp_path / "notes.tif"], "notes.tif"


def _empty_folder(tmp_path):
    (tmp_path / "slices").mkdir()
    return ["--input", tmp_path / "slices"], "slices"


def _output_under_a_file(tmp_path):
    (tmp_path / "afile").write_text("x")
    return ["--output", tmp_path / "afile" / "out.tif"], "afile"


def _truncated_stack(tmp_path):
    """An interrupted copy of a 24-slice ImageJ stack: read as it is, it was "a 2D image"."""
    write_tiff(tmp_path / "whole.tif", np.rint(1000 * structured_ct((24, 20, 24))).astype(np.uint16), (4.0, 2.0, 2.0))
    data = (tmp_path / "whole.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(data[:int(0.83 * len(data))])
    return ["--input", tmp_path / "cut.tif"], "cut.tif"


def _stack_cut_between_pages(tmp_path):
    """A page-per-slice stack copied up to the end of slice 20 of 24: read as it is, a shorter volume."""
    volume = np.rint(1000 * structured_ct((24, 20, 24))).astype(np.uint16)
    with tifffile.TiffWriter(tmp_path / "whole.tif") as writer:
        for image in volume:
            writer.write(image, contiguous=False, resolution=(0.5, 0.5))
    with tifffile.TiffFile(tmp_path / "whole.tif") as tif:
        boundary = tif.pages[20].offset
    (tmp_path / "cut.tif").write_bytes((tmp_path / "whole.tif").read_bytes()[:boundary])
    return ["--input", tmp_path / "cut.tif", "--voxel-size", "4", "2", "2"], "cut.tif"


def _one_header_stack_cut_short(tmp_path):
    """ImageJ's stack beyond 4 GB (one page header, the slices one after another) copied up to slice 20 of 24."""
    volume = np.rint(1000 * structured_ct((24, 20, 24))).astype(np.uint16)
    tifffile.imwrite(tmp_path / "whole.tif", volume, imagej=True, truncate=True, byteorder=">",
                     resolution=(0.5, 0.5), metadata={"spacing": 4.0, "unit": "um", "axes": "ZYX"})
    with tifffile.TiffFile(tmp_path / "whole.tif") as tif:
        end = tif.pages.first.dataoffsets[0] + 20 * tif.pages.first.nbytes
    (tmp_path / "cut.tif").write_bytes((tmp_path / "whole.tif").read_bytes()[:end])
    return ["--input", tmp_path / "cut.tif"], "cut.tif"


def _folder_with_a_truncated_slice(tmp_path):
    (tmp_path / "slices").mkdir()
    for z, image in enumerate(np.rint(1000 * structured_ct((6, 20, 24))).astype(np.uint16)):
        tifffile.imwrite(tmp_path / "slices" / f"rec_{z:03d}.tif", image)
    damaged = tmp_path / "slices" / "rec_004.tif"
    damaged.write_bytes(damaged.read_bytes()[:500])
    return ["--input", tmp_path / "slices", "--voxel-size", "4", "2", "2"], "rec_004.tif"


def _folder_with_a_corrupt_slice(tmp_path):
    """A compressed slice whose pixel data were overwritten: whole in length, undecodable."""
    (tmp_path / "slices").mkdir()
    for z, image in enumerate(np.rint(1000 * structured_ct((6, 20, 24))).astype(np.uint16)):
        tifffile.imwrite(tmp_path / "slices" / f"rec_{z:03d}.tif", image, compression="zlib")
    damaged = tmp_path / "slices" / "rec_002.tif"
    with tifffile.TiffFile(damaged) as tif:
        start, length = tif.pages[0].dataoffsets[0], tif.pages[0].databytecounts[0]
    data = bytearray(damaged.read_bytes())
    data[start:start + length] = bytes(length)
    damaged.write_bytes(bytes(data))
    return ["--input", tmp_path / "slices", "--voxel-size", "4", "2", "2"], "rec_002.tif"


def _inverted_stack(tmp_path, *extra):
    """Bone dark, air bright: stained as it is, bone and background swap."""
    write_tiff(tmp_path / "inverted.tif", np.rint(20000 + 30000 * (1 - structured_ct())).astype(np.uint16),
               (4.0, 2.0, 2.0))
    return ["--input", tmp_path / "inverted.tif", *extra], "inverted.tif"


def _hdf5(tmp_path, kind):
    """An HDF5 file whose ``/ct`` is not a scan: a mask, complex data, a link to nothing, never written."""
    import h5py

    with h5py.File(tmp_path / "scan.h5", "w") as h5:
        if kind in ("bool", "complex"):
            data = structured_ct() > 0.5 if kind == "bool" else structured_ct().astype(np.complex64)
            h5.create_dataset("ct", data=data).attrs["element_size_um"] = [4.0, 2.0, 2.0]
        elif kind == "soft link":
            h5["ct"] = h5py.SoftLink("/exchange/data")
        elif kind == "external link":
            h5["ct"] = h5py.ExternalLink("elsewhere.h5", "/data")
        else:  # an acquisition stopped part way: slices 3 and 4 never written, they read as the fill value 0
            data = h5.create_dataset("ct", shape=(5, 20, 24), dtype=np.uint16, chunks=(1, 20, 24))
            data[:3] = np.rint(20000 + 30000 * structured_ct())[:3]
            data.attrs["element_size_um"] = [4.0, 2.0, 2.0]
    return ["--input", f"{tmp_path / 'scan.h5'}:/ct"], "scan.h5:/ct"


def _zarr_without_its_dataset(tmp_path):
    import zarr

    root = zarr.open_group(str(tmp_path / "ct.zarr"), mode="w")
    root.attrs["multiscales"] = [{"version": "0.4", "axes": ["z", "y", "x"], "datasets": [
        {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [4.0, 2.0, 2.0]}]}]}]
    return ["--input", tmp_path / "ct.zarr"], "ct.zarr"


def _two_series_in_a_folder(tmp_path):
    """A reconstruction's slices beside another series: read together they were "slices 24 to -1 missing"."""
    (tmp_path / "slices").mkdir()
    for z, image in enumerate(np.rint(1000 * structured_ct((6, 20, 24))).astype(np.uint16)):
        tifffile.imwrite(tmp_path / "slices" / f"rec_{z:04d}.tif", image)
        tifffile.imwrite(tmp_path / "slices" / f"proj_{z:04d}.tif", image)
    return ["--input", tmp_path / "slices", "--voxel-size", "4", "2", "2"], "slices"


def _diverged_checkpoint(tmp_path):
    """A checkpoint saved after training diverged: NaN in one weight made the whole volume black."""
    record = torch.load(make_checkpoint(tmp_path / "diverged.pt"), weights_only=True)
    weights = record["generators"]["G_XY"]
    name = next(k for k, v in weights.items() if v.is_floating_point() and v.ndim > 1)
    weights[name] = torch.full_like(weights[name], float("nan"))
    torch.save(record, tmp_path / "diverged.pt")
    return ["--checkpoint", tmp_path / "diverged.pt"], "diverged.pt"


def _nan_circle_with_a_nan_inside(tmp_path):
    """NaN outside the reconstruction circle (the fill, left out) and one NaN voxel inside it (data: refused)."""
    padded, _ = _padded((20000 + 30000 * structured_ct((4, 20, 24))).astype(np.float32), fill=np.nan)
    padded[:, 10, 12] = np.nan
    write_tiff(tmp_path / "holed.tif", padded, (4.0, 2.0, 2.0))
    return ["--input", tmp_path / "holed.tif"], "holed.tif"


def _constant_stack(tmp_path, *extra):
    write_tiff(tmp_path / "blank.tif", np.zeros((4, 20, 24), np.uint16), (4.0, 2.0, 2.0))
    return ["--input", tmp_path / "blank.tif", *extra], "blank.tif"


BAD_STAIN_INPUTS = {
    # case: (argv builder, what the message must contain besides the file)
    "nan voxel": (lambda p: _nan_stack(p, np.nan), "non-finite"),
    "+inf voxel": (lambda p: _nan_stack(p, np.inf), "non-finite"),
    "empty tiff": (_empty_file, "empty file"),
    "text file as ct": (_text_file, "not a readable TIFF"),
    "folder without slices": (_empty_folder, "without .tif"),
    "hdf5 without dataset path": (lambda p: (["--input", p / "scan.h5"], "scan.h5"), "name the dataset"),
    "output png": (lambda p: (["--output", p / "out.png"], "out.png"), ".tif, .tiff or .zarr"),
    "output nii.gz": (lambda p: (["--output", p / "out.nii.gz"], "out.nii.gz"), ".nii.gz"),
    "output parent is a file": (_output_under_a_file, "is a file"),
    "constant volume (all fill)": (_constant_stack, "no data to stain"),
    "NaN generator weights": (_diverged_checkpoint, "holds NaN or infinite values"),
    "two series in one folder": (_two_series_in_a_folder, "slices of 2 series in one folder: proj_*.tif (6 files), "
                                                          "rec_*.tif (6 files)"),
    "bool hdf5 dataset (a mask)": (lambda p: _hdf5(p, "bool"), "bool voxels are not CT intensities"),
    "complex hdf5 dataset": (lambda p: _hdf5(p, "complex"), "complex64 voxels are not CT intensities"),
    "hdf5 soft link to nothing": (lambda p: _hdf5(p, "soft link"), "a link to /exchange/data, which does not exist"),
    "hdf5 external link to a missing file": (lambda p: _hdf5(p, "external link"),
                                             "a link to elsewhere.h5:/data, which does not exist"),
    "hdf5 with slices never written": (lambda p: _hdf5(p, "unwritten"), "slice 3 was never written"),
    "ome-zarr without its dataset": (_zarr_without_its_dataset, "names the dataset '0', which the store does not hold"),
    "voxel size 1e300 um": (lambda p: (["--voxel-size", "1e300", "1", "1"], "ct.tif"),
                            "outside the plausible 0.01-1000 um"),
    "inverted contrast (bone dark)": (_inverted_stack, "the CT looks inverted (bone dark)"),
    "--ct-contrast inverted on a normal CT": (lambda p: (["--ct-contrast", "inverted"], "ct.tif"),
                                              "drop --ct-contrast inverted"),
    "truncated stack (interrupted copy)": (_truncated_stack, "truncated: page 2 should start at byte"),
    "stack cut between pages": (_stack_cut_between_pages, "truncated: page 21 should start at byte"),
    "one-header ImageJ stack cut short": (_one_header_stack_cut_short,
                                          "truncated: its header says 24 slices stored one after another"),
    "folder with a truncated slice": (_folder_with_a_truncated_slice, "truncated: the pixels of page 1"),
    "folder with a corrupt slice": (_folder_with_a_corrupt_slice, "cannot be read, the file is damaged"),
    "NaN inside the circle of a NaN fill": (_nan_circle_with_a_nan_inside,
                                            "non-finite voxels (NaN or infinite) inside the field of view"),
    "--ct-fill-value covering every voxel": (lambda p: _constant_stack(p, "--ct-fill-value", "0"),
                                             "--ct-fill-value 0 covers every sampled voxel"),
}


@pytest.mark.parametrize("case", sorted(BAD_STAIN_INPUTS))
def test_bad_stain_input_is_one_line_naming_the_file(case, tmp_path, ct_stack, capsys):
    build, phrase = BAD_STAIN_INPUTS[case]
    override, named = build(tmp_path)
    argv = {"--checkpoint": make_checkpoint(tmp_path / "c.pt"), "--input": ct_stack, "--output": tmp_path / "o.tif"}
    argv.update(dict(zip(override[::2], override[1::2])))
    code, err = run([x for pair in argv.items() for x in pair] + ["--step", "8"], capsys)
    assert code == 2, err
    assert named in err and phrase in err, err
    messages = [line for line in err.splitlines() if line.startswith("vstain stain")]  # besides progress bars
    assert len(messages) == 1 and messages[0].startswith("vstain stain: error: ") and "Traceback" not in err
    assert not (tmp_path / "o.tif").exists() and not list(tmp_path.glob(".*.part"))


BAD_STAIN_ARGUMENTS = {
    "--device tpu": ["--device", "tpu"],
    "--patch-size 0": ["--patch-size", "0"],
    "--patch-size 30 (not a multiple of 4)": ["--patch-size", "30"],
    "--sigma -1": ["--sigma", "-1"],
    "--step -4": ["--step", "-4"],
    "--batch-size 0": ["--batch-size", "0"],
    "--voxel-size 0 1 1": ["--voxel-size", "0", "1", "1"],
    "--sigma 1e6 (hours per slice)": ["--sigma", "1e6"],
    "--patch-size 4096": ["--patch-size", "4096"],
    "--batch-size 100000": ["--batch-size", "100000"],
    "--patch-size 1024 on a 20 x 24 slice": ["--patch-size", "1024"],
    "--ct-fill-value nan": ["--ct-fill-value", "nan"],
    "--ct-fill-value zero": ["--ct-fill-value", "zero"],
}


@pytest.mark.parametrize("case", sorted(BAD_STAIN_ARGUMENTS))
def test_out_of_range_arguments_are_errors(case, tmp_path, ct_stack, capsys):
    argv = ["--checkpoint", make_checkpoint(tmp_path / "c.pt"), "--input", ct_stack, "--output", tmp_path / "o.tif",
            *BAD_STAIN_ARGUMENTS[case]]
    try:
        code, err = run(argv, capsys)
    except SystemExit as exit_:  # argparse's own usage error
        code, err = exit_.code, capsys.readouterr().err
    assert code == 2, err
    assert BAD_STAIN_ARGUMENTS[case][0] in err or "--patch-size" in err, err
    assert "Traceback" not in err and not (tmp_path / "o.tif").exists()


def test_stain_a_folder_of_slice_tiffs_and_an_hdf5_dataset(tmp_path, ct_stack, capsys):
    import h5py

    volume = read_tiff(ct_stack)[0]
    folder = tmp_path / "slices"
    folder.mkdir()
    for z, image in enumerate(volume):  # natural order: rec_2 before rec_10 would matter with more slices
        tifffile.imwrite(folder / f"rec_{z + 8:d}.tif", image)
    with h5py.File(tmp_path / "scan.h5", "w") as h5:
        h5.create_dataset("exchange/data", data=volume).attrs["element_size_um"] = [4.0, 2.0, 2.0]
    ckpt = make_checkpoint(tmp_path / "c.pt")
    outputs = {}
    for name, argv in {"stack": [ct_stack], "folder": [folder, "--voxel-size", 4, 2, 2],
                       "hdf5": [f"{tmp_path / 'scan.h5'}:/exchange/data"]}.items():
        out = tmp_path / f"{name}.tif"
        code, err = run(["--checkpoint", ckpt, "--output", out, "--step", "8", "--input", *argv], capsys)
        assert code == 0, err
        outputs[name], spacing, _ = read_tiff(out)
        assert spacing == (4.0, 2.0, 2.0)
    np.testing.assert_array_equal(outputs["folder"], outputs["stack"])
    np.testing.assert_array_equal(outputs["hdf5"], outputs["stack"])


# ------------------------------------------------------------------ the intensity scale the model expects


def _stained_metadata(path):
    return read_tiff(path)[2]["ct_normalisation"]


@pytest.mark.parametrize("scale", ["float 0-1", "uint8", "offset -30000"])
def test_any_intensity_scale_is_normalised_to_the_study_scale_and_recorded(tmp_path, capsys, scale):
    unit = structured_ct((6, 24, 28))
    data = {"float 0-1": unit, "uint8": np.rint(255 * unit).astype(np.uint8),
            "offset -30000": (unit * 20000 - 30000).astype(np.float32)}[scale]
    write_tiff(tmp_path / "ct.tif", data, (4.0, 2.0, 2.0))
    code, err = run(["--checkpoint", make_checkpoint(tmp_path / "c.pt"), "--input", tmp_path / "ct.tif",
                     "--output", tmp_path / "o.tif", "--step", "8"], capsys)
    assert code == 0, err
    record = _stained_metadata(tmp_path / "o.tif")
    assert record["method"] == "automatic ROIs"
    # bone (0.8 of the unit scale) maps near 30000, background (0.1) near 10000, whatever the input's scale
    bone_in = {"float 0-1": 0.8, "uint8": 204.0, "offset -30000": 0.8 * 20000 - 30000}[scale]
    background_in = {"float 0-1": 0.1, "uint8": 25.5, "offset -30000": 0.1 * 20000 - 30000}[scale]
    assert abs(record["scale"] * bone_in + record["offset"] - 30000) < 3000  # 15 % of the contrast
    assert abs(record["scale"] * background_in + record["offset"] - 10000) < 3000


def test_same_volume_in_two_scales_gives_the_same_stain(tmp_path, capsys):
    unit = structured_ct((6, 24, 28))
    write_tiff(tmp_path / "a.tif", unit, (4.0, 2.0, 2.0))
    write_tiff(tmp_path / "b.tif", unit * 1000 + 500, (4.0, 2.0, 2.0))
    ckpt = make_checkpoint(tmp_path / "c.pt")
    for name in ("a", "b"):
        code, err = run(["--checkpoint", ckpt, "--input", tmp_path / f"{name}.tif", "--output",
                         tmp_path / f"{name}_out.tif", "--step", "8"], capsys)
        assert code == 0, err
    a, b = read_tiff(tmp_path / "a_out.tif")[0], read_tiff(tmp_path / "b_out.tif")[0]
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 2  # the same map up to float rounding


def test_given_values_and_rois_fix_the_map(tmp_path, ct_stack, capsys):
    ckpt = make_checkpoint(tmp_path / "c.pt")
    code, err = run(["--checkpoint", ckpt, "--input", ct_stack, "--output", tmp_path / "v.tif", "--step", "8",
                     "--ct-bone-value", "44000", "--ct-background-value", "23000"], capsys)
    assert code == 0, err
    record = _stained_metadata(tmp_path / "v.tif")
    assert record["method"] == "given values"
    assert record["scale"] * 44000 + record["offset"] == pytest.approx(30000)
    code, err = run(["--checkpoint", ckpt, "--input", ct_stack, "--output", tmp_path / "r.tif", "--step", "8",
                     "--bone-roi", "2:9:11:11:13", "--background-roi", "2:0:2:0:2"], capsys)
    assert code == 0, err
    assert _stained_metadata(tmp_path / "r.tif")["method"] == "given ROIs"
    code, err = run(["--checkpoint", ckpt, "--input", ct_stack, "--output", tmp_path / "x.tif",
                     "--bone-roi", "2:0:2:0:2", "--background-roi", "2:9:11:11:13"], capsys)  # swapped
    assert code == 2 and "ct.tif" in err and "--bone-roi" in err
    code, err = run(["--checkpoint", ckpt, "--input", ct_stack, "--output", tmp_path / "y.tif",
                     "--ct-bone-value", "44000"], capsys)
    assert code == 2 and "give both bone and background values" in err


def test_a_volume_unlike_the_training_ct_is_named_in_a_warning(tmp_path, ct_stack, capsys):
    old = make_checkpoint(tmp_path / "old.pt")
    code, err = run(["--checkpoint", old, "--input", ct_stack, "--output", tmp_path / "old.tif", "--step", "8"],
                    capsys)
    assert code == 0 and "records no training CT statistics" in err
    # a checkpoint trained on CT like this one, normalised: the statistics the first run measured
    trained = _stained_metadata(tmp_path / "old.tif")["intensities"]
    ckpt = tmp_path / "c.pt"
    torch.save({**torch.load(old, weights_only=True), "ct_statistics": trained}, ckpt)
    code, err = run(["--checkpoint", ckpt, "--input", ct_stack, "--output", tmp_path / "ok.tif", "--step", "8"],
                    capsys)
    assert code == 0 and "warning" not in err, err
    code, err = run(["--checkpoint", ckpt, "--input", ct_stack, "--output", tmp_path / "raw.tif", "--step", "8",
                     "--ct-normalisation", "none"], capsys)  # the raw 20000 + 30000 * unit scale
    assert code == 0, err
    assert "ct.tif: taken as normalised" in err and "ct.tif: the normalised CT is unlike the training CT of" in err
    assert len(_stained_metadata(tmp_path / "raw.tif")["warnings"]) == 2


def test_a_run_folder_stains_with_its_selected_checkpoint(tmp_path, ct_stack, capsys):
    run_dir = tmp_path / "fold0"
    run_dir.mkdir()
    make_checkpoint(run_dir / "best_l1.pt")
    code, err = run(["--checkpoint", run_dir, "--input", ct_stack, "--output", tmp_path / "a.tif"], capsys)
    assert code == 2 and "fold0: a run folder without selection.json" in err
    (run_dir / "selection.json").write_text(json.dumps({"chosen": "best_l1", "file": "best_l1.pt"}))
    code, err = run(["--checkpoint", run_dir, "--input", ct_stack, "--output", tmp_path / "a.tif", "--step", "8"],
                    capsys)
    assert code == 0, err
    assert read_tiff(tmp_path / "a.tif")[2]["checkpoint"] == str(run_dir / "best_l1.pt")


@contextlib.contextmanager
def calls_of(function):
    """The first argument of every call of ``function`` inside the ``with`` block, by whatever name it is reached.

    The interpreter's profile hook sees every call of the function's code (in this thread and in threads
    started inside the block); nothing is patched, so no import path escapes the count.
    """
    calls = []
    code = function.__code__

    def profile(frame, event, arg):
        if event == "call" and frame.f_code is code:
            calls.append(frame.f_locals.get(code.co_varnames[0]))  # the first argument

    previous, previous_threads = sys.getprofile(), threading.getprofile()
    sys.setprofile(profile)
    threading.setprofile(profile)
    try:
        yield calls
    finally:
        sys.setprofile(previous)
        threading.setprofile(previous_threads)


def test_calls_of_counts_every_path_to_a_function():
    from vstain import masks
    from vstain.normalise import segment_ct as imported_elsewhere

    image = np.zeros((8, 8), np.float32)
    image[2:6, 2:6] = 1.0
    with calls_of(masks.segment_ct) as calls:
        masks.segment_ct(image)
        imported_elsewhere(image)
    assert len(calls) == 2 and calls[0] is image


@pytest.mark.parametrize("normalisation", ["auto", "none"])
def test_the_sample_slices_are_segmented_once(tmp_path, ct_stack, capsys, normalisation):
    from vstain import masks
    from vstain.volume_io import open_volume

    checkpoint = make_checkpoint(tmp_path / "c.pt")
    with calls_of(masks.segment_ct) as calls:
        code, err = run(["--checkpoint", checkpoint, "--input", ct_stack, "--output", tmp_path / "o.tif", "--step",
                         "8", "--ct-normalisation", normalisation], capsys)
    assert code == 0, err
    volume = open_volume(ct_stack)
    sampled = len(stain_stage.sample_slices(volume))
    volume.close()
    assert sampled == 5 and len(calls) == sampled  # the map and the intensity check share one segmentation


# ------------------------------------------------------------------ unusual but valid inputs: the right result


def _padded(volume, fill=0):
    """``volume`` with ``fill`` outside the reconstruction circle (what most reconstructions write), and that mask."""
    _, height, width = volume.shape
    y, x = np.mgrid[:height, :width]
    outside = np.hypot(y - (height - 1) / 2, x - (width - 1) / 2) > (height - 1) / 2
    padded = volume.copy()
    padded[:, outside] = fill
    return padded, outside


def test_zeros_outside_the_reconstruction_circle_are_left_out_of_the_normalisation_and_the_stain(tmp_path, capsys):
    plain = np.rint(20000 + 30000 * structured_ct((6, 40, 48))).astype(np.uint16)
    padded, outside = _padded(plain)
    write_tiff(tmp_path / "plain.tif", plain, (4.0, 2.0, 2.0))
    write_tiff(tmp_path / "padded.tif", padded, (4.0, 2.0, 2.0))
    ckpt = make_checkpoint(tmp_path / "c.pt")
    results = {}
    for name, source, extra in (("plain", "plain", []), ("found", "padded", []),
                                ("given", "padded", ["--ct-fill-value", "0"]),
                                ("ignored", "padded", ["--ct-fill-value", "none"])):
        code, err = run(["--checkpoint", ckpt, "--input", tmp_path / f"{source}.tif", "--output",
                         tmp_path / f"out_{name}.tif", "--step", "8", *extra], capsys)
        assert code == 0, err
        image, _, meta = read_tiff(tmp_path / f"out_{name}.tif")
        results[name] = image.astype(int), meta
    assert results["plain"][1]["field_of_view"]["method"] == "not found"
    plain_map = results["plain"][1]["ct_normalisation"]
    for name in ("found", "given"):
        image, meta = results[name]
        assert meta["field_of_view"]["method"] == name and meta["field_of_view"]["fill_value"] == 0
        assert meta["field_of_view"]["outside_fraction"] == pytest.approx(outside.mean(), abs=0.01)
        found = meta["ct_normalisation"]
        assert found["background_mean_before"] == pytest.approx(plain_map["background_mean_before"], rel=0.01)
        assert found["scale"] == pytest.approx(plain_map["scale"], rel=0.02)
        assert (image[:, outside] == 0).all()  # no data: black, as stitching software leaves missing tiles
        inside = np.abs(image - results["plain"][0])[:, ~outside].mean()
        assert inside < 1.5, inside  # the stain inside the circle is the unpadded volume's
    # without the field of view (the fault this guards against): the fill is the background, the stain moves
    ignored_image, ignored = results["ignored"]
    assert ignored["ct_normalisation"]["background_mean_before"] == 0
    assert np.abs(ignored_image - results["plain"][0])[:, ~outside].mean() > 3 * inside


def test_nan_outside_the_reconstruction_circle_is_found_and_left_out_as_zeros_are(tmp_path, capsys):
    plain = (20000 + 30000 * structured_ct((6, 40, 48))).astype(np.float32)
    padded, outside = _padded(plain, fill=np.nan)
    write_tiff(tmp_path / "plain.tif", plain, (4.0, 2.0, 2.0))
    write_tiff(tmp_path / "padded.tif", padded, (4.0, 2.0, 2.0))
    ckpt = make_checkpoint(tmp_path / "c.pt")
    results = {}
    for name in ("plain", "padded"):
        code, err = run(["--checkpoint", ckpt, "--input", tmp_path / f"{name}.tif", "--output",
                         tmp_path / f"out_{name}.tif", "--step", "8"], capsys)
        assert code == 0, err
        image, _, meta = read_tiff(tmp_path / f"out_{name}.tif")
        results[name] = image.astype(int), meta
    image, meta = results["padded"]
    assert meta["field_of_view"]["method"] == "found" and meta["field_of_view"]["fill_value"] == "NaN"
    assert meta["field_of_view"]["outside_fraction"] == pytest.approx(outside.mean(), abs=0.01)
    plain_map, found = results["plain"][1]["ct_normalisation"], meta["ct_normalisation"]
    assert found["background_mean_before"] == pytest.approx(plain_map["background_mean_before"], rel=0.01)
    assert found["scale"] == pytest.approx(plain_map["scale"], rel=0.02)
    assert found["warnings"] == plain_map["warnings"]
    assert (image[:, outside] == 0).all()  # outside: defined, black (no data), as for a fill of zeros
    assert np.abs(image - results["plain"][0])[:, ~outside].mean() < 1.5  # inside: the unpadded volume's stain
    # told there is no fill, or another one, the NaN are data: refused, and the way to find them said
    for extra in (["--ct-fill-value", "none"], ["--ct-fill-value", "0"]):
        code, err = run(["--checkpoint", ckpt, "--input", tmp_path / "padded.tif", "--output", tmp_path / "o.tif",
                         "--step", "8", *extra], capsys)
        assert code == 2 and "padded.tif: slice" in err and "non-finite voxels" in err, err
        assert "found with --ct-fill-value auto" in err and not (tmp_path / "o.tif").exists()


def test_an_imagej_stack_saved_beyond_4_gb_stains_as_the_page_per_slice_stack(tmp_path, ct_stack, capsys):
    """ImageJ's layout beyond 4 GB (one page header, ``images=N``, the slices one after another), small."""
    volume, _, _ = read_tiff(ct_stack)
    tifffile.imwrite(tmp_path / "big.tif", volume, imagej=True, truncate=True, byteorder=">",
                     resolution=(0.5, 0.5), metadata={"spacing": 4.0, "unit": "um", "axes": "ZYX"})
    ckpt = make_checkpoint(tmp_path / "c.pt")
    images = {}
    for name, path in (("pages", ct_stack), ("one header", tmp_path / "big.tif")):
        out = tmp_path / f"{name}.tif"
        code, err = run(["--checkpoint", ckpt, "--input", path, "--output", out, "--step", "8"], capsys)
        assert code == 0 and "truncated" not in err, err
        images[name], voxel, _ = read_tiff(out)
        assert voxel == pytest.approx((4.0, 2.0, 2.0)), name
    assert images["one header"].shape[0] == volume.shape[0]
    np.testing.assert_array_equal(images["one header"], images["pages"])


def test_an_inverted_ct_stains_as_the_normal_one_with_ct_contrast_inverted(tmp_path, capsys):
    unit = structured_ct((6, 40, 48))
    write_tiff(tmp_path / "normal.tif", np.rint(20000 + 30000 * unit).astype(np.uint16), (4.0, 2.0, 2.0))
    write_tiff(tmp_path / "inverted.tif", np.rint(20000 + 30000 * (1 - unit)).astype(np.uint16), (4.0, 2.0, 2.0))
    ckpt = make_checkpoint(tmp_path / "c.pt")
    images = {}
    for name, extra in (("normal", []), ("inverted", ["--ct-contrast", "inverted"]),
                        ("swapped", ["--ct-contrast", "normal"])):
        source = "normal" if name == "normal" else "inverted"
        code, err = run(["--checkpoint", ckpt, "--input", tmp_path / f"{source}.tif", "--output",
                         tmp_path / f"out_{name}.tif", "--step", "8", *extra], capsys)
        assert code == 0, err
        images[name], _, meta = read_tiff(tmp_path / f"out_{name}.tif")
        assert meta["ct_normalisation"]["contrast"] == (extra[1] if extra else "auto")
    assert np.abs(images["inverted"].astype(int) - images["normal"]).max() <= 2
    # told that bone is bright, the stain of the inverted CT is the wrong one: what the check guards against
    assert np.abs(images["swapped"].astype(int) - images["normal"]).mean() > 5
    # an inverted scan with its own fill outside the circle: the fill is given as the file holds it
    padded, outside = _padded(np.rint(20000 + 30000 * (1 - unit)).astype(np.uint16), fill=65535)
    write_tiff(tmp_path / "padded.tif", padded, (4.0, 2.0, 2.0))
    code, err = run(["--checkpoint", ckpt, "--input", tmp_path / "padded.tif", "--output", tmp_path / "out_padded.tif",
                     "--step", "8", "--ct-contrast", "inverted", "--ct-fill-value", "65535"], capsys)
    assert code == 0, err
    image, _, meta = read_tiff(tmp_path / "out_padded.tif")
    assert meta["field_of_view"]["fill_value"] == 65535 and meta["field_of_view"]["method"] == "given"
    assert (image[:, outside] == 0).all()
    assert np.abs(image.astype(int) - images["normal"])[:, ~outside].mean() < 1.5


def test_a_volume_at_another_voxel_size_than_the_training_ct_is_named_in_a_warning(tmp_path, ct_stack, capsys):
    trained = tmp_path / "c.pt"
    torch.save({**torch.load(make_checkpoint(tmp_path / "old.pt"), weights_only=True), "ct_voxel_um": 2.0}, trained)
    code, err = run(["--checkpoint", trained, "--input", ct_stack, "--output", tmp_path / "a.tif", "--step", "8"],
                    capsys)  # 4 x 2 x 2 um against 2 um: within a factor of 2, no warning
    assert code == 0 and "voxel size" not in err and "anisotropic" not in err, err
    assert read_tiff(tmp_path / "a.tif")[2]["training_voxel_um"] == 2.0
    for voxel, words in ((["20", "20", "20"], "voxel size 20 x 20 x 20 um (z, y, x), but"),
                         (["50", "1", "1"], "anisotropic voxels 50 x 1 x 1 um")):
        out = tmp_path / f"v{voxel[0]}.tif"
        code, err = run(["--checkpoint", trained, "--input", ct_stack, "--output", out, "--step", "8",
                         "--voxel-size", *voxel], capsys)
        assert code == 0 and "ct.tif: " + words in err, err
        assert any(words in note for note in read_tiff(out)[2]["ct_normalisation"]["warnings"])


def test_stain_tiles_with_the_inference_settings_recorded_at_training(tmp_path, ct_stack, capsys):
    """An edited copy named smoke trained with step 8 and the window blend: the stain uses those, not smoke's file."""
    import dataclasses

    base = torch.load(make_checkpoint(tmp_path / "base.pt"), weights_only=True)
    smoke = load_profile("smoke").inference
    trained = dataclasses.replace(smoke, patch_size=16, step=4, blend="window")  # the edited copy's settings
    ckpt = tmp_path / "c.pt"
    torch.save({**base, "profile": "smoke", "inference": dataclasses.asdict(trained)}, ckpt)
    code, err = run(["--checkpoint", ckpt, "--input", ct_stack, "--output", tmp_path / "o.tif"], capsys)
    assert code == 0, err
    meta = read_tiff(tmp_path / "o.tif")[2]
    assert (meta["step"], meta["blend"]) == (4, "window") != (smoke.step * 16 // smoke.patch_size, smoke.blend)
    assert meta["inference_profile"] == "smoke (as recorded in the checkpoint)"
    # --profile still chooses
    code, err = run(["--checkpoint", ckpt, "--input", ct_stack, "--output", tmp_path / "p.tif", "--profile", "smoke"],
                    capsys)
    assert code == 0 and read_tiff(tmp_path / "p.tif")[2]["blend"] == smoke.blend


def test_a_checkpoint_of_a_profile_not_found_here_names_the_checkpoint_and_profile_option(tmp_path, ct_stack, capsys):
    base = torch.load(make_checkpoint(tmp_path / "base.pt"), weights_only=True)
    torch.save({**base, "profile": "mine"}, tmp_path / "mine.pt")  # an older checkpoint: no settings recorded
    code, err = run(["--checkpoint", tmp_path / "mine.pt", "--input", ct_stack, "--output", tmp_path / "o.tif"],
                    capsys)
    assert code == 2 and "mine.pt: trained with profile 'mine'" in err and "--profile" in err, err
    torch.save({**base, "profile": "mine", "inference": {**dataclasses_asdict_smoke(), "step": 0}}, tmp_path / "bad.pt")
    code, err = run(["--checkpoint", tmp_path / "bad.pt", "--input", ct_stack, "--output", tmp_path / "o.tif"],
                    capsys)
    assert code == 2 and "bad.pt: field inference: inference.step must be between 1" in err, err
    assert not (tmp_path / "o.tif").exists()


def dataclasses_asdict_smoke():
    import dataclasses

    return dataclasses.asdict(load_profile("smoke").inference)


# --------------------------------------------------------------------------- the options as one object


def test_stain_options_hold_every_option_of_the_command():
    import argparse
    import dataclasses

    parser = argparse.ArgumentParser()
    stain_stage.configure_parser(parser)
    args = parser.parse_args(["--checkpoint", "a.pt", "--input", "ct.tif", "--output", "o.tif", "--sigma", "0.5",
                              "--axes", "zyx", "--ct-fill-value", "none", "--bone-roi", "1:0:4:0:4",
                              "--background-roi", "1:4:8:4:8", "--quiet", "--ngff-version", "0.5"])
    options = stain_stage.StainOptions.from_args(args)
    fields = {f.name for f in dataclasses.fields(options)}
    # every option of the command reaches the call, under its own name (the file names and the voxel size open the
    # volume, --quiet is progress=False)
    assert set(vars(args)) - {"checkpoint", "input", "output", "voxel_size", "no_progress"} <= fields
    assert all(getattr(options, name) == value for name, value in vars(args).items() if name in fields
               and name not in ("input",))
    assert (options.sigma, options.axes, options.ct_fill_value, options.progress, options.input_name,
            options.ngff_version) == (0.5, "zyx", None, False, "ct.tif", "0.5")
    assert options.bone_roi == (1, slice(0, 4), slice(0, 4))
    # the defaults of the call are the command's
    defaults = stain_stage.StainOptions.from_args(parser.parse_args(["--checkpoint", "a", "--input", "b",
                                                                     "--output", "c.tif"]))
    assert list(defaults.ensemble) == list(stain_stage.StainOptions().ensemble) == []
    assert dataclasses.replace(defaults, input_name=None, ensemble=()) == stain_stage.StainOptions()


def test_keywords_replace_the_options_and_an_unknown_one_is_refused(tmp_path):
    from vstain.volume_io import ArrayVolume

    volume = ArrayVolume(np.zeros((4, 8, 8), np.float32), (1, 1, 1), name="ct")
    checkpoint = make_checkpoint(tmp_path / "a.pt")
    with pytest.raises(TypeError, match="ct_bone"):
        stain_stage.stain_ct_volume(volume, checkpoint, tmp_path / "o.tif", ct_bone=3.0)
    # a keyword wins over the options it is given with: here it asks for what needs --uncertainty
    options = stain_stage.StainOptions(uncertainty=False)
    with pytest.raises(ValueError, match="--ensemble is for --uncertainty"):
        stain_stage.stain_ct_volume(volume, checkpoint, tmp_path / "o.tif", options, ensemble=[checkpoint])
    with pytest.raises(ValueError, match="--uncertainty stains slice-wise along Z only"):
        stain_stage.stain_ct_volume(volume, checkpoint, tmp_path / "o.tif", options, uncertainty=True, axes="zyx")
    assert not (tmp_path / "o.tif").exists()
