"""Reading whole-slide histology images as they come: pyramidal OME-TIFF, SVS, NDPI or plain RGB TIFF.

A stained section of 6 mm scanned at 0.44 um per pixel is about 14k x 14k pixels (590 MB as
RGB); registration works at a few micrometres per pixel. :func:`read_slide` therefore reads the
pyramid level nearest above the working resolution (the coarsest level that is still at least as
fine as ``target_um``), never the full-resolution level whole unless it is the only one or is
asked for. The pixel size comes from the file (OME-XML ``PhysicalSizeX``, Aperio's ``MPP``, or the
TIFF resolution tags in centimetres as NDPI writes them) or from the caller (the manifest's
``histology_pixel_um``); when both are there and disagree by more than 1 %, the file is refused.

Examples
--------
>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> rgb = np.zeros((400, 600, 3), np.uint8)
>>> write_pyramid(folder / "slide.ome.tif", rgb, 0.5, levels=3)
>>> image, pixel_um, info = read_slide(folder / "slide.ome.tif", target_um=2.0)
>>> image.shape, pixel_um, info["level"]
((100, 150, 3), 2.0, 2)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from vstain.io import atomic_path, open_tiff, tiff_pixel_um

#: Largest relative disagreement between the file's pixel size and the one given.
PIXEL_SIZE_TOLERANCE = 0.01


def _file_pixel_um(tif: tifffile.TiffFile) -> tuple[float | None, str]:
    """The full-resolution pixel size the file states, and where it was found."""
    if tif.is_ome and tif.ome_metadata:
        match = re.search(r'PhysicalSizeX="([0-9.eE+-]+)"', tif.ome_metadata)
        unit = re.search(r'PhysicalSizeXUnit="([^"]+)"', tif.ome_metadata)
        if match:
            factor = {"µm": 1.0, "um": 1.0, "nm": 1e-3, "mm": 1e3}.get(unit.group(1) if unit else "µm")
            if factor is not None:
                return float(match.group(1)) * factor, "OME-XML PhysicalSizeX"
    page = tif.pages[0]
    match = re.search(r"MPP\s*=\s*([0-9.eE+-]+)", page.description or "")
    if match:
        return float(match.group(1)), "Aperio MPP"
    size, source = tiff_pixel_um(page, tif.imagej_metadata)  # ImageJ um, else cm (NDPI) or inch tags
    return (size[1], source) if size else (None, "")


def _levels(tif: tifffile.TiffFile) -> list[Any]:
    """The pyramid levels of the main image, full resolution first (one level for a plain TIFF)."""
    series = tif.series[0]
    return list(series.levels) if getattr(series, "levels", None) else [series]


def _as_rgb(image: np.ndarray, axes: str, path: Path) -> np.ndarray:
    if image.ndim == 3 and axes.endswith("S") and image.shape[-1] in (3, 4):
        rgb = image[..., :3]
    elif image.ndim == 3 and image.shape[0] in (3, 4) and axes.startswith(("S", "C")):
        rgb = np.moveaxis(image[:3], 0, -1)
    else:
        raise ValueError(f"{path}: a histology slide must be an RGB image, got shape {image.shape} (axes {axes})")
    if rgb.dtype != np.uint8:
        raise ValueError(f"{path}: a histology slide must be 8-bit RGB, got {rgb.dtype}")
    return np.ascontiguousarray(rgb)


def read_slide(path: str | Path, *, pixel_um: float | None = None,
               target_um: float | None = None) -> tuple[np.ndarray, float, dict[str, Any]]:
    """A whole-slide image at the pyramid level nearest above ``target_um``.

    Parameters
    ----------
    path : path
        Pyramidal OME-TIFF, SVS, NDPI or a plain RGB TIFF.
    pixel_um : float, optional
        Full-resolution pixel size (the manifest's); default: the file's.
    target_um : float, optional
        The working resolution: the coarsest level whose pixel size is at most this is read
        (default: full resolution).

    Returns
    -------
    image : ndarray, (H, W, 3) uint8
    pixel_um : float
        Pixel size of the level read.
    info : dict
        ``level``, ``n_levels``, ``full_shape``, ``full_pixel_um``, ``pixel_size_source``.

    Raises
    ------
    ValueError
        Not an RGB slide, no pixel size anywhere, or the file and ``pixel_um`` disagree.
    """
    path = Path(path)
    with open_tiff(path) as tif:
        stated, source = _file_pixel_um(tif)
        if pixel_um is not None and stated is not None and \
                abs(stated - pixel_um) > PIXEL_SIZE_TOLERANCE * pixel_um:
            raise ValueError(f"{path}: the file says {stated:g} um per pixel ({source}) but histology_pixel_um is "
                             f"{pixel_um:g}; correct the manifest or the file")
        full_um = pixel_um if pixel_um is not None else stated
        if full_um is None:
            raise ValueError(f"{path}: no pixel size in the file (OME PhysicalSizeX, Aperio MPP or resolution tags); "
                             "give histology_pixel_um in the manifest")
        if not full_um > 0:
            raise ValueError(f"{path}: pixel size must be positive, got {full_um}")
        levels = _levels(tif)
        full_width = levels[0].shape[levels[0].axes.index("X")]
        sizes = [full_um * full_width / level.shape[level.axes.index("X")] for level in levels]
        chosen = 0
        if target_um is not None:
            # the coarsest level still at least as fine as the working resolution (1 % slack for rounding)
            fine_enough = [k for k, size in enumerate(sizes) if size <= target_um * 1.01]
            chosen = max(fine_enough) if fine_enough else 0
        level = levels[chosen]
        image = _as_rgb(level.asarray(), level.axes, path)
    info = {"level": chosen, "n_levels": len(levels), "full_shape": tuple(int(n) for n in levels[0].shape),
            "full_pixel_um": float(full_um), "pixel_size_source": "manifest" if pixel_um is not None else source}
    return image, float(sizes[chosen]), info


def write_pyramid(path: str | Path, rgb: np.ndarray, pixel_um: float, *, levels: int = 3, tile: int = 256) -> None:
    """Write ``rgb`` as a tiled pyramidal OME-TIFF (each level half the previous), as slide scanners do.

    Used to make test and benchmark slides; the levels are block means of the full image.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[-1] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"rgb must be (H, W, 3) uint8, got {rgb.dtype} {rgb.shape}")
    tile = max(16, tile // 16 * 16)
    options = {"tile": (tile, tile), "photometric": "rgb", "compression": "zlib"}
    with atomic_path(Path(path)) as tmp, tifffile.TiffWriter(tmp, ome=True, bigtiff=rgb.nbytes > 2**31) as writer:
        writer.write(rgb, subifds=levels - 1, metadata={"axes": "YXS", "PhysicalSizeX": pixel_um,
                                                        "PhysicalSizeY": pixel_um, "PhysicalSizeXUnit": "µm",
                                                        "PhysicalSizeYUnit": "µm"}, **options)
        level = rgb
        for _ in range(levels - 1):
            level = half_size(level)
            writer.write(level, subfiletype=1, **options)


def half_size(rgb: np.ndarray, strip_rows: int = 512) -> np.ndarray:
    """The next pyramid level: means of 2 x 2 blocks (an odd last row or column dropped), in strips of rows.

    Examples
    --------
    >>> rgb = np.array([[[0, 2, 4], [2, 4, 6]], [[4, 6, 8], [6, 8, 10]]], np.uint8)  # one 2 x 2 block
    >>> half_size(rgb).tolist()
    [[[3, 5, 7]]]
    """
    h, w = rgb.shape[0] // 2, rgb.shape[1] // 2
    out = np.empty((h, w) + rgb.shape[2:], np.uint8)
    for lo in range(0, h, strip_rows):  # a float copy of one strip, not of the whole slide
        hi = min(h, lo + strip_rows)
        block = rgb[2 * lo:2 * hi, :2 * w].reshape((hi - lo, 2, w, 2) + rgb.shape[2:])
        out[lo:hi] = block.mean(axis=(1, 3)).round().astype(np.uint8)
    return out
