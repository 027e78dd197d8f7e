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
import re
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import tifffile
from PIL import Image

from vstain import __version__


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


def open_tiff(path: str | Path) -> tifffile.TiffFile:
    """``tifffile.TiffFile(path)``, with errors that name the file and say what it is instead.

    Raises
    ------
    FileNotFoundError
        If nothing is at ``path``.
    ValueError
        If ``path`` is a folder, an empty file or not a TIFF.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "notes.tif"
    >>> _ = p.write_text("hello")
    >>> open_tiff(p)
    Traceback (most recent call last):
    ...
    ValueError: .../notes.tif: not a readable TIFF (TiffFileError: ...)
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path}: a folder, where a TIFF file is expected")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    try:
        tif = tifffile.TiffFile(path)
    except (tifffile.TiffFileError, ValueError, EOFError, OSError) as err:
        what = "an empty file" if path.stat().st_size == 0 else "not a readable TIFF"
        raise ValueError(f"{path}: {what} ({type(err).__name__}: {err})") from None
    try:
        reason = tiff_truncation(tif)
    except BaseException:
        tif.close()
        raise
    if reason:
        tif.close()
        raise ValueError(f"{path}: truncated: {reason}; the file is incomplete (an interrupted copy or write): "
                         "copy or write it again")
    return tif


def _header_page_count(tif: tifffile.TiffFile) -> int | None:
    """How many pages the first page's description says the file holds (ImageJ, tifffile, one-file OME-XML)."""
    page = tif.pages.first
    description = page.description or ""
    if description.startswith("ImageJ="):
        found = re.search(r"^images=(\d+)\s*$", description, flags=re.M)
        return int(found[1]) if found else None
    if description.startswith("{") and '"shape"' in description:
        try:
            shape = json.loads(description)["shape"]
        except (ValueError, KeyError, TypeError):
            return None
        spatial = 3 if page.samplesperpixel > 1 else 2
        if not isinstance(shape, list) or len(shape) < spatial:
            return None
        return int(np.prod([int(n) for n in shape[:-spatial]], dtype=np.int64))
    if "<OME" in description and "FileName=" not in description:  # a multi-file OME dataset: other files hold pages
        ends = [int(re.search(r'\bIFD="(\d+)"', attrs)[1] if re.search(r'\bIFD="(\d+)"', attrs) else 0)
                + int(re.search(r'PlaneCount="(\d+)"', attrs)[1] if re.search(r'PlaneCount="(\d+)"', attrs) else 1)
                for attrs in re.findall(r"<TiffData\b([^>]*)>", description)]
        return max(ends) if ends else None
    return None


#: Bytes per value of each TIFF field type (TIFF 6 and BigTIFF).
_TIFF_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8, 17: 8,
                    18: 8}


def _ifd_extent(fh: Any, tiff: Any, offset: int) -> tuple[int, int]:
    """The next-IFD offset of the IFD at ``offset`` and the end of its furthest tag value, read raw.

    Raises ``struct.error`` when the IFD itself runs past the end of the file.
    """
    fh.seek(offset)
    tagno = struct.unpack(tiff.tagnoformat, fh.read(tiff.tagnosize))[0]
    raw = fh.read(tagno * tiff.tagsize + tiff.offsetsize)
    if len(raw) < tagno * tiff.tagsize + tiff.offsetsize:
        raise struct.error("IFD cut off")
    end = offset + tiff.tagnosize + tagno * tiff.tagsize + tiff.offsetsize
    head = struct.calcsize(tiff.tagformat1)
    for i in range(tagno):
        entry = raw[i * tiff.tagsize:(i + 1) * tiff.tagsize]
        _, dtype = struct.unpack(tiff.tagformat1, entry[:head])
        count, value = struct.unpack(tiff.tagformat2, entry[head:])
        nbytes = count * _TIFF_TYPE_SIZES.get(dtype, 1)
        if nbytes > tiff.tagoffsetthreshold:  # stored elsewhere: the value is its offset
            end = max(end, struct.unpack(tiff.offsetformat, value[:tiff.offsetsize])[0] + nbytes)
    following = struct.unpack(tiff.offsetformat, raw[-tiff.offsetsize:])[0]
    return following, end


def tiff_truncation(tif: tifffile.TiffFile) -> str | None:
    """Why an open TIFF file is cut short, in words; None when it is whole.

    A copy interrupted part way leaves a file whose chain of pages (IFDs) points past its end,
    whose pages' pixel data or tag values (the OME-XML, the resolution) run past it, or that holds
    fewer pages than its own header (the ImageJ ``images=``, tifffile's ``shape``, one-file
    OME-XML ``TiffData``) says; an ImageJ stack saved beyond 4 GB (one page header, the slices
    following each other) is whole when the file holds all their bytes. Read as it is, such a stack is a shorter volume, "a 2D image" or a
    file without its metadata. Only the page headers are read, no pixels; the reduced levels of a
    pyramid (SubIFDs) are checked too.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "v.tif"
    >>> write_tiff(p, np.zeros((6, 8, 8), np.uint16), 5.0)
    >>> with tifffile.TiffFile(p) as tif:
    ...     tiff_truncation(tif) is None
    True
    >>> _ = p.write_bytes(p.read_bytes()[:983])  # half of it
    >>> with tifffile.TiffFile(p) as tif:
    ...     tiff_truncation(tif)
    'page 2 should start at byte 1136 but the file ends at byte 983 (6 slices in its header, 1 complete)'
    """
    fh, tiff = tif.filehandle, tif.tiff
    size = fh.size
    pages = tif.pages
    count = len(pages)
    expected = _header_page_count(tif)
    expected = expected if expected and expected > 1 else None  # one page per description: no count for the file

    def held(complete: int) -> str:
        return f" ({expected} slices in its header, {complete} complete)" if expected else ""

    def check(page: Any, name: str, complete: int) -> str | None:
        ends = [int(o) + int(n) for o, n in zip(getattr(page, "dataoffsets", ()), getattr(page, "databytecounts", ()))]
        if ends and max(ends) > size:
            return f"the pixels of {name} run to byte {max(ends)} but the file ends at byte {size}" + held(complete)
        if tif.is_ndpi:  # NDPI hides 64-bit offsets in its own way; its pixel data were checked above
            return None
        try:
            _, end = _ifd_extent(fh, tiff, page.offset)
        except (struct.error, OSError):
            return f"the header of {name} runs past the end of the file (byte {size})" + held(complete)
        if end > size:
            return f"the tags of {name} run to byte {end} but the file ends at byte {size}" + held(complete)
        return None

    for index in range(count):
        try:
            page = pages[index]
        except (tifffile.TiffFileError, struct.error, ValueError, EOFError, OSError):
            return f"the header of page {index + 1} is cut off at byte {size}" + held(index)
        problem = check(page, f"page {index + 1}", index)
        if problem:
            return problem
        for level, offset in enumerate(getattr(page, "subifds", None) or (), start=1):
            if offset >= size:
                return f"reduced level {level} of page {index + 1} should start at byte {offset} but the file ends " \
                       f"at byte {size}"
            try:
                fh.seek(offset)
                reduced = tifffile.TiffPage(tif, index=(index, level - 1))
            except (tifffile.TiffFileError, struct.error, ValueError, EOFError, OSError):
                return f"the header of reduced level {level} of page {index + 1} is cut off at byte {size}"
            problem = check(reduced, f"reduced level {level} of page {index + 1}", index)
            if problem:
                return problem
    try:  # the chain of pages: the last page must point to no next page (0)
        following, _ = _ifd_extent(fh, tiff, pages[count - 1].offset)
    except (struct.error, OSError):
        return f"the header of page {count} runs past the end of the file (byte {size})" + held(count - 1)
    if following >= size:
        return f"page {count + 1} should start at byte {following} but the file ends at byte {size}" + held(count)
    if expected and expected > count:
        page = pages.first
        if count == 1 and page.dataoffsets and page.compression == 1 and not page.is_tiled:
            # ImageJ beyond 4 GB: one page header, the slices' pixels one after another from the first's
            start, end = int(page.dataoffsets[0]), int(page.dataoffsets[0]) + expected * page.nbytes
            if end <= size:
                return None
            return (f"its header says {expected} slices stored one after another after page 1 (ImageJ's layout "
                    f"beyond 4 GB), to byte {end}, but the file ends at byte {size} "
                    f"({max(0, size - start) // page.nbytes} complete)")
        return f"its header says {expected} slices but it holds {count} pages"
    return None


#: How ImageJ spells micrometres in its ``unit`` field.
MICRON_UNITS = ("um", "micron", "\\u00B5m", "µm")

#: Micrometres per ImageJ ``unit`` (its resolution and ``spacing`` are in that unit).
IMAGEJ_UNIT_UM = {**{unit: 1.0 for unit in MICRON_UNITS}, "microns": 1.0, "micrometer": 1.0, "nm": 1e-3,
                  "nanometer": 1e-3, "mm": 1e3, "millimeter": 1e3, "cm": 1e4, "centimeter": 1e4, "m": 1e6,
                  "meter": 1e6}


def imagej_spacing_um(imagej: dict | None) -> float | None:
    """ImageJ's Z ``spacing`` in micrometres, read in its ``unit``; None if absent or in a unit not known.

    Examples
    --------
    >>> imagej_spacing_um({"unit": "mm", "spacing": 0.005}), imagej_spacing_um({"unit": "pixel", "spacing": 1})
    (5.0, None)
    """
    imagej = imagej or {}
    factor = IMAGEJ_UNIT_UM.get(str(imagej.get("unit", "")).strip())
    if factor is None or "spacing" not in imagej:
        return None
    try:
        return float(imagej["spacing"]) * factor
    except (TypeError, ValueError):
        return None


def tiff_pixel_um(page: Any, imagej: dict | None = None) -> tuple[tuple[float, float] | None, str]:
    """``(y, x)`` pixel size in um from a TIFF page's resolution tags, and where it was read.

    ImageJ's ``unit`` first (micrometres, or nm, mm, cm, m: :data:`IMAGEJ_UNIT_UM`); else the TIFF
    ``ResolutionUnit`` in centimetres (as NDPI writes it) or inches. One pixel per centimetre or inch, or no unit, is no resolution (writers
    put it there by default). The one reading of resolution tags for :func:`read_tiff`,
    :mod:`vstain.volume_io` and :mod:`vstain.slide_io`.

    Returns
    -------
    size : (float, float) or None
    source : str
        ``"ImageJ resolution"``, ``"TIFF resolution tags"`` or ``""``.

    Examples
    --------
    >>> import tempfile, pathlib, tifffile
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "cm.tif"
    >>> tifffile.imwrite(p, np.zeros((4, 4), np.uint8), resolution=(2000, 2000), resolutionunit="CENTIMETER")
    >>> with tifffile.TiffFile(p) as tif:
    ...     tiff_pixel_um(tif.pages[0], tif.imagej_metadata)
    ((5.0, 5.0), 'TIFF resolution tags')
    """
    tags = page.tags
    if "XResolution" not in tags or "YResolution" not in tags:
        return None, ""
    (xn, xd), (yn, yd) = tags["XResolution"].value, tags["YResolution"].value
    if not (xn > 0 and yn > 0 and xd > 0 and yd > 0):
        return None, ""
    factor = IMAGEJ_UNIT_UM.get(str((imagej or {}).get("unit", "")).strip())
    if factor is not None:
        return (factor * yd / yn, factor * xd / xn), "ImageJ resolution"
    per_unit = {3: 1e4, 2: 25400.0}.get(int(getattr(tags.get("ResolutionUnit"), "value", 1)))  # cm, inch
    if per_unit is None or xn / xd <= 1 or yn / yd <= 1:
        return None, ""
    return (per_unit * yd / yn, per_unit * xd / xn), "TIFF resolution tags"


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
