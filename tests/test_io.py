"""Atomic writes and TIFF round trips with physical pixel sizes."""

import numpy as np
import pytest

from vstain.io import PixelSizeError, atomic_path, read_tiff, write_tiff
from vstain.pairs import RegisteredPair, read_registered_pair, write_registered_pair


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("shape,dtype,size", [((9, 7), np.uint16, 5.0), ((9, 7, 3), np.uint8, 2.5),
                                              ((3, 9, 7), np.float32, (10.0, 5.0, 5.0)),
                                              ((3, 9, 7, 3), np.uint8, 4.0)])
def test_tiff_round_trip(tmp_path, shape, dtype, size):
    rng = np.random.default_rng(0)
    image = (rng.random(shape) * 200).astype(dtype)
    write_tiff(tmp_path / "x.tif", image, size, metadata={"seed": 3})
    back, spacing, meta = read_tiff(tmp_path / "x.tif")
    np.testing.assert_array_equal(back, image)
    expected = np.broadcast_to(np.asarray(size, float), (len(spacing),))
    np.testing.assert_allclose(spacing, expected)
    assert meta == {"seed": 3}


def test_tiff_without_pixel_size_is_refused(tmp_path):
    import tifffile

    tifffile.imwrite(tmp_path / "plain.tif", np.zeros((4, 4), np.uint8))
    with pytest.raises(PixelSizeError, match="plain.tif"):
        read_tiff(tmp_path / "plain.tif")


def test_registered_pair_round_trip_and_validation(tmp_path):
    ct = np.arange(64, dtype=np.uint16).reshape(8, 8)
    hist = np.zeros((8, 8, 3), np.uint8)
    pair = RegisteredPair("a", "Ti", "he", ct, hist, ct > 10, 5.0, {"note": 1})
    write_registered_pair(tmp_path / "a", pair, {"profile": "smoke"})
    back = read_registered_pair(tmp_path / "a")
    np.testing.assert_array_equal(back.ct, ct)
    assert back.mask.dtype == bool and back.mask.sum() == (ct > 10).sum()
    with pytest.raises(ValueError, match="pair b: histology must be uint8"):
        RegisteredPair("b", "Ti", "he", ct, hist[:4], ct > 0, 5.0)


def test_atomic_files_get_the_usual_permissions(tmp_path):
    import os

    with atomic_path(tmp_path / "shared.txt") as tmp:
        tmp.write_text("x")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "shared.txt").stat().st_mode & 0o777 == 0o666 & ~umask


def test_rewriting_identical_text_keeps_the_file_time(tmp_path):
    import os

    import pandas as pd

    from vstain.io import write_csv

    target = tmp_path / "table.csv"
    write_csv(target, pd.DataFrame({"a": [1, 2]}))
    os.utime(target, (1_000_000, 1_000_000))
    write_csv(target, pd.DataFrame({"a": [1, 2]}))
    assert target.stat().st_mtime == 1_000_000
    write_csv(target, pd.DataFrame({"a": [1, 3]}))
    assert target.stat().st_mtime > 1_000_000
    assert target.read_text().splitlines() == ["a", "1", "3"]


@pytest.mark.parametrize("resolution, unit, expected", [
    ((2000, 2000), "CENTIMETER", 5.0), ((5080, 5080), "INCH", 5.0), ((1, 1), "CENTIMETER", None),
    ((2000, 2000), "NONE", None),
])
def test_one_reading_of_resolution_tags_for_ct_and_slides(tmp_path, resolution, unit, expected):
    """read_tiff (CT slices) and read_slide (histology) read resolution tags through io.tiff_pixel_um alike."""
    import tifffile

    from vstain.slide_io import read_slide

    tifffile.imwrite(tmp_path / "grey.tif", np.zeros((8, 8), np.uint16), resolution=resolution, resolutionunit=unit)
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((8, 8, 3), np.uint8), photometric="rgb", resolution=resolution,
                     resolutionunit=unit)
    if expected is None:
        with pytest.raises(PixelSizeError):
            read_tiff(tmp_path / "grey.tif")
        with pytest.raises(ValueError, match="no pixel size"):
            read_slide(tmp_path / "rgb.tif")
    else:
        assert read_tiff(tmp_path / "grey.tif")[1] == pytest.approx((expected, expected))
        _, pixel_um, info = read_slide(tmp_path / "rgb.tif")
        assert pixel_um == pytest.approx(expected) and info["pixel_size_source"] == "TIFF resolution tags"


# --------------------------------------------------------------------------- truncated TIFF files


def _stack_layouts(folder):
    """The same 12-slice stack as the writers a lab meets lay it out, and the file of each."""
    import tifffile

    from vstain.slide_io import write_pyramid

    volume = np.random.default_rng(0).integers(0, 60000, (12, 24, 20)).astype(np.uint16)
    files = {"imagej": folder / "imagej.tif", "shaped": folder / "shaped.tif", "ome": folder / "ome.tif",
             "page per slice": folder / "pages.tif", "compressed pages": folder / "zpages.tif"}
    write_tiff(files["imagej"], volume, 5.0)
    tifffile.imwrite(files["shaped"], volume)
    tifffile.imwrite(files["ome"], volume, ome=True, metadata={"axes": "ZYX"})
    for name, compression in (("page per slice", None), ("compressed pages", "zlib")):
        with tifffile.TiffWriter(files[name]) as writer:
            for image in volume:  # one page after the other, no count in any header
                writer.write(image, contiguous=False, compression=compression)
    files["pyramid"] = folder / "slide.ome.tif"
    write_pyramid(files["pyramid"], np.full((300, 400, 3), 200, np.uint8), pixel_um=0.5, levels=3)
    return volume, files


def test_whole_tiff_files_of_every_layout_are_not_truncated(tmp_path):
    from vstain.io import open_tiff, tiff_truncation

    volume, files = _stack_layouts(tmp_path)
    for name, path in files.items():
        with open_tiff(path) as tif:
            assert tiff_truncation(tif) is None, name
            if name != "pyramid":
                np.testing.assert_array_equal(np.stack([page.asarray() for page in tif.pages]), volume)


@pytest.mark.parametrize("fraction", [0.3, 0.8, 0.98])
def test_a_truncated_tiff_of_every_layout_is_named_truncated(tmp_path, fraction):
    from vstain.io import open_tiff

    _, files = _stack_layouts(tmp_path)
    for name, path in files.items():
        data = path.read_bytes()
        cut = tmp_path / f"cut_{path.name}"
        cut.write_bytes(data[:int(len(data) * fraction)])
        with pytest.raises(ValueError, match=r"cut_.*: truncated: .*copy or write it again") as info:
            open_tiff(cut).close()
        assert "page" in str(info.value), (name, info.value)


def test_a_stack_cut_exactly_between_pages_is_truncated_not_shorter(tmp_path):
    """Cut where a page ends and the next begins: every page read is whole, but the last points past the end."""
    import tifffile

    from vstain.io import open_tiff

    _, files = _stack_layouts(tmp_path)
    for name in ("page per slice", "compressed pages"):
        with tifffile.TiffFile(files[name]) as tif:
            boundary = tif.pages[8].offset  # where page 9 begins: 8 whole pages before it
        cut = tmp_path / "cut.tif"
        cut.write_bytes(files[name].read_bytes()[:boundary])
        with pytest.raises(ValueError, match=rf"cut.tif: truncated: page 9 should start at byte {boundary}"):
            open_tiff(cut)


def _one_header_stack(path, volume, byteorder=">"):
    """``volume`` as ImageJ saves a stack beyond 4 GB: one page header (``images=N``), the slices one after another."""
    import tifffile

    tifffile.imwrite(path, volume, imagej=True, truncate=True, byteorder=byteorder, resolution=(0.5, 0.5),
                     metadata={"spacing": 4.0, "unit": "um", "axes": "ZYX"})


def test_an_imagej_stack_with_one_header_and_contiguous_slices_is_whole(tmp_path):
    import struct

    from vstain.io import open_tiff, tiff_truncation

    volume = np.random.default_rng(0).integers(0, 60000, (12, 24, 20)).astype(np.uint16)
    _one_header_stack(tmp_path / "big.tif", volume)
    data = (tmp_path / "big.tif").read_bytes()
    # the layout, read from the bytes: big-endian, one IFD that points to no next one, the slices in a row
    assert data[:4] == b"MM\x00\x2a"
    (ifd,) = struct.unpack(">I", data[4:8])
    (entries,) = struct.unpack(">H", data[ifd:ifd + 2])
    assert struct.unpack(">I", data[ifd + 2 + 12 * entries:ifd + 6 + 12 * entries]) == (0,)
    with open_tiff(tmp_path / "big.tif") as tif:
        assert len(tif.pages) == 1 and "images=12" in tif.pages.first.description
        start = tif.pages.first.dataoffsets[0]
        assert tiff_truncation(tif) is None
    np.testing.assert_array_equal(np.frombuffer(data[start:start + volume.nbytes], ">u2").reshape(volume.shape),
                                  volume)
    assert len(data) == start + volume.nbytes


@pytest.mark.parametrize("complete,extra", [(11, 100), (5, 0), (0, 300)])
def test_an_imagej_stack_with_one_header_cut_short_is_truncated(tmp_path, complete, extra):
    import tifffile

    from vstain.io import open_tiff

    volume = np.random.default_rng(0).integers(0, 60000, (12, 24, 20)).astype(np.uint16)
    _one_header_stack(tmp_path / "big.tif", volume)
    with tifffile.TiffFile(tmp_path / "big.tif") as tif:
        start, plane = tif.pages.first.dataoffsets[0], tif.pages.first.nbytes
    cut = tmp_path / "cut.tif"
    cut.write_bytes((tmp_path / "big.tif").read_bytes()[:start + complete * plane + extra])
    words = (rf"cut.tif: truncated: its header says 12 slices stored one after another after page 1 \(ImageJ's "
             rf"layout beyond 4 GB\), to byte {start + 12 * plane}, but the file ends at byte "
             rf"{start + complete * plane + extra} \({complete} complete\)" if complete else
             rf"cut.tif: truncated: the pixels of page 1 run to byte {start + plane}")
    with pytest.raises(ValueError, match=words):
        open_tiff(cut)


# --------------------------------------------------------------------------- two runs, one output


def test_an_output_written_meanwhile_is_kept_and_this_run_stops(tmp_path):
    from vstain.io import atomic_target

    for kind in ("file", "folder"):
        target = tmp_path / f"out_{kind}"
        with pytest.raises(FileExistsError, match=f"out_{kind}: written by another run while this one ran"):
            with atomic_target(target) as tmp:
                if kind == "file":
                    tmp.write_text("mine")
                else:
                    tmp.mkdir()
                    (tmp / "zarr.json").write_text("mine")
                target.mkdir() if kind == "folder" else None
                (target / "zarr.json" if kind == "folder" else target).write_text("theirs")  # the other run
        kept = target / "zarr.json" if kind == "folder" else target
        assert kept.read_text() == "theirs"
        assert not list(tmp_path.glob(".*.part")), list(tmp_path.iterdir())
        with atomic_target(target, overwrite=True) as tmp:  # asked to replace: replaced
            tmp.write_text("mine")
        assert target.read_text() == "mine"


def test_an_imagej_stack_calibrated_in_mm_reads_in_micrometres(tmp_path):
    """ImageJ writes resolution and spacing in its own unit: 5 um voxels as 0.005 mm, not 0.005 um."""
    import tifffile

    from vstain.volume_io import open_volume

    volume = np.zeros((4, 8, 8), np.uint16)
    for unit, per_um in (("mm", 1e-3), ("nm", 1e3), ("micron", 1.0)):
        path = tmp_path / f"{unit}.tif"
        tifffile.imwrite(path, volume, imagej=True, resolution=(1 / (2.0 * per_um), 1 / (2.0 * per_um)),
                         metadata={"unit": unit, "spacing": 5.0 * per_um, "axes": "ZYX"})
        source = open_volume(path)
        assert source.voxel_size_um == pytest.approx((5.0, 2.0, 2.0)), unit
        source.close()
        assert read_tiff(path)[1] == pytest.approx((5.0, 2.0, 2.0)), unit
    path = tmp_path / "pixel.tif"  # a unit not known: no guess, a request for the size
    tifffile.imwrite(path, volume, imagej=True, resolution=(0.5, 0.5), metadata={"unit": "pixel", "spacing": 5.0})
    with pytest.raises(ValueError, match="pixel.tif: no voxel size in the file.*--voxel-size"):
        open_volume(path)


# ------------------------------------------------------------------ the one freshness check of the stages


def test_is_current_on_hand_built_records(tmp_path):
    from vstain.io import is_current, read_record, write_json

    settings = {"model": "pix2pix", "step": 64, "axes": ("z", "y"), "checkpoint": tmp_path / "last.pt"}
    done = tmp_path / "done.json"
    write_json(done, {"settings": settings, "provenance": {"config_key": "3f2a"}, "key": [1, 2]})
    # current: the same settings as they were written (tuples as lists, paths as text)
    assert is_current(done, settings)
    assert is_current(done, {**settings, "axes": ["z", "y"], "checkpoint": str(tmp_path / "last.pt")})
    assert is_current(read_record(done), settings)  # the record already read
    # settings changed: any value, a key more or less
    assert not is_current(done, {**settings, "step": 32})
    assert not is_current(done, {**settings, "blend": "mean"})
    assert not is_current(done, {k: v for k, v in settings.items() if k != "axes"})
    # other keys, dotted keys, a key the record lacks
    assert is_current(done, [1, 2], key="key") and not is_current(done, (2, 1), key="key")
    assert is_current(done, "3f2a", key="provenance.config_key")
    assert not is_current(done, "3f2b", key="provenance.config_key")
    assert not is_current(done, "3f2a", key="provenance.missing") and not is_current(done, None, key="inputs")
    # the files it describes must be there too
    assert not is_current(done, settings, requires=[tmp_path / "table.csv"])
    (tmp_path / "table.csv").write_text("a\n1\n")
    assert is_current(done, settings, requires=[tmp_path / "table.csv"])
    # record missing, corrupt (half-written, not JSON, not an object): never current, never an error
    assert not is_current(tmp_path / "missing.json", settings) and not is_current(None, settings)
    for text in ('{"settings": {"model": "pix2pix"', "", "[1, 2]", "\xff\xfe"):
        done.write_text(text, encoding="latin-1")
        assert not is_current(done, settings), text
        assert read_record(done) is None
    # settings that cannot be written are never current
    write_json(done, {"settings": {"f": "x"}})
    assert not is_current(done, {"f": object()})
