"""The ResNet generator of CycleGAN (Johnson et al. 2016; Zhu et al. 2017), used by the three CycleGANs.

Layout (reference ``ResnetGenerator``)::

    c7s1-ngf -> d(2ngf) -> d(4ngf) -> n_blocks x R(4ngf) -> u(2ngf) -> u(ngf) -> c7s1-out -> tanh

``c7s1-k``: reflection pad 3, 7x7 convolution, norm, ReLU; ``d``: 3x3 stride-2 convolution,
norm, ReLU; ``R``: residual block of two reflection-padded 3x3 convolutions; ``u``: 3x3
stride-1/2 transposed convolution, norm, ReLU. The paper uses 9 blocks and ngf 64.

Examples
--------
>>> import torch
>>> net = ResnetGenerator(3, 3, ngf=8, n_blocks=2)
>>> net(torch.zeros(1, 3, 32, 32)).shape
torch.Size([1, 3, 32, 32])
"""

from __future__ import annotations

import torch
from torch import nn

from vstain.models.blocks import conv_uses_bias, init_weights, norm_layer


class ResnetBlock(nn.Module):
    """x + [pad, conv3x3, norm, ReLU, (dropout), pad, conv3x3, norm](x)."""

    def __init__(self, channels: int, norm: str = "instance", use_dropout: bool = False) -> None:
        super().__init__()
        make_norm, bias = norm_layer(norm), conv_uses_bias(norm)
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=bias), make_norm(channels), nn.ReLU(True),
        ]
        if use_dropout:
            layers.append(nn.Dropout(0.5))
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=bias), make_norm(channels)]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


def downsample_block(in_channels: int, out_channels: int, norm: str) -> list[nn.Module]:
    """3x3 stride-2 convolution, norm, ReLU: halves the image side."""
    return [nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1, bias=conv_uses_bias(norm)),
            norm_layer(norm)(out_channels), nn.ReLU(True)]


def upsample_block(in_channels: int, out_channels: int, norm: str) -> list[nn.Module]:
    """3x3 stride-2 transposed convolution, norm, ReLU: doubles the image side."""
    return [nn.ConvTranspose2d(in_channels, out_channels, 3, stride=2, padding=1, output_padding=1,
                               bias=conv_uses_bias(norm)),
            norm_layer(norm)(out_channels), nn.ReLU(True)]


class ResnetGenerator(nn.Module):
    """CycleGAN's ResNet generator: two down-samplings, ``n_blocks`` residual blocks, two up-samplings.

    Parameters
    ----------
    in_channels, out_channels : int
        Image channels in and out (3 and 3 here: CT enters as 3 identical channels).
    ngf : int
        Width of the first layer (paper: 64).
    n_blocks : int
        Residual blocks (paper: 9).
    norm : {"instance", "batch"}
        Normalisation (CycleGAN: instance).
    use_dropout : bool
        Dropout 0.5 inside the residual blocks (off in CycleGAN).
    generator : torch.Generator, optional
        Random source of the normal(0, 0.02) weight initialisation.

    Notes
    -----
    Input sides must be multiples of 4. ResNet-9, ngf 64, 3 -> 3 channels has
    11,378,179 parameters, as the reference implementation.

    Examples
    --------
    >>> from vstain.models.blocks import count_parameters
    >>> count_parameters(ResnetGenerator(3, 3, ngf=64, n_blocks=9))
    11378179
    """

    def __init__(self, in_channels: int, out_channels: int, ngf: int = 64, n_blocks: int = 9,
                 norm: str = "instance", use_dropout: bool = False,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        if n_blocks < 0 or ngf < 1 or in_channels < 1 or out_channels < 1:
            raise ValueError(f"ResnetGenerator: invalid sizes in={in_channels} out={out_channels} "
                             f"ngf={ngf} n_blocks={n_blocks}")
        bias = conv_uses_bias(norm)
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(in_channels, ngf, 7, bias=bias),
                                   norm_layer(norm)(ngf), nn.ReLU(True)]
        layers += downsample_block(ngf, 2 * ngf, norm)
        layers += downsample_block(2 * ngf, 4 * ngf, norm)
        layers += [ResnetBlock(4 * ngf, norm, use_dropout) for _ in range(n_blocks)]
        layers += upsample_block(4 * ngf, 2 * ngf, norm)
        layers += upsample_block(2 * ngf, ngf, norm)
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_channels, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)
        init_weights(self, generator=generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
