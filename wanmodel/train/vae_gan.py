"""The GAN phase of Wan-VAE training (report 4.1.2: "the GAN loss (Esser et al., 2021) from a 3D discriminator").

A PatchGAN-style 3D convolutional discriminator, hinge losses, and VQGAN's adaptive weight that balances the
adversarial gradient against the reconstruction gradient at the decoder's last layer.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PatchDiscriminator3d", "adaptive_gan_weight", "hinge_d_loss", "hinge_g_loss"]


class PatchDiscriminator3d(nn.Module):
    """Video (B, 3, T, H, W) in [-1, 1] -> real/fake logits per spatio-temporal patch (B, 1, T, H/2^n, W/2^n).

    Each layer halves H and W and keeps T (kernel 3 in time, padded both sides: the discriminator need not be
    causal), so it accepts any frame count, single frames included. ``spectral_norm`` wraps every conv;
    otherwise the hidden layers use GroupNorm.
    """

    def __init__(self, channels: int = 32, num_layers: int = 3, spectral_norm: bool = False) -> None:
        super().__init__()
        wrap = nn.utils.parametrizations.spectral_norm if spectral_norm else (lambda m: m)
        layers: list[nn.Module] = [wrap(nn.Conv3d(3, channels, (3, 4, 4), (1, 2, 2), (1, 1, 1))),
                                   nn.LeakyReLU(0.2)]
        in_dim = channels
        for index in range(1, num_layers):
            out_dim = channels * 2 ** min(index, 3)
            layers.append(wrap(nn.Conv3d(in_dim, out_dim, (3, 4, 4), (1, 2, 2), (1, 1, 1), bias=spectral_norm)))
            if not spectral_norm:
                layers.append(nn.GroupNorm(min(32, out_dim // 4) or 1, out_dim))
            layers.append(nn.LeakyReLU(0.2))
            in_dim = out_dim
        layers.append(wrap(nn.Conv3d(in_dim, 1, 3, 1, 1)))
        self.layers = nn.Sequential(*layers)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.layers(video)


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss: mean(relu(1 - D(real))) + mean(relu(1 + D(fake))), halved as in VQGAN."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def hinge_g_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """Generator side of the hinge GAN: -mean(D(fake))."""
    return -logits_fake.mean()


def adaptive_gan_weight(rec_loss: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor,
                        max_weight: float = 1e4) -> torch.Tensor:
    """VQGAN's balance: ||d rec / d last|| / (||d g / d last|| + 1e-4), clamped to [0, max_weight], detached."""
    rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    return (rec_grad.norm() / (g_grad.norm() + 1e-4)).clamp(0.0, max_weight).detach()
