"""Stain a CT volume with a trained checkpoint in one call, from Python.

:func:`stain_volume` does what ``vstain stain`` does (the command only wires it:
:func:`vstain.stages.stain.stain_ct_volume`): it opens the CT however it comes (an array, a path,
an opened volume), brings it to the training scale, wraps the checkpoint's CT-to-histology
generator and streams the volume slice by slice, optionally with its uncertainty map. Without an
``output`` the stain comes back as an array; with one it is written (a TIFF stack, or an OME-Zarr
multiscale image that holds its uncertainty map) and its path comes back. :func:`stain_slice`
stains one 2D slice.

Examples
--------
>>> from vstain.api import stain_slice, stain_volume
>>> stain_volume.__name__, stain_slice.__name__
('stain_volume', 'stain_slice')
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from vstain.io import read_tiff
from vstain.stages.stain import stain_ct_volume
from vstain.volume_io import ArrayVolume, open_volume


def _as_volume(ct: Any, voxel_size_um: Sequence[float] | None) -> tuple[Any, bool]:
    """``ct`` as a slice source, and whether this call opened it (and so closes it)."""
    if isinstance(ct, (str, Path)):
        return open_volume(ct, voxel_size_um), True
    if hasattr(ct, "read_slice") and hasattr(ct, "shape") and hasattr(ct, "voxel_size_um"):
        return ct, False
    if isinstance(ct, np.ndarray):
        if voxel_size_um is None:
            raise ValueError(f"ct: an array of shape {ct.shape} carries no voxel size; give voxel_size_um=(z, y, x) "
                             "in micrometres")
        return ArrayVolume(ct, voxel_size_um, name="ct"), False
    raise TypeError(f"ct: expected an array (Z, Y, X), a path (TIFF stack, slice folder, .zarr, file.h5:/dataset) "
                    f"or an opened volume (vstain.volume_io.open_volume), got {type(ct).__name__}")


def stain_volume(
    ct: Any,
    checkpoint: str | Path,
    output: str | Path | None = None,
    *,
    voxel_size_um: Sequence[float] | None = None,
    normalisation: str = "auto",
    uncertainty: bool = False,
    device: str = "cpu",
    progress: bool = False,
    overwrite: bool = False,
    **options: Any,
) -> Any:
    """Stain a CT volume with a trained checkpoint: ``vstain stain`` as a Python call.

    Parameters
    ----------
    ct : ndarray (Z, Y, X), path or opened volume
        The CT in any intensity scale: an array (give ``voxel_size_um``), a path that
        :func:`vstain.volume_io.open_volume` reads (a TIFF stack, a folder of slice TIFFs,
        ``.zarr``, ``file.h5:/dataset``), or an opened volume (left open).
    checkpoint : path
        A trained run's folder (its selected checkpoint) or a ``.pt`` file.
    output : path, optional
        ``.tif`` / ``.tiff`` (ImageJ RGB stack) or ``.zarr`` (OME-Zarr multiscale image, the
        uncertainty map inside the same store). Without it the stain is returned as an array.
    voxel_size_um : (z, y, x), optional
        Micrometres; needed for an array, overrides a file's metadata otherwise.
    normalisation : {"auto", "none"}
        ``auto``: bone and background found on a few slices are mapped to 30000 / 10000 as
        in the study (paper 2.5); ``none``: the CT is already on that scale.
    uncertainty : bool
        Also measure the per-voxel uncertainty (Delta E) around the same stain.
    device : {"cpu", "cuda", "auto"}
    progress : bool
        Show progress bars.
    overwrite : bool
        Replace an existing ``output``.
    **options
        Any other option of ``vstain stain`` by its long name with underscores
        (:func:`vstain.stages.stain.stain_ct_volume`): ``axes``, ``fusion``, ``sigma``,
        ``patch_size``, ``step``, ``batch_size``, ``blend``, ``profile`` (whose inference
        settings, precision included, are the defaults), ``ct_contrast``, ``ct_fill_value``,
        ``ct_bone_value``, ``ct_background_value``, ``bone_roi``, ``background_roi``,
        ``ensemble``, ``uncertainty_source``, ``stain_from``, ``ngff_version`` ("0.4", the
        default, or "0.5" for a ``.zarr`` output).

    Returns
    -------
    ndarray or Path, or a pair of them with ``uncertainty``
        Without ``output``: the stain, ``(Z, Y, X, 3)`` uint8 (and the map, ``(Z, Y, X)``
        float32). With ``output``: its path (and the map's path).

    Examples
    --------
    A CT array and a checkpoint in, the stained volume out (``checkpoint``: a trained run's
    folder or ``.pt`` file; ``tests/test_api.py`` runs this example on a small one):

    >>> import numpy as np
    >>> ct = np.random.default_rng(0).uniform(0, 1, (3, 20, 24)).astype(np.float32)
    >>> ct[:, 5:15, 6:18] += 2.0  # bone: brighter than the rest
    >>> rgb = stain_volume(ct, checkpoint, voxel_size_um=(4.0, 2.0, 2.0), step=8)  # doctest: +SKIP
    >>> rgb.shape, rgb.dtype.name  # doctest: +SKIP
    ((3, 20, 24, 3), 'uint8')
    """
    source, opened = _as_volume(ct, voxel_size_um)
    try:
        options = dict(options, uncertainty=uncertainty, device=device, progress=progress,
                       ct_normalisation=normalisation)
        if output is not None:
            written, map_path = stain_ct_volume(source, checkpoint, output, overwrite=overwrite, **options)
            return (written, map_path) if uncertainty else written
        with tempfile.TemporaryDirectory(prefix="vstain-stain-") as folder:
            written, map_path = stain_ct_volume(source, checkpoint, Path(folder) / "stained.tif", **options)
            shape = tuple(source.shape)  # a one-slice TIFF stack reads back without its Z axis
            rgb = read_tiff(written)[0].reshape(shape + (3,))
            return (rgb, read_tiff(map_path)[0].reshape(shape)) if uncertainty else rgb
    finally:
        if opened:
            source.close()


def stain_slice(ct_slice: np.ndarray, checkpoint: str | Path, *, pixel_size_um: float | Sequence[float],
                **options: Any) -> Any:
    """Stain one 2D CT slice with a trained checkpoint (:func:`stain_volume` on a one-slice volume).

    Parameters
    ----------
    ct_slice : ndarray (Y, X)
    checkpoint : path
    pixel_size_um : float or (y, x)
        Micrometres.
    **options
        As :func:`stain_volume` (no ``output``: the stain comes back as an array).

    Returns
    -------
    ndarray or (ndarray, ndarray)
        ``(Y, X, 3)`` uint8 (and the ``(Y, X)`` float32 map with ``uncertainty=True``).

    Examples
    --------
    >>> import numpy as np
    >>> plane = np.random.default_rng(1).uniform(0, 1, (20, 24)).astype(np.float32)
    >>> plane[5:15, 6:18] += 2.0
    >>> stain_slice(plane, checkpoint, pixel_size_um=2.0, step=8).shape  # doctest: +SKIP
    (20, 24, 3)
    """
    ct_slice = np.asarray(ct_slice)
    if ct_slice.ndim != 2:
        raise ValueError(f"ct_slice: expected one 2D slice (Y, X), got shape {ct_slice.shape}")
    if "output" in options:
        raise ValueError("stain_slice returns the stain; write volumes with stain_volume(..., output=...)")
    size = np.broadcast_to(np.asarray(pixel_size_um, dtype=float), (2,))
    result = stain_volume(ct_slice[None], checkpoint, voxel_size_um=(float(size[0]), *map(float, size)),
                          **options)
    return tuple(part[0] for part in result) if isinstance(result, tuple) else result[0]
