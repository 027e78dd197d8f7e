"""Reading CT volumes slice by slice and writing stained RGB volumes, streaming.

Sources (:class:`ArrayVolume`, :class:`TiffVolume`, :class:`ZarrVolume`, opened by
:func:`open_volume`) hand out one ``float32`` slice at a time, so a volume larger than
memory is never loaded whole: a TIFF stack is decoded page by page, an OME-Zarr store
chunk slab by chunk slab. Writers (:func:`write_rgb_tiff_stack`,
:func:`write_rgb_ome_zarr`, :func:`write_rgb_volume`) take an iterable of ``(Y, X, 3)``
uint8 slices and write them as they come, to a temporary sibling renamed onto the output
only when the last slice is in (:func:`vstain.io.atomic_target`). :class:`RawStore` is a
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
import math
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import tifffile
import zarr

from vstain.io import atomic_target


# --------------------------------------------------------------------------- sources


class ArrayVolume:
    """A volume held in memory (or a memory map) as a source of slices.

    Parameters
    ----------
    array : ndarray
        ``(Z, Y, X)``.
    voxel_size_um : (z, y, x) floats

    Examples
    --------
    >>> v = ArrayVolume(np.zeros((2, 3, 4), np.uint16), (1.0, 1.0, 1.0))
    >>> v.shape, v.read_slice(1).shape
    ((2, 3, 4), (3, 4))
    """

    def __init__(self, array: np.ndarray, voxel_size_um: Sequence[float], name: str = "volume") -> None:
        self.name = name
        if np.ndim(array) != 3:
            raise ValueError(f"{name}: expected a 3D volume (Z, Y, X), got shape {np.shape(array)}")
        self.array = array
        self.shape = tuple(int(s) for s in array.shape)
        self.voxel_size_um = _check_voxel_size(voxel_size_um, name)

    def read_slice(self, z: int) -> np.ndarray:
        """Slice ``z`` as a new float32 array."""
        return np.asarray(self.array[z], dtype=np.float32).copy()

    def close(self) -> None:
        """Nothing to release."""


class TiffVolume:
    """A greyscale TIFF stack read slice by slice (pages are decoded one at a time).

    The voxel size comes from the ImageJ metadata (``spacing`` and resolution in um,
    as :func:`vstain.io.write_tiff` writes it) unless ``voxel_size_um`` is given.
    """

    def __init__(self, path: str | Path, voxel_size_um: Sequence[float] | None = None) -> None:
        self.name = str(path)
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: file not found")
        self._tif = tifffile.TiffFile(path)
        try:
            series = self._tif.series[0]
            shape = tuple(int(s) for s in series.shape)
            rgb = len(shape) >= 3 and shape[-1] in (3, 4) and series.dtype == np.uint8
            if rgb:
                raise ValueError(f"{path}: an RGB image is not a CT volume (shape {shape}); give a greyscale stack")
            if len(shape) == 2:
                raise ValueError(
                    f"{path}: a 2D image of shape {shape} is not a volume; `vstain stain` needs a (Z, Y, X) stack "
                    "(stain single slices with `vstain infer`)"
                )
            if len(shape) != 3:
                raise ValueError(f"{path}: expected a (Z, Y, X) stack, got shape {shape}")
            self.shape = shape
            self._pages = series.pages
            if len(self._pages) != shape[0]:
                raise ValueError(f"{path}: {len(self._pages)} pages for {shape[0]} slices; cannot read slice-wise")
            self.voxel_size_um = (
                _check_voxel_size(voxel_size_um, self.name) if voxel_size_um is not None else self._read_voxel_size()
            )
        except BaseException:
            self._tif.close()
            raise

    def _read_voxel_size(self) -> tuple[float, float, float]:
        ij = self._tif.imagej_metadata or {}
        tags = self._tif.pages[0].tags
        unit = ij.get("unit", "")
        if "XResolution" in tags and unit in ("um", "micron", "\\u00B5m", "µm") and "spacing" in ij:
            xr, yr = tags["XResolution"].value, tags["YResolution"].value
            if xr[0] > 0 and yr[0] > 0:
                return _check_voxel_size((float(ij["spacing"]), yr[1] / yr[0], xr[1] / xr[0]), self.name)
        raise ValueError(
            f"{self.name}: no voxel size in the file (ImageJ 'spacing' and resolution in um); "
            "give it with --voxel-size Z Y X (micrometres), or write the stack with vstain.io.write_tiff"
        )

    def read_slice(self, z: int) -> np.ndarray:
        """Decode page ``z`` only."""
        return np.asarray(self._pages[z].asarray(), dtype=np.float32)

    def close(self) -> None:
        """Close the file."""
        self._tif.close()


def _ngff_multiscale(attrs: dict) -> dict | None:
    """The first ``multiscales`` entry of OME-NGFF 0.4 (top level) or 0.5 (under ``ome``)."""
    multiscales = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
    return multiscales[0] if multiscales else None


class ZarrVolume:
    """An OME-Zarr (or plain Zarr array) volume read chunk by chunk along Z.

    Only the chunk slab holding the requested slice is kept decoded, so memory is one
    chunk deep, whatever the depth of the volume. For an OME-Zarr group, the first
    (full-resolution) dataset and its ``scale`` transform are used; axes must be
    ``z, y, x`` (3 spatial dimensions).
    """

    def __init__(self, path: str | Path, voxel_size_um: Sequence[float] | None = None) -> None:
        self.name = str(path)
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: not found")
        node = zarr.open(str(path), mode="r")
        scale = None
        if isinstance(node, zarr.Group):
            multiscale = _ngff_multiscale(dict(node.attrs))
            if multiscale is None:
                raise ValueError(f"{path}: a Zarr group without OME-NGFF 'multiscales' metadata; give the array path")
            dataset = multiscale["datasets"][0]
            array = node[dataset["path"]]
            for transform in dataset.get("coordinateTransformations", []):
                if transform.get("type") == "scale":
                    scale = transform["scale"]
            axes = multiscale.get("axes", [])
            names = [a["name"] if isinstance(a, dict) else a for a in axes]
            units = [a.get("unit") for a in axes if isinstance(a, dict)]
            if names and names != ["z", "y", "x"]:
                raise ValueError(f"{path}: OME-Zarr axes {names}; expected ['z', 'y', 'x'] (one greyscale volume)")
            if scale is not None and any(u not in (None, "micrometer") for u in units):
                raise ValueError(f"{path}: axis units {units}; expected micrometer")
        else:
            array = node
        if array.ndim != 3:
            raise ValueError(
                f"{path}: the Zarr array has {array.ndim} dimensions (shape {array.shape}); expected 3 (Z, Y, X)"
            )
        self.array = array
        self.shape = tuple(int(s) for s in array.shape)
        self._chunk_z = int(array.chunks[0])
        self._slab: tuple[int, np.ndarray] | None = None
        if voxel_size_um is not None:
            self.voxel_size_um = _check_voxel_size(voxel_size_um, self.name)
        elif scale is not None:
            self.voxel_size_um = _check_voxel_size(scale, self.name)
        else:
            raise ValueError(
                f"{path}: no voxel size (no OME-NGFF scale transform); give it with --voxel-size Z Y X (micrometres)"
            )

    def read_slice(self, z: int) -> np.ndarray:
        """Slice ``z``, decoding its chunk slab once."""
        start = (z // self._chunk_z) * self._chunk_z
        if self._slab is None or self._slab[0] != start:
            self._slab = None  # release the previous slab before decoding the next
            self._slab = (start, np.asarray(self.array[start : start + self._chunk_z]))
        return self._slab[1][z - start].astype(np.float32)

    def close(self) -> None:
        """Drop the decoded slab."""
        self._slab = None


def open_volume(path: str | Path, voxel_size_um: Sequence[float] | None = None) -> TiffVolume | ZarrVolume:
    """Open a CT volume for slice-wise reading: a TIFF stack or an (OME-)Zarr store.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from vstain.io import write_tiff
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "ct.tif"
    >>> write_tiff(p, np.zeros((3, 8, 8), np.uint16), (10.0, 5.0, 5.0))
    >>> v = open_volume(p); v.shape, v.voxel_size_um
    ((3, 8, 8), (10.0, 5.0, 5.0))
    >>> v.close()
    """
    path = Path(path)
    if path.suffix.lower() in (".zarr", ".ome.zarr") or path.is_dir():
        return ZarrVolume(path, voxel_size_um)
    return TiffVolume(path, voxel_size_um)


def _check_voxel_size(voxel_size_um: Any, name: str) -> tuple[float, float, float]:
    try:
        sizes = tuple(float(s) for s in voxel_size_um)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: voxel size must be three numbers (z, y, x) in um, got {voxel_size_um!r}") from None
    if len(sizes) != 3 or not all(math.isfinite(s) and s > 0 for s in sizes):
        raise ValueError(f"{name}: voxel size must be three positive numbers (z, y, x) in um, got {voxel_size_um!r}")
    return sizes


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


def ngff_metadata(voxel_size_um: Sequence[float], name: str = "stained", *, rgb: bool = True) -> dict:
    """OME-NGFF 0.4 ``multiscales`` metadata of one full-resolution level.

    Axes are ``c, z, y, x`` for RGB (channel first, as NGFF orders them) or ``z, y, x``.

    Examples
    --------
    >>> m = ngff_metadata((2.0, 1.0, 1.0))
    >>> [a["name"] for a in m["multiscales"][0]["axes"]], m["multiscales"][0]["datasets"][0]["coordinateTransformations"]
    (['c', 'z', 'y', 'x'], [{'type': 'scale', 'scale': [1.0, 2.0, 1.0, 1.0]}])
    """
    axes = [{"name": n, "type": "space", "unit": "micrometer"} for n in ("z", "y", "x")]
    scale = [float(s) for s in voxel_size_um]
    if rgb:
        axes = [{"name": "c", "type": "channel"}] + axes
        scale = [1.0] + scale
    return {
        "multiscales": [{
            "version": "0.4",
            "name": name,
            "axes": axes,
            "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}],
        }]
    }


def write_rgb_ome_zarr(
    path: str | Path,
    slices: Iterable[np.ndarray],
    shape: Sequence[int],
    voxel_size_um: Sequence[float],
    *,
    metadata: dict | None = None,
    overwrite: bool = False,
    chunk_depth: int = 16,
) -> None:
    """Write ``(Y, X, 3)`` uint8 slices as an OME-Zarr (NGFF 0.4, Zarr format 2) image ``(c, z, y, x)``.

    Chunks are ``chunk_depth`` slices deep; a slab of that many slices is buffered,
    then written. The store is built under a temporary name and renamed at the end.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "rgb.ome.zarr"
    >>> write_rgb_ome_zarr(p, (np.full((4, 5, 3), 7, np.uint8) for _ in range(3)), (3, 4, 5), (2.0, 1.0, 1.0))
    >>> import zarr; zarr.open(str(p / "0"), mode="r").shape
    (3, 3, 4, 5)
    """
    depth, height, width = (int(s) for s in shape)
    voxel_size_um = _check_voxel_size(voxel_size_um, str(path))
    with atomic_target(Path(path), overwrite=overwrite) as tmp:
        group = zarr.open_group(str(tmp), mode="w", zarr_format=2)
        group.attrs.update(ngff_metadata(voxel_size_um, Path(path).name))
        if metadata:
            group.attrs["vstain"] = json.loads(json.dumps(metadata, default=str))
        array = group.create_array("0", shape=(3, depth, height, width), dtype=np.uint8,
                                   chunks=(3, chunk_depth, height, width),
                                   chunk_key_encoding={"name": "v2", "separator": "/"})
        slab: list[np.ndarray] = []
        start = 0
        count = 0
        for rgb in slices:
            if rgb.shape != (height, width, 3) or rgb.dtype != np.uint8:
                raise ValueError(f"{path}: slice {count} is {rgb.dtype} {rgb.shape}, expected uint8 {(height, width, 3)}")
            slab.append(rgb)
            count += 1
            if len(slab) == chunk_depth:
                array[:, start : start + len(slab)] = np.moveaxis(np.stack(slab), -1, 0)
                start += len(slab)
                slab = []
        if slab:
            array[:, start : start + len(slab)] = np.moveaxis(np.stack(slab), -1, 0)
        if count != depth:
            raise ValueError(f"{path}: got {count} slices, expected {depth}")


def write_rgb_volume(path: str | Path, slices: Iterable[np.ndarray], shape: Sequence[int],
                     voxel_size_um: Sequence[float], **kwargs: Any) -> None:
    """Write an RGB volume as OME-Zarr (``.zarr`` suffix) or TIFF stack (anything else)."""
    if str(path).lower().endswith(".zarr"):
        write_rgb_ome_zarr(path, slices, shape, voxel_size_um, **kwargs)
    else:
        write_rgb_tiff_stack(path, slices, shape, voxel_size_um, **kwargs)


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
