"""Fourier ring correlation (FRC): image resolution in pixels (paper, Supplementary S3, Fig. S5).

The FRC of two images of the same object with independent noise is the normalised
cross-correlation of their Fourier transforms over rings of equal spatial frequency
(Nieuwenhuizen et al. 2013)::

    FRC(q) = Re sum_{|k| in ring q} F1(k) F2*(k) / sqrt(sum |F1(k)|^2 * sum |F2(k)|^2)

It is close to 1 where the signal dominates and falls to 0 where the noise does; the
resolution is the inverse of the frequency where the curve first drops below a
threshold: the fixed ``1/7`` (the paper's choice) or the ``half-bit`` curve of van Heel
and Schatz (2005), which rises at low frequencies where rings hold few pixels.

Single-image FRC (Rieger et al. 2024) splits one image into two halves with independent
noise, so resolution can be measured where only one image exists (a CT slice, a
histology section, a generated image):

* ``checkerboard``: pixels with ``y + x`` even form one half, ``y + x`` odd the other.
  Each half lives on a diagonal (quincunx) sub-lattice; in rotated coordinates
  ``a = (y + x) / 2, b = (y - x) / 2`` it is a square grid of pitch ``sqrt(2)`` pixels,
  from which the largest inscribed square is taken. Two corrections follow:
  the frequency axis is divided by ``sqrt(2)`` (a ring at ``r / M`` cycles per
  sub-lattice pitch is ``r / (M sqrt 2)`` cycles per pixel, so the finest measurable
  resolution is ``2 sqrt 2`` pixels, not 2), and the odd half sits one pixel to the
  right of the even one, i.e. half a sub-lattice step along ``(a, -b)``: its spectrum is
  multiplied by ``exp(-i pi (k_a - k_b) / M)`` to undo that shift, which would otherwise
  turn the correlation into a cosine that falls to zero at the sub-lattice Nyquist
  frequency. Each half keeps the full signal and the full per-pixel noise, so the
  curve estimates the FRC of two full, independent images: no SNR correction.
* ``binomial``: for photon-count images, each count is split by a fair coin (binomial
  thinning): the two halves are independent Poisson images on the same grid, so the
  frequency axis needs no rescaling, but each half has half the counts, hence half the
  spectral SNR. The curve is corrected to that of two full-count images with
  ``FRC_full = 2 FRC / (1 + FRC)`` (from ``FRC = SNR / (1 + SNR)`` with SNR doubled).
  It needs counts: integer, non-negative images.

Pure noise has no frequency where signal dominates: its curve is never reliably above
the threshold. Such a patch is reported with ``status="no_signal"`` and a resolution of
NaN, never as a number; a curve still above the threshold at the Nyquist frequency is
``status="not_reached"`` (finer than can be measured), also NaN.

Examples
--------
>>> import numpy as np
>>> from scipy import ndimage
>>> rng = np.random.default_rng(0)
>>> texture = ndimage.gaussian_filter(rng.normal(size=(128, 128)), 3, mode="wrap")
>>> noisy = texture / texture.std() + 0.05 * rng.normal(size=texture.shape)
>>> result = single_image_frc(noisy, split="checkerboard")
>>> result.status, bool(5 < result.resolution_px < 9)
('crossed', True)
>>> single_image_frc(rng.normal(size=(128, 128))).status
'no_signal'
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal, Sequence

import numpy as np
from scipy import ndimage as ndi
from scipy.signal.windows import tukey

from vstain.metrics import patch_grid

Threshold = Literal["1/7", "half-bit"]
Split = Literal["checkerboard", "binomial"]
THRESHOLDS = ("1/7", "half-bit")
SPLITS = ("checkerboard", "binomial")
# Pixel pitch of each split's halves: the checkerboard halves are a diagonal sub-lattice
# (frequency axis rescaled by 1/sqrt 2, Nyquist at 2 sqrt 2 px); binomial halves keep the grid.
SPLIT_PITCH_PX = {"checkerboard": math.sqrt(2.0), "binomial": 1.0}
MODALITIES = ("ct", "histology", "generated")

# A crossing counts only if the correlation over all frequencies below it is this many
# standard errors above zero: pure noise then (almost) never yields a resolution.
SIGNAL_SIGMAS = 4.0


@dataclasses.dataclass(frozen=True)
class FRCCurve:
    """An FRC curve on rings of equal spatial frequency.

    Attributes
    ----------
    frequency : ndarray
        Ring centres in cycles per (original) pixel; the last ring is at Nyquist or below.
    frc : ndarray
        The correlation per ring, in [-1, 1].
    n_pixels : ndarray
        Fourier pixels per ring (both half-planes), for the half-bit threshold.
    numerator, power1, power2 : ndarray
        Per-ring sums ``Re F1 F2*``, ``|F1|^2`` and ``|F2|^2``.
    """

    frequency: np.ndarray
    frc: np.ndarray
    n_pixels: np.ndarray
    numerator: np.ndarray
    power1: np.ndarray
    power2: np.ndarray


@dataclasses.dataclass(frozen=True)
class FRCResult:
    """The resolution read from an FRC curve.

    Attributes
    ----------
    resolution_px : float
        Inverse of the crossing frequency, in pixels; NaN unless ``status == "crossed"``.
    status : {"crossed", "no_signal", "not_reached"}
        ``no_signal``: the curve never rises significantly above the threshold (noise);
        ``not_reached``: still above it at Nyquist (finer than measurable).
    crossing_frequency : float
        Cycles per pixel at the crossing, NaN without one.
    curve : FRCCurve
    threshold : str
    """

    resolution_px: float
    status: str
    crossing_frequency: float
    curve: FRCCurve
    threshold: str

    @property
    def crossed(self) -> bool:
        """True when the curve crossed the threshold below Nyquist."""
        return self.status == "crossed"

    def describe(self) -> str:
        """The resolution as text: ``"4.20 px"``, or the status (``"not reached"``, ``"no signal"``), never NaN.

        Examples
        --------
        >>> single_image_frc(np.random.default_rng(0).normal(size=(64, 64))).describe()
        'no signal'
        """
        return f"{self.resolution_px:.2f} px" if self.crossed else self.status.replace("_", " ")


# --------------------------------------------------------------------------- helpers


def _as_channels(image: np.ndarray, name: str, channel_axis: int | None) -> np.ndarray:
    """Return ``image`` as float64 ``(C, Y, X)``; validate shape and finiteness."""
    image = np.asarray(image)
    if channel_axis is not None:
        image = np.moveaxis(image, channel_axis, 0)
    elif image.ndim == 2:
        image = image[None]
    if image.ndim != 3:
        raise ValueError(f"{name}: expected a 2D image (or 3D with channel_axis), got shape {np.shape(image)}")
    if min(image.shape[1:]) < 8:
        raise ValueError(f"{name}: image of shape {image.shape[1:]} is too small for an FRC (at least 8 x 8)")
    if not np.issubdtype(image.dtype, np.number) or np.issubdtype(image.dtype, np.complexfloating):
        raise ValueError(f"{name}: expected a real numeric image, got dtype {image.dtype}")
    image = image.astype(np.float64)
    if not np.all(np.isfinite(image)):
        raise ValueError(f"{name}: image contains NaN or infinite values")
    return image


def tukey_window(shape: Sequence[int], alpha: float = 0.5) -> np.ndarray:
    """A separable 2D Tukey window: flat centre, cosine edges over ``alpha / 2`` of each side.

    Apodisation removes the spurious high frequencies of the image's hard edges (the
    DFT treats the image as periodic) that would otherwise correlate perfectly.

    Examples
    --------
    >>> w = tukey_window((16, 16))
    >>> float(w[8, 8]), float(w[0, 0])
    (1.0, 0.0)
    """
    return np.outer(tukey(int(shape[0]), alpha), tukey(int(shape[1]), alpha))


def _prepare(channels: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Subtract each channel's mean and apodise (the DC term carries no resolution)."""
    centred = channels - channels.mean(axis=(1, 2), keepdims=True)
    return centred * window


def _ring_sums(
    spectrum1: np.ndarray, spectrum2: np.ndarray, ring_index: np.ndarray, n_rings: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-ring sums of the cross and auto spectra (summed over channels), and pixel counts."""
    inside = ring_index < n_rings
    idx = ring_index[inside]
    cross = np.real(spectrum1 * np.conj(spectrum2)).sum(axis=0)[inside]
    p1 = (np.abs(spectrum1) ** 2).sum(axis=0)[inside]
    p2 = (np.abs(spectrum2) ** 2).sum(axis=0)[inside]
    numerator = np.bincount(idx, cross, n_rings)
    power1 = np.bincount(idx, p1, n_rings)
    power2 = np.bincount(idx, p2, n_rings)
    counts = np.bincount(idx, minlength=n_rings).astype(float)
    return numerator, power1, power2, counts


def _curve_from_spectra(
    spectrum1: np.ndarray, spectrum2: np.ndarray, frequency_scale: float
) -> FRCCurve:
    """Bin two ``(C, Y, X)`` spectra into rings one Fourier pixel wide (of the shorter side)."""
    ny, nx = spectrum1.shape[1:]
    ky = np.fft.fftfreq(ny)[:, None]
    kx = np.fft.fftfreq(nx)[None, :]
    n = min(ny, nx)
    radius = np.sqrt(ky**2 + kx**2) * n  # in rings of width 1/n cycles per grid step
    ring_index = np.rint(radius).astype(int)
    n_rings = n // 2 + 1  # rings 0 .. Nyquist
    numerator, power1, power2, counts = _ring_sums(spectrum1, spectrum2, ring_index, n_rings)
    with np.errstate(invalid="ignore", divide="ignore"):
        frc = numerator / np.sqrt(power1 * power2)
    frc = np.where(np.isfinite(frc), frc, 0.0)
    frequency = np.arange(n_rings) / n * frequency_scale
    return FRCCurve(frequency, frc, counts, numerator, power1, power2)


def threshold_curve(curve: FRCCurve, threshold: Threshold = "1/7") -> np.ndarray:
    """The threshold per ring: ``1/7`` everywhere, or van Heel's half-bit curve.

    The half-bit curve is ``(0.2071 + 1.9102 / sqrt(n)) / (1.2071 + 0.9102 / sqrt(n))``
    with ``n`` the pixels of the ring (van Heel and Schatz 2005, their Eq. 17).

    Examples
    --------
    >>> c = FRCCurve(np.zeros(2), np.zeros(2), np.array([4.0, 1e6]), *[np.zeros(2)] * 3)
    >>> np.round(threshold_curve(c, "half-bit"), 3).tolist()
    [0.699, 0.173]
    """
    if threshold == "1/7":
        return np.full(curve.frc.shape, 1.0 / 7.0)
    if threshold == "half-bit":
        root_n = np.sqrt(np.maximum(curve.n_pixels, 1.0))
        return (0.2071 + 1.9102 / root_n) / (1.2071 + 0.9102 / root_n)
    raise ValueError(f"threshold must be one of {list(THRESHOLDS)}, got {threshold!r}")


def _smoothed(curve: FRCCurve, width: int) -> np.ndarray:
    """FRC recomputed on rings ``width`` pixels wide (running sums): steadier at low frequency."""
    if width <= 1:
        return curve.frc
    kernel = np.ones(width)
    num = np.convolve(curve.numerator, kernel, mode="same")
    p1 = np.convolve(curve.power1, kernel, mode="same")
    p2 = np.convolve(curve.power2, kernel, mode="same")
    with np.errstate(invalid="ignore", divide="ignore"):
        frc = num / np.sqrt(p1 * p2)
    return np.where(np.isfinite(frc), frc, 0.0)


def resolution_from_curve(
    curve: FRCCurve,
    threshold: Threshold = "1/7",
    *,
    smoothing: int = 3,
    signal_sigmas: float = SIGNAL_SIGMAS,
) -> FRCResult:
    """Read the resolution (pixels) where an FRC curve first falls below the threshold.

    Parameters
    ----------
    curve : FRCCurve
        From :func:`frc_curve` or :func:`single_image_frc_curve`.
    threshold : {"1/7", "half-bit"}
    smoothing : int
        Rings pooled by a running sum before the threshold test (1: none).
    signal_sigmas : float
        The crossing is accepted only if the correlation pooled over all rings below it
        exceeds ``signal_sigmas / sqrt(n / 2)`` (its standard error for independent noise,
        ``n / 2`` independent Fourier pixels): otherwise the status is ``no_signal``.

    Returns
    -------
    FRCResult
        The crossing is interpolated linearly between the last ring above and the first
        below; the ring at 0 (DC) is skipped.

    Examples
    --------
    >>> f = np.arange(33) / 64
    >>> frc = np.clip(1.2 - 4 * f, 0, 1)
    >>> curve = FRCCurve(f, frc, np.full(33, 1e4), frc * 1e4, np.full(33, 1e4), np.full(33, 1e4))
    >>> result = resolution_from_curve(curve, smoothing=1)
    >>> round(result.resolution_px, 2)
    3.78
    """
    if threshold not in THRESHOLDS:
        raise ValueError(f"threshold must be one of {list(THRESHOLDS)}, got {threshold!r}")
    frc = _smoothed(curve, int(smoothing))
    limit = threshold_curve(curve, threshold)
    below = np.nonzero(frc[1:] < limit[1:])[0]
    nan = float("nan")
    if below.size == 0:
        return FRCResult(nan, "not_reached", nan, curve, threshold)
    first = int(below[0]) + 1  # ring index of the first ring below the threshold
    # Is the signal below the crossing real? Pool every ring from 1 up to the crossing.
    rings = slice(1, max(first, 2))
    pooled = curve.numerator[rings].sum() / math.sqrt(
        max(curve.power1[rings].sum() * curve.power2[rings].sum(), 1e-300)
    )
    n_independent = max(curve.n_pixels[rings].sum() / 2.0, 1.0)
    if first == 1 or pooled < signal_sigmas / math.sqrt(n_independent):
        return FRCResult(nan, "no_signal", nan, curve, threshold)
    f0, f1 = curve.frequency[first - 1], curve.frequency[first]
    d0, d1 = frc[first - 1] - limit[first - 1], frc[first] - limit[first]
    crossing = f0 + (f1 - f0) * d0 / (d0 - d1) if d0 != d1 else f1
    return FRCResult(float(1.0 / crossing), "crossed", float(crossing), curve, threshold)


# --------------------------------------------------------------------------- curves


def frc_curve(
    image1: np.ndarray, image2: np.ndarray, *, channel_axis: int | None = None, window_alpha: float = 0.5
) -> FRCCurve:
    """FRC curve between two images of the same object (Nieuwenhuizen et al. 2013).

    Parameters
    ----------
    image1, image2 : ndarray
        Same shape, ``(Y, X)`` or with a channel axis (RGB: the channels' spectra are
        pooled in each ring, as one vector-valued image).
    channel_axis : int, optional
    window_alpha : float
        Tukey apodisation taper (0: none).

    Returns
    -------
    FRCCurve
        Rings one Fourier pixel (of the shorter side) wide, up to Nyquist (0.5 cycles/pixel).

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> a = rng.normal(size=(32, 32))
    >>> curve = frc_curve(a, a)
    >>> bool(np.allclose(curve.frc[1:], 1.0)), float(curve.frequency[-1])
    (True, 0.5)
    """
    c1 = _as_channels(image1, "image1", channel_axis)
    c2 = _as_channels(image2, "image2", channel_axis)
    if c1.shape != c2.shape:
        raise ValueError(f"image1 and image2 differ in shape: {c1.shape} vs {c2.shape}")
    window = tukey_window(c1.shape[1:], window_alpha)
    s1 = np.fft.fft2(_prepare(c1, window))
    s2 = np.fft.fft2(_prepare(c2, window))
    return _curve_from_spectra(s1, s2, 1.0)


def checkerboard_halves(image: np.ndarray, *, channel_axis: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Split an image into its two checkerboard halves (``y + x`` of one parity each).

    Each half is resampled onto its own diagonal sub-lattice: element ``[a, b]`` of the
    first half is pixel ``(y, x) = (a + b, a - b + M - 1)``, of the second half the pixel
    one to the right (the other parity), for the largest ``M x M`` square that fits (``M = (min(Y, X) + 1) // 2``
    when the odd half also fits). The halves have pitch ``sqrt(2)`` pixels, rotated 45 degrees.

    Returns
    -------
    first, second : ndarray
        ``(C, M, M)`` float64 arrays.

    Examples
    --------
    >>> image = np.arange(64).reshape(8, 8)
    >>> first, second = checkerboard_halves(image)
    >>> first.shape, int(first[0, 0, 0]), int(second[0, 0, 0]), int(first[0, 1, 0])
    ((1, 4, 4), 3, 4, 12)
    """
    channels = _as_channels(image, "image", channel_axis)
    ny, nx = channels.shape[1:]
    # first half x-range: 0 .. 2M-2, odd half adds one: 2M-1 <= nx - 1; y-range: 0 .. 2M-2 <= ny - 1.
    m = min((ny + 1) // 2, nx // 2)
    a = np.arange(m)[:, None]
    b = np.arange(m)[None, :]
    y = a + b
    x = a - b + (m - 1)
    return channels[:, y, x], channels[:, y, x + 1]


def single_image_frc_curve(
    image: np.ndarray,
    *,
    split: Split = "checkerboard",
    channel_axis: int | None = None,
    window_alpha: float = 0.5,
    rng: np.random.Generator | int | None = 0,
) -> FRCCurve:
    """FRC curve of one image, split into two halves with independent noise (Rieger et al. 2024).

    Parameters
    ----------
    image : ndarray
        ``(Y, X)`` or with a channel axis.
    split : {"checkerboard", "binomial"}
        See the module notes for the correction each split needs; ``binomial`` needs
        integer, non-negative photon counts.
    channel_axis : int, optional
    window_alpha : float
    rng : Generator or int, optional
        The coin flips of the binomial split (deterministic by default).

    Returns
    -------
    FRCCurve
        Frequencies in cycles per pixel of ``image``; for ``binomial`` the curve is
        corrected to the FRC of two full-count images.

    Examples
    --------
    >>> image = np.random.default_rng(2).poisson(50.0, (64, 64))
    >>> curve = single_image_frc_curve(image, split="binomial")
    >>> float(curve.frequency[-1])
    0.5
    >>> round(float(single_image_frc_curve(image).frequency[-1]), 3)  # sqrt(2)-rescaled
    0.354
    """
    if split == "checkerboard":
        even, odd = checkerboard_halves(image, channel_axis=channel_axis)
        m = even.shape[-1]
        window = tukey_window((m, m), window_alpha)
        s_even = np.fft.fft2(_prepare(even, window))
        s_odd = np.fft.fft2(_prepare(odd, window))
        k = np.fft.fftfreq(m) * m  # signed integer frequencies
        # The odd half is the even one shifted by (+1/2, -1/2) sub-lattice steps: undo it.
        phase = np.exp(-1j * np.pi * (k[:, None] - k[None, :]) / m)
        return _curve_from_spectra(s_even, s_odd * phase, 1.0 / SPLIT_PITCH_PX["checkerboard"])
    if split == "binomial":
        counts = _as_channels(image, "image", channel_axis)
        if np.any(counts < 0) or not np.all(counts == np.round(counts)):
            raise ValueError(
                "image: the binomial split needs photon counts (non-negative integers); "
                "use split='checkerboard' for other images"
            )
        generator = np.random.default_rng(rng)
        half = generator.binomial(counts.astype(np.int64), 0.5).astype(np.float64)
        curve = frc_curve(half, counts - half, channel_axis=0, window_alpha=window_alpha)
        # Each half has half the counts, so half the spectral SNR: FRC_full = 2 FRC / (1 + FRC).
        corrected = 2.0 * curve.frc / (1.0 + curve.frc)
        return dataclasses.replace(curve, frc=np.where(curve.frc > -1.0, corrected, -1.0))
    raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")


def image_resolution(
    image1: np.ndarray,
    image2: np.ndarray,
    *,
    threshold: Threshold = "1/7",
    channel_axis: int | None = None,
) -> FRCResult:
    """Resolution in pixels from two independent images of the same object (two-image FRC).

    Examples
    --------
    >>> from scipy import ndimage
    >>> rng = np.random.default_rng(3)
    >>> truth = ndimage.gaussian_filter(rng.normal(size=(96, 96)), 2, mode="wrap")
    >>> truth /= truth.std()
    >>> a, b = (truth + 0.1 * rng.normal(size=truth.shape) for _ in range(2))
    >>> r = image_resolution(a, b)
    >>> r.status, bool(3 < r.resolution_px < 6)
    ('crossed', True)
    """
    return resolution_from_curve(frc_curve(image1, image2, channel_axis=channel_axis), threshold)


def single_image_frc(
    image: np.ndarray,
    *,
    split: Split = "checkerboard",
    threshold: Threshold = "1/7",
    channel_axis: int | None = None,
    rng: np.random.Generator | int | None = 0,
) -> FRCResult:
    """Resolution in pixels of one image by single-image FRC (Rieger et al. 2024).

    See :func:`single_image_frc_curve` and :func:`resolution_from_curve`.

    Examples
    --------
    >>> single_image_frc(np.random.default_rng(4).normal(size=(64, 64))).resolution_px
    nan
    """
    curve = single_image_frc_curve(image, split=split, channel_axis=channel_axis, rng=rng)
    return resolution_from_curve(curve, threshold)


# --------------------------------------------------------------------------- patches and the stage


def patch_origins(mask: np.ndarray, patch_size: int, min_mask_fraction: float) -> list[tuple[int, int]]:
    """Origins ``(y, x)`` of a non-overlapping patch grid whose patches are mostly inside ``mask``.

    The grid starts at 0 and steps by ``patch_size`` without a last patch flush with the far
    edge (:func:`vstain.metrics.patch_grid`); a patch is kept when the mask covers at least
    ``min_mask_fraction`` of it.

    Examples
    --------
    >>> mask = np.zeros((64, 64), bool); mask[:40, :] = True
    >>> patch_origins(mask, 32, 0.9)
    [(0, 0), (0, 32)]
    """
    origins, covered = patch_grid(mask, patch_size, patch_size, flush=False)
    keep = covered / (patch_size * patch_size) >= min_mask_fraction  # the mean of the mask over each patch
    return [(int(y), int(x)) for y, x in origins[keep]]


def pair_resolution(
    ct: np.ndarray,
    histology: np.ndarray,
    generated: np.ndarray,
    mask: np.ndarray,
    *,
    patch_size: int,
    min_mask_fraction: float,
    split: Split = "checkerboard",
    threshold: Threshold = "1/7",
) -> list[dict[str, Any]]:
    """Single-image FRC resolution of CT, real and generated histology per patch inside the mask (Fig. S5).

    Returns one row per patch: ``y, x``, ``<modality>_px`` and ``<modality>_status`` for
    ``ct``, ``histology``, ``generated``, and the relative resolutions
    ``generated_over_histology`` and ``generated_over_ct`` (NaN unless both crossed).

    Examples
    --------
    >>> from scipy import ndimage
    >>> rng = np.random.default_rng(0)
    >>> base = ndimage.gaussian_filter(rng.normal(size=(64, 64)), 2, mode="wrap")
    >>> base /= base.std()
    >>> ct = ndimage.gaussian_filter(base, 2, mode="wrap") + 0.05 * rng.normal(size=base.shape)
    >>> hist = np.repeat(base[..., None], 3, -1) + 0.1 * rng.normal(size=(64, 64, 3))
    >>> rows = pair_resolution(ct, hist, hist, np.ones((64, 64), bool), patch_size=64, min_mask_fraction=1.0)
    >>> rows[0]["ct_px"] > rows[0]["histology_px"], rows[0]["generated_over_histology"]
    (True, 1.0)
    """
    if ct.shape != mask.shape or histology.shape[:2] != mask.shape or generated.shape[:2] != mask.shape:
        raise ValueError(f"ct {ct.shape}, histology {histology.shape}, generated {generated.shape} and mask "
                         f"{mask.shape} must share (Y, X)")
    rows = []
    for y, x in patch_origins(mask, patch_size, min_mask_fraction):
        window = np.s_[y : y + patch_size, x : x + patch_size]
        row: dict[str, Any] = {"y": y, "x": x}
        images = {"ct": (ct[window], None), "histology": (histology[window], -1), "generated": (generated[window], -1)}
        for name, (patch, channel_axis) in images.items():
            if channel_axis is not None and patch.ndim == 2:
                channel_axis = None
            result = single_image_frc(patch, split=split, threshold=threshold, channel_axis=channel_axis)
            row[f"{name}_px"] = result.resolution_px
            row[f"{name}_status"] = result.status
        row["generated_over_histology"] = row["generated_px"] / row["histology_px"]
        row["generated_over_ct"] = row["generated_px"] / row["ct_px"]
        rows.append(row)
    return rows


def summarise_resolution(frame: Any) -> Any:
    """Per role: median absolute resolution per modality, median ratios, and how many patches crossed.

    Examples
    --------
    >>> import pandas as pd
    >>> f = pd.DataFrame({"role": ["train"] * 2, "ct_px": [5.0, 7.0], "histology_px": [3.0, np.nan],
    ...                   "generated_px": [4.0, 4.0], "generated_over_histology": [4 / 3, np.nan],
    ...                   "generated_over_ct": [0.8, 4 / 7]})
    >>> summarise_resolution(f).loc["train", ["ct_px", "histology_crossed"]].tolist()
    [6.0, 0.5]
    """
    columns = [f"{m}_px" for m in MODALITIES] + ["generated_over_histology", "generated_over_ct"]
    grouped = frame.groupby("role")
    summary = grouped[columns].median()
    for m in MODALITIES:
        summary[f"{m}_crossed"] = grouped[f"{m}_px"].apply(lambda s: float(np.isfinite(s).mean()))
    summary["n_patches"] = grouped.size()
    return summary.reindex([r for r in ("train", "validation", "test") if r in summary.index]
                           + [r for r in summary.index if r not in ("train", "validation", "test")])


def finest_measurable_px(split: Split = "checkerboard") -> float:
    """The finest resolution a single-image FRC can report, in pixels.

    The checkerboard halves live on a sub-lattice of pitch sqrt(2) pixels, so their
    Nyquist frequency is ``1 / (2 sqrt 2)`` cycles per pixel; binomial halves keep the
    full grid (Nyquist: 2 pixels).

    Examples
    --------
    >>> round(finest_measurable_px("checkerboard"), 3), finest_measurable_px("binomial")
    (2.828, 2.0)
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    return 2.0 * SPLIT_PITCH_PX[split]


def resolution_statement(frame: Any, modality: str, split: Split = "checkerboard") -> str:
    """One phrase on a modality's per-patch resolution that never turns a missing crossing into a number.

    Patches are counted by status: the median resolution is taken over those that
    crossed the threshold; those still above it at the finest measurable resolution
    (:func:`finest_measurable_px`) are sharper than the method can tell, and those
    without signal are noise. Both are counted, never given a value.

    Parameters
    ----------
    frame : DataFrame
        Per-patch rows of :func:`vstain.stages.frc.measure_resolution` (``<modality>_px``, ``<modality>_status``).
    modality : {"ct", "histology", "generated"}
    split : {"checkerboard", "binomial"}

    Examples
    --------
    >>> import pandas as pd
    >>> f = pd.DataFrame({"ct_px": [3.0, 5.0, np.nan], "ct_status": ["crossed", "crossed", "not_reached"]})
    >>> resolution_statement(f, "ct")
    'median 4.00 px (2 of 3 patches crossed); 1 of 3 sharper than the finest measurable 2.83 px'
    >>> resolution_statement(f.iloc[2:], "ct")
    'not measurable: 1 of 1 sharper than the finest measurable 2.83 px'
    """
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {list(MODALITIES)}, got {modality!r}")
    n = len(frame)
    if n == 0:
        return "no patch measured"
    status = frame[f"{modality}_status"].astype(str)
    crossed = int((status == "crossed").sum())
    finer = int((status == "not_reached").sum())
    noise = int((status == "no_signal").sum())
    parts = []
    if crossed:
        median = float(np.nanmedian(frame.loc[status == "crossed", f"{modality}_px"].to_numpy(float)))
        parts.append(f"median {median:.2f} px ({crossed} of {n} patches crossed)")
    if finer:
        parts.append(f"{finer} of {n} sharper than the finest measurable {finest_measurable_px(split):.2f} px")
    if noise:
        parts.append(f"{noise} of {n} without signal (noise)")
    text = "; ".join(parts)
    return text if crossed else f"not measurable: {text}"


def ratio_statement(frame: Any, column: str) -> str:
    """One phrase on a per-patch resolution ratio: its median over the patches where both curves crossed.

    Examples
    --------
    >>> import pandas as pd
    >>> ratio_statement(pd.DataFrame({"generated_over_ct": [0.8, 1.0, np.nan]}), "generated_over_ct")
    '0.90 x (2 of 3 patches)'
    >>> ratio_statement(pd.DataFrame({"generated_over_ct": [np.nan]}), "generated_over_ct")
    'not measurable (no patch where both curves crossed)'
    """
    values = frame[column].to_numpy(float)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return "not measurable (no patch where both curves crossed)"
    return f"{float(np.median(finite)):.2f} x ({finite.size} of {values.size} patches)"


def interpolation_effect(
    image: np.ndarray,
    *,
    shift: float = 0.5,
    split: Split = "checkerboard",
    threshold: Threshold = "1/7",
) -> tuple[FRCResult, FRCResult]:
    """Single-image FRC of an image before and after a sub-pixel shift by linear interpolation.

    Single-image FRC assumes that neighbouring pixels carry independent noise.
    Resampling (a registered oblique CT slice, a warped histology section) mixes
    neighbouring pixels, so the two halves share noise that the FRC then counts as
    signal: the curve stays high and the resolution looks finer than it is. This
    shows the effect on one image: the shift changes no structure, only correlates
    the noise.

    Returns
    -------
    (FRCResult, FRCResult)
        The image as it is, and shifted by ``shift`` pixels along both axes.

    Examples
    --------
    >>> from scipy import ndimage
    >>> rng = np.random.default_rng(1)
    >>> image = ndimage.gaussian_filter(rng.normal(size=(128, 128)), 1.5) * 20 + rng.normal(size=(128, 128))
    >>> before, after = interpolation_effect(image)
    >>> before.status, after.status
    ('crossed', 'not_reached')
    """
    image = np.asarray(image, np.float64)
    if image.ndim != 2:
        raise ValueError(f"image must be 2D, got shape {image.shape}")
    shifted = ndi.shift(image, (shift, shift), order=1, mode="nearest")
    return (single_image_frc(image, split=split, threshold=threshold),
            single_image_frc(shifted, split=split, threshold=threshold))
