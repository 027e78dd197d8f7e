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

The stage that stains every registered pair of a profile with a trained model is
:mod:`vstain.stages.infer`.

Examples
--------
>>> import numpy as np, torch
>>> image = np.random.default_rng(0).uniform(-1, 1, (50, 70, 3)).astype(np.float32)
>>> out = infer_slide(torch.nn.Identity(), image, patch_size=32, step=8, batch_size=4, blend="window")
>>> bool(np.array_equal(out, image))
True
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Iterator, Literal, Sequence

import numpy as np
import torch
from tqdm import tqdm  # plain text bars: the same in a terminal, a log and a notebook

from vstain.data import ct_to_network, histology_to_network, network_to_ct, network_to_histology

Blend = Literal["mean", "window"]
BLENDS = ("mean", "window")
WINDOW_FLOOR = 0.05  # the smallest weight of a patch's edge pixels (keeps every weight positive)


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
    check_tiling(shape, patch_size, step)
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


def check_tiling(shape: tuple[int, ...], patch_size: int, step: int) -> None:
    """Refuse a tiling whose patch size or step is not a positive integer, whose step exceeds the patch,
    or whose slide ``shape`` is smaller than one patch (a ValueError naming the parameter).

    Examples
    --------
    >>> check_tiling((64, 64), 32, 40)
    Traceback (most recent call last):
    ...
    ValueError: step 40 is larger than patch_size 32: pixels between patches would never be stained
    """
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
    progress: bool = False,
    spread_of: Callable[[np.ndarray], np.ndarray] | None = None,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Run ``generator`` over a whole slide by overlapping patches and blend the outputs.

    Parameters
    ----------
    generator : torch.nn.Module or callable
        Maps a ``(B, C_in, P, P)`` tensor in network range to ``(B, C_out, P, P)``.
    image : ndarray
        ``(Y, X)`` or ``(Y, X, C)`` float slide in network range ``[-1, 1]`` with the generator's
        input channels (CT enters the CycleGAN generators as 3 identical channels:
        :func:`ct_network_channels_last`); each side at least ``patch_size``.
    patch_size, step : int
        Patch side and stride in pixels (paper: 256 and 64); ``step <= patch_size``.
    batch_size : int
        Patches per forward pass; with the output arrays this bounds the memory.
    blend : {"mean", "window"}
        ``mean``: plain average of overlapping patches (the paper); ``window``: a raised
        Hann weight falling towards patch edges (to :data:`WINDOW_FLOOR`), which removes tile seams.
    device : str or torch.device
        Where the generator runs.
    dtype : torch.dtype
        ``torch.float32``, or ``torch.bfloat16`` (or ``torch.float16`` on CUDA) to run the forwards
        under autocast (:func:`inference_dtype` chooses).
    progress : bool
        Show a tqdm bar over batches.
    spread_of : callable, optional
        Also measure how much the overlapping patches disagree: ``spread_of`` maps one
        patch output ``(P, P, C_out)`` (network range) to the quantity whose spread is
        wanted (e.g. CIELAB colour, :func:`vstain.uncertainty.network_lab`);
        its per-pixel weighted first and second moments over every patch covering the
        pixel are accumulated with the blend's weights.

    Returns
    -------
    ndarray
        ``(Y, X, C_out)`` float32 in network range.
    spread : ndarray
        Only with ``spread_of``: ``(Y, X, C)`` float32, the per-pixel weighted standard
        deviation of ``spread_of`` over the overlapping patches (0 where they agree).

    Raises
    ------
    ValueError
        For a slide smaller than a patch, a step larger than the patch, a non-float or
        non-finite slide, a generator output of the wrong shape or an unknown blend.

    Examples
    --------
    >>> import numpy as np, torch
    >>> slide = np.zeros((40, 40, 3), np.float32)
    >>> infer_slide(torch.nn.Identity(), slide, patch_size=16, step=8, batch_size=8).shape
    (40, 40, 3)
    """
    image = _check_image(image)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    device = torch.device(device)
    if dtype not in (torch.float32, torch.bfloat16) and not (dtype == torch.float16 and device.type == "cuda"):
        raise ValueError(f"dtype must be torch.float32 or torch.bfloat16 (or torch.float16 on CUDA), got {dtype}")
    grid = tile_grid(image.shape[:2], patch_size, step)
    weights = blend_weights(patch_size, blend)
    (pb_y, pb_x), (pa_y, pa_x) = grid.pad_before, grid.pad_after
    padded = np.pad(image, ((pb_y, pa_y), (pb_x, pa_x), (0, 0)), mode="reflect")

    # float64 accumulators: the blended value of identical inputs rounds back to the input exactly.
    weighted_sum: np.ndarray | None = None
    weight_sum = np.zeros(grid.padded_shape, np.float64)
    moments: list[np.ndarray] | None = None  # weighted sums of spread_of and of its square
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
                if dtype in (torch.bfloat16, torch.float16):  # mixed precision (fp16 on CUDA only)
                    with torch.autocast(device_type=device.type, dtype=dtype):
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
                    if spread_of is not None:
                        moments = _add_moments(moments, spread_of(patch.transpose(1, 2, 0)), weights, (y, x),
                                               grid.padded_shape)
    finally:
        if isinstance(generator, torch.nn.Module) and was_training:
            generator.train()
    assert weighted_sum is not None  # at least one patch: the slide is at least one patch
    inner = (slice(pb_y, pb_y + grid.shape[0]), slice(pb_x, pb_x + grid.shape[1]))
    blended = weighted_sum[inner]
    blended /= weight_sum[inner][..., None]  # in place: no second float64 copy of the slide
    if spread_of is None:
        return blended.astype(np.float32)
    assert moments is not None
    total = weight_sum[inner][..., None]
    mean = moments[0][inner] / total
    variance = np.maximum(moments[1][inner] / total - mean * mean, 0.0)  # rounding can dip below 0
    return blended.astype(np.float32), np.sqrt(variance).astype(np.float32)


def _add_moments(moments: list[np.ndarray] | None, value: np.ndarray, weights: np.ndarray,
                 origin: tuple[int, int], padded_shape: tuple[int, int]) -> list[np.ndarray]:
    """Add one patch's weighted first and second moments of ``value`` (P, P, C) at ``origin``."""
    value = np.asarray(value, np.float64)
    if value.ndim == 2:
        value = value[..., None]
    if moments is None:
        moments = [np.zeros(padded_shape + value.shape[2:], np.float64) for _ in range(2)]
    (y, x), size = origin, weights.shape[0]
    weighted = value * weights[..., None]
    moments[0][y:y + size, x:x + size] += weighted
    moments[1][y:y + size, x:x + size] += weighted * value
    return moments


# --------------------------------------------------------------------------- seams


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


def generator_channels(info: dict[str, Any] | None, default: int = 3) -> int:
    """The generator's input channels from its checkpoint description (3 without one)."""
    return int((info or {}).get("in_channels", default))


def ct_network_channels_last(ct: np.ndarray, *, invert: bool = False, channels: int = 3) -> np.ndarray:
    """A ``(Y, X)`` CT slice in network range as ``(Y, X, channels)`` float32 (identical channels).

    Uses :func:`vstain.data.ct_to_network` (the mapping the generators were trained with).

    Examples
    --------
    >>> import numpy as np
    >>> ct_network_channels_last(np.array([[0, 65535]], np.uint16)).tolist()
    [[[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]]
    """
    net = ct_to_network(np.asarray(ct), invert=invert)  # (Y, X) float32
    return np.repeat(net[..., None], channels, axis=-1)


def with_channels(image: np.ndarray, channels: int | None) -> np.ndarray:
    """A ``(Y, X, C)`` slide with ``channels`` channels: a single-channel slide repeated, any other count checked.

    CT enters the CycleGAN generators as 3 identical channels; :func:`infer_slide` takes the slide
    with the generator's channels. ``channels=None`` returns the slide unchanged.

    Examples
    --------
    >>> import numpy as np
    >>> with_channels(np.zeros((4, 5), np.float32), 3).shape
    (4, 5, 3)
    >>> with_channels(np.zeros((4, 5, 2), np.float32), 3)
    Traceback (most recent call last):
    ...
    ValueError: image has 2 channels, the generator expects 3
    """
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if channels is not None and image.shape[-1] != channels:
        if image.shape[-1] != 1:
            raise ValueError(f"image has {image.shape[-1]} channels, the generator expects {channels}")
        image = np.repeat(image, channels, axis=-1)
    return image


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
        The generator's description from :func:`vstain.models.checkpoint.load_generator`
        (``in_channels``, ``invert_ct``).

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
    ct = np.asarray(ct)
    if ct.ndim != 2:
        raise ValueError(f"ct must be a single-channel (Y, X) slice, got shape {ct.shape}")
    if np.issubdtype(ct.dtype, np.floating) and not np.all(np.isfinite(ct)):
        raise ValueError("ct contains NaN or infinite values")
    invert = bool((info or {}).get("invert_ct", False))
    channels = generator_channels(info)
    network = ct_network_channels_last(ct, invert=invert, channels=channels)
    out = infer_slide(generator, network, patch_size=patch_size, step=step, batch_size=batch_size, blend=blend,
                      device=device, dtype=dtype, progress=progress)
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
    histology = np.asarray(histology)
    if histology.ndim != 3 or histology.shape[-1] != 3:
        raise ValueError(f"histology must be (Y, X, 3) RGB, got shape {histology.shape}")
    if histology.dtype != np.uint8:
        raise ValueError(f"histology must be uint8 RGB, got dtype {histology.dtype}")
    network = np.moveaxis(np.asarray(histology_to_network(histology), np.float32), 0, -1)  # (Y, X, 3)
    out = infer_slide(generator, network, patch_size=patch_size, step=step, batch_size=batch_size, blend=blend,
                      device=device, dtype=dtype, progress=progress)
    if out.shape[-1] == 1:
        out = np.repeat(out, 3, axis=-1)
    if out.shape[-1] != 3:
        raise ValueError(f"the histology-to-CT generator returned {out.shape[-1]} channels, expected 3")
    invert = bool((info or {}).get("invert_ct", False))
    return np.asarray(network_to_ct(np.moveaxis(out, -1, 0), invert=invert), np.uint16)
