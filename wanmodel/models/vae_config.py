"""The Wan-VAE's shape and its latent conventions: ``VAEConfig`` and its presets, the 1 + 4k frame rule, the
latent posterior, and the per-channel latent statistics that normalise latents for the DiT.

The statistics belong to the VAE that made the latents: ``VAEConfig.latents_mean`` / ``latents_std`` (diffusers'
``AutoencoderKLWan`` keys), the released values by default. A VAE trained from scratch has latents of its own
scale (the VAE trainer measures them, ``wanmodel.train.vae``); normalising those with the release's numbers would
hand the DiT latents whose content is a few percent of their variance.

Split out of ``vae.py`` (the network itself); ``wanmodel.models.vae`` re-exports every name here.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, NamedTuple

import torch

__all__ = [
    "LATENT_MEAN",
    "LATENT_STD",
    "VAE_PRESETS",
    "LatentPosterior",
    "VAEConfig",
    "denormalize_latents",
    "normalize_latents",
    "num_latent_frames",
]

# Released per-channel latent statistics (official wan/modules/vae.py; diffusers AutoencoderKLWan config).
LATENT_MEAN: tuple[float, ...] = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
)
LATENT_STD: tuple[float, ...] = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
)



# --------------------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class VAEConfig:
    """Shape of a Wan-VAE. Field names follow the official code (``temperal`` spelling included)."""

    base_dim: int = 96
    z_dim: int = 16
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    temperal_downsample: tuple[bool, ...] = (False, True, True)
    dropout: float = 0.0
    # per-channel statistics of the posterior means (normalize_latents); None: the release's for z_dim 16,
    # else 0 / 1 (no normalisation)
    latents_mean: tuple[float, ...] | None = None
    latents_std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "dim_mult", tuple(int(m) for m in self.dim_mult))
        object.__setattr__(self, "temperal_downsample", tuple(bool(t) for t in self.temperal_downsample))
        for name in ("base_dim", "z_dim", "num_res_blocks"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"VAEConfig.{name} must be a positive int, got {value!r}")
        if len(self.dim_mult) < 2 or any(m < 1 for m in self.dim_mult):
            raise ValueError(f"VAEConfig.dim_mult needs at least 2 positive entries, got {self.dim_mult}")
        if len(self.temperal_downsample) != len(self.dim_mult) - 1:
            raise ValueError(
                f"VAEConfig.temperal_downsample needs len(dim_mult) - 1 = {len(self.dim_mult) - 1} entries, "
                f"got {len(self.temperal_downsample)}"
            )
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"VAEConfig.dropout must be in [0, 1), got {self.dropout!r}")
        self._set_latent_stats()

    def _set_latent_stats(self) -> None:
        """Fill in the defaults (the release's for z_dim 16, else 0 / 1) and check one finite value per channel."""
        release = self.z_dim == len(LATENT_MEAN)
        default_mean, default_std = (LATENT_MEAN, LATENT_STD) if release else ((0.0,) * self.z_dim, (1.0,) * self.z_dim)
        mean = tuple(float(v) for v in (default_mean if self.latents_mean is None else self.latents_mean))
        std = tuple(float(v) for v in (default_std if self.latents_std is None else self.latents_std))
        for name, values in (("latents_mean", mean), ("latents_std", std)):
            if len(values) != self.z_dim or not all(math.isfinite(v) for v in values):
                raise ValueError(f"VAEConfig.{name} needs {self.z_dim} finite values (one per latent channel), "
                                 f"got {list(values)}")
        if min(std) <= 0:
            raise ValueError(f"VAEConfig.latents_std must be positive, got {list(std)}")
        object.__setattr__(self, "latents_mean", mean)
        object.__setattr__(self, "latents_std", std)

    @property
    def latent_stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(latents_mean, latents_std): what ``normalize_latents`` takes."""
        return self.latents_mean, self.latents_std  # type: ignore[return-value]

    @property
    def temporal_factor(self) -> int:
        """Frames per latent frame after the first (4 for Wan 2.1)."""
        return 2 ** sum(self.temperal_downsample)

    @property
    def spatial_factor(self) -> int:
        """Pixels per latent pixel along H and W (8 for Wan 2.1)."""
        return 2 ** (len(self.dim_mult) - 1)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["dim_mult"] = list(self.dim_mult)
        data["temperal_downsample"] = list(self.temperal_downsample)
        data["latents_mean"] = list(self.latent_stats[0])
        data["latents_std"] = list(self.latent_stats[1])
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VAEConfig:
        """Build from a dict; an unknown key is an error that names it."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown VAEConfig key(s) {unknown}; known: {sorted(known)}")
        return cls(**data)

    @classmethod
    def preset(cls, name: str) -> VAEConfig:
        """A named preset: ``wan2.1`` (the release) or ``tiny`` (same structure, fast on CPU)."""
        try:
            return VAE_PRESETS[name]
        except KeyError:
            raise ValueError(f"unknown VAE preset {name!r}; choose from {sorted(VAE_PRESETS)}") from None


VAE_PRESETS: dict[str, VAEConfig] = {
    "wan2.1": VAEConfig(),
    "tiny": VAEConfig(base_dim=8),
}



# ------------------------------------------------------------------------------------------------ latents
def num_latent_frames(num_frames: int, temporal_factor: int = 4) -> int:
    """Latent frames for ``num_frames`` video frames (1 + (T - 1) / 4); a bad count is a ValueError."""
    if num_frames < 1 or (num_frames - 1) % temporal_factor:
        raise ValueError(
            f"Wan-VAE needs 1 + {temporal_factor}k video frames (1, {1 + temporal_factor}, "
            f"{1 + 2 * temporal_factor}, ...); got {num_frames} frames"
        )
    return 1 + (num_frames - 1) // temporal_factor


class LatentPosterior(NamedTuple):
    """Diagonal Gaussian over latents; unpacks as ``mu, logvar = vae.encode(video)``."""

    mean: torch.Tensor
    logvar: torch.Tensor

    def mode(self) -> torch.Tensor:
        return self.mean

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        # Same clamp as the official ``sample`` and diffusers' DiagonalGaussianDistribution.
        std = torch.exp(0.5 * self.logvar.clamp(-30.0, 20.0))
        noise = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + std * noise


Stats = tuple[Sequence[float] | torch.Tensor, Sequence[float] | torch.Tensor]


def _latent_stats(latents: torch.Tensor, stats: Stats | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) broadcastable to ``latents`` [B, C, T, H, W]: from ``stats`` (per channel [C], or per sample
    [B, C]), else the release's."""
    mean, std = stats if stats is not None else (LATENT_MEAN, LATENT_STD)
    mean = torch.as_tensor(mean, dtype=latents.dtype, device=latents.device)
    std = torch.as_tensor(std, dtype=latents.dtype, device=latents.device)
    if latents.ndim != 5 or latents.shape[1] != mean.shape[-1] or mean.shape != std.shape:
        raise ValueError(f"expected latents (B, {mean.shape[-1]}, T, H, W) for statistics of shape "
                         f"{tuple(mean.shape)}, got {tuple(latents.shape)}")
    shape = (-1, mean.shape[-1], 1, 1, 1)
    return mean.reshape(shape), std.reshape(shape)


def normalize_latents(latents: torch.Tensor, stats: Stats | None = None) -> torch.Tensor:
    """VAE mean latents -> the unit-scale latents the DiT sees: (z - mean) / std per channel. ``stats``: the
    encoding VAE's (``VAEConfig.latent_stats``; or per sample, [B, C] each); default the release's."""
    mean, std = _latent_stats(latents, stats)
    return (latents - mean) / std


def denormalize_latents(latents: torch.Tensor, stats: Stats | None = None) -> torch.Tensor:
    """Inverse of ``normalize_latents``: DiT latents -> VAE latents, z * std + mean."""
    mean, std = _latent_stats(latents, stats)
    return latents * std + mean
