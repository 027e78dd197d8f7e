"""Networks: reference parameter counts, shapes, initialisation, the four models by name."""

import pytest
import torch

from vstain.config import load_profile
from vstain.models import (MODEL_NAMES, PatchDiscriminator, ResnetGenerator, UnetGenerator, architecture,
                           build_generator, build_networks, count_parameters, loss_weights, model_spec,
                           receptive_field)


def test_reference_parameter_counts():
    assert count_parameters(ResnetGenerator(3, 3, ngf=64, n_blocks=9)) == 11_378_179
    assert count_parameters(PatchDiscriminator(3, ndf=64, n_layers=3, norm="instance")) == 2_764_737
    assert count_parameters(UnetGenerator(3, 3, num_downs=8, ngf=64, norm="batch")) == 54_413_955


def test_paper_profile_builds_reference_networks():
    nets = build_networks("mod_cyclegan", load_profile("paper").training, seed=0)
    assert count_parameters(nets["G_XY"]) == 11_378_179
    assert count_parameters(nets["D_Y"]) == 2_764_737
    p2p = build_networks("pix2pix", load_profile("paper").training, seed=0)
    # the reference Pix2Pix discriminator: 6 input channels, batch norm (convs without bias)
    assert count_parameters(p2p["D_XY"]) == 2_768_705
    assert p2p["D_XY"].model[0].in_channels == 6


def test_shapes_and_patch_map():
    x = torch.zeros(2, 3, 64, 64)
    assert ResnetGenerator(3, 3, ngf=8, n_blocks=2)(x).shape == x.shape
    assert UnetGenerator(3, 3, num_downs=6, ngf=4)(x).shape == x.shape
    assert PatchDiscriminator(6, ndf=8)(torch.zeros(2, 6, 70, 70)).shape == (2, 1, 6, 6)
    assert receptive_field(3) == 70
    with pytest.raises(ValueError, match="multiples of 64"):
        UnetGenerator(3, 3, num_downs=6, ngf=4)(torch.zeros(1, 3, 48, 48))


def test_output_range_is_tanh():
    out = ResnetGenerator(3, 3, ngf=4, n_blocks=1)(torch.randn(1, 3, 16, 16) * 100)
    assert out.abs().max() <= 1.0


def test_initialisation_is_normal_002_and_seeded():
    a = build_networks("cyclegan", load_profile("smoke").training, seed=3)
    b = build_networks("cyclegan", load_profile("smoke").training, seed=3)
    c = build_networks("cyclegan", load_profile("smoke").training, seed=4)
    wa = a["G_XY"].model[1].weight
    assert torch.equal(wa, b["G_XY"].model[1].weight)
    assert not torch.equal(wa, c["G_XY"].model[1].weight)
    big = ResnetGenerator(3, 3, ngf=64, n_blocks=1, generator=torch.Generator().manual_seed(0))
    w = torch.cat([m.weight.detach().flatten() for m in big.modules() if isinstance(m, torch.nn.Conv2d)])
    assert abs(float(w.mean())) < 1e-3 and abs(float(w.std()) - 0.02) < 1e-3
    # the two generators of one model are different draws
    assert not torch.equal(a["G_XY"].model[1].weight, a["G_YX"].model[1].weight)


def test_four_models_by_name():
    training = load_profile("paper").training
    assert set(MODEL_NAMES) == {"mod_cyclegan", "cyclegan", "cyclegan_invct", "pix2pix"}
    assert loss_weights("mod_cyclegan", training) == {"cyc": 6.0, "id": 3.0, "px": 6.0, "gs": 1.0}
    assert loss_weights("cyclegan", training) == {"cyc": 6.0, "id": 3.0}
    assert loss_weights("pix2pix", training) == {"l1": 20.0}
    assert model_spec("cyclegan_invct").invert_ct and not model_spec("cyclegan").invert_ct
    assert architecture("pix2pix", training)["generator"]["kind"] == "unet"
    with pytest.raises(ValueError, match="valid models: mod_cyclegan, cyclegan, cyclegan_invct, pix2pix"):
        model_spec("CycleGAN")
    with pytest.raises(ValueError, match="unknown generator kind"):
        build_generator({"kind": "vgg"})
