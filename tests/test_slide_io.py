"""Whole-slide histology as it comes: pyramid levels, pixel sizes from the file or the manifest."""

import numpy as np
import pytest
import tifffile

from vstain.io import write_tiff
from vstain.slide_io import read_slide, write_pyramid


@pytest.fixture
def slide():
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (256, 384, 3), dtype=np.uint8)


def test_the_level_nearest_above_the_working_resolution_is_read(tmp_path, slide):
    write_pyramid(tmp_path / "s.ome.tif", slide, 0.44, levels=4, tile=64)
    for target, level, shape in [(None, 0, (256, 384, 3)), (0.44, 0, (256, 384, 3)), (1.0, 1, (128, 192, 3)),
                                 (1.76, 2, (64, 96, 3)), (3.0, 2, (64, 96, 3)), (50.0, 3, (32, 48, 3))]:
        image, pixel_um, info = read_slide(tmp_path / "s.ome.tif", target_um=target)
        assert info["level"] == level and image.shape == shape, (target, info)
        assert pixel_um == pytest.approx(0.44 * 2 ** level)
        assert info["n_levels"] == 4 and info["pixel_size_source"] == "OME-XML PhysicalSizeX"
    np.testing.assert_array_equal(read_slide(tmp_path / "s.ome.tif")[0], slide)


def test_pixel_size_from_aperio_mpp_imagej_or_the_manifest(tmp_path, slide):
    tifffile.imwrite(tmp_path / "a.svs", slide, photometric="rgb", tile=(64, 64),
                     description="Aperio Image Library v12.0.15\n384x256 [0,0 384x256] |AppMag = 20|MPP = 0.5040")
    assert read_slide(tmp_path / "a.svs")[1] == pytest.approx(0.504)
    write_tiff(tmp_path / "plain.tif", slide, 0.44)
    image, pixel_um, info = read_slide(tmp_path / "plain.tif")
    assert pixel_um == pytest.approx(0.44) and info["n_levels"] == 1
    tifffile.imwrite(tmp_path / "bare.tif", slide, photometric="rgb")
    assert read_slide(tmp_path / "bare.tif", pixel_um=0.3)[1] == 0.3
    with pytest.raises(ValueError, match=r"bare\.tif: no pixel size in the file.*histology_pixel_um"):
        read_slide(tmp_path / "bare.tif")


def test_ndpi_style_resolution_in_centimetres(tmp_path, slide):
    tifffile.imwrite(tmp_path / "n.tif", slide, photometric="rgb", resolution=(1e4 / 0.46, 1e4 / 0.46),
                     resolutionunit="CENTIMETER")
    assert read_slide(tmp_path / "n.tif")[1] == pytest.approx(0.46)


def test_bad_slides_are_refused_naming_the_file(tmp_path, slide):
    write_pyramid(tmp_path / "s.ome.tif", slide, 0.44, levels=2, tile=64)
    with pytest.raises(ValueError, match=r"s\.ome\.tif: the file says 0\.44 um per pixel .* histology_pixel_um is 0\.5"):
        read_slide(tmp_path / "s.ome.tif", pixel_um=0.5)
    tifffile.imwrite(tmp_path / "grey.tif", slide[..., 0])
    with pytest.raises(ValueError, match=r"grey\.tif: a histology slide must be an RGB image"):
        read_slide(tmp_path / "grey.tif", pixel_um=0.44)
    (tmp_path / "empty.tif").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.tif: an empty file"):
        read_slide(tmp_path / "empty.tif", pixel_um=0.44)
