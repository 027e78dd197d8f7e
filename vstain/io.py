"""Files: atomic writes, TIFF images with physical pixel sizes, provenance.

Every artefact of the study is written through these helpers so that

* nothing half-written is ever left behind (write to a temporary name in the same
  folder, then rename, which is atomic on POSIX file systems);
* every image carries its pixel (or voxel) size in micrometres, in the ImageJ
  TIFF convention that Fiji, napari and tifffile all read;
* every artefact records the code version, profile and seed it came from.

Examples
--------
>>> import numpy as np, tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> write_tiff(folder / "slice.tif", np.zeros((8, 8), np.uint16), pixel_size_um=5.0)
>>> image, spacing, meta = read_tiff(folder / "slice.tif")
>>> spacing
(5.0, 5.0)
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import tifffile
from PIL import Image

from vstain import __version__
# reading TIFF headers lives in its own part; its public names are this module's too
from vstain.tiff_headers import (IMAGEJ_UNIT_UM, MICRON_UNITS, _header_page_count, _ifd_extent,  # noqa: F401
                                 imagej_spacing_um, open_tiff, tiff_pixel_um, tiff_truncation)


class PixelSizeError(ValueError):
    """An image file carries no usable physical pixel size."""


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only on success.

    If the body raises, the temporary file is removed and ``path`` is untouched.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "table.csv"
    >>> with atomic_path(target) as tmp:
    ...     _ = tmp.write_text("a,b\\n1,2\\n")
    >>> target.read_text().splitlines()[0]
    'a,b'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp creates the file private (0600); give it the mode a plain open() would (0666 minus umask).
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_path(path: str | Path) -> None:
    """Remove a file, link or whole folder; nothing happens if ``path`` does not exist."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextlib.contextmanager
def atomic_target(path: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` that the body fills as a file *or a folder*; on success
    it replaces ``path``, on failure it is removed.

    Use it for outputs that are folders (an OME-Zarr store) or that a library writes by name
    (a memory-mapped TIFF stack). The temporary name, ``.NAME.PID.part``, names the process that
    owns it. Without ``overwrite`` the final rename does not replace: an output that another run
    wrote while this one worked is kept, and this run stops (:func:`rename_no_replace`).

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is false, at the start or at the final rename.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "store.zarr"
    >>> with atomic_target(target) as tmp:
    ...     tmp.mkdir()
    ...     _ = (tmp / "zarr.json").write_text("{}")
    >>> sorted(p.name for p in target.iterdir())
    ['zarr.json']
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: output exists; choose another path or pass --overwrite")
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_parts(path)
    tmp = path.parent / f".{path.name}.{os.getpid()}.part"
    remove_path(tmp)
    try:
        yield tmp
        if overwrite:
            remove_path(path)
            os.replace(tmp, path)
        else:
            rename_no_replace(tmp, path)
    except BaseException:
        remove_path(tmp)
        raise


def rename_no_replace(source: str | Path, path: str | Path) -> None:
    """Rename ``source`` (a file or a folder) to ``path`` unless something is there; never replace it.

    A file is hard-linked to its new name, which fails if the name exists (atomic on POSIX file
    systems), then its old name is removed; a folder is renamed, which fails onto anything but an
    empty folder. Where hard links are not supported the name is checked just before the rename.

    Raises
    ------
    FileExistsError
        If ``path`` exists: another run wrote it meanwhile.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> for name in ("a", "b"):
    ...     _ = (folder / name).write_text(name)
    >>> rename_no_replace(folder / "a", folder / "b")
    Traceback (most recent call last):
    ...
    FileExistsError: .../b: written by another run while this one ran; this run's result is not kept (pass --overwrite to replace it, or choose another output)
    >>> (folder / "b").read_text()
    'b'
    """
    source, path = Path(source), Path(path)
    refused = FileExistsError(f"{path}: written by another run while this one ran; this run's result is not kept "
                              "(pass --overwrite to replace it, or choose another output)")
    if path.exists() or path.is_symlink():
        raise refused
    if source.is_dir():
        try:
            os.rename(source, path)
        except (IsADirectoryError, NotADirectoryError, FileExistsError) as err:
            raise refused from err
        except OSError as err:
            if err.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise refused from err
            raise
        return
    try:
        os.link(source, path)
    except FileExistsError:
        raise refused from None
    except OSError:  # no hard links here (some network and FAT file systems)
        if path.exists():
            raise refused from None
        os.replace(source, path)
        return
    os.unlink(source)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but another user's
        return True
    return True


def remove_stale_parts(path: str | Path) -> list[Path]:
    """Remove the temporary siblings ``.NAME.PID.part`` of ``path`` left by processes that died (SIGKILL).

    A part file of a live process (a concurrent run) is left alone. Returns the removed paths.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / ".out.tif.999999999.part").write_text("half")
    >>> [p.name for p in remove_stale_parts(folder / "out.tif")]
    ['.out.tif.999999999.part']
    """
    path = Path(path)
    removed = []
    for part in path.parent.glob(f".{path.name}.*.part"):
        pid = part.name[len(path.name) + 2: -len(".part")]
        if pid.isdigit() and int(pid) != os.getpid() and not _process_alive(int(pid)):
            remove_path(part)
            removed.append(part)
    return removed


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    """The sha256 hex digest of a file, read in chunks.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> empty = pathlib.Path(tempfile.mkdtemp()) / "empty"
    >>> _ = empty.write_bytes(b"")
    >>> sha256_file(empty)[:12]
    'e3b0c44298fc'
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_path(path: str | Path) -> str:
    """SHA-256 of a file, or of a folder (a CT as slice TIFFs, an OME-Zarr store) as a whole.

    A folder's digest is the SHA-256 of one ``relative/path<TAB>sha256`` line per file, in sorted
    order: it changes when any file is added, removed, renamed or altered.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "a.tif").write_bytes(b"1"); first = sha256_path(folder)
    >>> _ = (folder / "b.tif").write_bytes(b"2"); sha256_path(folder) != first
    True
    """
    path = Path(path)
    if not path.is_dir():
        return sha256_file(path)
    lines = [f"{f.relative_to(path).as_posix()}\t{sha256_file(f)}\n" for f in sorted(path.rglob("*")) if f.is_file()]
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def write_png(path: str | Path, image: np.ndarray) -> None:
    """Write a uint8 greyscale, RGB or RGBA image as PNG, atomically."""
    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(np.asarray(image, np.uint8))).save(tmp, format="PNG")


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically; a file that already holds ``text`` is left untouched.

    Leaving identical files alone keeps their modification times, so a workflow that
    compares times does not re-run later stages when an idempotent stage re-writes
    the same table.
    """
    path = Path(path)
    try:
        if path.is_file() and path.read_text() == text:
            return
    except UnicodeDecodeError:  # a damaged file (not text): replaced like any other
        pass
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__}")


def write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically (NumPy scalars and arrays allowed)."""
    write_text(path, json.dumps(data, indent=2, default=_json_default) + "\n")


def read_record(path: str | Path) -> dict[str, Any] | None:
    """A stage's JSON record, or None when it is missing, unreadable or not a JSON object.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> read_record(folder / "done.json") is None
    True
    >>> _ = (folder / "done.json").write_text("{not json")
    >>> read_record(folder / "done.json") is None
    True
    """
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def is_current(record: str | Path | dict[str, Any] | None, settings: Any, *, key: str = "settings",
               requires: Sequence[str | Path] = ()) -> bool:
    """Whether an output is current: its record holds ``settings`` under ``key`` and its files exist.

    The one freshness check of the stages. ``record`` is the path of a JSON record (``done.json``,
    ``pair.json``, ``selection.json`` ...) or the record already read; a missing or corrupt record
    is not current. ``key`` may be dotted (``"provenance.config_key"``). ``settings`` is compared as
    it would be written (:func:`write_json`: tuples become lists, paths and NumPy values plain), so a
    record is current exactly when writing ``settings`` again would write the same value.
    ``requires``: files that must exist as well (e.g. the outputs the record describes).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> write_json(folder / "done.json", {"settings": {"axes": ("z", "y")}, "provenance": {"config_key": "ab"}})
    >>> is_current(folder / "done.json", {"axes": ("z", "y")})
    True
    >>> is_current(folder / "done.json", {"axes": ("z",)})
    False
    >>> is_current(folder / "done.json", "ab", key="provenance.config_key")
    True
    >>> is_current(folder / "done.json", {"axes": ("z", "y")}, requires=[folder / "stained.tif"])
    False
    >>> is_current(folder / "missing.json", {})
    False
    """
    if record is not None and not isinstance(record, dict):
        record = read_record(record)
    if record is None:
        return False
    value: Any = record
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return False
        value = value[part]
    try:
        expected = json.loads(json.dumps(settings, default=_json_default))
    except (TypeError, ValueError):
        return False
    return value == expected and all(Path(path).is_file() for path in requires)


def write_csv(path: str | Path, frame: Any, **kwargs: Any) -> None:
    """Write a pandas DataFrame as CSV, atomically (index off unless asked); unchanged files are kept."""
    kwargs.setdefault("index", False)
    write_text(path, frame.to_csv(**kwargs))


def code_version() -> str:
    """The package version, plus the git commit when run from a checkout."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
        return f"{__version__}+g{commit}" + (".dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return __version__


def provenance(profile: Any = None, **extra: Any) -> dict[str, Any]:
    """A record of where an artefact came from: code version, profile name, seed, extras."""
    record: dict[str, Any] = {"vstain_version": code_version()}
    if profile is not None:
        record["profile"] = profile.name
        record["seed"] = profile.seed
    record.update(extra)
    return record


def write_tiff(
    path: str | Path,
    image: np.ndarray,
    pixel_size_um: float | Sequence[float],
    *,
    metadata: dict[str, Any] | None = None,
) -> None:
    """Write a 2D image, an RGB image or a 3D stack as TIFF with its physical pixel size.

    Parameters
    ----------
    path : str or Path
        Destination; written atomically.
    image : ndarray
        ``(Y, X)`` greyscale, ``(Y, X, 3)`` RGB ``uint8``, ``(Z, Y, X)`` stack or
        ``(Z, Y, X, 3)`` RGB stack. ``uint8``, ``uint16`` or ``float32``.
    pixel_size_um : float or (z, y, x) / (y, x) sequence
        Pixel size in micrometres. For stacks, a scalar means isotropic voxels.
    metadata : dict, optional
        JSON-serialisable extras (provenance), stored in the ImageJ ``Info`` field.

    Examples
    --------
    >>> import numpy as np, tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "v.tif"
    >>> write_tiff(p, np.zeros((4, 8, 8), np.float32), (10.0, 5.0, 5.0))
    >>> read_tiff(p)[1]
    (10.0, 5.0, 5.0)
    """
    image = np.asarray(image)
    if image.dtype == np.float64:
        image = image.astype(np.float32)
    if image.dtype not in (np.uint8, np.uint16, np.float32):
        raise ValueError(f"{path}: image dtype {image.dtype} is not uint8, uint16 or float32")
    rgb = image.ndim >= 3 and image.shape[-1] == 3 and image.dtype == np.uint8
    spatial_ndim = image.ndim - (1 if rgb else 0)
    if spatial_ndim not in (2, 3):
        raise ValueError(f"{path}: expected a 2D image or a 3D stack, got shape {image.shape}")
    sizes = np.broadcast_to(np.asarray(pixel_size_um, dtype=float), (spatial_ndim,))
    if not np.all(np.isfinite(sizes)) or np.any(sizes <= 0):
        raise PixelSizeError(f"{path}: pixel size must be positive, got {pixel_size_um}")
    ij_meta: dict[str, Any] = {"unit": "um"}
    if spatial_ndim == 3:
        ij_meta["spacing"] = float(sizes[0])
        ij_meta["axes"] = "ZYXS" if rgb else "ZYX"
    else:
        ij_meta["axes"] = "YXS" if rgb else "YX"
    if metadata:
        ij_meta["Info"] = json.dumps(metadata, default=str)
    with atomic_path(path) as tmp:
        tifffile.imwrite(
            tmp,
            image,
            imagej=True,
            resolution=(1.0 / sizes[-1], 1.0 / sizes[-2]),
            metadata=ij_meta,
            photometric="rgb" if rgb else "minisblack",
        )



def read_tiff(path: str | Path, *, require_pixel_size: bool = True) -> tuple[np.ndarray, tuple[float, ...], dict]:
    """Read a TIFF written by :func:`write_tiff` (or any ImageJ/OME TIFF with a resolution).

    Returns
    -------
    image : ndarray
    pixel_size_um : tuple of float
        ``(y, x)`` for 2D images, ``(z, y, x)`` for stacks.
    metadata : dict
        The JSON stored in the ImageJ ``Info`` field, or ``{}``.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    PixelSizeError
        If ``require_pixel_size`` and the file carries no physical pixel size.
    """
    path = Path(path)
    with open_tiff(path) as tif:
        image = tif.asarray()
        page = tif.pages[0]
        ij = tif.imagej_metadata or {}
        in_plane, _ = tiff_pixel_um(page, ij)
        sizes: list[float] = list(in_plane) if in_plane else []
    rgb = image.ndim >= 3 and image.shape[-1] == 3 and image.dtype == np.uint8
    spatial_ndim = image.ndim - (1 if rgb else 0)
    if sizes and spatial_ndim == 3:
        spacing = imagej_spacing_um(ij)
        sizes = [spacing if spacing is not None else sizes[0]] + sizes
    if not sizes:
        if require_pixel_size:
            raise PixelSizeError(
                f"{path}: no pixel size in micrometres (ImageJ resolution with unit 'um', or resolution tags in cm "
                "or inches); "
                "write it with vstain.io.write_tiff or give the size explicitly"
            )
        sizes = [float("nan")] * spatial_ndim
    metadata: dict = {}
    info = ij.get("Info")
    if info:
        try:
            metadata = json.loads(info)
        except json.JSONDecodeError:
            metadata = {"info": info}
    return image, tuple(float(s) for s in sizes), metadata
