"""Whole-slide inference by overlapping patches (paper 2.9, Fig. 4b, S1).

The generators are trained on patches (paper: 256 px), so a whole slide is stained
by sliding the patch window across it with a step (paper: 64 px), running the
generator on each patch, and blending the overlapping outputs back together:

* ``mean``: the paper's plain average of all overlapping patch outputs;
* ``window``: a weighted average in which each patch's weight falls smoothly
  towards its edges (a raised Hann window with a small floor). Patch edges are
  where the generator sees the least context, so down-weighting them removes the
  tiling steps the paper observed in masked-out background.

The slide is padded by reflection by ``patch_size - step`` on every side (plus
what the last step needs), so that every pixel of the slide, edges included, is
covered by the same number of patches. With uniform coverage the raised Hann
windows sum to a constant, and an identity network reproduces its input exactly
with either blend.

Memory is bounded by one batch of patches and the output arrays: patch origins
are generated lazily and patch outputs are accumulated at once into a weighted sum
and a weight array, never stored.

Examples
--------
>>> import numpy as np, torch
>>> image = np.random.default_rng(0).uniform(-1, 1, (50, 70, 3)).astype(np.float32)
>>> out = infer_slide(torch.nn.Identity(), image, patch_size=32, step=8, batch_size=4, blend="window")
>>> bool(np.array_equal(out, image))
True
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import math
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Sequence

import numpy as np
import torch
from tqdm import tqdm  # plain text bars: the same in a terminal, a log and a notebook

Blend = Literal["mean", "window"]
BLENDS = ("mean", "window")
DIRECTIONS = ("ct_to_histology", "histology_to_ct")
WINDOW_FLOOR = 0.05  # the smallest weight of a patch's edge pixels (keeps every weight positive)

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- tiling


@dataclasses.dataclass(frozen=True)
class TileGrid:
    """Where the patches of an overlapping tiling lie.

    Attributes
    ----------
    shape : (int, int)
        The slide's ``(Y, X)``.
    patch_size, step : int
        Patch side and stride in pixels.
    pad_before : (int, int)
        Reflection padding before the slide along ``(Y, X)``.
    pad_after : (int, int)
        Reflection padding after the slide along ``(Y, X)``.
    origins_y, origins_x : tuple of int
        Patch origins (top-left corners) along each axis, in padded coordinates.
    """

    shape: tuple[int, int]
    patch_size: int
    step: int
    pad_before: tuple[int, int]
    pad_after: tuple[int, int]
    origins_y: tuple[int, ...]
    origins_x: tuple[int, ...]

    @property
    def n_patches(self) -> int:
        """The number of patches of the tiling."""
        return len(self.origins_y) * len(self.origins_x)

    @property
    def padded_shape(self) -> tuple[int, int]:
        """The ``(Y, X)`` of the padded slide."""
        return tuple(s + b + a for s, b, a in zip(self.shape, self.pad_before, self.pad_after))

    def origins(self) -> Iterator[tuple[int, int]]:
        """Patch origins ``(y, x)`` in padded coordinates, row by row, generated lazily."""
        for y in self.origins_y:
            for x in self.origins_x:
                yield y, x

    def border_lines(self, axis: int) -> np.ndarray:
        """Slide coordinates ``j`` along ``axis`` where a patch edge lies between pixels ``j-1`` and ``j``."""
        origins = np.asarray(self.origins_y if axis == 0 else self.origins_x)
        edges = np.concatenate([origins, origins + self.patch_size]) - self.pad_before[axis]
        edges = np.unique(edges)
        return edges[(edges > 0) & (edges < self.shape[axis])]


def _axis_tiling(size: int, patch_size: int, step: int) -> tuple[int, int, tuple[int, ...]]:
    margin = patch_size - step
    covered = size + 2 * margin
    n = max(1, math.ceil((covered - patch_size) / step) + 1)
    pad_after = margin + (n - 1) * step + patch_size - covered
    origins = tuple(i * step for i in range(n))
    return margin, pad_after, origins


def tile_grid(shape: Sequence[int], patch_size: int, step: int) -> TileGrid:
    """The overlapping tiling of a slide of ``shape`` by patches of ``patch_size`` every ``step`` pixels.

    Parameters
    ----------
    shape : (int, int)
        The slide's ``(Y, X)``; each side at least ``patch_size``.
    patch_size : int
        Patch side in pixels (paper: 256).
    step : int
        Stride in pixels, ``1 <= step <= patch_size`` (paper: 64).

    Returns
    -------
    TileGrid

    Raises
    ------
    ValueError
        If the slide is smaller than one patch or the step is not in ``[1, patch_size]``.

    Examples
    --------
    >>> grid = tile_grid((100, 64), patch_size=32, step=16)
    >>> grid.pad_before, grid.n_patches
    ((16, 16), 40)
    """
    shape = tuple(int(s) for s in shape[:2])
    _check_tiling(shape, patch_size, step)
    per_axis = [_axis_tiling(s, patch_size, step) for s in shape]
    return TileGrid(
        shape=shape,
        patch_size=patch_size,
        step=step,
        pad_before=(per_axis[0][0], per_axis[1][0]),
        pad_after=(per_axis[0][1], per_axis[1][1]),
        origins_y=per_axis[0][2],
        origins_x=per_axis[1][2],
    )


def _check_tiling(shape: tuple[int, ...], patch_size: int, step: int) -> None:
    if isinstance(patch_size, bool) or not isinstance(patch_size, (int, np.integer)) or patch_size < 1:
        raise ValueError(f"patch_size must be a positive integer, got {patch_size!r}")
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 1:
        raise ValueError(f"step must be a positive integer, got {step!r}")
    if step > patch_size:
        raise ValueError(
            f"step {step} is larger than patch_size {patch_size}: pixels between patches would never be stained"
        )
    if min(shape) < patch_size:
        raise ValueError(f"slide of shape {shape} is smaller than one patch (patch_size {patch_size})")


def blend_weights(patch_size: int, blend: Blend, floor: float = WINDOW_FLOOR) -> np.ndarray:
    """The ``(patch_size, patch_size)`` weight of one patch's pixels.

    ``mean`` gives equal weights (the paper's plain average). ``window`` gives a raised
    Hann window ``floor + (1 - floor) * sin^2(pi (i + 1/2) / P)`` per axis (outer product),
    which falls from 1 at the patch centre to ``floor`` at its edges.

    Examples
    --------
    >>> w = blend_weights(8, "window")
    >>> bool(w[4, 4] > 0.9 > 0.1 > w[0, 0] > 0)
    True
    >>> float(blend_weights(8, "mean").min())
    1.0
    """
    if blend not in BLENDS:
        raise ValueError(f"blend must be one of {list(BLENDS)}, got {blend!r}")
    if blend == "mean":
        return np.ones((patch_size, patch_size), np.float64)
    if not 0 < floor <= 1:
        raise ValueError(f"window floor must be in (0, 1], got {floor!r}")
    centres = (np.arange(patch_size) + 0.5) / patch_size
    profile = floor + (1.0 - floor) * np.sin(np.pi * centres) ** 2
    return np.outer(profile, profile)


# --------------------------------------------------------------------------- inference


def _check_image(image: np.ndarray, name: str = "image") -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3:
        raise ValueError(f"{name} must be (Y, X) or (Y, X, C), got shape {image.shape}")
    if not np.issubdtype(image.dtype, np.floating):
        raise ValueError(f"{name} must be a float array in network range [-1, 1], got dtype {image.dtype}")
    if not np.all(np.isfinite(image)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return image.astype(np.float32, copy=False)


def infer_slide(
    generator: Callable[[torch.Tensor], torch.Tensor],
    image: np.ndarray,
    *,
    patch_size: int,
    step: int,
    batch_size: int,
    blend: Blend = "mean",
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    in_channels: int | None = None,
    window_floor: float = WINDOW_FLOOR,
    progress: bool = False,
) -> np.ndarray:
    """Run ``generator`` over a whole slide by overlapping patches and blend the outputs.

    Parameters
    ----------
    generator : torch.nn.Module or callable
        Maps a ``(B, C_in, P, P)`` tensor in network range to ``(B, C_out, P, P)``.
    image : ndarray
        ``(Y, X)`` or ``(Y, X, C)`` float slide in network range ``[-1, 1]``; each side at
        least ``patch_size``.
    patch_size, step : int
        Patch side and stride in pixels (paper: 256 and 64); ``step <= patch_size``.
    batch_size : int
        Patches per forward pass; with the output arrays this bounds the memory.
    blend : {"mean", "window"}
        ``mean``: plain average of overlapping patches (the paper); ``window``: a raised
        Hann weight falling towards patch edges, which removes tile seams.
    device : str or torch.device
        Where the generator runs.
    dtype : torch.dtype
        ``torch.float32``, or ``torch.bfloat16`` to run the forwards under autocast.
    in_channels : int, optional
        Repeat a single-channel slide to this many channels (CT enters the CycleGAN
        generators as 3 identical channels).
    window_floor : float
        Edge weight of the ``window`` blend.
    progress : bool
        Show a tqdm bar over batches.

    Returns
    -------
    ndarray
        ``(Y, X, C_out)`` float32 in network range.

    Raises
    ------
    ValueError
        For a slide smaller than a patch, a step larger than the patch, a non-float or
        non-finite slide, a wrong channel count or an unknown blend.

    Examples
    --------
    >>> import numpy as np, torch
    >>> slide = np.zeros((40, 40), np.float32)
    >>> infer_slide(torch.nn.Identity(), slide, patch_size=16, step=8, batch_size=8, in_channels=3).shape
    (40, 40, 3)
    """
    image = _check_image(image)
    if in_channels is not None and image.shape[-1] != in_channels:
        if image.shape[-1] != 1:
            raise ValueError(f"image has {image.shape[-1]} channels, the generator expects {in_channels}")
        image = np.repeat(image, in_channels, axis=-1)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if dtype not in (torch.float32, torch.bfloat16):
        raise ValueError(f"dtype must be torch.float32 or torch.bfloat16, got {dtype}")
    grid = tile_grid(image.shape[:2], patch_size, step)
    weights = blend_weights(patch_size, blend, window_floor)
    (pb_y, pb_x), (pa_y, pa_x) = grid.pad_before, grid.pad_after
    padded = np.pad(image, ((pb_y, pa_y), (pb_x, pa_x), (0, 0)), mode="reflect")
    device = torch.device(device)

    # float64 accumulators: the blended value of identical inputs rounds back to the input exactly.
    weighted_sum: np.ndarray | None = None
    weight_sum = np.zeros(grid.padded_shape, np.float64)
    origins = grid.origins()
    n_batches = math.ceil(grid.n_patches / batch_size)
    was_training = getattr(generator, "training", False)
    if isinstance(generator, torch.nn.Module):
        generator.eval()
    try:
        with torch.inference_mode():
            for _ in tqdm(range(n_batches), desc="patches", unit="batch", disable=not progress, leave=False):
                batch_origins = [o for _, o in zip(range(batch_size), origins)]
                batch = np.stack([padded[y:y + patch_size, x:x + patch_size] for y, x in batch_origins])
                tensor = torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2))).to(device)
                if dtype == torch.bfloat16:
                    with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
                        output = generator(tensor)
                else:
                    output = generator(tensor)
                output = output.float().cpu().numpy()
                if output.ndim != 4 or output.shape[0] != len(batch_origins) or output.shape[2:] != (
                    patch_size, patch_size
                ):
                    raise ValueError(
                        f"generator returned shape {tuple(output.shape)} for input {tuple(tensor.shape)}; "
                        "expected (B, C, patch_size, patch_size)"
                    )
                if weighted_sum is None:
                    weighted_sum = np.zeros(grid.padded_shape + (output.shape[1],), np.float64)
                for (y, x), patch in zip(batch_origins, output):
                    weighted_sum[y:y + patch_size, x:x + patch_size] += patch.transpose(1, 2, 0) * weights[..., None]
                    weight_sum[y:y + patch_size, x:x + patch_size] += weights
    finally:
        if isinstance(generator, torch.nn.Module) and was_training:
            generator.train()
    assert weighted_sum is not None  # at least one patch: the slide is at least one patch
    inner = (slice(pb_y, pb_y + grid.shape[0]), slice(pb_x, pb_x + grid.shape[1]))
    blended = weighted_sum[inner]
    blended /= weight_sum[inner][..., None]  # in place: no second float64 copy of the slide
    return blended.astype(np.float32)


# --------------------------------------------------------------------------- masks and seams


def apply_mask(image: np.ndarray, mask: np.ndarray, fill: float | Sequence[float]) -> np.ndarray:
    """Replace the pixels outside ``mask`` by ``fill`` (paper 2.8: the mean background value).

    Examples
    --------
    >>> import numpy as np
    >>> apply_mask(np.full((2, 2, 3), 9, np.uint8), np.eye(2, dtype=bool), (1, 2, 3))[0, 1].tolist()
    [1, 2, 3]
    """
    image = np.asarray(image)
    mask = np.asarray(mask, bool)
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} does not match image shape {image.shape[:2]}")
    out = image.copy()
    out[~mask] = np.asarray(fill, dtype=np.float64).round().astype(image.dtype) if np.issubdtype(
        image.dtype, np.integer) else np.asarray(fill, dtype=image.dtype)
    return out


def background_fill(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The mean value (per channel) of ``image`` outside ``mask``; the whole image's mean if all is mask.

    Examples
    --------
    >>> import numpy as np
    >>> image = np.array([[0, 10], [20, 30]], np.uint16)
    >>> background_fill(image, np.array([[True, False], [False, True]])).tolist()
    15.0
    """
    image = np.asarray(image, np.float64)
    mask = np.asarray(mask, bool)
    outside = image[~mask] if (~mask).any() else image.reshape(-1, *image.shape[2:])
    return outside.mean(axis=0)


def seam_score(image: np.ndarray, grid: TileGrid, region: np.ndarray | None = None) -> float:
    """How visible tile borders are: mean step across tile borders / mean step inside tiles.

    A seam is a step that runs along a tile border: the signed difference between
    neighbouring pixels (mean over channels) across a border line is averaged over
    segments of ``grid.step`` pixels along the line, which keeps the steps (constant
    along a patch edge) and averages away texture and noise. The mean absolute
    segment step on the border lines of ``grid`` is divided by the same on the lines
    half a step away from each border (inside tiles, and at the same phase of any
    periodic texture of the generator). A seamless image scores about 1, tiling steps
    raise it.

    Parameters
    ----------
    image : ndarray
        ``(Y, X)`` or ``(Y, X, C)`` blended output.
    grid : TileGrid
        The tiling that produced it (:func:`tile_grid`).
    region : ndarray of bool, optional
        Only differences between two pixels inside ``region`` count (e.g. ``~mask``:
        the masked-out background, where the paper saw tiling steps); a segment needs
        at least half of its pixels in the region.

    Returns
    -------
    float
        NaN when the region holds no border or no interior segment.

    Examples
    --------
    >>> import numpy as np
    >>> grid = tile_grid((64, 64), 32, 16)
    >>> steps = np.zeros((64, 64)); steps[:, 32:] += 1.0   # a step on a tile border
    >>> steps += np.random.default_rng(0).normal(0, 0.1, steps.shape)
    >>> bool(seam_score(steps, grid) > 2)
    True
    """
    image = np.asarray(image, np.float64)
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[:2] != grid.shape:
        raise ValueError(f"image shape {image.shape[:2]} does not match the tiling's {grid.shape}")
    region = np.ones(grid.shape, bool) if region is None else np.asarray(region, bool)
    if region.shape != grid.shape:
        raise ValueError(f"region shape {region.shape} does not match image shape {grid.shape}")
    grey = image.mean(axis=-1)
    sums = {"border": [0.0, 0], "inner": [0.0, 0]}
    for axis in (0, 1):
        # rows of ``diff`` are lines across which the difference is taken (pixel j-1 to j at index j-1)
        diff = np.diff(grey, axis=axis)
        valid = region[:-1] & region[1:] if axis == 0 else region[:, :-1] & region[:, 1:]
        if axis == 1:
            diff, valid = diff.T, valid.T
        borders = grid.border_lines(axis)
        halfway = borders + grid.step // 2
        halfway = halfway[(halfway > 0) & (halfway < grid.shape[axis]) & ~np.isin(halfway, borders)]
        n_along = diff.shape[1]
        for kind, lines in (("border", borders), ("inner", halfway)):
            for line in lines:
                for start in range(0, n_along, grid.step):
                    seg_valid = valid[line - 1, start:start + grid.step]
                    if seg_valid.sum() * 2 < len(seg_valid) or not seg_valid.any():
                        continue
                    sums[kind][0] += abs(diff[line - 1, start:start + grid.step][seg_valid].mean())
                    sums[kind][1] += 1
    (b_sum, b_n), (i_sum, i_n) = sums["border"], sums["inner"]
    if b_n == 0 or i_n == 0 or i_sum == 0:
        return float("nan")
    return float((b_sum / b_n) / (i_sum / i_n))


# --------------------------------------------------------------------------- slides in image units


def _generator_channels(info: dict[str, Any] | None, default: int = 3) -> int:
    info = info or {}
    for key in ("input_nc", "in_channels"):
        if key in info:
            return int(info[key])
    return default


def ct_network_channels_last(ct: np.ndarray, *, invert: bool = False, channels: int = 3) -> np.ndarray:
    """A ``(Y, X)`` CT slice in network range as ``(Y, X, channels)`` float32 (identical channels).

    Uses :func:`vstain.data.ct_to_network` (the mapping the generators were trained with).

    Examples
    --------
    >>> import numpy as np
    >>> ct_network_channels_last(np.array([[0, 65535]], np.uint16)).tolist()
    [[[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]]
    """
    from vstain.data import ct_to_network

    ct = np.asarray(ct)
    net = np.asarray(ct_to_network(ct, invert=invert), np.float32)
    if net.shape == ct.shape:
        net = net[..., None]
    elif net.ndim == ct.ndim + 1 and net.shape[-3] in (1, 3):  # channel-first (..., C, Y, X)
        net = np.moveaxis(net, -3, -1)
    else:
        raise ValueError(f"ct_to_network returned shape {net.shape} for a CT slice of shape {ct.shape}")
    return np.repeat(net[..., :1], channels, axis=-1)


def ct_to_histology_slide(
    generator: Callable[[torch.Tensor], torch.Tensor],
    ct: np.ndarray,
    *,
    patch_size: int,
    step: int,
    batch_size: int,
    blend: Blend = "mean",
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    info: dict[str, Any] | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Stain a whole CT slice: uint16 (normalised) CT in, uint8 RGB generated histology out.

    The CT is mapped to network range with :func:`vstain.data.ct_to_network` (inverted
    when the generator's ``info`` says ``invert_ct``, as for the standard CycleGAN with
    inverted CT), repeated to the generator's input channels, tiled with
    :func:`infer_slide` and mapped back with :func:`vstain.data.network_to_histology`.

    Parameters
    ----------
    generator : callable
        The CT-to-histology generator.
    ct : ndarray
        ``(Y, X)`` CT slice, uint16 or float, each side at least ``patch_size``.
    patch_size, step, batch_size, blend, device, dtype, progress
        As :func:`infer_slide`.
    info : dict, optional
        The generator's description from :func:`vstain.train.load_generator`
        (``input_nc``, ``invert_ct``).

    Returns
    -------
    ndarray
        ``(Y, X, 3)`` uint8 generated histology.

    Examples
    --------
    >>> import numpy as np, torch
    >>> ct = np.full((32, 32), 30000, np.uint16)
    >>> ct_to_histology_slide(torch.nn.Identity(), ct, patch_size=16, step=8, batch_size=4).shape
    (32, 32, 3)
    """
    from vstain.data import network_to_histology

    ct = np.asarray(ct)
    if ct.ndim != 2:
        raise ValueError(f"ct must be a single-channel (Y, X) slice, got shape {ct.shape}")
    if np.issubdtype(ct.dtype, np.floating) and not np.all(np.isfinite(ct)):
        raise ValueError("ct contains NaN or infinite values")
    invert = bool((info or {}).get("invert_ct", False))
    channels = _generator_channels(info)
    network = ct_network_channels_last(ct, invert=invert, channels=channels)
    out = infer_slide(generator, network, patch_size=patch_size, step=step, batch_size=batch_size, blend=blend,
                      device=device, dtype=dtype, in_channels=channels, progress=progress)
    if out.shape[-1] != 3:
        raise ValueError(f"the CT-to-histology generator returned {out.shape[-1]} channels, expected 3 (RGB)")
    return np.asarray(network_to_histology(np.moveaxis(out, -1, 0)), np.uint8)


def histology_to_ct_slide(
    generator: Callable[[torch.Tensor], torch.Tensor],
    histology: np.ndarray,
    *,
    patch_size: int,
    step: int,
    batch_size: int,
    blend: Blend = "mean",
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    info: dict[str, Any] | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Generate CT from a whole histology image: uint8 RGB in, uint16 CT out.

    The generated CT is RGB in network range (the greyscale loss, Eq. 6, pulls its
    channels together); the slice written is the mean of its channels, mapped back with
    :func:`vstain.data.network_to_ct`.

    Examples
    --------
    >>> import numpy as np, torch
    >>> rgb = np.full((32, 40, 3), 200, np.uint8)
    >>> histology_to_ct_slide(torch.nn.Identity(), rgb, patch_size=16, step=8, batch_size=4).dtype
    dtype('uint16')
    """
    from vstain.data import histology_to_network, network_to_ct

    histology = np.asarray(histology)
    if histology.ndim != 3 or histology.shape[-1] != 3:
        raise ValueError(f"histology must be (Y, X, 3) RGB, got shape {histology.shape}")
    if histology.dtype != np.uint8:
        raise ValueError(f"histology must be uint8 RGB, got dtype {histology.dtype}")
    network = np.moveaxis(np.asarray(histology_to_network(histology), np.float32), 0, -1)  # (Y, X, 3)
    out = infer_slide(generator, network, patch_size=patch_size, step=step, batch_size=batch_size, blend=blend,
                      device=device, dtype=dtype, in_channels=None, progress=progress)
    if out.shape[-1] == 1:
        out = np.repeat(out, 3, axis=-1)
    if out.shape[-1] != 3:
        raise ValueError(f"the histology-to-CT generator returned {out.shape[-1]} channels, expected 3")
    invert = bool((info or {}).get("invert_ct", False))
    return np.asarray(network_to_ct(np.moveaxis(out, -1, 0), invert=invert), np.uint16)


# --------------------------------------------------------------------------- the stage


MODELS_WITHOUT_REVERSE = ("pix2pix",)  # Pix2Pix has one generator: no generated CT (paper 3.1)


def _as_profile(profile: Any) -> Any:
    from vstain.config import load_profile

    return load_profile(profile) if isinstance(profile, (str, Path)) else profile


def resolve_device(device: str) -> str:
    """The torch device of a profile's ``device`` (``auto``: CUDA when present, else CPU)."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("profile device is 'cuda' but no CUDA device is available (set device: cpu or auto)")
    return device


def file_sha256(path: str | Path) -> str:
    """SHA-256 hex digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def inference_dir(profile_name: str, model: str, fold: int, root: str | Path | None = None) -> Path:
    """``results/<profile>/inference/<model>/fold<k>/``."""
    from vstain.layout import stage_dir

    return stage_dir(profile_name, "inference", root) / model / f"fold{fold}"


def registered_pair_ids(profile_name: str, stain: str | None = "toluidine_blue") -> list[str]:
    """The complete registered pairs of a profile (``pair.json`` present), optionally of one stain."""
    from vstain.layout import stage_dir

    folder = stage_dir(profile_name, "registered")
    ids = []
    for meta in sorted(folder.glob("*/pair.json")):
        if stain is None or json.loads(meta.read_text()).get("stain") == stain:
            ids.append(meta.parent.name)
    return ids


def split_roles(profile_name: str, fold: int) -> dict[str, str]:
    """``pair_id -> role`` (train / validation / test) of one fold from ``dataset/split.csv``."""
    from vstain.layout import stage_dir

    path = stage_dir(profile_name, "dataset") / "split.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: split not found (generate the dataset first: vstain phantom)")
    try:
        from vstain.manifest import read_split

        split = read_split(path)
    except ImportError:  # the manifest module is optional for reading a plain CSV
        import pandas as pd

        split = pd.read_csv(path)
    column = f"fold{fold}"
    if column not in split.columns:
        raise ValueError(f"{path}: no column {column!r} (the split has {[c for c in split.columns if c.startswith('fold')]})")
    return dict(zip(split["pair_id"].astype(str), split[column].astype(str)))


def _prepare_registered_pairs(profile: Any, stain: str, progress: bool) -> None:
    """Run the (idempotent) registration stage so that the registered pairs exist."""
    try:
        from vstain.prepare import prepare_registered_pairs
    except ImportError:
        from vstain.registration import prepare_registered_pairs
    prepare_registered_pairs(profile, stain=stain, progress=progress)


def _checkpoint_from(result: Any, profile_name: str, model: str, fold: int) -> Path:
    """The checkpoint used for inference: ``last.pt`` of a run folder (the generators after the last epoch)."""
    if isinstance(result, (str, Path)):
        path = Path(result)
        return path / "last.pt" if path.is_dir() else path
    for attr in ("checkpoint", "checkpoint_path", "path"):
        if hasattr(result, attr):
            return Path(getattr(result, attr))
    if isinstance(result, dict):
        for key in ("checkpoint", "checkpoint_path", "path"):
            if key in result:
                return Path(result[key])
    from vstain.layout import stage_dir

    return stage_dir(profile_name, "models") / model / f"fold{fold}" / "last.pt"


def load_generators(checkpoint: str | Path, model: str) -> dict[str, tuple[torch.nn.Module, dict]]:
    """The generators of a checkpoint by direction, checked against the expected ``model``.

    Raises
    ------
    FileNotFoundError
        If the checkpoint file is missing.
    ValueError
        If the checkpoint belongs to another model.
    """
    from vstain.train import load_generator

    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"{checkpoint}: checkpoint not found (train it: vstain train --model {model})")
    directions = DIRECTIONS[:1] if model in MODELS_WITHOUT_REVERSE else DIRECTIONS
    generators = {}
    for direction in directions:
        generator, info = load_generator(checkpoint, direction=direction)
        found = (info or {}).get("model")
        if found is not None and found != model:
            raise ValueError(f"{checkpoint}: checkpoint of model {found!r}, expected {model!r} (field 'model')")
        generators[direction] = (generator, dict(info or {}))
    return generators


def run_inference(
    profile: Any,
    model: str,
    fold: int,
    *,
    blend: Blend | None = None,
    stain: str = "toluidine_blue",
    pair_ids: Sequence[str] | None = None,
    checkpoint: str | Path | None = None,
    out_dir: str | Path | None = None,
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Stage driver: stain every registered pair with one trained model (idempotent).

    For each pair, writes into ``results/<profile>/inference/<model>/fold<k>/<pair_id>/``:
    ``histology.tif`` (generated histology, uint8 RGB), ``ct.tif`` (generated CT, uint16;
    not for Pix2Pix), their ``*_masked.tif`` versions (outside the correspondence mask:
    the real image's mean background value, paper 2.8), all with the pixel size, and
    ``inference.json`` (settings, fill values, split role, provenance), written last.
    ``done.json`` in the fold folder marks the whole run complete. Pairs whose
    ``inference.json`` records the same settings and checkpoint are not recomputed.

    Parameters
    ----------
    profile : str or Profile
        Profile name or loaded profile; patch size, step, batch size and blend come
        from ``profile.inference``.
    model : str
        Model name (``mod_cyclegan``, ``cyclegan``, ``cyclegan_invct``, ``pix2pix``).
    fold : int
        Cross-validation fold.
    blend : {"mean", "window"}, optional
        Overrides ``profile.inference.blend``.
    stain : str
        Which registered pairs to stain.
    pair_ids : sequence of str, optional
        Only these pairs (default: all registered pairs of ``stain``).
    checkpoint : str or Path, optional
        Use this checkpoint instead of training / finding the model's.
    out_dir : str or Path, optional
        Instead of ``results/<profile>/inference/<model>/fold<k>/``.
    force : bool
        Recompute even when up to date.
    progress : bool
        Show progress bars.

    Returns
    -------
    Path
        The fold folder holding the pair folders and ``done.json``.
    """
    from vstain.io import provenance, write_json, write_tiff
    from vstain.pairs import read_registered_pair

    profile = _as_profile(profile)
    cfg = profile.inference
    blend = cfg.blend if blend is None else blend
    if blend not in BLENDS:
        raise ValueError(f"blend must be one of {list(BLENDS)}, got {blend!r}")
    _check_tiling((cfg.patch_size, cfg.patch_size), cfg.patch_size, cfg.step)
    if checkpoint is None:
        from vstain.train import ensure_trained

        _prepare_registered_pairs(profile, stain, progress)
        checkpoint = _checkpoint_from(ensure_trained(profile, model, fold, stain, progress=progress),
                                      profile.name, model, fold)
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"{checkpoint}: checkpoint not found (train it: vstain train --model {model})")
    out = Path(out_dir) if out_dir is not None else inference_dir(profile.name, model, fold)
    ids = list(pair_ids) if pair_ids is not None else registered_pair_ids(profile.name, stain)
    if not ids:
        raise FileNotFoundError(f"no registered {stain} pairs under results/{profile.name}/registered/ "
                                "(run the registration stage first: vstain register)")
    try:
        roles = split_roles(profile.name, fold)
    except FileNotFoundError:
        roles = {}
    settings = {
        "model": model, "fold": fold, "blend": blend, "patch_size": cfg.patch_size, "step": cfg.step,
        "checkpoint": str(checkpoint), "checkpoint_sha256": file_sha256(checkpoint),
    }
    from vstain.layout import stage_dir

    registered = stage_dir(profile.name, "registered")
    inputs = {pid: registered_fingerprint(registered / pid) for pid in ids}
    done_path = out / "done.json"
    if not force and done_path.is_file():
        done = json.loads(done_path.read_text())
        if done.get("settings") == settings and done.get("inputs") == inputs and all(
            _pair_up_to_date(out / pid, settings, inputs[pid]) for pid in ids
        ):
            return out

    done_path.unlink(missing_ok=True)  # the run is complete again only when every pair is
    device = resolve_device(profile.device)
    generators = load_generators(checkpoint, model)
    for generator, _ in generators.values():
        generator.to(device)
    for pair_id in tqdm(ids, desc=f"infer {model} fold{fold}", unit="pair", disable=not progress):
        folder = out / pair_id
        if not force and _pair_up_to_date(folder, settings, inputs[pair_id]):
            continue
        pair = read_registered_pair(registered / pair_id)
        tiling = dict(patch_size=cfg.patch_size, step=cfg.step, batch_size=cfg.batch_size, blend=blend, device=device)
        record = provenance(profile, **settings, pair_id=pair_id, material=pair.material, stain=pair.stain,
                            role=roles.get(pair_id, "unknown"), pixel_size_um=pair.pixel_size_um)
        # inference.json goes first out of the way: a pair folder without it is incomplete.
        (folder / "inference.json").unlink(missing_ok=True)
        forward, info = generators["ct_to_histology"]
        try:
            histology = ct_to_histology_slide(forward, pair.ct, info=info, **tiling)
        except ValueError as err:
            raise ValueError(f"pair {pair_id}: {err}") from err
        histology_fill = background_fill(pair.histology, pair.mask)
        write_tiff(folder / "histology.tif", histology, pair.pixel_size_um, metadata=record)
        write_tiff(folder / "histology_masked.tif", apply_mask(histology, pair.mask, histology_fill),
                   pair.pixel_size_um, metadata=record)
        files = ["histology.tif", "histology_masked.tif"]
        ct_fill = background_fill(pair.ct, pair.mask)
        if "histology_to_ct" in generators:
            reverse, rinfo = generators["histology_to_ct"]
            try:
                ct = histology_to_ct_slide(reverse, pair.histology, info=rinfo, **tiling)
            except ValueError as err:
                raise ValueError(f"pair {pair_id}: {err}") from err
            write_tiff(folder / "ct.tif", ct, pair.pixel_size_um, metadata=record)
            write_tiff(folder / "ct_masked.tif", apply_mask(ct, pair.mask, ct_fill), pair.pixel_size_um,
                       metadata=record)
            files += ["ct.tif", "ct_masked.tif"]
        write_json(folder / "inference.json", {
            **record, "settings": settings, "input": inputs[pair_id], "files": files,
            "histology_fill": np.asarray(histology_fill).tolist(), "ct_fill": float(np.asarray(ct_fill)),
        })
    write_json(done_path, {"settings": settings, "pairs": ids, "inputs": inputs,
                           "provenance": provenance(profile, **settings)})
    return out


def registered_fingerprint(folder: str | Path) -> str:
    """SHA-256 over a registered pair's files: inference is redone when registration changes them."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for name in ("pair.json", "ct.tif", "histology.tif", "mask.tif"):
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"{path}: registered pair file not found (re-run the registration stage)")
        digest.update(name.encode())
        digest.update(bytes.fromhex(file_sha256(path)))
    return digest.hexdigest()


def _pair_up_to_date(folder: Path, settings: dict[str, Any], fingerprint: str) -> bool:
    meta = folder / "inference.json"
    if not meta.is_file():
        return False
    record = json.loads(meta.read_text())
    return (record.get("settings") == settings and record.get("input") == fingerprint
            and all((folder / f).is_file() for f in record.get("files", [])))


def read_inference(folder: str | Path) -> dict[str, Any]:
    """One pair's inference outputs: ``histology``, ``histology_masked``, ``ct``, ``ct_masked``
    (absent for Pix2Pix), ``pixel_size_um`` and the ``record`` of ``inference.json``."""
    from vstain.io import read_tiff

    folder = Path(folder)
    meta = folder / "inference.json"
    if not meta.is_file():
        raise FileNotFoundError(f"{meta}: not found (inference of this pair is missing or incomplete)")
    record = json.loads(meta.read_text())
    out: dict[str, Any] = {"record": record}
    for name in record.get("files", []):
        image, size, _ = read_tiff(folder / name)
        out[name.removesuffix(".tif")] = image
        out["pixel_size_um"] = float(size[-1])
    return out


# --------------------------------------------------------------------------- command line


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Options of ``vstain infer``."""
    parser.add_argument("--profile", default="quick", help="profile name or YAML path (default: quick)")
    parser.add_argument("--model", required=True, help="model name, e.g. mod_cyclegan")
    parser.add_argument("--fold", type=int, default=0, help="cross-validation fold (default: 0)")
    parser.add_argument("--blend", choices=BLENDS, default=None, help="override the profile's blend")
    parser.add_argument("--stain", default="toluidine_blue", help="which registered pairs (default: toluidine_blue)")
    parser.add_argument("--checkpoint", default=None, help="use this checkpoint instead of the trained model's")
    parser.add_argument("--force", action="store_true", help="recompute even when up to date")


def run_cli(args: argparse.Namespace) -> int:
    """Run ``vstain infer``."""
    out = run_inference(args.profile, args.model, args.fold, blend=args.blend, stain=args.stain,
                        checkpoint=args.checkpoint, force=args.force)
    print(out)
    return 0


# --------------------------------------------------------------------------- for the chapters


def pair_catalogue(profile_name: str, fold: int, stain: str = "toluidine_blue") -> "pd.DataFrame":
    """The registered pairs of a profile with their material and split role in ``fold``.

    Returns a DataFrame ``pair_id, material, stain, role, shape`` ordered by role
    (train, validation, test) and pair id.
    """
    import pandas as pd

    from vstain.layout import stage_dir

    roles = split_roles(profile_name, fold)
    registered = stage_dir(profile_name, "registered")
    rows = []
    for pair_id in registered_pair_ids(profile_name, stain):
        meta = json.loads((registered / pair_id / "pair.json").read_text())
        rows.append({"pair_id": pair_id, "material": meta.get("material"), "stain": meta.get("stain"),
                     "role": roles.get(pair_id, "unknown")})
    table = pd.DataFrame(rows, columns=["pair_id", "material", "stain", "role"])
    order = {"train": 0, "validation": 1, "test": 2}
    table["_r"] = table["role"].map(lambda r: order.get(r, 3))
    return table.sort_values(["_r", "pair_id"]).drop(columns="_r").reset_index(drop=True)


def compare_blends(
    profile: Any, model: str, fold: int, pair_id: str, *, checkpoint: str | Path | None = None
) -> dict[str, Any]:
    """Stain one pair with both blends and measure their seams (paper 3: tiling steps behind the mask).

    Returns
    -------
    dict
        ``"mean"`` and ``"window"``: the generated histology (uint8 RGB, unmasked);
        ``"grid"``: the :class:`TileGrid`; ``"pair"``: the registered pair;
        ``"scores"``: a DataFrame ``blend, region, seam_score`` for the regions
        ``whole slide``, ``inside mask`` and ``background`` (outside the mask).
    """
    import pandas as pd

    from vstain.layout import stage_dir
    from vstain.pairs import read_registered_pair

    profile = _as_profile(profile)
    cfg = profile.inference
    if checkpoint is None:
        from vstain.train import ensure_trained

        checkpoint = _checkpoint_from(ensure_trained(profile, model, fold), profile.name, model, fold)
    forward, info = load_generators(checkpoint, model)["ct_to_histology"]
    pair = read_registered_pair(stage_dir(profile.name, "registered") / pair_id)
    grid = tile_grid(pair.ct.shape, cfg.patch_size, cfg.step)
    network = ct_network_channels_last(pair.ct, invert=bool(info.get("invert_ct", False)),
                                       channels=_generator_channels(info))
    result: dict[str, Any] = {"grid": grid, "pair": pair}
    rows = []
    regions = {"whole slide": None, "inside mask": pair.mask, "background": ~pair.mask}
    for blend in BLENDS:
        # scored in network range: 8-bit rounding would hide steps smaller than a grey level
        stained = infer_slide(forward, network, patch_size=cfg.patch_size, step=cfg.step, batch_size=cfg.batch_size,
                              blend=blend, device=resolve_device(profile.device))
        from vstain.data import network_to_histology

        result[blend] = np.asarray(network_to_histology(np.moveaxis(stained, -1, 0)), np.uint8)
        for region_name, region in regions.items():
            rows.append({"blend": blend, "region": region_name, "seam_score": seam_score(stained, grid, region)})
    result["scores"] = pd.DataFrame(rows)
    return result
