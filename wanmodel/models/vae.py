"""Wan-VAE: the 3D causal video autoencoder of Wan 2.1 (report section 4.1).

A video (B, 3, T, H, W) in [-1, 1] with T = 1 + 4k frames and H, W multiples of 8 is encoded to latents
(B, 16, 1 + k, H/8, W/8): the first frame is compressed spatially only, every later group of 4 frames becomes one
latent frame. All temporal mixing is causal (padding on the past side only), so a latent never depends on later
frames and long videos can be processed chunk by chunk with a small feature cache (section 4.1.3).

Module and parameter names follow the official release (``wan/modules/vae.py``), so the released
``Wan2.1_VAE.pth`` state dict loads without renaming. Layout adapters live in ``vae_adapters.py``; the config,
the frame rule and the latent statistics in ``vae_config.py`` (re-exported here).

Two execution paths give the same result:
- chunked (default, inference): encode frame 0, then chunks of 4 frames; decode one latent frame at a time. Each
  temporal convolution keeps the last ``CACHE_T`` frames of its input in a ``FeatureCache`` created per call and
  passed down explicitly, so memory does not grow with video length.
- whole video (``chunked=False``): one pass over all frames, no cache; useful for training and as a reference.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .vae_config import (
    LATENT_MEAN,
    LATENT_STD,
    VAE_PRESETS,
    LatentPosterior,
    VAEConfig,
    denormalize_latents,
    normalize_latents,
    num_latent_frames,
)

__all__ = [
    "CACHE_T",
    "LATENT_MEAN",
    "LATENT_STD",
    "VAE_PRESETS",
    "FeatureCache",
    "LatentPosterior",
    "VAEConfig",
    "WanVAE",
    "denormalize_latents",
    "normalize_latents",
    "num_latent_frames",
]

# Frames of history a kernel-3 causal convolution needs from the previous chunk.
CACHE_T = 2


# ------------------------------------------------------------------------------------------- cache + checks
@dataclass
class FeatureCache:
    """Per-call state of chunked inference: the tail frames each temporal layer saw in the previous chunk.

    Layers claim slots in call order; ``start_chunk`` rewinds the index before each chunk, so the same layer gets
    the same slot every chunk. A slot is ``None`` until its layer has seen the first chunk.
    """

    slots: list[torch.Tensor | None] = field(default_factory=list)
    index: int = 0

    def start_chunk(self) -> None:
        self.index = 0

    def claim(self) -> int:
        if self.index == len(self.slots):
            self.slots.append(None)
        slot = self.index
        self.index += 1
        return slot


# ------------------------------------------------------------------------------------------------- layers
class CausalConv3d(nn.Conv3d):
    """Conv3d with temporal padding on the past side only (2 * pad_t zero frames before the first frame)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        pad_t, pad_h, pad_w = self.padding
        self._causal_padding = (pad_w, pad_w, pad_h, pad_h, 2 * pad_t, 0)
        self.padding = (0, 0, 0)

    def forward(self, x: torch.Tensor, history: torch.Tensor | None = None) -> torch.Tensor:
        """``history``: frames that precede ``x`` (from the previous chunk); they replace zero padding."""
        padding = list(self._causal_padding)
        if history is not None and padding[4] > 0:
            x = torch.cat([history.to(x.device, x.dtype), x], dim=2)
            padding[4] -= history.shape[2]
        x = F.pad(x, padding)  # rebinding frees the unpadded copy before the conv runs (peak memory)
        return super().forward(x)

    def stream(self, x: torch.Tensor, cache: FeatureCache | None) -> torch.Tensor:
        """Run on one chunk: prepend the previous chunk's tail from ``cache`` and store this chunk's tail."""
        if cache is None:
            return self(x)
        slot = cache.claim()
        history = cache.slots[slot]
        # Keep the last CACHE_T frames seen; clone so a view does not keep the whole chunk alive, and only
        # concatenate when the chunk alone is shorter than the cache (a full-size copy would raise peak memory).
        if history is None or x.shape[2] >= CACHE_T:
            cache.slots[slot] = x[:, :, -CACHE_T:].clone()
        else:
            cache.slots[slot] = torch.cat([history[:, :, x.shape[2] - CACHE_T:], x], dim=2)
        return self(x, history)


class RMS_norm(nn.Module):
    """RMS norm over channels (dim 1 when ``channel_first``), scaled by sqrt(dim) and a learnable gamma.

    Named as in the official code so a reader can match checkpoint keys to it."""

    def __init__(self, dim: int, channel_first: bool = True, images: bool = True, bias: bool = False) -> None:
        super().__init__()
        broadcast = (1, 1) if images else (1, 1, 1)
        shape = (dim, *broadcast) if channel_first else (dim,)
        self.channel_first = channel_first
        self.scale = dim**0.5
        self.gamma = nn.Parameter(torch.ones(shape))
        self.bias = nn.Parameter(torch.zeros(shape)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dim = 1 if self.channel_first else -1
        # Normalise low-precision input in fp32 (as diffusers does); fp32 input is unchanged.
        normed = F.normalize(x.float() if x.dtype in (torch.float16, torch.bfloat16) else x, dim=dim).to(x.dtype)
        out = normed * self.scale * self.gamma
        return out if self.bias is None else out + self.bias


class Upsample(nn.Upsample):
    """Nearest-exact upsampling computed in fp32 (bf16 nearest interpolation is not supported everywhere)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type_as(x)


class Resample(nn.Module):
    """Spatial 2x down/upsampling per frame, plus a causal time conv for the ``*3d`` modes.

    The first frame is treated as an image: ``downsample3d`` passes it through and strides over the rest,
    ``upsample3d`` does not double it. That is what makes T = 1 + 4k frames map to 1 + k latents.
    """

    MODES = ("upsample2d", "upsample3d", "downsample2d", "downsample3d")

    def __init__(self, dim: int, mode: str) -> None:
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f"Resample mode must be one of {self.MODES}, got {mode!r}")
        self.dim = dim
        self.mode = mode
        if mode.startswith("upsample"):
            # halves channels on the way up (report: 33% less decoder memory)
            self.resample = nn.Sequential(
                Upsample(scale_factor=(2.0, 2.0), mode="nearest-exact"), nn.Conv2d(dim, dim // 2, 3, padding=1)
            )
        else:
            self.resample = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(dim, dim, 3, stride=(2, 2)))
        if mode == "upsample3d":
            self.time_conv = CausalConv3d(dim, dim * 2, (3, 1, 1), padding=(1, 0, 0))
        elif mode == "downsample3d":
            self.time_conv = CausalConv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1), padding=(0, 0, 0))

    def forward(self, x: torch.Tensor, cache: FeatureCache | None = None) -> torch.Tensor:
        if self.mode == "upsample3d":
            x = self._upsample_time(x, cache)
        batch, frames = x.shape[0], x.shape[2]
        x = self.resample(x.transpose(1, 2).flatten(0, 1))
        x = x.unflatten(0, (batch, frames)).transpose(1, 2)
        if self.mode == "downsample3d":
            x = self._downsample_time(x, cache)
        return x

    def _upsample_time(self, x: torch.Tensor, cache: FeatureCache | None) -> torch.Tensor:
        slot = cache.claim() if cache is not None else None
        if cache is not None and cache.slots[slot] is not None:
            history = cache.slots[slot]
            cache.slots[slot] = torch.cat([history, x], dim=2)[:, :, -CACHE_T:].clone()
            return self._interleave(self.time_conv(x, history))
        # whole video or first chunk: frame 0 is not doubled; the rest starts from zero padding
        first, rest = x[:, :, :1], x[:, :, 1:]
        if cache is not None:
            cache.slots[slot] = rest[:, :, -CACHE_T:].clone()  # may hold 0 frames: "first frame seen"
        if rest.shape[2] == 0:
            return first
        return torch.cat([first, self._interleave(self.time_conv(rest))], dim=2)

    @staticmethod
    def _interleave(x: torch.Tensor) -> torch.Tensor:
        """(B, 2C, T, H, W) from the time conv -> (B, C, 2T, H, W), the two halves as frames 2t and 2t+1."""
        b, c2, t, h, w = x.shape
        return x.view(b, 2, c2 // 2, t, h, w).permute(0, 2, 3, 1, 4, 5).reshape(b, c2 // 2, 2 * t, h, w)

    def _downsample_time(self, x: torch.Tensor, cache: FeatureCache | None) -> torch.Tensor:
        slot = cache.claim() if cache is not None else None
        if cache is not None and cache.slots[slot] is not None:
            # later chunk of an even number of frames: the previous chunk's last frame opens the first window
            history = cache.slots[slot]
            cache.slots[slot] = x[:, :, -1:].clone()
            return self.time_conv(torch.cat([history, x], dim=2))
        # whole video or first chunk (odd frame count): frame 0 passes, stride-2 windows over frames 0..T-1
        if cache is not None:
            cache.slots[slot] = x[:, :, -1:].clone()
        if x.shape[2] < 3:
            return x[:, :, :1]
        return torch.cat([x[:, :, :1], self.time_conv(x)], dim=2)


class ResidualBlock(nn.Module):
    """RMSNorm -> SiLU -> causal conv -> RMSNorm -> SiLU -> dropout -> causal conv, plus a (1x1x1) shortcut."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.out_dim = out_dim
        # indices match the official nn.Sequential, hence the checkpoint keys residual.{0,2,3,6}
        self.residual = nn.ModuleList([
            RMS_norm(in_dim, images=False), nn.SiLU(), CausalConv3d(in_dim, out_dim, 3, padding=1),
            RMS_norm(out_dim, images=False), nn.SiLU(), nn.Dropout(dropout),
            CausalConv3d(out_dim, out_dim, 3, padding=1),
        ])
        self.shortcut = CausalConv3d(in_dim, out_dim, 1) if in_dim != out_dim else nn.Identity()

    def forward(self, x: torch.Tensor, cache: FeatureCache | None = None) -> torch.Tensor:
        shortcut = self.shortcut(x)
        for layer in self.residual:
            x = layer.stream(x, cache) if isinstance(layer, CausalConv3d) else layer(x)
        return x + shortcut


class AttentionBlock(nn.Module):
    """Single-head self-attention over the pixels of each frame (no temporal mixing, so still causal)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.norm = RMS_norm(dim)
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)
        self.proj = nn.Conv2d(dim, dim, 1)
        nn.init.zeros_(self.proj.weight)  # as released: the block starts as identity

    def forward(self, x: torch.Tensor, cache: FeatureCache | None = None) -> torch.Tensor:
        identity = x
        b, c, t, h, w = x.shape
        x = self.norm(x.transpose(1, 2).reshape(b * t, c, h, w))
        # (bt, 3c, h, w) -> (bt, 1 head, hw, 3c) -> q, k, v of (bt, 1, hw, c)
        qkv = self.to_qkv(x).reshape(b * t, 1, c * 3, h * w).permute(0, 1, 3, 2).contiguous()
        q, k, v = qkv.chunk(3, dim=-1)
        x = F.scaled_dot_product_attention(q, k, v)
        x = x.squeeze(1).permute(0, 2, 1).reshape(b * t, c, h, w)
        x = self.proj(x)
        return x.view(b, t, c, h, w).transpose(1, 2) + identity


def _run_middle(middle: nn.ModuleList, x: torch.Tensor, cache: FeatureCache | None) -> torch.Tensor:
    for block in middle:
        x = block(x, cache)
    return x


def _run_head(head: nn.ModuleList, x: torch.Tensor, cache: FeatureCache | None) -> torch.Tensor:
    norm, act, conv = head
    return conv.stream(act(norm(x)), cache)


class Encoder3d(nn.Module):
    """Video (B, 3, T, H, W) -> (B, 2 * z_dim, 1 + (T - 1) / 4, H / 8, W / 8) before the 1x1x1 ``conv1``."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        dims = [config.base_dim * m for m in (1, *config.dim_mult)]
        self.conv1 = CausalConv3d(3, dims[0], 3, padding=1)
        downsamples: list[nn.Module] = []
        for stage, (in_dim, out_dim) in enumerate(itertools.pairwise(dims)):
            for _ in range(config.num_res_blocks):
                downsamples.append(ResidualBlock(in_dim, out_dim, config.dropout))
                in_dim = out_dim
            if stage != len(config.dim_mult) - 1:
                mode = "downsample3d" if config.temperal_downsample[stage] else "downsample2d"
                downsamples.append(Resample(out_dim, mode))
        self.downsamples = nn.ModuleList(downsamples)
        top = dims[-1]
        self.middle = nn.ModuleList([
            ResidualBlock(top, top, config.dropout), AttentionBlock(top), ResidualBlock(top, top, config.dropout)
        ])
        self.head = nn.ModuleList([RMS_norm(top, images=False), nn.SiLU(),
                                   CausalConv3d(top, 2 * config.z_dim, 3, padding=1)])

    def forward(self, x: torch.Tensor, cache: FeatureCache | None = None) -> torch.Tensor:
        x = self.conv1.stream(x, cache)
        for layer in self.downsamples:
            x = layer(x, cache)
        x = _run_middle(self.middle, x, cache)
        return _run_head(self.head, x, cache)


class Decoder3d(nn.Module):
    """Latents (B, z_dim, t, h, w) after the 1x1x1 ``conv2`` -> video (B, 3, 1 + 4(t - 1), 8h, 8w)."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        dims = [config.base_dim * m for m in (config.dim_mult[-1], *config.dim_mult[::-1])]
        temperal_upsample = config.temperal_downsample[::-1]
        self.conv1 = CausalConv3d(config.z_dim, dims[0], 3, padding=1)
        self.middle = nn.ModuleList([
            ResidualBlock(dims[0], dims[0], config.dropout), AttentionBlock(dims[0]),
            ResidualBlock(dims[0], dims[0], config.dropout),
        ])
        upsamples: list[nn.Module] = []
        for stage, (in_dim, out_dim) in enumerate(itertools.pairwise(dims)):
            if stage > 0:
                in_dim //= 2  # the previous stage's Resample halved the channels
            for _ in range(config.num_res_blocks + 1):
                upsamples.append(ResidualBlock(in_dim, out_dim, config.dropout))
                in_dim = out_dim
            if stage != len(config.dim_mult) - 1:
                upsamples.append(Resample(out_dim, "upsample3d" if temperal_upsample[stage] else "upsample2d"))
        self.upsamples = nn.ModuleList(upsamples)
        self.head = nn.ModuleList([RMS_norm(dims[-1], images=False), nn.SiLU(),
                                   CausalConv3d(dims[-1], 3, 3, padding=1)])

    def forward(self, x: torch.Tensor, cache: FeatureCache | None = None) -> torch.Tensor:
        x = self.conv1.stream(x, cache)
        x = _run_middle(self.middle, x, cache)
        for layer in self.upsamples:
            x = layer(x, cache)
        return _run_head(self.head, x, cache)


# -------------------------------------------------------------------------------------------------- model
class WanVAE(nn.Module):
    """The Wan 2.1 VAE. ``encode`` videos (B, 3, 1 + 4k, H, W) in [-1, 1]; ``decode`` latents (B, 16, 1 + k, h, w).

    Latents returned by ``encode`` are raw (not normalised); use ``normalize_latents`` before the DiT.
    """

    def __init__(self, config: VAEConfig | str = "wan2.1") -> None:
        super().__init__()
        self.config = VAEConfig.preset(config) if isinstance(config, str) else config
        z_dim = self.config.z_dim
        self.encoder = Encoder3d(self.config)
        self.conv1 = CausalConv3d(2 * z_dim, 2 * z_dim, 1)  # to (mu, logvar)
        self.conv2 = CausalConv3d(z_dim, z_dim, 1)  # latents into the decoder
        self.decoder = Decoder3d(self.config)

    def check_video(self, video: torch.Tensor) -> int:
        """Validate a video tensor's shape; returns its latent frame count."""
        if video.ndim != 5 or video.shape[1] != 3:
            raise ValueError(f"expected video (B, 3, T, H, W), got shape {tuple(video.shape)}")
        height, width = video.shape[-2:]
        factor = self.config.spatial_factor
        if height % factor or width % factor:
            raise ValueError(f"video height and width must be multiples of {factor}; got {height}x{width}")
        return num_latent_frames(video.shape[2], self.config.temporal_factor)

    def encode(self, video: torch.Tensor, *, chunked: bool = True) -> LatentPosterior:
        """Video (B, 3, 1 + 4k, H, W) -> posterior with mean/logvar (B, z_dim, 1 + k, H/8, W/8).

        ``chunked``: frame 0, then chunks of 4 frames with a feature cache (the released inference path);
        ``chunked=False`` runs all frames in one pass (same result up to float rounding, more memory).
        """
        self.check_video(video)
        if chunked:
            step = self.config.temporal_factor
            cache = FeatureCache()
            outputs = []
            for start in range(0, video.shape[2], step):
                chunk = video[:, :, :1] if start == 0 else video[:, :, start - step + 1:start + 1]
                cache.start_chunk()
                outputs.append(self.encoder(chunk, cache))
            hidden = torch.cat(outputs, dim=2)
        else:
            hidden = self.encoder(video)
        mean, logvar = self.conv1(hidden).chunk(2, dim=1)
        return LatentPosterior(mean, logvar)

    def decode(self, latents: torch.Tensor, *, clamp: bool = False, chunked: bool = True) -> torch.Tensor:
        """Latents (B, z_dim, t, h, w) -> video (B, 3, 1 + 4(t - 1), 8h, 8w).

        The module does not clamp (as the official module); ``clamp=True`` clamps to [-1, 1] as diffusers'
        ``decode`` and the official wrapper do. ``chunked``: one latent frame at a time with a feature cache.
        """
        if latents.ndim != 5 or latents.shape[1] != self.config.z_dim:
            raise ValueError(f"expected latents (B, {self.config.z_dim}, T, H, W), got shape {tuple(latents.shape)}")
        hidden = self.conv2(latents)
        if chunked:
            cache = FeatureCache()
            frames = []
            for index in range(hidden.shape[2]):
                cache.start_chunk()
                frames.append(self.decoder(hidden[:, :, index:index + 1], cache))
            video = torch.cat(frames, dim=2)
        else:
            video = self.decoder(hidden)
        return video.clamp(-1.0, 1.0) if clamp else video

    def forward(self, video: torch.Tensor, *, sample_posterior: bool = False,
                generator: torch.Generator | None = None, chunked: bool = True
                ) -> tuple[torch.Tensor, LatentPosterior]:
        """Reconstruct: (decoded video, posterior). Unclamped; pass through ``decode(clamp=True)`` for display."""
        posterior = self.encode(video, chunked=chunked)
        latents = posterior.sample(generator) if sample_posterior else posterior.mode()
        return self.decode(latents, chunked=chunked), posterior
