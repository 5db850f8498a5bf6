"""Model core of Wan 2.1: imports only torch (+ einops, safetensors), so it runs on a bare GPU box.

``vae``: the Wan-VAE (3D causal video autoencoder, 4x8x8 compression to 16 channels) with chunked inference.
``vae_adapters``: Wan-VAE checkpoint layouts (ours = official release, diffusers) and ``save_vae``/``load_vae``.
"""
from .vae import (
    LATENT_MEAN,
    LATENT_STD,
    VAE_PRESETS,
    FeatureCache,
    LatentPosterior,
    VAEConfig,
    WanVAE,
    denormalize_latents,
    normalize_latents,
    num_latent_frames,
)
from .vae_adapters import from_diffusers, load_vae, save_vae, to_diffusers

__all__ = [
    "LATENT_MEAN",
    "LATENT_STD",
    "VAE_PRESETS",
    "FeatureCache",
    "LatentPosterior",
    "VAEConfig",
    "WanVAE",
    "denormalize_latents",
    "from_diffusers",
    "load_vae",
    "normalize_latents",
    "num_latent_frames",
    "save_vae",
    "to_diffusers",
]
