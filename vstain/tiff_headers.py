"""Reading TIFF headers: opening with clear errors, truncation, and the pixel size a file declares.

The checks :func:`vstain.io.read_tiff` and the CT volume sources (:mod:`vstain.volume_sources`) run before they
trust a file: :func:`open_tiff` names the file and says what it is instead of tifffile's own errors,
:func:`tiff_truncation` tells a file cut short (an interrupted copy) from a whole one, and
:func:`tiff_pixel_um` / :func:`imagej_spacing_um` read the pixel size in micrometres from ImageJ's
description or the TIFF resolution tags. Their public names are :mod:`vstain.io`'s too.

Examples
--------
>>> imagej_spacing_um({"spacing": 0.005, "unit": "mm"})
5.0
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np
import tifffile


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
    >>> from vstain.io import write_tiff
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
