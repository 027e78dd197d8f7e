"""3D virtual staining of a CT volume (paper 2.11, 3.3, Fig. 8) and multi-axis fusion (its outlook).

The trained forward generator stains 2D slices. A volume is stained by

1. a 3D Gaussian filter of ``sigma`` voxels (paper: 1) on the CT stack, which mimics
   the resolution lost to interpolation during registration, so the slices look like
   the training inputs;
2. slice-wise whole-slide inference (:func:`vstain.infer.infer_slide`) of every slice
   along the stack axis ``z``.

Everything streams: the Gaussian along the stack axis is applied on a sliding window
of ``2 * ceil(4 sigma) + 1`` slices, each stained slice is written to the output file
at once, so memory holds a few slices, never the whole volume (volumes larger than
memory come as OME-Zarr and are read chunk by chunk).

Slice-wise staining is blind to the neighbouring slices, so small slice-to-slice
changes in the prediction show up as stripes in the XZ and YZ views (paper 3.3). The
paper's outlook proposes staining along several axes and fusing. ``axes="zyx"`` stains
the volume slice-wise along Z, Y and X and averages the three predictions in optical
density ``OD = -ln((I + 1) / 256)`` per channel: by the Beer-Lambert law OD is linear in
the amount of stain, so the OD mean is the colour of the mean stain amount, whereas a
plain RGB mean of a dark and a light prediction is biased towards the light one
(``fusion="rgb"`` is available for comparison). The Y and X passes need the filtered CT
in Y-major and X-major order and their outputs are merged slice by slice: these go
through raw scratch files beside the output (deleted at the end), so memory stays
bounded by a few slices in fused mode too. The stripe score
(:func:`stripe_score`) measures the artefact.

Examples
--------
>>> import numpy as np
>>> volume = np.random.default_rng(0).normal(size=(6, 16, 16)).astype(np.float32)
>>> source = ArrayVolume(volume, (5.0, 5.0, 5.0))
>>> grey = lambda ct: np.repeat(((ct > 0) * 255).astype(np.uint8)[..., None], 3, axis=-1)
>>> stained = np.stack(list(stain_slices(source, grey, sigma_voxels=1.0)))
>>> stained.shape, stained.dtype
((6, 16, 16, 3), dtype('uint8'))
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import tempfile
from collections import deque
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal, Sequence

import numpy as np
from scipy import ndimage

SliceStainer = Callable[[np.ndarray], np.ndarray]
Fusion = Literal["od", "rgb"]
AXES = ("z", "zyx")
TRUNCATE = 4.0  # scipy.ndimage.gaussian_filter's default kernel half-width, in sigmas
# Version of the phantom stage's metrics.csv columns: a change re-runs the stage (2: scores inside the sample).
METRICS_VERSION = 2


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
        import tifffile

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
        import zarr

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


# --------------------------------------------------------------------------- streaming filter


def _reflect(index: int, size: int) -> int:
    """scipy.ndimage ``reflect`` boundary (d c b a | a b c d | d c b a) for any overshoot."""
    period = 2 * size
    index %= period
    return index if index < size else period - 1 - index


def gaussian_kernel(sigma: float, truncate: float = TRUNCATE) -> np.ndarray:
    """The normalised 1D Gaussian of :func:`scipy.ndimage.gaussian_filter` (radius ``int(truncate sigma + 0.5)``).

    Examples
    --------
    >>> gaussian_kernel(1.0).size, round(float(gaussian_kernel(1.0).sum()), 6)
    (9, 1.0)
    """
    radius = int(truncate * float(sigma) + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def filtered_slices(source: Any, sigma_voxels: float) -> Iterator[np.ndarray]:
    """Yield the slices of ``gaussian_filter(volume, sigma_voxels, mode="reflect")`` one by one.

    The Z pass is a weighted sum over a sliding window of ``2 r + 1`` slices (``r = int(4
    sigma + 0.5)``), the Y/X passes are 2D filters of each sum: the result equals scipy's 3D
    filter of the whole volume, but only the window is ever held.

    Examples
    --------
    >>> vol = np.random.default_rng(0).normal(size=(5, 8, 8)).astype(np.float32)
    >>> out = np.stack(list(filtered_slices(ArrayVolume(vol, (1, 1, 1)), 1.0)))
    >>> bool(np.allclose(out, ndimage.gaussian_filter(vol.astype(float), 1.0), atol=1e-5))
    True
    """
    depth = source.shape[0]
    if sigma_voxels <= 0:
        for z in range(depth):
            yield source.read_slice(z)
        return
    kernel = gaussian_kernel(sigma_voxels)
    radius = kernel.size // 2
    window: dict[int, np.ndarray] = {}
    for z in range(depth):
        needed = {_reflect(z + k, depth) for k in range(-radius, radius + 1)}
        for index in list(window):
            if index not in needed:
                del window[index]
        for index in sorted(needed - set(window)):
            window[index] = source.read_slice(index)
        total = np.zeros(source.shape[1:], np.float64)
        for k, weight in zip(range(-radius, radius + 1), kernel):
            total += weight * window[_reflect(z + k, depth)]
        yield ndimage.gaussian_filter(total, sigma_voxels, mode="reflect", truncate=TRUNCATE).astype(np.float32)


def stain_slices(
    source: Any, stainer: SliceStainer, *, sigma_voxels: float, progress: bool = False, desc: str = "stain z"
) -> Iterator[np.ndarray]:
    """Yield the stained ``(Y, X, 3)`` uint8 slices of a volume along Z, streaming.

    Parameters
    ----------
    source : ArrayVolume, TiffVolume or ZarrVolume
        Anything with ``shape`` and ``read_slice(z)``.
    stainer : callable
        Maps one filtered CT slice (float32, CT values) to a ``uint8`` RGB image
        (see :func:`make_slice_stainer`).
    sigma_voxels : float
        Gaussian pre-filter (paper: 1 voxel).
    progress : bool
        A tqdm bar over slices.
    """
    from tqdm.auto import tqdm

    for ct_slice in tqdm(filtered_slices(source, sigma_voxels), total=source.shape[0], desc=desc,
                         disable=not progress, unit="slice"):
        rgb = np.asarray(stainer(ct_slice))
        if rgb.shape != ct_slice.shape + (3,) or rgb.dtype != np.uint8:
            raise ValueError(f"stainer returned {rgb.dtype} {rgb.shape}; expected uint8 {ct_slice.shape + (3,)}")
        yield rgb


def make_slice_stainer(
    generator: Any,
    *,
    infer: Callable[..., np.ndarray] | None = None,
    patch_size: int,
    step: int,
    batch_size: int,
    blend: str = "mean",
    device: str = "cpu",
    invert: bool = False,
) -> SliceStainer:
    """A function that stains one CT slice with a forward generator by whole-slide inference.

    CT values are mapped to network range with :func:`vstain.data.ct_to_network`, the
    slide is run through ``infer`` (default :func:`vstain.infer.infer_slide`) and the
    output mapped back with :func:`vstain.data.network_to_histology`. Slices smaller
    than a patch are padded by reflection (a thin volume's XZ planes can be shallower
    than a patch) and cropped back.

    Examples
    --------
    >>> import torch
    >>> stainer = make_slice_stainer(torch.nn.Identity(), patch_size=8, step=4, batch_size=4)
    >>> stainer(np.full((4, 12), 65535.0, np.float32))[0, 0].tolist()
    [255, 255, 255]
    """
    from vstain.data import ct_to_network, network_to_histology

    if infer is None:
        from vstain.infer import infer_slide as infer

    def stain(ct_slice: np.ndarray) -> np.ndarray:
        height, width = ct_slice.shape
        pad_y, pad_x = max(0, patch_size - height), max(0, patch_size - width)
        if pad_y or pad_x:
            ct_slice = np.pad(ct_slice, ((0, pad_y), (0, pad_x)), mode="symmetric")
        net = np.asarray(ct_to_network(ct_slice, invert=invert), np.float32)
        if net.ndim == 3:  # (3, Y, X) identical channels: the slide is one channel
            net = net[0]
        out = infer(generator, net, patch_size=patch_size, step=step, batch_size=batch_size,
                    blend=blend, device=device, in_channels=3)
        rgb = network_to_histology(np.moveaxis(np.asarray(out), -1, 0))
        return rgb[:height, :width]

    return stain


# --------------------------------------------------------------------------- writers


@contextlib.contextmanager
def _atomic_target(path: Path, overwrite: bool) -> Iterator[Path]:
    """A temporary sibling of ``path`` (file or folder) renamed onto it only on success."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: output exists; choose another path or pass --overwrite")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.part"
    _remove(tmp)
    try:
        yield tmp
        if path.exists():
            _remove(path)
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


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
    import tifffile

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

    with _atomic_target(Path(path), overwrite) as tmp:
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
    import zarr

    depth, height, width = (int(s) for s in shape)
    voxel_size_um = _check_voxel_size(voxel_size_um, str(path))
    with _atomic_target(Path(path), overwrite) as tmp:
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


# --------------------------------------------------------------------------- multi-axis fusion


class _RawStore:
    """A raw array file written and read by explicit offsets (no memory map held: flat memory)."""

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
        self.file.seek(self._offset(index))
        self.file.write(np.ascontiguousarray(data, self.dtype).tobytes())

    def read(self, index: Sequence[int]) -> np.ndarray:
        shape = self.shape[len(index):]
        self.file.seek(self._offset(index))
        data = np.fromfile(self.file, dtype=self.dtype, count=int(np.prod(shape)))
        return data.reshape(shape)

    def close(self) -> None:
        self.file.close()


def optical_density(rgb: np.ndarray) -> np.ndarray:
    """``-ln((I + 1) / 256)`` per channel: Beer-Lambert absorbance, 0 for white.

    Examples
    --------
    >>> float(optical_density(np.array([255], np.uint8))[0])
    0.0
    """
    return 0.0 - np.log((np.asarray(rgb, np.float32) + 1.0) / 256.0)  # 0.0 - x: no -0.0


def from_optical_density(od: np.ndarray) -> np.ndarray:
    """Inverse of :func:`optical_density`, rounded to uint8."""
    return np.clip(np.round(256.0 * np.exp(-od) - 1.0), 0, 255).astype(np.uint8)


def fuse_predictions(predictions: Sequence[np.ndarray], fusion: Fusion = "od") -> np.ndarray:
    """Combine several RGB predictions of the same voxels: mean optical density or mean RGB.

    Examples
    --------
    >>> dark, light = np.array([[15]], np.uint8), np.array([[255]], np.uint8)
    >>> int(fuse_predictions([dark, light], "od")[0, 0]), int(fuse_predictions([dark, light], "rgb")[0, 0])
    (63, 135)
    """
    if fusion == "od":
        return from_optical_density(np.mean([optical_density(p) for p in predictions], axis=0))
    if fusion == "rgb":
        return np.clip(np.round(np.mean([np.asarray(p, np.float32) for p in predictions], axis=0)), 0, 255).astype(
            np.uint8)
    raise ValueError(f"fusion must be 'od' or 'rgb', got {fusion!r}")


def fused_slices(
    source: Any,
    stainer: SliceStainer,
    *,
    sigma_voxels: float,
    scratch_dir: str | Path,
    fusion: Fusion = "od",
    progress: bool = False,
) -> Iterator[np.ndarray]:
    """Yield Z slices of the volume stained along Z, Y and X and fused (see the module notes).

    Pass 1 streams the filtered CT along Z, stains each Z slice and stores it, and also
    writes the filtered CT in Y-major and X-major order; passes 2 and 3 stain the XZ and
    YZ planes from those; the last pass merges the three predictions slice by slice.
    Scratch files live in ``scratch_dir`` (removed when the generator finishes or is closed).
    """
    from tqdm.auto import tqdm

    depth, height, width = source.shape
    scratch = Path(tempfile.mkdtemp(prefix=".vstain-fuse-", dir=scratch_dir))
    stores: list[_RawStore] = []
    try:
        ct_y = _RawStore(scratch / "ct_y.raw", (height, depth, width), np.float32)
        ct_x = _RawStore(scratch / "ct_x.raw", (width, depth, height), np.float32)
        rgb_z = _RawStore(scratch / "rgb_z.raw", (depth, height, width, 3), np.uint8)
        rgb_y = _RawStore(scratch / "rgb_y.raw", (height, depth, width, 3), np.uint8)
        rgb_x = _RawStore(scratch / "rgb_x.raw", (width, depth, height, 3), np.uint8)
        stores += [ct_y, ct_x, rgb_z, rgb_y, rgb_x]
        bar = tqdm(total=depth + height + width + depth, desc="stain zyx", disable=not progress, unit="slice")
        for z, ct_slice in enumerate(filtered_slices(source, sigma_voxels)):
            rgb_z.write((z,), _checked(stainer(ct_slice), ct_slice.shape))
            for y in range(height):
                ct_y.write((y, z), ct_slice[y])
            for x in range(width):
                ct_x.write((x, z), ct_slice[:, x])
            bar.update()
        for y in range(height):  # XZ planes (Z, X)
            plane = ct_y.read((y,))
            rgb_y.write((y,), _checked(stainer(plane), plane.shape))
            bar.update()
        for x in range(width):  # YZ planes (Z, Y)
            plane = ct_x.read((x,))
            rgb_x.write((x,), _checked(stainer(plane), plane.shape))
            bar.update()
        for z in range(depth):
            from_y = np.stack([rgb_y.read((y, z)) for y in range(height)])  # (Y, X, 3)
            from_x = np.stack([rgb_x.read((x, z)) for x in range(width)]).transpose(1, 0, 2)  # (Y, X, 3)
            yield fuse_predictions([rgb_z.read((z,)), from_y, from_x], fusion)
            bar.update()
        bar.close()
    finally:
        for store in stores:
            store.close()
        shutil.rmtree(scratch, ignore_errors=True)


def _checked(rgb: Any, shape: tuple[int, ...]) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.shape != tuple(shape) + (3,) or rgb.dtype != np.uint8:
        raise ValueError(f"stainer returned {rgb.dtype} {rgb.shape}; expected uint8 {tuple(shape) + (3,)}")
    return rgb


def stain_volume(
    source: Any,
    stainer: SliceStainer,
    output: str | Path,
    *,
    sigma_voxels: float,
    axes: str = "z",
    fusion: Fusion = "od",
    metadata: dict | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Stain a CT volume slice-wise (``axes="z"``) or along Z, Y, X fused (``"zyx"``) and write it.

    Parameters
    ----------
    source : ArrayVolume, TiffVolume or ZarrVolume
    stainer : callable
        One CT slice (float32) to uint8 RGB, e.g. :func:`make_slice_stainer`.
    output : path
        ``.tif`` (ImageJ RGB stack) or ``.zarr`` (OME-Zarr); the voxel size is carried over.
    sigma_voxels : float
        Gaussian pre-filter (paper: 1).
    axes : {"z", "zyx"}
    fusion : {"od", "rgb"}
        How the three predictions are averaged in ``zyx`` mode.
    metadata : dict, optional
        Provenance stored in the output.
    overwrite : bool
        Replace an existing output (refused otherwise, before any work).
    progress : bool

    Returns
    -------
    Path
        ``output``, complete.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> vol = ArrayVolume(np.zeros((3, 8, 8), np.float32), (5.0, 5.0, 5.0))
    >>> white = lambda ct: np.full(ct.shape + (3,), 255, np.uint8)
    >>> out = stain_volume(vol, white, pathlib.Path(tempfile.mkdtemp()) / "s.tif", sigma_voxels=1.0, axes="zyx")
    >>> out.name
    's.tif'
    """
    output = Path(output)
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output}: output exists; choose another path or pass --overwrite")
    if axes not in AXES:
        raise ValueError(f"axes must be one of {list(AXES)}, got {axes!r}")
    output.parent.mkdir(parents=True, exist_ok=True)
    if axes == "z":
        slices = stain_slices(source, stainer, sigma_voxels=sigma_voxels, progress=progress)
    else:
        slices = fused_slices(source, stainer, sigma_voxels=sigma_voxels, scratch_dir=output.parent,
                              fusion=fusion, progress=progress)
    meta = {"axes": axes, "fusion": fusion if axes != "z" else None, "sigma_voxels": sigma_voxels,
            **(metadata or {})}
    try:
        write_rgb_volume(output, slices, source.shape, source.voxel_size_um, metadata=meta, overwrite=overwrite)
    finally:
        slices.close()
    return output


# --------------------------------------------------------------------------- analysis and views


def stripe_score(volume: np.ndarray, axis: int = 0, mask: np.ndarray | None = None) -> float:
    """Slice-to-slice variation along ``axis`` relative to the variation within slices.

    ``mean |g[i+1] - g[i]|`` along ``axis`` divided by the mean of the same finite
    differences along the two other axes, on the grey value ``g`` (mean of RGB). An
    isotropic volume scores about 1; slices stained independently with small
    intensity changes from one to the next (the stripes of the XZ and YZ views, paper
    3.3) raise the score of the stack axis. Compare with the true volume's score,
    which is not 1 when the object itself is anisotropic.

    Parameters
    ----------
    volume : ndarray
        ``(Z, Y, X)`` or ``(Z, Y, X, 3)``.
    axis : int
        The stack axis (0, 1 or 2).
    mask : ndarray of bool, optional
        ``(Z, Y, X)``: only differences between two voxels inside count.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> smooth = ndimage.gaussian_filter(rng.normal(size=(24, 24, 24)), 2)
    >>> striped = smooth + 0.02 * rng.normal(size=(24, 1, 1))
    >>> round(stripe_score(smooth), 1), stripe_score(striped) > 1.5
    (1.0, True)
    """
    grey = np.asarray(volume, np.float64)
    if grey.ndim == 4:
        grey = grey.mean(axis=-1)
    if grey.ndim != 3 or axis not in (0, 1, 2):
        raise ValueError(f"expected a (Z, Y, X[, 3]) volume and axis 0, 1 or 2, got {volume.shape} and {axis}")

    def mean_difference(a: int) -> float:
        diff = np.abs(np.diff(grey, axis=a))
        if mask is None:
            return float(diff.mean())
        m = np.asarray(mask, bool)
        both = np.take(m, range(1, m.shape[a]), axis=a) & np.take(m, range(m.shape[a] - 1), axis=a)
        return float(diff[both].mean()) if both.any() else float("nan")

    in_plane = np.mean([mean_difference(a) for a in (0, 1, 2) if a != axis])
    return float(mean_difference(axis) / in_plane) if in_plane > 0 else float("nan")


def compare_volumes(prediction: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None) -> dict[str, float]:
    """3D SSIM (scikit-image, 7-voxel window, paper 2.10 Eq. of Wang et al.) and PSNR (L = 255) of two RGB volumes.

    Parameters
    ----------
    prediction, truth : ndarray
        ``(Z, Y, X, 3)`` RGB volumes of one shape (uint8 range).
    mask : ndarray of bool, optional
        ``(Z, Y, X)``: score only these voxels, e.g. the sample without background
        and holder, where the network was trained. SSIM is then the mean of the
        scikit-image SSIM map (``full=True``) over the masked voxels and channels,
        and PSNR uses the mean squared error of the masked voxels. For the SSIM map
        the prediction outside the mask is replaced by the truth, so that windows
        straddling the mask edge judge the prediction inside only (its colour for
        the background must not leak in). Without a mask, SSIM is scikit-image's
        mean SSIM (which leaves out a half-window border) and PSNR covers every
        voxel.

    Returns
    -------
    dict
        ``{"ssim": float, "psnr": float}``; PSNR is ``inf`` where the volumes agree
        exactly, both are NaN for an empty mask.

    Examples
    --------
    >>> a = np.random.default_rng(0).integers(0, 255, (8, 8, 8, 3), dtype=np.uint8)
    >>> compare_volumes(a, a)["ssim"]
    1.0
    >>> inside = np.zeros((8, 8, 8), bool); inside[2:6] = True
    >>> b = a.copy(); b[~inside] = 255 - b[~inside]  # wrong only outside the mask
    >>> compare_volumes(b, a)["psnr"] < 10, compare_volumes(b, a, mask=inside)
    (True, {'ssim': 1.0, 'psnr': inf})
    """
    from skimage.metrics import structural_similarity

    prediction, truth = np.asarray(prediction), np.asarray(truth)
    if prediction.shape != truth.shape or prediction.ndim != 4 or prediction.shape[-1] != 3:
        raise ValueError(f"expected two (Z, Y, X, 3) volumes of one shape, got {prediction.shape} and {truth.shape}")
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != truth.shape[:3] or mask.dtype != bool:
            raise ValueError(
                f"mask must be a boolean (Z, Y, X) = {truth.shape[:3]} array, got {mask.dtype} {mask.shape}"
            )
        if not mask.any():
            return {"ssim": float("nan"), "psnr": float("nan")}
    prediction_f, truth_f = prediction.astype(np.float64), truth.astype(np.float64)
    if mask is None:
        ssim = structural_similarity(prediction_f, truth_f, channel_axis=-1, data_range=255)
        squared_error = (prediction_f - truth_f) ** 2
    else:
        prediction_f[~mask] = truth_f[~mask]
        _, ssim_map = structural_similarity(prediction_f, truth_f, channel_axis=-1, data_range=255, full=True)
        ssim = ssim_map[mask].mean()
        squared_error = (prediction_f[mask] - truth_f[mask]) ** 2
    mse = float(squared_error.mean())
    psnr = 10 * math.log10(255.0**2 / mse) if mse > 0 else float("inf")
    return {"ssim": float(round(ssim, 12)), "psnr": float(psnr)}


def orthogonal_views(volume: np.ndarray, centre: Sequence[int] | None = None) -> dict[str, np.ndarray]:
    """The XY, XZ and YZ planes through ``centre`` (default: the middle voxel), as in Fig. 8a-c.

    Returns ``{"xy": (Y, X[, 3]), "xz": (Z, X[, 3]), "yz": (Z, Y[, 3])}``.

    Examples
    --------
    >>> views = orthogonal_views(np.zeros((4, 6, 8, 3), np.uint8))
    >>> {k: v.shape[:2] for k, v in views.items()}
    {'xy': (6, 8), 'xz': (4, 8), 'yz': (4, 6)}
    """
    volume = np.asarray(volume)
    z, y, x = centre if centre is not None else (s // 2 for s in volume.shape[:3])
    return {"xy": volume[z], "xz": volume[:, y], "yz": volume[:, :, x]}


def rgba_volume(rgb: np.ndarray, alpha: Literal["mean", "one_minus_mean"] = "mean") -> np.ndarray:
    """RGB volume to RGBA with alpha = mean of RGB (paper 2.11), or its complement.

    The paper's ``mean`` makes bright voxels opaque; ``one_minus_mean`` makes the white
    histology background transparent and the stained tissue opaque.

    Examples
    --------
    >>> rgba_volume(np.array([[[[30, 60, 90]]]], np.uint8))[0, 0, 0].tolist()
    [30, 60, 90, 60]
    """
    rgb = np.asarray(rgb, np.uint8)
    mean = np.round(rgb.astype(np.float32).mean(axis=-1)).astype(np.uint8)
    if alpha == "one_minus_mean":
        mean = 255 - mean
    elif alpha != "mean":
        raise ValueError(f"alpha must be 'mean' or 'one_minus_mean', got {alpha!r}")
    return np.concatenate([rgb, mean[..., None]], axis=-1)


class RenderingUnavailable(RuntimeError):
    """Off-screen volume rendering is impossible here (no PyVista or no OpenGL/EGL)."""


def render_rgba(
    rgb: np.ndarray,
    voxel_size_um: Sequence[float],
    *,
    alpha: Literal["mean", "one_minus_mean"] = "mean",
    window_size: tuple[int, int] = (600, 600),
    background: str = "black",
) -> np.ndarray:
    """Off-screen direct-RGBA volume rendering with PyVista (Fig. 8d); returns the image.

    Raises
    ------
    RenderingUnavailable
        When PyVista cannot render off-screen (say so and skip the image).
    """
    try:
        import pyvista as pv
    except ImportError as err:  # pragma: no cover - pyvista is a pinned dependency
        raise RenderingUnavailable(f"PyVista is not installed: {err}") from err
    rgba = rgba_volume(rgb, alpha)
    depth, height, width = rgba.shape[:3]
    grid = pv.ImageData(dimensions=(width, height, depth), spacing=tuple(float(s) for s in voxel_size_um[::-1]))
    # VTK orders points x fastest: (Z, Y, X, 4) in C order is exactly that.
    scalars = rgba.reshape(-1, 4)
    try:
        plotter = pv.Plotter(off_screen=True, window_size=list(window_size))
        plotter.set_background(background)
        plotter.add_volume(grid, scalars=scalars, show_scalar_bar=False)
        plotter.camera_position = "iso"
        image = plotter.screenshot(return_img=True)
        plotter.close()
    except Exception as err:  # VTK raises assorted errors without a display or EGL
        raise RenderingUnavailable(f"off-screen rendering failed: {err}") from err
    if image is None or image.size == 0:
        raise RenderingUnavailable("off-screen rendering returned no image")
    return np.asarray(image)


# --------------------------------------------------------------------------- generators from checkpoints


def load_forward_stainer(
    checkpoint: str | Path,
    *,
    device: str = "cpu",
    patch_size: int | None = None,
    step: int | None = None,
    batch_size: int = 4,
    blend: str = "mean",
    infer: Callable[..., np.ndarray] | None = None,
) -> tuple[SliceStainer, dict]:
    """Load the CT-to-histology generator of a checkpoint and wrap it as a slice stainer.

    ``patch_size`` defaults to the training patch size stored in the checkpoint and
    ``step`` to a quarter of it (the paper's 256 / 64). A checkpoint without a
    CT-to-histology generator (the reverse one alone) or whose weights do not fit its
    architecture is refused with a ValueError naming the file.
    """
    from vstain.train import load_generator

    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"{checkpoint}: checkpoint not found")
    try:
        generator, info = load_generator(checkpoint, direction="ct_to_histology")
    except (KeyError, TypeError, RuntimeError, EOFError, AttributeError) as err:
        raise ValueError(f"{checkpoint}: not a vstain generator checkpoint ({type(err).__name__}: {err})") from err
    if info.get("direction") != "ct_to_histology" or info.get("out_channels") != 3 or info.get("in_channels") != 3:
        raise ValueError(
            f"{checkpoint}: field direction/channels is {info.get('direction')} "
            f"{info.get('in_channels')}->{info.get('out_channels')}; `stain` needs the CT-to-histology generator (3->3)"
        )
    patch = int(patch_size or info.get("patch_size") or 256)
    stainer = make_slice_stainer(generator.to(device), infer=infer, patch_size=patch, step=int(step or max(1, patch // 4)),
                                 batch_size=batch_size, blend=blend, device=device,
                                 invert=bool(info.get("invert_ct")))
    return stainer, {**info, "patch_size": patch, "step": int(step or max(1, patch // 4))}


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Options of ``vstain stain``."""
    parser.add_argument("--checkpoint", required=True, help="a trained run's .pt file (e.g. .../fold0/last.pt)")
    parser.add_argument("--input", required=True, help="CT volume: greyscale TIFF stack (Z, Y, X) or OME-Zarr")
    parser.add_argument("--output", required=True, help="stained RGB volume: .tif stack or .zarr (OME-Zarr)")
    parser.add_argument("--axes", choices=AXES, default="z",
                        help="z: slice-wise along Z (the paper); zyx: along Z, Y and X, fused")
    parser.add_argument("--fusion", choices=("od", "rgb"), default="od",
                        help="zyx fusion: mean optical density (default) or mean RGB")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument("--voxel-size", nargs=3, type=float, metavar=("Z", "Y", "X"),
                        help="voxel size in um when the input does not carry it")
    parser.add_argument("--sigma", type=float, default=1.0, help="Gaussian pre-filter in voxels (paper: 1)")
    parser.add_argument("--patch-size", type=int, help="inference patch (default: the training patch size)")
    parser.add_argument("--step", type=int, help="inference step (default: patch size / 4)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--blend", choices=("mean", "window"), default="mean")


def run_cli(args: argparse.Namespace) -> int:
    """``vstain stain``: stain a CT volume with a trained generator, no notebook needed."""
    from vstain.io import provenance

    output = Path(args.output)
    if output.exists() and not args.overwrite:
        raise FileExistsError(f"{output}: output exists; choose another path or pass --overwrite")
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ValueError("--device cuda: no CUDA device available; use --device cpu")
    source = open_volume(args.input, args.voxel_size)
    try:
        stainer, info = load_forward_stainer(args.checkpoint, device=args.device, patch_size=args.patch_size,
                                             step=args.step, batch_size=args.batch_size, blend=args.blend)
        meta = provenance(None, checkpoint=str(args.checkpoint), model=info.get("model"), fold=info.get("fold"),
                          input=str(args.input), patch_size=info["patch_size"], step=info["step"])
        stain_volume(source, stainer, output, sigma_voxels=args.sigma, axes=args.axes, fusion=args.fusion,
                     metadata=meta, overwrite=args.overwrite, progress=True)
    finally:
        source.close()
    print(f"wrote {output} ({source.shape[0]} x {source.shape[1]} x {source.shape[2]} voxels, "
          f"voxel size {source.voxel_size_um} um)")
    return 0


# --------------------------------------------------------------------------- the phantom stage


def configure_stage_parser(parser: argparse.ArgumentParser) -> None:
    """Options of ``vstain volume`` (the study's 3D stage on the phantom)."""
    parser.add_argument("--profile", default="quick", help="profile name or YAML path")
    parser.add_argument("--force", action="store_true", help="recompute even if the results exist")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run_stage_cli(args: argparse.Namespace) -> int:
    """``vstain volume``: :func:`stain_phantom_volume`, then print where its results are."""
    done = stain_phantom_volume(args.profile, force=args.force, progress=not args.no_progress)
    print(f"wrote {done.parent} (metrics.csv, stained volumes, renderings; done.json last)")
    return 0


def normalised_ct_volume(ct_volume: np.ndarray, labels_volume: np.ndarray, profile: Any, pair_id: str = "?"
                         ) -> tuple[np.ndarray, dict]:
    """The CT volume scaled like the training slices (paper 2.5): bone 30000, background 10000.

    One scan has one gain and offset, so the linear map is fitted once, by
    :func:`vstain.normalise.normalise_ct` on the middle slice with the phantom's true
    dense-bone and background labels as ROIs, and applied to the whole volume (float32).
    """
    from vstain.normalise import normalise_ct
    from vstain.phantom import LABELS

    middle = ct_volume.shape[0] // 2
    _, stats = normalise_ct(ct_volume[middle], labels_volume[middle] == LABELS["dense_bone"],
                            labels_volume[middle] == LABELS["background"],
                            bone_mean=profile.normalisation.ct_bone_mean,
                            background_mean=profile.normalisation.ct_background_mean, pair_id=pair_id)
    scaled = np.clip(stats["scale"] * ct_volume.astype(np.float64) + stats["offset"], 0, 65535).astype(np.float32)
    return scaled, stats


def stain_phantom_volume(profile: Any, *, force: bool = False, progress: bool = True) -> Path:
    """Stage driver: stain a phantom CT volume along Z and fused along Z, Y, X; compare with the truth.

    The sample is the first toluidine-blue test pair of ``profile.volume.fold`` (never
    seen in training); its CT volume is normalised like the training data
    (:func:`normalised_ct_volume`) and stained with the forward generator of
    ``profile.volume.model`` (trained on demand by :func:`vstain.train.ensure_trained`).
    The true stained volume is the phantom's stain model applied to the label volume.
    Writes into ``results/<profile>/volume/``: ``ct.tif`` (normalised input),
    ``stained_z.tif``, ``stained_zyx.tif``, ``truth.tif``, ``metrics.csv`` (per variant:
    stripe score along z, y, x; SSIM and PSNR against the truth; each over the whole
    volume and, with the suffix ``_sample``, inside the sample only), ``rendering_*.png``
    when off-screen rendering works, and ``done.json`` last. Idempotent.

    The sample mask leaves out the background and the sample-holder wall: training
    never saw them (the correspondence mask excluded them, paper 2.6), and there the
    true stain is plain white, so whole-volume scores mostly measure the colour the
    network happens to give to air and holder.
    """
    import pandas as pd

    from vstain.config import load_profile
    from vstain.infer import split_roles
    from vstain.io import provenance, read_tiff, write_csv, write_json, write_tiff
    from vstain.layout import stage_dir
    from vstain.phantom import LABELS, ensure_dataset, load_sample, stain_labels
    from vstain.train import ensure_trained, model_dir

    profile = load_profile(profile) if isinstance(profile, (str, Path)) else profile
    cfg = profile.volume
    out = stage_dir(profile.name, "volume")
    done = out / "done.json"
    settings = {"model": cfg.model, "fold": cfg.fold, "sigma_voxels": cfg.sigma_voxels, "axes": list(cfg.axes),
                "patch_size": profile.inference.patch_size, "step": profile.inference.step,
                "blend": profile.inference.blend, "metrics_version": METRICS_VERSION}
    if not force and done.is_file() and json.loads(done.read_text()).get("settings") == settings:
        return done
    ensure_dataset(profile)
    dataset = stage_dir(profile.name, "dataset")
    roles = split_roles(profile.name, cfg.fold)
    candidates = [pid for pid, role in roles.items() if role == "test"] or sorted(roles)
    samples = [load_sample(dataset / pid) for pid in candidates]
    samples = [s for s in samples if s.stain == "toluidine_blue"] or samples
    sample = samples[0]
    ct, stats = normalised_ct_volume(sample.ct_volume, sample.labels_volume, profile, sample.pair_id)
    voxel = (sample.ct_voxel_um,) * 3
    meta = provenance(profile, pair_id=sample.pair_id, model=cfg.model, fold=cfg.fold)
    write_tiff(out / "ct.tif", ct, voxel, metadata={**meta, "normalisation": stats})
    truth = stain_labels(sample.labels_volume, sample.stain, sample.stain_params,
                         np.random.default_rng(profile.seed))
    write_tiff(out / "truth.tif", truth, voxel, metadata=meta)

    ensure_trained(profile, cfg.model, cfg.fold, progress=progress)
    checkpoint = model_dir(profile.name, cfg.model, cfg.fold) / "last.pt"
    stainer, info = load_forward_stainer(checkpoint, device=_device(profile), patch_size=profile.inference.patch_size,
                                         step=profile.inference.step, batch_size=profile.inference.batch_size,
                                         blend=profile.inference.blend)
    source = ArrayVolume(ct, voxel, name=f"{sample.pair_id} ct")
    inside = ~np.isin(sample.labels_volume, [LABELS["background"], LABELS["holder_wall"]])
    rows = [{"variant": "truth", **_stripes(truth), "ssim": 1.0, "psnr": float("inf"),
             **_stripes(truth, inside, "_sample"), "ssim_sample": 1.0, "psnr_sample": float("inf")}]
    status = {}
    for axes in ("z", "zyx"):
        path = stain_volume(source, stainer, out / f"stained_{axes}.tif", sigma_voxels=cfg.sigma_voxels, axes=axes,
                            metadata={**meta, "checkpoint": str(checkpoint)}, overwrite=True, progress=progress)
        stained = read_tiff(path)[0]
        inside_scores = compare_volumes(stained, truth, mask=inside)
        rows.append({"variant": "single-axis (z)" if axes == "z" else "fused (zyx, OD mean)", **_stripes(stained),
                     **compare_volumes(stained, truth), **_stripes(stained, inside, "_sample"),
                     "ssim_sample": inside_scores["ssim"], "psnr_sample": inside_scores["psnr"]})
        try:
            image = render_rgba(stained, voxel)
            write_png(out / f"rendering_{axes}.png", image)
            status[axes] = "rendered"
        except RenderingUnavailable as err:
            status[axes] = f"skipped: {err}"
    write_csv(out / "metrics.csv", pd.DataFrame(rows))
    write_json(done, {"settings": settings, "pair_id": sample.pair_id, "material": sample.material,
                      "sample_fraction": float(inside.mean()),
                      "rendering": status, "checkpoint": str(checkpoint), "provenance": meta})
    return done


def _stripes(volume: np.ndarray, mask: np.ndarray | None = None, suffix: str = "") -> dict[str, float]:
    return {f"stripe_{name}{suffix}": stripe_score(volume, axis=axis, mask=mask) for axis, name in enumerate("zyx")}


def _device(profile: Any) -> str:
    if profile.device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return profile.device


def write_png(path: str | Path, image: np.ndarray) -> None:
    """Write an RGB(A) image as PNG, atomically."""
    import matplotlib.pyplot as plt

    from vstain.io import atomic_path

    with atomic_path(path) as tmp:
        plt.imsave(tmp, np.asarray(image, np.uint8), format="png")
