"""Losses of the paper (Eq. 1-10), masking, the image buffer."""

import numpy as np
import pytest
import torch

from vstain import losses


def _images(seed=0, shape=(2, 3, 8, 8)):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g) * 2 - 1, torch.rand(shape, generator=g) * 2 - 1


def test_masked_l1_counts_only_valid_pixels():
    a, b = _images()
    mask = torch.zeros(2, 1, 8, 8)
    mask[:, :, 2:5, 1:7] = 1
    expected = (a - b).abs()[:, :, 2:5, 1:7].mean()
    assert torch.allclose(losses.masked_l1(a, b, mask), expected)
    # changing pixels outside the mask changes nothing
    a2 = a.clone()
    a2[:, :, 6:, :] += 5
    assert torch.allclose(losses.masked_l1(a2, b, mask), expected)
    # without mask: plain mean absolute error
    assert torch.allclose(losses.masked_l1(a, b), (a - b).abs().mean())
    with pytest.raises(ValueError, match="no valid pixel"):
        losses.masked_l1(a, b, torch.zeros(2, 1, 8, 8))
    with pytest.raises(ValueError, match="mask shape"):
        losses.masked_l1(a, b, torch.ones(2, 3, 8, 8))


def test_equations_on_known_values():
    x, y = _images(1)
    assert float(losses.cycle_loss(x, x, y, y)) == 0
    assert torch.allclose(losses.cycle_loss(x, x + 0.2, y, y - 0.1), torch.tensor(0.3))
    assert torch.allclose(losses.identity_loss(y, y + 0.5, x, x), torch.tensor(0.5))
    assert torch.allclose(losses.pixelwise_loss(y, x, x, y), 2 * (x - y).abs().mean())
    ones, zeros = torch.ones(1, 1, 4, 4), torch.zeros(1, 1, 4, 4)
    assert float(losses.adversarial_loss(ones, ones)) == 0
    assert float(losses.adversarial_loss(zeros, zeros)) == 2
    assert float(losses.conditional_adversarial_loss(zeros)) == 1
    assert float(losses.discriminator_loss(ones, zeros)) == 0
    assert float(losses.discriminator_loss(zeros, ones)) == 1


def test_greyscale_loss_zero_only_for_grey():
    x, _ = _images(2)
    grey = x[:, :1].repeat(1, 3, 1, 1)
    assert float(losses.greyscale_loss(grey)) == 0
    assert float(losses.greyscale_loss(x)) > 0.3
    with pytest.raises(ValueError, match="3 channels"):
        losses.greyscale_loss(x[:, :2])


def test_totals_weight_components():
    c = {k: torch.tensor(v) for k, v in dict(gan=1.0, cyc=2.0, id=3.0, px=4.0, gs=5.0).items()}
    w = {"cyc": 6.0, "id": 3.0, "px": 6.0, "gs": 1.0}
    assert float(losses.total_unpaired(c, w)) == 1 + 12 + 9
    assert float(losses.total_paired(c, w)) == 1 + 12 + 9 + 24 + 5
    assert float(losses.total_pix2pix({"gan": torch.tensor(1.0), "l1": torch.tensor(0.5)}, {"l1": 20.0})) == 11


def test_losses_give_gradients_only_inside_mask():
    fake = torch.zeros(1, 3, 4, 4, requires_grad=True)
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2, :] = 1
    losses.pixelwise_loss(torch.ones(1, 3, 4, 4), fake, torch.ones(1, 3, 4, 4), fake, mask).backward()
    assert fake.grad[..., 2:, :].abs().sum() == 0
    assert fake.grad[..., :2, :].abs().sum() > 0


def test_image_buffer_fills_then_mixes_and_is_seeded():
    def run(seed):
        buffer = losses.ImageBuffer(size=4, seed=seed)
        outs = [buffer.query(torch.full((2, 1, 1, 1), float(i))) for i in range(20)]
        return torch.cat(outs).flatten().tolist(), buffer
    values, buffer = run(0)
    assert values[:4] == [0, 0, 1, 1]  # filling: returned as given
    assert len(buffer.images) == 4
    later = values[8:]
    current = [float(i) for i in range(4, 20) for _ in range(2)]
    assert any(v != c for v, c in zip(later, current))  # some stored images came back
    assert run(0)[0] == values and run(1)[0] != values
    # save and restore the state: same continuation
    state = buffer.state_dict()
    restored = losses.ImageBuffer(size=4, seed=99)
    restored.load_state_dict(state)
    probe = torch.arange(6.0).reshape(6, 1, 1, 1)
    assert torch.equal(buffer.query(probe), restored.query(probe))
    assert torch.equal(losses.ImageBuffer(0, 0).query(probe), probe)
    with pytest.raises(ValueError):
        losses.ImageBuffer(-1, 0)


def test_buffer_does_not_touch_global_random_state():
    np.random.seed(5)
    torch.manual_seed(5)
    expected_np, expected_torch = np.random.random(), torch.rand(1)
    np.random.seed(5)
    torch.manual_seed(5)
    buffer = losses.ImageBuffer(size=1, seed=0)
    for _ in range(5):
        buffer.query(torch.zeros(3, 1, 2, 2))
    assert np.random.random() == expected_np and torch.equal(torch.rand(1), expected_torch)
