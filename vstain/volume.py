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

Volumes are read and written by :mod:`vstain.volume_io` (TIFF stacks and OME-Zarr);
this module holds the science: filtering, staining, fusion and the scores.

Examples
--------
>>> import numpy as np
>>> from vstain.volume_io import ArrayVolume
>>> volume = np.random.default_rng(0).normal(size=(6, 16, 16)).astype(np.float32)
>>> source = ArrayVolume(volume, (5.0, 5.0, 5.0))
>>> grey = lambda ct: np.repeat(((ct > 0) * 255).astype(np.uint8)[..., None], 3, axis=-1)
>>> stained = np.stack(list(stain_slices(source, grey, sigma_voxels=1.0)))
>>> stained.shape, stained.dtype
((6, 16, 16, 3), dtype('uint8'))
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Sequence

import numpy as np
from scipy import ndimage
from skimage.metrics import structural_similarity
from tqdm.auto import tqdm

from vstain.data import ct_to_network, network_to_histology
from vstain.infer import infer_slide, with_channels
from vstain.masks import from_optical_density, optical_density
from vstain.volume_io import RawStore, write_rgb_volume

SliceStainer = Callable[[np.ndarray], np.ndarray]
Fusion = Literal["od", "rgb"]
AXES = ("z", "zyx")
TRUNCATE = 4.0  # scipy.ndimage.gaussian_filter's default kernel half-width, in sigmas


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


def finite_slice(source: Any, z: int) -> np.ndarray:
    """Slice ``z`` of ``source``, refused when it holds NaN or infinite voxels.

    A non-finite voxel would be clipped and stained as if it were bone or background; the
    error names the volume, the slice and how many voxels are affected.

    Examples
    --------
    >>> from vstain.volume_io import ArrayVolume
    >>> vol = np.zeros((2, 4, 4), np.float32); vol[1, 0, :2] = np.inf
    >>> finite_slice(ArrayVolume(vol, (1, 1, 1), name="ct.tif"), 1)
    Traceback (most recent call last):
    ...
    ValueError: ct.tif: slice 1 holds 2 non-finite voxels (NaN or infinite); fix or mask them before staining
    """
    image = source.read_slice(z)
    bad = image.size - int(np.count_nonzero(np.isfinite(image)))
    if bad:
        raise ValueError(f"{getattr(source, 'name', 'volume')}: slice {z} holds {bad} non-finite voxels "
                         "(NaN or infinite); fix or mask them before staining")
    return image


def filtered_slices(source: Any, sigma_voxels: float) -> Iterator[np.ndarray]:
    """Yield the slices of ``gaussian_filter(volume, sigma_voxels, mode="reflect")`` one by one.

    The Z pass is a weighted sum over a sliding window of ``2 r + 1`` slices (``r = int(4
    sigma + 0.5)``), the Y/X passes are 2D filters of each sum: the result equals scipy's 3D
    filter of the whole volume, but only the window is ever held.

    Examples
    --------
    >>> vol = np.random.default_rng(0).normal(size=(5, 8, 8)).astype(np.float32)
    >>> from vstain.volume_io import ArrayVolume
    >>> out = np.stack(list(filtered_slices(ArrayVolume(vol, (1, 1, 1)), 1.0)))
    >>> bool(np.allclose(out, ndimage.gaussian_filter(vol.astype(float), 1.0), atol=1e-5))
    True
    """
    depth = source.shape[0]
    if sigma_voxels <= 0:
        for z in range(depth):
            yield finite_slice(source, z)
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
            window[index] = finite_slice(source, index)
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
    if infer is None:
        infer = infer_slide

    def stain(ct_slice: np.ndarray) -> np.ndarray:
        height, width = ct_slice.shape
        pad_y, pad_x = max(0, patch_size - height), max(0, patch_size - width)
        if pad_y or pad_x:
            ct_slice = np.pad(ct_slice, ((0, pad_y), (0, pad_x)), mode="symmetric")
        net = np.asarray(ct_to_network(ct_slice, invert=invert), np.float32)
        if net.ndim == 3:  # (3, Y, X) identical channels: the slide is one channel
            net = net[0]
        out = infer(generator, with_channels(net, 3), patch_size=patch_size, step=step, batch_size=batch_size,
                    blend=blend, device=device)
        rgb = network_to_histology(np.moveaxis(np.asarray(out), -1, 0))
        return rgb[:height, :width]

    return stain


# --------------------------------------------------------------------------- multi-axis fusion


def fuse_predictions(predictions: Sequence[np.ndarray], fusion: Fusion = "od") -> np.ndarray:
    """Combine several RGB predictions of the same voxels: mean optical density or mean RGB.

    Examples
    --------
    >>> dark, light = np.array([[15]], np.uint8), np.array([[255]], np.uint8)
    >>> int(fuse_predictions([dark, light], "od")[0, 0]), int(fuse_predictions([dark, light], "rgb")[0, 0])
    (63, 135)
    """
    if fusion == "od":
        return from_optical_density(np.mean([optical_density(p, offset=1.0) for p in predictions], axis=0), offset=1.0)
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
    depth, height, width = source.shape
    scratch = Path(tempfile.mkdtemp(prefix=".vstain-fuse-", dir=scratch_dir))
    stores: list[RawStore] = []
    try:
        ct_y = RawStore(scratch / "ct_y.raw", (height, depth, width), np.float32)
        ct_x = RawStore(scratch / "ct_x.raw", (width, depth, height), np.float32)
        rgb_z = RawStore(scratch / "rgb_z.raw", (depth, height, width, 3), np.uint8)
        rgb_y = RawStore(scratch / "rgb_y.raw", (height, depth, width, 3), np.uint8)
        rgb_x = RawStore(scratch / "rgb_x.raw", (width, depth, height, 3), np.uint8)
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
    outside: Callable[[int], np.ndarray] | None = None,
    ngff_version: str = "0.4",
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
    outside : callable, optional
        ``outside(z)``: the voxels of slice ``z`` that hold no data (outside a reconstruction's
        field of view, :class:`vstain.normalise.FieldOfViewVolume`); written black (0, 0, 0),
        the fill stitching software leaves where there is no image.
    ngff_version : {"0.4", "0.5"}
        OME-NGFF version of a ``.zarr`` output (0.4: Zarr format 2, what most viewers read; 0.5: Zarr format 3).

    Returns
    -------
    Path
        ``output``, complete.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from vstain.volume_io import ArrayVolume
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
    written = slices if outside is None else _blank_outside(slices, outside)
    try:
        zarr_options = {"version": ngff_version} if output.suffix.lower() == ".zarr" else {}
        write_rgb_volume(output, written, source.shape, source.voxel_size_um, metadata=meta, overwrite=overwrite,
                         **zarr_options)
    finally:
        written.close()
        slices.close()
    return output


def _blank_outside(slices: Iterator[np.ndarray], outside: Callable[[int], np.ndarray]) -> Iterator[np.ndarray]:
    """The stained slices with the voxels ``outside(z)`` set to black (no data)."""
    for z, rgb in enumerate(slices):
        rgb = np.array(rgb, copy=True)
        rgb[np.asarray(outside(z), bool)] = 0
        yield rgb


# --------------------------------------------------------------------------- analysis and views


def volume_sample(roles: dict[str, str], stains: dict[str, str], stain: str = "toluidine_blue") -> str:
    """The pair whose CT volume the 3D study stains: the first held-out test pair of ``stain``.

    A test pair was never seen in training. Pairs are taken in sorted id order (not in the order of
    a split file), so the choice depends on the pairs alone; the first test pair of any stain stands
    in when none has ``stain``, and the first pair of all when the fold has no test pair.

    Parameters
    ----------
    roles : dict
        ``pair_id -> role`` (train / validation / test) of one fold.
    stains : dict
        ``pair_id -> stain`` of (at least) the same pairs.
    stain : str
        The stain the volume is stained in.

    Returns
    -------
    str
        The chosen pair id.

    Examples
    --------
    >>> roles = {"tb_2": "test", "he_1": "test", "tb_1": "train", "tb_3": "test"}
    >>> stains = {"tb_2": "toluidine_blue", "he_1": "he", "tb_1": "toluidine_blue", "tb_3": "toluidine_blue"}
    >>> volume_sample(roles, stains)
    'tb_2'
    >>> volume_sample(roles, stains, "he")
    'he_1'
    """
    if not roles:
        raise ValueError("no pairs to choose the volume's sample from")
    missing = sorted(set(roles) - set(stains))
    if missing:
        raise ValueError(f"no stain given for pairs {missing}")
    candidates = sorted(pid for pid, role in roles.items() if role == "test") or sorted(roles)
    return ([pid for pid in candidates if stains[pid] == stain] or candidates)[0]


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
    if not os.environ.get("DISPLAY"):
        # without an X server VTK tries X first and logs "bad X server connection": go to EGL directly
        os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
    try:
        import pyvista as pv  # VTK is heavy and needs OpenGL/EGL: imported only to render
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
