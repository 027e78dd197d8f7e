"""SSIM, PSNR and LPIPS on masked patches (paper 2.10, 3.2, Fig. 7).

The generated whole-slide histology is compared with the real histology on square
patches (paper: 256 px) laid on a grid, keeping only patches that the
sample-correspondence mask covers by at least 50 %. Outside the mask both images
show the mean background value of the real image (paper 2.8), so background
noise neither helps nor hurts a model.

* SSIM, Eq. 11: :func:`ssim` (scikit-image, RGB, data range 255);
* PSNR, Eq. 12-13: :func:`psnr` (L = 255);
* LPIPS, Eq. 14: :func:`lpips_distances` (the ``lpips`` package, SqueezeNet).

LPIPS needs torchvision's pretrained SqueezeNet 1.1 weights, which torchvision keeps in
the torch hub cache. Nothing is downloaded here: when the file is absent,
:func:`load_lpips` says which file to put where, and the LPIPS column is NaN with
``lpips_available = False``. It is never filled from a randomly initialised network.

The stage that measures every model and fold is :mod:`vstain.stages.evaluate`; Table 1, its intervals and
the sentences the chapters state from it are :mod:`vstain.reports.table1`.

Examples
--------
>>> import numpy as np
>>> real = np.zeros((8, 8, 3), np.uint8)
>>> generated = np.full((8, 8, 3), 255, np.uint8)
>>> psnr(real, generated)
0.0
"""

from __future__ import annotations

import dataclasses
import hashlib
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from skimage.metrics import structural_similarity

from vstain.data import network_to_histology
from vstain.infer import ct_network_channels_last
from vstain.masks import apply_mask, background_fill

METRICS = ("ssim", "lpips", "psnr")
HIGHER_IS_BETTER = {"ssim": True, "lpips": False, "psnr": True}

# torchvision's SqueezeNet 1.1 ImageNet weights; the 8 hex digits are the start of its SHA-256.
SQUEEZENET_FILE = "squeezenet1_1-b8a52dc0.pth"
SQUEEZENET_URL = "https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth"


# --------------------------------------------------------------------------- metrics


def _check_pair(real: np.ndarray, generated: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    real = np.asarray(real)
    generated = np.asarray(generated)
    if real.shape != generated.shape:
        raise ValueError(f"real shape {real.shape} != generated shape {generated.shape}")
    if real.ndim != 3 or real.shape[-1] != 3:
        raise ValueError(f"images must be (Y, X, 3) RGB, got shape {real.shape}")
    for name, image in (("real", real), ("generated", generated)):
        if image.dtype != np.uint8:
            raise ValueError(f"{name} image must be uint8 RGB, got dtype {image.dtype}")
    return real, generated


def ssim(real: np.ndarray, generated: np.ndarray) -> float:
    """Structural similarity of two RGB images, Eq. 11 (scikit-image, data range 255).

    SSIM is computed per channel in 7x7 windows (Wang et al. 2004 constants
    ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2``) and averaged.

    Examples
    --------
    >>> import numpy as np
    >>> image = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    >>> ssim(image, image)
    1.0
    """
    real, generated = _check_pair(real, generated)
    return float(structural_similarity(real, generated, channel_axis=-1, data_range=255))


def psnr(real: np.ndarray, generated: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB, Eq. 12-13 with L = 255; ``inf`` for identical images.

    Examples
    --------
    >>> import numpy as np
    >>> real = np.zeros((4, 4, 3), np.uint8)
    >>> round(psnr(real, real + 1), 2)   # MSE = 1
    48.13
    """
    real, generated = _check_pair(real, generated)
    mse = np.mean((real.astype(np.float64) - generated.astype(np.float64)) ** 2)
    if mse == 0:
        return float("inf")
    return float(10.0 * np.log10(255.0**2 / mse))


@dataclasses.dataclass
class LPIPSStatus:
    """The outcome of :func:`load_lpips`: the model (or None) and why."""

    model: torch.nn.Module | None
    available: bool
    message: str


def squeezenet_weights_path(hub_dir: str | Path | None = None) -> Path:
    """Where torchvision looks for the SqueezeNet 1.1 weights: ``<hub_dir>/checkpoints/``.

    ``hub_dir`` defaults to :func:`torch.hub.get_dir` (``$TORCH_HOME/hub``, by default
    ``~/.cache/torch/hub``).

    Examples
    --------
    >>> squeezenet_weights_path("/tmp/hub").as_posix()
    '/tmp/hub/checkpoints/squeezenet1_1-b8a52dc0.pth'
    """
    hub = Path(hub_dir) if hub_dir is not None else Path(torch.hub.get_dir())
    return hub / "checkpoints" / SQUEEZENET_FILE


def _missing_message(path: Path) -> str:
    return (
        f"LPIPS unavailable: the pretrained SqueezeNet weights {path} are missing. Put torchvision's "
        f"{SQUEEZENET_FILE} (from {SQUEEZENET_URL}) at {path} (the torch hub cache, $TORCH_HOME/hub/checkpoints/) "
        "and re-run the evaluation; SSIM and PSNR are reported meanwhile and the LPIPS column is NaN."
    )


def load_lpips(hub_dir: str | Path | None = None, *, random_backbone: bool = False) -> LPIPSStatus:
    """The LPIPS model of Eq. 14 with a SqueezeNet backbone, without any download.

    Parameters
    ----------
    hub_dir : str or Path, optional
        Torch hub directory holding ``checkpoints/squeezenet1_1-b8a52dc0.pth``;
        default :func:`torch.hub.get_dir`.
    random_backbone : bool
        Build the model with a randomly initialised backbone. Only for testing the
        plumbing; such a model's numbers mean nothing and are never reported.

    Returns
    -------
    LPIPSStatus
        ``available`` is False (and ``model`` None) when the weights file is missing or
        is not the expected file; ``message`` then says which file to put where.
    """
    # lpips (and the torchvision it loads) are imported only when LPIPS is asked for: a slow import
    import lpips
    import torchvision

    with warnings.catch_warnings():
        # lpips builds its backbone with torchvision's deprecated ``pretrained=`` argument.
        warnings.simplefilter("ignore", UserWarning)
        if random_backbone:
            model = lpips.LPIPS(net="squeeze", pnet_rand=True, verbose=False).eval()
            return LPIPSStatus(model, True, "LPIPS with a RANDOM SqueezeNet backbone (plumbing test only)")
        path = squeezenet_weights_path(hub_dir)
        if not path.is_file():
            return LPIPSStatus(None, False, _missing_message(path))
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        expected = SQUEEZENET_FILE.rsplit("-", 1)[1].split(".")[0]
        if not digest.startswith(expected):
            return LPIPSStatus(None, False, f"LPIPS unavailable: {path} is not torchvision's SqueezeNet 1.1 file "
                                            f"(SHA-256 starts {digest[:8]}, expected {expected}). "
                               + _missing_message(path).split(". ", 1)[1])
        backbone = torchvision.models.squeezenet1_1(weights=None)
        backbone.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        # pnet_rand=True avoids any download; the ImageNet weights are copied in below and
        # the LPIPS linear layers come with the lpips package.
        model = lpips.LPIPS(net="squeeze", pnet_rand=True, verbose=False)
    for stage in model.net.children():
        for name, layer in stage.named_children():
            layer.load_state_dict(backbone.features[int(name)].state_dict())
    return LPIPSStatus(model.eval(), True, f"LPIPS (SqueezeNet) with weights from {path}")


def lpips_distances(
    real: np.ndarray, generated: np.ndarray, model: torch.nn.Module, *, batch_size: int = 16
) -> np.ndarray:
    """LPIPS distance, Eq. 14, of each pair of RGB patches.

    Parameters
    ----------
    real, generated : ndarray
        ``(N, P, P, 3)`` or ``(P, P, 3)`` uint8 patches.
    model : torch.nn.Module
        From :func:`load_lpips`.
    batch_size : int
        Patches per forward pass.

    Returns
    -------
    ndarray
        ``(N,)`` float64 distances (lower is more similar).

    Examples
    --------
    >>> import numpy as np
    >>> status = load_lpips(random_backbone=True)   # plumbing only
    >>> image = np.zeros((2, 32, 32, 3), np.uint8)
    >>> lpips_distances(image, image, status.model).tolist()
    [0.0, 0.0]
    """
    real = np.asarray(real)
    generated = np.asarray(generated)
    if real.ndim == 3:
        real, generated = real[None], generated[None]
    if real.shape != generated.shape or real.ndim != 4 or real.shape[-1] != 3:
        raise ValueError(f"expected two (N, P, P, 3) patch stacks, got {real.shape} and {generated.shape}")

    def to_tensor(batch: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(batch.transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1.0)

    out = []
    with torch.inference_mode():
        for start in range(0, len(real), batch_size):
            d = model(to_tensor(real[start:start + batch_size]), to_tensor(generated[start:start + batch_size]))
            out.append(d.reshape(-1).double().numpy())
    return np.concatenate(out) if out else np.zeros(0)


# --------------------------------------------------------------------------- patches


def patch_grid(mask: np.ndarray, patch_size: int, step: int, *, flush: bool = True
               ) -> tuple[np.ndarray, np.ndarray]:
    """Origins of a square patch grid over ``mask`` and how many mask pixels each patch covers.

    The one placement of patches by mask coverage: the evaluation's patches
    (:func:`sample_patches`), the FRC patches (:func:`vstain.frc.patch_origins`) and the
    chapters' regions of interest (:func:`choose_roi`) are all chosen from it.

    Parameters
    ----------
    mask : ndarray of bool
        ``(Y, X)``.
    patch_size, step : int
        Patch side and grid stride in pixels; the grid starts at 0.
    flush : bool
        Add a last row / column of patches flush with the far edge, so that the whole
        slide is covered.

    Returns
    -------
    origins : ndarray
        ``(N, 2)`` int ``(y, x)``, row by row; none when the mask is smaller than a patch.
    covered : ndarray
        ``(N,)`` int, the mask pixels inside each patch (from an integral image).

    Examples
    --------
    >>> import numpy as np
    >>> mask = np.zeros((6, 6), bool); mask[:, :3] = True
    >>> origins, covered = patch_grid(mask, 4, 4)
    >>> origins.tolist(), covered.tolist()
    ([[0, 0], [0, 2], [2, 0], [2, 2]], [12, 4, 12, 4])
    """
    mask = np.asarray(mask, bool)
    if min(mask.shape) < patch_size:
        return np.zeros((0, 2), int), np.zeros(0, np.int64)

    def starts(size: int) -> np.ndarray:
        s = list(range(0, size - patch_size + 1, step))
        if flush and s[-1] != size - patch_size:
            s.append(size - patch_size)
        return np.asarray(s)

    integral = np.pad(mask.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    ys, xs = np.meshgrid(starts(mask.shape[0]), starts(mask.shape[1]), indexing="ij")
    ys, xs = ys.ravel(), xs.ravel()
    p = patch_size
    covered = integral[ys + p, xs + p] - integral[ys, xs + p] - integral[ys + p, xs] + integral[ys, xs]
    return np.stack([ys, xs], axis=1), covered


def sample_patches(
    mask: np.ndarray, *, patch_size: int, step: int, min_mask_fraction: float
) -> np.ndarray:
    """Origins of the grid patches that the mask covers by at least ``min_mask_fraction``.

    The grid starts at 0 every ``step`` pixels; a last row/column flush with the far
    edge is added so the whole slide is eligible (:func:`patch_grid`).

    Parameters
    ----------
    mask : ndarray of bool
        ``(Y, X)`` sample-correspondence mask.
    patch_size, step : int
        Patch side and grid stride in pixels.
    min_mask_fraction : float
        Paper: 0.5 ("a 50 % overlap or greater").

    Returns
    -------
    ndarray
        ``(N, 2)`` int ``(y, x)`` origins, row by row.

    Examples
    --------
    >>> import numpy as np
    >>> mask = np.zeros((8, 8), bool); mask[:, :3] = True
    >>> sample_patches(mask, patch_size=4, step=4, min_mask_fraction=0.5).tolist()
    [[0, 0], [4, 0]]
    """
    mask = np.asarray(mask, bool)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2D, got shape {mask.shape}")
    if patch_size < 1 or step < 1:
        raise ValueError(f"patch_size and step must be positive, got {patch_size} and {step}")
    if not 0 <= min_mask_fraction <= 1:
        raise ValueError(f"min_mask_fraction must be in [0, 1], got {min_mask_fraction}")
    origins, covered = patch_grid(mask, patch_size, step)
    keep = covered >= min_mask_fraction * patch_size * patch_size - 1e-9
    return origins[keep]


def patch_metrics(
    real: np.ndarray,
    generated: np.ndarray,
    mask: np.ndarray,
    *,
    patch_size: int,
    step: int,
    min_mask_fraction: float,
    lpips_model: torch.nn.Module | None = None,
    real_fill: Sequence[float] | None = None,
    generated_fill: Sequence[float] | None = None,
) -> pd.DataFrame:
    """SSIM, PSNR and LPIPS of every masked patch of a whole slide.

    Pixels outside ``mask`` are replaced by the mean background value (paper 2.8):
    ``real_fill`` (default: the real image's mean outside the mask) in the real image and
    ``generated_fill`` (default: the same value) in the generated one.

    Parameters
    ----------
    real, generated : ndarray
        ``(Y, X, 3)`` uint8 real and generated histology.
    mask : ndarray of bool
        ``(Y, X)`` sample-correspondence mask.
    patch_size, step, min_mask_fraction
        As :func:`sample_patches`.
    lpips_model : torch.nn.Module, optional
        From :func:`load_lpips`; without it the ``lpips`` column is NaN.

    Returns
    -------
    pandas.DataFrame
        One row per patch: ``y, x, mask_fraction, ssim, psnr, lpips``.

    Examples
    --------
    >>> import numpy as np
    >>> real = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    >>> table = patch_metrics(real, real, np.ones((16, 16), bool), patch_size=8, step=8, min_mask_fraction=0.5)
    >>> table[["y", "x", "ssim"]].values.tolist()[:2]
    [[0.0, 0.0, 1.0], [0.0, 8.0, 1.0]]
    """
    real, generated = _check_pair(real, generated)
    mask = np.asarray(mask, bool)
    if mask.shape != real.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} does not match image shape {real.shape[:2]}")
    real_fill = background_fill(real, mask) if real_fill is None else np.asarray(real_fill, float)
    generated_fill = real_fill if generated_fill is None else np.asarray(generated_fill, float)
    real_m = apply_mask(real, mask, real_fill)
    generated_m = apply_mask(generated, mask, generated_fill)
    origins = sample_patches(mask, patch_size=patch_size, step=step, min_mask_fraction=min_mask_fraction)
    p = patch_size
    rows = []
    for y, x in origins:
        a = real_m[y:y + p, x:x + p]
        b = generated_m[y:y + p, x:x + p]
        rows.append((y, x, mask[y:y + p, x:x + p].mean(), ssim(a, b), psnr(a, b)))
    table = pd.DataFrame(rows, columns=["y", "x", "mask_fraction", "ssim", "psnr"])
    table["lpips"] = np.nan
    if lpips_model is not None and len(origins):
        reals = np.stack([real_m[y:y + p, x:x + p] for y, x in origins])
        gens = np.stack([generated_m[y:y + p, x:x + p] for y, x in origins])
        table["lpips"] = lpips_distances(reals, gens, lpips_model)
    return table


# --------------------------------------------------------------------------- the raw-CT baseline


def raw_ct_as_rgb(ct: np.ndarray) -> np.ndarray:
    """The raw CT as a greyscale RGB image (the baseline of paper 3.2), via the network mapping.

    Examples
    --------
    >>> import numpy as np
    >>> raw_ct_as_rgb(np.array([[0, 65535]], np.uint16))[0].tolist()
    [[0, 0, 0], [255, 255, 255]]
    """
    grey = ct_network_channels_last(np.asarray(ct), channels=3)
    return np.asarray(network_to_histology(np.moveaxis(grey, -1, -3)), np.uint8)


# --------------------------------------------------------------------------- for the chapters


def choose_roi(mask: np.ndarray, size: int, image: np.ndarray | None = None) -> tuple[int, int]:
    """A ``size`` px ROI origin ``(y, x)``: fully inside the mask if possible, the most structured.

    Candidates lie on a grid of step ``size // 4``; among those with the largest mask
    fraction, the one where ``image`` (if given) varies most is chosen, so the ROI shows
    tissue rather than a flat region. Clipped to the slide when it is smaller than ``size``.

    Examples
    --------
    >>> import numpy as np
    >>> mask = np.zeros((64, 64), bool); mask[32:, 32:] = True
    >>> choose_roi(mask, 32)
    (32, 32)
    """
    mask = np.asarray(mask, bool)
    size = min(size, *mask.shape)
    origins, covered = patch_grid(mask, size, max(1, size // 4))
    fractions = covered / (size * size)  # the mean of the mask over each candidate
    best = origins[fractions >= fractions.max() - 1e-9]
    if image is not None and len(best) > 1:
        spread = [np.asarray(image)[y:y + size, x:x + size].std() for y, x in best]
        best = best[[int(np.argmax(spread))]]
    return int(best[0][0]), int(best[0][1])
