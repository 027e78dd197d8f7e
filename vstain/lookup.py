"""A peer that is not a network: the joint-histogram colour lookup of CT grey values.

Khimchenko et al. (2016), cited in the paper's introduction, coloured CT by a lookup from grey
value to histology colour read off the joint histogram of registered pairs. Here the table is
fitted on the training pairs' masked pixels: the normalised CT is binned (by default 256 bins
over the grey range the training pairs actually use), each bin holds the mean RGB of the histology
pixels whose CT value falls in it, and bins no pixel fell in take the colour interpolated linearly
between their filled neighbours (the end bins' colour beyond them). Applying the table to a CT
slice gives each pixel its bin's colour.

It sees one pixel at a time: no texture, no context. As a row of Table 1 it shows what the
networks add beyond a grey-value-to-colour map.

Examples
--------
>>> import numpy as np
>>> ct = np.array([[10000, 30000]], np.uint16)
>>> rgb = np.array([[[250, 250, 250], [90, 40, 120]]], np.uint8)
>>> table = fit_lookup([ct], [rgb], [np.ones((1, 2), bool)], n_bins=4)
>>> apply_lookup(table, ct).tolist()
[[[250, 250, 250], [90, 40, 120]]]
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import pandas as pd


@dataclasses.dataclass(frozen=True)
class ColourLookup:
    """A fitted grey value -> colour table.

    Attributes
    ----------
    edges : ndarray
        ``(n_bins + 1,)`` float64 bin edges over the CT grey values.
    colours : ndarray
        ``(n_bins, 3)`` float64 mean RGB of each bin (interpolated where ``counts`` is 0).
    counts : ndarray
        ``(n_bins,)`` int64 training pixels per bin.
    """

    edges: np.ndarray
    colours: np.ndarray
    counts: np.ndarray

    @property
    def n_bins(self) -> int:
        """Number of bins."""
        return len(self.counts)

    def to_frame(self) -> pd.DataFrame:
        """The table as rows ``low, high, r, g, b, count`` (one per bin), e.g. to write as CSV."""
        return pd.DataFrame({"low": self.edges[:-1], "high": self.edges[1:], "r": self.colours[:, 0],
                             "g": self.colours[:, 1], "b": self.colours[:, 2], "count": self.counts})

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, where: str = "lookup table") -> "ColourLookup":
        """The inverse of :meth:`to_frame`; ``where`` names the source in errors."""
        missing = {"low", "high", "r", "g", "b", "count"} - set(frame.columns)
        if missing:
            raise ValueError(f"{where}: missing column(s) {sorted(missing)}")
        low, high = frame["low"].to_numpy(float), frame["high"].to_numpy(float)
        if not len(frame) or not np.allclose(low[1:], high[:-1]) or not np.all(high > low):
            raise ValueError(f"{where}: the bins (low, high) must be contiguous and increasing")
        colours = frame[["r", "g", "b"]].to_numpy(float)
        if not np.all(np.isfinite(colours)):
            raise ValueError(f"{where}: columns r, g, b hold NaN or infinite values")
        return cls(np.append(low, high[-1]), colours, frame["count"].to_numpy(np.int64))


def _check_inputs(ct_list: Sequence[np.ndarray], rgb_list: Sequence[np.ndarray],
                  mask_list: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    if not (len(ct_list) == len(rgb_list) == len(mask_list)):
        raise ValueError(f"need one CT, one RGB image and one mask per pair, got {len(ct_list)}, {len(rgb_list)} "
                         f"and {len(mask_list)}")
    if not len(ct_list):
        raise ValueError("no training pairs to fit the lookup on")
    pixels = []
    for i, (ct, rgb, mask) in enumerate(zip(ct_list, rgb_list, mask_list)):
        ct, rgb, mask = np.asarray(ct), np.asarray(rgb), np.asarray(mask)
        if ct.ndim != 2:
            raise ValueError(f"pair {i}: CT must be a 2D slice, got shape {ct.shape}")
        if rgb.shape != ct.shape + (3,) or rgb.dtype != np.uint8:
            raise ValueError(f"pair {i}: RGB must be uint8 of shape {ct.shape + (3,)}, got {rgb.dtype} {rgb.shape}")
        if mask.shape != ct.shape or mask.dtype != bool:
            raise ValueError(f"pair {i}: mask must be bool of shape {ct.shape}, got {mask.dtype} {mask.shape}")
        values = ct[mask].astype(np.float64)
        if not np.all(np.isfinite(values)):
            raise ValueError(f"pair {i}: the CT holds NaN or infinite values inside the mask")
        pixels.append((values, rgb[mask].astype(np.float64)))
    if not sum(len(v) for v, _ in pixels):
        raise ValueError("the masks hold no pixel: nothing to fit the lookup on")
    return pixels


def fit_lookup(ct_list: Sequence[np.ndarray], rgb_list: Sequence[np.ndarray], mask_list: Sequence[np.ndarray],
               *, n_bins: int = 256) -> ColourLookup:
    """Fit the grey value -> mean colour table on registered pairs' masked pixels.

    Parameters
    ----------
    ct_list : sequence of ndarray
        ``(Y, X)`` normalised CT slices (uint16 or float) of the training pairs.
    rgb_list : sequence of ndarray
        ``(Y, X, 3)`` uint8 normalised histology of the same pairs, pixel for pixel.
    mask_list : sequence of ndarray
        ``(Y, X)`` bool sample-correspondence masks: only these pixels are fitted.
    n_bins : int
        Bins over ``[min, max]`` of the masked CT values of all pairs.

    Returns
    -------
    ColourLookup

    Examples
    --------
    A two-level CT: bone (30000) purple, soft tissue (15000) blue; the bins between them, which no
    pixel fell in, are interpolated.

    >>> import numpy as np
    >>> ct = np.array([[15000, 30000]], np.uint16)
    >>> rgb = np.array([[[100, 120, 220], [120, 60, 140]]], np.uint8)
    >>> table = fit_lookup([ct], [rgb], [np.ones((1, 2), bool)], n_bins=3)
    >>> table.colours.tolist(), table.counts.tolist()
    ([[100.0, 120.0, 220.0], [110.0, 90.0, 180.0], [120.0, 60.0, 140.0]], [1, 0, 1])
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be positive, got {n_bins}")
    pixels = _check_inputs(ct_list, rgb_list, mask_list)
    values = np.concatenate([v for v, _ in pixels])
    colours = np.concatenate([c for _, c in pixels])
    low, high = float(values.min()), float(values.max())
    if high <= low:
        high = low + 1.0  # one grey value: one bin holds it all
    edges = np.linspace(low, high, n_bins + 1)
    index = _bin_index(edges, values)
    counts = np.bincount(index, minlength=n_bins).astype(np.int64)
    sums = np.stack([np.bincount(index, weights=colours[:, c], minlength=n_bins) for c in range(3)], axis=1)
    filled = counts > 0
    means = np.zeros((n_bins, 3))
    means[filled] = sums[filled] / counts[filled, None]
    centres = (edges[:-1] + edges[1:]) / 2.0
    for c in range(3):  # empty bins: linear between the filled neighbours, flat beyond the ends
        means[~filled, c] = np.interp(centres[~filled], centres[filled], means[filled, c])
    return ColourLookup(edges, means, counts)


def _bin_index(edges: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The bin of each value; values beyond the fitted range fall in the end bins."""
    n_bins = len(edges) - 1
    width = (edges[-1] - edges[0]) / n_bins
    return np.clip(np.floor((values - edges[0]) / width), 0, n_bins - 1).astype(np.int64)


def apply_lookup(table: ColourLookup, ct: np.ndarray) -> np.ndarray:
    """Colour a CT slice by the table: each pixel takes its grey value's bin colour.

    Parameters
    ----------
    table : ColourLookup
        From :func:`fit_lookup`.
    ct : ndarray
        ``(Y, X)`` normalised CT (as the table was fitted on); values outside the fitted range take
        the end bins' colours.

    Returns
    -------
    ndarray
        ``(Y, X, 3)`` uint8 RGB.

    Examples
    --------
    >>> import numpy as np
    >>> table = ColourLookup(np.array([0.0, 1.0, 2.0]), np.array([[0.0, 0, 0], [255, 128, 0]]), np.array([1, 1]))
    >>> apply_lookup(table, np.array([[-5.0, 0.5, 1.5, 9.0]])).tolist()
    [[[0, 0, 0], [0, 0, 0], [255, 128, 0], [255, 128, 0]]]
    """
    ct = np.asarray(ct)
    if ct.ndim != 2:
        raise ValueError(f"CT must be a 2D slice, got shape {ct.shape}")
    values = ct.astype(np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError("the CT holds NaN or infinite values")
    rgb = np.clip(np.rint(table.colours), 0, 255).astype(np.uint8)
    return rgb[_bin_index(table.edges, values)]
