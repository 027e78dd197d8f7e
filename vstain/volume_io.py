"""Reading CT volumes slice by slice and writing stained RGB volumes, streaming.

Sources (:class:`ArrayVolume`, :class:`TiffVolume`, :class:`TiffFolderVolume`, :class:`ZarrVolume`,
:class:`HDF5Volume`, opened by :func:`open_volume`; written in :mod:`vstain.volume_sources`) hand out one
``float32`` slice at a time, so a volume larger than memory is never loaded whole: a TIFF
stack is decoded page by page, a folder of slice TIFFs file by file, an OME-Zarr store chunk
slab by chunk slab, an HDF5 dataset slice by slice. Writers (:func:`write_rgb_tiff_stack`,
:func:`write_rgb_ome_zarr`, :func:`write_rgb_volume`) take an iterable of ``(Y, X, 3)``
uint8 slices and write them as they come, to a temporary sibling renamed onto the output
only when the last slice is in (:func:`vstain.io.atomic_target`). OME-Zarr stores
(:func:`write_ome_zarr`) are multiscale OME-NGFF 0.4 or 0.5 images whose metadata is built and
checked by ``ome-zarr-models`` (:func:`ngff_image_model`, :func:`validate_ome_zarr`). :class:`RawStore` is a
raw scratch array on disk, read and written by explicit offsets.

Examples
--------
>>> import tempfile, pathlib
>>> from vstain.io import read_tiff, write_tiff
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> write_tiff(folder / "ct.tif", np.zeros((2, 4, 5), np.uint16), (2.0, 1.0, 1.0))
>>> source = open_volume(folder / "ct.tif")
>>> white = (np.full((4, 5, 3), 255, np.uint8) for _ in range(source.shape[0]))
>>> write_rgb_volume(folder / "rgb.tif", white, source.shape, source.voxel_size_um)
>>> source.close(); read_tiff(folder / "rgb.tif")[0].shape
(2, 4, 5, 3)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import pydantic_zarr.v2
import pydantic_zarr.v3
import tifffile
import zarr
from ome_zarr_models.common.omero import Omero
from ome_zarr_models.v04 import axes as ngff04_axes, image as ngff04
from ome_zarr_models.v05 import axes as ngff05_axes, image as ngff05

from vstain.io import atomic_target
# the sources live in their own part; their public names are this module's too
from vstain.volume_sources import (ArrayVolume, HDF5Volume, InvertedVolume, NormalisedVolume,  # noqa: F401
                                   TiffFolderVolume, TiffVolume, ZarrVolume, _check_dtype, _check_voxel_size,
                                   contiguous_imagej_stack, natural_key, open_volume, split_hdf5_path)


# --------------------------------------------------------------------------- writers


def write_rgb_tiff_stack(
    path: str | Path,
    slices: Iterable[np.ndarray],
    shape: Sequence[int],
    voxel_size_um: Sequence[float],
    *,
    metadata: dict | None = None,
    overwrite: bool = False,
) -> None:
    """Write ``(Y, X, 3)`` uint8 slices as an ImageJ RGB stack with its voxel size, streaming.

    Slices are written as they come (never stacked in memory) to a temporary name that
    is renamed to ``path`` only when the last slice is in: an interrupted run leaves no
    file that looks complete.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from vstain.io import read_tiff
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "rgb.tif"
    >>> write_rgb_tiff_stack(p, (np.zeros((4, 5, 3), np.uint8) for _ in range(2)), (2, 4, 5), (2.0, 1.0, 1.0))
    >>> image, spacing, _ = read_tiff(p); image.shape, spacing
    ((2, 4, 5, 3), (2.0, 1.0, 1.0))
    """
    depth, height, width = (int(s) for s in shape)
    dz, dy, dx = _check_voxel_size(voxel_size_um, str(path))
    ij_meta: dict[str, Any] = {"unit": "um", "spacing": dz, "axes": "ZYXS"}
    if metadata:
        ij_meta["Info"] = json.dumps(metadata, default=str)
    count = [0]

    def checked() -> Iterator[np.ndarray]:
        for rgb in slices:
            if rgb.shape != (height, width, 3) or rgb.dtype != np.uint8:
                raise ValueError(f"{path}: slice {count[0]} is {rgb.dtype} {rgb.shape}, expected uint8 {(height, width, 3)}")
            count[0] += 1
            yield rgb

    with atomic_target(Path(path), overwrite=overwrite) as tmp:
        with tifffile.TiffWriter(tmp, imagej=True) as tif:
            tif.write(checked(), shape=(depth, height, width, 3), dtype=np.uint8, photometric="rgb",
                      resolution=(1.0 / dx, 1.0 / dy), metadata=ij_meta)
        if count[0] != depth:
            raise ValueError(f"{path}: got {count[0]} slices, expected {depth}")


#: OME-NGFF versions the writers make: 0.4 (Zarr format 2, the default most viewers read) or 0.5 (Zarr format 3).
NGFF_VERSIONS = ("0.4", "0.5")
#: The pyramid halves every axis longer than this until none is (levels "down to about 256 px").
PYRAMID_MIN_PX = 256
#: Chunk side in Y and X, every level; chunks are ``chunk_depth`` slices deep (3D chunks, the channel in one).
CHUNK_YX = 256
#: omero channel colours of an RGB stain (red, green, blue), 8-bit windows.
RGB_CHANNELS = (("red", "FF0000"), ("green", "00FF00"), ("blue", "0000FF"))


def pyramid_shapes(shape: Sequence[int], min_px: int = PYRAMID_MIN_PX) -> list[tuple[int, int, int]]:
    """The ``(z, y, x)`` shapes of a multiscale pyramid: each level halves (rounding up) every axis
    still longer than ``min_px``, until none is.

    Examples
    --------
    >>> pyramid_shapes((512, 1024, 1000))
    [(512, 1024, 1000), (256, 512, 500), (256, 256, 250)]
    >>> pyramid_shapes((3, 40, 50))
    [(3, 40, 50)]
    """
    shapes = [tuple(int(s) for s in shape)]
    while any(s > min_px for s in shapes[-1]):
        shapes.append(tuple((s + 1) // 2 if s > min_px else s for s in shapes[-1]))
    return shapes


def downsample_block(block: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    """Mean over ``factors``-sized blocks of the trailing axes (odd ends repeat the edge), cast back.

    Examples
    --------
    >>> downsample_block(np.arange(8, dtype=np.uint8).reshape(2, 4), (1, 2)).tolist()
    [[0, 2], [4, 6]]
    >>> downsample_block(np.array([[1.0, 3.0, 5.0]]), (1, 2)).tolist()
    [[2.0, 5.0]]
    """
    lead = block.ndim - len(factors)
    pad = [(0, 0)] * lead + [(0, (-n) % f) for n, f in zip(block.shape[lead:], factors)]
    if any(p[1] for p in pad):
        block = np.pad(block, pad, mode="edge")
    shape = list(block.shape[:lead])
    for n, f in zip(block.shape[lead:], factors):
        shape += [n // f, f]
    mean = block.reshape(shape).mean(axis=tuple(range(lead + 1, len(shape), 2)), dtype=np.float32)
    if np.issubdtype(block.dtype, np.integer):
        mean = np.rint(mean)
    return mean.astype(block.dtype)


def _check_version(version: str, name: str) -> str:
    if str(version) not in NGFF_VERSIONS:
        raise ValueError(f"{name}: OME-NGFF version must be one of {list(NGFF_VERSIONS)}, got {version!r}")
    return str(version)


def _image_model(version: str) -> Any:
    """The ``ome-zarr-models`` image class of an NGFF version, its forward references resolved."""
    module, specs = (ngff04, pydantic_zarr.v2) if version == "0.4" else (ngff05, pydantic_zarr.v3)
    Image = module.Image
    # the models name ArraySpec / GroupSpec by string: resolve them once, from the spec module of the version
    Image.model_rebuild(_types_namespace={"ArraySpec": specs.ArraySpec, "GroupSpec": specs.GroupSpec})
    return Image


def ngff_image_model(shapes: Sequence[Sequence[int]], dtype: Any, voxel_size_um: Sequence[float], *,
                     rgb: bool, name: str, chunk_depth: int = 16, version: str = "0.4") -> Any:
    """The OME-NGFF image of a pyramid, built and checked by ``ome-zarr-models`` (no array data).

    Axes are ``c, z, y, x`` (RGB, channel first, with ``omero`` channel colours) or ``z, y, x``,
    in micrometres; level ``k``'s scale is the voxel size times the level's shrink factor.

    Examples
    --------
    >>> m = ngff_image_model([(4, 8, 8), (2, 4, 4)], np.uint8, (2.0, 1.0, 1.0), rgb=True, name="s")
    >>> [d.coordinateTransformations[0].scale for d in m.attributes.multiscales[0].datasets]
    [[1.0, 2.0, 1.0, 1.0], [1.0, 4.0, 2.0, 2.0]]
    >>> [c.color for c in m.attributes.omero.channels]
    ['FF0000', '00FF00', '0000FF']
    """
    version = _check_version(version, name)
    Image = _image_model(version)
    Axis, ImageAttrs = (ngff04_axes.Axis, ngff04.ImageAttrs) if version == "0.4" else (ngff05_axes.Axis,
                                                                                        ngff05.ImageAttrs)
    ArraySpec = (pydantic_zarr.v2 if version == "0.4" else pydantic_zarr.v3).ArraySpec
    factor, previous = [1, 1, 1], None
    lead = [3] if rgb else []
    axes = ([Axis(name="c", type="channel")] if rgb else []) + [
        Axis(name=n, type="space", unit="micrometer") for n in ("z", "y", "x")]
    specs, scales = [], []
    for shape in shapes:
        shape = [int(s) for s in shape]
        chunks = lead + [min(chunk_depth, shape[0]), min(CHUNK_YX, shape[1]), min(CHUNK_YX, shape[2])]
        like = np.broadcast_to(np.zeros((), dtype), tuple(lead + shape))  # shape and dtype only, no memory
        if version == "0.4":
            specs.append(ArraySpec.from_array(like, chunks=tuple(chunks), dimension_separator="/", fill_value=0,
                                              compressor={"id": "zstd", "level": 3}, attributes={}))
        else:
            specs.append(ArraySpec.from_array(
                like, attributes={}, fill_value=0,
                chunk_grid={"name": "regular", "configuration": {"chunk_shape": chunks}},
                chunk_key_encoding={"name": "default", "configuration": {"separator": "/"}},
                codecs=[{"name": "bytes", "configuration": {"endian": "little"}},
                        {"name": "zstd", "configuration": {"level": 3, "checksum": False}}],
                dimension_names=[a.name for a in axes]))
        if previous is not None:  # each halving doubles the voxel, whatever the rounding of odd sides
            factor = [k * (2 if a != b else 1) for k, a, b in zip(factor, previous, shape)]
        previous = shape
        scales.append([1.0] * len(lead) + [float(v) * k for v, k in zip(voxel_size_um, factor)])
    image = Image.new(array_specs=specs, paths=[str(k) for k in range(len(shapes))], axes=axes, scales=scales,
                      translations=[None] * len(shapes), name=name, multiscale_type="mean",
                      metadata={"method": "vstain.volume_io.downsample_block",
                                "description": "mean over 2-voxel blocks of every axis longer than "
                                               f"{PYRAMID_MIN_PX} px"})
    omero = Omero(channels=[{"label": label, "color": colour, "active": True,
                             "window": {"min": 0, "max": 255, "start": 0, "end": 255}}
                            for label, colour in RGB_CHANNELS]) if rgb else None
    if version == "0.4":
        attributes = ImageAttrs(multiscales=image.attributes.multiscales, omero=omero)
    else:
        ome = ImageAttrs(version="0.5", multiscales=image.attributes.ome.multiscales,
                         **({"omero": omero.model_dump()} if omero else {}))
        attributes = type(image.attributes)(ome=ome)
    return Image(members=image.members, attributes=attributes)


def validate_ome_zarr(path: str | Path) -> Any:
    """Check an OME-Zarr image store against the OME-NGFF models of ``ome-zarr-models``.

    Returns the validated image model; raises ``ValueError`` naming the store if it is not a
    valid OME-NGFF 0.4 or 0.5 image.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "u.zarr"
    >>> write_ome_zarr(p, (np.zeros((4, 5), np.float32) for _ in range(3)), (3, 4, 5), (2.0, 1.0, 1.0))
    >>> validate_ome_zarr(p).ome_zarr_version
    '0.4'
    """
    group = zarr.open_group(str(path), mode="r")
    version = "0.5" if group.metadata.zarr_format == 3 else "0.4"
    model = _image_model(version)
    try:
        return model.from_zarr(group)
    except Exception as error:  # pydantic's ValidationError and the library's own
        raise ValueError(f"{path}: not a valid OME-NGFF {version} image: {error}") from None


def _write_pyramid(group: zarr.Group, slices: Iterable[np.ndarray], shapes: list[tuple[int, int, int]], *,
                   rgb: bool, dtype: np.dtype, name: str) -> None:
    """Fill level 0 from ``slices`` a chunk slab at a time, then each coarser level chunk by chunk
    from the one before (memory: one slab of level 0, then one block)."""
    depth, height, width = shapes[0]
    level0 = group["0"]
    chunk_depth = int(level0.chunks[-3])
    slab: list[np.ndarray] = []
    count = 0

    def flush(start: int) -> None:
        block = np.stack(slab)
        level0[..., start:start + len(slab), :, :] = np.moveaxis(block, -1, 0) if rgb else block

    for plane in slices:
        plane = np.asarray(plane)
        expected = (height, width, 3) if rgb else (height, width)
        if plane.shape != expected or (rgb and plane.dtype != np.uint8):
            raise ValueError(f"{name}: slice {count} is {plane.dtype} {plane.shape}, expected "
                             f"{'uint8 ' if rgb else ''}{expected}")
        if not rgb and not np.issubdtype(plane.dtype, np.floating):
            raise ValueError(f"{name}: slice {count} is {plane.dtype}, expected floating point")
        slab.append(plane.astype(dtype, copy=False))
        count += 1
        if len(slab) == chunk_depth:
            flush(count - len(slab))
            slab = []
    if slab:
        flush(count - len(slab))
    slab = []
    if count != depth:
        raise ValueError(f"{name}: got {count} slices, expected {depth}")
    for level in range(1, len(shapes)):
        source, target = group[str(level - 1)], group[str(level)]
        factors = [2 if a != b else 1 for a, b in zip(shapes[level - 1], shapes[level])]
        cz, cy, cx = (int(c) for c in target.chunks[-3:])
        for z in range(0, shapes[level][0], cz):
            for y in range(0, shapes[level][1], cy):
                for x in range(0, shapes[level][2], cx):
                    window = tuple(slice(o * f, (o + c) * f) for o, c, f in zip((z, y, x), (cz, cy, cx), factors))
                    block = downsample_block(np.asarray(source[(Ellipsis, *window)]), factors)
                    target[..., z:z + block.shape[-3], y:y + block.shape[-2], x:x + block.shape[-1]] = block


def write_ome_zarr(
    path: str | Path,
    slices: Iterable[np.ndarray],
    shape: Sequence[int],
    voxel_size_um: Sequence[float],
    *,
    rgb: bool = False,
    metadata: dict | None = None,
    overwrite: bool = False,
    chunk_depth: int = 16,
    version: str = "0.4",
    siblings: dict[str, tuple[Callable[[], Iterable[np.ndarray]], dict | None]] | None = None,
) -> None:
    """Write slices as an OME-Zarr multiscale image, streaming; metadata by ``ome-zarr-models``.

    Level 0 is the full volume, ``(c, z, y, x)`` uint8 for RGB slices ``(Y, X, 3)`` (``omero``
    channel colours red, green, blue) or ``(z, y, x)`` float32 for scalar slices ``(Y, X)``;
    coarser levels (:func:`pyramid_shapes`, block means) follow down to about 256 px, each built
    chunk by chunk from the level before. Chunks are ``(3,) chunk_depth x 256 x 256``. Memory is
    one slab of ``chunk_depth`` slices, flat in depth. ``metadata`` goes to the group's ``vstain``
    attribute. ``siblings`` maps a sub-group name to ``(slices_function, metadata)``: scalar images
    written into the same store after this one (e.g. the stain's ``uncertainty``), each its own
    OME-NGFF image. The store is built under a temporary name and renamed at the end.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "rgb.ome.zarr"
    >>> write_ome_zarr(p, (np.full((4, 5, 3), 7, np.uint8) for _ in range(3)), (3, 4, 5), (2.0, 1.0, 1.0), rgb=True)
    >>> zarr.open(str(p / "0"), mode="r").shape
    (3, 3, 4, 5)
    """
    name = str(path)
    shape = tuple(int(s) for s in shape)
    voxel = _check_voxel_size(voxel_size_um, name)
    version = _check_version(version, name)
    if int(chunk_depth) < 1:
        raise ValueError(f"{name}: chunk_depth must be a positive number of slices, got {chunk_depth!r}")
    with atomic_target(Path(path), overwrite=overwrite) as tmp:
        _write_image(tmp, "", slices, shape, voxel, rgb=rgb, metadata=metadata, chunk_depth=int(chunk_depth),
                     version=version, name=name)
        for key, (make_slices, extra) in (siblings or {}).items():
            _write_image(tmp, key, make_slices(), shape, voxel, rgb=False, metadata=extra,
                         chunk_depth=int(chunk_depth), version=version, name=f"{name}/{key}")


def _write_image(root: Path, key: str, slices: Iterable[np.ndarray], shape: tuple[int, int, int],
                 voxel: tuple[float, float, float], *, rgb: bool, metadata: dict | None, chunk_depth: int,
                 version: str, name: str) -> None:
    shapes = pyramid_shapes(shape)
    dtype = np.dtype(np.uint8 if rgb else np.float32)
    model = ngff_image_model(shapes, dtype, voxel, rgb=rgb, name=Path(name).name, chunk_depth=chunk_depth,
                             version=version)
    store = zarr.storage.LocalStore(str(root))
    model.to_zarr(store, key)
    group = zarr.open_group(store=store, path=key, mode="r+")
    if metadata:
        group.attrs["vstain"] = json.loads(json.dumps(metadata, default=str))
    _write_pyramid(group, slices, shapes, rgb=rgb, dtype=dtype, name=name)


def write_rgb_ome_zarr(
    path: str | Path,
    slices: Iterable[np.ndarray],
    shape: Sequence[int],
    voxel_size_um: Sequence[float],
    *,
    metadata: dict | None = None,
    overwrite: bool = False,
    chunk_depth: int = 16,
    version: str = "0.4",
    siblings: dict | None = None,
) -> None:
    """Write ``(Y, X, 3)`` uint8 slices as an OME-Zarr multiscale RGB image ``(c, z, y, x)``.

    :func:`write_ome_zarr` with ``rgb=True``: NGFF 0.4 (Zarr format 2) by default, 0.5 (Zarr
    format 3) with ``version="0.5"``; ``omero`` channel colours; a pyramid down to about 256 px.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "rgb.ome.zarr"
    >>> write_rgb_ome_zarr(p, (np.full((4, 5, 3), 7, np.uint8) for _ in range(3)), (3, 4, 5), (2.0, 1.0, 1.0))
    >>> import zarr; zarr.open(str(p / "0"), mode="r").shape
    (3, 3, 4, 5)
    """
    write_ome_zarr(path, slices, shape, voxel_size_um, rgb=True, metadata=metadata, overwrite=overwrite,
                   chunk_depth=chunk_depth, version=version, siblings=siblings)


def write_rgb_volume(path: str | Path, slices: Iterable[np.ndarray], shape: Sequence[int],
                     voxel_size_um: Sequence[float], **kwargs: Any) -> None:
    """Write an RGB volume as OME-Zarr (``.zarr`` suffix) or TIFF stack (anything else)."""
    if str(path).lower().endswith(".zarr"):
        write_rgb_ome_zarr(path, slices, shape, voxel_size_um, **kwargs)
    else:
        write_rgb_tiff_stack(path, slices, shape, voxel_size_um, **kwargs)


def write_scalar_volume(path: str | Path, slices: Iterable[np.ndarray], shape: Sequence[int],
                        voxel_size_um: Sequence[float], *, metadata: dict | None = None, overwrite: bool = False,
                        chunk_depth: int = 16, version: str = "0.4") -> None:
    """Write ``(Y, X)`` float32 slices (a map such as uncertainty) as a TIFF stack or OME-Zarr ``(z, y, x)``.

    Streams like :func:`write_rgb_volume` (``.zarr`` suffix: OME-Zarr, else an ImageJ float32
    stack with the voxel size), to a temporary name renamed when the last slice is in.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from vstain.io import read_tiff
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "u.tif"
    >>> write_scalar_volume(p, (np.full((4, 5), 0.5, np.float32) for _ in range(2)), (2, 4, 5), (2.0, 1.0, 1.0))
    >>> image, spacing, _ = read_tiff(p); image.shape, image.dtype.name, spacing
    ((2, 4, 5), 'float32', (2.0, 1.0, 1.0))
    """
    depth, height, width = (int(s) for s in shape)
    voxel = _check_voxel_size(voxel_size_um, str(path))
    count = [0]

    def checked() -> Iterator[np.ndarray]:
        for plane in slices:
            plane = np.asarray(plane)
            if plane.shape != (height, width):
                raise ValueError(f"{path}: slice {count[0]} has shape {plane.shape}, expected {(height, width)}")
            count[0] += 1
            yield plane.astype(np.float32, copy=False)

    if str(path).lower().endswith(".zarr"):
        write_ome_zarr(path, checked(), shape, voxel, metadata=metadata, overwrite=overwrite, chunk_depth=chunk_depth,
                       version=version)
        return
    ij_meta: dict[str, Any] = {"unit": "um", "spacing": voxel[0], "axes": "ZYX"}
    if metadata:
        ij_meta["Info"] = json.dumps(metadata, default=str)
    with atomic_target(Path(path), overwrite=overwrite) as tmp:
        with tifffile.TiffWriter(tmp, imagej=True) as tif:
            tif.write(checked(), shape=(depth, height, width), dtype=np.float32,
                      resolution=(1.0 / voxel[2], 1.0 / voxel[1]), metadata=ij_meta)
        if count[0] != depth:
            raise ValueError(f"{path}: got {count[0]} slices, expected {depth}")


# --------------------------------------------------------------------------- scratch arrays


class RawStore:
    """A raw array file written and read by explicit offsets (no memory map held: flat memory).

    Parameters
    ----------
    path : Path
        The scratch file (created, or truncated, at the full size).
    shape : sequence of int
    dtype : numpy dtype

    Examples
    --------
    >>> import tempfile, pathlib
    >>> store = RawStore(pathlib.Path(tempfile.mkdtemp()) / "a.raw", (2, 3, 4), np.uint8)
    >>> store.write((1, 2), np.arange(4)); store.read((1,))[2].tolist()
    [0, 1, 2, 3]
    >>> store.close()
    """

    def __init__(self, path: Path, shape: Sequence[int], dtype: Any) -> None:
        self.path, self.shape, self.dtype = path, tuple(shape), np.dtype(dtype)
        self.file = open(path, "w+b")
        self.file.truncate(int(np.prod(self.shape)) * self.dtype.itemsize)

    def _offset(self, index: Sequence[int]) -> int:
        offset = 0
        for i, (k, n) in enumerate(zip(index, self.shape)):
            offset = offset * n + k
        for n in self.shape[len(index):]:
            offset *= n
        return offset * self.dtype.itemsize

    def write(self, index: Sequence[int], data: np.ndarray) -> None:
        """Write ``data`` at the leading ``index`` (e.g. ``(z,)`` for a whole slice)."""
        self.file.seek(self._offset(index))
        self.file.write(np.ascontiguousarray(data, self.dtype).tobytes())

    def read(self, index: Sequence[int]) -> np.ndarray:
        """The sub-array at the leading ``index``, read from the file."""
        shape = self.shape[len(index):]
        self.file.seek(self._offset(index))
        data = np.fromfile(self.file, dtype=self.dtype, count=int(np.prod(shape)))
        return data.reshape(shape)

    def close(self) -> None:
        """Close the file (the caller removes it)."""
        self.file.close()
