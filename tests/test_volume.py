"""3D staining: streaming filter, bounded memory, writers, fusion, stripe score."""

import tempfile
import weakref

import numpy as np
import pytest
import tifffile
import torch._dynamo  # noqa: F401  (loads triton now: importing it after a VTK off-screen render crashes the process)
import zarr
from scipy import ndimage

from vstain import volume as vol
from vstain import volume_io as vio
from vstain.io import read_tiff, write_tiff


def colour_map(ct):
    """A per-voxel stainer: the same CT value gets the same colour, whatever the slice orientation."""
    t = np.clip(ct / 100.0, 0, 1)
    return np.stack([255 * t, 200 * (1 - t), 100 + 100 * t], axis=-1).round().astype(np.uint8)


def random_volume(shape=(12, 16, 20), seed=0):
    return (np.random.default_rng(seed).uniform(0, 100, shape)).astype(np.float32)


class CountingVolume(vio.ArrayVolume):
    """A source that counts how many slices it handed out are still alive (held by the pipeline)."""

    def __init__(self, array):
        super().__init__(array, (2.0, 1.0, 1.0))
        self.alive = 0
        self.max_alive = 0
        self.reads = 0

    def _released(self):
        self.alive -= 1

    def read_slice(self, z):
        out = super().read_slice(z)
        self.reads += 1
        self.alive += 1
        self.max_alive = max(self.max_alive, self.alive)
        weakref.finalize(out, self._released)
        return out


@pytest.mark.parametrize("shape", [(1, 9, 9), (3, 10, 12), (17, 10, 12)])
@pytest.mark.parametrize("sigma", [1.0, 2.0])
def test_streaming_filter_equals_scipy_3d_gaussian(shape, sigma):
    data = random_volume(shape)
    streamed = np.stack(list(vol.filtered_slices(vio.ArrayVolume(data, (1, 1, 1)), sigma)))
    expected = ndimage.gaussian_filter(data.astype(np.float64), sigma, mode="reflect")
    np.testing.assert_allclose(streamed, expected, atol=1e-4)


@pytest.mark.parametrize("axes", ["z", "zyx"])
def test_memory_is_bounded_by_a_few_slices_not_by_depth(tmp_path, axes):
    held = {}
    for depth in (16, 48):
        source = CountingVolume(random_volume((depth, 8, 8), seed=depth))
        vol.stain_volume(source, colour_map, tmp_path / f"{axes}{depth}.tif", sigma_voxels=1.0, axes=axes)
        held[depth] = source.max_alive
        assert source.reads == depth  # each slice is read once
    window = 2 * int(4 * 1.0 + 0.5) + 1
    assert held[16] == held[48] <= window + 1, held


def test_tiff_stack_in_rgb_stack_out_with_voxel_size(tmp_path):
    data = random_volume()
    write_tiff(tmp_path / "ct.tif", data, (3.0, 1.5, 1.5))
    source = vio.open_volume(tmp_path / "ct.tif")
    assert source.voxel_size_um == (3.0, 1.5, 1.5)
    vol.stain_volume(source, colour_map, tmp_path / "out.tif", sigma_voxels=1.0, metadata={"model": "test"})
    source.close()
    image, spacing, meta = read_tiff(tmp_path / "out.tif")
    assert spacing == (3.0, 1.5, 1.5) and meta["model"] == "test" and meta["axes"] == "z"
    expected = colour_map(ndimage.gaussian_filter(data.astype(np.float64), 1.0).astype(np.float32))
    assert np.abs(image.astype(int) - expected.astype(int)).max() <= 1


def write_ome_zarr_ct(path, data, voxel, chunk_depth=4):
    vio.write_ome_zarr(path, iter(data), data.shape, voxel, chunk_depth=chunk_depth)


def test_ome_zarr_input_read_chunk_by_chunk_and_ome_zarr_output(tmp_path):
    data = random_volume((10, 12, 14))
    write_ome_zarr_ct(tmp_path / "ct.zarr", data, (4.0, 2.0, 2.0))
    source = vio.open_volume(tmp_path / "ct.zarr")
    assert source.voxel_size_um == (4.0, 2.0, 2.0)
    decoded = []
    original = source.array.__getitem__
    source.array = type("Spy", (), {"__getitem__": lambda self, key: decoded.append(key) or original(key),
                                    "shape": data.shape})()
    out = vol.stain_volume(source, colour_map, tmp_path / "out.ome.zarr", sigma_voxels=1.0)
    assert len(decoded) == 3  # ceil(10 / 4) chunk slabs, each decoded once
    vio.validate_ome_zarr(out)
    group = zarr.open_group(str(out), mode="r")
    ms = group.attrs["multiscales"][0]
    assert [a["name"] for a in ms["axes"]] == ["c", "z", "y", "x"]
    assert ms["datasets"][0]["coordinateTransformations"][0]["scale"] == [1.0, 4.0, 2.0, 2.0]
    stained = np.moveaxis(np.asarray(group["0"]), 0, -1)
    expected = colour_map(ndimage.gaussian_filter(data.astype(np.float64), 1.0).astype(np.float32))
    assert np.abs(stained.astype(int) - expected.astype(int)).max() <= 1


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ome_zarr_stain_is_a_validated_pyramid_with_3d_chunks_and_channel_colours(tmp_path, version):
    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 256, (18, 600, 530, 3), dtype=np.uint8)
    out = tmp_path / "stain.ome.zarr"
    vio.write_rgb_ome_zarr(out, iter(rgb), rgb.shape[:3], (3.0, 1.5, 1.5), metadata={"stain": "single"},
                           chunk_depth=8, version=version)
    model = vio.validate_ome_zarr(out)  # the format's own models, not ours
    assert model.ome_zarr_version == version
    group = zarr.open_group(str(out), mode="r")
    attrs = dict(group.attrs)
    ome = attrs["ome"] if version == "0.5" else attrs
    assert attrs["vstain"]["stain"] == "single"
    assert [c["color"] for c in ome["omero"]["channels"]] == ["FF0000", "00FF00", "0000FF"]
    datasets = ome["multiscales"][0]["datasets"]
    # 530 -> 265 -> 133 and 600 -> 300 -> 150: halved while longer than 256 px; 18 slices stay 18
    assert [tuple(group[d["path"]].shape) for d in datasets] == [(3, 18, 600, 530), (3, 18, 300, 265),
                                                                 (3, 18, 150, 133)]
    assert [d["coordinateTransformations"][0]["scale"] for d in datasets] == [
        [1.0, 3.0, 1.5, 1.5], [1.0, 3.0, 3.0, 3.0], [1.0, 3.0, 6.0, 6.0]]
    assert group["0"].chunks == (3, 8, 256, 256)  # the channel in one chunk, 3D chunks, not whole slices
    np.testing.assert_array_equal(np.moveaxis(np.asarray(group["0"]), 0, -1), rgb)
    level1 = np.asarray(group["1"])
    by_hand = rgb[4, 10:12, 20:22].reshape(4, 3).astype(float).mean(0)  # one 2 x 2 block of slice 4
    np.testing.assert_allclose(level1[:, 4, 5, 10], np.rint(by_hand), atol=0.51)
    edge = rgb[4, 598:600, 528:530].reshape(4, 3).astype(float).mean(0)
    np.testing.assert_allclose(level1[:, 4, 299, 264], np.rint(edge), atol=0.51)


def test_pyramid_of_a_cube_halves_every_axis_and_the_block_mean_is_exact():
    assert vio.pyramid_shapes((1024, 1024, 1024)) == [(1024,) * 3, (512,) * 3, (256,) * 3]
    assert vio.pyramid_shapes((64, 257, 100)) == [(64, 257, 100), (64, 129, 100)]
    block = np.array([[[0, 2], [4, 6]], [[8, 10], [12, 14]]], np.uint8)
    assert vio.downsample_block(block, (2, 2, 2)).tolist() == [[[7]]]
    odd = np.array([[1.0, 2.0, 9.0]], np.float32)  # the odd end repeats its edge
    assert vio.downsample_block(odd, (1, 2)).tolist() == [[1.5, 9.0]]


def test_scalar_map_and_its_sibling_in_the_same_store_read_back(tmp_path):
    rgb = np.full((5, 6, 7, 3), 40, np.uint8)
    spread = np.arange(5 * 6 * 7, dtype=np.float32).reshape(5, 6, 7)
    out = tmp_path / "s.zarr"
    vio.write_rgb_ome_zarr(out, iter(rgb), (5, 6, 7), (2.0, 1.0, 1.0),
                           siblings={"uncertainty": (lambda: iter(spread), {"unit": "Delta E"})})
    assert vio.validate_ome_zarr(out / "uncertainty").ome_zarr_version == "0.4"
    back = vio.open_volume(out / "uncertainty")
    assert back.voxel_size_um == (2.0, 1.0, 1.0)
    np.testing.assert_array_equal(np.stack([back.read_slice(z) for z in range(5)]), spread)
    assert zarr.open_group(str(out / "uncertainty"), mode="r").attrs["vstain"]["unit"] == "Delta E"


def test_ome_zarr_writer_refuses_bad_input_naming_the_store(tmp_path):
    with pytest.raises(ValueError, match=r"s\.zarr: OME-NGFF version must be one of"):
        vio.write_rgb_ome_zarr(tmp_path / "s.zarr", iter([]), (1, 4, 4), (1, 1, 1), version="0.3")
    with pytest.raises(ValueError, match=r"s\.zarr: slice 1 is uint16"):
        vio.write_rgb_ome_zarr(tmp_path / "s.zarr", iter([np.zeros((4, 4, 3), np.uint8),
                                                          np.zeros((4, 4, 3), np.uint16)]), (2, 4, 4), (1, 1, 1))
    with pytest.raises(ValueError, match=r"s\.zarr: got 1 slices, expected 2"):
        vio.write_rgb_ome_zarr(tmp_path / "s.zarr", iter([np.zeros((4, 4, 3), np.uint8)]), (2, 4, 4), (1, 1, 1))
    assert list(tmp_path.iterdir()) == []  # nothing half-written
    bad = zarr.open_group(str(tmp_path / "hand.zarr"), mode="w", zarr_format=2)
    bad.attrs["multiscales"] = [{"version": "0.4", "axes": ["z", "y", "x"], "datasets": [{"path": "0"}]}]
    with pytest.raises(ValueError, match="hand.zarr: not a valid OME-NGFF 0.4 image"):
        vio.validate_ome_zarr(tmp_path / "hand.zarr")


def test_zarr_with_wrong_dimensions_is_refused(tmp_path):
    zarr.create_array(str(tmp_path / "flat.zarr"), shape=(8, 8), dtype=np.uint16)
    with pytest.raises(ValueError, match="2 dimensions.*expected 3"):
        vio.open_volume(tmp_path / "flat.zarr", (1, 1, 1))


def test_fusing_identical_predictions_changes_nothing():
    data = random_volume((8, 10, 12))
    single = np.stack(list(vol.stain_slices(vio.ArrayVolume(data, (1, 1, 1)), colour_map, sigma_voxels=1.0)))
    with tempfile.TemporaryDirectory() as scratch:
        fused = np.stack(list(vol.fused_slices(vio.ArrayVolume(data, (1, 1, 1)), colour_map, sigma_voxels=1.0,
                                               scratch_dir=scratch)))
    assert np.abs(fused.astype(int) - single.astype(int)).max() <= 1


def test_fusion_reduces_stripes_of_an_inconsistent_slice_stainer(tmp_path):
    """A stainer whose brightness drifts from call to call makes stripes along its stack axis."""
    rng = np.random.default_rng(0)
    smooth = ndimage.gaussian_filter(rng.uniform(0, 100, (24, 24, 24)), 3).astype(np.float32)
    drift = np.random.default_rng(1)

    def flickering(ct):
        return np.clip(colour_map(ct).astype(int) + int(drift.integers(-12, 13)), 0, 255).astype(np.uint8)

    source = vio.ArrayVolume(smooth, (1, 1, 1))
    single = np.stack(list(vol.stain_slices(source, flickering, sigma_voxels=1.0)))
    fused = np.stack(list(vol.fused_slices(source, flickering, sigma_voxels=1.0, scratch_dir=tmp_path)))
    assert vol.stripe_score(single, axis=0) > 2.0
    assert vol.stripe_score(fused, axis=0) < 0.6 * vol.stripe_score(single, axis=0)
    assert list(tmp_path.iterdir()) == []  # scratch files removed


def test_interrupted_run_leaves_no_file_that_looks_complete(tmp_path):
    calls = []

    def failing(ct):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return colour_map(ct)

    for axes, name in [("z", "out.tif"), ("zyx", "out.tif"), ("z", "out.zarr")]:
        calls.clear()
        with pytest.raises(KeyboardInterrupt):
            vol.stain_volume(vio.ArrayVolume(random_volume(), (1, 1, 1)), failing, tmp_path / name,
                             sigma_voxels=1.0, axes=axes)
        assert list(tmp_path.iterdir()) == [], axes


def test_existing_output_is_refused_unless_overwrite(tmp_path):
    target = tmp_path / "out.tif"
    target.write_bytes(b"precious")
    source = vio.ArrayVolume(random_volume((3, 8, 8)), (1, 1, 1))
    with pytest.raises(FileExistsError, match="--overwrite"):
        vol.stain_volume(source, colour_map, target, sigma_voxels=1.0)
    assert target.read_bytes() == b"precious"
    vol.stain_volume(source, colour_map, target, sigma_voxels=1.0, overwrite=True)
    assert read_tiff(target)[0].shape == (3, 8, 8, 3)


def test_stripe_score_sees_slice_offsets_only_along_their_axis():
    rng = np.random.default_rng(0)
    smooth = ndimage.gaussian_filter(rng.normal(size=(32, 32, 32)), 2)
    striped = smooth + 0.05 * rng.normal(size=(1, 32, 1))  # offsets per Y slice
    assert 0.8 < vol.stripe_score(smooth, axis=1) < 1.2
    assert vol.stripe_score(striped, axis=1) > 2.0
    assert vol.stripe_score(striped, axis=0) < 1.0


def test_compare_volumes_and_views():
    a = np.random.default_rng(0).integers(0, 256, (8, 10, 12, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + 20, 0, 255).astype(np.uint8)
    with np.errstate(divide="ignore"):
        same = vol.compare_volumes(a, a)
    shifted = vol.compare_volumes(b, a)
    assert same["ssim"] == pytest.approx(1.0) and shifted["ssim"] < 1.0
    assert 15 < shifted["psnr"] < 30
    views = vol.orthogonal_views(a, (1, 2, 3))
    assert np.array_equal(views["xz"], a[:, 2]) and np.array_equal(views["yz"], a[:, :, 3])


def test_compare_volumes_inside_a_mask_ignores_the_outside():
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 256, (12, 14, 16, 3), dtype=np.uint8)
    inside = np.zeros(truth.shape[:3], bool)
    inside[3:9, 4:10, 2:12] = True
    prediction = truth.copy()
    prediction[~inside] = rng.integers(0, 256, (int((~inside).sum()), 3), dtype=np.uint8)  # garbage outside
    whole = vol.compare_volumes(prediction, truth)
    sample = vol.compare_volumes(prediction, truth, mask=inside)
    assert whole["ssim"] < 0.8 and whole["psnr"] < 15
    assert sample == {"ssim": 1.0, "psnr": float("inf")}
    # An error inside is seen inside, and PSNR is that of the masked voxels alone.
    prediction[inside] = np.clip(truth[inside].astype(int) + 10, 0, 255)
    sample = vol.compare_volumes(prediction, truth, mask=inside)
    mse = ((prediction[inside].astype(float) - truth[inside]) ** 2).mean()
    assert sample["ssim"] < 1.0 and sample["psnr"] == pytest.approx(10 * np.log10(255**2 / mse))
    with pytest.raises(ValueError, match="mask"):
        vol.compare_volumes(prediction, truth, mask=inside[:-1])


def test_rgba_volume_rendering_or_a_clear_reason():
    rgb = np.zeros((10, 12, 14, 3), np.uint8)
    rgb[3:7, 4:8, 4:10] = (200, 60, 40)
    assert vol.rgba_volume(rgb)[5, 5, 5, 3] == 100
    try:
        image = vol.render_rgba(rgb, (1.0, 1.0, 1.0), window_size=(120, 120))
    except vol.RenderingUnavailable as err:
        pytest.skip(f"no off-screen rendering here: {err}")
    assert image.shape[:2] == (120, 120) and image[..., 0].max() > image[..., 2].max()


def test_stack_without_voxel_size_says_how_to_give_it(tmp_path):
    tifffile.imwrite(tmp_path / "bare.tif", np.zeros((4, 8, 8), np.uint16), photometric="minisblack")
    with pytest.raises(ValueError, match="--voxel-size"):
        vio.open_volume(tmp_path / "bare.tif")
    assert vio.open_volume(tmp_path / "bare.tif", (1, 2, 2)).voxel_size_um == (1.0, 2.0, 2.0)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("byteorder", ["<", ">"])
def test_an_imagej_stack_with_one_header_is_read_slice_by_slice(tmp_path, dtype, byteorder):
    """ImageJ beyond 4 GB: one page header, ``images=N``, the slices one after another; read at their offsets."""
    volume = np.random.default_rng(0).integers(0, 250, (9, 10, 14)).astype(dtype)
    tifffile.imwrite(tmp_path / "big.tif", volume, imagej=True, truncate=True, byteorder=byteorder,
                     resolution=(0.5, 0.5), metadata={"spacing": 4.0, "unit": "um", "axes": "ZYX"})
    with tifffile.TiffFile(tmp_path / "big.tif") as tif:
        assert len(tif.pages) == 1  # the layout the test is about
    source = vio.open_volume(tmp_path / "big.tif")
    try:
        assert source.shape == (9, 10, 14) and source.voxel_size_um == (4.0, 2.0, 2.0)
        for z in (8, 0, 4):  # any order: each slice at its own offset
            image = source.read_slice(z)
            assert image.dtype == np.float32
            np.testing.assert_array_equal(image, volume[z].astype(np.float32))
    finally:
        source.close()


def test_only_imagejs_one_header_layout_is_read_at_computed_offsets(tmp_path):
    volume = np.arange(9 * 10 * 14, dtype=np.uint16).reshape(9, 10, 14)
    tifffile.imwrite(tmp_path / "big.tif", volume, imagej=True, truncate=True, metadata={"axes": "ZYX"})
    write_tiff(tmp_path / "pages.tif", volume, 4.0)  # one page per slice: read page by page
    data = (tmp_path / "big.tif").read_bytes()
    (tmp_path / "short.tif").write_bytes(data[:-1])  # one byte short of the last slice
    with tifffile.TiffFile(tmp_path / "big.tif") as tif:
        offset, dtype = vio.contiguous_imagej_stack(tif, (9, 10, 14))
        assert offset == tif.pages.first.dataoffsets[0] and dtype == np.dtype("<u2")
        assert vio.contiguous_imagej_stack(tif, (8, 10, 14)) is None  # not the header's count
        assert vio.contiguous_imagej_stack(tif, (9, 10, 15)) is None  # not the page's shape
    for name in ("pages.tif", "short.tif"):
        with tifffile.TiffFile(tmp_path / name) as tif:
            assert vio.contiguous_imagej_stack(tif, (9, 10, 14)) is None, name


def _write_slices(folder, numbers, shape=(6, 7), dtype=np.uint16, **kwargs):
    folder.mkdir(exist_ok=True)
    for n in numbers:
        tifffile.imwrite(folder / f"ct_{n:04d}.tif", np.full(shape, n, dtype), **kwargs)


def test_slice_folder_is_read_in_natural_order_one_file_at_a_time(tmp_path):
    folder = tmp_path / "rec"
    folder.mkdir()
    for n in (9, 10, 11, 8):  # unpadded names: 10 and 11 must come after 9
        tifffile.imwrite(folder / f"s{n}.tif", np.full((6, 7), n, np.uint16))
    volume = vio.open_volume(folder, (5.0, 5.0, 5.0))
    assert volume.shape == (4, 6, 7)
    assert [float(volume.read_slice(z)[0, 0]) for z in range(4)] == [8.0, 9.0, 10.0, 11.0]


def test_slice_folder_voxel_size_from_imagej_metadata_or_refused(tmp_path):
    _write_slices(tmp_path / "meta", range(3), imagej=True, resolution=(1 / 2.5, 1 / 2.5),
                  metadata={"spacing": 2.5, "unit": "um"})
    assert vio.open_volume(tmp_path / "meta").voxel_size_um == (2.5, 2.5, 2.5)
    _write_slices(tmp_path / "bare", range(3))
    with pytest.raises(ValueError, match=r"ct_0000\.tif: no voxel size.*--voxel-size"):
        vio.open_volume(tmp_path / "bare")


@pytest.mark.parametrize("case, expected", [
    ("gap", r"jump from 1 \(ct_0001\.tif\) to 3 \(ct_0003\.tif\): slice 2 is missing"),
    ("duplicate", r"slice number 1 twice"),
    ("shape", r"ct_0002\.tif: uint16 slice of shape \(5, 7\), unlike the first slice ct_0000\.tif"),
    ("dtype", r"ct_0002\.tif: float32 slice"),
    ("no number", r"notes\.tif: no slice number"),
])
def test_damaged_slice_folders_are_refused_naming_the_file(tmp_path, case, expected):
    folder = tmp_path / "rec"
    _write_slices(folder, [0, 1, 3] if case == "gap" else [0, 1, 2])
    if case == "duplicate":
        tifffile.imwrite(folder / "ct_1.tif", np.zeros((6, 7), np.uint16))
    elif case == "shape":
        _write_slices(folder, [2], shape=(5, 7))
    elif case == "dtype":
        _write_slices(folder, [2], dtype=np.float32)
    elif case == "no number":
        tifffile.imwrite(folder / "notes.tif", np.zeros((6, 7), np.uint16))
    with pytest.raises(ValueError, match=expected):
        vio.open_volume(folder, (1.0, 1.0, 1.0))


def test_hdf5_dataset_is_read_slice_by_slice_with_its_voxel_size(tmp_path):
    import h5py

    data = np.arange(3 * 4 * 5, dtype=np.uint16).reshape(3, 4, 5)
    with h5py.File(tmp_path / "scan.h5", "w") as h5:
        h5.create_dataset("exchange/data", data=data).attrs["element_size_um"] = [3.0, 2.0, 2.0]
        h5.create_dataset("flat", data=np.zeros((4, 5)))
    volume = vio.open_volume(f"{tmp_path / 'scan.h5'}:/exchange/data")
    assert volume.shape == (3, 4, 5) and volume.voxel_size_um == (3.0, 2.0, 2.0)
    np.testing.assert_array_equal(volume.read_slice(2), data[2].astype(np.float32))
    volume.close()
    with pytest.raises(ValueError, match=r"scan\.h5: no dataset '/missing'.*/exchange/data"):
        vio.open_volume(f"{tmp_path / 'scan.h5'}:/missing")
    with pytest.raises(ValueError, match=r"scan\.h5:/flat: dataset of shape \(4, 5\)"):
        vio.open_volume(f"{tmp_path / 'scan.h5'}:/flat")
