"""Small named building blocks shared by the networks, after pytorch-CycleGAN-and-pix2pix.

The reference implementation (Zhu, Park, Isola et al., ``models/networks.py``) builds
every network from the same few pieces: a normalisation layer chosen by name, a
convolution whose bias is dropped when a batch norm follows (the norm's own shift
replaces it), and a normal(0, 0.02) weight initialisation. Keeping them here makes the
three network modules read like their diagrams.

Examples
--------
>>> import torch
>>> norm = norm_layer("instance")
>>> type(norm(8)).__name__
'InstanceNorm2d'
>>> conv_uses_bias("batch"), conv_uses_bias("instance")
(False, True)
"""

from __future__ import annotations

import functools
from typing import Callable

import torch
from torch import nn

NORMS = ("instance", "batch")


def norm_layer(kind: str) -> Callable[[int], nn.Module]:
    """A factory ``channels -> normalisation layer``.

    Parameters
    ----------
    kind : {"instance", "batch"}
        ``"instance"``: InstanceNorm2d without learnable affine parameters and without
        running statistics (the reference CycleGAN default); ``"batch"``: BatchNorm2d
        with affine parameters (the reference Pix2Pix default).

    Examples
    --------
    >>> layer = norm_layer("batch")(4)
    >>> type(layer).__name__, layer.affine
    ('BatchNorm2d', True)
    """
    if kind == "instance":
        return functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)
    if kind == "batch":
        return functools.partial(nn.BatchNorm2d, affine=True, track_running_stats=True)
    raise ValueError(f"unknown normalisation {kind!r}; valid: {', '.join(NORMS)}")


def conv_uses_bias(kind: str) -> bool:
    """Whether a convolution followed by norm ``kind`` carries a bias (not before batch norm)."""
    if kind not in NORMS:
        raise ValueError(f"unknown normalisation {kind!r}; valid: {', '.join(NORMS)}")
    return kind == "instance"


def init_weights(net: nn.Module, gain: float = 0.02, generator: torch.Generator | None = None) -> nn.Module:
    """Initialise convolution weights ~ normal(0, gain), norm weights ~ normal(1, gain), biases 0.

    This is the reference ``init_type='normal'`` scheme. ``generator`` makes the draw
    independent of torch's global random state.

    Examples
    --------
    >>> import torch
    >>> net = init_weights(nn.Conv2d(3, 8, 3), generator=torch.Generator().manual_seed(0))
    >>> round(float(net.weight.std()), 2)
    0.02
    """
    for module in net.modules():
        name = type(module).__name__
        weight = getattr(module, "weight", None)
        bias = getattr(module, "bias", None)
        if ("Conv" in name or "Linear" in name) and weight is not None:
            with torch.no_grad():
                weight.normal_(0.0, gain, generator=generator)
                if bias is not None:
                    bias.zero_()
        elif "BatchNorm2d" in name and weight is not None:
            with torch.no_grad():
                weight.normal_(1.0, gain, generator=generator)
                bias.zero_()
    return net


def count_parameters(net: nn.Module) -> int:
    """The number of learnable parameters of ``net``.

    Examples
    --------
    >>> count_parameters(nn.Conv2d(3, 8, 3))
    224
    """
    return sum(p.numel() for p in net.parameters() if p.requires_grad)
