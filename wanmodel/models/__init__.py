"""Model core of Wan 2.1: imports only torch (+ einops, safetensors), so it runs on a bare GPU box.

``vae``: the Wan-VAE (3D causal video autoencoder, 4x8x8 compression to 16 channels) with chunked inference;
its config, frame rule and latent statistics in ``vae_config``.
``dit``: the Wan DiT (t2v and i2v) with 3D RoPE (``rope``) and one attention entry point (``attention``).
``checkpoint``: what every checkpoint needs: safetensors I/O, shards with an index json, the JSON config beside
the weights, key errors, meta-device loading one tensor at a time.
``vae_adapters`` / ``dit_adapters``: each model's key table (ours = official release <-> diffusers), its config
formats and ``save_vae``/``load_vae``, ``save_dit``/``load_dit``, built on ``checkpoint``.
"""
from .attention import attention
from .dit import DIT_CONFIGS, DiTConfig, WanDiT
from .dit_adapters import (
    from_diffusers_state_dict,
    load_dit,
    save_dit,
    to_diffusers_state_dict,
)
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
    "DIT_CONFIGS",
    "LATENT_MEAN",
    "LATENT_STD",
    "VAE_PRESETS",
    "DiTConfig",
    "FeatureCache",
    "LatentPosterior",
    "VAEConfig",
    "WanDiT",
    "WanVAE",
    "attention",
    "denormalize_latents",
    "from_diffusers",
    "from_diffusers_state_dict",
    "load_dit",
    "load_vae",
    "normalize_latents",
    "num_latent_frames",
    "save_dit",
    "save_vae",
    "to_diffusers",
    "to_diffusers_state_dict",
]
