"""Paired training patches (paper 2.7) and the intensity mapping between images and networks.

Networks see both modalities in [-1, 1]:

* **CT** (``uint16`` on disk, normalised so bone is 30000 and background 10000, paper
  2.5) is mapped linearly from the full 16-bit range [0, 65535] to [-1, 1] and enters
  as 3 identical channels. The full range keeps screws and dense bone above the
  normalised bone level unclipped; instance normalisation after the first convolution
  makes the generators insensitive to the narrower occupied range. ``invert=True``
  (the ``cyclegan_invct`` model) flips the sign: bright background, dark bone.
* **Histology** (``uint8`` RGB) is mapped from [0, 255] to [-1, 1].

Inference uses the same functions (:func:`ct_to_network`, :func:`ct_to_network_channels`,
:func:`histology_to_network`, :func:`network_to_histology`, :func:`network_to_ct`),
so training and inference can never disagree.

The :class:`PatchSampler` draws, for every epoch, ``patches_per_pair`` patches from each
registered pair with a random crop position, a rescale of 90-110 % at fixed patch size,
horizontal and vertical flips (all applied identically to CT, histology and mask), and a
brightness/contrast jitter drawn separately for CT and histology; the histology jitter
scales the three channels of a pixel by the same factor, so RGB ratios (chromaticity)
are kept. A patch whose mask covers less than ``min_mask_fraction`` of it is re-drawn.
Every epoch's draws come from a generator seeded by ``(seed, epoch)``, so any epoch can
be reproduced alone (exact resumption needs no sampler state). For training on several
processes (:mod:`vstain.distributed`) the epoch is *sharded*: each patch is drawn from its own
generator seeded by ``(seed, epoch, position)`` and each rank draws only its share of every
batch, so the ranks' shares put together are the same batches whatever the number of ranks.

Examples
--------
>>> import numpy as np
>>> ct = np.array([[0, 65535]], np.uint16)
>>> ct_to_network(ct)
array([[-1.,  1.]], dtype=float32)
>>> network_to_ct(ct_to_network_channels(ct))
array([[    0, 65535]], dtype=uint16)
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from vstain.pairs import RegisteredPair

CT_RANGE = (0.0, 65535.0)  # the CT values mapped to -1 and +1


def _as_numpy(image: Any) -> np.ndarray:
    if isinstance(image, torch.Tensor):
        return image.detach().float().cpu().numpy()
    return np.asarray(image)


def ct_to_unit(ct: np.ndarray) -> np.ndarray:
    """CT values to [0, 1] over :data:`CT_RANGE` (clipped), float32.

    Examples
    --------
    >>> ct_to_unit(np.array([32767.5, 70000.0]))
    array([0.5, 1. ], dtype=float32)
    """
    low, high = CT_RANGE
    return np.clip((np.asarray(ct, np.float32) - low) / (high - low), 0.0, 1.0).astype(np.float32)


def ct_to_network(ct: np.ndarray, invert: bool = False) -> np.ndarray:
    """A CT image ``(..., Y, X)`` to network range [-1, 1], same shape, float32.

    The networks take 3 identical channels: repeat the result along a channel axis
    (:func:`ct_to_network_channels`, or :func:`vstain.infer.with_channels` for a channels-last slide).

    Parameters
    ----------
    ct : ndarray
        ``uint16`` (or float in the same 16-bit scale) slice ``(Y, X)`` or stack ``(Z, Y, X)``.
    invert : bool
        Inverted CT (model ``cyclegan_invct``): -1 for the brightest value.

    Examples
    --------
    >>> ct_to_network(np.array([0, 65535], np.uint16), invert=True)
    array([ 1., -1.], dtype=float32)
    """
    net = 2.0 * ct_to_unit(ct) - 1.0
    if invert:
        net = -net
    return net.astype(np.float32)


def ct_to_network_channels(ct: np.ndarray, invert: bool = False) -> np.ndarray:
    """A CT image ``(..., Y, X)`` to the networks' input ``(..., 3, Y, X)``: 3 identical channels.

    Examples
    --------
    >>> ct_to_network_channels(np.zeros((4, 5), np.uint16)).shape
    (3, 4, 5)
    """
    net = ct_to_network(ct, invert)
    return np.repeat(net[..., None, :, :], 3, axis=-3)


def network_to_ct(image: Any, invert: bool = False) -> np.ndarray:
    """A generated CT ``(..., 3, Y, X)`` in [-1, 1] back to ``uint16`` ``(..., Y, X)`` (channel mean).

    Examples
    --------
    >>> network_to_ct(np.zeros((3, 1, 1), np.float32))
    array([[32768]], dtype=uint16)
    """
    net = _as_numpy(image)
    if net.ndim < 3 or net.shape[-3] != 3:
        raise ValueError(f"network_to_ct: expected (..., 3, Y, X), got shape {net.shape}")
    grey = net.mean(axis=-3)
    if invert:
        grey = -grey
    low, high = CT_RANGE
    values = (np.clip(grey, -1.0, 1.0) + 1.0) / 2.0 * (high - low) + low
    return np.round(values).astype(np.uint16)


def histology_to_network(rgb: np.ndarray) -> np.ndarray:
    """A histology image ``(..., Y, X, 3)`` ``uint8`` to ``(..., 3, Y, X)`` float32 in [-1, 1].

    Examples
    --------
    >>> histology_to_network(np.array([[[0, 255, 51]]], np.uint8))[:, 0, 0]
    array([-1. ,  1. , -0.6], dtype=float32)
    """
    rgb = np.asarray(rgb)
    if rgb.ndim < 3 or rgb.shape[-1] != 3:
        raise ValueError(f"histology_to_network: expected (..., Y, X, 3) RGB, got shape {rgb.shape}")
    net = rgb.astype(np.float32) / 127.5 - 1.0
    return np.moveaxis(net, -1, -3).astype(np.float32)


def network_to_histology(image: Any) -> np.ndarray:
    """A generated histology ``(..., 3, Y, X)`` in [-1, 1] to ``uint8`` RGB ``(..., Y, X, 3)``.

    Examples
    --------
    >>> network_to_histology(np.full((3, 1, 1), 1.0, np.float32))
    array([[[255, 255, 255]]], dtype=uint8)
    """
    net = _as_numpy(image)
    if net.ndim < 3 or net.shape[-3] != 3:
        raise ValueError(f"network_to_histology: expected (..., 3, Y, X), got shape {net.shape}")
    values = (np.clip(net, -1.0, 1.0) + 1.0) * 127.5
    return np.moveaxis(np.round(values).astype(np.uint8), -3, -1)


# --------------------------------------------------------------------------- augmentation


def jitter_grey(image: np.ndarray, brightness: float, contrast: float) -> np.ndarray:
    """Contrast about the patch mean, then brightness, on a [0, 1] image; clipped to [0, 1].

    ``out = ((image - mean) * contrast + mean) * brightness``; factors near 1 (0.9-1.1 for
    the paper's 10 % jitter).

    Examples
    --------
    >>> jitter_grey(np.array([0.25, 0.75], np.float32), brightness=1.0, contrast=2.0)
    array([0., 1.], dtype=float32)
    """
    mean = float(image.mean())
    return np.clip(((image - mean) * contrast + mean) * brightness, 0.0, 1.0).astype(np.float32)


def jitter_rgb(rgb: np.ndarray, brightness: float, contrast: float) -> np.ndarray:
    """Brightness/contrast jitter of a [0, 1] RGB image ``(Y, X, 3)`` that keeps each pixel's RGB ratios.

    The jitter of :func:`jitter_grey` is applied to the intensity (channel mean) and
    each pixel's three channels are multiplied by the same factor, limited so that no
    channel exceeds 1: chromaticity is unchanged.

    Examples
    --------
    >>> rgb = np.array([[[0.2, 0.4, 0.1], [0.6, 0.3, 0.3]]], np.float32)
    >>> out = jitter_rgb(rgb, brightness=1.1, contrast=0.9)
    >>> np.allclose(out[..., 0] / out[..., 1], rgb[..., 0] / rgb[..., 1])
    True
    """
    intensity = rgb.mean(axis=-1)
    target = jitter_grey(intensity, brightness, contrast)
    factor = target / np.maximum(intensity, 1e-6)
    factor = np.minimum(factor, 1.0 / np.maximum(rgb.max(axis=-1), 1e-6))
    return (rgb * factor[..., None]).astype(np.float32)


@dataclasses.dataclass
class _PreparedPair:
    pair_id: str
    ct_unit: np.ndarray  # (Y, X) float32 in [0, 1]
    histology_unit: np.ndarray  # (Y, X, 3) float32 in [0, 1]
    mask: np.ndarray  # (Y, X) float32 0/1


def _check_pairs(pairs: Sequence[RegisteredPair], patch_size: int) -> list[_PreparedPair]:
    if len(pairs) == 0:
        raise ValueError("PatchSampler: no training pairs given")
    prepared = []
    for pair in pairs:
        pid = getattr(pair, "pair_id", "?")
        if not isinstance(pair, RegisteredPair):
            raise ValueError(f"pair {pid}: expected a vstain.pairs.RegisteredPair, got {type(pair).__name__}")
        ct, histology, mask = np.asarray(pair.ct), np.asarray(pair.histology), np.asarray(pair.mask)
        if ct.ndim != 2:
            raise ValueError(f"pair {pid}: field ct must be 2D, got shape {ct.shape}")
        if histology.shape != ct.shape + (3,):
            raise ValueError(f"pair {pid}: field histology has shape {histology.shape}, "
                             f"expected {ct.shape + (3,)} to match ct")
        if histology.dtype != np.uint8:
            raise ValueError(f"pair {pid}: field histology must be uint8, got {histology.dtype}")
        if mask.shape != ct.shape:
            raise ValueError(f"pair {pid}: field mask has shape {mask.shape}, expected {ct.shape} to match ct")
        if not np.all(np.isfinite(ct)):
            raise ValueError(f"pair {pid}: field ct contains NaN or infinite values")
        if not mask.any():
            raise ValueError(f"pair {pid}: field mask is all zero (no sample correspondence to train on)")
        if min(ct.shape) < patch_size:
            raise ValueError(f"pair {pid}: image shape {ct.shape} is smaller than the patch size {patch_size} "
                             "(profile field training.patch_size)")
        prepared.append(_PreparedPair(pid, ct_to_unit(ct), histology.astype(np.float32) / 255.0,
                                      mask.astype(np.float32)))
    return prepared


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """How a training patch is augmented (paper 2.7): rescale, horizontal and vertical flips, jitter.

    Parameters
    ----------
    rescale_range : (float, float)
        Scale factors (paper: 0.9-1.1); a scale s crops a window of side ``patch_size / s``
        and resizes it to ``patch_size``.
    jitter : float
        Largest relative brightness and contrast change (paper: 0.1), drawn separately for
        CT and histology.

    Examples
    --------
    >>> Augmentation()
    Augmentation(rescale_range=(0.9, 1.1), jitter=0.1)
    >>> Augmentation(jitter=1.5)
    Traceback (most recent call last):
    ...
    ValueError: PatchSampler: jitter must be in [0, 1), got 1.5
    """

    rescale_range: tuple[float, float] = (0.9, 1.1)
    jitter: float = 0.1

    def __post_init__(self) -> None:
        low, high = (float(v) for v in self.rescale_range)
        if not 0 < low <= high:
            raise ValueError(f"PatchSampler: rescale_range must be 0 < low <= high, got {list(self.rescale_range)}")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"PatchSampler: jitter must be in [0, 1), got {self.jitter}")
        object.__setattr__(self, "rescale_range", (low, high))
        object.__setattr__(self, "jitter", float(self.jitter))


class PatchSampler:
    """Augmented paired patches for training (paper 2.7).

    Parameters
    ----------
    pairs : sequence of RegisteredPair
        Registered pairs with their sample-correspondence masks.
    patch_size : int
        Patch side in pixels (fixed; the rescale changes the crop window instead).
    patches_per_pair : int
        Patches drawn from each pair per epoch.
    batch_size : int
        Patches per batch. An incomplete last batch is dropped (batch norm needs more
        than one sample at the U-Net's 1x1 bottleneck).
    seed : int
        Seed; epoch ``e`` uses a generator seeded with ``(seed, e)``.
    augmentation : Augmentation or None
        The rescale, flips and jitter of each patch (default: the paper's); ``None``: random crop
        position only (for looking at patches without augmentation).
    min_mask_fraction : float
        A patch with a smaller mask fraction is re-drawn (up to ``max_redraws`` times).
    invert_ct : bool
        Inverted CT input (``cyclegan_invct``).
    max_redraws : int
        Draws of a patch position before the pair is refused.

    Examples
    --------
    >>> import numpy as np
    >>> from vstain.pairs import RegisteredPair
    >>> rng = np.random.default_rng(0)
    >>> pair = RegisteredPair("p0", "Mg", "toluidine_blue", rng.integers(0, 60000, (48, 48)).astype(np.uint16),
    ...                       rng.integers(0, 255, (48, 48, 3)).astype(np.uint8), np.ones((48, 48), bool), 5.0)
    >>> sampler = PatchSampler([pair], patch_size=32, patches_per_pair=4, batch_size=2, seed=1)
    >>> batches = list(sampler.epoch(0))
    >>> len(batches), tuple(batches[0]["x"].shape), tuple(batches[0]["mask"].shape)
    (2, (2, 3, 32, 32), (2, 1, 32, 32))
    """

    def __init__(self, pairs: Sequence[RegisteredPair], patch_size: int, patches_per_pair: int, batch_size: int,
                 seed: int, augmentation: Augmentation | None = Augmentation(), min_mask_fraction: float = 0.25,
                 invert_ct: bool = False, max_redraws: int = 200) -> None:
        if patch_size < 1 or patches_per_pair < 1 or batch_size < 1:
            raise ValueError(f"PatchSampler: patch_size, patches_per_pair and batch_size must be positive, got "
                             f"{patch_size}, {patches_per_pair}, {batch_size}")
        if augmentation is not None and not isinstance(augmentation, Augmentation):
            raise ValueError(f"PatchSampler: augmentation must be a vstain.data.Augmentation or None, "
                             f"got {type(augmentation).__name__}")
        if not 0 <= min_mask_fraction <= 1:
            raise ValueError(f"PatchSampler: min_mask_fraction must be in [0, 1], got {min_mask_fraction}")
        self.pairs = _check_pairs(pairs, patch_size)
        self.patch_size = int(patch_size)
        self.patches_per_pair = int(patches_per_pair)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.augmentation = augmentation
        # without augmentation only the crop position is random (the rescale and jitter settings are never read)
        self.augment = augmentation is not None
        self.rescale_range = augmentation.rescale_range if augmentation else (1.0, 1.0)
        self.jitter = augmentation.jitter if augmentation else 0.0
        self.min_mask_fraction = float(min_mask_fraction)
        self.invert_ct = bool(invert_ct)
        self.max_redraws = int(max_redraws)
        if len(self) == 0:
            raise ValueError(f"PatchSampler: {len(self.pairs)} pairs x {patches_per_pair} patches give no complete "
                             f"batch of {batch_size} (profile fields training.patches_per_pair, batch_size)")

    @classmethod
    def from_profile(cls, pairs: Sequence[RegisteredPair], training: Any, seed: int, invert_ct: bool = False,
                     augment: bool = True) -> "PatchSampler":
        """A sampler with the numbers of ``profile.training`` (``augment=False``: random crop position only)."""
        augmentation = Augmentation(tuple(training.rescale_range), training.jitter) if augment else None
        return cls(pairs, training.patch_size, training.patches_per_pair, training.batch_size, seed, augmentation,
                   training.min_mask_fraction, invert_ct)

    def __len__(self) -> int:
        """Batches per epoch."""
        return len(self.pairs) * self.patches_per_pair // self.batch_size

    def epoch(self, epoch: int, shard: tuple[int, int] | None = None) -> Iterator[dict[str, Any]]:
        """The batches of epoch ``epoch``: dicts with ``x`` (CT), ``y`` (histology), ``mask``, ``pair_ids``.

        ``x`` and ``y`` are float32 ``(B, 3, P, P)`` tensors in [-1, 1]; ``mask`` is ``(B, 1, P, P)``.

        Parameters
        ----------
        epoch : int
        shard : (rank, world_size), optional
            ``None`` (one process): every patch of the epoch comes from one generator seeded by
            ``(seed, epoch)``. ``(r, n)``: the epoch is sharded over ``n`` ranks; the order of the
            pairs is the same, but each patch comes from its own generator seeded by ``(seed,
            epoch, position in the epoch)``, and rank ``r`` yields only positions ``r * b`` to
            ``(r + 1) * b - 1`` of every batch, ``b = batch_size / n`` (``batch_size`` stays the
            global batch and must be a multiple of ``n``). The shares of ranks ``0 .. n-1`` put
            together are the batches of ``shard=(0, 1)``, whatever ``n``.

        Examples
        --------
        >>> import numpy as np
        >>> from vstain.pairs import RegisteredPair
        >>> rng = np.random.default_rng(0)
        >>> pair = RegisteredPair("p0", "Mg", "toluidine_blue", rng.integers(0, 60000, (40, 40)).astype(np.uint16),
        ...                       rng.integers(0, 255, (40, 40, 3)).astype(np.uint8), np.ones((40, 40), bool), 5.0)
        >>> sampler = PatchSampler([pair], patch_size=32, patches_per_pair=4, batch_size=4, seed=1)
        >>> whole = next(sampler.epoch(0, shard=(0, 1)))["x"]
        >>> halves = [next(sampler.epoch(0, shard=(r, 2)))["x"] for r in (0, 1)]
        >>> tuple(halves[0].shape), bool(torch.equal(torch.cat(halves), whole))
        ((2, 3, 32, 32), True)
        """
        rng = np.random.default_rng([self.seed, int(epoch)])
        order = rng.permutation(np.repeat(np.arange(len(self.pairs)), self.patches_per_pair))
        if shard is None:
            starts, share = range(0, len(self) * self.batch_size, self.batch_size), self.batch_size
        else:
            rank, world_size = self.check_shard(shard)
            share = self.batch_size // world_size
            starts = range(rank * share, len(self) * self.batch_size, self.batch_size)
        for start in starts:
            positions = range(start, start + share)
            if shard is None:
                patches = [self.sample_patch(int(order[k]), rng) for k in positions]
            else:
                patches = [self.sample_patch(int(order[k]), np.random.default_rng([self.seed, int(epoch), k]))
                           for k in positions]
            yield {
                "x": torch.from_numpy(np.stack([p[0] for p in patches])),
                "y": torch.from_numpy(np.stack([p[1] for p in patches])),
                "mask": torch.from_numpy(np.stack([p[2] for p in patches])),
                "pair_ids": [self.pairs[int(order[k])].pair_id for k in positions],
            }

    def check_shard(self, shard: tuple[int, int]) -> tuple[int, int]:
        """``(rank, world_size)`` checked against the batch size; a clear error otherwise."""
        rank, world_size = (int(v) for v in shard)
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"PatchSampler: shard (rank {rank}, world size {world_size}) needs 0 <= rank < world size")
        if self.batch_size % world_size:
            raise ValueError(f"PatchSampler: batch size {self.batch_size} (profile field training.batch_size, the "
                             f"global batch) is not a multiple of the {world_size} ranks (training.ranks)")
        return rank, world_size

    def sample_patch(self, pair_index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One augmented patch of pair ``pair_index``: CT (3, P, P), histology (3, P, P), mask (1, P, P)."""
        pair = self.pairs[pair_index]
        height, width = pair.mask.shape
        size = self.patch_size
        for _ in range(self.max_redraws):
            scale = rng.uniform(*self.rescale_range) if self.augment else 1.0
            window = min(int(round(size / scale)), height, width)
            top = int(rng.integers(0, height - window + 1))
            left = int(rng.integers(0, width - window + 1))
            mask = pair.mask[top:top + window, left:left + window]
            if mask.mean() >= self.min_mask_fraction and mask.any():
                break
        else:
            raise ValueError(
                f"pair {pair.pair_id}: no patch of {size} px with a mask fraction >= {self.min_mask_fraction} found "
                f"in {self.max_redraws} draws (mask covers {pair.mask.mean():.1%} of the pair; lower "
                "training.min_mask_fraction or check the mask)")
        ct = pair.ct_unit[top:top + window, left:left + window]
        histology = pair.histology_unit[top:top + window, left:left + window]
        if window != size:
            images = torch.from_numpy(np.concatenate([ct[None], np.moveaxis(histology, -1, 0)], 0))[None]
            images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)[0].numpy()
            ct, histology = images[0], np.moveaxis(images[1:], 0, -1)
            mask = F.interpolate(torch.from_numpy(np.ascontiguousarray(mask))[None, None], size=(size, size),
                                 mode="nearest")[0, 0].numpy()
        if self.augment:
            if rng.random() < 0.5:
                ct, histology, mask = ct[:, ::-1], histology[:, ::-1], mask[:, ::-1]
            if rng.random() < 0.5:
                ct, histology, mask = ct[::-1], histology[::-1], mask[::-1]
            j = self.jitter
            ct = jitter_grey(ct, rng.uniform(1 - j, 1 + j), rng.uniform(1 - j, 1 + j))
            histology = jitter_rgb(histology, rng.uniform(1 - j, 1 + j), rng.uniform(1 - j, 1 + j))
        ct_net = 2.0 * np.asarray(ct, np.float32) - 1.0
        if self.invert_ct:
            ct_net = -ct_net
        x = np.repeat(ct_net[None], 3, axis=0)
        y = np.moveaxis(2.0 * np.asarray(histology, np.float32) - 1.0, -1, 0)
        return (np.ascontiguousarray(x, np.float32), np.ascontiguousarray(y, np.float32),
                np.ascontiguousarray(mask[None], np.float32))
