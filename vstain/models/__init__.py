"""The networks and the four models of the paper (section 2.6), by name.

=================  ===========================================  ==========================
name               generator loss                               networks
=================  ===========================================  ==========================
``mod_cyclegan``   Eq. 7: GAN + cyc + id + pixelwise + greyscale  2 ResNet G, 2 PatchGAN D
``cyclegan``       Eq. 4: GAN + cyc + id                         2 ResNet G, 2 PatchGAN D
``cyclegan_invct`` Eq. 4, CT input inverted                      2 ResNet G, 2 PatchGAN D
``pix2pix``        Eq. 10: conditional GAN + l1                  U-Net G, conditional PatchGAN
=================  ===========================================  ==========================

Generator names follow the paper: ``G_XY`` maps CT (domain X) to histology (Y),
``G_YX`` histology to CT; ``D_Y`` judges histology, ``D_X`` CT. Pix2Pix has only
``G_XY`` and a conditional ``D_XY`` that sees (CT, histology) stacked (6 channels).

Checkpoint files, and rebuilding a generator from one, are :mod:`vstain.models.checkpoint`.

Examples
--------
>>> from vstain.config import load_profile
>>> nets = build_networks("pix2pix", load_profile("smoke").training, seed=0)
>>> sorted(nets)
['D_XY', 'G_XY']
>>> model_spec("unet")
Traceback (most recent call last):
...
ValueError: unknown model 'unet'; valid models: mod_cyclegan, cyclegan, cyclegan_invct, pix2pix
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from vstain.models.blocks import count_parameters, init_weights, norm_layer
from vstain.models.patchgan import PatchDiscriminator, receptive_field
from vstain.models.resnet import ResnetGenerator
from vstain.models.unet import UnetGenerator
from vstain.vocabulary import MODEL_NAMES

__all__ = [
    "MODEL_NAMES", "ModelSpec", "model_spec", "architecture", "build_generator", "build_discriminator",
    "build_networks", "loss_weights", "ResnetGenerator", "PatchDiscriminator", "UnetGenerator",
    "count_parameters", "init_weights", "norm_layer", "receptive_field",
]


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What distinguishes one of the four models.

    Attributes
    ----------
    name : str
    family : {"cyclegan", "pix2pix"}
        Two generators and two unconditional discriminators, or one generator and a
        conditional discriminator.
    paired_losses : bool
        Adds the pixelwise (Eq. 5) and greyscale (Eq. 6) terms (Eq. 7 instead of Eq. 4).
    invert_ct : bool
        The CT enters the network inverted (bright background, dark bone).
    equation : str
        The paper's total generator loss.
    """

    name: str
    family: str
    paired_losses: bool
    invert_ct: bool
    equation: str


_SPECS = {
    "mod_cyclegan": ModelSpec("mod_cyclegan", "cyclegan", True, False, "Eq. 7"),
    "cyclegan": ModelSpec("cyclegan", "cyclegan", False, False, "Eq. 4"),
    "cyclegan_invct": ModelSpec("cyclegan_invct", "cyclegan", False, True, "Eq. 4"),
    "pix2pix": ModelSpec("pix2pix", "pix2pix", False, False, "Eq. 10"),
}


def model_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of a model name; an unknown name lists the valid ones.

    Examples
    --------
    >>> model_spec("cyclegan_invct").invert_ct
    True
    """
    if name not in _SPECS:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(MODEL_NAMES)}")
    return _SPECS[name]


def loss_weights(name: str, training: Any) -> dict[str, float]:
    """The lambdas of model ``name``'s total generator loss, from ``profile.training``.

    The adversarial term always has weight 1. The standard CycleGANs (Eq. 4) ablate the
    pixelwise and greyscale terms.

    Examples
    --------
    >>> from vstain.config import load_profile
    >>> loss_weights("mod_cyclegan", load_profile("paper").training)
    {'cyc': 6.0, 'id': 3.0, 'px': 6.0, 'gs': 1.0}
    >>> loss_weights("pix2pix", load_profile("paper").training)
    {'l1': 20.0}
    """
    spec = model_spec(name)
    if spec.family == "pix2pix":
        return {"l1": float(training.lambda_l1)}
    weights = {"cyc": float(training.lambda_cyc), "id": float(training.lambda_id)}
    if spec.paired_losses:
        weights.update(px=float(training.lambda_px), gs=float(training.lambda_gs))
    return weights


def architecture(name: str, training: Any) -> dict[str, Any]:
    """The hyper-parameters that rebuild model ``name``'s networks (stored in every checkpoint).

    Examples
    --------
    >>> from vstain.config import load_profile
    >>> architecture("cyclegan", load_profile("paper").training)["generator"]
    {'kind': 'resnet', 'in_channels': 3, 'out_channels': 3, 'ngf': 64, 'n_blocks': 9, 'norm': 'instance'}
    """
    spec = model_spec(name)
    if spec.family == "pix2pix":
        generator = {"kind": "unet", "in_channels": 3, "out_channels": 3, "ngf": training.ngf,
                     "num_downs": training.unet_num_downs, "norm": "batch", "use_dropout": True}
        discriminator = {"in_channels": 6, "ndf": training.ndf, "n_layers": training.n_layers_d, "norm": "batch"}
    else:
        generator = {"kind": "resnet", "in_channels": 3, "out_channels": 3, "ngf": training.ngf,
                     "n_blocks": training.n_blocks, "norm": "instance"}
        discriminator = {"in_channels": 3, "ndf": training.ndf, "n_layers": training.n_layers_d,
                         "norm": "instance"}
    return {"model": name, "family": spec.family, "invert_ct": spec.invert_ct,
            "generator": generator, "discriminator": discriminator}


def build_generator(generator_arch: dict[str, Any], generator: torch.Generator | None = None) -> nn.Module:
    """A generator from its ``architecture(...)["generator"]`` record.

    Examples
    --------
    >>> g = build_generator({"kind": "resnet", "in_channels": 3, "out_channels": 3, "ngf": 4,
    ...                      "n_blocks": 1, "norm": "instance"})
    >>> type(g).__name__
    'ResnetGenerator'
    """
    arch = dict(generator_arch)
    kind = arch.pop("kind", None)
    if kind == "resnet":
        return ResnetGenerator(generator=generator, **arch)
    if kind == "unet":
        return UnetGenerator(generator=generator, **arch)
    raise ValueError(f"unknown generator kind {kind!r}; valid: resnet, unet")


def build_discriminator(discriminator_arch: dict[str, Any], generator: torch.Generator | None = None) -> nn.Module:
    """A PatchGAN from its ``architecture(...)["discriminator"]`` record."""
    return PatchDiscriminator(generator=generator, **discriminator_arch)


def build_networks(name: str, training: Any, seed: int) -> dict[str, nn.Module]:
    """All networks of model ``name``, initialised deterministically from ``seed``.

    Returns ``{"G_XY", "G_YX", "D_X", "D_Y"}`` for the CycleGANs and ``{"G_XY", "D_XY"}``
    for Pix2Pix.
    """
    arch = architecture(name, training)
    rng = torch.Generator().manual_seed(int(seed))
    if arch["family"] == "pix2pix":
        return {"G_XY": build_generator(arch["generator"], rng), "D_XY": build_discriminator(arch["discriminator"], rng)}
    return {
        "G_XY": build_generator(arch["generator"], rng),
        "G_YX": build_generator(arch["generator"], rng),
        "D_X": build_discriminator(arch["discriminator"], rng),
        "D_Y": build_discriminator(arch["discriminator"], rng),
    }


def parameter_counts(training: Any) -> list[dict[str, Any]]:
    """Trainable parameters of each network the profile's ``training`` section builds.

    One row per network kind (the CycleGANs' ResNet generator and PatchGAN discriminator,
    Pix2Pix's U-Net generator and conditional PatchGAN, which sees CT and histology stacked: 6
    input channels), to set beside the reference implementation's counts (pytorch-CycleGAN-and-pix2pix
    at ngf = ndf = 64, 9 blocks, 3 layers, 8 down-samplings: ResNet generator 11,378,179, PatchGAN
    2,764,737, U-Net 54,413,955; ``tests/test_models.py`` holds them).

    Examples
    --------
    >>> from vstain.config import load_profile
    >>> [row["parameters"] for row in parameter_counts(load_profile("paper").training)]
    [11378179, 2764737, 54413955, 2768705]
    """
    rows = []
    for model, parts in (("cyclegan", ("generator", "discriminator")), ("pix2pix", ("generator", "discriminator"))):
        arch = architecture(model, training)
        for part in parts:
            build = build_generator if part == "generator" else build_discriminator
            net = build(arch[part], torch.Generator().manual_seed(0))
            kind = arch[part].get("kind", "patchgan") if part == "generator" else "patchgan"
            rows.append({"model family": arch["family"], "network": f"{kind} {part}",
                         "parameters": count_parameters(net)})
    return rows
