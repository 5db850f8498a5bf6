"""The latent statistics a trained VAE hands the DiT: per-channel mean and std of its posterior means.

A Wan-VAE trained from scratch does not produce latents on the release's scale, so normalising its latents with
the released ``LATENT_MEAN`` / ``LATENT_STD`` leaves the DiT data whose content is a small part of their variance
(measured on the toy world's 120-step VAE: per-channel spreads of 0.13 to 1.96 against release stds of 1.1 to 3.3,
with channel offsets of up to 1.6). Like the scale factor of the Stable Diffusion VAEs, the statistics are measured
on training data and stored in the VAE's config (``latents_mean`` / ``latents_std``), which the encode job copies
into every ``latents`` row and the pipelines use to decode.

``latent_stats`` in the VAE training config: ``measure`` at every checkpoint on the first ``latent_stats_clips``
training clips (rank 0); ``keep`` the model's own; ``auto`` measures a model trained from scratch and keeps the
starting checkpoint's numbers when fine-tuning one (e.g. the release's, which its DiT was trained with).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch

from wanmodel.models.vae import WanVAE

__all__ = ["measure_latent_stats", "set_latent_stats"]


@torch.no_grad()
def measure_latent_stats(vae: WanVAE, videos: Sequence[torch.Tensor], device: torch.device
                         ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of the posterior means of ``videos`` (each [3, T, H, W]), over
    clips, latent frames and positions."""
    if not videos:
        raise ValueError("measuring latent statistics needs at least one clip")
    was_training = vae.training
    vae.eval()
    means = [vae.encode(v[None].to(device)).mean.float() for v in videos]
    vae.train(was_training)
    flat = torch.cat([m.transpose(0, 1).flatten(1) for m in means], dim=1)  # [C, all positions]
    std = flat.std(dim=1).clamp_min(1e-6)
    return tuple(flat.mean(dim=1).tolist()), tuple(std.tolist())


def set_latent_stats(vae: WanVAE, videos: Sequence[torch.Tensor], device: torch.device) -> WanVAE:
    """``vae`` with its config's ``latents_mean`` / ``latents_std`` measured on ``videos`` (in place)."""
    mean, std = measure_latent_stats(vae, videos, device)
    vae.config = replace(vae.config, latents_mean=mean, latents_std=std)
    return vae
