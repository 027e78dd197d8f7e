"""The one-call Python API: vstain.api.stain_volume / stain_slice, what ``vstain stain`` does."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
import zarr
from test_stain_cli import ct_stack, make_checkpoint, one_thread, run  # noqa: F401  (fixtures; one_thread is autouse)

from vstain import api
from vstain.io import read_tiff
from vstain.volume_io import open_volume, validate_ome_zarr


@pytest.mark.parametrize("function", [api.stain_volume, api.stain_slice])
def test_the_documented_example_runs(tmp_path, function):
    globs = {**vars(api), "checkpoint": make_checkpoint(tmp_path / "c.pt")}
    test = doctest.DocTestFinder().find(function, globs=globs)[0]
    for example in test.examples:
        example.options.clear()  # the +SKIP that keeps the package's doctests free of a checkpoint
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    assert runner.failures == 0 and runner.tries == len(test.examples) > 0


def test_api_array_out_equals_what_the_command_writes(tmp_path, ct_stack, capsys):  # noqa: F811
    ckpt = make_checkpoint(tmp_path / "c.pt")
    code, err = run(["--checkpoint", ckpt, "--input", ct_stack, "--output", tmp_path / "cli.tif", "--step", "8"],
                    capsys)
    assert code == 0, err
    from_cli = read_tiff(tmp_path / "cli.tif")[0]
    from_path = api.stain_volume(ct_stack, ckpt, step=8)
    data, spacing, _ = read_tiff(ct_stack)
    from_array = api.stain_volume(data, ckpt, voxel_size_um=spacing, step=8)
    source = open_volume(ct_stack)
    from_volume = api.stain_volume(source, ckpt, step=8)
    assert source.read_slice(0).shape == (20, 24)  # an opened volume is left open for its owner
    source.close()
    assert from_cli.shape == (5, 20, 24, 3) and from_cli.std() > 0
    for stained in (from_path, from_array, from_volume):
        np.testing.assert_array_equal(stained, from_cli)
    one = api.stain_slice(data[2], ckpt, pixel_size_um=spacing[1], step=8)
    assert one.shape == (20, 24, 3) and one.dtype == np.uint8 and one.std() > 0


def test_api_writes_a_validated_store_with_its_uncertainty_inside(tmp_path, ct_stack):  # noqa: F811
    ckpt = make_checkpoint(tmp_path / "c.pt")
    out, spread_path = api.stain_volume(ct_stack, ckpt, tmp_path / "s.zarr", uncertainty=True,
                                        uncertainty_source="tta", step=8)
    assert out == tmp_path / "s.zarr" and spread_path == out / "uncertainty"
    validate_ome_zarr(out), validate_ome_zarr(spread_path)
    attrs = zarr.open_group(str(out), mode="r").attrs["vstain"]
    assert attrs["stain"] == "single" and attrs["uncertainty_source"] == "tta"
    rgb, spread = api.stain_volume(ct_stack, ckpt, uncertainty=True, uncertainty_source="tta", step=8)
    np.testing.assert_array_equal(np.moveaxis(np.asarray(zarr.open(str(out / "0"), mode="r")), 0, -1), rgb)
    assert spread.shape == (5, 20, 24) and spread.dtype == np.float32 and float(spread.max()) > 0
    plain = api.stain_volume(ct_stack, ckpt, step=8)
    np.testing.assert_array_equal(plain, rgb)  # the uncertainty never changes the stain


def test_api_writes_ngff_0_5_where_asked(tmp_path, ct_stack):  # noqa: F811
    ckpt = make_checkpoint(tmp_path / "c.pt")
    out, spread_path = api.stain_volume(ct_stack, ckpt, tmp_path / "s.zarr", uncertainty=True,
                                        uncertainty_source="tta", step=8, ngff_version="0.5")
    assert validate_ome_zarr(out).ome_zarr_version == validate_ome_zarr(spread_path).ome_zarr_version == "0.5"
    assert zarr.open_group(str(out), mode="r").metadata.zarr_format == 3
    plain = api.stain_volume(ct_stack, ckpt, tmp_path / "p.zarr", step=8, ngff_version="0.5")
    assert validate_ome_zarr(plain).ome_zarr_version == "0.5"
    with pytest.raises(ValueError, match="OME-NGFF version must be one of"):
        api.stain_volume(ct_stack, ckpt, tmp_path / "q.zarr", step=8, ngff_version="0.3")
    assert not (tmp_path / "q.zarr").exists()


def test_api_refuses_what_it_cannot_stain_with_a_clear_message(tmp_path):
    ckpt = make_checkpoint(tmp_path / "c.pt")
    with pytest.raises(ValueError, match="carries no voxel size; give voxel_size_um"):
        api.stain_volume(np.zeros((2, 8, 8), np.float32), ckpt)
    with pytest.raises(TypeError, match="expected an array .* got list"):
        api.stain_volume([[1, 2]], ckpt)
    with pytest.raises(ValueError, match="expected one 2D slice"):
        api.stain_slice(np.zeros((2, 8, 8), np.float32), ckpt, pixel_size_um=1.0)
