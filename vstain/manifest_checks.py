"""The checks of one manifest entry's values and files: pixel sizes, checksums, TIFF headers (never the pixels), CT
volumes and their voxel sizes, landmarks and initial guesses. Each bad value raises :class:`ManifestError` naming the
file, the pair and the field.

Part of :mod:`vstain.manifest`, which re-exports every public name here.

Examples
--------
>>> parse_initial_guess({"rotation_deg": 90, "mirrored": True}, "m.yaml: pair 'p0': 'initial_guess'")
{'rotation_deg': 90.0, 'mirrored': True}
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from vstain.volume_io import open_volume
from vstain.vocabulary import PIXEL_UM_RANGE

#: The orientation values an ``initial_guess`` may give instead of landmarks.
_GUESS_KEYS = ("rotation_deg", "mirrored", "normal_axis")


class ManifestError(ValueError):
    """A manifest or split file is invalid; the message names the file, the pair and the field."""


ManifestError.__module__ = "vstain.manifest"  # its public home, where tracebacks and users name it


def _pixel_size(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ManifestError(f"{where} must be a positive number of micrometres, got {value!r}")
    low, high = PIXEL_UM_RANGE
    if not low <= value <= high:
        raise ManifestError(f"{where} is {value!r} um, outside the plausible {low:g} - {high:g} um "
                            f"(is it in nm or mm?)")
    return float(value)


def _sha(value: Any, where: str) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", value):
        raise ManifestError(f"{where} must be a sha256 hex digest (64 hex digits), got {value!r}")
    return value.lower()


def _tiff_header(path: Path, where: str) -> tuple[tuple[int, ...], str, np.dtype, int, bool]:
    """Shape, axes, dtype, samples per pixel and colour of a TIFF's first image, from its header only."""
    if path.stat().st_size == 0:
        raise ManifestError(f"{where}: {path} is an empty file (0 bytes), expected a TIFF file")
    # tifffile logs warnings on odd headers; the command line promises one line, so they are muted here
    # (what matters is decided below from the shape, or by the exception of an unreadable header).
    log = logging.getLogger("tifffile")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            page = series.keyframe
            shape, axes, dtype = tuple(int(n) for n in series.shape), str(series.axes), np.dtype(series.dtype)
            samples = int(page.samplesperpixel)
            photometric = int(page.photometric)
    except Exception as err:  # noqa: BLE001  (a foreign or damaged file fails in many ways inside tifffile)
        reason = (str(err).splitlines() or [type(err).__name__])[0]
        raise ManifestError(f"{where}: {path} is not a readable TIFF file ({reason})") from err
    finally:
        log.setLevel(level)
    # Colour: photometric RGB/YCbCr/palette..., or several samples interleaved per pixel. Several samples
    # stored as planes with a greyscale photometric are what tifffile reads as a stack of slices.
    colour = photometric not in (0, 1) or (samples > 1 and axes.endswith("S"))
    return shape, axes, dtype, samples, colour


def _colour_name(samples: int) -> str:
    return {3: "an RGB image", 4: "an RGBA image"}.get(samples, f"a {samples}-sample colour image")


def _check_image(stem: str, path: Path, where: str, histology_shape: tuple[int, ...] | None) -> tuple[int, ...]:
    """Check what the TIFF header of a pair's ``stem`` file tells; returns its (y, x) or (z, y, x) shape.

    The pixels are never read: the check costs the same for a 10 MB and a 10 GB file.
    """
    shape, axes, dtype, samples, colour = _tiff_header(path, where)
    spatial = shape[:-1] if colour and axes.endswith("S") else shape
    described = f"{path} ({dtype}, shape {shape}, axes {axes})"
    if stem == "ct":
        if colour:
            raise ManifestError(f"{where}: {described} is {_colour_name(samples)} "
                                f"({samples} samples per pixel); a CT volume is a greyscale TIFF stack (z, y, x)")
        if len(spatial) == 2:
            raise ManifestError(f"{where}: {described} is a 2D image; a CT volume is a 3D TIFF stack (z, y, x)")
        if len(spatial) != 3:
            raise ManifestError(f"{where}: {described} has {len(spatial)} dimensions; "
                                f"a CT volume is a 3D TIFF stack (z, y, x)")
        if dtype.kind not in "uif":
            raise ManifestError(f"{where}: {described} has pixel type {dtype}; a CT volume holds integers or floats")
    elif stem == "histology":
        if samples == 1 and not colour:
            raise ManifestError(f"{where}: {described} is a greyscale image (1 sample per pixel); "
                                f"the histology must be an RGB image")
        if not axes.endswith("S"):
            raise ManifestError(f"{where}: {described} stores its colours as separate planes; "
                                f"save the histology as interleaved (contiguous) RGB")
        if samples != 3:
            raise ManifestError(f"{where}: {described} has {samples} samples per pixel; "
                                f"the histology must be RGB (3)")
        if dtype != np.uint8:
            raise ManifestError(f"{where}: {described} is {dtype} RGB; the histology must be 8-bit (uint8) RGB")
        if len(spatial) != 2:
            raise ManifestError(f"{where}: {described} is a stack of {len(spatial)} dimensions; "
                                f"the histology must be one 2D RGB image")
    else:
        if colour:
            raise ManifestError(f"{where}: {described} is {_colour_name(samples)} "
                                f"({samples} samples per pixel); an extra mask is a single-channel image")
        if len(spatial) != 2:
            raise ManifestError(f"{where}: {described} has {len(spatial)} dimensions; "
                                f"an extra mask is one 2D image")
        if histology_shape is not None and spatial != histology_shape:
            raise ManifestError(f"{where}: {described} is not the size of the histology "
                                f"{histology_shape}; an extra mask is drawn in histology pixels")
    return spatial


def _check_ct_volume(source: Path | str, voxel_um: float, where: str) -> tuple[int, ...]:
    """Open a CT given as a folder of slices, an OME-Zarr store or an HDF5 dataset: headers only; its shape."""
    try:
        volume = open_volume(source, (voxel_um,) * 3)
    except (ValueError, OSError) as err:
        raise ManifestError(f"{where}: {err}") from None
    shape = tuple(int(n) for n in volume.shape)
    volume.close()
    return shape


#: Largest relative difference between the manifest's ``ct_voxel_um`` and the CT file's own voxel size.
VOXEL_TOLERANCE = 0.01


def _check_ct_voxel_size(source: Path | str, voxel_um: float, where: str) -> None:
    """Refuse a ``ct_voxel_um`` that the CT file's own header contradicts (headers only; none there: nothing to check)."""
    try:
        volume = open_volume(source)
    except (ValueError, OSError):  # no voxel size in the file, or a fault the other checks name
        return
    header = tuple(float(v) for v in volume.voxel_size_um)
    volume.close()
    if any(abs(v - voxel_um) > VOXEL_TOLERANCE * voxel_um for v in header):
        raise ManifestError(f"{where}: field 'ct_voxel_um' is {voxel_um:g} um, but the file's header says "
                            f"{' x '.join(f'{v:g}' for v in header)} um (z, y, x); correct the manifest or the file "
                            "(a CT at another voxel size is stained at the wrong scale)")


def check_landmarks(landmarks: Any, histology_shape: Any = None, ct_shape: Any = None, *,
                    where: str = "initial_guess.landmarks") -> tuple[np.ndarray, np.ndarray]:
    """Check landmark pairs (histology pixel ``(y, x)`` <-> CT voxel ``(z, y, x)``) and return them as arrays.

    Parameters
    ----------
    landmarks : list of mapping, or mapping
        ``[{"histology_yx": [y, x], "ct_zyx": [z, y, x]}, ...]`` (the manifest's form), or
        ``{"histology_yx": (N, 2), "ct_zyx": (N, 3)}``.
    histology_shape, ct_shape : sequence of int, optional
        The images' shapes: every point must lie inside (pixel centres 0 .. n - 1).
    where : str
        Named in every error (the manifest file, the pair and the field).

    Returns
    -------
    (ndarray (N, 2), ndarray (N, 3))

    Raises
    ------
    ManifestError
        Fewer than three pairs, a malformed point, a point outside an image, or points on one
        line (in either image: they span no plane).

    Examples
    --------
    >>> pairs = [{"histology_yx": [0, 0], "ct_zyx": [5, 0, 0]}, {"histology_yx": [0, 10], "ct_zyx": [5, 0, 5]}]
    >>> check_landmarks(pairs, where="m.yaml: pair p1: field 'initial_guess.landmarks'")
    Traceback (most recent call last):
    ...
    vstain.manifest.ManifestError: m.yaml: pair p1: field 'initial_guess.landmarks': 2 landmark pairs given, at least 3 are needed (three points not on one line fix a plane)
    """
    if isinstance(landmarks, dict) and set(landmarks) == {"histology_yx", "ct_zyx"}:
        hist_points, ct_points = (np.asarray(landmarks[key]).tolist() for key in ("histology_yx", "ct_zyx"))
        items = [{"histology_yx": h, "ct_zyx": c} for h, c in zip(hist_points, ct_points)]
    elif isinstance(landmarks, list):
        items = landmarks
    else:
        raise ManifestError(f"{where} must be a list of {{histology_yx: [y, x], ct_zyx: [z, y, x]}}, "
                            f"got {type(landmarks).__name__}")
    if len(items) < 3:
        raise ManifestError(f"{where}: {len(items)} landmark pairs given, at least 3 are needed "
                            "(three points not on one line fix a plane)")
    hist, ct = [], []
    for k, item in enumerate(items):
        if not isinstance(item, dict) or set(item) != {"histology_yx", "ct_zyx"}:
            raise ManifestError(f"{where}[{k}] must be a mapping with exactly histology_yx and ct_zyx, got {item!r}")
        for key, n, into in (("histology_yx", 2, hist), ("ct_zyx", 3, ct)):
            value = item[key]
            ok = isinstance(value, (list, tuple)) and len(value) == n and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
            if not ok:
                raise ManifestError(f"{where}[{k}].{key} must be {n} finite numbers, got {value!r}")
            into.append([float(v) for v in value])
    hist_yx, ct_zyx = np.asarray(hist), np.asarray(ct)
    for key, points, shape, image in (("histology_yx", hist_yx, histology_shape, "histology"),
                                      ("ct_zyx", ct_zyx, ct_shape, "CT volume")):
        if shape is not None:
            upper = np.asarray(shape[:points.shape[1]], float) - 1
            outside = np.flatnonzero(np.any((points < 0) | (points > upper), axis=1))
            if len(outside):
                k = int(outside[0])
                raise ManifestError(f"{where}[{k}].{key} {points[k].tolist()} lies outside the {image} "
                                    f"(shape {tuple(int(n) for n in shape[:points.shape[1]])})")
        centred = points - points.mean(axis=0)
        singular = np.linalg.svd(centred, compute_uv=False)
        if singular[0] == 0 or singular[1] < 0.02 * singular[0]:
            raise ManifestError(f"{where}: the {key} points lie on one line (or coincide); "
                                "landmarks must span the section (three or more, not collinear)")
    return hist_yx, ct_zyx


def parse_initial_guess(raw: Any, where: str, histology_shape: Any = None, ct_shape: Any = None) -> dict:
    """A pair's ``initial_guess``: landmarks (:func:`check_landmarks`) or orientation values, checked.

    ``{"landmarks": [...]}``, or any of ``rotation_deg`` (a number: the section's turn on the slide,
    degrees), ``mirrored`` (true when mounted face down) and ``normal_axis`` (``z``, ``y`` or ``x``:
    the volume axis the section normal lies along). Errors name ``where`` and the field.

    Examples
    --------
    >>> parse_initial_guess({"rotation_deg": 90, "normal_axis": "y"}, "m.yaml: pair p1")
    {'rotation_deg': 90.0, 'normal_axis': 'y'}
    """
    field = f"{where}: field 'initial_guess"
    if not isinstance(raw, dict) or not raw:
        raise ManifestError(f"{field}' must be a mapping with landmarks, or rotation_deg / mirrored / normal_axis, "
                            f"got {raw!r}")
    if "landmarks" in raw:
        if len(raw) > 1:
            raise ManifestError(f"{field}': give landmarks or orientation values, not both")
        hist_yx, ct_zyx = check_landmarks(raw["landmarks"], histology_shape, ct_shape, where=f"{field}.landmarks'")
        return {"landmarks": {"histology_yx": hist_yx.tolist(), "ct_zyx": ct_zyx.tolist()}}
    unknown = sorted(set(raw) - set(_GUESS_KEYS))
    if unknown:
        raise ManifestError(f"{field}': unknown field {unknown[0]!r} (valid: landmarks, {', '.join(_GUESS_KEYS)})")
    out: dict[str, Any] = {}
    if "rotation_deg" in raw:
        value = raw["rotation_deg"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ManifestError(f"{field}.rotation_deg' must be a number of degrees, got {value!r}")
        out["rotation_deg"] = float(value)
    if "mirrored" in raw:
        if not isinstance(raw["mirrored"], bool):
            raise ManifestError(f"{field}.mirrored' must be true or false, got {raw['mirrored']!r}")
        out["mirrored"] = raw["mirrored"]
    if "normal_axis" in raw:
        if raw["normal_axis"] not in ("z", "y", "x"):
            raise ManifestError(f"{field}.normal_axis' must be one of z, y, x, got {raw['normal_axis']!r}")
        out["normal_axis"] = raw["normal_axis"]
    return out
