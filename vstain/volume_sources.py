"""CT volume sources: one ``float32`` slice at a time from an array, a TIFF stack, a folder of slice TIFFs, an
OME-Zarr store or an HDF5 dataset (:func:`open_volume` picks), so a volume larger than memory is never loaded whole.

Part of :mod:`vstain.volume_io`, which re-exports every name here; import them from there.

Examples
--------
>>> volume = ArrayVolume(np.arange(24, dtype=np.uint16).reshape(2, 3, 4), (2.0, 1.0, 1.0))
>>> volume.read_slice(1).dtype, float(volume.read_slice(1)[0, 0])
(dtype('float32'), 12.0)
"""

from __future__ import annotations

import json
import math
import re
import zlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import h5py
import tifffile
import zarr

from vstain.io import imagej_spacing_um, open_tiff, tiff_pixel_um
from vstain.vocabulary import PIXEL_UM_RANGE


# --------------------------------------------------------------------------- sources

#: What decoding a damaged TIFF page raises (a short read, a broken compressed stream, a bad tag).
_DECODE_ERRORS = (ValueError, EOFError, OSError, tifffile.TiffFileError, RuntimeError, zlib.error)


def _check_dtype(dtype: Any, name: str) -> np.dtype:
    """``dtype`` if it holds CT intensities (integers or real floating point); else a ValueError naming ``name``.

    Examples
    --------
    >>> _check_dtype(np.uint16, "ct.h5:/data")
    dtype('uint16')
    >>> _check_dtype(bool, "ct.h5:/mask")
    Traceback (most recent call last):
    ...
    ValueError: ct.h5:/mask: bool voxels are not CT intensities (expected integers or real floating point: a mask, a label image or complex data is not a scan)
    """
    dtype = np.dtype(dtype)
    if dtype.kind not in "uif":
        raise ValueError(f"{name}: {dtype} voxels are not CT intensities (expected integers or real floating point: "
                         "a mask, a label image or complex data is not a scan)")
    return dtype


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


class NormalisedVolume:
    """Another source's slices mapped linearly to the study's CT scale: ``clip(scale * v + offset, 0, 65535)``.

    The clip is the uint16 range the training CT was written in (paper 2.5), so the network sees
    what it was trained on; the values stay float32 (no rounding).

    Examples
    --------
    >>> v = NormalisedVolume(ArrayVolume(np.array([[[0.2, 0.8, 9.0]]], np.float32), (1, 1, 1)), 33333.3, 3333.3)
    >>> [round(float(x)) for x in v.read_slice(0)[0]]
    [10000, 30000, 65535]
    """

    def __init__(self, source: Any, scale: float, offset: float) -> None:
        self.source, self.scale, self.offset = source, float(scale), float(offset)
        self.name, self.shape, self.voxel_size_um = source.name, source.shape, source.voxel_size_um

    def read_slice(self, z: int) -> np.ndarray:
        """Slice ``z`` of the source, mapped and clipped (non-finite values stay non-finite)."""
        return self.map_slice(self.source.read_slice(z))

    def map_slice(self, image: np.ndarray) -> np.ndarray:
        """A slice of the source already read, mapped and clipped as :meth:`read_slice` does (a new array)."""
        image = np.asarray(image) * np.float32(self.scale) + np.float32(self.offset)
        return np.clip(image, 0, 65535, where=np.isfinite(image), out=image)

    def close(self) -> None:
        """Close the source."""
        self.source.close()


class InvertedVolume:
    """Another source's slices negated (``-v``): a CT with inverted contrast (bone dark) made the right way up.

    The linear normalisation that follows maps the negated bone and background to 30000 and 10000
    as for any CT.

    Examples
    --------
    >>> InvertedVolume(ArrayVolume(np.array([[[1.0, -2.0]]]), (1, 1, 1))).read_slice(0).tolist()
    [[-1.0, 2.0]]
    """

    def __init__(self, source: Any) -> None:
        self.source = source
        self.name, self.shape, self.voxel_size_um = source.name, source.shape, source.voxel_size_um

    def read_slice(self, z: int) -> np.ndarray:
        """Slice ``z`` of the source, negated."""
        return np.negative(self.source.read_slice(z))

    def close(self) -> None:
        """Close the source."""
        self.source.close()


class TiffVolume:
    """A greyscale TIFF stack read slice by slice (pages are decoded one at a time).

    The voxel size comes from the ImageJ metadata (``spacing`` and resolution in um,
    as :func:`vstain.io.write_tiff` writes it) unless ``voxel_size_um`` is given.

    A stack ImageJ saved beyond 4 GB has one page header only: its description counts the slices
    (``images=N``) and the uncompressed slices follow each other after the first one's pixels
    (:func:`contiguous_imagej_stack`); each slice is then read at its own offset.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "big.tif"
    >>> stack = np.arange(3 * 4 * 5, dtype=np.uint16).reshape(3, 4, 5)
    >>> tifffile.imwrite(p, stack, imagej=True, truncate=True, metadata={"axes": "ZYX"})  # one header, 3 slices
    >>> volume = TiffVolume(p, (5, 5, 5))
    >>> volume.shape, volume.read_slice(2)[0].tolist()
    ((3, 4, 5), [40.0, 41.0, 42.0, 43.0, 44.0])
    >>> volume.close()
    """

    def __init__(self, path: str | Path, voxel_size_um: Sequence[float] | None = None) -> None:
        self.name = str(path)
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: file not found")
        self._tif = open_tiff(path)
        try:
            series = self._tif.series[0]
            shape = tuple(int(s) for s in series.shape)
            rgb = len(shape) >= 3 and shape[-1] in (3, 4) and series.dtype == np.uint8
            if rgb:
                raise ValueError(f"{path}: an RGB image is not a CT volume (shape {shape}); give a greyscale stack")
            if len(shape) == 2:
                raise ValueError(
                    f"{path}: a 2D image of shape {shape} is not a volume; `vstain stain` needs a (Z, Y, X) stack "
                    "(to stain this one slice, put it in a folder of its own and give the folder as --input, with "
                    "--voxel-size Z Y X)"
                )
            if len(shape) != 3:
                raise ValueError(f"{path}: expected a (Z, Y, X) stack, got shape {shape}")
            _check_dtype(series.dtype, self.name)
            self.shape = shape
            self._pages = series.pages
            self._contiguous = None
            if len(self._pages) != shape[0]:
                self._contiguous = contiguous_imagej_stack(self._tif, shape)
                if self._contiguous is None:
                    raise ValueError(f"{path}: {len(self._pages)} pages for {shape[0]} slices; cannot read slice-wise")
            self.voxel_size_um = (
                _check_voxel_size(voxel_size_um, self.name) if voxel_size_um is not None else self._read_voxel_size()
            )
        except BaseException:
            self._tif.close()
            raise

    def _read_voxel_size(self) -> tuple[float, float, float]:
        ij = self._tif.imagej_metadata or {}
        in_plane, _ = tiff_pixel_um(self._tif.pages[0], ij)
        spacing = imagej_spacing_um(ij)
        if in_plane is not None and spacing is not None:
            return _check_voxel_size((spacing,) + in_plane, self.name)
        raise ValueError(
            f"{self.name}: no voxel size in the file (ImageJ 'spacing' and resolution, in um or another known unit); "
            "give it with --voxel-size Z Y X (micrometres), or write the stack with vstain.io.write_tiff"
        )

    def read_slice(self, z: int) -> np.ndarray:
        """Decode page ``z`` only (a page that cannot be decoded is named with the file)."""
        if self._contiguous is not None:
            offset, dtype = self._contiguous
            count = self.shape[1] * self.shape[2]
            fh = self._tif.filehandle
            with fh.lock:
                plane = fh.read_array(dtype, count, offset + z * count * dtype.itemsize)
            return plane.reshape(self.shape[1:]).astype(np.float32)
        try:
            return np.asarray(self._pages[z].asarray(), dtype=np.float32)
        except _DECODE_ERRORS as err:
            raise ValueError(f"{self.name}: slice {z} (page {z + 1}) cannot be read, the file is damaged "
                             f"({type(err).__name__}: {err})") from None

    def close(self) -> None:
        """Close the file."""
        self._tif.close()


def contiguous_imagej_stack(tif: tifffile.TiffFile, shape: Sequence[int]) -> tuple[int, np.dtype] | None:
    """Where the slices of an ImageJ stack saved as one header with contiguous data begin, and their dtype.

    ImageJ saves a stack beyond 4 GB (where TIFF's 32-bit offsets end) with a single page header:
    its description says ``images=N`` and the ``N`` uncompressed slices follow each other from the
    first page's pixels on. tifffile reads such a file as a series of ``N`` slices over one page.
    Returns ``(byte offset of slice 0, dtype in the file's byte order)``, or None for any other
    layout (more than one page, compressed or tiled pixels, fewer bytes than ``N`` slices need).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "big.tif"
    >>> tifffile.imwrite(p, np.zeros((3, 4, 5), np.uint16), imagej=True, truncate=True, metadata={"axes": "ZYX"})
    >>> with tifffile.TiffFile(p) as tif:
    ...     offset, dtype = contiguous_imagej_stack(tif, (3, 4, 5))
    >>> offset > 0, dtype.itemsize
    (True, 2)
    """
    if not tif.is_imagej or len(tif.pages) != 1 or len(shape) != 3:
        return None
    page = tif.pages.first
    images = (tif.imagej_metadata or {}).get("images")
    if (images != shape[0] or page.compression != 1 or page.is_tiled or page.samplesperpixel != 1
            or tuple(page.shape[-2:]) != tuple(shape[1:]) or not page.dataoffsets):
        return None
    offset = int(page.dataoffsets[0])
    if not page.is_contiguous or offset + int(shape[0]) * page.nbytes > tif.filehandle.size:
        return None
    return offset, np.dtype(page.dtype).newbyteorder(tif.byteorder)


def natural_key(name: str) -> list:
    """Sort key that orders ``slice_2`` before ``slice_10`` (numbers compared as numbers).

    Examples
    --------
    >>> sorted(["s10.tif", "s2.tif", "s1.tif"], key=natural_key)
    ['s1.tif', 's2.tif', 's10.tif']
    """
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


class TiffFolderVolume:
    """A folder holding one greyscale TIFF per Z slice, read one file at a time.

    Slices are ordered by the last number in their names (natural sort: ``ct_2.tif`` before
    ``ct_10.tif``); the numbers must run without a gap or a repeat. Every file's header is
    checked at opening (a 2D greyscale image of the first slice's shape and dtype), so a
    damaged folder stops before any work, naming the file. The voxel size is given, or read
    from the first slice: Y and X from its resolution tags (ImageJ um, or TIFF centimetre /
    inch units), Z from ImageJ's ``spacing``, else Z = X when only the in-plane size is known
    *and* ``assume_isotropic`` is set; otherwise the folder is refused with a request for
    ``--voxel-size``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> for z in (1, 2, 10):
    ...     tifffile.imwrite(folder / f"rec_{z}.tif", np.full((4, 5), z, np.uint16))
    >>> TiffFolderVolume(folder, (5.0, 5.0, 5.0))
    Traceback (most recent call last):
    ...
    ValueError: ...: slice numbers jump from 2 (rec_2.tif) to 10 (rec_10.tif): slices 3 to 9 are missing
    >>> (folder / "rec_10.tif").rename(folder / "rec_3.tif")
    PosixPath(...)
    >>> v = TiffFolderVolume(folder, (5.0, 5.0, 5.0)); v.shape, float(v.read_slice(2)[0, 0])
    ((3, 4, 5), 10.0)
    """

    def __init__(self, path: str | Path, voxel_size_um: Sequence[float] | None = None) -> None:
        path = Path(path)
        self.name = str(path)
        files = sorted((f for f in path.iterdir() if f.suffix.lower() in (".tif", ".tiff")
                        and not f.name.startswith(".")), key=lambda f: natural_key(f.name))
        if not files:
            raise ValueError(f"{path}: a folder without .tif/.tiff slices (nor Zarr metadata); "
                             "give a folder of slice TIFFs, a TIFF stack, an OME-Zarr store or file.h5:/dataset")
        numbers, series = [], {}
        for f in files:
            found = re.findall(r"\d+", f.stem)
            if not found:
                raise ValueError(f"{f}: no slice number in the file name (expected e.g. rec_0001.tif)")
            numbers.append(int(found[-1]))
            pattern = re.sub(r"\d+(?=\D*$)", "*", f.name)  # the name with its slice number as a wildcard
            series.setdefault(pattern, []).append(f)
        if len(series) > 1:
            kinds = ", ".join(f"{pattern} ({len(members)} files)" for pattern, members in series.items())
            raise ValueError(f"{path}: slices of {len(series)} series in one folder: {kinds}; keep one series per "
                             "folder (a reconstruction's slices, not its projections or a second scan)")
        for (a, fa), (b, fb) in zip(zip(numbers, files), zip(numbers[1:], files[1:])):
            if b == a:
                raise ValueError(f"{fb}: slice number {b} twice ({fa.name} and {fb.name})")
            if b != a + 1:
                gap = f"slice {a + 1} is" if b == a + 2 else f"slices {a + 1} to {b - 1} are"
                raise ValueError(f"{path}: slice numbers jump from {a} ({fa.name}) to {b} ({fb.name}): {gap} missing")
        first_shape = first_dtype = None
        for f in files:
            with open_tiff(f) as tif:
                page = tif.pages[0]
                shape, dtype = tuple(int(n) for n in page.shape), np.dtype(page.dtype)
                if len(tif.pages) != 1 or len(shape) != 2:
                    raise ValueError(f"{f}: a slice must be one 2D greyscale image, got {len(tif.pages)} page(s) "
                                     f"of shape {shape}")
                if first_shape is None:
                    first_shape, first_dtype = shape, _check_dtype(dtype, str(f))
                    if voxel_size_um is None:
                        voxel_size_um = self._voxel_size_from(f, page, tif.imagej_metadata or {})
                elif (shape, dtype) != (first_shape, first_dtype):
                    raise ValueError(f"{f}: {dtype} slice of shape {shape}, unlike the first slice "
                                     f"{files[0].name} ({first_dtype}, {first_shape})")
        self.files = files
        self.shape = (len(files),) + first_shape
        self.dtype = first_dtype
        self.voxel_size_um = _check_voxel_size(voxel_size_um, self.name)

    @staticmethod
    def _voxel_size_from(file: Path, page: tifffile.TiffPage, imagej: dict) -> tuple[float, float, float]:
        in_plane, _ = tiff_pixel_um(page, imagej)
        spacing = imagej_spacing_um(imagej)
        if in_plane is None or spacing is None:
            raise ValueError(
                f"{file}: no voxel size in the slice files (resolution tags in um or cm and ImageJ 'spacing' for Z, in a known unit); "
                "give it with --voxel-size Z Y X (micrometres)"
            )
        return (spacing,) + in_plane

    def read_slice(self, z: int) -> np.ndarray:
        """Decode slice file ``z`` only (a file that cannot be decoded is named)."""
        try:
            return np.asarray(tifffile.imread(self.files[z]), dtype=np.float32)
        except _DECODE_ERRORS as err:
            raise ValueError(f"{self.files[z]}: slice {z} of {self.name} cannot be read, the file is damaged "
                             f"({type(err).__name__}: {err})") from None

    def close(self) -> None:
        """Nothing held open between reads."""


class HDF5Volume:
    """A 3D dataset of an HDF5 file (``file.h5:/path/to/dataset``), read slice by slice.

    The voxel size is given, or read from the dataset's ``element_size_um`` attribute (the
    convention of Fiji and ilastik) or ``voxel_size_um``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "scan.h5"
    >>> with h5py.File(f, "w") as h5:
    ...     h5.create_dataset("exchange/data", data=np.zeros((3, 4, 5), np.uint16)).attrs["element_size_um"] = [5, 5, 5]
    >>> v = HDF5Volume(f, "/exchange/data"); v.shape, v.voxel_size_um
    ((3, 4, 5), (5.0, 5.0, 5.0))
    >>> v.close()
    """

    def __init__(self, path: str | Path, dataset: str, voxel_size_um: Sequence[float] | None = None) -> None:
        path = Path(path)
        self.name = f"{path}:{dataset}"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: file not found")
        try:
            self._file = h5py.File(path, "r")
        except OSError as err:
            raise ValueError(f"{path}: not a readable HDF5 file ({err})") from None
        try:
            link = self._file.get(dataset, getlink=True)
            if isinstance(link, (h5py.SoftLink, h5py.ExternalLink)):
                try:
                    self._file[dataset]
                except (KeyError, OSError):
                    target = (f"{link.filename}:{link.path}" if isinstance(link, h5py.ExternalLink) else link.path)
                    raise ValueError(f"{self.name}: a link to {target}, which does not exist (a {type(link).__name__} "
                                     "to nothing); give the dataset itself") from None
            if dataset not in self._file or not isinstance(self._file[dataset], h5py.Dataset):
                found: list[str] = []
                self._file.visititems(lambda name, obj: found.append("/" + name) if isinstance(obj, h5py.Dataset)
                                      and obj.ndim == 3 else None)
                raise ValueError(f"{path}: no dataset {dataset!r}; 3D datasets in the file: {found or 'none'}")
            self._data = self._file[dataset]
            if self._data.ndim != 3:
                raise ValueError(f"{self.name}: dataset of shape {self._data.shape}; expected 3 dimensions (Z, Y, X)")
            self.shape = tuple(int(n) for n in self._data.shape)
            _check_dtype(self._data.dtype, self.name)
            if self._data.chunks is None and self._data.id.get_storage_size() == 0 and self._data.size:
                raise ValueError(f"{self.name}: the dataset was never written (no data stored: every voxel is the "
                                 "fill value); the scan is incomplete")
            self._written: set[int] = set()
            attrs = self._data.attrs
            if voxel_size_um is None:
                voxel_size_um = attrs.get("element_size_um", attrs.get("voxel_size_um"))
            if voxel_size_um is None:
                raise ValueError(f"{self.name}: no voxel size (attribute element_size_um or voxel_size_um); "
                                 "give it with --voxel-size Z Y X (micrometres)")
            self.voxel_size_um = _check_voxel_size(voxel_size_um, self.name)
        except BaseException:
            self._file.close()
            raise

    def _check_written(self, z: int) -> None:
        """Refuse slice ``z`` if a chunk holding it was never written (it would read as the fill value)."""
        chunks = self._data.chunks
        if chunks is None:
            return
        start = (z // chunks[0]) * chunks[0]
        if start in self._written:
            return
        for y in range(0, self.shape[1], chunks[1]):
            for x in range(0, self.shape[2], chunks[2]):
                if self._data.id.get_chunk_info_by_coord((start, y, x)).byte_offset is None:
                    raise ValueError(f"{self.name}: slice {z} was never written (the HDF5 chunk at z {start}, y {y}, "
                                     f"x {x} is not stored: it reads as the fill value); the scan is incomplete")
        self._written.add(start)

    def read_slice(self, z: int) -> np.ndarray:
        """Read slice ``z`` from the file (refused where it was never written)."""
        self._check_written(z)
        try:
            return np.asarray(self._data[z], dtype=np.float32)
        except (OSError, KeyError, RuntimeError) as err:
            raise ValueError(f"{self.name}: slice {z} cannot be read ({type(err).__name__}: {err})") from None

    def close(self) -> None:
        """Close the file."""
        self._file.close()


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
            try:
                array = node[dataset["path"]]
            except KeyError:
                raise ValueError(f"{path}: the OME-NGFF multiscales metadata names the dataset {dataset['path']!r}, "
                                 f"which the store does not hold (a copy without it?)") from None
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
        _check_dtype(array.dtype, self.name)
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


HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".nxs")


def split_hdf5_path(value: str) -> tuple[str, str | None]:
    """``"scan.h5:/exchange/data"`` as ``("scan.h5", "/exchange/data")``; other paths unchanged, no dataset.

    Examples
    --------
    >>> split_hdf5_path("ct/scan.h5:/exchange/data"), split_hdf5_path("ct/sample.tif")
    (('ct/scan.h5', '/exchange/data'), ('ct/sample.tif', None))
    """
    for suffix in HDF5_SUFFIXES:
        stem, found, dataset = value.partition(suffix + ":")
        if found:
            return stem + suffix, dataset
    return value, None


def _is_zarr(path: Path) -> bool:
    return path.suffix.lower() == ".zarr" or any((path / m).exists() for m in ("zarr.json", ".zgroup", ".zarray"))


def open_volume(path: str | Path, voxel_size_um: Sequence[float] | None = None):
    """Open a CT volume for slice-wise reading, whatever form it comes in.

    ``path`` is a multi-page TIFF stack, a folder of slice TIFFs (:class:`TiffFolderVolume`),
    an (OME-)Zarr store, or an HDF5 dataset written ``file.h5:/path/to/dataset``. The voxel
    size comes from the file's metadata unless ``voxel_size_um`` (z, y, x in um) is given.

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
    file, dataset = split_hdf5_path(str(path))
    if dataset is not None:
        return HDF5Volume(file, dataset, voxel_size_um)
    path = Path(path)
    if path.suffix.lower() in HDF5_SUFFIXES:
        raise ValueError(f"{path}: name the dataset inside the HDF5 file, e.g. {path}:/exchange/data")
    if _is_zarr(path):
        return ZarrVolume(path, voxel_size_um)
    if path.is_dir():
        return TiffFolderVolume(path, voxel_size_um)
    return TiffVolume(path, voxel_size_um)


def _check_voxel_size(voxel_size_um: Any, name: str) -> tuple[float, float, float]:
    try:
        sizes = tuple(float(s) for s in voxel_size_um)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: voxel size must be three numbers (z, y, x) in um, got {voxel_size_um!r}") from None
    if len(sizes) != 3 or not all(math.isfinite(s) and s > 0 for s in sizes):
        raise ValueError(f"{name}: voxel size must be three positive numbers (z, y, x) in um, got {voxel_size_um!r}")
    low, high = PIXEL_UM_RANGE
    if not all(low <= s <= high for s in sizes):
        raise ValueError(f"{name}: voxel size {sizes} um is outside the plausible {low:g}-{high:g} um (a unit read "
                         "wrong?); give it with --voxel-size Z Y X (micrometres)")
    return sizes
