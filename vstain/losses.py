"""The paper's losses (section 2.6) on torch tensors, and the discriminators' image buffer.

Conventions
-----------
* Images are ``(B, 3, H, W)`` tensors in [-1, 1]; ``x`` is CT (domain X), ``y`` histology (Y).
* ``mask`` is the sample-correspondence mask, ``(B, 1, H, W)`` with values 0/1. It
  multiplies every l1 term (paper 2.6.3): the absolute differences are summed over the
  valid pixels and channels and divided by (valid pixels x channels), so an l1 term is
  the mean absolute error *inside the mask*, independent of how much of the patch the
  mask covers. ``mask=None`` means every pixel is valid.
* Adversarial terms are least squares (the "l2" of Eq. 2 and 8): a generator term is
  the mean of (D(fake) - 1)^2 over the discriminator's score map.
* Each expectation over x or y is the batch mean; a two-direction term (Eq. 1, 2, 3,
  5) is the *sum* of the two directions, exactly as written in the paper.

Examples
--------
>>> import torch
>>> y = torch.zeros(1, 3, 4, 4); fake = torch.ones(1, 3, 4, 4)
>>> mask = torch.zeros(1, 1, 4, 4); mask[..., :2, :] = 1
>>> float(masked_l1(fake, y, mask))
1.0
>>> float(masked_l1(fake * mask, y, mask))   # differences outside the mask do not count
1.0
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def masked_l1(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean absolute error inside the mask (the l1 norm ||.||_1 of Eq. 1, 3, 5, 6, 9).

    Normalised by the number of valid pixels times channels; a mask without any valid
    pixel raises (a patch sampler never produces one).

    Examples
    --------
    >>> import torch
    >>> float(masked_l1(torch.full((1, 3, 2, 2), 0.5), torch.zeros(1, 3, 2, 2)))
    0.5
    """
    if prediction.shape != target.shape:
        raise ValueError(f"masked_l1: prediction shape {tuple(prediction.shape)} != target {tuple(target.shape)}")
    diff = (prediction - target).abs()
    if mask is None:
        return diff.mean()
    if mask.shape[0] != diff.shape[0] or mask.shape[-2:] != diff.shape[-2:] or mask.shape[1] != 1:
        raise ValueError(f"masked_l1: mask shape {tuple(mask.shape)} does not fit images {tuple(diff.shape)}")
    valid = mask.sum() * diff.shape[1]
    if float(valid) == 0:
        raise ValueError("masked_l1: the mask has no valid pixel")
    return (diff * mask).sum() / valid


def least_squares_generator(prediction: torch.Tensor) -> torch.Tensor:
    """E[(D(fake) - 1)^2]: one direction of Eq. 2, and Eq. 8."""
    return ((prediction - 1.0) ** 2).mean()


def cycle_loss(x: torch.Tensor, reconstructed_x: torch.Tensor, y: torch.Tensor, reconstructed_y: torch.Tensor,
               mask: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 1, cycle consistency: ||G_YX(G_XY(x)) - x||_1 + ||G_XY(G_YX(y)) - y||_1 (masked).

    Examples
    --------
    >>> import torch
    >>> x = torch.zeros(1, 3, 2, 2)
    >>> float(cycle_loss(x, x + 0.5, x, x - 0.25))
    0.75
    """
    return masked_l1(reconstructed_x, x, mask) + masked_l1(reconstructed_y, y, mask)


def adversarial_loss(d_x_of_fake_x: torch.Tensor, d_y_of_fake_y: torch.Tensor) -> torch.Tensor:
    """Eq. 2, least-squares generator adversarial loss: E[(D_X(G_YX(y)) - 1)^2] + E[(D_Y(G_XY(x)) - 1)^2].

    Examples
    --------
    >>> import torch
    >>> float(adversarial_loss(torch.ones(1, 1, 3, 3), torch.zeros(1, 1, 3, 3)))
    1.0
    """
    return least_squares_generator(d_x_of_fake_x) + least_squares_generator(d_y_of_fake_y)


def identity_loss(y: torch.Tensor, g_xy_of_y: torch.Tensor, x: torch.Tensor, g_yx_of_x: torch.Tensor,
                  mask: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 3, identity: ||G_XY(y) - y||_1 + ||G_YX(x) - x||_1 (masked).

    Examples
    --------
    >>> import torch
    >>> y = torch.zeros(1, 3, 2, 2)
    >>> float(identity_loss(y, y + 1, y, y))
    1.0
    """
    return masked_l1(g_xy_of_y, y, mask) + masked_l1(g_yx_of_x, x, mask)


def pixelwise_loss(y: torch.Tensor, fake_y: torch.Tensor, x: torch.Tensor, fake_x: torch.Tensor,
                   mask: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 5, pixelwise supervision of paired data: ||G_XY(x) - y||_1 + ||G_YX(y) - x||_1 (masked).

    Examples
    --------
    >>> import torch
    >>> y = torch.zeros(1, 3, 2, 2)
    >>> float(pixelwise_loss(y, y + 0.5, y, y + 0.5))
    1.0
    """
    return masked_l1(fake_y, y, mask) + masked_l1(fake_x, x, mask)


def greyscale_loss(fake_x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 6, greyscale: ||G^r - G^g||_1 + ||G^r - G^b||_1 + ||G^g - G^b||_1 of the generated CT (masked).

    Examples
    --------
    >>> import torch
    >>> grey = torch.full((1, 3, 2, 2), 0.3)
    >>> float(greyscale_loss(grey))
    0.0
    >>> red = torch.zeros(1, 3, 2, 2); red[:, 0] = 1
    >>> float(greyscale_loss(red))
    2.0
    """
    if fake_x.shape[1] != 3:
        raise ValueError(f"greyscale_loss: expected 3 channels, got {fake_x.shape[1]}")
    r, g, b = fake_x[:, 0:1], fake_x[:, 1:2], fake_x[:, 2:3]
    return masked_l1(r, g, mask) + masked_l1(r, b, mask) + masked_l1(g, b, mask)


def total_unpaired(components: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    """Eq. 4, the standard CycleGAN total: L_GAN + lambda_cyc L_cyc + lambda_id L_id.

    Examples
    --------
    >>> import torch
    >>> c = {"gan": torch.tensor(1.0), "cyc": torch.tensor(0.5), "id": torch.tensor(0.25)}
    >>> float(total_unpaired(c, {"cyc": 6.0, "id": 3.0}))
    4.75
    """
    return components["gan"] + weights["cyc"] * components["cyc"] + weights["id"] * components["id"]


def total_paired(components: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    """Eq. 7, the modified CycleGAN total: Eq. 4 + lambda_px L_px + lambda_gs L_gs.

    Examples
    --------
    >>> import torch
    >>> c = {k: torch.tensor(1.0) for k in ("gan", "cyc", "id", "px", "gs")}
    >>> float(total_paired(c, {"cyc": 6.0, "id": 3.0, "px": 6.0, "gs": 1.0}))
    17.0
    """
    return total_unpaired(components, weights) + weights["px"] * components["px"] + weights["gs"] * components["gs"]


def conditional_adversarial_loss(d_of_x_and_fake_y: torch.Tensor) -> torch.Tensor:
    """Eq. 8, Pix2Pix least-squares generator loss E[(D(x, G(x)) - 1)^2].

    Examples
    --------
    >>> import torch
    >>> float(conditional_adversarial_loss(torch.full((1, 1, 2, 2), 0.5)))
    0.25
    """
    return least_squares_generator(d_of_x_and_fake_y)


def l1_loss(y: torch.Tensor, fake_y: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 9, Pix2Pix pixelwise loss ||G(x) - y||_1 (masked)."""
    return masked_l1(fake_y, y, mask)


def total_pix2pix(components: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    """Eq. 10, the Pix2Pix total: L_cGAN + lambda_l1 L_l1.

    Examples
    --------
    >>> import torch
    >>> float(total_pix2pix({"gan": torch.tensor(1.0), "l1": torch.tensor(0.1)}, {"l1": 20.0}))
    3.0
    """
    return components["gan"] + weights["l1"] * components["l1"]


def discriminator_loss(prediction_real: torch.Tensor, prediction_fake: torch.Tensor) -> torch.Tensor:
    """Least-squares discriminator loss 0.5 (E[(D(real) - 1)^2] + E[D(fake)^2]) (Mao et al. 2017).

    The factor 0.5 slows the discriminator relative to the generator, as in the
    reference CycleGAN / Pix2Pix implementations.

    Examples
    --------
    >>> import torch
    >>> float(discriminator_loss(torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2)))
    0.0
    >>> float(discriminator_loss(torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2)))
    1.0
    """
    return 0.5 * (((prediction_real - 1.0) ** 2).mean() + (prediction_fake ** 2).mean())


class ImageBuffer:
    """A history of generated images shown to a discriminator (Zhu et al. 2017, Shrivastava et al. 2017).

    Until ``size`` images are stored, each new image is stored and returned. Afterwards,
    with probability 0.5 a new image replaces a random stored one and the stored one is
    returned instead; otherwise the new image is returned. This shows the discriminator
    a history of generators, which damps oscillation. The buffer owns its random
    generator (seeded), so it touches no global random state, and its whole state can be
    saved and restored for exact resumption.

    Parameters
    ----------
    size : int
        Images kept (50 in Zhu et al. 2017); 0 disables the buffer.
    seed : int
        Seed of the buffer's own random generator.

    Examples
    --------
    >>> import torch
    >>> buffer = ImageBuffer(size=2, seed=0)
    >>> out = buffer.query(torch.zeros(3, 3, 4, 4))
    >>> out.shape, len(buffer.images)
    (torch.Size([3, 3, 4, 4]), 2)
    """

    def __init__(self, size: int, seed: int) -> None:
        if size < 0:
            raise ValueError(f"ImageBuffer: size must be >= 0, got {size}")
        self.size = int(size)
        self.rng = np.random.default_rng(seed)
        self.images: list[torch.Tensor] = []

    def query(self, images: torch.Tensor) -> torch.Tensor:
        """Return a batch of the same shape mixing ``images`` (detached) with stored ones."""
        images = images.detach()
        if self.size == 0:
            return images
        out = []
        for image in images:
            image = image.unsqueeze(0)
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif self.rng.random() < 0.5:
                index = int(self.rng.integers(self.size))
                out.append(self.images[index].clone())
                self.images[index] = image.clone()
            else:
                out.append(image)
        return torch.cat(out, 0)

    def state_dict(self) -> dict[str, Any]:
        """Stored images (on CPU) and the random generator's state."""
        return {"size": self.size, "images": [im.cpu() for im in self.images],
                "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any], device: torch.device | str = "cpu") -> None:
        """Restore a state from :meth:`state_dict`."""
        if int(state["size"]) != self.size:
            raise ValueError(f"ImageBuffer: saved size {state['size']} != {self.size}")
        self.images = [im.to(device) for im in state["images"]]
        self.rng.bit_generator.state = state["rng"]
