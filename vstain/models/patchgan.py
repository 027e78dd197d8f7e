"""The PatchGAN discriminator (Isola et al. 2017), 70x70 receptive field with ``n_layers=3``.

Layout (reference ``NLayerDiscriminator``)::

    C64 (no norm) -> C128 -> C256 -> C512 (stride 1) -> 1-channel map

``Ck``: 4x4 convolution, norm, LeakyReLU(0.2); stride 2 except the last two. The output
is a map of real/fake scores, one per overlapping 70x70 patch of the input. The
CycleGANs use it unconditionally on 3-channel images; Pix2Pix conditions it on the
input by concatenation (3 + 3 = 6 channels).

Examples
--------
>>> import torch
>>> net = PatchDiscriminator(3, ndf=8, n_layers=3)
>>> net(torch.zeros(1, 3, 64, 64)).shape
torch.Size([1, 1, 6, 6])
"""

from __future__ import annotations

import torch
from torch import nn

from vstain.models.blocks import conv_uses_bias, init_weights, norm_layer


def discriminator_block(in_channels: int, out_channels: int, stride: int, norm: str | None) -> list[nn.Module]:
    """4x4 convolution (padding 1), optional norm, LeakyReLU(0.2)."""
    bias = True if norm is None else conv_uses_bias(norm)
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, 4, stride=stride, padding=1, bias=bias)]
    if norm is not None:
        layers.append(norm_layer(norm)(out_channels))
    layers.append(nn.LeakyReLU(0.2, True))
    return layers


def receptive_field(n_layers: int) -> int:
    """Receptive field side in pixels of a PatchGAN with ``n_layers`` (3 -> 70).

    Examples
    --------
    >>> receptive_field(3), receptive_field(1)
    (70, 16)
    """
    field = 1
    # layers from output back to input: final conv (s1), penultimate (s1), then n_layers stride-2 convs
    for stride in [1, 1] + [2] * n_layers:
        field = (field - 1) * stride + 4
    return field


class PatchDiscriminator(nn.Module):
    """A PatchGAN: ``n_layers`` stride-2 4x4 convolutions, then two stride-1 ones, to a 1-channel score map.

    Parameters
    ----------
    in_channels : int
        3 for the CycleGAN discriminators, 6 (input + output) for Pix2Pix.
    ndf : int
        Width of the first layer (paper: 64).
    n_layers : int
        Stride-2 layers; 3 gives the 70x70 receptive field.
    norm : {"instance", "batch"}
    generator : torch.Generator, optional
        Random source of the normal(0, 0.02) weight initialisation.

    Examples
    --------
    >>> from vstain.models.blocks import count_parameters
    >>> count_parameters(PatchDiscriminator(3, ndf=64, n_layers=3))
    2764737
    """

    def __init__(self, in_channels: int, ndf: int = 64, n_layers: int = 3, norm: str = "instance",
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        if n_layers < 1 or ndf < 1 or in_channels < 1:
            raise ValueError(f"PatchDiscriminator: invalid sizes in={in_channels} ndf={ndf} n_layers={n_layers}")
        layers = discriminator_block(in_channels, ndf, stride=2, norm=None)
        width = ndf
        for n in range(1, n_layers):
            new_width = ndf * min(2 ** n, 8)
            layers += discriminator_block(width, new_width, stride=2, norm=norm)
            width = new_width
        new_width = ndf * min(2 ** n_layers, 8)
        layers += discriminator_block(width, new_width, stride=1, norm=norm)
        layers.append(nn.Conv2d(new_width, 1, 4, stride=1, padding=1))
        self.model = nn.Sequential(*layers)
        init_weights(self, generator=generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
