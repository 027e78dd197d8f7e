"""The one Mattes mutual-information set-up every fit and score of the registration uses.

Every plane fit, every grid and cone score, every 2D affine fit and every plain MI evaluation is a
SimpleITK :class:`~SimpleITK.ImageRegistrationMethod` set up by :func:`mattes_method`: Mattes MI with
the given histogram bins, linear interpolation, every fixed pixel (or a fixed random subset drawn with
:data:`SAMPLING_SEED`), gradients at the sampled points rather than a gradient image of the moving
volume, and the fixed image's mask. Also here: the fixed image as a one-pixel-thick slab
(:func:`slab_image`), masks in a fixed image's frame (:func:`mask_image`), the bins for a sample count
(:func:`bins_for`) and the thread count every method runs with (:func:`sitk_threads`).

Examples
--------
>>> import numpy as np
>>> fixed = slab_image(np.random.default_rng(0).random((16, 16)).astype(np.float32), 2.0)
>>> method = mattes_method(bins_for(256, 32), mask_image(np.ones((16, 16), bool), fixed))
>>> method.GetInterpolator() == sitk.sitkLinear
True
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import SimpleITK as sitk

#: Seed of the metric's pixel sampling: the same pixels every run.
SAMPLING_SEED = 20250601


def slab_image(grey: np.ndarray, spacing_um: float) -> sitk.Image:
    """A 2D image as a one-pixel-thick 3D image lying in the z = 0 physical plane."""
    image = sitk.GetImageFromArray(grey[None].astype(np.float32))
    image.SetSpacing((spacing_um, spacing_um, spacing_um))
    return image


def mask_image(mask: np.ndarray, like: sitk.Image) -> sitk.Image:
    """``mask`` as a ``uint8`` SimpleITK image in the frame (spacing, origin) of ``like``."""
    image = sitk.GetImageFromArray(mask.astype(np.uint8).reshape(sitk.GetArrayViewFromImage(like).shape))
    image.CopyInformation(like)
    return image


def mattes_method(bins: int, mask: sitk.Image | None = None, *, sampling: float = 1.0,
                  history: list[dict[str, Any]] | None = None, stage: str = "",
                  level: int = 0) -> sitk.ImageRegistrationMethod:
    """A registration method scoring Mattes MI: the one set-up of every fit and evaluation.

    Parameters
    ----------
    bins : int
        Histogram bins (:func:`bins_for`).
    mask : SimpleITK.Image, optional
        Where the fixed image has data (:func:`mask_image`).
    sampling : float
        The fraction of the fixed pixels the metric samples: 1 every pixel, less a fixed random
        subset (:data:`SAMPLING_SEED`); either way the same pixels every run.
    history : list, optional
        If given, one record ``{"stage", "level", "iteration", "mi"}`` is appended per optimiser
        iteration (MI in nats, positive).
    stage, level
        What the records of ``history`` name.

    Returns
    -------
    SimpleITK.ImageRegistrationMethod
        With metric, sampling, interpolator and mask set; the caller sets optimiser and transform.
    """
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=int(bins))
    if sampling < 1.0:  # a fixed random subset of the fixed pixels: a fixed seed keeps it deterministic
        method.SetMetricSamplingStrategy(method.RANDOM)
        method.SetMetricSamplingPercentage(float(sampling), SAMPLING_SEED)
    else:
        method.SetMetricSamplingStrategy(method.NONE)  # every fixed pixel: deterministic
    # The slab samples a few thousand points of a large volume: gradients at those points are cheaper
    # than a gradient image of the whole volume, which ITK would otherwise rebuild for every start.
    method.SetMetricUseMovingImageGradientFilter(False)
    method.SetInterpolator(sitk.sitkLinear)
    if mask is not None:
        method.SetMetricFixedMask(mask)
    if history is not None:
        def record() -> None:
            history.append({"stage": stage, "level": level, "iteration": int(method.GetOptimizerIteration()),
                            "mi": -float(method.GetMetricValue())})

        method.AddCommand(sitk.sitkIterationEvent, record)
    return method


def bins_for(n_samples: int, max_bins: int) -> int:
    """Histogram bins for ``n_samples`` fixed pixels: several samples per joint-histogram cell, 12 to ``max_bins``.

    Examples
    --------
    >>> bins_for(100, 64), bins_for(10_000, 64), bins_for(10**6, 64)
    (12, 50, 64)
    """
    return int(np.clip(np.sqrt(n_samples) / 2.0, 12, max_bins))


@contextlib.contextmanager
def sitk_threads(threads: int):
    """Run every SimpleITK filter and method inside with ``threads`` threads; the previous count after.

    ITK splits every filter and metric over threads and sums their parts in varying order, which the
    optimiser amplifies: a fixed count (1) gives bit-for-bit the same fit on any machine.
    """
    previous = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(int(threads))
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(previous)
