"""The U-Net generator of Pix2Pix (Isola et al. 2017), "U-Net 256" with ``num_downs=8``.

Built recursively from the innermost block outwards (reference ``UnetGenerator``)::

    outermost: conv(in->ngf) ........................................ ReLU, deconv(2ngf->out), tanh
      block:     LReLU, conv(ngf->2ngf), norm ...................... ReLU, deconv(4ngf->ngf), norm
        ...        (num_downs - 5) blocks at 8ngf with dropout
          innermost: LReLU, conv(8ngf->8ngf) ........................ ReLU, deconv(8ngf->8ngf), norm

each block concatenates its input with its output (the skip connection). Every
convolution is 4x4 stride 2, so the input side must be a multiple of ``2**num_downs``.

Examples
--------
>>> import torch
>>> net = UnetGenerator(3, 3, num_downs=5, ngf=4)
>>> net(torch.zeros(2, 3, 32, 32)).shape
torch.Size([2, 3, 32, 32])
"""

from __future__ import annotations

import torch
from torch import nn

from vstain.models.blocks import conv_uses_bias, init_weights, norm_layer


class UnetSkipConnectionBlock(nn.Module):
    """One level of the U-Net: down, the inner ``submodule``, up, then concatenate with the input.

    Parameters
    ----------
    outer_channels, inner_channels : int
        Channels outside this level and inside it.
    in_channels : int, optional
        Input channels when they differ from ``outer_channels`` (the outermost level).
    submodule : nn.Module, optional
        The next level in; ``None`` for the innermost.
    outermost, innermost : bool
    norm : {"instance", "batch"}
    use_dropout : bool
        Dropout 0.5 after the up-convolution (the reference puts it on the middle 8ngf levels).
    """

    def __init__(self, outer_channels: int, inner_channels: int, in_channels: int | None = None,
                 submodule: nn.Module | None = None, outermost: bool = False, innermost: bool = False,
                 norm: str = "batch", use_dropout: bool = False) -> None:
        super().__init__()
        self.outermost = outermost
        bias = conv_uses_bias(norm)
        make_norm = norm_layer(norm)
        in_channels = outer_channels if in_channels is None else in_channels
        down_conv = nn.Conv2d(in_channels, inner_channels, 4, stride=2, padding=1, bias=bias)
        if outermost:
            up_conv = nn.ConvTranspose2d(inner_channels * 2, outer_channels, 4, stride=2, padding=1)
            layers = [down_conv, submodule, nn.ReLU(True), up_conv, nn.Tanh()]
        elif innermost:
            up_conv = nn.ConvTranspose2d(inner_channels, outer_channels, 4, stride=2, padding=1, bias=bias)
            layers = [nn.LeakyReLU(0.2, True), down_conv, nn.ReLU(True), up_conv, make_norm(outer_channels)]
        else:
            up_conv = nn.ConvTranspose2d(inner_channels * 2, outer_channels, 4, stride=2, padding=1, bias=bias)
            layers = [nn.LeakyReLU(0.2, True), down_conv, make_norm(inner_channels), submodule,
                      nn.ReLU(True), up_conv, make_norm(outer_channels)]
            if use_dropout:
                layers.append(nn.Dropout(0.5))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], 1)


class UnetGenerator(nn.Module):
    """Pix2Pix's U-Net generator.

    Parameters
    ----------
    in_channels, out_channels : int
    num_downs : int
        Down-samplings; 8 for 256 px patches (the 1x1 bottleneck). At least 5.
    ngf : int
        Width of the outermost level (paper: 64).
    norm : {"instance", "batch"}
        Batch norm is the reference Pix2Pix default.
    use_dropout : bool
        Dropout 0.5 on the 8ngf levels (on in the reference Pix2Pix).
    generator : torch.Generator, optional
        Random source of the normal(0, 0.02) weight initialisation.

    Examples
    --------
    >>> from vstain.models.blocks import count_parameters
    >>> count_parameters(UnetGenerator(3, 3, num_downs=8, ngf=64))
    54413955
    """

    def __init__(self, in_channels: int, out_channels: int, num_downs: int = 8, ngf: int = 64,
                 norm: str = "batch", use_dropout: bool = True,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        if num_downs < 5 or ngf < 1:
            raise ValueError(f"UnetGenerator: num_downs must be >= 5 and ngf >= 1, got {num_downs}, {ngf}")
        self.num_downs = num_downs
        block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, innermost=True, norm=norm)
        for _ in range(num_downs - 5):
            block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, submodule=block, norm=norm, use_dropout=use_dropout)
        block = UnetSkipConnectionBlock(ngf * 4, ngf * 8, submodule=block, norm=norm)
        block = UnetSkipConnectionBlock(ngf * 2, ngf * 4, submodule=block, norm=norm)
        block = UnetSkipConnectionBlock(ngf, ngf * 2, submodule=block, norm=norm)
        self.model = UnetSkipConnectionBlock(out_channels, ngf, in_channels=in_channels, submodule=block,
                                             outermost=True, norm=norm)
        init_weights(self, generator=generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        side = 2 ** self.num_downs
        if x.shape[-1] % side or x.shape[-2] % side:
            raise ValueError(f"UnetGenerator: image sides {tuple(x.shape[-2:])} must be multiples of {side} "
                             f"(num_downs={self.num_downs})")
        return self.model(x)
